/** What the WebDAV backend can do (shared by the light provider and the implementation). */
import type { Capabilities } from '../../core/types.ts';

export const webdavCapabilities: Capabilities = {
  // Apache's MOVE with `Overwrite: T` replaces the target by a rename(2) on one file system.
  atomicRename: true,
  atomicWrite: false,
  symlinks: false,
  rangedReads: true,
  serverSideHashes: false,
  // Kept exactly in the bitfog:mtime dead property; servers without dead properties give seconds.
  mtimePrecisionMs: 0.001,
  modes: false,
  caseSensitive: true,
  emptyDirectories: true,
  maxConcurrency: 8,
};
