// Expected to FAIL: the kit catches the broken atomicWrite claim (see ../index.ts).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';
import { testPlugin } from 'bitfog/conformance';
import plugin from '../index.ts';

const base = await mkdtemp(path.join(tmpdir(), 'hasty-test-'));
after(() => rm(base, { recursive: true, force: true }));

testPlugin({
  plugin,
  newUrl: async () => `hasty://${await mkdtemp(path.join(base, 'root-'))}`,
  largeFileBytes: 1024 * 1024,
});
