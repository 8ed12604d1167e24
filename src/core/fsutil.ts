/**
 * Small local-file helpers the core uses for its own files (manifests, caches, locks, blobs)
 * and the local backend shares; destination data itself always goes through a Destination.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, readSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';

/** Writes `data` to `file` so that `file` holds either the old or the new content, durably. */
export async function writeFileAtomic(file: string, data: Uint8Array): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    const handle = await fsp.open(tmp, 'w', 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (e) {
    // A full disk, say: what was written of the copy only takes space.
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(path.dirname(file));
}

/** fsyncs a directory so that renames and creations inside it survive a power loss. */
export async function syncDir(dir: string): Promise<void> {
  let handle: fsp.FileHandle | undefined;
  try {
    handle = await fsp.open(dir, 'r');
    await handle.sync();
  } catch (e) {
    // Some file systems (and all of Windows) cannot fsync a directory; the rename still happened.
    if (!['EINVAL', 'EISDIR', 'EPERM', 'EBADF'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
  } finally {
    await handle?.close();
  }
}

/**
 * Read buffer for a file of `fileSize` bytes: sized to the file, so that a 20 KiB file does
 * not cost a large allocation (a hundred thousand small files would spend their time
 * collecting garbage), and at most 256 KiB for large ones. Measured on Linux: reading,
 * hashing and writing 1 GiB through 256–512 KiB chunks took 1.2 s, through 1 MiB chunks
 * 4–5 s — chunks that stay in the CPU's cache between the read, the hash and the write.
 */
export function readBufferSize(fileSize: number): number {
  return Math.min(256 * 1024, Math.max(16 * 1024, fileSize));
}

/**
 * Files at least this large are copied by the backends' own means (Source.copyToLocalFile,
 * Destination.writeFromLocalFile: an in-kernel copy for local disks) and verified by
 * reading the copy back. Smaller ones stream through bitfog: for them the extra opens of a
 * copy and a read-back cost more than moving a few kilobytes.
 */
export const OWN_COPY_MIN_BYTES = 1024 * 1024;

/**
 * Files at least this large are made durable each (fetch's blobs, before the manifest that
 * lists them is saved; store's files, before they are renamed into place): an fsync costs
 * little next to their data. Smaller ones are flushed in batches: at store, the files of a
 * batch together; at fetch, the packs they were appended to (see packs.ts).
 */
export const FSYNC_EACH_MIN_BYTES = 8 * 1024 * 1024;

/**
 * Files of FSYNC_EACH_MIN_BYTES and more that fetch or store move at once: as many as there
 * are cores. Every byte of them is hashed, and at store signed, on this machine's CPU, and
 * for a local disk the copy is the kernel's CPU too; more at once only made them compete.
 * Measured storing 8 files of 256 MiB on 2 cores: 4 at once 5.5–5.8 s (2.0–4.7 s of system
 * time in all), 2 at once 4.3–4.6 s (1.3–1.8 s). Small files keep their own, wider limit:
 * for them waiting on the disk and on round trips is what there is to overlap.
 */
export const LARGE_FILES_AT_ONCE = Math.max(1, availableParallelism());

/** Background flushes running at once (see BackgroundFlushes.room). */
export const MAX_BACKGROUND_FLUSHES = 2;

/**
 * Flushes left running after files were written, each holding its file's descriptor until
 * it is done, and known by a key (a blob's hash, a destination path): the disk writes one
 * file back while the next ones are written or verified, and the fsync that must come
 * later (before a manifest lists the file, before a rename) has little left to wait for.
 * A flush's failure is its file's: `wait` reports it, every time, until the key is
 * forgotten, since an fsync through another descriptor might not see it.
 */
export class BackgroundFlushes<K> {
  readonly #byKey = new Map<K, Promise<void>>();
  /** Every flush still running, settled or not. */
  readonly #running = new Set<Promise<void>>();

  /**
   * Waits while MAX_BACKGROUND_FLUSHES are running: each holds a thread of the I/O pool
   * that the transfers need too (and a descriptor), and a slow disk must slow the writers
   * down, not pile up flushes behind them.
   */
  async room(): Promise<void> {
    while (this.#running.size >= MAX_BACKGROUND_FLUSHES) await Promise.race(this.#running);
  }

  /**
   * Lets `flush` run on, and closes `handle` once it is done and `stillReading` (a read
   * through the same descriptor) has settled. Returns the flush, for `keep`.
   */
  start(flush: Promise<void>, handle: Pick<fsp.FileHandle, 'close'>, stillReading?: Promise<unknown>): Promise<void> {
    const flushed = flush.finally(() => Promise.resolve(stillReading).finally(() => handle.close().catch(() => {})));
    flushed.catch(() => {}); // reported by `wait` (or, for a file forgotten before, by nobody)
    const settled = flushed.then(() => {}, () => {});
    this.#running.add(settled);
    void settled.then(() => this.#running.delete(settled));
    return flushed;
  }

  /** Records `flush` (from `start`) as the flush of `key`. */
  keep(key: K, flush: Promise<void>): void {
    this.#byKey.set(key, flush);
  }

  /** Waits for the flush of `key`, if any: throws its failure, and forgets it once it succeeded. */
  async wait(key: K): Promise<void> {
    const flush = this.#byKey.get(key);
    if (!flush) return;
    await flush;
    if (this.#byKey.get(key) === flush) this.#byKey.delete(key);
  }

  /** The file of `key` is gone: its flush concerns nobody (`settle` still waits for it). */
  forget(key: K): void {
    this.#byKey.delete(key);
  }

  /** The file of `from` is now known as `to`. */
  rename(from: K, to: K): void {
    const flush = this.#byKey.get(from);
    if (!flush) return;
    this.#byKey.delete(from);
    this.#byKey.set(to, flush);
  }

  /** Waits for every flush still running (their descriptors close). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.#running);
  }
}

/** Reads into `buffer` from `position` (default: the start) of the open file `fd` until the buffer is full or the file ends; returns the bytes read. */
export function readFullySync(fd: number, buffer: Uint8Array, position = 0): number {
  let got = 0;
  while (got < buffer.length) {
    const n = readSync(fd, buffer, got, buffer.length - got, position + got);
    if (n === 0) break;
    got += n;
  }
  return got;
}

/**
 * A streamed write starts the disk's work each time this many bytes are written: a
 * datasync runs in the background (one at a time) while the next bytes arrive, so the
 * final fsync has only the tail left to wait for. Measured on 1 GiB
 * (a delta assembly): the final fsync otherwise waited 1.4 s for data written seconds before.
 */
export const WRITE_BEHIND_BYTES = 64 * 1024 * 1024;

/**
 * Write-behind for a file being written (WRITE_BEHIND_BYTES): a background datasync each
 * time that many more bytes were written, one at a time. Its failure is the write's: the
 * error is reported once, to this descriptor, and a later fsync through another one might
 * not see it.
 */
export class WriteBehind {
  #written = 0;
  #flushedTo = 0;
  #flushing: Promise<void> | undefined;
  #failure: { error: unknown } | undefined;

  constructor(
    private readonly handle: Pick<fsp.FileHandle, 'datasync'>,
    private readonly every = WRITE_BEHIND_BYTES,
  ) {}

  /** `n` more bytes were written. Throws the failure of an earlier background flush. */
  wrote(n: number): void {
    if (this.#failure) throw this.#failure.error;
    this.#written += n;
    if (this.#flushing || this.#written - this.#flushedTo < this.every) return;
    this.#flushedTo = this.#written;
    this.#flushing = this.handle.datasync().then(
      () => void (this.#flushing = undefined),
      (error: unknown) => {
        this.#failure ??= { error };
        this.#flushing = undefined;
      },
    );
  }

  /** Waits for the flush in progress (the descriptor must stay open until then); throws its failure. */
  async settle(): Promise<void> {
    await this.#flushing;
    if (this.#failure) throw this.#failure.error;
  }

  /** After the last write: waits for the flush in progress, then flushes the rest. Throws any failure. */
  async finish(): Promise<void> {
    await this.settle();
    await this.handle.datasync();
  }
}
