/**
 * The dashboards in headless Chromium: what a person sees. Screenshots are kept under
 * test-artifacts/ for a human to look at.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { BrowserContext } from 'playwright-core';
import { startSpoolDashboard, type SpoolDashboard } from '../src/server/dashboard/spool-server.ts';
import { buildFixture, launchBrowser, screenshot, statusJson, type Fixture } from './helpers/dashboard.ts';

const kib = (n: number) => `${(n / 1024).toFixed(n / 1024 >= 100 ? 0 : n / 1024 >= 10 ? 1 : 2)} KiB`;

describe('spool page in a browser', () => {
  let fx: Fixture;
  let ui: SpoolDashboard;
  let browser: BrowserContext | undefined;

  before(async () => {
    fx = await buildFixture();
    ui = await startSpoolDashboard({ spool: fx.spool });
  });
  after(async () => {
    await browser?.close();
    await ui?.close();
  });

  it('shows the right numbers, the planned trips and their files, reachable by keyboard', { timeout: 300_000 }, async (t) => {
    browser = await launchBrowser(t);
    if (!browser) return;
    const expected = await statusJson(fx.spool);
    const page = await browser.newPage();
    const outside: string[] = [];
    page.on('request', (r) => {
      if (!r.url().startsWith(ui.url)) outside.push(r.url());
    });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(ui.url);
    await page.waitForSelector('body[data-ready="true"]');

    assert.match(await page.textContent('#sum-left') ?? '', new RegExp(`${kib(expected.left.bytes)}.*${expected.left.files} files`));
    assert.match(await page.textContent('#sum-trips') ?? '', new RegExp(`^${expected.tripsLeft}at 58\\.6 KiB per trip`));
    assert.match(await page.textContent('#sum-conflicts') ?? '', /^1/);
    assert.match(await page.textContent('#sum-toolarge') ?? '', /^1/);
    assert.match(await page.textContent('#sum-trip') ?? '', /^3/);

    // One row per planned trip, and the files of trip 1 in order, opened by keyboard.
    const tripRows = await page.locator('#trips-table tbody tr').count();
    assert.equal(tripRows, expected.tripsLeft);
    const show = page.getByRole('button', { name: 'Show files of trip 1' });
    await show.focus();
    await page.keyboard.press('Enter');
    await page.waitForSelector('#trip-files table');
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.id'), 'trip-files-title');
    const files = await page.locator('#trip-files tbody tr td.path').allTextContents();
    assert.ok(files.length > 0);
    const trip1 = await (await fetch(new URL('/api/trips?trip=1', ui.url))).json() as { items: Array<{ path: string }> };
    assert.deepEqual(files, trip1.items.map((i) => i.path));
    assert.match(await page.textContent('#too-large') ?? '', /big\/huge\.bin/);

    // Conflicts and skipped entries with reasons; awkward names shown as they are.
    assert.match(await page.textContent('#conflicts') ?? '', /photos\/c\.jpg.*changed at the destination/);
    assert.match(await page.textContent('#skipped') ?? '', /docs\/a pipe/);
    // Pictures: the chart of what is left and of bytes moved per trip.
    assert.equal(await page.locator('#left-chart svg[role="img"]').count(), 1);
    assert.equal(await page.locator('#history-chart svg[role="img"] rect').count(), 6);
    assert.equal(await page.locator('#trips-chart svg[role="img"]').count(), 1);
    await screenshot(page, 'spool-page');

    // Drill into a folder with the keyboard.
    const big = page.getByRole('button', { name: 'big', exact: true });
    await big.focus();
    await page.keyboard.press('Enter');
    await page.locator('#left-toolbar', { hasText: '/big' }).waitFor();
    assert.match(await page.textContent('#left-table') ?? '', /\(files directly here\)/);
    // Keyboard users keep their place: focus moved to the way back up.
    assert.equal(await page.evaluate('document.activeElement && document.activeElement.id'), 'left-up');
    await screenshot(page, 'spool-page-folder');

    assert.deepEqual(errors, []);
    assert.deepEqual(outside, [], 'the page loads nothing from elsewhere');
  });
});
