/** Byte moving without fresh memory per chunk (src/core/streams.ts). */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { chunksOf, GatheringWriter } from '../src/core/streams.ts';
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
});
