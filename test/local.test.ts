import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
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
