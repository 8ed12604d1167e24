/**
 * The sneakernet cycle through the CLI, as a person runs it: multi-trip, with changes,
 * removals, conflicts and awkward names, in the spool form and the classic form.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { Spool } from '../src/core/spool.ts';
import { bitfog, bitfogOk } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { contentOf, makeTree, assertSameMetadata, readTree, type TreeSpec } from './helpers/tree.ts';

const OLD = new Date('2020-01-02T03:04:05.678Z');

const SITE_A: TreeSpec = {
  'plain.txt': 'hello\n',
  'with space/ünïcødé €.txt': 'utf-8 name\n',
  'hash#tag/100%.txt': { content: 'percent\n', mode: 0o600, mtime: OLD },
  'what?/really?.txt': 'question\n',
  'new\nline/tab\there.txt': 'control characters\n',
  'deep/a/b/c/d/e/f/g/h/i/j/leaf.txt': { content: 'deep\n', mode: 0o755, mtime: OLD },
  'empty.txt': '',
  'empty dir': { dir: true, mode: 0o750 },
  'big-1.bin': { bytes: 300_000, seed: 1 },
  'big-2.bin': { bytes: 250_000, seed: 2 },
  'copy of big-1.bin': { bytes: 300_000, seed: 1 },
  'medium.bin': { bytes: 120_000, seed: 3 },
  'link to plain': { symlink: 'plain.txt' },
  'dangling link': { symlink: '../../nowhere/at all' },
  'link to dir': { symlink: 'deep/a' },
};

async function site(label: string) {
  const dir = await tempDir(label);
  const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
  return { dir, a: path.join(dir, 'site-a'), b: path.join(dir, 'site-b'), spool: path.join(dir, 'spool'), env };
}

/** Runs fetch/store trips until the spool reports nothing left; returns the number of trips. */
async function tripsUntilDone(a: string, b: string, spool: string, env: NodeJS.ProcessEnv, max: string): Promise<number> {
  for (let trip = 1; trip <= 20; trip++) {
    await bitfogOk(['fetch', a, spool, '--max', max, '--reserve', '0'], { env });
    const stored = await bitfog(['store', spool, b], { env });
    assert.ok(stored.code === 0, `store exit ${stored.code}: ${stored.stderr}${stored.stdout}`);
    const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
    if (status.left.files === 0 && status.carried.blobs === 0) return trip;
  }
  throw new Error('did not converge in 20 trips');
}

describe('sneakernet cycle (spool form)', () => {
  it('carries a tree over several trips, then changes and removals, until B equals A', async () => {
    const { a, b, spool, env } = await site('cycle');
    await makeTree(a, SITE_A);
    await fsp.mkdir(b);

    // First trip starts at the destination: an empty spool records B's state.
    const first = await bitfogOk(['store', spool, b], { env });
    assert.match(first.stdout, /carried nothing; recorded the destination's state/);

    const trips = await tripsUntilDone(a, b, spool, env, '400KiB');
    assert.ok(trips >= 2, `needs several trips at 400 KiB (took ${trips})`);
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    assertSameMetadata(await readTree(b), await readTree(a), 'modes and mtimes carried');

    // Changes at A: modify, delete, add, rename (a rename costs no carrying), replace a dir by a file.
    await fsp.writeFile(path.join(a, 'plain.txt'), 'changed\n');
    await fsp.rm(path.join(a, 'medium.bin'));
    await fsp.rm(path.join(a, 'deep'), { recursive: true });
    await fsp.writeFile(path.join(a, 'deep'), 'now a file\n');
    await fsp.rename(path.join(a, 'big-2.bin'), path.join(a, 'with space', 'big-2 renamed.bin'));
    await fsp.writeFile(path.join(a, 'added #1.txt'), 'added\n');
    const fetched = await bitfogOk(['fetch', a, spool, '--max', '400KiB', '--reserve', '0'], { env });
    assert.match(fetched.stdout, /removals planned:\s+\d+/);
    const carried = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
    assert.ok(carried.carried.bytes < 1000, `a rename is not carried again (carried ${carried.carried.bytes} bytes)`);
    await bitfogOk(['store', spool, b], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    assertSameMetadata(await readTree(b), await readTree(a));

    // A rescan with nothing changed carries nothing and changes nothing.
    const again = await bitfogOk(['fetch', a, spool], { env });
    assert.match(again.stdout, /carried now:\s+0 files/);
    const storedAgain = await bitfogOk(['store', spool, b], { env });
    assert.match(storedAgain.stdout, /written:\s+0 files/);
    assert.match(storedAgain.stdout, /removed:\s+0/);
  });

  it('numbers trips by journeys of the spool: a fetch again before a store, or after a killed fetch, is the same trip', async () => {
    const { a, b, spool, env } = await site('trips');
    await makeTree(a, { 'one #1.bin': { bytes: 300_000, seed: 1 }, 'two ü.bin': { bytes: 300_000, seed: 2 } });
    await fsp.mkdir(b);
    await bitfogOk(['store', spool, b], { env });
    const trip = async (args: string[]) => {
      const out = (await bitfogOk(args, { env })).stdout;
      const m = /finished in [^(\n]*\(trip (\d+)\)/.exec(out);
      assert.ok(m, out);
      return Number(m[1]);
    };
    assert.equal(await trip(['fetch', a, spool, '--max', '350KiB', '--reserve', '0']), 1);
    // Topping the spool up before it leaves.
    assert.equal(await trip(['fetch', a, spool, '--reserve', '0']), 1);
    assert.equal(await trip(['store', spool, b]), 1);

    // What a fetch killed after its first save leaves: the spool's trip raised, nothing finished.
    const killed = await Spool.open(spool, { create: false });
    killed.manifest.setMeta('trip', '2');
    await killed.save();
    await killed.close();
    await makeTree(a, { 'three%.bin': { bytes: 200_000, seed: 3 } });
    assert.equal(await trip(['fetch', a, spool, '--reserve', '0']), 2);
    assert.equal(await trip(['store', spool, b]), 2);
    assert.equal(await trip(['fetch', a, spool]), 3);
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    const history = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout).history as Array<{ trip: number; command: string }>;
    assert.deepEqual(history.map((h) => `${h.command} ${h.trip}`), ['store 0', 'fetch 1', 'fetch 1', 'store 1', 'fetch 2', 'store 2', 'fetch 3']);
    // The text says what each command did in words and units, not as the JSON it recorded.
    const text = (await bitfogOk(['status', spool], { env })).stdout;
    assert.match(text, /trip 2 fetch \S+ carriedFiles 1, carriedBytes 195 KiB, deferred 0\n/);
    assert.match(text, /trip 2 store \S+ written 1, bytes 195 KiB, removed 0, conflicts 0, pending 0, corrupt 0\n/);
    assert.doesNotMatch(text, /\{"/);
  });

  it('refuses a source or destination other than the spool\'s, and an empty source where there was a tree', async () => {
    const { dir, a, b, spool, env } = await site('other sides');
    await makeTree(a, { 'one #1.txt': 'one', 'd/two ü.txt': 'two' });
    await fsp.mkdir(b);
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    // The same trees spelt otherwise are the same trees.
    await bitfogOk(['fetch', `file://${a}`, spool], { env });
    await fsp.symlink(b, path.join(dir, 'link to b'));
    await bitfogOk(['store', spool, path.join(dir, 'link to b')], { env });

    const other = path.join(dir, 'other #1');
    await makeTree(other, { 'x.txt': 'x' });
    const otherSource = await bitfog(['fetch', other, spool], { env });
    assert.equal(otherSource.code, 2, otherSource.stderr);
    assert.match(otherSource.stderr, /this spool carries .*site-a .*not .*other #1.*--new-source/);

    // An unmounted disk looks like an empty directory.
    await fsp.rename(a, `${a}.away`);
    await fsp.mkdir(a);
    const empty = await bitfog(['fetch', a, spool], { env });
    assert.equal(empty.code, 2, empty.stderr);
    assert.match(empty.stderr, /the source .* is empty, but it had 3 entries when last fetched.*--allow-empty-source/);
    assert.equal(JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout).source.entries, 3, 'the spool still has the source as it was');
    await fsp.rm(a, { recursive: true });
    await fsp.rename(`${a}.away`, a);

    await fsp.writeFile(path.join(a, 'three.txt'), 'three');
    await bitfogOk(['fetch', a, spool], { env });
    const b2 = path.join(dir, 'site-b2');
    await makeTree(b2, { 'precious.txt': 'keep' });
    const otherDestination = await bitfog(['store', spool, b2], { env });
    assert.equal(otherDestination.code, 2, otherDestination.stderr);
    assert.match(otherDestination.stderr, /this spool's destination is .*link to b .*not .*site-b2.*--new-destination/);
    assert.deepEqual(Object.keys(contentOf(await readTree(b2))), ['precious.txt'], 'nothing written there');
    // A mistyped destination is refused the same way, and the directory the command made for it goes again.
    const typo = path.join(dir, 'site-b typo ü');
    const intoTypo = await bitfog(['store', spool, typo], { env });
    assert.equal(intoTypo.code, 2, intoTypo.stderr);
    assert.match(intoTypo.stderr, /--new-destination/);
    await assert.rejects(fsp.stat(typo), { code: 'ENOENT' }, 'no directory left behind');
    await bitfogOk(['store', spool, b], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));

    // A deliberate switch, said so.
    const b3 = path.join(dir, 'site-b3');
    await fsp.cp(b, b3, { recursive: true, preserveTimestamps: true });
    await fsp.writeFile(path.join(a, 'four.txt'), 'four');
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b3, '--new-destination'], { env });
    assert.deepEqual(contentOf(await readTree(b3)), contentOf(await readTree(a)));
    await bitfogOk(['fetch', other, spool, '--new-source'], { env });
    await fsp.rm(a, { recursive: true });
    await fsp.mkdir(a);
    const emptied = await bitfogOk(['fetch', a, spool, '--new-source', '--allow-empty-source'], { env });
    assert.match(emptied.stdout, /removals planned:\s+5/);
  });

  it('leaves conflicting destination changes alone and reports them', async () => {
    const { a, b, spool, env } = await site('conflict');
    await makeTree(a, { 'keep.txt': 'keep\n', 'to change.txt': 'v1\n' });
    await makeTree(b, { 'recorded only at b.txt': 'mine\n', 'to change.txt': 'b version\n' });
    await bitfogOk(['store', spool, b], { env }); // records B as it is
    await bitfogOk(['fetch', a, spool], { env });

    // Behind the plan's back, B changes a file the plan replaces and gains one it never saw.
    await fsp.writeFile(path.join(b, 'to change.txt'), 'b edited after the snapshot\n');
    await fsp.writeFile(path.join(b, 'late #1.txt'), 'new after the snapshot\n');
    const r = await bitfog(['store', spool, b], { env });
    assert.equal(r.code, 3, `exit 3 for conflicts: ${r.stderr}`);
    assert.match(r.stderr, /conflict: to change\.txt: changed at the destination since the snapshot/);
    assert.match(r.stderr, /conflict: late #1\.txt: not in the recorded destination state/);
    assert.equal(await fsp.readFile(path.join(b, 'to change.txt'), 'utf8'), 'b edited after the snapshot\n', 'not overwritten');
    assert.equal(await fsp.readFile(path.join(b, 'late #1.txt'), 'utf8'), 'new after the snapshot\n', 'not removed');
    await assert.rejects(fsp.access(path.join(b, 'recorded only at b.txt')), 'recorded and unchanged, absent at A: removed');
    assert.equal(await fsp.readFile(path.join(b, 'keep.txt'), 'utf8'), 'keep\n');
    const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
    assert.deepEqual(status.conflicts.map((c: { path: string }) => c.path).sort(), ['late #1.txt', 'to change.txt']);
    assert.match((await bitfogOk(['status', spool], { env })).stdout, /conflicts:\s+2/);

    // B's new state is recorded now: the next trip may replace and remove what still matches it.
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    assert.equal(await fsp.readFile(path.join(b, 'to change.txt'), 'utf8'), 'v1\n');
    await assert.rejects(fsp.access(path.join(b, 'late #1.txt')));
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    assert.deepEqual(JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout).conflicts, []);
  });

  it('replaces a file with a directory tree of the same name without conflicts', async () => {
    const { a, b, spool, env } = await site('file to tree');
    await makeTree(a, { 'p #1': 'was a file', 'q': 'q' });
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    await fsp.rm(path.join(a, 'p #1'));
    await fsp.rm(path.join(a, 'q'));
    await makeTree(a, { 'p #1/sub ü/deeper/x.txt': 'x', 'q/empty dir/.keep': '' });
    await fsp.rm(path.join(a, 'q', 'empty dir', '.keep'));
    const planned = (out: string) => Number(/removals planned:\s+(\d+)/.exec(out)?.[1]);
    const removed = (out: string) => Number(/removed:\s+(\d+)/.exec(out)?.[1]);
    const fetched = await bitfogOk(['fetch', a, spool], { env });
    const stored = await bitfogOk(['store', spool, b], { env });
    assert.match(stored.stdout, /conflicts:\s+0/);
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    assert.ok((await fsp.stat(path.join(b, 'q', 'empty dir'))).isDirectory());
    // fetch announces what store then removes: the two files in the way.
    assert.equal(planned(fetched.stdout), 2, fetched.stdout);
    assert.equal(removed(stored.stdout), 2, stored.stdout);

    // And back: the trees become a file and a symlink again; a file and a symlink swap.
    await makeTree(a, { 'r': 'r', 's': { symlink: 'r' } });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    await fsp.rm(path.join(a, 'p #1'), { recursive: true });
    await fsp.rm(path.join(a, 'q'), { recursive: true });
    await fsp.rm(path.join(a, 'r'));
    await fsp.rm(path.join(a, 's'));
    await makeTree(a, { 'p #1': 'a file again', 'q': { symlink: 'p #1' }, 'r': { symlink: 'p #1' }, 's': 's is a file now' });
    const fetchedBack = await bitfogOk(['fetch', a, spool], { env });
    assert.equal(JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout).removalsPending, 6, 'status agrees');
    const storedBack = await bitfogOk(['store', spool, b], { env });
    assert.match(storedBack.stdout, /conflicts:\s+0/);
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    // p #1, p #1/sub ü, …/deeper, …/x.txt, q, q/empty dir.
    assert.equal(planned(fetchedBack.stdout), 6, fetchedBack.stdout);
    assert.equal(removed(storedBack.stdout), 6, storedBack.stdout);
  });

  it('reports a source file named like a bitfog temporary file, and treats a look-alike at B as a user file', async () => {
    const { a, b, spool, env } = await site('temp names');
    const lookalike = '.bitfog-tmp-0123456789abcdef-notes.txt';
    await makeTree(a, { [lookalike]: 'mine', 'keep.txt': 'k' });
    await makeTree(b, { '.bitfog-tmp-fedcba9876543210': 'at b' });
    await bitfogOk(['store', spool, b], { env });
    const fetched = await bitfogOk(['fetch', a, spool], { env });
    assert.match(fetched.stdout, /skipped:\s+1/);
    const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
    assert.ok(status.skipped.some((s: { path: string; reason: string }) => s.path === lookalike && /temporary files/.test(s.reason)), JSON.stringify(status.skipped));
    // B's look-alike is a file like any other: A does not have it, so it is removed, and counted.
    const stored = await bitfogOk(['store', spool, b], { env });
    assert.match(stored.stdout, /removed:\s+1/);
    assert.deepEqual(Object.keys(contentOf(await readTree(b))), ['keep.txt']);
  });

  it('a file it cannot read is reported once, left for later, and not taken for a full trip', async () => {
    const { a, b, spool, env } = await site('unreadable file');
    await makeTree(a, { 'f #1.txt': 'one', 'g.txt': 'g' });
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    // Changed to the same size as the copy at B (so the scan hashes it), then unreadable.
    const f = path.join(a, 'f #1.txt');
    await fsp.writeFile(f, 'two');
    await fsp.chmod(f, 0o000);
    try {
      const fetched = await bitfogOk(['fetch', a, spool], { env, permissionsBind: true });
      assert.equal(fetched.stderr.match(/skipped: f #1\.txt/g)?.length, 1, `one skip line: ${fetched.stderr}`);
      assert.match(fetched.stdout, /skipped:\s+1 /);
      assert.match(fetched.stdout, /left for later:\s+1 files, 3 B \(1 of them could not be read now\)/);
      assert.doesNotMatch(fetched.stdout, /nothing fitted/, 'the trip had room; the file could not be read');
      const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
      assert.equal(status.skipped.length, 1);
      assert.equal(status.left.files, 1);
    } finally {
      await fsp.chmod(f, 0o644);
    }
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
  });

  it('never removes at B what A has in a directory it could not read', async () => {
    const { a, b, spool, env } = await site('unreadable dir');
    await makeTree(a, { 'ok.txt': 'ok', 'closed #1/in ü.txt': 'inside', 'closed #1/deeper/x': 'x' });
    const read = (...p: string[]) => fsp.readFile(path.join(b, ...p), 'utf8');
    await bitfogOk(['store', spool, b], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, b], { env });
    assert.equal(await read('closed #1', 'deeper', 'x'), 'x');

    const closed = path.join(a, 'closed #1');
    await fsp.chmod(closed, 0o000);
    try {
      const fetched = await bitfogOk(['fetch', a, spool], { env, permissionsBind: true });
      assert.match(fetched.stdout + fetched.stderr, /closed #1.*(unreadable|EACCES)/, 'the unreadable directory is reported');
      assert.match(fetched.stdout, /removals planned:\s+0/);
      assert.equal(JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout).removalsPending, 0, 'status agrees');
      const stored = await bitfogOk(['store', spool, b], { env, permissionsBind: true });
      assert.match(stored.stdout, /removed:\s+0/);
    } finally {
      await fsp.chmod(closed, 0o755);
    }
    assert.equal((await fsp.stat(path.join(b, 'closed #1'))).mode & 0o777, 0o755, 'left as it was, readable');
    assert.equal(await read('closed #1', 'in ü.txt'), 'inside');
    assert.equal(await read('closed #1', 'deeper', 'x'), 'x');

    // Readable again and really gone at A: then it goes at B too.
    await fsp.rm(path.join(closed, 'in ü.txt'));
    await bitfogOk(['fetch', a, spool], { env });
    const stored = await bitfogOk(['store', spool, b], { env });
    assert.match(stored.stdout, /removed:\s+1/);
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
  });

  it('respects --max and the free space, carrying smaller files that still fit', async () => {
    const { a, b, spool, env } = await site('capacity');
    await makeTree(a, { 'huge.bin': { bytes: 600_000, seed: 9 }, 'large.bin': { bytes: 300_000, seed: 8 }, 'small.bin': { bytes: 50_000, seed: 7 } });
    await fsp.mkdir(b);
    const r = await bitfogOk(['fetch', a, spool, '--max', '400000', '--reserve', '0'], { env });
    assert.match(r.stdout, /carried now:\s+2 files/);
    assert.doesNotMatch(r.stdout, /nothing fitted/);
    const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
    assert.equal(status.carried.bytes, 350_000, 'large + small fit, huge waits');
    assert.deepEqual(status.tooLarge.map((t: { path: string }) => t.path), ['huge.bin']);
    const human = await bitfogOk(['status', spool], { env });
    assert.match(human.stdout, /too large:\s+1 files exceed the spool size/);
    // When nothing fits, fetch says how much room the trip had.
    const none = await bitfogOk(['fetch', a, spool, '--max', '360000', '--reserve', '0'], { env });
    assert.match(none.stdout, /carried now:\s+0 files/);
    assert.match(none.stdout, /nothing fitted: +this trip had room for 9\.77 KiB \(--max/);
  });

  it('explains input mistakes with one line and a usage exit code', async () => {
    const { a, spool, env } = await site('errors');
    await makeTree(a, { 'x.txt': 'x' });
    const badSize = await bitfog(['fetch', a, spool, '--max', 'lots'], { env });
    assert.equal(badSize.code, 2);
    assert.match(badSize.stderr, /^bitfog: invalid size "lots"/m);
    assert.doesNotMatch(badSize.stderr, /at .*\.ts:\d+/, 'no stack trace');
    const badScheme = await bitfog(['ls', 'nosuch://x/y'], { env });
    assert.equal(badScheme.code, 2);
    assert.match(badScheme.stderr, /no backend for "nosuch:\/\/" URLs/);
    // A file URL's "#" or "?" would end its path: "photos#2" would name "photos". Refused.
    await makeTree(path.dirname(a), { 'photos/p.txt': 'p', 'photos#2/q.txt': 'q' });
    for (const url of [`file://${path.dirname(a)}/photos#2`, `file://${path.dirname(a)}/photos?2`]) {
      const cut = await bitfog(['ls', url], { env });
      assert.equal(cut.code, 2, `${url}: ${cut.stdout}${cut.stderr}`);
      assert.match(cut.stderr, /a file URL has no query or fragment: percent-encode/);
      assert.equal(cut.stdout, '');
    }
    assert.match((await bitfogOk(['ls', `file://${path.dirname(a)}/photos%232`], { env })).stdout, /q\.txt/);
    assert.match((await bitfogOk(['ls', `${path.dirname(a)}/photos#2`], { env })).stdout, /q\.txt/, 'a plain path is taken as it is');
    const missing = await bitfog(['ls', path.join(a, 'does not exist')], { env });
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /does not exist/);
    const notSpool = await bitfog(['status', a], { env });
    assert.equal(notSpool.code, 1);
    assert.match(notSpool.stderr, /is not a spool/);
    // Mistakes clipanion finds in the command line itself: the usage exit code too, on stderr.
    for (const args of [['fetch'], ['fetch', a], ['fetch', a, spool, 'x', 'y'], ['fetch', a, spool, '--order', 'random'], ['fetch', a, spool, '--foo'], ['store'], ['verify'], ['bogus']]) {
      const wrong = await bitfog(args, { env });
      assert.equal(wrong.code, 2, `${args.join(' ')}: ${wrong.stdout}${wrong.stderr}`);
      assert.match(wrong.stderr, /Error: |bitfog /, args.join(' '));
      assert.equal(wrong.stdout, '', args.join(' '));
    }
    const negative = await bitfog(['fetch', a, spool, '--max', '-5M'], { env });
    assert.equal(negative.code, 2);
    assert.match(negative.stderr, /"-5M" after --max was read as an option; --max takes a value that is not negative/);
    const other = path.join(path.dirname(a), 'other #1');
    await makeTree(other, { 'mine.txt': 'mine' });
    const intoNonEmpty = await bitfog(['fetch', a, other], { env });
    assert.equal(intoNonEmpty.code, 1);
    assert.match(intoNonEmpty.stderr, /not empty and not a spool/);
    // A spool inside the tree it reads or writes (or that tree inside the spool): refused,
    // before anything is created.
    await fsp.symlink(a, path.join(path.dirname(a), 'link to a'));
    const b = path.join(path.dirname(a), 'site-b');
    await makeTree(b, { 'b.txt': 'b' });
    for (const [args, message] of [
      [['fetch', a, a], /the spool .* is inside the source/],
      [['fetch', a, path.join(a, 'spool ü')], /the spool .* is inside the source/],
      [['fetch', a, path.join(a, '..', path.basename(a), 'spool 2')], /the spool .* is inside the source/],
      [['fetch', path.join(path.dirname(a), 'link to a'), path.join(a, 'spool 3')], /the spool .* is inside the source/],
      [['fetch', path.join(spool, 'x'), spool], /does not exist|is inside the spool/],
      [['store', path.join(b, 'sub', 'spool'), b], /the spool .* is inside the destination/],
      [['store', other, path.join(other, 'dest')], /the destination .* is inside the spool/],
    ] as const) {
      const r = await bitfog([...args], { env });
      assert.equal(r.code, r.stderr.includes('does not exist') ? 1 : 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
    }
    assert.deepEqual(Object.keys(contentOf(await readTree(a))), ['x.txt']);
    assert.deepEqual(Object.keys(contentOf(await readTree(b))), ['b.txt']);
    await assert.rejects(fsp.stat(path.join(other, 'dest')), { code: 'ENOENT' }, 'the refused destination was not left inside the spool');
    // Errors name what they concern; a mistyped destination does not grow a tree of its own.
    const noDir = await bitfog(['emptydb', path.join(a, 'no such dir', 'x.db')], { env });
    assert.equal(noDir.code, 1);
    assert.match(noDir.stderr, /^bitfog: cannot write .*no such dir\/x\.db: ENOENT/m);
    const typoDest = path.join(a, 'no such', 'dest ü');
    const farDest = await bitfog(['store', spool, typoDest], { env });
    assert.equal(farDest.code, 1);
    assert.match(farDest.stderr, /cannot create .*dest ü: its parent directory does not exist/);
    await assert.rejects(fsp.stat(path.join(a, 'no such')), { code: 'ENOENT' });
    const verbose = await bitfog(['ls', path.join(a, 'nope'), '--verbose'], { env });
    assert.match(verbose.stderr, /\[ENOENT\]/);
  });

  it('shows both forms of fetch and store in full with --help, and every command in the general help', async () => {
    for (const [name, spoolForm, classicForm] of [
      ['fetch', '$ bitfog fetch <src-url> <spool>', '$ bitfog fetch <destdb> <src-url> <dir>'],
      ['store', '$ bitfog store <spool> <dest-url>', '$ bitfog store <srcdb> <dest-url> <dir>'],
    ] as const) {
      for (const flag of ['--help', '-h']) {
        const help = await bitfogOk([name, flag]);
        assert.ok(help.stdout.includes(spoolForm), help.stdout);
        assert.ok(help.stdout.includes(classicForm), help.stdout);
        // Each form's options with their descriptions, not a list of forms to choose from.
        assert.equal(help.stdout.match(/--quiet,-q +No progress output/g)?.length, 2, help.stdout);
        assert.doesNotMatch(help.stdout, /Multiple commands match/);
      }
    }
    const all = await bitfogOk(['--help']);
    for (const name of ['fetch', 'store', 'status', 'verify', 'ls', 'builddb', 'emptydb', 'backends', 'serve', 'ui']) {
      assert.match(all.stdout, new RegExp(`bitfog ${name}\\b`), name);
    }
    const typo = await bitfog(['fetc']);
    assert.equal(typo.code, 2);
    assert.match(typo.stderr, /bitfog fetch/, 'suggests the command meant');
  });

  it('lists any backend with ls, awkward names quoted', async () => {
    const { a, env } = await site('ls');
    await makeTree(a, { 'new\nline.txt': 'x', 'd/f #1': 'yy', 'l': { symlink: 'd' } });
    const r = await bitfogOk(['ls', a], { env });
    assert.match(r.stdout, /^f \d{4} +1 \S+ "new\\nline\.txt"$/m);
    assert.match(r.stdout, /^d \d{4} +0 \S+ d$/m);
    assert.match(r.stdout, /^f \d{4} +2 \S+ d\/f #1$/m);
    assert.match(r.stdout, /^l \d{4} +1 \S+ l -> d$/m);
    const json = (await bitfogOk(['ls', a, '--json'], { env })).stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.ok(json.some((e) => e.path === 'new\nline.txt' && e.kind === 'file' && e.size === 1));
  });
});

describe('sneakernet cycle (classic form)', () => {
  it('builddb and emptydb replace only snapshot files, never another file or a spool manifest', async () => {
    const { dir, a, spool, env } = await site('classic overwrite');
    await makeTree(a, { 'x #1.txt': 'x' });
    const source = path.join(dir, 'prog ü.c');
    await fsp.writeFile(source, '#include <stdio.h>\n');
    for (const args of [['emptydb', source], ['builddb', a, source]]) {
      const r = await bitfog(args, { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /not a bitfog snapshot file; refusing to overwrite it/);
    }
    assert.equal(await fsp.readFile(source, 'utf8'), '#include <stdio.h>\n');

    await bitfogOk(['fetch', a, spool], { env });
    const manifest = path.join(spool, 'manifest.db');
    const before = await fsp.readFile(manifest);
    for (const args of [['emptydb', manifest], ['builddb', a, manifest]]) {
      const r = await bitfog(args, { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /is a spool's manifest, not a snapshot file/);
    }
    assert.deepEqual(await fsp.readFile(manifest), before);

    // Their own files they replace, either way round.
    const db = path.join(dir, 'snap #1.db');
    await bitfogOk(['emptydb', db], { env });
    await bitfogOk(['builddb', a, db], { env });
    await bitfogOk(['emptydb', db], { env });
  });

  it('builddb / emptydb / fetch / store as the original README shows them', async () => {
    const { dir, a, b, env } = await site('classic');
    await makeTree(a, { 'hello.txt': 'hello world\n', 'sub/nested.txt': 'nested\n', 'empty.txt': '', 'link': { symlink: 'hello.txt' } });
    await makeTree(b, { 'extra-in-dest.txt': 'extra\n' });
    const destdb = path.join(dir, 'dest.db');
    const srcdb = path.join(dir, 'src.db');
    const tmp = path.join(dir, 'tmp');
    await bitfogOk(['builddb', b, destdb], { env });
    await bitfogOk(['builddb', a, srcdb], { env });
    const fetched = await bitfogOk(['fetch', destdb, a, tmp], { env });
    assert.match(fetched.stdout, /carried now:\s+2 files/);
    assert.match(fetched.stdout, /removals planned:\s+1/);
    await bitfogOk(['store', srcdb, b, tmp], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));

    // emptydb: a blank destination.
    const emptydb = path.join(dir, 'empty.db');
    await bitfogOk(['emptydb', emptydb], { env });
    const c = path.join(dir, 'site-c');
    await bitfogOk(['fetch', emptydb, a, path.join(dir, 'tmp2')], { env });
    await bitfogOk(['store', srcdb, c, path.join(dir, 'tmp2')], { env });
    assert.deepEqual(contentOf(await readTree(c)), contentOf(await readTree(a)));

    const notDb = await bitfog(['fetch', path.join(a, 'hello.txt'), a, path.join(dir, 'tmp3')], { env });
    assert.equal(notDb.code, 1);
    assert.match(notDb.stderr, /not a bitfog manifest/);
  });

  it('store refuses a <srcdb> that would remove the destination: of another tree, emptydb\'s, or empty where there was a tree', async () => {
    const { dir, a, b, env } = await site('classic srcdb');
    await makeTree(a, { 'one #1.txt': 'one', 'two ü.txt': 'two' });
    await fsp.mkdir(b);
    const destdb = path.join(dir, 'dest.db');
    const srcdb = path.join(dir, 'src.db');
    const tmp = path.join(dir, 'tmp');
    await bitfogOk(['builddb', b, destdb], { env });
    await bitfogOk(['fetch', destdb, a, tmp], { env });
    await bitfogOk(['builddb', a, srcdb], { env });
    await bitfogOk(['store', srcdb, b, tmp], { env });
    await fsp.writeFile(path.join(a, 'three.txt'), 'three');
    await bitfogOk(['builddb', b, destdb], { env });
    await bitfogOk(['fetch', destdb, a, tmp], { env });
    const expected = contentOf(await readTree(b));
    assert.deepEqual(Object.keys(expected).sort(), ['one #1.txt', 'two ü.txt']);

    const c = path.join(dir, 'site-c');
    await makeTree(c, { 'c.txt': 'c' });
    const otherdb = path.join(dir, 'other.db');
    await bitfogOk(['builddb', c, otherdb], { env });
    const emptydb = path.join(dir, 'empty.db');
    await bitfogOk(['emptydb', emptydb], { env });
    const unmounted = path.join(dir, 'unmounted');
    await fsp.mkdir(unmounted);
    const nothingdb = path.join(dir, 'nothing.db');
    await bitfogOk(['builddb', unmounted, nothingdb], { env });
    for (const [db, message] of [
      [otherdb, /the spool's content was fetched from .*site-a.*but the source snapshot given is of .*site-c.*--new-source/],
      [emptydb, /an empty one made by "bitfog emptydb"/],
    ] as const) {
      const r = await bitfog(['store', db, b, tmp], { env });
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, message);
      assert.deepEqual(contentOf(await readTree(b)), expected, 'nothing removed, nothing written');
    }
    // An empty source where there was a tree: the same tree at a new address, empty (a disk not mounted).
    const empty = await bitfog(['store', nothingdb, b, tmp, '--new-source'], { env });
    assert.equal(empty.code, 2, empty.stderr);
    assert.match(empty.stderr, /the source snapshot of .*unmounted is empty, but it had 3 entries when the spool was filled.*--allow-empty-source/);
    assert.deepEqual(contentOf(await readTree(b)), expected);

    // The right snapshot goes through; so do the deliberate overrides.
    await bitfogOk(['builddb', a, srcdb], { env });
    await bitfogOk(['store', srcdb, b, tmp], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));
    const emptied = await bitfogOk(['store', nothingdb, b, tmp, '--new-source', '--allow-empty-source'], { env });
    assert.match(emptied.stdout, /removed:\s+3/);
    assert.deepEqual(contentOf(await readTree(b)), {});
  });
});
