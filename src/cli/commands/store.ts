import { Command, Option } from 'clipanion';
import { formatDuration, formatSize } from '../../core/sizes.ts';
import { assertSpoolApart, Spool } from '../../core/spool.ts';
import { storeFromSpool, type StoreResult } from '../../core/store.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';
import { loadSnapshotFile } from '../snapshot-file.ts';

abstract class StoreBase extends BitfogCommand {
  newDestination = Option.Boolean('--new-destination', false, {
    description: 'Write into this destination though the spool recorded another one (the same tree at a new address); default: refuse',
  });

  protected async storeFrom(
    spoolDir: string, destUrl: string, signal: AbortSignal, srcdb?: string, sourceChecks: { newSource?: boolean; allowEmptySource?: boolean } = {},
  ): Promise<number> {
    const source = srcdb ? await loadSnapshotFile(srcdb) : undefined;
    const registry = await this.registry();
    const destination = await registry.openDestination(destUrl, { signal });
    let stored = false;
    try {
      // Checked before the spool is created: a refused spool leaves nothing behind.
      await assertSpoolApart(spoolDir, destination, 'destination');
      const spool = await Spool.open(spoolDir, { create: true });
      const progress = this.progress();
      try {
        const result = await storeFromSpool({
          destination, spool, cache: await this.hashCache(destination.url), signal, onProgress: progress.listener, newDestination: this.newDestination, ...sourceChecks,
          ...(source ? { source: source.snapshot, sourceSkipped: source.skipped } : {}),
        });
        stored = true;
        progress.finish();
        this.summarize(result);
        if (result.corrupt.length) return ExitCode.CORRUPT;
        if (result.conflicts.length) return ExitCode.CONFLICTS;
        return ExitCode.OK;
      } finally {
        progress.finish();
        await spool.close();
      }
    } finally {
      // Refused or failed: a destination directory this command created, still empty, goes
      // (a mistyped URL leaves no directory behind).
      if (!stored) await destination.discardCreatedRoot?.().catch(() => {});
      await destination.close();
    }
  }

  private summarize(r: StoreResult): void {
    if (r.recordedOnly) {
      this.out(`store: the spool carried nothing; recorded the destination's state (${formatDuration(r.elapsedMs / 1000)})`);
      this.out('  next: take the spool to the source and run "bitfog fetch <src-url> <spool>"');
      return;
    }
    this.out(`store finished in ${formatDuration(r.elapsedMs / 1000)} (trip ${r.trip})`);
    this.out(`  written:           ${r.writtenFiles} files, ${formatSize(r.writtenBytes)}${r.copiedFiles ? ` (${r.copiedFiles} copied from files already there)` : ''}`);
    if (r.symlinks) this.out(`  symlinks:          ${r.symlinks}`);
    if (r.directories) this.out(`  directories made:  ${r.directories}`);
    this.out(`  removed:           ${r.removed}`);
    if (r.metadataUpdated) this.out(`  metadata updated:  ${r.metadataUpdated}`);
    if (r.delta.files) this.out(`  from deltas:       ${r.delta.files} files, ${formatSize(r.delta.fileBytes)} assembled from ${formatSize(r.delta.carriedBytes)} carried`);
    for (const d of r.delta.refused) this.out(`  delta refused:     ${d.path}: ${d.reason}`);
    this.out(`  conflicts:         ${r.conflicts.length}${r.conflicts.length ? ' (left alone; see "bitfog status")' : ''}`);
    if (r.corrupt.length) this.out(`  corrupt on spool:  ${r.corrupt.length} (not written; carried again next trip)`);
    if (r.unsupported.length) this.out(`  not storable here: ${r.unsupported.length}`);
    this.out(`  still to carry:    ${r.pendingFiles} files, ${formatSize(r.pendingBytes)}`);
    this.out(`  spool space freed: ${formatSize(r.freedBytes)}`);
    if (r.pendingFiles === 0 && r.conflicts.length === 0) this.out('  the destination now matches the source snapshot');
  }
}

export class StoreCommand extends StoreBase {
  static paths = [['store']];
  static usage = Command.Usage({
    category: 'Sneakernet cycle',
    description: 'At the destination: write what the spool carries, apply removals, record the new state.',
    details: `
      Writes every file the spool carries into \`<dest-url>\` (under a temporary name, verified against its hash, then renamed into place), creates symlinks and directories, sets modes and mtimes, and removes what the source no longer has. An entry at the destination is replaced or removed only if it still matches the destination state recorded when the plan was made; anything else is a conflict, left alone and listed by \`bitfog status\`. Then it records the destination's new state on the spool and frees the space of what landed.

      On a spool that carries nothing (a new spool) it only records the destination's state: that is how a first trip starts. Interrupting (even kill -9) is safe: run the same command again.

      A destination other than the one the spool recorded is refused: its own files would become conflicts, then removals on the next trip (\`--new-destination\` if it is the same tree at a new address).

      Exit codes: 0 done; 3 done with conflicts left alone; 4 corrupt content found on the spool (not written).
    `,
    examples: [
      ['Store into a local tree', '$0 store /media/usb/spool /srv/mirror'],
      ['Start a first trip: record an empty or existing destination', '$0 store /media/usb/spool s3://bucket/mirror/'],
    ],
  });

  spool = Option.String({ name: 'spool' });
  dest = Option.String({ name: 'dest-url' });

  protected run(signal: AbortSignal): Promise<number> {
    return this.storeFrom(this.spool, this.dest, signal);
  }
}

export class ClassicStoreCommand extends StoreBase {
  static paths = [['store']];
  static usage = Command.Usage({
    category: 'Classic commands',
    description: 'Classic form: write what <dir> carries into <dest-url>, removing what <srcdb> lacks.',
    details: `
      \`<srcdb>\` is a \`bitfog builddb\` snapshot of the source, carried along with \`<dir>\` (the directory \`bitfog fetch <destdb> <src-url> <dir>\` filled). Safety rules are those of the spool form. As \`<srcdb>\` decides what is removed, it must be a snapshot of the tree \`<dir>\` was filled from (\`--new-source\` if it is the same tree at a new address), not \`emptydb\`'s, and not empty where there was a tree (\`--allow-empty-source\`).
    `,
    examples: [['The original README\'s flow', '$0 store src.db http://site-b:8675/dest/ /media/usb/tmp']],
  });

  newSource = Option.Boolean('--new-source', false, {
    description: 'Take <srcdb> though <dir> was filled from another tree (the same tree at a new address); default: refuse',
  });
  allowEmptySource = Option.Boolean('--allow-empty-source', false, {
    description: 'Take an empty <srcdb> where there was a tree (it removes everything at the destination); default: refuse',
  });
  srcdb = Option.String({ name: 'srcdb' });
  dest = Option.String({ name: 'dest-url' });
  dir = Option.String({ name: 'dir' });

  protected run(signal: AbortSignal): Promise<number> {
    return this.storeFrom(this.dir, this.dest, signal, this.srcdb, { newSource: this.newSource, allowEmptySource: this.allowEmptySource });
  }
}
