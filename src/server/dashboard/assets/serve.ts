/**
 * The `bitfog serve` page: areas and live activity. The script listens to the server-sent
 * events of /.bitfog/dashboard/events and redraws what changed; it never reloads.
 */
import { pageHtml } from './common.ts';

const SERVE_BODY = `
<header>
  <h1>bitfog serve</h1>
  <span class="where" id="server-url"></span>
  <span class="loaded"><span class="live" id="live-dot" aria-hidden="true"></span><span id="live-state" aria-live="polite">connecting…</span></span>
</header>
<main id="main">
  <div id="failure" role="alert"></div>
  <section aria-labelledby="h-areas">
    <h2 id="h-areas">Areas</h2>
    <div id="areas"></div>
  </section>
  <section aria-labelledby="h-current">
    <h2 id="h-current">Transfers now</h2>
    <p id="totals" class="muted"></p>
    <div id="current"></div>
  </section>
  <section aria-labelledby="h-recent">
    <h2 id="h-recent">Recent requests</h2>
    <div id="recent"></div>
  </section>
  <section aria-labelledby="h-errors">
    <h2 id="h-errors">Errors</h2>
    <div id="errors"></div>
  </section>
</main>`;

export const SERVE_HTML = pageHtml({ title: 'bitfog serve', base: '/.bitfog/dashboard/', script: 'serve.js', body: SERVE_BODY });

export const SERVE_JS = String.raw`
(function () {
  'use strict';
  var b = window.bitfog, h = b.h;
  var base = document.body.getAttribute('data-base');
  b.fill('server-url', location.origin + '/');

  function areas(list) {
    b.fill('areas', b.table(b.plural(list.length, 'area'), [
      { title: 'Area', path: true, cell: function (a) { return a.name; } },
      { title: 'Access', cell: function (a) { return a.writable ? 'writable' : 'read-only'; } },
      { title: 'Files', num: true, cell: function (a) { return a.state === 'error' ? 'cannot list (' + a.error + ')' : b.count(a.files) + (a.state === 'counting' ? ' (counting…)' : a.state === 'stale' ? ' (changed, recounting)' : ''); } },
      { title: 'Bytes', num: true, cell: function (a) { return b.size(a.bytes); } },
      { title: 'Last change', cell: function (a) { return a.lastChange ? b.when(a.lastChange) : '—'; } },
      { title: 'Hash cache', cell: function (a) {
        var c = a.hashCache;
        return c.kind === 'off' ? 'off (no checksums)' : (c.kind === 'disk' ? 'on disk' : 'in memory') + ', ' + b.plural(c.entries, 'file') + ' hashed';
      } },
    ], list, 'No areas configured.'));
  }

  function pct(t) { return t.expectedIn ? Math.min(100, Math.floor(100 * t.bytesIn / t.expectedIn)) : null; }
  function secs(ms) { return ms < 1000 ? ms + ' ms' : (ms / 1000).toFixed(1) + ' s'; }

  function activity(a) {
    b.fill('totals', b.plural(a.totals.requests, 'request') + ' served, ' + b.size(a.totals.bytesIn) + ' received, ' + b.size(a.totals.bytesOut) + ' sent, ' + b.plural(a.totals.errors, 'error') + '.');
    b.fill('current', b.table(b.plural(a.current.length, 'request') + ' running', [
      { title: 'Method', cell: function (t) { return t.method; } },
      { title: 'Path', path: true, cell: function (t) { return t.path; } },
      { title: 'Progress', cell: function (t) {
        var p = pct(t);
        if (p === null) return b.size(t.bytesOut) + ' sent';
        return [h('progress', { class: 'progress', max: 100, value: p, 'aria-label': 'upload of ' + t.path }), ' ', h('span', { class: 'pct' }, p + '%')];
      } },
      { title: 'Received', num: true, cell: function (t) { return b.size(t.bytesIn) + (t.expectedIn ? ' of ' + b.size(t.expectedIn) : ''); } },
      { title: 'Sent', num: true, cell: function (t) { return b.size(t.bytesOut); } },
      { title: 'Since', cell: function (t) { return b.when(t.startedAt); } },
    ], a.current, 'Nothing is being transferred.'));
    var cols = [
      { title: 'When', cell: function (r) { return b.when(r.startedAt); } },
      { title: 'Method', cell: function (r) { return r.method; } },
      { title: 'Path', path: true, cell: function (r) { return r.path; } },
      { title: 'Status', num: true, cell: function (r) { return r.aborted ? r.status + ' (cut off)' : String(r.status); } },
      { title: 'In', num: true, cell: function (r) { return b.size(r.bytesIn); } },
      { title: 'Out', num: true, cell: function (r) { return b.size(r.bytesOut); } },
      { title: 'Time', num: true, cell: function (r) { return secs(r.ms); } },
    ];
    b.fill('recent', b.table('Latest first (last 50)', cols, a.recent, 'No requests yet.'));
    b.fill('errors', b.table('Latest first (last 20)', cols, a.errors, 'No errors.'));
  }

  function live(on, text) {
    document.getElementById('live-dot').className = 'live' + (on ? ' on' : '');
    b.fill('live-state', text);
  }

  function start() {
    var es = new EventSource(base + 'events');
    es.addEventListener('open', function () { live(true, 'live'); });
    es.addEventListener('error', function () { live(false, 'disconnected; retrying…'); });
    es.addEventListener('areas', function (e) { areas(JSON.parse(e.data)); document.body.setAttribute('data-ready', 'true'); });
    es.addEventListener('activity', function (e) { activity(JSON.parse(e.data)); });
  }
  start();
})();
`;
