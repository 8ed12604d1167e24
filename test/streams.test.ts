/** Byte moving without fresh memory per chunk (src/core/streams.ts). */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { copyFile, mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { isBitfogError } from '../src/core/errors.ts';
import { WriteBehind } from '../src/core/fsutil.ts';
import { PACK_MAX_BYTES, packWritesMade } from '../src/core/packs.ts';
import { Spool } from '../src/core/spool.ts';
import { chunksOf, GatheringWriter, readPieces, ScratchBuffers } from '../src/core/streams.ts';
import type { OpenFile } from '../src/core/types.ts';
import { storedBlobs, storedContent } from './helpers/spool-files.ts';
import { tempDir } from './helpers/tmp.ts';

describe('chunksOf', () => {
  it('yields chunks as they were pushed, never joined, even when several wait', async () => {
    const s = new PassThrough();
    for (let i = 0; i < 10; i++) s.write(Buffer.alloc(1000, i));
    s.end();
    await new Promise((r) => setTimeout(r, 10)); // all ten are buffered now
    const got: Buffer[] = [];
    for await (const c of chunksOf(s)) got.push(c);
    assert.deepEqual(got.map((c) => [c.length, c[0]]), Array.from({ length: 10 }, (_, i) => [1000, i]));
  });

  it('passes errors on, and destroys the stream when the consumer stops early', async () => {
    const failing = new Readable({ read() { this.destroy(new Error('disk on fire')); } });
    await assert.rejects(async () => { for await (const _ of chunksOf(failing)) { /* nothing */ } }, /disk on fire/);
    const endless = new Readable({ read() { this.push(Buffer.alloc(10)); } });
    for await (const _ of chunksOf(endless)) break;
    assert.ok(endless.destroyed, 'the source is released');
    // A stream closed without ending ends the iteration (callers count the bytes).
    const cut = new Readable({ read() { this.push(Buffer.alloc(5)); this.destroy(); } });
    let n = 0;
    for await (const c of chunksOf(cut)) n += c.length;
    assert.ok(n <= 5);
    // Destroyed before anything read it (an interrupt while the caller opened its file),
    // its error already emitted to someone else: that error, at once, not a wait for events
    // that never come again.
    const early = new PassThrough();
    early.on('error', () => {});
    early.destroy(new Error('interrupted early'));
    await new Promise((r) => setTimeout(r, 10));
    const hung = new Promise((_, reject) => setTimeout(() => reject(new Error('waited for ever')), 2000).unref());
    await assert.rejects(Promise.race([(async () => { for await (const _ of chunksOf(early)) { /* nothing */ } })(), hung]), /interrupted early/);
    const closedEarly = new PassThrough();
    closedEarly.destroy();
    await new Promise((r) => setTimeout(r, 10));
    let m = 0;
    await Promise.race([(async () => { for await (const c of chunksOf(closedEarly)) m += c.length; })(), hung]);
    assert.equal(m, 0);
    // Other async iterables pass through.
    const plain: Buffer[] = [];
    const gen = async function* () { yield Buffer.from('a'); yield Buffer.from('b'); };
    for await (const c of chunksOf(gen())) plain.push(c);
    assert.equal(Buffer.concat(plain).toString(), 'ab');
  });
});

describe('GatheringWriter', () => {
  it('writes chunks of every awkward size, several files at once, byte for byte', async () => {
    const dir = await tempDir('gather');
    const sizes = [0, 1, 512 * 1024 - 1, 512 * 1024, 512 * 1024 + 1, 3 * 1024 * 1024 + 7, 17];
    const write = async (name: string, seed: number) => {
      const parts = sizes.map((n, i) => randomBytes(n).fill(seed + i, 0, Math.min(n, 3)));
      const handle = await open(path.join(dir, name), 'w');
      const w = new GatheringWriter(handle);
      const scratch = Buffer.alloc(4 * 1024 * 1024);
      for (const p of parts) {
        p.copy(scratch);
        await w.write(scratch.subarray(0, p.length));
        scratch.fill(0xee); // the writer must have taken what it needs
      }
      await w.end();
      await handle.close();
      assert.ok((await readFile(path.join(dir, name))).equals(Buffer.concat(parts)), name);
    };
    await Promise.all([write('one #1.bin', 1), write('two ü.bin', 100), write('three.bin', 200)]);
    await write('after, with reused buffers.bin', 50);
  });

  it('tells its write-behind of each write once it is done, and fails with a failed background flush', async () => {
    const dir = await tempDir('gather-behind');
    const handle = await open(path.join(dir, 'behind #1.bin'), 'w');
    let flushes = 0;
    let fail = false;
    // The real descriptor's datasync, failing when told to (a disk that went bad).
    const flushing = { datasync: async () => { flushes++; if (fail) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }); await handle.datasync(); } };
    const behind = new WriteBehind(flushing, 1024 * 1024);
    const w = new GatheringWriter(handle, behind);
    const piece = randomBytes(300 * 1024);
    for (let i = 0; i < 8; i++) await w.write(piece); // 2.4 MiB: flushes start behind the writes
    await w.end();
    await behind.finish();
    assert.ok(flushes >= 2, `background flushes and the final one (${flushes})`);
    assert.equal((await readFile(path.join(dir, 'behind #1.bin'))).length, 8 * piece.length);

    fail = true;
    const w2 = new GatheringWriter(handle, new WriteBehind(flushing, 512 * 1024));
    await assert.rejects(async () => {
      for (let i = 0; i < 16; i++) await w2.write(piece);
      await w2.end();
    }, /fdatasync/);
    w2.release();
    await handle.close();
  });
});

describe('the spool\'s background flushes', () => {
  it('leave every blob written or imported without durable intact once syncBlobs resolves', async () => {
    const dir = await tempDir('spool-flush');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    const big = randomBytes(9 * 1024 * 1024 + 3);
    const small = randomBytes(1000);
    await writeFile(path.join(dir, 'big copy'), big);
    const hashes = [
      await spool.writeBlob(Readable.from([big.subarray(0, 5000), big.subarray(5000)]), { size: big.length }, { durable: false }),
      await spool.writeBlob(Readable.from([small]), { size: small.length }, { durable: false }),
      await spool.importBlob((file) => copyFile(path.join(dir, 'big copy'), file), { size: big.length }, { durable: false }),
    ];
    assert.equal(hashes[0], hashes[2], 'the same content, written and imported');
    await spool.syncBlobs(hashes);
    for (const [h, want] of [[hashes[0]!, big], [hashes[1]!, small]] as const) {
      assert.ok((await readFile(spool.blobPath(h))).equals(want), 'blob intact');
    }
    await spool.close();
  });
});

describe('readPieces', () => {
  /** An OpenFile over memory whose reads take a while and land in the caller's buffer only when they complete. */
  function memoryFile(data: Buffer, failAt?: number) {
    const reads: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const file: OpenFile = {
      size: data.length,
      async read(buffer, offset, length, position) {
        reads.push(position);
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        await new Promise((r) => setTimeout(r, 1));
        inFlight--;
        if (failAt !== undefined && position >= failAt) throw new Error('bad sector');
        return data.copy(buffer, offset, Math.min(position, data.length), Math.min(position + length, data.length));
      },
      close: async () => {},
    };
    return { file, reads, inFlight: () => inFlight, maxInFlight: () => maxInFlight };
  }

  it('reads a file in order through reused buffers, one read ahead of a consumer that may be slow', async () => {
    const data = randomBytes(3 * 256 * 1024 + 12345);
    const m = memoryFile(data);
    const seen: Buffer[] = [];
    const buffers = new Set<ArrayBufferLike>();
    const bytes = await readPieces(m.file, async (piece) => {
      buffers.add(piece.buffer);
      await new Promise((r) => setTimeout(r, 2)); // the next read lands meanwhile, in the other buffer
      seen.push(Buffer.from(piece));
    });
    assert.equal(bytes, data.length);
    assert.ok(Buffer.concat(seen).equals(data));
    assert.equal(buffers.size, 2, 'two buffers, reused');
    assert.equal(m.maxInFlight(), 1);
    assert.deepEqual(m.reads, [0, 1, 2, 3, 4].map((i) => Math.min(i * 256 * 1024, data.length)));
  });

  it('stops at a read error or an abort, with no read left in flight', async () => {
    const data = randomBytes(5 * 256 * 1024);
    const failing = memoryFile(data, 2 * 256 * 1024);
    await assert.rejects(readPieces(failing.file, () => {}), /bad sector/);
    assert.equal(failing.inFlight(), 0);
    const ac = new AbortController();
    const aborted = memoryFile(data);
    await assert.rejects(readPieces(aborted.file, () => ac.abort(), { signal: ac.signal }), (err) => isBitfogError(err, 'EABORTED'));
    assert.equal(aborted.inFlight(), 0);
    const empty = memoryFile(Buffer.alloc(0));
    assert.equal(await readPieces(empty.file, () => assert.fail('no piece of an empty file')), 0);
  });
});

describe('the spool\'s background flushes, when they fail or take long', () => {
  const MiB = 1024 * 1024;
  it('a failed flush fails syncBlobs, every time, until the blob is removed', async () => {
    const dir = await tempDir('spool-flush-fails');
    const spool = await Spool.open(path.join(dir, 'spool'), {
      create: true,
      datasync: async () => { throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' }); },
    });
    try {
      const big = randomBytes(9 * MiB);
      const hash = await spool.writeBlob(Readable.from([big]), { size: big.length }, { durable: false });
      await assert.rejects(spool.syncBlobs([hash]), (e: unknown) => isBitfogError(e, 'EIO') && /durable/.test((e as Error).message));
      await assert.rejects(spool.syncBlobs([hash]), /durable/, 'a second call does not forget the failure');
      await spool.removeBlob(hash);
      await spool.syncBlobs([hash]); // gone: nothing to keep, nothing to report
    } finally {
      await spool.close();
    }
  });

  it('an in-kernel copy starts its flush before it is read back, and the read-back outlives a quick flush', async () => {
    const dir = await tempDir('spool-import-flush');
    const events: string[] = [];
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true, datasync: async () => void events.push('flush') });
    try {
      const big = randomBytes(24 * MiB + 5);
      await writeFile(path.join(dir, 'big source'), big);
      const want = `sha256:${createHash('sha256').update(big).digest('hex')}`;
      let hashedBytes = 0;
      const hash = await spool.importBlob((file) => copyFile(path.join(dir, 'big source'), file), { size: big.length }, {
        durable: false,
        onBytes: (n) => {
          if (hashedBytes === 0) events.push('hashing');
          hashedBytes += n;
        },
      });
      // The flush (here done at once) must not close the descriptor the hashing reads through.
      assert.equal(hash, want);
      assert.equal(hashedBytes, big.length);
      assert.deepEqual(events, ['flush', 'hashing'], 'the disk was asked to write before the copy was read back');
      await spool.syncBlobs([hash]);
    } finally {
      await spool.close();
    }
  });

  it('close waits for a flush still running', async () => {
    const dir = await tempDir('spool-flush-waits');
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let flushing = 0;
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true, datasync: async () => { flushing++; await held; } });
    const big = randomBytes(9 * MiB);
    await spool.writeBlob(Readable.from([big]), { size: big.length }, { durable: false });
    assert.equal(flushing, 1, 'the flush started when the blob was written');
    let closed = false;
    const closing = spool.close().then(() => (closed = true));
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(closed, false, 'close waits for the flush');
    release();
    await closing;
  });
});

describe('the spool\'s small blobs', () => {
  it('a duplicate is not packed again; once removed, it is', async () => {
    const dir = await tempDir('spool-small-dup');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      const content = Buffer.from('the same small file, twice ü\n');
      const hash = await spool.putSmallBlob(content, { size: content.length });
      assert.equal(await spool.putSmallBlob(Buffer.from(content), { size: content.length }), hash);
      assert.equal((await storedBlobs(path.join(dir, 'spool'))).filter((b) => b.hash === hash).length, 1, 'packed once');
      await assert.rejects(spool.putSmallBlob(content, { size: content.length, hash: 'sha256:' + '0'.repeat(64) }), (e: unknown) => isBitfogError(e, 'EINTEGRITY'));
      await spool.removeBlob(hash);
      assert.equal(spool.has(hash), false);
      assert.equal(await spool.putSmallBlob(content, { size: content.length }), hash);
      assert.ok((await spool.readSmallBlob(hash, content.length)).equals(content), 'packed again after removal');
    } finally {
      await spool.close();
    }
  });

  it('reads back, as a whole, as a stream and hashed, what was packed; an empty blob too', async () => {
    const dir = await tempDir('spool-small-read');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      for (const content of [Buffer.alloc(0), Buffer.from('a small file #1 %20 ü?\n'), randomBytes(300_000)]) {
        const hash = await spool.putSmallBlob(content, { size: content.length });
        assert.ok((await spool.readSmallBlob(hash, content.length)).equals(content));
        assert.ok((await spool.readSmallBlob(hash, content.length, Buffer.alloc(content.length + 10))).equals(content), 'into lent memory');
        const streamed: Buffer[] = [];
        for await (const chunk of await spool.readBlob(hash)) streamed.push(chunk as Buffer);
        assert.ok(Buffer.concat(streamed).equals(content), `${content.length} bytes as a stream`);
        assert.deepEqual(await spool.hashBlob(hash), { hash, bytes: content.length });
      }
    } finally {
      await spool.close();
    }
  });
});

describe('packs', () => {
  const blob = (i: number) => Buffer.from(`packed blob ${i} #%? ü ${'y'.repeat(i * 13)}`);
  const hashOf = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

  async function packed(dir: string, count: number): Promise<string[]> {
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      const hashes = await Promise.all(Array.from({ length: count }, (_, i) => spool.putSmallBlob(blob(i), { size: blob(i).length })));
      await spool.save();
      return hashes;
    } finally {
      await spool.close();
    }
  }

  it('are found again when the spool is opened, in one pack file', async () => {
    const dir = await tempDir('packs-reopen');
    const hashes = await packed(dir, 50);
    assert.equal((await readdir(path.join(dir, 'spool', 'packs'))).length, 1);
    const spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      for (const [i, h] of hashes.entries()) {
        assert.equal(h, hashOf(blob(i)));
        assert.ok((await spool.readSmallBlob(h, blob(i).length)).equals(blob(i)), `blob ${i}`);
      }
      assert.equal(spool.blobs().length, 50);
    } finally {
      await spool.close();
    }
  });

  it('a record torn by a crash, and everything after it, is not carried; the rest is', async () => {
    const dir = await tempDir('packs-torn');
    await packed(dir, 10);
    const records = await storedBlobs(path.join(dir, 'spool'));
    const byHash = new Map(records.map((r) => [r.hash, r]));
    const seventh = byHash.get(hashOf(blob(6)))!;
    // A write that died half-way: the file ends inside the seventh record (by offset).
    const cut = seventh.offset + Math.floor(seventh.size / 2);
    const kept = records.filter((r) => r.offset + r.size <= seventh.header!).map((r) => r.hash);
    const h = await open(seventh.file, 'r+');
    await h.truncate(cut);
    await h.close();
    let spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.deepEqual(spool.blobs().map((b) => b.hash).sort(), [...kept].sort());
      // Carried again, into a new pack: both read back.
      await spool.putSmallBlob(blob(6), { size: blob(6).length });
      assert.ok((await spool.readSmallBlob(hashOf(blob(6)), blob(6).length)).equals(blob(6)));
      await spool.save();
    } finally {
      await spool.close();
    }
    assert.equal((await readdir(path.join(dir, 'spool', 'packs'))).length, 2);
    // A header overwritten with garbage ends its pack there too: here its first one.
    const first = (await storedBlobs(path.join(dir, 'spool'))).find((r) => r.file === seventh.file && r.header === 0)!;
    const g = await open(first.file, 'r+');
    await g.write(Buffer.from('XXXX'), 0, 4, first.header!);
    await g.close();
    spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.deepEqual(spool.blobs().map((b) => b.hash), [hashOf(blob(6))]);
    } finally {
      await spool.close();
    }
  });

  it('removing some marks their records; removing the last of a pack deletes it; both hold after reopening', async () => {
    const dir = await tempDir('packs-remove');
    const hashes = await packed(dir, 5);
    let spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      await spool.removeBlobs([hashes[1]!, hashes[3]!]);
      await spool.removeBlob(hashes[4]!);
    } finally {
      await spool.close();
    }
    spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.deepEqual(spool.blobs().map((b) => b.hash).sort(), [hashes[0]!, hashes[2]!].sort());
      assert.ok((await spool.readSmallBlob(hashes[2]!, blob(2).length)).equals(blob(2)));
      await spool.removeBlobs([hashes[0]!, hashes[2]!]);
      assert.deepEqual(await readdir(path.join(dir, 'spool', 'packs')), [], 'the emptied pack is deleted');
    } finally {
      await spool.close();
    }
  });

  it('a pack whose records were all marked removed (a run died before deleting it) is deleted when the spool is opened', async () => {
    const dir = await tempDir('packs-dead');
    await packed(dir, 3);
    for (const r of await storedBlobs(path.join(dir, 'spool'))) {
      const h = await open(r.file, 'r+');
      await h.write(Buffer.from('D'), 0, 1, r.header! + 4);
      await h.close();
    }
    const spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.deepEqual(spool.blobs(), []);
      assert.deepEqual(await readdir(path.join(dir, 'spool', 'packs')), []);
    } finally {
      await spool.close();
    }
  });

  it('the same content packed twice at once is written once; a second record found on disk does not bring a removed one back', async () => {
    const dir = await tempDir('packs-dup');
    const content = Buffer.from('the same content, twice at once #1 ü\n');
    let spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      const [h1, h2] = await Promise.all([spool.putSmallBlob(content, { size: content.length }), spool.putSmallBlob(Buffer.from(content), { size: content.length })]);
      assert.equal(h1, h2);
      assert.equal((await storedBlobs(path.join(dir, 'spool'))).filter((b) => b.hash === h1).length, 1, 'one record');
      await spool.putSmallBlob(blob(1), { size: blob(1).length });
      await spool.save();
    } finally {
      await spool.close();
    }
    // A second live record of the same content (as an older bitfog or a crash could leave).
    const [record] = (await storedBlobs(path.join(dir, 'spool'))).filter((b) => b.hash === hashOf(content));
    const bytes = await readFile(record!.file);
    await writeFile(record!.file, Buffer.concat([bytes, bytes.subarray(record!.header!, record!.offset + record!.size)]));
    spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.ok((await spool.readSmallBlob(hashOf(content), content.length)).equals(content));
      await spool.removeBlob(hashOf(content));
    } finally {
      await spool.close();
    }
    spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      assert.deepEqual(spool.blobs().map((b) => b.hash), [hashOf(blob(1))], 'removed for good');
    } finally {
      await spool.close();
    }
  });

  it('removes exactly the ones asked for, packed or files of their own, found when opened or written since', async () => {
    const dir = await tempDir('spool-remove-mixed');
    let spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    const early = await Promise.all([0, 1, 2].map((i) => spool.putSmallBlob(blob(i), { size: blob(i).length })));
    const looseEarly = await spool.writeBlob(Readable.from([blob(20)]), { size: blob(20).length });
    await spool.save();
    await spool.close();
    spool = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      const late = await Promise.all([3, 4].map((i) => spool.putSmallBlob(blob(i), { size: blob(i).length })));
      const looseLate = await spool.writeBlob(Readable.from([blob(21)]), { size: blob(21).length });
      await spool.removeBlobs([late[1]!, early[2]!, early[0]!, looseEarly]);
      const gone = [early[0]!, early[2]!, late[1]!, looseEarly];
      const kept = [early[1]!, late[0]!, looseLate];
      for (const h of gone) assert.equal(spool.has(h), false);
      await assert.rejects(stat(spool.blobPath(looseEarly)), /ENOENT/);
      assert.deepEqual(spool.blobs().map((b) => b.hash).sort(), [...kept].sort());
      await spool.save();
      await spool.close();
      spool = await Spool.open(path.join(dir, 'spool'), { create: false });
      assert.deepEqual(spool.blobs().map((b) => b.hash).sort(), [...kept].sort(), 'the same after reopening');
    } finally {
      await spool.close();
    }
  });

  it('a full pack is followed by a new one', async () => {
    const dir = await tempDir('packs-rollover');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      const big = randomBytes(1024 * 1024 - 1);
      const hashes: string[] = [];
      for (let i = 0; i < Math.ceil(PACK_MAX_BYTES / big.length) + 1; i++) {
        big.writeUInt32LE(i, 0);
        hashes.push(await spool.putSmallBlob(big, { size: big.length }));
      }
      assert.equal((await readdir(path.join(dir, 'spool', 'packs'))).length, 2);
      big.writeUInt32LE(0, 0);
      assert.ok((await spool.readSmallBlob(hashes[0]!, big.length)).equals(big));
    } finally {
      await spool.close();
    }
  });
});

describe('pack writes', () => {
  it('packs many at once in one write, keeping each caller\'s bytes as they were when it called', async () => {
    const dir = await tempDir('spool-small-batch');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    try {
      const before = packWritesMade();
      const scratch = Buffer.alloc(4096);
      const contents = Array.from({ length: 200 }, (_, i) => Buffer.from(`small blob #${i} ü ${'x'.repeat(i * 7)}`));
      const hashes = await Promise.all(
        contents.map((c) => {
          // One scratch buffer for all, overwritten at once: what lands must be what each call saw.
          c.copy(scratch);
          const landing = spool.putSmallBlob(scratch.subarray(0, c.length), { size: c.length });
          scratch.fill(0);
          return landing;
        }),
      );
      // 200 records of about 150 kB in all, asked for in one turn of the event loop: one write.
      assert.equal(packWritesMade() - before, 1, 'one write');
      const stored = new Map((await storedBlobs(path.join(dir, 'spool'))).map((b) => [b.hash, b]));
      for (const [i, c] of contents.entries()) {
        assert.equal(hashes[i], 'sha256:' + createHash('sha256').update(c).digest('hex'));
        assert.ok((await storedContent(stored.get(hashes[i]!)!)).equals(c), `blob ${i} holds its content`);
        assert.ok(spool.has(hashes[i]!));
      }
    } finally {
      await spool.close();
    }
  });

  it('writes more than a batch holds, and a record larger than a batch, each where it belongs', async () => {
    const dir = await tempDir('spool-small-batches');
    const spool = await Spool.open(path.join(dir, 'spool'), { create: true });
    let hashes: string[];
    const contents = [...Array.from({ length: 40 }, () => randomBytes(100_000)), randomBytes(1024 * 1024 - 1), randomBytes(5), Buffer.alloc(0)];
    try {
      const before = packWritesMade();
      // 40 × 100 kB (more than one batch of 1 MiB), one of 1 MiB − 1 byte (a record larger than a batch), then more.
      hashes = await Promise.all(contents.map((c) => spool.putSmallBlob(c, { size: c.length })));
      const writes = packWritesMade() - before;
      assert.ok(writes >= 4 && writes < contents.length, `a few writes, not one each (${writes})`);
    } finally {
      await spool.close();
    }
    const reopened = await Spool.open(path.join(dir, 'spool'), { create: false });
    try {
      for (const [i, c] of contents.entries()) assert.ok((await reopened.readSmallBlob(hashes[i]!, c.length)).equals(c), `blob ${i} after reopening`);
    } finally {
      await reopened.close();
    }
  });
});

describe('ScratchBuffers', () => {
  it('lends each buffer to one holder at a time, large enough, and reuses what comes back', () => {
    const pool = new ScratchBuffers(2);
    const a = pool.take(5000);
    const b = pool.take(5000);
    assert.ok(a.length >= 5000 && b.length >= 5000);
    assert.notEqual(a.buffer, b.buffer, 'two holders never share memory');
    assert.equal(pool.take(1).length, ScratchBuffers.MIN_BYTES);
    pool.give(a);
    assert.equal(pool.take(6000), a, 'given back, lent again');
    assert.notEqual(pool.take(6000).buffer, a.buffer, 'but not twice');
    // It keeps at most `keepEach` of a size: the rest is left to the garbage collector.
    const many = [pool.take(100_000), pool.take(100_000), pool.take(100_000)];
    for (const m of many) pool.give(m);
    const again = [pool.take(100_000), pool.take(100_000), pool.take(100_000)];
    assert.equal(again.filter((m) => many.includes(m)).length, 2);
  });
});
