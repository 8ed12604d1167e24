import { Command, Option } from 'clipanion';
import { defaultCacheDir } from '../../core/hashcache.ts';
import { formatDuration, formatSize } from '../../core/sizes.ts';
import { takeSnapshot } from '../../core/snapshot.ts';
import { writeSnapshotFile } from '../../core/snapshotfile.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';

export class BuilddbCommand extends BitfogCommand {
  static paths = [['builddb']];
  static usage = Command.Usage({
    category: 'Classic commands',
    description: 'Snapshot <url> (every entry with its SHA-256) into the manifest file <db>.',
    details: `
      The file is a SQLite database (readable with any sqlite3 tool) holding one snapshot. Unchanged files are not re-read: hashes are cached per tree (see \`--cache-dir\`). The file is replaced atomically.
    `,
    examples: [['Snapshot the destination', '$0 builddb http://site-b:8675/dest/ dest.db'], ['Snapshot a local tree', '$0 builddb /srv/data src.db']],
  });

  url = Option.String({ name: 'url' });
  db = Option.String({ name: 'db' });

  protected async run(signal: AbortSignal): Promise<number> {
    const t0 = Date.now();
    const backend = await (await this.registry()).openSource(this.url, { signal });
    const progress = this.progress();
    try {
      const { snapshot, skipped } = await takeSnapshot(backend, { side: 'source', cache: await this.hashCache(backend.url), signal, onProgress: progress.listener });
      progress.finish();
      await writeSnapshotFile(this.db, snapshot, skipped, this.noCache ? {} : { cacheDir: this.cacheDir ?? defaultCacheDir() });
      let bytes = 0;
      for (const e of snapshot.entries.values()) if (e.kind === 'file') bytes += e.size;
      this.out(`builddb: ${snapshot.entries.size} entries, ${formatSize(bytes)} in ${formatDuration((Date.now() - t0) / 1000)} → ${this.db}${skipped.length ? ` (${skipped.length} skipped)` : ''}`);
      for (const s of skipped.slice(0, 20)) this.context.stderr.write(`skipped: ${s.path}: ${s.reason}\n`);
      return ExitCode.OK;
    } finally {
      progress.finish();
      await backend.close();
    }
  }
}
