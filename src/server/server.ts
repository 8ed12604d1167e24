/**
 * `bitfog serve`: the classic bitfog HTTP protocol (and our backward-compatible
 * additions) over areas opened through the backend interfaces.
 *
 * Confinement: a request path is split on raw `/` BEFORE percent-decoding, each segment
 * is decoded exactly once, and the result must be a valid RelPath (no `.`/`..`/empty
 * segment, NUL, encoded `/`, or a `..` hidden behind a backslash). Everything else is the
 * backend's job: the local backend opens files without following a final symlink and
 * refuses paths through symlinked directories (EACCES), so neither a symlink already in an
 * area nor one created by a client lets a read or write leave it.
 *
 * Status codes follow the classic server where classic clients depend on them (200 for
 * listings and files, 204 on writes, 405 on read-only areas, 400 for bad paths and
 * missing files); where the classic server was wrong (500 revealing server paths, a
 * dropped connection for a missing area directory, 200 for a failed rdiff) we answer with
 * an honest status and a fixed body. Our clients read the stable error code from the
 * `X-Bitfog-Error` header. Error bodies never contain server paths.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import { setMaxListeners } from 'node:events';
import http, { type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Koa from 'koa';
import type { Context } from 'koa';
import { Crc64 } from '../backends/http/crc64.ts';
import {
  encodeRecord,
  goFileMode,
  H_ERROR,
  H_MODE,
  H_MTIME_NS,
  H_PROTOCOL,
  H_SHA256,
  INFO_PATH,
  PROTOCOL_VERSION,
} from '../backends/http/wire.ts';
import { createDefaultRegistry } from '../backends/index.ts';
import { bitfogError, isBitfogError, toBitfogError, type BitfogError, type ErrorCode } from '../core/errors.ts';
import { ancestors, baseName, childPath, parentPath, relPathProblem, type RelPath } from '../core/paths.ts';
import type { BackendRegistry } from '../core/registry.ts';
import { isDestination, type Destination, type Entry, type OpenFile, type Source } from '../core/types.ts';
import type { AreaConfig, AreasConfig } from './config.ts';
import { defaultCacheDir, RACY_WINDOW_MS, ServerHashCache, type CachedHashes } from './hashcache.ts';
import { runRdiff } from './rdiff.ts';
import { serveDashboard, type ServeDashboard } from './dashboard/serve-dashboard.ts';
import { chunksOf } from '../core/streams.ts';

export interface ServerOptions {
  areas: AreasConfig;
  /** `:8675` (all interfaces), `127.0.0.1:0` (a free port), `[::1]:8675`. Default `:8675`. */
  addr?: string;
  /** PEM certificate and key: serve HTTPS. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** A token required for every request (and granting everything), unless undefined. */
  token?: string;
  /**
   * Speak only the classic protocol: listings without `sha256`/`mtime_ns`, no Range,
   * HEAD, conditional requests or extension endpoints, extension headers ignored. For
   * testing clients against what an original server offers.
   */
  classic?: boolean;
  /** Where the hash cache lives (default: the user's cache dir); `false` keeps it in memory. */
  cacheDir?: string | false;
  /** Opens the areas' URLs (default: every built-in backend). */
  registry?: BackendRegistry;
  /** One line per request (method, path, status, bytes, time), and start-up/skip notes. */
  onLog?: (line: string) => void;
  /** The rdiff executable (default `rdiff`). */
  rdiffCommand?: string;
  /** Largest rdiff signature or delta body a PATCH may send (default 8 GiB); larger ones get 413. */
  maxRdiffBodyBytes?: number;
  /** Largest request header block in bytes (default 16 KiB). */
  maxHeaderSize?: number;
  /** Time allowed to send the request headers (default 60 s). */
  headersTimeoutMs?: number;
  /**
   * A connection idle this long is closed (default 5 min). Only inactivity counts: an upload
   * that keeps sending is never cut off, however many gigabytes it has.
   */
  idleTimeoutMs?: number;
}

export interface BitfogServer {
  readonly app: Koa;
  readonly server: http.Server | https.Server;
  /** Base URL, e.g. `http://127.0.0.1:8675/` (an all-interfaces bind is shown as 127.0.0.1). */
  readonly url: string;
  readonly port: number;
  /** Work done so far: files and bytes read to compute listing hashes (a warm cache reads none). */
  readonly stats: ServerStats;
  /** Stops listening, closes connections and areas, flushes hash caches. Idempotent. */
  close(): Promise<void>;
}

export interface ServerStats {
  filesHashed: number;
  bytesHashed: number;
}

interface Area {
  name: string;
  config: AreaConfig;
  backend: Source | Destination;
  cache: ServerHashCache;
}

/** A failure answered with a fixed body; `code` goes to X-Bitfog-Error. */
class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
    readonly code?: ErrorCode,
    readonly contentType: 'octet' | 'text' = 'text',
  ) {
    super(body);
  }
}

const TEXT = 'text/plain; charset=utf-8';
const OCTET = 'application/octet-stream';
const SYMLINK = 'application/symlink';
/** Longest symlink target accepted (Linux PATH_MAX). */
const MAX_LINK_TARGET = 4096;
/** Largest rdiff signature or delta body accepted by PATCH, unless ServerOptions say otherwise. */
const MAX_RDIFF_BODY = 8 * 1024 ** 3;
/** Files hashed at once while a listing computes missing hashes. */
const HASH_PARALLELISM = 16;
const TEMP_PATTERN = /^\.bitfog-tmp-[0-9a-f]{16}(?:-|$)/;
/** Bytes each keep-alive connection had read when its last request ended (for the log's in=). */
const readAtLastEnd = new WeakMap<object, number>();
const EMPTY_SHA256 = createHash('sha256').digest('hex');

/**
 * Opens every area, binds the listener and serves. Throws EUSAGE (bad area, missing area
 * directory, bad address) or the listen error (EADDRINUSE) before serving anything.
 */
export async function createServer(options: ServerOptions): Promise<BitfogServer> {
  const registry = options.registry ?? createDefaultRegistry();
  const cacheDir = options.cacheDir === false ? undefined : (options.cacheDir ?? defaultCacheDir());
  const areas = new Map<string, Area>();
  const tempRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'bitfog-serve-'));
  try {
    for (const [name, config] of options.areas) {
      areas.set(name, await openArea(registry, name, config, cacheDir));
    }
  } catch (e) {
    await Promise.all([...areas.values()].map((a) => a.backend.close()));
    await fsp.rm(tempRoot, { recursive: true, force: true });
    throw e;
  }

  const app = new Koa();
  app.silent = true;
  const handler = new Handler(areas, options, tempRoot);
  const dashboard = dashboardFor(areas, options);
  if (dashboard) app.use(dashboard.middleware);
  app.use((ctx) => handler.handle(ctx));

  const { host, port } = parseAddr(options.addr ?? ':8675');
  const serverOptions = {
    maxHeaderSize: options.maxHeaderSize ?? 16 * 1024,
    // No limit on a whole request: a multi-GB upload takes as long as it takes. Slow or
    // idle peers are cut off by headersTimeout and the idle timeout instead.
    requestTimeout: 0,
    headersTimeout: options.headersTimeoutMs ?? 60_000,
    keepAliveTimeout: 5_000,
  };
  const server = options.tls
    ? https.createServer({ ...serverOptions, cert: options.tls.cert, key: options.tls.key }, app.callback())
    : http.createServer(serverOptions, app.callback());
  server.timeout = options.idleTimeoutMs ?? 300_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch(async (e) => {
    await Promise.all([...areas.values()].map((a) => a.backend.close()));
    await fsp.rm(tempRoot, { recursive: true, force: true });
    throw e;
  });
  const bound = server.address() as AddressInfo;
  const shownHost = !host || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const url = `${options.tls ? 'https' : 'http'}://${shownHost}:${bound.port}/`;

  let closing: Promise<void> | undefined;
  return {
    app,
    server,
    url,
    port: bound.port,
    stats: handler.stats,
    close() {
      closing ??= (async () => {
        dashboard?.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await Promise.all([...areas.values()].map(async (a) => {
          await a.cache.flush();
          await a.backend.close();
        }));
        await fsp.rm(tempRoot, { recursive: true, force: true });
      })();
      return closing;
    },
  };
}

/** The browser dashboard (see dashboard/serve-dashboard.ts): off with --classic or any token. */
function dashboardFor(areas: Map<string, Area>, options: ServerOptions): ServeDashboard | undefined {
  const tokens = options.token !== undefined || [...areas.values()].some((a) => a.config.readToken || a.config.writeToken);
  if (options.classic || tokens) return undefined;
  return serveDashboard([...areas.values()].map((a) => ({
    name: a.name, url: a.config.url, writable: a.config.writable, checksum: a.config.checksum, backend: a.backend, cache: a.cache,
  })));
}

async function openArea(registry: BackendRegistry, name: string, config: AreaConfig, cacheDir: string | undefined): Promise<Area> {
  let backend: Source | Destination;
  try {
    // Open for reading first: opening for writing would create a missing directory, and a
    // typo in bitfog.json must fail loudly rather than serve a new empty area.
    backend = await registry.openSource(config.url);
    if (config.writable) {
      await backend.close();
      backend = await registry.openDestination(config.url);
    }
  } catch (e) {
    const err = toBitfogError(e);
    const why = err.code === 'ENOENT' ? 'does not exist' : err.code === 'ENOTDIR' ? 'is not a directory' : err.message;
    throw bitfogError('EUSAGE', `area ${JSON.stringify(name)}: ${config.url} ${why}`, { cause: e });
  }
  const cache = config.checksum && cacheDir ? await ServerHashCache.open(config.url, cacheDir) : ServerHashCache.memory();
  return { name, config, backend, cache };
}

/** Parses `:8675`, `host:port`, `[v6]:port` or a bare port. Throws EUSAGE. */
export function parseAddr(addr: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:(\d+)$/.exec(addr) ?? /^()()(\d+)$/.exec(addr);
  const port = m ? Number(m[3]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw bitfogError('EUSAGE', `invalid listen address ${JSON.stringify(addr)} (expected :PORT, HOST:PORT or [IPv6]:PORT)`);
  }
  const host = m[1] || m[2] || undefined;
  return { host, port };
}

type Target =
  | { kind: 'index' }
  | { kind: 'info' }
  | { kind: 'listing'; area: string }
  | { kind: 'file'; area: string; rel: RelPath };

/**
 * Maps a raw request-target onto an area and a RelPath. Splits on `/` before decoding so
 * that `%2F` can never create a separator, decodes each segment once (so `%252e` stays the
 * literal name `%2e`), and refuses anything that is not a valid RelPath.
 */
export function parseTarget(rawPath: string): Target {
  if (!rawPath.startsWith('/')) throw badPath();
  if (rawPath === '/') return { kind: 'index' };
  if (rawPath === INFO_PATH) return { kind: 'info' };
  const raw = rawPath.slice(1).split('/');
  const segments = raw.map(decodeSegment);
  const area = segments[0]!;
  if (area === '') throw badPath();
  const rest = segments.slice(1);
  if (rest.length === 0 || (rest.length === 1 && rest[0] === '')) return { kind: 'listing', area };
  const rel = rest.join('/');
  if (relPathProblem(rel) !== undefined) throw badPath();
  // A backend that treats `\` as a separator must not see a `..` hidden behind one.
  for (const s of rest) {
    if (s.includes('\\') && s.split('\\').some((part) => part === '.' || part === '..')) throw badPath();
  }
  return { kind: 'file', area, rel: rel as RelPath };
}

function decodeSegment(s: string): string {
  let d: string;
  try {
    d = decodeURIComponent(s);
  } catch {
    throw badPath();
  }
  if (d.includes('/') || d.includes('\0')) throw badPath();
  return d;
}

function badPath(): HttpFailure {
  return new HttpFailure(400, 'No\n', 'EBADPATH');
}

const notAFile = () => new HttpFailure(400, "That's not a file.\n", 'EISDIR');

class Handler {
  readonly #classic: boolean;
  readonly stats: ServerStats = { filesHashed: 0, bytesHashed: 0 };

  constructor(
    readonly areas: Map<string, Area>,
    readonly options: ServerOptions,
    readonly tempRoot: string,
  ) {
    this.#classic = options.classic ?? false;
  }

  async handle(ctx: Context): Promise<void> {
    const started = process.hrtime.bigint();
    const socket = ctx.req.socket;
    // What the socket had read when its previous request ended (0 on a new connection): by
    // now it has read this request's headers and maybe some of its body already.
    const inBefore = readAtLastEnd.get(socket) ?? 0;
    const outBefore = socket.bytesWritten;
    const remote = socket.remoteAddress ?? '-';
    const log = this.options.onLog;
    ctx.res.once('close', () => readAtLastEnd.set(socket, socket.bytesRead));
    if (log) {
      ctx.res.once('close', () => {
        const ms = Number(process.hrtime.bigint() - started) / 1e6;
        const out = socket.bytesWritten - outBefore;
        const inn = socket.bytesRead - inBefore;
        const aborted = ctx.res.writableFinished ? '' : ' (aborted)';
        log(
          `${remote} ${ctx.method} ${safeForLog(ctx.req.url ?? '')} ${ctx.status} in=${inn} out=${out} ${ms.toFixed(1)}ms${aborted}`,
        );
      });
    }
    if (!this.#classic) ctx.set(H_PROTOCOL, PROTOCOL_VERSION);
    // A client that drops the connection mid-upload makes the request emit 'error'
    // ("aborted"), possibly while the handler is still awaiting something else. The
    // handler notices through the body stream or 'close'; this keeps it from being fatal.
    ctx.req.on('error', () => {});
    try {
      await this.#route(ctx);
    } catch (e) {
      this.#fail(ctx, e);
    }
  }

  #fail(ctx: Context, e: unknown): void {
    const f = e instanceof HttpFailure ? e : failureFor(e);
    if (ctx.headerSent) {
      // Too late for a status: cut the connection so the client sees a truncated body.
      ctx.req.socket?.destroy();
      return;
    }
    ctx.status = f.status;
    ctx.remove('Content-Range');
    ctx.remove('ETag');
    ctx.remove('Last-Modified');
    ctx.remove(H_SHA256);
    ctx.remove('Accept-Ranges');
    if (f.contentType === 'text') {
      ctx.type = TEXT;
      ctx.set('X-Content-Type-Options', 'nosniff');
    } else ctx.type = OCTET;
    if (f.code && !this.#classic) ctx.set(H_ERROR, f.code);
    if (f.status === 401) ctx.set('WWW-Authenticate', 'Bearer realm="bitfog"');
    ctx.body = f.body;
    // Drain an unread upload so keep-alive stays usable, but never wait on a huge one.
    if (!ctx.req.readableEnded && ctx.req.readable) {
      const len = Number(ctx.get('content-length') || NaN);
      if (len > 1 << 20 || !Number.isFinite(len)) ctx.set('Connection', 'close');
      ctx.req.resume();
    }
  }

  async #route(ctx: Context): Promise<void> {
    const rawUrl = ctx.req.url ?? '/';
    const q = rawUrl.indexOf('?');
    const rawPath = q < 0 ? rawUrl : rawUrl.slice(0, q);
    const query = new URLSearchParams(q < 0 ? '' : rawUrl.slice(q + 1));
    const target = parseTarget(rawPath);

    if (target.kind === 'index') {
      this.#authorize(ctx, undefined, 'read');
      ctx.status = 200;
      ctx.set('Content-Type', 'application/json');
      ctx.body = JSON.stringify([...this.areas.keys()].sort()) + '\n';
      return;
    }
    if (target.kind === 'info') {
      if (this.#classic) throw new HttpFailure(404, 'Path not found: .bitfog\n', 'ENOENT');
      const area = this.#area(query.get('area') ?? '');
      this.#authorize(ctx, area, 'read');
      ctx.set('Content-Type', 'application/json');
      ctx.body = JSON.stringify({ protocol: Number(PROTOCOL_VERSION), writable: area.config.writable, checksum: area.config.checksum }) + '\n';
      return;
    }
    const area = this.#area(target.area);
    if (target.kind === 'listing') {
      this.#authorize(ctx, area, 'read');
      // `?temp` (ours): bitfog's temporary files too, so that a store finds and removes the
      // leftovers of an interrupted one; classic clients never see them.
      await this.#listing(ctx, area, !this.#classic && query.has('temp'));
      return;
    }
    const rel = target.rel;
    switch (ctx.method) {
      case 'GET':
        this.#authorize(ctx, area, 'read');
        return this.#get(ctx, area, rel, query);
      case 'HEAD':
        if (this.#classic) throw cannot('HEAD');
        this.#authorize(ctx, area, 'read');
        return this.#get(ctx, area, rel, query);
      case 'PUT':
        this.#writable(area, 'PUT');
        this.#authorize(ctx, area, 'write');
        return this.#put(ctx, area, rel);
      case 'DELETE':
        this.#writable(area, 'DELETE');
        this.#authorize(ctx, area, 'write');
        return this.#delete(ctx, area, rel, query);
      case 'PATCH':
        return this.#patch(ctx, area, rel, query);
      case 'POST':
        if (this.#classic) throw cannot('POST');
        this.#writable(area, 'POST');
        this.#authorize(ctx, area, 'write');
        return this.#post(ctx, area, rel, query);
      default:
        throw cannot(ctx.method);
    }
  }

  #area(name: string): Area {
    const area = this.areas.get(name);
    if (!area) throw new HttpFailure(404, `Path not found: ${name}\n`, 'ENOENT');
    return area;
  }

  #writable(area: Area, method: string): asserts area is Area & { backend: Destination } {
    if (!area.config.writable || !isDestination(area.backend)) throw cannot(method, 'EROFS');
  }

  /**
   * Token rules: a global token, when set, is needed for everything and grants everything.
   * An area's read token (or its write token) grants reads of it; its write token grants
   * writes (or, when it has only a read token, that token grants both).
   */
  #authorize(ctx: Context, area: Area | undefined, need: 'read' | 'write'): void {
    const global = this.options.token;
    const readT = area?.config.readToken;
    const writeT = area?.config.writeToken;
    const sufficient: string[] = [];
    if (need === 'read') {
      if (readT) sufficient.push(readT);
      if (writeT) sufficient.push(writeT);
    } else if (writeT ?? readT) sufficient.push((writeT ?? readT)!);
    if (global) sufficient.push(global);
    if (sufficient.length === 0) return;
    const header = ctx.get('authorization');
    const m = /^Bearer +(\S+)\s*$/i.exec(header);
    if (!m) throw new HttpFailure(401, 'Authentication required.\n', 'EAUTH');
    const given = m[1]!;
    if (sufficient.some((t) => sameToken(t, given))) return;
    // A valid read token used for a write: forbidden rather than unauthenticated.
    if (need === 'write' && [readT, writeT].some((t) => t && sameToken(t, given))) {
      throw new HttpFailure(403, 'This token may not write here.\n', 'EAUTH');
    }
    throw new HttpFailure(401, 'Invalid token.\n', 'EAUTH');
  }

  // ---------------------------------------------------------------- listing

  async #listing(ctx: Context, area: Area, withTemp: boolean): Promise<void> {
    // (The request's own 'close' only means its body was read; the response's means the
    // answer is done or the client went away.)
    const abort = new AbortController();
    // Every file being hashed listens on this signal.
    setMaxListeners(HASH_PARALLELISM * 4 + 10, abort.signal);
    ctx.res.once('close', () => abort.abort());
    const lines = this.#listingLines(area, withTemp, abort.signal)[Symbol.asyncIterator]();
    // Wait for the first listable entry before answering, so that an area that cannot be
    // listed gets an error status rather than a 200 with a truncated body (and an empty
    // area gets the classic empty body with Content-Length: 0).
    const first = await lines.next();
    ctx.status = 200;
    ctx.set('Content-Type', 'application/json');
    if (first.done) {
      ctx.body = '';
      return;
    }
    ctx.body = cutOnError(ctx, Readable.from(withKeepAlive(lines), { objectMode: false }));
  }

  async *#listingLines(area: Area, withTemp: boolean, signal: AbortSignal): AsyncGenerator<string> {
    const batch: Entry[] = [];
    const extended = !this.#classic;
    const onSkip = (p: string, reason: string) => this.options.onLog?.(`skipped ${area.name}/${p}: ${reason}`);
    let started = false;
    try {
      for await (const e of area.backend.list({ signal, onSkip })) {
        if (e.kind === 'directory' || (!withTemp && TEMP_PATTERN.test(baseName(e.path)))) continue;
        if (!started) {
          started = true;
          yield ''; // the listing works: the answer can start
        }
        batch.push(e);
        if (batch.length >= 256) {
          yield (await this.#encodeBatch(area, batch, extended, signal)).join('');
          batch.length = 0;
        }
      }
      if (batch.length) yield (await this.#encodeBatch(area, batch, extended, signal)).join('');
    } catch (e) {
      throw toBitfogError(e, 'cannot list area');
    } finally {
      void area.cache.flush();
    }
  }

  async #encodeBatch(area: Area, entries: Entry[], extended: boolean, signal: AbortSignal): Promise<string[]> {
    // undefined: no hash to list; null: the file vanished while being hashed (not listed).
    const hashes: Array<CachedHashes | undefined | null> = new Array(entries.length);
    if (area.config.checksum) {
      let next = 0;
      const worker = async () => {
        while (next < entries.length) {
          const i = next++;
          const e = entries[i]!;
          // (A temporary file is listed for removal, not read: it may be large, or still growing.)
          if (e.kind !== 'file' || TEMP_PATTERN.test(baseName(e.path))) continue;
          hashes[i] = e.size === 0 ? { sha256: EMPTY_SHA256, crc64: 0n } : (area.cache.lookup(e) ?? (await this.#hashFile(area, e, signal)));
        }
      };
      await Promise.all(Array.from({ length: HASH_PARALLELISM }, worker));
    }
    const out: string[] = [];
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      const h = hashes[i];
      if (h === null) continue; // vanished while hashing
      const mtimeUs = Math.round((e.mtimeMs ?? 0) * 1000);
      out.push(
        encodeRecord(
          {
            name: e.path,
            size: e.size,
            mode: goFileMode(e.kind, e.mode ?? (e.kind === 'symlink' ? 0o777 : 0o644)),
            mtime: Math.floor(mtimeUs / 1e6),
            ...(h ? { hash: h.crc64, sha256: h.sha256 } : {}),
            ...(e.linkTarget ? { linkdest: e.linkTarget } : {}),
            mtimeNs: BigInt(mtimeUs) * 1000n,
          },
          extended,
        ),
      );
    }
    return out;
  }

  /** Hashes a file for a listing; null when it vanished, undefined when it cannot be read. */
  async #hashFile(area: Area, e: Entry, signal: AbortSignal): Promise<CachedHashes | undefined | null> {
    const startedAt = Date.now();
    try {
      // With the size as the range end, a local read allocates a buffer of the file's size
      // rather than a full 1 MiB chunk per file: a big difference for 100k small files.
      const range = area.backend.capabilities.rangedReads ? { start: 0, end: e.size } : {};
      const h = await hashStream(await area.backend.read(e.path, { signal, ...range }));
      this.stats.filesHashed++;
      this.stats.bytesHashed += h.bytes;
      if (h.bytes !== e.size) return undefined; // changed while being read: list it unhashed
      area.cache.record(e, h, startedAt);
      return h;
    } catch (err) {
      if (isBitfogError(err, 'ENOENT')) return null;
      if (signal.aborted) throw err;
      this.options.onLog?.(`cannot hash ${area.name}/${e.path}: ${toBitfogError(err).message}`);
      return undefined;
    }
  }

  // ---------------------------------------------------------------- GET / HEAD

  async #statFile(area: Area, rel: RelPath): Promise<Entry> {
    let entry: Entry;
    try {
      entry = await area.backend.stat(rel);
    } catch (e) {
      const err = toBitfogError(e);
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') throw new HttpFailure(400, 'Error getting file info.\n', 'ENOENT', 'octet');
      if (err.code === 'EACCES') throw new HttpFailure(403, 'Permission denied.\n', 'EACCES');
      if (err.code === 'EOPNOTSUPP') throw new HttpFailure(400, 'Error getting file info.\n', 'EOPNOTSUPP', 'octet');
      throw err;
    }
    if (entry.kind === 'directory') throw notAFile();
    if (entry.kind === 'symlink') throw new HttpFailure(400, 'Error getting file info.\n', 'EISDIR', 'octet');
    return entry;
  }

  async #get(ctx: Context, area: Area, rel: RelPath, query: URLSearchParams): Promise<void> {
    if (!this.#classic && query.has('stat')) return this.#stat(ctx, area, rel);
    const rdiff = query.get('rdiff') ?? '';
    if (rdiff !== '' && rdiff !== 'sig') throw new HttpFailure(400, `Invalid rdiff param: ${rdiff}`, 'EUSAGE', 'octet');
    const entry = await this.#statFile(area, rel);
    if (rdiff === 'sig') return this.#rdiffSignature(ctx, area, rel, entry.size);

    ctx.type = OCTET;
    let start = 0;
    let end = entry.size;
    if (!this.#classic) {
      const etag = etagOf(entry);
      ctx.set('ETag', etag);
      if (entry.mtimeMs !== undefined) ctx.set('Last-Modified', new Date(Math.floor(entry.mtimeMs / 1000) * 1000).toUTCString());
      ctx.set('Accept-Ranges', 'bytes');
      const cached = area.cache.lookup(entry);
      if (cached) ctx.set(H_SHA256, cached.sha256);
      const inm = ctx.get('if-none-match');
      if (inm && inm.split(',').some((t) => t.trim() === etag || t.trim() === '*')) {
        ctx.status = 304;
        return;
      }
      const range = ctx.get('range');
      const ifRange = ctx.get('if-range');
      if (range && (!ifRange || ifRange === etag)) {
        const r = parseRange(range, entry.size);
        if (r === 'unsatisfiable') {
          ctx.set('Content-Range', `bytes */${entry.size}`);
          throw new HttpFailure(416, 'Range not satisfiable.\n', 'EUSAGE');
        }
        if (r) {
          ({ start, end } = r);
          ctx.status = 206;
          ctx.set('Content-Range', `bytes ${start}-${end - 1}/${entry.size}`);
        }
      }
    }
    if (ctx.status !== 206) ctx.status = 200;
    ctx.length = end - start;
    if (ctx.method === 'HEAD') return;
    const abort = new AbortController();
    ctx.res.once('close', () => abort.abort());
    const notReadable = (e: unknown) => {
      const err = toBitfogError(e);
      if (err.code === 'ENOENT' || err.code === 'EISDIR' || err.code === 'EOPNOTSUPP') {
        return new HttpFailure(400, 'Error getting file info.\n', err.code, 'octet');
      }
      return err;
    };
    // A file that shrinks or grows under us must not be sent with a wrong length silently:
    // a mismatch makes Node destroy the connection, so the client sees a failed transfer.
    ctx.res.strictContentLength = true;
    if (end - start >= SEND_POOLED_MIN_BYTES && typeof area.backend.openFile === 'function') {
      let file: OpenFile | undefined;
      try {
        file = await area.backend.openFile(rel, { signal: abort.signal });
      } catch (e) {
        if (!isBitfogError(e, 'EOPNOTSUPP')) throw notReadable(e);
      }
      if (file) {
        ctx.respond = false; // koa writes nothing: the headers set above go out with the first bytes
        await sendFile(ctx.res, file, start, end);
        return;
      }
    }
    let stream: Readable;
    try {
      stream = await area.backend.read(rel, { start, end, signal: abort.signal });
    } catch (e) {
      throw notReadable(e);
    }
    ctx.body = cutOnError(ctx, stream);
  }

  async #stat(ctx: Context, area: Area, rel: RelPath): Promise<void> {
    let e: Entry;
    try {
      e = await area.backend.stat(rel);
    } catch (err) {
      throw failureFor(err);
    }
    const mtimeUs = Math.round((e.mtimeMs ?? 0) * 1000);
    const cached = e.kind === 'file' ? area.cache.lookup(e) : undefined;
    ctx.set('Content-Type', 'application/json');
    ctx.body = encodeRecord(
      {
        name: e.path,
        size: e.size,
        mode: goFileMode(e.kind, e.mode ?? 0o644),
        mtime: Math.floor(mtimeUs / 1e6),
        ...(cached ? { hash: cached.crc64, sha256: cached.sha256 } : {}),
        ...(e.linkTarget ? { linkdest: e.linkTarget } : {}),
        mtimeNs: BigInt(mtimeUs) * 1000n,
      },
      true,
    );
  }

  // ---------------------------------------------------------------- PUT

  async #put(ctx: Context, area: Area & { backend: Destination }, rel: RelPath): Promise<void> {
    const type = ctx.get('content-type');
    if (type !== OCTET && type !== SYMLINK) throw new HttpFailure(400, `invalid content type: ${type}\n`, 'EUSAGE');
    const dest = area.backend;
    await this.#mkdirParents(dest, rel);
    const existing = await dest.stat(rel).catch((e: unknown) => {
      if (isBitfogError(e, 'ENOENT')) return undefined;
      throw e;
    });
    if (existing?.kind === 'directory') throw notAFile();
    if (existing && !this.#classic && ctx.get('if-none-match') === '*') throw new HttpFailure(412, 'Already exists.\n', 'EEXIST');
    const tmp = tempSiblingOf(rel);
    try {
      if (type === SYMLINK) {
        const target = await readSmallBody(ctx.req, MAX_LINK_TARGET);
        if (target.length === 0 || target.includes(0)) throw new HttpFailure(400, 'Invalid symlink target.\n', 'EUSAGE');
        await dest.symlink(tmp, target.toString('utf8'));
        await dest.rename(tmp, rel);
        area.cache.forget(rel);
      } else {
        await this.#receiveFile(ctx, area, dest, tmp, rel);
      }
    } catch (e) {
      await dest.remove(tmp).catch(() => {});
      throw e;
    }
    ctx.status = 204;
  }

  async #receiveFile(ctx: Context, area: Area, dest: Destination, tmp: RelPath, rel: RelPath): Promise<void> {
    const lengthHeader = ctx.get('content-length');
    const declared = lengthHeader === '' ? undefined : Number(lengthHeader);
    const hasher = new HashingPassThrough(area.config.checksum);
    const abort = new AbortController();
    const onClose = () => {
      if (!ctx.req.readableEnded) abort.abort();
    };
    ctx.req.once('close', onClose);
    ctx.req.once('error', (e) => hasher.destroy(e));
    // The backend may still be opening its file when the upload breaks; it sees the
    // error when it reads the stream, so an unobserved 'error' event must not be fatal.
    hasher.on('error', () => {});
    ctx.req.pipe(hasher);
    try {
      // A chunked body has no size until it ends: the size the backend checks is then the
      // count of what arrived (read after the stream ends), which is the truth by definition.
      const options = {
        get size() {
          return declared ?? hasher.bytes;
        },
        signal: abort.signal,
      };
      await dest.write(tmp, hasher, options);
    } catch (e) {
      if (abort.signal.aborted) throw new HttpFailure(400, 'Upload interrupted.\n', 'ETRANSIENT');
      throw e;
    } finally {
      ctx.req.off('close', onClose);
    }
    const h = hasher.result();
    if (!this.#classic) {
      const want = ctx.get(H_SHA256).toLowerCase();
      if (want && want !== h.sha256) throw new HttpFailure(400, 'Content does not match its SHA-256.\n', 'EINTEGRITY');
    }
    // Without a mode header a new file gets the classic server's 0666 &^ umask, not the
    // temporary file's private 0600.
    const metadata = this.#classic ? {} : parseMetadataHeaders(ctx);
    metadata.mode ??= 0o666 & ~process.umask();
    await dest.setMetadata(tmp, metadata);
    // restic's rule: the content is durable before its name appears, the name after the rename.
    await dest.sync?.([tmp]);
    await dest.rename(tmp, rel);
    await dest.sync?.([parentPath(rel)]);
    area.cache.forget(rel);
    if (area.config.checksum) {
      // What we just wrote is what we hashed: remember it so the next listing need not re-read it.
      // The racy-timestamp rule does not apply here: the bytes were hashed as they arrived
      // and the version token (ctime, inode) names exactly the rename that put them there,
      // so the record is dated as if made after the window.
      const entry = await dest.stat(rel).catch(() => undefined);
      if (entry && entry.kind === 'file' && entry.size === h.bytes) {
        area.cache.record(entry, h, (entry.changedAtMs ?? Date.now()) + RACY_WINDOW_MS);
      }
    }
  }

  async #mkdirParents(dest: Destination, rel: RelPath): Promise<void> {
    for (const dir of ancestors(rel)) {
      try {
        await dest.mkdir(dir);
      } catch (e) {
        if (isBitfogError(e, 'EEXIST', 'ENOTDIR')) throw new HttpFailure(409, 'A parent is not a directory.\n', 'ENOTDIR');
        throw e;
      }
    }
  }

  // ---------------------------------------------------------------- DELETE, POST

  async #delete(ctx: Context, area: Area & { backend: Destination }, rel: RelPath, query: URLSearchParams): Promise<void> {
    try {
      if (!this.#classic && query.has('rmdir')) await area.backend.rmdir(rel);
      else await area.backend.remove(rel);
    } catch (e) {
      const err = toBitfogError(e);
      if (err.code === 'EISDIR') throw notAFile();
      if (err.code === 'ENOENT') throw new HttpFailure(404, 'Error deleting file: no such file or directory\n', 'ENOENT');
      throw err;
    }
    area.cache.forget(rel);
    ctx.status = 204;
  }

  async #post(ctx: Context, area: Area & { backend: Destination }, rel: RelPath, query: URLSearchParams): Promise<void> {
    const renameTo = query.get('rename');
    if (renameTo !== null) {
      const target = parseTarget(`/${encodeURIComponent(area.name)}/${renameTo.split('/').map(encodeURIComponent).join('/')}`);
      if (target.kind !== 'file') throw badPath();
      const from = await area.backend.stat(rel).catch((e: unknown) => {
        throw failureFor(e);
      });
      if (from.kind === 'directory') throw notAFile();
      await this.#mkdirParents(area.backend, target.rel);
      const to = await area.backend.stat(target.rel).catch(() => undefined);
      if (to?.kind === 'directory') throw notAFile();
      await area.backend.rename(rel, target.rel);
      area.cache.forget(rel);
      area.cache.forget(target.rel);
      ctx.status = 204;
      return;
    }
    if (query.has('meta')) {
      await area.backend.setMetadata(rel, parseMetadataHeaders(ctx));
      ctx.status = 204;
      return;
    }
    throw new HttpFailure(400, 'Unknown request.\n', 'EUSAGE');
  }

  // ---------------------------------------------------------------- rdiff

  async #rdiffSignature(ctx: Context, area: Area, rel: RelPath, size: number): Promise<void> {
    const dir = await fsp.mkdtemp(path.join(this.tempRoot, 'sig-'));
    const out = path.join(dir, 'sig');
    try {
      // The content arrives on stdin (through the backend), where librsync cannot see the
      // size it derives the block length from; pass librsync's own choice explicitly so
      // the signature is byte for byte what `rdiff signature FILE` gives.
      const args = ['signature', '-b', String(rdiffBlockLength(size)), '-S', '32', '-', out];
      await runRdiff(this.#rdiff, args, await area.backend.read(rel));
    } catch (e) {
      await fsp.rm(dir, { recursive: true, force: true });
      throw rdiffFailure(e);
    }
    await sendTempFile(ctx, out, dir);
  }

  async #patch(ctx: Context, area: Area, rel: RelPath, query: URLSearchParams): Promise<void> {
    const mode = query.get('rdiff') ?? '';
    if (mode === 'patch') {
      this.#writable(area, 'PATCH');
      this.#authorize(ctx, area, 'write');
    } else if (mode === 'delta') {
      this.#authorize(ctx, area, 'read');
    } else {
      throw new HttpFailure(400, `Invalid mode: ${mode}`, 'EUSAGE', 'octet');
    }
    const entry = await this.#statFile(area, rel);
    const dir = await fsp.mkdtemp(path.join(this.tempRoot, `${mode}-`));
    let keep = false;
    try {
      const body = path.join(dir, 'body');
      await receiveToFile(ctx.req, body, this.options.maxRdiffBodyBytes ?? MAX_RDIFF_BODY);
      if (mode === 'delta') {
        const out = path.join(dir, 'delta');
        await runRdiff(this.#rdiff, ['delta', body, '-', out], await area.backend.read(rel)).catch((e) => {
          throw rdiffFailure(e);
        });
        keep = true;
        await sendTempFile(ctx, out, dir);
        return;
      }
      // rdiff needs random access to the basis: copy it out of the backend first.
      const basis = path.join(dir, 'basis');
      await pipeline(await area.backend.read(rel), createWriteStream(basis));
      const result = path.join(dir, 'result');
      await runRdiff(this.#rdiff, ['patch', basis, body, result]).catch(() => {
        throw new HttpFailure(500, 'Error apply patch', 'EIO', 'octet');
      });
      const dest = area.backend as Destination;
      const tmp = tempSiblingOf(rel);
      try {
        const size = (await fsp.stat(result)).size;
        await dest.write(tmp, createReadStream(result), { size });
        if (entry.mode !== undefined) await dest.setMetadata(tmp, { mode: entry.mode });
        await dest.rename(tmp, rel);
        area.cache.forget(rel);
      } catch (e) {
        await dest.remove(tmp).catch(() => {});
        throw e;
      }
      ctx.status = 204;
    } finally {
      if (!keep) await fsp.rm(dir, { recursive: true, force: true });
    }
  }

  get #rdiff(): string {
    return this.options.rdiffCommand ?? 'rdiff';
  }
}

/** librsync 2.x's block length for a file of `size` bytes: 256 up to 64 KiB, else √size rounded down to a multiple of 128. */
export function rdiffBlockLength(size: number): number {
  if (size <= 256 * 256) return 256;
  return Math.floor(Math.floor(Math.sqrt(size)) / 128) * 128;
}

function cannot(method: string, code: ErrorCode = 'EUSAGE'): HttpFailure {
  return new HttpFailure(405, `Can't ${method.replace(/[^A-Za-z-]/g, '')} here.\n`, code, 'octet');
}

function rdiffFailure(e: unknown): HttpFailure {
  if (e instanceof HttpFailure) return e;
  if (isBitfogError(e, 'EOPNOTSUPP')) return new HttpFailure(501, 'rdiff is not available on this server.\n', 'EOPNOTSUPP');
  if (isBitfogError(e, 'ENOENT')) return new HttpFailure(400, 'Error getting file info.\n', 'ENOENT', 'octet');
  return new HttpFailure(500, 'rdiff failed.\n', 'EIO');
}

/** The one place that maps error codes onto statuses, with fixed bodies (never a server path). */
function failureFor(e: unknown): HttpFailure {
  if (e instanceof HttpFailure) return e;
  const err: BitfogError = toBitfogError(e);
  switch (err.code) {
    case 'ENOENT':
      return new HttpFailure(404, 'Not found.\n', 'ENOENT');
    case 'EISDIR':
      return notAFile();
    case 'ENOTDIR':
      return new HttpFailure(409, 'A parent is not a directory.\n', 'ENOTDIR');
    case 'EEXIST':
      return new HttpFailure(412, 'Already exists.\n', 'EEXIST');
    case 'ENOTEMPTY':
      return new HttpFailure(409, 'Directory not empty.\n', 'ENOTEMPTY');
    case 'EACCES':
      return new HttpFailure(403, 'Permission denied.\n', 'EACCES');
    case 'EROFS':
      return new HttpFailure(405, 'Read-only.\n', 'EROFS');
    case 'ENOSPC':
      return new HttpFailure(507, 'No space left on the server.\n', 'ENOSPC');
    case 'EINTEGRITY':
      return new HttpFailure(400, 'Content does not match its declared size or hash.\n', 'EINTEGRITY');
    case 'EBADPATH':
      return badPath();
    case 'EOPNOTSUPP':
      return new HttpFailure(400, 'Not supported for this entry.\n', 'EOPNOTSUPP');
    case 'ETRANSIENT':
    case 'EUNREACHABLE':
      return new HttpFailure(503, 'Storage temporarily unavailable.\n', 'ETRANSIENT');
    default:
      return new HttpFailure(500, 'Internal error.\n', 'EIO');
  }
}

function sameToken(expected: string, given: string): boolean {
  const a = createHash('sha256').update(expected).digest();
  const b = createHash('sha256').update(given).digest();
  return timingSafeEqual(a, b);
}

/** A strong ETag from the backend's version token (or size and mtime when it has none). */
function etagOf(e: Entry): string {
  const basis = e.version ?? `${e.size}:${e.mtimeMs ?? ''}`;
  return `"${createHash('sha256').update(basis).digest('base64url').slice(0, 22)}"`;
}

/** One `bytes=` range; undefined to ignore the header (multiple ranges, junk). */
export function parseRange(header: string, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size : Math.min(size, Number(m[2]) + 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function parseMetadataHeaders(ctx: Context): { mode?: number; mtimeMs?: number } {
  const out: { mode?: number; mtimeMs?: number } = {};
  const mode = ctx.get(H_MODE);
  if (mode) {
    if (!/^[0-7]{1,4}$/.test(mode)) throw new HttpFailure(400, `Invalid ${H_MODE}.\n`, 'EUSAGE');
    out.mode = parseInt(mode, 8);
  }
  const ns = ctx.get(H_MTIME_NS);
  if (ns) {
    if (!/^-?\d{1,20}$/.test(ns)) throw new HttpFailure(400, `Invalid ${H_MTIME_NS}.\n`, 'EUSAGE');
    out.mtimeMs = Number(BigInt(ns) / 1000n) / 1000;
  }
  return out;
}

/** A temporary sibling, named as the core names them (`.bitfog-tmp-<16 hex>-…`), hidden from listings. */
function tempSiblingOf(rel: RelPath): RelPath {
  const hint = baseName(rel).replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40);
  const rand = createHash('sha256').update(`${Math.random()}${process.hrtime.bigint()}`).digest('hex').slice(0, 16);
  return childPath(parentPath(rel), `.bitfog-tmp-${rand}-${hint}`);
}

/** Streams bytes through while computing their SHA-256 (and CRC-64 when asked) and counting them. */
class HashingPassThrough extends Transform {
  bytes = 0;
  readonly #sha = createHash('sha256');
  readonly #crc: Crc64 | undefined;

  constructor(crc: boolean) {
    super({ highWaterMark: 1 << 20 });
    this.#crc = crc ? new Crc64() : undefined;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (e?: Error | null, d?: Buffer) => void): void {
    this.bytes += chunk.length;
    this.#sha.update(chunk);
    this.#crc?.update(chunk);
    done(null, chunk);
  }

  result(): CachedHashes & { bytes: number } {
    return { sha256: this.#sha.digest('hex'), crc64: this.#crc?.digest() ?? 0n, bytes: this.bytes };
  }
}

async function hashStream(stream: Readable): Promise<CachedHashes & { bytes: number }> {
  const sha = createHash('sha256');
  const crc = new Crc64();
  let bytes = 0;
  for await (const chunk of chunksOf(stream)) {
    sha.update(chunk);
    crc.update(chunk);
    bytes += chunk.length;
  }
  return { sha256: sha.digest('hex'), crc64: crc.digest(), bytes };
}

/**
 * A request body of at most `limit` bytes. Past the limit it rejects with 413 and lets the
 * rest of the body be read and dropped: destroying the request (as leaving a `for await`
 * early does) would close the connection before the 413 could be sent.
 */
function readSmallBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    const done = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    const onData = (c: Buffer) => {
      n += c.length;
      if (n <= limit) {
        chunks.push(c);
        return;
      }
      done();
      req.resume(); // the rest is read and dropped while the answer goes out
      reject(new HttpFailure(413, 'Body too large.\n', 'EUSAGE'));
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks));
    };
    const onError = (e: Error) => {
      done();
      reject(e);
    };
    const onClose = () => {
      done();
      reject(new HttpFailure(400, 'Request body cut short.\n', 'EUSAGE'));
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * A request body into `file`, at most `limit` bytes. A body declared larger is refused with
 * 413 before anything is read; one that grows past the limit stops being written and is
 * refused with 413 too. Either way the rest is read and dropped while the answer goes out
 * (see readSmallBody): destroying the request would close the connection unanswered.
 */
async function receiveToFile(req: http.IncomingMessage, file: string, limit: number): Promise<void> {
  const tooLarge = () => new HttpFailure(413, 'Body too large.\n', 'EUSAGE');
  const declared = Number(req.headers['content-length'] ?? NaN);
  if (declared > limit) {
    req.resume();
    throw tooLarge();
  }
  const out = createWriteStream(file);
  let n = 0;
  const counter = new PassThrough();
  const stop = (error: Error) => {
    req.unpipe(counter);
    req.off('data', count);
    req.off('close', onClose);
    req.resume(); // the rest is read and dropped while the answer goes out
    counter.destroy(error);
  };
  const count = (c: Buffer) => {
    n += c.length;
    if (n > limit) stop(tooLarge());
  };
  const onClose = () => {
    if (!req.complete) stop(new HttpFailure(400, 'Request body cut short.\n', 'EUSAGE'));
  };
  req.on('data', count);
  req.on('close', onClose);
  req.once('error', (e) => counter.destroy(e));
  req.pipe(counter);
  try {
    await pipeline(counter, out);
  } finally {
    req.off('data', count);
    req.off('close', onClose);
  }
}

/** Answers with a temporary file's content and removes its directory once sent. */
async function sendTempFile(ctx: Context, file: string, dir: string): Promise<void> {
  const size = (await fsp.stat(file)).size;
  ctx.status = 200;
  ctx.type = OCTET;
  ctx.length = size;
  const stream = createReadStream(file);
  const cleanup = () => void fsp.rm(dir, { recursive: true, force: true });
  ctx.res.once('close', cleanup);
  ctx.body = stream;
}

/** Silence longer than this in a listing (hashing a huge file) is filled with a newline. */
const KEEPALIVE_MS = 10_000;

/**
 * Passes the listing's chunks on, and writes a bare newline whenever nothing came for
 * KEEPALIVE_MS: hashing a multi-terabyte file takes a while, and neither the idle timeout
 * nor a proxy may take the silence for a dead connection. Whitespace between records is
 * valid for every listing reader (Go's json.Decoder skips it; so does ours).
 */
async function* withKeepAlive(lines: AsyncIterator<string>): AsyncGenerator<string> {
  let pending = lines.next();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<'tick'>((resolve) => {
      timer = setTimeout(() => resolve('tick'), KEEPALIVE_MS);
    });
    const r = await Promise.race([pending, tick]);
    clearTimeout(timer);
    if (r === 'tick') {
      yield '\n';
      continue;
    }
    if (r.done) return;
    if (r.value) yield r.value;
    pending = lines.next();
  }
}

/**
 * A body stream that fails after the status line was sent cannot change the status any
 * more: the connection is cut so that the client sees a truncated transfer, not a short
 * success (and, with a chunked body, no final chunk).
 */
/** Files at least this large are sent through reused buffers (see sendFile). */
const SEND_POOLED_MIN_BYTES = 1024 * 1024;
const SEND_BUFFER_BYTES = 512 * 1024;
const SEND_BUFFERS = 4;
/** Send buffers kept between responses, for any of them (new ones are what costs). */
const SPARE_SEND_BUFFERS = 32;
const spareSendBuffers: Buffer[] = [];

/**
 * Sends `start`..`end` of an open file as the response body through a few buffers that
 * are refilled as soon as the socket has taken them: a stream would allocate new memory for
 * every chunk, and new memory costs more than sending it (measured over loopback: 1 GiB
 * in 1.6–3.1 s through a file stream, 1.0–1.1 s through four reused buffers, as nginx's
 * sendfile). A read error, or a file that ends early, cuts the connection: the client sees
 * a short body, never a wrong one. Closes the file.
 */
async function sendFile(res: ServerResponse, file: OpenFile, start: number, end: number): Promise<void> {
  const free: Buffer[] = [];
  let finished = false;
  /** To the spares: buffers free now, and each one still being written once its write is done. */
  const giveBack = () => {
    for (const b of free.splice(0)) if (spareSendBuffers.length < SPARE_SEND_BUFFERS) spareSendBuffers.push(b);
  };
  let writing = 0;
  let wake: (() => void) | undefined;
  const onClose = () => wake?.();
  res.once('close', onClose);
  try {
    let position = start;
    while (position < end) {
      while (writing >= SEND_BUFFERS && !res.destroyed) await new Promise<void>((r) => (wake = r));
      if (res.destroyed) return;
      const buffer = free.pop() ?? spareSendBuffers.pop() ?? Buffer.allocUnsafeSlow(SEND_BUFFER_BYTES);
      const n = await file.read(buffer, 0, Math.min(buffer.length, end - position), position);
      if (n === 0) {
        free.push(buffer);
        break;
      }
      position += n;
      writing++;
      res.write(n === buffer.length ? buffer : buffer.subarray(0, n), (err) => {
        writing--;
        if (!err) {
          free.push(buffer);
          if (finished) giveBack();
        }
        wake?.();
      });
    }
    if (position < end) res.destroy();
    else res.end();
  } catch {
    res.destroy();
  } finally {
    res.off('close', onClose);
    finished = true;
    giveBack();
    await file.close();
  }
}

function cutOnError(ctx: Context, stream: Readable): Readable {
  stream.once('error', () => ctx.req.socket?.destroy());
  return stream;
}

function safeForLog(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0').toUpperCase()}`);
}
