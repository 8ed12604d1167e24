/**
 * lstat for listings, in batches, on this thread or on worker threads.
 *
 * lstat is most of what listing a local tree costs: about 6 µs a file from Node on the
 * machine we measure on, where the kernel's own part is about 4 µs (Python's os.lstat)
 * and find's whole walk about 4 µs a file. Node cannot make the call more cheaply, so a
 * large listing hands the calls to worker threads, a slice of a directory's names at a
 * time, while the listing thread reads directories, builds entries and does whatever its
 * caller does with them (hash-cache lookups, encoding a listing, taking a snapshot).
 * Measured on 100k files in 1100 directories, two cores, alternating old and new builds:
 * list() alone 0.70–0.77 s → 0.50–0.59 s; `bitfog serve`'s listing with a warm hash cache
 * 0.92–1.04 s → 0.66–0.81 s. (Two cores give less than twice: two threads' lstat calls
 * each take longer than one thread's.)
 *
 * `statNames` computes every field of a batch. It is also the workers' code: its source is
 * sent to them as text (see WORKER_SOURCE), which is why it refers to nothing outside its
 * own body and declares no inner functions (a loader may wrap those in helper calls that
 * do not exist in a worker). So an entry is built from the same arithmetic wherever its
 * lstat ran.
 */
import type { Hash } from 'node:crypto';
import * as crypto from 'node:crypto';
import { availableParallelism } from 'node:os';
import * as fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { NativeErrorInfo } from '../../core/errors.ts';

/** What lstat found for each name of a batch (StatBatch.kinds); statNames writes the numbers. */
export const StatKind = {
  /** Gone between readdir and lstat: not part of the listing. */
  Vanished: 0,
  File: 1,
  Symlink: 2,
  Directory: 3,
  /** A FIFO, socket or device. */
  Special: 4,
  /** lstat failed: `errors[i]`. */
  StatFailed: 5,
  /** A symlink whose target could not be read: `errors[i]`. */
  LinkUnreadable: 6,
} as const;

/**
 * lstat results of one batch of names, in columns (typed arrays cross threads without
 * copying; a plain object per entry would be cloned field by field).
 */
export interface StatBatch {
  /** StatKind of each name. */
  kinds: Uint8Array;
  /** Four numbers per name: size (0 for a directory), mode & 0o7777, mtimeMs (µs precision), changedAtMs. */
  nums: Float64Array;
  /** Version token of each listed name: `size:mtimeNs:ctimeNs:ino:dev`. */
  versions: Array<string | undefined>;
  /**
   * Six numbers per name, what lstat said, from which every field but the link target is
   * computed: mode (with the file type), size, mtimeNs, ctimeNs, ino, dev.
   */
  stamps: BigInt64Array;
  /** Link target of each symlink. */
  targets: Array<string | undefined>;
  errors: Array<NativeErrorInfo | undefined>;
}

/** The parts of node:fs that statNames calls (the worker passes its own). */
export interface StatFunctions {
  lstatSync: typeof fs.lstatSync;
  readlinkSync: typeof fs.readlinkSync;
}

/**
 * lstat (and readlink, for symlinks) of `dir/name` for each name; `dir` '' takes names as
 * whole paths. Never throws: failures are recorded per name. Without `forEntries`, only
 * kinds, stamps, targets and errors are filled (what a fingerprint needs). See the top of
 * this file for the rules this function's body follows.
 */
export function statNames(fns: StatFunctions, dir: string, names: readonly string[], forEntries = true): StatBatch {
  const n = names.length;
  const kinds = new Uint8Array(n);
  const nums = new Float64Array(forEntries ? 4 * n : 0);
  const stamps = new BigInt64Array(6 * n);
  const versions: Array<string | undefined> = new Array(n);
  const targets: Array<string | undefined> = new Array(n);
  const errors: Array<NativeErrorInfo | undefined> = new Array(n);
  for (let i = 0; i < n; i++) {
    const full = dir === '' ? names[i]! : dir + '/' + names[i];
    let st: fs.BigIntStats | undefined;
    try {
      st = fns.lstatSync(full, { bigint: true, throwIfNoEntry: false });
    } catch (e) {
      const err = e as { code?: string; syscall?: string; message?: string };
      kinds[i] = 5;
      errors[i] = { code: err.code, syscall: err.syscall, message: String(err.message) };
      continue;
    }
    if (st === undefined) continue;
    const kind = st.isFile() ? 1 : st.isSymbolicLink() ? 2 : st.isDirectory() ? 3 : 4;
    kinds[i] = kind;
    if (kind === 4) continue;
    if (kind === 2) {
      try {
        targets[i] = fns.readlinkSync(full, 'utf8');
      } catch (e) {
        const err = e as { code?: string; syscall?: string; message?: string };
        kinds[i] = 6;
        errors[i] = { code: err.code, syscall: err.syscall, message: String(err.message) };
        continue;
      }
    }
    const mtimeNs = st.mtimeNs;
    const ctimeNs = st.ctimeNs;
    stamps[6 * i] = st.mode;
    stamps[6 * i + 1] = st.size;
    stamps[6 * i + 2] = mtimeNs;
    stamps[6 * i + 3] = ctimeNs;
    stamps[6 * i + 4] = st.ino;
    stamps[6 * i + 5] = st.dev;
    if (!forEntries) continue;
    nums[4 * i] = kind === 3 ? 0 : Number(st.size);
    nums[4 * i + 1] = Number(st.mode) & 0o7777;
    nums[4 * i + 2] = Number(mtimeNs / 1000n) / 1000;
    nums[4 * i + 3] = Number((mtimeNs > ctimeNs ? mtimeNs : ctimeNs) / 1000n) / 1000;
    // Joined rather than a template: one flat string instead of a tree of nine pieces, which
    // matters when 100k of them stay in memory for a whole snapshot.
    versions[i] = [st.size, mtimeNs, ctimeNs, st.ino, st.dev].join(':');
  }
  return { kinds, nums, versions, targets, errors, stamps };
}

/**
 * Feeds one slice of a directory's names, and what statNames found for them, into `hash`:
 * every value an entry of the listing is built from (the stamps, from which the rest is
 * computed; the directory's path is added by the caller). A listing and
 * fingerprintDirectory both hash this way, so an unchanged tree hashes to the same bytes
 * whichever of them looked at it. (Rules of statNames.)
 */
export function hashSlice(hash: Hash, names: readonly string[], batch: StatBatch): void {
  // The count first, then NUL-terminated lists (no name or link target holds a NUL): the
  // bytes of one slice cannot be read as those of another. The kinds tell which names
  // have a target.
  hash.update(names.length + '\0' + names.join('\0') + '\0');
  hash.update(batch.kinds);
  hash.update(new Uint8Array(batch.stamps.buffer, batch.stamps.byteOffset, batch.stamps.byteLength));
  hash.update(batch.targets.join('\0') + '\0');
}

/** What fingerprintDirectory found in one directory. */
export interface DirectoryFingerprint {
  /** SHA-256 (hex) of its slices (hashSlice); undefined when a listing would skip something in it. */
  digest: string | undefined;
  /** Names of its subdirectories. */
  subdirs: string[];
  /** How many names it holds. */
  entries: number;
}

/** What fingerprintDirectory calls: node:fs and node:crypto's parts, and this file's shared functions. */
export interface FingerprintFunctions extends StatFunctions {
  readdirSync: typeof fs.readdirSync;
  createHash: typeof crypto.createHash;
  statNames: typeof statNames;
  hashSlice: typeof hashSlice;
}

/**
 * Reads the directory `dirPath`, stats its names in slices of `sliceSize` (as a listing
 * does) and hashes them as a listing does. Gives up (digest undefined) at the first thing
 * a listing would skip or leave out: a name that did not decode as UTF-8 cleanly, a name
 * gone since readdir, a special file, a failed lstat or readlink, an unreadable directory.
 * (Rules of statNames.)
 */
export function fingerprintDirectory(fns: FingerprintFunctions, dirPath: string, sliceSize: number): DirectoryFingerprint {
  const subdirs: string[] = [];
  let names: string[];
  try {
    names = fns.readdirSync(dirPath);
  } catch {
    return { digest: undefined, subdirs, entries: 0 };
  }
  const hash = fns.createHash('sha256');
  for (let at = 0; at < names.length; at += sliceSize) {
    const slice = names.length <= sliceSize ? names : names.slice(at, at + sliceSize);
    const batch = fns.statNames(fns, dirPath, slice, false);
    for (let i = 0; i < slice.length; i++) {
      const kind = batch.kinds[i];
      if (kind !== 1 && kind !== 2 && kind !== 3) return { digest: undefined, subdirs, entries: names.length };
      if (slice[i]!.includes('\uFFFD')) return { digest: undefined, subdirs, entries: names.length };
      if (kind === 3) subdirs.push(slice[i]!);
    }
    fns.hashSlice(hash, slice, batch);
  }
  return { digest: hash.digest('hex'), subdirs, entries: names.length };
}

/**
 * The fingerprint of a whole listing from its directories' digests, keyed by their paths:
 * sorted first, so the order in which directories were looked at does not matter.
 */
export function combineDirectoryDigests(digests: string[]): string {
  // The version of the listing's arithmetic: a change to what an entry is computed from, or
  // how (statNames, entryFromBatch in local.ts), must change it, so that a fingerprint
  // recorded by an older bitfog never stands for entries this one would list differently.
  const h = crypto.createHash('sha256').update('bitfog listing 1\n');
  for (const line of digests.sort()) h.update(line + '\n');
  return h.digest('hex');
}

/** One line of combineDirectoryDigests' input. */
export function directoryDigestLine(dir: string, digest: string): string {
  return `${dir}\0${digest}`;
}

/** The fingerprint functions of this thread. */
export const LOCAL_FINGERPRINT: FingerprintFunctions = {
  lstatSync: fs.lstatSync,
  readlinkSync: fs.readlinkSync,
  readdirSync: fs.readdirSync,
  createHash: crypto.createHash,
  statNames,
  hashSlice,
};

/** Plain JavaScript, so that a worker needs no TypeScript loader. */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { lstatSync, readlinkSync, readdirSync } = require('node:fs');
const { createHash } = require('node:crypto');
const statNames = ${statNames.toString()};
const hashSlice = ${hashSlice.toString()};
const fingerprintDirectory = ${fingerprintDirectory.toString()};
const fns = { lstatSync, readlinkSync, readdirSync, createHash, statNames, hashSlice };
parentPort.on('message', (m) => {
  if (m.sliceSize !== undefined) {
    parentPort.postMessage({ id: m.id, result: fingerprintDirectory(fns, m.dir, m.sliceSize) });
    return;
  }
  const b = statNames(fns, m.dir, m.names);
  parentPort.postMessage({ id: m.id, result: b }, [b.kinds.buffer, b.nums.buffer, b.stamps.buffer]);
});
`;

interface StatWorker {
  readonly worker: Worker;
  /** Outstanding jobs (batches to stat, directories to fingerprint) by id. */
  readonly jobs: Map<number, { resolve: (result: unknown) => void; reject: (e: Error) => void }>;
}

/** Workers started, at most WORKERS_MAX; idle ones stay (unreferenced) for the next listing. */
const workers: StatWorker[] = [];
const WORKERS_MAX = Math.min(4, availableParallelism());
let nextJob = 0;
let answered = 0;
let mostInFlight = 0;
/** Batches that failed because their worker did (for tests). */
let failedBatches = 0;
/** Set when a worker failed: from then on every batch is stat'ed on the calling thread. */
let broken = false;

/** How many batches worker threads have stat'ed in this process (for tests). */
export function lstatBatchesOnWorkers(): number {
  return answered;
}

/** The most batches that were on workers at once since the last call (for tests). */
export function takeLstatPeak(): number {
  const peak = mostInFlight;
  mostInFlight = batchesOut();
  return peak;
}

/** Batches on the workers now (for tests). */
export function batchesOut(): number {
  return workers.reduce((n, w) => n + w.jobs.size, 0);
}

/** Whether statInWorkers can run here (two cores or more, and no worker has failed). */
export function lstatWorkersAvailable(): boolean {
  return WORKERS_MAX >= 2 && !broken;
}

/**
 * statNames on a worker thread. Rejects when the worker fails (the caller can then stat
 * on its own thread); after such a failure lstatWorkersAvailable() is false.
 */
export function statInWorkers(dir: string, names: readonly string[]): Promise<StatBatch> {
  return onWorker<StatBatch>({ dir, names });
}

/**
 * fingerprintDirectory on a worker thread. Rejects when the worker fails; after such a
 * failure lstatWorkersAvailable() is false.
 */
export function fingerprintInWorkers(dir: string, sliceSize: number): Promise<DirectoryFingerprint> {
  return onWorker<DirectoryFingerprint>({ dir, sliceSize });
}

/** Sends one job to the least loaded worker; resolves with the worker's result for it. */
function onWorker<T>(message: { dir: string; names?: readonly string[]; sliceSize?: number }): Promise<T> {
  const w = leastLoaded();
  const id = nextJob++;
  return new Promise<T>((resolve, reject) => {
    if (w.jobs.size === 0) w.worker.ref(); // the caller waits on it: keep the process alive
    w.jobs.set(id, { resolve: (result) => resolve(result as T), reject });
    mostInFlight = Math.max(mostInFlight, batchesOut());
    w.worker.postMessage({ id, ...message });
  });
}

/**
 * Starts the workers a listing may use, so that they are ready when it hands them its
 * first batch (a worker takes about as long to start as the listing takes to reach that
 * point on its own). Idle workers hold nothing: a small listing that never uses them
 * leaves them unreferenced, and the process exits as if they were not there.
 */
export function startLstatWorkers(): void {
  if (!lstatWorkersAvailable()) return;
  while (workers.length < WORKERS_MAX) startWorker();
}

function leastLoaded(): StatWorker {
  let best: StatWorker | undefined;
  for (const w of workers) if (!best || w.jobs.size < best.jobs.size) best = w;
  if (best && (best.jobs.size === 0 || workers.length >= WORKERS_MAX)) return best;
  return startWorker();
}

function startWorker(): StatWorker {
  // No inherited flags: `--input-type=module` would make the source a module without
  // `require`, and a loader such as tsx's `--import` would only slow the start.
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
  const w: StatWorker = { worker, jobs: new Map() };
  workers.push(w);
  worker.on('message', (m: { id: number; result: unknown }) => {
    const job = w.jobs.get(m.id);
    if (!job) return;
    w.jobs.delete(m.id);
    answered++;
    if (w.jobs.size === 0) w.worker.unref(); // idle: never the reason the process stays up
    job.resolve(m.result);
  });
  const fail = (err: Error) => {
    broken = true;
    const i = workers.indexOf(w);
    if (i >= 0) workers.splice(i, 1);
    for (const job of w.jobs.values()) job.reject(err);
    failedBatches += w.jobs.size;
    w.jobs.clear();
  };
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`lstat worker stopped (exit code ${code})`)));
  // After the listeners: adding a 'message' listener refs the worker again.
  worker.unref();
  return w;
}

/**
 * Ends every lstat worker, as a crash would: their outstanding batches fail (and are
 * stat'ed on the calling thread), and no worker is used again in this process (until
 * `allowLstatWorkersAgain`). Resolves with the number of batches that failed. For tests.
 */
export async function terminateLstatWorkers(): Promise<number> {
  const before = failedBatches;
  // A timer holds the process while they stop: a worker that answers its last batch
  // meanwhile is unreferenced again, and its termination alone would keep nothing waiting.
  const holding = setInterval(() => {}, 1000);
  try {
    await Promise.all(workers.map((w) => w.worker.terminate()));
  } finally {
    clearInterval(holding);
  }
  return failedBatches - before;
}

/** Lets workers be started again after terminateLstatWorkers. For tests. */
export function allowLstatWorkersAgain(): void {
  broken = false;
}
