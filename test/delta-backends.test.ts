/**
 * A VM-image-like delta cycle with a remote destination: bitfog's own HTTP server, WebDAV
 * (Apache mod_dav) and S3 (test/services). Each trip opens the destination afresh, as
 * separate runs would. WebDAV and S3 skip without their service outside CI.
 */
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { HashCache } from '../src/core/hashcache.ts';
import { toRelPath } from '../src/core/paths.ts';
import { Spool } from '../src/core/spool.ts';
import { storeFromSpool, type StoreResult } from '../src/core/store.ts';
import { xorshiftBytes } from './delta-helpers.ts';
import { serviceEnv } from './helpers/services.ts';
import { fetchLocalTree } from './helpers/spool.ts';
import { startServer } from './helpers/http.ts';
import { tempDir } from './helpers/tmp.ts';

const KiB = 1024;
const MiB = 1 << 20;
const delta = { minBytes: MiB };

const webdav = serviceEnv('webdav', ['WEBDAV_URL', 'WEBDAV_USER', 'WEBDAV_PASSWORD'] as const);
const s3 = serviceEnv('s3', ['S3_ENDPOINT', 'S3_TEST_BUCKET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'] as const);

const targets: Array<{ name: string; url: () => string | Promise<string>; env: NodeJS.ProcessEnv } | undefined> = [
  {
    name: 'http',
    url: async () => `${(await startServer({ 'vm area': { writable: true, checksum: true } })).url}vm%20area/`,
    env: {},
  },
  webdav && {
    name: 'webdav',
    url: () => `${webdav.WEBDAV_URL}${encodeURIComponent(`delta ${randomUUID()} #%`)}/`,
    env: { ...process.env, BITFOG_WEBDAV_USER: webdav.WEBDAV_USER, BITFOG_WEBDAV_PASSWORD: webdav.WEBDAV_PASSWORD },
  },
  s3 && {
    name: 's3',
    url: () => `s3://${s3.S3_TEST_BUCKET}/${encodeURIComponent(`delta ${randomUUID()} #%`)}/?endpoint=${encodeURIComponent(s3.S3_ENDPOINT)}`,
    env: process.env,
  },
];

function edited(data: Buffer, count: number, seed: number): Buffer {
  const out = Buffer.from(data);
  for (let i = 0; i < count; i++) xorshiftBytes(seed + i, 64 * KiB).copy(out, Math.floor(((i + 0.3) * (data.length - 64 * KiB)) / count));
  const mid = Math.floor(data.length / 2) + 333;
  return Buffer.concat([out.subarray(0, mid), xorshiftBytes(seed + 99, 50 * KiB), out.subarray(mid)]);
}

describe('delta transfer to remote destinations', () => {
  for (const name of ['http', 'webdav', 's3']) {
    const target = targets.find((t) => t?.name === name);
    it(`carries a changed disk image to ${name} as a delta and rebuilds it exactly`, { skip: target ? false : `no ${name} service` }, async () => {
      const t = target!;
      const dir = await tempDir(`delta-${name}`);
      const a = path.join(dir, 'site a');
      const spoolDir = path.join(dir, 'spool');
      await fsp.mkdir(path.join(a, 'vm'), { recursive: true });
      const url = await t.url();
      const registry = createDefaultRegistry();
      const trip = async (): Promise<StoreResult> => {
        await fetchLocalTree(a, spoolDir, { delta });
        const dest = await registry.openDestination(url, { env: t.env });
        const spool = await Spool.open(spoolDir, { create: false });
        try {
          return await storeFromSpool({ destination: dest, spool, cache: HashCache.memory(), delta });
        } finally {
          await spool.close();
          await dest.close();
        }
      };
      const img = xorshiftBytes(500, 6 * MiB);
      await fsp.writeFile(path.join(a, 'vm', 'disk 1.img'), img);
      await trip();
      const next = edited(img, 5, 600);
      await fsp.writeFile(path.join(a, 'vm', 'disk 1.img'), next);
      const st = await trip();
      assert.equal(st.delta.files, 1);
      assert.deepEqual(st.delta.refused, []);
      assert.ok(st.delta.carriedBytes < 2 * MiB, `carried ${st.delta.carriedBytes}`);
      const dest = await registry.openSource(url, { env: t.env });
      try {
        const h = createHash('sha256');
        for await (const c of await dest.read(toRelPath('vm/disk 1.img'))) h.update(c as Buffer);
        assert.equal(h.digest('hex'), createHash('sha256').update(next).digest('hex'));
      } finally {
        await dest.close();
      }
    });
  }
});
