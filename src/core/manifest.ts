/**
 * The manifest: a SQLite database (through sql.js) carried on the spool, or written by
 * `builddb`/`emptydb` as a standalone snapshot file.
 *
 * Schema (format version 1; see docs in README "The manifest"):
 *
 *   meta(key PRIMARY KEY, value)          format_version, created_at, created_by, capacity, trip
 *   snapshots(role PRIMARY KEY, url, taken_at, entries, bytes, assumed_empty)
 *                                         role: 'source' | 'destination' | 'snapshot' (builddb)
 *   entries(role, path, kind, size, mode, mtime_ms, hash, link_target)   one row per entry
 *   carried(hash PRIMARY KEY, size, carried_at)   blobs on the spool (mirrors blobs/ on disk)
 *   journal(id, at, trip, command, event, path, detail)   what was done, append-only
 *   conflicts(path PRIMARY KEY, reason, found_at)           left alone at the destination
 *   skipped(role, path, reason)           entries not carried (special files, bad names, …)
 *
 * Format 2 adds the delta transfer tables (signatures, recipes, delta_refused; see
 * delta/tables.ts). A format 1 manifest is upgraded when loaded (the new tables start
 * empty); a reader refuses a format_version newer than it knows with EBADSPOOL and a clear
 * message, so a bitfog that knows only format 1 refuses a format 2 spool. Format 3 has the
 * same tables; it marks spools whose small blobs may be packed (see packs.ts).
 */
import { promises as fsp } from 'node:fs';
import type { Database } from 'sql.js';
import { bitfogError, toBitfogError } from './errors.ts';
import { writeFileAtomic } from './fsutil.ts';
import { DELTA_SCHEMA } from './delta/tables.ts';
import { relPathProblem, type RelPath } from './paths.ts';
import { looksLikeSqlite, sqlite } from './sqlite.ts';
import type { Entry, EntryKind } from './types.ts';

/**
 * 3: small blobs may be in packs (see packs.ts), which a bitfog of format 2 would not see.
 * 2: delta transfer tables. Older manifests are read and upgraded when used.
 */
export const MANIFEST_FORMAT_VERSION = 3;

export type SnapshotRole = 'source' | 'destination' | 'snapshot';

/** The URL `bitfog emptydb` records: a snapshot of an empty destination, of no tree at all. */
export const EMPTY_SNAPSHOT_URL = '(empty)';

/** The recorded state of one side. */
export interface Snapshot {
  url: string;
  takenAt: string;
  entries: Map<string, Entry>;
  /** True when nobody recorded this side: it is presumed empty (first trip). */
  assumedEmpty?: boolean;
}

export interface JournalEvent {
  command: string;
  event: string;
  path?: string;
  detail?: string;
}

/** The journal events a command records when it ends normally (not interrupted). */
export const FINISHED_EVENTS: readonly string[] = ['fetch-finished', 'store-finished', 'recorded-destination'];

export interface JournalRow extends JournalEvent {
  id: number;
  at: string;
  trip: number;
}

export interface Conflict {
  path: string;
  reason: string;
}

const SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE snapshots (
  role TEXT PRIMARY KEY, url TEXT NOT NULL, taken_at TEXT NOT NULL,
  entries INTEGER NOT NULL, bytes INTEGER NOT NULL, assumed_empty INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE TABLE entries (
  role TEXT NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL CHECK (kind IN ('file','symlink','directory')),
  size INTEGER NOT NULL, mode INTEGER, mtime_ms REAL, hash TEXT, link_target TEXT,
  PRIMARY KEY (role, path)
) WITHOUT ROWID;
CREATE TABLE carried (hash TEXT PRIMARY KEY, size INTEGER NOT NULL, carried_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE journal (
  id INTEGER PRIMARY KEY, at TEXT NOT NULL, trip INTEGER NOT NULL, command TEXT NOT NULL,
  event TEXT NOT NULL, path TEXT, detail TEXT
);
CREATE TABLE conflicts (path TEXT PRIMARY KEY, reason TEXT NOT NULL, found_at TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE skipped (role TEXT NOT NULL, path TEXT NOT NULL, reason TEXT NOT NULL, PRIMARY KEY (role, path)) WITHOUT ROWID;
`;

/**
 * The database lives in sql.js's in-memory file system, so a rollback journal written
 * there and a page cache that spills mid-transaction are pure cost: with the defaults,
 * writing a snapshot of 100k entries spends most of its time copying pages into that file
 * system. The journal stays in memory (ROLLBACK still works) and the cache holds a whole
 * transaction; durability comes from writing the exported file atomically.
 */
function tuneForBulkWrites(db: Database): void {
  db.exec('PRAGMA journal_mode = MEMORY; PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY');
}

export class Manifest {
  readonly db: Database;

  private constructor(db: Database) {
    this.db = db;
    tuneForBulkWrites(db);
  }

  /** A new, empty manifest. */
  static async create({ createdAt = new Date().toISOString() }: { createdAt?: string } = {}): Promise<Manifest> {
    const SQL = await sqlite();
    const db = new SQL.Database();
    db.exec(SCHEMA);
    db.exec(DELTA_SCHEMA);
    const m = new Manifest(db);
    m.setMeta('format_version', String(MANIFEST_FORMAT_VERSION));
    m.setMeta('created_at', createdAt);
    m.setMeta('created_by', 'bitfog');
    return m;
  }

  /**
   * Loads a manifest file. Throws ENOENT when missing, EBADSPOOL when it is not a
   * manifest, is damaged, or has a format this version does not know.
   */
  static async load(file: string): Promise<Manifest> {
    let bytes: Buffer;
    try {
      bytes = await fsp.readFile(file);
    } catch (e) {
      throw toBitfogError(e, `cannot read manifest`);
    }
    return Manifest.fromBytes(bytes, file);
  }

  /**
   * A manifest from the bytes of a manifest file (named `file` in messages). Throws
   * EBADSPOOL as `load`. `check: false` skips reading every entry to find damage early, for
   * bytes known to be what this program wrote.
   */
  static async fromBytes(bytes: Uint8Array, file: string, { check = true }: { check?: boolean } = {}): Promise<Manifest> {
    if (!looksLikeSqlite(bytes)) throw bitfogError('EBADSPOOL', `${file} is not a bitfog manifest (not a SQLite database)`);
    const SQL = await sqlite();
    let db: Database;
    let version: string | undefined;
    try {
      db = new SQL.Database(bytes);
      const rows = db.exec(`SELECT value FROM meta WHERE key = 'format_version'`);
      version = rows[0]?.values[0]?.[0] as string | undefined;
      // Reading every table page finds most damage now rather than halfway through a command.
      if (check) db.exec('SELECT count(*) FROM snapshots; SELECT count(*) FROM entries');
    } catch (e) {
      throw bitfogError('EBADSPOOL', `${file} is damaged or not a bitfog manifest: ${(e as Error).message}`, { cause: e });
    }
    if (version === undefined) throw bitfogError('EBADSPOOL', `${file} has no format version: not a bitfog manifest`);
    if (!/^\d+$/.test(version) || Number(version) > MANIFEST_FORMAT_VERSION) {
      db.close();
      throw bitfogError(
        'EBADSPOOL',
        `${file} has manifest format ${version}; this bitfog reads format ${MANIFEST_FORMAT_VERSION} and older. Upgrade bitfog to use this spool.`,
      );
    }
    const m = new Manifest(db);
    if (Number(version) < MANIFEST_FORMAT_VERSION) {
      db.exec(DELTA_SCHEMA);
      m.setMeta('format_version', String(MANIFEST_FORMAT_VERSION));
    }
    return m;
  }

  /** Writes the whole database to `file` atomically (temp, fsync, rename, fsync dir). */
  async save(file: string): Promise<void> {
    await writeFileAtomic(file, this.export());
  }

  /** The whole database as SQLite file bytes. */
  export(): Uint8Array {
    const bytes = this.db.export();
    // sql.js reopens the database to export it: connection settings start over.
    tuneForBulkWrites(this.db);
    return bytes;
  }

  close(): void {
    this.db.close();
  }

  getMeta(key: string): string | undefined {
    const r = this.db.exec('SELECT value FROM meta WHERE key = ?', [key]);
    return r[0]?.values[0]?.[0] as string | undefined;
  }

  setMeta(key: string, value: string): void {
    this.db.run('INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)', [key, value]);
  }

  hasSnapshot(role: SnapshotRole): boolean {
    return this.db.exec('SELECT 1 FROM snapshots WHERE role = ?', [role]).length > 0;
  }

  /** Where and when a recorded snapshot was taken, and how many entries it has, without reading them. */
  snapshotHeader(role: SnapshotRole): { url: string; takenAt: string; entries: number; assumedEmpty: boolean } | undefined {
    const row = this.db.exec('SELECT url, taken_at, entries, assumed_empty FROM snapshots WHERE role = ?', [role])[0]?.values[0];
    if (!row) return undefined;
    return { url: row[0] as string, takenAt: row[1] as string, entries: Number(row[2]), assumedEmpty: row[3] === 1 };
  }

  /** Roles of the snapshots this manifest holds. */
  snapshotRoles(): SnapshotRole[] {
    const r = this.db.exec('SELECT role FROM snapshots ORDER BY role');
    return (r[0]?.values ?? []).map((v) => v[0] as SnapshotRole);
  }

  getSnapshot(role: SnapshotRole): Snapshot | undefined {
    const head = this.db.exec('SELECT url, taken_at, assumed_empty FROM snapshots WHERE role = ?', [role]);
    const row = head[0]?.values[0];
    if (!row) return undefined;
    const entries = new Map<string, Entry>();
    const stmt = this.db.prepare(
      'SELECT path, kind, size, mode, mtime_ms, hash, link_target FROM entries WHERE role = ?',
    );
    try {
      stmt.bind([role]);
      while (stmt.step()) {
        const [path, kind, size, mode, mtimeMs, hash, linkTarget] = stmt.get() as [
          string, EntryKind, number, number | null, number | null, string | null, string | null,
        ];
        // A spool comes from elsewhere: never trust its paths or numbers to be sane.
        const problem = relPathProblem(path);
        if (problem || !Number.isSafeInteger(size) || size < 0 || !['file', 'symlink', 'directory'].includes(kind)) {
          throw bitfogError('EBADSPOOL', `the manifest's ${role} snapshot has an invalid entry ${JSON.stringify(path)}${problem ? ` (${problem})` : ''}; refusing to use it`);
        }
        const e: Entry = { path: path as RelPath, kind, size };
        if (mode !== null) e.mode = mode;
        if (mtimeMs !== null) e.mtimeMs = mtimeMs;
        if (hash !== null) e.hash = hash;
        if (linkTarget !== null) e.linkTarget = linkTarget;
        entries.set(path, e);
      }
    } finally {
      stmt.free();
    }
    return { url: row[0] as string, takenAt: row[1] as string, entries, ...(row[2] ? { assumedEmpty: true } : {}) };
  }

  /** Replaces the snapshot of `role`. */
  putSnapshot(role: SnapshotRole, snapshot: Snapshot): void {
    const db = this.db;
    db.exec('BEGIN');
    try {
      db.run('DELETE FROM entries WHERE role = ?', [role]);
      db.run('DELETE FROM snapshots WHERE role = ?', [role]);
      let bytes = 0;
      const stmt = db.prepare(
        'INSERT INTO entries(role, path, kind, size, mode, mtime_ms, hash, link_target) VALUES (?,?,?,?,?,?,?,?)',
      );
      try {
        for (const e of snapshot.entries.values()) {
          if (e.kind === 'file') bytes += e.size;
          stmt.run([role, e.path, e.kind, e.size, e.mode ?? null, e.mtimeMs ?? null, e.hash ?? null, e.linkTarget ?? null]);
        }
      } finally {
        stmt.free();
      }
      db.run('INSERT INTO snapshots(role, url, taken_at, entries, bytes, assumed_empty) VALUES (?,?,?,?,?,?)', [
        role, snapshot.url, snapshot.takenAt, snapshot.entries.size, bytes, snapshot.assumedEmpty ? 1 : 0,
      ]);
      db.exec('COMMIT');
    } catch (e) {
      db.exec('ROLLBACK');
      throw e;
    }
  }

  /** Replaces the record of carried blobs (the blobs directory is the truth; this mirrors it). */
  setCarried(blobs: Iterable<{ hash: string; size: number; carriedAt?: string }>): void {
    const db = this.db;
    db.exec('BEGIN');
    try {
      const old = new Map<string, string>();
      const r = db.exec('SELECT hash, carried_at FROM carried');
      for (const v of r[0]?.values ?? []) old.set(v[0] as string, v[1] as string);
      db.run('DELETE FROM carried');
      const stmt = db.prepare('INSERT INTO carried(hash, size, carried_at) VALUES (?,?,?)');
      const now = new Date().toISOString();
      try {
        for (const b of blobs) stmt.run([b.hash, b.size, b.carriedAt ?? old.get(b.hash) ?? now]);
      } finally {
        stmt.free();
      }
      db.exec('COMMIT');
    } catch (e) {
      db.exec('ROLLBACK');
      throw e;
    }
  }

  /** The carried blobs as last recorded (by `setCarried`, at the last save). */
  carriedRecord(): Array<{ hash: string; size: number }> {
    const r = this.db.exec('SELECT hash, size FROM carried');
    return (r[0]?.values ?? []).map((v) => ({ hash: v[0] as string, size: Number(v[1]) }));
  }

  appendJournal(trip: number, events: JournalEvent[]): void {
    if (events.length === 0) return;
    const at = new Date().toISOString();
    const stmt = this.db.prepare('INSERT INTO journal(at, trip, command, event, path, detail) VALUES (?,?,?,?,?,?)');
    this.db.exec('BEGIN');
    try {
      for (const e of events) stmt.run([at, trip, e.command, e.event, e.path ?? null, e.detail ?? null]);
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    } finally {
      stmt.free();
    }
  }

  journal(options: { limit?: number; events?: string[] } = {}): JournalRow[] {
    const where = options.events?.length ? `WHERE event IN (${options.events.map(() => '?').join(',')})` : '';
    const r = this.db.exec(
      `SELECT id, at, trip, command, event, path, detail FROM journal ${where} ORDER BY id DESC LIMIT ?`,
      [...(options.events ?? []), options.limit ?? 1_000_000],
    );
    return (r[0]?.values ?? []).reverse().map((v) => ({
      id: v[0] as number, at: v[1] as string, trip: v[2] as number, command: v[3] as string,
      event: v[4] as string, ...(v[5] === null ? {} : { path: v[5] as string }), ...(v[6] === null ? {} : { detail: v[6] as string }),
    }));
  }

  setConflicts(conflicts: Conflict[]): void {
    this.db.run('DELETE FROM conflicts');
    const at = new Date().toISOString();
    for (const c of conflicts) this.db.run('INSERT OR REPLACE INTO conflicts(path, reason, found_at) VALUES (?,?,?)', [c.path, c.reason, at]);
  }

  conflicts(): Conflict[] {
    const r = this.db.exec('SELECT path, reason FROM conflicts ORDER BY path');
    return (r[0]?.values ?? []).map((v) => ({ path: v[0] as string, reason: v[1] as string }));
  }

  setSkipped(role: SnapshotRole, skipped: Array<{ path: string; reason: string }>): void {
    this.db.run('DELETE FROM skipped WHERE role = ?', [role]);
    for (const s of skipped) this.db.run('INSERT OR REPLACE INTO skipped(role, path, reason) VALUES (?,?,?)', [role, s.path, s.reason]);
  }

  skipped(role: SnapshotRole): Array<{ path: string; reason: string }> {
    const r = this.db.exec('SELECT path, reason FROM skipped WHERE role = ? ORDER BY path', [role]);
    return (r[0]?.values ?? []).map((v) => ({ path: v[0] as string, reason: v[1] as string }));
  }
}
