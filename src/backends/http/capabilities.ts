/**
 * What the http backend can do, against our server and against a classic one. Kept apart
 * from the client so that the light provider (index.ts) declares the same flags without
 * loading the client.
 */
import type { Capabilities } from '../../core/types.ts';

/** What our server offers. */
export const extendedCapabilities: Capabilities = {
  atomicRename: true,
  atomicWrite: true,
  symlinks: true,
  rangedReads: true,
  serverSideHashes: true,
  mtimePrecisionMs: 0.001,
  modes: true,
  caseSensitive: true,
  emptyDirectories: false,
  maxConcurrency: 4,
};

/** What an original (classic) server offers. */
export const classicCapabilities: Capabilities = {
  atomicRename: false,
  atomicWrite: false,
  symlinks: true,
  rangedReads: false,
  serverSideHashes: false,
  mtimePrecisionMs: 0,
  modes: false,
  caseSensitive: true,
  emptyDirectories: false,
  maxConcurrency: 4,
};
