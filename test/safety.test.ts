/**
 * The promises around the spool and the destination: one process per spool, a full disk
 * stops cleanly, cheap rescans that still catch racy changes, a file changing while being
 * carried, special files, symlinked directories, and hostile manifests.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { Readable } from 'node:stream';
import { LocalBackend } from '../src/backends/local/index.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { fetchToSpool } from '../src/core/fetch.ts';
import { HashCache, RACY_WINDOW_MS } from '../src/core/hashcache.ts';
import { toRelPath } from '../src/core/paths.ts';
import { takeSnapshot } from '../src/core/snapshot.ts';
import { Spool } from '../src/core/spool.ts';
import type { ReadOptions, Source } from '../src/core/types.ts';
import { bitfog, bitfogOk } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { contentOf, makeTree, readTree } from './helpers/tree.ts';

const exec = promisify(execFile);

/** Counts the reads a Source serves (instrumentation around a real backend, not a mock). */
function delegate(source: Source, read: Source['read']): Source {
  return {
    url: source.url,
    capabilities: source.capabilities,
    list: (o) => source.list(o),
    stat: (p, o) => source.stat(p, o),
    readlink: (p, o) => source.readlink(p, o),
    close: () => source.close(),
    read,
  };
}

function countingReads(source: Source): { source: Source; reads: string[] } {
  const reads: string[] = [];
  const wrapped = delegate(source, (p, o?: ReadOptions) => {
    reads.push(p);
    return source.read(p, o);
  });
  return { source: wrapped, reads };
}

describe('the spool lock', () => {
  it('refuses a second process and takes over the lock of a dead one', async () => {
    const dir = await tempDir('lock');
    const spool = path.join(dir, 'spool');
    const held = await Spool.open(spool, { create: true });
    const source = path.join(dir, 'source');
    await fsp.mkdir(source);
    const r = await bitfog(['fetch', source, spool]);
    assert.equal(r.code, 5, `exit 5 while locked: ${r.stderr}`);
    assert.match(r.stderr, /the spool is in use by process \d+/);
    await held.close();

    // A lock left by a process that died (kill -9) does not keep the spool stuck.
    const dead = spawn(process.execPath, ['-e', '0']);
    await new Promise((res) => dead.on('exit', res));
    await fsp.writeFile(path.join(spool, 'lock'), JSON.stringify({ host: os.hostname(), pid: dead.pid, started: 'then' }));
    const again = await Spool.open(spool, { create: false });
    await again.close();
  });

  it('an empty lock (a process killed between creating and filling it) does not refuse a rerun', async () => {
    const dir = await tempDir('lock-empty');
    const spool = path.join(dir, 'spool ü #1');
    await (await Spool.open(spool, { create: true })).close();
    const lock = path.join(spool, 'lock');
    await fsp.writeFile(lock, '');
    const then = new Date(Date.now() - 4500); // almost old enough to be no one's: the test waits less
    await fsp.utimes(lock, then, then);
    const again = await Spool.open(spool, { create: false });
    await again.close();
  });

  it('an empty lock that its owner fills meanwhile refuses with that owner named', async () => {
    const dir = await tempDir('lock-filling');
    const spool = path.join(dir, 'spool');
    await (await Spool.open(spool, { create: true })).close();
    const lock = path.join(spool, 'lock');
    const owner = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)']);
    try {
      await fsp.writeFile(lock, '');
      setTimeout(() => void fsp.writeFile(lock, JSON.stringify({ host: os.hostname(), pid: owner.pid, started: 'now' })), 300);
      await assert.rejects(Spool.open(spool, { create: false }), (e: unknown) => isBitfogError(e, 'ELOCKED') && new RegExp(`process ${owner.pid} `).test((e as Error).message));
    } finally {
      owner.kill();
    }
  });
});

/** Runs `fn` on a tmpfs of `size` mounted under `dir` (root only), unmounted after. */
async function onSmallDisk(dir: string, size: string, fn: (mnt: string) => Promise<void>): Promise<void> {
  const mnt = path.join(dir, 'small-disk');
  await fsp.mkdir(mnt);
  await exec('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', mnt]);
  try {
    await fn(mnt);
  } finally {
    await exec('umount', [mnt]);
  }
}

/** Fills the file system at `mnt` to its last block (with `mnt/filler`). */
async function fillDisk(mnt: string): Promise<void> {
  const h = await fsp.open(path.join(mnt, 'filler'), 'a');
  try {
    for (let size = 1 << 20; size >= 1; ) {
      try {
        await h.write(Buffer.alloc(size, 1));
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
        size >>= 1;
      }
    }
  } finally {
    await h.close();
  }
  assert.equal((await fsp.statfs(mnt)).bavail, 0, 'the disk is full');
}

describe('a spool on a read-only file system', () => {
  it('verify checks it without a lock, and still finds a corrupt blob; fetch and store are refused', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('a read-only bind mount needs root');
    const dir = await tempDir('spool-ro');
    const a = path.join(dir, 'site a');
    await makeTree(a, { 'one #1.txt': 'one', 'big ü.bin': randomBytes(2_000_000) });
    const spool = path.join(dir, 'spool');
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    await bitfogOk(['fetch', a, spool], { env });
    const ro = path.join(dir, 'mounted read-only');
    await fsp.mkdir(ro);
    await exec('mount', ['--bind', spool, ro]);
    try {
      await exec('mount', ['-o', 'remount,bind,ro', ro]);
      const clean = await bitfog(['verify', ro], { env });
      assert.equal(clean.code, 0, clean.stderr);
      assert.match(clean.stderr, /read-only file system: verifying it without its lock/);
      const store = await bitfog(['store', ro, path.join(dir, 'site b')], { env });
      assert.equal(store.code, 1, store.stderr);
      assert.match(store.stderr, /EROFS/);
      // A byte flipped (through the writable path): the read-only view shows it to verify.
      const blobs = (await fsp.readdir(path.join(spool, 'blobs', 'sha256'), { recursive: true })).filter((n) => /^[0-9a-f]{2}\/[0-9a-f]{64}$/.test(n));
      const big = (await Promise.all(blobs.map(async (n) => ({ n, size: (await fsp.stat(path.join(spool, 'blobs', 'sha256', n))).size })))).find((b) => b.size === 2_000_000);
      assert.ok(big, `the large file is a loose blob: ${blobs.join(', ')}`);
      const h = await fsp.open(path.join(spool, 'blobs', 'sha256', big.n), 'r+');
      await h.write(Buffer.from([0x42]), 0, 1, 1000);
      await h.close();
      const corrupt = await bitfog(['verify', ro], { env });
      assert.equal(corrupt.code, 4, corrupt.stderr);
      assert.match(corrupt.stdout + corrupt.stderr, /big ü\.bin/);
    } finally {
      await exec('umount', [ro]);
    }
  });
});

describe('a full spool disk', () => {
  it('leaves no half-written copy of the manifest: a failed save removes it, and the next open removes one a killed run left', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
    const dir = await tempDir('manifest-temp');
    await onSmallDisk(dir, '1m', async (mnt) => {
      const spoolDir = path.join(mnt, 'spool');
      const spool = await Spool.open(spoolDir, { create: true });
      try {
        await spool.save();
        // Fill the disk, then ask for a save the manifest cannot fit in.
        await fsp.writeFile(path.join(mnt, 'filler'), Buffer.alloc(1024 * 1024)).catch(() => {});
        spool.manifest.setMeta('padding', randomBytes(400_000).toString('hex'));
        await assert.rejects(spool.save(), (e) => isBitfogError(e, 'ENOSPC') && /cannot save the spool's manifest/.test(e.message));
        assert.deepEqual((await fsp.readdir(spoolDir)).filter((n) => n.endsWith('.tmp')), []);
      } finally {
        await spool.close();
      }
      await fsp.rm(path.join(mnt, 'filler'));
      // As a run killed during a save leaves it:
      await fsp.writeFile(path.join(spoolDir, 'manifest.db.0123456789ab.tmp'), 'half a manifest');
      await fsp.writeFile(path.join(spoolDir, 'manifest.db.notours.tmp'), 'not a name bitfog writes');
      const again = await Spool.open(spoolDir, { create: false });
      await again.close();
      assert.deepEqual((await fsp.readdir(spoolDir)).filter((n) => n.endsWith('.tmp')).sort(), ['manifest.db.notours.tmp']);
    });
  });

  it('does not keep store out: the lock is taken on a disk with no free block, and store frees the disk', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
    const dir = await tempDir('full-lock');
    await onSmallDisk(dir, '3m', async (mnt) => {
      const a = path.join(dir, 'site a');
      const b = path.join(dir, 'site b');
      await fsp.mkdir(b);
      const spool = path.join(mnt, 'spool #1 ü');
      const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
      await makeTree(a, { 'one.bin': { bytes: 400_000, seed: 1 }, 'd/two %.bin': { bytes: 300_000, seed: 2 } });
      await bitfogOk(['fetch', a, spool, '--reserve', '0'], { env });
      assert.ok((await fsp.readdir(spool)).includes('lock.reserve'), 'the spool keeps room for its lock');

      // A spool without that room (as an older bitfog left it) on a full disk: a clear
      // error, and no empty lock left behind for the next command to wait on.
      await fsp.rm(path.join(spool, 'lock.reserve'));
      await fillDisk(mnt);
      const refused = await bitfog(['store', spool, b], { env });
      assert.equal(refused.code, 1, refused.stderr);
      assert.match(refused.stderr, /cannot lock the spool: its disk is full.*free some space on it/);
      assert.ok(!(await fsp.readdir(spool)).includes('lock'), 'no lock left behind');
      assert.deepEqual(await fsp.readdir(b), [], 'nothing written');

      // With the room kept for it (made again when a command ends with free space).
      await fsp.rm(path.join(mnt, 'filler'));
      await bitfogOk(['store', spool, b], { env });
      await makeTree(a, { 'three #?.bin': { bytes: 500_000, seed: 3 }, 'd/e/empty': { bytes: 0, seed: 4 } });
      await bitfogOk(['fetch', a, spool, '--reserve', '0'], { env });
      assert.ok((await fsp.readdir(spool)).includes('lock.reserve'));
      await fillDisk(mnt);
      await bitfogOk(['store', spool, b], { env });
      assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
      const after = await fsp.readdir(spool);
      assert.ok(!after.includes('lock'), 'lock released');
      assert.ok(after.includes('lock.reserve'), 'room for the lock made again once store freed the disk');
    });
  });

  const smallFiles: Record<string, { bytes: number; seed: number }> = {};
  for (let i = 0; i < 120; i++) smallFiles[`d${i % 7}/small #${i} ü.bin`] = { bytes: 20_000 + i * 300, seed: 10 + i };
  for (const [what, tree] of [
    ['files of their own (1 MiB and more)', { 'one.bin': { bytes: 1_500_000, seed: 1 }, 'two.bin': { bytes: 1_400_000, seed: 2 }, 'three.bin': { bytes: 1_300_000, seed: 3 } }],
    ['small files, written into packs', smallFiles],
  ] as const) it(`stops cleanly, keeps what was carried, and the next trip goes on: ${what}`, async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
    const dir = await tempDir('fulldisk');
    await onSmallDisk(dir, '3m', async (mnt) => {
      const a = path.join(dir, 'a');
      const b = path.join(dir, 'b');
      await makeTree(a, tree);
      const spool = path.join(mnt, 'spool');
      // --reserve 0: all of the disk but the room a save of the manifest needs.
      const r = await bitfog(['fetch', a, spool, '--reserve', '0'], { env: { BITFOG_CACHE_DIR: path.join(dir, 'cache') } });
      assert.equal(r.code, 0, r.stderr);
      const status = JSON.parse((await bitfogOk(['status', spool, '--json'])).stdout);
      assert.ok(status.carried.files >= 1 && status.left.files >= 1, `some carried, some left: ${JSON.stringify(status.carried)}`);
      const disk = await fsp.statfs(mnt);
      const manifestBytes = (await fsp.stat(path.join(spool, 'manifest.db'))).size;
      assert.ok(disk.bavail * disk.bsize >= manifestBytes, `room left to save the manifest again (${disk.bavail * disk.bsize} bytes free, manifest ${manifestBytes})`);
      await bitfogOk(['verify', spool]);
      for (let trip = 0; trip < 4; trip++) {
        await bitfogOk(['store', spool, b]);
        await bitfogOk(['fetch', a, spool, '--reserve', '0']);
      }
      await bitfogOk(['store', spool, b]);
      assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    });
  });
});

describe('a disk that another program fills during a fetch', () => {
  it('stops cleanly: the contents carried last give back the room the manifest needs, and the spool says what it holds', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
    const dir = await tempDir('filled-by-another');
    const a = path.join(dir, 'site a');
    const tree: Record<string, { bytes: number; seed: number }> = {};
    for (let i = 0; i < 6; i++) tree[`big #${i} ü.bin`] = { bytes: 1_500_000, seed: i + 1 };
    await makeTree(a, tree);
    await onSmallDisk(dir, '8m', async (mnt) => {
      const backend = await LocalBackend.open(a, a, { write: false });
      let reads = 0;
      // The third file's read: another program takes every free block of the spool disk.
      const source = delegate(backend, async (p, o) => {
        if (++reads === 3) await fillDisk(mnt);
        return backend.read(p, o);
      });
      const spoolDir = path.join(mnt, 'spool');
      const spool = await Spool.open(spoolDir, { create: true });
      let r;
      try {
        r = await fetchToSpool({ source, spool, cache: HashCache.memory(), reserveBytes: 0, concurrency: 1 });
      } finally {
        await spool.close();
      }
      assert.equal(r.stoppedByFullDisk, true);
      assert.ok(r.carriedFiles >= 1 && r.carriedFiles < 6, `some carried (${r.carriedFiles})`);
      assert.equal(r.carriedFiles + r.deferredFiles, 6, 'every file is carried or left for later');
      // What the manifest says is carried is exactly what is on the spool, and intact.
      const status = JSON.parse((await bitfogOk(['status', spoolDir, '--json'])).stdout);
      assert.equal(status.carried.files, r.carriedFiles);
      assert.equal(status.left.files, 6 - r.carriedFiles);
      await bitfogOk(['verify', spoolDir]);
      // Room again: the next trips carry the rest (the disk holds about five of the six).
      await fsp.rm(path.join(mnt, 'filler'));
      const b = path.join(dir, 'site b');
      for (let trip = 0; trip < 4; trip++) {
        await bitfogOk(['fetch', a, spoolDir, '--reserve', '0']);
        await bitfogOk(['store', spoolDir, b]);
      }
      assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    });
  });
});

describe('a disk that fills up under the spool', () => {
  for (const [what, put] of [
    ['small blobs (packed)', (spool: Spool, content: Buffer) => spool.putSmallBlob(content, { size: content.length })],
    ['blobs of their own', (spool: Spool, content: Buffer) => spool.writeBlob(Readable.from([content]), { size: content.length })],
  ] as const) {
    it(`fails a write with ENOSPC and keeps every blob written before it: ${what}`, async (t) => {
      if (process.getuid?.() !== 0) return t.skip('mounting a small tmpfs needs root');
      const dir = await tempDir('filling');
      await onSmallDisk(dir, '1m', async (mnt) => {
        const spool = await Spool.open(path.join(mnt, 'spool'), { create: true });
        const landed = new Map<string, Buffer>();
        let failure: unknown;
        try {
          for (let i = 0; i < 100 && failure === undefined; i++) {
            const content = Buffer.concat([Buffer.from(`blob ${i} `), randomBytes(30_000)]);
            await put(spool, content).then((hash) => landed.set(hash, content), (e: unknown) => (failure = e));
          }
        } finally {
          await spool.close();
        }
        assert.ok(isBitfogError(failure, 'ENOSPC'), `the disk said stop: ${String(failure)}`);
        assert.ok(landed.size > 5, `some landed first (${landed.size})`);
        if (what.startsWith('small')) {
          // Nothing of the failed write is left: the packs hold exactly the records that landed.
          const packs = path.join(mnt, 'spool', 'packs');
          let bytes = 0;
          for (const name of await fsp.readdir(packs)) bytes += (await fsp.stat(path.join(packs, name))).size;
          assert.equal(bytes, [...landed.values()].reduce((n, c) => n + 48 + c.length, 0));
        }
        const reopened = await Spool.open(path.join(mnt, 'spool'), { create: false });
        try {
          for (const [hash, content] of landed) assert.ok((await reopened.readSmallBlob(hash, content.length)).equals(content), `${hash} reads back`);
        } finally {
          await reopened.close();
        }
      });
    });
  }
});

describe('rescans', () => {
  it('do not re-read unchanged files, but re-read a racy or changed one', async () => {
    const dir = await tempDir('rescan');
    const root = path.join(dir, 'tree');
    await makeTree(root, { 'a.txt': 'aaa', 'b/c.txt': 'ccc', 'd.bin': { bytes: 10_000, seed: 4 } });
    const cacheDir = path.join(dir, 'cache');
    const backend = await LocalBackend.open(root, root, { write: false });
    const scan = async () => {
      const counted = countingReads(backend);
      const r = await takeSnapshot(counted.source, { side: 'source', cache: await HashCache.open(backend.url, cacheDir) });
      return { reads: counted.reads.sort(), snapshot: r.snapshot };
    };
    const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

    await sleep(RACY_WINDOW_MS + 100);
    assert.deepEqual((await scan()).reads, ['a.txt', 'b/c.txt', 'd.bin'], 'first scan reads everything');
    assert.deepEqual((await scan()).reads, [], 'an unchanged rescan reads nothing');

    // Same size, and an mtime forced back to the old value: only ctime and the racy rule catch it.
    const before = await fsp.stat(path.join(root, 'a.txt'));
    await fsp.writeFile(path.join(root, 'a.txt'), 'AAA');
    await fsp.utimes(path.join(root, 'a.txt'), before.atime, before.mtime);
    const changed = await scan();
    assert.deepEqual(changed.reads, ['a.txt'], 'only the changed file is read');
    assert.deepEqual((await scan()).reads, ['a.txt'], 'hashed within the racy window of its change: hashed again');
    await sleep(RACY_WINDOW_MS + 100);
    await scan();
    assert.deepEqual((await scan()).reads, [], 'aged out of the window: trusted');
    assert.equal(changed.snapshot.entries.get('a.txt')!.hash, 'sha256:cb1ad2119d8fafb69566510ee712661f9f14b83385006ef92aec47f523a38358');
    assert.equal((await fsp.readdir(path.join(cacheDir, 'hashes'))).length, 1, 'the cache lives outside the tree');
    assert.deepEqual((await fsp.readdir(root)).sort(), ['a.txt', 'b', 'd.bin'], 'nothing added to the tree');
  });
});

describe('a source that lists a path twice', () => {
  it('has it hashed once, as its last listing says', async () => {
    const dir = await tempDir('listed-twice');
    const root = path.join(dir, 'tree');
    await makeTree(root, { 'twice #1.txt': 'listed twice', 'once ü.txt': 'listed once' });
    const backend = await LocalBackend.open(root, root, { write: false });
    const counted = countingReads(backend);
    const source: Source = {
      ...counted.source,
      async *list(o) {
        for await (const e of backend.list(o)) {
          if (e.path === 'twice #1.txt') yield { ...e };
          yield e;
        }
      },
    };
    const { snapshot } = await takeSnapshot(source, { side: 'source', cache: HashCache.memory() });
    assert.deepEqual(counted.reads.sort(), ['once ü.txt', 'twice #1.txt']);
    assert.equal(snapshot.entries.size, 2);
    assert.match(snapshot.entries.get('twice #1.txt')!.hash!, /^sha256:[0-9a-f]{64}$/);
  });

  it('as a file and as a directory (an object store\'s key "x" beside keys under "x/"): keeps the directory, reports the file', async () => {
    const dir = await tempDir('file-and-dir');
    const root = path.join(dir, 'tree');
    await makeTree(root, { 'sub #1/inside ü.txt': 'inside', 'plain.txt': 'plain', 'other/in.txt': 'in' });
    const backend = await LocalBackend.open(root, root, { write: false });
    const asFile = (path: string) => ({ path: toRelPath(path), kind: 'file' as const, size: 3, mtimeMs: 0 });
    const source: Source = {
      ...delegate(backend, (p, o) => backend.read(p, o)),
      async *list(o) {
        for await (const e of backend.list(o)) {
          // The file before the directory for one path, after it for the other.
          if (e.path === 'sub #1') yield asFile('sub #1');
          yield e;
          if (e.path === 'other') yield asFile('other');
        }
      },
    };
    const { snapshot, skipped } = await takeSnapshot(source, { side: 'source', cache: HashCache.memory() });
    assert.equal(snapshot.entries.get('sub #1')!.kind, 'directory');
    assert.equal(snapshot.entries.get('other')!.kind, 'directory');
    assert.ok(snapshot.entries.has('sub #1/inside ü.txt'));
    assert.deepEqual(skipped.map((s) => s.path).sort(), ['other', 'sub #1']);
    assert.match(skipped[0]!.reason, /a file and a directory share this path.*only the directory is carried/);
  });
});

describe('a source file changing while it is carried', () => {
  it('is detected and left for the next trip, never carried wrong', async () => {
    const dir = await tempDir('changing');
    const root = path.join(dir, 'a');
    await makeTree(root, { 'growing.log': { bytes: 2_000_000, seed: 1 }, 'calm.txt': 'calm' });
    const backend = await LocalBackend.open(root, root, { write: false });
    // Append to the file the moment its carrying starts.
    const source = delegate(backend, async (p, o) => {
      const stream = await backend.read(p, o);
      if (p === 'growing.log') await fsp.appendFile(path.join(root, 'growing.log'), 'more lines\n');
      return stream;
    });
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    const r = await fetchToSpool({ source, spool, cache: HashCache.memory() });
    assert.deepEqual(r.skipped.map((s) => s.path), ['growing.log']);
    assert.match(r.skipped[0]!.reason, /changed while being carried/);
    assert.equal(r.carriedFiles, 1);
    for (const b of spool.blobs()) assert.notEqual(b.size, 2_000_000);
    await spool.close();
  });

  it('is detected in a small file streamed by a source that cannot read it whole, growing or shrinking', async () => {
    const dir = await tempDir('changing-small');
    const root = path.join(dir, 'a');
    await makeTree(root, {
      'grows #1.log': { bytes: 100_000, seed: 1 },
      'shrinks ü.log': { bytes: 50_000, seed: 2 },
      'calm %41/deep ?/file.txt': 'calm and small',
      'calm too.bin': { bytes: 300_000, seed: 3 },
    });
    const backend = await LocalBackend.open(root, root, { write: false });
    const source = delegate(backend, async (p, o) => {
      const stream = await backend.read(p, o);
      if (p === 'grows #1.log') await fsp.appendFile(path.join(root, p), 'more lines\n');
      if (p === 'shrinks ü.log') await fsp.truncate(path.join(root, p), 10_000);
      return stream;
    });
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    const r = await fetchToSpool({ source, spool, cache: HashCache.memory() });
    assert.deepEqual(r.skipped.map((s) => s.path).sort(), ['grows #1.log', 'shrinks ü.log']);
    for (const s of r.skipped) assert.match(s.reason, /changed while being carried/);
    assert.equal(r.carriedFiles, 2);
    const tree = await readTree(root);
    const carried = new Set(spool.blobs().map((b) => b.hash));
    for (const p of ['calm %41/deep ?/file.txt', 'calm too.bin']) assert.ok(carried.has(`sha256:${tree.get(p)!.sha256}`), `${p} carried as it is`);
    assert.equal(spool.blobs().length, 2, 'nothing of the changed files is carried');
    await spool.close();
  });
});

describe('what is not a file, a symlink or a directory', () => {
  it('is skipped, counted, and never blocks', async () => {
    const dir = await tempDir('fifo');
    const a = path.join(dir, 'a');
    await makeTree(a, { 'ok.txt': 'ok' });
    await exec('mkfifo', [path.join(a, 'a pipe')]);
    const spool = path.join(dir, 'spool');
    const r = await bitfogOk(['fetch', a, spool]);
    assert.match(r.stdout, /skipped:\s+1/);
    assert.match(r.stderr, /skipped: a pipe: not a regular file, symlink or directory/);
    await bitfogOk(['store', spool, path.join(dir, 'b')]);
    assert.deepEqual([...(await readTree(path.join(dir, 'b'))).keys()], ['ok.txt']);
  });
});

describe('symlinked directories at the destination', () => {
  it('are never written through', async () => {
    const dir = await tempDir('symlinkdir');
    const outside = path.join(dir, 'outside');
    const root = path.join(dir, 'dest');
    await makeTree(outside, { 'secret.txt': 'secret' });
    await makeTree(root, { 'escape': { symlink: outside } });
    const dest = await LocalBackend.open(root, root, { write: true });
    for (const op of [
      () => dest.write(toRelPath('escape/new.txt'), Readable.from([Buffer.from('x')]), { size: 1 }),
      () => dest.remove(toRelPath('escape/secret.txt')),
      () => dest.read(toRelPath('escape/secret.txt')),
      () => dest.readSmallFile(toRelPath('escape/secret.txt'), 100),
      () => dest.writeSmallFile(toRelPath('escape/new small.txt'), Buffer.from('x'), { size: 1 }),
      () => dest.createFile(toRelPath('escape/rebuilt.img'), { size: 1 }),
      () => dest.openFile(toRelPath('escape/secret.txt')),
      () => dest.mkdir(toRelPath('escape/sub')),
      () => dest.symlink(toRelPath('escape/l'), '/etc/passwd'),
    ]) {
      await assert.rejects(op(), (e) => isBitfogError(e, 'EACCES'));
    }
    assert.deepEqual(await fsp.readdir(outside), ['secret.txt']);
  });

  it('are not read or written through even when they point inside the root', async () => {
    const dir = await tempDir('symlinkdir-inside');
    const root = path.join(dir, 'dest');
    await makeTree(root, { 'real dir/inner #1.txt': 'inner', 'alias': { symlink: 'real dir' } });
    const dest = await LocalBackend.open(root, root, { write: true });
    await assert.rejects(dest.read(toRelPath('alias/inner #1.txt')), (e) => isBitfogError(e, 'EACCES'));
    await assert.rejects(dest.copyToLocalFile(toRelPath('alias/inner #1.txt'), path.join(dir, 'copy')), (e) => isBitfogError(e, 'EACCES'));
    await assert.rejects(dest.readSmallFile(toRelPath('alias/inner #1.txt'), 100), (e) => isBitfogError(e, 'EACCES'));
    await assert.rejects(dest.writeSmallFile(toRelPath('alias/inner #1.txt'), Buffer.from('overwritten'), { size: 11 }), (e) => isBitfogError(e, 'EACCES'));
    await assert.rejects(dest.createFile(toRelPath('alias/inner #1.txt'), { size: 11 }), (e) => isBitfogError(e, 'EACCES'));
    await assert.rejects(
      dest.write(toRelPath('alias/inner #1.txt'), Readable.from([Buffer.from('overwritten')]), { size: 11 }),
      (e) => isBitfogError(e, 'EACCES'),
    );
    assert.equal(await fsp.readFile(path.join(root, 'real dir', 'inner #1.txt'), 'utf8'), 'inner', 'the file behind the link is untouched');
  });

  it('are noticed when bitfog itself puts a symlink where a checked directory was', async () => {
    const dir = await tempDir('symlinkdir-swap');
    const outside = path.join(dir, 'outside');
    const root = path.join(dir, 'dest');
    await makeTree(outside, {});
    await makeTree(root, { 'sub/a.txt': 'a' });
    const dest = await LocalBackend.open(root, root, { write: true });
    await dest.write(toRelPath('sub/b.txt'), Readable.from([Buffer.from('b')]), { size: 1 }); // 'sub' checked and remembered
    await dest.remove(toRelPath('sub/a.txt'));
    await dest.remove(toRelPath('sub/b.txt'));
    await dest.rmdir(toRelPath('sub'));
    await dest.symlink(toRelPath('sub'), outside);
    for (const op of [
      () => dest.write(toRelPath('sub/c.txt'), Readable.from([Buffer.from('c')]), { size: 1 }),
      () => dest.mkdir(toRelPath('sub/d')),
      () => dest.setMetadata(toRelPath('sub/e'), { mode: 0o600 }),
      () => dest.writeSmallFile(toRelPath('sub/f small #1.txt'), Buffer.from('f'), { size: 1 }),
    ]) {
      await assert.rejects(op(), (e) => isBitfogError(e, 'EACCES'));
    }
    assert.deepEqual(await fsp.readdir(outside), [], 'nothing written outside');
  });

  it('are noticed by the writer worker when another program swaps one in after the check', async () => {
    // The parent is checked and remembered on this thread; the file is created on the
    // writer worker, which must find its descriptor outside the root and leave nothing there.
    const dir = await tempDir('symlinkdir-swap-worker');
    const outside = path.join(dir, 'outside');
    const root = path.join(dir, 'dest');
    await makeTree(outside, {});
    await makeTree(root, { 'sub ü/a.txt': 'a' });
    const dest = await LocalBackend.open(root, root, { write: true });
    try {
      await dest.writeSmallFile(toRelPath('sub ü/b #1.txt'), Buffer.from('b'), { size: 1 }); // 'sub ü' checked and remembered
      await fsp.rm(path.join(root, 'sub ü'), { recursive: true });
      await fsp.symlink(outside, path.join(root, 'sub ü'));
      await assert.rejects(dest.writeSmallFile(toRelPath('sub ü/c %20.txt'), Buffer.from('c'), { size: 1 }), (e) => isBitfogError(e, 'EACCES'));
      assert.deepEqual(await fsp.readdir(outside), [], 'nothing left outside');
    } finally {
      await dest.close();
    }
  });
});

describe('a hostile manifest', () => {
  it('is refused before anything is written', async () => {
    const dir = await tempDir('hostile');
    const spoolDir = path.join(dir, 'spool');
    const spool = await Spool.open(spoolDir, { create: true });
    spool.manifest.putSnapshot('source', {
      url: 'evil', takenAt: '', entries: new Map([['../../escaped.txt', { path: '../../escaped.txt' as never, kind: 'file', size: 0, hash: 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855' }]]),
    });
    await spool.save();
    await spool.close();
    const r = await bitfog(['store', spoolDir, path.join(dir, 'dest')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /invalid entry "\.\.\/\.\.\/escaped\.txt" \("\.\." segment\)/);
    await assert.rejects(fsp.access(path.join(dir, 'escaped.txt')));
  });
});
