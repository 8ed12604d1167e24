/** Temporary directories for tests, removed when the test file ends. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

const made: string[] = [];
const closers: Array<() => Promise<unknown>> = [];
after(async () => {
  // What still writes into the directories (a server saving its hash cache on close) stops
  // first: removed before, a directory would be made again.
  await Promise.all(closers.splice(0).map((close) => close()));
  if (process.env.BITFOG_KEEP_TMP) return;
  await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
});

/** Runs `close` when the test file ends, before its temporary directories are removed. */
export function closeBeforeCleanup(close: () => Promise<unknown>): void {
  closers.push(close);
}

/** A fresh empty directory under the system temp dir (or BITFOG_TEST_TMP). */
export async function tempDir(label = 'test'): Promise<string> {
  const base = process.env.BITFOG_TEST_TMP ?? tmpdir();
  const dir = await mkdtemp(path.join(base, `bitfog-${label.replace(/[^a-z0-9-]/gi, '_')}-`));
  made.push(dir);
  return dir;
}
