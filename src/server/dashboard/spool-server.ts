/**
 * `bitfog ui`: a page about one spool, served on loopback. The page is static (HTML, CSS
 * and a script served from memory); the numbers come from the JSON endpoints below, each
 * aggregated or paged on the server (see spool-view.ts and docs/dashboard.md).
 *
 *   GET /                                 the page
 *   GET /api/status                       spoolStatus, lists replaced by counts
 *   GET /api/left-by-folder?prefix=&depth=   what is left, per folder (≤ 50 rows + rest)
 *   GET /api/carried-by-folder?prefix=&depth=   what the spool carries, per folder
 *   GET /api/sizes                        what is left and carried, by file size
 *   GET /api/trips?page=                  planned trips with counts and bytes
 *   GET /api/trips?trip=N&page=           the files of planned trip N, in order
 *   GET /api/too-large?page=              files larger than the spool
 *   GET /api/conflicts?page=              conflicts with reasons
 *   GET /api/skipped?page=                skipped entries with reasons
 *   GET /api/history?page=                trips from the journal (page 1 = latest)
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Koa from 'koa';
import type { Context } from 'koa';
import { bitfogError } from '../../core/errors.ts';
import { ASSETS } from './assets.ts';
import { intParam, loopbackHost, sendAsset, sendError, sendJson, stringParam } from './http.ts';
import { SpoolView } from './spool-view.ts';

export interface SpoolDashboardOptions {
  spool: string;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0: a free port. */
  port?: number;
}

export interface SpoolDashboard {
  readonly url: string;
  readonly view: SpoolView;
  close(): Promise<void>;
}

/** Deepest folder grouping accepted by the folder endpoints. */
const MAX_DEPTH = 32;

type Route = (ctx: Context, view: SpoolView) => Promise<void>;

const folderRoute = (which: 'left' | 'carried'): Route => async (ctx, view) => {
  const prefix = stringParam(ctx, 'prefix').replace(/^\/+|\/+$/g, '');
  const depth = Math.max(1, intParam(ctx, 'depth', 1, MAX_DEPTH));
  sendJson(ctx, await view.folders(which, prefix, depth));
};

const ROUTES: Record<string, Route> = {
  '/api/status': async (ctx, view) => sendJson(ctx, await view.status()),
  '/api/left-by-folder': folderRoute('left'),
  '/api/carried-by-folder': folderRoute('carried'),
  '/api/sizes': async (ctx, view) => sendJson(ctx, await view.sizes()),
  '/api/trips': async (ctx, view) => {
    const page = intParam(ctx, 'page', 1);
    if (ctx.query.trip === undefined) {
      sendJson(ctx, await view.trips(page));
      return;
    }
    const files = await view.tripFiles(intParam(ctx, 'trip', 0), page);
    if (!files) throw bitfogError('ENOENT', `no planned trip ${stringParam(ctx, 'trip')}`);
    sendJson(ctx, files);
  },
  '/api/too-large': async (ctx, view) => sendJson(ctx, await view.tooLarge(intParam(ctx, 'page', 1))),
  '/api/conflicts': async (ctx, view) => sendJson(ctx, await view.conflicts(intParam(ctx, 'page', 1))),
  '/api/skipped': async (ctx, view) => sendJson(ctx, await view.skipped(intParam(ctx, 'page', 1))),
  '/api/history': async (ctx, view) => sendJson(ctx, await view.history(intParam(ctx, 'page', 1))),
};

/** The koa app of the spool page (exported for tests and embedding). */
export function spoolDashboardApp(view: SpoolView): Koa {
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx) => {
    if (!loopbackHost(ctx)) {
      ctx.status = 421;
      ctx.body = 'this page answers only to 127.0.0.1 or localhost\n';
      return;
    }
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      ctx.status = 405;
      ctx.set('Allow', 'GET, HEAD');
      return;
    }
    if (ctx.path === '/') {
      sendAsset(ctx, 'text/html; charset=utf-8', ASSETS.spoolHtml);
      return;
    }
    const asset = ASSETS.files[ctx.path];
    if (asset) {
      sendAsset(ctx, asset.type, asset.body);
      return;
    }
    const route = ROUTES[ctx.path];
    if (!route) {
      sendJson(ctx, { error: 'ENOENT', message: 'no such page or endpoint' }, 404);
      return;
    }
    try {
      await route(ctx, view);
    } catch (e) {
      sendError(ctx, e);
    }
  });
  return app;
}

/**
 * Serves the page for `spool` until `close()`. Checks the spool can be read first (throws
 * ENOENT or EBADSPOOL before listening), then the listen error (EADDRINUSE).
 */
export async function startSpoolDashboard(options: SpoolDashboardOptions): Promise<SpoolDashboard> {
  const view = new SpoolView(options.spool);
  await view.current();
  const server = http.createServer(spoolDashboardApp(view).callback());
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    view,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}
