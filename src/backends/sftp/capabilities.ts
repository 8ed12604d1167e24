/**
 * What the SFTP backend can do. Kept apart from the implementation so that the light
 * provider (index.ts) declares the same flags without loading it.
 */
import type { Capabilities } from '../../core/types.ts';

export const sftpCapabilities: Capabilities = {
  atomicRename: true,
  atomicWrite: false,
  symlinks: true,
  rangedReads: true,
  serverSideHashes: false,
  mtimePrecisionMs: 1000,
  modes: true,
  caseSensitive: true,
  emptyDirectories: true,
  maxConcurrency: 8,
};
