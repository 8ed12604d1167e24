/** Unit tests: paths, sizes, planning, the manifest. */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { isBitfogError } from '../src/core/errors.ts';
import { Manifest, MANIFEST_FORMAT_VERSION, type Snapshot } from '../src/core/manifest.ts';
import { comparePaths, relPathProblem, toRelPath, type RelPath } from '../src/core/paths.ts';
import { contentNeeds, planStore, planTrips, selectForTrip, type ContentNeed } from '../src/core/plan.ts';
import { formatCount, formatSize, parseSize } from '../src/core/sizes.ts';
import { isTempPath, tempSiblingOf } from '../src/core/tempnames.ts';
import type { Entry } from '../src/core/types.ts';
import { tempDir } from './helpers/tmp.ts';

describe('portable paths', () => {
  it('accepts every awkward but valid name unchanged', () => {
    for (const p of ['a', 'with space/ünï €', 'hash#/100%/what?', 'new\nline', 'back\\slash', '..dots..', '.hidden/x', '%2e%2e/%2f']) {
      assert.equal(toRelPath(p), p);
    }
  });
  it('rejects traversal, absolute paths, NUL and empty segments', () => {
    for (const [p, why] of [
      ['..', '".." segment'], ['a/../b', '".." segment'], ['/etc/passwd', 'absolute path'], ['a//b', 'empty segment'],
      ['a/./b', '"." segment'], ['a\0b', 'contains NUL'], ['', 'empty path'], ['a/', 'trailing slash'], ['\uD800x', 'not valid Unicode'],
    ] as const) {
      assert.equal(relPathProblem(p), why, JSON.stringify(p));
      assert.throws(() => toRelPath(p), (e) => isBitfogError(e, 'EBADPATH'));
    }
  });
  it('sorts a directory before its sibling with a longer name, as a walk does', () => {
    assert.deepEqual(['a-c', 'a/b', 'a'].sort(comparePaths), ['a', 'a/b', 'a-c']);
  });
});

describe('temporary names', () => {
  it('are siblings, recognised as temporary, unique, and carry a tame hint of the name', () => {
    const names = new Set<string>();
    for (let i = 0; i < 5000; i++) {
      const t = tempSiblingOf(toRelPath('deep/dir ü/100% #1?.bin'));
      assert.ok(t.startsWith('deep/dir ü/.bitfog-tmp-'), t);
      assert.ok(isTempPath(t), t);
      assert.ok(t.endsWith('-100___1_.bin'), t);
      names.add(t);
    }
    assert.equal(names.size, 5000, 'no name given twice');
    assert.ok(isTempPath(tempSiblingOf(toRelPath('top.txt'))));
    for (const user of ['.bitfog-tmp-', '.bitfog-tmp-xyz', 'a/.bitfog-tmp-0123', '.bitfog-tmp final', 'x.bitfog-tmp-0123456789abcdef', '.bitfog-tmp-fedcba9876543210', 'd/.bitfog-tmp-fedcba9876543210.txt']) {
      assert.equal(isTempPath(user), false, user);
    }
  });
});

describe('sizes', () => {
  it('parses what people type', () => {
    assert.equal(parseSize('500G'), 500 * 2 ** 30);
    assert.equal(parseSize('1.5T'), 1.5 * 2 ** 40);
    assert.equal(parseSize('200MiB'), 200 * 2 ** 20);
    assert.equal(parseSize('750GB'), 750e9);
    assert.equal(parseSize('4096'), 4096);
    assert.equal(parseSize('10k'), 10240);
    for (const bad of ['', 'G', '1.5.3G', '-1G', '12 parsecs', '1e3']) assert.throws(() => parseSize(bad), (e) => isBitfogError(e, 'EUSAGE'));
  });
  it('formats with binary units', () => {
    assert.equal(formatSize(512), '512 B');
    assert.equal(formatSize(1536), '1.50 KiB');
    assert.equal(formatSize(3 * 2 ** 30), '3.00 GiB');
  });
  it('formats counts as en-US does', () => {
    for (const n of [0, 7, 999, 1000, 12_345, 999_999, 1_000_000, 123_456_789, 2 ** 53 - 1]) assert.equal(formatCount(n), n.toLocaleString('en-US'), String(n));
  });
});

const H = (n: number) => `sha256:${n.toString(16).padStart(64, '0')}`;
function file(p: string, size: number, hash?: string, extra: Partial<Entry> = {}): Entry {
  return { path: p as RelPath, kind: 'file', size, ...(hash ? { hash } : {}), mode: 0o644, mtimeMs: 1000, ...extra };
}
function snap(...entries: Entry[]): Snapshot {
  return { url: 'x', takenAt: '', entries: new Map(entries.map((e) => [e.path, e])) };
}
const caps = { symlinks: true, modes: true, mtimePrecisionMs: 0.01, emptyDirectories: true };

describe('planning a fetch', () => {
  it('carries what the destination lacks, identical content once, renames not at all', () => {
    const source = snap(file('a', 10, H(1)), file('b', 10, H(1)), file('c', 20, H(2)), file('moved', 30, H(3)), file('same', 5, H(4)), file('e', 0, H(0)));
    const dest = snap(file('old name', 30, H(3)), file('same', 5, H(4)));
    const { needs } = contentNeeds(source, dest, new Set());
    assert.deepEqual(needs.map((n) => [n.hash, n.paths]).sort(), [[H(1), ['a', 'b']], [H(2), ['c']]].sort());
  });
  it('does not count content the spool already carries', () => {
    const { needs, alreadyCarried } = contentNeeds(snap(file('a', 10, H(1)), file('b', 20, H(2))), snap(), new Set([H(1)]));
    assert.deepEqual(needs.map((n) => n.hash), [H(2)]);
    assert.deepEqual(alreadyCarried.map((n) => n.hash), [H(1)]);
  });
  it('takes the largest first and still takes smaller ones that fit', () => {
    const needs: ContentNeed[] = [100, 70, 50, 30, 20].map((size, i) => ({ hash: H(i + 1), size, paths: [`f${i}` as RelPath] }));
    const { selected, deferred } = selectForTrip(needs, 125);
    assert.deepEqual(selected.map((s) => s.size), [100, 20]);
    assert.deepEqual(deferred.map((s) => s.size), [70, 50, 30]);
    assert.deepEqual(selectForTrip(needs, 125, 'smallest').selected.map((s) => s.size), [20, 30, 50]);
  });
  it('counts trips by first-fit decreasing and names what can never fit', () => {
    const needs: ContentNeed[] = [60, 50, 40, 30, 20, 200].map((size, i) => ({ hash: H(i + 1), size, paths: [`f${i}` as RelPath] }));
    const { trips, tooLarge } = planTrips(needs, 100);
    assert.equal(trips.length, 2);
    assert.deepEqual(tooLarge.map((t) => t.size), [200]);
  });
});

describe('planning a store', () => {
  const live = snap(file('unchanged', 5, H(4)), file('to replace', 7, H(5)), file('to remove', 3, H(6)), file('edited at dest', 3, H(9)), file('unknown', 1, H(10)));
  const recorded = snap(file('unchanged', 5, H(4)), file('to replace', 7, H(5)), file('to remove', 3, H(6)), file('edited at dest', 3, H(7)));
  const source = snap(file('unchanged', 5, H(4)), file('to replace', 8, H(8)), file('edited at dest', 9, H(11)), file('new', 2, H(12)), file('not carried yet', 4, H(13)));
  const onSpool = (h: string) => [H(8), H(11), H(12)].includes(h);

  it('replaces and removes only what still matches the recorded state', () => {
    const plan = planStore({ source, recorded, live, onSpool, capabilities: caps });
    const ops = plan.actions.map((a) => `${a.op} ${a.path}`);
    assert.ok(ops.includes('write to replace'));
    assert.ok(ops.includes('remove to remove'));
    assert.ok(ops.includes('write new'));
    assert.ok(!ops.some((o) => o.endsWith(' unknown')), 'an unknown file is never removed');
    assert.ok(!ops.some((o) => o.endsWith('edited at dest')), 'an edited file is never replaced');
    assert.deepEqual(plan.conflicts.map((c) => c.path).sort(), ['edited at dest', 'unknown']);
    assert.deepEqual(plan.pending, [{ path: 'not carried yet', size: 4 }]);
  });
  it('copies content the destination already holds instead of waiting for it', () => {
    const plan = planStore({
      source: snap(file('new name', 30, H(3))), recorded: snap(file('old name', 30, H(3))), live: snap(file('old name', 30, H(3))),
      onSpool: () => false, capabilities: caps,
    });
    const write = plan.actions.find((a) => a.op === 'write');
    assert.deepEqual(write && write.op === 'write' ? write.from : undefined, { kind: 'destination', path: 'old name' });
    const order = plan.actions.map((a) => a.op);
    assert.ok(order.indexOf('write') < order.indexOf('remove'), 'copy before the removal of its source');
  });
  it('replaces a directory by a file: contents removed first, deepest first', () => {
    const d = (p: string): Entry => ({ path: p as RelPath, kind: 'directory', size: 0 });
    const destTree = snap(d('x'), d('x/y'), file('x/y/z', 1, H(1)));
    const plan = planStore({ source: snap(file('x', 2, H(2))), recorded: destTree, live: destTree, onSpool: () => true, capabilities: caps });
    assert.deepEqual(plan.actions.filter((a) => a.op !== 'meta').map((a) => `${a.op} ${a.path}`), ['remove x/y/z', 'rmdir x/y', 'rmdir x', 'write x']);
  });
  it('reports symlinks a destination cannot hold', () => {
    const link: Entry = { path: 'l' as RelPath, kind: 'symlink', size: 1, linkTarget: 'a' };
    const plan = planStore({ source: snap(link), recorded: snap(), live: snap(), onSpool: () => true, capabilities: { ...caps, symlinks: false } });
    assert.equal(plan.unsupported[0]?.path, 'l');
    assert.equal(plan.actions.length, 0);
  });
  it('only fixes metadata when the content is already right', () => {
    const plan = planStore({
      source: snap(file('f', 1, H(1), { mode: 0o600, mtimeMs: 5000 })), recorded: snap(), live: snap(file('f', 1, H(1))),
      onSpool: () => false, capabilities: caps,
    });
    assert.deepEqual(plan.actions, [{ op: 'meta', path: 'f', mode: 0o600, mtimeMs: 5000 }]);
  });
});

describe('manifest', () => {
  it('round-trips snapshots, journal and conflicts through a SQLite file', async () => {
    const dir = await tempDir('manifest');
    const dbFile = path.join(dir, 'm.db');
    const m = await Manifest.create();
    const entries: Entry[] = [
      file('näme with\nnewline', 3, H(1), { mode: 0o640, mtimeMs: 1577934245678.5 }),
      { path: 'link' as RelPath, kind: 'symlink', size: 4, linkTarget: '../x', mtimeMs: 1 },
      { path: 'dir' as RelPath, kind: 'directory', size: 0, mode: 0o755 },
    ];
    m.putSnapshot('source', snap(...entries));
    m.appendJournal(1, [{ command: 'fetch', event: 'carried', path: 'x', detail: 'y' }]);
    m.setConflicts([{ path: 'c', reason: 'r' }]);
    await m.save(dbFile);
    m.close();
    const back = await Manifest.load(dbFile);
    assert.deepEqual([...back.getSnapshot('source')!.entries.values()].sort((x, y) => (x.path < y.path ? -1 : 1)), entries.sort((x, y) => (x.path < y.path ? -1 : 1)));
    assert.equal(back.journal()[0]!.event, 'carried');
    assert.deepEqual(back.conflicts(), [{ path: 'c', reason: 'r' }]);
    assert.equal(back.getMeta('format_version'), String(MANIFEST_FORMAT_VERSION));
    back.close();
  });
});
