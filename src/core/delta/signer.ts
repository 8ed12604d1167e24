/**
 * Signatures and content hashes of files as they are written or read back: store feeds the
 * bytes it writes or reads back anyway, and gets the file's signature without reading the
 * file again; large files read back by store or by fetch are hashed the same way.
 *
 * Chunking and hashing every chunk cost about twice what the whole-file hash costs, so the
 * work runs on a worker thread (`sign-worker.ts`) while the calling thread moves the
 * bytes; several files digested at once use several cores (one thread hashing every file
 * fetch or store moved at once was the limit on 2 cores). A local file (`digestFile` of a
 * file with a descriptor) is read by the worker itself, so its bytes never pass through
 * the calling thread. Where no worker can be started, the same work runs on the calling
 * thread.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { abortError, BitfogError, throwIfAborted, toBitfogError } from '../errors.ts';
import { formatHash, HASH_ALGORITHM } from '../hashing.ts';
import { readPieces } from '../streams.ts';
import type { OpenFile } from '../types.ts';
import { Chunker, type ChunkParams, chunkParamsForSize } from './chunker.ts';
import { MAX_QUEUED } from './signer-protocol.ts';
import { DEFAULT_HASH_LENGTH, type FileSignature, keptHash } from './signature.ts';

/** Signs one file's bytes, fed in order. */
export interface ContentSigner {
  /** Adds the next bytes (copied: the caller may reuse `data`). A returned promise means "wait before adding more". */
  update(data: Uint8Array): void | Promise<void>;
  /** The signature of everything added. */
  finish(): Promise<FileSignature>;
  /** Releases the worker (idempotent; after `finish` a no-op). */
  dispose(): void;
}

/** What a `ContentDigest` computes from a file's bytes. */
export interface DigestRequest {
  /** Sign the bytes, with the chunk params of a file of `size` bytes. */
  sign?: { size: number; hashLength?: number };
  /** Hash them whole (`sha256:<hex>`, as `formatHash`). */
  wholeFile?: boolean;
}

/** A file's signature and/or content hash, computed from its bytes, fed in order. */
export interface ContentDigest {
  /** Adds the next bytes (copied: the caller may reuse `data`). A returned promise means "wait before adding more". */
  update(data: Uint8Array): void | Promise<void>;
  /** What was asked for, of everything added. */
  finish(): Promise<{ signature?: FileSignature; hash?: string }>;
  /** Releases the worker (idempotent; after `finish` a no-op). */
  dispose(): void;
}

/**
 * A digest computed on a worker thread, so that the thread moving the bytes only copies
 * them, and files moved at once are digested on as many cores; on the calling thread
 * where no worker can be started.
 */
export function contentDigest(request: DigestRequest): ContentDigest {
  const params = request.sign && chunkParamsForSize(request.sign.size);
  const hashLength = request.sign?.hashLength ?? DEFAULT_HASH_LENGTH;
  const wholeFile = request.wholeFile ?? false;
  const entry = workerEntry();
  if (entry) {
    try {
      return new WorkerDigest(entry, params, hashLength, wholeFile);
    } catch {
      /* no worker here: digest on this thread */
    }
  }
  return inlineDigest(params, hashLength, wholeFile);
}

/** What `digestFile` reads: an open file, with the descriptor a worker may read it through, if it has one. */
export type DigestibleFile = Pick<OpenFile, 'read' | 'fd'>;

/**
 * What `request` asks for, of the whole file `file` (read from its start to its end), and
 * how many bytes it has. A file with a descriptor (`OpenFile.fd`) is read by the worker
 * itself, straight into the chunker's memory: this thread moves none of its bytes. Others
 * are read here and handed over as `contentDigest` does. The caller keeps the file open
 * until this settles (after an abort too: the worker has stopped reading by then).
 */
export async function digestFile(
  file: DigestibleFile,
  request: DigestRequest,
  options: { onBytes?: (n: number) => void; signal?: AbortSignal; what?: string } = {},
): Promise<{ signature?: FileSignature; hash?: string; bytes: number }> {
  const entry = file.fd === undefined ? undefined : workerEntry();
  if (entry) {
    let w: SignWorker | undefined;
    try {
      w = takeWorker(entry);
    } catch {
      /* no worker here: read on this thread */
    }
    if (w) return await readOnWorker(w, file.fd!, request, options);
  }
  const digest = contentDigest(request);
  try {
    const bytes = await readPieces(
      file,
      (piece) => {
        options.onBytes?.(piece.length);
        return digest.update(piece);
      },
      options.signal ? { signal: options.signal } : {},
    );
    return { ...(await digest.finish()), bytes };
  } finally {
    digest.dispose();
  }
}

function readOnWorker(
  w: SignWorker,
  fd: number,
  request: DigestRequest,
  options: { onBytes?: (n: number) => void; signal?: AbortSignal; what?: string },
): Promise<{ signature?: FileSignature; hash?: string; bytes: number }> {
  const { signal, onBytes } = options;
  const params = request.sign && chunkParamsForSize(request.sign.size);
  const hashLength = request.sign?.hashLength ?? DEFAULT_HASH_LENGTH;
  return new Promise((resolve, reject) => {
    let settled = false;
    let stopping = false;
    const settle = (then: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      then();
    };
    /** Ends a worker that may still be reading: settles once it has stopped, so the caller may close the file. */
    const stop = (err: BitfogError) => {
      if (settled || stopping) return;
      stopping = true;
      w.onMessage = w.onFailure = undefined;
      w.worker.terminate().then(
        () => settle(() => reject(err)),
        () => settle(() => reject(err)),
      );
    };
    const onAbort = () => stop(abortError(signal));
    w.onMessage = (m) => {
      if (m.progress) onBytes?.(m.progress);
      if (stopping) return; // aborted from onBytes
      if (m.done) {
        giveWorker(w);
        settle(() =>
          resolve({
            ...(params && m.chunks ? { signature: { params, hashLength, chunks: m.chunks.map(([length, sha256]) => ({ length, sha256 })) } } : {}),
            ...(m.sha256 === undefined ? {} : { hash: `${HASH_ALGORITHM}:${m.sha256}` }),
            bytes: m.bytes ?? 0,
          }),
        );
      } else if (m.error !== undefined) {
        giveWorker(w); // the worker finished its loop and keeps no state of the file
        const native = Object.assign(new Error(m.error), m.code === undefined ? {} : { code: m.code }, m.syscall === undefined ? {} : { syscall: m.syscall });
        settle(() => reject(toBitfogError(native, options.what ?? 'cannot read the file being hashed')));
      }
    };
    w.onFailure = (err) => stop(err);
    try {
      throwIfAborted(signal);
    } catch (e) {
      giveWorker(w);
      settle(() => reject(e));
      return;
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    w.worker.postMessage({ readFile: { fd, ...(params ? { params } : {}), hashLength, wholeFile: request.wholeFile ?? false } });
  });
}

/** A signer for a file of `size` bytes (chunk params from its size, as recorded signatures use). */
export function contentSigner(size: number, options: { hashLength?: number } = {}): ContentSigner {
  return signerOf(contentDigest({ sign: { size, ...options } }));
}

/** The chunker on the calling thread. */
export function inlineSigner(params: ChunkParams, hashLength = DEFAULT_HASH_LENGTH): ContentSigner {
  return signerOf(inlineDigest(params, hashLength, false));
}

function signerOf(digest: ContentDigest): ContentSigner {
  return {
    update: (data) => digest.update(data),
    finish: async () => (await digest.finish()).signature!,
    dispose: () => digest.dispose(),
  };
}

function inlineDigest(params: ChunkParams | undefined, hashLength: number, wholeFile: boolean): ContentDigest {
  const chunker = params && new Chunker(params);
  const whole = wholeFile ? createHash(HASH_ALGORITHM) : undefined;
  const chunks: FileSignature['chunks'] = [];
  const keep = (list: ReturnType<Chunker['push']>) => {
    for (const c of list) chunks.push({ length: c.length, sha256: keptHash(c.sha256, hashLength) });
  };
  return {
    update: (data) => {
      whole?.update(data);
      if (chunker) keep(chunker.push(data));
    },
    finish: async () => {
      if (chunker) keep(chunker.finish());
      return { ...(params ? { signature: { params, hashLength, chunks } } : {}), ...(whole ? { hash: formatHash(whole) } : {}) };
    },
    dispose: () => {},
  };
}

/**
 * Bytes go to the worker in messages of this size rather than chunk by chunk as they come
 * (256 KiB): each message wakes the worker, which costs while a store competes for the
 * cores with a storage server. The worker gives each batch buffer back with its
 * acknowledgement and it is filled again: memory the process has not touched before is
 * expensive (the kernel faults in and zeroes every page; measured on a VM: 1 GiB through
 * new 4 MiB buffers 1.3 s, through one reused buffer 0.03 s).
 */
const BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Batch buffers kept for reuse, shared by all signers: enough for four files signed at
 * once, each with MAX_QUEUED bytes out and one batch filling (with 8, a store of large
 * files took fresh memory for about half its batches).
 */
const SPARE_BATCHES = 4 * (MAX_QUEUED / BATCH_BYTES + 1);
const spareBatches: ArrayBuffer[] = [];

/** How to start the worker: a file of the bundle, or a bootstrap that loads the TypeScript source through tsx. */
type WorkerEntry = { file: URL } | { bootstrap: string };
let resolvedEntry: WorkerEntry | null | undefined;

/**
 * The worker's code: `sign-worker.mjs` of the bundle (dist/, next to the chunk this code
 * was bundled into or one level up), or, when running from the TypeScript sources, a
 * bootstrap that registers tsx in the worker first (Node 20 does not pass a parent's
 * loader hooks to a worker, nor accept them through the worker's execArgv).
 */
function workerEntry(): WorkerEntry | undefined {
  if (resolvedEntry === undefined) {
    const here = import.meta.url;
    resolvedEntry = null;
    if (here.endsWith('.ts')) {
      try {
        const api = import.meta.resolve('tsx/esm/api');
        const source = new URL('./sign-worker.ts', here).href;
        resolvedEntry = { bootstrap: `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(source)}); })` };
      } catch {
        /* no tsx: sign on the calling thread */
      }
    } else {
      const found = ['./sign-worker.mjs', '../sign-worker.mjs'].map((rel) => new URL(rel, here)).find((u) => existsSync(fileURLToPath(u)));
      if (found) resolvedEntry = { file: found };
    }
  }
  return resolvedEntry ?? undefined;
}

/** What a sign worker answers (see sign-worker.ts). */
type SignWorkerMessage = {
  ack?: number;
  buffer?: ArrayBuffer;
  progress?: number;
  done?: true;
  bytes?: number;
  chunks?: Array<[number, string]>;
  sha256?: string;
  error?: string;
  code?: string;
  syscall?: string;
};

/** A sign worker, and the signer it works for now (none while idle). */
interface SignWorker {
  readonly worker: Worker;
  onMessage?: ((m: SignWorkerMessage) => void) | undefined;
  onFailure?: ((err: BitfogError) => void) | undefined;
}

/**
 * Workers are kept for the next file: starting one costs about 0.2 s of CPU here (a new
 * isolate, the bundle, the WebAssembly), as much as signing 150 MiB; a store of many large
 * files used to start one per file. Kept unreferenced, so they never hold the process up.
 */
const IDLE_WORKERS_KEPT = 4;
const idleWorkers: SignWorker[] = [];
let workersStarted = 0;

/** How many sign workers wait idle for the next file (for tests). */
export function idleSignWorkers(): number {
  return idleWorkers.length;
}

/** How many sign workers this process has started (for tests: reuse shows here). */
export function signWorkersStarted(): number {
  return workersStarted;
}

/** A worker for one file; referenced while it works (a signer's promise waits on it), not while idle. */
function takeWorker(entry: WorkerEntry, options: { fresh?: boolean } = {}): SignWorker {
  const idle = options.fresh ? undefined : idleWorkers.pop();
  if (idle) {
    idle.worker.ref();
    return idle;
  }
  const worker = 'file' in entry ? new Worker(entry.file) : new Worker(entry.bootstrap, { eval: true });
  workersStarted++;
  const w: SignWorker = { worker };
  const lost = (err: BitfogError) => {
    const i = idleWorkers.indexOf(w);
    if (i >= 0) idleWorkers.splice(i, 1);
    w.onFailure?.(err);
  };
  worker.on('message', (m: SignWorkerMessage) => w.onMessage?.(m));
  worker.on('error', (err) => lost(new BitfogError('EIO', 'signature worker failed', { cause: err })));
  worker.on('exit', (code) => lost(new BitfogError('EIO', `signature worker stopped (exit code ${code})`)));
  return w;
}

/**
 * Starts sign workers ahead of need, up to `count` idle ones (at most IDLE_WORKERS_KEPT):
 * one takes about 0.1 s to start, which fetch and store would otherwise wait for at their
 * first large file. They start while the caller plans and opens files, on cores that are
 * idle then. A no-op where no worker can be started.
 */
export function prestartSignWorkers(count: number): void {
  const entry = workerEntry();
  if (!entry) return;
  while (idleWorkers.length < Math.min(count, IDLE_WORKERS_KEPT)) {
    try {
      giveWorker(takeWorker(entry, { fresh: true }));
    } catch {
      return; // no worker here: the work runs on the calling thread
    }
  }
}

/** After a finished file: kept for the next one, or ended. */
function giveWorker(w: SignWorker): void {
  w.onMessage = w.onFailure = undefined;
  if (idleWorkers.length < IDLE_WORKERS_KEPT) {
    w.worker.unref(); // an idle worker must not keep the process from exiting
    idleWorkers.push(w);
  } else {
    void w.worker.terminate();
  }
}

/** In the middle of a file (failed or given up): its state is of no use to another. */
function endWorker(w: SignWorker): void {
  w.onMessage = w.onFailure = undefined;
  void w.worker.terminate();
}

class WorkerDigest implements ContentDigest {
  readonly #w: SignWorker;
  readonly #params: ChunkParams | undefined;
  readonly #hashLength: number;
  #queued = 0;
  #resume: (() => void) | undefined;
  #failure: BitfogError | undefined;
  #result: { resolve: (d: { signature?: FileSignature; hash?: string }) => void; reject: (e: unknown) => void } | undefined;
  #disposed = false;
  /** Bytes gathered for the next message (see BATCH_BYTES) and how many it holds. */
  #batch: Uint8Array | undefined;
  #fill = 0;

  constructor(entry: WorkerEntry, params: ChunkParams | undefined, hashLength: number, wholeFile: boolean) {
    this.#params = params;
    this.#hashLength = hashLength;
    this.#w = takeWorker(entry);
    this.#w.onMessage = (m) => {
      if (m.ack !== undefined) {
        this.#queued -= m.ack;
        if (m.buffer && spareBatches.length < SPARE_BATCHES) spareBatches.push(m.buffer);
        if (this.#queued < MAX_QUEUED) this.#wake();
      } else if (m.done) {
        this.#disposed = true;
        giveWorker(this.#w);
        const params = this.#params;
        this.#result?.resolve({
          ...(params && m.chunks ? { signature: { params, hashLength: this.#hashLength, chunks: m.chunks.map(([length, sha256]) => ({ length, sha256 })) } } : {}),
          ...(m.sha256 === undefined ? {} : { hash: `${HASH_ALGORITHM}:${m.sha256}` }),
        });
      } else if (m.error !== undefined) {
        this.#fail(new BitfogError('EIO', `signature worker: ${m.error}`));
      }
    };
    this.#w.onFailure = (err) => this.#fail(err);
    this.#w.worker.postMessage({ begin: { ...(params ? { params } : {}), hashLength, wholeFile } });
  }

  update(data: Uint8Array): void | Promise<void> {
    if (this.#failure) throw this.#failure;
    let off = 0;
    while (off < data.length) {
      this.#batch ??= new Uint8Array(spareBatches.pop() ?? new ArrayBuffer(BATCH_BYTES));
      const n = Math.min(data.length - off, BATCH_BYTES - this.#fill);
      this.#batch.set(off === 0 && n === data.length ? data : data.subarray(off, off + n), this.#fill);
      this.#fill += n;
      off += n;
      if (this.#fill === BATCH_BYTES) this.#post();
    }
    if (this.#queued >= MAX_QUEUED) return new Promise<void>((resolve) => (this.#resume = resolve));
  }

  finish(): Promise<{ signature?: FileSignature; hash?: string }> {
    if (this.#failure) return Promise.reject(this.#failure);
    this.#post();
    return new Promise((resolve, reject) => {
      this.#result = { resolve, reject };
      this.#w.worker.postMessage(null);
    });
  }

  /** Hands the gathered bytes to the worker (transferred: no second copy). */
  #post(): void {
    const batch = this.#batch;
    if (!batch || this.#fill === 0) return;
    const view = new Uint8Array(batch.buffer, batch.byteOffset, this.#fill);
    this.#queued += this.#fill; // before the transfer detaches the buffer
    this.#batch = undefined;
    this.#fill = 0;
    this.#w.worker.postMessage(view, [view.buffer as ArrayBuffer]);
  }

  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    endWorker(this.#w);
  }

  #wake(): void {
    const resume = this.#resume;
    this.#resume = undefined;
    resume?.();
  }

  #fail(err: BitfogError): void {
    this.#failure ??= err;
    this.#result?.reject(err);
    this.#wake();
    this.dispose();
  }
}
