import path from 'node:path';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { LocalBackend } from '../src/backends/local/index.ts';
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
