/**
 * Whole-stream SHA-256 on a worker thread, so that a file's bytes can be hashed twice
 * (per chunk on the main thread, whole on the worker) for the wall time of once.
 *
 * Flow control: the main thread copies each piece into a transferable buffer (a memcpy,
 * far cheaper than hashing) and may have at most `MAX_QUEUED` bytes in flight; `update`
 * returns a promise to wait on when over it, so memory stays bounded whatever the speeds.
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

// Plain JavaScript so the worker needs no TypeScript loader.
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
  const worker = new Worker(WORKER_SOURCE, { eval: true });
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
      worker.postMessage(copy, [copy.buffer]);
      queued += copy.length;
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
 * SHA-256s of consecutive chunks of a byte stream. The caller feeds the stream in order,
 * saying where each chunk ends; digests come back in chunk order.
 */
export interface ChunkHasher {
  /**
   * Adds the next bytes; `endsChunk`: the current chunk ends with them. `data` is copied or
   * hashed before this returns (the caller may reuse it). A returned promise means "wait
   * before adding more": the hasher is that far behind.
   */
  update(data: Uint8Array, endsChunk: boolean): void | Promise<void>;
  /** Digests (32 bytes each) of chunks finished since the last call, in chunk order. */
  take(): Buffer[];
  /** Waits until every chunk added is hashed; returns the digests not taken yet. */
  finish(): Promise<Buffer[]>;
  /** Releases resources (idempotent). */
  dispose(): void;
}

/** Chunk SHA-256s on the calling thread: each digest is ready when `update` returns. */
export function syncChunkHasher(): ChunkHasher {
  let h = createHash('sha256');
  let ready: Buffer[] = [];
  const take = () => {
    const out = ready;
    ready = [];
    return out;
  };
  return {
    update(data, endsChunk) {
      h.update(data);
      if (endsChunk) {
        ready.push(h.digest());
        h = createHash('sha256');
      }
    },
    take,
    finish: async () => take(),
    dispose: () => {},
  };
}

// Shared memory of the worker chunk hasher. Sizes are powers of two, so that the wrapping
// int32 counters index the rings with a mask.
/** Bytes in flight: small enough to stay in the CPU caches between the copy and the hash. */
const RING_BYTES = 4 * 1024 * 1024;
/** Pieces in flight (a piece is a run of bytes of one chunk). */
const JOB_SLOTS = 8192;
/** Digests the worker may have ready before this thread takes them. */
const DIGEST_SLOTS = 4096;
/** Largest piece: a bigger `update` is cut, so that a piece always fits in the ring. */
const MAX_PIECE = RING_BYTES / 4;
/** The worker tells the producer about its progress every this many bytes (and when idle). */
const NOTIFY_BYTES = RING_BYTES / 8;
// Int32 control cells.
const JOBS_PUBLISHED = 0;
const JOBS_DONE = 1;
const BYTES_DONE = 2;
const DIGESTS_DONE = 3;

/** `Atomics.waitAsync` (Node ≥ 16; not in this TypeScript lib yet). */
const waitAsync = (Atomics as unknown as {
  waitAsync(array: Int32Array, index: number, value: number, timeoutMs: number): { async: false; value: string } | { async: true; value: Promise<string> };
}).waitAsync;

// Plain JavaScript so the worker needs no TypeScript loader. It blocks in Atomics.wait
// when idle and is ended with terminate(). Job i: `lengths[i]` bytes at `starts[i]` in the
// ring; `marks[i]`: the producer's byte counter once they are consumed; `ends[i]`: they
// end a chunk.
const CHUNK_WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const ring = Buffer.from(workerData.ring);
const ctl = new Int32Array(workerData.ctl);
const starts = new Int32Array(workerData.starts);
const lengths = new Int32Array(workerData.lengths);
const marks = new Int32Array(workerData.marks);
const ends = new Uint8Array(workerData.ends);
const digests = Buffer.from(workerData.digests);
let done = 0, hashed = 0, notifiedAt = 0;
let h = createHash('sha256');
for (;;) {
  const published = Atomics.load(ctl, ${JOBS_PUBLISHED});
  if (published === done) { Atomics.wait(ctl, ${JOBS_PUBLISHED}, published); continue; }
  while (done !== published) {
    const slot = done & ${JOB_SLOTS - 1};
    const start = starts[slot];
    h.update(ring.subarray(start, start + lengths[slot]));
    if (ends[slot] === 1) {
      h.digest().copy(digests, (hashed & ${DIGEST_SLOTS - 1}) * 32);
      h = createHash('sha256');
      hashed = (hashed + 1) | 0;
      Atomics.store(ctl, ${DIGESTS_DONE}, hashed);
    }
    const mark = marks[slot];
    Atomics.store(ctl, ${BYTES_DONE}, mark);
    done = (done + 1) | 0;
    Atomics.store(ctl, ${JOBS_DONE}, done);
    // Waking the producer costs it a task: once per NOTIFY_BYTES, or when out of work.
    if (((mark - notifiedAt) >>> 0) >= ${NOTIFY_BYTES} || done === Atomics.load(ctl, ${JOBS_PUBLISHED})) {
      notifiedAt = mark;
      Atomics.notify(ctl, ${JOBS_DONE});
    }
  }
}
`;

/**
 * Chunk SHA-256s on a worker thread, so that the caller's thread can spend its time on the
 * other hash (the whole file) and on I/O: a file's bytes are hashed twice for the wall
 * time of about once on two cores.
 *
 * `update` copies the bytes into a ring of shared memory (a memcpy, far cheaper than a
 * hash; nothing is allocated per piece) and the worker hashes them there. At most
 * `RING_BYTES` are in flight: past that, `update` returns a promise, so memory stays
 * bounded and the digests lag the bytes by at most that much. Throws EIO when the worker
 * fails.
 */
export function workerChunkHasher(): ChunkHasher {
  const shared = {
    ring: new SharedArrayBuffer(RING_BYTES),
    ctl: new SharedArrayBuffer(4 * 4),
    starts: new SharedArrayBuffer(4 * JOB_SLOTS),
    lengths: new SharedArrayBuffer(4 * JOB_SLOTS),
    marks: new SharedArrayBuffer(4 * JOB_SLOTS),
    ends: new SharedArrayBuffer(JOB_SLOTS),
    digests: new SharedArrayBuffer(32 * DIGEST_SLOTS),
  };
  const ring = Buffer.from(shared.ring);
  const ctl = new Int32Array(shared.ctl);
  const starts = new Int32Array(shared.starts);
  const lengths = new Int32Array(shared.lengths);
  const marks = new Int32Array(shared.marks);
  const ends = new Uint8Array(shared.ends);
  const digests = new Uint8Array(shared.digests);
  const worker = new Worker(CHUNK_WORKER_SOURCE, { eval: true, workerData: shared });
  worker.unref();

  // Counters wrap like the worker's int32 ones.
  let published = 0; // pieces handed to the worker
  let notified = 0; // `published` when the worker was last woken
  let written = 0; // ring bytes used, padding included
  let endsPublished = 0; // chunk ends handed to the worker
  let taken = 0; // digests moved into `ready`
  let ready: Buffer[] = [];
  let failed: unknown;
  let disposed = false;
  const fail = (err: unknown) => {
    failed ??= new BitfogError('EIO', 'chunk hash worker failed', { cause: err });
    // Wakes a wait for progress, which then sees `failed`.
    Atomics.notify(ctl, JOBS_DONE);
  };
  worker.on('error', fail);
  worker.on('exit', (code) => {
    if (!disposed) fail(new Error(`exited with code ${code}`));
  });
  const check = () => {
    if (failed) throw failed;
    if (disposed) throw new BitfogError('EIO', 'chunk hasher used after dispose');
  };

  const wake = () => {
    if (notified !== published) {
      notified = published;
      Atomics.notify(ctl, JOBS_PUBLISHED);
    }
  };
  const collect = () => {
    const done = Atomics.load(ctl, DIGESTS_DONE);
    while (taken !== done) {
      const at = (taken & (DIGEST_SLOTS - 1)) * 32;
      ready.push(Buffer.from(digests.subarray(at, at + 32)));
      taken = (taken + 1) | 0;
    }
  };
  /** Waits until the worker has done more (or failed). */
  const progress = async () => {
    wake();
    const seen = Atomics.load(ctl, JOBS_DONE);
    if (seen === published || failed) return;
    // The timeout only bounds a wait on a worker that died between the check and the wait.
    const w = waitAsync(ctl, JOBS_DONE, seen, 1000);
    if (!w.async) return;
    // A pending waitAsync does not keep the process alive; the (otherwise unref'd) worker does.
    worker.ref();
    try {
      await w.value;
    } finally {
      worker.unref();
    }
  };
  /** Where `piece` goes in the ring (contiguous: the end of the ring is skipped if need be); undefined: no room yet. */
  const place = (piece: Uint8Array, endsChunk: boolean): { start: number; mark: number } | undefined => {
    if (((published - Atomics.load(ctl, JOBS_DONE)) >>> 0) >= JOB_SLOTS) return undefined;
    if (endsChunk && ((endsPublished - taken) >>> 0) >= DIGEST_SLOTS) return undefined;
    const at = written & (RING_BYTES - 1);
    const start = at + piece.length > RING_BYTES ? 0 : at;
    const mark = (written + (start === at ? 0 : RING_BYTES - at) + piece.length) | 0;
    return ((mark - Atomics.load(ctl, BYTES_DONE)) >>> 0) <= RING_BYTES ? { start, mark } : undefined;
  };
  const publish = (piece: Uint8Array, endsChunk: boolean, where: { start: number; mark: number }) => {
    // Buffer#fill copies with memcpy; TypedArray#set into shared memory copies byte by byte
    // unless both ends are equally aligned (ten times slower).
    if (piece.length > 0) ring.fill(piece, where.start, where.start + piece.length);
    const slot = published & (JOB_SLOTS - 1);
    starts[slot] = where.start;
    lengths[slot] = piece.length;
    marks[slot] = where.mark;
    ends[slot] = endsChunk ? 1 : 0;
    written = where.mark;
    if (endsChunk) endsPublished = (endsPublished + 1) | 0;
    published = (published + 1) | 0;
    Atomics.store(ctl, JOBS_PUBLISHED, published);
  };

  /** `update` once the ring is full: waits for room piece by piece. */
  async function slowUpdate(data: Uint8Array, endsChunk: boolean): Promise<void> {
    for (let at = 0; at < data.length || (at === 0 && endsChunk); ) {
      const n = Math.min(MAX_PIECE, data.length - at);
      const last = at + n === data.length;
      const piece = data.subarray(at, at + n);
      let where: { start: number; mark: number } | undefined;
      for (;;) {
        check();
        collect();
        where = place(piece, endsChunk && last);
        if (where) break;
        await progress();
      }
      publish(piece, endsChunk && last, where);
      at += n;
      if (n === 0) break;
    }
    wake();
  }

  const hasher: ChunkHasher = {
    update(data, endsChunk) {
      check();
      for (let at = 0; at < data.length || (at === 0 && endsChunk); ) {
        const n = Math.min(MAX_PIECE, data.length - at);
        const last = at + n === data.length;
        const piece = data.subarray(at, at + n);
        const where = place(piece, endsChunk && last) ?? (collect(), place(piece, endsChunk && last));
        if (!where) return slowUpdate(data.subarray(at), endsChunk);
        publish(piece, endsChunk && last, where);
        at += n;
        if (n === 0) break;
      }
      // Wake the worker for a sizeable piece or a few chunks, not for every small chunk.
      if (data.length >= 65536 || ((published - notified) >>> 0) >= 8) wake();
    },
    take() {
      collect();
      const out = ready;
      ready = [];
      return out;
    },
    async finish() {
      check();
      while (Atomics.load(ctl, JOBS_DONE) !== published) {
        await progress();
        check();
      }
      return hasher.take();
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      void worker.terminate();
    },
  };
  return hasher;
}
