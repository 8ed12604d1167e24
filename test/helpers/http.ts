/** Starting our bitfog server in-process on loopback for the http tests. */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after } from 'node:test';
import { createServer, type BitfogServer, type ServerOptions } from '../../src/server/index.ts';
import type { AreaConfig } from '../../src/server/config.ts';
import { tempDir } from './tmp.ts';

const running: BitfogServer[] = [];
after(async () => {
  await Promise.all(running.map((s) => s.close()));
});

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
  running.push(server);
  return { server, url: server.url, dirs, log, root };
}
