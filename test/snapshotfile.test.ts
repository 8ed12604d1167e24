/**
 * Snapshot files (`builddb`) and the hash cache: a rescan that finds nothing changed may
 * skip work, but what it writes must be the database a full build would write.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { HashCache, RACY_WINDOW_MS } from '../src/core/hashcache.ts';
import { Manifest, type Snapshot } from '../src/core/manifest.ts';
import type { RelPath } from '../src/core/paths.ts';
import { sqlite } from '../src/core/sqlite.ts';
import { writeSnapshotFile } from '../src/core/snapshotfile.ts';
import type { Entry } from '../src/core/types.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
import { takeSnapshot } from '../src/core/snapshot.ts';
import { withOverrides } from './helpers/backends.ts';
import { bitfogOk } from './helpers/cli.ts';
import { makeTree } from './helpers/tree.ts';
import { tempDir } from './helpers/tmp.ts';

const H = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;

function snapshot(takenAt: string, extra: Entry[] = []): Snapshot {
  const entries: Entry[] = [
    { path: 'näme with\nnewline' as RelPath, kind: 'file', size: 3, mode: 0o640, mtimeMs: 1577934245678.5, hash: H(1) },
    { path: 'hash#/100%/what?' as RelPath, kind: 'file', size: 0, mode: 0o600, mtimeMs: 1577934245000.123, hash: H(2) },
    { path: 'link' as RelPath, kind: 'symlink', size: 4, linkTarget: '../x', mtimeMs: 1 },
    { path: 'dir' as RelPath, kind: 'directory', size: 0, mode: 0o755 },
    ...extra,
  ];
  return { url: '/srv/site a', takenAt, entries: new Map(entries.map((e) => [e.path, e])) };
}

async function contents(file: string) {
  const m = await Manifest.load(file);
  try {
    const s = m.getSnapshot('snapshot')!;
    const integrity = m.db.exec('PRAGMA integrity_check')[0]!.values[0]![0];
    return { takenAt: s.takenAt, url: s.url, entries: [...s.entries.values()].sort((a, b) => (a.path < b.path ? -1 : 1)), skipped: m.skipped('snapshot'), createdAt: m.getMeta('created_at'), roles: m.snapshotRoles(), integrity };
  } finally {
    m.close();
  }
}

describe('snapshot files', () => {
  it('rewritten unchanged hold the same rows with the new time of taking', async () => {
    const dir = await tempDir('snapfile');
    const db = path.join(dir, 'snap shot.db');
    const cacheDir = path.join(dir, 'cache');
    const skipped = [{ path: 'fifo', reason: 'not a regular file, symlink or directory' }];
    await writeSnapshotFile(db, snapshot('2026-01-01T00:00:00.000Z'), skipped, { cacheDir });
    const first = await contents(db);
    assert.equal((await fsp.readdir(path.join(cacheDir, 'snapshot-files'))).length, 1, 'what was written is remembered');

    await new Promise((r) => setTimeout(r, 5));
    await writeSnapshotFile(db, snapshot('2026-01-02T03:04:05.678Z'), skipped, { cacheDir });
    const second = await contents(db);
    assert.equal(second.integrity, 'ok');
    assert.equal(second.takenAt, '2026-01-02T03:04:05.678Z');
    assert.notEqual(second.createdAt, first.createdAt);
    assert.deepEqual({ ...second, takenAt: '', createdAt: '' }, { ...first, takenAt: '', createdAt: '' });
    // And again: the rewritten file is remembered too, so it is reused again (a fresh
    // build would start the header's change counter over).
    const counter = async () => (await fsp.readFile(db)).readUInt32BE(24);
    const was = await counter();
    await writeSnapshotFile(db, snapshot('2026-01-02T03:04:05.678Z'), skipped, { cacheDir });
    assert.equal(await counter(), was + 1);
    assert.equal((await contents(db)).integrity, 'ok');
    // Same rows as a file built from scratch.
    const fresh = path.join(dir, 'fresh.db');
    await writeSnapshotFile(fresh, snapshot('2026-01-02T03:04:05.678Z'), skipped);
    assert.deepEqual({ ...(await contents(fresh)), createdAt: '' }, { ...second, createdAt: '' });
    // sqlite3 tools see a valid database too (its header's change counter moved on).
    const SQL = await sqlite();
    const raw = new SQL.Database(await fsp.readFile(db));
    assert.equal(raw.exec('PRAGMA quick_check')[0]!.values[0]![0], 'ok');
    raw.close();
  });

  it('are built in full when the tree or the file changed', async () => {
    const dir = await tempDir('snapfile-changed');
    const db = path.join(dir, 'snap.db');
    const cacheDir = path.join(dir, 'cache');
    await writeSnapshotFile(db, snapshot('2026-01-01T00:00:00.000Z'), [], { cacheDir });
    const added: Entry = { path: 'new ü' as RelPath, kind: 'file', size: 5, mode: 0o644, mtimeMs: 2, hash: H(3) };
    await writeSnapshotFile(db, snapshot('2026-01-01T00:00:01.000Z', [added]), [], { cacheDir });
    assert.deepEqual((await contents(db)).entries.map((e) => e.path).sort(), ['dir', 'hash#/100%/what?', 'link', 'new ü', 'näme with\nnewline']);

    // Someone edits the file: its bytes no longer match what was written, so it is not reused.
    const m = await Manifest.load(db);
    m.db.run(`UPDATE entries SET hash = ? WHERE path = 'new ü'`, [H(9)]);
    await m.save(db);
    m.close();
    await writeSnapshotFile(db, snapshot('2026-01-01T00:00:02.000Z', [added]), [], { cacheDir });
    const after = await contents(db);
    assert.equal(after.entries.find((e) => e.path === 'new ü')!.hash, H(3), 'the edit is replaced by the snapshot');
    assert.equal(after.takenAt, '2026-01-01T00:00:02.000Z');
  });
});

describe('builddb of an unchanged tree', () => {
  const settle = () => new Promise((r) => setTimeout(r, RACY_WINDOW_MS + 200));

  it('is seen from the listing alone: only the timestamps renewed, the rows those of a full build', async () => {
    const dir = await tempDir('builddb-unchanged');
    const tree = path.join(dir, 'site a');
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    let changedAt = Date.now();
    await makeTree(tree, {
      'näme with\nnewline': 'one',
      'hash#/100%/what?': 'two',
      'deep/er/and/deeper/empty': '',
      'deep/same size': 'aaaa',
      'link': { symlink: 'deep/same size' },
      'empty dir': { dir: true },
    });
    const db = path.join(dir, 'snap.db');
    const builddb = async (...extra: string[]) => (await bitfogOk(['builddb', tree, db, ...extra], { env })).stdout;
    const unchanged = /\(unchanged\)/;
    const hashOf = async (p: string) => (await contents(db)).entries.find((e) => e.path === p)!.hash;

    /**
     * Whether the files changed since `changedAt` were surely hashed within the racy window
     * of their change (the build ended within it). On a machine slow enough to take longer,
     * they may have been hashed after it and trusted: what comes next is not asserted then.
     */
    const hashedWhileRacy = () => Date.now() - changedAt < RACY_WINDOW_MS;

    // Hashed within the racy window of their last change: not to be trusted from the
    // listing next time, so that rescan looks at the files (and trusts them, now older).
    assert.doesNotMatch(await builddb(), unchanged);
    let racy = hashedWhileRacy();
    await settle();
    if (racy) assert.doesNotMatch(await builddb(), unchanged);
    else await builddb();
    const full = await contents(db);
    const again = await builddb();
    assert.match(again, unchanged);
    assert.match(again, /builddb: 12 entries, 10 B in /);
    const refreshed = await contents(db);
    assert.equal(refreshed.integrity, 'ok');
    assert.ok(refreshed.takenAt > full.takenAt, 'a new time of taking');
    assert.notEqual(refreshed.createdAt, full.createdAt);
    assert.deepEqual({ ...refreshed, takenAt: '', createdAt: '' }, { ...full, takenAt: '', createdAt: '' });
    const fresh = path.join(dir, 'fresh.db');
    await bitfogOk(['builddb', tree, fresh, '--no-cache'], { env });
    assert.deepEqual({ ...(await contents(db)), takenAt: '', createdAt: '' }, { ...(await contents(fresh)), takenAt: '', createdAt: '' }, 'the rows a build without any cache writes');
    assert.doesNotMatch(await builddb('--no-cache'), unchanged, 'without the cache, always in full');

    // Same size, new content, mtime put back: the listing still differs (ctime).
    const sameSize = path.join(tree, 'deep/same size');
    const { mtime } = await fsp.stat(sameSize);
    changedAt = Date.now();
    await fsp.writeFile(sameSize, 'bbbb');
    await fsp.utimes(sameSize, mtime, mtime);
    assert.doesNotMatch(await builddb(), unchanged);
    racy = hashedWhileRacy();
    assert.equal(await hashOf('deep/same size'), `sha256:${createHash('sha256').update('bbbb').digest('hex')}`);
    // That file was hashed just after its change: the next rescan looks at it again.
    if (racy) assert.doesNotMatch(await builddb(), unchanged);
    // Once the window has passed, a build trusts what it hashes, and the next one needs the listing only.
    await settle();
    await builddb();
    assert.match(await builddb(), unchanged);

    // The database edited by someone: built again in full, the edit undone.
    const m = await Manifest.load(db);
    m.db.run(`UPDATE entries SET hash = ? WHERE path = 'deep/same size'`, [H(9)]);
    await m.save(db);
    m.close();
    assert.doesNotMatch(await builddb(), unchanged);
    assert.equal(await hashOf('deep/same size'), `sha256:${createHash('sha256').update('bbbb').digest('hex')}`);
    assert.match(await builddb(), unchanged);

    // A record written by a bitfog of another manifest format is not taken for this one's.
    const [recordFile] = await fsp.readdir(path.join(dir, 'cache', 'snapshot-files'));
    const recordPath = path.join(dir, 'cache', 'snapshot-files', recordFile!);
    const record = JSON.parse(await fsp.readFile(recordPath, 'utf8'));
    await fsp.writeFile(recordPath, JSON.stringify({ ...record, format: record.format + 1 }));
    assert.doesNotMatch(await builddb(), unchanged);
    assert.match(await builddb(), unchanged);

    // Another database of the same tree has a record of its own.
    const other = path.join(dir, 'other.db');
    assert.doesNotMatch((await bitfogOk(['builddb', tree, other], { env })).stdout, unchanged);
  });

  it('takes a snapshot that carries the listing\'s fingerprint only when every hash in it would be trusted again', async () => {
    const dir = await tempDir('snapshot-fingerprint');
    await makeTree(dir, { 'a b': 'x', 'c/d #1': 'yy', 'c/empty': '' });
    const b = await LocalBackend.open(dir, dir, { write: false });
    try {
      const cache = HashCache.memory();
      const racy = await takeSnapshot(b, { side: 'source', cache, fingerprint: true });
      assert.equal(racy.fingerprint, undefined, 'files hashed within the racy window of their change');
      assert.equal((await takeSnapshot(b, { side: 'source', cache, fingerprint: true })).fingerprint, undefined, 'hashed again, still too soon after the change');
      await settle();
      // The cache does not trust those hashes: they are taken again, now long enough after the change.
      const settled = await takeSnapshot(b, { side: 'source', cache, fingerprint: true });
      assert.match(settled.fingerprint ?? '', /^[0-9a-f]{64}$/);
      assert.equal(settled.fingerprint, await b.listingFingerprint());
      assert.equal((await takeSnapshot(b, { side: 'source', cache, fingerprint: true })).fingerprint, settled.fingerprint, 'and from the cache alone');
      const partial = await takeSnapshot(b, { side: 'source', cache: HashCache.memory(), wantHash: (e) => e.path !== 'a b', fingerprint: true });
      assert.equal(partial.fingerprint, undefined, 'a file left unhashed');
      assert.equal((await takeSnapshot(b, { side: 'source', cache })).fingerprint, undefined, 'not asked for');
      // Hashes the listing supplies itself: a fingerprint of the listing need not follow them.
      const hashing = withOverrides(b, {
        list: (options) => (async function* () {
          for await (const e of b.list(options)) yield e.kind === 'file' ? { ...e, hash: settled.snapshot.entries.get(e.path)!.hash } : e;
        })(),
      });
      assert.equal((await takeSnapshot(hashing, { side: 'source', cache, fingerprint: true })).fingerprint, undefined, 'hashes from the backend');
    } finally {
      await b.close();
    }
  });
});

describe('hash cache file', () => {
  it('survives a round trip with awkward paths, and a torn file keeps its whole records', async () => {
    const dir = await tempDir('hashcache');
    const entry = (p: string, version: string, size: number): Entry => ({ path: p as RelPath, kind: 'file', size, version, changedAtMs: 1000 });
    const a = entry('näme with\nnewline', '3:1:1:7:1', 3);
    const b = entry('hash#/100%/what?', '5:1:1:8:1', 5);
    const cache = await HashCache.open('/srv/tree', dir);
    cache.record(a, H(1), 1000 + RACY_WINDOW_MS);
    cache.record(b, H(2), 1000 + RACY_WINDOW_MS);
    cache.record(entry('racy', '1:1:1:9:1', 1), H(4), 1000 + RACY_WINDOW_MS - 1);
    await cache.save();

    const back = await HashCache.open('/srv/tree', dir);
    assert.equal(back.size, 3);
    assert.equal(back.lookup(a), H(1));
    assert.equal(back.lookup(b), H(2));
    assert.equal(back.lookup({ ...a, version: '3:1:2:7:1' }), undefined, 'another version is not trusted');
    assert.equal(back.lookup({ ...a, version: '3:1:1:7:10' }), undefined, 'a longer version is not trusted');
    assert.equal(back.lookup(entry('racy', '1:1:1:9:1', 1)), undefined, 'hashed within the racy window');
    const reordered = await HashCache.open('/srv/tree', dir);
    assert.equal(reordered.lookup(b), H(2), 'looked up out of the order of the file');
    assert.equal(reordered.lookup(a), H(1));
    assert.equal(reordered.lookup(entry('gone', '1:1:1:1:1', 1)), undefined);
    assert.equal(reordered.size, 3);
    back.retainOnly((p) => p !== b.path);
    await back.save();
    const again = await HashCache.open('/srv/tree', dir);
    assert.equal(again.lookup(a), H(1));
    assert.equal(again.lookup(b), undefined);

    const [name] = await fsp.readdir(path.join(dir, 'hashes'));
    const file = path.join(dir, 'hashes', name!);
    const text = await fsp.readFile(file, 'utf8');
    await fsp.writeFile(file, text.slice(0, text.length - 3));
    const torn = await HashCache.open('/srv/tree', dir);
    assert.equal(torn.size, 1);
    await fsp.writeFile(file, 'not a cache');
    assert.equal((await HashCache.open('/srv/tree', dir)).size, 0);
  });
});
