/**
 * store's in-kernel copy path (Destination.writeFromLocalFile) verifies what landed by
 * reading it back: a destination that does not keep what it was given never gets the file
 * renamed into place, and the good blob stays on the spool; a corrupt blob is still found.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LocalBackend } from '../src/backends/local/local.ts';
import { bitfogError, isBitfogError } from '../src/core/errors.ts';
import { HashCache } from '../src/core/hashcache.ts';
import type { RelPath } from '../src/core/paths.ts';
import { Spool } from '../src/core/spool.ts';
import { storeFromSpool } from '../src/core/store.ts';
import type { Destination, SendLocalFileOptions, WriteOptions } from '../src/core/types.ts';
import { fetchLocalTree } from './helpers/spool.ts';
import { withOverrides } from './helpers/backends.ts';
import { tempDir } from './helpers/tmp.ts';
import { makeTree, readTree } from './helpers/tree.ts';

/** A real local destination whose in-kernel copy flips one byte of what it wrote (a failing disk). */
async function lossyDestination(root: string): Promise<Destination> {
  const real = await LocalBackend.open(`file://${root}`, root, { write: true });
  const writeFromLocalFile = async (p: RelPath, file: string, options: WriteOptions) => {
    await real.writeFromLocalFile(p, file, options);
    const h = await fsp.open(path.join(root, p), 'r+');
    const b = Buffer.alloc(1);
    await h.read(b, 0, 1, 7);
    b[0] = b[0]! ^ 0x01;
    await h.write(b, 0, 1, 7);
    await h.close();
  };
  return withOverrides<Destination>(real, { writeFromLocalFile });
}

describe('store reads back what an in-kernel copy wrote', () => {
  // 2 MB is hashed on the thread that reads it back, 9 MiB and more on a worker (FSYNC_EACH_MIN_BYTES).
  for (const bytes of [2_000_000, 9 * 1024 * 1024 + 5]) {
    it(`a corrupt blob of a size that is copied by the kernel never lands and leaves the spool (${bytes} bytes)`, async () => {
      const dir = await tempDir('readback-corrupt');
      const src = path.join(dir, 'a');
      const dest = path.join(dir, 'b');
      const spoolDir = path.join(dir, 'spool');
      await makeTree(src, { 'big #2 ü?.bin': { bytes, seed: 9 }, 'small.txt': 'fine\n' });
      await fsp.mkdir(dest);
      await fetchLocalTree(src, spoolDir);
      const spool = await Spool.open(spoolDir, { create: false });
      try {
        const big = spool.blobs().find((b) => b.size === bytes)!;
        const h = await fsp.open(spool.blobPath(big.hash), 'r+');
        const byte = Buffer.alloc(1);
        await h.read(byte, 0, 1, 1_234_567);
        await h.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, 1_234_567); // flipped: a fixed value could be the byte already there
        await h.close();
        const r = await storeFromSpool({ destination: await LocalBackend.open(`file://${dest}`, dest, { write: true }), spool, cache: HashCache.memory() });
        assert.deepEqual(r.corrupt.map((c) => c.path), ['big #2 ü?.bin'], 'reported as corrupt spool content');
        assert.ok(!spool.has(big.hash), 'dropped from the spool, to be carried again');
        assert.equal(r.writtenFiles, 1);
      } finally {
        await spool.close();
      }
      const landed = await readTree(dest);
      assert.deepEqual([...landed.keys()], ['small.txt'], 'the corrupt file never lands, and no temporary file is left');
    });

    it(`a destination that changes the bytes: nothing lands under the final name, the blob stays (${bytes} bytes)`, async () => {
      const dir = await tempDir('readback');
      const src = path.join(dir, 'a');
      const dest = path.join(dir, 'b');
      const spoolDir = path.join(dir, 'spool');
      await makeTree(src, { 'deep/ê dir/100% #1?.bin': { bytes, seed: 3 } });
      await fsp.mkdir(dest);
      await fetchLocalTree(src, spoolDir);

      const spool = await Spool.open(spoolDir, { create: false });
      const blobsBefore = spool.blobs().map((b) => b.hash);
      try {
        await assert.rejects(
          storeFromSpool({ destination: await lossyDestination(dest), spool, cache: HashCache.memory() }),
          (e: unknown) => isBitfogError(e, 'EIO') && /did not keep what was written/.test((e as Error).message),
        );
        assert.deepEqual(spool.blobs().map((b) => b.hash), blobsBefore, 'the good blob is kept for the next attempt');
      } finally {
        await spool.close();
      }
      const landed = await readTree(dest);
      assert.ok(![...landed.keys()].some((p) => p.endsWith('100% #1?.bin')), 'the damaged file is not renamed into place');

      // The same spool into an honest destination works.
      const again = await Spool.open(spoolDir, { create: false });
      try {
        const r = await storeFromSpool({ destination: await LocalBackend.open(`file://${dest}`, dest, { write: true }), spool: again, cache: HashCache.memory() });
        assert.equal(r.writtenFiles, 1);
        assert.deepEqual(r.corrupt, []);
      } finally {
        await again.close();
      }
      const final = await readTree(dest);
      assert.ok(final.has('deep/ê dir/100% #1?.bin'));
      assert.deepEqual([...final.keys()].filter((p) => p.includes('.bitfog-tmp-')), [], 'no temporary file left');
    });
  }

  it('a destination whose sendLocalFile refuses intact content: reported as its failure, the blob stays', async () => {
    const dir = await tempDir('send-refused');
    const src = path.join(dir, 'a');
    const dest = path.join(dir, 'b');
    const spoolDir = path.join(dir, 'spool');
    await makeTree(src, { 'sent ü #1.bin': { bytes: 1_300_000, seed: 5 } });
    await fsp.mkdir(dest);
    await fetchLocalTree(src, spoolDir);
    const real = await LocalBackend.open(`file://${dest}`, dest, { write: true });
    // A plugin that calls a checksum refusal of its storage EINTEGRITY, after reading the blob.
    const refusing = withOverrides<Destination>(real, {
      sendLocalFile: async (_p: RelPath, file: string, options: SendLocalFileOptions) => {
        await options.onBytes?.(await fsp.readFile(file));
        throw bitfogError('EINTEGRITY', 'the storage computed another checksum');
      },
    });
    const spool = await Spool.open(spoolDir, { create: false });
    const blobsBefore = spool.blobs().map((b) => b.hash);
    try {
      await assert.rejects(
        storeFromSpool({ destination: refusing, spool, cache: HashCache.memory() }),
        (e: unknown) => isBitfogError(e, 'EIO') && /refused the intact content/.test((e as Error).message),
      );
      assert.deepEqual(spool.blobs().map((b) => b.hash), blobsBefore, 'the intact blob is not taken for corrupt');
    } finally {
      await spool.close();
    }
    assert.deepEqual([...(await readTree(dest)).keys()], [], 'nothing landed');
  });
});

describe('store interrupted between staging files and renaming them', () => {
  it('removes the staged files instead of leaving them at the destination', async () => {
    const dir = await tempDir('store-interrupted-staged');
    const src = path.join(dir, 'a');
    const dest = path.join(dir, 'b');
    const spoolDir = path.join(dir, 'spool');
    await makeTree(src, { 'one #1.txt': 'one', 'd/two ü.bin': { bytes: 200_000, seed: 3 }, 'three%.txt': 'three' });
    await fsp.mkdir(dest);
    await fetchLocalTree(src, spoolDir);
    const real = await LocalBackend.open(`file://${dest}`, dest, { write: true });
    const controller = new AbortController();
    let staged: RelPath[] = [];
    // The interrupt comes while the staged files are flushed, before any is renamed.
    const interrupted = withOverrides<Destination>(real, {
      sync: async (paths: RelPath[]) => {
        staged = paths;
        controller.abort();
        throw bitfogError('EABORTED', 'interrupted');
      },
    });
    const spool = await Spool.open(spoolDir, { create: false });
    try {
      await assert.rejects(storeFromSpool({ destination: interrupted, spool, cache: HashCache.memory(), signal: controller.signal }), (e: unknown) => isBitfogError(e, 'EABORTED'));
    } finally {
      await spool.close();
    }
    assert.ok(staged.length > 0, 'files were staged');
    assert.deepEqual([...(await readTree(dest)).entries()].filter(([, e]) => e.kind === 'file'), [], 'no staged file left, none renamed');
  });
});

describe('store writes small files from memory it reuses', () => {
  it('each file gets its own verified bytes, even when writes are slow and many are in flight', async () => {
    const dir = await tempDir('small-scratch');
    const src = path.join(dir, 'a');
    const dest = path.join(dir, 'b');
    const spoolDir = path.join(dir, 'spool');
    const spec: Record<string, { bytes: number; seed: number }> = {};
    // Sizes of one power-of-two class, so that the same lent buffers go round.
    for (let i = 0; i < 120; i++) spec[`d${i % 4}/small #${i} ü.bin`] = { bytes: 4097 + ((i * 37) % 4000), seed: i + 1 };
    await makeTree(src, spec);
    await fsp.mkdir(dest);
    await fetchLocalTree(src, spoolDir);
    const real = await LocalBackend.open(`file://${dest}`, dest, { write: true });
    // Every small write waits a turn first: the other writes in flight read their content meanwhile.
    const slow = withOverrides<Destination>(real, {
      writeSmallFile: async (p: RelPath, content: Uint8Array, options: WriteOptions) => {
        await new Promise((resolve) => setTimeout(resolve, 2));
        return real.writeSmallFile(p, content, options);
      },
    });
    const spool = await Spool.open(spoolDir, { create: false });
    try {
      const r = await storeFromSpool({ destination: slow, spool, cache: HashCache.memory(), concurrency: 8 });
      assert.equal(r.writtenFiles, 120);
    } finally {
      await spool.close();
    }
    const content = async (root: string) => new Map([...(await readTree(root))].map(([p, e]) => [p, e.kind === 'file' ? e.sha256 : e.kind]));
    assert.deepEqual(await content(dest), await content(src));
  });
});
