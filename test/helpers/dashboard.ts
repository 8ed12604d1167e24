/**
 * For the dashboard tests: a known spool built with the real CLI (several trips planned,
 * a conflict, a skipped special file, two trips of history), and headless Chromium driven
 * by playwright-core. Without Chromium the browser tests skip, except under CI=true where
 * that is a failure.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { TestContext } from 'node:test';
import type { BrowserContext, Page } from 'playwright-core';
import { bitfogOk } from './cli.ts';
import { tempDir } from './tmp.ts';
import { makeTree, type TreeSpec } from './tree.ts';

export const CHROMIUM = process.env.BITFOG_CHROMIUM ?? '/usr/bin/chromium';
export const ARTIFACTS = path.resolve(import.meta.dirname, '..', '..', 'test-artifacts');

/** Trip size of the fixture: its trips are planned at this many bytes. */
export const FIXTURE_MAX = 60_000;

/** Awkward names everywhere; sizes chosen so several trips remain after two. */
export const FIXTURE_TREE: TreeSpec = {
  'photos/2024/a.jpg': { bytes: 40_000, seed: 1 },
  'photos/2024/b.jpg': { bytes: 30_000, seed: 2 },
  'photos/c.jpg': { bytes: 50_000, seed: 3 },
  'docs/x.pdf': { bytes: 20_000, seed: 4 },
  'docs/dup.pdf': { bytes: 20_000, seed: 4 },
  'odd #name%?/é <b> & "q".txt': { bytes: 10_000, seed: 5 },
  'big/one.bin': { bytes: 45_000, seed: 6 },
  'big/two.bin': { bytes: 44_000, seed: 7 },
  'big/three.bin': { bytes: 43_000, seed: 8 },
  'big/huge.bin': { bytes: 70_000, seed: 9 },
  'deep/a/b/c/d/e/f.txt': { bytes: 12_000, seed: 10 },
  'top.txt': { bytes: 5_000, seed: 11 },
  'empty.txt': '',
};

export interface Fixture {
  root: string;
  src: string;
  dst: string;
  spool: string;
}

/**
 * Trip 1: fetch (--max FIXTURE_MAX) and store. Then the destination's copy of a written
 * file is changed by someone (a conflict at the next store), and trip 2: fetch and store,
 * then trip 3's fetch. The source has a FIFO (skipped) and a file larger than the spool.
 */
export async function buildFixture(): Promise<Fixture> {
  const root = await tempDir('dashboard');
  const src = path.join(root, 'src');
  const dst = path.join(root, 'dst');
  const spool = path.join(root, 'spool');
  await makeTree(src, FIXTURE_TREE);
  execFileSync('mkfifo', [path.join(src, 'docs', 'a pipe')]);
  await fsp.mkdir(dst);
  const max = String(FIXTURE_MAX);
  const q = ['-q', '--no-cache'];
  await bitfogOk(['fetch', src, spool, '--max', max, ...q]);
  await bitfogOk(['store', spool, dst, ...q]);
  // Someone edits a file at the destination that bitfog wrote: it is left alone from now on.
  const written = (await fsp.readdir(path.join(dst, 'photos'))).includes('c.jpg') ? path.join(dst, 'photos', 'c.jpg') : undefined;
  if (!written) throw new Error('fixture: trip 1 did not write photos/c.jpg');
  await bitfogOk(['fetch', src, spool, '--max', max, ...q]);
  // Changed after the spool recorded the destination and before the store: a conflict
  // only if the source changed it too, so change both sides.
  await fsp.writeFile(path.join(src, 'photos', 'c.jpg'), 'new at the source');
  await fsp.writeFile(written, 'changed at the destination');
  await bitfogOk(['store', spool, dst, ...q], {}, 3); // exit 3: stored, with conflicts
  await bitfogOk(['fetch', src, spool, '--max', max, ...q]);
  return { root, src, dst, spool };
}

/** `bitfog status --json`: the numbers the dashboard must agree with. */
export async function statusJson(spool: string): Promise<{
  trip: number;
  left: { files: number; bytes: number };
  carried: { files: number; bytes: number; blobs: number };
  tripsLeft?: number;
  capacityBytes?: number;
  conflicts: Array<{ path: string; reason: string }>;
  skipped: Array<{ side: string; path: string; reason: string }>;
  tooLarge: Array<{ path: string; size: number }>;
}> {
  return JSON.parse((await bitfogOk(['status', spool, '--json'])).stdout);
}

/**
 * A fresh headless Chromium (own profile directory, no network of its own), or undefined
 * after skipping the test when Chromium is not installed (a failure under CI).
 */
export async function launchBrowser(t: TestContext): Promise<BrowserContext | undefined> {
  if (!existsSync(CHROMIUM)) {
    if (process.env.CI === 'true') throw new Error(`Chromium not found at ${CHROMIUM}; in CI that is a failure (install the Debian package chromium)`);
    t.skip(`Chromium not installed at ${CHROMIUM} (Debian package chromium)`);
    return undefined;
  }
  const { chromium } = await import('playwright-core');
  const profile = await tempDir('chromium-profile');
  return chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--headless', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run',
    ],
    viewport: { width: 1280, height: 900 },
  });
}

/** Saves a full-page screenshot under test-artifacts/ and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  await fsp.mkdir(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}
