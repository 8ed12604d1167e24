/**
 * Signatures taken while store writes (signer.ts, on a worker thread) are exactly those a
 * later read of the file would give (signContent), whatever the pieces they are fed in.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { chunkParamsForSize } from '../src/core/delta/chunker.ts';
import { contentDigest, contentSigner, digestFile, idleSignWorkers, inlineSigner, prestartSignWorkers, signWorkersStarted } from '../src/core/delta/signer.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { hashFileHandle, openFileOf } from '../src/core/hashing.ts';
import { signContent } from '../src/core/delta/signature.ts';
import { runModuleInChild } from './helpers/child.ts';
import { tempDir } from './helpers/tmp.ts';

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

  it('signs file after file on the workers it already has; a file given up midway leaves the next one right', async () => {
    const other = randomBytes(3 * 1024 * 1024 + 1);
    const want = (await signContent(Readable.from([other]), other.length)).signature;
    await feed(contentSigner(data.length), data, 1 << 20); // at least one worker idle now
    const before = signWorkersStarted();
    for (let i = 0; i < 3; i++) assert.deepEqual(await feed(contentSigner(other.length), other, 1 << 18), want, `file ${i}`);
    assert.equal(signWorkersStarted(), before, 'no worker started for files signed one after another');
    // Given up with bytes still on their way to its worker: none of them may end up in the next file.
    const abandoned = contentSigner(16 << 20);
    await abandoned.update(randomBytes(9 << 20));
    abandoned.dispose();
    assert.deepEqual(await feed(contentSigner(other.length), other, 1 << 18), want, 'the next file is signed from its own bytes only');
  });

  it('hashes a file whole on the worker, alone or while signing it, as createHash does', async () => {
    const want = `sha256:${createHash('sha256').update(data).digest('hex')}`;
    const expected = (await signContent(Readable.from([data]), data.length)).signature;
    const feedDigest = async (digest: ReturnType<typeof contentDigest>) => {
      for (let at = 0; at < data.length; at += 77_777) await digest.update(data.subarray(at, Math.min(data.length, at + 77_777)));
      return digest.finish();
    };
    assert.deepEqual(await feedDigest(contentDigest({ wholeFile: true })), { hash: want });
    assert.deepEqual(await feedDigest(contentDigest({ wholeFile: true, sign: { size: data.length } })), { hash: want, signature: expected });
    assert.deepEqual(await feedDigest(contentDigest({ sign: { size: data.length } })), { signature: expected });
    assert.deepEqual(await contentDigest({ wholeFile: true }).finish(), { hash: `sha256:${createHash('sha256').digest('hex')}` }, 'an empty file');
    assert.deepEqual(await contentDigest({}).finish(), {}, 'asked for nothing: answers nothing, and does answer');
  });

  it('digestFile: a worker reads a local file itself and gives what a later read gives; a file without a descriptor is read here', async () => {
    const big = Buffer.concat([data, randomBytes(20 * 1024 * 1024)]); // several reads and progress reports
    const file = path.join(await tempDir('digest-file'), 'file #1 ü.bin');
    await fsp.writeFile(file, big);
    const want = { hash: `sha256:${createHash('sha256').update(big).digest('hex')}`, bytes: big.length };
    const signature = (await signContent(Readable.from([big]), big.length)).signature;
    const handle = await fsp.open(file, 'r');
    try {
      assert.deepEqual(await hashFileHandle(handle), want, 'hashFileHandle on this thread');
      let reported = 0;
      const onWorker = await digestFile(openFileOf(handle), { wholeFile: true, sign: { size: big.length } }, { onBytes: (n) => (reported += n) });
      assert.deepEqual(onWorker, { ...want, signature }, 'read, hashed and signed by the worker');
      assert.equal(reported, big.length, 'every byte reported as progress');
      assert.deepEqual(await digestFile(openFileOf(handle), { wholeFile: true }), want, 'hashed only');
      const { fd, ...withoutDescriptor } = openFileOf(handle);
      assert.equal(typeof fd, 'number');
      assert.deepEqual(await digestFile(withoutDescriptor, { wholeFile: true, sign: { size: big.length } }), { ...want, signature }, 'read on this thread, digested as fed');
      const empty = path.join(path.dirname(file), 'empty');
      await fsp.writeFile(empty, '');
      const emptyHandle = await fsp.open(empty, 'r');
      assert.deepEqual(await digestFile(openFileOf(emptyHandle), { wholeFile: true }), { hash: `sha256:${createHash('sha256').digest('hex')}`, bytes: 0 }, 'an empty file');
      await emptyHandle.close();
    } finally {
      await handle.close();
    }
  });

  it('digestFile: a failed read is an error with its code, an abort stops the worker before it answers, and workers are usable after both', async () => {
    const file = path.join(await tempDir('digest-fail'), 'file');
    const content = Buffer.concat([data, randomBytes(20 * 1024 * 1024)]); // progress is reported before the end
    await fsp.writeFile(file, content);
    const handle = await fsp.open(file, 'r');
    const fd = handle.fd;
    await handle.close();
    await assert.rejects(
      digestFile({ fd, read: async () => 0 }, { wholeFile: true }),
      (e: unknown) => isBitfogError(e) && /EBADF/.test((e as Error).message),
      'a descriptor that is closed fails with EBADF',
    );
    const again = await fsp.open(file, 'r');
    try {
      const controller = new AbortController();
      controller.abort();
      await assert.rejects(digestFile(openFileOf(again), { wholeFile: true }, { signal: controller.signal }), (e: unknown) => isBitfogError(e, 'EABORTED'), 'aborted before it starts');
      const during = new AbortController();
      const aborted = digestFile(openFileOf(again), { wholeFile: true, sign: { size: content.length } }, { signal: during.signal, onBytes: () => during.abort() });
      await assert.rejects(aborted, (e: unknown) => isBitfogError(e, 'EABORTED'), 'aborted at its first progress report');
      assert.deepEqual(await digestFile(openFileOf(again), { wholeFile: true }), { hash: `sha256:${createHash('sha256').update(content).digest('hex')}`, bytes: content.length }, 'the next file is digested');
    } finally {
      await again.close();
    }
  });

  it('prestartSignWorkers starts idle workers ahead of need, and the next files take them', async () => {
    prestartSignWorkers(3);
    assert.ok(idleSignWorkers() >= 3, `three idle workers (${idleSignWorkers()})`);
    const started = signWorkersStarted();
    prestartSignWorkers(3);
    assert.equal(signWorkersStarted(), started, 'none started when enough are idle');
    const files = [randomBytes(3 << 20), randomBytes(5 << 20), randomBytes(1 << 20)];
    const signatures = await Promise.all(files.map((f) => feed(contentSigner(f.length), f, 1 << 18)));
    assert.equal(signWorkersStarted(), started, 'three files at once took the idle workers');
    for (const [i, f] of files.entries()) assert.deepEqual(signatures[i], (await signContent(Readable.from([f]), f.length)).signature);
  });

  it('idle workers do not keep the process alive', async () => {
    // A child signs a file and then has nothing left to do: it must exit by itself, also
    // with workers started ahead of need and never used.
    const script = [
      `import { contentSigner, prestartSignWorkers } from ${JSON.stringify(new URL('../src/core/delta/signer.ts', import.meta.url).href)};`,
      'prestartSignWorkers(3);',
      'const s = contentSigner(4 << 20);',
      'await s.update(Buffer.alloc(4 << 20, 3));',
      'console.log((await s.finish()).chunks.length);',
    ].join('\n');
    const { code, signal, stdout: out } = await runModuleInChild(script, 60_000);
    assert.equal(signal, null, 'exited by itself, not killed after a minute');
    assert.equal(code, 0);
    assert.match(out, /^\d+\n$/, 'signed before exiting');
  });
});
