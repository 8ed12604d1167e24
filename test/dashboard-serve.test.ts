/**
 * The `bitfog serve` dashboard: classic clients still get the JSON array of areas from
 * `GET /`, browsers get the page, the area numbers are right, and the page follows a
 * transfer live (server-sent events) while a slow upload runs.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext } from 'playwright-core';
import { createServer, type BitfogServer } from '../src/server/index.ts';
import type { AreasConfig } from '../src/server/config.ts';
import { wantsHtml } from '../src/server/dashboard/serve-dashboard.ts';
import { launchBrowser, screenshot } from './helpers/dashboard.ts';
import { tempDir } from './helpers/tmp.ts';
import { makeTree } from './helpers/tree.ts';

const AREA = 'dest box é #1';

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** A raw request, headers exactly as given (no Accept unless asked), like the Go client. */
function request(url: string, headers: Record<string, string> = {}, method = 'GET'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function areasWhenCounted(base: string): Promise<Array<{ name: string; state: string; files: number; bytes: number; writable: boolean; lastChange?: string; hashCache: { kind: string } }>> {
  for (;;) {
    const list = JSON.parse((await request(new URL('/.bitfog/dashboard/api/areas', base).href)).body);
    if (list.every((a: { state: string }) => a.state === 'ready')) return list;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function serve(areas: AreasConfig, extra: { token?: string; classic?: boolean } = {}): Promise<BitfogServer> {
  return createServer({ areas, addr: '127.0.0.1:0', cacheDir: false, ...extra });
}

describe('serve dashboard', () => {
  let root: string;
  let server: BitfogServer;
  let areas: AreasConfig;
  let browser: BrowserContext | undefined;

  before(async () => {
    root = await tempDir('serve-dashboard');
    await makeTree(path.join(root, 'src'), {
      'photos/a b.jpg': { bytes: 3000, seed: 1, mtime: new Date('2024-05-06T07:08:09Z') },
      'docs/#1 100%?.txt': { bytes: 500, seed: 2, mtime: new Date('2023-01-01T00:00:00Z') },
      'empty': '',
    });
    await fsp.mkdir(path.join(root, 'dest'));
    areas = new Map([
      ['src', { url: path.join(root, 'src'), writable: false, checksum: true }],
      [AREA, { url: path.join(root, 'dest'), writable: true, checksum: false }],
    ]);
    server = await serve(areas);
  });
  after(async () => {
    await browser?.close();
    await server?.close();
  });

  it('a classic client still gets the JSON array of areas from GET /', async () => {
    const expected = `${JSON.stringify([AREA, 'src'].sort())}\n`;
    // The Go client: no Accept header, gzip accepted.
    for (const headers of [{}, { 'Accept-Encoding': 'gzip' }, { Accept: '*/*' }, { Accept: 'application/json' }, { Accept: 'text/html;q=0, */*' }] as Array<Record<string, string>>) {
      const r = await request(server.url, headers);
      assert.equal(r.status, 200, JSON.stringify(headers));
      assert.equal(r.headers['content-type'], 'application/json', JSON.stringify(headers));
      assert.equal(r.body, expected, JSON.stringify(headers));
    }
    const page = await request(server.url, { Accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' });
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(page.body, /<title>bitfog serve<\/title>/);
  });

  it('content negotiation reads Accept as browsers and scripts send it', () => {
    assert.equal(wantsHtml(''), false);
    assert.equal(wantsHtml('*/*'), false);
    assert.equal(wantsHtml('application/json'), false);
    assert.equal(wantsHtml('text/html'), true);
    assert.equal(wantsHtml('TEXT/HTML; q=0.5, */*'), true);
    assert.equal(wantsHtml('text/html;q=0'), false);
  });

  it('reports per area files, bytes, last change, access and hash cache', async () => {
    const list = await areasWhenCounted(server.url);
    const src = list.find((a) => a.name === 'src')!;
    assert.equal(src.files, 3);
    assert.equal(src.bytes, 3500);
    assert.equal(src.writable, false);
    assert.equal(src.lastChange !== undefined && src.lastChange >= '2024-05-06T07:08:09', true);
    assert.equal(src.hashCache.kind, 'memory');
    const dest = list.find((a) => a.name === AREA)!;
    assert.deepEqual([dest.files, dest.bytes, dest.writable, dest.hashCache.kind], [0, 0, true, 'off']);
    // The dashboard's own paths can never be an area's: area names never start with ".".
    assert.equal((await request(new URL('/.bitfog/dashboard/nope', server.url).href)).status, 404);
  });

  it('recent requests and errors are recorded', async () => {
    await request(new URL('/src/photos/a%20b.jpg', server.url).href);
    await request(new URL('/src/missing.txt', server.url).href);
    const a = JSON.parse((await request(new URL('/.bitfog/dashboard/api/activity', server.url).href)).body);
    assert.ok(a.recent.some((r: { path: string; status: number; bytesOut: number }) => r.path === '/src/photos/a b.jpg' && r.status === 200 && r.bytesOut >= 3000));
    assert.ok(a.errors.some((r: { path: string; status: number }) => r.path === '/src/missing.txt' && r.status >= 400));
  });

  it('is off when a token protects the server, and with --classic', async () => {
    for (const extra of [{ token: 'secret-token' }, { classic: true }]) {
      const s = await serve(areas, extra);
      try {
        const page = await request(s.url, { Accept: 'text/html' });
        assert.doesNotMatch(page.body, /<html/);
        const api = await request(new URL('/.bitfog/dashboard/api/activity', s.url).href, extra.token ? { Authorization: `Bearer ${extra.token}` } : {});
        assert.ok(api.status >= 400, `dashboard API not served (${api.status})`);
        const auth: Record<string, string> = extra.token ? { Authorization: `Bearer ${extra.token}` } : {};
        const r = await request(s.url, { ...auth });
        assert.equal(r.body, `${JSON.stringify([AREA, 'src'].sort())}\n`);
      } finally {
        await s.close();
      }
    }
  });

  it('the page shows the areas and follows a slow upload live', { timeout: 300_000 }, async (t) => {
    browser = await launchBrowser(t);
    if (!browser) return;
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    await page.waitForSelector('body[data-ready="true"]');
    await page.locator('#areas', { hasText: '3.42 KiB' }).waitFor();
    const row = await page.locator('#areas tbody tr', { hasText: 'read-only' }).locator('td').allTextContents();
    assert.deepEqual(row.slice(0, 4), ['src', 'read-only', '3', '3.42 KiB']);
    const areasText = await page.textContent('#areas') ?? '';
    assert.match(areasText, new RegExp(`${AREA}.*writable`));

    // Upload 4 MiB in pieces; the page shows the transfer and its progress moving.
    const total = 4 * 1024 * 1024;
    const piece = Buffer.alloc(256 * 1024, 7);
    const target = new URL(`/${encodeURIComponent(AREA)}/${encodeURIComponent('big upload #1.bin')}`, server.url);
    const done = new Promise<number>((resolve, reject) => {
      const req = http.request(target, { method: 'PUT', headers: { 'Content-Length': String(total), 'Content-Type': 'application/octet-stream' } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      (async () => {
        const progress = page.locator('#current progress');
        let sent = 0;
        let last = -1;
        const values: number[] = [];
        while (sent < total) {
          await new Promise<void>((r) => req.write(piece, () => r()));
          sent += piece.length;
          if (sent === total / 4 || sent === total / 2) {
            // Wait until the page shows more than before: it updates without reloading.
            await progress.waitFor();
            for (;;) {
              const v = Number(await progress.getAttribute('value'));
              if (v > last) {
                values.push(v);
                last = v;
                break;
              }
              await new Promise((r) => setTimeout(r, 100));
            }
            if (sent === total / 2) await screenshot(page, 'serve-page-uploading');
          }
        }
        assert.equal(values.length, 2);
        assert.ok(values[1]! > values[0]!);
        req.end();
      })().catch(reject);
    });
    assert.ok([200, 201, 204].includes(await done));
    await page.locator('#recent', { hasText: '/big upload #1.bin' }).waitFor();
    await page.locator('#current', { hasText: 'Nothing is being transferred.' }).waitFor();
    await page.locator('#areas', { hasText: '4.00 MiB' }).waitFor();
    await screenshot(page, 'serve-page');
    const activity = JSON.parse((await request(new URL('/.bitfog/dashboard/api/activity', server.url).href)).body);
    const put = activity.recent.find((r: { method: string }) => r.method === 'PUT');
    assert.equal(put.path, `/${AREA}/big upload #1.bin`);
    assert.ok(put.bytesIn >= total, `the whole body is counted (${put.bytesIn})`);
    assert.ok(!activity.recent.some((r: { path: string }) => r.path === '/favicon.ico'), 'the page asks for nothing it does not serve');
    assert.deepEqual(errors, []);
  });
});
