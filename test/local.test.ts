import path from 'node:path';
import { LocalBackend } from '../src/backends/local/index.ts';
import { testBackend } from '../src/conformance/index.ts';
import { tempDir } from './helpers/tmp.ts';

testBackend({
  name: 'local',
  open: async () => {
    const dir = await tempDir('local-conf');
    return LocalBackend.open(dir, path.join(dir, 'root'), { write: true });
  },
});
