/**
 * Hostile requests: path and header attacks against a writable area configured the way
 * the classic server got wrong (no trailing slash, a sibling directory sharing its
 * prefix, symlinks inside pointing out). After every request, canary trees outside the
 * area must be exactly as they were — nothing read out of them, nothing written, nothing
 * added — and no answer may contain a canary's content or a server path.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, readlink, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { rawGet, rawRequest, startServer, type RawResponse, type TestServer } from './helpers/http.ts';

const SECRET = 'TOP SECRET canary';

interface Attack {
  name: string;
  method?: string;
  path: string;
  headers?: string[];
  body?: string | Buffer;
  /** Expected status class; default: any 4xx/5xx. */
  expect?: number | 'error';
}

async function snapshot(dir: string): Promise<string> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const name of (await readdir(d)).sort()) {
      const p = path.join(d, name);
      const st = await lstat(p);
      const rel = path.relative(dir, p);
      if (st.isDirectory()) {
        out.push(`d ${rel} ${st.mode.toString(8)}`);
        await walk(p);
      } else if (st.isSymbolicLink()) out.push(`l ${rel} -> ${await readlink(p)}`);
      else out.push(`f ${rel} ${st.mode.toString(8)} ${st.mtimeMs} ${(await readFile(p)).toString('base64')}`);
    }
  };
  await walk(dir);
  return out.join('\n');
}

describe('hostile requests', () => {
  let s: TestServer;
  let area: string;
  let outside: string;
  let sibling: string;
  let before_: { outside: string; sibling: string };

  before(async () => {
    const base = (await import('./helpers/tmp.ts')).tempDir;
    const root = await base('http-hostile');
    area = path.join(root, 'data');
    sibling = path.join(root, 'data-sibling');
    outside = path.join(root, 'outside');
    await mkdir(path.join(area, 'sub'), { recursive: true });
    await mkdir(sibling);
    await mkdir(outside);
    await writeFile(path.join(outside, 'secret.txt'), SECRET);
    await writeFile(path.join(sibling, 'x.txt'), SECRET + ' (sibling)');
    await writeFile(path.join(area, 'hello.txt'), 'hello\n');
    await writeFile(path.join(area, 'sub', 'inner.txt'), 'inner\n');
    await symlink(outside, path.join(area, 'escape-dir'));
    await symlink('../outside', path.join(area, 'escape-rel'));
    await symlink(path.join(outside, 'secret.txt'), path.join(area, 'escape-file'));
    execFileSync('mkfifo', [path.join(area, 'fifo')]);
    // No trailing slash: the classic server's prefix check let `data-sibling` through.
    s = await startServer({ rw: { path: area, writable: true, checksum: true }, ro: { path: area, checksum: true } });
    before_ = { outside: await snapshot(outside), sibling: await snapshot(sibling) };
  });

  const sig = () => execFileSync('rdiff', ['signature', '-', '-'], { input: 'hello\n' });
  const abs = () => outside; // resolved after before()

  const attacks = (): Attack[] => [
    { name: 'dot-dot', path: '/rw/../outside/secret.txt' },
    { name: 'dot-dot twice', path: '/rw/../../outside/secret.txt' },
    { name: 'encoded dot-dot', path: '/rw/%2e%2e/%2e%2e/outside/secret.txt' },
    { name: 'upper-case encoded dots and slashes', path: '/rw/%2E%2E%2F%2E%2E%2Foutside%2Fsecret.txt' },
    { name: 'dots with encoded slashes', path: '/rw/..%2f..%2foutside%2fsecret.txt' },
    { name: 'double-encoded dot-dot', path: '/rw/%252e%252e/%252e%252e/outside/secret.txt' },
    { name: 'double-encoded everything', path: '/rw/%252e%252e%252f%252e%252e%252foutside%252fsecret.txt' },
    { name: 'dot-dot as the area', path: '/../outside/secret.txt' },
    { name: 'encoded dot-dot as the area', path: '/%2e%2e/outside/secret.txt' },
    { name: 'prefix sibling (no trailing slash in config)', path: '/rw/../data-sibling/x.txt' },
    { name: 'encoded prefix sibling', path: '/rw/%2e%2e%2fdata-sibling%2fx.txt' },
    { name: 'absolute path after the area', path: `/rw/${abs()}/secret.txt` },
    { name: 'double slash absolute', path: '/rw//etc/passwd' },
    { name: 'encoded absolute', path: '/rw/%2fetc%2fpasswd' },
    { name: 'symlinked directory (absolute target)', path: '/rw/escape-dir/secret.txt' },
    { name: 'symlinked directory (relative target)', path: '/rw/escape-rel/secret.txt' },
    { name: 'symlink to a file outside', path: '/rw/escape-file' },
    { name: 'symlinked directory with encoded slash', path: '/rw/escape-dir%2fsecret.txt' },
    { name: 'listing through a symlinked directory', path: '/rw/escape-dir/' },
    { name: 'raw backslashes', path: '/rw/..\\..\\outside\\secret.txt' },
    { name: 'encoded backslashes', path: '/rw/..%5c..%5coutside%5csecret.txt' },
    { name: 'NUL byte', path: '/rw/hello.txt%00.png' },
    { name: 'NUL then dot-dot', path: '/rw/x%00/../../outside/secret.txt' },
    { name: 'single dot', path: '/rw/.' },
    { name: 'dot-dot alone', path: '/rw/..' },
    { name: 'dot then dot-dot', path: '/rw/./../outside/secret.txt' },
    { name: 'overlong UTF-8 dots', path: '/rw/%c0%ae%c0%ae/outside/secret.txt' },
    { name: 'overlong UTF-8 slash', path: '/rw/..%c0%af..%c0%afoutside%c0%afsecret.txt' },
    { name: 'IIS %u encoding', path: '/rw/%u002e%u002e/outside/secret.txt' },
    { name: 'fullwidth dots are just a name', path: '/rw/%EF%BC%8E%EF%BC%8E/outside/secret.txt' },
    { name: 'absolute-form request target', path: 'http://127.0.0.1/rw/../outside/secret.txt' },
    { name: 'rdiff signature through a symlinked directory', path: '/rw/escape-dir/secret.txt?rdiff=sig' },
    { name: 'rdiff signature of a link out', path: '/rw/escape-file?rdiff=sig' },
    { name: 'rdiff delta of a link out', method: 'PATCH', path: '/rw/escape-file?rdiff=delta', headers: ['Content-Type: application/octet-stream'], body: sig() },
    { name: 'stat through a symlinked directory', path: '/rw/escape-dir/secret.txt?stat' },
    { name: 'PUT with dot-dot', method: 'PUT', path: '/rw/../outside/new.txt', headers: ['Content-Type: application/octet-stream'], body: 'pwn' },
    { name: 'PUT through a symlinked directory', method: 'PUT', path: '/rw/escape-dir/pwn.txt', headers: ['Content-Type: application/octet-stream'], body: 'pwn' },
    { name: 'PUT over a canary through a symlinked directory', method: 'PUT', path: '/rw/escape-rel/secret.txt', headers: ['Content-Type: application/octet-stream'], body: 'pwn' },
    { name: 'PUT symlink with dot-dot', method: 'PUT', path: '/rw/../outside/lnk', headers: ['Content-Type: application/symlink'], body: '/etc' },
    { name: 'PUT into the sibling', method: 'PUT', path: '/rw/..%2fdata-sibling%2fpwn.txt', headers: ['Content-Type: application/octet-stream'], body: 'pwn' },
    { name: 'PATCH a canary through a symlinked directory', method: 'PATCH', path: '/rw/escape-dir/secret.txt?rdiff=patch', headers: ['Content-Type: application/octet-stream'], body: 'rs\x026\x00' },
    { name: 'DELETE through a symlinked directory', method: 'DELETE', path: '/rw/escape-dir/secret.txt' },
    { name: 'DELETE with dot-dot', method: 'DELETE', path: '/rw/%2e%2e/outside/secret.txt' },
    { name: 'rmdir of the symlinked directory target', method: 'DELETE', path: '/rw/escape-dir/?rmdir' },
    { name: 'rename out with dot-dot', method: 'POST', path: '/rw/hello.txt?rename=../outside/moved.txt' },
    { name: 'rename out with encoded dot-dot', method: 'POST', path: '/rw/hello.txt?rename=%2e%2e%2foutside%2fmoved.txt' },
    { name: 'rename into a symlinked directory', method: 'POST', path: '/rw/hello.txt?rename=escape-dir/moved.txt' },
    { name: 'rename a canary in through a symlinked directory', method: 'POST', path: '/rw/escape-dir/secret.txt?rename=stolen.txt' },
    { name: 'rename to an absolute path', method: 'POST', path: `/rw/hello.txt?rename=${encodeURIComponent(abs() + '/moved.txt')}` },
    { name: 'chmod a canary through a link', method: 'POST', path: '/rw/escape-file?meta', headers: ['X-Bitfog-Mode: 777', 'X-Bitfog-Mtime-Ns: 0'], expect: 204 },
    { name: 'chmod through a symlinked directory', method: 'POST', path: '/rw/escape-dir/secret.txt?meta', headers: ['X-Bitfog-Mode: 777'] },
    { name: 'write on the read-only view', method: 'PUT', path: '/ro/hello.txt', headers: ['Content-Type: application/octet-stream'], body: 'x', expect: 405 },
    { name: 'FIFO read does not block', path: '/rw/fifo' },
    { name: 'FIFO signature does not block', path: '/rw/fifo?rdiff=sig' },
    { name: 'bad mode header', method: 'PUT', path: '/rw/m.txt', headers: ['Content-Type: application/octet-stream', 'X-Bitfog-Mode: 77777'], body: 'x', expect: 400 },
    { name: 'bad mtime header', method: 'PUT', path: '/rw/m.txt', headers: ['Content-Type: application/octet-stream', 'X-Bitfog-Mtime-Ns: soon'], body: 'x', expect: 400 },
    { name: 'wrong SHA-256 header', method: 'PUT', path: '/rw/hello.txt', headers: ['Content-Type: application/octet-stream', `X-Bitfog-Sha256: ${'0'.repeat(64)}`], body: 'changed', expect: 400 },
    { name: 'negative Content-Length', method: 'PUT', path: '/rw/n.txt', headers: ['Content-Type: application/octet-stream', 'Content-Length: -1'], expect: 400 },
    { name: 'request smuggling: Content-Length and chunked', method: 'PUT', path: '/rw/n.txt', headers: ['Content-Type: application/octet-stream', 'Content-Length: 4', 'Transfer-Encoding: chunked'], body: '0\r\n\r\nGET /rw/../outside/secret.txt HTTP/1.1\r\n\r\n', expect: 400 },
    { name: 'oversized headers', path: '/rw/hello.txt', headers: [`X-Junk: ${'a'.repeat(64 * 1024)}`], expect: 431 },
    { name: 'oversized symlink target', method: 'PUT', path: '/rw/long-link', headers: ['Content-Type: application/symlink'], body: 'a'.repeat(5000), expect: 413 },
    { name: 'NUL in a symlink target', method: 'PUT', path: '/rw/nul-link', headers: ['Content-Type: application/symlink'], body: 'a\0b', expect: 400 },
    { name: 'multiple ranges are ignored, not merged', path: '/rw/hello.txt', headers: ['Range: bytes=0-1,-9999999999999'], expect: 200 },
    { name: 'invalid percent-encoding', path: '/rw/%zz' },
    { name: 'invalid UTF-8', path: '/rw/%ff%fe.txt' },
  ];

  it('has at least 40 attacks', () => {
    assert.ok(attacks().length >= 40, `${attacks().length} attacks`);
  });

  it('answers every attack without reading or writing outside the area', async () => {
    const failures: string[] = [];
    for (const a of attacks()) {
      const { host } = new URL(s.url);
      const body = a.body === undefined ? Buffer.alloc(0) : Buffer.from(a.body);
      const hasLength = (a.headers ?? []).some((h) => /^content-length:/i.test(h));
      const head = [
        `${a.method ?? 'GET'} ${a.path} HTTP/1.1`,
        `Host: ${host}`,
        ...(a.headers ?? []),
        ...(hasLength ? [] : [`Content-Length: ${body.length}`]),
        'Connection: close',
        '',
        '',
      ].join('\r\n');
      let r: RawResponse;
      try {
        r = await rawRequest(s.url, Buffer.concat([Buffer.from(head, 'latin1'), body]));
      } catch (e) {
        failures.push(`${a.name}: no answer (${(e as Error).message})`);
        continue;
      }
      const text = r.raw.toString("latin1");
      if (process.env.SHOW_ATTACKS) console.log(`${r.status} ${a.name}: ${r.body.toString().slice(0, 60).trim()}`);
      if (text.includes(SECRET)) failures.push(`${a.name}: answer contains the canary`);
      if (text.includes(path.dirname(area))) failures.push(`${a.name}: answer reveals a server path`);
      if (!r.status) failures.push(`${a.name}: connection closed without an answer`);
      else if (a.expect === undefined || a.expect === 'error') {
        if (r.status < 400) failures.push(`${a.name}: status ${r.status}`);
      } else if (r.status !== a.expect) failures.push(`${a.name}: status ${r.status}, expected ${a.expect}`);
      if ((await snapshot(outside)) !== before_.outside) failures.push(`${a.name}: the outside tree changed`);
      if ((await snapshot(sibling)) !== before_.sibling) failures.push(`${a.name}: the sibling tree changed`);
    }
    assert.deepEqual(failures, []);
  });

  it('never lets a symlink created by a client be followed', async () => {
    const { host } = new URL(s.url);
    const put = (p: string, type: string, body: string) =>
      rawRequest(s.url, `PUT ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
    // Creating links anywhere is allowed (a synced tree may hold them)...
    assert.equal((await put('/rw/evil-dir', 'application/symlink', outside)).status, 204);
    assert.equal((await put('/rw/evil-file', 'application/symlink', path.join(outside, 'secret.txt'))).status, 204);
    // ...but nothing passes through them.
    assert.ok((await put('/rw/evil-dir/pwn.txt', 'application/octet-stream', 'pwn')).status >= 400);
    assert.ok((await put('/rw/evil-dir/deeper/pwn.txt', 'application/octet-stream', 'pwn')).status >= 400);
    assert.ok((await rawGet(s.url, '/rw/evil-dir/secret.txt')).status >= 400);
    assert.ok((await rawGet(s.url, '/rw/evil-file')).status >= 400);
    // Writing to a link's name replaces the link, never its target.
    assert.equal((await put('/rw/evil-file', 'application/octet-stream', 'replaced')).status, 204);
    assert.equal(await readFile(path.join(area, 'evil-file'), 'utf8'), 'replaced');
    assert.equal((await put('/rw/escape-file', 'application/octet-stream', 'replaced too')).status, 204);
    assert.equal((await lstat(path.join(area, 'escape-file'))).isFile(), true);
    // Removing a link removes the link.
    assert.equal((await rawGet(s.url, '/rw/evil-dir', 'DELETE')).status, 204);
    assert.equal(await snapshot(outside), before_.outside);
    assert.equal(await snapshot(sibling), before_.sibling);
    const listing = (await rawGet(s.url, '/rw/')).body.toString();
    assert.ok(!listing.includes(SECRET));
  });
});
