/**
 * `bitfog serve` as a site runs it, and the sneakernet cycle over HTTP at both ends: the
 * spool form (`fetch http://…/src/ SPOOL`, `store SPOOL http://…/dest/`) and the classic
 * form (builddb / emptydb / fetch / store as the original README shows them).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { bitfog, bitfogOk, startBitfog, type CliResult } from './helpers/cli.ts';
import { rawGet } from './helpers/http.ts';
import { tempDir } from './helpers/tmp.ts';
import { contentOf, makeTree, assertSameMetadata, readTree, type TreeSpec } from './helpers/tree.ts';

const OLD = new Date('2020-01-02T03:04:05.678Z');

const SITE_A: TreeSpec = {
  'plain.txt': 'hello\n',
  'with space/ünïcødé €.txt': 'utf-8 name\n',
  'hash#tag/100%.txt': { content: 'percent\n', mode: 0o600, mtime: OLD },
  'what?/really?.txt': 'question\n',
  'new\nline/tab\there.txt': 'control characters\n',
  'deep/a/b/c/d/e/f/g/h/leaf.txt': { content: 'deep\n', mode: 0o755, mtime: OLD },
  'empty.txt': '',
  'big-1.bin': { bytes: 300_000, seed: 1 },
  'copy of big-1.bin': { bytes: 300_000, seed: 1 },
  'medium.bin': { bytes: 120_000, seed: 3 },
  'link to plain': { symlink: 'plain.txt' },
  'dangling link': { symlink: '../../nowhere/at all' },
};

const children: ChildProcess[] = [];
after(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

interface Served {
  url: string;
  stop(): Promise<CliResult>;
  stderr(): string;
}

/** Starts `bitfog serve` and waits for its "serving" line. */
async function serve(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Served> {
  const port = await freePort();
  const { child, done } = startBitfog(['serve', '--addr', `127.0.0.1:${port}`, ...args], options);
  children.push(child);
  let err = '';
  child.stderr!.on('data', (d: string) => (err += d));
  await new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (err.includes('bitfog: serving')) resolve();
    };
    child.stderr!.on('data', onData);
    void done.then((r) => reject(new Error(`serve exited ${r.code}: ${r.stderr}`)));
  });
  return {
    url: `http://127.0.0.1:${port}/`,
    stderr: () => err,
    stop: async () => {
      child.kill('SIGTERM');
      return done;
    },
  };
}

describe('bitfog serve', () => {
  it('resolves relative area paths against the config file, logs requests, stops on SIGTERM', async () => {
    const dir = await tempDir('http-serve');
    await makeTree(path.join(dir, 'site/data'), { 'a.txt': 'a\n' });
    await fsp.mkdir(path.join(dir, 'site/up'));
    await fsp.writeFile(path.join(dir, 'site/bitfog.json'), JSON.stringify({ data: { path: 'data', checksum: true }, up: { path: 'up', writable: true } }));
    // Run from elsewhere: the path is relative to the config file, not the cwd.
    const s = await serve(['--conf', path.join(dir, 'site/bitfog.json')], { cwd: dir, env: { BITFOG_CACHE_DIR: path.join(dir, 'cache') } });
    const r = await rawGet(s.url, '/data/a.txt');
    assert.equal(r.body.toString(), 'a\n');
    // Uploads count their whole request, headers and body, on fresh and reused connections.
    for (const size of [5, 1000, 65_536, 100_000, 5, 1000]) {
      const put = await fetch(`${s.url}up/${size}.bin`, { method: 'PUT', body: Buffer.alloc(size, 1), headers: { 'Content-Type': 'application/octet-stream' } });
      assert.equal(put.status, 204, await put.text());
    }
    const stopped = await s.stop();
    assert.equal(stopped.code, 0);
    assert.match(stopped.stderr, /GET \/data\/a\.txt 200 in=\d+ out=\d+ [\d.]+ms/);
    for (const [, size, inn] of stopped.stderr.matchAll(/PUT \/up\/(\d+)\.bin 204 in=(\d+) /g)) {
      assert.ok(Number(inn) > Number(size) && Number(inn) < Number(size) + 1000, `PUT of ${size} bytes logged in=${inn}`);
    }
    assert.equal([...stopped.stderr.matchAll(/PUT \/up\//g)].length, 6);
    assert.ok(!(await fsp.readdir(path.join(dir, 'site/data'))).some((n) => n !== 'a.txt'), 'nothing written into the area');
  });

  it('--quiet logs no requests', async () => {
    const dir = await tempDir('http-serve-quiet');
    await makeTree(path.join(dir, 'data'), { 'a.txt': 'a\n' });
    await fsp.writeFile(path.join(dir, 'bitfog.json'), JSON.stringify({ data: { path: `${dir}/data` } }));
    const s = await serve(['--quiet'], { cwd: dir });
    await rawGet(s.url, '/data/');
    const stopped = await s.stop();
    assert.doesNotMatch(stopped.stderr, /GET \/data\//);
  });

  it('fails clearly at start-up on a missing area directory or a bad config', async () => {
    const dir = await tempDir('http-serve-bad');
    await fsp.writeFile(path.join(dir, 'missing.json'), JSON.stringify({ gone: { path: 'no/such/dir', writable: true } }));
    const r = await bitfog(['serve', '--conf', path.join(dir, 'missing.json'), '--addr', '127.0.0.1:0'], { cwd: dir });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /area "gone": .* does not exist/);
    await assert.rejects(fsp.stat(path.join(dir, 'no/such/dir')), 'a writable area is not created by serve');
    await fsp.writeFile(path.join(dir, 'bad.json'), '{"src": {"path": 1}}');
    const bad = await bitfog(['serve', '--conf', path.join(dir, 'bad.json'), '--addr', '127.0.0.1:0'], { cwd: dir });
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /has no "path"/);
    const none = await bitfog(['serve', '--conf', path.join(dir, 'nope.json'), '--addr', '127.0.0.1:0'], { cwd: dir });
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /cannot read configuration/);
  });

  it('serves areas of a plugin\'s scheme, with the plugins the command line names', async () => {
    const dir = await tempDir('http-serve-plugin');
    const dirstore = path.join(import.meta.dirname, '..', 'examples', 'dirstore-plugin');
    const a = path.join(dir, 'site-a');
    await makeTree(a, { 'photo #1.jpg': 'jpeg', 'sub ü/note.txt': 'note' });
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    const area = `dirstore://${path.join(dir, 'archive')}`;
    await fsp.mkdir(path.join(dir, 'archive'));
    await bitfogOk(['fetch', a, path.join(dir, 'spool')], { env });
    await bitfogOk(['store', path.join(dir, 'spool'), area, '--plugin', dirstore], { env });
    await fsp.writeFile(path.join(dir, 'bitfog.json'), JSON.stringify({ ds: { path: area } }));
    const s = await serve(['--conf', path.join(dir, 'bitfog.json'), '--quiet', '--plugin', dirstore], { env });
    const listed = await bitfogOk(['ls', `${s.url}ds/`], { env });
    assert.match(listed.stdout, /photo #1\.jpg/);
    assert.match(listed.stdout, /sub ü\/note\.txt/);
    await s.stop();
  });

  it('refuses a BITFOG_SERVE_TOKEN that is set but empty, rather than serving without a token', async () => {
    const dir = await tempDir('http-serve-empty-token');
    await fsp.mkdir(path.join(dir, 'area'));
    await fsp.writeFile(path.join(dir, 'bitfog.json'), JSON.stringify({ src: { path: 'area' } }));
    const { child, done } = startBitfog(['serve', '--conf', path.join(dir, 'bitfog.json'), '--addr', '127.0.0.1:0'], { env: { BITFOG_SERVE_TOKEN: ' ' } });
    children.push(child); // stopped at the end if it serves after all
    const r = await Promise.race([done, new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 20_000).unref())]);
    assert.ok(r, 'serve should have refused at once, but it is serving');
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /BITFOG_SERVE_TOKEN is set but empty/);
    assert.doesNotMatch(r.stderr, /serving/);
  });

  it('a port in use is an error, not a usage mistake: exit 1 and no usage, for serve and ui', async () => {
    const dir = await tempDir('http-serve-busy');
    const busy = net.createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as net.AddressInfo).port;
    try {
      await fsp.writeFile(path.join(dir, 'bitfog.json'), JSON.stringify({ data: { path: dir } }));
      const serve = await bitfog(['serve', '--conf', path.join(dir, 'bitfog.json'), '--addr', `127.0.0.1:${port}`], { cwd: dir });
      assert.equal(serve.code, 1, serve.stderr);
      assert.match(serve.stderr, /cannot listen on 127\.0\.0\.1:\d+: the port is in use; choose another with --addr/);
      assert.doesNotMatch(serve.stderr, /\$ bitfog/, 'no usage');
      const spool = path.join(dir, 'spool');
      await bitfogOk(['store', spool, path.join(dir, 'empty dest')], { env: { BITFOG_CACHE_DIR: path.join(dir, 'cache') } });
      const ui = await bitfog(['ui', spool, '--port', String(port)]);
      assert.equal(ui.code, 1, ui.stderr);
      assert.match(ui.stderr, /the port is in use; choose another with --port/);
      assert.doesNotMatch(ui.stderr, /\$ bitfog/, 'no usage');
    } finally {
      busy.close();
    }
  });
});

describe('sneakernet cycle over HTTP at both ends', () => {
  it('fetch http://…/src/ SPOOL, store SPOOL http://…/dest/, with changes, until dest equals src', async () => {
    const dir = await tempDir('http-cycle');
    const a = path.join(dir, 'site-a');
    const b = path.join(dir, 'site-b');
    await makeTree(a, SITE_A);
    await fsp.mkdir(b);
    await fsp.writeFile(
      path.join(dir, 'bitfog.json'),
      JSON.stringify({ src: { path: 'site-a', checksum: true }, dest: { path: 'site-b/', writable: true, checksum: true } }),
    );
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    const s = await serve(['--conf', path.join(dir, 'bitfog.json'), '--quiet'], { env });
    const spool = path.join(dir, 'spool');
    const src = `${s.url}src/`;
    const dest = `${s.url}dest/`;
    const round = async () => {
      await bitfogOk(['store', spool, dest], { env });
      for (let trip = 0; trip < 10; trip++) {
        await bitfogOk(['fetch', src, spool, '--reserve', '0'], { env });
        await bitfogOk(['store', spool, dest], { env });
        const status = JSON.parse((await bitfogOk(['status', spool, '--json'], { env })).stdout);
        if (status.left.files === 0 && status.carried.blobs === 0) return;
      }
      throw new Error('did not converge');
    };
    await round();
    const ignoreDirs = (t: Awaited<ReturnType<typeof readTree>>) => new Map([...t].filter(([, e]) => e.kind !== 'directory'));
    assert.deepEqual(contentOf(ignoreDirs(await readTree(b))), contentOf(ignoreDirs(await readTree(a))));
    // Modes and mtimes travel through the extension headers.
    assertSameMetadata(ignoreDirs(await readTree(b)), ignoreDirs(await readTree(a)));

    await fsp.writeFile(path.join(a, 'plain.txt'), 'changed\n');
    await fsp.rm(path.join(a, 'medium.bin'));
    await fsp.writeFile(path.join(a, 'new file #2.txt'), 'new\n');
    await round();
    assert.deepEqual(contentOf(ignoreDirs(await readTree(b))), contentOf(ignoreDirs(await readTree(a))));
    await s.stop();
  });

  it('store removes the temporary files an interrupted store left on the server (its own and the server\'s), never a user\'s', async () => {
    const dir = await tempDir('http-leftovers');
    const a = path.join(dir, 'site-a');
    const b = path.join(dir, 'site-b');
    await makeTree(a, { 'big #1.bin': 'x'.repeat(200_000), 'sub ü/small.txt': 'small', '.bitfog-tmp-not-ours.txt': 'a user file' });
    await makeTree(b, {});
    // What an interrupted store leaves: its temporary names, complete or not, and the
    // server's own temporary file of an upload cut off. A user's look-alike name stays.
    const leftovers = ['.bitfog-tmp-0123456789abcdef-big_#1.bin', '.bitfog-tmp-fedcba9876543210-.bitfog-tmp-0011223344556677-big_#1.bin', 'sub ü/.bitfog-tmp-00000000000000ff'];
    await fsp.mkdir(path.join(b, 'sub ü'));
    for (const name of leftovers) await fsp.writeFile(path.join(b, name), 'partial');
    await fsp.writeFile(path.join(dir, 'bitfog.json'), JSON.stringify({ dest: { path: 'site-b', writable: true, checksum: true } }));
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    const s = await serve(['--conf', path.join(dir, 'bitfog.json'), '--quiet'], { env });
    const spool = path.join(dir, 'spool');
    const dest = `${s.url}dest/`;
    await bitfogOk(['store', spool, dest, '--new-destination'], { env });
    await bitfogOk(['fetch', a, spool], { env });
    await bitfogOk(['store', spool, dest], { env });
    for (const name of leftovers) await assert.rejects(fsp.stat(path.join(b, name)), { code: 'ENOENT' }, name);
    assert.equal(await fsp.readFile(path.join(b, '.bitfog-tmp-not-ours.txt'), 'utf8'), 'a user file');
    assert.equal(await fsp.readFile(path.join(b, 'big #1.bin'), 'utf8'), 'x'.repeat(200_000));
    // A classic client is never shown them.
    await fsp.writeFile(path.join(b, leftovers[0]!), 'partial');
    const listing = await (await fetch(`${dest}?temp`)).text();
    assert.match(listing, /bitfog-tmp-0123456789abcdef/);
    assert.doesNotMatch(await (await fetch(dest)).text(), /bitfog-tmp-0123456789abcdef/);
    await s.stop();
  });

  it('classic builddb / emptydb / fetch / store against the server', async () => {
    const dir = await tempDir('http-classic-cli');
    const a = path.join(dir, 'site-a');
    const b = path.join(dir, 'site-b');
    const c = path.join(dir, 'site-c');
    await makeTree(a, { 'hello.txt': 'hello world\n', 'sub/nested.txt': 'nested\n', 'empty.txt': '', link: { symlink: 'hello.txt' }, 'sp ace #1.txt': 'x\n' });
    await makeTree(b, { 'extra-in-dest.txt': 'extra\n' });
    await fsp.mkdir(c);
    await fsp.writeFile(
      path.join(dir, 'bitfog.json'),
      JSON.stringify({
        src: { path: a, checksum: true },
        dest: { path: b, writable: true, checksum: true },
        blank: { path: c, writable: true },
      }),
    );
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache') };
    const s = await serve(['--conf', path.join(dir, 'bitfog.json'), '--quiet'], { env });
    const destdb = path.join(dir, 'dest.db');
    const srcdb = path.join(dir, 'src.db');
    const tmp = path.join(dir, 'tmp');
    await bitfogOk(['builddb', `${s.url}dest/`, destdb], { env });
    await bitfogOk(['builddb', `${s.url}src/`, srcdb], { env });
    await bitfogOk(['fetch', destdb, `${s.url}src/`, tmp], { env });
    await bitfogOk(['store', srcdb, `${s.url}dest/`, tmp], { env });
    assert.deepEqual(contentOf(await readTree(b)), contentOf(await readTree(a)));

    const emptydb = path.join(dir, 'empty.db');
    await bitfogOk(['emptydb', emptydb], { env });
    await bitfogOk(['fetch', emptydb, `${s.url}src/`, path.join(dir, 'tmp2')], { env });
    await bitfogOk(['store', srcdb, `${s.url}blank/`, path.join(dir, 'tmp2')], { env });
    const ignoreDirs = (t: Awaited<ReturnType<typeof readTree>>) => new Map([...t].filter(([, e]) => e.kind !== 'directory'));
    assert.deepEqual(contentOf(ignoreDirs(await readTree(c))), contentOf(ignoreDirs(await readTree(a))));
    await s.stop();
  });
});
