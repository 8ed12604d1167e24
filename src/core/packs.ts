/**
 * Packs: the spool's small blobs, written one after another into a few large files.
 *
 *   <spool>/packs/<16 hex>.pack    records back to back: a 48-byte header, then the content
 *
 * A trip of small files carries hundreds of thousands of blobs. As a file each, every one
 * cost a create at fetch and an unlink at store: on a file system that discards freed
 * blocks, freeing 100k blob files took 15–19 s of a store, and `rm -rf` of 30k of them
 * 4–4.8 s. In packs, a pack whose blobs have all landed is one unlink.
 *
 * Record header: 'BFPK', a state byte ('L' live, 'D' removed), three zero bytes, the
 * content's size (64-bit little-endian) and its SHA-256 (32 bytes). A pack is read from its
 * start, and the first header that does not parse ends it: a crash while a pack was written
 * leaves at most a torn tail, whose blobs are carried again. Removing a blob marks its
 * record 'D'; a pack with no live record left is deleted. Packs are only ever appended to
 * by the spool opening that created them. Content is never trusted: every reader verifies
 * it against its hash, as for the blob files.
 */
import { closeSync, constants as C, createReadStream, fstatSync, ftruncateSync, openSync, promises as fsp, readSync, writeSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
import { bitfogError, toBitfogError } from './errors.ts';
import { readFullySync, syncDir } from './fsutil.ts';
import { sha256Hex } from './hashing.ts';

export const PACKS_DIR = 'packs';
const MAGIC = Buffer.from('BFPK');
const HEADER_BYTES = 48;
const LIVE = 0x4c; // 'L'
const DEAD = 0x44; // 'D'
const STATE_OFFSET = 4;
/** A pack takes new records until it holds this many bytes; then the next one starts. */
export const PACK_MAX_BYTES = 64 * 1024 * 1024;
const PACK_NAME = /^[0-9a-f]{16}\.pack$/;

/** Where a packed blob's content lies. */
interface Located {
  pack: string;
  /** Offset of the record's header; the content follows it. */
  at: number;
  size: number;
}

interface PackFile {
  file: string;
  /** Records not removed. */
  live: number;
  /** Appends under way: a pack is not deleted while it has any. */
  pending: number;
  /** Descriptor for reads, opened when first needed. */
  readFd?: number;
}

/** The pack this spool opening appends to. */
interface OpenPack {
  name: string;
  fd: number;
  end: number;
  /** A write failed: what follows it may not be readable, so nothing more goes here. */
  broken: boolean;
  /** That write's error: records gathered for this pack meanwhile fail with it too (ENOSPC stays ENOSPC). */
  failure?: unknown;
}

/** Writes a pack record (header, then content) into `into` at `offset`; returns its length. */
function putRecord(into: Buffer, offset: number, hex: string, content: Uint8Array): number {
  MAGIC.copy(into, offset);
  into[offset + STATE_OFFSET] = LIVE;
  into.fill(0, offset + 5, offset + 8);
  into.writeBigUInt64LE(BigInt(content.length), offset + 8);
  into.write(hex, offset + 16, 'hex');
  into.set(content, offset + HEADER_BYTES);
  return HEADER_BYTES + content.length;
}

/**
 * Records are gathered in memory and written together, up to this many bytes a write: one
 * write for the records of one turn of the event loop, not one each. They are written on
 * the calling thread: handing each record to the writer worker cost the main thread about
 * 40 µs (a message, and a thread switch on 2 cores), more than writing it here. Fetch of
 * 30k small files: main thread 5.3–6.0 → 4.8 CPU-s, 6.9–8.3 → 6.0–6.4 s.
 */
const BATCH_BYTES = 1024 * 1024;
let packWrites = 0;

/** Writes into packs this process made (for tests: batching shows here). */
export function packWritesMade(): number {
  return packWrites;
}

/** Records gathered for one write at `at` of `pack`, back to back. */
interface Batch {
  pack: OpenPack;
  at: number;
  /** Where they are gathered: `Packs.#gather`, reused for every batch, or memory of its own for a record larger than that. */
  bytes: Buffer;
  fill: number;
  /** Settles once the batch is written, or not. */
  written: Promise<void>;
  settle: (error?: unknown) => void;
}

export class Packs {
  readonly #dir: string;
  readonly #blobs = new Map<string, Located>();
  readonly #packs = new Map<string, PackFile>();
  #current: OpenPack | undefined;
  /** Packs appended to since they were last made durable. */
  readonly #unsynced = new Set<string>();
  readonly #appends = new Set<Promise<void>>();
  /** Appends under way, by hash: the same content asked for again meanwhile waits for it instead. */
  readonly #appending = new Map<string, Promise<void>>();
  /** Records not yet handed to the writer (see BATCH_BYTES). */
  #batch: Batch | undefined;
  /** Memory where batches are gathered (see #startBatch). */
  #gather: Buffer | undefined;
  /** A write of the gathering batch is scheduled. */
  #sendQueued = false;
  /** Live records whose content an earlier record already holds (see #scan). */
  readonly #duplicates: Array<{ pack: string; at: number }> = [];

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** The packs in `dir` (created when missing unless `readOnly`), read record by record. */
  static async open(dir: string, { readOnly = false }: { readOnly?: boolean } = {}): Promise<Packs> {
    const packs = new Packs(dir);
    if (!readOnly) await fsp.mkdir(dir, { recursive: true });
    const names = await fsp.readdir(dir).catch((e: NodeJS.ErrnoException) => {
      if (readOnly && e.code === 'ENOENT') return [] as string[];
      throw toBitfogError(e, 'cannot read the spool');
    });
    for (const name of names.filter((n) => PACK_NAME.test(n)).sort()) packs.#scan(name);
    // A second live record of the same content would outlive the removal of the first and
    // bring the content back at the next opening: marked removed now.
    if (!readOnly) for (const d of packs.#duplicates.splice(0)) packs.#markRemoved(d.pack, [d.at]);
    // Packs left with no live blob (their last ones removed by a run that died before
    // deleting them) only take space.
    if (!readOnly) for (const [name, pack] of [...packs.#packs]) if (pack.live === 0) await packs.#delete(name);
    return packs;
  }

  #scan(name: string): void {
    const file = path.join(this.#dir, name);
    const pack: PackFile = { file, live: 0, pending: 0 };
    let fd: number;
    try {
      fd = openSync(file, C.O_RDONLY | C.O_NOFOLLOW);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return; // deleted since it was listed (status reads without the lock)
      throw toBitfogError(e, `cannot read the spool's pack ${name}`);
    }
    try {
      const length = fstatSync(fd).size;
      const header = Buffer.alloc(HEADER_BYTES);
      for (let at = 0; at + HEADER_BYTES <= length; ) {
        if (readFullySync(fd, header, at) < HEADER_BYTES || !header.subarray(0, 4).equals(MAGIC)) break;
        const state = header[STATE_OFFSET];
        const size = Number(header.readBigUInt64LE(8));
        if ((state !== LIVE && state !== DEAD) || at + HEADER_BYTES + size > length) break; // a torn record ends the pack
        const hash = `sha256:${header.subarray(16, 48).toString('hex')}`;
        if (state === LIVE && !this.#blobs.has(hash)) {
          this.#blobs.set(hash, { pack: name, at, size });
          pack.live++;
        } else if (state === LIVE) {
          this.#duplicates.push({ pack: name, at });
        }
        at += HEADER_BYTES + size;
      }
    } finally {
      closeSync(fd);
    }
    this.#packs.set(name, pack);
  }

  has(hash: string): boolean {
    return this.#blobs.has(hash);
  }

  /** Every packed blob with its size. */
  *entries(): IterableIterator<[string, number]> {
    for (const [hash, b] of this.#blobs) yield [hash, b.size];
  }

  /** The pack files (for tests). */
  get packFiles(): string[] {
    return [...this.#packs.values()].map((p) => p.file);
  }

  /**
   * Appends `content` (whose SHA-256 is `hash`) to the current pack, on the writer worker
   * where it can run. `content` is copied before anything is awaited: the caller may reuse
   * it once this returns. The blob counts as packed once this resolves. Throws ENOSPC and
   * other write errors (the blob is then not packed).
   */
  async append(hash: string, content: Uint8Array): Promise<void> {
    const pending = this.#appending.get(hash);
    if (pending) return pending;
    if (this.#blobs.has(hash)) return;
    const appending = this.#append(hash, content);
    this.#appending.set(hash, appending);
    try {
      await appending;
    } finally {
      this.#appending.delete(hash);
    }
  }

  async #append(hash: string, content: Uint8Array): Promise<void> {
    const hex = sha256Hex(hash);
    if (!hex) throw bitfogError('EBADSPOOL', `not a sha256 content hash: ${JSON.stringify(hash)}`);
    const length = HEADER_BYTES + content.length;
    const pack = this.#writable();
    const file = this.#packs.get(pack.name)!;
    let batch = this.#batch;
    if (batch && (batch.pack !== pack || batch.fill + length > batch.bytes.length)) {
      this.#send(); // a batch holds records of one pack, and never grows
      batch = undefined;
    }
    batch ??= this.#startBatch(pack, Math.max(BATCH_BYTES, length));
    const at = pack.end;
    pack.end += length;
    // Copied now: the caller may reuse `content` once this returns.
    batch.fill += putRecord(batch.bytes, batch.fill, hex, content);
    this.#unsynced.add(pack.name);
    file.pending++;
    // Full: written at once. Otherwise once the appends of this turn of the event loop joined it.
    if (batch.fill >= BATCH_BYTES) this.#send();
    else if (!this.#sendQueued) {
      this.#sendQueued = true;
      setImmediate(() => {
        this.#sendQueued = false;
        this.#send();
      });
    }
    try {
      await batch.written;
    } catch (e) {
      throw toBitfogError(e, 'cannot write to the spool');
    } finally {
      file.pending--;
    }
    this.#blobs.set(hash, { pack: pack.name, at, size: content.length });
    file.live++;
  }

  #startBatch(pack: OpenPack, capacity: number): Batch {
    let settle!: Batch['settle'];
    const written = new Promise<void>((resolve, reject) => (settle = (error) => (error === undefined ? resolve() : reject(error))));
    written.catch(() => {}); // each record's append reports it
    const bytes = capacity <= BATCH_BYTES ? (this.#gather ??= Buffer.allocUnsafeSlow(BATCH_BYTES)) : Buffer.allocUnsafeSlow(capacity);
    const batch: Batch = { pack, at: pack.end, bytes, fill: 0, written, settle };
    this.#batch = batch;
    this.#appends.add(written);
    void written.finally(() => this.#appends.delete(written)).catch(() => {});
    return batch;
  }

  /** Writes the gathered batch, and settles its appends. */
  #send(): void {
    const batch = this.#batch;
    if (!batch) return;
    this.#batch = undefined; // its memory is gathered into again from here on
    const { pack } = batch;
    try {
      // Nothing more goes into a pack once a write into it failed: what follows a torn
      // record is never read. The records gathered for it meanwhile fail the same way.
      if (pack.failure !== undefined) throw pack.failure;
      for (let off = 0; off < batch.fill; ) off += writeSync(pack.fd, batch.bytes, off, batch.fill - off, batch.at + off);
      packWrites++;
      batch.settle();
    } catch (e) {
      pack.failure ??= e;
      pack.broken = true;
      // What a failed write left (on a full disk, part of the batch) is cut off: it would
      // only take the space the manifest needs to record what did land.
      try {
        ftruncateSync(pack.fd, batch.at);
      } catch {
        /* a torn tail is ignored when the pack is read; it only takes space */
      }
      batch.settle(e);
    }
  }

  /** The pack to append to: this opening's, or a new one. */
  #writable(): OpenPack {
    const current = this.#current;
    if (current && !current.broken && current.end < PACK_MAX_BYTES) return current;
    const name = `${randomBytes(8).toString('hex')}.pack`;
    const file = path.join(this.#dir, name);
    let fd: number;
    try {
      fd = openSync(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o644);
    } catch (e) {
      throw toBitfogError(e, 'cannot write to the spool');
    }
    this.#packs.set(name, { file, live: 0, pending: 0 });
    this.#current = { name, fd, end: 0, broken: false };
    if (current) this.#retire(current);
    return this.#current;
  }

  /** Closes a pack no longer appended to, once its writes are done. */
  #retire(pack: OpenPack): void {
    void Promise.allSettled([...this.#appends]).then(async () => {
      closeSync(pack.fd);
      // A pack given up after a failed write may hold nothing live: it only takes space.
      if ((this.#packs.get(pack.name)?.live ?? 1) === 0) await this.#delete(pack.name).catch(() => {});
    });
  }

  /** A packed blob's content, exactly its recorded size (the caller verifies it), into `into` when long enough. */
  read(hash: string, into?: Buffer): Buffer {
    const b = this.#located(hash);
    const buffer = into && into.length >= b.size ? into.subarray(0, b.size) : Buffer.allocUnsafe(b.size);
    const got = readFullySync(this.#readFd(b.pack), buffer, b.at + HEADER_BYTES);
    return buffer.subarray(0, got);
  }

  /** A packed blob's content as a stream (the caller verifies it). */
  stream(hash: string, signal?: AbortSignal): Readable {
    const b = this.#located(hash);
    const file = this.#packs.get(b.pack)!.file;
    if (b.size === 0) return Readable.from([]);
    return createReadStream(file, { start: b.at + HEADER_BYTES, end: b.at + HEADER_BYTES + b.size - 1, ...(signal ? { signal } : {}) });
  }

  #located(hash: string): Located {
    const b = this.#blobs.get(hash);
    if (!b) throw bitfogError('ENOENT', `blob ${hash} is not on the spool`);
    return b;
  }

  #readFd(name: string): number {
    const pack = this.#packs.get(name)!;
    try {
      pack.readFd ??= openSync(pack.file, C.O_RDONLY | C.O_NOFOLLOW);
    } catch (e) {
      throw toBitfogError(e, `cannot read the spool's pack ${name}`);
    }
    return pack.readFd;
  }

  /**
   * Removes packed blobs: a pack left with no live record is deleted, in others each record
   * is marked removed. Hashes not packed are ignored.
   */
  async remove(hashes: Iterable<string>): Promise<void> {
    const byPack = new Map<string, Array<[string, Located]>>();
    for (const hash of hashes) {
      const b = this.#blobs.get(hash);
      if (!b) continue;
      const list = byPack.get(b.pack);
      if (list) list.push([hash, b]);
      else byPack.set(b.pack, [[hash, b]]);
    }
    for (const [name, removed] of byPack) {
      // Forgotten only once the pack says so: a failure leaves them where they were.
      const pack = this.#packs.get(name)!;
      if (pack.live - removed.length <= 0 && pack.pending === 0 && this.#current?.name !== name) await this.#delete(name);
      else this.#markRemoved(name, removed.map(([, b]) => b.at));
      pack.live -= removed.length;
      for (const [hash] of removed) this.#blobs.delete(hash);
    }
  }

  /** Marks the records at `headers` of a pack removed. */
  #markRemoved(name: string, headers: number[]): void {
    const pack = this.#packs.get(name)!;
    let fd: number | undefined;
    try {
      fd = openSync(pack.file, C.O_WRONLY | C.O_NOFOLLOW);
      for (const at of headers) writeSync(fd, Buffer.of(DEAD), 0, 1, at + STATE_OFFSET);
    } catch (e) {
      throw toBitfogError(e, `cannot update the spool's pack ${name}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  async #delete(name: string): Promise<void> {
    const pack = this.#packs.get(name)!;
    if (pack.readFd !== undefined) closeSync(pack.readFd);
    this.#packs.delete(name);
    this.#unsynced.delete(name);
    await fsp.rm(pack.file, { force: true }).catch((e) => {
      throw toBitfogError(e, `cannot remove the spool's pack ${name}`);
    });
  }

  /** Makes what was appended durable: each pack written to, then the directory. */
  async sync(): Promise<void> {
    // The packs of the appends under way now; appends that start meanwhile wait for the next call.
    const names = [...this.#unsynced];
    this.#unsynced.clear();
    await Promise.allSettled([...this.#appends]);
    if (names.length === 0) return;
    for (const name of names) {
      const pack = this.#packs.get(name);
      if (!pack) continue;
      const handle = await fsp.open(pack.file, C.O_RDONLY | C.O_NOFOLLOW);
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await syncDir(this.#dir);
  }

  /** Waits for the writes, closes the descriptors; a pack this opening began and left without a live blob is deleted. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.#appends]);
    const current = this.#current;
    this.#current = undefined;
    if (current) {
      closeSync(current.fd);
      if ((this.#packs.get(current.name)?.live ?? 0) === 0) await this.#delete(current.name);
    }
    for (const pack of this.#packs.values()) {
      if (pack.readFd !== undefined) closeSync(pack.readFd);
      pack.readFd = undefined;
    }
  }
}
