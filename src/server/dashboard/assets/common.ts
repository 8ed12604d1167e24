/**
 * The dashboards' stylesheet and shared browser helpers, served by bitfog itself (no CDN).
 * Kept as strings so the bundled CLI carries them; the script is plain ES2020 without
 * template literals so it can live in one. Everything is built with DOM calls (never
 * innerHTML), so file names with `<`, `&` or quotes show as they are.
 */

export const CSS = String.raw`
:root { --fg: #1b1f24; --muted: #57606a; --bg: #ffffff; --panel: #f6f8fa; --line: #d0d7de;
  --accent: #0b5cad; --left: #c2410c; --carried: #15803d; --store: #6d28d9; --warn: #9a3412; --focus: #ffbf47; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { padding: 12px 24px; background: #0f2740; color: #fff; display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: baseline; }
header h1 { margin: 0; font-size: 20px; }
header .where { font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
header .loaded { margin-left: auto; font-size: 13px; opacity: .85; }
main { padding: 8px 24px 48px; max-width: 1200px; }
section { margin-top: 24px; }
h2 { font-size: 18px; margin: 0 0 8px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 12px 0 6px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(190px, 1fr)); gap: 10px; margin: 0; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; margin: 0; }
.card dt { font-size: 13px; color: var(--muted); }
.card dd { margin: 2px 0 0; font-size: 20px; font-weight: 600; }
.card dd small { display: block; font-size: 13px; font-weight: 400; color: var(--muted); overflow-wrap: anywhere; }
.card.bad dd { color: var(--warn); }
table { border-collapse: collapse; width: 100%; margin: 6px 0; font-size: 14px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.path { font-family: ui-monospace, monospace; overflow-wrap: anywhere; white-space: pre-wrap; }
caption { text-align: left; color: var(--muted); font-size: 13px; padding: 2px 0; }
button, select { font: inherit; padding: 3px 10px; border: 1px solid var(--accent); background: #fff; color: var(--accent); border-radius: 4px; cursor: pointer; }
button[aria-pressed="true"], button[aria-current="true"] { background: var(--accent); color: #fff; }
button:disabled { opacity: .45; cursor: default; }
button.link { border: none; padding: 0; background: none; text-decoration: underline; font-family: ui-monospace, monospace; color: var(--accent); text-align: left; overflow-wrap: anywhere; white-space: pre-wrap; }
:focus-visible { outline: 3px solid var(--focus); outline-offset: 2px; box-shadow: 0 0 0 5px #1b1f24; }
.toolbar { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; margin: 6px 0; }
.pager { display: flex; gap: 8px; align-items: center; margin: 6px 0; font-size: 14px; }
.muted { color: var(--muted); }
.empty { color: var(--muted); font-style: italic; }
.chart { display: block; max-width: 100%; height: auto; }
.chart text { font: 12px system-ui, sans-serif; fill: var(--fg); }
.chart .axis { stroke: var(--line); }
.legend { display: flex; gap: 16px; font-size: 13px; margin: 4px 0; }
.legend svg { vertical-align: -1px; }
.grid2 { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
.error { background: #fff1f0; border: 1px solid #ffa39e; padding: 8px 12px; border-radius: 6px; }
.progress { width: 160px; height: 10px; }
.live { display: inline-block; width: 10px; height: 10px; border-radius: 50%; background: #9ca3af; margin-right: 6px; }
.live.on { background: #16a34a; }
.sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;

/** Helpers on `window.bitfog`: DOM building, formatting, fetching, paging and SVG charts. */
export const COMMON_JS = String.raw`
(function () {
  'use strict';
  var SVG = 'http://www.w3.org/2000/svg';

  function h(tag, attrs) {
    var el = document.createElement(tag);
    setAttrs(el, attrs);
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function s(tag, attrs) {
    var el = document.createElementNS(SVG, tag);
    for (var k in attrs || {}) if (attrs[k] !== undefined && attrs[k] !== null) el.setAttribute(k, String(attrs[k]));
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function setAttrs(el, attrs) {
    for (var k in attrs || {}) {
      var v = attrs[k];
      if (v === undefined || v === null || v === false) continue;
      if (k === 'onclick' || k === 'onchange') el[k] = v;
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, child) {
    if (child === undefined || child === null || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); return el; }
  function fill(id) { var el = document.getElementById(id); clear(el); for (var i = 1; i < arguments.length; i++) append(el, arguments[i]); return el; }

  function size(bytes) {
    if (bytes === undefined || bytes === null) return '?';
    var units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
    var v = bytes, i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    if (i === 0) return bytes + ' B';
    return (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ' + units[i];
  }
  function count(n) { return n === undefined || n === null ? '?' : Number(n).toLocaleString('en-US'); }
  function when(iso) {
    if (!iso) return '';
    var d = new Date(iso);
    return isNaN(d.getTime()) ? iso : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }
  function plural(n, one, many) { return count(n) + ' ' + (n === 1 ? one : many || one + 's'); }

  function getJSON(url) {
    return fetch(url, { headers: { Accept: 'application/json' } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body && body.message ? body.message : 'HTTP ' + r.status);
        return body;
      });
    });
  }

  /** Previous / Next buttons for a page answer; onPage(n) loads page n. */
  function pager(answer, label, onPage) {
    if (!answer || answer.pages <= 1) return null;
    return h('nav', { class: 'pager', 'aria-label': label + ' pages' },
      h('button', { type: 'button', disabled: answer.page <= 1, onclick: function () { onPage(answer.page - 1); } }, 'Previous'),
      h('span', { 'aria-live': 'polite' }, 'page ' + count(answer.page) + ' of ' + count(answer.pages) + ' (' + count(answer.total) + ' rows)'),
      h('button', { type: 'button', disabled: answer.page >= answer.pages, onclick: function () { onPage(answer.page + 1); } }, 'Next'));
  }

  function table(caption, columns, rows, emptyText) {
    if (!rows.length) return h('p', { class: 'empty' }, emptyText || 'None.');
    return h('table', null,
      caption ? h('caption', null, caption) : null,
      h('thead', null, h('tr', null, columns.map(function (c) { return h('th', { scope: 'col', class: c.num ? 'num' : null }, c.title); }))),
      h('tbody', null, rows.map(function (r) {
        return h('tr', null, columns.map(function (c) {
          return h('td', { class: c.num ? 'num' : c.path ? 'path' : null }, c.cell(r));
        }));
      })));
  }

  /**
   * Horizontal bars: items [{label, value, note}], values as sizes. The chart is a picture
   * (role img with a label); the same numbers are in the table next to it.
   */
  function barChart(title, items, color) {
    var width = 560, barH = 20, gap = 6, labelW = 200, valueW = 90;
    var height = Math.max(1, items.length) * (barH + gap) + 4;
    var max = items.reduce(function (m, it) { return Math.max(m, it.value); }, 0) || 1;
    var svg = s('svg', { class: 'chart', viewBox: '0 0 ' + width + ' ' + height, width: width, height: height, role: 'img', 'aria-label': title });
    svg.appendChild(s('title', null, title));
    items.forEach(function (it, i) {
      var y = i * (barH + gap) + 2;
      var w = Math.max(1, (width - labelW - valueW - 10) * it.value / max);
      var label = it.label.length > 30 ? '…' + it.label.slice(-29) : it.label;
      svg.appendChild(s('text', { x: labelW - 6, y: y + barH * 0.7, 'text-anchor': 'end' }, label));
      svg.appendChild(s('rect', { x: labelW, y: y, width: w, height: barH, fill: it.color || color, rx: 2 }, s('title', null, it.label + ': ' + size(it.value) + (it.note ? ', ' + it.note : ''))));
      svg.appendChild(s('text', { x: labelW + w + 6, y: y + barH * 0.7 }, size(it.value)));
    });
    if (!items.length) svg.appendChild(s('text', { x: 4, y: 16 }, 'nothing'));
    return svg;
  }

  /**
   * Columns per trip for one or more series: groups [{label, values: [..]}], series
   * [{name, color}]. Values are bytes.
   */
  function columnChart(title, groups, series) {
    var height = 220, top = 14, bottom = 36, left = 70, colW = 14, gap = 10;
    var groupW = series.length * colW + gap;
    var width = Math.max(320, left + groups.length * groupW + 10);
    var max = 0;
    groups.forEach(function (g) { g.values.forEach(function (v) { max = Math.max(max, v || 0); }); });
    max = max || 1;
    var plotH = height - top - bottom;
    var svg = s('svg', { class: 'chart', viewBox: '0 0 ' + width + ' ' + height, width: width, height: height, role: 'img', 'aria-label': title });
    svg.appendChild(s('title', null, title));
    [0, 0.5, 1].forEach(function (f) {
      var y = top + plotH * (1 - f);
      svg.appendChild(s('line', { class: 'axis', x1: left - 4, x2: width, y1: y, y2: y }));
      svg.appendChild(s('text', { x: left - 8, y: y + 4, 'text-anchor': 'end' }, size(max * f)));
    });
    var every = Math.ceil(groups.length / 40);
    groups.forEach(function (g, i) {
      var x0 = left + i * groupW + gap / 2;
      g.values.forEach(function (v, j) {
        var hgt = plotH * (v || 0) / max;
        svg.appendChild(s('rect', { x: x0 + j * colW, y: top + plotH - hgt, width: colW - 2, height: Math.max(hgt, v ? 1 : 0), fill: series[j].color },
          s('title', null, g.label + ' — ' + series[j].name + ': ' + size(v || 0))));
      });
      if (i % every === 0) svg.appendChild(s('text', { x: x0 + (series.length * colW) / 2, y: height - bottom + 16, 'text-anchor': 'middle' }, g.label));
    });
    return svg;
  }

  function legend(series) {
    // Colours as SVG fills: the page's Content-Security-Policy allows no inline styles.
    return h('div', { class: 'legend', 'aria-hidden': 'true' }, series.map(function (x) {
      return h('span', null, s('svg', { width: 12, height: 12, viewBox: '0 0 12 12' }, s('rect', { width: 12, height: 12, fill: x.color })), ' ' + x.name);
    }));
  }

  window.bitfog = { h: h, s: s, clear: clear, fill: fill, size: size, count: count, when: when, plural: plural,
    getJSON: getJSON, pager: pager, table: table, barChart: barChart, columnChart: columnChart, legend: legend };
})();
`;

/** The page skeleton: a header, a main element the page script fills, and its scripts. */
export function pageHtml(options: { title: string; base: string; script: string; body: string }): string {
  const esc = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${esc(options.title)}</title>
<link rel="stylesheet" href="${esc(options.base)}assets/dashboard.css">
<script src="${esc(options.base)}assets/common.js" defer></script>
<script src="${esc(options.base)}assets/${esc(options.script)}" defer></script>
</head>
<body data-base="${esc(options.base)}">
${options.body}
</body>
</html>
`;
}
