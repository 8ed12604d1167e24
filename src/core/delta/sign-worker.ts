/**
 * Worker-thread entry of `signer.ts`: chunks the bytes it is sent and hashes each chunk,
 * so that a file's signature costs the thread that writes it nothing but a copy.
 *
 * Protocol: workerData is `{ params, hashLength }`; each message is a Uint8Array of the
 * next bytes, acknowledged by `{ ack: bytes }` every ACK_EVERY bytes, or at once with the
 * message's buffer (`{ ack, buffer }`, transferred back) when the message filled its whole
 * buffer, so the sender can reuse it; `null` ends the input and is answered by
 * `{ chunks: [[length, hexPrefix], …] }`, or `{ error }`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Chunker, type ChunkParams } from './chunker.ts';
import { keptHash } from './signature.ts';
import { ACK_EVERY } from './signer-protocol.ts';

const { params, hashLength } = workerData as { params: ChunkParams; hashLength: number };
const chunker = new Chunker(params);
const chunks: Array<[number, string]> = [];
let sinceAck = 0;

const keep = (list: ReturnType<Chunker['push']>) => {
  for (const c of list) chunks.push([c.length, keptHash(c.sha256, hashLength)]);
};

parentPort!.on('message', (data: Uint8Array | null) => {
  try {
    if (data === null) {
      keep(chunker.finish());
      parentPort!.postMessage({ chunks });
      return;
    }
    keep(chunker.push(data));
    sinceAck += data.length;
    if (data.byteLength === data.buffer.byteLength) {
      // A whole batch buffer: given back with its acknowledgement, to be filled again.
      parentPort!.postMessage({ ack: sinceAck, buffer: data.buffer }, [data.buffer as ArrayBuffer]);
      sinceAck = 0;
    } else if (sinceAck >= ACK_EVERY) {
      parentPort!.postMessage({ ack: sinceAck });
      sinceAck = 0;
    }
  } catch (e) {
    parentPort!.postMessage({ error: e instanceof Error ? e.message : String(e) });
  }
});
