// Bundles the CLI into dist/cli.mjs (plus lazily loaded chunks) with esbuild (shipped inside tsx), so that starting
// `bitfog` does not transpile TypeScript on every run. Dependencies stay external: their
// own packages are loaded from node_modules as usual. Run by `npm install` (prepare),
// `npm test`, `npm run demo` and `npm run bench`; bin/bitfog.mjs falls back to the
// TypeScript sources when dist/ is missing.
import { build } from 'esbuild';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
const result = await build({
  // The signature worker is an entry of its own: a worker thread loads it by file name
  // (see src/core/delta/signer.ts).
  entryPoints: { cli: path.join(root, 'src/cli/main.ts'), 'sign-worker': path.join(root, 'src/core/delta/sign-worker.ts') },
  outdir: path.join(root, 'dist'),
  outExtension: { '.js': '.mjs' },
  // Each dynamic import() becomes its own chunk, loaded only when reached: a backend's
  // implementation (and the SDK it imports) stays out of `bitfog --help`.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  logLevel: 'warning',
  metafile: true,
  absWorkingDir: root, // metafile paths are relative to it
});

// Chunk names carry a content hash, so every changed build leaves its old chunks behind:
// remove those this build did not write.
const chunks = path.join(root, 'dist', 'chunks');
const written = new Set(Object.keys(result.metafile.outputs).map((file) => path.resolve(root, file)));
for (const name of existsSync(chunks) ? readdirSync(chunks) : []) {
  const file = path.join(chunks, name);
  if (!written.has(file)) rmSync(file, { force: true });
}
