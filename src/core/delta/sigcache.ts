/**
 * The signature cache: file signatures of a tree, so that a snapshot re-reads only what
 * changed. It sits beside the tree's hash cache (same key, `signatures/` instead of
 * `hashes/` in the cache directory) and follows the same rule: a cached signature is
 * reused only while the backend's `version` token and the size are unchanged and it was
 * recorded at least RACY_WINDOW_MS after the entry's last change (see hashcache.ts).
 * A missing or unreadable cache is not an error: it only costs a re-read.
 */
import path from 'node:path';
import { type HashCache, RACY_WINDOW_MS } from '../hashcache.ts';
import { readCacheRows, writeCacheTable } from '../sqlite.ts';
import type { Entry } from '../types.ts';
import { decodeSignature, encodeSignature, type FileSignature } from './signature.ts';

interface SignatureRecord {
  version: string;
  size: number;
  /** `sha256:<hex>` of the whole file the signature was taken from. */
  hash: string;
  signature: Uint8Array;
  recordedAtMs: number;
}

export class SignatureCache {
  readonly file: string | undefined;
  readonly #records = new Map<string, SignatureRecord>();
  #dirty = false;

  private constructor(file: string | undefined) {
    this.file = file;
  }

  static memory(): SignatureCache {
    return new SignatureCache(undefined);
  }

  /** The signature cache of the tree whose hash cache is `hashCache` (in memory if that one is). */
  static async besides(hashCache: HashCache): Promise<SignatureCache> {
    if (!hashCache.file) return SignatureCache.memory();
    const file = path.join(path.dirname(path.dirname(hashCache.file)), 'signatures', path.basename(hashCache.file));
    const cache = new SignatureCache(file);
    const rows = await readCacheRows<[string, string, number, string, Uint8Array, number]>(
      file,
      'SELECT path, version, size, hash, signature, recorded_at_ms FROM signatures',
    );
    for (const [p, version, size, hash, signature, recordedAtMs] of rows) cache.#records.set(p, { version, size, hash, signature, recordedAtMs });
    return cache;
  }

  /** The cached signature and whole-file hash of `entry`, or undefined when it cannot be trusted. */
  lookup(entry: Entry): { signature: FileSignature; hash: string; bytes: Uint8Array } | undefined {
    if (entry.version === undefined) return undefined;
    const r = this.#records.get(entry.path);
    if (!r || r.version !== entry.version || r.size !== entry.size) return undefined;
    if (entry.hash !== undefined && entry.hash !== r.hash) return undefined;
    if (entry.changedAtMs !== undefined && r.recordedAtMs - entry.changedAtMs < RACY_WINDOW_MS) return undefined;
    try {
      return { signature: decodeSignature(r.signature), hash: r.hash, bytes: r.signature };
    } catch {
      return undefined;
    }
  }

  /** Records `entry`'s signature; `recordedAtMs` is when reading began. */
  record(entry: Entry, hash: string, signature: FileSignature | Uint8Array, recordedAtMs = Date.now()): void {
    if (entry.version === undefined) return;
    const bytes = signature instanceof Uint8Array ? signature : encodeSignature(signature);
    this.#records.set(entry.path, { version: entry.version, size: entry.size, hash, signature: bytes, recordedAtMs });
    this.#dirty = true;
  }

  retainOnly(keep: (path: string) => boolean): void {
    for (const p of this.#records.keys()) {
      if (!keep(p)) {
        this.#records.delete(p);
        this.#dirty = true;
      }
    }
  }

  /** Writes the cache back if it changed; failures are ignored (it is an accelerator). */
  async save(): Promise<void> {
    if (!this.file || !this.#dirty) return;
    try {
      await writeCacheTable(
        this.file,
        'CREATE TABLE signatures (path TEXT PRIMARY KEY, version TEXT NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL, signature BLOB NOT NULL, recorded_at_ms REAL NOT NULL) WITHOUT ROWID',
        'INSERT INTO signatures VALUES (?,?,?,?,?,?)',
        [...this.#records].map(([p, r]) => [p, r.version, r.size, r.hash, r.signature, r.recordedAtMs]),
      );
      this.#dirty = false;
    } catch {
      /* only costs a re-read next time */
    }
  }
}
