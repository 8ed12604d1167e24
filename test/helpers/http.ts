/** Starting our bitfog server in-process on loopback for the http tests. */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { createServer, type BitfogServer, type ServerOptions } from '../../src/server/index.ts';
import type { AreaConfig } from '../../src/server/config.ts';
import { closeBeforeCleanup, tempDir } from './tmp.ts';


export interface TestServer {
  server: BitfogServer;
  /** Base URL `http://127.0.0.1:PORT/`. */
  url: string;
  /** Local directory of each area. */
  dirs: Record<string, string>;
  /** Everything logged. */
  log: string[];
  /** The temp dir holding the areas (and `outside/`, which no request may touch). */
  root: string;
}

/**
 * Starts a server on 127.0.0.1:0 with the given areas, each backed by a fresh directory
 * `<root>/areas/<name>` unless `path` is given; closed when the test file ends.
 */
export async function startServer(
  areas: Record<string, Partial<AreaConfig> & { path?: string }>,
  options: Partial<ServerOptions> = {},
): Promise<TestServer> {
  const root = await tempDir('http-srv');
  const dirs: Record<string, string> = {};
  const config = new Map<string, AreaConfig>();
  for (const [name, a] of Object.entries(areas)) {
    const dir = a.path ?? path.join(root, 'areas', name);
    if (!a.path) await mkdir(dir, { recursive: true });
    dirs[name] = dir;
    const { path: _p, ...rest } = a;
    config.set(name, { writable: false, checksum: false, ...rest, url: dir });
  }
  const log: string[] = [];
  const server = await createServer({
    areas: config,
    addr: '127.0.0.1:0',
    cacheDir: path.join(root, 'cache'),
    onLog: (l) => log.push(l),
    ...options,
  });
  closeBeforeCleanup(() => server.close());
  return { server, url: server.url, dirs, log, root };
}

export interface RawResponse {
  status: number;
  statusLine: string;
  /** Header lines as sent, in order (`Name: value`). */
  headerLines: string[];
  headers: Record<string, string>;
  /** The body, de-chunked when it was chunked. */
  body: Buffer;
  /** Everything the server sent. */
  raw: Buffer;
}

/**
 * Sends bytes exactly as given over a fresh TCP connection (no client-side path
 * normalisation or encoding) and reads the answer until the server closes.
 */
export async function rawRequest(baseUrl: string, request: string | Buffer): Promise<RawResponse> {
  const { hostname, port } = new URL(baseUrl);
  const net = await import('node:net');
  const raw = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    const sock = net.connect(Number(port), hostname, () => sock.write(request));
    sock.on('data', (c) => chunks.push(c));
    sock.on('error', (e) => (chunks.length ? resolve(Buffer.concat(chunks)) : reject(e)));
    sock.on('close', () => resolve(Buffer.concat(chunks)));
    sock.setTimeout(20_000, () => sock.destroy(new Error('raw request timed out')));
  });
  return parseRaw(raw);
}

export function parseRaw(raw: Buffer): RawResponse {
  const sep = raw.indexOf('\r\n\r\n');
  const head = raw.subarray(0, sep < 0 ? raw.length : sep).toString('latin1').split('\r\n');
  const statusLine = head[0] ?? '';
  const headerLines = head.slice(1);
  const headers: Record<string, string> = {};
  for (const l of headerLines) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  let body = sep < 0 ? Buffer.alloc(0) : raw.subarray(sep + 4);
  if (headers['transfer-encoding'] === 'chunked') {
    const parts: Buffer[] = [];
    let off = 0;
    for (;;) {
      const eol = body.indexOf('\r\n', off);
      if (eol < 0) break;
      const n = parseInt(body.subarray(off, eol).toString('latin1'), 16);
      if (!(n > 0)) break;
      parts.push(body.subarray(eol + 2, eol + 2 + n));
      off = eol + 2 + n + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: Number(statusLine.split(' ')[1]), statusLine, headerLines, headers, body, raw };
}

/** A GET (or other bodiless request) with the path sent verbatim. */
export function rawGet(baseUrl: string, rawPath: string, method = 'GET', extra: string[] = []): Promise<RawResponse> {
  const { host } = new URL(baseUrl);
  return rawRequest(baseUrl, [`${method} ${rawPath} HTTP/1.1`, `Host: ${host}`, ...extra, 'Connection: close', '', ''].join('\r\n'));
}
