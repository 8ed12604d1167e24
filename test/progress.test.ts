/**
 * The CLI's progress rendering: on a terminal a redrawn status line with counts, size and
 * percentage, built from the latest event; `--quiet` draws nothing; skips print in full.
 */
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { ProgressRenderer } from '../src/cli/progress.ts';

function terminal(): Writable & { isTTY: boolean; columns: number; text: () => string } {
  let text = '';
  const out = new Writable({
    write(chunk, _enc, cb) {
      text += String(chunk);
      cb();
    },
  }) as Writable & { isTTY: boolean; columns: number; text: () => string };
  out.isTTY = true;
  out.columns = 200;
  out.text = () => text;
  return out;
}

describe('progress rendering', () => {
  it('draws the latest state of a transfer on a terminal, at most every 100 ms', async () => {
    const out = terminal();
    const progress = new ProgressRenderer(out);
    progress.listener({ type: 'transfer-start', phase: 'store', files: 3, bytes: 3 * 1024 * 1024 });
    assert.match(out.text(), /store: 3 files, 3\.00 MiB to move/);
    for (let i = 1; i <= 100; i++) progress.listener({ type: 'transfer', phase: 'store', files: 1, bytes: i * 10_000, current: 'a #1/ü?.bin' });
    const drawnSoFar = out.text().split('\r\x1b[K').length;
    assert.ok(drawnSoFar <= 3, `a burst of events is drawn at most once (${drawnSoFar})`);
    await new Promise((r) => setTimeout(r, 120));
    progress.listener({ type: 'transfer', phase: 'store', files: 2, bytes: 2 * 1024 * 1024, current: 'b' });
    assert.match(out.text(), /store: 2\/3 files, 2\.00 MiB\/3\.00 MiB 66\.7%/, 'the newest event, not an earlier one');
    progress.listener({ type: 'skip', path: 'odd\nname', reason: 'not a regular file, symlink or directory' });
    assert.match(out.text(), /skipped: "odd\\nname": not a regular file/);
  });

  it('draws nothing with --quiet', () => {
    const out = terminal();
    const progress = new ProgressRenderer(out, { quiet: true });
    progress.listener({ type: 'transfer-start', phase: 'fetch', files: 1, bytes: 10 });
    progress.listener({ type: 'transfer', phase: 'fetch', files: 1, bytes: 10, current: 'x' });
    assert.equal(out.text(), '');
  });
});
