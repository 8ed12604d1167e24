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
