/**
 * The backend conformance suite.
 *
 * One suite that every backend runs — the built-in ones and third-party plugins alike —
 * in a few lines of node:test:
 *
 *   import { testBackend } from 'bitfog/conformance';
 *   testBackend({ name: 'tape', open: async () => openMyBackendOnAFreshEmptyRoot() });
 *
 * It checks the contract of types.ts, only skipping what the backend's declared
 * capabilities say it cannot do, with awkward names everywhere (spaces, `#`, `%`, `?`,
 * UTF-8, deep nesting, empty files), error codes, and a full spool cycle through the
 * backend (local tree → spool → backend, and back).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { isBitfogError, type ErrorCode } from '../core/errors.ts';
import { toRelPath, type RelPath } from '../core/paths.ts';
import type { BackendRegistry } from '../core/registry.ts';
import type { Destination, Entry } from '../core/types.ts';
import { runCycleThrough } from './cycle.ts';

export interface ConformanceOptions {
  /** Shown in the test names. */
  name: string;
  /** Opens the backend on a fresh, empty, writable root. Called once per test. */
  open(): Promise<Destination>;
  /**
   * The URL of that fresh root (same as `open` would use), and a registry that knows its
   * scheme, to run the full spool cycle through the CLI's core. Omit both to skip the cycle.
   */
  cycle?: { newUrl(): Promise<string>; registry: BackendRegistry };
  /**
   * Names (single path segments) the storage itself cannot hold, for example a newline on
   * a server that refuses it. Each must be documented by the backend; the suite skips them.
   */
  unsupportedNames?: string[];
  /** Size of the large streamed file, bytes (default 24 MiB). */
  largeFileBytes?: number;
}

/** Names every backend must carry unchanged (one path segment each). */
export const AWKWARD_NAMES = [
  'with space',
  'hash#tag',
  '100%.txt',
  '%41%2e%2e',
  'what?.txt',
  'quote"s and \'apostrophes\'',
  'ampersand & <angle> + plus=equals',
  'êé Hello, 世界 ≠ 🎉',
  'back\\slash',
  'new\nline',
  'tab\there',
  '..dots..',
  '.hidden',
  '-dash',
  '~tilde',
  '[brackets]{braces}(parens)',
  "semi;colon:colon,comma@at!bang$dollar*star'",
];

/** A path nested deeply, with an awkward segment at each level (rclone's test name, extended). */
export const DEEP_PATH = 'hello? sausage/êé/Hello, 世界/ " \' @ < > & ? + ≠/a/b/c/d/e/f/g/z.txt';

export function testBackend(options: ConformanceOptions): void {
  const names = AWKWARD_NAMES.filter((n) => !(options.unsupportedNames ?? []).includes(n));
  const open = async () => options.open();

  describe(`conformance: ${options.name}`, () => {
    it('a fresh root lists nothing', async () => {
      const b = await open();
      try {
        assert.deepEqual(await listAll(b), []);
      } finally {
        await b.close();
      }
    });

    it('writes, lists, stats and reads back files with awkward names', async () => {
      const b = await open();
      try {
        await b.mkdir(p('dir'));
        const expected = new Map<string, Buffer>();
        for (const [i, name] of names.entries()) {
          const content = Buffer.from(`content of ${JSON.stringify(name)} #${i}\n`);
          const rel = p(`dir/${name}`);
          await writeBuffer(b, rel, content);
          expected.set(rel, content);
        }
        await writeBuffer(b, p('empty'), Buffer.alloc(0));
        expected.set('empty', Buffer.alloc(0));

        const listed = await listAll(b);
        const files = listed.filter((e) => e.kind === 'file');
        assert.deepEqual(files.map((e) => e.path).sort(), [...expected.keys()].sort());
        for (const e of files) assert.equal(e.size, expected.get(e.path)!.length, `size of ${e.path}`);
        if (b.capabilities.emptyDirectories) {
          assert.ok(listed.some((e) => e.path === 'dir' && e.kind === 'directory'), 'directory listed');
        }
        for (const [rel, content] of expected) {
          assert.deepEqual(await readAll(b, p(rel)), content, `content of ${rel}`);
          const st = await b.stat(p(rel));
          assert.equal(st.kind, 'file');
          assert.equal(st.size, content.length);
          assert.equal(st.path, rel);
        }
      } finally {
        await b.close();
      }
    });

    it('creates deep paths parent by parent', async () => {
      const b = await open();
      try {
        const rel = p(DEEP_PATH);
        const parts = DEEP_PATH.split('/');
        for (let i = 1; i < parts.length; i++) await b.mkdir(p(parts.slice(0, i).join('/')));
        await writeBuffer(b, rel, Buffer.from('deep'));
        assert.deepEqual(await readAll(b, rel), Buffer.from('deep'));
        const listed = await listAll(b);
        assert.ok(listed.some((e) => e.path === DEEP_PATH && e.kind === 'file'));
        await b.mkdir(p(parts.slice(0, 2).join('/'))); // idempotent on an existing directory
      } finally {
        await b.close();
      }
    });

    it('streams a large file without changing a byte', async () => {
      const b = await open();
      try {
        const size = options.largeFileBytes ?? 24 * 1024 * 1024 + 7;
        const seed = randomBytes(1 << 20);
        const expectedHash = createHash('sha256');
        const chunks = function* () {
          let left = size;
          let i = 0;
          while (left > 0) {
            const n = Math.min(left, seed.length);
            const chunk = Buffer.from(seed.subarray(0, n));
            if (n >= 4) chunk.writeUInt32LE(i++, 0); // a last chunk of 1-3 bytes has no room for a counter
            expectedHash.update(chunk);
            left -= n;
            yield chunk;
          }
        };
        await b.write(p('large.bin'), Readable.from(chunks()), { size });
        const want = expectedHash.digest('hex');
        const got = createHash('sha256');
        for await (const c of await b.read(p('large.bin'))) got.update(c as Buffer);
        assert.equal(got.digest('hex'), want);
        assert.equal((await b.stat(p('large.bin'))).size, size);
        if (b.capabilities.rangedReads) {
          const part = await readAll(b, p('large.bin'), { start: 1000, end: 1000 + 4096 });
          assert.equal(part.length, 4096);
          const again = await readAll(b, p('large.bin'), { start: 1000 + 4096, end: 1000 + 8192 });
          assert.equal(again.length, 4096);
          assert.deepEqual(part.subarray(4), seed.subarray(1004, 1000 + 4096));
        }
      } finally {
        await b.close();
      }
    });

    it('replaces a file by rename when it declares atomic renames', async (t) => {
      const b = await open();
      try {
        if (!b.capabilities.atomicRename) return t.skip('no atomic rename declared');
        await writeBuffer(b, p('target'), Buffer.from('old'));
        await writeBuffer(b, p('.tmp target'), Buffer.from('new content'));
        await b.rename(p('.tmp target'), p('target'));
        assert.deepEqual(await readAll(b, p('target')), Buffer.from('new content'));
        await expectCode(b.stat(p('.tmp target')), 'ENOENT');
      } finally {
        await b.close();
      }
    });

    it('refuses a write whose byte count differs from the declared size', async () => {
      const b = await open();
      try {
        await expectCode(b.write(p('short'), Readable.from([Buffer.from('abc')]), { size: 10 }), 'EINTEGRITY');
        if (b.capabilities.atomicWrite) {
          // An all-or-nothing write that failed leaves nothing under the name.
          await expectCode(b.stat(p('short')), 'ENOENT', 'a failed write left an entry under its name, but the backend declares atomicWrite');
        }
      } finally {
        await b.close();
      }
    });

    it('removes files and empty directories, and says ENOENT / ENOTEMPTY / EISDIR / EEXIST', async () => {
      const b = await open();
      try {
        await b.mkdir(p('d'));
        await writeBuffer(b, p('d/f #1'), Buffer.from('x'));
        if (b.capabilities.emptyDirectories) await expectCode(b.rmdir(p('d')), 'ENOTEMPTY');
        // `remove` is for files and symlinks: on a directory it fails, and takes nothing with it.
        await assert.rejects(b.remove(p('d')), (e: unknown) => isBitfogError(e) && (e.code === 'EISDIR' || (!b.capabilities.emptyDirectories && e.code === 'ENOENT')), 'remove of a directory: EISDIR');
        assert.deepEqual(await readAll(b, p('d/f #1')), Buffer.from('x'), 'a failed remove of a directory keeps its files');
        if (b.capabilities.emptyDirectories) await expectCode(b.mkdir(p('d/f #1')), 'EEXIST');
        await b.remove(p('d/f #1'));
        await expectCode(b.stat(p('d/f #1')), 'ENOENT');
        await expectCode(b.remove(p('d/f #1')), 'ENOENT');
        if (b.capabilities.emptyDirectories) {
          await b.rmdir(p('d'));
          await expectCode(b.stat(p('d')), 'ENOENT');
        }
        assert.deepEqual(
          (await listAll(b)).map((e) => e.path),
          [],
        );
      } finally {
        await b.close();
      }
    });

    it('reports missing entries with ENOENT', async () => {
      const b = await open();
      try {
        await expectCode(b.stat(p('missing?')), 'ENOENT');
        await expectCode(
          (async () => {
            const s = await b.read(p('missing #'));
            for await (const _ of s) void _;
          })(),
          'ENOENT',
        );
      } finally {
        await b.close();
      }
    });

    it('keeps modes and mtimes as far as it declares', async (t) => {
      const b = await open();
      try {
        await writeBuffer(b, p('meta file%'), Buffer.from('m'));
        const mtimeMs = Date.UTC(2020, 0, 2, 3, 4, 5, 678);
        await b.setMetadata(p('meta file%'), { mode: 0o640, mtimeMs });
        const st = await b.stat(p('meta file%'));
        if (b.capabilities.modes) assert.equal(st.mode! & 0o777, 0o640);
        const precision = b.capabilities.mtimePrecisionMs;
        if (precision === 0) return t.skip('mtimes not kept');
        assert.ok(st.mtimeMs !== undefined, 'mtime listed');
        assert.ok(Math.abs(st.mtimeMs! - mtimeMs) < Math.max(precision, 0.001), `mtime ${st.mtimeMs} vs ${mtimeMs}`);
        const listed = (await listAll(b)).find((e) => e.path === 'meta file%')!;
        assert.ok(Math.abs(listed.mtimeMs! - mtimeMs) < Math.max(precision, 0.001), 'listed mtime');
      } finally {
        await b.close();
      }
    });

    it('creates and reads symlinks when it declares them', async (t) => {
      const b = await open();
      try {
        if (!b.capabilities.symlinks) {
          await expectCode(b.symlink(p('link'), 'target'), 'EOPNOTSUPP');
          return;
        }
        await writeBuffer(b, p('target file'), Buffer.from('t'));
        await b.symlink(p('link #1'), 'target file');
        await b.symlink(p('dangling'), '../../outside/nowhere');
        assert.equal(await b.readlink(p('link #1')), 'target file');
        const st = await b.stat(p('dangling'));
        assert.equal(st.kind, 'symlink');
        assert.equal(st.linkTarget, '../../outside/nowhere');
        const listed = await listAll(b);
        const link = listed.find((e) => e.path === 'link #1');
        assert.equal(link?.kind, 'symlink');
        assert.equal(link?.linkTarget, 'target file');
        await expectCode(b.symlink(p('link #1'), 'x'), 'EEXIST');
        await b.remove(p('link #1'));
        assert.deepEqual(await readAll(b, p('target file')), Buffer.from('t'), 'removing a link keeps its target');
        t.diagnostic('symlinks ok');
      } finally {
        await b.close();
      }
    });

    it('copies to and from local files when it offers copyToLocalFile / writeFromLocalFile', async (t) => {
      const b = await open();
      const local = await mkdtemp(path.join(tmpdir(), 'bitfog-conformance-copy-'));
      try {
        if (typeof b.copyToLocalFile !== 'function' && typeof b.writeFromLocalFile !== 'function') {
          return t.skip('no local-file copies offered (optional)');
        }
        const content = randomBytes(3 * 1024 * 1024 + 17);
        const name = p('copied/100% sure #1 êé?.bin');
        await b.mkdir(p('copied'));
        const blob = path.join(local, 'blob with space');
        await writeFile(blob, content);
        const mtimeMs = Date.UTC(2021, 5, 6, 7, 8, 9);
        if (typeof b.writeFromLocalFile === 'function') {
          try {
            await b.writeFromLocalFile(name, blob, { size: content.length, mode: 0o640, mtimeMs });
            assert.deepEqual(await readAll(b, name), content, 'written from a local file byte for byte');
            const st = await b.stat(name);
            assert.equal(st.size, content.length);
            if (b.capabilities.modes) assert.equal(st.mode! & 0o777, 0o640, 'mode applied with the write');
            if (b.capabilities.mtimePrecisionMs > 0) assert.ok(Math.abs(st.mtimeMs! - mtimeMs) < Math.max(b.capabilities.mtimePrecisionMs, 1), 'mtime applied');
            await expectCode(b.writeFromLocalFile(p('copied/short'), blob, { size: content.length + 1 }), 'EINTEGRITY');
          } catch (e) {
            if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
            t.diagnostic('writeFromLocalFile said EOPNOTSUPP here');
            await writeBuffer(b, name, content);
          }
        } else {
          await writeBuffer(b, name, content);
        }
        if (typeof b.copyToLocalFile === 'function') {
          const out = path.join(local, 'out #1');
          try {
            await b.copyToLocalFile(name, out);
            assert.deepEqual(await readFile(out), content, 'copied to a local file byte for byte');
            await expectCode(b.copyToLocalFile(p('copied/missing'), path.join(local, 'out 2')), 'ENOENT');
            await expectCode(b.copyToLocalFile(p('copied'), path.join(local, 'out 3')), 'EISDIR');
          } catch (e) {
            if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
            t.diagnostic('copyToLocalFile said EOPNOTSUPP here');
          }
        }
      } finally {
        await b.close();
        await rm(local, { recursive: true, force: true });
      }
    });

    it('sends a local file, checking every byte before it commits, when it offers sendLocalFile', async (t) => {
      const b = await open();
      if (typeof b.sendLocalFile !== 'function') {
        await b.close();
        return t.skip('sendLocalFile not offered (optional)');
      }
      const local = await mkdtemp(path.join(tmpdir(), 'bitfog-conformance-send-'));
      try {
        // Over 5 MiB: a multipart upload where parts can be that small.
        const content = randomBytes(6 * 1024 * 1024 + 17);
        const hash = `sha256:${createHash('sha256').update(content).digest('hex')}`;
        const blob = path.join(local, 'blob #1 é');
        await writeFile(blob, content);
        await b.mkdir(p('sent'));
        const name = p('sent/100% sure #1 êé?.bin');
        const mtimeMs = Date.UTC(2022, 1, 3, 4, 5, 6);
        const seen: Buffer[] = [];
        try {
          await b.sendLocalFile(name, blob, { size: content.length, hash, mode: 0o640, mtimeMs, onBytes: (bytes) => void seen.push(Buffer.from(bytes)) });
        } catch (e) {
          if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
          return t.diagnostic('sendLocalFile said EOPNOTSUPP here');
        }
        assert.deepEqual(await readAll(b, name), content, 'sent byte for byte');
        assert.deepEqual(Buffer.concat(seen), content, 'onBytes saw every byte, in order');
        const st = await b.stat(name);
        assert.equal(st.size, content.length);
        if (b.capabilities.modes) assert.equal(st.mode! & 0o777, 0o640, 'mode applied with the write');
        if (b.capabilities.mtimePrecisionMs > 0) assert.ok(Math.abs(st.mtimeMs! - mtimeMs) < Math.max(b.capabilities.mtimePrecisionMs, 1), 'mtime applied');

        // Bytes that do not check out are never committed, and an existing file stays as it was.
        const wrongHash = `sha256:${createHash('sha256').update('something else').digest('hex')}`;
        await expectCode(b.sendLocalFile(p('sent/wrong hash'), blob, { size: content.length, hash: wrongHash }), 'EINTEGRITY');
        await expectCode(b.stat(p('sent/wrong hash')), 'ENOENT', 'nothing under the name of a send whose hash failed');
        await expectCode(b.sendLocalFile(p('sent/longer'), blob, { size: content.length - 1, hash }), 'EINTEGRITY');
        await expectCode(b.stat(p('sent/longer')), 'ENOENT', 'nothing under the name of a file longer than declared');
        await expectCode(b.sendLocalFile(p('sent/shorter'), blob, { size: content.length + 1, hash }), 'EINTEGRITY');
        await expectCode(b.stat(p('sent/shorter')), 'ENOENT', 'nothing under the name of a file shorter than declared');
        await expectCode(b.sendLocalFile(name, blob, { size: content.length, hash: wrongHash }), 'EINTEGRITY');
        assert.deepEqual(await readAll(b, name), content, 'a failed send leaves the file it would have replaced intact');
        await expectCode(b.sendLocalFile(p('sent/from nowhere'), path.join(local, 'missing'), { size: 1, hash }), 'ENOENT');
      } finally {
        await b.close();
        await rm(local, { recursive: true, force: true });
      }
    });

    it('reads at any position into the caller\'s buffers when it offers openFile', async (t) => {
      const b = await open();
      try {
        if (typeof b.openFile !== 'function') return t.skip('no openFile offered (optional)');
        const content = randomBytes(700 * 1024 + 5);
        const name = p('opened/50% off #2 ü?.bin');
        await b.mkdir(p('opened'));
        await writeBuffer(b, name, content);
        let f: Awaited<ReturnType<NonNullable<typeof b.openFile>>>;
        try {
          f = await b.openFile(name);
        } catch (e) {
          if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
          return t.diagnostic('openFile said EOPNOTSUPP here');
        }
        try {
          assert.equal(f.size, content.length);
          // One buffer, reused: each read must land where asked and nowhere else.
          const buf = Buffer.alloc(256 * 1024 + 3, 0xee);
          for (const [position, length] of [[0, 10], [content.length - 7, 100], [123_457, 256 * 1024], [300, 0]] as const) {
            buf.fill(0xee);
            let got = 0;
            while (got < length) {
              const n = await f.read(buf, 3 + got, length - got, position + got);
              if (n === 0) break;
              got += n;
            }
            const want = content.subarray(position, position + length);
            assert.equal(got, want.length, `bytes read at ${position}`);
            assert.deepEqual(buf.subarray(3, 3 + got), want, `content at ${position}`);
            assert.equal(buf[0], 0xee, 'nothing written before the offset');
            if (3 + got < buf.length) assert.equal(buf[3 + got], 0xee, 'nothing written past what was read');
          }
          assert.equal(await f.read(buf, 0, 100, content.length), 0, '0 at the end of the file');
        } finally {
          await f.close();
          await f.close();
        }
        await expectCode(b.openFile(p('opened/missing')), 'ENOENT');
        await expectCode(b.openFile(p('opened')), 'EISDIR');
      } finally {
        await b.close();
      }
    });

    // A read that never ends (a connection reused in the wrong state) fails instead of hanging the run.
    it('hands a whole file in pieces of its own memory when it offers readPieces', { timeout: 120_000 }, async (t) => {
      const b = await open();
      try {
        if (typeof b.readPieces !== 'function') return t.skip('no readPieces offered (optional)');
        const content = randomBytes(5 * 1024 * 1024 + 17);
        const name = p('pieces/100% piece #3 ß?.bin');
        await b.mkdir(p('pieces'));
        await writeBuffer(b, name, content);
        await writeBuffer(b, p('pieces/empty'), Buffer.alloc(0));
        // Each piece is held a while, several at once, and must not change while held.
        const got: Buffer[] = [];
        let held = 0;
        let mostHeld = 0;
        const onPiece = async (piece: Uint8Array) => {
          const copy = Buffer.from(piece);
          got.push(copy);
          mostHeld = Math.max(mostHeld, ++held);
          await new Promise((r) => setTimeout(r, 1 + (got.length % 3) * 4));
          held--;
          assert.deepEqual(Buffer.from(piece), copy, 'a piece is left alone until its promise resolves');
        };
        let n: number;
        try {
          n = await b.readPieces(name, onPiece);
        } catch (e) {
          if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
          return t.diagnostic('readPieces said EOPNOTSUPP here');
        }
        assert.equal(n, content.length, 'the bytes handed are counted');
        assert.deepEqual(Buffer.concat(got), content, 'the whole file, in order');
        t.diagnostic(`${got.length} pieces, at most ${mostHeld} held at once`);
        assert.equal(await b.readPieces(p('pieces/empty'), onPiece), 0, 'an empty file');
        // A consumer that fails ends the read with its error, and the backend goes on working.
        const refused = new Error('consumer refused');
        await assert.rejects(b.readPieces(name, () => Promise.reject(refused)), (e) => e === refused);
        got.length = 0;
        await b.readPieces(name, onPiece);
        assert.deepEqual(Buffer.concat(got), content, 'read again after a failed read');
        const stop = new AbortController();
        await expectCode(
          b.readPieces(name, async () => stop.abort(), { signal: stop.signal }),
          'EABORTED',
        );
        await expectCode(b.readPieces(p('pieces/missing'), onPiece), 'ENOENT');
        await expectCode(b.readPieces(p('pieces'), onPiece), 'EISDIR');
        got.length = 0;
        await b.readPieces(name, onPiece);
        assert.deepEqual(Buffer.concat(got), content, 'read again after answers that were errors');
      } finally {
        await b.close();
      }
    });

    it('reads small files whole when it offers readSmallFile, and declines larger ones', async (t) => {
      const b = await open();
      try {
        if (typeof b.readSmallFile !== 'function') return t.skip('no readSmallFile offered (optional)');
        await b.mkdir(p('small'));
        const content = randomBytes(5000);
        const name = p('small/tiny #1 ü?%.txt');
        await writeBuffer(b, name, content);
        await writeBuffer(b, p('small/empty'), Buffer.alloc(0));
        const got = await b.readSmallFile(name, 5000);
        if (got === undefined) return t.diagnostic('readSmallFile declined here');
        assert.deepEqual(got, content, 'the whole file');
        assert.deepEqual(await b.readSmallFile(p('small/empty'), 10), Buffer.alloc(0), 'an empty file');
        assert.equal(await b.readSmallFile(name, 4999), undefined, 'a file over maxBytes is declined');
        // Lent memory: used or not, the content is the file's, and memory too short is never overrun.
        const lent = Buffer.alloc(8192, 0xee);
        assert.deepEqual(await b.readSmallFile(name, 6000, { into: lent }), content, 'the whole file, with memory lent');
        const short = Buffer.alloc(4096, 0xee);
        const guarded = Buffer.concat([short, Buffer.alloc(16, 0x77)]);
        assert.deepEqual(await b.readSmallFile(name, 6000, { into: guarded.subarray(0, 4096) }), content, 'the whole file, with too little memory lent');
        assert.deepEqual(guarded.subarray(4096), Buffer.alloc(16, 0x77), 'nothing written past the memory lent');
        const reused = await b.readSmallFile(p('small/empty'), 10, { into: lent });
        assert.deepEqual(reused, Buffer.alloc(0), 'an empty file, with memory lent');
        await expectCode(b.readSmallFile(p('small/missing'), 10), 'ENOENT');
        await expectCode(b.readSmallFile(p('small'), 10), 'EISDIR');
      } finally {
        await b.close();
      }
    });

    it('writes small files from memory when it offers writeSmallFile, like write', async (t) => {
      const b = await open();
      try {
        if (typeof b.writeSmallFile !== 'function') return t.skip('no writeSmallFile offered (optional)');
        await b.mkdir(p('small out'));
        const content = randomBytes(3000);
        const name = p('small out/new #1 ü?%.txt');
        const mtimeMs = Date.UTC(2020, 1, 2, 3, 4, 5, 6);
        if (!(await b.writeSmallFile(name, content, { size: content.length, mode: 0o640, mtimeMs }))) {
          return t.diagnostic('writeSmallFile declined here');
        }
        assert.deepEqual(await readAll(b, name), content, 'written byte for byte');
        const st = await b.stat(name);
        if (b.capabilities.modes) assert.equal(st.mode! & 0o777, 0o640, 'mode applied');
        if (b.capabilities.mtimePrecisionMs > 0) assert.ok(Math.abs(st.mtimeMs! - mtimeMs) < Math.max(b.capabilities.mtimePrecisionMs, 1), 'mtime applied');
        assert.ok(await b.writeSmallFile(name, Buffer.from('shorter'), { size: 7 }), 'replaces a file');
        assert.deepEqual(await readAll(b, name), Buffer.from('shorter'));
        await expectCode(b.writeSmallFile(p('small out/wrong'), Buffer.from('abc'), { size: 4 }), 'EINTEGRITY');
        await expectCode(b.writeSmallFile(p('small out'), Buffer.from('x'), { size: 1 }), 'EISDIR');
      } finally {
        await b.close();
      }
    });

    it('never removes what was written when it offers discardCreatedRoot', async (t) => {
      const b = await open();
      try {
        if (typeof b.discardCreatedRoot !== 'function') return t.skip('no discardCreatedRoot offered (optional)');
        await b.mkdir(p('kept dir'));
        await writeBuffer(b, p('kept dir/kept #1.txt'), Buffer.from('written before the discard'));
        await b.discardCreatedRoot();
        assert.equal((await readAll(b, p('kept dir/kept #1.txt'))).toString(), 'written before the discard');
        await b.discardCreatedRoot(); // a second call is harmless too
        assert.deepEqual((await listAll(b)).map((e) => e.path).sort(), ['kept dir', 'kept dir/kept #1.txt']);
      } finally {
        await b.close();
      }
    });

    it('writes at positions from a reused buffer when it offers createFile, like write', async (t) => {
      const b = await open();
      try {
        if (typeof b.createFile !== 'function') return t.skip('no createFile offered (optional)');
        await b.mkdir(p('positional'));
        const size = 3 * 1024 * 1024 + 5;
        const content = randomBytes(size);
        const name = p('positional/rebuilt #1 ü?%.img');
        const mtimeMs = Date.UTC(2021, 5, 6, 7, 8, 9, 10);
        const file = await b.createFile(name, { size, mode: 0o640, mtimeMs });
        // Pieces out of order, through one buffer refilled as soon as each write resolves.
        const buffer = Buffer.alloc(700_000);
        const starts: number[] = [];
        for (let at = 0; at < size; at += buffer.length) starts.push(at);
        for (const at of [...starts.filter((_, i) => i % 2 === 1), ...starts.filter((_, i) => i % 2 === 0)]) {
          const n = content.copy(buffer, 0, at, Math.min(at + buffer.length, size));
          await file.write(buffer, 0, n, at);
          buffer.fill(0xee);
        }
        await file.finish();
        await file.discard(); // idempotent after finish
        assert.deepEqual(await readAll(b, name), content, 'written byte for byte');
        const st = await b.stat(name);
        if (b.capabilities.modes) assert.equal(st.mode! & 0o777, 0o640, 'mode applied');
        if (b.capabilities.mtimePrecisionMs > 0) assert.ok(Math.abs(st.mtimeMs! - mtimeMs) < Math.max(b.capabilities.mtimePrecisionMs, 1), 'mtime applied');

        const short = await b.createFile(p('positional/short'), { size: 10 });
        await short.write(Buffer.from('12345'), 0, 5, 0);
        await expectCode(short.finish(), 'EINTEGRITY');
        const dropped = await b.createFile(p('positional/dropped'), { size: 3 });
        await dropped.write(Buffer.from('abc'), 0, 3, 0);
        await dropped.discard();
        await dropped.discard();
        await expectCode(b.createFile(p('positional'), { size: 1 }), 'EISDIR');
      } finally {
        await b.close();
      }
    });

    it('lists the true sha256 of each file when it declares server-side hashes', async (t) => {
      const b = await open();
      try {
        if (!b.capabilities.serverSideHashes) return t.skip('no server-side hashes declared');
        const files = new Map([
          ['hashed #1', Buffer.from('some content\n')],
          ['empty hashed', Buffer.alloc(0)],
        ]);
        const sha = (content: Buffer) => `sha256:${createHash('sha256').update(content).digest('hex')}`;
        // Written as the core writes: with the hash it already knows (a backend may store it as metadata).
        for (const [name, content] of files) {
          await b.write(p(name), Readable.from(content.length ? [content] : []), { size: content.length, hash: sha(content) });
        }
        const listed = await listAll(b);
        for (const [name, content] of files) assert.equal(listed.find((e) => e.path === name)?.hash, sha(content), `listed hash of ${name}`);
      } finally {
        await b.close();
      }
    });

    it('keeps names that differ only in case apart when it declares case sensitivity', async (t) => {
      const b = await open();
      try {
        if (!b.capabilities.caseSensitive) return t.skip('case-insensitive declared');
        await writeBuffer(b, p('Case Ä.txt'), Buffer.from('upper'));
        await writeBuffer(b, p('case ä.txt'), Buffer.from('lower'));
        assert.deepEqual(await readAll(b, p('Case Ä.txt')), Buffer.from('upper'));
        assert.deepEqual(await readAll(b, p('case ä.txt')), Buffer.from('lower'));
        assert.deepEqual((await listAll(b)).map((e) => e.path), ['Case Ä.txt', 'case ä.txt']);
      } finally {
        await b.close();
      }
    });

    it('fingerprints its listing when it offers listingFingerprint, and the fingerprint follows every change a listing shows', async (t) => {
      const b = await open();
      try {
        if (typeof b.listingFingerprint !== 'function') return t.skip('no listingFingerprint offered (optional)');
        const fingerprint = () => b.listingFingerprint!();
        const listed = async () => {
          const got: Array<string | undefined> = [];
          for await (const _ of b.list({ onFingerprint: (f) => got.push(f) })) void _;
          assert.equal(got.length, 1, 'a listing reports its fingerprint once');
          return got[0];
        };
        await b.mkdir(p('tree'));
        await b.mkdir(p('tree/deep #1'));
        for (const name of names) await writeBuffer(b, p(`tree/${name}`), Buffer.from(name));
        await writeBuffer(b, p('tree/deep #1/empty'), Buffer.alloc(0));
        await writeBuffer(b, p('tree/deep #1/same size'), Buffer.from('aaaa'));
        if (b.capabilities.symlinks) await b.symlink(p('tree/link ü'), '../tree/with space');

        const seen = new Set<string>();
        const expectNew = async (what: string) => {
          const now = await fingerprint();
          assert.equal(typeof now, 'string', `${what}: a clean tree has a fingerprint`);
          assert.equal(await listed(), now, `${what}: a listing reports what listingFingerprint says`);
          assert.equal(await fingerprint(), now, `${what}: unchanged, the same again`);
          assert.ok(!seen.has(now!), `${what}: the fingerprint changed`);
          seen.add(now!);
        };
        await expectNew('first look');
        // A later mtime tick: some backends keep whole seconds or less.
        const later = Date.now() + 3_600_000;
        await writeBuffer(b, p('tree/deep #1/same size'), Buffer.from('bbbb'));
        await b.setMetadata(p('tree/deep #1/same size'), { mtimeMs: later });
        await expectNew('a file rewritten at the same size');
        await writeBuffer(b, p('tree/deep #1/new ?%'), Buffer.from('new'));
        await expectNew('a file added');
        await b.remove(p('tree/deep #1/new ?%'));
        if (b.capabilities.emptyDirectories) {
          await b.mkdir(p('tree/empty dir'));
          await expectNew('a file removed, a directory added');
        }
        if (b.capabilities.atomicRename) {
          await b.rename(p('tree/deep #1/empty'), p('tree/deep #1/empty, renamed'));
          await expectNew('a file renamed');
        }
        if (b.capabilities.symlinks) {
          await b.remove(p('tree/link ü'));
          await b.symlink(p('tree/link ü'), '../tree/hash#tag');
          await expectNew('a symlink pointed elsewhere');
        }
        if (b.capabilities.modes) {
          await b.setMetadata(p('tree/hash#tag'), { mode: 0o600 });
          await expectNew('a mode changed');
        }
      } finally {
        await b.close();
      }
    });

    it('declares sane capabilities', async () => {
      const b = await open();
      try {
        const c = b.capabilities;
        assert.ok(c.atomicRename || c.atomicWrite, 'needs atomic rename or atomic writes: a file is complete or absent');
        assert.ok(Number.isInteger(c.maxConcurrency) && c.maxConcurrency >= 1);
        assert.ok(c.mtimePrecisionMs >= 0);
        assert.equal(typeof b.url, 'string');
        assert.ok(!/:[^/@]*@/.test(b.url), 'url shows no credentials');
      } finally {
        await b.close();
      }
    });

    if (options.cycle) {
      const cycle = options.cycle;
      describe('full spool cycle', () => {
        let work: string;
        before(async () => {
          work = await mkdtemp(path.join(tmpdir(), 'bitfog-conformance-'));
        });
        after(async () => {
          await rm(work, { recursive: true, force: true });
        });
        it('local → spool → backend over several trips, with changes and removals, and back out', async () => {
          await runCycleThrough({ work, registry: cycle.registry, backendUrl: await cycle.newUrl(), names });
        });
      });
    }
  });
}

function p(raw: string): RelPath {
  return toRelPath(raw);
}

export async function listAll(b: Destination): Promise<Entry[]> {
  const out: Entry[] = [];
  for await (const e of b.list()) out.push(e);
  return out.sort((a, c) => (a.path < c.path ? -1 : a.path > c.path ? 1 : 0));
}

async function writeBuffer(b: Destination, rel: RelPath, content: Buffer): Promise<void> {
  await b.write(rel, Readable.from(content.length ? [content] : []), { size: content.length });
}

async function readAll(b: Destination, rel: RelPath, range?: { start: number; end: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await b.read(rel, range)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode, whenResolved?: string): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isBitfogError(err), `expected a BitfogError with code ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    return true;
  }, whenResolved);
}

export { testPlugin, type PluginConformanceOptions } from './plugin.ts';
