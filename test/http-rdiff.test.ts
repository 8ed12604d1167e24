/**
 * rdiff interoperability: the server's `?rdiff=sig|delta|patch` speak librsync's file
 * format, so Debian's `rdiff` on the client side produces and applies them.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, stat, writeFile, chmod } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { before, describe, it } from 'node:test';
import { rawGet, rawRequest, startServer, type TestServer } from './helpers/http.ts';
import { tempDir } from './helpers/tmp.ts';
import { pseudoRandom } from './helpers/tree.ts';

function rdiff(...args: string[]): void {
  execFileSync('rdiff', args);
}

/** A delta, made with `rdiff` here, from what `url` serves at `file` (its signature) to `wanted`. */
async function deltaFromServer(url: string, file: string, wanted: Buffer, work: string): Promise<Buffer> {
  const sig = await rawGet(url, `${file}?rdiff=sig`);
  const [sigFile, wantedFile, deltaFile] = ['server.sig', 'wanted', 'to-wanted'].map((n) => path.join(work, n)) as [string, string, string];
  await writeFile(sigFile, sig.body);
  await writeFile(wantedFile, wanted);
  rdiff('--force', 'delta', sigFile, wantedFile, deltaFile);
  return readFile(deltaFile);
}

async function patchRequest(url: string, p: string, body: Buffer): Promise<{ status: number; body: Buffer }> {
  const { host } = new URL(url);
  const head = `PATCH ${p} HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  return rawRequest(url, Buffer.concat([Buffer.from(head), body]));
}

describe('rdiff interoperability', () => {
  let s: TestServer;
  let work: string;
  const old = Buffer.concat([pseudoRandom(300_000, 7), Buffer.from('the old tail\n')]);
  const edited = Buffer.concat([Buffer.from('a new head\n'), pseudoRandom(300_000, 7).subarray(1000), Buffer.from('a new tail\n')]);

  before(async () => {
    work = await tempDir('http-rdiff');
    s = await startServer({ rw: { writable: true }, ro: {} });
    await writeFile(path.join(s.dirs.rw!, 'file.bin'), old);
    await chmod(path.join(s.dirs.rw!, 'file.bin'), 0o640);
    await writeFile(path.join(s.dirs.ro!, 'hello.txt'), 'hello world\n');
  });

  it('GET ?rdiff=sig is byte for byte what `rdiff signature` makes locally', async () => {
    const r = await rawGet(s.url, '/rw/file.bin?rdiff=sig');
    assert.equal(r.status, 200);
    await writeFile(path.join(work, 'old'), old);
    rdiff('signature', path.join(work, 'old'), path.join(work, 'old.sig'));
    assert.deepEqual(r.body, await readFile(path.join(work, 'old.sig')));
    assert.equal(r.body.subarray(0, 4).toString('latin1'), 'rs\x01G');
    const small = await rawGet(s.url, '/ro/hello.txt?rdiff=sig');
    assert.equal(small.body.subarray(0, 12).toString('hex'), '72730147000001000000002'.padEnd(24, '0'));
  });

  it('PATCH ?rdiff=delta returns a delta that `rdiff patch` applies to the old copy', async () => {
    // The client holds `edited`; the server holds `old`: the delta turns edited into old.
    await writeFile(path.join(work, 'mine'), edited);
    rdiff('signature', path.join(work, 'mine'), path.join(work, 'mine.sig'));
    const r = await patchRequest(s.url, '/rw/file.bin?rdiff=delta', await readFile(path.join(work, 'mine.sig')));
    assert.equal(r.status, 200);
    assert.equal(r.body.subarray(0, 4).toString('latin1'), 'rs\x026');
    assert.ok(r.body.length < old.length / 2, 'the delta is smaller than the file');
    await writeFile(path.join(work, 'delta'), r.body);
    rdiff('patch', path.join(work, 'mine'), path.join(work, 'delta'), path.join(work, 'result'));
    assert.deepEqual(await readFile(path.join(work, 'result')), old);
  });

  it('PATCH ?rdiff=patch applies a client-made delta atomically, keeping the mode', async () => {
    const r = await patchRequest(s.url, '/rw/file.bin?rdiff=patch', await deltaFromServer(s.url, '/rw/file.bin', edited, work));
    assert.equal(r.status, 204);
    assert.deepEqual(await readFile(path.join(s.dirs.rw!, 'file.bin')), edited);
    assert.equal((await stat(path.join(s.dirs.rw!, 'file.bin'))).mode & 0o777, 0o640);
  });

  it('refuses patches on read-only areas, bad deltas, missing files, bad modes', async () => {
    const delta = Buffer.from('7273023600', 'hex');
    assert.equal((await patchRequest(s.url, '/ro/hello.txt?rdiff=patch', delta)).status, 405);
    const bad = await patchRequest(s.url, '/rw/file.bin?rdiff=patch', Buffer.from('garbage'));
    assert.equal(bad.status, 500);
    assert.equal(bad.body.toString(), 'Error apply patch');
    assert.deepEqual(await readFile(path.join(s.dirs.rw!, 'file.bin')), edited, 'a failed patch changes nothing');
    // A garbage signature is an error, not a 200 with an empty body (the original's weakness).
    assert.ok((await patchRequest(s.url, '/ro/hello.txt?rdiff=delta', Buffer.from('garbage'))).status >= 400);
    assert.equal((await patchRequest(s.url, '/ro/missing.txt?rdiff=delta', Buffer.from('x'))).status, 400);
    const none = await patchRequest(s.url, '/rw/file.bin?rdiff=bogus', Buffer.alloc(0));
    assert.equal(none.status, 400);
    assert.equal(none.body.toString(), 'Invalid mode: bogus');
  });

  it('answers a PATCH body over the limit with 413, whether declared or chunked, and changes nothing', async () => {
    const limited = await startServer({ rw: { writable: true } }, { maxRdiffBodyBytes: 64 * 1024 });
    const file = path.join(limited.dirs.rw!, 'file.bin');
    await writeFile(file, old);
    const { host } = new URL(limited.url);
    /** What the server answers to a raw request (and whatever `then` sends once connected). */
    const answerTo = (request: string, then: (sock: net.Socket) => void = () => {}) =>
      new Promise<string>((resolve, reject) => {
        const sock = net.connect(Number(new URL(limited.url).port), '127.0.0.1', () => then(sock));
        sock.write(request);
        let got = '';
        sock.on('data', (d) => {
          got += d.toString('latin1');
          if (got.includes('\r\n\r\n') && got.includes('Body too large.')) {
            sock.destroy();
            resolve(got);
          }
        });
        sock.on('close', () => resolve(got));
        sock.on('error', reject);
        sock.setTimeout(10_000, () => sock.destroy(new Error('no answer')));
      });
    // Declared too large: refused before any of the body is sent.
    const declared = await answerTo(`PATCH /rw/file.bin?rdiff=patch HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nContent-Length: ${100 * 1024}\r\n\r\n`);
    assert.match(declared, /^HTTP\/1\.1 413 /);
    assert.ok(declared.endsWith('Body too large.\n'), declared);
    // Chunked and still arriving when the limit is passed: a 413 while the body goes on,
    // not a connection closed unanswered.
    const piece = Buffer.alloc(16 * 1024, 2);
    const chunk = Buffer.concat([Buffer.from(`${piece.length.toString(16)}\r\n`), piece, Buffer.from('\r\n')]);
    const head = `PATCH /rw/file.bin?rdiff=patch HTTP/1.1\r\nHost: ${host}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n`;
    const answer = await answerTo(head, (sock) => {
      for (let i = 0; i < 8; i++) sock.write(chunk); // 128 KiB: past the limit, and no end yet
    });
    assert.match(answer, /^HTTP\/1\.1 413 /);
    assert.ok(answer.endsWith('Body too large.\n'), answer);
    assert.deepEqual(await readFile(file), old, 'a refused patch changes nothing');
    // Under the limit, the same server applies a patch.
    const ok = await patchRequest(limited.url, '/rw/file.bin?rdiff=patch', await deltaFromServer(limited.url, '/rw/file.bin', edited, work));
    assert.equal(ok.status, 204);
    assert.deepEqual(await readFile(file), edited);
  });
});
