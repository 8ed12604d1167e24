/**
 * The conformance kit for a whole plugin: validates it the way `bitfog` will when it
 * loads it, then runs `testBackend` — including the full spool cycle — on every scheme
 * it provides, opened through a registry that holds the built-ins and the plugin, as
 * the CLI does.
 *
 *   import { testPlugin } from 'bitfog/conformance';
 *   import plugin from '../index.ts';
 *   testPlugin({ plugin, newUrl: async () => `tape://robot-1/${crypto.randomUUID()}` });
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../backends/index.ts';
import { registerPlugin, type BitfogPlugin } from '../core/plugins.ts';
import type { BackendRegistry } from '../core/registry.ts';
import { testBackend, type ConformanceOptions } from './index.ts';

export interface PluginConformanceOptions extends Pick<ConformanceOptions, 'unsupportedNames' | 'largeFileBytes'> {
  /** The plugin's default export. */
  plugin: BitfogPlugin;
  /**
   * A URL of a fresh, empty, writable root for `scheme` (one of the plugin's schemes).
   * Called once per test and once per side of the spool cycle.
   */
  newUrl(scheme: string): Promise<string>;
  /** Schemes to test (default: the first scheme of each provider). */
  schemes?: string[];
}

/** Registers a node:test suite for `options.plugin`. Returns the registry it uses. */
export function testPlugin(options: PluginConformanceOptions): BackendRegistry {
  const registry = createDefaultRegistry();
  // Validation errors surface here, at load, exactly as `bitfog` would report them.
  const plugin = registerPlugin(registry, options.plugin);
  const schemes = options.schemes ?? plugin.backends.map((b) => b.schemes[0]!);

  describe(`plugin ${plugin.name}`, () => {
    for (const scheme of schemes) {
      it(`${scheme}: the opened backend claims nothing its provider does not announce`, async () => {
        const announced = registry.providerFor(`${scheme}://x`).provider.capabilities;
        const backend = await registry.openDestination(await options.newUrl(scheme));
        try {
          // The provider's capabilities are what `bitfog backends` shows without connecting:
          // the best case. An opened backend may declare less (its server lacks a feature), never more.
          const c = backend.capabilities;
          for (const key of ['atomicRename', 'atomicWrite', 'symlinks', 'rangedReads', 'serverSideHashes', 'modes', 'caseSensitive', 'emptyDirectories'] as const) {
            assert.ok(!c[key] || announced[key], `the opened backend declares ${key}, its provider does not announce it`);
          }
          const finer = (a: number, b: number) => a > 0 && (b === 0 || a < b);
          assert.ok(!finer(c.mtimePrecisionMs, announced.mtimePrecisionMs), `mtimePrecisionMs ${c.mtimePrecisionMs} is finer than the announced ${announced.mtimePrecisionMs}`);
          assert.ok(c.maxConcurrency <= announced.maxConcurrency, `maxConcurrency ${c.maxConcurrency} is above the announced ${announced.maxConcurrency}`);
        } finally {
          await backend.close();
        }
      });
    }
  });

  for (const scheme of schemes) {
    const conformance: ConformanceOptions = {
      name: `${plugin.name} (${scheme}://)`,
      open: async () => registry.openDestination(await options.newUrl(scheme)),
      cycle: { newUrl: () => options.newUrl(scheme), registry },
    };
    if (options.unsupportedNames) conformance.unsupportedNames = options.unsupportedNames;
    if (options.largeFileBytes !== undefined) conformance.largeFileBytes = options.largeFileBytes;
    testBackend(conformance);
  }
  return registry;
}
