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
  readonly #records = new Map<string, CacheRecord>();
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
      text = await fsp.readFile(this.file!, 'utf8');
    } catch {
      return false;
    }
    if (!text.startsWith(CACHE_HEADER)) return false;
    const f = text.slice(CACHE_HEADER.length).split('\0');
    // A torn or damaged file: keep the whole records before the damage.
    const end = f.length - 1 - ((f.length - 1) % FIELDS);
    for (let i = 0; i < end; i += FIELDS) {
      const size = Number(f[i + 2]);
      const recordedAtMs = Number(f[i + 4]);
      if (!Number.isSafeInteger(size) || !Number.isFinite(recordedAtMs)) break;
      this.#records.set(f[i]!, { version: f[i + 1]!, size, hash: f[i + 3]!, recordedAtMs });
    }
    return true;
  }

  get size(): number {
    return this.#records.size;
  }

  /** The cached hash for `entry`, or undefined when it cannot be trusted. */
  lookup(entry: Entry): string | undefined {
    if (entry.version === undefined) return undefined;
    const r = this.#records.get(entry.path);
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
    try {
      const parts: string[] = [CACHE_HEADER];
      for (const [p, r] of this.#records) parts.push(`${p}\0${r.version}\0${r.size}\0${r.hash}\0${r.recordedAtMs}\0`);
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
