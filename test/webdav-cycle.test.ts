/**
 * The whole sneakernet cycle through the `bitfog` CLI with a WebDAV share (Apache mod_dav,
 * test/services/webdav.sh) as destination and as source, and a store killed with SIGKILL
 * half-way then run again.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { WebDavBackend } from '../src/backends/webdav/webdav.ts';
import { AWKWARD_NAMES, DEEP_PATH, listAll } from '../src/conformance/index.ts';
import { toRelPath } from '../src/core/paths.ts';
import { serviceEnv } from './helpers/services.ts';
import { tempDir } from './helpers/tmp.ts';

const KEYS = ['WEBDAV_URL', 'WEBDAV_USER', 'WEBDAV_PASSWORD', 'WEBDAV_ROOT_DIR', 'WEBDAV_ACCESS_LOG'] as const;
const svc = serviceEnv('webdav', KEYS);
const root = path.resolve(import.meta.dirname, '..');
const bin = path.join(root, 'bin', 'bitfog.mjs');

let counter = 0;
/** A fresh collection: its webdav:// URL and the local directory Apache keeps it in. */
function freshCollection(label: string): { url: string; dir: string; tag: string } {
  const tag = `${process.pid}-${Date.now()}-${counter++}`;
  const name = `${label} #${tag}`;
  return { url: `${svc!.WEBDAV_URL}${encodeURIComponent(name)}/`, dir: path.join(svc!.WEBDAV_ROOT_DIR, name), tag };
}

function cliEnv(cacheDir: string): NodeJS.ProcessEnv {
  return {
    ...process.env,
    BITFOG_WEBDAV_USER: svc!.WEBDAV_USER,
    BITFOG_WEBDAV_PASSWORD: svc!.WEBDAV_PASSWORD,
    BITFOG_CACHE_DIR: cacheDir,
    NO_COLOR: '1',
  };
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

function bitfog(args: string[], env: NodeJS.ProcessEnv, onSpawn?: (pid: number) => void): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, ...args, '--quiet'], { env, cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('exit', (code, signal) => resolve({ code, signal, stdout, stderr }));
    if (child.pid) onSpawn?.(child.pid);
  });
}

async function ok(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  const r = await bitfog(args, env);
  assert.equal(r.code, 0, `bitfog ${args[0]} failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
  assert.ok(!r.stdout.includes(svc!.WEBDAV_PASSWORD) && !r.stderr.includes(svc!.WEBDAV_PASSWORD), 'password never printed');
  return r;
}

/** Every file under `dir` (relative path → sha256), directories as 'dir', skipping Apache's .DAV. */
async function treeOf(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (rel: string) => {
    for (const e of await readdir(path.join(dir, rel), { withFileTypes: true })) {
      if (e.name === '.DAV') continue;
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        out.set(r, 'dir');
        await walk(r);
      } else {
        const h = createHash('sha256');
        await pipeline(createReadStream(path.join(dir, r)), h);
        out.set(r, h.digest('hex'));
      }
    }
  };
  await walk('');
  return out;
}

const MTIME = new Date(Date.UTC(2019, 5, 7, 8, 9, 10, 500));

/** A local tree with every awkward name, a deep path, an empty file and an empty directory. */
async function makeSourceTree(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'names'), { recursive: true });
  for (const [i, name] of AWKWARD_NAMES.entries()) {
    await writeFile(path.join(dir, 'names', name), `file ${i}: ${name}\n`);
    await utimes(path.join(dir, 'names', name), MTIME, MTIME);
  }
  await mkdir(path.join(dir, path.dirname(DEEP_PATH)), { recursive: true });
  await writeFile(path.join(dir, DEEP_PATH), 'deep');
  await writeFile(path.join(dir, 'empty'), '');
  await mkdir(path.join(dir, 'empty dir'));
  await writeFile(path.join(dir, 'bigger.bin'), randomBytes(3 * 1024 * 1024 + 5));
}

/** GET requests logged after `fromLine` for the collection tagged `tag` (other tests share the server). */
function getsOf(log: string, fromLine: number, tag: string): string[] {
  return log.split('\n').slice(fromLine).filter((l) => l.startsWith('GET ') && l.includes(tag));
}

if (!svc) {
  describe('webdav cycle', () => {
    it('needs the webdav service (run through npm test with BITFOG_SERVICES=webdav)', (t) => t.skip('service webdav not running'));
  });
} else {
  describe('webdav: the full cycle through the CLI', () => {
    it('stores into a WebDAV share (awkward names, mtimes), then applies changes on the next trip', async () => {
      const work = await tempDir('webdav-dest');
      const src = path.join(work, 'src');
      const spool = path.join(work, 'spool');
      const env = cliEnv(path.join(work, 'cache'));
      await makeSourceTree(src);
      const dest = freshCollection('cycle dest');

      await ok(['fetch', src, spool], env);
      await ok(['store', spool, dest.url], env);
      assert.deepEqual(await treeOf(dest.dir), await treeOf(src));

      // mtimes arrive through the bitfog:mtime property.
      const b = await WebDavBackend.open(dest.url, { write: false, env });
      try {
        const st = await b.stat(toRelPath(`names/${AWKWARD_NAMES[0]}`));
        assert.equal(st.mtimeMs, MTIME.getTime());
        assert.ok(!(await listAll(b)).some((e) => e.path.includes('.bitfog-tmp-')), 'no temporary names left');
      } finally {
        await b.close();
      }

      // Next trip: a change, a removal, an addition.
      await writeFile(path.join(src, 'names', 'with space'), 'changed content\n');
      await writeFile(path.join(src, 'new file?.txt'), 'new\n');
      await import('node:fs/promises').then((fs) => fs.rm(path.join(src, 'names', 'hash#tag')));
      await ok(['fetch', src, spool], env);
      await ok(['store', spool, dest.url], env);
      assert.deepEqual(await treeOf(dest.dir), await treeOf(src));
    });

    it('fetches from a WebDAV share and does not download unchanged files again', async () => {
      const work = await tempDir('webdav-src');
      const local = path.join(work, 'local');
      await makeSourceTree(local);
      // Put the tree on the share through a first cycle, then use the share as a source.
      const share = freshCollection('cycle src');
      const env = cliEnv(path.join(work, 'cache'));
      await ok(['fetch', local, path.join(work, 'spool1')], env);
      await ok(['store', path.join(work, 'spool1'), share.url], env);

      // Files written within the last seconds are re-hashed (racy window): let them age.
      await new Promise((r) => setTimeout(r, 3500));
      const out = path.join(work, 'out');
      const logAtFetch = (await readFile(svc.WEBDAV_ACCESS_LOG, 'utf8')).split('\n').length - 1;
      await ok(['fetch', share.url, path.join(work, 'spool2')], env);
      const fetchLog = await readFile(svc.WEBDAV_ACCESS_LOG, 'utf8');
      assert.ok(getsOf(fetchLog, logAtFetch, share.tag).length > 0, 'the first fetch downloads the files');
      await ok(['store', path.join(work, 'spool2'), out], env);
      assert.deepEqual(await treeOf(out), await treeOf(local));
      const mtime = (await stat(path.join(out, 'names', AWKWARD_NAMES[1]!))).mtimeMs;
      assert.equal(mtime, MTIME.getTime(), 'mtime carried from the bitfog:mtime property');

      // A second snapshot of the unchanged share reads no content: the ETags are unchanged.
      const logBefore = (await readFile(svc.WEBDAV_ACCESS_LOG, 'utf8')).split('\n').length - 1;
      await ok(['builddb', share.url, path.join(work, 'again.db')], env);
      const log = await readFile(svc.WEBDAV_ACCESS_LOG, 'utf8');
      assert.deepEqual(getsOf(log, logBefore, share.tag), [], 'no GET on an unchanged share');
    });

    it('leaves no partial file under a final name when a store is killed (SIGKILL), and a rerun completes', async () => {
      const work = await tempDir('webdav-crash');
      const src = path.join(work, 'src');
      await mkdir(path.join(src, 'sub'), { recursive: true });
      for (let i = 0; i < 20; i++) await writeFile(path.join(src, 'sub', `small ${i} #`), `small ${i}\n`);
      const bigBytes = Number(process.env.BITFOG_WEBDAV_CRASH_BYTES ?? 256 * 1024 * 1024);
      await pipeline(
        Readable.from((function* () {
          const block = randomBytes(1 << 20);
          for (let left = bigBytes; left > 0; left -= block.length) yield block.subarray(0, Math.min(left, block.length));
        })()),
        createWriteStream(path.join(src, 'big file.bin')),
      );
      const spool = path.join(work, 'spool');
      const env = cliEnv(path.join(work, 'cache'));
      await ok(['fetch', src, spool], env);
      const dest = freshCollection('crash');

      // Kill the store once the big upload is under way (Apache or bitfog temporary file growing).
      let killed = false;
      const run = await bitfog(['store', spool, dest.url], env, (pid) => {
        const poll = setInterval(async () => {
          const files = await findFiles(dest.dir);
          const uploading = files.some((f) => /(^|\/)\.(davfs\.tmp|bitfog-tmp-)/.test(f.path) && f.size > 1024 * 1024);
          if (uploading && !killed) {
            killed = true;
            clearInterval(poll);
            process.kill(pid, 'SIGKILL');
          }
        }, 20);
        setTimeout(() => clearInterval(poll), 120_000).unref();
      });
      assert.ok(killed && run.signal === 'SIGKILL', `the store was killed mid-upload (exit ${run.code}, ${run.stderr})`);

      // Whatever sits under a final name is complete.
      const want = await treeOf(src);
      const got = await treeOf(dest.dir);
      for (const [p, h] of got) {
        if (/(^|\/)\.(davfs\.tmp|bitfog-tmp-)/.test(p)) continue;
        assert.equal(h, want.get(p), `${p} under its final name is complete`);
      }

      await ok(['store', spool, dest.url], env);
      assert.deepEqual(await treeOf(dest.dir), want);
    });
  });
}

async function findFiles(dir: string): Promise<Array<{ path: string; size: number }>> {
  const out: Array<{ path: string; size: number }> = [];
  const walk = async (rel: string) => {
    let entries;
    try {
      entries = await readdir(path.join(dir, rel), { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(r);
      else {
        const size = await stat(path.join(dir, r)).then((s) => s.size, () => 0);
        out.push({ path: r, size });
      }
    }
  };
  await walk('');
  return out;
}
