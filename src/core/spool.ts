/**
 * The spool: a directory on the carried disk.
 *
 *   <spool>/manifest.db              the manifest (SQLite; see manifest.ts)
 *   <spool>/blobs/sha256/ab/<hex>    carried content, named by its SHA-256 (identical content once)
 *   <spool>/packs/<16 hex>.pack      small files' content (read whole by fetch), many per file: see packs.ts
 *   <spool>/tmp/                     blobs being written; emptied when a command starts
 *   <spool>/lock                     held by the one process using the spool
 *   <spool>/lock.reserve             room for the lock on a full disk (see SpoolLock)
 *
 * A blob only ever appears under its final name after its content hashed to that name, and
 * a packed blob's record is read back only up to the first torn one, so the blobs and packs
 * directories are the truth about what is carried: a crash loses at most the blobs being
 * written, and the manifest's `carried` table is rebuilt from them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, constants as C, createReadStream, openSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable } from 'node:stream';
import { bitfogError, toBitfogError } from './errors.ts';
import { BackgroundFlushes, FSYNC_EACH_MIN_BYTES, readBufferSize, readFullySync, syncDir, WriteBehind } from './fsutil.ts';
import { formatHash, HASH_ALGORITHM, hashFileHandle, openFileOf, sha256Hex } from './hashing.ts';
import { digestFile } from './delta/signer.ts';
import { Manifest } from './manifest.ts';
import type { Source } from './types.ts';
import { Packs, PACKS_DIR } from './packs.ts';
import { chunksOf, GatheringWriter, writeFully } from './streams.ts';
import pLimit from 'p-limit';

const MANIFEST = 'manifest.db';
/** A copy of the manifest being saved, under writeFileAtomic's temporary name. */
const MANIFEST_TEMP = /^manifest\.db\.[0-9a-f]{12}\.tmp$/;
/** Slack on top of twice the manifest's size in `Spool.manifestRoom`: journal rows, the file system's own blocks. */
const MANIFEST_ROOM_SLACK_BYTES = 1024 * 1024;
const LOCK = 'lock';
const LOCK_RESERVE = 'lock.reserve';
/** The lock's reserve being made, under makeLockReserve's temporary name. */
const LOCK_RESERVE_TEMP = /^lock\.reserve\.[0-9a-f]{12}\.tmp$/;
/** A lock whose owner on another host has not refreshed it for this long is stale. */
const FOREIGN_LOCK_STALE_MS = 60_000;
const LOCK_REFRESH_MS = 15_000;
/** A lock file still empty (or unreadable) this long after it was created belongs to no one. */
const UNFILLED_LOCK_MS = 5000;

export interface BlobInfo {
  hash: string;
  size: number;
}

/** Options of the spool's blob writers. */
export interface BlobWriteOptions {
  signal?: AbortSignal;
  /** Told of the bytes as they are taken in. */
  onBytes?: (n: number) => void;
  /** Fsync before landing (default); false leaves the flush to `syncBlobs`. */
  durable?: boolean;
}

export interface SpoolOptions {
  /** Create the spool when `dir` is not one yet (an empty or missing directory). */
  create: boolean;
  /**
   * Open a spool on a read-only file system (verify's case): no lock, since nothing can
   * change it, and nothing cleaned up or created. Its manifest must not be saved.
   */
  readOnly?: boolean;
  /**
   * How the descriptor of a blob written without `durable` is flushed in the background
   * (default: its datasync). Tests pass one that fails or waits.
   */
  datasync?: (handle: fsp.FileHandle) => Promise<void>;
}

/**
 * Throws EUSAGE when the spool directory `spoolDir` (existing or not) and the tree of a
 * backend on this machine (`Source.localRoot`) lie one inside the other: the spool's own
 * files would be carried, or removed by the store that writes into that tree.
 */
export async function assertSpoolApart(spoolDir: string, backend: Pick<Source, 'localRoot' | 'url'>, side: 'source' | 'destination'): Promise<void> {
  if (backend.localRoot === undefined) return;
  const spool = await resolveExisting(path.resolve(spoolDir));
  const root = await resolveExisting(backend.localRoot);
  const inside = (a: string, b: string) => a === b || a.startsWith(b.endsWith(path.sep) ? b : b + path.sep);
  if (inside(spool, root)) {
    throw bitfogError('EUSAGE', `the spool ${spoolDir} is inside the ${side} ${backend.url}: its own files would be ${side === 'source' ? 'carried' : 'overwritten or removed'}; put the spool elsewhere`);
  }
  if (inside(root, spool)) throw bitfogError('EUSAGE', `the ${side} ${backend.url} is inside the spool ${spoolDir}; put the spool elsewhere`);
}

/**
 * True when `recordedUrl`, a side's URL as a snapshot recorded it, names the tree `backend`
 * opened: the same URL, or for a local tree the same directory spelt another way (a
 * relative path, a file:// URL, a symlink on the way).
 */
export async function namesSameTree(recordedUrl: string, backend: Pick<Source, 'localRoot' | 'url'>): Promise<boolean> {
  if (recordedUrl === backend.url) return true;
  if (backend.localRoot === undefined) return false;
  const recordedPath = localPathOfRecordedUrl(recordedUrl);
  if (recordedPath === undefined) return false;
  return (await resolveExisting(recordedPath)) === (await resolveExisting(backend.localRoot));
}

/** True when two recorded URLs name the same tree: the same URL, or the same local directory spelt two ways. */
export async function recordedUrlsNameSameTree(a: string, b: string): Promise<boolean> {
  if (a === b) return true;
  const pathA = localPathOfRecordedUrl(a);
  const pathB = localPathOfRecordedUrl(b);
  if (pathA === undefined || pathB === undefined) return false;
  return (await resolveExisting(pathA)) === (await resolveExisting(pathB));
}

/** The local directory a recorded URL names (an absolute path or a file:// URL), if it names one. */
function localPathOfRecordedUrl(url: string): string | undefined {
  if (/^file:/i.test(url)) {
    try {
      return fileURLToPath(url);
    } catch {
      return undefined;
    }
  }
  return path.isAbsolute(url) ? url : undefined;
}

/** `p` with its longest existing prefix resolved by the kernel (symlinks followed). */
async function resolveExisting(p: string): Promise<string> {
  let rest = '';
  for (let dir = p; ; dir = path.dirname(dir)) {
    const real = await fsp.realpath(dir).catch(() => undefined);
    if (real !== undefined) return path.join(real, rest);
    if (path.dirname(dir) === dir) return p;
    rest = path.join(path.basename(dir), rest);
  }
}

export class Spool {
  readonly dir: string;
  readonly manifest: Manifest;
  readonly #blobs: Map<string, number>;
  /** The small blobs, packed (see packs.ts)… */
  readonly #packs: Packs;
  /** …and the blobs that are files of their own (a content may be both). */
  readonly #loose: Set<string>;
  /** Inode numbers of the blobs found when the spool was opened (see removeBlobs). */
  readonly #inodes: Map<string, number>;
  /** Blob directories known to exist (created or seen in this session). */
  readonly #blobDirs = new Set<string>();
  /**
   * Flushes of blobs written with `durable: false` (those of FSYNC_EACH_MIN_BYTES and more),
   * started when each was written, by hash: `syncBlobs` waits for them. Measured: a fetch of
   * 1 GiB in 64 files took 2.1–2.3 s instead of 2.6–2.7 s from a local path, 3.7–4.3 s
   * instead of 4.4–4.5 s over HTTP.
   */
  readonly #flushes = new BackgroundFlushes<string>();
  /** How a blob's descriptor is flushed in the background (see SpoolOptions.datasync). */
  readonly #datasync: (handle: fsp.FileHandle) => Promise<void>;
  readonly #lock: SpoolLock;

  private constructor(dir: string, manifest: Manifest, blobs: Map<string, number>, packs: Packs, inodes: Map<string, number>, lock: SpoolLock, datasync: (handle: fsp.FileHandle) => Promise<void>) {
    this.dir = dir;
    this.manifest = manifest;
    this.#blobs = blobs;
    this.#packs = packs;
    this.#loose = new Set(blobs.keys());
    for (const [hash, size] of packs.entries()) if (!blobs.has(hash)) blobs.set(hash, size);
    this.#inodes = inodes;
    this.#lock = lock;
    this.#datasync = datasync;
  }

  /**
   * Opens (and with `create`, creates) the spool at `dir` and takes its lock.
   * Throws ENOENT (no spool and not `create`), ELOCKED (another live process holds it),
   * EBADSPOOL (damaged or unknown manifest).
   */
  static async open(dir: string, { create, readOnly = false, datasync = (handle) => handle.datasync() }: SpoolOptions): Promise<Spool> {
    const abs = path.resolve(dir);
    const manifestFile = path.join(abs, MANIFEST);
    const exists = await fsp.access(manifestFile).then(() => true, () => false);
    if (readOnly) {
      if (!exists) throw bitfogError('ENOENT', `${dir} is not a spool (no ${MANIFEST})`);
      const manifest = await Manifest.load(manifestFile);
      const inodes = new Map<string, number>();
      const blobs = await scanBlobs(path.join(abs, 'blobs', 'sha256'), inodes).catch(() => new Map<string, number>());
      const packs = await Packs.open(path.join(abs, PACKS_DIR), { readOnly: true });
      return new Spool(abs, manifest, blobs, packs, inodes, NO_LOCK, datasync);
    }
    if (!exists) {
      if (!create) {
        throw bitfogError('ENOENT', `${dir} is not a spool (no ${MANIFEST}); run "bitfog fetch" or "bitfog store" to create one`);
      }
      const entries = await fsp.readdir(abs).catch(() => [] as string[]);
      const foreign = entries.filter((e) => ![MANIFEST, LOCK, LOCK_RESERVE, 'blobs', PACKS_DIR, 'tmp'].includes(e) && !e.startsWith(`${MANIFEST}.`) && !LOCK_RESERVE_TEMP.test(e));
      if (foreign.length > 0) {
        throw bitfogError('EBADSPOOL', `${dir} is not empty and not a spool (it holds ${JSON.stringify(foreign[0])}); use an empty or new directory`);
      }
      await fsp.mkdir(path.join(abs, 'blobs', 'sha256'), { recursive: true }).catch((e) => {
        throw toBitfogError(e, `cannot create spool ${dir}`);
      });
    }
    const lock = await SpoolLock.acquire(path.join(abs, LOCK));
    try {
      await fsp.mkdir(path.join(abs, 'blobs', 'sha256'), { recursive: true });
      // Whatever is in tmp/ was being written when a previous run died, and so was a copy
      // of the manifest still under its temporary name (see writeFileAtomic), or the lock's
      // reserve under its own.
      await fsp.rm(path.join(abs, 'tmp'), { recursive: true, force: true });
      for (const name of await fsp.readdir(abs)) {
        if (MANIFEST_TEMP.test(name) || LOCK_RESERVE_TEMP.test(name)) await fsp.rm(path.join(abs, name), { force: true });
      }
      await fsp.mkdir(path.join(abs, 'tmp'), { recursive: true });
      const manifest = exists ? await Manifest.load(manifestFile) : await Manifest.create();
      const inodes = new Map<string, number>();
      const blobs = await scanBlobs(path.join(abs, 'blobs', 'sha256'), inodes);
      const packs = await Packs.open(path.join(abs, PACKS_DIR));
      const spool = new Spool(abs, manifest, blobs, packs, inodes, lock, datasync);
      if (!exists) await spool.save();
      return spool;
    } catch (e) {
      await lock.release();
      throw e;
    }
  }

  /**
   * Opens a spool for reading only, without its lock (for status while another command
   * runs). Its manifest must not be saved. Throws ENOENT, EBADSPOOL.
   */
  static async inspect(dir: string): Promise<{ manifest: Manifest; blobs: BlobInfo[] }> {
    const abs = path.resolve(dir);
    if (!(await Spool.exists(abs))) throw bitfogError('ENOENT', `${dir} is not a spool (no ${MANIFEST})`);
    const manifest = await Manifest.load(path.join(abs, MANIFEST));
    const blobs = await scanBlobs(path.join(abs, 'blobs', 'sha256')).catch(() => new Map<string, number>());
    const packs = await Packs.open(path.join(abs, PACKS_DIR), { readOnly: true }).catch(() => undefined);
    for (const [hash, size] of packs?.entries() ?? []) if (!blobs.has(hash)) blobs.set(hash, size);
    await packs?.close();
    return { manifest, blobs: [...blobs].map(([hash, size]) => ({ hash, size })) };
  }

  /** True when `dir` holds a spool manifest. */
  static async exists(dir: string): Promise<boolean> {
    return fsp.access(path.join(dir, MANIFEST)).then(() => true, () => false);
  }

  /**
   * Free space a later save of the manifest needs: room for a new copy next to the one on
   * disk, which may grow by as much again (the carried blobs of a trip are rows of it, fewer
   * than the entries of the snapshot it already holds), and some slack.
   */
  async manifestRoom(): Promise<number> {
    const size = await fsp.stat(this.manifestFile).then((st) => st.size, () => 0);
    return 2 * size + MANIFEST_ROOM_SLACK_BYTES;
  }

  get manifestFile(): string {
    return path.join(this.dir, MANIFEST);
  }

  /** Writes the manifest (with the carried table mirrored from disk) atomically. */
  async save(): Promise<void> {
    this.manifest.setCarried([...this.#blobs].map(([hash, size]) => ({ hash, size })));
    await this.manifest.save(this.manifestFile).catch((e: unknown) => {
      throw toBitfogError(e, "cannot save the spool's manifest");
    });
  }

  /** Releases the lock and closes the manifest (without saving). */
  async close(): Promise<void> {
    // Background flushes hold their blobs' descriptors open until they are done.
    await this.#flushes.settle();
    await this.#packs.close();
    this.manifest.close();
    await this.#lock.release();
  }

  /** Bytes of the content `hash` on the spool, if it is there. */
  sizeOf(hash: string): number | undefined {
    return this.#blobs.get(hash);
  }

  has(hash: string): boolean {
    return this.#blobs.has(hash);
  }

  blobs(): BlobInfo[] {
    return [...this.#blobs].map(([hash, size]) => ({ hash, size }));
  }

  get carriedBytes(): number {
    let n = 0;
    for (const size of this.#blobs.values()) n += size;
    return n;
  }

  /** The file of a blob stored on its own (a packed one has none: see `readBlob`, `readSmallBlob`). */
  blobPath(hash: string): string {
    const hex = sha256Hex(hash);
    if (!hex) throw bitfogError('EBADSPOOL', `not a sha256 content hash: ${JSON.stringify(hash)}`);
    return path.join(this.dir, 'blobs', 'sha256', hex.slice(0, 2), hex);
  }

  /** Opens a blob for reading. The caller must verify what it reads against `hash`. */
  async readBlob(hash: string, signal?: AbortSignal): Promise<Readable> {
    if (this.#packs.has(hash)) return this.#packs.stream(hash, signal);
    const file = this.blobPath(hash);
    try {
      const handle = await fsp.open(file, C.O_RDONLY | C.O_NOFOLLOW);
      const size = this.#blobs.get(hash) ?? 1 << 20;
      return createReadStream('', { fd: handle, highWaterMark: readBufferSize(size), ...(signal ? { signal } : {}) });
    } catch (e) {
      throw toBitfogError(e, `cannot read blob ${hash}`);
    }
  }

  /**
   * A small blob read whole: store verifies it in memory before writing a byte of it.
   * Reads one byte more than `size`, so that a longer file shows as such; into `into` when
   * that is long enough (the result is then a view of it).
   */
  async readSmallBlob(hash: string, size: number, into?: Buffer): Promise<Buffer> {
    // Direct system calls: for a few kilobytes, cheaper than handing each to the I/O thread pool.
    // A packed blob reads its recorded size; a record of another size fails verification.
    if (this.#packs.has(hash)) return this.#packs.read(hash, into);
    let fd: number | undefined;
    try {
      fd = openSync(this.blobPath(hash), C.O_RDONLY | C.O_NOFOLLOW);
      const buffer = into && into.length > size ? into.subarray(0, size + 1) : Buffer.allocUnsafe(size + 1);
      return buffer.subarray(0, readFullySync(fd, buffer));
    } catch (e) {
      throw toBitfogError(e, `cannot read blob ${hash}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }

  /** Hashes a blob as it is on disk: its hash and size, to compare with its name. */
  async hashBlob(hash: string, options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {}): Promise<{ hash: string; bytes: number }> {
    if (this.#packs.has(hash)) {
      const content = this.#packs.read(hash);
      options.onBytes?.(content.length);
      return { hash: formatHash(createHash(HASH_ALGORITHM).update(content)), bytes: content.length };
    }
    try {
      const handle = await fsp.open(this.blobPath(hash), C.O_RDONLY | C.O_NOFOLLOW);
      try {
        return await hashFileHandle(handle, options);
      } finally {
        await handle.close();
      }
    } catch (e) {
      throw toBitfogError(e, `cannot read blob ${hash}`);
    }
  }

  /**
   * Writes a blob from `content`, hashing as it goes. It lands under its final name only when
   * the content hashed to `expectedHash` (when given) and had `expectedSize` bytes; otherwise
   * it is discarded and EINTEGRITY thrown. Returns the hash. Throws ENOSPC on a full disk
   * (nothing partial is kept).
   */
  async writeBlob(
    content: AsyncIterable<Buffer>,
    expected: { hash?: string; size: number },
    options: BlobWriteOptions = {},
  ): Promise<string> {
    return this.#writeBlobFrom(
      async (handle, behind, take) => {
        // Stream chunks are small and fresh: gathered into a few reused buffers, written in large writes.
        const writer = new GatheringWriter(handle, behind);
        try {
          for await (const chunk of chunksOf(content)) {
            take(chunk);
            await writer.write(chunk);
          }
          await writer.end();
        } catch (e) {
          writer.release();
          throw e;
        }
      },
      expected,
      options,
    );
  }

  /**
   * `writeBlob` from a source that hands its bytes in pieces of memory it reuses
   * (Source.readPieces, given `onPiece` by `fill`): each piece is hashed as it arrives and
   * written as it is, several at once at their own offsets, with nothing copied; its memory
   * is the source's again once the piece's write is done. Lands, fails and throws as
   * `writeBlob` does.
   */
  async writeBlobFromPieces(
    fill: (onPiece: (piece: Uint8Array) => Promise<void>) => Promise<unknown>,
    expected: { hash?: string; size: number },
    options: BlobWriteOptions = {},
  ): Promise<string> {
    return this.#writeBlobFrom(
      async (handle, behind, take) => {
        const writes = new Set<Promise<void>>();
        let position = 0;
        const onPiece = (piece: Uint8Array): Promise<void> => {
          try {
            take(piece);
          } catch (e) {
            return Promise.reject(e);
          }
          const at = position;
          position += piece.length;
          const written = writeFully(handle, piece, 0, piece.length, at).then(() => behind?.wrote(piece.length));
          writes.add(written);
          void written.then(() => writes.delete(written), () => {});
          return written;
        };
        try {
          await fill(onPiece);
        } finally {
          // A source that failed may not have waited for every write: none may outlive the descriptor.
          await Promise.allSettled([...writes]);
        }
      },
      expected,
      options,
    );
  }

  /**
   * The body of the blob writers: `write` puts the content into `handle` (a new temporary
   * file), calling `take` with its bytes in order before they may change; then the file is
   * made durable or left to flush, and landed under its hash.
   */
  async #writeBlobFrom(
    write: (handle: fsp.FileHandle, behind: WriteBehind | undefined, take: (bytes: Uint8Array) => void) => Promise<void>,
    expected: { hash?: string; size: number },
    options: BlobWriteOptions,
  ): Promise<string> {
    const tmp = path.join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    const h = createHash('sha256');
    let bytes = 0;
    const handle = await fsp.open(tmp, 'w', 0o644).catch((e) => {
      throw toBitfogError(e, 'cannot write to the spool');
    });
    const durable = options.durable !== false;
    // Not durable now: the disk's work starts while the blob is written (see #flushes).
    const behind = durable ? undefined : new WriteBehind({ datasync: () => this.#datasync(handle) });
    const take = (chunk: Uint8Array) => {
      if (options.signal?.aborted) throw bitfogError('EABORTED', 'operation aborted');
      h.update(chunk);
      bytes += chunk.length;
      options.onBytes?.(chunk.length);
    };
    let flushed: Promise<void> | undefined;
    try {
      await write(handle, behind, take);
      if (durable) await handle.sync();
      if (behind && bytes >= FSYNC_EACH_MIN_BYTES) {
        await this.#flushes.room();
        flushed = this.#flushes.start(behind.finish(), handle);
      } else {
        await behind?.settle();
        await handle.close();
      }
    } catch (e) {
      await behind?.settle().catch(() => {});
      await handle.close().catch(() => {});
      await fsp.rm(tmp, { force: true });
      throw toBitfogError(e, 'cannot write to the spool');
    }
    const hash = await this.#land(tmp, formatHash(h), bytes, expected);
    if (flushed) this.#flushes.keep(hash, flushed);
    return hash;
  }

  /**
   * Like `writeBlob`, for content already in memory (a small file read whole): hashed here,
   * then appended to a pack (see packs.ts) on the writer worker, while this thread goes on
   * with the next files; on this thread if the worker failed. Not fsynced (as `writeBlob`
   * with `durable: false`; `syncBlobs` makes it durable). `content` may be reused once this
   * returns. Throws EINTEGRITY, ENOSPC.
   */
  async putSmallBlob(content: Uint8Array, expected: { hash?: string; size: number }): Promise<string> {
    const hash = formatHash(createHash(HASH_ALGORITHM).update(content));
    if (content.length !== expected.size || (expected.hash !== undefined && hash !== expected.hash)) throw integrityError(hash, content.length, expected);
    // Already carried (a duplicate file): renaming a copy over it would cost far more than
    // writing one (measured: 330 µs against 22 µs for a new name), for the same bytes.
    if (this.#blobs.get(hash) === content.length) return hash;
    await this.#packs.append(hash, content);
    this.#blobs.set(hash, content.length);
    return hash;
  }

  /**
   * Like `writeBlob`, for content that `copy` puts into a new local file by its own means
   * (an in-kernel copy, see Source.copyToLocalFile). The copy is then read back and hashed:
   * what lands is what was verified.
   */
  async importBlob(
    copy: (file: string) => Promise<void>,
    expected: { hash?: string; size: number },
    options: BlobWriteOptions = {},
  ): Promise<string> {
    const tmp = path.join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    let hashed: { hash: string; bytes: number };
    let flushed: Promise<void> | undefined;
    try {
      await copy(tmp);
      const handle = await fsp.open(tmp, C.O_RDWR | C.O_NOFOLLOW);
      try {
        await handle.chmod(0o644); // the copy may have taken the mode of the file it came from
        // A large copy is all in the page cache now: its flush starts before it is read back
        // and hashed, so that the disk writes while the processor hashes.
        // (A copy of another size than expected is refused when it lands.)
        if (options.durable === false && expected.size >= FSYNC_EACH_MIN_BYTES) {
          await this.#flushes.room();
          // Hashed on a worker: several large files carried at once are hashed on as many cores.
          const hashing = digestFile(openFileOf(handle), { wholeFile: true }, options).then(({ hash, bytes }) => ({ hash: hash!, bytes }));
          flushed = this.#flushes.start(this.#datasync(handle), handle, hashing.catch(() => {}));
          hashed = await hashing;
        } else {
          hashed = await hashFileHandle(handle, options);
          if (options.durable !== false) await handle.sync();
        }
      } finally {
        if (!flushed) await handle.close();
      }
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw toBitfogError(e, 'cannot write to the spool');
    }
    const hash = await this.#land(tmp, hashed.hash, hashed.bytes, expected);
    if (flushed) this.#flushes.keep(hash, flushed);
    return hash;
  }

  /** Moves a written and hashed temporary file into place as a blob, if it is what was expected. */
  async #land(tmp: string, hash: string, bytes: number, expected: { hash?: string; size: number }): Promise<string> {
    if (bytes !== expected.size || (expected.hash !== undefined && hash !== expected.hash)) {
      await fsp.rm(tmp, { force: true });
      throw integrityError(hash, bytes, expected);
    }
    const final = this.blobPath(hash);
    const dir = path.dirname(final);
    if (!this.#blobDirs.has(dir)) {
      await fsp.mkdir(dir, { recursive: true });
      this.#blobDirs.add(dir);
    }
    await fsp.rename(tmp, final);
    this.#blobs.set(hash, bytes);
    this.#loose.add(hash);
    return hash;
  }

  /**
   * Makes blobs durable: fsyncs them, several at once, then their directories (so that the
   * renames that landed them survive a power loss too), and every pack appended to since
   * the last call. Writers call this for blobs they wrote with `durable: false` before
   * saving a manifest that lists them: the fsyncs then run together, off the path of the
   * transfers.
   */
  async syncBlobs(hashes: string[]): Promise<void> {
    // Packs written to since the last call too: a few fsyncs for any number of small blobs.
    await this.#packs.sync().catch((e) => {
      throw toBitfogError(e, 'cannot make the spool durable');
    });
    hashes = hashes.filter((h) => this.#loose.has(h));
    const limit = pLimit(BLOB_IO_PARALLELISM);
    await Promise.all(
      hashes.map((h) =>
        limit(async () => {
          await this.#flushes.wait(h); // its failure is this blob's, and stays on record for every later call
          const handle = await fsp.open(this.blobPath(h), C.O_RDONLY | C.O_NOFOLLOW).catch((e: NodeJS.ErrnoException) => {
            if (e.code === 'ENOENT') return undefined; // removed since: nothing to keep
            throw e;
          });
          if (!handle) return;
          try {
            await handle.sync();
          } finally {
            await handle.close();
          }
        }),
      ),
    ).catch((e) => {
      throw toBitfogError(e, 'cannot make the spool durable');
    });
    const dirs = new Set(hashes.map((h) => path.dirname(this.blobPath(h))));
    for (const d of dirs) await syncDir(d);
  }

  /** Deletes a blob (landed at the destination, or found corrupt). */
  async removeBlob(hash: string): Promise<void> {
    this.#flushes.forget(hash);
    await this.#packs.remove([hash]);
    if (this.#loose.has(hash)) {
      try {
        await fsp.unlink(this.blobPath(hash));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw toBitfogError(e, `cannot remove blob ${hash}`);
      }
      this.#loose.delete(hash);
    }
    this.#blobs.delete(hash);
    this.#inodes.delete(hash);
  }

  /**
   * Deletes many blobs, several at a time (a trip of small files frees thousands), in the
   * order of their inode numbers where known: about the order they were written in, so
   * that the blocks freed one after the other lie together. On a file system that discards
   * freed blocks, 100k blobs took 15.2–18.8 s this way against 19.1–20.1 s in the order of
   * their directories, and a store of them about 4 s less (two crossed pairs of runs).
   */
  async removeBlobs(hashes: Iterable<string>): Promise<void> {
    const all = [...hashes];
    // Packed ones together: a pack all of whose blobs go is one unlink.
    await this.#packs.remove(all);
    for (const h of all) if (!this.#loose.has(h)) this.#blobs.delete(h);
    const loose = all.filter((h) => this.#loose.has(h));
    const limit = pLimit(BLOB_IO_PARALLELISM);
    const inode = (h: string) => this.#inodes.get(h) ?? Number.MAX_SAFE_INTEGER;
    const ordered = loose.sort((a, b) => inode(a) - inode(b));
    await Promise.all(ordered.map((h) => limit(() => this.removeBlob(h))));
  }

  /** Free bytes on the spool's file system. */
  async freeSpace(): Promise<number> {
    const st = await fsp.statfs(this.dir);
    return Number(st.bavail) * Number(st.bsize);
  }
}

/** Blob files stat-ed or removed at once. */
const BLOB_IO_PARALLELISM = 32;

/** Carried content that is not what the snapshot says: the file changed while being carried. */
function integrityError(hash: string, bytes: number, expected: { hash?: string; size: number }) {
  return bitfogError(
    'EINTEGRITY',
    bytes !== expected.size
      ? `read ${bytes} bytes, expected ${expected.size}: the file changed while being carried`
      : `content hashed to ${hash}, expected ${expected.hash}: the file changed while being carried`,
  );
}

/** The blobs under `root` with their sizes; their inode numbers go into `inodes` when given. */
async function scanBlobs(root: string, inodes?: Map<string, number>): Promise<Map<string, number>> {
  const blobs = new Map<string, number>();
  for (const prefix of await fsp.readdir(root)) {
    if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
    const dir = path.join(root, prefix);
    const names = (await fsp.readdir(dir)).filter((name) => /^[0-9a-f]{64}$/.test(name) && name.startsWith(prefix));
    for (let i = 0; i < names.length; i += BLOB_IO_PARALLELISM) {
      const batch = names.slice(i, i + BLOB_IO_PARALLELISM);
      const stats = await Promise.all(batch.map((name) => fsp.stat(path.join(dir, name))));
      batch.forEach((name, k) => {
        blobs.set(`sha256:${name}`, stats[k]!.size);
        inodes?.set(`sha256:${name}`, stats[k]!.ino);
      });
    }
  }
  return blobs;
}

/**
 * One process per spool. The lock file holds the owner's host, pid and start time. On the
 * same host a lock whose process is gone is stale and taken over at once (a kill -9 never
 * leaves a spool stuck); a lock from another host is stale once its owner stopped
 * refreshing it for FOREIGN_LOCK_STALE_MS.
 *
 * A full spool disk must not keep the lock from being taken: store is the command that
 * frees it. Creating the empty lock file needs no data block, but writing its owner does.
 * So the spool keeps one block of room in `lock.reserve`, given up when that write finds
 * the disk full and made again when the lock is released (store has freed space by then).
 * A file rather than, say, a symbolic link whose target names the owner (which needs no
 * block either): the carried disk is often FAT or exFAT, which have no symbolic links.
 */
/** The lock of a spool opened read-only: there is nothing to hold. */
const NO_LOCK = { release: async () => {} } as unknown as SpoolLock;

class SpoolLock {
  readonly #file: string;
  readonly #timer: NodeJS.Timeout;

  private constructor(file: string) {
    this.#file = file;
    this.#timer = setInterval(() => {
      const now = new Date();
      fsp.utimes(file, now, now).catch(() => {});
    }, LOCK_REFRESH_MS);
    this.#timer.unref();
  }

  static async acquire(file: string): Promise<SpoolLock> {
    const me = JSON.stringify({ host: os.hostname(), pid: process.pid, started: new Date().toISOString() });
    for (let takeovers = 0; ; ) {
      let handle: fsp.FileHandle | undefined;
      try {
        handle = await fsp.open(file, 'wx', 0o644);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw lockError(e);
      }
      if (handle) {
        await fillLock(file, handle, me);
        await makeLockReserve(file);
        return new SpoolLock(file);
      }
      const owner = await readLockOwner(file);
      if (!owner) {
        // Empty or half-written: another process is filling it this very moment, or one was
        // killed between creating and filling it. Look again until it names its owner or has
        // stayed unfilled too long to be anyone's.
        const st = await fsp.stat(file).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs < UNFILLED_LOCK_MS) {
          await new Promise((resolve) => setTimeout(resolve, 100));
          continue;
        }
      } else if (!(await ownerIsGone(file, owner))) {
        throw bitfogError(
          'ELOCKED',
          `the spool is in use by process ${owner.pid} on ${owner.host} since ${owner.started}; wait for it to finish`,
        );
      }
      if (++takeovers > 3) throw bitfogError('ELOCKED', 'could not take the spool lock (another process keeps taking it)');
      // Stale: remove it, then try again.
      await fsp.rm(file, { force: true });
    }
  }

  async release(): Promise<void> {
    clearInterval(this.#timer);
    await fsp.rm(this.#file, { force: true });
    await makeLockReserve(this.#file);
  }
}

/**
 * Writes the owner into a lock file just created; on a full disk, gives up the reserved
 * room and writes again. A lock that cannot be filled is removed, not left empty (where
 * the next command would wait for it to be filled).
 */
async function fillLock(file: string, handle: fsp.FileHandle, owner: string): Promise<void> {
  try {
    try {
      await handle.writeFile(owner);
    } catch (e) {
      if (!isDiskFull(e)) throw e;
      await fsp.rm(`${file}.reserve`, { force: true });
      await handle.truncate(0);
      await handle.write(owner, 0);
    }
    await handle.close();
  } catch (e) {
    await handle.close().catch(() => {});
    await fsp.rm(file, { force: true });
    throw lockError(e);
  }
}

/** Makes the lock's reserved room (one block of the spool's file system) if it is missing. Best effort: a full disk only means there is none for now. */
async function makeLockReserve(lockFile: string): Promise<void> {
  const reserve = `${lockFile}.reserve`;
  if (await fsp.access(reserve).then(() => true, () => false)) return;
  try {
    const { bsize } = await fsp.statfs(path.dirname(lockFile));
    const tmp = `${reserve}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      // Written, not merely sized: a file of holes holds no blocks.
      await fsp.writeFile(tmp, Buffer.alloc(Math.max(4096, Math.min(bsize, 1024 * 1024))), { flag: 'wx' });
      await fsp.rename(tmp, reserve);
    } finally {
      await fsp.rm(tmp, { force: true });
    }
  } catch {
    /* no room now; made at the next release */
  }
}

function isDiskFull(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function lockError(e: unknown) {
  if (isDiskFull(e)) return toBitfogError(e, "cannot lock the spool: its disk is full, with no room left even for the lock; free some space on it and run the command again");
  return toBitfogError(e, 'cannot lock the spool');
}

interface LockOwner {
  host: string;
  pid: number;
  started: string;
}

async function readLockOwner(file: string): Promise<LockOwner | undefined> {
  try {
    const parsed = JSON.parse(await fsp.readFile(file, 'utf8')) as LockOwner;
    if (typeof parsed.pid === 'number' && typeof parsed.host === 'string') return parsed;
  } catch {
    /* empty or half-written lock: treated as stale below */
  }
  return undefined;
}

async function ownerIsGone(file: string, owner: LockOwner): Promise<boolean> {
  if (owner.host === os.hostname()) {
    if (owner.pid === process.pid) return false;
    try {
      process.kill(owner.pid, 0);
      return false;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }
  const st = await fsp.stat(file).catch(() => undefined);
  return !st || Date.now() - st.mtimeMs > FOREIGN_LOCK_STALE_MS;
}
