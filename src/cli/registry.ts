/**
 * The registry every command works with: the built-in backends plus the plugins the
 * user listed. It lives on the CLI side because `src/core` knows no concrete backend.
 *
 * Where plugins come from, in load order (see core/plugins.ts `pluginSpecs`):
 *   1. the config file (`--config F`, else BITFOG_CONFIG, else ./bitfog.config.json,
 *      else $XDG_CONFIG_HOME/bitfog/config.json), as `{ "plugins": [...] }`;
 *   2. BITFOG_PLUGINS, comma-separated;
 *   3. each `--plugin SPEC` option.
 */
import { builtinPlugin } from '../backends/index.ts';
import { BUILTIN_ORIGIN, loadPlugins, pluginSpecs, registerPlugin, type PluginSources } from '../core/plugins.ts';
import { BackendRegistry } from '../core/registry.ts';

export type CreateRegistryOptions = PluginSources;

/**
 * Built-ins, then every configured plugin. Throws EPLUGIN (a plugin failed) or EUSAGE
 * (a config file is missing or malformed).
 */
export async function createRegistry(options: CreateRegistryOptions = {}): Promise<BackendRegistry> {
  const registry = new BackendRegistry();
  registerPlugin(registry, builtinPlugin, BUILTIN_ORIGIN);
  const cwd = options.cwd ?? process.cwd();
  await loadPlugins(registry, await pluginSpecs({ ...options, cwd }), { cwd });
  return registry;
}
