/**
 * Signatures taken while store writes (signer.ts, on a worker thread) are exactly those a
 * later read of the file would give (signContent), whatever the pieces they are fed in.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { chunkParamsForSize } from '../src/core/delta/chunker.ts';
import { contentSigner, inlineSigner } from '../src/core/delta/signer.ts';
import { signContent } from '../src/core/delta/signature.ts';

async function feed(signer: ReturnType<typeof contentSigner>, data: Buffer, piece: number) {
  for (let at = 0; at < data.length; at += piece) await signer.update(data.subarray(at, Math.min(data.length, at + piece)));
  return signer.finish();
}

describe('signatures while writing', () => {
  const data = randomBytes(5 * 1024 * 1024 + 123);

  it('the worker signer gives what a later read gives, for odd piece sizes', async () => {
    const expected = await signContent(Readable.from([data]), data.length);
    assert.ok(expected.signature.chunks.length > 50, 'several chunks');
    for (const piece of [1 << 16, 1 << 18, 77_777]) {
      const got = await feed(contentSigner(data.length), data, piece);
      assert.deepEqual(got, expected.signature, `pieces of ${piece} bytes`);
    }
  });

  it('files signed at once, fed from one reused scratch buffer, each get their own signature', async () => {
    // Batch buffers travel to the worker and back and are refilled for any signer: a mix-up
    // or a buffer refilled too early would show as a wrong chunk.
    const other = randomBytes(9 * 1024 * 1024 + 7);
    const want = [await signContent(Readable.from([data]), data.length), await signContent(Readable.from([other]), other.length)];
    const signers = [contentSigner(data.length), contentSigner(other.length)];
    const scratch = Buffer.alloc(300_001);
    const piece = 300_001;
    for (let at = 0; at < other.length; at += piece) {
      for (const [i, source] of [data, other].entries()) {
        if (at >= source.length) continue;
        const n = source.copy(scratch, 0, at, Math.min(source.length, at + piece));
        await signers[i]!.update(scratch.subarray(0, n));
        scratch.fill(0xee); // the signer must have taken its copy
      }
    }
    assert.deepEqual(await signers[0]!.finish(), want[0]!.signature);
    assert.deepEqual(await signers[1]!.finish(), want[1]!.signature);
  });

  it('the same-thread signer agrees, and an empty file has no chunks', async () => {
    const expected = await signContent(Readable.from([data]), data.length);
    assert.deepEqual(await feed(inlineSigner(chunkParamsForSize(data.length)), data, 100_000), expected.signature);
    assert.deepEqual((await contentSigner(0).finish()).chunks, []);
  });

  it('applies back-pressure instead of queueing the whole file', async () => {
    const signer = contentSigner(64 * 1024 * 1024);
    const piece = Buffer.alloc(1 << 20, 7);
    let waited = false;
    for (let i = 0; i < 64; i++) {
      const w = signer.update(piece);
      if (w) {
        waited = true;
        await w;
      }
    }
    const sig = await signer.finish();
    assert.ok(waited, 'update asked the writer to wait at least once');
    assert.equal(sig.chunks.reduce((n, c) => n + c.length, 0), 64 * 1024 * 1024);
  });
});
