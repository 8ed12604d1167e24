/**
 * The client backend against a server that speaks only the classic protocol (our server
 * in `classic` mode: no SHA-256 in listings, no ranges, no extension requests), and its
 * resumption of an interrupted download through a connection that breaks mid-transfer.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile, readlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { HttpBackend } from '../src/backends/http/client.ts';
import { isBitfogError } from '../src/core/errors.ts';
import { toRelPath } from '../src/core/paths.ts';
import type { Entry } from '../src/core/types.ts';
import { startServer, type TestServer } from './helpers/http.ts';
import { makeTree, pseudoRandom } from './helpers/tree.ts';

const code = (c: string) => (e: unknown) => isBitfogError(e) && e.code === c;
const p = toRelPath;

async function listAll(b: HttpBackend): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  for await (const e of b.list()) out.set(e.path, e);
  return out;
}

/** The file through readPieces: its bytes, and how many distinct buffers the pieces were handed in. */
async function readPieces(b: HttpBackend, rel: string): Promise<{ bytes: Buffer; pieces: number; memories: number }> {
  const copies: Buffer[] = [];
  const memories = new Set<ArrayBufferLike>();
  const n = await b.readPieces(p(rel), async (piece) => {
    copies.push(Buffer.from(piece));
    memories.add(piece.buffer);
  });
  const bytes = Buffer.concat(copies);
  assert.equal(n, bytes.length, 'readPieces counts what it handed');
  return { bytes, pieces: copies.length, memories: memories.size };
}

async function readAll(b: HttpBackend, rel: string, range?: { start: number; end: number }): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of await b.read(p(rel), range)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('client against a classic server', () => {
  let s: TestServer;
  before(async () => {
    s = await startServer(
      { src: { checksum: true }, plain: {}, dest: { writable: true } },
      { classic: true },
    );
    await makeTree(s.dirs.src!, { 'check.txt': '123456789', 'sub/deeper/deep.txt': 'deep\n', 'empty.txt': '', link: { symlink: 'check.txt' } });
    await makeTree(s.dirs.plain!, { 'a.txt': 'aaa' });
  });

  it('falls back to classic capabilities', async () => {
    const b = await HttpBackend.open(`${s.url}src/`, { write: false, env: {} });
    assert.equal(b.extended, false);
    const c = b.capabilities;
    assert.deepEqual(
      [c.atomicRename, c.atomicWrite, c.rangedReads, c.serverSideHashes, c.modes, c.mtimePrecisionMs],
      [false, false, false, false, false, 0],
    );
    await b.close();
  });

  it('identifies content by size + exact CRC-64 (never rounded), or size + mtime without checksum', async () => {
    const b = await HttpBackend.open(`${s.url}src/`, { write: false, env: {} });
    const entries = await listAll(b);
    const check = entries.get('check.txt')!;
    assert.equal(check.version, 'crc64:13333283586479230977:9');
    assert.equal(check.hash, undefined, 'no SHA-256 from a classic server');
    assert.equal(entries.get('sub')?.kind, 'directory');
    assert.equal(entries.get('sub/deeper')?.kind, 'directory');
    assert.equal(entries.get('link')?.kind, 'symlink');
    assert.equal(entries.get('link')?.linkTarget, 'check.txt');
    assert.equal(entries.get('empty.txt')?.size, 0);
    await b.close();
    const plain = await HttpBackend.open(`${s.url}plain/`, { write: false, env: {} });
    const a = (await listAll(plain)).get('a.txt')!;
    assert.match(a.version!, /^size:3:\d+$/);
    assert.equal(typeof a.changedAtMs, 'number');
    await plain.close();
  });

  it('verifies downloads against the listed CRC-64', async () => {
    const b = await HttpBackend.open(`${s.url}src/`, { write: false, env: {} });
    await listAll(b);
    assert.equal((await readAll(b, 'check.txt')).toString(), '123456789');
    // Same size, other bytes: the CRC of the listing no longer matches what arrives.
    await writeFile(path.join(s.dirs.src!, 'check.txt'), '123456780');
    await assert.rejects(readAll(b, 'check.txt'), code('EINTEGRITY'));
    await assert.rejects(readAll(b, 'check.txt', { start: 1, end: 3 }), code('EOPNOTSUPP'));
    await assert.rejects(readPieces(b, 'check.txt'), code('EINTEGRITY'), 'read in pieces: checked the same way');
    await writeFile(path.join(s.dirs.src!, 'check.txt'), '123456789');
    assert.equal((await readPieces(b, 'check.txt')).bytes.toString(), '123456789');
    await b.close();
  });

  it('writes with classic requests only: PUT, symlink PUT, DELETE; no rename', async () => {
    const before_ = s.log.length;
    const b = await HttpBackend.open(`${s.url}dest/`, { write: true, env: {} });
    await b.write(p('dir/new #1.txt'), Readable.from([Buffer.from('new')]), { size: 3, mode: 0o600 });
    await b.symlink(p('dir/link'), '../x');
    assert.equal(await readFile(path.join(s.dirs.dest!, 'dir/new #1.txt'), 'utf8'), 'new');
    assert.equal(await readlink(path.join(s.dirs.dest!, 'dir/link')), '../x');
    assert.equal((await b.stat(p('dir/new #1.txt'))).size, 3);
    assert.equal((await b.stat(p('dir'))).kind, 'directory');
    assert.equal(await b.readlink(p('dir/link')), '../x');
    await b.setMetadata(p('dir/new #1.txt'), { mode: 0o600 }); // silently not kept
    await assert.rejects(b.rename(p('dir/new #1.txt'), p('moved')), code('EOPNOTSUPP'));
    await b.remove(p('dir/link'));
    await assert.rejects(b.remove(p('dir/link')), code('ENOENT'));
    await assert.rejects(b.stat(p('nothing')), code('ENOENT'));
    await b.close();
    const requests = s.log.slice(before_).filter((l) => /^\S+ [A-Z]+ /.test(l)).map((l) => l.split(' ').slice(1, 3).join(' '));
    for (const r of requests) {
      assert.match(r, /^(GET \/|GET \/\.bitfog\/info\?area=dest|GET \/dest\/\S*|PUT \/dest\/\S+|DELETE \/dest\/\S+)$/, r);
      if (!r.startsWith('GET /.bitfog/')) assert.ok(!r.includes('?'), `no extension query: ${r}`);
    }
  });

  it('refuses an unknown area and a read-only area for writing', async () => {
    await assert.rejects(HttpBackend.open(`${s.url}nope/`, { write: false, env: {} }), code('ENOENT'));
    const ours = await startServer({ ro: {} });
    await assert.rejects(HttpBackend.open(`${ours.url}ro/`, { write: true, env: {} }), code('EROFS'));
    await assert.rejects(HttpBackend.open(`${ours.url}ro/sub/`, { write: false, env: {} }), code('EBADURL'));
    // A query or fragment would be dropped by the URL parser: refused rather than ignored.
    await assert.rejects(HttpBackend.open(`${ours.url}ro/#2`, { write: false, env: {} }), code('EBADURL'));
    await assert.rejects(HttpBackend.open(`${ours.url}ro/?x=1`, { write: false, env: {} }), code('EBADURL'));
    await assert.rejects(HttpBackend.open('http://127.0.0.1:1/x/', { write: false, env: { BITFOG_HTTP_RETRIES: '0' } }), code('EUNREACHABLE'));
  });
});

describe('client resumption', () => {
  let s: TestServer;
  let proxy: net.Server;
  let proxyUrl: string;
  let cuts = 0;
  const big = pseudoRandom(8 * 1024 * 1024 + 3, 11);

  before(async () => {
    s = await startServer({ area: { checksum: true } });
    await writeFile(path.join(s.dirs.area!, 'big.bin'), big);
    const { port } = new URL(s.url);
    // A real network fault between client and server: the first connection that has
    // carried 3 MiB is cut in both directions.
    proxy = net.createServer((client) => {
      const upstream = net.connect(Number(port), '127.0.0.1');
      let carried = 0;
      upstream.on('data', (d) => {
        carried += d.length;
        if (cuts === 0 && carried > 3 * 1024 * 1024) {
          cuts++;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(d);
      });
      client.on('data', (d) => upstream.write(d));
      client.on('error', () => upstream.destroy());
      upstream.on('error', () => client.destroy());
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    proxyUrl = `http://127.0.0.1:${(proxy.address() as net.AddressInfo).port}/`;
  });
  after(() => proxy.close());

  it('resumes an interrupted download with Range and verifies the whole file', async () => {
    const b = await HttpBackend.open(`${proxyUrl}area/`, { write: false, env: {} });
    const got = await readAll(b, 'big.bin');
    assert.equal(cuts, 1, 'the connection was cut once');
    assert.equal(createHash('sha256').update(got).digest('hex'), createHash('sha256').update(big).digest('hex'));
    assert.ok(s.log.some((l) => / GET \/area\/big\.bin 206 /.test(l)), 'the rest came as a 206');
    await b.close();
  });

  it('resumes an interrupted read in pieces after the last byte it handed', async () => {
    cuts = 0;
    const before206 = s.log.filter((l) => / GET \/area\/big\.bin 206 /.test(l)).length;
    const b = await HttpBackend.open(`${proxyUrl}area/`, { write: false, env: {} });
    const got = await readPieces(b, 'big.bin');
    assert.equal(cuts, 1, 'the connection was cut once');
    assert.equal(got.bytes.length, big.length, 'no byte twice, none missing');
    assert.equal(createHash('sha256').update(got.bytes).digest('hex'), createHash('sha256').update(big).digest('hex'));
    assert.equal(s.log.filter((l) => / GET \/area\/big\.bin 206 /.test(l)).length, before206 + 1, 'the rest came as a 206');
    // 8 MiB through a few reused blocks (the point of readPieces), not a buffer per chunk.
    assert.ok(got.pieces >= 8 && got.memories <= 8, `${got.pieces} pieces in ${got.memories} buffers`);
    await b.close();
  });
});

describe('reads in pieces from a server that sends chunked bodies and keeps connections', () => {
  // An HTTP/1.1 server of another kind than ours: bodies in chunks of every size (each
  // with its own size line for the client to cut out), and errors on kept connections.
  const content = pseudoRandom(3 * 1024 * 1024 + 5, 23);
  let server: http.Server;
  let url: string;
  const connections = new Set<net.Socket>();
  let requests = 0;

  before(async () => {
    server = http.createServer(async (req, res) => {
      requests++;
      if (req.url === '/') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('["area"]'); // the classic index
        return;
      }
      if (req.url !== '/area/chunked%20%231.bin') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such file\n');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      let at = 0;
      for (let i = 0; at < content.length; i++) {
        const n = Math.min(content.length - at, 1 + ((i * 7919) % 70_000));
        if (!res.write(content.subarray(at, at + n))) await once(res, 'drain');
        at += n;
      }
      res.end();
    });
    server.on('connection', (c) => connections.add(c));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/area/`;
  });
  after(() => new Promise<void>((r) => server.close(() => r())).finally(() => connections.forEach((c) => c.destroy())));

  // A connection given back in the wrong state makes the next read wait forever: fail instead.
  it('cuts the chunk sizes out, and goes on after errors on kept connections', { timeout: 60_000 }, async () => {
    const b = await HttpBackend.open(url, { write: false, env: {} });
    assert.equal(b.extended, false, 'a server that is not ours: classic requests only');
    for (let round = 0; round < 2; round++) {
      const got = await readPieces(b, 'chunked #1.bin');
      assert.equal(got.bytes.length, content.length, `round ${round}: every byte, no chunk size among them`);
      assert.ok(got.bytes.equals(content), `round ${round}: the same bytes`);
      assert.ok(got.memories <= 8, `round ${round}: ${got.pieces} pieces in ${got.memories} buffers`);
      // A 404 on a kept connection: an error, and the next read still works.
      await assert.rejects(readPieces(b, 'missing'), code('ENOENT'));
    }
    const before_ = requests;
    await readPieces(b, 'chunked #1.bin');
    assert.equal(requests, before_ + 1, 'one request per read');
    await b.close();
  });
});

describe('client errors on upload', () => {
  it('reports the server refusing a large upload midway with the server\'s reason', async () => {
    const s = await startServer({ ro: {} });
    const { HttpBackend: B } = await import('../src/backends/http/client.ts');
    // Open for reading (the area is read-only), then try to write anyway: the server
    // answers 405 while the body is still being sent.
    const b = await B.open(`${s.url}ro/`, { write: false, env: {} });
    const size = 64 * 1024 * 1024;
    const chunk = Buffer.alloc(1 << 20);
    const body = Readable.from((function* () {
      for (let i = 0; i < 64; i++) yield chunk;
    })());
    await assert.rejects(b.write(p('big'), body, { size }), code('EROFS'));
    await b.close();
  });
});

describe('full spool cycle against a classic server', () => {
  for (const checksum of [true, false]) {
    it(`carries a tree into a classic area (checksum ${checksum}) and back out`, async () => {
      const { runCycleThrough } = await import('../src/conformance/cycle.ts');
      const { AWKWARD_NAMES } = await import('../src/conformance/index.ts');
      const { createDefaultRegistry } = await import('../src/backends/index.ts');
      const { tempDir } = await import('./helpers/tmp.ts');
      const s = await startServer({ dest: { writable: true, checksum } }, { classic: true });
      await runCycleThrough({ work: await tempDir('http-classic-cycle'), registry: createDefaultRegistry(), backendUrl: `${s.url}dest/`, names: AWKWARD_NAMES });
      assert.ok(!s.log.some((l) => / (POST|HEAD) /.test(l)), 'only classic requests');
    });
  }
});
