/**
 * Wire compatibility with the classic bitfog server, built from the protocol
 * description's observed samples: the bytes a classic client reads and relies on.
 */
import assert from 'node:assert/strict';
import { appendFile, chmod, lutimes, mkdir, readFile, readlink, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { crc64 } from '../src/backends/http/crc64.ts';
import { goJsonString } from '../src/backends/http/wire.ts';
import { rawGet, rawRequest, startServer, type TestServer } from './helpers/http.ts';
import { tempDir } from './helpers/tmp.ts';

const PINNED = 1577934245; // 2020-01-02T03:04:05Z, the fixture time of the samples

/** The demo fixture of the protocol description (the parts whose bytes it shows). */
async function demoFixture(dir: string): Promise<void> {
  await mkdir(path.join(dir, 'sub/deeper'), { recursive: true });
  const files: Record<string, string> = {
    'check.txt': '123456789',
    'hello.txt': 'hello world\n',
    'empty.txt': '',
    'sub/deeper/deep.txt': 'deep!!\n',
  };
  for (const [p, c] of Object.entries(files)) await writeFile(path.join(dir, p), c);
  await chmod(path.join(dir, 'sub/deeper/deep.txt'), 0o755);
  for (const p of Object.keys(files)) await chmod(path.join(dir, p), p.endsWith('deep.txt') ? 0o755 : 0o644);
  await symlink('/nonexistent/target', path.join(dir, 'dangling-link'));
  await symlink('sub/deeper', path.join(dir, 'link-to-dir'));
  await symlink('hello.txt', path.join(dir, 'link-to-hello'));
  for (const p of [...Object.keys(files), 'dangling-link', 'link-to-dir', 'link-to-hello']) {
    await lutimes(path.join(dir, p), PINNED, PINNED);
  }
}

/** The classic listing lines for the fixture, verbatim from the protocol description. */
const SAMPLE_LINES = [
  '{"name":"check.txt","size":9,"mode":420,"mtime":1577934245,"hash":13333283586479230977}',
  '{"name":"dangling-link","size":19,"mode":134218239,"mtime":1577934245,"linkdest":"/nonexistent/target"}',
  '{"name":"empty.txt","size":0,"mode":420,"mtime":1577934245}',
  '{"name":"hello.txt","size":12,"mode":420,"mtime":1577934245,"hash":4965727935104997804}',
  '{"name":"link-to-dir","size":10,"mode":134218239,"mtime":1577934245,"linkdest":"sub/deeper"}',
  '{"name":"link-to-hello","size":9,"mode":134218239,"mtime":1577934245,"linkdest":"hello.txt"}',
];

function lines(body: Buffer): string[] {
  return body.toString('utf8').split('\n').filter(Boolean).sort();
}

describe('classic wire compatibility', () => {
  let classic: TestServer;
  let ours: TestServer;
  let src: string;

  before(async () => {
    src = path.join(await tempDir('http-compat'), 'src');
    await demoFixture(src);
    classic = await startServer(
      { src: { path: src, checksum: true }, dest: { writable: true }, plain: { path: src } },
      { classic: true },
    );
    ours = await startServer({ src: { path: src, checksum: true }, dest: { writable: true } });
  });

  it('computes CRC-64/GO-ISO: crc("123456789") = 13333283586479230977', () => {
    assert.equal(crc64(Buffer.from('123456789')), 13333283586479230977n);
    assert.equal(crc64(Buffer.from('hello world\n')), 4965727935104997804n);
    assert.equal(crc64(Buffer.alloc(0)), 0n);
  });

  it('GET / lists area names as a JSON array with a newline', async () => {
    const r = await rawGet(classic.url, '/');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    assert.deepEqual(JSON.parse(r.body.toString()).sort(), ['dest', 'plain', 'src']);
    assert.ok(r.body.toString().endsWith('\n'));
  });

  it('lists the sample fixture byte for byte (classic mode)', async () => {
    const r = await rawGet(classic.url, '/src/');
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/json');
    const got = lines(r.body);
    for (const want of SAMPLE_LINES) assert.ok(got.includes(want), `missing line ${want}\nin\n${got.join('\n')}`);
    const deep = got.find((l) => l.includes('deep.txt'))!;
    assert.equal(
      deep,
      `{"name":"sub/deeper/deep.txt","size":7,"mode":493,"mtime":1577934245,"hash":${crc64(Buffer.from('deep!!\n'))}}`,
    );
    // Directories are never listed.
    assert.ok(!got.some((l) => l.includes('"name":"sub"') || l.includes('"name":"sub/deeper"')));
    assert.equal(got.length, 7);
  });

  it('omits hash without checksum, and lists an empty area as an empty body', async () => {
    const r = await rawGet(classic.url, '/plain/');
    assert.ok(lines(r.body).includes('{"name":"hello.txt","size":12,"mode":420,"mtime":1577934245}'));
    const empty = await rawGet(classic.url, '/dest/');
    assert.equal(empty.status, 200);
    assert.equal(empty.body.length, 0);
  });

  it('adds sha256 and mtime_ns after the classic fields (extended mode)', async () => {
    const r = await rawGet(ours.url, '/src/');
    const got = lines(r.body);
    for (const want of SAMPLE_LINES) {
      const line = got.find((l) => l.startsWith(want.slice(0, -1)));
      assert.ok(line, `classic prefix of ${want} kept`);
      assert.match(line!.slice(want.length - 1), /^(,"sha256":"[0-9a-f]{64}")?,"mtime_ns":1577934245000000000}$/);
    }
    const check = got.find((l) => l.includes('check.txt'))!;
    assert.ok(check.includes('"sha256":"15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"'));
  });

  it('encodes modes as Go FileMode bits (0400, setuid 04755, setgid 02640)', async () => {
    const dir = await tempDir('http-modes');
    for (const [name, mode] of [
      ['ro', 0o400],
      ['suid', 0o4755],
      ['sgid', 0o2640],
      ['sticky', 0o1644],
    ] as const) {
      await writeFile(path.join(dir, name), 'x');
      await chmod(path.join(dir, name), mode);
    }
    const s = await startServer({ m: { path: dir } }, { classic: true });
    const byName = Object.fromEntries(lines((await rawGet(s.url, '/m/')).body).map((l) => [JSON.parse(l).name, JSON.parse(l).mode]));
    assert.deepEqual(byName, { ro: 256, suid: 8389101, sgid: 4194720, sticky: 1048576 + 0o644 });
  });

  it('escapes names the way Go encoding/json does', async () => {
    assert.equal(goJsonString('a&b <c>.txt'), '"a\\u0026b \\u003cc\\u003e.txt"');
    assert.equal(goJsonString('ls\u2028sep.txt'), '"ls\\u2028sep.txt"');
    assert.equal(goJsonString('new\nline.txt'), '"new\\nline.txt"');
    assert.equal(goJsonString('quote"back\\slash.txt'), '"quote\\"back\\\\slash.txt"');
    assert.equal(goJsonString('tab\there.txt'), '"tab\\there.txt"');
    assert.equal(goJsonString('bell\x07'), '"bell\\u0007"');
    const dir = await tempDir('http-escape');
    await writeFile(path.join(dir, 'a&b <c>.txt'), 'abcd');
    await utimes(path.join(dir, 'a&b <c>.txt'), 1795756353, 1795756353);
    const s = await startServer({ e: { path: dir } }, { classic: true });
    const body = (await rawGet(s.url, '/e/')).body.toString();
    assert.equal(body, '{"name":"a\\u0026b \\u003cc\\u003e.txt","size":4,"mode":420,"mtime":1795756353}\n');
  });

  it('lists regardless of method, and /area without a slash', async () => {
    for (const m of ['PUT', 'DELETE', 'POST']) {
      const r = await rawGet(classic.url, '/dest/', m, ['Content-Length: 0']);
      assert.equal(r.status, 200, m);
      assert.equal(r.headers['content-type'], 'application/json');
    }
    assert.equal((await rawGet(classic.url, '/src')).status, 200);
  });

  it('serves files, with the classic error statuses and bodies', async () => {
    const ok = await rawGet(classic.url, '/src/hello.txt');
    assert.equal(ok.status, 200);
    assert.equal(ok.headers['content-type'], 'application/octet-stream');
    assert.equal(ok.body.toString(), 'hello world\n');
    const cases: Array<[string, string, number, string]> = [
      ['GET', '/src/missing.txt', 400, 'Error getting file info.\n'],
      ['GET', '/src/link-to-hello', 400, 'Error getting file info.\n'],
      ['GET', '/src/sub', 400, "That's not a file.\n"],
      ['GET', '/nope/', 404, 'Path not found: nope\n'],
      ['GET', '/Src/', 404, 'Path not found: Src\n'],
      ['GET', '/src/hello.txt?rdiff=bogus', 400, 'Invalid rdiff param: bogus'],
      ['PATCH', '/src/hello.txt', 400, 'Invalid mode: '],
      ['POST', '/src/hello.txt', 405, "Can't POST here.\n"],
      ['PUT', '/src/hello.txt', 405, "Can't PUT here.\n"],
      ['DELETE', '/src/hello.txt', 405, "Can't DELETE here.\n"],
      ['GET', '/src/%2e%2e/%2e%2e/etc/passwd', 400, 'No\n'],
    ];
    for (const [method, p, status, body] of cases) {
      const r = await rawGet(classic.url, p, method, ['Content-Length: 0']);
      assert.equal(r.status, status, `${method} ${p}`);
      assert.equal(r.body.toString(), body, `${method} ${p}`);
    }
    const head = await rawGet(classic.url, '/src/hello.txt', 'HEAD');
    assert.equal(head.status, 405);
    assert.equal(head.headers['content-length'], '17');
    // `+` is not a space; a dot-dot that stays inside is no escape, but we refuse it anyway.
    assert.equal((await rawGet(classic.url, '/src/sub/../hello.txt')).status, 400);
  });

  it('serves the names a Go client escapes, and ones it cannot', async () => {
    const dir = await tempDir('http-names');
    const names = ['with space ünïcødé €.txt', '100%.txt', 'hash#tag.txt', 'q?x.txt', 'new\nline.txt', 'a+b.txt', "&+;=,@:!$'()*~[].txt"];
    for (const n of names) await writeFile(path.join(dir, n), n);
    const s = await startServer({ n: { path: dir } }, { classic: true });
    const goEscaped: Record<string, string> = {
      'with space ünïcødé €.txt': 'with%20space%20%C3%BCn%C3%AFc%C3%B8d%C3%A9%20%E2%82%AC.txt',
      '100%.txt': '100%25.txt',
      'hash#tag.txt': 'hash%23tag.txt',
      'q?x.txt': 'q%3Fx.txt',
      'new\nline.txt': 'new%0Aline.txt',
      'a+b.txt': 'a+b.txt',
      "&+;=,@:!$'()*~[].txt": "&+;=,@:!$'()*~[].txt",
    };
    for (const n of names) {
      const r = await rawGet(s.url, `/n/${goEscaped[n]}`);
      assert.equal(r.status, 200, n);
      assert.equal(r.body.toString(), n);
    }
  });

  it('accepts a chunked PUT exactly as the Go client sends it, and 0-byte ones', async () => {
    const { host } = new URL(classic.url);
    const put = (name: string, chunks: string[]) =>
      rawRequest(
        classic.url,
        [
          `PUT /dest/${name} HTTP/1.1`,
          `Host: ${host}`,
          'Transfer-Encoding: chunked',
          'Accept-Encoding: gzip',
          'Content-Type: application/octet-stream',
          'User-Agent: Go-http-client/1.1',
          'Connection: close',
          '',
          chunks.map((c) => `${Buffer.byteLength(c).toString(16)}\r\n${c}\r\n`).join('') + '0\r\n\r\n',
        ].join('\r\n'),
      );
    const r = await put('new/dir/put.txt', ['put ', 'body']);
    assert.equal(r.status, 204);
    assert.equal(r.body.length, 0);
    assert.equal(await readFile(path.join(classic.dirs.dest!, 'new/dir/put.txt'), 'utf8'), 'put body');
    assert.equal((await stat(path.join(classic.dirs.dest!, 'new/dir/put.txt'))).mode & 0o777, 0o644);
    assert.equal((await put('empty.txt', [])).status, 204);
    assert.equal((await stat(path.join(classic.dirs.dest!, 'empty.txt'))).size, 0);
    // Content-Length bodies too.
    const cl = await rawRequest(
      classic.url,
      `PUT /dest/cl.txt HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc`,
    );
    assert.equal(cl.status, 204);
    assert.equal(await readFile(path.join(classic.dirs.dest!, 'cl.txt'), 'utf8'), 'abc');
  });

  it('creates symlinks from application/symlink, replacing what was there', async () => {
    const { host } = new URL(classic.url);
    const put = (name: string, target: string) =>
      rawRequest(
        classic.url,
        `PUT /dest/${name} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${Buffer.byteLength(target)}\r\nContent-Type: application/symlink\r\nConnection: close\r\n\r\n${target}`,
      );
    assert.equal((await put('link-to-hello', 'hello.txt')).status, 204);
    assert.equal(await readlink(path.join(classic.dirs.dest!, 'link-to-hello')), 'hello.txt');
    assert.equal((await put('link-to-hello', '/nonexistent/target')).status, 204);
    assert.equal(await readlink(path.join(classic.dirs.dest!, 'link-to-hello')), '/nonexistent/target');
  });

  it('checks the PUT content type exactly', async () => {
    const { host } = new URL(classic.url);
    for (const type of ['text/plain', 'application/octet-stream; charset=binary', 'application/x-www-form-urlencoded']) {
      const r = await rawRequest(classic.url, `PUT /dest/t.txt HTTP/1.1\r\nHost: ${host}\r\nContent-Type: ${type}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`);
      assert.equal(r.status, 400);
      assert.equal(r.body.toString(), `invalid content type: ${type}\n`);
      assert.equal(r.headers['x-content-type-options'], 'nosniff');
    }
    const none = await rawRequest(classic.url, `PUT /dest/t.txt HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx`);
    assert.equal(none.body.toString(), 'invalid content type: \n');
  });

  it('DELETE answers 204, and a missing file never reveals the server path', async () => {
    await writeFile(path.join(classic.dirs.dest!, 'gone.txt'), 'x');
    assert.equal((await rawGet(classic.url, '/dest/gone.txt', 'DELETE')).status, 204);
    const again = await rawGet(classic.url, '/dest/gone.txt', 'DELETE');
    assert.ok(again.status >= 400);
    assert.ok(!again.raw.toString().includes(classic.root), 'no server path in the answer');
  });

  it('works over HTTP/1.0', async () => {
    const r = await rawRequest(classic.url, 'GET /src/check.txt HTTP/1.0\r\n\r\n');
    assert.match(r.statusLine, /^HTTP\/1\.[01] 200/);
    assert.equal(r.body.toString(), '123456789');
  });

  it('extended mode: Range, HEAD, ETag, Last-Modified, If-None-Match', async () => {
    const head = await rawGet(ours.url, '/src/check.txt', 'HEAD');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '9');
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['last-modified'], 'Thu, 02 Jan 2020 03:04:05 GMT');
    const etag = head.headers.etag!;
    assert.match(etag, /^"[^"]+"$/);
    const part = await rawGet(ours.url, '/src/check.txt', 'GET', ['Range: bytes=2-4']);
    assert.equal(part.status, 206);
    assert.equal(part.body.toString(), '345');
    assert.equal(part.headers['content-range'], 'bytes 2-4/9');
    assert.equal((await rawGet(ours.url, '/src/check.txt', 'GET', ['Range: bytes=-2'])).body.toString(), '89');
    assert.equal((await rawGet(ours.url, '/src/check.txt', 'GET', ['Range: bytes=9-'])).status, 416);
    assert.equal((await rawGet(ours.url, '/src/check.txt', 'GET', ['Range: bytes=1-2', 'If-Range: "other"'])).status, 200);
    assert.equal((await rawGet(ours.url, '/src/check.txt', 'GET', [`If-None-Match: ${etag}`])).status, 304);
    // The classic server ignores Range.
    const classicRange = await rawGet(classic.url, '/src/check.txt', 'GET', ['Range: bytes=2-4']);
    assert.equal(classicRange.status, 200);
    assert.equal(classicRange.body.toString(), '123456789');
  });
});

describe('large files are sent through reused buffers', () => {
  it('whole, ranged across buffer boundaries, to HEAD; a file that shrinks is cut, one that grows is sent as listed', async () => {
    const dir = await tempDir('http-send');
    const name = 'big file #1 ü.bin';
    const content = Buffer.alloc(5 * 1024 * 1024 + 77);
    for (let i = 0; i + 4 <= content.length; i += 4) content.writeUInt32LE(i, i);
    await writeFile(path.join(dir, name), content);
    const s = await startServer({ m: { path: dir } });
    const url = `/m/${encodeURIComponent(name)}`;

    const whole = await rawGet(s.url, url);
    assert.equal(whole.status, 200);
    assert.equal(whole.headers['content-length'], String(content.length));
    assert.ok(whole.body.equals(content), 'whole file byte for byte');
    const from = 512 * 1024 - 5;
    const to = 3 * 512 * 1024 + 9;
    const part = await rawGet(s.url, url, 'GET', [`Range: bytes=${from}-${to}`]);
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(content.subarray(from, to + 1)), 'a range across buffer boundaries');
    const head = await rawGet(s.url, url, 'HEAD');
    assert.equal(head.headers['content-length'], String(content.length));
    assert.equal(head.body.length, 0);
    // Ask for a file, then change it before the body is read: the listed length is what counts.
    await writeFile(path.join(dir, 'grows.bin'), content);
    await writeFile(path.join(dir, 'shrinks.bin'), content);
    const { request } = await import('node:http');
    const fetchWhileChanging = (file: string, change: () => Promise<void>) =>
      new Promise<{ status: number; body: Buffer; complete: boolean }>((resolve, reject) => {
        const req = request(`${s.url}m/${file}`, { agent: false }, (res) => {
          res.pause();
          change().then(() => {
            const parts: Buffer[] = [];
            res.on('data', (d: Buffer) => parts.push(d));
            res.on('end', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), complete: res.complete }));
            res.on('error', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), complete: false }));
            res.on('aborted', () => resolve({ status: res.statusCode!, body: Buffer.concat(parts), complete: false }));
            res.resume();
          }, reject);
        });
        req.on('error', reject);
        req.end();
      });
    const g = await fetchWhileChanging('grows.bin', () => appendFile(path.join(dir, 'grows.bin'), 'more'));
    assert.equal(g.body.length, content.length, 'a grown file is sent at its listed length');
    assert.ok(g.complete);
    assert.ok(g.body.equals(content));
    const k = await fetchWhileChanging('shrinks.bin', () => writeFile(path.join(dir, 'shrinks.bin'), content.subarray(0, 1000)));
    assert.equal(k.complete, false, 'a shrunk file cuts the connection');
    assert.ok(k.body.length < content.length);
  });

  it('responses sent at once, some read slowly and some cut off, each carry their own file', async () => {
    // Send buffers go back to a pool shared by all responses once written: one handed back
    // while still being sent would show up in another file.
    const dir = await tempDir('http-send-many');
    const files = Array.from({ length: 6 }, (_, i) => {
      const content = Buffer.alloc(3 * 1024 * 1024 + i * 4099);
      for (let at = 0; at + 4 <= content.length; at += 4) content.writeUInt32LE((i << 28) ^ at, at);
      return { name: `file ${i} #?.bin`, content };
    });
    for (const f of files) await writeFile(path.join(dir, f.name), f.content);
    const s = await startServer({ m: { path: dir } });
    const { request } = await import('node:http');
    const get = (name: string, how: 'fast' | 'slow' | 'cut') =>
      new Promise<Buffer | undefined>((resolve, reject) => {
        const req = request(`${s.url}m/${encodeURIComponent(name)}`, { agent: false }, (res) => {
          const parts: Buffer[] = [];
          let got = 0;
          res.on('data', (d: Buffer) => {
            parts.push(d);
            got += d.length;
            if (how === 'cut' && got > 700 * 1024) req.destroy();
            if (how === 'slow') {
              res.pause();
              setTimeout(() => res.resume(), 2);
            }
          });
          res.on('end', () => resolve(Buffer.concat(parts)));
          res.on('close', () => resolve(undefined));
        });
        req.on('error', (e) => (how === 'cut' ? resolve(undefined) : reject(e)));
        req.end();
      });
    for (let round = 0; round < 2; round++) {
      const results = await Promise.all([
        ...files.map((f, i) => get(f.name, i % 2 === 0 ? 'fast' : 'slow')),
        ...files.slice(0, 3).map((f) => get(f.name, 'cut')),
      ]);
      files.forEach((f, i) => assert.ok(results[i]?.equals(f.content), `round ${round}: ${f.name} byte for byte`));
    }
  });
});

describe('failures the classic server handled badly', () => {
  it('an area directory that vanished gets an error status, not a dropped connection', async () => {
    const dir = path.join(await tempDir('http-vanish'), 'area');
    await mkdir(dir);
    const s = await startServer({ gone: { path: dir } });
    const { rm } = await import('node:fs/promises');
    await rm(dir, { recursive: true });
    const r = await rawGet(s.url, '/gone/');
    assert.ok(r.status >= 400, `status ${r.status}`);
    assert.ok(!r.raw.toString().includes(dir), 'no server path in the answer');
  });

  it('a failed rdiff is an error status, not a 200 with an empty body', async () => {
    const s = await startServer({ ro: {} });
    await writeFile(path.join(s.dirs.ro!, 'f'), 'x');
    const { host } = new URL(s.url);
    const r = await rawRequest(s.url, `PATCH /ro/f?rdiff=delta HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: 7\r\nConnection: close\r\n\r\ngarbage`);
    assert.ok(r.status >= 400);
  });
});

describe('areas are backends', () => {
  it('serves an area given as a URL of another backend (file:// and another bitfog server)', async () => {
    const dir = path.join(await tempDir('http-url-area'), 'origin');
    await mkdir(path.join(dir, 'sub'), { recursive: true });
    await writeFile(path.join(dir, 'sub', 'x #1.txt'), '123456789');
    const origin = await startServer({ origin: { path: dir, checksum: true } });
    const { pathToFileURL } = await import('node:url');
    const proxy = await startServer(
      { viaFile: { path: pathToFileURL(dir).href, checksum: true }, viaHttp: { path: `${origin.url}origin/`, checksum: true } },
      { cacheDir: false },
    );
    for (const area of ['viaFile', 'viaHttp']) {
      const listing = (await rawGet(proxy.url, `/${area}/`)).body.toString();
      assert.match(listing, /^\{"name":"sub\/x #1.txt","size":9,"mode":420,"mtime":\d+,"hash":13333283586479230977,/, area);
      assert.equal((await rawGet(proxy.url, `/${area}/sub/x%20%231.txt`)).body.toString(), '123456789', area);
    }
  });
});

describe('hash cache', () => {
  it('does not re-read an unchanged area, across restarts, and keeps the cache outside the area', async () => {
    const dir = path.join(await tempDir('http-cache'), 'area');
    await mkdir(path.join(dir, 'd'), { recursive: true });
    for (let i = 0; i < 20; i++) await writeFile(path.join(dir, 'd', `f${i}`), `content ${i}\n`);
    // Hashes of entries changed within the racy window are not trusted; let them age.
    await new Promise((r) => setTimeout(r, 2100));
    const cacheDir = path.join(await tempDir('http-cache-dir'), 'cache');
    const a = await startServer({ area: { path: dir, checksum: true } }, { cacheDir });
    const first = (await rawGet(a.url, '/area/')).body.toString();
    assert.equal(a.server.stats.filesHashed, 20);
    const second = (await rawGet(a.url, '/area/')).body.toString();
    assert.equal(a.server.stats.filesHashed, 20, 'second listing reads nothing');
    assert.equal(lines(Buffer.from(second)).join('\n'), lines(Buffer.from(first)).join('\n'));
    await a.server.close();
    const b = await startServer({ area: { path: dir, checksum: true } }, { cacheDir });
    await rawGet(b.url, '/area/');
    assert.equal(b.server.stats.filesHashed, 0, 'a restarted server reuses the cache');
    // A changed file is hashed again.
    await writeFile(path.join(dir, 'd', 'f3'), 'changed!!\n');
    const third = lines((await rawGet(b.url, '/area/')).body);
    assert.equal(b.server.stats.filesHashed, 1);
    assert.ok(third.some((l) => l.includes(`"hash":${crc64(Buffer.from('changed!!\n'))}`)));
    const { readdir } = await import('node:fs/promises');
    assert.deepEqual((await readdir(dir)).sort(), ['d'], 'nothing added to the area');
  });
});
