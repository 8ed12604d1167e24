/**
 * The WebDAV backend against a real Apache httpd with mod_dav (test/services/webdav.sh).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { createDefaultRegistry } from '../src/backends/index.ts';
import { WebDavBackend } from '../src/backends/webdav/webdav.ts';
import { listAll, testBackend } from '../src/conformance/index.ts';
import { isBitfogError, type ErrorCode } from '../src/core/errors.ts';
import { toRelPath } from '../src/core/paths.ts';
import type { Destination } from '../src/core/types.ts';
import { serviceEnv } from './helpers/services.ts';
import { tempDir } from './helpers/tmp.ts';

const KEYS = ['WEBDAV_URL', 'WEBDAV_RO_URL', 'WEBDAV_USER', 'WEBDAV_PASSWORD', 'WEBDAV_ROOT_DIR'] as const;
const svc = serviceEnv('webdav', KEYS);
const credsEnv = svc ? { BITFOG_WEBDAV_USER: svc.WEBDAV_USER, BITFOG_WEBDAV_PASSWORD: svc.WEBDAV_PASSWORD, HOME: '/nonexistent' } : {};

let counter = 0;
/** A fresh collection's URL under the read-write share (created by `open` for writing). */
function freshUrl(label: string): string {
  return `${svc!.WEBDAV_URL}${encodeURIComponent(`${label} ${process.pid}-${Date.now()}-${counter++}`)}/`;
}

function withCredentials(url: string): string {
  const u = new URL(url);
  u.username = encodeURIComponent(svc!.WEBDAV_USER);
  u.password = encodeURIComponent(svc!.WEBDAV_PASSWORD);
  return u.href;
}

async function openFresh(label = 'conf'): Promise<Destination> {
  return WebDavBackend.open(freshUrl(label), { write: true, env: credsEnv });
}

async function expectCode(promise: Promise<unknown>, code: ErrorCode): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isBitfogError(err), `expected BitfogError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, `expected ${code}, got ${err.code}: ${err.message}`);
    return true;
  });
}

async function put(b: Destination, rel: string, content: Buffer | string): Promise<void> {
  const buf = Buffer.from(content);
  await b.write(toRelPath(rel), Readable.from(buf.length ? [buf] : []), { size: buf.length });
}

async function readText(b: Destination, rel: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await b.read(toRelPath(rel))) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

if (!svc) {
  describe('webdav', () => {
    it('needs the webdav service (run through npm test with BITFOG_SERVICES=webdav)', (t) => t.skip('service webdav not running'));
  });
} else {
  // Apache mod_dav_fs stores every name the suite uses, newline and backslash included.
  testBackend({
    name: 'webdav (Apache mod_dav)',
    open: () => openFresh(),
    // The cycle opens URLs through the registry with the process's environment: the
    // credentials travel in the URL's user part (percent-encoded).
    cycle: { newUrl: async () => withCredentials(freshUrl('cycle')), registry: createDefaultRegistry() },
  });

  describe('webdav specifics', () => {
    it('shows its URL without credentials, even when they are in the URL', async () => {
      const b = await WebDavBackend.open(withCredentials(freshUrl('url creds')), { write: true, env: { HOME: '/nonexistent' } });
      try {
        assert.ok(!b.url.includes(svc.WEBDAV_PASSWORD));
        assert.ok(!b.url.includes('@'));
        assert.match(b.url, /^webdav:\/\/127\.0\.0\.1:\d+\/dav\//);
      } finally {
        await b.close();
      }
    });

    it('reads credentials from a netrc file', async () => {
      const dir = await tempDir('netrc');
      const netrc = path.join(dir, 'netrc');
      await writeFile(netrc, `machine 127.0.0.1\n  login ${svc.WEBDAV_USER}\n  password "${svc.WEBDAV_PASSWORD}"\n`, { mode: 0o600 });
      const b = await WebDavBackend.open(freshUrl('netrc'), { write: true, env: { BITFOG_NETRC: netrc } });
      try {
        await put(b, 'x', 'y');
        assert.equal(await readText(b, 'x'), 'y');
      } finally {
        await b.close();
      }
    });

    it('says EAUTH for a wrong password, and never shows it', async () => {
      const wrong = 'not-the-password-' + randomBytes(4).toString('hex');
      await assert.rejects(
        WebDavBackend.open(svc.WEBDAV_URL, { write: false, env: { BITFOG_WEBDAV_USER: svc.WEBDAV_USER, BITFOG_WEBDAV_PASSWORD: wrong, HOME: '/nonexistent' } }),
        (err: unknown) => {
          assert.ok(isBitfogError(err, 'EAUTH'), String(err));
          assert.ok(!err.message.includes(wrong));
          return true;
        },
      );
      await expectCode(WebDavBackend.open(svc.WEBDAV_URL, { write: false, env: { HOME: '/nonexistent' } }), 'EAUTH');
    });

    it('says EROFS when writing to a read-only share, and still reads it', async () => {
      const b = await WebDavBackend.open(svc.WEBDAV_RO_URL, { write: true, env: credsEnv });
      try {
        assert.deepEqual((await listAll(b)).map((e) => e.path), ['readme.txt']);
        assert.equal(await readText(b, 'readme.txt'), 'read-only content\n');
        await expectCode(put(b, 'new file', 'x'), 'EROFS');
        await expectCode(b.mkdir(toRelPath('new dir')), 'EROFS');
        await expectCode(b.remove(toRelPath('readme.txt')), 'EROFS');
        await expectCode(b.rename(toRelPath('readme.txt'), toRelPath('moved')), 'EROFS');
      } finally {
        await b.close();
      }
    });

    it('says ENOENT for a missing root when reading, and creates it (parents first) when writing', async () => {
      const missing = freshUrl('missing') + 'a%20b/c/';
      await expectCode(WebDavBackend.open(missing, { write: false, env: credsEnv }), 'ENOENT');
      const b = await WebDavBackend.open(missing, { write: true, env: credsEnv });
      try {
        assert.deepEqual(await listAll(b), []);
      } finally {
        await b.close();
      }
    });

    it('refuses URLs with a query or fragment, and says EUNREACHABLE when nothing listens', async () => {
      await expectCode(WebDavBackend.open(svc.WEBDAV_URL + 'a#b', { write: false, env: credsEnv }), 'EBADURL');
      await expectCode(WebDavBackend.open('webdav://127.0.0.1:1/x/', { write: false, env: credsEnv }), 'EUNREACHABLE');
    });

    it('speaks https (webdavs://): EHOSTKEY for an untrusted certificate, works once BITFOG_WEBDAV_CA trusts it', async (t) => {
      const tlsUrl = process.env.WEBDAV_TLS_URL;
      const ca = process.env.WEBDAV_TLS_CA;
      if (!tlsUrl || !ca) return t.skip('the service has no https listener');
      await assert.rejects(WebDavBackend.open(tlsUrl, { write: false, env: credsEnv }), (err: unknown) => {
        assert.ok(isBitfogError(err, 'EHOSTKEY'), String(err));
        assert.match(err.message, /certificate/);
        return true;
      });
      const b = await WebDavBackend.open(`${tlsUrl}${encodeURIComponent(`tls ${process.pid}-${counter++}`)}/`, { write: true, env: { ...credsEnv, BITFOG_WEBDAV_CA: ca } });
      try {
        assert.match(b.url, /^webdavs:\/\//);
        await put(b, 'över tls #1', 'secret');
        assert.equal(await readText(b, 'över tls #1'), 'secret');
      } finally {
        await b.close();
      }
      // https spoken to the plain http port.
      const plain = svc.WEBDAV_URL.replace(/^webdav:/, 'webdavs:');
      await expectCode(WebDavBackend.open(plain, { write: false, env: credsEnv }), 'EUNREACHABLE');
    });

    it('retries after connection resets and 503s (through a faulty proxy in front of Apache)', async () => {
      const target = new URL(svc.WEBDAV_URL.replace(/^webdav:/, 'http:'));
      let connections = 0;
      const sockets = new Set<net.Socket>();
      // The first connection is reset, the second answered 503, the rest pass through.
      const proxy = net.createServer((sock) => {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        const n = ++connections;
        if (n === 1) return void sock.once('data', () => sock.resetAndDestroy());
        if (n === 2) return void sock.once('data', () => sock.end('HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'));
        const up = net.connect(Number(target.port), target.hostname);
        sockets.add(up);
        up.on('close', () => sockets.delete(up));
        sock.pipe(up).pipe(sock);
        sock.on('error', () => up.destroy());
        up.on('error', () => sock.destroy());
      });
      await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
      const port = (proxy.address() as net.AddressInfo).port;
      try {
        const url = `webdav://127.0.0.1:${port}${target.pathname}${encodeURIComponent(`retry ${process.pid}-${counter++}`)}/`;
        const b = await WebDavBackend.open(url, { write: true, env: credsEnv });
        try {
          await put(b, 'after faults', 'ok');
          assert.equal(await readText(b, 'after faults'), 'ok');
          assert.ok(connections >= 3, 'the faults happened');
        } finally {
          await b.close();
        }
      } finally {
        for (const s of sockets) s.destroy();
        await new Promise((r) => proxy.close(r));
      }
    });

    it('keeps a stable version for an unchanged file, so its hash is not read again', async () => {
      const b = await openFresh('version');
      try {
        await put(b, 'same #1', 'unchanged');
        await put(b, 'changes %', 'before');
        const first = new Map<string, string | undefined>((await listAll(b)).map((e) => [e.path, e.version]));
        // Apache marks an ETag weak during the second it was written; wait past it so a
        // later write gets a different one even on coarse file systems.
        await new Promise((r) => setTimeout(r, 1100));
        await put(b, 'changes %', 'after!');
        const second = new Map<string, string | undefined>((await listAll(b)).map((e) => [e.path, e.version]));
        assert.ok(first.get('same #1'), 'files have a version');
        assert.equal(second.get('same #1'), first.get('same #1'), 'unchanged file keeps its version');
        assert.notEqual(second.get('changes %'), first.get('changes %'), 'changed file gets a new version');
      } finally {
        await b.close();
      }
    });

    it('keeps the mtime across a rename, and forgets it when another client replaces the file', async () => {
      const b = await openFresh('mtime');
      try {
        const mtimeMs = Date.UTC(2001, 2, 3, 4, 5, 6, 789);
        await put(b, '.tmp x', 'content');
        await b.setMetadata(toRelPath('.tmp x'), { mtimeMs });
        await b.rename(toRelPath('.tmp x'), toRelPath('x'));
        assert.equal((await b.stat(toRelPath('x'))).mtimeMs, mtimeMs);
        await new Promise((r) => setTimeout(r, 1100));
        await put(b, 'x', 'replaced by someone else');
        const st = await b.stat(toRelPath('x'));
        assert.ok(Math.abs(st.mtimeMs! - Date.now()) < 60_000, `server time after a foreign replace, got ${st.mtimeMs}`);
      } finally {
        await b.close();
      }
    });

    it('maps errors: EISDIR, ENOTDIR, ENOENT for a missing parent, EEXIST for mkdir on a file', async () => {
      const b = await openFresh('errors');
      try {
        await b.mkdir(toRelPath('d'));
        await put(b, 'f', 'x');
        await expectCode(b.remove(toRelPath('d')), 'EISDIR');
        await expectCode(b.rmdir(toRelPath('f')), 'ENOTDIR');
        await expectCode(put(b, 'no such dir/f', 'x'), 'ENOENT');
        await expectCode(b.mkdir(toRelPath('f')), 'EEXIST');
        await expectCode(b.mkdir(toRelPath('no/such')), 'ENOENT');
        await expectCode(b.rename(toRelPath('absent'), toRelPath('y')), 'ENOENT');
        await expectCode(b.symlink(toRelPath('l'), 'f'), 'EOPNOTSUPP');
        assert.equal(await b.freeSpace!(), undefined, 'Apache reports no quota');
      } finally {
        await b.close();
      }
    });

    it('lists wide and deep trees completely, walking several collections at a time', async () => {
      const b = await openFresh('tree');
      try {
        const expected: string[] = [];
        for (let i = 0; i < 6; i++) {
          const d = `dir ${i} #`;
          await b.mkdir(toRelPath(d));
          expected.push(d);
          for (let j = 0; j < 3; j++) {
            const sub = `${d}/sub ${j} %`;
            await b.mkdir(toRelPath(sub));
            expected.push(sub);
            await put(b, `${sub}/file ?${j}`, `${i}/${j}`);
            expected.push(`${sub}/file ?${j}`);
          }
        }
        const listed = (await listAll(b)).map((e) => e.path);
        assert.deepEqual(listed.sort(), expected.sort());
      } finally {
        await b.close();
      }
    });

    it('opens through the registry by scheme', async () => {
      const reg = createDefaultRegistry();
      assert.equal(reg.providerFor('webdavs://nas.example/x/').provider.schemes.includes('webdavs'), true);
      const b = await reg.openDestination(freshUrl('registry'), { env: credsEnv });
      try {
        assert.equal(b.capabilities.atomicRename, true);
      } finally {
        await b.close();
      }
    });

    const bigBytes = Number(process.env.BITFOG_WEBDAV_BIG_BYTES ?? 1024 ** 3);
    it(`streams a ${bigBytes}-byte file up and down unchanged (sha256)`, async () => {
      const b = await openFresh('big');
      try {
        const block = randomBytes(1 << 20);
        const want = createHash('sha256');
        function* gen() {
          let left = bigBytes;
          let i = 0;
          while (left > 0) {
            const n = Math.min(left, block.length);
            const chunk = Buffer.from(block.subarray(0, n));
            chunk.writeUInt32LE(i++, 0);
            want.update(chunk);
            left -= n;
            yield chunk;
          }
        }
        await b.write(toRelPath('big file.bin'), Readable.from(gen()), { size: bigBytes });
        const wantHex = want.digest('hex');
        assert.equal((await b.stat(toRelPath('big file.bin'))).size, bigBytes);
        const got = createHash('sha256');
        for await (const c of await b.read(toRelPath('big file.bin'))) got.update(c as Buffer);
        assert.equal(got.digest('hex'), wantHex);
        await b.remove(toRelPath('big file.bin'));
      } finally {
        await b.close();
      }
    });
  });
}
