/**
 * Large files (FSYNC_EACH_MIN_BYTES and more) are hashed, and at store signed, on this
 * machine's CPU: fetch and store move LARGE_FILES_AT_ONCE of them at a time (as many as
 * there are cores), however many small files they move at once, and the result is intact.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LocalBackend } from '../src/backends/local/local.ts';
import { fetchToSpool } from '../src/core/fetch.ts';
import { FSYNC_EACH_MIN_BYTES, LARGE_FILES_AT_ONCE } from '../src/core/fsutil.ts';
import { HashCache } from '../src/core/hashcache.ts';
import type { RelPath } from '../src/core/paths.ts';
import { Spool } from '../src/core/spool.ts';
import { storeFromSpool } from '../src/core/store.ts';
import type { Destination, SignalOption, Source, WriteOptions } from '../src/core/types.ts';
import { withOverrides } from './helpers/backends.ts';
import { tempDir } from './helpers/tmp.ts';
import { makeTree, readTree } from './helpers/tree.ts';

/** Counts how many calls of `fn` run at once; each waits a little first, so that the others can start. */
function counted<A extends unknown[]>(fn: (...args: A) => Promise<void>) {
  const seen = { now: 0, most: 0, calls: 0 };
  const wrapped = async (...args: A) => {
    seen.now++;
    seen.calls++;
    seen.most = Math.max(seen.most, seen.now);
    try {
      await new Promise((resolve) => setTimeout(resolve, 40));
      await fn(...args);
    } finally {
      seen.now--;
    }
  };
  return { seen, wrapped };
}

describe('large files at once', () => {
  it('fetch and store move as many large files at a time as there are cores, next to the small ones', async () => {
    const dir = await tempDir('large-at-once');
    const src = path.join(dir, 'site a');
    const dest = path.join(dir, 'site b');
    const spoolDir = path.join(dir, 'spool');
    const spec: Record<string, { bytes: number; seed: number } | string> = {};
    const large = 5;
    for (let i = 0; i < large; i++) spec[`big/${i} #ü ?%.bin`] = { bytes: FSYNC_EACH_MIN_BYTES + 1000 * i + 1, seed: 40 + i };
    for (let i = 0; i < 12; i++) spec[`small/d${i % 3}/file ${i} ü.txt`] = { bytes: 3000 + i, seed: i + 1 };
    spec['empty'] = '';
    await makeTree(src, spec);
    await fsp.mkdir(dest);
    const expectedAtOnce = Math.min(LARGE_FILES_AT_ONCE, large);

    const realSource = await LocalBackend.open(`file://${src}`, src, { write: false });
    const copies = counted((p: RelPath, file: string, options?: SignalOption) => realSource.copyToLocalFile(p, file, options));
    const spool = await Spool.open(spoolDir, { create: true });
    try {
      const source = withOverrides<Source>(realSource, { copyToLocalFile: copies.wrapped });
      const r = await fetchToSpool({ source, spool, cache: HashCache.memory(), reserveBytes: 0 });
      assert.equal(r.carriedFiles, large + 12, "the empty file needs nothing carried");
    } finally {
      await spool.close();
      await realSource.close();
    }
    assert.equal(copies.seen.calls, large, 'every large file went through the source’s own copy');
    assert.equal(copies.seen.most, expectedAtOnce, `fetch: ${expectedAtOnce} large files at a time`);

    const realDest = await LocalBackend.open(`file://${dest}`, dest, { write: true });
    const writes = counted((p: RelPath, file: string, options: WriteOptions) => realDest.writeFromLocalFile(p, file, options));
    const again = await Spool.open(spoolDir, { create: false });
    try {
      const destination = withOverrides<Destination>(realDest, { writeFromLocalFile: writes.wrapped });
      const r = await storeFromSpool({ destination, spool: again, cache: HashCache.memory() });
      assert.equal(r.writtenFiles, large + 13);
      assert.deepEqual(r.corrupt, []);
    } finally {
      await again.close();
    }
    assert.equal(writes.seen.calls, large, 'every large file went through the destination’s own copy');
    assert.equal(writes.seen.most, expectedAtOnce, `store: ${expectedAtOnce} large files at a time`);

    const content = async (root: string) => new Map([...(await readTree(root))].map(([p, e]) => [p, e.kind === 'file' ? e.sha256 : e.kind]));
    assert.deepEqual(await content(dest), await content(src));
  });
});
