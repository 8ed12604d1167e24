/**
 * Small files written on a worker thread: the system calls of one file (create, check,
 * write, set mode and time, close; or write and rename), in one message.
 *
 * Carrying many small files is a string of system calls on one thread: read the source
 * file, hash it, write the copy, rename it. Writing is the costliest part (page-cache
 * allocation and copy: about 75 µs for 32 KiB here), and with every call on the main
 * thread the second core idles. Handing each call to Node's I/O pool costs several times
 * the call in the main thread (see LocalBackend.readSmallFile), so the whole sequence of
 * a file goes to this worker in one message, and the main thread reads and hashes the
 * next files meanwhile.
 *
 * The worker's source is plain JavaScript sent as text (like the lstat workers'): no
 * TypeScript loader is needed in the worker.
 */
import { Worker } from 'node:worker_threads';
import { nativeError, type NativeErrorInfo } from './errors.ts';

/** A new file: written to `tmp` (which must not exist), then renamed to `final`. */
export interface WorkerFileJob {
  tmp: string;
  final: string;
  /** The content; its buffer is handed to the worker (no longer usable here). */
  data: Uint8Array;
  mode: number;
  /** A directory to create (with its parents) before the rename, when not known to exist. */
  mkdir?: string;
}

/**
 * A file to create at `path` (its directory checked by the caller), confined: once open, its
 * descriptor must resolve to exactly `expectedRealPath`, or the file was reached through a
 * symlinked directory and is closed again untouched (the job then resolves `escaped`; the
 * caller decides what to remove). Otherwise filled, given its mode and mtime, and closed.
 * Creating a file is the costliest system call of a small file (about 130 µs on ext4 here);
 * done here, the thread that reads and verifies the next files does not wait for it.
 */
export interface WorkerCreateJob {
  path: string;
  expectedRealPath: string;
  flags: number;
  createMode: number;
  /** The content; its buffer is handed to the worker (no longer usable here). */
  data: Uint8Array;
  mode?: number;
  mtimeMs?: number;
}

const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const fs = require('node:fs');
function put(m) {
  try {
    fs.writeFileSync(m.tmp, m.data, { mode: m.mode, flag: 'wx' });
    if (m.mkdir) fs.mkdirSync(m.mkdir, { recursive: true });
    fs.renameSync(m.tmp, m.final);
  } catch (e) {
    try { fs.rmSync(m.tmp, { force: true }); } catch {}
    throw e;
  }
}
function fill(m) {
  try {
    for (let off = 0; off < m.data.length; ) off += fs.writeSync(m.fd, m.data, off, m.data.length - off, off);
    if (m.mode !== undefined) fs.fchmodSync(m.fd, m.mode);
    if (m.mtimeMs !== undefined) fs.futimesSync(m.fd, new Date(), m.mtimeMs / 1000);
  } finally {
    fs.closeSync(m.fd);
  }
}
function create(m) {
  const fd = fs.openSync(m.path, m.flags, m.createMode);
  let inside;
  try {
    inside = fs.readlinkSync('/proc/self/fd/' + fd) === m.expectedRealPath;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  if (!inside) {
    fs.closeSync(fd);
    return true;
  }
  fill({ fd, data: m.data, mode: m.mode, mtimeMs: m.mtimeMs });
  return false;
}
parentPort.on('message', (m) => {
  try {
    let escaped = false;
    if (m.path !== undefined) escaped = create(m);
    else put(m);
    parentPort.postMessage({ id: m.id, escaped });
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: { code: e.code, syscall: e.syscall, message: String(e.message) } });
  }
});
`;

interface Pending {
  resolve: (escaped: boolean) => void;
  reject: (e: Error) => void;
}

/** The worker itself failed (not the job's system call): the job is to be done by the caller. */
export class FileWorkerFailed extends Error {
  constructor(cause: unknown) {
    super(`the file writer worker failed: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

let worker: Worker | undefined;
const pending = new Map<number, Pending>();
let nextId = 0;
let written = 0;
/** Set when the worker failed: from then on callers write on their own thread. */
let broken = false;

/** Whether `writeFileOnWorker` can be used (the worker has not failed). */
export function fileWorkerAvailable(): boolean {
  return !broken;
}

/** Files the worker has written in this process (for tests). */
export function filesWrittenOnWorker(): number {
  return written;
}

/**
 * Writes and renames one file on the worker. Rejects with the system call's error
 * (EEXIST, ENOSPC, …; the temporary file is then gone), or with FileWorkerFailed when the
 * worker itself failed (then `fileWorkerAvailable()` is false and the job was not done,
 * or not known to be done: the caller writes it itself).
 */
export async function writeFileOnWorker(job: WorkerFileJob): Promise<void> {
  await post({ tmp: job.tmp, final: job.final, data: job.data, mode: job.mode, mkdir: job.mkdir }, job.data);
}

/**
 * Creates, checks, fills, sets up and closes a file on the worker (see WorkerCreateJob).
 * Resolves `{ escaped: true }` when the file was reached through a symlink (created but
 * left empty), `{ escaped: false }` when it was written. Rejects with the system call's
 * error (its `syscall` says which: 'open' when nothing was created), or with
 * FileWorkerFailed when the worker itself failed: whether the file was created is then
 * unknown, and the caller writes it itself through a new descriptor.
 */
export async function createFileOnWorker(job: WorkerCreateJob): Promise<{ escaped: boolean }> {
  const { data, ...rest } = job;
  return { escaped: await post({ ...rest, data }, data) };
}

function post(message: object, data: Uint8Array): Promise<boolean> {
  const w = (worker ??= startWorker());
  const id = nextId++;
  return new Promise<boolean>((resolve, reject) => {
    if (pending.size === 0) w.ref(); // the caller waits on it: keep the process alive
    pending.set(id, { resolve, reject });
    try {
      w.postMessage({ id, ...message }, [data.buffer as ArrayBuffer]);
    } catch (e) {
      // Not sent (a buffer that cannot be handed over): the job is the caller's, not a worker failure.
      pending.delete(id);
      if (pending.size === 0) w.unref();
      reject(e);
    }
  });
}

function startWorker(): Worker {
  // No inherited flags: a loader such as tsx's `--import` would only slow the start.
  // Descriptors are not tracked: the worker closes ones the main thread opened, which a
  // tracking worker reports with a warning each.
  const w = new Worker(WORKER_SOURCE, { eval: true, execArgv: [], trackUnmanagedFds: false });
  w.unref();
  w.on('message', (m: { id: number; escaped?: boolean; error?: NativeErrorInfo }) => {
    const job = pending.get(m.id);
    if (!job) return;
    pending.delete(m.id);
    if (pending.size === 0) w.unref(); // idle: never the reason the process stays up
    if (m.error) job.reject(nativeError(m.error));
    else {
      if (!m.escaped) written++;
      job.resolve(m.escaped === true);
    }
  });
  const fail = (cause: unknown) => {
    broken = true;
    const err = new FileWorkerFailed(cause);
    if (worker === w) worker = undefined;
    for (const job of pending.values()) job.reject(err);
    pending.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`stopped (exit code ${code})`)));
  return w;
}

/** Ends the worker as a crash would; no worker is used again until `allowFileWorkerAgain`. For tests. */
export async function terminateFileWorker(): Promise<void> {
  // A timer holds the process while the worker stops: a worker that answers its last job
  // meanwhile is unreferenced again, and its termination alone would keep nothing waiting.
  const holding = setInterval(() => {}, 1000);
  try {
    await worker?.terminate();
  } finally {
    clearInterval(holding);
  }
}

/** Lets the worker be started again after terminateFileWorker. For tests. */
export function allowFileWorkerAgain(): void {
  broken = false;
}
