/**
 * The built-in backends, registered through the same registry a plugin uses. Each
 * provider is light; its SDK loads only when one of its URLs is opened.
 */
import { BackendRegistry } from '../core/registry.ts';
import type { BackendProvider } from '../core/types.ts';
import { localProvider } from './local/index.ts';
import { s3Provider } from './s3/index.ts';

export const builtinProviders: BackendProvider[] = [localProvider, s3Provider];

/** A registry holding every built-in backend. */
export function createDefaultRegistry(): BackendRegistry {
  const registry = new BackendRegistry();
  for (const provider of builtinProviders) registry.register(provider, 'built-in');
  return registry;
}
