/**
 * Bearer-token auth (global and per area, read and write apart) and TLS with a
 * self-signed certificate made here with openssl.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { before, describe, it } from 'node:test';
import { HttpBackend } from '../src/backends/http/client.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { toRelPath } from '../src/core/paths.ts';
import { parseConfig } from '../src/server/config.ts';
import { bitfog, bitfogOk } from './helpers/cli.ts';
import { rawGet, startServer, type TestServer } from './helpers/http.ts';
import { tempDir } from './helpers/tmp.ts';

const code = (c: string) => (e: unknown) => isBitfogError(e) && e.code === c;

async function writeText(b: HttpBackend, p: string, text: string): Promise<void> {
  await b.write(toRelPath(p), Readable.from([Buffer.from(text)]), { size: Buffer.byteLength(text) });
}

describe('auth', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer({
      open: { writable: true },
      shared: { writable: true, readToken: 'read-secret', writeToken: 'write-secret' },
      single: { writable: true, readToken: 'only-token' },
    });
  });

  it('per area: no token / wrong token → 401, read token reads but cannot write (403), write token writes', async () => {
    const none = await rawGet(s.url, '/shared/');
    assert.equal(none.status, 401);
    assert.equal(none.headers['www-authenticate'], 'Bearer realm="bitfog"');
    assert.equal((await rawGet(s.url, '/shared/', 'GET', ['Authorization: Bearer nope'])).status, 401);
    assert.equal((await rawGet(s.url, '/shared/', 'GET', ['Authorization: Bearer read-secret'])).status, 200);
    assert.equal((await rawGet(s.url, '/open/')).status, 200, 'areas without tokens stay open');

    await assert.rejects(HttpBackend.open(`${s.url}shared/`, { write: false, env: {} }), code('EAUTH'));
    await assert.rejects(HttpBackend.open(`${s.url}shared/`, { write: false, env: { BITFOG_HTTP_TOKEN: 'wrong' } }), code('EAUTH'));
    const reader = await HttpBackend.open(`${s.url}shared/`, { write: true, env: { BITFOG_HTTP_TOKEN: 'read-secret' } });
    await assert.rejects(writeText(reader, 'x.txt', 'x'), code('EAUTH'));
    const put = await rawGet(s.url, '/shared/x.txt', 'PUT', ['Authorization: Bearer read-secret', 'Content-Type: application/octet-stream', 'Content-Length: 0']);
    assert.equal(put.status, 403);
    await reader.close();

    const tokenFile = path.join(await tempDir('http-token'), 'token');
    await writeFile(tokenFile, 'write-secret\n');
    const writer = await HttpBackend.open(`${s.url}shared/`, { write: true, env: { BITFOG_HTTP_TOKEN_FILE: tokenFile } });
    await writeText(writer, 'x.txt', 'written');
    assert.equal(await readFile(path.join(s.dirs.shared!, 'x.txt'), 'utf8'), 'written');
    await writer.close();
    // An area with one token uses it for both.
    assert.equal((await rawGet(s.url, '/single/y', 'PUT', ['Authorization: Bearer only-token', 'Content-Type: application/octet-stream', 'Content-Length: 0'])).status, 204);
  });

  it('a write the token may not make is reported with the user\'s file name, not its temporary one', async () => {
    const dir = await tempDir('http-auth-names');
    const own = await startServer({ area: { writable: true, readToken: 'reads', writeToken: 'writes' } });
    const a = path.join(dir, 'site a');
    await mkdir(a);
    await writeFile(path.join(a, 'q #1.txt'), 'q');
    const spool = path.join(dir, 'spool');
    const env = { BITFOG_CACHE_DIR: path.join(dir, 'cache'), BITFOG_HTTP_TOKEN: 'reads' };
    await bitfogOk(['fetch', a, spool], { env });
    const r = await bitfog(['store', spool, `${own.url}area/`], { env });
    assert.notEqual(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout + r.stderr, /cannot write "q #1\.txt"/);
    assert.doesNotMatch(r.stdout + r.stderr, /\.bitfog-tmp-/);
  });

  it('global token: everything needs it, and it grants everything', async () => {
    const g = await startServer({ a: { writable: true }, b: { readToken: 'area-token' } }, { token: 'global-token' });
    assert.equal((await rawGet(g.url, '/')).status, 401);
    assert.equal((await rawGet(g.url, '/a/')).status, 401);
    assert.equal((await rawGet(g.url, '/', 'GET', ['Authorization: Bearer global-token'])).status, 200);
    assert.equal((await rawGet(g.url, '/b/', 'GET', ['Authorization: Bearer global-token'])).status, 200);
    assert.equal((await rawGet(g.url, '/b/', 'GET', ['Authorization: Bearer area-token'])).status, 200);
    const b = await HttpBackend.open(`${g.url}a/`, { write: true, env: { BITFOG_HTTP_TOKEN: 'global-token' } });
    await writeText(b, 'f', 'g');
    await b.close();
    // The token never appears in what the client shows.
    const shown = await HttpBackend.open(`${g.url}a/`, { write: false, env: { BITFOG_HTTP_TOKEN: 'global-token' } });
    assert.ok(!shown.url.includes('global-token'));
    await shown.close();
    assert.ok(!g.log.join('\n').includes('global-token'), 'tokens are never logged');
  });

  it('reads area tokens from files and environment variables in bitfog.json', async () => {
    const dir = await tempDir('http-token-conf');
    await writeFile(path.join(dir, 'r.token'), '  from-file\n');
    const areas = parseConfig(
      { x: { path: 'x', readTokenFile: 'r.token', writeTokenEnv: 'X_WRITE' } },
      dir,
      { X_WRITE: 'from-env' },
    );
    assert.equal(areas.get('x')!.readToken, 'from-file');
    assert.equal(areas.get('x')!.writeToken, 'from-env');
    assert.equal(areas.get('x')!.url, path.join(dir, 'x'));
    assert.throws(() => parseConfig({ x: { path: 'x', writeTokenEnv: 'UNSET' } }, dir, {}), /UNSET is empty or unset/);
  });
});

describe('TLS', () => {
  it('serves HTTPS with a self-signed certificate that the client trusts only when told to', async () => {
    const dir = await tempDir('http-tls');
    const cert = path.join(dir, 'cert.pem');
    const key = path.join(dir, 'key.pem');
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', key, '-out', cert,
    ], { stdio: 'ignore' });
    const s = await startServer({ secure: { writable: true, checksum: true } }, { tls: { cert: await readFile(cert), key: await readFile(key) } });
    assert.match(s.url, /^https:\/\/127\.0\.0\.1:\d+\/$/);
    await assert.rejects(HttpBackend.open(`${s.url}secure/`, { write: true, env: {} }), code('EHOSTKEY'));
    const b = await HttpBackend.open(`${s.url}secure/`, { write: true, env: { BITFOG_HTTP_CA_FILE: cert } });
    await writeText(b, 'over tls.txt', 'encrypted');
    const chunks: Buffer[] = [];
    for await (const c of await b.read(toRelPath('over tls.txt'))) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'encrypted');
    const listed = [];
    for await (const e of b.list()) listed.push(e);
    assert.equal(listed[0]?.hash?.startsWith('sha256:'), true);
    await b.close();
    // Plain HTTP to the TLS port gets no answer from the area.
    const plain = await rawGet(s.url.replace('https:', 'http:'), '/secure/').catch(() => undefined);
    assert.ok(!plain || plain.status !== 200);
    // And https:// to a plain server says what is wrong, not only EPROTO.
    const open = await startServer({ open: {} });
    await assert.rejects(
      HttpBackend.open(`${open.url.replace('http:', 'https:')}open/`, { write: false, env: { BITFOG_HTTP_RETRIES: '0' } }),
      (e: unknown) => isBitfogError(e, 'EUNREACHABLE') && /TLS handshake failed .*is this really an https server\?/.test((e as Error).message),
    );
  });
});
