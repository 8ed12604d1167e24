/**
 * Provider of `http://host:port/area/` and `https://…` URLs: an area of a bitfog server
 * (`bitfog serve`, or an original Go bitfog server). Light: the client loads on `open`.
 */
import type { BackendProvider } from '../../core/types.ts';
import { extendedCapabilities } from './capabilities.ts';

export const httpProvider: BackendProvider = {
  schemes: ['http', 'https'],
  description: 'an area of a bitfog server, classic or ours (http://host:8675/area/)',
  capabilities: extendedCapabilities,
  async open(url, options) {
    const { HttpBackend } = await import('./client.ts');
    return HttpBackend.open(url, options);
  },
};
