import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
import { FileSystemSyncer, localFlushesBehind } from '../src/backends/local/local.ts';
import { allowLstatWorkersAgain, batchesOut, lstatBatchesOnWorkers, takeLstatPeak, terminateLstatWorkers } from '../src/backends/local/lstat-pool.ts';
import type { Entry } from '../src/core/types.ts';
import { toRelPath } from '../src/core/paths.ts';
import { WRITE_BEHIND_BYTES, WriteBehind } from '../src/core/fsutil.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { allowFileWorkerAgain, fileWorkerAvailable, filesWrittenOnWorker, terminateFileWorker } from '../src/core/file-writer-worker.ts';
import { testBackend } from '../src/conformance/index.ts';
import { runModuleInChild } from './helpers/child.ts';
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

describe('the local backend\'s files from a source without modes', () => {
  it('get the mode a new file gets here (0666 less the umask), by every way of writing, never the 0600 of a partial file', async () => {
    const dir = await tempDir('local-default-mode');
    const b = await LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
    const umask = process.umask();
    try {
      const content = Buffer.from('no mode at the source\n');
      await fsp.writeFile(path.join(dir, 'from.bin'), content, { mode: 0o600 });
      await b.write(toRelPath('streamed #1'), Readable.from([content]), { size: content.length });
      await b.writeSmallFile(toRelPath('small ü'), content, { size: content.length });
      await b.writeFromLocalFile(toRelPath('copied %'), path.join(dir, 'from.bin'), { size: content.length });
      const file = await b.createFile(toRelPath('positional?'), { size: content.length });
      await file.write(content, 0, content.length, 0);
      await file.finish();
      // A mode the source has is kept as it is.
      await b.write(toRelPath('with mode'), Readable.from([content]), { size: content.length, mode: 0o600 });
    } finally {
      await b.close();
    }
    const modeOf = async (name: string) => (await fsp.stat(path.join(dir, 'root', name))).mode & 0o7777;
    for (const name of ['streamed #1', 'small ü', 'copied %', 'positional?']) assert.equal(await modeOf(name), 0o666 & ~umask, name);
    assert.equal(await modeOf('with mode'), 0o600);
  });
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

describe('the local backend\'s flush behind an in-kernel copy', () => {
  /** Paths of this process's open descriptors that lead to `file`. */
  async function descriptorsOf(file: string): Promise<number> {
    let n = 0;
    for (const fd of await fsp.readdir('/proc/self/fd')) {
      const target = await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '');
      if (target === file) n++;
    }
    return n;
  }

  it('starts flushing a large copy at once, waits for it in sync, and closes its descriptor by close', async () => {
    const dir = await tempDir('flush-behind');
    const b = await LocalBackend.open(`file://${dir}/dest`, path.join(dir, 'dest'), { write: true });
    const large = path.join(dir, 'large source #1 ü.bin');
    const size = WRITE_BEHIND_BYTES + 4097;
    const h = await fsp.open(large, 'w');
    const block = Buffer.alloc(1 << 20, 7);
    for (let at = 0; at < size; at += block.length) await h.write(block, 0, Math.min(block.length, size - at), at);
    await h.close();
    await fsp.writeFile(path.join(dir, 'small.bin'), 'small');

    const before = localFlushesBehind();
    await b.writeFromLocalFile(toRelPath('small.tmp'), path.join(dir, 'small.bin'), { size: 5 });
    assert.equal(localFlushesBehind(), before, 'a small copy is left to the batch flush');
    await b.writeFromLocalFile(toRelPath('large.tmp'), large, { size });
    assert.equal(localFlushesBehind(), before + 1, 'a large copy starts its flush at once');
    await b.sync([toRelPath('large.tmp'), toRelPath('small.tmp')]);
    await b.rename(toRelPath('large.tmp'), toRelPath('large.bin'));
    assert.equal((await fsp.stat(path.join(dir, 'dest', 'large.bin'))).size, size);

    // A copy removed before its sync: its flush is forgotten, but close still waits for it.
    await b.writeFromLocalFile(toRelPath('gone.tmp'), large, { size });
    assert.equal(localFlushesBehind(), before + 2);
    const gonePath = path.join(await fsp.realpath(path.join(dir, 'dest')), 'gone.tmp');
    await b.remove(toRelPath('gone.tmp'));
    await b.sync([toRelPath('gone.tmp')]);
    await b.close();
    assert.equal(await descriptorsOf(`${gonePath} (deleted)`), 0, 'no descriptor left open after close');
  });
});

describe('the local backend\'s small files written on the writer worker', () => {
  const names = ['plain.txt', 'with space #1 ü.txt', 'percent %41 & ?query', 'deep/er/still/nested é.bin', 'empty'];
  const contentOf = (i: number) => Buffer.from(i === names.length - 1 ? '' : `content ${i} ${'ß'.repeat(i * 1000)}`);

  it('writes each file\'s content, mode and mtime, closes every descriptor, and warns of nothing', async () => {
    const dir = await tempDir('local-small-worker');
    const b = await LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
    // A worker's warnings reach this process as text on its stderr, not as 'warning' events.
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on('warning', onWarning);
    const stderrWrite = process.stderr.write;
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      if (String(chunk).includes('Warning')) warnings.push(String(chunk));
      return (stderrWrite as (...a: unknown[]) => boolean).call(process.stderr, chunk, ...rest);
    }) as typeof process.stderr.write;
    try {
      for (const n of names) await fsp.mkdir(path.dirname(path.join(dir, 'root', n)), { recursive: true });
      const before = filesWrittenOnWorker();
      const mtimeMs = Date.UTC(2020, 1, 29, 12, 0, 0, 250);
      const scratch = Buffer.alloc(1 << 16);
      await Promise.all(
        names.map((n, i) => {
          // One buffer for all, overwritten at once: what lands must be what each call saw.
          const c = contentOf(i);
          c.copy(scratch);
          const writing = b.writeSmallFile(toRelPath(n), scratch.subarray(0, c.length), { size: c.length, mode: 0o640 + i, mtimeMs });
          scratch.fill(0);
          return writing;
        }),
      );
      assert.equal(filesWrittenOnWorker() - before, names.length, 'written on the worker');
      for (const [i, n] of names.entries()) {
        const file = path.join(dir, 'root', n);
        assert.ok((await fsp.readFile(file)).equals(contentOf(i)), `${n}: content`);
        const st = await fsp.stat(file);
        assert.equal(st.mode & 0o7777, 0o640 + i, `${n}: mode`);
        assert.equal(st.mtimeMs, mtimeMs, `${n}: mtime`);
      }
      await new Promise((r) => setTimeout(r, 100)); // the worker's output is forwarded asynchronously
      assert.deepEqual(warnings, [], 'no process warning (a descriptor closed on the worker must not be reported)');
      const real = await fsp.realpath(path.join(dir, 'root'));
      for (const fd of await fsp.readdir('/proc/self/fd')) {
        const target = await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => '');
        assert.ok(!target.startsWith(real + '/'), `descriptor ${fd} still open on ${target}`);
      }
    } finally {
      process.stderr.write = stderrWrite;
      process.off('warning', onWarning);
      await b.close();
    }
  });

  it('reports a failed write as the file\'s error', async () => {
    const dir = await tempDir('local-small-worker-error');
    const b = await LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
    try {
      // A directory at the name: refused when the worker opens it, reported as the file's error.
      await fsp.mkdir(path.join(dir, 'root', 'a directory'));
      await assert.rejects(b.writeSmallFile(toRelPath('a directory'), Buffer.from('x'), { size: 1 }), (e: unknown) => isBitfogError(e, 'EISDIR'));
      // A time futimes refuses: the error comes back from the worker, and its descriptor is closed.
      await assert.rejects(b.writeSmallFile(toRelPath('bad time'), Buffer.from('x'), { size: 1, mtimeMs: Number.NaN }), (e: unknown) => isBitfogError(e));
      const real = await fsp.realpath(path.join(dir, 'root', 'bad time'));
      for (const fd of await fsp.readdir('/proc/self/fd')) {
        assert.notEqual(await fsp.readlink(`/proc/self/fd/${fd}`).catch(() => ''), real, 'the descriptor is closed');
      }
    } finally {
      await b.close();
    }
  });

  it('writes on the calling thread once the worker has failed, with a new descriptor', async () => {
    const dir = await tempDir('local-small-worker-gone');
    const b = await LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
    try {
      await b.writeSmallFile(toRelPath('warm'), Buffer.from('starts the worker'), { size: 17 });
      const content = Buffer.from('written while the worker dies');
      const writing = b.writeSmallFile(toRelPath('during'), content, { size: content.length, mode: 0o604 });
      await terminateFileWorker();
      await writing;
      assert.equal(fileWorkerAvailable(), false);
      const before = filesWrittenOnWorker();
      await b.writeSmallFile(toRelPath('after'), Buffer.from('after'), { size: 5, mode: 0o600 });
      assert.equal(filesWrittenOnWorker(), before, 'not on the worker');
      assert.ok((await fsp.readFile(path.join(dir, 'root', 'during'))).equals(content));
      assert.equal((await fsp.stat(path.join(dir, 'root', 'during'))).mode & 0o7777, 0o604);
      assert.equal(await fsp.readFile(path.join(dir, 'root', 'after'), 'utf8'), 'after');
    } finally {
      allowFileWorkerAgain();
      await b.close();
    }
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

describe('the local backend\'s listing of a large tree (lstat on worker threads)', () => {
  /**
   * More entries than a listing stats on its own thread (4096), in directories of more
   * names than one worker batch (256), each with awkward names, an empty file, symlinks
   * (one dangling, one to a directory; a symlink's size is its target's length) and a FIFO, so that every kind of name reaches the
   * workers. Returns the tree and what each path must list as.
   */
  async function largeTree(directories = 18): Promise<{ root: string; expected: Map<string, { kind: Entry['kind']; size: number; linkTarget?: string }> }> {
    const root = await tempDir('local-large-list');
    const expected = new Map<string, { kind: Entry['kind']; size: number; linkTarget?: string }>();
    const top = 'top #1 %41 ?';
    await fsp.mkdir(path.join(root, top));
    expected.set(top, { kind: 'directory', size: 0 });
    for (let d = 0; d < directories; d++) {
      let dir = `${top}/dir ${d} ü`;
      if (d % 6 === 0) dir += '/deeper/and deeper/still ñ';
      await fsp.mkdir(path.join(root, dir), { recursive: true });
      for (let at = dir; at !== top; at = path.posix.dirname(at)) expected.set(at, { kind: 'directory', size: 0 });
      for (let i = 0; i < 260; i++) {
        const name = `${dir}/f #${i} %?.txt`;
        const size = i % 50 === 0 ? 0 : (i * 7) % 300;
        await fsp.writeFile(path.join(root, name), Buffer.alloc(size, i));
        expected.set(name, { kind: 'file', size });
      }
      await fsp.symlink('f #1 %?.txt', path.join(root, dir, 'link to f1'));
      expected.set(`${dir}/link to f1`, { kind: 'symlink', size: Buffer.byteLength('f #1 %?.txt'), linkTarget: 'f #1 %?.txt' });
      await fsp.symlink('../nowhere ✗', path.join(root, dir, 'dangling'));
      expected.set(`${dir}/dangling`, { kind: 'symlink', size: Buffer.byteLength('../nowhere ✗'), linkTarget: '../nowhere ✗' });
      await fsp.symlink('.', path.join(root, dir, 'self'));
      expected.set(`${dir}/self`, { kind: 'symlink', size: 1, linkTarget: '.' });
      assert.equal(spawnSync('mkfifo', [path.join(root, dir, 'fifo')]).status, 0, 'mkfifo');
    }
    return { root, expected };
  }

  async function listAll(b: LocalBackend, during?: (n: number) => Promise<void>): Promise<{ entries: Entry[]; skipped: Array<[string, string]> }> {
    const entries: Entry[] = [];
    const skipped: Array<[string, string]> = [];
    for await (const e of b.list({ onSkip: (p, reason) => skipped.push([p, reason]) })) {
      entries.push(e);
      await during?.(entries.length);
    }
    return { entries, skipped };
  }

  it('lists every entry as stat() describes it, directories before their contents, in the same order every time', async () => {
    const { root, expected } = await largeTree();
    const b = await LocalBackend.open(root, root, { write: false });
    const before = lstatBatchesOnWorkers();
    const first = await listAll(b);
    if (availableParallelism() >= 2) assert.ok(lstatBatchesOnWorkers() > before, 'a listing this large uses lstat workers');
    assert.equal(first.entries.length, expected.size);
    const seen = new Set<string>();
    for (const e of first.entries) {
      const want = expected.get(e.path);
      assert.ok(want, `unexpected entry ${JSON.stringify(e.path)}`);
      assert.equal(e.kind, want.kind, e.path);
      assert.equal(e.size, want.size, e.path);
      assert.equal(e.linkTarget, want.linkTarget, e.path);
      const parent = path.posix.dirname(e.path);
      assert.ok(parent === '.' || seen.has(parent), `${e.path} listed before its directory`);
      seen.add(e.path);
      // Built on a worker or here, an entry is what stat() (always on this thread) says.
      assert.deepEqual(e, await b.stat(toRelPath(e.path)));
    }
    assert.deepEqual(
      first.skipped.map(([p, reason]) => [path.posix.basename(p), reason]),
      Array.from({ length: 18 }, () => ['fifo', 'not a regular file, symlink or directory']),
    );
    const second = await listAll(b);
    assert.deepEqual(second.entries, first.entries, 'an unchanged tree lists the same entries in the same order');
    await b.close();
  });

  it('sends a huge directory to the workers a few batches at a time, not all at once', async () => {
    const root = await tempDir('local-huge-dir');
    // 12k names: 47 batches of 256, at least 31 of them past the first 4096 entries.
    const names = Array.from({ length: 12_000 }, (_, i) => `big dir/n #${i} ü`);
    await fsp.mkdir(path.join(root, 'big dir'));
    for (let i = 0; i < names.length; i += 500) await Promise.all(names.slice(i, i + 500).map((n) => fsp.writeFile(path.join(root, n), '')));
    const b = await LocalBackend.open(root, root, { write: false });
    takeLstatPeak();
    const before = lstatBatchesOnWorkers();
    const listed = await listAll(b);
    const peak = takeLstatPeak();
    assert.deepEqual(listed.entries.map((e) => e.path).sort(), ['big dir', ...names].sort());
    if (availableParallelism() >= 2) {
      assert.ok(lstatBatchesOnWorkers() - before >= 31, 'the workers stat most of it');
      assert.ok(peak > 0 && peak <= 9, `at most 9 batches on the workers at once, not ${peak}`);
    }
    await b.close();
  });

  it('finishes the listing on its own thread when the workers die in the middle of it', async () => {
    const { root } = await largeTree(60);
    const b = await LocalBackend.open(root, root, { write: false });
    const reference = await listAll(b);
    // The workers are ended at the first entry past the first 4096 where batches are out.
    // Whether one of those is still unanswered when its worker ends is a race: try again
    // (with new workers) until one is, and check every listing either way.
    let failedBatches = 0;
    for (let attempt = 0; attempt < 20 && failedBatches === 0; attempt++) {
      allowLstatWorkersAgain();
      let ended = false;
      const interrupted = await listAll(b, async (n) => {
        if (!ended && n > 4096 && batchesOut() > 0) {
          ended = true;
          failedBatches = await terminateLstatWorkers();
        }
      });
      assert.deepEqual(interrupted.entries, reference.entries);
      assert.deepEqual(interrupted.skipped, reference.skipped);
      if (availableParallelism() < 2) break;
    }
    if (availableParallelism() >= 2) assert.ok(failedBatches > 0, 'workers ended with batches to do');
    // And from then on, without workers.
    const before = lstatBatchesOnWorkers();
    assert.deepEqual((await listAll(b)).entries, reference.entries);
    assert.equal(lstatBatchesOnWorkers(), before, 'no worker is used after one failed');
    await b.close();
  });

  it('fingerprints a tree alike on the workers, on its own thread and while listing it, and not at all when it holds a FIFO', async () => {
    const { root } = await largeTree();
    allowLstatWorkersAgain(); // the test before ends with no workers
    const b = await LocalBackend.open(root, root, { write: false });
    const listed = async () => {
      const got: Array<string | undefined> = [];
      for await (const _ of b.list({ onFingerprint: (f) => got.push(f) })) void _;
      assert.equal(got.length, 1, 'a listing reports its fingerprint once');
      return got[0];
    };
    try {
      assert.equal(await b.listingFingerprint(), undefined, 'a FIFO would be skipped: no fingerprint');
      assert.equal(await listed(), undefined, 'nor from a listing that skipped it');
      // (The recursive readdir also goes through the symlinks named self: those paths are gone already.)
      for (const fifo of (await fsp.readdir(root, { recursive: true })).filter((n) => n.endsWith('fifo'))) await fsp.rm(path.join(root, fifo), { force: true });

      // A true U+FFFD in a name: a listing keeps it, but neither fingerprints the tree.
      const replacement = path.join(root, 'top #1 %41 ?', 'dir 5 ü', 'true \uFFFD');
      await fsp.writeFile(replacement, '');
      assert.equal(await b.listingFingerprint(), undefined, 'not on the workers');
      assert.equal(await listed(), undefined, 'nor in a listing');
      await fsp.rm(replacement);

      const before = lstatBatchesOnWorkers();
      const onWorkers = await b.listingFingerprint();
      if (availableParallelism() >= 2) assert.ok(lstatBatchesOnWorkers() > before, 'taken on the workers');
      assert.match(onWorkers ?? '', /^[0-9a-f]{64}$/);
      assert.equal(await listed(), onWorkers, 'a listing (on this thread and the workers) reports the same');

      // Workers that end in the middle: their directories are looked at again, here.
      let ended: Promise<number> | undefined;
      const interrupted = await b.listingFingerprint({ onListed: (n) => void (n > 1000 && (ended ??= terminateLstatWorkers())) });
      assert.equal(interrupted, onWorkers, 'the same after the workers ended mid-way');
      await ended;
      const workersBefore = lstatBatchesOnWorkers();
      assert.equal(await b.listingFingerprint(), onWorkers, 'and the same on this thread alone');
      assert.equal(lstatBatchesOnWorkers(), workersBefore, 'no worker used');
      allowLstatWorkersAgain();

      // One file's mtime, deep down and past the first 4096 entries, is enough to change it.
      const deep = 'top #1 %41 ?/dir 12 ü/deeper/and deeper/still ñ/f #259 %?.txt';
      await fsp.utimes(path.join(root, deep), new Date(0), new Date(1000));
      const changed = await b.listingFingerprint();
      assert.notEqual(changed, onWorkers);
      assert.equal(await listed(), changed);
    } finally {
      allowLstatWorkersAgain();
      await b.close();
    }
  });

  it('does not keep a process alive with its idle workers', async () => {
    // A child lists `root` and prints how many entries and how many batches went to workers.
    const listInChild = (root: string) =>
      runModuleInChild(
        [
          `import { LocalBackend } from ${JSON.stringify(new URL('../src/backends/local/index.ts', import.meta.url).href)};`,
          `import { lstatBatchesOnWorkers } from ${JSON.stringify(new URL('../src/backends/local/lstat-pool.ts', import.meta.url).href)};`,
          `const b = await LocalBackend.open(${JSON.stringify(root)}, ${JSON.stringify(root)}, { write: false });`,
          'let n = 0;',
          'for await (const _ of b.list()) n++;',
          'console.log(n, lstatBatchesOnWorkers());',
        ].join('\n'),
        30_000,
      );
    const { root, expected } = await largeTree();
    // Under `--input-type=module` (as here), a worker that inherited the flag could not run
    // its plain-JavaScript source: this also checks that the workers do not inherit it.
    const { code, signal, stdout: out } = await listInChild(root);
    assert.equal(signal, null, 'exited by itself, not killed after 30 s');
    assert.equal(code, 0);
    const [listed, onWorkers] = out.trim().split(' ').map(Number);
    assert.equal(listed, expected.size);
    if (availableParallelism() >= 2) assert.ok(onWorkers! > 0, 'the child listed through workers');

    // Workers started when the backend was opened and never given anything to do.
    const small = await tempDir('local-small-list');
    await fsp.writeFile(path.join(small, 'one file'), '1');
    const unused = await listInChild(small);
    assert.equal(unused.signal, null, 'exited by itself, not killed after 30 s');
    assert.equal(unused.code, 0);
    assert.equal(unused.stdout.trim(), '1 0');
  });
});
