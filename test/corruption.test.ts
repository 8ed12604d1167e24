/**
 * Bytes flipped on the spool: verify finds them, store never writes them, the next trip
 * carries them again. And a damaged or foreign manifest is refused with a clear error.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { bitfog, bitfogOk } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { flipStoredByte, storedBlobs } from './helpers/spool-files.ts';
import { contentOf, makeTree, readTree } from './helpers/tree.ts';

describe('corrupt spool content', () => {
  it('verify lists it, store does not write it, the next trip carries it again', async () => {
    const dir = await tempDir('corrupt');
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    const spool = path.join(dir, 'spool');
    await makeTree(a, { 'good one.txt': 'good content\n', 'victim #1.bin': { bytes: 100_000, seed: 5 }, 'same as victim.bin': { bytes: 100_000, seed: 5 } });
    await bitfogOk(['store', spool, b]);
    await bitfogOk(['fetch', a, spool], { env });
    const clean = await bitfogOk(['verify', spool], { env });
    assert.match(clean.stderr, /^verify: \d+ files, .* to check$/m, 'verify checks; it moves nothing');

    // 100 kB is read whole by fetch: packed (see src/core/packs.ts).
    const victim = (await storedBlobs(spool)).find((b) => b.size === 100_000)!;
    assert.ok(victim.packed, 'a small file is carried in a pack');
    await flipStoredByte(victim, 54_321);

    const v = await bitfog(['verify', spool], { env });
    assert.equal(v.code, 4, 'verify exits 4 on corruption');
    assert.match(v.stdout, /^corrupt: sha256:[0-9a-f]{64}: content hashes to sha256:/m);
    assert.match(v.stdout, /used by (victim #1\.bin|same as victim\.bin)/);

    const s = await bitfog(['store', spool, b], { env });
    assert.equal(s.code, 4, `store exits 4 when it met corrupt content: ${s.stderr}`);
    assert.match(s.stderr, /spool content failed verification/);
    const landed = await readTree(b);
    assert.ok(!landed.has('victim #1.bin') && !landed.has('same as victim.bin'), 'corrupt content never lands');
    assert.ok(landed.has('good one.txt'));
    assert.deepEqual(
      [...landed.keys()].filter((p) => p.includes('.bitfog-tmp-')),
      [],
      'no temporary file is left behind',
    );

    // The corrupt blob was dropped from the spool; the next trip carries it again.
    await bitfogOk(['verify', spool], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
  });

  it('verify reports carried content that is no longer on the spool', async () => {
    const dir = await tempDir('missing blob');
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    const spool = path.join(dir, 'spool');
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    await makeTree(a, { 'big #1.bin': { bytes: 3_000_000, seed: 7 }, 'small ü.txt': 'small' });
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['verify', spool], { env });
    const blobFiles: string[] = [];
    for (const name of await fsp.readdir(path.join(spool, 'blobs'), { recursive: true })) {
      const p = path.join(spool, 'blobs', name);
      if ((await fsp.stat(p)).isFile()) blobFiles.push(p);
    }
    assert.equal(blobFiles.length, 1, 'the large file is a blob file of its own');
    await fsp.rm(blobFiles[0]!);
    const v = await bitfog(['verify', spool], { env });
    assert.equal(v.code, 4, v.stdout + v.stderr);
    assert.match(v.stdout, /^missing: sha256:[0-9a-f]{64} \(2\.86 MiB\): listed as carried, not on the spool; used by "?big #1\.bin"?$/m);
    assert.match(v.stdout, /1 missing/);
    // The next trips carry it again, and then all is well.
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    await bitfogOk(['verify', spool], { env });
  });

  it('refuses a damaged manifest, and one of a newer format, with a clear error', async () => {
    const dir = await tempDir('badmanifest');
    const a = path.join(dir, 'a');
    const spool = path.join(dir, 'spool');
    await makeTree(a, { 'x.txt': 'x' });
    await bitfogOk(['fetch', a, spool]);
    const manifest = path.join(spool, 'manifest.db');
    const original = await fsp.readFile(manifest);

    await fsp.writeFile(manifest, Buffer.concat([original.subarray(0, 100), Buffer.alloc(4096, 0xab)]));
    const r = await bitfog(['status', spool]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^bitfog: .*(damaged|not a bitfog manifest)/m);

    await fsp.writeFile(manifest, 'not sqlite at all');
    const r2 = await bitfog(['store', spool, path.join(dir, 'b')]);
    assert.equal(r2.code, 1);
    assert.match(r2.stderr, /not a bitfog manifest/);
    await assert.rejects(fsp.access(path.join(dir, 'b', 'x.txt')), 'nothing written from a damaged spool');

    // A manifest from a future bitfog.
    const { Manifest } = await import('../src/core/manifest.ts');
    await fsp.writeFile(manifest, original);
    const m = await Manifest.load(manifest);
    m.setMeta('format_version', '99');
    await m.save(manifest);
    m.close();
    const r3 = await bitfog(['fetch', a, spool]);
    assert.equal(r3.code, 1);
    assert.match(r3.stderr, /manifest format 99; this bitfog reads format 3 and older/);
  });
});
