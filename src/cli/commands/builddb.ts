import { Command, Option } from 'clipanion';
import { defaultCacheDir } from '../../core/hashcache.ts';
import { formatDuration, formatSize } from '../../core/sizes.ts';
import { takeSnapshot } from '../../core/snapshot.ts';
import { checkSnapshotFileTarget, refreshUnchangedSnapshotFile, writeSnapshotFile } from '../../core/snapshotfile.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';

export class BuilddbCommand extends BitfogCommand {
  static paths = [['builddb']];
  static usage = Command.Usage({
    category: 'Classic commands',
    description: 'Snapshot <url> (every entry with its SHA-256) into the manifest file <db>.',
    details: `
      The file is a SQLite database (readable with any sqlite3 tool) holding one snapshot. Unchanged files are not re-read: hashes are cached per tree (see \`--cache-dir\`). When nothing in the tree changed since this command last wrote <db> (every path, size, mode, mtime, ctime and inode as they were), the local backend sees that from a quick look at the tree, and only the timestamps in <db> are renewed. The file is replaced atomically.
    `,
    examples: [['Snapshot the destination', '$0 builddb http://site-b:8675/dest/ dest.db'], ['Snapshot a local tree', '$0 builddb /srv/data src.db']],
  });

  url = Option.String({ name: 'url' });
  db = Option.String({ name: 'db' });

  protected async run(signal: AbortSignal): Promise<number> {
    const t0 = Date.now();
    const backend = await (await this.registry()).openSource(this.url, { signal });
    const progress = this.progress();
    const cacheDir = this.noCache ? undefined : (this.cacheDir ?? defaultCacheDir());
    const summary = (entries: number, bytes: number, note: string) =>
      this.out(`builddb: ${entries} entries, ${formatSize(bytes)} in ${formatDuration((Date.now() - t0) / 1000)} → ${this.db}${note}`);
    try {
      const listingFingerprint = backend.listingFingerprint?.bind(backend);
      if (cacheDir !== undefined && listingFingerprint) {
        const onListed = (entries: number) => progress.listener({ type: 'scan', side: 'source', url: backend.url, entries });
        const unchanged = await refreshUnchangedSnapshotFile(this.db, backend.url, (stop) => listingFingerprint({ signal: AbortSignal.any([signal, stop]), onListed }), { cacheDir });
        if (unchanged) {
          progress.finish();
          summary(unchanged.entries, unchanged.bytes, ' (unchanged)');
          return ExitCode.OK;
        }
      }
      // (An unchanged file, above, is one this command wrote: its record says so.)
      await checkSnapshotFileTarget(this.db);
      const { snapshot, skipped, fingerprint } = await takeSnapshot(backend, {
        side: 'source', cache: await this.hashCache(backend.url), signal, onProgress: progress.listener, fingerprint: cacheDir !== undefined,
      });
      progress.finish();
      await writeSnapshotFile(this.db, snapshot, skipped, cacheDir === undefined ? {} : { cacheDir, ...(fingerprint === undefined ? {} : { fingerprint }) });
      let bytes = 0;
      for (const e of snapshot.entries.values()) if (e.kind === 'file') bytes += e.size;
      summary(snapshot.entries.size, bytes, skipped.length ? ` (${skipped.length} skipped)` : '');
      for (const s of skipped.slice(0, 20)) this.context.stderr.write(`skipped: ${s.path}: ${s.reason}\n`);
      return ExitCode.OK;
    } finally {
      progress.finish();
      await backend.close();
    }
  }
}
