/**
 * Provider of `http://host:port/area/` and `https://…` URLs: an area of a bitfog server
 * (`bitfog serve`, or an original Go bitfog server). Light: the client loads on `open`.
 */
import type { BackendProvider } from '../../core/types.ts';

export const httpProvider: BackendProvider = {
  schemes: ['http', 'https'],
  description: 'an area of a bitfog server, classic or ours (http://host:8675/area/)',
  capabilities: {
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
  },
  async open(url, options) {
    const { HttpBackend } = await import('./client.ts');
    return HttpBackend.open(url, options);
  },
};
