/**
 * The spool dashboard's JSON endpoints (`bitfog ui`): the numbers agree with
 * `bitfog status --json` for a spool built with the real CLI, lists are paged, the page
 * reloads the manifest when a command changes it, and with a million entries every answer
 * stays aggregated and small.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Manifest } from '../src/core/manifest.ts';
import type { RelPath } from '../src/core/paths.ts';
import type { Entry } from '../src/core/types.ts';
import { startSpoolDashboard, type SpoolDashboard } from '../src/server/dashboard/spool-server.ts';
import { bitfog, bitfogOk, startBitfog } from './helpers/cli.ts';
import { buildFixture, FIXTURE_MAX, statusJson, type Fixture } from './helpers/dashboard.ts';
import { tempDir } from './helpers/tmp.ts';

async function get(base: string, p: string): Promise<{ status: number; body: any; bytes: number; type: string }> {
  const r = await fetch(new URL(p, base));
  const text = await r.text();
  return { status: r.status, body: r.headers.get('content-type')?.includes('json') ? JSON.parse(text) : text, bytes: Buffer.byteLength(text), type: r.headers.get('content-type') ?? '' };
}

describe('spool dashboard API', () => {
  let fx: Fixture;
  let ui: SpoolDashboard;
  let expected: Awaited<ReturnType<typeof statusJson>>;

  before(async () => {
    fx = await buildFixture();
    expected = await statusJson(fx.spool);
    ui = await startSpoolDashboard({ spool: fx.spool });
  });
  after(async () => ui?.close());

  it('status agrees with bitfog status --json', async () => {
    const { status, body } = await get(ui.url, '/api/status');
    assert.equal(status, 200);
    assert.equal(body.trip, 3);
    assert.equal(body.capacityBytes, FIXTURE_MAX);
    assert.deepEqual(body.left, expected.left);
    assert.deepEqual(body.carried, expected.carried);
    assert.equal(body.tripsLeft, expected.tripsLeft);
    assert.ok(body.tripsLeft >= 2, 'several trips are planned');
    assert.equal(body.conflicts, expected.conflicts.length);
    assert.equal(body.conflicts, 1);
    assert.equal(body.skipped, expected.skipped.length);
    assert.ok(body.skipped >= 1);
    assert.deepEqual(body.tooLarge.examples, expected.tooLarge);
    assert.deepEqual(body.tooLarge.examples.map((t: { path: string }) => t.path), ['big/huge.bin']);
  });

  it('planned trips hold every file left exactly once, none larger than the spool', async () => {
    const trips = (await get(ui.url, '/api/trips')).body;
    assert.equal(trips.total, expected.tripsLeft);
    assert.equal(trips.capacityBytes, FIXTURE_MAX);
    const seen: string[] = [];
    let bytes = 0;
    for (const t of trips.items) {
      assert.ok(t.bytes <= FIXTURE_MAX, `trip ${t.trip} fits the spool`);
      const files = (await get(ui.url, `/api/trips?trip=${t.trip}&page=1`)).body;
      assert.equal(files.items.length, t.files);
      // Largest first, as carried.
      const sizes = files.items.filter((f: { duplicate?: boolean }) => !f.duplicate).map((f: { size: number }) => f.size);
      assert.deepEqual(sizes, [...sizes].sort((a, b) => b - a));
      seen.push(...files.items.map((f: { path: string }) => f.path));
      bytes += t.bytes;
    }
    assert.equal(new Set(seen).size, seen.length);
    // What is left = the planned trips + the files too large for any trip.
    assert.equal(seen.length + 1, expected.left.files);
    assert.equal(bytes + 70_000, expected.left.bytes);
    assert.ok(!seen.includes('big/huge.bin'));
    assert.equal((await get(ui.url, '/api/trips?trip=99')).status, 404);
  });

  it('left by folder adds up, drills into folders and keeps awkward names', async () => {
    const top = (await get(ui.url, '/api/left-by-folder?depth=1')).body;
    assert.deepEqual(top.total, { files: expected.left.files, bytes: expected.left.bytes });
    assert.equal(top.folders.reduce((n: number, f: { bytes: number }) => n + f.bytes, 0), expected.left.bytes);
    const big = top.folders.find((f: { folder: string }) => f.folder === 'big');
    assert.ok(big && big.bytes >= 70_000);
    const inside = (await get(ui.url, `/api/left-by-folder?prefix=${encodeURIComponent('big')}&depth=1`)).body;
    assert.equal(inside.prefix, 'big');
    assert.deepEqual(inside.total, { files: big.files, bytes: big.bytes });
    const deep = (await get(ui.url, '/api/left-by-folder?depth=3')).body;
    for (const f of deep.folders) assert.ok(f.folder.split('/').length <= 3);
    const carried = (await get(ui.url, '/api/carried-by-folder')).body;
    assert.equal(carried.total.bytes, expected.carried.bytes);
  });

  it('conflicts, skipped entries and history come with reasons and per-trip numbers', async () => {
    const conflicts = (await get(ui.url, '/api/conflicts')).body;
    assert.deepEqual(conflicts.items, expected.conflicts);
    assert.equal(conflicts.items[0].path, 'photos/c.jpg');
    const skipped = (await get(ui.url, '/api/skipped?page=1')).body;
    assert.deepEqual(skipped.items, expected.skipped);
    assert.ok(skipped.items.some((s: { path: string }) => s.path === 'docs/a pipe'));
    const history = (await get(ui.url, '/api/history')).body;
    assert.deepEqual(history.items.map((h: { trip: number }) => h.trip), [1, 2, 3]);
    const [t1, t2, t3] = history.items;
    assert.ok(t1.fetch.carriedBytes > 0 && t1.fetch.carriedBytes <= FIXTURE_MAX);
    assert.equal(t1.store.bytes, t1.fetch.carriedBytes);
    assert.equal(t2.store.conflicts, 1);
    assert.ok(t3.fetch && !t3.store);
    const sizes = (await get(ui.url, '/api/sizes')).body;
    assert.equal(sizes.left.reduce((n: number, b: { bytes: number }) => n + b.bytes, 0), expected.left.bytes);
  });

  it('serves the page and its assets from itself, and refuses foreign Host names', async () => {
    const page = await get(ui.url, '/');
    assert.match(page.type, /text\/html/);
    assert.ok(!/https?:\/\/(?!www\.w3\.org)/.test(page.body), 'no external URL in the page');
    for (const asset of ['/assets/common.js', '/assets/spool.js', '/assets/dashboard.css']) {
      const a = await get(ui.url, asset);
      assert.equal(a.status, 200, asset);
      assert.ok(!/https?:\/\/(?!www\.w3\.org)/.test(a.body), `no external URL in ${asset}`);
    }
    assert.equal((await get(ui.url, '/api/nope')).status, 404);
    const foreign = await new Promise<number>((resolve, reject) => {
      import('node:http').then(({ request }) => {
        const req = request(new URL('/api/status', ui.url), { headers: { Host: 'attacker.example' } }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.on('error', reject);
        req.end();
      }, reject);
    });
    assert.equal(foreign, 421);
  });

  it('notices a finished command: the manifest is re-read when it changes', async () => {
    const before = (await get(ui.url, '/api/status')).body;
    const stored = await bitfog(['store', fx.spool, fx.dst, '-q', '--no-cache']);
    assert.ok(stored.code === 0 || stored.code === 3, stored.stderr);
    const after = (await get(ui.url, '/api/status')).body;
    assert.notEqual(after.loadedAt, before.loadedAt);
    assert.equal(after.carried.bytes, 0);
    assert.deepEqual(after.left, (await statusJson(fx.spool)).left);
  });
});

describe('bitfog ui', () => {
  it('prints its URL, serves the spool, and stops on Ctrl-C', async () => {
    const dir = await tempDir('ui-cli');
    const src = path.join(dir, 'src');
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, 'a b.txt'), 'hello');
    await bitfogOk(['fetch', src, path.join(dir, 'spool'), '-q']);
    const { child, done } = startBitfog(['ui', path.join(dir, 'spool')]);
    let out = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => {
        out += d;
        const m = /http:\/\/127\.0\.0\.1:\d+\//.exec(out);
        if (m) resolve(m[0]);
      });
      done.then((r) => reject(new Error(`bitfog ui exited: ${r.stderr}`)));
    });
    const st = (await get(url, '/api/status')).body;
    assert.equal(st.carried.files, 1);
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 0);
  });

  it('fails clearly on a directory that is not a spool', async () => {
    const dir = await tempDir('ui-nospool');
    const { done } = startBitfog(['ui', dir]);
    const r = await done;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not a spool/);
  });
});

describe('spool dashboard with a million entries', () => {
  it('answers aggregated and small', { timeout: 900_000 }, async () => {
    const dir = await tempDir('dashboard-1m');
    const spoolDir = path.join(dir, 'spool');
    await fsp.mkdir(path.join(spoolDir, 'blobs', 'sha256'), { recursive: true });
    const m = await Manifest.create();
    const entries = new Map<string, Entry>();
    const N = 1_000_000;
    for (let i = 0; i < N; i++) {
      // 1000 top folders × 100 subfolders × 10 files; distinct contents of varied size.
      const p = `f${i % 1000}/s${Math.floor(i / 1000) % 100}/file ${i}.dat` as RelPath;
      entries.set(p, { path: p, kind: 'file', size: 1000 + (i % 5000), hash: `sha256:${i.toString(16).padStart(64, '0')}` });
    }
    m.putSnapshot('source', { url: '/src', takenAt: new Date().toISOString(), entries });
    m.setMeta('capacity', String(500 * 1024 ** 2));
    m.setMeta('trip', '1');
    m.setConflicts(Array.from({ length: 5000 }, (_, i) => ({ path: `f1/s1/conflict ${i}`, reason: 'changed at the destination' })));
    await m.save(path.join(spoolDir, 'manifest.db'));
    m.close();
    entries.clear();

    const ui = await startSpoolDashboard({ spool: spoolDir });
    try {
      const limit = 64 * 1024;
      for (const p of ['/api/status', '/api/left-by-folder?depth=1', '/api/left-by-folder?depth=2', '/api/left-by-folder?prefix=f7&depth=1',
        '/api/carried-by-folder', '/api/sizes', '/api/trips', '/api/trips?trip=1&page=3', '/api/conflicts?page=2', '/api/skipped', '/api/history']) {
        const r = await get(ui.url, p);
        assert.equal(r.status, 200, p);
        assert.ok(r.bytes < limit, `${p} answered ${r.bytes} bytes`);
      }
      const st = (await get(ui.url, '/api/status')).body;
      assert.equal(st.left.files, N);
      const top = (await get(ui.url, '/api/left-by-folder?depth=1')).body;
      assert.equal(top.folders.length, 50);
      assert.equal(top.rest.folders, 950);
      assert.equal(top.total.files, N);
      assert.equal(top.folders.reduce((n: number, f: { files: number }) => n + f.files, 0) + top.rest.files, N);
      const trip = (await get(ui.url, '/api/trips?trip=1&page=3')).body;
      assert.equal(trip.items.length, 100);
      assert.equal(trip.page, 3);
      const conflicts = (await get(ui.url, '/api/conflicts?page=2')).body;
      assert.equal(conflicts.total, 5000);
      assert.equal(conflicts.items.length, 100);
    } finally {
      await ui.close();
    }
  });
});
