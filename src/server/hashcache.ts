/**
 * The server's hash cache: SHA-256 and CRC-64 of each file of an area, so that listing an
 * unchanged multi-terabyte area does not re-read it. It lives in the cache directory
 * ($BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog; under `server/`),
 * never inside the served tree.
 *
 * A record is reused only while the backend's `version` token and the size are unchanged
 * and the record was made at least RACY_WINDOW_MS after the entry's last change (a change
 * within the same timestamp tick would leave the token unchanged).
 *
 * Why not the core's HashCache (same directory, same trust rule, reused from it): the
 * server keeps two hashes per file, and the core's cache rewrites its whole SQLite file on
 * save, which a server recording a few uploads at a time into a 100k-file area should not.
 *
 * Storage: an append-only JSON-lines log per area, replayed at open (last line wins) and
 * rewritten compactly when it has grown to twice its live size, so that recording the
 * hashes of a few new files costs an append, not a rewrite of 100k records.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { defaultCacheDir, RACY_WINDOW_MS } from '../core/hashcache.ts';
import type { Entry } from '../core/types.ts';

export { defaultCacheDir, RACY_WINDOW_MS };

export interface CachedHashes {
  /** Hex SHA-256. */
  sha256: string;
  crc64: bigint;
}

interface CacheRecord extends CachedHashes {
  version: string;
  size: number;
  recordedAtMs: number;
}

export class ServerHashCache {
  readonly file: string | undefined;
  readonly #records = new Map<string, CacheRecord>();
  #pending: string[] = [];
  #logLines = 0;
  #flushing: Promise<void> = Promise.resolve();

  private constructor(file: string | undefined) {
    this.file = file;
  }

  /** A cache that forgets everything when the server stops. */
  static memory(): ServerHashCache {
    return new ServerHashCache(undefined);
  }

  /** Opens the cache of the area served from `url`. A missing or damaged file starts empty. */
  static async open(url: string, cacheDir = defaultCacheDir()): Promise<ServerHashCache> {
    const key = createHash('sha256').update(url).digest('hex').slice(0, 32);
    const cache = new ServerHashCache(path.join(cacheDir, 'server', `${key}.jsonl`));
    let text: string;
    try {
      text = await fsp.readFile(cache.file!, 'utf8');
    } catch {
      return cache;
    }
    for (const line of text.split('\n')) {
      if (!line) continue;
      try {
        const [p, version, size, sha256, crc, recordedAtMs] = JSON.parse(line) as [string, string, number, string, string, number];
        cache.#records.set(p, { version, size, sha256, crc64: BigInt(crc), recordedAtMs });
        cache.#logLines++;
      } catch {
        /* a torn last line after a crash: ignore it */
      }
    }
    return cache;
  }

  get size(): number {
    return this.#records.size;
  }

  /** The cached hashes of `entry`, or undefined when they cannot be trusted. */
  lookup(entry: Entry): CachedHashes | undefined {
    if (entry.version === undefined) return undefined;
    const r = this.#records.get(entry.path);
    if (!r || r.version !== entry.version || r.size !== entry.size) return undefined;
    if (entry.changedAtMs !== undefined && r.recordedAtMs - entry.changedAtMs < RACY_WINDOW_MS) return undefined;
    return r;
  }

  /** Records the hashes of `entry` (as listed, with its version); `recordedAtMs` = when reading began. */
  record(entry: Entry, hashes: CachedHashes, recordedAtMs = Date.now()): void {
    if (entry.version === undefined) return;
    const r: CacheRecord = { ...hashes, version: entry.version, size: entry.size, recordedAtMs };
    this.#records.set(entry.path, r);
    if (this.file) this.#pending.push(line(entry.path, r));
  }

  /** Forgets a path (removed or replaced). */
  forget(p: string): void {
    this.#records.delete(p);
  }

  /** Writes what was recorded since the last flush. Failures are ignored: the cache only saves time. */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flushNow()).catch(() => {});
    return this.#flushing;
  }

  async #flushNow(): Promise<void> {
    if (!this.file || this.#pending.length === 0) return;
    const lines = this.#pending;
    this.#pending = [];
    await fsp.mkdir(path.dirname(this.file), { recursive: true });
    if (this.#logLines + lines.length > 2 * this.#records.size + 1000) {
      const all: string[] = [];
      for (const [p, r] of this.#records) all.push(line(p, r));
      const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
      await fsp.writeFile(tmp, all.join(''));
      await fsp.rename(tmp, this.file);
      this.#logLines = all.length;
    } else {
      await fsp.appendFile(this.file, lines.join(''));
      this.#logLines += lines.length;
    }
  }
}

function line(p: string, r: CacheRecord): string {
  return JSON.stringify([p, r.version, r.size, r.sha256, r.crc64.toString(), r.recordedAtMs]) + '\n';
}
