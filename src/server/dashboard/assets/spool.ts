/**
 * The spool page (`bitfog ui`): markup and script. The script asks the JSON endpoints
 * (docs/dashboard.md) and draws what they answer; it polls /api/status every few seconds
 * and redraws everything when the manifest was reloaded (a fetch or store finished).
 */
import { pageHtml } from './common.ts';

export const SPOOL_BODY = `
<header>
  <h1>bitfog spool</h1>
  <span class="where" id="spool-path"></span>
  <span class="loaded" id="loaded" aria-live="polite"></span>
</header>
<main id="main">
  <div id="failure" role="alert"></div>
  <section aria-labelledby="h-summary">
    <h2 id="h-summary">At a glance</h2>
    <dl class="cards" id="summary"></dl>
  </section>
  <section aria-labelledby="h-left">
    <h2 id="h-left">What is left to carry, by folder</h2>
    <div class="toolbar" id="left-toolbar"></div>
    <div class="grid2"><div id="left-chart"></div><div id="left-table"></div></div>
  </section>
  <section aria-labelledby="h-trips">
    <h2 id="h-trips">Planned trips</h2>
    <p id="trips-intro" class="muted"></p>
    <div id="trips-chart"></div>
    <div id="trips-table"></div>
    <div id="trip-files"></div>
    <div id="too-large"></div>
  </section>
  <section aria-labelledby="h-carried">
    <h2 id="h-carried">What the spool carries</h2>
    <div class="grid2"><div id="carried-folders"></div><div id="sizes"></div></div>
  </section>
  <section aria-labelledby="h-conflicts">
    <h2 id="h-conflicts">Conflicts</h2>
    <div id="conflicts"></div>
  </section>
  <section aria-labelledby="h-skipped">
    <h2 id="h-skipped">Skipped entries</h2>
    <div id="skipped"></div>
  </section>
  <section aria-labelledby="h-history">
    <h2 id="h-history">History of trips</h2>
    <div id="history-chart"></div>
    <div id="history-table"></div>
  </section>
</main>`;

export const SPOOL_HTML = pageHtml({ title: 'bitfog spool', base: '/', script: 'spool.js', body: SPOOL_BODY });

export const SPOOL_JS = String.raw`
(function () {
  'use strict';
  var b = window.bitfog, h = b.h;
  var base = document.body.getAttribute('data-base') || '/';
  var state = { loadedAt: null, prefix: '', depth: 1, trip: 0, tripPage: 1, tripsPage: 1, conflictsPage: 1, skippedPage: 1, historyPage: 1, tooLargePage: 1 };
  var COLORS = { left: '#c2410c', carried: '#15803d', store: '#6d28d9', plan: '#0b5cad' };

  function api(path) { return b.getJSON(base + 'api/' + path); }
  function q(v) { return encodeURIComponent(v); }
  function fail(e) { b.fill('failure', h('p', { class: 'error' }, 'Could not load: ' + e.message)); }

  function card(id, title, value, note, bad) {
    return h('div', { class: 'card' + (bad ? ' bad' : '') },
      h('dt', null, title),
      h('dd', { id: id }, value, note ? h('small', null, note) : null));
  }

  function summary(st) {
    b.fill('spool-path', st.spool);
    b.fill('loaded', 'manifest read ' + b.when(st.loadedAt));
    var src = st.source, dst = st.destination;
    b.fill('summary',
      card('sum-trip', 'Trips made', b.count(st.trip), 'manifest format ' + st.formatVersion),
      card('sum-source', 'Source', src ? b.plural(src.entries, 'entry', 'entries') : 'not recorded', src ? b.size(src.bytes) + ' — ' + src.url : 'run bitfog fetch'),
      card('sum-destination', 'Destination', dst ? (dst.assumedEmpty ? 'assumed empty' : b.plural(dst.entries, 'entry', 'entries')) : 'not recorded', dst ? b.size(dst.bytes) + (dst.url ? ' — ' + dst.url : '') : 'run bitfog store'),
      card('sum-carried', 'On the spool now', b.size(st.carried.bytes), b.plural(st.carried.files, 'file') + ' in ' + b.plural(st.carried.blobs, 'blob')),
      card('sum-left', 'Left to carry', b.size(st.left.bytes), b.plural(st.left.files, 'file') + (st.left.unhashedFiles ? ', ' + b.count(st.left.unhashedFiles) + ' not hashed yet' : '')),
      card('sum-trips', 'Trips left', st.tripsLeft === undefined ? '?' : b.count(st.tripsLeft), st.capacityBytes ? 'at ' + b.size(st.capacityBytes) + ' per trip' : 'spool size unknown (fetch first)'),
      card('sum-conflicts', 'Conflicts', b.count(st.conflicts), st.conflicts ? 'left alone at the destination' : null, st.conflicts > 0),
      card('sum-skipped', 'Skipped', b.count(st.skipped), null, st.skipped > 0),
      card('sum-toolarge', 'Too large for the spool', b.count(st.tooLarge.count), st.tooLarge.count ? b.size(st.tooLarge.bytes) : null, st.tooLarge.count > 0),
      card('sum-removals', 'Removals pending', b.count(st.removalsPending)));
  }

  /** Redraws the folder view; moveFocus keeps a keyboard user's place after a redraw. */
  function leftByFolder(moveFocus) {
    return api('left-by-folder?prefix=' + q(state.prefix) + '&depth=' + state.depth).then(function (a) {
      var up = state.prefix ? h('button', { type: 'button', onclick: function () {
        state.prefix = state.prefix.indexOf('/') >= 0 ? state.prefix.slice(0, state.prefix.lastIndexOf('/')) : '';
        leftByFolder(true).catch(fail);
      } , id: 'left-up' }, 'Up one folder') : null;
      var depthSel = h('select', { id: 'left-depth', onchange: function (ev) { state.depth = Number(ev.target.value); leftByFolder().catch(fail); } },
        [1, 2, 3].map(function (d) { return h('option', { value: d, selected: d === state.depth }, d === 1 ? '1 level' : d + ' levels'); }));
      b.fill('left-toolbar',
        h('span', null, 'In ', h('strong', { class: 'path' }, state.prefix ? '/' + state.prefix : 'the whole source'), ': ',
          b.plural(a.total.files, 'file'), ', ', b.size(a.total.bytes), ' left.'),
        up, h('label', { for: 'left-depth' }, 'Group by '), depthSel);
      var items = a.folders.slice(0, 15).map(function (f) { return { label: f.folder === a.prefix ? '(files here)' : f.folder.slice(a.prefix ? a.prefix.length + 1 : 0), value: f.bytes, note: b.plural(f.files, 'file') }; });
      if (a.rest) items.push({ label: b.count(a.rest.folders) + ' more folders', value: a.rest.bytes, color: '#9ca3af' });
      b.fill('left-chart', b.barChart('Bytes left to carry by folder', items, COLORS.left));
      var rows = a.folders.slice();
      if (a.rest) rows.push({ folder: null, files: a.rest.files, bytes: a.rest.bytes, rest: a.rest.folders });
      b.fill('left-table', b.table('Left to carry by folder (largest first)', [
        { title: 'Folder', cell: function (r) {
          if (r.folder === null) return b.count(r.rest) + ' more folders';
          if (r.folder === a.prefix) return h('span', { class: 'muted' }, '(files directly here)');
          return h('button', { type: 'button', class: 'link', title: 'Show what is left inside', onclick: function () { state.prefix = r.folder; leftByFolder(true).catch(fail); } }, r.folder);
        } },
        { title: 'Files', num: true, cell: function (r) { return b.count(r.files); } },
        { title: 'Bytes', num: true, cell: function (r) { return b.size(r.bytes); } },
      ], rows, 'Nothing is left to carry here.'));
      if (moveFocus) (document.getElementById('left-up') || document.getElementById('left-depth')).focus();
    });
  }

  function trips() {
    return api('trips?page=' + state.tripsPage).then(function (a) {
      b.fill('trips-intro', a.capacityBytes
        ? 'At ' + b.size(a.capacityBytes) + ' per trip, what is left takes ' + b.plural(a.total, 'trip') + ' (' + b.plural(a.planned.files, 'file') + ', ' + b.size(a.planned.bytes) + '), filling each trip largest first. What the spool carries now is not counted: it is stored first.'
        : 'The spool size is known after the first fetch (its --max or the free space it saw).');
      b.fill('trips-chart', a.items.length ? [b.columnChart('Bytes per planned trip', a.items.map(function (t) { return { label: '#' + t.trip, values: [t.bytes] }; }), [{ name: 'planned', color: COLORS.plan }]), b.legend([{ name: 'bytes planned per trip', color: COLORS.plan }])] : null);
      b.fill('trips-table', b.table('Planned trips', [
        { title: 'Trip', num: true, cell: function (t) { return '#' + t.trip; } },
        { title: 'Files', num: true, cell: function (t) { return b.count(t.files); } },
        { title: 'Contents', num: true, cell: function (t) { return b.count(t.contents); } },
        { title: 'Bytes', num: true, cell: function (t) { return b.size(t.bytes); } },
        { title: 'Files on this trip', cell: function (t) {
          return h('button', { type: 'button', 'aria-pressed': state.trip === t.trip ? 'true' : 'false', 'aria-controls': 'trip-files', onclick: function () { state.trip = t.trip; state.tripPage = 1; Promise.all([tripFiles(true), trips()]).catch(fail); } }, 'Show files of trip ' + t.trip);
        } },
      ], a.items, a.capacityBytes ? 'Nothing left to carry: no more trips needed.' : 'No plan yet.'),
      b.pager(a, 'Planned trips', function (p) { state.tripsPage = p; trips().catch(fail); }));
      if (a.tooLarge.files) {
        return api('too-large?page=' + state.tooLargePage).then(function (t) {
          b.fill('too-large', h('h3', null, 'Too large for this spool'),
            b.table(b.plural(t.total, 'file') + ' larger than the spool: they can never be carried with it', [
              { title: 'Path', path: true, cell: function (r) { return r.path; } },
              { title: 'Size', num: true, cell: function (r) { return b.size(r.size); } },
            ], t.items),
            b.pager(t, 'Too large', function (p) { state.tooLargePage = p; trips().catch(fail); }));
        });
      }
      b.fill('too-large');
    });
  }

  function tripFiles(moveFocus) {
    if (!state.trip) { b.fill('trip-files'); return Promise.resolve(); }
    return api('trips?trip=' + state.trip + '&page=' + state.tripPage).then(function (a) {
      var el = b.fill('trip-files', h('h3', { id: 'trip-files-title', tabindex: '-1' }, 'Trip ' + a.trip + ': ' + b.plural(a.files, 'file') + ', ' + b.size(a.bytes)),
        b.table('In the order they are carried (largest first); a content at several paths is carried once', [
          { title: '#', num: true, cell: function (r) { return b.count(r.n); } },
          { title: 'Path', path: true, cell: function (r) { return r.path; } },
          { title: 'Size', num: true, cell: function (r) { return r.duplicate ? h('span', { class: 'muted', title: 'same content as a file above: carried once' }, 'same as above') : b.size(r.size); } },
        ], a.items.map(function (r, i) { r.n = (a.page - 1) * a.pageSize + i + 1; return r; })),
        b.pager(a, 'Files of trip ' + a.trip, function (p) { state.tripPage = p; tripFiles(true).catch(fail); }));
      if (moveFocus) document.getElementById('trip-files-title').focus();
      return el;
    });
  }

  function carried() {
    return Promise.all([api('carried-by-folder?depth=1'), api('sizes')]).then(function (r) {
      var a = r[0], sizes = r[1];
      var rows = a.folders.slice();
      b.fill('carried-folders', h('h3', null, 'By top-level folder'),
        b.table('On the spool now: ' + b.plural(a.total.files, 'file') + ', ' + b.size(a.total.bytes), [
          { title: 'Folder', path: true, cell: function (f) { return f.folder === '' ? '(top level files)' : f.folder; } },
          { title: 'Files', num: true, cell: function (f) { return b.count(f.files); } },
          { title: 'Bytes', num: true, cell: function (f) { return b.size(f.bytes); } },
        ], rows, 'The spool carries nothing right now.'),
        a.rest ? h('p', { class: 'muted' }, 'and ' + b.count(a.rest.folders) + ' more folders: ' + b.plural(a.rest.files, 'file') + ', ' + b.size(a.rest.bytes)) : null);
      var both = sizes.left.map(function (l, i) { return { label: l.label, left: l, carried: sizes.carried[i] }; });
      b.fill('sizes', h('h3', null, 'By file size'),
        b.table('Files by size: carried now and left to carry', [
          { title: 'Size', cell: function (x) { return x.label; } },
          { title: 'Carried files', num: true, cell: function (x) { return b.count(x.carried.files); } },
          { title: 'Carried bytes', num: true, cell: function (x) { return b.size(x.carried.bytes); } },
          { title: 'Left files', num: true, cell: function (x) { return b.count(x.left.files); } },
          { title: 'Left bytes', num: true, cell: function (x) { return b.size(x.left.bytes); } },
        ], both));
    });
  }

  function pagedList(id, endpoint, key, columns, emptyText) {
    return api(endpoint + '?page=' + state[key]).then(function (a) {
      b.fill(id, b.table(b.plural(a.total, 'entry', 'entries'), columns, a.items, emptyText),
        b.pager(a, id, function (p) { state[key] = p; pagedList(id, endpoint, key, columns, emptyText).catch(fail); }));
    });
  }

  function history() {
    return api('history?page=' + state.historyPage).then(function (a) {
      var series = [{ name: 'carried by fetch', color: COLORS.carried }, { name: 'written by store', color: COLORS.store }];
      b.fill('history-chart', a.items.length ? [b.columnChart('Bytes moved per trip', a.items.map(function (t) {
        return { label: '#' + t.trip, values: [t.fetch ? t.fetch.carriedBytes : 0, t.store ? t.store.bytes : 0] };
      }), series), b.legend(series)] : null);
      b.fill('history-table', b.table('Trips so far (latest ' + b.count(a.items.length) + ' of ' + b.count(a.total) + ')', [
        { title: 'Trip', num: true, cell: function (t) { return '#' + t.trip; } },
        { title: 'Fetched', cell: function (t) { return t.fetch ? b.when(t.fetch.at) : '—'; } },
        { title: 'Carried', num: true, cell: function (t) { return t.fetch ? b.plural(t.fetch.carriedFiles, 'file') + ', ' + b.size(t.fetch.carriedBytes) : '—'; } },
        { title: 'Deferred', num: true, cell: function (t) { return t.fetch ? b.count(t.fetch.deferred) + (t.fetch.fullDisk ? ' (disk full)' : '') + (t.fetch.aborted ? ' (interrupted)' : '') : '—'; } },
        { title: 'Stored', cell: function (t) { return t.store ? b.when(t.store.at) : '—'; } },
        { title: 'Written', num: true, cell: function (t) { return t.store ? b.plural(t.store.written, 'file') + ', ' + b.size(t.store.bytes) : '—'; } },
        { title: 'Removed', num: true, cell: function (t) { return t.store ? b.count(t.store.removed) : '—'; } },
        { title: 'Conflicts', num: true, cell: function (t) { return t.store ? b.count(t.store.conflicts) : '—'; } },
      ], a.items.slice().reverse(), 'No trips yet.'),
      b.pager(a, 'History', function (p) { state.historyPage = p; history().catch(fail); }));
    });
  }

  function all() {
    return api('status').then(function (st) {
      state.loadedAt = st.loadedAt;
      b.fill('failure');
      summary(st);
      return Promise.all([
        leftByFolder(), trips(), tripFiles(), carried(), history(),
        pagedList('conflicts', 'conflicts', 'conflictsPage', [
          { title: 'Path', path: true, cell: function (r) { return r.path; } },
          { title: 'Reason', cell: function (r) { return r.reason; } },
        ], 'No conflicts.'),
        pagedList('skipped', 'skipped', 'skippedPage', [
          { title: 'Side', cell: function (r) { return r.side; } },
          { title: 'Path', path: true, cell: function (r) { return r.path; } },
          { title: 'Reason', cell: function (r) { return r.reason; } },
        ], 'Nothing skipped.'),
      ]);
    }).then(function () { document.body.setAttribute('data-ready', 'true'); });
  }

  function poll() {
    api('status').then(function (st) {
      if (st.loadedAt !== state.loadedAt) return all();
    }).catch(fail).then(function () { setTimeout(poll, 5000); });
  }

  all().catch(fail).then(function () { setTimeout(poll, 5000); });
})();
`;
