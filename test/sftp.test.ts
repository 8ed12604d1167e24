/**
 * The SFTP backend against a real OpenSSH sshd (test/services/sftp.sh): the conformance
 * suite, plus what only SSH has — authentication, host keys, permission errors — and what
 * a user checks after a transfer: the bytes, names, modes, mtimes and symlinks as they
 * land on the server's disk (the server is this machine, so the tests look there too).
 */
import assert from 'node:assert/strict';
import { Socket } from 'node:net';
import { execFile } from 'node:child_process';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { promisify } from 'node:util';
import { describe, it, type TestContext } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { parseSftpUrl, sftpProvider } from '../src/backends/sftp/index.ts';
import { sftpFlushesBehind } from '../src/backends/sftp/sftp.ts';
import { WRITE_BEHIND_BYTES } from '../src/core/fsutil.ts';
import { hostMatches, parseKnownHosts, verifyHostKey } from '../src/backends/sftp/known-hosts.ts';
import { AWKWARD_NAMES, DEEP_PATH, listAll, testBackend } from '../src/conformance/index.ts';
import { isBitfogError, type ErrorCode } from '../src/core/errors.ts';
import { toRelPath, type RelPath } from '../src/core/paths.ts';
import type { Destination, Entry, Source } from '../src/core/types.ts';
import { serviceEnv, skipWithoutService } from './helpers/services.ts';
import { bitfogOk, startBitfog } from './helpers/cli.ts';
import { tempDir } from './helpers/tmp.ts';
import { contentOf, makeTree, readTree, sha256File, type TreeSpec } from './helpers/tree.ts';

const run = promisify(execFile);
const svc = serviceEnv('sftp', ['SFTP_HOST', 'SFTP_PORT', 'SFTP_USER', 'SFTP_KEY', 'SFTP_KNOWN_HOSTS', 'SFTP_ROOT', 'SFTP_READONLY_KEY'] as const);

/** An environment with no agent and an empty home: only what a test passes is used. */
let isolatedHome: string | undefined;
async function isolatedEnv(extra: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  isolatedHome ??= await tempDir('sftp-home');
  return { HOME: isolatedHome, USER: 'nobody-in-particular', ...extra };
}

let counter = 0;
/** A fresh directory name under SFTP_ROOT; returns its local path and its sftp:// URL. */
function freshRoot(label: string, query: Record<string, string> = {}): { local: string; url: string } {
  const s = svc!;
  const name = `${label}-${process.pid}-${++counter}`;
  const local = path.join(s.SFTP_ROOT, name);
  const q = new URLSearchParams({ key: s.SFTP_KEY, known_hosts: s.SFTP_KNOWN_HOSTS, ...query });
  return { local, url: `${baseUrl()}${encodePath(local)}?${q}` };
}

function baseUrl(): string {
  const s = svc!;
  return `sftp://${s.SFTP_USER}@${s.SFTP_HOST}:${s.SFTP_PORT}`;
}

function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}

async function openDest(url: string, env?: NodeJS.ProcessEnv): Promise<Destination> {
  return (await sftpProvider.open(url, { write: true, env: env ?? (await isolatedEnv()) })) as Destination;
}

async function openSource(url: string, env?: NodeJS.ProcessEnv): Promise<Source> {
  return sftpProvider.open(url, { write: false, env: env ?? (await isolatedEnv()) });
}

function p(s: string): RelPath {
  return toRelPath(s);
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode, messageRe?: RegExp): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isBitfogError(err), `expected BitfogError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    if (messageRe) assert.match(err.message, messageRe);
    return true;
  });
}

async function writeText(b: Destination, rel: string, text: string): Promise<void> {
  const buf = Buffer.from(text);
  await b.write(p(rel), Readable.from(buf.length ? [buf] : []), { size: buf.length });
}

async function readText(b: Source, rel: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await b.read(p(rel))) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString();
}

function skipIfNoService(t: TestContext): boolean {
  if (svc) return false;
  skipWithoutService(t, 'sftp');
  return true;
}

if (svc) {
  testBackend({
    name: 'sftp',
    open: async () => openDest(freshRoot('conf').url),
    cycle: { newUrl: async () => freshRoot('cycle').url, registry: createDefaultRegistry() },
  });
} else {
  it('conformance: sftp', (t) => skipWithoutService(t, 'sftp'));
}

describe('sftp: authentication', () => {
  it('refuses a key the server does not know with EAUTH', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-wrongkey');
    const key = path.join(dir, 'wrong key');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
    const { url } = freshRoot('auth', { key });
    await expectCode(openDest(url), 'EAUTH', /authentication as .* failed/);
  });

  it('says EAUTH when it has no credentials at all', async (t) => {
    if (skipIfNoService(t)) return;
    const s = svc!;
    const url = `${baseUrl()}${encodePath(s.SFTP_ROOT)}?known_hosts=${encodeURIComponent(s.SFTP_KNOWN_HOSTS)}`;
    await expectCode(openSource(url), 'EAUTH', /no credentials/);
  });

  it('asks for the passphrase of an encrypted key, and uses it when given', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-passphrase');
    const key = path.join(dir, 'id_ed25519');
    await fsp.copyFile(svc!.SFTP_KEY, key);
    await fsp.chmod(key, 0o600);
    await run('ssh-keygen', ['-q', '-p', '-N', 'sekrit phrase', '-f', key]);
    const { url } = freshRoot('pass', { key });
    await expectCode(openDest(url), 'EAUTH', /BITFOG_SFTP_PASSPHRASE/);
    const b = await openDest(url, await isolatedEnv({ BITFOG_SFTP_PASSPHRASE: 'sekrit phrase' }));
    await b.close();
  });

  it('finds ~/.ssh/id_ed25519 by itself', async (t) => {
    if (skipIfNoService(t)) return;
    const home = await tempDir('sftp-home-key');
    await fsp.mkdir(path.join(home, '.ssh'), { mode: 0o700 });
    await fsp.copyFile(svc!.SFTP_KEY, path.join(home, '.ssh', 'id_ed25519'));
    await fsp.copyFile(svc!.SFTP_KNOWN_HOSTS, path.join(home, '.ssh', 'known_hosts'));
    const { local } = freshRoot('homekey');
    const b = await openDest(`${baseUrl()}${encodePath(local)}`, { HOME: home });
    await writeText(b, 'f', 'x');
    await b.close();
    assert.equal(await fsp.readFile(path.join(local, 'f'), 'utf8'), 'x');
  });

  it('refuses a password in the URL', async () => {
    await expectCode(sftpProvider.open('sftp://me:secret@127.0.0.1/x', { write: false, env: {} }), 'EBADURL', /BITFOG_SFTP_PASSWORD/);
  });
});

describe('sftp: host keys', () => {
  it('refuses an unknown host key with EHOSTKEY, and accepts it only when asked', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-kh');
    const kh = path.join(dir, 'known_hosts');
    await fsp.writeFile(kh, '# nothing known yet\n');
    const { url } = freshRoot('hostkey', { known_hosts: kh });
    await expectCode(openDest(url), 'EHOSTKEY', /not known \(ssh-ed25519 SHA256:.*accept_new_host_key=1/s);
    assert.equal(await fsp.readFile(kh, 'utf8'), '# nothing known yet\n', 'nothing recorded without the opt-in');

    const accepted = await openDest(`${url}&accept_new_host_key=1`);
    await accepted.close();
    const recorded = await fsp.readFile(kh, 'utf8');
    assert.match(recorded, new RegExp(`^\\[127\\.0\\.0\\.1\\]:${svc!.SFTP_PORT} ssh-ed25519 `, 'm'));

    // Known now: no opt-in needed any more, and nothing appended twice.
    const again = await openDest(url);
    await again.close();
    assert.equal(await fsp.readFile(kh, 'utf8'), recorded);
  });

  it('takes the opt-in from BITFOG_SFTP_ACCEPT_NEW_HOST_KEY too', async (t) => {
    if (skipIfNoService(t)) return;
    const kh = path.join(await tempDir('sftp-kh-env'), 'sub', 'known_hosts');
    const { url } = freshRoot('hostkey-env', { known_hosts: kh });
    const b = await openDest(url, await isolatedEnv({ BITFOG_SFTP_ACCEPT_NEW_HOST_KEY: '1' }));
    await b.close();
    assert.match(await fsp.readFile(kh, 'utf8'), /ssh-ed25519 /);
  });

  it('refuses a changed host key even with the opt-in', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-kh-changed');
    const other = path.join(dir, 'other');
    await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const pub = (await fsp.readFile(`${other}.pub`, 'utf8')).split(' ').slice(0, 2).join(' ');
    const kh = path.join(dir, 'known_hosts');
    const content = `[127.0.0.1]:${svc!.SFTP_PORT} ${pub}\n`;
    await fsp.writeFile(kh, content);
    const { url } = freshRoot('changed', { known_hosts: kh, accept_new_host_key: '1' });
    await expectCode(openDest(url), 'EHOSTKEY', /CHANGED/);
    assert.equal(await fsp.readFile(kh, 'utf8'), content, 'known_hosts untouched');
  });

  it('reads hashed known_hosts entries (ssh-keygen -H)', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-kh-hashed');
    const kh = path.join(dir, 'known_hosts');
    await fsp.copyFile(svc!.SFTP_KNOWN_HOSTS, kh);
    await run('ssh-keygen', ['-q', '-H', '-f', kh]);
    const text = await fsp.readFile(kh, 'utf8');
    assert.match(text, /^\|1\|/m, 'entries are hashed');
    assert.doesNotMatch(text, /127\.0\.0\.1/);
    const b = await openDest(freshRoot('hashed', { known_hosts: kh }).url);
    await b.close();
  });

  it('honours @revoked', async (t) => {
    if (skipIfNoService(t)) return;
    const dir = await tempDir('sftp-kh-revoked');
    const kh = path.join(dir, 'known_hosts');
    await fsp.writeFile(kh, `@revoked ${await fsp.readFile(svc!.SFTP_KNOWN_HOSTS, 'utf8')}`);
    await expectCode(openDest(freshRoot('revoked', { known_hosts: kh, accept_new_host_key: '1' }).url), 'EHOSTKEY', /revoked/);
  });
});

describe('sftp: errors', () => {
  it('says EACCES when the server refuses a write', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('readonly');
    await fsp.mkdir(local);
    await fsp.writeFile(path.join(local, 'existing'), 'keep me');
    const roUrl = url.replace(/key=[^&]*/, `key=${encodeURIComponent(svc!.SFTP_READONLY_KEY)}`);
    const b = await openDest(roUrl);
    try {
      assert.equal(await readText(b, 'existing'), 'keep me', 'reading is allowed');
      await expectCode(writeText(b, 'new file', 'x'), 'EACCES', /permission denied/);
      await expectCode(b.mkdir(p('new dir')), 'EACCES');
      await expectCode(b.remove(p('existing')), 'EACCES');
      await expectCode(b.setMetadata(p('existing'), { mode: 0o600 }), 'EACCES');
    } finally {
      await b.close();
    }
    assert.deepEqual(await fsp.readdir(local), ['existing']);
  });

  it('says ENOENT for a root that does not exist, and creates it for writing', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('missing');
    const deeper = url.replace(/\?/, `${encodePath('/a b/c')}?`);
    await expectCode(openSource(deeper), 'ENOENT', /does not exist/);
    const b = await openDest(deeper);
    await b.close();
    assert.ok((await fsp.stat(path.join(local, 'a b', 'c'))).isDirectory());
  });

  it('takes back the directories it created for a root when asked, as far as they are still empty', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('discard');
    await fsp.mkdir(local);
    const unused = await openDest(url.replace(/\?/, `${encodePath('/x y/z ü')}?`));
    await unused.discardCreatedRoot!();
    await unused.close();
    await assert.rejects(fsp.stat(path.join(local, 'x y')), { code: 'ENOENT' }, 'both created directories are gone');
    assert.ok((await fsp.stat(local)).isDirectory(), 'the existing parent stays');
    const used = await openDest(url.replace(/\?/, `${encodePath('/x y/z ü')}?`));
    await fsp.writeFile(path.join(local, 'x y', 'kept'), 'someone else wrote this');
    await used.discardCreatedRoot!();
    await used.close();
    await assert.rejects(fsp.stat(path.join(local, 'x y', 'z ü')), { code: 'ENOENT' }, 'the empty root goes');
    assert.equal(await fsp.readFile(path.join(local, 'x y', 'kept'), 'utf8'), 'someone else wrote this');
    const existing = await openDest(url);
    await existing.discardCreatedRoot!();
    await existing.close();
    assert.ok((await fsp.stat(local)).isDirectory(), 'a root that was there is never removed');
  });

  it('never shows the server path of an entry in messages', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('nopath');
    const b = await openDest(url);
    try {
      await assert.rejects(b.stat(p('no such #')), (err: Error) => {
        assert.ok(!err.message.includes(local), err.message);
        assert.match(err.message, /"no such #"/);
        return true;
      });
    } finally {
      await b.close();
    }
  });

  it('says EUNREACHABLE when nothing listens on the port', async () => {
    const port = await new Promise<number>((resolve) => {
      const srv = createServer();
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });
    const key = path.join(await tempDir('sftp-unreach'), 'k');
    await fsp.writeFile(key, '');
    await expectCode(
      sftpProvider.open(`sftp://me@127.0.0.1:${port}/x?key=${encodeURIComponent(svc?.SFTP_KEY ?? key)}`, { write: false, env: await isolatedEnv() }),
      svc ? 'EUNREACHABLE' : 'EAUTH',
    );
  });

  it('says ENOSPC when the disk is full', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('full');
    await fsp.mkdir(local);
    // A 1 MiB tmpfs under the root; only possible as root with mount rights.
    const mounted = await run('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', local]).then(
      () => true,
      () => false,
    );
    if (!mounted) return t.skip('cannot mount a small tmpfs here (needs root)');
    try {
      const b = await openDest(url);
      try {
        const size = 4 * 1024 * 1024;
        const big = Buffer.alloc(size, 7);
        await expectCode(b.write(p('too big'), Readable.from([big]), { size }), 'ENOSPC', /no space/);
      } finally {
        await b.close();
      }
    } finally {
      await run('umount', [local]);
    }
  });

  it('sends small packets at once: its connection has Nagle\'s algorithm off', async (t) => {
    if (skipIfNoService(t)) return;
    // With Nagle on, a read request or window adjustment waits for the answer to the one
    // before: 1 GiB read at 170 MB/s here instead of 300-390 MB/s.
    const calls: boolean[] = [];
    const original = Socket.prototype.setNoDelay;
    Socket.prototype.setNoDelay = function (this: Socket, noDelay?: boolean) {
      calls.push(noDelay !== false);
      return original.call(this, noDelay);
    };
    try {
      const b = await openDest(freshRoot('nodelay').url);
      await b.close();
    } finally {
      Socket.prototype.setNoDelay = original;
    }
    assert.deepEqual(calls, [true]);
  });

  it('fails operations after close, and close is idempotent', async (t) => {
    if (skipIfNoService(t)) return;
    const b = await openDest(freshRoot('closed').url);
    await b.close();
    await b.close();
    await assert.rejects(b.stat(p('x')), (err: unknown) => isBitfogError(err));
  });
});

describe('sftp: what lands on the server', () => {
  it('keeps awkward names byte for byte, not escaped', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('names');
    const b = await openDest(url);
    try {
      for (const name of AWKWARD_NAMES) await writeText(b, name, name);
      const parts = DEEP_PATH.split('/');
      for (let i = 1; i < parts.length; i++) await b.mkdir(p(parts.slice(0, i).join('/')));
      await writeText(b, DEEP_PATH, 'deep');
    } finally {
      await b.close();
    }
    const onDisk = await fsp.readdir(local);
    for (const name of AWKWARD_NAMES) {
      assert.ok(onDisk.includes(name), `${JSON.stringify(name)} on disk`);
      assert.equal(await fsp.readFile(path.join(local, name), 'utf8'), name);
    }
    assert.equal(await fsp.readFile(path.join(local, ...DEEP_PATH.split('/')), 'utf8'), 'deep');

    const src = await openSource(url);
    try {
      const listed: string[] = (await listAll(src as Destination)).map((e) => e.path);
      for (const name of AWKWARD_NAMES) assert.ok(listed.includes(name), `${JSON.stringify(name)} listed`);
      assert.ok(listed.includes(DEEP_PATH));
    } finally {
      await src.close();
    }
  });

  it('reads a tree written by someone else: modes, mtimes, symlinks, empty files', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('tree');
    await fsp.mkdir(path.join(local, 'bin'), { recursive: true });
    await fsp.writeFile(path.join(local, 'bin', 'tool'), '#!/bin/sh\n');
    await fsp.chmod(path.join(local, 'bin', 'tool'), 0o755);
    await fsp.writeFile(path.join(local, 'secret'), 's');
    await fsp.chmod(path.join(local, 'secret'), 0o600);
    await fsp.writeFile(path.join(local, 'empty'), '');
    await fsp.utimes(path.join(local, 'secret'), 1_500_000_000, 1_500_000_000);
    await fsp.symlink('bin/tool', path.join(local, 'link to tool'));
    await fsp.symlink('/nowhere/at all', path.join(local, 'dangling'));
    await fsp.symlink('bin', path.join(local, 'dirlink'));
    const b = await openSource(url);
    try {
      const byPath = new Map<string, Entry>((await listAll(b as Destination)).map((e) => [e.path, e]));
      assert.deepEqual([...byPath.keys()].sort(), ['bin', 'bin/tool', 'dangling', 'dirlink', 'empty', 'link to tool', 'secret']);
      assert.equal(byPath.get('bin/tool')!.mode, 0o755);
      assert.equal(byPath.get('secret')!.mode, 0o600);
      assert.equal(byPath.get('secret')!.mtimeMs, 1_500_000_000_000);
      assert.equal(byPath.get('empty')!.size, 0);
      assert.equal(byPath.get('dirlink')!.kind, 'symlink', 'a symlinked directory is listed as a link, not followed');
      assert.equal(byPath.get('dangling')!.linkTarget, '/nowhere/at all');
      assert.equal(byPath.get('link to tool')!.size, Buffer.byteLength('bin/tool'));
      assert.equal(await readText(b, 'empty'), '');
      await expectCode(b.read(p('bin')), 'EISDIR');
    } finally {
      await b.close();
    }
  });

  it('stores modes and mtimes, and sets a symlink’s mtime without touching its target', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('meta');
    const b = await openDest(url);
    const mtimeMs = Date.UTC(2019, 4, 6, 7, 8, 9);
    try {
      await b.write(p('script'), Readable.from([Buffer.from('echo hi\n')]), { size: 8, mode: 0o750, mtimeMs });
      await b.write(p('no mode #1'), Readable.from([Buffer.from('plain\n')]), { size: 6 });
      await b.mkdir(p('private dir'));
      await b.setMetadata(p('private dir'), { mode: 0o700, mtimeMs });
      await writeText(b, 'target', 't');
      await b.setMetadata(p('target'), { mode: 0o644, mtimeMs: Date.UTC(2001, 0, 1) });
      await b.symlink(p('link'), 'target');
      await b.setMetadata(p('link'), { mode: 0o777, mtimeMs });
    } finally {
      await b.close();
    }
    const script = await fsp.stat(path.join(local, 'script'));
    assert.equal(script.mode & 0o7777, 0o750);
    // Written without a mode (its source had none: WebDAV, S3): the usual 0644, not the 0600 it was created with.
    assert.equal((await fsp.stat(path.join(local, 'no mode #1'))).mode & 0o7777, 0o644);
    assert.equal(script.mtimeMs, mtimeMs);
    const dir = await fsp.stat(path.join(local, 'private dir'));
    assert.equal(dir.mode & 0o7777, 0o700);
    assert.equal(dir.mtimeMs, mtimeMs);
    const target = await fsp.stat(path.join(local, 'target'));
    assert.equal(target.mode & 0o7777, 0o644);
    assert.equal(target.mtimeMs, Date.UTC(2001, 0, 1), 'the target keeps its own mtime');
    const link = await fsp.lstat(path.join(local, 'link'));
    assert.ok(link.isSymbolicLink());
    assert.equal(await fsp.readlink(path.join(local, 'link')), 'target', 'link stored the right way round');
    assert.equal(link.mtimeMs, mtimeMs, 'lsetstat@openssh.com sets the link itself');
  });

  it('replaces a file atomically by rename, and ranged reads return the right bytes', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('rename');
    const b = await openDest(url);
    try {
      await writeText(b, 'final', 'old');
      await writeText(b, '.bitfog-tmp final', '0123456789abcdef');
      await b.rename(p('.bitfog-tmp final'), p('final'));
      assert.equal(await fsp.readFile(path.join(local, 'final'), 'utf8'), '0123456789abcdef');
      const chunks: Buffer[] = [];
      for await (const c of await b.read(p('final'), { start: 3, end: 7 })) chunks.push(c as Buffer);
      assert.equal(Buffer.concat(chunks).toString(), '3456');
      const tail: Buffer[] = [];
      for await (const c of await b.read(p('final'), { start: 10, end: 100 })) tail.push(c as Buffer);
      assert.equal(Buffer.concat(tail).toString(), 'abcdef');
      await expectCode(b.rename(p('missing'), p('final')), 'ENOENT');
      assert.ok((await b.freeSpace!())! > 0);
      await b.sync!([p('final'), toRelPath('', { allowRoot: true })]);
    } finally {
      await b.close();
    }
  });

  it('lists many directories completely, and stops cleanly when the consumer stops', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('wide');
    const expected: string[] = [];
    for (let d = 0; d < 40; d++) {
      const dir = `dir ${d}/sub #${d % 3}`;
      await fsp.mkdir(path.join(local, dir), { recursive: true });
      expected.push(`dir ${d}`, dir);
      for (let f = 0; f < 30; f++) {
        await fsp.writeFile(path.join(local, dir, `f${f}?`), `${d}/${f}`);
        expected.push(`${dir}/f${f}?`);
      }
    }
    const b = await openSource(url);
    try {
      const listed = (await listAll(b as Destination)).map((e) => e.path);
      assert.deepEqual(listed.sort(), expected.sort());
      let n = 0;
      for await (const _ of b.list()) if (++n === 10) break;
      assert.equal(n, 10);
      // The connection is still fine afterwards.
      assert.equal((await b.stat(p('dir 0'))).kind, 'directory');
    } finally {
      await b.close();
    }
  });

  it('aborts a read through its signal and stays usable', async (t) => {
    if (skipIfNoService(t)) return;
    const { local, url } = freshRoot('abort');
    await fsp.mkdir(local);
    await fsp.writeFile(path.join(local, 'big'), randomBytes(8 * 1024 * 1024));
    const b = await openSource(url);
    try {
      const ac = new AbortController();
      const stream = await b.read(p('big'), { signal: ac.signal });
      await assert.rejects(
        (async () => {
          let n = 0;
          for await (const c of stream) {
            n += (c as Buffer).length;
            if (n > 1024 * 1024) ac.abort();
          }
        })(),
        (err: Error) => err.name === 'AbortError' || isBitfogError(err, 'EABORTED'),
      );
      assert.equal((await b.stat(p('big'))).size, 8 * 1024 * 1024);
    } finally {
      await b.close();
    }
  });

  it('streams a 1 GiB file both ways without changing a byte, the server flushing it to disk as it arrives', async (t) => {
    if (skipIfNoService(t)) return;
    const size = Number(process.env.BITFOG_SFTP_LARGE_BYTES ?? 1024 * 1024 * 1024);
    const { local, url } = freshRoot('large');
    const b = await openDest(url);
    try {
      const seed = randomBytes(1 << 20);
      const want = createHash('sha256');
      const gen = function* () {
        let left = size;
        let i = 0;
        while (left > 0) {
          const n = Math.min(left, seed.length);
          const chunk = Buffer.from(seed.subarray(0, n));
          chunk.writeUInt32LE(i++, 0);
          want.update(chunk);
          left -= n;
          yield chunk;
        }
      };
      const flushesBefore = sftpFlushesBehind();
      await b.write(p('large file.bin'), Readable.from(gen()), { size });
      // Write-behind: fsyncs of the file went out (through another connection) while it was
      // written, so the sync after it has only the tail to wait for.
      if (size >= 2 * WRITE_BEHIND_BYTES) assert.ok(sftpFlushesBehind() - flushesBefore >= 1, 'fsyncs were sent during the write');
      const wantHex = want.digest('hex');
      assert.equal((await fsp.stat(path.join(local, 'large file.bin'))).size, size);
      const got = createHash('sha256');
      let n = 0;
      for await (const c of await b.read(p('large file.bin'))) {
        got.update(c as Buffer);
        n += (c as Buffer).length;
      }
      assert.equal(n, size);
      assert.equal(got.digest('hex'), wantHex);
      await b.remove(p('large file.bin'));
    } finally {
      await b.close();
    }
  });
});

describe('sftp: the CLI, killed during a store', () => {
  it('leaves no partial file under a final name, and a rerun completes the tree', async (t) => {
    if (skipIfNoService(t)) return;
    const work = await tempDir('sftp-crash');
    const a = path.join(work, 'site-a');
    const spool = path.join(work, 'spool');
    const spec: TreeSpec = { 'small #1.txt': 'small\n', 'empty': '', 'link': { symlink: 'small #1.txt' } };
    for (let i = 0; i < 16; i++) spec[`dir ${i % 4}/file ${i}?.bin`] = { bytes: 2 * 1024 * 1024 + i, seed: i + 1 };
    spec['huge.bin'] = { bytes: 48 * 1024 * 1024, seed: 99 };
    await makeTree(a, spec);
    const { local, url } = freshRoot('crash');
    const env = { ...(await isolatedEnv()), BITFOG_CACHE_DIR: path.join(work, 'cache') };

    await bitfogOk(['store', spool, url], { env });
    await bitfogOk(['fetch', a, spool, '--reserve', '0'], { env });

    const { child, done } = startBitfog(['store', spool, url], { env });
    // Kill it as soon as a file is being written (under its temporary name) or has landed.
    const isTemp = (rel: string) => /(^|\/)\.bitfog-tmp-/.test(rel);
    for (let i = 0; i < 6000 && !(await someFileWritten(local)); i++) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGKILL');
    const killed = await done;
    assert.equal(killed.signal, 'SIGKILL', `the store was still running when killed (exit ${killed.code}: ${killed.stdout})`);

    // Whatever is under a final name is complete.
    const source = await readTree(a);
    const partial = await readTree(local, { ignore: isTemp });
    for (const [rel, e] of partial) {
      if (e.kind !== 'file') continue;
      assert.equal(e.sha256, source.get(rel)?.sha256, `${rel} is complete or absent`);
    }

    const rerun = await bitfogOk(['store', spool, url], { env });
    assert.match(rerun.stdout, /the destination now matches the source snapshot/);
    const after = await readTree(local);
    assert.deepEqual([...after.keys()].filter(isTemp), [], 'no temporary files left');
    assert.deepEqual(contentOf(after), contentOf(source));
    assert.equal(after.get('huge.bin')!.sha256, await sha256File(path.join(a, 'huge.bin')));
  });
});

/** True once some non-empty regular file exists below `root`, under any name. */
async function someFileWritten(root: string): Promise<boolean> {
  const entries = await fsp.readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile()) continue;
    const full = path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name);
    if ((await fsp.stat(full).catch(() => undefined))?.size) return true;
  }
  return false;
}

describe('sftp: URLs and known_hosts, without a server', () => {
  it('parses URLs: absolute paths, the login directory, percent-encoding, options', () => {
    const t = parseSftpUrl('sftp://me@nas.example:2222/srv/my%20photos/?concurrency=3&requests=1', {});
    assert.equal(t.user, 'me');
    assert.equal(t.host, 'nas.example');
    assert.equal(t.port, 2222);
    assert.equal(t.path, '/srv/my photos');
    assert.equal(t.concurrency, 3);
    assert.equal(t.requests, 1);
    assert.equal(t.displayUrl, 'sftp://me@nas.example:2222/srv/my%20photos/');
    assert.equal(parseSftpUrl('sftp://me@nas/~/photos', {}).path, '~/photos');
    assert.equal(parseSftpUrl('sftp://me@nas/', {}).path, '/');
    assert.equal(parseSftpUrl('sftp://me@nas/x', { BITFOG_SFTP_KEY: '/k', BITFOG_SFTP_ACCEPT_NEW_HOST_KEY: '1' }).key, '/k');
    assert.equal(parseSftpUrl('sftp://me@nas/x', { BITFOG_SFTP_ACCEPT_NEW_HOST_KEY: 'yes' }).acceptNewHostKey, true);
    assert.throws(() => parseSftpUrl('sftp://me@nas/x?colour=blue', {}), (e: unknown) => isBitfogError(e, 'EBADURL') && /%3F/.test(e.message));
    // "#" would end the path: ".../photos#2" would name ".../photos".
    assert.throws(() => parseSftpUrl('sftp://me@nas/srv/photos#2', {}), (e: unknown) => isBitfogError(e, 'EBADURL') && /%23/.test(e.message));
    assert.equal(parseSftpUrl('sftp://me@nas/srv/photos%232%3F', {}).path, '/srv/photos#2?');
    assert.throws(() => parseSftpUrl('sftp://me@nas/x?concurrency=0', {}), (e: unknown) => isBitfogError(e, 'EBADURL'));
    assert.throws(() => parseSftpUrl('sftp://me:pw@nas/x', {}), (e: unknown) => isBitfogError(e, 'EBADURL') && !e.message.includes('pw'));
  });

  it('matches host patterns, negations, ports and hashed names', () => {
    assert.ok(hostMatches('nas,backup.example', 'nas'));
    assert.ok(hostMatches('*.example', 'backup.example'));
    assert.ok(!hostMatches('*.example,!evil.example', 'evil.example'));
    assert.ok(hostMatches('[nas]:2222', '[nas]:2222'));
    assert.ok(!hostMatches('nas', '[nas]:2222'));
    assert.ok(hostMatches('192.168.?.1', '192.168.1.1'));
    // A hashed entry made the way ssh-keygen -H does: HMAC-SHA1 of the name, keyed by the salt.
    const salt = Buffer.from('0123456789abcdef0123');
    const hash = createHmac('sha1', salt).update('[127.0.0.1]:2222').digest('base64');
    assert.ok(hostMatches(`|1|${salt.toString('base64')}|${hash}`, '[127.0.0.1]:2222'));
    assert.ok(!hostMatches(`|1|${salt.toString('base64')}|${hash}`, '[127.0.0.1]:2223'));
  });

  it('tells known, unknown, changed and revoked keys apart', () => {
    const blob = (type: string, fill: number) => {
      const t = Buffer.from(type);
      const head = Buffer.alloc(4);
      head.writeUInt32BE(t.length);
      return Buffer.concat([head, t, Buffer.alloc(36, fill)]);
    };
    const key = blob('ssh-ed25519', 1);
    const other = blob('ssh-ed25519', 2);
    const rsa = blob('ssh-rsa', 3);
    const lines = parseKnownHosts(
      [
        '# comment',
        `nas ssh-ed25519 ${key.toString('base64')} me@laptop`,
        `[nas]:2222 ssh-rsa ${rsa.toString('base64')}`,
        `@revoked bad ssh-ed25519 ${other.toString('base64')}`,
        'garbage line',
      ].join('\n'),
    );
    assert.equal(verifyHostKey(lines, 'NAS', 22, key).status, 'ok');
    assert.equal(verifyHostKey(lines, 'nas', 22, other).status, 'changed');
    assert.deepEqual(verifyHostKey(lines, 'nas', 2222, key), { status: 'unknown', otherTypes: ['ssh-rsa'] });
    assert.equal(verifyHostKey(lines, 'elsewhere', 22, key).status, 'unknown');
    assert.equal(verifyHostKey(lines, 'bad', 22, other).status, 'revoked');
  });
});
