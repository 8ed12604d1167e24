/**
 * The built-in backends, registered as one plugin named `built-in` through the same
 * `registerPlugin` a third-party plugin goes through. Each provider is light; its SDK
 * loads only when one of its URLs is opened.
 */
import { BUILTIN_ORIGIN, definePlugin, PLUGIN_API_VERSION, registerPlugin } from '../core/plugins.ts';
import { BackendRegistry } from '../core/registry.ts';
import type { BackendProvider } from '../core/types.ts';
import { localProvider } from './local/index.ts';

export const builtinProviders: BackendProvider[] = [localProvider];

export const builtinPlugin = definePlugin({
  name: BUILTIN_ORIGIN,
  apiVersion: PLUGIN_API_VERSION,
  backends: builtinProviders,
});

/** A registry holding every built-in backend (and no plugin). */
export function createDefaultRegistry(): BackendRegistry {
  const registry = new BackendRegistry();
  registerPlugin(registry, builtinPlugin, BUILTIN_ORIGIN);
  return registry;
}
