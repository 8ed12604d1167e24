#!/usr/bin/env node
// bitfog's executable: the bundled CLI (dist/cli.mjs, built by `npm run build`), or the
// TypeScript sources through tsx's loader when no bundle was built.
import { existsSync } from 'node:fs';

const bundle = new URL('../dist/cli.mjs', import.meta.url);
if (existsSync(bundle)) {
  await import(bundle.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
