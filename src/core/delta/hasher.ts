/**
 * SHA-256 off the calling thread, so that a file's bytes can be hashed twice (per chunk
 * and whole, as the delta assembler must) in about the wall time of once on two cores.
 *
 *  - `workerChunkHasher` (what the assembler uses for large files): chunk digests, each
 *    chunk hashed by a worker thread from a ring of shared memory while the worker keeps
 *    up, else on the calling thread, which never waits for it.
 *  - `workerHasher`: one whole-stream digest on a worker. Flow control: the main thread
 *    copies each piece into a transferable buffer (a memcpy, far cheaper than hashing)
 *    and may have at most `MAX_QUEUED` bytes in flight; `update` returns a promise to wait
 *    on when over it, so memory stays bounded whatever the speeds. Every byte goes to the
 *    worker however busy it is, so on a loaded machine it is slower than hashing here.
 */
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { BitfogError } from '../errors.ts';

/** A SHA-256 of a byte stream, possibly computed on another thread. */
export interface StreamHasher {
  /** Adds bytes (copied or consumed at once: the caller may reuse `data`). A returned promise means "wait before adding more". */
  update(data: Uint8Array): void | Promise<void>;
  /** Lowercase hex SHA-256 of everything added. */
  digest(): Promise<string>;
  /** Releases resources (idempotent); after `digest` it is a no-op. */
  dispose(): void;
}

/** SHA-256 on the calling thread. */
export function syncHasher(): StreamHasher {
  const h = createHash('sha256');
  return {
    update: (d) => void h.update(d),
    digest: async () => h.digest('hex'),
    dispose: () => {},
  };
}

const MAX_QUEUED = 32 * 1024 * 1024;
const ACK_EVERY = 8 * 1024 * 1024;

// Plain JavaScript so the worker needs no TypeScript loader. Workers get no inherited
// flags (execArgv: []): `--input-type=module` would take `require` away from this source.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const h = createHash('sha256');
let since = 0;
parentPort.on('message', (m) => {
  if (m === null) { parentPort.postMessage({ digest: h.digest('hex') }); return; }
  h.update(m);
  since += m.length;
  if (since >= ${ACK_EVERY}) { parentPort.postMessage({ ack: since }); since = 0; }
});
`;

/** SHA-256 on a worker thread (see the top of this file). */
export function workerHasher(): StreamHasher {
  const worker = new Worker(WORKER_SOURCE, { eval: true, execArgv: [] });
  worker.unref();
  let queued = 0;
  let waiting: (() => void) | undefined;
  let failed: unknown;
  let done: ((hex: string) => void) | undefined;
  let fail: ((err: unknown) => void) | undefined;
  let disposed = false;
  worker.on('message', (m: { ack?: number; digest?: string }) => {
    if (m.ack !== undefined) {
      queued -= m.ack;
      if (queued < MAX_QUEUED && waiting) {
        const w = waiting;
        waiting = undefined;
        w();
      }
    } else if (m.digest !== undefined) {
      done?.(m.digest);
    }
  });
  worker.on('error', (err) => {
    failed = new BitfogError('EIO', 'hash worker failed', { cause: err });
    fail?.(failed);
    waiting?.();
  });
  return {
    update(data) {
      if (failed) throw failed;
      const copy = new Uint8Array(data);
      queued += copy.length; // before the transfer detaches `copy` (its length becomes 0)
      worker.postMessage(copy, [copy.buffer]);
      if (queued >= MAX_QUEUED) return new Promise<void>((resolve) => (waiting = resolve));
    },
    digest() {
      if (failed) return Promise.reject(failed);
      return new Promise<string>((resolve, reject) => {
        done = (hex) => {
          this.dispose();
          resolve(hex);
        };
        fail = reject;
        worker.postMessage(null);
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      void worker.terminate();
    },
  };
}

// ---------------------------------------------------------------------------------------
// Chunk hashing

/**
 * SHA-256s of consecutive chunks of a byte stream: the caller starts each chunk with its
 * length and feeds its bytes in order; digests come back in chunk order.
 */
export interface ChunkHasher {
  /** Starts the next chunk, of `length` bytes (at least 1); the previous one must be complete. */
  begin(length: number): void;
  /** Adds bytes of the current chunk, never past its end; copied or hashed before this returns. */
  update(data: Uint8Array): void;
  /** Digests (32 bytes each) of chunks finished since the last call, in chunk order. */
  take(): Buffer[];
  /** Waits until every chunk begun is hashed (all must be complete); returns the digests not taken yet. */
  finish(): Promise<Buffer[]>;
  /** Releases resources (idempotent). */
  dispose(): void;
}

/** Chunk SHA-256s on the calling thread: each digest is ready once its last byte is added. */
export function syncChunkHasher(): ChunkHasher {
  let h = createHash('sha256');
  let left = 0;
  let ready: Buffer[] = [];
  const take = () => {
    const out = ready;
    ready = [];
    return out;
  };
  return {
    begin(length) {
      h = createHash('sha256');
      left = length;
    },
    update(data) {
      h.update(data);
      left -= data.length;
      if (left === 0) ready.push(h.digest());
    },
    take,
    finish: async () => take(),
    dispose: () => {},
  };
}

// Shared memory of the worker chunk hasher. Sizes are powers of two, so that the wrapping
// int32 counters index the rings with a mask.
/** Bytes in flight: small enough to stay in the CPU caches between the copy and the hash. */
const RING_BYTES = 8 * 1024 * 1024;
/** Chunks in flight. */
const JOB_SLOTS = 8192;
/** Larger chunks are always hashed on the calling thread. */
const MAX_REMOTE_CHUNK = RING_BYTES / 4;
// Int32 control cells.
const JOBS_PUBLISHED = 0;
const JOBS_DONE = 1;
const BYTES_DONE = 2;

// Plain JavaScript, started without inherited flags as WORKER_SOURCE is. It blocks in Atomics.wait
// when idle and is ended with terminate(). Job i: a chunk of `lengths[i]` bytes at
// `starts[i]` in the ring, its digest to go to `digests[i]`; `marks[i]`: the producer's
// ring byte counter once it is consumed.
const CHUNK_WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = Buffer.from(workerData.ring);
const ctl = new Int32Array(workerData.ctl);
const starts = new Int32Array(workerData.starts);
const lengths = new Int32Array(workerData.lengths);
const marks = new Int32Array(workerData.marks);
const digests = Buffer.from(workerData.digests);
let done = 0;
for (;;) {
  const published = Atomics.load(ctl, ${JOBS_PUBLISHED});
  if (published === done) { Atomics.wait(ctl, ${JOBS_PUBLISHED}, published); continue; }
  while (done !== published) {
    const slot = done & ${JOB_SLOTS - 1};
    const start = starts[slot];
    createHash('sha256').update(ring.subarray(start, start + lengths[slot])).digest().copy(digests, slot * 32);
    Atomics.store(ctl, ${BYTES_DONE}, marks[slot]);
    done = (done + 1) | 0;
    Atomics.store(ctl, ${JOBS_DONE}, done);
  }
}
`;

/**
 * Chunk SHA-256s shared between the calling thread and a worker thread, so that a file's
 * bytes can be hashed twice (per chunk, and whole on the calling thread) in about the
 * wall time of once where a second core is free.
 *
 * A chunk goes to the worker when there is room for it in a ring of shared memory (its
 * bytes are copied there: a memcpy, far cheaper than a hash, and nothing is allocated per
 * chunk); otherwise — the worker is behind, say because the machine is busy, or it
 * failed — the calling thread hashes it itself. So `update` never waits, the worker takes
 * as much of the work as it keeps up with, and digests lag the bytes by at most
 * RING_BYTES. Digests still come back in chunk order.
 */
export function workerChunkHasher(): ChunkHasher {
  const shared = {
    ring: new SharedArrayBuffer(RING_BYTES),
    ctl: new SharedArrayBuffer(3 * 4),
    starts: new SharedArrayBuffer(4 * JOB_SLOTS),
    lengths: new SharedArrayBuffer(4 * JOB_SLOTS),
    marks: new SharedArrayBuffer(4 * JOB_SLOTS),
    digests: new SharedArrayBuffer(32 * JOB_SLOTS),
  };
  const ring = Buffer.from(shared.ring);
  const ctl = new Int32Array(shared.ctl);
  const starts = new Int32Array(shared.starts);
  const lengths = new Int32Array(shared.lengths);
  const marks = new Int32Array(shared.marks);
  const digests = new Uint8Array(shared.digests);
  const worker = new Worker(CHUNK_WORKER_SOURCE, { eval: true, workerData: shared, execArgv: [] });
  worker.unref();
  let failed = false;
  let disposed = false;
  const fail = () => {
    failed = true;
  };
  worker.on('error', fail);
  worker.on('exit', () => {
    if (!disposed) fail();
  });

  // Counters wrap like the worker's int32 ones.
  let published = 0; // chunks handed to the worker
  let taken = 0; // their digests read back
  let written = 0; // ring bytes used, skipped ends included
  /** The chunk being added: hashed here, or bound for the ring at `at`. */
  let local: ReturnType<typeof createHash> | undefined;
  let remote: { start: number; at: number; length: number; mark: number } | undefined;
  let left = 0;
  /** Chunks in order: a digest computed here, or the worker's job number. */
  const order: Array<Buffer | number> = [];
  let head = 0;

  /** Room in the ring for a chunk of `length` bytes (contiguous: the ring's end is skipped if need be). */
  const place = (length: number): { start: number; mark: number } | undefined => {
    if (failed || length > MAX_REMOTE_CHUNK || ((published - taken) >>> 0) >= JOB_SLOTS) return undefined;
    const at = written & (RING_BYTES - 1);
    const start = at + length > RING_BYTES ? 0 : at;
    const mark = (written + (start === at ? 0 : RING_BYTES - at) + length) | 0;
    return ((mark - Atomics.load(ctl, BYTES_DONE)) >>> 0) <= RING_BYTES ? { start, mark } : undefined;
  };
  const publish = (c: { start: number; length: number; mark: number }) => {
    const slot = published & (JOB_SLOTS - 1);
    starts[slot] = c.start;
    lengths[slot] = c.length;
    marks[slot] = c.mark;
    const job = published;
    order.push(job);
    published = (published + 1) | 0;
    Atomics.store(ctl, JOBS_PUBLISHED, published);
    // Only a worker that had done every earlier job may be asleep (or about to wait on the
    // old count, which the store above makes it skip). Checked after the store: before
    // it, the worker could finish its last job and go to sleep in between.
    if (Atomics.load(ctl, JOBS_DONE) === job) Atomics.notify(ctl, JOBS_PUBLISHED);
  };
  const collect = (): Buffer[] => {
    const out: Buffer[] = [];
    const done = Atomics.load(ctl, JOBS_DONE);
    while (head < order.length) {
      const next = order[head]!;
      if (typeof next === 'number') {
        if (((done - next) | 0) <= 0) break;
        const at = (next & (JOB_SLOTS - 1)) * 32;
        out.push(Buffer.from(digests.subarray(at, at + 32)));
        taken = (taken + 1) | 0;
      } else out.push(next);
      head++;
    }
    if (head > 4096) {
      order.splice(0, head);
      head = 0;
    }
    return out;
  };

  const hasher: ChunkHasher = {
    begin(length) {
      const where = place(length);
      if (where) {
        remote = { start: where.start, at: where.start, length, mark: where.mark };
        written = where.mark;
        local = undefined;
      } else {
        remote = undefined;
        local = createHash('sha256');
      }
      left = length;
    },
    update(data) {
      left -= data.length;
      if (remote) {
        // Buffer#fill copies with memcpy; TypedArray#set into shared memory goes byte by
        // byte unless both ends are equally aligned (ten times slower).
        if (data.length > 0) ring.fill(data, remote.at, remote.at + data.length);
        remote.at += data.length;
        if (left === 0) publish(remote);
      } else {
        local!.update(data);
        if (left === 0) order.push(local!.digest());
      }
    },
    take: collect,
    async finish() {
      // At most RING_BYTES are left (a few ms of hashing): poll. (Atomics.waitAsync was
      // tried, and once in a while never woke up.)
      while (!failed && Atomics.load(ctl, JOBS_DONE) !== published) await new Promise((resolve) => setTimeout(resolve, 1));
      if (failed) {
        // The worker died: hash here what it did not.
        const done = Atomics.load(ctl, JOBS_DONE);
        for (let i = head; i < order.length; i++) {
          const job = order[i]!;
          if (typeof job !== 'number' || ((done - job) | 0) > 0) continue;
          const slot = job & (JOB_SLOTS - 1);
          order[i] = createHash('sha256').update(ring.subarray(starts[slot]!, starts[slot]! + lengths[slot]!)).digest();
        }
      }
      return collect();
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      void worker.terminate();
    },
  };
  return hasher;
}
