import { Command, Option } from 'clipanion';
import { hashStream } from '../../core/hashing.ts';
import { formatSize } from '../../core/sizes.ts';
import { FINISHED_EVENTS } from '../../core/manifest.ts';
import { Spool } from '../../core/spool.ts';
import { isBitfogError, throwIfAborted } from '../../core/errors.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';
import { quote } from '../progress.ts';

export class VerifyCommand extends BitfogCommand {
  static paths = [['verify']];
  static usage = Command.Usage({
    category: 'Sneakernet cycle',
    description: 'Re-hash everything the spool carries; list what is corrupt or missing.',
    details: `
      Reads every blob on the spool and checks it against its SHA-256, and checks the manifest database. A spool on a disk mounted read-only is checked too (without its lock: nothing can change it). Corrupt blobs, and carried content that is no longer on the spool, are listed with the files that would have used them; nothing is changed (\`bitfog store\` never writes a corrupt blob: it removes it so the next fetch carries it again).

      Exit codes: 0 all good; 4 something is corrupt or missing.
    `,
    examples: [['Check a spool after a rough journey', '$0 verify /media/usb/spool']],
  });

  spool = Option.String({ name: 'spool' });

  protected async run(signal: AbortSignal): Promise<number> {
    // A disk mounted read-only (the safe way to look at one after a rough journey) cannot
    // hold a lock, and needs none: nothing can change it meanwhile.
    const spool = await Spool.open(this.spool, { create: false }).catch(async (e: unknown) => {
      if (!isBitfogError(e, 'EROFS')) throw e;
      this.context.stderr.write('note: the spool is on a read-only file system: verifying it without its lock\n');
      return Spool.open(this.spool, { create: false, readOnly: true });
    });
    const progress = this.progress();
    try {
      const integrity = spool.manifest.db.exec('PRAGMA integrity_check')[0]?.values[0]?.[0];
      const manifestOk = integrity === 'ok';
      const blobs = spool.blobs();
      const total = blobs.reduce((n, b) => n + b.size, 0);
      progress.listener({ type: 'transfer-start', phase: 'verify', files: blobs.length, bytes: total });
      const source = spool.manifest.getSnapshot('source');
      const pathsOf = new Map<string, string[]>();
      for (const e of source?.entries.values() ?? []) if (e.hash) pathsOf.set(e.hash, [...(pathsOf.get(e.hash) ?? []), e.path]);
      const corrupt: Array<{ hash: string; reason: string }> = [];
      let files = 0;
      let bytes = 0;
      for (const b of blobs) {
        throwIfAborted(signal);
        const { hash, bytes: n } = await hashStream(await spool.readBlob(b.hash, signal), (k) => {
          bytes += k;
          progress.listener({ type: 'transfer', phase: 'verify', files, bytes });
        });
        if (hash !== b.hash) corrupt.push({ hash: b.hash, reason: `content hashes to ${hash} (${n} bytes)` });
        files++;
      }
      progress.finish();
      // Content the manifest says is carried but that is no longer on the spool (deleted by
      // hand, lost by the file system). Unless the last command that saved the manifest
      // was interrupted: a store frees what landed before it saves, so then it may be that.
      const onDisk = new Set(blobs.map((b) => b.hash));
      const missing = spool.manifest.carriedRecord().filter((c) => !onDisk.has(c.hash));
      const lastEvent = spool.manifest.journal({ limit: 1 })[0]?.event;
      const interrupted = lastEvent !== undefined && !FINISHED_EVENTS.includes(lastEvent);
      /** "; used by …": the first few files that would have used the content of `hash`. */
      const usedBy = (hash: string) => {
        const paths = pathsOf.get(hash) ?? [];
        return paths.length ? `; used by ${paths.slice(0, 3).map(quote).join(', ')}${paths.length > 3 ? ` and ${paths.length - 3} more` : ''}` : '';
      };
      for (const m of missing) this.out(`missing: ${m.hash} (${formatSize(m.size)}): listed as carried, not on the spool${usedBy(m.hash)}`);
      if (missing.length && interrupted) this.out('  (the last command on this spool was interrupted: a store frees what it wrote before it records that, so these may be gone for that reason)');
      for (const c of corrupt) this.out(`corrupt: ${c.hash}: ${c.reason}${usedBy(c.hash)}`);
      if (!manifestOk) this.out(`corrupt: manifest: ${String(integrity)}`);
      this.out(`verify: ${blobs.length} blobs, ${formatSize(total)} checked; ${corrupt.length} corrupt${missing.length ? `; ${missing.length} missing` : ''}${manifestOk ? '' : '; manifest damaged'}`);
      return corrupt.length || !manifestOk || (missing.length && !interrupted) ? ExitCode.CORRUPT : ExitCode.OK;
    } finally {
      progress.finish();
      await spool.close();
    }
  }
}
