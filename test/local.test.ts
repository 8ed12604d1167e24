import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
import { FileSystemSyncer } from '../src/backends/local/local.ts';
import { toRelPath } from '../src/core/paths.ts';
import { WriteBehind } from '../src/core/fsutil.ts';
import { testBackend } from '../src/conformance/index.ts';
import { tempDir } from './helpers/tmp.ts';

testBackend({
  name: 'local',
  open: async () => {
    const dir = await tempDir('local-conf');
    return LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
  },
  // Past two of the local backend's write-behind steps (64 MiB each), and not a whole one after.
  largeFileBytes: 150 * 1024 * 1024 + 7,
  cycle: {
    registry: createDefaultRegistry(),
    newUrl: async () => path.join(await tempDir('local-cycle'), 'dest'),
  },
});

describe('the local backend\'s write-behind', () => {
  /** A descriptor whose datasyncs wait until released, and fail when told to. */
  function fakeHandle() {
    const pending: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
    let calls = 0;
    const handle = {
      datasync: () => {
        calls++;
        return new Promise<void>((resolve, reject) => pending.push({ resolve, reject }));
      },
    };
    return { handle, pending, calls: () => calls };
  }
  const turn = () => new Promise((r) => setImmediate(r));

  it('flushes in the background each `every` bytes, one flush at a time, and settles after it', async () => {
    const f = fakeHandle();
    const behind = new WriteBehind(f.handle, 100);
    behind.wrote(60);
    assert.equal(f.calls(), 0);
    behind.wrote(60); // 120 written: a flush starts
    assert.equal(f.calls(), 1);
    behind.wrote(200); // one is running: no second
    assert.equal(f.calls(), 1);
    let settled = false;
    const settling = behind.settle().then(() => (settled = true));
    await turn();
    assert.equal(settled, false, 'settle waits for the flush in progress');
    f.pending.shift()!.resolve();
    await settling;
    behind.wrote(1); // 200 past the last flush point: the next starts
    assert.equal(f.calls(), 2);
    f.pending.shift()!.resolve();
    await behind.settle();
  });

  it('makes a failed background flush the write\'s failure', async () => {
    const f = fakeHandle();
    const behind = new WriteBehind(f.handle, 10);
    behind.wrote(10);
    f.pending.shift()!.reject(Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }));
    await turn();
    assert.throws(() => behind.wrote(1), /fdatasync/);
    await assert.rejects(behind.settle(), /fdatasync/);
  });
});

describe('the local backend\'s file system flushes (syncfs through one long-lived shell)', () => {
  it('flushes on request, again and again, and answers false once closed', async () => {
    const dir = await tempDir('syncfs');
    const syncer = new FileSystemSyncer(dir);
    assert.equal(await syncer.flush(), true);
    assert.deepEqual(await Promise.all([syncer.flush(), syncer.flush(), syncer.flush()]), [true, true, true]);
    syncer.close();
    assert.equal(await syncer.flush(), false);
  });

  it('answers false, and stops asking, where flushing this way fails, the shell is missing or it dies', async () => {
    const dir = await tempDir('syncfs-fail');
    const failing = new FileSystemSyncer(dir, ['sh', '-c', 'while read -r _; do echo fail; done', 'x']);
    assert.equal(await failing.flush(), false);
    assert.equal(await failing.flush(), false);
    failing.close();
    const missing = new FileSystemSyncer(dir, [path.join(dir, 'no such shell')]);
    assert.equal(await missing.flush(), false);
    const dying = new FileSystemSyncer(dir, ['sh', '-c', 'exit 3', 'x']);
    assert.equal(await dying.flush(), false);
    assert.equal(await dying.flush(), false);
  });

  it('makes the backend sync many files at once, and still syncs them all once closed', async () => {
    const dir = await tempDir('syncfs-backend');
    const b = await LocalBackend.open(`file://${dir}`, dir, { write: true });
    const paths = Array.from({ length: 12 }, (_, i) => toRelPath(`f ${i} #ü.txt`));
    for (const p of paths) await b.writeSmallFile(p, Buffer.from(p), { size: Buffer.byteLength(p) });
    await b.sync(paths);
    await b.close();
    await b.sync(paths); // fsync each now
  });
});
