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
 */
import { createHash, type Hash } from 'node:crypto';
import { parentPort } from 'node:worker_threads';
import { Chunker, type ChunkParams } from './chunker.ts';
import { keptHash } from './signature.ts';
import { ACK_EVERY } from './signer-protocol.ts';

let file: { chunker: Chunker | undefined; whole: Hash | undefined; hashLength: number; chunks: Array<[number, string]>; sinceAck: number } | undefined;

const keep = (list: ReturnType<Chunker['push']> | undefined) => {
  if (!list) return;
  for (const c of list) file!.chunks.push([c.length, keptHash(c.sha256, file!.hashLength)]);
};

parentPort!.on('message', (data: Uint8Array | null | { begin: { params?: ChunkParams; hashLength: number; wholeFile: boolean } }) => {
  try {
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
    parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
});
