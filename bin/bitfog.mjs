#!/usr/bin/env node
// bitfog's executable: loads the TypeScript sources through tsx's loader, then the CLI.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
