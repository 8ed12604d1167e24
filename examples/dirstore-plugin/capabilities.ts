/**
 * What a dirstore can do (see dirstore.ts for why). Kept apart from the backend so the
 * plugin entry can declare capabilities without loading the implementation.
 */
import type { Capabilities } from 'bitfog/plugin';

export const dirstoreCapabilities: Capabilities = {
  atomicRename: true,
  atomicWrite: true,
  symlinks: false,
  rangedReads: true,
  serverSideHashes: true,
  mtimePrecisionMs: 1000,
  modes: false,
  caseSensitive: true,
  emptyDirectories: true,
  maxConcurrency: 4,
};
