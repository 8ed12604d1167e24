/**
 * Worker-thread entry of `signer.ts`: chunks the bytes it is sent and hashes each chunk,
 * and/or hashes them whole, so that a file's signature and its content hash cost the
 * thread that moves its bytes nothing but a copy. A worker does one file after another
 * (starting one costs more than signing a few MiB).
 *
 * Protocol: `{ begin: { params?, hashLength, wholeFile } }` starts a file (`params`: sign it
 * with these chunk sizes; `wholeFile`: hash it whole); each further message is a Uint8Array
 * of its next bytes, acknowledged by `{ ack: bytes }` every ACK_EVERY bytes, or at once with
 * the message's buffer (`{ ack, buffer }`, transferred back) when the message filled its
 * whole buffer, so the sender can reuse it; `null` ends the file and is answered by
 * `{ done: true, chunks?: [[length, hexPrefix], …], sha256?: hex }`, or `{ error }`. Then the next
 * `begin` may come.
 *
 * Or `{ readFile: { fd, params?, hashLength, wholeFile } }`: the worker reads the file
 * behind descriptor `fd` (one of this process, kept open by the sender until the answer)
 * itself, with positional reads from 0 to its end, straight into the chunker's memory, and
 * answers `{ progress: bytes }` every PROGRESS_EVERY bytes, then
 * `{ done: true, bytes, progress, chunks?, sha256? }` or `{ error, code?, syscall? }`. The
 * sender's thread then moves no bytes at all: handing a large file's bytes over in messages
 * cost it two copies, and left this thread idle while it waited for them.
 */
import { createHash, type Hash } from 'node:crypto';
import { readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';
import { Chunker, type ChunkParams } from './chunker.ts';
import { keptHash } from './signature.ts';
import { ACK_EVERY, PROGRESS_EVERY, READ_BYTES } from './signer-protocol.ts';

let file: { chunker: Chunker | undefined; whole: Hash | undefined; hashLength: number; chunks: Array<[number, string]>; sinceAck: number } | undefined;

const keep = (list: ReturnType<Chunker['push']> | undefined) => {
  if (!list) return;
  for (const c of list) file!.chunks.push([c.length, keptHash(c.sha256, file!.hashLength)]);
};

type ReadFileRequest = { fd: number; params?: ChunkParams; hashLength: number; wholeFile: boolean };

/** Reused to read a file that is only hashed whole (a chunker has room of its own). */
let readBuffer: Buffer | undefined;

function readFile({ fd, params, hashLength, wholeFile }: ReadFileRequest): void {
  const chunker = params && new Chunker(params, { readBytes: READ_BYTES });
  const whole = wholeFile ? createHash('sha256') : undefined;
  const chunks: Array<[number, string]> = [];
  const keep = (list: ReturnType<Chunker['push']>) => {
    for (const c of list) chunks.push([c.length, keptHash(c.sha256, hashLength)]);
  };
  let position = 0;
  let progress = 0;
  for (;;) {
    const into = chunker ? chunker.room() : (readBuffer ??= Buffer.allocUnsafeSlow(READ_BYTES));
    const n = readSync(fd, into, 0, Math.min(into.length, READ_BYTES), position);
    if (n === 0) break;
    whole?.update(into.subarray(0, n));
    if (chunker) keep(chunker.commit(n));
    position += n;
    progress += n;
    if (progress >= PROGRESS_EVERY) {
      parentPort!.postMessage({ progress });
      progress = 0;
    }
  }
  if (chunker) keep(chunker.finish());
  parentPort!.postMessage({ done: true, bytes: position, progress, ...(chunker ? { chunks } : {}), ...(whole ? { sha256: whole.digest('hex') } : {}) });
}

parentPort!.on('message', (data: Uint8Array | null | { begin: { params?: ChunkParams; hashLength: number; wholeFile: boolean } } | { readFile: ReadFileRequest }) => {
  try {
    if (data !== null && 'readFile' in data) {
      file = undefined;
      readFile(data.readFile);
      return;
    }
    if (data !== null && !(data instanceof Uint8Array)) {
      const { params, hashLength, wholeFile } = data.begin;
      file = { chunker: params && new Chunker(params), whole: wholeFile ? createHash('sha256') : undefined, hashLength, chunks: [], sinceAck: 0 };
      return;
    }
    if (!file) throw new Error('bytes before begin');
    if (data === null) {
      keep(file.chunker?.finish());
      parentPort!.postMessage({ done: true, ...(file.chunker ? { chunks: file.chunks } : {}), ...(file.whole ? { sha256: file.whole.digest('hex') } : {}) });
      file = undefined;
      return;
    }
    file.whole?.update(data);
    keep(file.chunker?.push(data));
    file.sinceAck += data.length;
    if (data.byteLength === data.buffer.byteLength) {
      // A whole batch buffer: given back with its acknowledgement, to be filled again.
      parentPort!.postMessage({ ack: file.sinceAck, buffer: data.buffer }, [data.buffer as ArrayBuffer]);
      file.sinceAck = 0;
    } else if (file.sinceAck >= ACK_EVERY) {
      parentPort!.postMessage({ ack: file.sinceAck });
      file.sinceAck = 0;
    }
  } catch (e) {
    file = undefined;
    const { code, syscall } = (e ?? {}) as { code?: unknown; syscall?: unknown };
    parentPort!.postMessage({
      error: e instanceof Error ? e.message : String(e),
      ...(typeof code === 'string' ? { code } : {}),
      ...(typeof syscall === 'string' ? { syscall } : {}),
    });
  }
});
