/**
 * Small pieces both dashboards share: JSON and asset answers, query parsing, and the
 * headers that keep the pages self-contained (a Content-Security-Policy allowing nothing
 * but this server, so a page can never load from, or send to, anywhere else).
 */
import type { Context } from 'koa';
import { isBitfogError } from '../../core/errors.ts';

/** Allows only this origin: no CDN, no inline script, no outside connections. */
export const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

export function sendJson(ctx: Context, value: unknown, status = 200): void {
  ctx.status = status;
  ctx.set('Cache-Control', 'no-store');
  ctx.type = 'application/json; charset=utf-8';
  ctx.body = JSON.stringify(value);
}

export function sendAsset(ctx: Context, type: string, body: string): void {
  ctx.status = 200;
  ctx.set('Cache-Control', 'no-cache');
  ctx.set('Content-Security-Policy', CSP);
  ctx.set('X-Content-Type-Options', 'nosniff');
  ctx.set('Referrer-Policy', 'no-referrer');
  ctx.type = type;
  ctx.body = body;
}

/** A non-negative integer query parameter, or `fallback` when absent or not a number. */
export function intParam(ctx: Context, name: string, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const raw = ctx.query[name];
  const v = typeof raw === 'string' && /^\d{1,15}$/.test(raw) ? Number(raw) : fallback;
  return Math.min(v, max);
}

export function stringParam(ctx: Context, name: string): string {
  const raw = ctx.query[name];
  return typeof raw === 'string' ? raw : '';
}

/** Answers an error as JSON: bitfog's code and message (messages never hold server paths). */
export function sendError(ctx: Context, e: unknown): void {
  if (isBitfogError(e)) {
    const status = e.code === 'ENOENT' ? 404 : e.code === 'EBADSPOOL' ? 422 : 500;
    sendJson(ctx, { error: e.code, message: e.message }, status);
  } else {
    sendJson(ctx, { error: 'EINTERNAL', message: 'internal error' }, 500);
  }
}

/**
 * True when the Host header names a loopback address. A page bound to 127.0.0.1 is still
 * reachable from a browser through a DNS name rebound to 127.0.0.1; refusing other Host
 * names keeps other web sites from reading the spool through the user's browser.
 */
export function loopbackHost(ctx: Context): boolean {
  const host = (ctx.get('Host') || '').toLowerCase().replace(/:\d+$/, '');
  return host === '127.0.0.1' || host === 'localhost' || host === '[::1]';
}
