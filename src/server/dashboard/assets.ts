/** Every file the dashboards serve, from memory (the bundled CLI carries them). */
import { COMMON_JS, CSS } from './assets/common.ts';
import { SERVE_HTML, SERVE_JS } from './assets/serve.ts';
import { SPOOL_HTML, SPOOL_JS } from './assets/spool.ts';

export interface Asset {
  type: string;
  body: string;
}

export const ASSETS = {
  spoolHtml: SPOOL_HTML,
  serveHtml: SERVE_HTML,
  /** By path below the page's base (`/` for `bitfog ui`, `/.bitfog/dashboard/` for `serve`). */
  files: {
    '/assets/dashboard.css': { type: 'text/css; charset=utf-8', body: CSS },
    '/assets/common.js': { type: 'text/javascript; charset=utf-8', body: COMMON_JS },
    '/assets/spool.js': { type: 'text/javascript; charset=utf-8', body: SPOOL_JS },
    '/assets/serve.js': { type: 'text/javascript; charset=utf-8', body: SERVE_JS },
  } as Record<string, Asset>,
};
