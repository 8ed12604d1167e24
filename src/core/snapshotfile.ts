/**
 * Snapshot files (`builddb`): a manifest holding one snapshot, replaced atomically.
 *
 * Writing 100k entries through sql.js takes seconds, far more than listing them, while an
 * unchanged rescan produces the same rows again. So after writing a file we remember, in
 * the cache directory (never next to the file), a digest of what went into it and the
 * SHA-256 of the file's bytes. When the next snapshot of the same tree into the same file
 * has the same digest and the file still holds exactly those bytes, only its time of
 * taking is updated; anything else (a changed tree, a file edited or replaced by anyone,
 * a missing record) writes the file from scratch. The result is the same database either
 * way.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeFileAtomic } from './fsutil.ts';
import { MANIFEST_FORMAT_VERSION, Manifest, type Snapshot, type SnapshotRole } from './manifest.ts';

const ROLE: SnapshotRole = 'snapshot';

interface WrittenRecord {
  /** SHA-256 of the manifest file's bytes as written. */
  file: string;
  /** snapshotDigest() of what it holds. */
  digest: string;
}

export interface WriteSnapshotFileOptions {
  /** Where to remember what was written (the hash cache directory); none: always rewrite. */
  cacheDir?: string;
}

/**
 * Writes `snapshot` (and the entries it skipped) as the only snapshot of the manifest file
 * `file`, atomically. Throws what writing the file throws (EACCES, ENOSPC, …).
 */
export async function writeSnapshotFile(
  file: string,
  snapshot: Snapshot,
  skipped: Array<{ path: string; reason: string }>,
  options: WriteSnapshotFileOptions = {},
): Promise<void> {
  const recordFile = options.cacheDir === undefined ? undefined : recordPath(options.cacheDir, snapshot.url, file);
  const digest = snapshotDigest(snapshot, skipped);
  const previous = recordFile ? await reusable(file, recordFile, digest) : undefined;
  let manifest: Manifest;
  if (previous) {
    manifest = await Manifest.fromBytes(previous, file);
    manifest.setMeta('created_at', new Date().toISOString());
    manifest.db.run('UPDATE snapshots SET taken_at = ? WHERE role = ?', [snapshot.takenAt, ROLE]);
  } else {
    manifest = await Manifest.create();
    manifest.putSnapshot(ROLE, snapshot);
    manifest.setSkipped(ROLE, skipped);
  }
  let bytes: Uint8Array;
  try {
    bytes = manifest.export();
  } finally {
    manifest.close();
  }
  if (recordFile) await fsp.rm(recordFile, { force: true });
  await writeFileAtomic(file, bytes);
  if (recordFile) {
    const record: WrittenRecord = { file: sha256(bytes), digest };
    // Only an accelerator: a record that cannot be written costs a full write next time.
    await fsp
      .mkdir(path.dirname(recordFile), { recursive: true })
      .then(() => writeFileAtomic(recordFile, Buffer.from(JSON.stringify(record))))
      .catch(() => {});
  }
}

/** The bytes of `file` when they are exactly what we wrote there with this digest. */
async function reusable(file: string, recordFile: string, digest: string): Promise<Buffer | undefined> {
  let record: WrittenRecord;
  let bytes: Buffer;
  try {
    record = JSON.parse(await fsp.readFile(recordFile, 'utf8')) as WrittenRecord;
    if (record.digest !== digest) return undefined;
    bytes = await fsp.readFile(file);
  } catch {
    return undefined;
  }
  return sha256(bytes) === record.file ? bytes : undefined;
}

/**
 * A digest of everything a snapshot file holds but its times: the format, the tree's URL,
 * every entry (all recorded fields, in any order: rows are keyed by path) and what was
 * skipped.
 */
function snapshotDigest(snapshot: Snapshot, skipped: Array<{ path: string; reason: string }>): string {
  const h = createHash('sha256');
  h.update(`bitfog snapshot file ${MANIFEST_FORMAT_VERSION}\0${snapshot.url}\0${snapshot.assumedEmpty ? 1 : 0}\0`);
  // Map order is listing order, which may differ from run to run: digest in path order.
  const paths = [...snapshot.entries.keys()].sort();
  let chunk = '';
  for (const p of paths) {
    const e = snapshot.entries.get(p)!;
    // No field holds a NUL, so NUL-terminated fields cannot run into each other.
    chunk += `${e.path}\0${e.kind}\0${e.size}\0${e.mode}\0${e.mtimeMs}\0${e.hash}\0${e.linkTarget}\0`;
    if (chunk.length > 1 << 16) {
      h.update(chunk);
      chunk = '';
    }
  }
  h.update(chunk);
  h.update(`\0skipped\0`);
  for (const s of skipped) h.update(`${s.path}\0${s.reason}\0`);
  return h.digest('hex');
}

function recordPath(cacheDir: string, url: string, file: string): string {
  const key = createHash('sha256').update(`${url}\0${path.resolve(file)}`).digest('hex').slice(0, 32);
  return path.join(cacheDir, 'snapshot-files', `${key}.json`);
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
