/**
 * The hash cache: what a tree's files hashed to, so that a rescan re-reads only what
 * changed. One file per tree (keyed by its URL) in the cache directory — never inside the
 * tree being synced:
 *
 *   $BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog   (+ /hashes/)
 *
 * The file is a flat NUL-separated list (see CACHE_HEADER), not SQLite: an unchanged rescan
 * of 100k files must read every record, and one split of a string is about ten times
 * cheaper than stepping through rows in sql.js. Caches of older bitfogs (`<key>.sqlite`)
 * are read once and replaced.
 *
 * A cached hash is reused only when the backend's `version` token (local disk: size,
 * mtime, ctime, inode, device) is unchanged AND the record was made at least
 * RACY_WINDOW_MS after the entry's last change: a change within the same timestamp tick
 * as the hashing would leave the token unchanged (git's "racy mtime" problem), so such
 * entries are hashed again next time, by which point they have aged out of the window.
 */
import { isAscii } from 'node:buffer';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomic } from './fsutil.ts';
import { readCacheRows } from './sqlite.ts';
import type { Entry } from './types.ts';

/** Entries changed less than this long before they were hashed are re-hashed next time. */
export const RACY_WINDOW_MS = 2000;

interface CacheRecord {
  version: string;
  size: number;
  hash: string;
  recordedAtMs: number;
}

/**
 * First line of a cache file. Then one record per entry, every field followed by a NUL
 * (no path, version or hash holds a NUL): path, version, size, hash, recorded_at_ms.
 */
const CACHE_HEADER = 'bitfog hash cache 1\n';
const FIELDS = 5;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BITFOG_CACHE_DIR) return env.BITFOG_CACHE_DIR;
  const base = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'bitfog');
}

export class HashCache {
  readonly file: string | undefined;
  /**
   * Per path, its record: as read from the cache file, the offset in #text where its
   * fields after the path start (parsed only when looked up: building 100k record objects
   * up front costs more than all the lookups of a rescan); as recorded in this run, an object.
   */
  readonly #records = new Map<string, CacheRecord | number>();
  #text = '';
  /**
   * Where the first record of #text not yet in #records starts, or -1 when all are. The
   * file is written in the order entries were looked up, which is listing order, so an
   * unchanged rescan takes its records one after the other without building an index of
   * the file; the first lookup that does not match the next record indexes the rest.
   */
  #cursor = -1;
  /** Set once lookups left the file's order: from then on a record looked up moves to the end. */
  #reordering = false;
  #dirty = false;

  private constructor(file: string | undefined) {
    this.file = file;
  }

  /** A cache that remembers nothing across runs (for tests and `--no-cache`). */
  static memory(): HashCache {
    return new HashCache(undefined);
  }

  /**
   * Opens the cache of the tree at `url` in `cacheDir`. A missing or unreadable cache file
   * is not an error: the cache starts empty (it is only an accelerator).
   */
  static async open(url: string, cacheDir = defaultCacheDir()): Promise<HashCache> {
    const key = createHash('sha256').update(url).digest('hex').slice(0, 32);
    const cache = new HashCache(path.join(cacheDir, 'hashes', `${key}.cache`));
    if (!(await cache.#read())) {
      const legacy = await readCacheRows<[string, string, number, string, number]>(
        legacyFile(cache.file!),
        'SELECT path, version, size, hash, recorded_at_ms FROM hashes',
      );
      for (const [p, version, size, hash, recordedAtMs] of legacy) cache.#records.set(p, { version, size, hash, recordedAtMs });
      cache.#dirty = legacy.length > 0;
    }
    return cache;
  }

  /** Loads the cache file; false when it is missing or not a cache file of this format. */
  async #read(): Promise<boolean> {
    let text: string;
    try {
      // Decoded in one go (readFile's own decoding goes through a StringDecoder chunk by
      // chunk), and as Latin-1 when it is all ASCII, which is the same text decoded faster.
      const bytes = await fsp.readFile(this.file!);
      text = bytes.toString(isAscii(bytes) ? 'latin1' : 'utf8');
    } catch {
      return false;
    }
    if (!text.startsWith(CACHE_HEADER)) return false;
    this.#text = text;
    this.#cursor = CACHE_HEADER.length;
    return true;
  }

  /** The end (final NUL) of the record whose fields after the path start at `fields`; -1 when torn. */
  #recordEnd(fields: number): number {
    let end = fields - 1;
    for (let f = 1; f < FIELDS && end >= 0; f++) end = this.#text.indexOf('\0', end + 1);
    return end;
  }

  /** Puts every record from the cursor on into #records (records of this run take precedence). */
  #indexRest(): void {
    const text = this.#text;
    let at = this.#cursor;
    this.#cursor = -1;
    while (at >= 0) {
      const pathEnd = text.indexOf('\0', at);
      if (pathEnd < 0) break;
      // A torn file keeps the records before the tear.
      const end = this.#recordEnd(pathEnd + 1);
      if (end < 0) break;
      const p = text.slice(at, pathEnd);
      if (!this.#records.has(p)) this.#records.set(p, pathEnd + 1);
      at = end + 1;
    }
  }

  /** The record of `p` from the file: the next one in order, else from the index. */
  #fromFile(p: string): number | undefined {
    const text = this.#text;
    const at = this.#cursor;
    if (text.startsWith(p, at) && text.charCodeAt(at + p.length) === 0) {
      const end = this.#recordEnd(at + p.length + 1);
      if (end >= 0) {
        this.#cursor = end + 1 < text.length ? end + 1 : -1;
        this.#records.set(p, at + p.length + 1);
        return at + p.length + 1;
      }
    }
    // Out of order (files added, removed or listed differently): index the rest, and write
    // the file again in this run's order so that the next rescan reads it in order.
    this.#indexRest();
    this.#dirty = true;
    this.#reordering = true;
    return this.#records.get(p) as number | undefined;
  }

  /** The record whose fields (after the path) start at `at` in #text; undefined when damaged. */
  #parse(at: number): CacheRecord | undefined {
    const text = this.#text;
    const v = text.indexOf('\0', at);
    const s = text.indexOf('\0', v + 1);
    const h = text.indexOf('\0', s + 1);
    const r = text.indexOf('\0', h + 1);
    const size = Number(text.slice(v + 1, s));
    const recordedAtMs = Number(text.slice(h + 1, r));
    if (r < 0 || !Number.isSafeInteger(size) || !Number.isFinite(recordedAtMs)) return undefined;
    return { version: text.slice(at, v), size, hash: text.slice(s + 1, h), recordedAtMs };
  }

  get size(): number {
    if (this.#cursor >= 0) this.#indexRest();
    return this.#records.size;
  }

  /** The cached hash for `entry`, or undefined when it cannot be trusted. */
  lookup(entry: Entry): string | undefined {
    if (entry.version === undefined) return undefined;
    const found = this.#records.get(entry.path) ?? (this.#cursor >= 0 ? this.#fromFile(entry.path) : undefined);
    if (found === undefined) return undefined;
    if (this.#reordering) {
      this.#records.delete(entry.path);
      this.#records.set(entry.path, found);
    }
    let r: CacheRecord | undefined;
    if (typeof found === 'number') {
      // Most lookups of a rescan hit: compare the version in place, then read only what else is needed.
      const text = this.#text;
      const v = found + entry.version.length;
      if (text.charCodeAt(v) !== 0 || !text.startsWith(entry.version, found)) return undefined;
      const s = text.indexOf('\0', v + 1);
      if (s < 0 || text.slice(v + 1, s) !== String(entry.size)) return undefined;
      r = this.#parse(found);
    } else {
      r = found;
    }
    if (!r || r.version !== entry.version || r.size !== entry.size) return undefined;
    if (entry.changedAtMs !== undefined && r.recordedAtMs - entry.changedAtMs < RACY_WINDOW_MS) return undefined;
    return r.hash;
  }

  /**
   * Records that `entry` (as listed, with its version) hashed to `hash`; `recordedAtMs` is
   * when reading began (default: now).
   */
  record(entry: Entry, hash: string, recordedAtMs = Date.now()): void {
    if (entry.version === undefined) return;
    this.#records.set(entry.path, { version: entry.version, size: entry.size, hash, recordedAtMs });
    this.#dirty = true;
  }

  /** Drops records of paths not in `keep` (entries that no longer exist). */
  retainOnly(keep: (path: string) => boolean): void {
    if (this.#cursor >= 0) this.#indexRest();
    for (const p of this.#records.keys()) {
      if (!keep(p)) {
        this.#records.delete(p);
        this.#dirty = true;
      }
    }
  }

  /** Writes the cache back if it changed. Failures are ignored: the cache is an accelerator. */
  async save(): Promise<void> {
    if (!this.file || !this.#dirty) return;
    if (this.#cursor >= 0) this.#indexRest();
    try {
      const parts: string[] = [CACHE_HEADER];
      for (const [p, found] of this.#records) {
        const r = typeof found === 'number' ? this.#parse(found) : found;
        if (r) parts.push(`${p}\0${r.version}\0${r.size}\0${r.hash}\0${r.recordedAtMs}\0`);
      }
      await fsp.mkdir(path.dirname(this.file), { recursive: true });
      await writeFileAtomic(this.file, Buffer.from(parts.join(''), 'utf8'));
      this.#dirty = false;
      await fsp.rm(legacyFile(this.file), { force: true });
    } catch {
      /* a cache that cannot be written only costs a rescan next time */
    }
  }
}

/** Where bitfog 0.1's SQLite cache of the same tree lived. */
function legacyFile(file: string): string {
  return file.replace(/\.cache$/, '.sqlite');
}
