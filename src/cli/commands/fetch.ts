import { Command, Option } from 'clipanion';
import * as t from 'typanion';
import { fetchToSpool, type FetchResult } from '../../core/fetch.ts';
import { CARRY_ORDERS, type CarryOrder } from '../../core/plan.ts';
import { formatDuration, formatSize, parseSize } from '../../core/sizes.ts';
import { assertSpoolApart, Spool } from '../../core/spool.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';
import { loadSnapshotFile } from '../snapshot-file.ts';

const fetchOptions = {
  max: () => Option.String('--max', { description: 'Carry at most SIZE in all (500G, 1.5T, 200MiB, bytes); default: the spool disk\'s free space less the reserve' }),
  reserve: () => Option.String('--reserve', { description: 'Free space to leave on the spool disk (default 64MiB), besides the room a save of the manifest needs' }),
  order: () =>
    Option.String('--order', 'largest', {
      description: `Which files first when not all fit: ${CARRY_ORDERS.join(', ')} (default largest)`,
      validator: t.isEnum(CARRY_ORDERS),
    }),
  newSource: () =>
    Option.Boolean('--new-source', false, { description: 'Take this source though the spool carries another tree (the same tree at a new address); default: refuse' }),
  allowEmptySource: () =>
    Option.Boolean('--allow-empty-source', false, { description: 'Take an empty source though it had entries or the destination has (store then removes them); default: refuse' }),
};

abstract class FetchBase extends BitfogCommand {
  max = fetchOptions.max();
  reserve = fetchOptions.reserve();
  order = fetchOptions.order();
  newSource = fetchOptions.newSource();
  allowEmptySource = fetchOptions.allowEmptySource();

  protected async fetchInto(sourceUrl: string, spoolDir: string, signal: AbortSignal, destdb?: string): Promise<number> {
    const maxBytes = this.max === undefined ? undefined : parseSize(this.max);
    const reserveBytes = this.reserve === undefined ? undefined : parseSize(this.reserve);
    const destination = destdb ? (await loadSnapshotFile(destdb)).snapshot : undefined;
    const registry = await this.registry();
    const source = await registry.openSource(sourceUrl, { signal });
    // Checked before the spool is created: a refused spool leaves nothing behind.
    await assertSpoolApart(spoolDir, source, 'source').catch(async (e: unknown) => {
      await source.close();
      throw e;
    });
    const spool = await Spool.open(spoolDir, { create: true });
    const progress = this.progress();
    try {
      const result = await fetchToSpool({
        source, spool, cache: await this.hashCache(source.url), signal, onProgress: progress.listener,
        order: this.order as CarryOrder,
        newSource: this.newSource,
        allowEmptySource: this.allowEmptySource,
        ...(destination ? { destination } : {}),
        ...(maxBytes === undefined ? {} : { maxBytes }),
        ...(reserveBytes === undefined ? {} : { reserveBytes }),
      });
      progress.finish();
      this.summarize(result);
      return ExitCode.OK;
    } finally {
      progress.finish();
      await spool.close();
      await source.close();
    }
  }

  private summarize(r: FetchResult): void {
    this.out(`fetch finished in ${formatDuration(r.elapsedMs / 1000)} (trip ${r.trip})`);
    this.out(`  source entries:    ${r.sourceEntries}`);
    this.out(`  carried now:       ${r.carriedFiles} files, ${formatSize(r.carriedBytes)}`);
    if (r.delta.files) this.out(`  as deltas:         ${r.delta.files} of them (${formatSize(r.delta.fileBytes)}) took ${formatSize(r.delta.chunkBytes)} of new chunks`);
    if (r.alreadyCarriedBytes) this.out(`  already on spool:  ${formatSize(r.alreadyCarriedBytes)}`);
    this.out(`  left for later:    ${r.deferredFiles} files, ${formatSize(r.deferredBytes)}${r.unreadableFiles ? ` (${r.unreadableFiles} of them could not be read now)` : ''}`);
    this.out(`  removals planned:  ${r.plannedRemovals}`);
    if (r.skipped.length) this.out(`  skipped:           ${r.skipped.length} (see "bitfog status")`);
    if (r.assumedEmptyDestination) this.out('  destination state: none recorded; assumed empty');
    if (r.stoppedByFullDisk) this.out('  stopped: the spool disk is full; what was carried is kept');
    else if (r.carriedFiles === 0 && r.deferredFiles > r.unreadableFiles) {
      // Say why nothing went: a default --reserve larger than a small disk's free space, say.
      this.out(`  nothing fitted:    this trip had room for ${formatSize(r.budgetBytes)} (--max, or the spool disk's free space less --reserve and room to save the manifest)`);
    }
  }
}

export class FetchCommand extends FetchBase {
  static paths = [['fetch']];
  static usage = Command.Usage({
    category: 'Sneakernet cycle',
    description: 'At the source: carry onto the spool what the destination lacks.',
    details: `
      Snapshots \`<src-url>\` into the spool's manifest and copies onto the spool the content the destination (as last recorded on the spool by \`bitfog store\`) does not have, largest files first, until \`--max\` or the spool disk's free space (less \`--reserve\`) is used. Files that do not fit wait for the next trip; smaller ones that fit are still taken. With no destination state on the spool it assumes an empty destination and says so.

      Identical content is carried once. Every blob is hashed as it is copied and kept only if it matches; a file that changes while being carried is left for the next trip. Interrupting (even kill -9) is safe: run the same command again to continue.

      A spool carries one tree: a source other than the one it was filled from is refused (\`--new-source\` if it is the same tree at a new address), and so is an empty source where there was a tree (a disk not mounted?), since store would then remove everything at the destination (\`--allow-empty-source\` if it really is empty now).
    `,
    examples: [
      ['Carry a tree onto a USB disk, at most 500 GiB', '$0 fetch /srv/data /media/usb/spool --max 500G'],
      ['Carry from a classic bitfog server', '$0 fetch http://site-a:8675/vms/ /media/usb/spool'],
    ],
  });

  source = Option.String({ name: 'src-url' });
  spool = Option.String({ name: 'spool' });

  protected run(signal: AbortSignal): Promise<number> {
    return this.fetchInto(this.source, this.spool, signal);
  }
}

export class ClassicFetchCommand extends FetchBase {
  static paths = [['fetch']];
  static usage = Command.Usage({
    category: 'Classic commands',
    description: 'Classic form: carry into <dir> what the destination described by <destdb> lacks.',
    details: `
      \`<destdb>\` is a snapshot file made by \`bitfog builddb\` at the destination (or \`bitfog emptydb\`). \`<dir>\` becomes a spool (it is never wiped: rerunning resumes). Carry \`<dir>\` and a \`builddb\` of the source to the destination and run \`bitfog store <srcdb> <dest-url> <dir>\` there.
    `,
    examples: [['The original README\'s flow', '$0 fetch dest.db http://site-a:8675/src/ /media/usb/tmp']],
  });

  destdb = Option.String({ name: 'destdb' });
  source = Option.String({ name: 'src-url' });
  dir = Option.String({ name: 'dir' });

  protected run(signal: AbortSignal): Promise<number> {
    return this.fetchInto(this.source, this.dir, signal, this.destdb);
  }
}
