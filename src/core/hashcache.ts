/**
 * The hash cache: what a tree's files hashed to, so that a rescan re-reads only what
 * changed. One SQLite file per tree (keyed by its URL) in the cache directory — never
 * inside the tree being synced:
 *
 *   $BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog   (+ /hashes/)
 *
 * A cached hash is reused only when the backend's `version` token (local disk: size,
 * mtime, ctime, inode, device) is unchanged AND the record was made at least
 * RACY_WINDOW_MS after the entry's last change: a change within the same timestamp tick
 * as the hashing would leave the token unchanged (git's "racy mtime" problem), so such
 * entries are hashed again next time, by which point they have aged out of the window.
 */
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { readCacheRows, writeCacheTable } from './sqlite.ts';
import type { Entry } from './types.ts';

/** Entries changed less than this long before they were hashed are re-hashed next time. */
export const RACY_WINDOW_MS = 2000;

interface CacheRecord {
  version: string;
  size: number;
  hash: string;
  recordedAtMs: number;
}

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
    const file = path.join(cacheDir, 'hashes', `${key}.sqlite`);
    const cache = new HashCache(file);
    const rows = await readCacheRows<[string, string, number, string, number]>(file, 'SELECT path, version, size, hash, recorded_at_ms FROM hashes');
    for (const [p, version, size, hash, recordedAtMs] of rows) cache.#records.set(p, { version, size, hash, recordedAtMs });
    return cache;
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
      await writeCacheTable(
        this.file,
        'CREATE TABLE hashes (path TEXT PRIMARY KEY, version TEXT NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL, recorded_at_ms REAL NOT NULL) WITHOUT ROWID',
        'INSERT INTO hashes VALUES (?,?,?,?,?)',
        [...this.#records].map(([p, r]) => [p, r.version, r.size, r.hash, r.recordedAtMs]),
      );
      this.#dirty = false;
    } catch {
      /* a cache that cannot be written only costs a rescan next time */
    }
  }
}
