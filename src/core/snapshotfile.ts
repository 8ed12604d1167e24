/**
 * Snapshot files (`builddb`): a manifest holding one snapshot, replaced atomically.
 *
 * Building 100k entries through sql.js and exporting them takes seconds, several times
 * longer than listing the tree, while an unchanged rescan produces the very same rows. So
 * after writing a file we remember, in the cache directory (never next to the file), a
 * digest of what went into it, the SHA-256 of the bytes written, and where in those bytes
 * its two timestamps lie (the snapshot's taken_at and the file's created_at). When the next
 * snapshot of the same tree into the same file has the same digest and the file still holds
 * exactly those bytes, the new file is those bytes with the two timestamps replaced — what
 * an SQL UPDATE of the two values would write: an ISO timestamp always has 24 characters,
 * so each record keeps its size and layout, and the header's change counter is advanced as
 * SQLite does on every commit. Anything else (a changed tree, the file edited or replaced
 * by anyone, no record) builds the file from scratch.
 *
 * When the snapshot followed from its listing alone (see SnapshotResult.fingerprint), the
 * record also keeps the listing's fingerprint, and the next `builddb` first takes only the
 * fingerprint of the tree (refreshUnchangedSnapshotFile): the same fingerprint means the
 * same snapshot, so the file gets its new timestamps without a snapshot being taken at all.
 */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { bitfogError, isBitfogError, toBitfogError } from './errors.ts';
import { writeFileAtomic } from './fsutil.ts';
import { MANIFEST_FORMAT_VERSION, Manifest, type Snapshot, type SnapshotRole } from './manifest.ts';

const ROLE: SnapshotRole = 'snapshot';
/** Length of `Date.prototype.toISOString()` for years 0–9999. */
const TIMESTAMP_LENGTH = 24;
/** SQLite file header: "file change counter" and "version-valid-for number" (big-endian u32). */
const CHANGE_COUNTER_OFFSET = 24;
const VERSION_VALID_FOR_OFFSET = 92;

interface WrittenRecord {
  /** maskedHash() of the manifest file's bytes as written. */
  file: string;
  /** snapshotDigest() of what it holds. */
  digest: string;
  /** Offsets in the file of the text of snapshots.taken_at and of meta created_at. */
  takenAtOffset: number;
  createdAtOffset: number;
  /** SnapshotResult.fingerprint of the snapshot written, when it had one. */
  fingerprint?: string;
  /**
   * MANIFEST_FORMAT_VERSION of the bitfog that wrote the file: a fingerprint says the tree
   * is the same, not that this bitfog would write the same rows for it.
   */
  format?: number;
  /** Entries of that snapshot, and the bytes of its files (for builddb's summary). */
  entries?: number;
  bytes?: number;
}

export interface WriteSnapshotFileOptions {
  /** Where to remember what was written (the hash cache directory); none: always build. */
  cacheDir?: string;
  /** SnapshotResult.fingerprint, to be remembered with what was written. */
  fingerprint?: string;
}

/**
 * Throws unless `file` may be replaced by a snapshot file: it does not exist, is empty, or
 * is a snapshot file (a bitfog manifest holding one snapshot, as builddb and emptydb write).
 * A spool's manifest, another SQLite database or any other file is refused (EUSAGE): a
 * mistyped argument must not destroy it.
 */
export async function checkSnapshotFileTarget(file: string): Promise<void> {
  let bytes: Buffer;
  try {
    const st = await fsp.lstat(file);
    if (!st.isFile()) throw bitfogError('EUSAGE', `${file} exists and is not a file; refusing to replace it with a snapshot file`);
    bytes = await fsp.readFile(file);
  } catch (e) {
    if (isBitfogError(e) || (e as NodeJS.ErrnoException).code !== 'ENOENT') throw toBitfogError(e, `cannot use ${file}`);
    return;
  }
  if (bytes.length === 0) return;
  let roles: SnapshotRole[] | undefined;
  try {
    const manifest = await Manifest.fromBytes(bytes, file, { check: false });
    try {
      roles = manifest.snapshotRoles();
    } finally {
      manifest.close();
    }
  } catch {
    // not a bitfog manifest: refused below
  }
  if (roles?.length === 1 && roles[0] === ROLE) return;
  throw bitfogError(
    'EUSAGE',
    roles
      ? `${file} is a spool's manifest, not a snapshot file; refusing to overwrite it`
      : `${file} exists and is not a bitfog snapshot file; refusing to overwrite it (remove it first if it should go)`,
  );
}

/** What a snapshot file refreshed by refreshUnchangedSnapshotFile holds. */
export interface UnchangedSnapshotFile {
  entries: number;
  /** Bytes of its files. */
  bytes: number;
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
  const digest = recordFile ? snapshotDigest(snapshot, skipped) : '';
  const createdAt = new Date().toISOString();
  const previous = recordFile ? await reusable(file, recordFile, digest) : undefined;
  let bytes: Uint8Array;
  let offsets: { takenAtOffset: number; createdAtOffset: number } | undefined;
  const reused = previous !== undefined && snapshot.takenAt.length === TIMESTAMP_LENGTH && createdAt.length === TIMESTAMP_LENGTH;
  if (reused) {
    bytes = previous.bytes;
    offsets = { takenAtOffset: previous.record.takenAtOffset, createdAtOffset: previous.record.createdAtOffset };
    stampTimes(bytes, offsets, snapshot.takenAt, createdAt);
  } else {
    // created_at is written once: a replaced value could linger in the page's free space.
    const manifest = await Manifest.create({ createdAt });
    try {
      manifest.putSnapshot(ROLE, snapshot);
      manifest.setSkipped(ROLE, skipped);
      bytes = manifest.export();
    } finally {
      manifest.close();
    }
    if (recordFile) offsets = timestampOffsets(bytes, snapshot.takenAt, createdAt);
  }
  await writeFileAtomic(file, bytes).catch((e: unknown) => {
    throw toBitfogError(e, `cannot write ${file}`);
  });
  if (reused && previous.record.fingerprint === options.fingerprint && (options.fingerprint === undefined || previous.record.format === MANIFEST_FORMAT_VERSION)) {
    // The record stands as it is: same digest, same offsets, same fingerprint (of this
    // format), and the masked hash leaves out exactly what was replaced.
  } else if (recordFile && offsets) {
    const record: WrittenRecord = { file: reused ? previous.record.file : maskedHash(bytes, offsets), digest, ...offsets };
    if (options.fingerprint !== undefined) {
      let fileBytes = 0;
      for (const e of snapshot.entries.values()) if (e.kind === 'file') fileBytes += e.size;
      Object.assign(record, { fingerprint: options.fingerprint, format: MANIFEST_FORMAT_VERSION, entries: snapshot.entries.size, bytes: fileBytes });
    }
    await writeRecord(recordFile, record);
  } else if (recordFile) {
    await fsp.rm(recordFile, { force: true }).catch(() => {});
  }
}

/**
 * builddb's shortcut for an unchanged tree (see the top of this file). When the record of
 * `file` holds a listing fingerprint, `fingerprint(stop)` (taken now) is the same, and `file`
 * still holds exactly what was written: the file gets the timestamps of a snapshot taken
 * now, and what it holds is told from the record. Otherwise undefined, and nothing is
 * written: the caller takes the snapshot. `stop` is aborted when the file turns out not to
 * be reusable (the fingerprint would be of no use then). Throws what fingerprint() (unless
 * stopped) and writing throw.
 */
export async function refreshUnchangedSnapshotFile(
  file: string,
  url: string,
  fingerprint: (stop: AbortSignal) => Promise<string | undefined>,
  options: { cacheDir: string },
): Promise<UnchangedSnapshotFile | undefined> {
  const takenAt = new Date().toISOString();
  if (takenAt.length !== TIMESTAMP_LENGTH) return undefined;
  const record = await readRecord(recordPath(options.cacheDir, url, file));
  if (!record || typeof record.fingerprint !== 'string' || record.format !== MANIFEST_FORMAT_VERSION) return undefined;
  if (!Number.isSafeInteger(record.entries) || !Number.isSafeInteger(record.bytes)) return undefined;
  // The file is read and checked while the fingerprint is taken: that keeps other threads
  // busy, and this one is free.
  const stop = new AbortController();
  const checking = verifiedBytes(file, record).then((bytes) => {
    if (!bytes) stop.abort();
    return bytes;
  });
  let now: string | undefined;
  try {
    now = await fingerprint(stop.signal);
  } catch (e) {
    if (stop.signal.aborted) return undefined;
    throw e;
  }
  const bytes = await checking;
  const createdAt = new Date().toISOString();
  if (now !== record.fingerprint || !bytes || createdAt.length !== TIMESTAMP_LENGTH) return undefined;
  stampTimes(bytes, record, takenAt, createdAt);
  await writeFileAtomic(file, bytes).catch((e: unknown) => {
    throw toBitfogError(e, `cannot write ${file}`);
  });
  return { entries: record.entries!, bytes: record.bytes! };
}

/**
 * Writes the two timestamps into a snapshot file's bytes and advances the header's change
 * counter, as SQLite does on every commit.
 */
function stampTimes(bytes: Uint8Array, offsets: { takenAtOffset: number; createdAtOffset: number }, takenAt: string, createdAt: string): void {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  buf.write(takenAt, offsets.takenAtOffset, 'latin1');
  buf.write(createdAt, offsets.createdAtOffset, 'latin1');
  const header = new DataView(bytes.buffer, bytes.byteOffset, 100);
  const counter = (header.getUint32(CHANGE_COUNTER_OFFSET) + 1) >>> 0;
  header.setUint32(CHANGE_COUNTER_OFFSET, counter);
  header.setUint32(VERSION_VALID_FOR_OFFSET, counter);
}

async function readRecord(recordFile: string): Promise<WrittenRecord | undefined> {
  try {
    return JSON.parse(await fsp.readFile(recordFile, 'utf8')) as WrittenRecord;
  } catch {
    return undefined;
  }
}

async function writeRecord(recordFile: string, record: WrittenRecord): Promise<void> {
  // Only an accelerator, so not synced: a record lost or torn in a crash, or one that
  // cannot be written, costs a full build next time. A stale one never matches the file.
  const tmp = `${recordFile}.${process.pid}.tmp`;
  await fsp
    .mkdir(path.dirname(recordFile), { recursive: true })
    .then(() => fsp.writeFile(tmp, JSON.stringify(record)))
    .then(() => fsp.rename(tmp, recordFile))
    .catch(() => fsp.rm(tmp, { force: true }).catch(() => {}));
}

/**
 * Where the two timestamps lie in freshly exported bytes; undefined unless each occurs
 * exactly once (then nothing else in the file can be mistaken for them).
 */
function timestampOffsets(bytes: Uint8Array, takenAt: string, createdAt: string): { takenAtOffset: number; createdAtOffset: number } | undefined {
  if (takenAt.length !== TIMESTAMP_LENGTH || createdAt.length !== TIMESTAMP_LENGTH || takenAt === createdAt) return undefined;
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
  const once = (s: string) => {
    const at = buf.indexOf(s, 0, 'latin1');
    return at >= 0 && buf.indexOf(s, at + 1, 'latin1') < 0 ? at : undefined;
  };
  const takenAtOffset = once(takenAt);
  const createdAtOffset = once(createdAt);
  if (takenAtOffset === undefined || createdAtOffset === undefined || Math.abs(takenAtOffset - createdAtOffset) < TIMESTAMP_LENGTH) return undefined;
  return { takenAtOffset, createdAtOffset };
}

/** The bytes of `file` when they are exactly what we wrote there with this digest. */
async function reusable(file: string, recordFile: string, digest: string): Promise<{ bytes: Buffer; record: WrittenRecord } | undefined> {
  const record = await readRecord(recordFile);
  if (record?.digest !== digest) return undefined;
  const bytes = await verifiedBytes(file, record);
  return bytes && { bytes, record };
}

/** The bytes of `file` when they are exactly what `record` says was written there. */
async function verifiedBytes(file: string, record: WrittenRecord): Promise<Buffer | undefined> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch {
    return undefined;
  }
  const inside = (at: unknown) => Number.isSafeInteger(at) && (at as number) >= 100 && (at as number) + TIMESTAMP_LENGTH <= bytes.length;
  if (!inside(record.takenAtOffset) || !inside(record.createdAtOffset)) return undefined;
  if (Math.abs(record.takenAtOffset - record.createdAtOffset) < TIMESTAMP_LENGTH) return undefined;
  return maskedHash(bytes, record) === record.file ? bytes : undefined;
}

/**
 * SHA-256 of a snapshot file's bytes except the ranges a reuse replaces (the header's
 * change counters and the two timestamps): it is the same before and after the
 * replacement, so a rewrite costs one pass over the file instead of two.
 */
function maskedHash(bytes: Uint8Array, offsets: { takenAtOffset: number; createdAtOffset: number }): string {
  const skip = [
    [CHANGE_COUNTER_OFFSET, 4],
    [VERSION_VALID_FOR_OFFSET, 4],
    [offsets.takenAtOffset, TIMESTAMP_LENGTH],
    [offsets.createdAtOffset, TIMESTAMP_LENGTH],
  ].sort((a, b) => a[0]! - b[0]!);
  const h = createHash('sha256').update(`${bytes.length}\0`);
  let at = 0;
  for (const [from, length] of skip) {
    h.update(bytes.subarray(at, from));
    at = from! + length!;
  }
  h.update(bytes.subarray(at));
  return h.digest('hex');
}

/**
 * A digest of everything a snapshot file holds but its times: the format, the tree's URL,
 * every entry (all recorded fields) and what was skipped. Entries are taken in listing
 * order, which for an unchanged tree is the same from run to run; when it is not, the
 * digests differ and the file is only built in full (rows are keyed by path, so order does
 * not change the database) — sorting 100k paths every time would cost more.
 */
function snapshotDigest(snapshot: Snapshot, skipped: Array<{ path: string; reason: string }>): string {
  const h = createHash('sha256');
  h.update(`bitfog snapshot file ${MANIFEST_FORMAT_VERSION}\0${snapshot.url}\0${snapshot.assumedEmpty ? 1 : 0}\0`);
  let chunk = '';
  for (const e of snapshot.entries.values()) {
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
