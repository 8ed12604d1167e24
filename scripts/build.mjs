// Bundles the CLI into dist/cli.mjs (plus lazily loaded chunks) with esbuild (shipped inside tsx), so that starting
// `bitfog` does not transpile TypeScript on every run. Dependencies stay external: their
// own packages are loaded from node_modules as usual. Run by `npm install` (prepare),
// `npm test`, `npm run demo` and `npm run bench`; bin/bitfog.mjs falls back to the
// TypeScript sources when dist/ is missing.
import { build } from 'esbuild';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..');
/** Dependencies bundled into dist/ rather than loaded from node_modules (see `external`). */
const BUNDLED = ['clipanion', 'typanion'];
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
  // Dependencies stay external, loaded from node_modules, except the command-line parser:
  // clipanion is some twenty CommonJS files that every command loads before anything else,
  // about 80 ms of each start through Node's CommonJS loader, a few ms once bundled.
  external: Object.keys(JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).dependencies).filter((d) => !BUNDLED.includes(d)),
  // The bundled CommonJS require()s Node's own modules ('tty'): give the ESM output a require.
  banner: { js: "import { createRequire as __bitfogCreateRequire } from 'node:module'; const require = __bitfogCreateRequire(import.meta.url);" },
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
