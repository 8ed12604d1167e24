// Bundles the CLI into dist/cli.mjs with esbuild (shipped inside tsx), so that starting
// `bitfog` does not transpile TypeScript on every run. Dependencies stay external: their
// own packages are loaded from node_modules as usual. Run by `npm install` (prepare),
// `npm test`, `npm run demo` and `npm run bench`; bin/bitfog.mjs falls back to the
// TypeScript sources when dist/ is missing.
import { build } from 'esbuild';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
await build({
  entryPoints: [path.join(root, 'src/cli/main.ts')],
  outfile: path.join(root, 'dist/cli.mjs'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  logLevel: 'warning',
});
