/** Temporary directories for tests, removed when the test file ends. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after } from 'node:test';

const made: string[] = [];
after(async () => {
  if (process.env.BITFOG_KEEP_TMP) return;
  await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
});

/** A fresh empty directory under the system temp dir (or BITFOG_TEST_TMP). */
export async function tempDir(label = 'test'): Promise<string> {
  const base = process.env.BITFOG_TEST_TMP ?? tmpdir();
  const dir = await mkdtemp(path.join(base, `bitfog-${label.replace(/[^a-z0-9-]/gi, '_')}-`));
  made.push(dir);
  return dir;
}
