/**
 * The local file system backend: a directory tree on this machine.
 *
 * Confinement: every operation stays inside the root. Paths are validated RelPaths, so
 * only symlinks could lead outside; an operation whose target or parent resolves outside
 * the root (a symlinked directory in the middle of the path) fails with EACCES. Files are
 * opened with O_NOFOLLOW and their real location is checked through the open descriptor,
 * so a swap between check and use cannot redirect a read or write.
 *
 * Durability: `write` does not wait for the disk; the core calls `sync` on batches of
 * temporary files before renaming them into place, and on their directories after, so that
 * a hundred thousand small files cost a few batched flushes rather than one fsync each.
 * A large streamed write only starts the disk's work early (WRITE_BEHIND_BYTES).
 */
import { type ChildProcessByStdio, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  constants as C,
  createReadStream,
  fchmodSync,
  fstatSync,
  futimesSync,
  lstatSync,
  openSync,
  promises as fsp,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  writeSync,
} from 'node:fs';
import path from 'node:path';
import { Readable, type Writable } from 'node:stream';
import { bitfogError, nativeError, toBitfogError, throwIfAborted } from '../../core/errors.ts';
import { BackgroundFlushes, readBufferSize, readFullySync, WRITE_BEHIND_BYTES, WriteBehind } from '../../core/fsutil.ts';
import { createFileOnWorker, FileWorkerFailed, fileWorkerAvailable } from '../../core/file-writer-worker.ts';
import { childPath, type RelPath } from '../../core/paths.ts';
import type {
  Capabilities,
  Destination,
  Entry,
  FingerprintOptions,
  ListOptions,
  Metadata,
  OpenFile,
  ReadOptions,
  ReadSmallFileOptions,
  SignalOption,
  WritableFile,
  WriteOptions,
} from '../../core/types.ts';
import { chunksOf, writeFully } from '../../core/streams.ts';
import {
  combineDirectoryDigests,
  type DirectoryFingerprint,
  directoryDigestLine,
  fingerprintDirectory,
  fingerprintInWorkers,
  hashSlice,
  LOCAL_FINGERPRINT,
  lstatWorkersAvailable,
  startLstatWorkers,
  type StatBatch,
  statInWorkers,
  StatKind,
  statNames,
} from './lstat-pool.ts';

export const localCapabilities: Capabilities = {
  atomicRename: true,
  atomicWrite: false,
  symlinks: true,
  rangedReads: true,
  serverSideHashes: false,
  // The kernel keeps nanoseconds, but Node sets times through a double of seconds: a few µs of error.
  mtimePrecisionMs: 0.01,
  modes: true,
  caseSensitive: process.platform !== 'darwin' && process.platform !== 'win32',
  emptyDirectories: true,
  maxConcurrency: 8,
};

const READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
const WRITE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW;
/** Flushes started behind in-kernel copies in this process (see #flushBehind; for tests). */
let flushesBehindStarted = 0;
export function localFlushesBehind(): number {
  return flushesBehindStarted;
}

/** Synchronous lstat calls in a listing between two turns of the event loop. */
const LSTAT_SLICE = 2048;
/**
 * Entries a listing stats on its own thread before it hands lstat to worker threads: a
 * worker answers its first message about 80 ms after it is started (measured here), the
 * time of some ten thousand lstat calls, so small trees are listed without them.
 */
const LISTED_IN_THREAD = 4096;
/** Names per lstat batch (per message to a worker). */
const NAMES_PER_BATCH = 256;
/** Directories read (and their names sent for lstat) ahead of the one being listed. */
const DIRECTORIES_AHEAD = 16;
/** Directories on the workers at once while taking a listing's fingerprint. */
const FINGERPRINT_DIRECTORIES_OUT = 16;
/** What node:fs functions statNames calls on this thread. */
const LOCAL_STAT = { lstatSync, readlinkSync };

/**
 * Batches of one directory on the workers at once, ahead of the one being listed: a
 * directory of a million names must not have all their results waiting in memory.
 */
const BATCHES_AHEAD = 8;

/**
 * A directory read by #readDirectory: its names in batches (`slices`), each one's lstat
 * results under way on a worker (`batches[i]`) or still to be stat'ed on this thread.
 * Batches from `firstPooled` on go to the workers, BATCHES_AHEAD at a time; `dispatched`
 * counts those considered so far.
 */
type DirectoryRead =
  | { dirPath: string; slices: string[][]; batches: Array<Promise<StatBatch | undefined> | undefined>; firstPooled: number; dispatched: number }
  | { error: unknown };
/** Parallel fsync calls in one `sync` batch. */
const SYNC_PARALLELISM = 16;
/** Verified directories remembered at most (see #checkParent). */
const VERIFIED_DIRS_MAX = 100_000;
/** From this many paths on, one syncfs of the file system is cheaper than an fsync each. */
const SYNCFS_MIN_PATHS = 8;

/** The shell loop of FileSystemSyncer: one `sync -f` of "$1" per line read, answered by a line. */
const SYNCFS_LOOP = 'while IFS= read -r _; do if sync -f -- "$1" 2>/dev/null; then echo ok; else echo fail; fi; done';

/**
 * syncfs(2) of the file system holding `dir`, through coreutils' `sync -f` run by one
 * long-lived shell. Node has no syncfs, and spawning `sync` from this process forks all
 * of it, which grows with its memory (measured with 500 MB in use: 43 ms a call against
 * 7 ms through the shell, and a store of 100k small files flushes a hundred batches).
 * The shell ends when its input closes: at `close`, or with this process.
 */
export class FileSystemSyncer {
  #child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  readonly #waiting: Array<(ok: boolean) => void> = [];
  #pendingOutput = '';
  /** No (more) syncfs here: no shell, no `sync -f`, or closed. */
  #unavailable = false;

  constructor(
    private readonly dir: string,
    private readonly command: readonly [string, ...string[]] = ['bash', '-c', SYNCFS_LOOP, 'bitfog-sync'],
  ) {}

  /** Flushes the file system: true once done, false when it cannot be done this way (then fsync each file). */
  flush(): Promise<boolean> {
    if (this.#unavailable) return Promise.resolve(false);
    const child = (this.#child ??= this.#start());
    return new Promise<boolean>((resolve) => {
      this.#waiting.push(resolve);
      this.#keepAlive();
      child.stdin.write('\n');
    });
  }

  /** Ends the shell (idempotent); later flushes answer false. */
  close(): void {
    this.#stop();
    this.#child?.stdin.end();
  }

  #start(): ChildProcessByStdio<Writable, Readable, null> {
    const [cmd, ...args] = this.command;
    const child = spawn(cmd, [...args, this.dir], { stdio: ['pipe', 'pipe', 'ignore'] });
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (text: string) => {
      this.#pendingOutput += text;
      for (let nl = this.#pendingOutput.indexOf('\n'); nl >= 0; nl = this.#pendingOutput.indexOf('\n')) {
        const ok = this.#pendingOutput.slice(0, nl) === 'ok';
        this.#pendingOutput = this.#pendingOutput.slice(nl + 1);
        if (!ok) this.#unavailable = true; // no `sync -f` here (old coreutils, no syncfs)
        this.#waiting.shift()?.(ok);
      }
      this.#keepAlive();
    });
    // No shell, or it went away: nobody is flushed this way any more.
    child.on('error', () => this.#stop());
    child.on('exit', () => this.#stop());
    child.stdin.on('error', () => this.#stop());
    return child;
  }

  /** The shell keeps this process alive only while a flush waits for it. */
  #keepAlive(): void {
    const child = this.#child;
    if (!child) return;
    const socket = (s: unknown) => s as { ref?: () => void; unref?: () => void };
    const how = this.#waiting.length > 0 ? 'ref' : 'unref';
    child[how]();
    socket(child.stdin)[how]?.();
    socket(child.stdout)[how]?.();
  }

  #stop(): void {
    this.#unavailable = true;
    for (const resolve of this.#waiting.splice(0)) resolve(false);
    this.#keepAlive();
  }
}

export class LocalBackend implements Destination {
  readonly url: string;
  readonly capabilities = localCapabilities;
  /** The root as given (absolute) and as the kernel resolves it. */
  readonly #root: string;
  readonly #realRoot: string;
  readonly #procFd: boolean;
  /** Parent directories found to be real directories inside the root (see #checkParent). */
  readonly #verifiedDirs = new Set<string>();
  /** Started at the first `sync` of many paths. */
  #syncer: FileSystemSyncer | undefined;
  /** Flushes started by writeFromLocalFile (see #flushBehind), by path: `sync` waits for them. */
  readonly #flushesBehind = new BackgroundFlushes<RelPath>();

  /** The root as the kernel resolves it (see Source.localRoot). */
  get localRoot(): string {
    return this.#realRoot;
  }

  private constructor(url: string, root: string, realRoot: string, procFd: boolean) {
    this.url = url;
    this.#root = root;
    this.#realRoot = realRoot;
    this.#procFd = procFd;
  }

  /**
   * Opens the directory `root`. For writing, creates it when missing (not its parents).
   * Throws ENOENT (reading a missing root), ENOTDIR.
   */
  static async open(url: string, root: string, { write }: { write: boolean }): Promise<LocalBackend> {
    const abs = path.resolve(root);
    let created = false;
    if (write) {
      // The directory itself, not missing parents (as rsync does): a mistyped destination
      // fails here instead of growing a tree of its own somewhere.
      await fsp.mkdir(abs).then(() => { created = true; }, (e: NodeJS.ErrnoException) => {
        if (e.code === 'EEXIST') return;
        if (e.code === 'ENOENT') throw bitfogError('ENOENT', `cannot create ${url}: its parent directory does not exist (create that first)`, { cause: e });
        throw toBitfogError(e, `cannot create ${url}`);
      });
    }
    let real: string;
    try {
      real = await fsp.realpath(abs);
      const st = await fsp.stat(real);
      if (!st.isDirectory()) throw bitfogError('ENOTDIR', `${url} is not a directory`);
    } catch (e) {
      const err = toBitfogError(e, `cannot open ${url}`);
      if (err.code === 'ENOENT') throw bitfogError('ENOENT', `${url} does not exist`, { cause: e });
      throw err;
    }
    // Nearly every use of a local tree lists it: its lstat workers start now, alongside
    // whatever the caller does before listing (see startLstatWorkers).
    startLstatWorkers();
    const procFd = await fsp.access('/proc/self/fd').then(() => true, () => false);
    // Plain paths are shown (and cached under) their absolute form: "./data" means different
    // trees from different directories.
    const backend = new LocalBackend(/^file:/i.test(url) ? url : abs, abs, real, procFd);
    backend.#createdRoot = created;
    return backend;
  }

  /** Whether this open created the root (see discardCreatedRoot). */
  #createdRoot = false;

  /** Removes the root if this open created it and it is still empty. */
  async discardCreatedRoot(): Promise<void> {
    if (!this.#createdRoot) return;
    this.#createdRoot = false;
    await fsp.rmdir(this.#root).catch(() => {});
  }

  /** Absolute local path of a RelPath, lexically (no symlink resolution). */
  localPath(p: RelPath): string {
    return p === '' ? this.#root : path.join(this.#root, p);
  }

  /**
   * Every entry under the root, depth first, directories before their contents. Symlinks
   * are listed (with their targets), never followed. Names that are not valid UTF-8 and
   * special files are reported through `onSkip`, entries that vanish mid-listing are left
   * out. Throws ENOENT/ENOTDIR/EACCES when the root itself cannot be listed.
   */
  list(options: ListOptions = {}): AsyncIterable<Entry> {
    // Directory by directory inside, entry by entry outside: resuming a generator per entry
    // costs about a microsecond, a tenth of a 100k-file rescan's listing.
    return flatten(this.#listDirectories(options));
  }

  /** Throws ENOENT/ENOTDIR/EACCES when the root cannot be listed. */
  async #checkRootForListing(): Promise<void> {
    const rootStat = await fsp.stat(this.#root).catch((e) => {
      throw toBitfogError(e, `cannot list ${this.url}`);
    });
    if (!rootStat.isDirectory()) throw bitfogError('ENOTDIR', `${this.url} is not a directory`);
  }

  /** The entries of `list`, one directory's worth at a time. */
  async *#listDirectories(options: ListOptions): AsyncGenerator<Entry[]> {
    const { signal, onFingerprint } = options;
    await this.#checkRootForListing();
    // The listing's fingerprint (see listingFingerprint), when asked for: each directory's
    // slices hashed as they are listed; nothing once anything was skipped.
    let fingerprintLines: string[] | undefined = onFingerprint ? [] : undefined;
    const onSkip: ListOptions['onSkip'] = (p, reason) => {
      fingerprintLines = undefined;
      options.onSkip?.(p, reason);
    };
    const pending: RelPath[] = ['' as RelPath];
    // Directories already read whose names are being stat'ed on worker threads (see
    // lstat-pool.ts). Only the order of `pending` decides what is yielded when, so a
    // listing comes out in the same order whichever thread made its lstat calls.
    const ahead = new Map<RelPath, DirectoryRead>();
    let listed = 0;
    let sinceBreak = 0;
    while (pending.length > 0) {
      throwIfAborted(signal);
      if (listed >= LISTED_IN_THREAD && lstatWorkersAvailable()) {
        for (let i = pending.length - 1; i >= 0 && i >= pending.length - DIRECTORIES_AHEAD; i--) {
          const d = pending[i]!;
          if (!ahead.has(d)) ahead.set(d, this.#readDirectory(d, onSkip, listed));
        }
      }
      const dir = pending.pop()!;
      const read = ahead.get(dir) ?? this.#readDirectory(dir, onSkip, listed);
      ahead.delete(dir);
      if ('error' in read) {
        if (dir === '') throw toBitfogError(read.error, `cannot list ${this.url}`);
        onSkip(dir, `unreadable directory (${toBitfogError(read.error).message})`);
        continue;
      }
      const entries: Entry[] = [];
      const dirHash = fingerprintLines && createHash('sha256');
      for (let b = 0; b < read.slices.length; b++) {
        const names = read.slices[b]!;
        dispatchBatches(read, b + 1 + BATCHES_AHEAD);
        let batch = await read.batches[b];
        if (!batch) {
          // Synchronous on purpose: a promise per lstat (through the 4-thread pool) costs
          // several times the call itself in this thread; measured on 100k files: 0.95 s
          // synchronous against 1.7 s with 64 promises in flight.
          batch = statNames(LOCAL_STAT, read.dirPath, names);
          sinceBreak += names.length;
        }
        if (dirHash) {
          hashSlice(dirHash, names, batch);
          // fingerprintDirectory gives up on such a name (it cannot tell a true U+FFFD from
          // a name that is not UTF-8), so a listing does too.
          if (names.some((n) => n.includes('\uFFFD'))) fingerprintLines = undefined;
        }
        for (let i = 0; i < names.length; i++) {
          const kind = batch.kinds[i]!;
          if (kind === StatKind.Vanished) {
            fingerprintLines = undefined; // fingerprintDirectory gives up on it too
            continue; // gone since readdir: simply not part of this listing
          }
          const p = childPath(dir, names[i]!);
          if (kind === StatKind.StatFailed) onSkip(p, `cannot stat (${toBitfogError(nativeError(batch.errors[i])).message})`);
          else if (kind === StatKind.LinkUnreadable) onSkip(p, `cannot read symlink (${toBitfogError(nativeError(batch.errors[i])).message})`);
          else if (kind === StatKind.Special) onSkip(p, `not a regular file, symlink or directory`);
          else {
            const entry = entryFromBatch(p, batch, i);
            if (kind === StatKind.Directory) pending.push(p);
            entries.push(entry);
          }
        }
        listed += names.length;
        if (sinceBreak >= LSTAT_SLICE) {
          // The event loop gets a turn every LSTAT_SLICE calls made on this thread.
          sinceBreak = 0;
          await new Promise((resolve) => setImmediate(resolve));
          throwIfAborted(signal);
        }
      }
      if (dirHash) fingerprintLines?.push(directoryDigestLine(dir, dirHash.digest('hex')));
      yield entries;
    }
    onFingerprint?.(fingerprintLines && combineDirectoryDigests(fingerprintLines));
  }

  /**
   * The fingerprint of what `list` would yield now (see Source.listingFingerprint): the
   * same directory digests a listing makes, each made whole on a worker thread (read,
   * lstat, hash), so this thread only hands out directories. About twice as fast as
   * listing the tree, and the reason `builddb` of an unchanged tree costs little more than
   * `find` over it.
   */
  async listingFingerprint(options: FingerprintOptions = {}): Promise<string | undefined> {
    const { signal, onListed } = options;
    await this.#checkRootForListing();
    const lines: string[] = [];
    const waiting: RelPath[] = ['' as RelPath];
    const inFlight = new Set<Promise<void>>();
    let listed = 0;
    let clean = true;
    const takeDirectory = (dir: RelPath, found: DirectoryFingerprint) => {
      listed += found.entries;
      if (found.digest === undefined) {
        clean = false;
        return;
      }
      lines.push(directoryDigestLine(dir, found.digest));
      for (const name of found.subdirs) waiting.push(childPath(dir, name));
    };
    while (clean && (waiting.length > 0 || inFlight.size > 0)) {
      throwIfAborted(signal);
      if (!lstatWorkersAvailable()) {
        // No workers (one core, or one failed): the same work on this thread.
        if (inFlight.size > 0) await Promise.allSettled(inFlight);
        const dir = waiting.pop();
        if (dir === undefined) continue;
        takeDirectory(dir, fingerprintDirectory(LOCAL_FINGERPRINT, this.localPath(dir), NAMES_PER_BATCH));
        await new Promise((resolve) => setImmediate(resolve));
        continue;
      }
      while (waiting.length > 0 && inFlight.size < FINGERPRINT_DIRECTORIES_OUT) {
        const dir = waiting.pop()!;
        const job: Promise<void> = fingerprintInWorkers(this.localPath(dir), NAMES_PER_BATCH).then(
          (found) => {
            inFlight.delete(job);
            takeDirectory(dir, found);
          },
          () => {
            inFlight.delete(job);
            waiting.push(dir); // its worker failed: looked at again, on this thread
          },
        );
        inFlight.add(job);
      }
      const before = listed;
      await Promise.race(inFlight);
      if (Math.floor(listed / 1000) !== Math.floor(before / 1000)) onListed?.(listed);
    }
    if (inFlight.size > 0) await Promise.allSettled(inFlight);
    onListed?.(listed);
    return clean ? combineDirectoryDigests(lines) : undefined;
  }

  /**
   * Reads a directory's names and splits them into batches for lstat: those past the first
   * LISTED_IN_THREAD entries of the listing go to the worker threads (the first few at
   * once, the others as the listing nears them), the rest are stat'ed on this thread when
   * their turn comes (as is a batch whose worker failed).
   */
  #readDirectory(dir: RelPath, onSkip: ListOptions['onSkip'], listedBefore: number): DirectoryRead {
    const dirPath = this.localPath(dir);
    let names: string[];
    try {
      names = readdirUtf8(dirPath, dir, onSkip);
    } catch (error) {
      return { error };
    }
    const slices: string[][] = [];
    for (let at = 0; at < names.length; at += NAMES_PER_BATCH) slices.push(names.length <= NAMES_PER_BATCH ? names : names.slice(at, at + NAMES_PER_BATCH));
    const firstPooled = Math.ceil(Math.max(0, LISTED_IN_THREAD - listedBefore) / NAMES_PER_BATCH);
    const read = { dirPath, slices, batches: new Array<Promise<StatBatch | undefined> | undefined>(slices.length), firstPooled, dispatched: 0 };
    dispatchBatches(read, BATCHES_AHEAD);
    return read;
  }

  async stat(p: RelPath): Promise<Entry> {
    // Synchronous for the reason list() is: fetch stats every file it hashed while carrying
    // it, and for small files the round trip through the thread pool cost more than the
    // file (measured: 100k files of 1–8 KiB, 4.1 s of a 40 s fetch).
    this.#checkParentSync(p);
    const batch = statNames(LOCAL_STAT, '', [this.localPath(p)]);
    switch (batch.kinds[0]) {
      case StatKind.Vanished:
        throw toBitfogError(nativeError({ code: 'ENOENT', syscall: 'lstat', message: 'no such file or directory' }), `cannot stat ${JSON.stringify(p)}`, p);
      case StatKind.StatFailed:
        throw toBitfogError(nativeError(batch.errors[0]), `cannot stat ${JSON.stringify(p)}`, p);
      case StatKind.LinkUnreadable:
        throw toBitfogError(nativeError(batch.errors[0]), `cannot read symlink ${JSON.stringify(p)}`, p);
      case StatKind.Special:
        throw bitfogError('EOPNOTSUPP', `${JSON.stringify(p)} is not a regular file, symlink or directory`, { path: p });
    }
    return entryFromBatch(p, batch, 0);
  }

  async read(p: RelPath, options: ReadOptions = {}): Promise<Readable> {
    throwIfAborted(options.signal);
    const { handle, size } = await this.#openRegular(p);
    if (options.end !== undefined && options.end <= (options.start ?? 0)) {
      await handle.close();
      return Readable.from([]);
    }
    return createReadStream('', {
      fd: handle,
      start: options.start ?? 0,
      ...(options.end === undefined ? {} : { end: options.end - 1 }),
      highWaterMark: readBufferSize((options.end ?? size) - (options.start ?? 0)),
      autoClose: true,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** A regular file opened for reading, confined (see #openConfined); EISDIR, EOPNOTSUPP otherwise. */
  async #openRegular(p: RelPath): Promise<{ handle: fsp.FileHandle; size: number }> {
    const handle = await this.#openConfined(p, READ_FLAGS);
    try {
      const st = await handle.stat();
      assertRegularFile(p, st);
      return { handle, size: st.size };
    } catch (e) {
      await handle.close().catch(() => {});
      throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
    }
  }

  /**
   * A small file read whole with synchronous system calls (open, check, fstat, read,
   * close), confined like `read`. Handing each of them to the I/O thread pool costs more
   * than the call itself for a file of a few kilobytes (measured: 20k small files copied
   * through the pool, 8 at a time, in 3.7–4.5 s; with direct calls in 1.7–3.5 s).
   */
  async readSmallFile(p: RelPath, maxBytes: number, options: ReadSmallFileOptions = {}): Promise<Buffer | undefined> {
    throwIfAborted(options.signal);
    if (!this.#procFd) return undefined; // the confinement check needs /proc/self/fd: stream instead
    const fd = await this.#openConfinedSync(p, READ_FLAGS);
    try {
      const st = fstatSync(fd);
      assertRegularFile(p, st);
      if (st.size > maxBytes) return undefined;
      // One byte more than the size: a file that grew since fstat shows as such.
      const want = Math.min(st.size, maxBytes) + 1;
      const buffer = options.into && options.into.length >= want ? options.into.subarray(0, want) : Buffer.allocUnsafe(want);
      const got = readFullySync(fd, buffer);
      return got > maxBytes ? undefined : buffer.subarray(0, got);
    } catch (e) {
      throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
    } finally {
      closeSync(fd);
    }
  }

  /** A descriptor opened and checked like `read`'s, for positional reads into the caller's buffers. */
  async openFile(p: RelPath, options: SignalOption = {}): Promise<OpenFile> {
    throwIfAborted(options.signal);
    const { handle, size } = await this.#openRegular(p);
    let closed: Promise<void> | undefined;
    return {
      size,
      fd: handle.fd,
      read: async (buffer, offset, length, position) => {
        try {
          return (await handle.read(buffer, offset, length, position)).bytesRead;
        } catch (e) {
          throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
        }
      },
      close: () => (closed ??= handle.close().catch(() => {})),
    };
  }

  /**
   * An in-kernel copy (copy_file_range) from a descriptor opened and checked like `read`'s;
   * libuv copies by path, so the descriptor is handed over as /proc/self/fd/N, which opens
   * that very file whatever happens to its name meanwhile.
   */
  async copyToLocalFile(p: RelPath, localFile: string, options: SignalOption = {}): Promise<void> {
    throwIfAborted(options.signal);
    if (!this.#procFd) throw bitfogError('EOPNOTSUPP', 'in-kernel copies need /proc/self/fd', { path: p });
    const { handle } = await this.#openRegular(p);
    try {
      await fsp.copyFile(`/proc/self/fd/${handle.fd}`, localFile, C.COPYFILE_EXCL);
    } catch (e) {
      throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
    } finally {
      await handle.close().catch(() => {});
    }
  }

  /** The other direction: into a descriptor opened and checked like `write`'s. */
  async writeFromLocalFile(p: RelPath, localFile: string, options: WriteOptions): Promise<void> {
    throwIfAborted(options.signal);
    if (!this.#procFd) throw bitfogError('EOPNOTSUPP', 'in-kernel copies need /proc/self/fd', { path: p });
    const handle = await this.#openConfined(p, WRITE_FLAGS, 0o600);
    let size: number;
    let flushing = false;
    try {
      await fsp.copyFile(localFile, `/proc/self/fd/${handle.fd}`);
      size = (await handle.stat()).size;
      // libuv gives the copy the mode of the file copied from: without a mode, write()'s default.
      if (size === options.size) await applyMetadata(handle, withFileMode(options));
      if (size === options.size && size >= WRITE_BEHIND_BYTES) flushing = await this.#flushBehind(p, handle);
    } catch (e) {
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    } finally {
      if (!flushing) await handle.close().catch(() => {});
    }
    if (size !== options.size) {
      throw bitfogError('EINTEGRITY', `wrote ${size} bytes to ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
    }
  }

  async readlink(p: RelPath): Promise<string> {
    await this.#checkParent(p);
    try {
      return await fsp.readlink(this.localPath(p));
    } catch (e) {
      throw toBitfogError(e, `cannot read symlink ${JSON.stringify(p)}`, p);
    }
  }

  async write(p: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    throwIfAborted(options.signal);
    const handle = await this.#openConfined(p, WRITE_FLAGS, 0o600);
    const behind = new WriteBehind(handle);
    let written = 0;
    try {
      for await (const chunk of chunksOf(content)) {
        throwIfAborted(options.signal);
        await writeFully(handle, chunk, 0, chunk.length, written);
        written += chunk.length;
        behind.wrote(chunk.length);
      }
      await behind.settle();
      // Through the descriptor: no second path lookup, and it is the file just written.
      if (written === options.size) await applyMetadata(handle, withFileMode(options));
    } catch (e) {
      await behind.settle().catch(() => {});
      await handle.close().catch(() => {});
      content.destroy();
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    }
    await handle.close();
    if (written !== options.size) {
      throw bitfogError('EINTEGRITY', `wrote ${written} bytes to ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
    }
  }

  /** Positional writes (see Destination.createFile), opened and confined like `write`, with its write-behind. */
  async createFile(p: RelPath, options: WriteOptions): Promise<WritableFile> {
    throwIfAborted(options.signal);
    const handle = await this.#openConfined(p, WRITE_FLAGS, 0o600);
    const behind = new WriteBehind(handle);
    let closed = false;
    const close = async () => {
      if (closed) return;
      closed = true;
      await behind.settle().catch(() => {});
      await handle.close().catch(() => {});
    };
    return {
      write: async (buffer, offset, length, position) => {
        if (closed) throw bitfogError('EIO', `${JSON.stringify(p)} is closed`, { path: p });
        try {
          await writeFully(handle, buffer, offset, length, position);
          behind.wrote(length);
        } catch (e) {
          throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
        }
      },
      finish: async () => {
        try {
          await behind.settle();
          const { size } = await handle.stat();
          if (size !== options.size) throw bitfogError('EINTEGRITY', `wrote ${size} bytes to ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
          await applyMetadata(handle, withFileMode(options));
        } catch (e) {
          throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
        } finally {
          await close();
        }
      },
      discard: close,
    };
  }

  /**
   * A small file written whole from memory with direct system calls (see readSmallFile),
   * confined like `write`; mode and mtime set through the descriptor.
   */
  async writeSmallFile(p: RelPath, content: Uint8Array, options: WriteOptions): Promise<boolean> {
    throwIfAborted(options.signal);
    if (!this.#procFd) return false; // the confinement check needs /proc/self/fd: stream instead
    if (content.length !== options.size) {
      throw bitfogError('EINTEGRITY', `${content.length} bytes for ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
    }
    const mode = withFileMode(options).mode & 0o7777;
    if (fileWorkerAvailable()) {
      // Created, checked to be inside the root, written, set up and closed on the writer
      // worker while this thread goes on (see core/file-writer-worker.ts); the parent was
      // checked here. The worker gets its own copy, taken before anything is awaited: the
      // caller may reuse `content` once this returns.
      const data = Uint8Array.prototype.slice.call(content);
      this.#checkParentSync(p);
      try {
        const { escaped } = await createFileOnWorker({
          path: this.localPath(p), expectedRealPath: path.join(this.#realRoot, p), flags: WRITE_FLAGS, createMode: 0o600, data,
          mode, ...(options.mtimeMs === undefined ? {} : { mtimeMs: options.mtimeMs }),
        });
        if (!escaped) return true;
        await this.#unlinkIfEscaped(p);
        throw escapeError(p);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).syscall === 'open') throw openError(p, e);
        if (!(e instanceof FileWorkerFailed)) throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
        // The worker failed: the file is written again below, through a new descriptor.
      }
    }
    const fd = await this.#openConfinedSync(p, WRITE_FLAGS, 0o600);
    try {
      for (let off = 0; off < content.length; ) off += writeSync(fd, content, off, content.length - off, off);
      fchmodSync(fd, mode);
      if (options.mtimeMs !== undefined) futimesSync(fd, new Date(), options.mtimeMs / 1000);
    } catch (e) {
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    } finally {
      closeSync(fd);
    }
    return true;
  }

  async mkdir(p: RelPath): Promise<void> {
    await this.#checkParent(p);
    try {
      await fsp.mkdir(this.localPath(p));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') {
        const st = await fsp.lstat(this.localPath(p));
        if (st.isDirectory()) return;
      }
      throw toBitfogError(e, `cannot create directory ${JSON.stringify(p)}`, p);
    }
  }

  async remove(p: RelPath): Promise<void> {
    await this.#checkParent(p);
    const local = this.localPath(p);
    try {
      const st = await fsp.lstat(local);
      if (st.isDirectory()) throw bitfogError('EISDIR', `${JSON.stringify(p)} is a directory`, { path: p });
      await fsp.unlink(local);
    } catch (e) {
      throw toBitfogError(e, `cannot remove ${JSON.stringify(p)}`, p);
    }
    this.#flushesBehind.forget(p);
  }

  async rmdir(p: RelPath): Promise<void> {
    await this.#checkParent(p);
    try {
      const st = await fsp.lstat(this.localPath(p));
      if (!st.isDirectory()) throw bitfogError('ENOTDIR', `${JSON.stringify(p)} is not a directory`, { path: p });
      await fsp.rmdir(this.localPath(p));
    } catch (e) {
      const err = toBitfogError(e, `cannot remove directory ${JSON.stringify(p)}`, p);
      // Linux says EEXIST or ENOTEMPTY for a non-empty directory depending on the file system.
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw bitfogError('ENOTEMPTY', err.message, { cause: e, path: p });
      throw err;
    }
  }

  async symlink(p: RelPath, target: string): Promise<void> {
    await this.#checkParent(p);
    // A new symlink may stand where a directory checked earlier was: check afresh from now on.
    this.#verifiedDirs.clear();
    try {
      await fsp.symlink(target, this.localPath(p));
    } catch (e) {
      throw toBitfogError(e, `cannot create symlink ${JSON.stringify(p)}`, p);
    }
  }

  async rename(from: RelPath, to: RelPath): Promise<void> {
    await Promise.all([this.#checkParent(from), this.#checkParent(to)]);
    try {
      await fsp.rename(this.localPath(from), this.localPath(to));
    } catch (e) {
      throw toBitfogError(e, `cannot rename ${JSON.stringify(from)} to ${JSON.stringify(to)}`, to);
    }
    this.#flushesBehind.rename(from, to); // a flush not yet waited for by `sync` follows its file
  }

  async setMetadata(p: RelPath, metadata: Metadata): Promise<void> {
    await this.#checkParent(p);
    const local = this.localPath(p);
    try {
      const st = await fsp.lstat(local);
      if (st.isSymbolicLink()) {
        // Linux cannot chmod a symlink; its mtime can be set without following it.
        if (metadata.mtimeMs !== undefined) await fsp.lutimes(local, new Date(), metadata.mtimeMs / 1000);
        return;
      }
      if (metadata.mode !== undefined) await fsp.chmod(local, metadata.mode & 0o7777);
      if (metadata.mtimeMs !== undefined) await fsp.utimes(local, new Date(), metadata.mtimeMs / 1000);
    } catch (e) {
      throw toBitfogError(e, `cannot set metadata of ${JSON.stringify(p)}`, p);
    }
  }

  /**
   * Write-behind for an in-kernel copy: its pages are all in the page cache when copyFile
   * returns, and the kernel starts writing them only when much more is dirty (10 % of
   * memory) or 30 s later. Meanwhile the store reads the copy back to verify it, which is
   * work for the processors, not the disk. So a datasync starts at once, in the background,
   * holding the descriptor until it is done (at most two at once, see
   * BackgroundFlushes.room); `sync` waits for it. Measured on a store of 2 GiB in 8 files:
   * the fsyncs before the renames took 0.8–1.0 s for each group of four, and 2–20 ms with
   * this (the store: 7.9–9.3 s → 7.2–7.3 s). Returns true: the descriptor is the flush's
   * to close.
   */
  async #flushBehind(p: RelPath, handle: fsp.FileHandle): Promise<true> {
    await this.#flushesBehind.room();
    flushesBehindStarted++;
    this.#flushesBehind.keep(p, this.#flushesBehind.start(handle.datasync(), handle));
    return true;
  }

  async sync(paths: RelPath[]): Promise<void> {
    // Flushes started behind writes come first: a failure is reported to the descriptor
    // that wrote, and an fsync through another one might not see it.
    for (const p of paths) {
      try {
        await this.#flushesBehind.wait(p);
      } catch (e) {
        throw toBitfogError(e, `cannot sync ${JSON.stringify(p)}`, p);
      }
    }
    // Many files: one syncfs(2) of the whole file system (coreutils' `sync -f`) flushes them
    // all in one go, far cheaper than an fsync each. Few files, or no `sync -f`: fsync each.
    if (paths.length >= SYNCFS_MIN_PATHS && (await (this.#syncer ??= new FileSystemSyncer(this.#root)).flush())) return;
    for (let i = 0; i < paths.length; i += SYNC_PARALLELISM) {
      await Promise.all(
        paths.slice(i, i + SYNC_PARALLELISM).map(async (p) => {
          let handle: fsp.FileHandle | undefined;
          try {
            handle = await fsp.open(this.localPath(p), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
            await handle.sync();
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            // A path that is already gone needs no flushing; EINVAL: file system without fsync.
            if (code !== 'ENOENT' && code !== 'EINVAL' && code !== 'ELOOP') throw toBitfogError(e, `cannot sync ${JSON.stringify(p)}`, p);
          } finally {
            await handle?.close();
          }
        }),
      );
    }
  }

  async freeSpace(): Promise<number> {
    const st = await fsp.statfs(this.#root);
    return Number(st.bavail) * Number(st.bsize);
  }

  async close(): Promise<void> {
    this.#syncer?.close();
    await this.#flushesBehind.settle();
  }

  /**
   * Opens a file inside the root without following a symlink at its last component, then
   * checks through the descriptor that what was opened really lies inside the root.
   */
  async #openConfined(p: RelPath, flags: number, mode?: number): Promise<fsp.FileHandle> {
    // Opening to read changes nothing, so the check after the open suffices where the
    // descriptor tells its exact path; creating a file checks its parent first as well.
    if ((flags & C.O_CREAT) !== 0 || !this.#procFd) await this.#checkParent(p);
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(this.localPath(p), flags, mode);
    } catch (e) {
      throw openError(p, e);
    }
    try {
      // Exactly the lexical path, resolved: no symlinked directory anywhere on the way.
      const real = this.#procFd ? await fsp.readlink(`/proc/self/fd/${handle.fd}`) : await fsp.realpath(this.localPath(p));
      if (real !== path.join(this.#realRoot, p)) throw escapeError(p);
    } catch (e) {
      await handle.close().catch(() => {});
      if (flags & C.O_CREAT) await this.#unlinkIfEscaped(p);
      throw toBitfogError(e, `cannot open ${JSON.stringify(p)}`, p);
    }
    return handle;
  }

  /**
   * `#openConfined` with direct system calls, for the small-file paths (which need
   * /proc/self/fd): a descriptor number, to be closed with closeSync.
   */
  async #openConfinedSync(p: RelPath, flags: number, mode?: number): Promise<number> {
    if ((flags & C.O_CREAT) !== 0) this.#checkParentSync(p);
    let fd: number;
    try {
      fd = openSync(this.localPath(p), flags, mode);
    } catch (e) {
      throw openError(p, e);
    }
    let inside: boolean;
    try {
      // Exactly the lexical path, resolved: no symlinked directory anywhere on the way.
      inside = readlinkSync(`/proc/self/fd/${fd}`) === path.join(this.#realRoot, p);
    } catch (e) {
      closeSync(fd);
      throw toBitfogError(e, `cannot open ${JSON.stringify(p)}`, p);
    }
    if (!inside) {
      closeSync(fd);
      if (flags & C.O_CREAT) await this.#unlinkIfEscaped(p);
      throw escapeError(p);
    }
    return fd;
  }

  /** Only a file this call created outside the root would be removed; inside-root files are untouched. */
  async #unlinkIfEscaped(p: RelPath): Promise<void> {
    try {
      const real = await fsp.realpath(this.localPath(p));
      if (!this.#insideRoot(real)) await fsp.unlink(real);
    } catch {
      /* nothing was created, or it is already gone */
    }
  }

  /** Throws EACCES when the parent directory of `p` resolves outside the root (a symlinked directory). */
  async #checkParent(p: RelPath): Promise<void> {
    const parent = this.#parentToCheck(p);
    // A missing parent cannot redirect anything; the operation itself reports ENOENT.
    const real = parent === undefined ? undefined : await fsp.realpath(path.join(this.#root, parent)).catch(() => undefined);
    if (real !== undefined) this.#rememberParent(p, parent!, real);
  }

  /** `#checkParent` with a direct system call, for the small-file paths. */
  #checkParentSync(p: RelPath): void {
    const parent = this.#parentToCheck(p);
    if (parent === undefined) return;
    let real: string;
    try {
      real = realpathSync(path.join(this.#root, parent));
    } catch {
      return; // as in #checkParent
    }
    this.#rememberParent(p, parent, real);
  }

  /**
   * The parent directory of `p` when it still has to be resolved. realpath costs a readlink
   * per path component: a directory found real once in this session is not resolved again,
   * until bitfog itself creates a symlink (see symlink()).
   */
  #parentToCheck(p: RelPath): string | undefined {
    const slash = p.lastIndexOf('/');
    if (slash < 0) return undefined;
    const parent = p.slice(0, slash);
    return this.#verifiedDirs.has(parent) ? undefined : parent;
  }

  #rememberParent(p: RelPath, parent: string, real: string): void {
    if (real !== path.join(this.#realRoot, parent)) throw escapeError(p);
    if (this.#verifiedDirs.size >= VERIFIED_DIRS_MAX) this.#verifiedDirs.clear();
    this.#verifiedDirs.add(parent);
  }

  #insideRoot(real: string): boolean {
    return real.startsWith(this.#realRoot.endsWith('/') ? this.#realRoot : this.#realRoot + '/');
  }
}

/**
 * The mode of a written file whose source has none (a WebDAV or S3 source, say): what `cp`
 * and `rsync` give a new file, 0666 less this process's umask. Files are created 0600, so
 * that nobody else reads one while it is partial, and get their mode once complete.
 */
function withFileMode<T extends Metadata>(options: T): T & { mode: number } {
  return options.mode === undefined ? { ...options, mode: 0o666 & ~processUmask() } : (options as T & { mode: number });
}

let umaskRead: number | undefined;

/** This process's umask, read without changing it (process.umask() sets it to read it). */
function processUmask(): number {
  if (umaskRead === undefined) {
    umaskRead = 0o022;
    try {
      const m = /^Umask:\s*([0-7]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
      if (m) umaskRead = parseInt(m[1]!, 8);
    } catch {
      /* no /proc: the usual umask */
    }
  }
  return umaskRead;
}

/** Mode and mtime of an open file (fchmod, futimens). */
async function applyMetadata(handle: fsp.FileHandle, metadata: Metadata): Promise<void> {
  if (metadata.mode !== undefined) await handle.chmod(metadata.mode & 0o7777);
  if (metadata.mtimeMs !== undefined) await handle.utimes(new Date(), metadata.mtimeMs / 1000);
}

/**
 * EISDIR for a directory, EOPNOTSUPP for anything else that is not a regular file. Reads
 * open with O_NONBLOCK, so a FIFO opens at once and is refused here instead of blocking.
 */
function assertRegularFile(p: RelPath, st: { isDirectory(): boolean; isFile(): boolean }): void {
  if (st.isDirectory()) throw bitfogError('EISDIR', `${JSON.stringify(p)} is a directory`, { path: p });
  if (!st.isFile()) throw bitfogError('EOPNOTSUPP', `${JSON.stringify(p)} is not a regular file`, { path: p });
}

/** A failed open: a symlink where a file was expected (O_NOFOLLOW) is EISDIR. */
function openError(p: RelPath, e: unknown) {
  if ((e as NodeJS.ErrnoException).code === 'ELOOP') return bitfogError('EISDIR', `${JSON.stringify(p)} is a symlink, not a file`, { path: p, cause: e });
  return toBitfogError(e, `cannot open ${JSON.stringify(p)}`, p);
}

function escapeError(p: RelPath) {
  return bitfogError('EACCES', `${JSON.stringify(p)} passes through a symlink; refusing to follow it`, { path: p });
}

/** The items of each batch in turn; ending the iteration early ends `batches` too. */
function flatten<T>(batches: AsyncGenerator<T[]>): AsyncIterableIterator<T> {
  let batch: T[] = [];
  let next = 0;
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next(): Promise<IteratorResult<T>> {
      while (next >= batch.length) {
        const r = await batches.next();
        if (r.done) return { done: true, value: undefined };
        batch = r.value;
        next = 0;
      }
      return { done: false, value: batch[next++]! };
    },
    async return(): Promise<IteratorResult<T>> {
      await batches.return(undefined);
      return { done: true, value: undefined };
    },
  };
}

/**
 * The names in the directory `local` (RelPath `dir`) as strings. A name that is not valid
 * UTF-8 cannot be carried portably: it is reported through `onSkip`, never mangled. Names
 * are read as strings (one decode in native code); only a directory where one of them
 * decoded to U+FFFD is read again as bytes to tell a real U+FFFD from an invalid name.
 */
function readdirUtf8(local: string, dir: RelPath, onSkip: ListOptions['onSkip']): string[] {
  // Synchronous for the reason lstat is (see list()): a local directory is read in
  // microseconds, while a round trip through the thread pool costs far more when the
  // machine is busy.
  const names = readdirSync(local);
  if (!names.some((n) => n.includes('\uFFFD'))) return names;
  const valid: string[] = [];
  for (const raw of readdirSync(local, { encoding: 'buffer' })) {
    const name = raw.toString('utf8');
    if (name.includes('\uFFFD') && !Buffer.from(name, 'utf8').equals(raw)) {
      onSkip?.(dir === '' ? name : `${dir}/${name}`, 'name is not valid UTF-8');
      continue;
    }
    valid.push(name);
  }
  return valid;
}

const KIND_NAMES: Record<number, Entry['kind']> = { [StatKind.File]: 'file', [StatKind.Symlink]: 'symlink', [StatKind.Directory]: 'directory' };

/** Sends the batches of `read` before index `upTo` that belong to the workers, once each. */
function dispatchBatches(read: Exclude<DirectoryRead, { error: unknown }>, upTo: number): void {
  const end = Math.min(upTo, read.slices.length);
  for (; read.dispatched < end; read.dispatched++) {
    const i = read.dispatched;
    if (i >= read.firstPooled && lstatWorkersAvailable()) read.batches[i] = statInWorkers(read.dirPath, read.slices[i]!).catch(() => undefined);
  }
}

/** The entry of name `i` of a batch whose kind is File, Symlink or Directory. */
function entryFromBatch(p: RelPath, batch: StatBatch, i: number): Entry {
  const kind = batch.kinds[i]!;
  const n = batch.nums;
  const entry: Entry = {
    path: p,
    kind: KIND_NAMES[kind]!,
    size: n[4 * i]!,
    mode: n[4 * i + 1]!,
    mtimeMs: n[4 * i + 2]!,
    version: batch.versions[i]!,
    changedAtMs: n[4 * i + 3]!,
  };
  if (kind === StatKind.Symlink) entry.linkTarget = batch.targets[i]!;
  return entry;
}
