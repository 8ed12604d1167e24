/**
 * The full spool cycle through one backend, used by the conformance suite: a local tree is
 * carried into the backend over several trips (with changes and removals between them),
 * then carried back out of it into a fresh local tree, and every tree is compared.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { fetchToSpool } from '../core/fetch.ts';
import { HashCache } from '../core/hashcache.ts';
import type { BackendRegistry } from '../core/registry.ts';
import { takeSnapshot } from '../core/snapshot.ts';
import { Spool } from '../core/spool.ts';
import { storeFromSpool } from '../core/store.ts';
import type { Source } from '../core/types.ts';

export interface CycleOptions {
  /** A scratch local directory for the trees and spools. */
  work: string;
  registry: BackendRegistry;
  /** URL of an empty root of the backend under test. */
  backendUrl: string;
  /** File names to use (one path segment each). */
  names: string[];
  /** Spool size per trip, to force several trips (default 512 KiB). */
  tripBytes?: number;
}

/** What a tree holds, comparable across backends: path → kind and content. */
export async function treeContent(backend: Source, options: { symlinks?: boolean } = {}): Promise<Map<string, string>> {
  const { snapshot } = await takeSnapshot(backend, { side: 'source', cache: HashCache.memory() });
  const out = new Map<string, string>();
  for (const e of snapshot.entries.values()) {
    if (e.kind === 'directory') continue; // not every backend keeps empty directories
    if (e.kind === 'symlink' && options.symlinks === false) continue;
    out.set(e.path, e.kind === 'file' ? `file ${e.size} ${e.hash}` : `symlink ${e.linkTarget}`);
  }
  return out;
}

async function runTrip(o: CycleOptions, sourceUrl: string, destUrl: string, spoolDir: string): Promise<number> {
  let trips = 0;
  for (;;) {
    trips++;
    const source = await o.registry.openSource(sourceUrl);
    let spool = await Spool.open(spoolDir, { create: true });
    let fetched;
    try {
      fetched = await fetchToSpool({ source, spool, cache: HashCache.memory(), maxBytes: o.tripBytes ?? 512 * 1024, reserveBytes: 0 });
    } finally {
      await spool.close();
      await source.close();
    }
    assert.ok(fetched.carriedFiles > 0 || fetched.deferredFiles === 0, 'every trip carries something');
    const dest = await o.registry.openDestination(destUrl);
    spool = await Spool.open(spoolDir, { create: false });
    try {
      const stored = await storeFromSpool({ destination: dest, spool, cache: HashCache.memory() });
      assert.deepEqual(stored.conflicts, [], 'no conflicts in a clean cycle');
      assert.deepEqual(stored.corrupt, []);
      if (stored.pendingFiles === 0 && fetched.deferredFiles === 0) return trips;
    } finally {
      await spool.close();
      await dest.close();
    }
    assert.ok(trips < 50, 'the cycle converges');
  }
}

export async function runCycleThrough(o: CycleOptions): Promise<void> {
  const a = path.join(o.work, 'site-a');
  const c = path.join(o.work, 'site-c');
  await fsp.mkdir(path.join(a, 'nested', 'deeper', 'deepest'), { recursive: true });
  for (const [i, name] of o.names.entries()) {
    await fsp.writeFile(path.join(a, i % 2 ? 'nested' : '.', name), `file ${i}: ${name}\n`.repeat(1 + i * 50));
  }
  await fsp.writeFile(path.join(a, 'nested', 'deeper', 'deepest', 'empty file'), '');
  const big = Buffer.alloc(450 * 1024, 7);
  big.write('big file', 0);
  await fsp.writeFile(path.join(a, 'big.bin'), big);
  await fsp.writeFile(path.join(a, 'nested', 'same content as big.bin'), big);
  await fsp.symlink('big.bin', path.join(a, 'link to big'));

  const backend = await o.registry.openDestination(o.backendUrl);
  const symlinks = backend.capabilities.symlinks;
  await backend.close();

  // A first store on an empty spool records the (empty) destination; then trips until done.
  const spool1 = path.join(o.work, 'spool-1');
  {
    const dest = await o.registry.openDestination(o.backendUrl);
    const spool = await Spool.open(spool1, { create: true });
    const r = await storeFromSpool({ destination: dest, spool, cache: HashCache.memory() });
    assert.equal(r.recordedOnly, true);
    await spool.close();
    await dest.close();
  }
  const trips = await runTrip(o, a, o.backendUrl, spool1);
  assert.ok(trips >= 2, `several trips at a small spool size (took ${trips})`);
  await expectSameTrees(o, a, o.backendUrl, symlinks);

  // Changes at the source: modified, removed, added, renamed.
  await fsp.writeFile(path.join(a, o.names[0]!), 'changed content\n');
  await fsp.rm(path.join(a, 'nested', o.names[1]!));
  await fsp.writeFile(path.join(a, 'nested', 'deeper', 'new file #2.txt'), 'new\n');
  await fsp.rename(path.join(a, 'big.bin'), path.join(a, 'renamed big.bin'));
  await fsp.rm(path.join(a, 'link to big'));
  await fsp.symlink('renamed big.bin', path.join(a, 'link to big'));
  await runTrip(o, a, o.backendUrl, spool1);
  await expectSameTrees(o, a, o.backendUrl, symlinks);

  // And back out: the backend as a source, into a fresh local tree.
  await runTrip(o, o.backendUrl, c, path.join(o.work, 'spool-2'));
  await expectSameTrees(o, o.backendUrl, c, symlinks);
}

async function expectSameTrees(o: CycleOptions, fromUrl: string, toUrl: string, symlinks: boolean): Promise<void> {
  const from = await o.registry.openSource(fromUrl);
  const to = await o.registry.openSource(toUrl);
  try {
    const want = await treeContent(from, { symlinks });
    const got = await treeContent(to, { symlinks });
    assert.deepEqual(Object.fromEntries([...got].sort()), Object.fromEntries([...want].sort()), `${toUrl} holds what ${fromUrl} holds`);
  } finally {
    await from.close();
    await to.close();
  }
}
