/** Signatures, the chunk index, delta plans and the verifying assembler. */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { type ChunkParams, chunkBuffer, chunkParamsForSize } from '../src/core/delta/chunker.ts';
import {
  assemble,
  assembleInto,
  assembleReadable,
  BaseFileChangedError,
  decodeRecipe,
  encodeRecipe,
  type DeltaPlan,
  planDelta,
  type Recipe,
} from '../src/core/delta/recipe.ts';
import {
  ChunkIndex,
  DEFAULT_HASH_LENGTH,
  decodeSignature,
  encodeSignature,
  type FileSignature,
  signatureFileSize,
  signContent,
} from '../src/core/delta/signature.ts';
import { syncChunkHasher, workerChunkHasher, workerHasher } from '../src/core/delta/hasher.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { encodeRecipeV1, memoryPositionalSources, memorySources, randomPieces, readableOf, slowMemoryTarget, withOpsSwapped, xorshiftBytes } from './delta-helpers.ts';

const KiB = 1024;
const MiB = 1 << 20;
const small: ChunkParams = { minSize: 2048, avgSize: 8192, maxSize: 32768, normalization: 2 };
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function signatureOf(data: Buffer, params: ChunkParams, hashLength = DEFAULT_HASH_LENGTH): FileSignature {
  return { params, hashLength, chunks: chunkBuffer(data, params).map((c) => ({ length: c.length, sha256: c.sha256.slice(0, hashLength * 2) })) };
}

/** A destination tree, its chunk index, and a plan for `next` against it. */
function plan(dest: Record<string, Buffer>, next: Buffer, params: ChunkParams, options: { basePath?: string; carried?: Set<string> } = {}): DeltaPlan {
  const index = new ChunkIndex();
  for (const [path, data] of Object.entries(dest)) index.add(path, signatureOf(data, params));
  return planDelta(chunkBuffer(next, params), sha(next), index, { ...options, params });
}

/** Collects what a writable receives. */
function sink(): { stream: Writable; bytes: () => Buffer; finished: () => boolean } {
  const parts: Buffer[] = [];
  let finished = false;
  const stream = new Writable({
    write(chunk, _enc, cb) {
      parts.push(chunk);
      cb();
    },
    final(cb) {
      finished = true;
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(parts), finished: () => finished };
}

async function assembleFrom(recipe: Recipe, dest: Record<string, Buffer>, spoolChunks: Map<string, Buffer>, ranged = true) {
  const { sources, reads } = memorySources(new Map(Object.entries(dest)), spoolChunks, { ranged });
  const out = sink();
  const result = await assemble(recipe, sources, out.stream, { rangedReads: ranged });
  return { result, bytes: out.bytes(), reads };
}

function spoolOf(p: DeltaPlan, next: Buffer): Map<string, Buffer> {
  return new Map(p.carry.map((c) => [c.sha256, next.subarray(c.offset, c.offset + c.length)]));
}

describe('delta signatures', () => {
  it('round-trips through its binary form, at about 19 bytes per chunk (under 0.06 % of the data)', () => {
    const data = xorshiftBytes(10, 4 * MiB);
    const sig = signatureOf(data, chunkParamsForSize(data.length));
    const bytes = encodeSignature(sig);
    assert.deepEqual(decodeSignature(bytes), sig);
    assert.equal(signatureFileSize(sig), data.length);
    assert.ok(bytes.length <= 20 + sig.chunks.length * 19, `${bytes.length} bytes for ${sig.chunks.length} chunks`);
    assert.ok(bytes.length / data.length < 0.0006);
    const full = signatureOf(data, chunkParamsForSize(data.length), 32);
    assert.deepEqual(decodeSignature(encodeSignature(full)), full);
    const empty: FileSignature = { params: small, hashLength: 32, chunks: [] };
    assert.deepEqual(decodeSignature(encodeSignature(empty)), empty);
  });

  it('refuses unknown versions and damaged bytes with EBADSPOOL', () => {
    const bytes = encodeSignature(signatureOf(xorshiftBytes(11, 100 * KiB), small));
    const future = Buffer.from(bytes);
    future[0] = 2;
    assert.throws(() => decodeSignature(future), (err) => isBitfogError(err, 'EBADSPOOL') && /version 2; this bitfog reads version 1/.test(err.message));
    assert.throws(() => decodeSignature(bytes.subarray(0, bytes.length - 1)), (err) => isBitfogError(err, 'EBADSPOOL'));
    assert.throws(() => decodeSignature(Buffer.concat([bytes, Buffer.from([0])])), (err) => isBitfogError(err, 'EBADSPOOL'));
    assert.throws(() => decodeSignature(Buffer.alloc(0)), (err) => isBitfogError(err, 'EBADSPOOL'));
  });

  it('signs a stream in one read: signature, whole-file hash and size', async () => {
    const data = xorshiftBytes(12, 3 * MiB + 7);
    const signed = await signContent(readableOf(data, 50_000), data.length);
    assert.equal(signed.hash, `sha256:${sha(data)}`);
    assert.equal(signed.size, data.length);
    assert.deepEqual(signed.signature, signatureOf(data, chunkParamsForSize(data.length)));
    const empty = await signContent(readableOf(Buffer.alloc(0)), 0);
    assert.deepEqual(empty.signature.chunks, []);
    assert.equal(empty.hash, `sha256:${sha(Buffer.alloc(0))}`);
  });

  it('indexes chunks across files and prefers the location that continues a run', () => {
    const a = xorshiftBytes(13, 200 * KiB);
    const index = new ChunkIndex();
    index.add('a', signatureOf(a, small));
    index.add('dir/copy of a', signatureOf(a, small));
    const chunks = chunkBuffer(a, small);
    const first = index.lookup(chunks[0]!.sha256, chunks[0]!.length)!;
    assert.deepEqual(first, { path: 'a', offset: 0, length: chunks[0]!.length });
    assert.equal(index.lookup(chunks[0]!.sha256, chunks[0]!.length, { preferPath: 'dir/copy of a' })!.path, 'dir/copy of a');
    const second = index.lookup(chunks[1]!.sha256, chunks[1]!.length, { continueAt: { path: 'dir/copy of a', offset: 0, length: chunks[0]!.length } })!;
    assert.equal(second.path, 'dir/copy of a');
    assert.equal(index.lookup(sha(Buffer.from('nothing')), 7), undefined);
    assert.equal(index.lookup(chunks[0]!.sha256, chunks[0]!.length + 1), undefined);
  });
});

describe('delta recipes', () => {
  it('costs nothing for a renamed or copied file', async () => {
    const data = xorshiftBytes(20, 2 * MiB);
    const p = plan({ 'old name ü.img': data }, data, small);
    assert.equal(p.carryBytes, 0);
    assert.equal(p.reuseBytes, data.length);
    assert.equal(p.recipe.ops.length, 1);
    assert.ok(encodeRecipe(p.recipe).length < data.length / 2000 + 100);
    const { bytes } = await assembleFrom(p.recipe, { 'old name ü.img': data }, new Map());
    assert.ok(bytes.equals(data));
  });

  it('carries little more than the new bytes of an appended-to file', async () => {
    const data = xorshiftBytes(21, 2 * MiB);
    const next = Buffer.concat([data, xorshiftBytes(22, 100 * KiB)]);
    const p = plan({ 'log #1.bin': data }, next, small, { basePath: 'log #1.bin' });
    assert.ok(p.carryBytes >= 100 * KiB && p.carryBytes <= 100 * KiB + 2 * small.maxSize, `carried ${p.carryBytes}`);
    const { bytes } = await assembleFrom(p.recipe, { 'log #1.bin': data }, spoolOf(p, next));
    assert.ok(bytes.equals(next));
  });

  it('carries about one chunk per scattered change in a 64 MiB file', async () => {
    const data = xorshiftBytes(23, 64 * MiB);
    const params = chunkParamsForSize(data.length);
    const next = Buffer.from(data);
    for (let i = 0; i < 20; i++) xorshiftBytes(100 + i, 64 * KiB).copy(next, Math.floor((i + 0.5) * (data.length / 20)));
    const p = plan({ 'vm/disk 1.img': data }, next, params, { basePath: 'vm/disk 1.img' });
    // Each 64 KiB change costs its own bytes plus about two 32 KiB-average chunks around it.
    assert.ok(p.carry.length >= 40 && p.carry.length <= 100, `${p.carry.length} chunks carried`);
    assert.ok(p.carryBytes < 20 * 192 * KiB, `carried ${p.carryBytes}`);
    // The recipe: about 3 bytes per reused chunk plus 42 per run and carried chunk.
    const recipeBytes = encodeRecipe(p.recipe).length;
    assert.ok(recipeBytes < 64 * MiB * 0.0002, `recipe ${recipeBytes} bytes`);
    const { bytes, result } = await assembleFrom(p.recipe, { 'vm/disk 1.img': data }, spoolOf(p, next));
    assert.ok(bytes.equals(next));
    assert.equal(result.spoolBytes, p.recipe.ops.reduce((n, op) => n + (op.from === 'spool' ? op.length : 0), 0));
  });

  it('carries identical chunks once, across files of one trip', () => {
    const block = xorshiftBytes(24, 96 * KiB);
    const next = Buffer.concat([block, block, block, block]);
    const carried = new Set<string>();
    const p1 = plan({}, next, small, { carried });
    const distinct = new Set(chunkBuffer(next, small).map((c) => c.sha256));
    assert.equal(p1.carry.length, distinct.size);
    assert.ok(p1.carryBytes < 2 * block.length, `carried ${p1.carryBytes}`);
    const p2 = plan({}, Buffer.from(next), small, { carried });
    assert.equal(p2.carryBytes, 0);
    assert.equal(p2.recipe.size, next.length);
  });

  it('round-trips recipes through their binary form', () => {
    const data = xorshiftBytes(25, MiB);
    const next = Buffer.concat([data.subarray(0, 300 * KiB), xorshiftBytes(26, 50 * KiB), data.subarray(300 * KiB)]);
    const p = plan({ 'a b/c%20d?#.bin': data, 'other/file': xorshiftBytes(27, 100 * KiB) }, next, small);
    const bytes = encodeRecipe(p.recipe);
    assert.deepEqual(p.recipe.params, small);
    assert.deepEqual(decodeRecipe(bytes), p.recipe);
    const { params: _params, ...withoutParams } = p.recipe;
    assert.deepEqual(decodeRecipe(encodeRecipe(withoutParams)), withoutParams);
    // A recipe of the previous format (no chunk-list digest) is still read.
    const { chunkListSha256, ...v1 } = p.recipe;
    assert.match(chunkListSha256 ?? '', /^[0-9a-f]{64}$/);
    assert.deepEqual(decodeRecipe(encodeRecipeV1(p.recipe)), v1);
    const future = Buffer.from(bytes);
    future[0] = 9;
    assert.throws(() => decodeRecipe(future), (err) => isBitfogError(err, 'EBADSPOOL') && /version 9/.test(err.message));
    assert.throws(() => decodeRecipe(bytes.subarray(0, bytes.length - 3)), (err) => isBitfogError(err, 'EBADSPOOL'));
  });
});

describe('delta assembler', () => {
  const base = xorshiftBytes(30, 2 * MiB);
  const other = xorshiftBytes(31, 300 * KiB);
  // New file: a piece of `other`, then `base` with an edit in the middle.
  const next = Buffer.concat([other.subarray(0, 150 * KiB), base.subarray(0, MiB), xorshiftBytes(32, 40 * KiB), base.subarray(MiB + 10 * KiB)]);
  const dest = { 'images/base 1.img': base, 'ÿ/other#.bin': other };
  const p = plan(dest, next, small, { basePath: 'images/base 1.img' });
  const spoolChunks = spoolOf(p, next);

  it('rebuilds the file from ranged reads and spool chunks, one read per run, and reports its chunks', async () => {
    const { sources, reads } = memorySources(new Map(Object.entries(dest)), spoolChunks);
    const out = sink();
    const seen: Array<{ length: number; sha256: string }> = [];
    const result = await assemble(p.recipe, sources, out.stream, { onChunk: (length, sha256) => void seen.push({ length, sha256 }) });
    const bytes = out.bytes();
    assert.deepEqual(seen, chunkBuffer(next, small).map((c) => ({ length: c.length, sha256: c.sha256 })));
    assert.ok(bytes.equals(next));
    assert.equal(result.hash, `sha256:${sha(next)}`);
    assert.equal(result.destBytes + result.spoolBytes, next.length);
    assert.equal(reads.length, p.recipe.ops.filter((op) => op.from === 'dest').length);
  });

  it('rebuilds the file with the whole-file hash on a worker thread', async () => {
    const { sources } = memorySources(new Map(Object.entries(dest)), spoolChunks);
    const out = sink();
    const result = await assemble(p.recipe, sources, out.stream, { wholeFileHasher: workerHasher });
    assert.ok(out.bytes().equals(next));
    assert.equal(result.hash, `sha256:${sha(next)}`);
    // Past its in-flight limit the worker hasher makes the producer wait, and still adds up.
    const big = xorshiftBytes(33, 80 * MiB);
    const h = workerHasher();
    let waited = 0;
    for (let at = 0; at < big.length; at += MiB) {
      const wait = h.update(big.subarray(at, at + MiB));
      if (wait) {
        waited++;
        await wait;
      }
    }
    assert.ok(waited > 0, 'the producer was made to wait');
    assert.equal(await h.digest(), sha(big));
  });

  it('rebuilds the file with the chunk hashes on a worker thread, and still refuses a changed base file', async () => {
    const { sources } = memorySources(new Map(Object.entries(dest)), spoolChunks);
    const out = sink();
    const seen: Array<{ length: number; sha256: string }> = [];
    const result = await assemble(p.recipe, sources, out.stream, { chunkHasher: workerChunkHasher, onChunk: (length, sha256) => void seen.push({ length, sha256 }) });
    assert.ok(out.bytes().equals(next));
    assert.equal(result.hash, `sha256:${sha(next)}`);
    assert.deepEqual(seen, chunkBuffer(next, small).map((c) => ({ length: c.length, sha256: c.sha256 })));

    const changed = { ...dest, 'images/base 1.img': Buffer.concat([base.subarray(0, 500 * KiB), Buffer.from('x'), base.subarray(500 * KiB + 1)]) };
    const bad = memorySources(new Map(Object.entries(changed)), spoolChunks);
    const badOut = sink();
    await assert.rejects(
      assemble(p.recipe, bad.sources, badOut.stream, { chunkHasher: workerChunkHasher }),
      (err) => err instanceof BaseFileChangedError && err.path === 'images/base 1.img',
    );
    assert.equal(badOut.finished(), false);
  });

  it('hashes chunks with a worker exactly as on this thread, whatever the pieces, chunks too large for it included', async () => {
    const data = xorshiftBytes(34, 24 * MiB + 7);
    // Chunk lengths from 1 byte to 3 MiB (hashed on this thread), fed in pieces of 0 to 1.5 MiB.
    const lengths: number[] = [];
    for (let at = 0, i = 0; at < data.length; i++) {
      const n = Math.min(data.length - at, [1, 5000, 70_000, 3 * MiB + 3, 40_000][i % 5]!);
      lengths.push(n);
      at += n;
    }
    for (const make of [syncChunkHasher, workerChunkHasher]) {
      const h = make();
      const got: Buffer[] = [];
      let chunk = 0;
      let left = 0;
      try {
        for (const piece of randomPieces(data, 35, 1.5 * MiB)) {
          for (let at = 0; at < piece.length; ) {
            if (left === 0) h.begin((left = lengths[chunk++]!));
            const n = Math.min(left, piece.length - at);
            h.update(piece.subarray(at, at + n));
            left -= n;
            at += n;
          }
          got.push(...h.take());
        }
        got.push(...(await h.finish()));
      } finally {
        h.dispose();
      }
      let at = 0;
      assert.deepEqual(
        got.map((d) => d.toString('hex')),
        lengths.map((n) => sha(data.subarray(at, (at += n)))),
        make.name,
      );
    }
  });

  it('never leaves the hash worker asleep with work queued', { timeout: 120_000 }, async () => {
    // The worker keeps catching up with this thread (busy hashing each chunk too, as the
    // assembler hashes the whole file), so it goes to sleep and is woken thousands of times.
    const data = xorshiftBytes(36, 4 * MiB);
    for (let round = 0; round < 2; round++) {
      const h = workerChunkHasher();
      const whole = createHash('sha256');
      let count = 0;
      try {
        for (let at = 0, i = 0; at < data.length; i++) {
          const n = Math.min(data.length - at, 200 + ((i * 7919) % 1000));
          const piece = data.subarray(at, at + n);
          h.begin(n);
          h.update(piece);
          whole.update(piece);
          at += n;
          count += h.take().length;
          if (i % 500 === 0) await new Promise((resolve) => setImmediate(resolve));
        }
        count += (await h.finish()).length;
      } finally {
        h.dispose();
      }
      assert.ok(count > 5_000);
    }
  });

  it('rebuilds the file without ranged reads by reading from the start and skipping', async () => {
    for (const declared of [false, true]) {
      // declared: true = the backend claims ranges but refuses them (EOPNOTSUPP): same fallback.
      const { sources, reads } = memorySources(new Map(Object.entries(dest)), spoolChunks, { ranged: false });
      const out = sink();
      await assemble(p.recipe, sources, out.stream, { rangedReads: declared });
      assert.ok(out.bytes().equals(next));
      assert.ok(reads.every((r) => r.start === 0 && r.end === undefined));
      assert.ok(reads.length <= 2, `${reads.length} reads`);
    }
  });

  for (const [what, change] of [
    ['changed', (b: Buffer) => Buffer.concat([b.subarray(0, 500 * KiB), Buffer.from('x'), b.subarray(500 * KiB + 1)])],
    ['shortened', (b: Buffer) => b.subarray(0, MiB + 5)],
  ] as const) {
    for (const ranged of [true, false]) {
      it(`refuses to assemble from a base file ${what} behind the plan's back (${ranged ? 'ranged' : 'sequential'} reads)`, async () => {
        const changed = { ...dest, 'images/base 1.img': change(base) };
        const { sources } = memorySources(new Map(Object.entries(changed)), spoolChunks, { ranged });
        const out = sink();
        await assert.rejects(assemble(p.recipe, sources, out.stream, { rangedReads: ranged }), (err) => {
          assert.ok(err instanceof BaseFileChangedError, String(err));
          assert.equal(err.code, 'EINTEGRITY');
          assert.equal(err.path, 'images/base 1.img');
          assert.match(err.message, /images\/base 1\.img/);
          return true;
        });
        assert.equal(out.finished(), false);
        assert.ok(out.bytes().length < next.length);
      });
    }
  }

  it('names a base file that is gone', async () => {
    const { sources } = memorySources(new Map([['images/base 1.img', base]]), spoolChunks);
    await assert.rejects(assemble(p.recipe, sources, sink().stream), (err) => err instanceof BaseFileChangedError && err.path === 'ÿ/other#.bin');
  });

  it('refuses a damaged spool chunk, and a recipe whose file hash does not match', async () => {
    const damaged = new Map(spoolChunks);
    const [key, chunk] = [...damaged][0]!;
    const bad = Buffer.from(chunk);
    bad[10]! ^= 1;
    damaged.set(key, bad);
    await assert.rejects(assembleFrom(p.recipe, dest, damaged), (err) => isBitfogError(err, 'EINTEGRITY') && err.path === undefined && /spool chunk/.test(err.message));

    const wrong: Recipe = { ...p.recipe, sha256: sha(Buffer.from('something else')) };
    const { sources } = memorySources(new Map(Object.entries(dest)), spoolChunks);
    const received: Buffer[] = [];
    const stream = assembleReadable(wrong, sources);
    await assert.rejects(
      (async () => {
        for await (const b of stream) received.push(b);
      })(),
      (err) => isBitfogError(err, 'EINTEGRITY') && /does not match its source/.test(err.message),
    );
    // The last piece was held back: the consumer never saw the whole (wrong) file.
    assert.ok(Buffer.concat(received).length < next.length);
  });

  it('checks the whole file through the chunk list: ops in the wrong order are refused though each holds what it says', async () => {
    const result = await assembleFrom(p.recipe, dest, spoolChunks);
    assert.equal(result.result.wholeFileVerified, true);
    const dests = p.recipe.ops.flatMap((op, i) => (op.from === 'dest' ? [i] : []));
    assert.ok(dests.length >= 2);
    const swapped = withOpsSwapped(p.recipe, dests[0]!, dests[1]!);
    const received: Buffer[] = [];
    await assert.rejects(
      (async () => {
        for await (const b of assembleReadable(swapped, memorySources(new Map(Object.entries(dest)), spoolChunks).sources)) received.push(b);
      })(),
      (err) => isBitfogError(err, 'EINTEGRITY') && err.path === undefined && /does not match its source/.test(err.message),
    );
    assert.ok(Buffer.concat(received).length < next.length, 'the consumer never saw the whole (wrong) file');
  });

  it('hashes the whole file for a recipe of the previous format, unless the caller does', async () => {
    const { chunkListSha256: _list, ...v1 } = p.recipe;
    const ok = await assembleFrom(v1, dest, spoolChunks);
    assert.ok(ok.bytes.equals(next));
    assert.equal(ok.result.wholeFileVerified, true);
    const swapped = withOpsSwapped(v1, ...(p.recipe.ops.flatMap((op, i) => (op.from === 'dest' ? [i] : [])).slice(0, 2) as [number, number]));
    await assert.rejects(assembleFrom(swapped, dest, spoolChunks), (err) => isBitfogError(err, 'EINTEGRITY') && /does not match its source \(sha256:/.test(err.message));
    // The caller that hashes the stream itself is told the file was not verified here.
    const out = sink();
    const unverified = await assemble(swapped, memorySources(new Map(Object.entries(dest)), spoolChunks).sources, out.stream, { verifyWholeFile: false });
    assert.equal(unverified.wholeFileVerified, false);
    assert.ok(!out.bytes().equals(next));
  });

  it('honours an AbortSignal', async () => {
    const { sources } = memorySources(new Map(Object.entries(dest)), spoolChunks);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(assemble(p.recipe, sources, sink().stream, { signal: ac.signal }), (err) => isBitfogError(err, 'EABORTED') || (err as Error).name === 'AbortError');
  });
});

describe('delta assembler with positional reads and writes (assembleInto)', () => {
  // Larger than the assembler's four 1 MiB buffers, so they are reused.
  const base = xorshiftBytes(40, 6 * MiB);
  const other = xorshiftBytes(41, 300 * KiB);
  const next = Buffer.concat([base.subarray(0, 2 * MiB), other.subarray(100 * KiB), xorshiftBytes(42, 70 * KiB), base.subarray(2 * MiB + 5 * KiB)]);
  const dest = { 'vm/disk #1 ü.img': base, 'a b/other%.bin': other };
  const p = plan(dest, next, small, { basePath: 'vm/disk #1 ü.img' });
  const spoolChunks = spoolOf(p, next);
  const run = (recipe: Recipe, tree: Record<string, Buffer> = dest, chunks = spoolChunks, options: Parameters<typeof assembleInto>[3] = {}, target = slowMemoryTarget(next.length)) => {
    const { sources, open } = memoryPositionalSources(new Map(Object.entries(tree)), chunks);
    return { open, target, done: assembleInto(recipe, sources, target.target, options) };
  };

  it('rebuilds the file exactly through reused buffers, counts its bytes, reports its chunks and closes what it opened', async () => {
    const seen: Array<{ length: number; sha256: string }> = [];
    let counted = 0;
    const r = run(p.recipe, dest, spoolChunks, { onChunk: (length, sha256) => void seen.push({ length, sha256 }), onBytes: (n) => void (counted += n) });
    const result = await r.done;
    assert.ok(r.target.bytes.equals(next));
    assert.equal(counted, next.length);
    assert.deepEqual(result, { size: next.length, hash: `sha256:${sha(next)}`, wholeFileVerified: true, destBytes: p.reuseBytes, spoolBytes: next.length - p.reuseBytes });
    assert.deepEqual(seen, chunkBuffer(next, small).map((c) => ({ length: c.length, sha256: c.sha256 })));
    assert.ok(r.target.writes.length >= 7 && r.target.writes.every((w) => w.length <= MiB), `${r.target.writes.length} writes`);
    assert.deepEqual(r.open, { opened: 2, closed: 2 });
  });

  it('hashes the whole file for a recipe of the previous format', async () => {
    const { chunkListSha256: _list, ...v1 } = p.recipe;
    const r = run(v1);
    assert.equal((await r.done).wholeFileVerified, true);
    assert.ok(r.target.bytes.equals(next));
    const runs = p.recipe.ops.flatMap((op, i) => (op.from === 'dest' ? [i] : []));
    await assert.rejects(run(withOpsSwapped(v1, runs[0]!, runs[1]!)).done, (err) => isBitfogError(err, 'EINTEGRITY') && /does not match its source \(sha256:/.test(err.message));
  });

  for (const [what, change] of [
    ['changed', (b: Buffer) => Buffer.concat([b.subarray(0, 4 * MiB), Buffer.from('x'), b.subarray(4 * MiB + 1)])],
    ['shortened', (b: Buffer) => b.subarray(0, 3 * MiB)],
  ] as const) {
    it(`names a base file ${what} behind the plan's back, and closes what it opened`, async () => {
      const r = run(p.recipe, { ...dest, 'vm/disk #1 ü.img': change(base) });
      await assert.rejects(r.done, (err) => err instanceof BaseFileChangedError && err.path === 'vm/disk #1 ü.img');
      assert.equal(r.open.opened, r.open.closed);
    });
  }

  it('names a base file that is gone; refuses a damaged spool chunk and ops in the wrong order', async () => {
    await assert.rejects(run(p.recipe, { 'vm/disk #1 ü.img': base }).done, (err) => err instanceof BaseFileChangedError && err.path === 'a b/other%.bin');
    const damaged = new Map(spoolChunks);
    const [key, chunk] = [...damaged][0]!;
    const bad = Buffer.from(chunk);
    bad[3]! ^= 0x40;
    damaged.set(key, bad);
    await assert.rejects(run(p.recipe, dest, damaged).done, (err) => isBitfogError(err, 'EINTEGRITY') && err.path === undefined && /spool chunk/.test(err.message));
    const runs = p.recipe.ops.flatMap((op, i) => (op.from === 'dest' ? [i] : []));
    await assert.rejects(run(withOpsSwapped(p.recipe, runs[0]!, runs[1]!)).done, (err) => isBitfogError(err, 'EINTEGRITY') && /its chunks do not make up/.test(err.message));
  });

  it('fails with the error of a failed write, after every other write and read has settled', async () => {
    const target = slowMemoryTarget(next.length, { failAt: 2 * MiB + 10 });
    const r = run(p.recipe, dest, spoolChunks, {}, target);
    await assert.rejects(r.done, (err) => isBitfogError(err, 'EIO') && /the disk broke/.test(err.message));
    assert.equal(r.open.opened, r.open.closed);
  });

  it('honours an AbortSignal', async () => {
    const ac = new AbortController();
    const r = run(p.recipe, dest, spoolChunks, { signal: ac.signal, onBytes: () => ac.abort() });
    await assert.rejects(r.done, (err) => isBitfogError(err, 'EABORTED') || (err as Error).name === 'AbortError');
    assert.equal(r.open.opened, r.open.closed);
  });
});
