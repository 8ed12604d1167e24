/**
 * Plugins: loading by package name and by path, every way loading can fail (each a clear
 * EPLUGIN naming the plugin), configuration, `bitfog backends`, and the example plugins
 * through the conformance kit — the good one passes it with a full cycle, the broken one
 * is caught.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { createRegistry } from '../src/cli/registry.ts';
import { testBackend } from '../src/conformance/index.ts';
import { isBitfogError, type ErrorCode } from '../src/core/errors.ts';
import { findConfigFile, loadPlugins, PLUGIN_API_VERSION, pluginSpecs, registerPlugin } from '../src/core/plugins.ts';
import { bitfog, startBitfog } from './helpers/cli.ts';
import { makeTree } from './helpers/tree.ts';
import { tempDir } from './helpers/tmp.ts';

const repo = path.resolve(import.meta.dirname, '..');
const dirstoreExample = path.join(repo, 'examples', 'dirstore-plugin');
const brokenExample = path.join(repo, 'examples', 'broken-plugin');

const CAPS = `{ atomicRename: true, atomicWrite: false, symlinks: false, rangedReads: false, serverSideHashes: false,
  mtimePrecisionMs: 1000, modes: false, caseSensitive: true, emptyDirectories: false, maxConcurrency: 2 }`;

/** Source of a plain-JS plugin module: no imports, as the smallest third-party plugin would be. */
function pluginSource(name: string, schemes: string[], extra = ''): string {
  return `${extra}
export default {
  name: ${JSON.stringify(name)},
  apiVersion: ${PLUGIN_API_VERSION},
  backends: [{
    schemes: ${JSON.stringify(schemes)},
    description: 'test backend of ${name}',
    capabilities: ${CAPS},
    async open() { throw new Error('not for opening'); },
  }],
};
`;
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode, ...mentions: Array<string | RegExp>): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isBitfogError(err), `expected a BitfogError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    for (const m of mentions) {
      if (typeof m === 'string') assert.ok(err.message.includes(m), `message ${JSON.stringify(err.message)} should mention ${JSON.stringify(m)}`);
      else assert.match(err.message, m);
    }
    return true;
  });
}

/** Plugin schemes and `file` (one built-in stands for them all, so new built-ins change nothing here). */
function schemesOf(registry: ReturnType<typeof createDefaultRegistry>): Record<string, string> {
  return Object.fromEntries(registry.list().filter((r) => r.origin !== 'built-in' || r.scheme === 'file').map((r) => [r.scheme, r.origin]));
}

describe('loading plugins', () => {
  it('loads a package by name from node_modules above the directory it is resolved from', async () => {
    const dir = await tempDir('plugin-pkg');
    await makeTree(dir, {
      'node_modules/bitfog-plugin-tape/package.json': JSON.stringify({ name: 'bitfog-plugin-tape', type: 'module', main: 'index.js' }),
      'node_modules/bitfog-plugin-tape/index.js': pluginSource('bitfog-plugin-tape', ['tape']),
      // ESM-only, scoped, with conditional exports: what require.resolve alone would miss.
      'node_modules/@museum/bitfog-dam/package.json': JSON.stringify({
        name: '@museum/bitfog-dam',
        type: 'module',
        exports: { '.': { import: './dist/index.js' }, './v2': { import: './dist/v2.js' } },
      }),
      'node_modules/@museum/bitfog-dam/dist/index.js': pluginSource('@museum/bitfog-dam', ['dam', 'dam+https']),
      'node_modules/@museum/bitfog-dam/dist/v2.js': pluginSource('@museum/bitfog-dam-v2', ['dam2']),
      // A dual package: the ESM build is the one to load, as `import` would.
      'node_modules/bitfog-plugin-dual/package.json': JSON.stringify({
        name: 'bitfog-plugin-dual',
        exports: { '.': { types: './index.d.ts', require: './index.cjs', import: './index.mjs' } },
      }),
      'node_modules/bitfog-plugin-dual/index.cjs': 'module.exports = { default: "the CommonJS build" };\n',
      'node_modules/bitfog-plugin-dual/index.mjs': pluginSource('bitfog-plugin-dual', ['dual']),
      'project/deeper': { dir: true },
    });
    const registry = createDefaultRegistry();
    const loaded = await loadPlugins(registry, ['bitfog-plugin-tape', '@museum/bitfog-dam', '@museum/bitfog-dam/v2', 'bitfog-plugin-dual'], {
      cwd: path.join(dir, 'project', 'deeper'),
    });
    assert.deepEqual(loaded.map((l) => l.plugin.name), ['bitfog-plugin-tape', '@museum/bitfog-dam', '@museum/bitfog-dam-v2', 'bitfog-plugin-dual']);
    assert.deepEqual(schemesOf(registry), {
      dam: '@museum/bitfog-dam',
      'dam+https': '@museum/bitfog-dam',
      dam2: '@museum/bitfog-dam-v2',
      dual: 'bitfog-plugin-dual',
      file: 'built-in',
      tape: 'bitfog-plugin-tape',
    });
    assert.equal(registry.providerFor('DAM+HTTPS://host/x').origin, '@museum/bitfog-dam');
  });

  it('loads by path: a file, a package directory, relative to the cwd or absolute, with awkward characters', async () => {
    const dir = await tempDir('plugin-path');
    await makeTree(dir, {
      'my plugins #1/tape 100%.mjs': pluginSource('tape-by-path', ['tape']),
    });
    const registry = createDefaultRegistry();
    await loadPlugins(registry, ['./my plugins #1/tape 100%.mjs', dirstoreExample], { cwd: dir });
    assert.deepEqual(schemesOf(registry), { dirstore: 'bitfog-plugin-dirstore', file: 'built-in', tape: 'tape-by-path' });
    // The same module listed twice (here as a file and as its package directory) loads once.
    const again = createDefaultRegistry();
    const loaded = await loadPlugins(again, [dirstoreExample, path.join(dirstoreExample, 'index.ts'), `file://${dirstoreExample}/index.ts`]);
    assert.equal(loaded.length, 1);
    // And reached through a symlink (what npm link or a file: install makes), still once.
    await symlink(path.join(dir, 'my plugins #1', 'tape 100%.mjs'), path.join(dir, 'linked tape.mjs'));
    await symlink(path.join(dir, 'my plugins #1'), path.join(dir, 'linked dir'));
    const third = createDefaultRegistry();
    const once = await loadPlugins(third, ['./my plugins #1/tape 100%.mjs', './linked tape.mjs', './linked dir/tape 100%.mjs'], { cwd: dir });
    assert.equal(once.length, 1);
    assert.deepEqual(schemesOf(third), { file: 'built-in', tape: 'tape-by-path' });
  });

  it('reads plugins from a config file, resolving its relative paths from the file, then BITFOG_PLUGINS, then --plugin', async () => {
    const dir = await tempDir('plugin-config');
    await makeTree(dir, {
      'conf/plugins/a.mjs': pluginSource('from-config', ['aaa']),
      'conf/bitfog.json': JSON.stringify({ plugins: ['./plugins/a.mjs'], other: 'keys are ignored' }),
      'work/b.mjs': pluginSource('from-env', ['bbb']),
      'work/c.mjs': pluginSource('from-option', ['ccc']),
    });
    const registry = await createRegistry({
      cwd: path.join(dir, 'work'),
      configPath: '../conf/bitfog.json',
      env: { BITFOG_PLUGINS: ' ./b.mjs ,' },
      plugins: ['./c.mjs'],
    });
    assert.deepEqual(schemesOf(registry), { aaa: 'from-config', bbb: 'from-env', ccc: 'from-option', file: 'built-in' });
  });

  it('finds the config file: --config, then BITFOG_CONFIG, then ./bitfog.config.json, then XDG_CONFIG_HOME', async () => {
    const dir = await tempDir('plugin-config-find');
    await makeTree(dir, {
      'explicit.json': '{}',
      'env.json': '{}',
      'cwd/bitfog.config.json': '{}',
      'xdg/bitfog/config.json': '{}',
      empty: { dir: true },
    });
    const cwd = path.join(dir, 'cwd');
    const xdgEnv = { XDG_CONFIG_HOME: path.join(dir, 'xdg') };
    assert.equal(findConfigFile({ cwd, configPath: '../explicit.json', env: { ...xdgEnv, BITFOG_CONFIG: '../env.json' } }), path.join(dir, 'explicit.json'));
    assert.equal(findConfigFile({ cwd, env: { ...xdgEnv, BITFOG_CONFIG: '../env.json' } }), path.join(dir, 'env.json'));
    assert.equal(findConfigFile({ cwd, env: xdgEnv }), path.join(cwd, 'bitfog.config.json'));
    assert.equal(findConfigFile({ cwd: path.join(dir, 'empty'), env: xdgEnv }), path.join(dir, 'xdg', 'bitfog', 'config.json'));
    assert.equal(findConfigFile({ cwd: path.join(dir, 'empty'), env: { HOME: path.join(dir, 'empty') } }), undefined);
    assert.throws(() => findConfigFile({ cwd, configPath: 'missing.json', env: {} }), (e: unknown) => isBitfogError(e, 'EUSAGE') && e.message.includes('missing.json'));
  });

  it('refuses a malformed config file with EUSAGE naming it', async () => {
    const dir = await tempDir('plugin-config-bad');
    await makeTree(dir, {
      'not-json.json': '{ plugins: [',
      'not-list.json': JSON.stringify({ plugins: 'bitfog-plugin-tape' }),
    });
    await expectCode(pluginSpecs({ cwd: dir, configPath: 'not-json.json', env: {} }), 'EUSAGE', 'not-json.json', 'not valid JSON');
    await expectCode(pluginSpecs({ cwd: dir, configPath: 'not-list.json', env: {} }), 'EUSAGE', 'not-list.json', '"plugins"');
  });
});

describe('plugin errors name the plugin', () => {
  const cases: Array<{ what: string; file: string; mentions: Array<string | RegExp> }> = [
    {
      what: 'a module that fails to import',
      file: `import './does-not-exist.js';\n${pluginSource('x', ['x'])}`,
      mentions: ['failed to load', /does-not-exist/],
    },
    {
      what: 'a module with a syntax error',
      file: 'export default { name: ',
      mentions: ['failed to load'],
    },
    {
      what: 'a plugin that throws while loading',
      file: `throw new Error('tape robot offline');\n`,
      mentions: ['failed to load', 'tape robot offline'],
    },
    { what: 'no default export', file: 'export const plugin = {};\n', mentions: ['no default export'] },
    { what: 'a default export that is not an object', file: 'export default () => {};\n', mentions: ['must be an object', 'function'] },
    { what: 'no name', file: `export default { apiVersion: ${PLUGIN_API_VERSION}, backends: [] };\n`, mentions: ['"name"'] },
    {
      what: 'a plugin calling itself built-in',
      file: pluginSource('built-in', ['zzz']),
      mentions: ['reserved'],
    },
    {
      what: 'no apiVersion',
      file: `export default { name: 'no-version', backends: [] };\n`,
      mentions: ['no-version', '"apiVersion" must be a number'],
    },
    {
      what: 'an API version mismatch',
      file: pluginSource('from-the-future', ['fut']).replace(`apiVersion: ${PLUGIN_API_VERSION}`, 'apiVersion: 99'),
      mentions: ['from-the-future', 'targets plugin API version 99', `implements version ${PLUGIN_API_VERSION}`],
    },
    {
      what: 'no backends',
      file: `export default { name: 'empty', apiVersion: ${PLUGIN_API_VERSION}, backends: [] };\n`,
      mentions: ['empty', '"backends"'],
    },
    {
      what: 'a scheme with a colon',
      file: pluginSource('colon', ['tape:']),
      mentions: ['colon', '"tape:"'],
    },
    {
      what: 'an uppercase scheme',
      file: pluginSource('upper', ['Tape']),
      mentions: ['upper', 'lowercase'],
    },
    {
      what: 'a missing capability',
      file: pluginSource('caps', ['caps']).replace('symlinks: false,', ''),
      mentions: ['caps', 'capabilities.symlinks'],
    },
    {
      what: 'a bad maxConcurrency',
      file: pluginSource('conc', ['conc']).replace('maxConcurrency: 2', 'maxConcurrency: 0'),
      mentions: ['conc', 'maxConcurrency'],
    },
    {
      what: 'an open that is not a function',
      file: pluginSource('noopen', ['noopen']).replace("async open() { throw new Error('not for opening'); }", "open: 'yes'"),
      mentions: ['noopen', '.open must be a function'],
    },
    {
      what: 'a scheme the built-ins provide',
      file: pluginSource('file-thief', ['file']),
      mentions: ['file-thief', 'scheme "file"', 'built-in'],
    },
    {
      what: 'a scheme claimed twice within one plugin',
      file: pluginSource('twice', ['two', 'two']),
      mentions: ['twice', 'scheme "two"', 'another of its own backends'],
    },
  ];
  for (const c of cases) {
    it(`${c.what}: EPLUGIN`, async () => {
      const dir = await tempDir('plugin-bad');
      await makeTree(dir, { 'bad plugin.mjs': c.file });
      const registry = createDefaultRegistry();
      const before = registry.list();
      await expectCode(loadPlugins(registry, ['./bad plugin.mjs'], { cwd: dir }), 'EPLUGIN', '"./bad plugin.mjs"', ...c.mentions);
      assert.deepEqual(registry.list(), before, 'a failing plugin registers nothing');
    });
  }

  it('a scheme claimed by two plugins: names both, and the second registers nothing', async () => {
    const dir = await tempDir('plugin-dup');
    await makeTree(dir, {
      'first.mjs': pluginSource('bitfog-plugin-ftp', ['ftp']),
      'second.mjs': `export default {
        name: 'bitfog-plugin-ftp-fast', apiVersion: ${PLUGIN_API_VERSION},
        backends: [
          { schemes: ['ftps'], description: 'd', capabilities: ${CAPS}, async open() {} },
          { schemes: ['ftp'], description: 'd', capabilities: ${CAPS}, async open() {} },
        ],
      };\n`,
    });
    const registry = createDefaultRegistry();
    await expectCode(
      loadPlugins(registry, ['./first.mjs', './second.mjs'], { cwd: dir }),
      'EPLUGIN',
      'plugin "bitfog-plugin-ftp-fast"',
      'scheme "ftp" is already provided by plugin "bitfog-plugin-ftp"',
    );
    assert.deepEqual(schemesOf(registry), { file: 'built-in', ftp: 'bitfog-plugin-ftp' }, 'ftps of the failing plugin is not registered');
  });

  it('two plugins with the same name', async () => {
    const dir = await tempDir('plugin-same-name');
    await makeTree(dir, { 'a.mjs': pluginSource('same', ['aa']), 'b.mjs': pluginSource('same', ['bb']) });
    await expectCode(loadPlugins(createDefaultRegistry(), ['./a.mjs', './b.mjs'], { cwd: dir }), 'EPLUGIN', 'already loaded');
  });

  it('a package that is not installed, and a path that does not exist', async () => {
    const dir = await tempDir('plugin-missing');
    await expectCode(loadPlugins(createDefaultRegistry(), ['bitfog-plugin-nowhere'], { cwd: dir }), 'EPLUGIN', '"bitfog-plugin-nowhere"', 'not found');
    await expectCode(
      createRegistry({ cwd: dir, env: {}, plugins: ['./nowhere.mjs'] }),
      'EPLUGIN',
      '"./nowhere.mjs" (listed in --plugin)',
      'not found',
    );
  });

  it('opens a backend with neither atomic renames nor atomic writes as a source only', async () => {
    const dir = await tempDir('plugin-no-atomic');
    await makeTree(dir, { 'tree/a #1.txt': 'a' });
    const builtIn = createDefaultRegistry();
    const registry = createDefaultRegistry();
    let closed = 0;
    const capabilities = {
      atomicRename: false, atomicWrite: false, symlinks: false, rangedReads: false, serverSideHashes: false,
      mtimePrecisionMs: 1000, modes: false, caseSensitive: true, emptyDirectories: true, maxConcurrency: 2,
    };
    registerPlugin(registry, {
      name: 'writes-in-place', apiVersion: PLUGIN_API_VERSION,
      backends: [{
        schemes: ['inplace'], description: 'a local directory written in place', capabilities,
        async open(_url: string, options: { write: boolean }) {
          // A local tree, claiming neither atomic flag: what a careless plugin would be.
          const local = options.write ? await builtIn.openDestination(path.join(dir, 'tree')) : await builtIn.openSource(path.join(dir, 'tree'));
          return new Proxy(local, {
            get(target, key) {
              if (key === 'capabilities') return capabilities;
              if (key === 'close') return async () => { closed++; await target.close(); };
              const value = Reflect.get(target, key) as unknown;
              return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
            },
          });
        },
      }],
    });
    await expectCode(registry.openDestination('inplace://x'), 'EPLUGIN', 'writes-in-place', /neither atomic renames nor atomic writes/);
    assert.equal(closed, 1, 'the refused destination was closed');
    const source = await registry.openSource('inplace://x');
    const names: string[] = [];
    for await (const e of source.list()) names.push(e.path);
    await source.close();
    assert.deepEqual(names, ['a #1.txt']);
  });

  it('a plugin whose open() throws a plain error or returns no backend: EPLUGIN naming the plugin and the scheme', async () => {
    const registry = createDefaultRegistry();
    const capabilities = {
      atomicRename: true, atomicWrite: false, symlinks: false, rangedReads: false, serverSideHashes: false,
      mtimePrecisionMs: 1000, modes: false, caseSensitive: true, emptyDirectories: true, maxConcurrency: 2,
    };
    registerPlugin(registry, {
      name: 'careless', apiVersion: PLUGIN_API_VERSION,
      backends: [
        { schemes: ['boom'], description: 'throws', capabilities, async open() { throw new Error('boom'); } },
        { schemes: ['nada'], description: 'returns null', capabilities, async open() { return null as never; } },
      ],
    });
    for (const open of [(u: string) => registry.openSource(u), (u: string) => registry.openDestination(u)]) {
      await expectCode(open('boom://x'), 'EPLUGIN', 'careless', 'boom://', /: boom$/);
      await expectCode(open('nada://x'), 'EPLUGIN', 'careless', 'nada://', 'returned null, not a backend');
    }
  });

  it('registerPlugin validates objects handed to it directly (as the kit does)', () => {
    assert.throws(
      () => registerPlugin(createDefaultRegistry(), { name: 'direct', apiVersion: 0, backends: [] }),
      (e: unknown) => isBitfogError(e, 'EPLUGIN') && e.message.includes('"direct"') && e.message.includes('version 0'),
    );
  });

  it('recognises BitfogErrors thrown by a plugin that bundles its own copy of bitfog', async () => {
    const dir = await tempDir('plugin-copy');
    await copyFile(path.join(repo, 'src', 'core', 'errors.ts'), path.join(dir, 'errors.ts'));
    const copy = (await import(path.join(dir, 'errors.ts'))) as typeof import('../src/core/errors.ts');
    const err = new copy.BitfogError('ENOSPC', 'tape full');
    assert.ok(isBitfogError(err, 'ENOSPC'));
  });
});

/** Runs the real CLI as a user would, in `cwd`, with no plugin configuration but what `env` adds. */
async function runCli(args: string[], cwd: string, env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; out: string; err: string }> {
  const r = await bitfog(args, { cwd, env: { HOME: cwd, XDG_CONFIG_HOME: '', BITFOG_CONFIG: '', BITFOG_PLUGINS: '', ...env } });
  return { code: r.code, out: r.stdout, err: r.stderr };
}

describe('bitfog backends', () => {
  it('lists built-in and plugin schemes with origin, description and capabilities', async () => {
    const dir = await tempDir('plugin-cli');
    await makeTree(dir, { 'bitfog.config.json': JSON.stringify({ plugins: [dirstoreExample] }) });
    const { code, out, err } = await runCli(['backends'], dir);
    assert.equal(code, 0, err);
    assert.match(out, /^dirstore\s+plugin bitfog-plugin-dirstore$/m);
    assert.match(out, /^file\s+built-in$/m);
    assert.match(out, /atomic write.*server-side hashes.*no symlinks, no modes; mtime 1 s; up to 4 transfers at once/);
    assert.match(out, /a directory on this machine/);
  });

  it('--json gives scheme, origin, description and capabilities; --plugin works before or after the command', async () => {
    const dir = await tempDir('plugin-cli-json');
    for (const args of [['backends', '--json', '--plugin', dirstoreExample], ['--plugin', dirstoreExample, 'backends', '--json']]) {
      const { code, out, err } = await runCli(args, dir);
      assert.equal(code, 0, err);
      const rows = JSON.parse(out) as Array<{ scheme: string; origin: string; description: string; capabilities: Record<string, unknown> }>;
      const dirstore = rows.find((r) => r.scheme === 'dirstore')!;
      assert.equal(dirstore.origin, 'bitfog-plugin-dirstore');
      assert.match(dirstore.description, /dirstore:\/\/\//);
      assert.equal(dirstore.capabilities.mtimePrecisionMs, 1000);
      assert.equal(dirstore.capabilities.symlinks, false);
      assert.equal(rows.find((r) => r.scheme === 'file')?.origin, 'built-in');
    }
  });

  it('a broken plugin is one clear line naming it, and a failing exit code', async () => {
    const dir = await tempDir('plugin-cli-bad');
    await makeTree(dir, { 'old.mjs': pluginSource('bitfog-plugin-old', ['old']).replace(`apiVersion: ${PLUGIN_API_VERSION}`, 'apiVersion: 0') });
    const { code, out, err } = await runCli(['backends'], dir, { BITFOG_PLUGINS: './old.mjs' });
    assert.equal(code, 1);
    assert.equal(out, '');
    assert.equal(err, `bitfog: plugin "bitfog-plugin-old" from "./old.mjs" (listed in BITFOG_PLUGINS): targets plugin API version 0, but this bitfog implements version ${PLUGIN_API_VERSION}\n`);
  });

  it('loads plugins only when a command needs backends, and never their SDKs just to list them', async () => {
    const dir = await tempDir('plugin-cli-lazy');
    await makeTree(dir, {
      'bitfog.config.json': JSON.stringify({ plugins: ['./lazy.mjs'] }),
      'lazy.mjs': pluginSource('lazy', ['lazy']).replace(
        "async open() { throw new Error('not for opening'); }",
        "async open() { return (await import('./heavy-sdk.mjs')).open(); }",
      ),
      'heavy-sdk.mjs': "throw new Error('the heavy SDK was loaded');\n",
      'broken/bitfog.config.json': JSON.stringify({ plugins: ['./throws.mjs'] }),
      'broken/throws.mjs': "throw new Error('loaded too early');\n",
    });
    const listed = await runCli(['backends'], dir);
    assert.equal(listed.code, 0, listed.err);
    assert.match(listed.out, /^lazy\s+plugin lazy$/m);
    const help = await runCli(['--help'], path.join(dir, 'broken'));
    assert.equal(help.code, 0, help.err);
    assert.match(help.out, /bitfog backends/);
  });

  it('a plugin backend works in the other commands: store, fetch, ls through a config file', async () => {
    const dir = await tempDir('plugin-cli-cycle');
    await makeTree(dir, {
      'bitfog.config.json': JSON.stringify({ plugins: [path.relative(dir, dirstoreExample)] }),
      'site a/docs/read me #1.txt': 'hello\n',
      'site a/empty': '',
    });
    const dest = `dirstore://${encodeURI(path.join(dir, 'site b')).replace(/#/g, '%23')}`;
    for (const args of [['store', '-q', 'spool', dest], ['fetch', '-q', './site a', 'spool'], ['store', '-q', 'spool', dest]]) {
      const r = await runCli(args, dir);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.err}`);
    }
    const ls = await runCli(['ls', '--json', dest], dir);
    assert.equal(ls.code, 0, ls.err);
    const entries = ls.out.trim().split('\n').map((l) => JSON.parse(l) as { path: string; kind: string; size: number });
    assert.deepEqual(
      entries.map((e) => `${e.kind} ${e.path} ${e.size}`).sort(),
      ['directory docs 0', 'file docs/read me #1.txt 6', 'file empty 0'],
    );
  });
});

/** Runs node:test on `file` in a child process with the TAP reporter. */
function runTestFile(file: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=tap', file], {
      cwd: repo,
      env: { ...process.env, NODE_TEST_CONTEXT: undefined },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), out }));
  });
}

/** Names of the failing leaf tests in TAP output (suites, which fail because a child did, excluded). */
function failingTests(tap: string): string[] {
  const failed = [...tap.matchAll(/^\s*not ok \d+ - (.*)$/gm)].map((m) => m[1]!.trim());
  return failed.filter((name) => !name.startsWith('conformance: ') && !name.startsWith('plugin '));
}

describe('an interrupt', () => {
  it('is reported as an interrupt (exit 130, how to go on), whatever error the step under way then ends with', async () => {
    const dir = await tempDir('plugin-interrupt');
    const ready = path.join(dir, 'reading');
    // A source whose read hangs until interrupted and then fails as a closed connection
    // does, with an error of its own rather than an abort (as WebDAV's HTTP responses did).
    await writeFile(
      path.join(dir, 'stuck.mjs'),
      `import { Readable } from 'node:stream';
import { writeFileSync } from 'node:fs';
const entry = { path: 'stuck #1.bin', kind: 'file', size: 1000, mtimeMs: 0 };
const caps = ${CAPS};
export default {
  name: 'stuck',
  apiVersion: ${PLUGIN_API_VERSION},
  backends: [{
    schemes: ['stuck'],
    description: 'reads that hang until interrupted',
    capabilities: caps,
    async open(url) {
      return {
        url, capabilities: caps,
        async *list() { yield entry; },
        async stat() { return entry; },
        async readlink() { throw new Error('no symlinks here'); },
        async read(p, { signal } = {}) {
          const stream = new Readable({ read() {} });
          const connection = setInterval(() => {}, 1000); // what keeps a real one's process alive: its socket
          stream.on('close', () => clearInterval(connection));
          signal?.addEventListener('abort', () => stream.destroy(new Error('socket hang up')), { once: true });
          writeFileSync(${JSON.stringify(ready)}, 'reading');
          return stream;
        },
        async close() {},
      };
    },
  }],
};
`,
    );
    const { child, done } = startBitfog(['fetch', 'stuck://site-a/', path.join(dir, 'spool'), '--plugin', path.join(dir, 'stuck.mjs')], {
      env: { BITFOG_CACHE_DIR: path.join(dir, 'cache') },
    });
    for (let i = 0; i < 300 && !existsSync(ready); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(existsSync(ready), 'the read began');
    child.kill('SIGINT');
    const r = await done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /bitfog: interrupted; run the same command again to resume/);
    assert.doesNotMatch(r.stderr, /socket hang up/);
  });
});

describe('the example plugins through the conformance kit', () => {
  it("the dirstore example's own test file passes (kit, capabilities, cycle)", async () => {
    const { code, out } = await runTestFile(path.join(dirstoreExample, 'test', 'dirstore.test.ts'));
    assert.deepEqual(failingTests(out), []);
    assert.equal(code, 0, out.slice(-3000));
  });

  it('the broken example is caught: the kit fails exactly on its false atomic-write claim', async () => {
    const { code, out } = await runTestFile(path.join(brokenExample, 'test', 'hasty.test.ts'));
    assert.notEqual(code, 0, 'the kit must fail the broken plugin');
    assert.deepEqual(failingTests(out), ['refuses a write whose byte count differs from the declared size']);
  });
});

// The example plugin loaded from its path, exactly as `--plugin ./examples/dirstore-plugin`
// would, through the whole kit including the spool cycle.
const exampleRegistry = await createRegistry({ plugins: [dirstoreExample], env: {} });
const exampleRoots = await tempDir('plugin-example-roots');
let rootCount = 0;
const newExampleUrl = async () => {
  const dir = path.join(exampleRoots, `root ${++rootCount} #%`);
  await mkdir(dir);
  return `dirstore://${encodeURI(dir).replace(/#/g, '%23')}`;
};
testBackend({
  name: 'dirstore example loaded by path',
  open: async () => exampleRegistry.openDestination(await newExampleUrl()),
  cycle: { newUrl: newExampleUrl, registry: exampleRegistry },
  largeFileBytes: 3 * 1024 * 1024 + 1,
});
