/**
 * `npm run demo`: a real end-to-end sneakernet run on an embedded default.
 *
 * It builds a sample "site A" (awkward names, a symlink, an empty file, a large file), an
 * empty "site B" and a spool smaller than the data, then runs the bitfog CLI exactly as a
 * person would: as many fetch/store trips as the spool's size needs, some changes and
 * deletions at A, another cycle, and a byte-for-byte check that B equals A.
 *
 *   npm run demo                      # in a temporary directory, removed afterwards
 *   npm run demo -- --keep            # keep it, to look around
 *   BITFOG_DEMO_BIG_MIB=64 npm run demo   # a smaller large file
 */
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finished } from 'node:stream/promises';

const keep = process.argv.includes('--keep');
const bigMiB = Number(process.env.BITFOG_DEMO_BIG_MIB ?? 300);
const bin = path.resolve(import.meta.dirname, '..', 'bin', 'bitfog.mjs');
const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'bitfog-demo-'));
const A = path.join(work, 'site-a');
const B = path.join(work, 'site-b');
const SPOOL = path.join(work, 'usb-disk', 'spool');
const env = { ...process.env, BITFOG_CACHE_DIR: path.join(work, 'cache') };

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`.replace(/\x1b\[[0-9;]*m/g, process.stdout.isTTY ? '$&' : ''));
}

function run(...args: string[]): { code: number; stdout: string } {
  return runShown(true, ...args);
}

function runShown(show: boolean, ...args: string[]): { code: number; stdout: string } {
  const shown = args.map((a) => (a.startsWith(work) ? `$DEMO${a.slice(work.length)}` : a)).map((a) => (/[\s#?]/.test(a) ? JSON.stringify(a) : a));
  if (show) process.stdout.write(`$ bitfog ${shown.join(' ')}\n`);
  const r = spawnSync(process.execPath, [bin, ...args], { env, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (show) process.stdout.write(r.stdout);
  if (r.status !== 0 && r.status !== 3) throw new Error(`bitfog ${args[0]} failed with exit code ${r.status}`);
  return { code: r.status ?? 1, stdout: r.stdout };
}

async function writeRandom(file: string, bytes: number): Promise<void> {
  const out = createWriteStream(file);
  for (let left = bytes; left > 0; left -= 1 << 20) {
    if (!out.write(randomBytes(Math.min(left, 1 << 20)))) await new Promise<void>((r) => out.once('drain', () => r()));
  }
  out.end();
  await finished(out);
}

async function treeDigest(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (dir: string, rel: string) => {
    for (const name of await fsp.readdir(dir)) {
      const p = path.join(dir, name);
      const r = rel ? `${rel}/${name}` : name;
      const st = await fsp.lstat(p);
      if (st.isSymbolicLink()) out.set(r, `-> ${await fsp.readlink(p)}`);
      else if (st.isDirectory()) {
        out.set(r, `dir ${(st.mode & 0o777).toString(8)}`);
        await walk(p, r);
      } else {
        const h = createHash('sha256');
        for await (const c of createReadStream(p)) h.update(c as Buffer);
        out.set(r, `${st.size} ${(st.mode & 0o777).toString(8)} ${Math.floor(st.mtimeMs)} ${h.digest('hex')}`);
      }
    }
  };
  await walk(root, '');
  return out;
}

async function check(): Promise<void> {
  const [a, b] = await Promise.all([treeDigest(A), treeDigest(B)]);
  const diffs = [...new Set([...a.keys(), ...b.keys()])].filter((k) => a.get(k) !== b.get(k));
  if (diffs.length) throw new Error(`site B differs from site A at: ${diffs.slice(0, 10).map((d) => JSON.stringify(d)).join(', ')}`);
  console.log(`check: site B equals site A — ${a.size} entries, same bytes, modes, mtimes and symlink targets`);
}

async function cycle(max: string): Promise<number> {
  for (let trip = 1; trip <= 10; trip++) {
    say(`trip ${trip}: at site A, fill the spool`);
    run('fetch', A, SPOOL, '--max', max);
    say(`trip ${trip}: at site B, empty the spool`);
    run('store', SPOOL, B);
    const status = JSON.parse(runShown(false, 'status', SPOOL, '--json').stdout);
    console.log(`status: ${status.left.files} files left to carry${status.tripsLeft ? `, about ${status.tripsLeft} more trip(s)` : ''}`);
    if (status.left.files === 0 && status.carried.blobs === 0) return trip;
  }
  throw new Error('the demo did not converge');
}

try {
  console.log(`bitfog demo in ${work}${keep ? ' (kept afterwards)' : ''}`);
  say('site A: a tree with awkward names, a symlink, an empty file and a large file');
  await fsp.mkdir(path.join(A, 'photos/2024 trip to Zürich'), { recursive: true });
  await fsp.mkdir(path.join(A, 'projects/#1 priority/drafts?'), { recursive: true });
  await fsp.mkdir(path.join(A, 'empty folder'), { recursive: true });
  await fsp.mkdir(path.join(A, 'deep/a/b/c/d/e/f'), { recursive: true });
  await fsp.mkdir(path.join(A, 'videos'), { recursive: true });
  await writeRandom(path.join(A, 'vm-image.qcow2'), bigMiB << 20);
  for (let i = 1; i <= 3; i++) await writeRandom(path.join(A, `videos/clip ${i}.mkv`), (bigMiB << 20) / 4 + i);
  for (let i = 0; i < 30; i++) await writeRandom(path.join(A, 'photos/2024 trip to Zürich', `IMG_${1000 + i} (1).jpg`), 200_000 + i * 7_000);
  await fsp.writeFile(path.join(A, 'projects/#1 priority/100% done.txt'), 'almost\n');
  await fsp.writeFile(path.join(A, 'projects/#1 priority/drafts?/draft ½.md'), '# draft\n');
  await fsp.writeFile(path.join(A, 'deep/a/b/c/d/e/f/leaf.txt'), 'deep\n');
  await fsp.writeFile(path.join(A, 'empty.txt'), '');
  await fsp.writeFile(path.join(A, 'run me.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
  await fsp.symlink('vm-image.qcow2', path.join(A, 'latest image'));
  await fsp.mkdir(B);
  await fsp.mkdir(path.dirname(SPOOL));
  run('ls', path.join(A, 'projects'));

  const max = `${Math.ceil(bigMiB * 1.1)}MiB`; // smaller than the data, larger than its largest file
  say(`first trip starts at site B: record its (empty) state on a new spool of ${max}`);
  run('store', SPOOL, B);
  const trips = await cycle(max);
  await check();

  say('at site A, files change: one edited, one deleted, one renamed, one added');
  await fsp.appendFile(path.join(A, 'projects/#1 priority/100% done.txt'), 'now done\n');
  await fsp.rm(path.join(A, 'photos/2024 trip to Zürich/IMG_1003 (1).jpg'));
  await fsp.rename(path.join(A, 'vm-image.qcow2'), path.join(A, 'vm-image-v1.qcow2'));
  await fsp.rm(path.join(A, 'latest image'));
  await fsp.symlink('vm-image-v1.qcow2', path.join(A, 'latest image'));
  await fsp.writeFile(path.join(A, 'photos/new note.txt'), 'added later\n');
  const trips2 = await cycle(max);
  await check();

  say('done');
  console.log(`first sync: ${trips} trip(s); second sync: ${trips2} trip(s) (the renamed ${bigMiB} MiB image was not carried again)`);
} finally {
  if (!keep) await fsp.rm(work, { recursive: true, force: true });
}
