/**
 * Plugins: how backends that are not part of bitfog join the registry.
 *
 * A plugin is an ES module (an npm package or a local file) whose default export is a
 * plain object `{ name, apiVersion, backends }`. Plugins are listed explicitly — in a
 * config file or with `--plugin` — and nothing is ever discovered by scanning
 * `node_modules`. The built-in backends are registered through the same
 * `registerPlugin` as a plugin, under the name `built-in`.
 *
 * Every failure here is an EPLUGIN error whose message names the plugin (by its spec
 * and, once known, by its name) and where it was listed, so a user can find the line
 * in their configuration to fix. Configuration files that cannot be read or parsed are
 * EUSAGE errors naming the file.
 */
import { existsSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { bitfogError, isBitfogError } from './errors.ts';
import type { BackendRegistry } from './registry.ts';
import type { BackendProvider, Capabilities } from './types.ts';

/**
 * The plugin API version this bitfog implements. It changes only when the contract of
 * types.ts changes in a way an existing plugin could not satisfy; a plugin declares the
 * version it was written for and is refused on a mismatch.
 */
export const PLUGIN_API_VERSION = 1;

/** The default export of a plugin module. */
export interface BitfogPlugin {
  /** Shown by `bitfog backends` as the origin of its schemes, and in every error about it. npm package name recommended. */
  name: string;
  /** The plugin API version the plugin targets: `PLUGIN_API_VERSION` at the time it was written. */
  apiVersion: number;
  /** The scheme providers it adds. Each claims one or more URL schemes no other plugin claims. */
  backends: BackendProvider[];
}

/**
 * Identity helper for plugin authors: `export default definePlugin({ ... })` gets the
 * object type-checked against `BitfogPlugin` without an annotation.
 */
export function definePlugin<P extends BitfogPlugin>(plugin: P): P {
  return plugin;
}

/** The origin name reserved for the backends that ship with bitfog. */
export const BUILTIN_ORIGIN = 'built-in';

/** One plugin to load, and where it was listed (for messages and relative paths). */
export interface PluginSpec {
  /** A package name (`bitfog-plugin-tape`, `@museum/bitfog-dam/sub`), a path, or a `file:` URL. */
  spec: string;
  /** The directory a relative path and a package name are resolved from. */
  baseDir: string;
  /** Where the spec was listed, for messages: `--plugin`, `BITFOG_PLUGINS`, a config file path. */
  listedIn: string;
}

export interface LoadPluginsOptions {
  /** Directory that string specs are resolved from (default: process.cwd()). */
  cwd?: string;
}

/** What `loadPlugins` registered, in order. */
export interface LoadedPlugin {
  plugin: BitfogPlugin;
  /** The module URL it was imported from. */
  url: string;
  listedIn: string;
}

/**
 * Imports each plugin, validates it and registers its providers with origin = plugin
 * name, in order. Stops at the first failure, leaving the plugins before it registered
 * and nothing of the failing one. A module listed twice (same resolved file) loads once.
 * Throws EPLUGIN.
 */
export async function loadPlugins(
  registry: BackendRegistry,
  specs: ReadonlyArray<string | PluginSpec>,
  options: LoadPluginsOptions = {},
): Promise<LoadedPlugin[]> {
  const cwd = options.cwd ?? process.cwd();
  const loaded: LoadedPlugin[] = [];
  const seen = new Set<string>();
  for (const raw of specs) {
    const spec: PluginSpec = typeof raw === 'string' ? { spec: raw, baseDir: cwd, listedIn: 'the plugin list' } : raw;
    const url = resolvePluginSpec(spec);
    // The same file reached through a symlink (npm link, a file: install) is the same module.
    const key = realFileOf(url);
    if (seen.has(key)) continue;
    seen.add(key);
    const plugin = registerPlugin(registry, await importPlugin(spec, url), describeSpec(spec));
    loaded.push({ plugin, url, listedIn: spec.listedIn });
  }
  return loaded;
}

/** The real path of a file: URL (symlinks resolved), or the URL itself when it has none. */
function realFileOf(url: string): string {
  if (!url.startsWith('file:')) return url;
  try {
    return realpathSync(fileURLToPath(url));
  } catch {
    return url;
  }
}

/**
 * Validates `plugin` and registers every provider of it with origin = its name, all or
 * nothing. `where` describes it in messages (default: its name). Throws EPLUGIN for a bad
 * shape, an API version mismatch, a name already registered, or a scheme another plugin
 * (or the built-ins) already claims.
 */
export function registerPlugin(registry: BackendRegistry, plugin: unknown, where?: string): BitfogPlugin {
  const valid = validatePlugin(plugin, where);
  const label = where && where !== BUILTIN_ORIGIN ? `plugin "${valid.name}" from ${where}` : `plugin "${valid.name}"`;
  const registered = registry.list();
  if (registered.some((r) => r.origin === valid.name)) {
    throw bitfogError('EPLUGIN', `${label}: a plugin named "${valid.name}" is already loaded`);
  }
  // Check every scheme before registering anything, so a failing plugin leaves no half of itself behind.
  const claimed = new Map(registered.map((r) => [r.scheme, r.origin]));
  for (const provider of valid.backends) {
    for (const raw of provider.schemes) {
      const scheme = raw.toLowerCase();
      const owner = claimed.get(scheme);
      if (owner !== undefined) {
        const other = owner === valid.name ? 'another of its own backends' : owner === BUILTIN_ORIGIN ? 'the built-in backends' : `plugin "${owner}"`;
        throw bitfogError('EPLUGIN', `${label}: scheme "${scheme}" is already provided by ${other}`);
      }
      claimed.set(scheme, valid.name);
    }
  }
  for (const provider of valid.backends) registry.register(provider, valid.name);
  return valid;
}

const SCHEME_NAME_RE = /^[a-z][a-z0-9+.-]*$/;
const BOOLEAN_CAPABILITIES = [
  'atomicRename',
  'atomicWrite',
  'symlinks',
  'rangedReads',
  'serverSideHashes',
  'modes',
  'caseSensitive',
  'emptyDirectories',
] as const satisfies ReadonlyArray<keyof Capabilities>;

/**
 * Checks that `value` has the shape of a BitfogPlugin targeting this API version, and
 * returns it typed. `where` names it in messages. Throws EPLUGIN listing the first problem.
 */
export function validatePlugin(value: unknown, where?: string): BitfogPlugin {
  const fail = (problem: string): never => {
    throw bitfogError('EPLUGIN', `plugin ${where ?? '(unnamed)'}: ${problem}`);
  };
  if (typeof value !== 'object' || value === null) fail(`the default export must be an object { name, apiVersion, backends }, got ${typeOf(value)}`);
  const p = value as Record<string, unknown>;
  if (typeof p.name !== 'string' || p.name.trim() === '') fail('"name" must be a non-empty string');
  const name = p.name as string;
  if (name === BUILTIN_ORIGIN && where !== BUILTIN_ORIGIN) fail(`the name "${BUILTIN_ORIGIN}" is reserved for bitfog's own backends`);
  const named = (problem: string): never => {
    throw bitfogError('EPLUGIN', `plugin "${name}"${where && where !== BUILTIN_ORIGIN ? ` from ${where}` : ''}: ${problem}`);
  };
  if (p.apiVersion !== PLUGIN_API_VERSION) {
    if (typeof p.apiVersion !== 'number') named(`"apiVersion" must be a number (this bitfog implements plugin API ${PLUGIN_API_VERSION})`);
    named(`targets plugin API version ${String(p.apiVersion)}, but this bitfog implements version ${PLUGIN_API_VERSION}`);
  }
  if (!Array.isArray(p.backends) || p.backends.length === 0) named('"backends" must be a non-empty array of backend providers');
  (p.backends as unknown[]).forEach((b, i) => {
    const at = `backends[${i}]`;
    if (typeof b !== 'object' || b === null) named(`${at} must be an object, got ${typeOf(b)}`);
    const provider = b as Record<string, unknown>;
    if (!Array.isArray(provider.schemes) || provider.schemes.length === 0) named(`${at}.schemes must be a non-empty array of URL schemes`);
    for (const s of provider.schemes as unknown[]) {
      if (typeof s !== 'string' || !SCHEME_NAME_RE.test(s)) {
        named(`${at}.schemes: ${JSON.stringify(s)} is not a lowercase URL scheme without the colon (like "tape" or "dam+https")`);
      }
    }
    const at2 = `${at} (${(provider.schemes as string[]).join(', ')})`;
    if (typeof provider.description !== 'string' || provider.description === '') named(`${at2}.description must be a non-empty string`);
    if (typeof provider.open !== 'function') named(`${at2}.open must be a function (url, options) => Promise<Source | Destination>`);
    const caps = provider.capabilities as Record<string, unknown> | undefined;
    if (typeof caps !== 'object' || caps === null) named(`${at2}.capabilities must be an object`);
    for (const key of BOOLEAN_CAPABILITIES) {
      if (typeof caps![key] !== 'boolean') named(`${at2}.capabilities.${key} must be true or false`);
    }
    if (typeof caps!.mtimePrecisionMs !== 'number' || !((caps!.mtimePrecisionMs as number) >= 0)) {
      named(`${at2}.capabilities.mtimePrecisionMs must be a number >= 0`);
    }
    if (!Number.isInteger(caps!.maxConcurrency) || (caps!.maxConcurrency as number) < 1) {
      named(`${at2}.capabilities.maxConcurrency must be an integer >= 1`);
    }
  });
  return p as unknown as BitfogPlugin;
}

/** True when a spec names a file rather than a package. */
export function isPathSpec(spec: string): boolean {
  return spec.startsWith('.') || spec.startsWith('/') || spec.startsWith('file:') || path.isAbsolute(spec) || /^[a-zA-Z]:[\\/]/.test(spec);
}

/**
 * The module URL a spec names. Paths resolve against `baseDir`; package names resolve
 * the way Node would from a file in `baseDir` (its node_modules, then its parents').
 * Throws EPLUGIN when nothing is there.
 */
export function resolvePluginSpec(spec: PluginSpec): string {
  if (spec.spec.trim() === '') throw bitfogError('EPLUGIN', `empty plugin spec in ${spec.listedIn}`);
  if (isPathSpec(spec.spec)) {
    const file = spec.spec.startsWith('file:') ? fileURLToPath(spec.spec) : path.resolve(spec.baseDir, spec.spec);
    let target: string | undefined;
    try {
      // A directory is a package in the making: its package.json says what to import.
      target = statSync(file).isDirectory() ? resolveEsmPackageEntry(file) : file;
    } catch (e) {
      throw bitfogError('EPLUGIN', `plugin ${describeSpec(spec)} not found (${(e as NodeJS.ErrnoException).code ?? errorMessage(e)})`, { cause: e });
    }
    if (!target) throw bitfogError('EPLUGIN', `plugin ${describeSpec(spec)}: the directory has no package.json entry point to import`);
    return pathToFileURL(target).href;
  }
  // From where it was listed first; then from bitfog's own installation, so that a plugin
  // installed next to a global bitfog (`npm install -g bitfog bitfog-plugin-tape`) is found too.
  let firstError: unknown;
  for (const baseDir of [spec.baseDir, BITFOG_INSTALL_DIR]) {
    // Resolved by hand under the "import" condition first, as `import` would: require.resolve
    // picks a dual package's CommonJS build and misses an ESM-only one. It stays the
    // fallback for what the hand resolver does not cover (subpath patterns, extensionless main).
    const entry = resolveEsmPackage(spec.spec, baseDir);
    if (entry) return pathToFileURL(entry).href;
    try {
      return pathToFileURL(createRequire(path.join(baseDir, 'noop.js')).resolve(spec.spec)).href;
    } catch (e) {
      firstError ??= e;
    }
  }
  throw bitfogError(
    'EPLUGIN',
    `plugin ${describeSpec(spec)} not found: no package "${spec.spec}" is installed where it can be resolved from ${spec.baseDir} (nor next to bitfog itself)`,
    { cause: firstError },
  );
}

/** A directory inside bitfog's own package, whose node_modules ancestors hold its neighbours. */
const BITFOG_INSTALL_DIR = path.dirname(fileURLToPath(import.meta.url));

/** Finds `node_modules/<name>` from `baseDir` upwards and resolves its ESM entry (or subpath). */
function resolveEsmPackage(spec: string, baseDir: string): string | undefined {
  const parts = spec.split('/');
  const nameLength = spec.startsWith('@') ? 2 : 1;
  const name = parts.slice(0, nameLength).join('/');
  const subpath = parts.length > nameLength ? `./${parts.slice(nameLength).join('/')}` : '.';
  for (let dir = path.resolve(baseDir); ; dir = path.dirname(dir)) {
    const pkgDir = path.join(dir, 'node_modules', name);
    if (existsSync(path.join(pkgDir, 'package.json'))) return resolveEsmPackageEntry(pkgDir, subpath);
    if (path.dirname(dir) === dir) return undefined;
  }
}

/** The file a package directory exports at `subpath` under the "import" condition. */
function resolveEsmPackageEntry(pkgDir: string, subpath = '.'): string | undefined {
  let pkg: { exports?: unknown; main?: unknown } = {};
  try {
    pkg = JSON.parse(readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as typeof pkg;
  } catch {
    // No (readable) package.json: Node's own default entry applies.
  }
  const pick = (target: unknown): string | undefined => {
    if (typeof target === 'string') return target;
    if (Array.isArray(target)) return target.map(pick).find((t) => t !== undefined);
    if (target && typeof target === 'object') {
      for (const [cond, value] of Object.entries(target)) {
        if (cond === 'import' || cond === 'node' || cond === 'default') {
          const found = pick(value);
          if (found) return found;
        }
      }
    }
    return undefined;
  };
  let target: string | undefined;
  if (pkg.exports !== undefined) {
    const exp = pkg.exports as Record<string, unknown> | string;
    const sugar = typeof exp === 'string' || Array.isArray(exp) || !Object.keys(exp).some((k) => k.startsWith('.'));
    target = sugar ? (subpath === '.' ? pick(exp) : undefined) : pick((exp as Record<string, unknown>)[subpath]);
  } else {
    target = subpath === '.' ? (typeof pkg.main === 'string' ? pkg.main : 'index.js') : subpath;
  }
  if (!target) return undefined;
  const file = path.resolve(pkgDir, target);
  return existsSync(file) ? file : undefined;
}

let typeScriptLoader: Promise<void> | undefined;

/**
 * Plugins may be TypeScript (and the example plugins import bitfog's TypeScript sources):
 * when bitfog itself runs as bundled JavaScript, register tsx's loader before the first
 * plugin import. Under tsx already (tests, development) it is registered.
 */
function ensureTypeScriptLoader(): Promise<void> {
  typeScriptLoader ??= import.meta.url.endsWith('.ts')
    ? Promise.resolve()
    : import('tsx/esm/api').then(({ register }) => {
        register();
      });
  return typeScriptLoader;
}

async function importPlugin(spec: PluginSpec, url: string): Promise<unknown> {
  let mod: Record<string, unknown>;
  try {
    await ensureTypeScriptLoader();
    mod = (await import(url)) as Record<string, unknown>;
  } catch (e) {
    throw bitfogError('EPLUGIN', `plugin ${describeSpec(spec)} failed to load: ${errorMessage(e)}`, { cause: e });
  }
  if (!('default' in mod) || mod.default === undefined) {
    throw bitfogError('EPLUGIN', `plugin ${describeSpec(spec)} has no default export (it must export default { name, apiVersion, backends })`);
  }
  return mod.default;
}

function describeSpec(spec: PluginSpec): string {
  return `"${spec.spec}" (listed in ${spec.listedIn})`;
}

function typeOf(value: unknown): string {
  return value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
}

function errorMessage(e: unknown): string {
  if (isBitfogError(e)) return `${e.code}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------
// Configuration

/** The parsed part of a config file this module reads. Unknown keys are left to others. */
export interface BitfogConfig {
  /** Absolute path of the file it came from. */
  file: string;
  /** Plugin specs; relative paths are relative to the config file's directory. */
  plugins: string[];
}

export interface ConfigLocation {
  /** `--config F`: the one file to read; it must exist. */
  configPath?: string;
  /** Directory searched for `bitfog.config.json` (default process.cwd()). */
  cwd?: string;
  /** Environment: BITFOG_CONFIG, XDG_CONFIG_HOME, HOME (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** The name looked for in the current directory. */
export const PROJECT_CONFIG_NAME = 'bitfog.config.json';

/**
 * Which config file applies, first match wins (only one file is read):
 *   1. `--config F` (configPath), then the BITFOG_CONFIG environment variable — must exist;
 *   2. `bitfog.config.json` in the current directory;
 *   3. `$XDG_CONFIG_HOME/bitfog/config.json` (XDG_CONFIG_HOME defaults to ~/.config).
 * Returns undefined when none applies. Throws EUSAGE when an explicitly named file is missing.
 */
export function findConfigFile(location: ConfigLocation = {}): string | undefined {
  const cwd = location.cwd ?? process.cwd();
  const env = location.env ?? process.env;
  const explicit = location.configPath ?? (env.BITFOG_CONFIG ? env.BITFOG_CONFIG : undefined);
  if (explicit !== undefined) {
    const file = path.resolve(cwd, explicit);
    if (!existsSync(file)) {
      const via = location.configPath !== undefined ? '--config' : 'BITFOG_CONFIG';
      throw bitfogError('EUSAGE', `config file ${explicit} (from ${via}) does not exist`);
    }
    return file;
  }
  const project = path.join(cwd, PROJECT_CONFIG_NAME);
  if (existsSync(project)) return project;
  const xdg = env.XDG_CONFIG_HOME && path.isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : path.join(env.HOME ?? homedir(), '.config');
  const user = path.join(xdg, 'bitfog', 'config.json');
  if (existsSync(user)) return user;
  return undefined;
}

/** Reads a config file. Throws EUSAGE naming the file when it is unreadable, not JSON, or `plugins` is malformed. */
export async function readConfig(file: string): Promise<BitfogConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw bitfogError('EUSAGE', `cannot read config file ${file}: ${(e as NodeJS.ErrnoException).code ?? errorMessage(e)}`, { cause: e });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw bitfogError('EUSAGE', `config file ${file} is not valid JSON: ${errorMessage(e)}`, { cause: e });
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw bitfogError('EUSAGE', `config file ${file} must hold a JSON object`);
  }
  const plugins = (parsed as { plugins?: unknown }).plugins ?? [];
  if (!Array.isArray(plugins) || plugins.some((s) => typeof s !== 'string' || s === '')) {
    throw bitfogError('EUSAGE', `config file ${file}: "plugins" must be an array of package names or paths`);
  }
  return { file, plugins: plugins as string[] };
}

export interface PluginSources extends ConfigLocation {
  /** `--plugin SPEC` options, in order; resolved from cwd. */
  plugins?: readonly string[];
}

/**
 * Every plugin spec that applies, in load order: the config file's, then BITFOG_PLUGINS
 * (comma-separated), then `--plugin` options. Throws EUSAGE for a bad config file.
 */
export async function pluginSpecs(sources: PluginSources = {}): Promise<PluginSpec[]> {
  const cwd = sources.cwd ?? process.cwd();
  const env = sources.env ?? process.env;
  const specs: PluginSpec[] = [];
  const file = findConfigFile({ ...sources, cwd, env });
  if (file) {
    const config = await readConfig(file);
    for (const spec of config.plugins) specs.push({ spec, baseDir: path.dirname(file), listedIn: file });
  }
  for (const spec of (env.BITFOG_PLUGINS ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    specs.push({ spec, baseDir: cwd, listedIn: 'BITFOG_PLUGINS' });
  }
  for (const spec of sources.plugins ?? []) specs.push({ spec, baseDir: cwd, listedIn: '--plugin' });
  return specs;
}
