/**
 * The built-in backends, registered as one plugin named `built-in` through the same
 * `registerPlugin` a third-party plugin goes through. Each provider is light; its SDK
 * loads only when one of its URLs is opened.
 */
import { BUILTIN_ORIGIN, definePlugin, PLUGIN_API_VERSION, registerPlugin } from '../core/plugins.ts';
import { BackendRegistry } from '../core/registry.ts';
import type { BackendProvider } from '../core/types.ts';
import { httpProvider } from './http/index.ts';
import { localProvider } from './local/index.ts';
import { s3Provider } from './s3/index.ts';
import { sftpProvider } from './sftp/index.ts';
import { webdavProvider } from './webdav/index.ts';

export const builtinProviders: BackendProvider[] = [localProvider, httpProvider, s3Provider, sftpProvider, webdavProvider];

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
