// The whole conformance kit, including a full spool cycle, against this plugin.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { testPlugin } from 'bitfog/conformance';
import plugin from '../index.ts';

const base = await mkdtemp(path.join(tmpdir(), 'dirstore-test-'));
after(() => rm(base, { recursive: true, force: true }));

testPlugin({
  plugin,
  newUrl: async () => `dirstore://${await mkdtemp(path.join(base, 'root-'))}`,
  largeFileBytes: Number(process.env.DIRSTORE_TEST_LARGE_BYTES ?? 8 * 1024 * 1024 + 7),
});
