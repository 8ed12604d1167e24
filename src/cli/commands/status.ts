import { Command, Option } from 'clipanion';
import { formatSize } from '../../core/sizes.ts';
import { Spool } from '../../core/spool.ts';
import { spoolStatus } from '../../core/status.ts';
import { BitfogCommand } from '../base.ts';
import { ExitCode } from '../exit-codes.ts';
import { quote } from '../progress.ts';

export class StatusCommand extends BitfogCommand {
  static paths = [['status']];
  static usage = Command.Usage({
    category: 'Sneakernet cycle',
    description: 'What the spool carries, what is left to carry, and how many trips that is.',
    details: `
      Reads the spool's manifest (without taking its lock, so it works while another command runs). Trips are planned at the spool's size: the last fetch's \`--max\`, else the free space it saw. \`--json\` prints the same as one JSON object.
    `,
    examples: [['Where are we?', '$0 status /media/usb/spool'], ['For scripts', '$0 status /media/usb/spool --json']],
  });

  spool = Option.String({ name: 'spool' });
  json = Option.Boolean('--json', false, { description: 'Print one JSON object' });

  protected async run(): Promise<number> {
    const { manifest, blobs } = await Spool.inspect(this.spool);
    try {
      const s = spoolStatus(manifest, blobs);
      if (this.json) {
        this.out(JSON.stringify(s, null, 2));
        return ExitCode.OK;
      }
      this.out(`spool ${this.spool} (format ${s.formatVersion}, trip ${s.trip})`);
      this.out(`  source:       ${s.source ? `${s.source.url} — ${s.source.entries} entries, ${formatSize(s.source.bytes)}, snapshot ${s.source.takenAt}` : 'not recorded yet (run "bitfog fetch")'}`);
      this.out(`  destination:  ${s.destination ? `${s.destination.assumedEmpty ? 'assumed empty' : `${s.destination.url} — ${s.destination.entries} entries, ${formatSize(s.destination.bytes)}, snapshot ${s.destination.takenAt}`}` : 'not recorded yet (run "bitfog store")'}`);
      this.out(`  carried:      ${s.carried.files} files, ${formatSize(s.carried.bytes)} (${s.carried.blobs} blobs)`);
      this.out(`  left:         ${s.left.files} files, ${formatSize(s.left.bytes)}`);
      const d = s.delta;
      if (d.files || d.storedSavedBytes || d.signatures) {
        this.out(
          `  deltas:       ${d.files ? `${d.files} files (${formatSize(d.fileBytes)}) carried as ${formatSize(d.carriedBytes)}, saving ${formatSize(d.savedBytes)}; ` : ''}` +
            `saved ${formatSize(d.storedSavedBytes)} in stored trips; ${d.signatures} destination signatures (${formatSize(d.signatureBytes)})` +
            `${d.refused ? `; ${d.refused} refused (carried whole next trip)` : ''}`,
        );
      }
      if (s.tripsLeft !== undefined) {
        this.out(`  trips left:   ${s.tripsLeft} at ${formatSize(s.capacityBytes!)} per trip${s.carried.bytes ? ' (after storing what is carried now)' : ''}`);
      }
      if (s.tooLarge.length) {
        this.out(`  too large:    ${s.tooLarge.length} files exceed the spool size (e.g. ${quote(s.tooLarge[0]!.path)}, ${formatSize(s.tooLarge[0]!.size)})`);
        const asDeltas = s.tooLarge.filter((t) => t.mayGoAsDelta).length;
        if (asDeltas) this.out(`                ${asDeltas === s.tooLarge.length ? 'all' : asDeltas} of them may still go as deltas: the destination has a version of them, so only changed chunks travel`);
      }
      this.out(`  removals:     ${s.removalsPending} pending at the destination`);
      this.out(`  conflicts:    ${s.conflicts.length}`);
      for (const c of s.conflicts.slice(0, 50)) this.out(`    ${quote(c.path)}: ${c.reason}`);
      if (s.conflicts.length > 50) this.out(`    … ${s.conflicts.length - 50} more (--json lists all)`);
      this.out(`  skipped:      ${s.skipped.length}`);
      for (const k of s.skipped.slice(0, 20)) this.out(`    ${k.side}: ${quote(k.path)}: ${k.reason}`);
      if (s.history.length) {
        this.out('  history:');
        for (const h of s.history.slice(-10)) this.out(`    trip ${h.trip} ${h.command} ${h.at} ${readableDetail(h.detail)}`);
      }
      return ExitCode.OK;
    } finally {
      manifest.close();
    }
  }
}

/**
 * A journal entry's detail for people: the JSON a command recorded (`{"carriedFiles":3,…}`)
 * as "carriedFiles 3, carriedBytes 1.2 MiB, …", sizes in units, flags only when set.
 * Anything else as it is. (`--json` keeps the recorded text.)
 */
function readableDetail(detail: string): string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(detail);
  } catch {
    return detail;
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return detail;
  const parts: string[] = [];
  for (const [key, value] of Object.entries(parsed)) {
    if (typeof value === 'boolean') {
      if (value) parts.push(key);
    } else if (typeof value === 'number' && /bytes/i.test(key)) parts.push(`${key} ${formatSize(value)}`);
    else parts.push(`${key} ${String(value)}`);
  }
  return parts.join(', ');
}
