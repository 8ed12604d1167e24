/**
 * Delta transfer through the whole sneakernet cycle (local destination): a VM-image-like
 * workload travels as deltas, renamed and appended-to files cost nearly nothing, a base
 * file changed behind the plan's back is detected and its dependant left for a whole-file
 * transfer, and a store interrupted during assembly is completed by a rerun.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LocalBackend } from '../src/backends/local/index.ts';
import { encodeRecipe } from '../src/core/delta/recipe.ts';
import { signContent } from '../src/core/delta/signature.ts';
import { DeltaTables } from '../src/core/delta/tables.ts';
import { deltaStatus, recordDestinationSignatures } from '../src/core/delta/transfer.ts';
import { BitfogError, isBitfogError } from '../src/core/errors.ts';
import type { RelPath } from '../src/core/paths.ts';
import type { Destination, ReadOptions } from '../src/core/types.ts';
import type { FetchResult } from '../src/core/fetch.ts';
import { HashCache } from '../src/core/hashcache.ts';
import { Manifest, MANIFEST_FORMAT_VERSION } from '../src/core/manifest.ts';
import { takeSnapshot } from '../src/core/snapshot.ts';
import { Spool } from '../src/core/spool.ts';
import { storeFromSpool, type StoreResult } from '../src/core/store.ts';
import { encodeRecipeV1, withOpsSwapped, xorshiftBytes } from './delta-helpers.ts';
import { bitfogOk } from './helpers/cli.ts';
import { withOverrides } from './helpers/backends.ts';
import { fetchLocalTree } from './helpers/spool.ts';
import { tempDir } from './helpers/tmp.ts';

const KiB = 1024;
const MiB = 1 << 20;
const delta = { minBytes: MiB };

async function sites(label: string) {
  const dir = await tempDir(label);
  const a = path.join(dir, 'site a');
  const b = path.join(dir, 'site b');
  await fsp.mkdir(a, { recursive: true });
  await fsp.mkdir(b, { recursive: true });
  return { dir, a, b, spool: path.join(dir, 'spool'), cacheDir: path.join(dir, 'cache') };
}

type Sites = Awaited<ReturnType<typeof sites>>;

/** Sites whose first trip (fetch and store through the CLI, signing from 1 MiB) carried `files`. */
async function sitesAfterFirstTrip(label: string, files: Record<string, Buffer>) {
  const s = await sites(label);
  const env = { BITFOG_CACHE_DIR: s.cacheDir, BITFOG_DELTA_MIN_SIZE: String(MiB) };
  for (const [name, data] of Object.entries(files)) await fsp.writeFile(path.join(s.a, name), data);
  await bitfogOk(['fetch', s.a, s.spool], { env });
  await bitfogOk(['store', s.spool, s.b], { env });
  return { ...s, env };
}

async function fetch(s: Sites): Promise<FetchResult> {
  return fetchLocalTree(s.a, s.spool, { delta, cache: await HashCache.open('site-a', s.cacheDir) });
}

/** A local destination that, like a plain HTTP server without Range support, cannot read ranges. */
function withoutRangedReads(d: Destination): Destination {
  return withOverrides(d, {
    capabilities: { ...d.capabilities, rangedReads: false },
    read: (p: RelPath, o: ReadOptions = {}) => {
      if (o.start !== undefined || o.end !== undefined) throw new BitfogError('EOPNOTSUPP', 'no ranged reads here');
      return d.read(p, o);
    },
  });
}

/** A local destination without positional reads and writes: deltas are assembled as a stream through `write`. */
function streamingOnly(d: Destination): Destination {
  return withOverrides(d, { openFile: undefined, createFile: undefined });
}

async function store(s: Sites, signal?: AbortSignal, options: { ranged?: boolean; positional?: boolean } = {}): Promise<StoreResult> {
  const local = await LocalBackend.open('file:///site-b', s.b, { write: true });
  let destination: Destination = options.ranged === false ? withoutRangedReads(streamingOnly(local)) : local;
  if (options.positional === false) destination = streamingOnly(destination);
  const spool = await Spool.open(s.spool, { create: true });
  try {
    return await storeFromSpool({ destination, spool, cache: await HashCache.open('site-b', s.cacheDir), delta, ...(signal ? { signal } : {}) });
  } finally {
    await spool.close();
    await destination.close();
  }
}

/** path → sha256 of every file of a tree (bitfog temporary files included: there must be none). */
async function files(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, rel: string) => {
    for (const e of await fsp.readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(p, r);
      else out.set(r, createHash('sha256').update(await fsp.readFile(p)).digest('hex'));
    }
  };
  await walk(root, '');
  return out;
}

async function assertSameTrees(a: string, b: string): Promise<void> {
  assert.deepEqual([...(await files(b))].sort(), [...(await files(a))].sort());
}

async function spoolBlobBytes(spoolDir: string): Promise<number> {
  const { manifest, blobs } = await Spool.inspect(spoolDir);
  manifest.close();
  return blobs.reduce((n, b) => n + b.size, 0);
}

/** Overwrites `count` scattered 64 KiB regions and inserts `insert` bytes in the middle. */
function edited(data: Buffer, count: number, insert: number, seed: number): Buffer {
  const out = Buffer.from(data);
  for (let i = 0; i < count; i++) xorshiftBytes(seed + i, 64 * KiB).copy(out, Math.floor(((i + 0.3) * (data.length - 64 * KiB)) / count));
  const mid = Math.floor(data.length / 2) + 777;
  return Buffer.concat([out.subarray(0, mid), xorshiftBytes(seed + 1000, insert), out.subarray(mid)]);
}

describe('delta transfer through the cycle', () => {
  it('carries a changed, a renamed-and-appended and a copied image as small deltas, and rebuilds them exactly', async () => {
    const s = await sites('delta-cycle');
    const disk = xorshiftBytes(1, 8 * MiB);
    const other = xorshiftBytes(2, 6 * MiB);
    await fsp.mkdir(path.join(s.a, 'vm images #1'), { recursive: true });
    await fsp.writeFile(path.join(s.a, 'vm images #1', 'disk ü 1.img'), disk);
    await fsp.writeFile(path.join(s.a, 'data?.bin'), other);
    await fsp.writeFile(path.join(s.a, 'small.txt'), 'not a delta candidate\n');

    // Trip 1: everything travels whole; the destination records signatures of the large files.
    const f1 = await fetch(s);
    assert.equal(f1.delta.files, 0);
    await store(s);
    await assertSameTrees(s.a, s.b);
    let { manifest } = await Spool.inspect(s.spool);
    assert.deepEqual([...new DeltaTables(manifest).signatures().keys()].sort(), ['data?.bin', 'vm images #1/disk ü 1.img']);
    manifest.close();

    // Trip 2: scattered edits plus an insertion; a rename with an append; a copy.
    const disk2 = edited(disk, 10, 100 * KiB, 50);
    await fsp.writeFile(path.join(s.a, 'vm images #1', 'disk ü 1.img'), disk2);
    await fsp.mkdir(path.join(s.a, 'moved', 'deeper'), { recursive: true });
    await fsp.rename(path.join(s.a, 'data?.bin'), path.join(s.a, 'moved', 'deeper', 'data % renamed.bin'));
    await fsp.appendFile(path.join(s.a, 'moved', 'deeper', 'data % renamed.bin'), xorshiftBytes(3, 200 * KiB));
    await fsp.writeFile(path.join(s.a, 'copy of disk.img'), Buffer.concat([disk, Buffer.from('tail')]));

    const f2 = await fetch(s);
    assert.equal(f2.delta.files, 3);
    const changed = 10 * 64 * KiB + 100 * KiB + 200 * KiB + 4;
    const onSpool = await spoolBlobBytes(s.spool);
    // About what changed, plus a few 32 KiB-average chunks per edit — far from the 22 MiB of the files.
    assert.ok(onSpool < changed + 40 * 128 * KiB, `spool holds ${onSpool} bytes for ${changed} changed`);
    ({ manifest } = await Spool.inspect(s.spool));
    const status = deltaStatus(manifest);
    manifest.close();
    assert.equal(status.files, 3);
    assert.ok(status.savedBytes > 18 * MiB, `saved ${status.savedBytes}`);
    assert.ok(status.signatureBytes < 14 * MiB * 0.0006);

    const st2 = await store(s);
    assert.equal(st2.delta.files, 3);
    assert.deepEqual(st2.delta.refused, []);
    assert.deepEqual(st2.conflicts, []);
    await assertSameTrees(s.a, s.b);
    assert.equal(await spoolBlobBytes(s.spool), 0, 'chunks are freed once their files landed');
    ({ manifest } = await Spool.inspect(s.spool));
    // The assembled files' signatures, known from the assembly without re-reading, are exact.
    const sigs = new DeltaTables(manifest).signatures();
    for (const p of ['vm images #1/disk ü 1.img', 'moved/deeper/data % renamed.bin', 'copy of disk.img']) {
      const recorded = sigs.get(p)!;
      const fresh = await signContent(createReadStream(path.join(s.b, p)), recorded.size, { params: recorded.signature.params });
      assert.deepEqual(recorded.signature, fresh.signature, p);
      assert.equal(recorded.hash, fresh.hash);
    }
    assert.ok(deltaStatus(manifest).storedSavedBytes > 18 * MiB);
    assert.equal(deltaStatus(manifest).files, 0);
    manifest.close();
  });

  it('assembles on a destination without ranged reads by reading base files from the start', async () => {
    const s = await sites('delta-noranges');
    const img = xorshiftBytes(80, 6 * MiB);
    await fsp.writeFile(path.join(s.a, 'disk.raw'), img);
    await fetch(s);
    await store(s, undefined, { ranged: false });
    await fsp.writeFile(path.join(s.a, 'disk.raw'), edited(img, 6, 30 * KiB, 90));
    const f = await fetch(s);
    assert.equal(f.delta.files, 1);
    const st = await store(s, undefined, { ranged: false });
    assert.equal(st.delta.files, 1);
    await assertSameTrees(s.a, s.b);
  });

  it('detects a base file changed behind the plan\'s back, leaves its dependant alone, and carries it whole next trip', async () => {
    const s = await sites('delta-base-changed');
    const base = xorshiftBytes(10, 4 * MiB);
    await fsp.writeFile(path.join(s.a, 'base.img'), base);
    await fetch(s);
    await store(s);

    // A new file made from the base at the source (a clone with a few edits)…
    const clone = edited(base, 3, 10 * KiB, 20);
    await fsp.writeFile(path.join(s.a, 'clone.img'), clone);
    const f = await fetch(s);
    assert.equal(f.delta.files, 1);
    // …while someone changes the base at the destination before the store.
    const tampered = Buffer.from(base);
    tampered.fill(0x55, MiB, MiB + 100); // a range the clone's recipe reads
    await fsp.writeFile(path.join(s.b, 'base.img'), tampered);

    const st = await store(s);
    assert.equal(st.delta.files, 0);
    assert.equal(st.delta.refused.length, 1);
    assert.equal(st.delta.refused[0]!.path, 'clone.img');
    assert.equal(st.delta.refused[0]!.base, 'base.img');
    assert.deepEqual(st.conflicts.map((c) => c.path), ['base.img']);
    // Never assembled wrong: the dependant is absent, no temporary file is left, the changed base is untouched.
    const b = await files(s.b);
    assert.deepEqual([...b.keys()].sort(), ['base.img']);
    assert.ok((await fsp.readFile(path.join(s.b, 'base.img'))).equals(tampered));

    // Next trip: the clone travels whole (one blob, no recipe) and lands.
    await fetch(s);
    const { manifest, blobs } = await Spool.inspect(s.spool);
    const cloneHash = `sha256:${createHash('sha256').update(clone).digest('hex')}`;
    assert.ok(blobs.some((x) => x.hash === cloneHash));
    assert.equal(new DeltaTables(manifest).hasRecipe(cloneHash), false);
    manifest.close();
    await store(s);
    assert.ok((await fsp.readFile(path.join(s.b, 'clone.img'))).equals(clone));
  });

  for (const positional of [true, false]) describe(`damaged and older recipes on the spool (${positional ? 'positional assembly' : 'assembly as a stream'})`, () => {
    /** Trip 1 stores an image; trip 2 carries an edited copy as a delta. `tamper` then rewrites its recipe in the manifest. */
    async function carriedDelta(label: string, tamper: (tables: DeltaTables, hash: string, manifest: Manifest) => void) {
      const s = await sites(label);
      const img = xorshiftBytes(110, 4 * MiB);
      await fsp.writeFile(path.join(s.a, 'disk #1.img'), img);
      await fetch(s);
      await store(s, undefined, { positional });
      const next = edited(img, 4, 20 * KiB, 120);
      await fsp.writeFile(path.join(s.a, 'disk #1.img'), next);
      assert.equal((await fetch(s)).delta.files, 1);
      const hash = `sha256:${createHash('sha256').update(next).digest('hex')}`;
      const file = path.join(s.spool, 'manifest.db');
      const manifest = await Manifest.load(file);
      tamper(new DeltaTables(manifest), hash, manifest);
      await manifest.save(file);
      manifest.close();
      return { s, img, next, hash };
    }

    /** The store refuses the delta: the old file stays, nothing else appears, and the next trip carries the file whole. */
    async function assertRefusedThenCarriedWhole(c: Awaited<ReturnType<typeof carriedDelta>>, reason: RegExp) {
      const st = await store(c.s, undefined, { positional });
      assert.equal(st.delta.files, 0);
      assert.equal(st.delta.refused.length, 1);
      assert.match(st.delta.refused[0]!.reason, reason);
      assert.deepEqual([...(await files(c.s.b)).keys()], ['disk #1.img']);
      assert.ok((await fsp.readFile(path.join(c.s.b, 'disk #1.img'))).equals(c.img));
      assert.equal((await fetch(c.s)).delta.files, 0);
      await store(c.s, undefined, { positional });
      await assertSameTrees(c.s.a, c.s.b);
    }

    const swapFirstRuns = (tables: DeltaTables, hash: string) => {
      const recipe = tables.recipe(hash)!;
      const runs = recipe.ops.flatMap((op, i) => (op.from === 'dest' ? [i] : []));
      assert.ok(runs.length >= 2);
      return withOpsSwapped(recipe, runs[0]!, runs[1]!);
    };

    it('stores a recipe of the previous format, hashing the whole file', async () => {
      const c = await carriedDelta('delta-recipe-v1', (tables, hash, manifest) => {
        manifest.db.run('UPDATE recipes SET recipe = ? WHERE hash = ?', [encodeRecipeV1(tables.recipe(hash)!), hash]);
        assert.equal(tables.recipe(hash)!.chunkListSha256, undefined);
      });
      const st = await store(c.s, undefined, { positional });
      assert.equal(st.delta.files, 1);
      await assertSameTrees(c.s.a, c.s.b);
    });

    it('refuses a recipe whose runs are out of order, though each run holds what it says', async () => {
      const c = await carriedDelta('delta-recipe-swapped', (tables, hash) => tables.putRecipe(swapFirstRuns(tables, hash), 0));
      await assertRefusedThenCarriedWhole(c, /its chunks do not make up sha256:/);
    });

    it('refuses such a recipe of the previous format by the whole-file hash', async () => {
      const c = await carriedDelta('delta-recipe-v1-swapped', (tables, hash, manifest) => {
        manifest.db.run('UPDATE recipes SET recipe = ? WHERE hash = ?', [encodeRecipeV1(swapFirstRuns(tables, hash)), hash]);
      });
      await assertRefusedThenCarriedWhole(c, positional ? /does not match its source \(sha256:/ : /content hashed to sha256:/);
    });

    it('refuses a recipe that rebuilds other content than its row says', async () => {
      const c = await carriedDelta('delta-recipe-other', (tables, hash, manifest) => {
        const recipe = tables.recipe(hash)!;
        manifest.db.run('UPDATE recipes SET recipe = ? WHERE hash = ?', [encodeRecipe({ ...recipe, sha256: 'ab'.repeat(32) }), hash]);
      });
      await assertRefusedThenCarriedWhole(c, /rebuilds sha256:abab.*the manifest is damaged/);
    });
  });

  it('finishes a store interrupted during assembly when rerun', async () => {
    const s = await sites('delta-crash');
    const img = xorshiftBytes(30, 12 * MiB);
    await fsp.writeFile(path.join(s.a, 'image.qcow2'), img);
    await fetch(s);
    await store(s);
    await fsp.writeFile(path.join(s.a, 'image.qcow2'), edited(img, 5, 0, 40));
    await fetch(s);

    const ac = new AbortController();
    const destination = await LocalBackend.open('file:///site-b', s.b, { write: true });
    let spool = await Spool.open(s.spool, { create: false });
    await assert.rejects(
      storeFromSpool({
        destination, spool, cache: HashCache.memory(), delta, signal: ac.signal,
        onProgress: (e) => {
          if (e.type === 'transfer' && e.phase === 'store' && e.bytes > 2 * MiB) ac.abort();
        },
      }),
      (err) => isBitfogError(err, 'EABORTED') || (err as Error).name === 'AbortError',
    );
    await spool.close();
    await destination.close();
    // The old image is intact (the new one was being written under a temporary name).
    const mid = await fsp.readFile(path.join(s.b, 'image.qcow2'));
    assert.ok(mid.equals(img));

    const st = await store(s);
    assert.equal(st.delta.files, 1);
    await assertSameTrees(s.a, s.b);
    spool = await Spool.open(s.spool, { create: false });
    await spool.close();
  });

  it('signs unchanged files once: a second snapshot reads nothing', async () => {
    const s = await sites('delta-sigcache');
    await fsp.writeFile(path.join(s.b, 'big.img'), xorshiftBytes(40, 3 * MiB));
    await fsp.writeFile(path.join(s.b, 'small.img'), xorshiftBytes(41, 100 * KiB));
    const dest = await LocalBackend.open('file:///site-b', s.b, { write: false });
    const cache = await HashCache.open('site-b', s.cacheDir);
    const { snapshot } = await takeSnapshot(dest, { side: 'destination', cache });
    // As if the files had last changed a minute ago (their ctime cannot be backdated).
    for (const e of snapshot.entries.values()) e.changedAtMs = Date.now() - 60_000;
    const manifest = await Manifest.create();
    const first = await recordDestinationSignatures({ destination: dest, snapshot, manifest, cache, config: delta });
    assert.deepEqual([first.signed, first.read], [1, 1]);
    const again = await recordDestinationSignatures({ destination: dest, snapshot, manifest, cache: await HashCache.open('site-b', s.cacheDir), config: delta });
    assert.deepEqual([again.signed, again.read], [1, 0]);
    const off = await recordDestinationSignatures({ destination: dest, snapshot, manifest, cache, config: { ...delta, enabled: false } });
    assert.equal(off.signed, 0);
    manifest.close();
    await dest.close();
  });

  it('shows through the CLI what deltas carry and save', async () => {
    const s = await sites('delta-cli');
    const env = { BITFOG_CACHE_DIR: s.cacheDir, BITFOG_DELTA_MIN_SIZE: String(MiB) };
    const img = xorshiftBytes(60, 6 * MiB);
    await fsp.writeFile(path.join(s.a, 'disk.img'), img);
    await bitfogOk(['fetch', s.a, s.spool], { env });
    await bitfogOk(['store', s.spool, s.b], { env });
    await fsp.writeFile(path.join(s.a, 'disk.img'), edited(img, 4, 0, 70));
    const fetched = await bitfogOk(['fetch', s.a, s.spool], { env });
    assert.match(fetched.stdout, /as deltas: +1 of them \(6\.00 MiB\) took/);
    const status = await bitfogOk(['status', s.spool], { env });
    assert.match(status.stdout, /deltas: +1 files \(6\.00 MiB\) carried as [\d.]+ [KM]iB, saving [\d.]+ MiB; saved 0 B in stored trips; 1 destination signatures/);
    const json = JSON.parse((await bitfogOk(['status', s.spool, '--json'], { env })).stdout);
    assert.equal(json.formatVersion, MANIFEST_FORMAT_VERSION);
    assert.ok(json.delta.savedBytes > 4 * MiB);
    const stored = await bitfogOk(['store', s.spool, s.b], { env });
    assert.match(stored.stdout, /from deltas: +1 files, 6\.00 MiB assembled from [\d.]+ [KM]iB carried/);
    await assertSameTrees(s.a, s.b);
    const after = await bitfogOk(['status', s.spool], { env });
    assert.match(after.stdout, /saved [\d.]+ MiB in stored trips/);
  });

  it('carries changed files as deltas on a spool smaller than the files, and fills what the deltas leave', async () => {
    const one = xorshiftBytes(61, 6 * MiB);
    const two = xorshiftBytes(62, 6 * MiB);
    const s = await sitesAfterFirstTrip('delta-small-spool', { 'disk #1.img': one, 'disk ü2.img': two });
    const { env } = s;
    await fsp.writeFile(path.join(s.a, 'disk #1.img'), edited(one, 4, 0, 71));
    await fsp.writeFile(path.join(s.a, 'disk ü2.img'), edited(two, 4, 0, 72));
    await fsp.writeFile(path.join(s.a, 'new small.txt'), 'small and new');

    // Neither changed file fits whole in 2 MiB: as deltas, both do, and so does the small new file.
    const fetched = await bitfogOk(['fetch', s.a, s.spool, '--max', '2MiB', '--reserve', '0'], { env });
    assert.match(fetched.stdout, /as deltas: +2 of them \(12\.0 MiB\) took/, fetched.stdout);
    assert.match(fetched.stdout, /carried now: +3 files/, fetched.stdout);
    assert.match(fetched.stdout, /left for later: +0 files/, fetched.stdout);
    const status = JSON.parse((await bitfogOk(['status', s.spool, '--json'], { env })).stdout);
    assert.ok(status.carried.bytes <= 2 * MiB, `spool holds ${status.carried.bytes} bytes`);
    await bitfogOk(['store', s.spool, s.b], { env });
    await assertSameTrees(s.a, s.b);

    // 7 MiB holds one of them whole, not both: the first goes by its size, the second as what
    // its delta takes in the room left.
    await fsp.writeFile(path.join(s.a, 'disk #1.img'), edited(edited(one, 4, 0, 71), 4, 0, 73));
    await fsp.writeFile(path.join(s.a, 'disk ü2.img'), edited(edited(two, 4, 0, 72), 4, 0, 74));
    const again = await bitfogOk(['fetch', s.a, s.spool, '--max', '7MiB', '--reserve', '0'], { env });
    assert.match(again.stdout, /carried now: +2 files/, again.stdout);
    assert.match(again.stdout, /left for later: +0 files/, again.stdout);
    await bitfogOk(['store', s.spool, s.b], { env });
    await assertSameTrees(s.a, s.b);
  });

  it('leaves a changed file for later when even its delta does not fit, taking its chunks off the spool again', async () => {
    const s = await sitesAfterFirstTrip('delta-too-large', { 'disk.img': xorshiftBytes(63, 6 * MiB) });
    const { env } = s;
    await fsp.writeFile(path.join(s.a, 'disk.img'), xorshiftBytes(64, 6 * MiB)); // all new content
    // Unrelated to anything at B (more than twice disk.img's size): it can only go whole.
    await fsp.writeFile(path.join(s.a, 'new #13.bin'), xorshiftBytes(67, 13 * MiB));
    const fetched = await bitfogOk(['fetch', s.a, s.spool, '--max', '2MiB', '--reserve', '0'], { env });
    assert.match(fetched.stdout, /carried now: +0 files/, fetched.stdout);
    assert.match(fetched.stdout, /left for later: +2 files/, fetched.stdout);
    const status = JSON.parse((await bitfogOk(['status', s.spool, '--json'], { env })).stdout);
    assert.equal(status.carried.bytes, 0, 'the chunks written before it did not fit are gone again');
    // Both exceed the spool, but the changed one may still go as a delta on a later trip.
    assert.deepEqual(
      status.tooLarge.map((t: { path: string; mayGoAsDelta: boolean }) => `${t.path} ${t.mayGoAsDelta}`).sort(),
      ['disk.img true', 'new #13.bin false'],
    );
    const human = await bitfogOk(['status', s.spool], { env });
    assert.match(human.stdout, /too large: +2 files exceed the spool size.*\n +1 of them may still go as deltas/, human.stdout);
    await bitfogOk(['store', s.spool, s.b], { env });
    await bitfogOk(['fetch', s.a, s.spool, '--max', '40MiB', '--reserve', '0'], { env });
    await bitfogOk(['store', s.spool, s.b], { env });
    await assertSameTrees(s.a, s.b);
  });

  it('a delta that did not fit leaves no trace the next delta of the same trip could mistake for carried chunks', async () => {
    const y = xorshiftBytes(66, 6 * MiB);
    const s = await sitesAfterFirstTrip('delta-abandoned', { 'x.img': xorshiftBytes(65, 7 * MiB), 'y.img': y });
    const { env } = s;
    // x becomes all new: its delta cannot fit 2 MiB, and is tried first (larger). y gets
    // 512 KiB of x's new bytes: chunks x's attempt had counted as carried.
    const newX = xorshiftBytes(67, 7 * MiB);
    const newY = Buffer.from(y);
    newX.copy(newY, 3 * MiB, MiB, MiB + 512 * KiB);
    await fsp.writeFile(path.join(s.a, 'x.img'), newX);
    await fsp.writeFile(path.join(s.a, 'y.img'), newY);
    const fetched = await bitfogOk(['fetch', s.a, s.spool, '--max', '2MiB', '--reserve', '0'], { env });
    assert.match(fetched.stdout, /as deltas: +1 of them \(6\.00 MiB\)/, fetched.stdout);
    assert.match(fetched.stdout, /left for later: +1 files/, fetched.stdout);
    const stored = await bitfogOk(['store', s.spool, s.b], { env });
    assert.match(stored.stdout, /from deltas: +1 files/, stored.stdout);
    assert.ok((await fsp.readFile(path.join(s.b, 'y.img'))).equals(newY), 'y rebuilt from its delta');
    await bitfogOk(['fetch', s.a, s.spool], { env });
    await bitfogOk(['store', s.spool, s.b], { env });
    await assertSameTrees(s.a, s.b);
  });

  it('reads a format 1 spool (before delta transfer) and upgrades it; refuses a newer format', async () => {
    const dir = await tempDir('delta-format');
    const file = path.join(dir, 'manifest.db');
    const old = await Manifest.create();
    old.db.exec('DROP TABLE signatures; DROP TABLE recipes; DROP TABLE delta_refused');
    old.setMeta('format_version', '1');
    await old.save(file);
    old.close();
    const m = await Manifest.load(file);
    assert.equal(m.getMeta('format_version'), String(MANIFEST_FORMAT_VERSION));
    assert.equal(deltaStatus(m).files, 0);
    m.setMeta('format_version', String(MANIFEST_FORMAT_VERSION + 1));
    await m.save(file);
    m.close();
    await assert.rejects(
      Manifest.load(file),
      (err) => isBitfogError(err, 'EBADSPOOL') && new RegExp(`manifest format ${MANIFEST_FORMAT_VERSION + 1}; this bitfog reads format ${MANIFEST_FORMAT_VERSION} and older`).test(err.message),
    );
  });
});
