/**
 * The dashboard of `bitfog serve`: one koa middleware mounted before the classic handlers.
 *
 *   GET /  with Accept: text/html        the page (browsers). Any other GET / — no Accept,
 *                                        `*∕*`, application/json — falls through to the
 *                                        classic handler and gets the JSON array of areas.
 *   GET /.bitfog/dashboard/api/areas     per area: files, bytes, last change, writable,
 *                                        hash-cache state
 *   GET /.bitfog/dashboard/api/activity  current transfers, recent requests, errors
 *   GET /.bitfog/dashboard/events        the same, pushed as server-sent events
 *   GET /.bitfog/dashboard/assets/…      the page's stylesheet and scripts
 *
 * Area names never start with "." (config.ts refuses them), so `/.bitfog/…` can never be an
 * area. Every other request passes through, and is watched: while it runs it is a current
 * transfer (its bytes counted from the socket, so the upload stream is never touched), and
 * when it ends it joins the recent requests (and the errors when its status is 400 or more,
 * or it was cut off).
 *
 * The dashboard is off with --classic and when any token protects the server: a browser
 * page cannot send a bearer token, and the activity it shows names files.
 */
import type { Context, Middleware, Next } from 'koa';
import type { Source, Destination } from '../../core/types.ts';
import { ASSETS } from './assets.ts';
import { sendAsset, sendError, sendJson } from './http.ts';

export const DASHBOARD_PREFIX = '/.bitfog/dashboard/';

/** What the dashboard needs to know of an area (a view of the server's own records). */
export interface DashboardArea {
  name: string;
  url: string;
  writable: boolean;
  checksum: boolean;
  backend: Source | Destination;
  /** The area's hash cache: entries held, and its file (undefined = memory only). */
  cache: { readonly size: number; readonly file: string | undefined };
}

export interface AreaSummary {
  name: string;
  writable: boolean;
  checksum: boolean;
  /** `counting` while the first walk runs; `stale` after a write until the next walk. */
  state: 'counting' | 'ready' | 'stale' | 'error';
  files: number;
  bytes: number;
  directories: number;
  /** Newest file modification time seen, ISO. */
  lastChange?: string;
  countedAt?: string;
  error?: string;
  hashCache: { kind: 'disk' | 'memory' | 'off'; entries: number };
}

export interface Transfer {
  id: number;
  method: string;
  path: string;
  area?: string;
  startedAt: string;
  /** Bytes received so far, request headers included. */
  bytesIn: number;
  /** Bytes sent so far, response headers included. */
  bytesOut: number;
  /** Content-Length of the request body, when it has one. */
  expectedIn?: number;
}

export interface FinishedRequest extends Transfer {
  status: number;
  ms: number;
  aborted: boolean;
}

export interface Activity {
  current: Transfer[];
  recent: FinishedRequest[];
  errors: FinishedRequest[];
  totals: { requests: number; bytesIn: number; bytesOut: number; errors: number };
}

const RECENT = 50;
const ERRORS = 20;
/** How often live activity is pushed while something changes. */
const TICK_MS = 500;
/** Area counts older than this are refreshed when someone looks. */
const RECOUNT_MS = 60_000;
/** Longest request path shown (a hostile client may send a huge one). */
const MAX_SHOWN_PATH = 300;

interface Live {
  t: Transfer;
  socket: { bytesRead: number; bytesWritten: number };
  inBefore: number;
  outBefore: number;
}

/** Watches requests: current ones with their bytes so far, and the last ones finished. */
class ActivityLog {
  #next = 1;
  readonly #live = new Map<number, Live>();
  readonly #recent: FinishedRequest[] = [];
  readonly #ended = new WeakMap<object, { in: number; out: number }>();
  readonly #errors: FinishedRequest[] = [];
  readonly totals = { requests: 0, bytesIn: 0, bytesOut: 0, errors: 0 };
  /** Bumped on every change; the event stream sends only when it moved. */
  version = 0;
  onFinished: ((r: FinishedRequest) => void) | undefined;

  watch(ctx: Context): void {
    const socket = ctx.req.socket;
    const rawPath = (ctx.req.url ?? '/').split('?')[0]!;
    const t: Transfer = {
      id: this.#next++,
      method: ctx.method,
      path: shownPath(rawPath),
      ...areaOf(rawPath),
      startedAt: new Date().toISOString(),
      bytesIn: 0,
      bytesOut: 0,
    };
    const len = Number(ctx.get('content-length'));
    if (ctx.get('content-length') !== '' && Number.isSafeInteger(len)) t.expectedIn = len;
    // Counted from where the previous request on this connection ended (0 for a new one):
    // by now the parser may already have read the first part of the body.
    const ended = this.#ended.get(socket);
    const live: Live = { t, socket, inBefore: ended?.in ?? 0, outBefore: ended?.out ?? socket.bytesWritten };
    this.#live.set(t.id, live);
    this.version++;
    const started = process.hrtime.bigint();
    ctx.res.once('close', () => {
      this.#sample(live);
      this.#ended.set(socket, { in: socket.bytesRead, out: socket.bytesWritten });
      this.#live.delete(t.id);
      const done: FinishedRequest = {
        ...t,
        status: ctx.status,
        ms: Math.round(Number(process.hrtime.bigint() - started) / 1e6),
        aborted: !ctx.res.writableFinished,
      };
      this.totals.requests++;
      this.totals.bytesIn += done.bytesIn;
      this.totals.bytesOut += done.bytesOut;
      push(this.#recent, done, RECENT);
      if (done.status >= 400 || done.aborted) {
        this.totals.errors++;
        push(this.#errors, done, ERRORS);
      }
      this.version++;
      this.onFinished?.(done);
    });
  }

  #sample(live: Live): boolean {
    const inn = Math.max(0, live.socket.bytesRead - live.inBefore);
    const out = Math.max(0, live.socket.bytesWritten - live.outBefore);
    const moved = inn !== live.t.bytesIn || out !== live.t.bytesOut;
    live.t.bytesIn = inn;
    live.t.bytesOut = out;
    return moved;
  }

  /** Re-reads the byte counters of running requests; true when any moved. */
  sample(): boolean {
    let moved = false;
    for (const live of this.#live.values()) if (this.#sample(live)) moved = true;
    if (moved) this.version++;
    return moved;
  }

  snapshot(): Activity {
    return {
      current: [...this.#live.values()].map((l) => ({ ...l.t })),
      recent: [...this.#recent].reverse(),
      errors: [...this.#errors].reverse(),
      totals: { ...this.totals },
    };
  }
}

function push<T>(list: T[], item: T, max: number): void {
  list.push(item);
  if (list.length > max) list.splice(0, list.length - max);
}

function shownPath(raw: string): string {
  let p: string;
  try {
    p = decodeURIComponent(raw);
  } catch {
    p = raw;
  }
  // Control characters would garble the page's tables; show them escaped.
  p = p.replace(/[\u0000-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return p.length > MAX_SHOWN_PATH ? `${p.slice(0, MAX_SHOWN_PATH)}…` : p;
}

function areaOf(raw: string): { area?: string } {
  const seg = raw.split('/')[1];
  if (!seg) return {};
  try {
    return { area: decodeURIComponent(seg) };
  } catch {
    return {};
  }
}

/** Counts of each area, walked in the background and refreshed after writes. */
class AreaCounts {
  readonly #summaries = new Map<string, AreaSummary>();
  readonly #walking = new Map<string, Promise<void>>();
  version = 0;

  constructor(readonly areas: DashboardArea[]) {
    for (const a of areas) {
      this.#summaries.set(a.name, {
        name: a.name, writable: a.writable, checksum: a.checksum, state: 'counting', files: 0, bytes: 0, directories: 0,
        hashCache: cacheState(a),
      });
    }
  }

  /** The summaries now; starts a walk for areas never counted, written to, or counted long ago. */
  summaries(): AreaSummary[] {
    for (const a of this.areas) {
      const s = this.#summaries.get(a.name)!;
      s.hashCache = cacheState(a);
      const old = s.countedAt !== undefined && Date.now() - Date.parse(s.countedAt) > RECOUNT_MS;
      if ((s.state !== 'ready' || old) && !this.#walking.has(a.name)) this.#walk(a, s);
    }
    return this.areas.map((a) => ({ ...this.#summaries.get(a.name)! }));
  }

  markChanged(name: string): void {
    const s = this.#summaries.get(name);
    if (s && s.state === 'ready') {
      s.state = 'stale';
      this.version++;
    }
  }

  #walk(area: DashboardArea, s: AreaSummary): void {
    const run = (async () => {
      let files = 0;
      let bytes = 0;
      let directories = 0;
      let newest = 0;
      try {
        for await (const e of area.backend.list()) {
          if (e.kind === 'directory') directories++;
          else {
            files++;
            if (e.kind === 'file') bytes += e.size;
          }
          if (e.mtimeMs !== undefined && e.mtimeMs > newest) newest = e.mtimeMs;
          // Show progress on a large area while it is being walked.
          if (s.state === 'counting' && (files + directories) % 10_000 === 0) {
            Object.assign(s, { files, bytes, directories });
            this.version++;
          }
        }
        Object.assign(s, { files, bytes, directories, state: 'ready', countedAt: new Date().toISOString() });
        if (newest > 0) s.lastChange = new Date(newest).toISOString();
        else delete s.lastChange;
        delete s.error;
      } catch (e) {
        s.state = 'error';
        s.error = (e as { code?: string }).code ?? 'error';
      } finally {
        this.#walking.delete(area.name);
        this.version++;
      }
    })();
    this.#walking.set(area.name, run);
  }
}

function cacheState(a: DashboardArea): AreaSummary['hashCache'] {
  return { kind: !a.checksum ? 'off' : a.cache.file ? 'disk' : 'memory', entries: a.cache.size };
}

/** True when the Accept header asks for HTML (a browser), not for JSON or anything. */
export function wantsHtml(accept: string): boolean {
  for (const part of accept.toLowerCase().split(',')) {
    const [type, ...params] = part.trim().split(';');
    if (type?.trim() !== 'text/html') continue;
    const q = params.map((p) => /^\s*q\s*=\s*([\d.]+)/.exec(p)).find(Boolean);
    return !q || Number(q[1]) > 0;
  }
  return false;
}

export interface ServeDashboard {
  middleware: Middleware;
  /** Stops the event stream timer (the server closes the connections). */
  close(): void;
}

/**
 * The dashboard middleware for `areas`. Mount it before the classic handlers: it answers
 * its own paths and the browser's `GET /`, and watches every other request on its way.
 */
export function serveDashboard(areas: DashboardArea[]): ServeDashboard {
  const activity = new ActivityLog();
  const counts = new AreaCounts(areas);
  const streams = new Set<(event: string, data: unknown) => void>();
  activity.onFinished = (r) => {
    if (r.area && r.method !== 'GET' && r.method !== 'HEAD') counts.markChanged(r.area);
  };

  let sentActivity = -1;
  let sentAreas = -1;
  let lastBeat = 0;
  const timer = setInterval(() => {
    if (streams.size === 0) return;
    activity.sample();
    const now = Date.now();
    if (activity.version !== sentActivity) {
      sentActivity = activity.version;
      for (const send of streams) send('activity', activity.snapshot());
    }
    if (counts.version !== sentAreas) {
      sentAreas = counts.version;
      const s = counts.summaries();
      for (const send of streams) send('areas', s);
    }
    if (now - lastBeat > 15_000) {
      lastBeat = now;
      for (const send of streams) send('ping', {});
    }
  }, TICK_MS);
  timer.unref();

  const assets: Record<string, { type: string; body: string }> = {};
  for (const [p, a] of Object.entries(ASSETS.files)) assets[`${DASHBOARD_PREFIX}${p.slice(1)}`] = a;

  const events = (ctx: Context) => {
    ctx.req.socket.setTimeout(0);
    ctx.req.socket.setNoDelay(true);
    ctx.respond = false;
    const res = ctx.res;
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    const send = (event: string, data: unknown) => {
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    };
    send('areas', counts.summaries());
    send('activity', activity.snapshot());
    streams.add(send);
    res.once('close', () => streams.delete(send));
  };

  const middleware: Middleware = async (ctx: Context, next: Next) => {
    const rawPath = (ctx.req.url ?? '/').split('?')[0]!;
    const read = ctx.method === 'GET' || ctx.method === 'HEAD';
    if (rawPath.startsWith(DASHBOARD_PREFIX)) {
      if (!read) {
        ctx.status = 405;
        ctx.set('Allow', 'GET, HEAD');
        return;
      }
      const asset = assets[rawPath];
      try {
        if (asset) sendAsset(ctx, asset.type, asset.body);
        else if (rawPath === `${DASHBOARD_PREFIX}api/areas`) sendJson(ctx, counts.summaries());
        else if (rawPath === `${DASHBOARD_PREFIX}api/activity`) {
          activity.sample();
          sendJson(ctx, activity.snapshot());
        } else if (rawPath === `${DASHBOARD_PREFIX}events`) events(ctx);
        else sendJson(ctx, { error: 'ENOENT', message: 'no such dashboard endpoint' }, 404);
      } catch (e) {
        sendError(ctx, e);
      }
      return;
    }
    if (rawPath === '/' && read && wantsHtml(ctx.get('accept'))) {
      ctx.set('Vary', 'Accept');
      sendAsset(ctx, 'text/html; charset=utf-8', ASSETS.serveHtml);
      return;
    }
    activity.watch(ctx);
    await next();
  };

  return { middleware, close: () => clearInterval(timer) };
}
