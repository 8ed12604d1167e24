/**
 * `bitfog backends`: which URL schemes this bitfog can open, where each comes from
 * (built-in or a plugin's name), and what each backend can do. Reads only what providers
 * declare: no backend is opened and no SDK is loaded.
 */
import { Command, Option } from 'clipanion';
import type { RegisteredProvider } from '../../core/registry.ts';
import type { Capabilities } from '../../core/types.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';

export class BackendsCommand extends BitfogCommand {
  static paths = [['backends']];

  static usage = Command.Usage({
    category: 'Configuration',
    description: 'List the storage backends (URL schemes) available, with their origin and capabilities.',
    details: `
      Lists every URL scheme bitfog can open: the built-in backends and those added by plugins
      (listed in the config file, in BITFOG_PLUGINS, or with \`--plugin\`). For each scheme it
      shows where it comes from, a one-line description, and the capabilities the backend
      declares — the core uses these to choose how to write safely (atomic renames or writes),
      what it can carry (symlinks, modes, mtime precision) and how many transfers to run at once.

      With \`--json\`, prints an array of \`{ scheme, origin, description, capabilities }\`.
    `,
    examples: [
      ['List the available backends', '$0 backends'],
      ['Include a plugin from a local path', '$0 backends --plugin ./my-plugin/index.js'],
      ['Machine-readable output', '$0 backends --json'],
    ],
  });

  json = Option.Boolean('--json', false, { description: 'Print a JSON array instead of the listing' });

  protected async run(): Promise<number> {
    const rows = (await this.registry()).list();
    if (this.json) {
      const out = rows.map(({ scheme, origin, provider }) => ({
        scheme,
        origin,
        description: provider.description,
        capabilities: provider.capabilities,
      }));
      this.out(JSON.stringify(out, null, 2));
      return ExitCode.OK;
    }
    this.context.stdout.write(formatBackends(rows));
    return ExitCode.OK;
  }
}

/** The human listing: one block per scheme. */
export function formatBackends(rows: Array<{ scheme: string } & RegisteredProvider>): string {
  const width = Math.max(6, ...rows.map((r) => r.scheme.length)) + 2;
  const indent = ' '.repeat(width);
  const lines: string[] = [];
  for (const { scheme, origin, provider } of rows) {
    lines.push(`${scheme.padEnd(width)}${origin === 'built-in' ? 'built-in' : `plugin ${origin}`}`);
    lines.push(`${indent}${provider.description}`);
    lines.push(`${indent}${describeCapabilities(provider.capabilities)}`);
  }
  return lines.join('\n') + '\n';
}

/** One line naming what a backend can do: the flags it has, then mtime precision and concurrency. */
export function describeCapabilities(c: Capabilities): string {
  const flags: Array<[boolean, string]> = [
    [c.atomicRename, 'atomic rename'],
    [c.atomicWrite, 'atomic write'],
    [c.symlinks, 'symlinks'],
    [c.rangedReads, 'ranged reads'],
    [c.serverSideHashes, 'server-side hashes'],
    [c.modes, 'modes'],
    [c.caseSensitive, 'case-sensitive'],
    [c.emptyDirectories, 'empty directories'],
  ];
  const has = flags.filter(([on]) => on).map(([, name]) => name);
  const lacks = flags.filter(([on]) => !on).map(([, name]) => name);
  return [
    has.length ? has.join(', ') : 'no optional capabilities',
    lacks.length ? `no ${lacks.join(', no ')}` : undefined,
    `mtime ${describePrecision(c.mtimePrecisionMs)}`,
    `up to ${c.maxConcurrency} transfers at once`,
  ]
    .filter(Boolean)
    .join('; ');
}

function describePrecision(ms: number): string {
  if (ms === 0) return 'not kept';
  if (ms >= 1000) return `${ms / 1000} s`;
  if (ms >= 1) return `${ms} ms`;
  if (ms >= 0.001) return `${Math.round(ms * 1000)} µs`;
  return `${Math.round(ms * 1e6)} ns`;
}
