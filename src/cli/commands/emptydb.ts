import { Command, Option } from 'clipanion';
import { toBitfogError } from '../../core/errors.ts';
import { EMPTY_SNAPSHOT_URL, Manifest } from '../../core/manifest.ts';
import { checkSnapshotFileTarget } from '../../core/snapshotfile.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';

export class EmptydbCommand extends BitfogCommand {
  static paths = [['emptydb']];
  static usage = Command.Usage({
    category: 'Classic commands',
    description: 'Write a manifest file <db> saying the destination is empty.',
    examples: [['A blank destination', '$0 emptydb dest.db']],
  });

  db = Option.String({ name: 'db' });

  protected async run(): Promise<number> {
    await checkSnapshotFileTarget(this.db);
    const manifest = await Manifest.create();
    manifest.putSnapshot('snapshot', { url: EMPTY_SNAPSHOT_URL, takenAt: new Date().toISOString(), entries: new Map() });
    await manifest.save(this.db).catch((e: unknown) => {
      throw toBitfogError(e, `cannot write ${this.db}`);
    });
    manifest.close();
    this.out(`emptydb: wrote an empty destination snapshot to ${this.db}`);
    return ExitCode.OK;
  }
}
