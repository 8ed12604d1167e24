/**
 * Golden tests for the content-defined chunker. The recorded cut points are part of the
 * signature format: if one of these fails, the chunker changed and every signature a
 * destination holds would stop matching. Bump SIGNATURE_VERSION instead of editing them.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  type Chunk,
  type ChunkParams,
  Chunker,
  chunkBuffer,
  chunkParamsForSize,
  chunkStream,
  GEAR_SEED,
  gearTable,
  gearTableFromSeed,
} from '../src/core/delta/chunker.ts';
import { GEAR_WASM_BASE64 } from '../src/core/delta/gear-wasm.ts';
import { isBitfogError } from '../src/core/errors.ts';
// @ts-expect-error: a plain ESM script, without types
import { assembleGearWasm } from '../scripts/build-gear-wasm.mjs';
import { randomPieces, readableOf, xorshiftBytes } from './delta-helpers.ts';

const small: ChunkParams = { minSize: 2048, avgSize: 8192, maxSize: 32768, normalization: 2 };
const MiB = 1 << 20;
const GiB = 2 ** 30;

/**
 * FastCDC's cut rule written out plainly (see chunker.ts), the reference the WebAssembly
 * scan is held to: the cut offsets of `data` as one whole file.
 */
function referenceCuts(data: Uint8Array, p: ChunkParams): number[] {
  const gear = gearTable();
  const bits = Math.log2(p.avgSize);
  const mask = (n: number) => (n <= 0 ? 0 : (~0 << (32 - n)) | 0);
  const strict = mask(bits + p.normalization);
  const loose = mask(bits - p.normalization);
  const cuts: number[] = [];
  for (let start = 0; start < data.length; ) {
    const n = Math.min(data.length - start, p.maxSize);
    let length = n;
    if (n > p.minSize) {
      let h = 0;
      for (let i = p.minSize; i < n; i++) {
        h = ((h << 1) + gear[data[start + i]!]!) | 0;
        if ((h & (i < p.avgSize ? strict : loose)) === 0) {
          length = i + 1;
          break;
        }
      }
    }
    cuts.push(start);
    start += length;
  }
  return cuts;
}

/** A digest of a whole chunk list, to pin long lists in one line. */
function listDigest(chunks: Chunk[]): string {
  return createHash('sha256')
    .update(chunks.map((c) => `${c.offset}:${c.length}:${c.sha256}`).join('\n'))
    .digest('hex');
}

function assertContiguous(chunks: Chunk[], total: number): void {
  let at = 0;
  for (const c of chunks) {
    assert.equal(c.offset, at);
    at += c.length;
  }
  assert.equal(at, total);
}

describe('delta chunker', () => {
  it('uses the committed gear table, which is the one its seed generates', () => {
    const table = gearTable();
    assert.equal(table.length, 256);
    assert.deepEqual([...table], gearTableFromSeed(GEAR_SEED));
    assert.equal(new Set(table).size, 256);
    assert.equal(table[0], 0xbd94bff6);
    assert.equal(table[255], gearTableFromSeed(GEAR_SEED)[255]);
  });

  it('runs the gear scan that gear.wat assembles to', async () => {
    const assembled: Buffer = await assembleGearWasm();
    assert.equal(GEAR_WASM_BASE64, assembled.toString('base64'), 'gear-wasm.ts is stale: run node scripts/build-gear-wasm.mjs');
  });

  it('cuts where the plain FastCDC rule cuts, for every normalization level and split', () => {
    const inputs = [xorshiftBytes(11, 600_000), Buffer.alloc(300_000), Buffer.alloc(200_000, 0x5a), Buffer.concat([xorshiftBytes(12, 70_000), Buffer.alloc(90_000, 7), xorshiftBytes(13, 50_000)])];
    for (const normalization of [0, 1, 2, 3]) {
      for (const params of [{ ...small, normalization }, { minSize: 64, avgSize: 256, maxSize: 1024, normalization: Math.min(normalization, 2) }]) {
        for (const [k, data] of inputs.entries()) {
          const expected = referenceCuts(data, params);
          assert.deepEqual(chunkBuffer(data, params).map((c) => c.offset), expected, `input ${k}, ${JSON.stringify(params)}`);
          const chunker = new Chunker(params);
          const got: Chunk[] = [];
          for (const piece of randomPieces(data, k + normalization, 5000)) got.push(...chunker.push(piece));
          got.push(...chunker.finish());
          assert.deepEqual(got.map((c) => c.offset), expected, `input ${k} in pieces, ${JSON.stringify(params)}`);
        }
      }
    }
  });

  it('cuts fixed pseudo-random input at the recorded offsets (small params)', () => {
    const data = xorshiftBytes(1, MiB);
    const chunks = chunkBuffer(data, small);
    assert.equal(chunks.length, 109);
    assert.deepEqual(
      chunks.slice(0, 24).map((c) => c.offset),
      [
        0, 11251, 16644, 25410, 42130, 52208, 61326, 70003, 78197, 87379, 93761, 104282, 114440, 125035, 134530, 143203, 151027, 158460,
        174419, 193480, 198448, 208362, 217336, 229594,
      ],
    );
    assert.equal(chunks[0]!.sha256, '65e3d2d9ccdbf897e014ca954811c8ba02c20949d858d5f44f3ecd2493187e95');
    assert.equal(chunks[0]!.sha256, createHash('sha256').update(data.subarray(0, 11251)).digest('hex'));
    assert.equal(listDigest(chunks), '6b207ddf968399f2717cd84445c00c21a2ad0a6dd565b222eefd0fbe4b0c2245');
    assertContiguous(chunks, data.length);
  });

  it('cuts fixed pseudo-random input at the recorded offsets (default params of a small file)', () => {
    const params = chunkParamsForSize(8 * MiB);
    assert.deepEqual(params, { minSize: 8192, avgSize: 32768, maxSize: 131072, normalization: 1 });
    const chunks = chunkBuffer(xorshiftBytes(2, 8 * MiB), params);
    assert.equal(chunks.length, 204);
    assert.deepEqual(
      chunks.slice(0, 30).map((c) => c.offset),
      [
        0, 56564, 105189, 174118, 211944, 238856, 291069, 321961, 357177, 365715, 418686, 468634, 498951, 592158, 601759, 631859, 679094, 724901,
        761622, 797307, 818319, 838945, 891649, 927101, 987723, 1084826, 1107015, 1173895, 1217126, 1258662,
      ],
    );
    assert.equal(chunks.at(-1)!.offset, 8382285);
    assert.equal(listDigest(chunks), '23096cb7ec8080be3fc48c415aaf51afa89161a4565e5d519e92755691668989');
  });

  for (const [what, edit] of [
    ['an insertion', (d: Buffer, at: number) => Buffer.concat([d.subarray(0, at), xorshiftBytes(99, 1000), d.subarray(at)])],
    ['a deletion', (d: Buffer, at: number) => Buffer.concat([d.subarray(0, at), d.subarray(at + 1000)])],
  ] as const) {
    it(`moves every cut point after the first few by exactly the size of ${what} near the start`, () => {
      const data = xorshiftBytes(3, 2 * MiB);
      const before = chunkBuffer(data, small);
      for (const at of [0, 100, 3000, 5000]) {
        const edited = edit(data, at);
        const shift = edited.length - data.length;
        const after = chunkBuffer(edited, small);
        // The first chunk of `after` that lines up with one of `before`, shifted:
        const byOffset = new Map(before.map((c, i) => [c.offset + shift, i]));
        const k = after.findIndex((c) => c.offset > at + Math.max(0, shift) && byOffset.has(c.offset));
        assert.ok(k >= 1 && k <= 3, `resynchronised after ${k} chunks (edit at ${at})`);
        const j = byOffset.get(after[k]!.offset)!;
        assert.equal(after.length - k, before.length - j);
        for (let i = 0; i < after.length - k; i++) {
          assert.equal(after[k + i]!.offset, before[j + i]!.offset + shift);
          assert.equal(after[k + i]!.sha256, before[j + i]!.sha256);
        }
      }
    });
  }

  it('keeps every chunk within min and max, on random, constant and zero input', () => {
    for (const data of [xorshiftBytes(4, 3 * MiB), Buffer.alloc(MiB), Buffer.alloc(MiB, 0xa5), Buffer.concat([Buffer.alloc(100_000), xorshiftBytes(5, 500_000)])]) {
      const chunks = chunkBuffer(data, small);
      assertContiguous(chunks, data.length);
      chunks.forEach((c, i) => {
        assert.ok(c.length <= small.maxSize, `chunk ${i} is ${c.length} bytes`);
        if (i < chunks.length - 1) assert.ok(c.length >= small.minSize, `chunk ${i} is ${c.length} bytes`);
      });
    }
    const random = chunkBuffer(xorshiftBytes(4, 3 * MiB), small);
    const mean = (3 * MiB) / random.length;
    assert.ok(mean > small.avgSize * 0.8 && mean < small.avgSize * 1.6, `mean chunk ${mean}`);
  });

  it('yields nothing for empty input and one whole chunk for tiny input', () => {
    assert.deepEqual(chunkBuffer(Buffer.alloc(0), small), []);
    for (const n of [1, 63, small.minSize - 1, small.minSize]) {
      const data = xorshiftBytes(6, n);
      const chunks = chunkBuffer(data, small);
      assert.deepEqual(chunks, [{ offset: 0, length: n, sha256: createHash('sha256').update(data).digest('hex') }]);
    }
  });

  it('gives identical chunks however the input stream is split', async () => {
    const data = xorshiftBytes(7, 2 * MiB + 12345);
    const whole = chunkBuffer(data, small);
    for (const [seed, maxPiece] of [
      [1, 1],
      [2, 700],
      [3, 40_000],
      [4, 300_000],
    ] as const) {
      const pieces = randomPieces(seed === 1 ? data.subarray(0, 200_000) : data, seed, maxPiece);
      const expected = seed === 1 ? chunkBuffer(data.subarray(0, 200_000), small) : whole;
      const chunker = new Chunker(small);
      const got: Chunk[] = [];
      for (const p of pieces) got.push(...chunker.push(p));
      got.push(...chunker.finish());
      assert.deepEqual(got, expected, `split with pieces up to ${maxPiece}`);
    }
    const streamed: Chunk[] = [];
    for await (const c of chunkStream(readableOf(data, 65536), small)) streamed.push(c);
    assert.deepEqual(streamed, whole);
    const withData: Chunk[] = [];
    for await (const c of chunkStream(readableOf(data, 1 << 20), small, { withData: true })) withData.push(c);
    for (const c of withData) assert.deepEqual(c.data, data.subarray(c.offset, c.offset + c.length));
  });

  it('gives identical chunks when bytes are read straight into its room (room/commit), whatever the read sizes', () => {
    const data = xorshiftBytes(8, 2 * MiB + 999);
    const whole = chunkBuffer(data, small);
    for (const [seed, readBytes] of [
      [5, undefined],
      [6, 1 << 20],
      [7, 3 * small.maxSize + 17],
    ] as const) {
      const chunker = new Chunker(small, readBytes === undefined ? {} : { readBytes });
      const got: Chunk[] = [];
      let at = 0;
      let rng = seed;
      while (at < data.length) {
        const room = chunker.room();
        assert.ok(room.length >= (readBytes ?? small.maxSize), `room of at least the asked read size (${room.length})`);
        rng = (rng * 1103515245 + 12345) % 2 ** 31;
        const n = Math.min(data.length - at, 1 + (rng % room.length)); // a short read, as a file may give
        data.copy(room, 0, at, at + n);
        got.push(...chunker.commit(n));
        at += n;
      }
      got.push(...chunker.finish());
      assert.deepEqual(got, whole, `reads into room ${readBytes ?? 'default'}`);
    }
    const chunker = new Chunker(small);
    assert.throws(() => chunker.commit(chunker.room().length + 1), /beyond its room/);
  });

  it('honours an AbortSignal', async () => {
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(
      async () => {
        for await (const _ of chunkStream(readableOf(xorshiftBytes(8, MiB)), small, { signal: ac.signal }));
      },
      (err) => isBitfogError(err, 'EABORTED'),
    );
  });

  it('scales chunk sizes with the file size, keeping signatures under 0.06 % of the data', () => {
    const avg = (size: number) => chunkParamsForSize(size).avgSize;
    assert.equal(avg(0), 32768);
    assert.equal(avg(1), 32768);
    assert.equal(avg(GiB), 32768);
    assert.equal(avg(4 * GiB - 1), 32768);
    assert.equal(avg(4 * GiB), 65536);
    assert.equal(avg(16 * GiB), 131072);
    assert.equal(avg(64 * GiB), 262144);
    assert.equal(avg(1024 * GiB), MiB);
    assert.equal(avg(2 ** 60), 4 * MiB);
    for (const size of [1, GiB, 40 * GiB, 2 ** 50]) {
      const p = chunkParamsForSize(size);
      assert.equal(p.minSize, p.avgSize / 4);
      assert.equal(p.maxSize, p.avgSize * 4);
      // A 16-byte hash prefix + at most 3 bytes of length per chunk, against the nominal average:
      assert.ok(19 / p.avgSize < 0.0006);
    }
  });

  it('rejects invalid params', () => {
    for (const bad of [
      { ...small, avgSize: 10000 },
      { ...small, minSize: 16 },
      { ...small, maxSize: 4096 },
      { ...small, normalization: 5 },
    ]) {
      assert.throws(() => new Chunker(bad), (err) => isBitfogError(err, 'EUSAGE'));
    }
  });
});
