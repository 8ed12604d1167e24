import { Command, Option } from 'clipanion';
import { comparePaths } from '../../core/paths.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';
import { quote } from '../progress.ts';
import type { Entry } from '../../core/types.ts';

export class LsCommand extends BitfogCommand {
  static paths = [['ls']];
  static usage = Command.Usage({
    category: 'Inspection',
    description: "List any backend's entries.",
    details: `
      One line per entry: kind (\`d\` directory, \`f\` file, \`l\` symlink), mode, size, mtime (UTC) and path (\`-> target\` for symlinks). Paths with control characters or quotes are shown JSON-quoted. \`--json\` prints one JSON object per line (NDJSON) as entries arrive, unsorted.
    `,
    examples: [['A local tree', '$0 ls ./site-a'], ['A bucket', '$0 ls s3://bucket/prefix/'], ['For scripts', '$0 ls sftp://me@nas/srv/data --json']],
  });

  url = Option.String({ name: 'url' });
  json = Option.Boolean('--json', false, { description: 'One JSON object per entry (NDJSON), streamed' });

  protected async run(signal: AbortSignal): Promise<number> {
    const backend = await (await this.registry()).openSource(this.url, { signal });
    try {
      const onSkip = (path: string, reason: string) => this.context.stderr.write(`skipped: ${quote(path)}: ${reason}\n`);
      if (this.json) {
        for await (const e of backend.list({ signal, onSkip })) this.out(JSON.stringify(e));
        return ExitCode.OK;
      }
      const entries: Entry[] = [];
      for await (const e of backend.list({ signal, onSkip })) entries.push(e);
      entries.sort((a, b) => comparePaths(a.path, b.path));
      for (const e of entries) {
        const kind = e.kind === 'directory' ? 'd' : e.kind === 'symlink' ? 'l' : 'f';
        const mode = e.mode === undefined ? '----' : (e.mode & 0o7777).toString(8).padStart(4, '0');
        const mtime = e.mtimeMs === undefined ? '-' : new Date(Math.floor(e.mtimeMs)).toISOString().replace(/\.\d+Z$/, 'Z');
        this.out(`${kind} ${mode} ${String(e.size).padStart(12)} ${mtime} ${quote(e.path)}${e.kind === 'symlink' ? ` -> ${quote(e.linkTarget ?? '')}` : ''}`);
      }
      return ExitCode.OK;
    } finally {
      await backend.close();
    }
  }
}
