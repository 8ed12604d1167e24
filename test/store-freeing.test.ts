/**
 * When store frees the spool's blobs: a large file's blob goes as soon as every source path
 * that wants its content has landed and its rename is durable (while later files are still
 * being written); a blob some path still lacks stays for the next trip; a store killed after
 * such frees, before it saved its manifest, is finished by a rerun; a blob a delta recipe uses
 * as a chunk waits for the end.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LocalBackend } from '../src/backends/local/local.ts';
import { HashCache } from '../src/core/hashcache.ts';
import { parentPath, type RelPath } from '../src/core/paths.ts';
import { Spool } from '../src/core/spool.ts';
import { storeFromSpool } from '../src/core/store.ts';
import type { Destination } from '../src/core/types.ts';
import { FSYNC_EACH_MIN_BYTES } from '../src/core/fsutil.ts';
import { DeltaTables } from '../src/core/delta/tables.ts';
import { withOverrides } from './helpers/backends.ts';
import { fetchLocalTree } from './helpers/spool.ts';
import { tempDir } from './helpers/tmp.ts';
import { makeTree, readTree, sha256File, type TreeSpec } from './helpers/tree.ts';

const LARGE = FSYNC_EACH_MIN_BYTES;

/** `spec` made into a source tree and fetched into a spool; the destination directory exists, empty. */
async function fetchedTree(label: string, spec: TreeSpec): Promise<{ src: string; dest: string; spoolDir: string }> {
  const dir = await tempDir(label);
  const src = path.join(dir, 'a');
  const dest = path.join(dir, 'b');
  const spoolDir = path.join(dir, 'spool');
  await makeTree(src, spec);
  await fsp.mkdir(dest);
  await fetchLocalTree(src, spoolDir);
  return { src, dest, spoolDir };
}

function localDestination(dest: string): Promise<LocalBackend> {
  return LocalBackend.open(`file://${dest}`, dest, { write: true });
}

async function exists(file: string): Promise<boolean> {
  return fsp.access(file).then(() => true, () => false);
}

describe('store frees the spool', () => {
  it('a large blob goes once its file landed and the rename is durable, before the last file is written', async () => {
    const { src, dest, spoolDir } = await fetchedTree('free-early', {
      'deep/ü #1/first 100%?.bin': { bytes: LARGE + 3000, seed: 1 },
      'deep/second.bin': { bytes: LARGE + 2000, seed: 2 },
      'last one.bin': { bytes: LARGE + 1000, seed: 3 },
      'small.txt': 'small\n',
    });
    const large = ['deep/ü #1/first 100%?.bin', 'deep/second.bin', 'last one.bin'];
    const hashOf = new Map<string, string>();
    for (const p of large) hashOf.set(p, `sha256:${await sha256File(path.join(src, p))}`);

    const spool = await Spool.open(spoolDir, { create: false });
    const events: string[] = [];
    const realRemove = spool.removeBlob.bind(spool);
    spool.removeBlob = async (hash: string) => {
      events.push(`free ${hash}`);
      return realRemove(hash);
    };
    let copies = 0;
    let landedBeforeThird: string | undefined;
    let goneBeforeThird: boolean | undefined;
    const real = await localDestination(dest);
    const destination = withOverrides<Destination>(real, {
      rename: async (from: RelPath, to: RelPath) => {
        await real.rename(from, to);
        events.push(`rename ${to}`);
      },
      sync: async (paths: RelPath[]) => {
        await real.sync(paths);
        for (const p of paths) events.push(`sync ${p}`);
      },
      writeFromLocalFile: async (p, file, options) => {
        if (++copies === 3) {
          // One file has landed by now (one at a time); its blob is freed in the background.
          landedBeforeThird = events.find((e) => e.startsWith('rename '))?.slice('rename '.length);
          const blob = spool.blobPath(hashOf.get(landedBeforeThird ?? '') ?? '');
          for (let i = 0; i < 200 && (await exists(blob)); i++) await new Promise((r) => setTimeout(r, 25));
          goneBeforeThird = !(await exists(blob));
        }
        return real.writeFromLocalFile(p, file, options);
      },
    });
    try {
      const r = await storeFromSpool({ destination, spool, cache: HashCache.memory(), concurrency: 1 });
      assert.equal(r.writtenFiles, 4);
      assert.ok(landedBeforeThird !== undefined && large.includes(landedBeforeThird), `a large file landed before the third was written: ${events.join(' | ')}`);
      assert.equal(goneBeforeThird, true, 'its blob was freed while the store was still writing');
      assert.equal(spool.blobs().length, 0, 'everything that landed is freed');
      assert.equal(r.freedBytes, 3 * LARGE + 6000 + 6, 'freed bytes count the early frees once');
    } finally {
      await spool.close();
    }
    for (const p of large) {
      const renamed = events.indexOf(`rename ${p}`);
      const synced = events.findIndex((e, i) => i > renamed && e === `sync ${parentPath(p as RelPath)}`);
      const freed = events.indexOf(`free ${hashOf.get(p)}`);
      assert.ok(renamed >= 0 && synced > renamed && freed > synced, `${p}: rename, then its directory synced, then the blob freed: ${events.join(' | ')}`);
    }
    const landed = await readTree(dest);
    for (const p of large) assert.equal(landed.get(p)?.sha256, hashOf.get(p)!.slice('sha256:'.length));
  });

  it('a large content wanted at two paths stays on the spool while one of them is a conflict', async () => {
    const { dest, spoolDir } = await fetchedTree('free-twins', {
      'twin 1 #.bin': { bytes: LARGE + 10, seed: 7 },
      'sub/twin 2 ?.bin': { bytes: LARGE + 10, seed: 7 },
    });
    // Something the recorded destination state does not know sits where the second twin goes.
    await makeTree(dest, { 'sub/twin 2 ?.bin': 'a file of someone else\n' });
    const spool = await Spool.open(spoolDir, { create: false });
    const [blob] = spool.blobs();
    try {
      const r = await storeFromSpool({ destination: await localDestination(dest), spool, cache: HashCache.memory(), concurrency: 1 });
      assert.deepEqual(r.conflicts.map((c) => c.path), ['sub/twin 2 ?.bin']);
      assert.equal(r.writtenFiles, 1);
      assert.ok(spool.has(blob!.hash), 'the content stays for the path that still lacks it');
      assert.ok(await exists(spool.blobPath(blob!.hash)));
      assert.equal(r.freedBytes, 0);
    } finally {
      await spool.close();
    }
    assert.equal(await fsp.readFile(path.join(dest, 'sub/twin 2 ?.bin'), 'utf8'), 'a file of someone else\n');
  });

  it('a store killed after freeing blobs, before saving its manifest, is finished by a rerun', async () => {
    const { src, dest, spoolDir } = await fetchedTree('free-crash', {
      'large ü #1.bin': { bytes: LARGE + 5, seed: 11 },
      'deep/nested/large 2 %.bin': { bytes: LARGE + 7, seed: 12 },
      'small ?.txt': 'small\n',
    });
    // What a kill -9 after the frees leaves: the files landed, their blobs gone, and the
    // manifest as it was before the store.
    const manifestBefore = await fsp.readFile(path.join(spoolDir, 'manifest.db'));
    let spool = await Spool.open(spoolDir, { create: false });
    try {
      await storeFromSpool({ destination: await localDestination(dest), spool, cache: HashCache.memory() });
    } finally {
      await spool.close();
    }
    await fsp.writeFile(path.join(spoolDir, 'manifest.db'), manifestBefore);
    spool = await Spool.open(spoolDir, { create: false });
    try {
      assert.equal(spool.blobs().length, 0);
      const rerun = await storeFromSpool({ destination: await localDestination(dest), spool, cache: HashCache.memory() });
      assert.deepEqual(rerun.conflicts, []);
      assert.deepEqual(rerun.corrupt, []);
      assert.equal(rerun.writtenFiles, 0, 'nothing left to write');
      assert.equal(rerun.pendingFiles, 0, 'nothing left for a later trip');
    } finally {
      await spool.close();
    }
    const want = await readTree(src);
    const got = await readTree(dest);
    for (const [p, e] of want) if (e.kind === 'file') assert.equal(got.get(p)?.sha256, e.sha256, p);
  });

  it('a large blob that a delta recipe uses as a chunk waits for the end of the store', async () => {
    const { dest, spoolDir } = await fetchedTree('free-chunk', { 'big ü #.bin': { bytes: LARGE + 21, seed: 21 } });
    const spool = await Spool.open(spoolDir, { create: false });
    const [blob] = spool.blobs();
    // A recipe, for some content the source does not want, that takes this blob as a chunk.
    new DeltaTables(spool.manifest).putRecipe({ size: blob!.size, sha256: 'ab'.repeat(32), chunkListSha256: 'cd'.repeat(32), ops: [{ from: 'spool', sha256: blob!.hash.slice('sha256:'.length), length: blob!.size }] }, blob!.size);
    const events: string[] = [];
    const realRemove = spool.removeBlob.bind(spool);
    spool.removeBlob = async (hash: string) => {
      events.push(`free ${hash}`);
      return realRemove(hash);
    };
    const real = await localDestination(dest);
    const destination = withOverrides<Destination>(real, {
      list: (options) => {
        events.push('list');
        return real.list(options);
      },
    });
    try {
      const r = await storeFromSpool({ destination, spool, cache: HashCache.memory() });
      assert.equal(r.writtenFiles, 1);
      assert.deepEqual(events, ['list', 'list', `free ${blob!.hash}`], 'freed after the final listing, not as soon as its file landed');
      assert.ok(!spool.has(blob!.hash), 'freed at the end all the same: no content still needs the recipe');
    } finally {
      await spool.close();
    }
  });
});
