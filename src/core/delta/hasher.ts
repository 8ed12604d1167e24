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
