// src/cli/main.ts
import { Builtins, Cli } from "clipanion";

// src/cli/commands/builddb.ts
import { Command as Command2, Option as Option2 } from "clipanion";

// src/core/manifest.ts
import { promises as fsp2 } from "node:fs";

// src/core/errors.ts
var BitfogError = class extends Error {
  code;
  /** The entry path the error is about, when there is one (portable relative form). */
  path;
  constructor(code, message, options = {}) {
    super(message, options.cause === void 0 ? void 0 : { cause: options.cause });
    this.name = "BitfogError";
    this.code = code;
    if (options.path !== void 0) this.path = options.path;
  }
};
function isBitfogError(err, ...codes) {
  return err instanceof BitfogError && (codes.length === 0 || codes.includes(err.code));
}
function bitfogError(code, message, options) {
  return new BitfogError(code, message, options);
}
var ERRNO_TO_CODE = {
  ENOENT: "ENOENT",
  EEXIST: "EEXIST",
  EISDIR: "EISDIR",
  ENOTDIR: "ENOTDIR",
  ENOTEMPTY: "ENOTEMPTY",
  EACCES: "EACCES",
  EPERM: "EACCES",
  EROFS: "EROFS",
  ENOSPC: "ENOSPC",
  EDQUOT: "ENOSPC",
  EFBIG: "ENOSPC",
  ELOOP: "ENOENT",
  ECONNREFUSED: "EUNREACHABLE",
  ENOTFOUND: "EUNREACHABLE",
  EHOSTUNREACH: "EUNREACHABLE",
  ENETUNREACH: "EUNREACHABLE",
  ECONNRESET: "ETRANSIENT",
  ETIMEDOUT: "ETRANSIENT",
  EPIPE: "ETRANSIENT",
  EAI_AGAIN: "ETRANSIENT",
  ABORT_ERR: "EABORTED"
};
function toBitfogError(err, what, path5) {
  if (err instanceof BitfogError) return err;
  const errno = err?.code;
  const name = err?.name;
  let code = typeof errno === "string" && ERRNO_TO_CODE[errno] ? ERRNO_TO_CODE[errno] : "EIO";
  if (name === "AbortError") code = "EABORTED";
  const detail = describeNativeError(err);
  const message = what ? `${what}: ${detail}` : detail;
  return new BitfogError(code, message, { cause: err, ...path5 === void 0 ? {} : { path: path5 } });
}
function describeNativeError(err) {
  const e = err;
  if (e && typeof e.code === "string" && typeof e.syscall === "string") {
    return `${e.code} (${e.syscall})`;
  }
  if (e && typeof e.message === "string") return e.message;
  return String(err);
}
function abortError(signal) {
  const reason = signal?.reason;
  return new BitfogError("EABORTED", "operation aborted", reason === void 0 ? {} : { cause: reason });
}
function throwIfAborted(signal) {
  if (signal?.aborted) throw abortError(signal);
}

// src/core/fsutil.ts
import { randomBytes } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
async function writeFileAtomic(file, data) {
  const tmp = `${file}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await fsp.open(tmp, "w", 420);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await syncDir(path.dirname(file));
}
async function syncDir(dir) {
  let handle;
  try {
    handle = await fsp.open(dir, "r");
    await handle.sync();
  } catch (e) {
    if (!["EINVAL", "EISDIR", "EPERM", "EBADF"].includes(e.code ?? "")) throw e;
  } finally {
    await handle?.close();
  }
}

// src/core/paths.ts
var ROOT = "";
function relPathProblem(raw, allowRoot = false) {
  if (typeof raw !== "string") return "not a string";
  if (raw === "") return allowRoot ? void 0 : "empty path";
  if (raw.includes("\0")) return "contains NUL";
  if (raw.startsWith("/")) return "absolute path";
  if (raw.endsWith("/")) return "trailing slash";
  for (const segment of raw.split("/")) {
    if (segment === "") return "empty segment";
    if (segment === "." || segment === "..") return `"${segment}" segment`;
  }
  if (!isWellFormedUnicode(raw)) return "not valid Unicode";
  return void 0;
}
function isWellFormedUnicode(s) {
  const f = s.isWellFormed;
  return f ? f.call(s) : !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ""));
}
function childPath(parent, name) {
  if (name.includes("/") || name === "" || name === "." || name === ".." || name.includes("\0")) {
    throw bitfogError("EBADPATH", `invalid name ${JSON.stringify(name)} under ${JSON.stringify(parent)}`);
  }
  return parent === "" ? name : `${parent}/${name}`;
}
function parentPath(path5) {
  const i = path5.lastIndexOf("/");
  return i < 0 ? "" : path5.slice(0, i);
}
function baseName(path5) {
  return path5.slice(path5.lastIndexOf("/") + 1);
}
function ancestors(path5) {
  const out = [];
  let i = path5.indexOf("/");
  while (i >= 0) {
    out.push(path5.slice(0, i));
    i = path5.indexOf("/", i + 1);
  }
  return out;
}
function depth(path5) {
  if (path5 === "") return 0;
  let n = 1;
  for (let i = 0; i < path5.length; i++) if (path5.charCodeAt(i) === 47) n++;
  return n;
}
function comparePaths(a, b) {
  const as = a.split("/");
  const bs = b.split("/");
  const n = Math.min(as.length, bs.length);
  for (let i = 0; i < n; i++) {
    if (as[i] !== bs[i]) return as[i] < bs[i] ? -1 : 1;
  }
  return as.length - bs.length;
}

// src/core/sqlite.ts
import { createRequire } from "node:module";
import initSqlJs from "sql.js";
var loading;
function sqlite() {
  if (!loading) {
    const require2 = createRequire(import.meta.url);
    const wasm = require2.resolve("sql.js/dist/sql-wasm.wasm");
    loading = initSqlJs({ locateFile: () => wasm });
  }
  return loading;
}
function looksLikeSqlite(bytes) {
  return Buffer.from(bytes.subarray(0, 16)).toString("latin1") === "SQLite format 3\0";
}

// src/core/manifest.ts
var MANIFEST_FORMAT_VERSION = 1;
var SCHEMA = `
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
var Manifest = class _Manifest {
  db;
  constructor(db) {
    this.db = db;
  }
  /** A new, empty manifest. */
  static async create() {
    const SQL = await sqlite();
    const db = new SQL.Database();
    db.exec(SCHEMA);
    const m = new _Manifest(db);
    m.setMeta("format_version", String(MANIFEST_FORMAT_VERSION));
    m.setMeta("created_at", (/* @__PURE__ */ new Date()).toISOString());
    m.setMeta("created_by", "bitfog");
    return m;
  }
  /**
   * Loads a manifest file. Throws ENOENT when missing, EBADSPOOL when it is not a
   * manifest, is damaged, or has a format this version does not know.
   */
  static async load(file) {
    let bytes;
    try {
      bytes = await fsp2.readFile(file);
    } catch (e) {
      throw toBitfogError(e, `cannot read manifest`);
    }
    if (!looksLikeSqlite(bytes)) throw bitfogError("EBADSPOOL", `${file} is not a bitfog manifest (not a SQLite database)`);
    const SQL = await sqlite();
    let db;
    let version;
    try {
      db = new SQL.Database(bytes);
      const rows = db.exec(`SELECT value FROM meta WHERE key = 'format_version'`);
      version = rows[0]?.values[0]?.[0];
      db.exec("SELECT count(*) FROM snapshots; SELECT count(*) FROM entries");
    } catch (e) {
      throw bitfogError("EBADSPOOL", `${file} is damaged or not a bitfog manifest: ${e.message}`, { cause: e });
    }
    if (version === void 0) throw bitfogError("EBADSPOOL", `${file} has no format version: not a bitfog manifest`);
    if (!/^\d+$/.test(version) || Number(version) > MANIFEST_FORMAT_VERSION) {
      db.close();
      throw bitfogError(
        "EBADSPOOL",
        `${file} has manifest format ${version}; this bitfog reads format ${MANIFEST_FORMAT_VERSION} and older. Upgrade bitfog to use this spool.`
      );
    }
    return new _Manifest(db);
  }
  /** Writes the whole database to `file` atomically (temp, fsync, rename, fsync dir). */
  async save(file) {
    await writeFileAtomic(file, this.db.export());
  }
  close() {
    this.db.close();
  }
  getMeta(key) {
    const r = this.db.exec("SELECT value FROM meta WHERE key = ?", [key]);
    return r[0]?.values[0]?.[0];
  }
  setMeta(key, value) {
    this.db.run("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", [key, value]);
  }
  hasSnapshot(role) {
    return this.db.exec("SELECT 1 FROM snapshots WHERE role = ?", [role]).length > 0;
  }
  /** Roles of the snapshots this manifest holds. */
  snapshotRoles() {
    const r = this.db.exec("SELECT role FROM snapshots ORDER BY role");
    return (r[0]?.values ?? []).map((v) => v[0]);
  }
  getSnapshot(role) {
    const head = this.db.exec("SELECT url, taken_at, assumed_empty FROM snapshots WHERE role = ?", [role]);
    const row = head[0]?.values[0];
    if (!row) return void 0;
    const entries = /* @__PURE__ */ new Map();
    const stmt = this.db.prepare(
      "SELECT path, kind, size, mode, mtime_ms, hash, link_target FROM entries WHERE role = ?"
    );
    try {
      stmt.bind([role]);
      while (stmt.step()) {
        const [path5, kind, size, mode, mtimeMs, hash, linkTarget] = stmt.get();
        const problem = relPathProblem(path5);
        if (problem || !Number.isSafeInteger(size) || size < 0 || !["file", "symlink", "directory"].includes(kind)) {
          throw bitfogError("EBADSPOOL", `the manifest's ${role} snapshot has an invalid entry ${JSON.stringify(path5)}${problem ? ` (${problem})` : ""}; refusing to use it`);
        }
        const e = { path: path5, kind, size };
        if (mode !== null) e.mode = mode;
        if (mtimeMs !== null) e.mtimeMs = mtimeMs;
        if (hash !== null) e.hash = hash;
        if (linkTarget !== null) e.linkTarget = linkTarget;
        entries.set(path5, e);
      }
    } finally {
      stmt.free();
    }
    return { url: row[0], takenAt: row[1], entries, ...row[2] ? { assumedEmpty: true } : {} };
  }
  /** Replaces the snapshot of `role`. */
  putSnapshot(role, snapshot) {
    const db = this.db;
    db.exec("BEGIN");
    try {
      db.run("DELETE FROM entries WHERE role = ?", [role]);
      db.run("DELETE FROM snapshots WHERE role = ?", [role]);
      let bytes = 0;
      const stmt = db.prepare(
        "INSERT INTO entries(role, path, kind, size, mode, mtime_ms, hash, link_target) VALUES (?,?,?,?,?,?,?,?)"
      );
      try {
        for (const e of snapshot.entries.values()) {
          if (e.kind === "file") bytes += e.size;
          stmt.run([role, e.path, e.kind, e.size, e.mode ?? null, e.mtimeMs ?? null, e.hash ?? null, e.linkTarget ?? null]);
        }
      } finally {
        stmt.free();
      }
      db.run("INSERT INTO snapshots(role, url, taken_at, entries, bytes, assumed_empty) VALUES (?,?,?,?,?,?)", [
        role,
        snapshot.url,
        snapshot.takenAt,
        snapshot.entries.size,
        bytes,
        snapshot.assumedEmpty ? 1 : 0
      ]);
      db.exec("COMMIT");
    } catch (e) {
      db.exec("ROLLBACK");
      throw e;
    }
  }
  /** Replaces the record of carried blobs (the blobs directory is the truth; this mirrors it). */
  setCarried(blobs) {
    const db = this.db;
    db.exec("BEGIN");
    try {
      const old = /* @__PURE__ */ new Map();
      const r = db.exec("SELECT hash, carried_at FROM carried");
      for (const v of r[0]?.values ?? []) old.set(v[0], v[1]);
      db.run("DELETE FROM carried");
      const stmt = db.prepare("INSERT INTO carried(hash, size, carried_at) VALUES (?,?,?)");
      const now = (/* @__PURE__ */ new Date()).toISOString();
      try {
        for (const b of blobs) stmt.run([b.hash, b.size, b.carriedAt ?? old.get(b.hash) ?? now]);
      } finally {
        stmt.free();
      }
      db.exec("COMMIT");
    } catch (e) {
      db.exec("ROLLBACK");
      throw e;
    }
  }
  appendJournal(trip, events) {
    if (events.length === 0) return;
    const at = (/* @__PURE__ */ new Date()).toISOString();
    const stmt = this.db.prepare("INSERT INTO journal(at, trip, command, event, path, detail) VALUES (?,?,?,?,?,?)");
    this.db.exec("BEGIN");
    try {
      for (const e of events) stmt.run([at, trip, e.command, e.event, e.path ?? null, e.detail ?? null]);
      this.db.exec("COMMIT");
    } catch (err) {
      this.db.exec("ROLLBACK");
      throw err;
    } finally {
      stmt.free();
    }
  }
  journal(options = {}) {
    const where = options.events?.length ? `WHERE event IN (${options.events.map(() => "?").join(",")})` : "";
    const r = this.db.exec(
      `SELECT id, at, trip, command, event, path, detail FROM journal ${where} ORDER BY id DESC LIMIT ?`,
      [...options.events ?? [], options.limit ?? 1e6]
    );
    return (r[0]?.values ?? []).reverse().map((v) => ({
      id: v[0],
      at: v[1],
      trip: v[2],
      command: v[3],
      event: v[4],
      ...v[5] === null ? {} : { path: v[5] },
      ...v[6] === null ? {} : { detail: v[6] }
    }));
  }
  setConflicts(conflicts) {
    this.db.run("DELETE FROM conflicts");
    const at = (/* @__PURE__ */ new Date()).toISOString();
    for (const c of conflicts) this.db.run("INSERT OR REPLACE INTO conflicts(path, reason, found_at) VALUES (?,?,?)", [c.path, c.reason, at]);
  }
  conflicts() {
    const r = this.db.exec("SELECT path, reason FROM conflicts ORDER BY path");
    return (r[0]?.values ?? []).map((v) => ({ path: v[0], reason: v[1] }));
  }
  setSkipped(role, skipped) {
    this.db.run("DELETE FROM skipped WHERE role = ?", [role]);
    for (const s of skipped) this.db.run("INSERT OR REPLACE INTO skipped(role, path, reason) VALUES (?,?,?)", [role, s.path, s.reason]);
  }
  skipped(role) {
    const r = this.db.exec("SELECT path, reason FROM skipped WHERE role = ? ORDER BY path", [role]);
    return (r[0]?.values ?? []).map((v) => ({ path: v[0], reason: v[1] }));
  }
};

// src/core/sizes.ts
var UNITS = {
  "": 1,
  b: 1,
  k: 2 ** 10,
  kib: 2 ** 10,
  kb: 1e3,
  m: 2 ** 20,
  mib: 2 ** 20,
  mb: 1e6,
  g: 2 ** 30,
  gib: 2 ** 30,
  gb: 1e9,
  t: 2 ** 40,
  tib: 2 ** 40,
  tb: 1e12,
  p: 2 ** 50,
  pib: 2 ** 50,
  pb: 1e15
};
function parseSize(text) {
  const m = /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNITS[m[2].toLowerCase()] : void 0;
  if (!m || unit === void 0) {
    throw bitfogError("EUSAGE", `invalid size ${JSON.stringify(text)} (examples: 500G, 1.5T, 200MiB, 750GB, 4096)`);
  }
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!Number.isSafeInteger(bytes)) throw bitfogError("EUSAGE", `size ${JSON.stringify(text)} is too large`);
  return bytes;
}
function formatSize(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let v = bytes;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  if (i === 0) return `${bytes} B`;
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)} ${units[i]}`;
}
function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) return "?";
  if (seconds < 10) return `${seconds.toFixed(1)}s`;
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor(s % 3600 / 60);
  const r = s % 60;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(r).padStart(2, "0")}s`;
  return `${r}s`;
}

// src/core/snapshot.ts
import pLimit from "p-limit";

// src/core/hashing.ts
import { createHash } from "node:crypto";
var HASH_ALGORITHM = "sha256";
var EMPTY_HASH = `sha256:${createHash("sha256").digest("hex")}`;
function formatHash(hash) {
  return `${HASH_ALGORITHM}:${hash.digest("hex")}`;
}
function sha256Hex(hash) {
  if (!hash) return void 0;
  const m = /^sha256:([0-9a-f]{64})$/.exec(hash);
  return m ? m[1] : void 0;
}
async function hashStream(stream, onBytes) {
  const h = createHash(HASH_ALGORITHM);
  let bytes = 0;
  for await (const chunk of stream) {
    h.update(chunk);
    bytes += chunk.length;
    onBytes?.(chunk.length);
  }
  return { hash: formatHash(h), bytes };
}

// src/core/hashcache.ts
import { createHash as createHash2 } from "node:crypto";
import { promises as fsp3 } from "node:fs";
import os from "node:os";
import path2 from "node:path";
var RACY_WINDOW_MS = 2e3;
function defaultCacheDir(env = process.env) {
  if (env.BITFOG_CACHE_DIR) return env.BITFOG_CACHE_DIR;
  const base = env.XDG_CACHE_HOME || path2.join(os.homedir(), ".cache");
  return path2.join(base, "bitfog");
}
var HashCache = class _HashCache {
  file;
  #records = /* @__PURE__ */ new Map();
  #dirty = false;
  constructor(file) {
    this.file = file;
  }
  /** A cache that remembers nothing across runs (for tests and `--no-cache`). */
  static memory() {
    return new _HashCache(void 0);
  }
  /**
   * Opens the cache of the tree at `url` in `cacheDir`. A missing or unreadable cache file
   * is not an error: the cache starts empty (it is only an accelerator).
   */
  static async open(url, cacheDir = defaultCacheDir()) {
    const key = createHash2("sha256").update(url).digest("hex").slice(0, 32);
    const file = path2.join(cacheDir, "hashes", `${key}.sqlite`);
    const cache = new _HashCache(file);
    let bytes;
    try {
      bytes = await fsp3.readFile(file);
    } catch {
      return cache;
    }
    if (!looksLikeSqlite(bytes)) return cache;
    try {
      const SQL = await sqlite();
      const db = new SQL.Database(bytes);
      const stmt = db.prepare("SELECT path, version, size, hash, recorded_at_ms FROM hashes");
      while (stmt.step()) {
        const [p, version, size, hash, recordedAtMs] = stmt.get();
        cache.#records.set(p, { version, size, hash, recordedAtMs });
      }
      stmt.free();
      db.close();
    } catch {
      cache.#records.clear();
    }
    return cache;
  }
  get size() {
    return this.#records.size;
  }
  /** The cached hash for `entry`, or undefined when it cannot be trusted. */
  lookup(entry) {
    if (entry.version === void 0) return void 0;
    const r = this.#records.get(entry.path);
    if (!r || r.version !== entry.version || r.size !== entry.size) return void 0;
    if (entry.changedAtMs !== void 0 && r.recordedAtMs - entry.changedAtMs < RACY_WINDOW_MS) return void 0;
    return r.hash;
  }
  /**
   * Records that `entry` (as listed, with its version) hashed to `hash`; `recordedAtMs` is
   * when reading began (default: now).
   */
  record(entry, hash, recordedAtMs = Date.now()) {
    if (entry.version === void 0) return;
    this.#records.set(entry.path, { version: entry.version, size: entry.size, hash, recordedAtMs });
    this.#dirty = true;
  }
  /** Drops records of paths not in `keep` (entries that no longer exist). */
  retainOnly(keep) {
    for (const p of this.#records.keys()) {
      if (!keep(p)) {
        this.#records.delete(p);
        this.#dirty = true;
      }
    }
  }
  /** Writes the cache back if it changed. Failures are ignored: the cache is an accelerator. */
  async save() {
    if (!this.file || !this.#dirty) return;
    try {
      const SQL = await sqlite();
      const db = new SQL.Database();
      db.exec(
        "CREATE TABLE hashes (path TEXT PRIMARY KEY, version TEXT NOT NULL, size INTEGER NOT NULL, hash TEXT NOT NULL, recorded_at_ms REAL NOT NULL) WITHOUT ROWID"
      );
      db.exec("BEGIN");
      const stmt = db.prepare("INSERT INTO hashes VALUES (?,?,?,?,?)");
      for (const [p, r] of this.#records) stmt.run([p, r.version, r.size, r.hash, r.recordedAtMs]);
      stmt.free();
      db.exec("COMMIT");
      await fsp3.mkdir(path2.dirname(this.file), { recursive: true });
      await writeFileAtomic(this.file, db.export());
      db.close();
      this.#dirty = false;
    } catch {
    }
  }
};

// src/core/tempnames.ts
import { randomBytes as randomBytes2 } from "node:crypto";
var PREFIX = ".bitfog-tmp-";
var PATTERN = /^\.bitfog-tmp-[0-9a-f]{16}(?:-|$)/;
function tempSiblingOf(path5) {
  const hint = baseName(path5).replace(/[^A-Za-z0-9._-]/g, "_").slice(0, 40);
  return childPath(parentPath(path5), `${PREFIX}${randomBytes2(8).toString("hex")}-${hint}`);
}
function isTempPath(path5) {
  return PATTERN.test(path5.slice(path5.lastIndexOf("/") + 1));
}

// src/core/snapshot.ts
async function takeSnapshot(backend, options) {
  const { side, cache, signal, onProgress } = options;
  const entries = /* @__PURE__ */ new Map();
  const skipped = [];
  const tempFiles = [];
  const takenAt = (/* @__PURE__ */ new Date()).toISOString();
  for await (const entry of backend.list({ signal, onSkip: (path5, reason) => skipped.push({ path: path5, reason }) })) {
    if (isTempPath(entry.path)) {
      if (entry.kind !== "directory") tempFiles.push(entry.path);
      continue;
    }
    entries.set(entry.path, entry);
    if (entries.size % 1e3 === 0) {
      throwIfAborted(signal);
      onProgress?.({ type: "scan", side, url: backend.url, entries: entries.size });
    }
  }
  const toHash = [];
  let toHashBytes = 0;
  let sizeCounts;
  const filesOfSize = (size) => {
    if (!sizeCounts) {
      sizeCounts = /* @__PURE__ */ new Map();
      for (const e of entries.values()) if (e.kind === "file") sizeCounts.set(e.size, (sizeCounts.get(e.size) ?? 0) + 1);
    }
    return sizeCounts.get(size) ?? 0;
  };
  for (const entry of entries.values()) {
    if (entry.kind !== "file") continue;
    if (sha256Hex(entry.hash)) continue;
    if (entry.size === 0) {
      entry.hash = EMPTY_HASH;
      continue;
    }
    const known = options.knownHashes?.get(entry.path);
    if (known && known.size === entry.size) {
      entry.hash = known.hash;
      cache.record(entry, known.hash, (entry.changedAtMs ?? 0) + RACY_WINDOW_MS);
      continue;
    }
    const cached = cache.lookup(entry);
    if (cached) {
      entry.hash = cached;
      continue;
    }
    entry.hash = void 0;
    if (options.wantHash && !options.wantHash(entry, filesOfSize)) continue;
    toHash.push(entry);
    toHashBytes += entry.size;
  }
  onProgress?.({ type: "scanned", side, url: backend.url, entries: entries.size, toHash: toHash.length, toHashBytes });
  let files = 0;
  let bytes = 0;
  const limit = pLimit(options.concurrency ?? Math.min(4, backend.capabilities.maxConcurrency));
  await Promise.all(
    toHash.map(
      (entry) => limit(async () => {
        throwIfAborted(signal);
        const startedAt = Date.now();
        try {
          const stream = await backend.read(entry.path, { signal });
          const { hash, bytes: n } = await hashStream(stream, (chunk) => {
            bytes += chunk;
          });
          if (n !== entry.size) {
            skipped.push({ path: entry.path, reason: "changed while being hashed" });
            return;
          }
          entry.hash = hash;
          cache.record(entry, hash, startedAt);
        } catch (e) {
          const err = toBitfogError(e, `cannot hash ${JSON.stringify(entry.path)}`, entry.path);
          if (err.code === "EABORTED") throw err;
          if (err.code === "ENOENT") {
            entries.delete(entry.path);
            return;
          }
          if (err.code === "EACCES" || err.code === "EISDIR" || err.code === "EOPNOTSUPP") {
            skipped.push({ path: entry.path, reason: err.message });
            return;
          }
          throw err;
        }
        files++;
        onProgress?.({ type: "hash", side, files, bytes });
      })
    )
  );
  cache.retainOnly((p) => entries.has(p));
  await cache.save();
  onProgress?.({ type: "scan", side, url: backend.url, entries: entries.size });
  return { snapshot: { url: backend.url, takenAt, entries }, skipped, tempFiles };
}

// src/cli/base.ts
import { Command, Option, UsageError } from "clipanion";

// src/core/registry.ts
var SCHEME_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;
var BackendRegistry = class {
  #byScheme = /* @__PURE__ */ new Map();
  /** Registers a provider. Throws EPLUGIN when one of its schemes is already claimed. */
  register(provider, origin) {
    for (const raw of provider.schemes) {
      const scheme = raw.toLowerCase();
      const existing = this.#byScheme.get(scheme);
      if (existing) {
        throw bitfogError(
          "EPLUGIN",
          `scheme "${scheme}" of ${origin} is already provided by ${existing.origin}`
        );
      }
    }
    for (const scheme of provider.schemes) this.#byScheme.set(scheme.toLowerCase(), { provider, origin });
  }
  /** Every registered scheme with its provider, sorted by scheme. */
  list() {
    return [...this.#byScheme.entries()].sort(([a], [b]) => a < b ? -1 : 1).map(([scheme, r]) => ({ scheme, ...r }));
  }
  /** The scheme a URL selects: its own, or `file` for a plain path. */
  schemeOf(url) {
    const m = SCHEME_RE.exec(url);
    return m ? m[1].toLowerCase() : "file";
  }
  /** The provider for a URL. Throws EBADURL for an unknown scheme, listing the known ones. */
  providerFor(url) {
    if (url === "") throw bitfogError("EBADURL", "empty URL");
    const scheme = this.schemeOf(url);
    const found = this.#byScheme.get(scheme);
    if (!found) {
      const known = [...this.#byScheme.keys()].sort().join(", ");
      throw bitfogError("EBADURL", `no backend for "${scheme}://" URLs (known schemes: ${known || "none"})`);
    }
    return found;
  }
  async openSource(url, options = {}) {
    return this.providerFor(url).provider.open(url, { ...options, write: false });
  }
  async openDestination(url, options = {}) {
    const backend = await this.providerFor(url).provider.open(url, { ...options, write: true });
    if (typeof backend.write !== "function") {
      await backend.close();
      throw bitfogError("EROFS", `${backend.url} cannot be written to`);
    }
    return backend;
  }
};

// src/backends/local/index.ts
import { fileURLToPath } from "node:url";

// src/backends/local/local.ts
import { execFile } from "node:child_process";
import { constants as C, createReadStream, promises as fsp4 } from "node:fs";
import path3 from "node:path";
import { Readable } from "node:stream";
var localCapabilities = {
  atomicRename: true,
  atomicWrite: false,
  symlinks: true,
  rangedReads: true,
  serverSideHashes: false,
  // The kernel keeps nanoseconds, but Node sets times through a double of seconds: a few µs of error.
  mtimePrecisionMs: 0.01,
  modes: true,
  caseSensitive: process.platform !== "darwin" && process.platform !== "win32",
  emptyDirectories: true,
  maxConcurrency: 8
};
var READ_FLAGS = C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK;
var WRITE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_TRUNC | C.O_NOFOLLOW;
var LSTAT_BATCH = 64;
var SYNC_PARALLELISM = 16;
var SYNCFS_MIN_PATHS = 8;
var syncfsWorks;
async function syncFileSystem(dir) {
  if (syncfsWorks === false) return false;
  const ok = await new Promise((resolve) => {
    execFile("sync", ["-f", dir], (err) => resolve(!err));
  });
  syncfsWorks = ok;
  return ok;
}
var LocalBackend = class _LocalBackend {
  url;
  capabilities = localCapabilities;
  /** The root as given (absolute) and as the kernel resolves it. */
  #root;
  #realRoot;
  #procFd;
  constructor(url, root, realRoot, procFd) {
    this.url = url;
    this.#root = root;
    this.#realRoot = realRoot;
    this.#procFd = procFd;
  }
  /**
   * Opens the directory `root`. For writing, creates it (and its parents) when missing.
   * Throws ENOENT (reading a missing root), ENOTDIR.
   */
  static async open(url, root, { write }) {
    const abs = path3.resolve(root);
    if (write) {
      await fsp4.mkdir(abs, { recursive: true }).catch((e) => {
        throw toBitfogError(e, `cannot create ${url}`);
      });
    }
    let real;
    try {
      real = await fsp4.realpath(abs);
      const st = await fsp4.stat(real);
      if (!st.isDirectory()) throw bitfogError("ENOTDIR", `${url} is not a directory`);
    } catch (e) {
      const err = toBitfogError(e, `cannot open ${url}`);
      if (err.code === "ENOENT") throw bitfogError("ENOENT", `${url} does not exist`, { cause: e });
      throw err;
    }
    const procFd = await fsp4.access("/proc/self/fd").then(() => true, () => false);
    return new _LocalBackend(/^file:/i.test(url) ? url : abs, abs, real, procFd);
  }
  /** Absolute local path of a RelPath, lexically (no symlink resolution). */
  localPath(p) {
    return p === "" ? this.#root : path3.join(this.#root, p);
  }
  async *list(options = {}) {
    const { signal, onSkip } = options;
    const rootStat = await fsp4.stat(this.#root).catch((e) => {
      throw toBitfogError(e, `cannot list ${this.url}`);
    });
    if (!rootStat.isDirectory()) throw bitfogError("ENOTDIR", `${this.url} is not a directory`);
    const pending = [""];
    while (pending.length > 0) {
      throwIfAborted(signal);
      const dir = pending.pop();
      let names;
      try {
        names = await fsp4.readdir(this.localPath(dir), { encoding: "buffer" });
      } catch (e) {
        if (dir === "") throw toBitfogError(e, `cannot list ${this.url}`);
        onSkip?.(dir, `unreadable directory (${toBitfogError(e).message})`);
        continue;
      }
      const children = [];
      for (const raw of names) {
        const name = raw.toString("utf8");
        if (name.includes("\uFFFD") && !Buffer.from(name, "utf8").equals(raw)) {
          onSkip?.(dir === "" ? name : `${dir}/${name}`, "name is not valid UTF-8");
          continue;
        }
        children.push(childPath(dir, name));
      }
      for (let i = 0; i < children.length; i += LSTAT_BATCH) {
        const batch = children.slice(i, i + LSTAT_BATCH);
        const stats = await Promise.all(
          batch.map((p) => fsp4.lstat(this.localPath(p), { bigint: true }).catch((e) => e))
        );
        const links = [];
        const entries = [];
        for (let j = 0; j < batch.length; j++) {
          const p = batch[j];
          const st = stats[j];
          if (st instanceof Error) {
            if (st.code !== "ENOENT") onSkip?.(p, `cannot stat (${toBitfogError(st).message})`);
            continue;
          }
          const entry = entryFromStats(p, st);
          if (!entry) {
            onSkip?.(p, `not a regular file, symlink or directory`);
            continue;
          }
          if (entry.kind === "directory") pending.push(p);
          if (entry.kind === "symlink") {
            links.push(
              fsp4.readlink(this.localPath(p)).then(
                (t2) => {
                  entry.linkTarget = t2;
                },
                (e) => {
                  entry.linkTarget = void 0;
                  onSkip?.(p, `cannot read symlink (${toBitfogError(e).message})`);
                }
              )
            );
          }
          entries.push(entry);
        }
        await Promise.all(links);
        for (const e of entries) if (e.kind !== "symlink" || e.linkTarget !== void 0) yield e;
      }
    }
  }
  async stat(p) {
    await this.#checkParent(p);
    let st;
    try {
      st = await fsp4.lstat(this.localPath(p), { bigint: true });
    } catch (e) {
      throw toBitfogError(e, `cannot stat ${JSON.stringify(p)}`, p);
    }
    const entry = entryFromStats(p, st);
    if (!entry) throw bitfogError("EOPNOTSUPP", `${JSON.stringify(p)} is not a regular file, symlink or directory`, { path: p });
    if (entry.kind === "symlink") entry.linkTarget = await this.readlink(p);
    return entry;
  }
  async read(p, options = {}) {
    throwIfAborted(options.signal);
    const handle = await this.#openConfined(p, READ_FLAGS);
    try {
      const st = await handle.stat();
      if (st.isDirectory()) throw bitfogError("EISDIR", `${JSON.stringify(p)} is a directory`, { path: p });
      if (!st.isFile()) throw bitfogError("EOPNOTSUPP", `${JSON.stringify(p)} is not a regular file`, { path: p });
      if (options.end !== void 0 && options.end <= (options.start ?? 0)) {
        await handle.close();
        return Readable.from([]);
      }
      return createReadStream("", {
        fd: handle,
        start: options.start ?? 0,
        ...options.end === void 0 ? {} : { end: options.end - 1 },
        highWaterMark: 1 << 20,
        autoClose: true,
        ...options.signal ? { signal: options.signal } : {}
      });
    } catch (e) {
      await handle.close().catch(() => {
      });
      throw toBitfogError(e, `cannot read ${JSON.stringify(p)}`, p);
    }
  }
  async readlink(p) {
    await this.#checkParent(p);
    try {
      return await fsp4.readlink(this.localPath(p));
    } catch (e) {
      throw toBitfogError(e, `cannot read symlink ${JSON.stringify(p)}`, p);
    }
  }
  async write(p, content, options) {
    throwIfAborted(options.signal);
    const handle = await this.#openConfined(p, WRITE_FLAGS, 384);
    let written = 0;
    try {
      for await (const chunk of content) {
        throwIfAborted(options.signal);
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, off, chunk.length - off, written + off);
          off += bytesWritten;
        }
        written += chunk.length;
      }
    } catch (e) {
      await handle.close().catch(() => {
      });
      content.destroy();
      throw toBitfogError(e, `cannot write ${JSON.stringify(p)}`, p);
    }
    await handle.close();
    if (written !== options.size) {
      throw bitfogError("EINTEGRITY", `wrote ${written} bytes to ${JSON.stringify(p)}, expected ${options.size}`, { path: p });
    }
    if (options.mode !== void 0 || options.mtimeMs !== void 0) await this.setMetadata(p, options);
  }
  async mkdir(p) {
    await this.#checkParent(p);
    try {
      await fsp4.mkdir(this.localPath(p));
    } catch (e) {
      if (e.code === "EEXIST") {
        const st = await fsp4.lstat(this.localPath(p));
        if (st.isDirectory()) return;
      }
      throw toBitfogError(e, `cannot create directory ${JSON.stringify(p)}`, p);
    }
  }
  async remove(p) {
    await this.#checkParent(p);
    const local = this.localPath(p);
    try {
      const st = await fsp4.lstat(local);
      if (st.isDirectory()) throw bitfogError("EISDIR", `${JSON.stringify(p)} is a directory`, { path: p });
      await fsp4.unlink(local);
    } catch (e) {
      throw toBitfogError(e, `cannot remove ${JSON.stringify(p)}`, p);
    }
  }
  async rmdir(p) {
    await this.#checkParent(p);
    try {
      const st = await fsp4.lstat(this.localPath(p));
      if (!st.isDirectory()) throw bitfogError("ENOTDIR", `${JSON.stringify(p)} is not a directory`, { path: p });
      await fsp4.rmdir(this.localPath(p));
    } catch (e) {
      const err = toBitfogError(e, `cannot remove directory ${JSON.stringify(p)}`, p);
      if (e.code === "EEXIST") throw bitfogError("ENOTEMPTY", err.message, { cause: e, path: p });
      throw err;
    }
  }
  async symlink(p, target) {
    await this.#checkParent(p);
    try {
      await fsp4.symlink(target, this.localPath(p));
    } catch (e) {
      throw toBitfogError(e, `cannot create symlink ${JSON.stringify(p)}`, p);
    }
  }
  async rename(from, to) {
    await Promise.all([this.#checkParent(from), this.#checkParent(to)]);
    try {
      await fsp4.rename(this.localPath(from), this.localPath(to));
    } catch (e) {
      throw toBitfogError(e, `cannot rename ${JSON.stringify(from)} to ${JSON.stringify(to)}`, to);
    }
  }
  async setMetadata(p, metadata) {
    await this.#checkParent(p);
    const local = this.localPath(p);
    try {
      const st = await fsp4.lstat(local);
      if (st.isSymbolicLink()) {
        if (metadata.mtimeMs !== void 0) await fsp4.lutimes(local, /* @__PURE__ */ new Date(), metadata.mtimeMs / 1e3);
        return;
      }
      if (metadata.mode !== void 0) await fsp4.chmod(local, metadata.mode & 4095);
      if (metadata.mtimeMs !== void 0) await fsp4.utimes(local, /* @__PURE__ */ new Date(), metadata.mtimeMs / 1e3);
    } catch (e) {
      throw toBitfogError(e, `cannot set metadata of ${JSON.stringify(p)}`, p);
    }
  }
  async sync(paths) {
    if (paths.length >= SYNCFS_MIN_PATHS && await syncFileSystem(this.#root)) return;
    for (let i = 0; i < paths.length; i += SYNC_PARALLELISM) {
      await Promise.all(
        paths.slice(i, i + SYNC_PARALLELISM).map(async (p) => {
          let handle;
          try {
            handle = await fsp4.open(this.localPath(p), C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
            await handle.sync();
          } catch (e) {
            const code = e.code;
            if (code !== "ENOENT" && code !== "EINVAL" && code !== "ELOOP") throw toBitfogError(e, `cannot sync ${JSON.stringify(p)}`, p);
          } finally {
            await handle?.close();
          }
        })
      );
    }
  }
  async freeSpace() {
    const st = await fsp4.statfs(this.#root);
    return Number(st.bavail) * Number(st.bsize);
  }
  async close() {
  }
  /**
   * Opens a file inside the root without following a symlink at its last component, then
   * checks through the descriptor that what was opened really lies inside the root.
   */
  async #openConfined(p, flags, mode) {
    await this.#checkParent(p);
    let handle;
    try {
      handle = await fsp4.open(this.localPath(p), flags, mode);
    } catch (e) {
      if (e.code === "ELOOP") {
        throw bitfogError("EISDIR", `${JSON.stringify(p)} is a symlink, not a file`, { path: p, cause: e });
      }
      throw toBitfogError(e, `cannot open ${JSON.stringify(p)}`, p);
    }
    try {
      const real = this.#procFd ? await fsp4.readlink(`/proc/self/fd/${handle.fd}`) : await fsp4.realpath(this.localPath(p));
      if (!this.#insideRoot(real)) throw escapeError(p);
    } catch (e) {
      await handle.close().catch(() => {
      });
      if (flags & C.O_CREAT) await this.#unlinkIfEscaped(p);
      throw toBitfogError(e, `cannot open ${JSON.stringify(p)}`, p);
    }
    return handle;
  }
  /** Only a file this call created outside the root would be removed; inside-root files are untouched. */
  async #unlinkIfEscaped(p) {
    try {
      const real = await fsp4.realpath(this.localPath(p));
      if (!this.#insideRoot(real)) await fsp4.unlink(real);
    } catch {
    }
  }
  /** Throws EACCES when the parent directory of `p` resolves outside the root (a symlinked directory). */
  async #checkParent(p) {
    const slash = p.lastIndexOf("/");
    if (slash < 0) return;
    const lexical = path3.join(this.#root, p.slice(0, slash));
    let real;
    try {
      real = await fsp4.realpath(lexical);
    } catch {
      return;
    }
    if (real !== path3.join(this.#realRoot, p.slice(0, slash))) throw escapeError(p);
  }
  #insideRoot(real) {
    return real.startsWith(this.#realRoot.endsWith("/") ? this.#realRoot : this.#realRoot + "/");
  }
};
function escapeError(p) {
  return bitfogError("EACCES", `${JSON.stringify(p)} passes through a symlink; refusing to follow it`, { path: p });
}
function entryFromStats(p, st) {
  const kind = st.isFile() ? "file" : st.isSymbolicLink() ? "symlink" : st.isDirectory() ? "directory" : void 0;
  if (!kind) return void 0;
  const mtimeNs = st.mtimeNs;
  const ctimeNs = st.ctimeNs;
  return {
    path: p,
    kind,
    size: kind === "directory" ? 0 : Number(st.size),
    mode: Number(st.mode) & 4095,
    mtimeMs: Number(mtimeNs / 1000n) / 1e3,
    version: `${st.size}:${mtimeNs}:${ctimeNs}:${st.ino}:${st.dev}`,
    changedAtMs: Number((mtimeNs > ctimeNs ? mtimeNs : ctimeNs) / 1000n) / 1e3
  };
}

// src/backends/local/index.ts
var localProvider = {
  schemes: ["file"],
  description: "a directory on this machine (file:///abs/path, or a plain absolute or relative path)",
  capabilities: localCapabilities,
  async open(url, { write }) {
    return LocalBackend.open(url, localPathOf(url), { write });
  }
};
function localPathOf(url) {
  if (/^file:/i.test(url)) {
    try {
      return fileURLToPath(url);
    } catch (e) {
      throw bitfogError("EBADURL", `invalid file URL ${JSON.stringify(url)}: ${e.message}`, { cause: e });
    }
  }
  return url;
}

// src/backends/index.ts
var builtinProviders = [localProvider];
function createDefaultRegistry() {
  const registry = new BackendRegistry();
  for (const provider of builtinProviders) registry.register(provider, "built-in");
  return registry;
}

// src/cli/exit-codes.ts
var ExitCode = {
  OK: 0,
  /** Something failed; stderr says what. */
  ERROR: 1,
  /** The command line was wrong (unknown option, bad size, bad URL); usage is printed. */
  USAGE: 2,
  /** Finished, but conflicts were left alone at the destination (see `bitfog status`). */
  CONFLICTS: 3,
  /** Corrupt content was found on the spool (verify, or store skipping corrupt blobs). */
  CORRUPT: 4,
  /** The spool is in use by another process. */
  LOCKED: 5,
  /** Interrupted (Ctrl-C / SIGTERM); rerun the same command to resume. */
  INTERRUPTED: 130
};
function exitCodeFor(code) {
  switch (code) {
    case "EUSAGE":
    case "EBADURL":
    case "EBADPATH":
      return ExitCode.USAGE;
    case "ELOCKED":
      return ExitCode.LOCKED;
    case "EABORTED":
      return ExitCode.INTERRUPTED;
    case "EINTEGRITY":
      return ExitCode.CORRUPT;
    default:
      return ExitCode.ERROR;
  }
}

// src/cli/progress.ts
var TTY_INTERVAL_MS = 100;
var PLAIN_INTERVAL_MS = 5e3;
var MAX_DETAIL_LINES = 50;
var ProgressRenderer = class {
  #out;
  #tty;
  #quiet;
  #status = "";
  #lastDraw = 0;
  #drawn = false;
  #details = 0;
  #hiddenDetails = 0;
  // Transfer state for rate and ETA.
  #phase;
  #hashTotal;
  constructor(out = process.stderr, options = {}) {
    this.#out = out;
    this.#tty = out.isTTY === true;
    this.#quiet = options.quiet === true;
  }
  /** The listener to hand to core operations. */
  listener = (event) => {
    switch (event.type) {
      case "scan":
        this.#update(`scanning ${event.side} ${event.url}: ${event.entries.toLocaleString("en-US")} entries`);
        break;
      case "scanned":
        this.#hashTotal = { files: event.toHash, bytes: event.toHashBytes };
        this.#update(`scanned ${event.side}: ${event.entries.toLocaleString("en-US")} entries; ${event.toHash ? `hashing ${event.toHash} files (${formatSize(event.toHashBytes)})` : "nothing to hash"}`);
        break;
      case "hash": {
        const total = this.#hashTotal;
        this.#update(`hashing ${event.side}: ${event.files}/${total?.files ?? "?"} files, ${formatSize(event.bytes)}/${formatSize(total?.bytes ?? 0)}`);
        break;
      }
      case "transfer-start":
        this.#phase = { name: event.phase, files: event.files, bytes: event.bytes, startedAt: Date.now() };
        this.#update(`${event.phase}: ${event.files} files, ${formatSize(event.bytes)} to move`, true);
        break;
      case "transfer": {
        const p = this.#phase;
        const elapsed = p ? (Date.now() - p.startedAt) / 1e3 : 0;
        const rate = elapsed > 0.5 ? event.bytes / elapsed : 0;
        const eta = p && rate > 0 ? (p.bytes - event.bytes) / rate : NaN;
        const pct = p && p.bytes > 0 ? ` ${(100 * event.bytes / p.bytes).toFixed(1)}%` : "";
        this.#update(
          `${event.phase}: ${event.files}/${p?.files ?? "?"} files, ${formatSize(event.bytes)}/${formatSize(p?.bytes ?? 0)}${pct}` + (rate > 0 ? `, ${formatSize(rate)}/s, ETA ${formatDuration(eta)}` : "")
        );
        break;
      }
      case "notice":
        this.line(`note: ${event.message}`);
        break;
      case "conflict":
        this.#detail(`conflict: ${quote(event.path)}: ${event.reason}`);
        break;
      case "skip":
        this.#detail(`skipped: ${quote(event.path)}: ${event.reason}`);
        break;
    }
  };
  /** Prints a line of its own, keeping the status line below it on a terminal. */
  line(text) {
    this.#clear();
    this.#out.write(`${text}
`);
    this.#redraw();
  }
  /** Ends the status line (call before printing the summary). */
  finish() {
    this.#clear();
    if (this.#hiddenDetails > 0) {
      this.#out.write(`\u2026 and ${this.#hiddenDetails} more skipped or conflicting entries (see "bitfog status")
`);
    }
    this.#status = "";
  }
  #detail(text) {
    if (this.#details < MAX_DETAIL_LINES) {
      this.#details++;
      this.line(text);
    } else this.#hiddenDetails++;
  }
  #update(status, force = false) {
    this.#status = status;
    if (this.#quiet) return;
    const now = Date.now();
    const interval = this.#tty ? TTY_INTERVAL_MS : PLAIN_INTERVAL_MS;
    if (!force && now - this.#lastDraw < interval) return;
    this.#lastDraw = now;
    if (this.#tty) this.#redraw();
    else this.#out.write(`${status}
`);
  }
  #redraw() {
    if (!this.#tty || !this.#status || this.#quiet) return;
    const width = Math.max(20, (this.#out.columns ?? 100) - 1);
    const text = this.#status.length > width ? `${this.#status.slice(0, width - 1)}\u2026` : this.#status;
    this.#out.write(`\r\x1B[K${text}`);
    this.#drawn = true;
  }
  #clear() {
    if (this.#tty && this.#drawn) {
      this.#out.write("\r\x1B[K");
      this.#drawn = false;
    }
  }
};
function quote(path5) {
  return /[\x00-\x1f\x7f"\\]/.test(path5) || path5.trim() !== path5 ? JSON.stringify(path5) : path5;
}

// src/cli/base.ts
var BitfogCommand = class extends Command {
  verbose = Option.Boolean("--verbose,-v", false, { description: "Show stack traces and causes of errors (also BITFOG_DEBUG=1)" });
  quiet = Option.Boolean("--quiet,-q", false, { description: "No progress output; only the summary and errors" });
  cacheDir = Option.String("--cache-dir", { description: "Where hash caches live (default: $BITFOG_CACHE_DIR, else $XDG_CACHE_HOME/bitfog, else ~/.cache/bitfog)" });
  noCache = Option.Boolean("--no-cache", false, { description: "Re-hash everything; do not read or write the hash cache" });
  #registry;
  /** The scheme registry with every built-in backend (and configured plugins). */
  async registry() {
    this.#registry ??= createDefaultRegistry();
    return this.#registry;
  }
  async hashCache(url) {
    if (this.noCache) return HashCache.memory();
    return HashCache.open(url, this.cacheDir ?? void 0);
  }
  progress() {
    return new ProgressRenderer(this.context.stderr, { quiet: this.quiet });
  }
  out(line = "") {
    this.context.stdout.write(`${line}
`);
  }
  async execute() {
    const controller = new AbortController();
    let interrupts = 0;
    const onSignal = () => {
      interrupts++;
      if (interrupts > 1) process.exit(ExitCode.INTERRUPTED);
      this.context.stderr.write("\nbitfog: interrupted; finishing the current step (press Ctrl-C again to stop at once)\n");
      controller.abort();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    try {
      return await this.run(controller.signal);
    } catch (e) {
      if (e instanceof UsageError) throw e;
      return this.report(e);
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
  }
  /** Prints one clear line for an error (more with --verbose) and returns its exit code. */
  report(e) {
    const err = toBitfogError(e);
    const debug = this.verbose || process.env.BITFOG_DEBUG === "1";
    const stderr = this.context.stderr;
    if (err.code === "EABORTED") {
      stderr.write("bitfog: interrupted; run the same command again to resume\n");
      return ExitCode.INTERRUPTED;
    }
    stderr.write(`bitfog: ${err.message}${debug ? ` [${err.code}]` : ""}
`);
    if (debug) {
      stderr.write(`${err.stack ?? ""}
`);
      let cause = err.cause;
      while (cause) {
        stderr.write(`caused by: ${cause instanceof Error ? cause.stack ?? cause.message : String(cause)}
`);
        cause = cause instanceof Error ? cause.cause : void 0;
      }
    }
    const code = exitCodeFor(err.code);
    if (code === ExitCode.USAGE && isBitfogError(e)) {
      stderr.write(this.cli.usage(this, { detailed: false }));
    }
    return code;
  }
};

// src/cli/commands/builddb.ts
var BuilddbCommand = class extends BitfogCommand {
  static paths = [["builddb"]];
  static usage = Command2.Usage({
    category: "Classic commands",
    description: "Snapshot <url> (every entry with its SHA-256) into the manifest file <db>.",
    details: `
      The file is a SQLite database (readable with any sqlite3 tool) holding one snapshot. Unchanged files are not re-read: hashes are cached per tree (see \`--cache-dir\`). The file is replaced atomically.
    `,
    examples: [["Snapshot the destination", "$0 builddb http://site-b:8675/dest/ dest.db"], ["Snapshot a local tree", "$0 builddb /srv/data src.db"]]
  });
  url = Option2.String({ name: "url" });
  db = Option2.String({ name: "db" });
  async run(signal) {
    const t0 = Date.now();
    const backend = await (await this.registry()).openSource(this.url, { signal });
    const progress = this.progress();
    try {
      const { snapshot, skipped } = await takeSnapshot(backend, { side: "source", cache: await this.hashCache(backend.url), signal, onProgress: progress.listener });
      progress.finish();
      const manifest = await Manifest.create();
      manifest.putSnapshot("snapshot", snapshot);
      manifest.setSkipped("snapshot", skipped);
      await manifest.save(this.db);
      manifest.close();
      let bytes = 0;
      for (const e of snapshot.entries.values()) if (e.kind === "file") bytes += e.size;
      this.out(`builddb: ${snapshot.entries.size} entries, ${formatSize(bytes)} in ${formatDuration((Date.now() - t0) / 1e3)} \u2192 ${this.db}${skipped.length ? ` (${skipped.length} skipped)` : ""}`);
      for (const s of skipped.slice(0, 20)) this.context.stderr.write(`skipped: ${s.path}: ${s.reason}
`);
      return ExitCode.OK;
    } finally {
      progress.finish();
      await backend.close();
    }
  }
};

// src/cli/commands/emptydb.ts
import { Command as Command3, Option as Option3 } from "clipanion";
var EmptydbCommand = class extends BitfogCommand {
  static paths = [["emptydb"]];
  static usage = Command3.Usage({
    category: "Classic commands",
    description: "Write a manifest file <db> saying the destination is empty.",
    examples: [["A blank destination", "$0 emptydb dest.db"]]
  });
  db = Option3.String({ name: "db" });
  async run() {
    const manifest = await Manifest.create();
    manifest.putSnapshot("snapshot", { url: "(empty)", takenAt: (/* @__PURE__ */ new Date()).toISOString(), entries: /* @__PURE__ */ new Map() });
    await manifest.save(this.db);
    manifest.close();
    this.out(`emptydb: wrote an empty destination snapshot to ${this.db}`);
    return ExitCode.OK;
  }
};

// src/cli/commands/fetch.ts
import { Command as Command4, Option as Option4 } from "clipanion";
import * as t from "typanion";

// src/core/fetch.ts
import pLimit2 from "p-limit";

// src/core/plan.ts
var CARRY_ORDERS = ["largest", "smallest", "path"];
function sameContent(a, b) {
  if (!a || !b || a.kind !== b.kind) return false;
  switch (a.kind) {
    case "directory":
      return true;
    case "symlink":
      return a.linkTarget !== void 0 && a.linkTarget === b.linkTarget;
    case "file":
      return a.size === b.size && a.hash !== void 0 && a.hash === b.hash;
  }
}
function destinationCopySources(source, destination) {
  const out = /* @__PURE__ */ new Map();
  for (const d of destination.entries.values()) {
    if (d.kind !== "file" || !d.hash || d.size === 0 || out.has(d.hash)) continue;
    const s = source.entries.get(d.path);
    if (!s || sameContent(s, d)) out.set(d.hash, d.path);
  }
  return out;
}
function contentNeeds(source, destination, carried) {
  const copySources = destinationCopySources(source, destination);
  const byHash = /* @__PURE__ */ new Map();
  const unhashed = [];
  const alreadyCarried = /* @__PURE__ */ new Map();
  for (const s of source.entries.values()) {
    if (s.kind !== "file" || s.size === 0) continue;
    if (sameContent(s, destination.entries.get(s.path))) continue;
    if (!s.hash) {
      unhashed.push({ size: s.size, paths: [s.path] });
      continue;
    }
    if (carried.has(s.hash)) {
      const c = alreadyCarried.get(s.hash) ?? { hash: s.hash, size: s.size, paths: [] };
      c.paths.push(s.path);
      alreadyCarried.set(s.hash, c);
      continue;
    }
    if (copySources.has(s.hash)) continue;
    const need = byHash.get(s.hash);
    if (need) need.paths.push(s.path);
    else byHash.set(s.hash, { hash: s.hash, size: s.size, paths: [s.path] });
  }
  return { needs: [...byHash.values(), ...unhashed], alreadyCarried: [...alreadyCarried.values()] };
}
function sortNeeds(needs, order) {
  const byPath = (a, b) => comparePaths(a.paths[0], b.paths[0]);
  const sorted = [...needs];
  if (order === "largest") sorted.sort((a, b) => b.size - a.size || byPath(a, b));
  else if (order === "smallest") sorted.sort((a, b) => a.size - b.size || byPath(a, b));
  else sorted.sort(byPath);
  return sorted;
}
function selectForTrip(needs, budget, order = "largest") {
  const selected = [];
  const deferred = [];
  let left = budget;
  for (const need of sortNeeds(needs, order)) {
    if (need.size <= left) {
      selected.push(need);
      left -= need.size;
    } else deferred.push(need);
  }
  return { selected, deferred };
}
function planTrips(needs, capacity) {
  const trips = [];
  const tooLarge = [];
  for (const need of sortNeeds(needs, "largest")) {
    if (need.size > capacity) {
      tooLarge.push(need);
      continue;
    }
    const bin = trips.find((t2) => t2.left >= need.size);
    if (bin) {
      bin.items.push(need);
      bin.left -= need.size;
    } else trips.push({ left: capacity - need.size, items: [need] });
  }
  return { trips: trips.map((t2) => t2.items), tooLarge };
}
function planStore(input) {
  const { source, recorded, live, onSpool, capabilities: caps } = input;
  const actions = [];
  const conflicts = [];
  const pending = [];
  const unsupported = [];
  const copySources = destinationCopySources(source, live);
  const unchangedSinceRecorded = (l) => sameContent(l, recorded.entries.get(l.path));
  const conflictReason = (l) => recorded.entries.has(l.path) ? `changed at the destination since the snapshot this plan was made from (${l.kind})` : `not in the recorded destination state; bitfog will not replace what it does not know (${l.kind})`;
  const metaDiffers = (s, l) => caps.modes && s.mode !== void 0 && l.mode !== void 0 && s.kind !== "symlink" && (s.mode & 4095) !== (l.mode & 4095) || caps.mtimePrecisionMs > 0 && s.kind !== "directory" && s.mtimeMs !== void 0 && (l.mtimeMs === void 0 || Math.abs(s.mtimeMs - l.mtimeMs) >= Math.max(caps.mtimePrecisionMs, 1e-3));
  const blockedByRemoval = /* @__PURE__ */ new Set();
  const sourceEntries = [...source.entries.values()].sort((a, b) => comparePaths(a.path, b.path));
  for (const s of sourceEntries) {
    const l = live.entries.get(s.path);
    if (s.kind === "symlink" && !caps.symlinks) {
      unsupported.push({ path: s.path, reason: `symlink to ${JSON.stringify(s.linkTarget)}: this destination cannot store symlinks` });
      continue;
    }
    if (s.kind === "directory" && !caps.emptyDirectories) continue;
    if (l && sameContent(s, l)) {
      if (s.kind !== "directory" && metaDiffers(s, l)) actions.push(metaAction(s));
      continue;
    }
    if (l && !unchangedSinceRecorded(l)) {
      conflicts.push({ path: s.path, reason: conflictReason(l) });
      continue;
    }
    const replacing = l !== void 0;
    if (replacing && (l.kind === "directory" || s.kind === "directory")) blockedByRemoval.add(s.path);
    if (replacing && s.kind === "directory") actions.push({ op: "remove", path: s.path, kind: l.kind });
    switch (s.kind) {
      case "directory":
        actions.push({ op: "mkdir", path: s.path, ...meta(s), afterRemovals: replacing });
        break;
      case "symlink":
        actions.push({ op: "symlink", path: s.path, target: s.linkTarget, ...s.mtimeMs === void 0 ? {} : { mtimeMs: s.mtimeMs }, replaces: replacing });
        break;
      case "file": {
        if (s.size === 0 && s.hash) {
          actions.push({ op: "write", path: s.path, hash: s.hash, size: 0, ...meta(s), from: { kind: "spool" } });
        } else if (s.hash && onSpool(s.hash)) {
          actions.push({ op: "write", path: s.path, hash: s.hash, size: s.size, ...meta(s), from: { kind: "spool" } });
        } else if (s.hash && copySources.has(s.hash) && copySources.get(s.hash) !== s.path) {
          actions.push({
            op: "write",
            path: s.path,
            hash: s.hash,
            size: s.size,
            ...meta(s),
            from: { kind: "destination", path: copySources.get(s.hash) }
          });
        } else {
          pending.push({ path: s.path, size: s.size });
          blockedByRemoval.delete(s.path);
        }
        break;
      }
    }
  }
  const liveEntries = [...live.entries.values()].sort((a, b) => comparePaths(a.path, b.path));
  const rmdirs = [];
  for (const l of liveEntries) {
    const s = source.entries.get(l.path);
    if (s) {
      if (l.kind === "directory" && s.kind !== "directory" && blockedByRemoval.has(l.path)) rmdirs.push(l.path);
      continue;
    }
    if (!unchangedSinceRecorded(l)) {
      conflicts.push({ path: l.path, reason: conflictReason(l) });
      continue;
    }
    if (l.kind === "directory") rmdirs.push(l.path);
    else actions.push({ op: "remove", path: l.path, kind: l.kind });
  }
  rmdirs.sort((a, b) => depth(b) - depth(a) || comparePaths(a, b));
  for (const p of rmdirs) actions.push({ op: "rmdir", path: p });
  const touched = /* @__PURE__ */ new Set();
  for (const a of actions) for (const anc of [parentPath(a.path), ...ancestors(a.path)]) touched.add(anc);
  for (const s of sourceEntries) {
    if (s.kind !== "directory" || !caps.emptyDirectories) continue;
    const l = live.entries.get(s.path);
    if (touched.has(s.path) || !l || metaDiffers(s, l) || caps.mtimePrecisionMs > 0 && dirMtimeDiffers(s, l, caps)) {
      if (s.mode !== void 0 || s.mtimeMs !== void 0) actions.push(metaAction(s));
    }
  }
  return { actions: orderActions(actions), conflicts, pending, unsupported };
}
function dirMtimeDiffers(s, l, caps) {
  return s.mtimeMs !== void 0 && (l.mtimeMs === void 0 || Math.abs(s.mtimeMs - l.mtimeMs) >= Math.max(caps.mtimePrecisionMs, 1e-3));
}
function meta(s) {
  return { ...s.mode === void 0 ? {} : { mode: s.mode }, ...s.mtimeMs === void 0 ? {} : { mtimeMs: s.mtimeMs } };
}
function metaAction(s) {
  return { op: "meta", path: s.path, ...meta(s), ...s.kind === "symlink" ? { mode: void 0 } : {} };
}
function orderActions(actions) {
  const rank = (a) => {
    switch (a.op) {
      case "mkdir":
        return a.afterRemovals ? 4 : 1;
      case "write":
        return a.from.kind === "destination" ? 2 : 5;
      case "remove":
        return 3;
      case "rmdir":
        return 3.5;
      case "symlink":
        return 5;
      case "meta":
        return 6;
    }
  };
  return actions.map((a, i) => ({ a, i })).sort((x, y) => {
    const r = rank(x.a) - rank(y.a);
    if (r !== 0) return r;
    if (x.a.op === "mkdir") return depth(x.a.path) - depth(y.a.path) || x.i - y.i;
    if (x.a.op === "rmdir" || x.a.op === "meta") return depth(y.a.path) - depth(x.a.path) || x.i - y.i;
    return x.i - y.i;
  }).map((x) => x.a);
}

// src/core/fetch.ts
var DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;
var FSYNC_BLOB_BYTES = 8 * 1024 * 1024;
async function fetchToSpool(options) {
  const t0 = Date.now();
  const { source, spool, cache, signal, onProgress } = options;
  const manifest = spool.manifest;
  const trip = Number(manifest.getMeta("trip") ?? "0") + 1;
  let destination = options.destination ?? manifest.getSnapshot("destination");
  const assumedEmpty = !destination || destination.assumedEmpty === true;
  if (!destination) {
    onProgress?.({ type: "notice", message: 'no destination state on the spool: assuming an empty destination (run "bitfog store" at the destination first to record it)' });
    destination = { url: "(assumed empty)", takenAt: (/* @__PURE__ */ new Date()).toISOString(), entries: /* @__PURE__ */ new Map(), assumedEmpty: true };
  }
  const destSizes = /* @__PURE__ */ new Set();
  for (const d of destination.entries.values()) if (d.kind === "file") destSizes.add(d.size);
  const scan = await takeSnapshot(source, {
    side: "source",
    cache,
    ...signal ? { signal } : {},
    ...onProgress ? { onProgress } : {},
    wantHash: (e, filesOfSize) => destSizes.has(e.size) || filesOfSize(e.size) > 1
  });
  const snapshot = scan.snapshot;
  const skipped = [...scan.skipped];
  for (const s of skipped) onProgress?.({ type: "skip", path: s.path, reason: s.reason });
  const wanted = /* @__PURE__ */ new Set();
  for (const e of snapshot.entries.values()) if (e.kind === "file" && e.hash) wanted.add(e.hash);
  for (const b of spool.blobs()) if (!wanted.has(b.hash)) await spool.removeBlob(b.hash);
  const carriedSet = new Set(spool.blobs().map((b) => b.hash));
  const { needs, alreadyCarried } = contentNeeds(snapshot, destination, carriedSet);
  const alreadyCarriedBytes = alreadyCarried.reduce((n, c) => n + c.size, 0);
  const reserve = options.reserveBytes ?? DEFAULT_RESERVE_BYTES;
  const free = await spool.freeSpace();
  const carriedNow = spool.carriedBytes;
  let budget = Math.max(0, free - reserve);
  if (options.maxBytes !== void 0) budget = Math.min(budget, Math.max(0, options.maxBytes - carriedNow));
  manifest.setMeta("capacity", String(options.maxBytes ?? free - reserve + carriedNow));
  const { selected, deferred } = selectForTrip(needs, budget, options.order ?? "largest");
  const totalBytes = selected.reduce((n, s) => n + s.size, 0);
  onProgress?.({ type: "transfer-start", phase: "fetch", files: selected.length, bytes: totalBytes });
  manifest.putSnapshot("source", snapshot);
  manifest.setMeta("trip", String(trip));
  if (!manifest.hasSnapshot("destination")) manifest.putSnapshot("destination", destination);
  await spool.save();
  let doneFiles = 0;
  let doneBytes = 0;
  let carriedFiles = 0;
  let carriedBytes = 0;
  let fullDisk = false;
  const stop = new AbortController();
  const inner = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  const journal = [];
  const limit = pLimit2(options.concurrency ?? Math.min(4, source.capabilities.maxConcurrency));
  const largeHashes = [];
  const carriedNeeds = /* @__PURE__ */ new Set();
  let lastSave = Date.now();
  const carryOne = async (need) => {
    if (inner.aborted) return;
    let lastError;
    for (const path5 of need.paths) {
      const entry = snapshot.entries.get(path5);
      try {
        const hash = await carryFile(entry, need);
        carriedFiles++;
        carriedBytes += need.size;
        carriedNeeds.add(need);
        if (need.size >= FSYNC_BLOB_BYTES) largeHashes.push(hash);
        journal.push({ command: "fetch", event: "carried", path: path5, detail: `${need.size} ${hash}` });
        lastError = void 0;
        break;
      } catch (e) {
        lastError = e;
        if (isBitfogError(e, "ENOSPC")) {
          fullDisk = true;
          stop.abort();
          return;
        }
        if (isBitfogError(e, "EABORTED")) return;
      }
    }
    if (lastError !== void 0) {
      const err = toBitfogError(lastError);
      if (!["ENOENT", "EACCES", "EINTEGRITY", "EISDIR", "EOPNOTSUPP"].includes(err.code)) throw err;
      const reason = err.code === "EINTEGRITY" ? `changed while being carried; it is carried on a later trip` : err.message;
      for (const path5 of need.paths) {
        skipped.push({ path: path5, reason });
        onProgress?.({ type: "skip", path: path5, reason });
      }
    }
    doneFiles++;
    if (Date.now() - lastSave > 3e4) {
      lastSave = Date.now();
      await spool.save();
    }
  };
  const carryFile = async (entry, need) => {
    throwIfAborted(inner);
    const startedAt = Date.now();
    const stream = await source.read(entry.path, { signal: inner });
    const hash = await spool.writeBlob(stream, { ...need.hash ? { hash: need.hash } : {}, size: need.size }, {
      signal: inner,
      durable: need.size >= FSYNC_BLOB_BYTES,
      onBytes: (n) => {
        doneBytes += n;
        onProgress?.({ type: "transfer", phase: "fetch", files: doneFiles, bytes: doneBytes, current: entry.path });
      }
    });
    if (!need.hash) {
      const after = await source.stat(entry.path, { signal: inner });
      if (after.version !== entry.version || after.size !== entry.size) {
        await spool.removeBlob(hash);
        throw bitfogError("EINTEGRITY", `${JSON.stringify(entry.path)} changed while being carried`, { path: entry.path });
      }
      entry.hash = hash;
      cache.record(entry, hash, startedAt);
    }
    return hash;
  };
  try {
    await Promise.all(selected.map((need) => limit(() => carryOne(need))));
  } finally {
    await spool.syncBlobDirs(largeHashes).catch(() => {
    });
    manifest.putSnapshot("source", snapshot);
    manifest.setSkipped("source", skipped);
    journal.push({
      command: "fetch",
      event: "fetch-finished",
      detail: JSON.stringify({ carriedFiles, carriedBytes, deferred: deferred.length, fullDisk, aborted: signal?.aborted ?? false })
    });
    manifest.appendJournal(trip, journal);
    await spool.save();
    await cache.save();
  }
  throwIfAborted(signal);
  const left = [...deferred, ...selected.filter((n) => !carriedNeeds.has(n))];
  let plannedRemovals = 0;
  for (const d of destination.entries.values()) if (!snapshot.entries.has(d.path)) plannedRemovals++;
  return {
    trip,
    sourceEntries: snapshot.entries.size,
    assumedEmptyDestination: assumedEmpty,
    carriedFiles,
    carriedBytes,
    alreadyCarriedBytes,
    deferredFiles: left.length,
    deferredBytes: left.reduce((n, d) => n + d.size, 0),
    plannedRemovals,
    skipped,
    stoppedByFullDisk: fullDisk,
    budgetBytes: budget,
    elapsedMs: Date.now() - t0
  };
}

// src/core/spool.ts
import { randomBytes as randomBytes3 } from "node:crypto";
import { constants as C2, createReadStream as createReadStream2, promises as fsp5 } from "node:fs";
import os2 from "node:os";
import path4 from "node:path";
import { createHash as createHash3 } from "node:crypto";
var MANIFEST = "manifest.db";
var LOCK = "lock";
var FOREIGN_LOCK_STALE_MS = 6e4;
var LOCK_REFRESH_MS = 15e3;
var Spool = class _Spool {
  dir;
  manifest;
  #blobs;
  #lock;
  constructor(dir, manifest, blobs, lock) {
    this.dir = dir;
    this.manifest = manifest;
    this.#blobs = blobs;
    this.#lock = lock;
  }
  /**
   * Opens (and with `create`, creates) the spool at `dir` and takes its lock.
   * Throws ENOENT (no spool and not `create`), ELOCKED (another live process holds it),
   * EBADSPOOL (damaged or unknown manifest).
   */
  static async open(dir, { create }) {
    const abs = path4.resolve(dir);
    const manifestFile = path4.join(abs, MANIFEST);
    const exists = await fsp5.access(manifestFile).then(() => true, () => false);
    if (!exists) {
      if (!create) {
        throw bitfogError("ENOENT", `${dir} is not a spool (no ${MANIFEST}); run "bitfog fetch" or "bitfog store" to create one`);
      }
      const entries = await fsp5.readdir(abs).catch(() => []);
      const foreign = entries.filter((e) => ![MANIFEST, LOCK, "blobs", "tmp"].includes(e) && !e.startsWith(`${MANIFEST}.`));
      if (foreign.length > 0) {
        throw bitfogError("EBADSPOOL", `${dir} is not empty and not a spool (it holds ${JSON.stringify(foreign[0])}); use an empty or new directory`);
      }
      await fsp5.mkdir(path4.join(abs, "blobs", "sha256"), { recursive: true }).catch((e) => {
        throw toBitfogError(e, `cannot create spool ${dir}`);
      });
    }
    const lock = await SpoolLock.acquire(path4.join(abs, LOCK));
    try {
      await fsp5.mkdir(path4.join(abs, "blobs", "sha256"), { recursive: true });
      await fsp5.rm(path4.join(abs, "tmp"), { recursive: true, force: true });
      await fsp5.mkdir(path4.join(abs, "tmp"), { recursive: true });
      const manifest = exists ? await Manifest.load(manifestFile) : await Manifest.create();
      const blobs = await scanBlobs(path4.join(abs, "blobs", "sha256"));
      const spool = new _Spool(abs, manifest, blobs, lock);
      if (!exists) await spool.save();
      return spool;
    } catch (e) {
      await lock.release();
      throw e;
    }
  }
  /**
   * Opens a spool for reading only, without its lock (for status while another command
   * runs). Its manifest must not be saved. Throws ENOENT, EBADSPOOL.
   */
  static async inspect(dir) {
    const abs = path4.resolve(dir);
    if (!await _Spool.exists(abs)) throw bitfogError("ENOENT", `${dir} is not a spool (no ${MANIFEST})`);
    const manifest = await Manifest.load(path4.join(abs, MANIFEST));
    const blobs = await scanBlobs(path4.join(abs, "blobs", "sha256")).catch(() => /* @__PURE__ */ new Map());
    return { manifest, blobs: [...blobs].map(([hash, size]) => ({ hash, size })) };
  }
  /** True when `dir` holds a spool manifest. */
  static async exists(dir) {
    return fsp5.access(path4.join(dir, MANIFEST)).then(() => true, () => false);
  }
  get manifestFile() {
    return path4.join(this.dir, MANIFEST);
  }
  /** Writes the manifest (with the carried table mirrored from disk) atomically. */
  async save() {
    this.manifest.setCarried([...this.#blobs].map(([hash, size]) => ({ hash, size })));
    await this.manifest.save(this.manifestFile);
  }
  /** Releases the lock and closes the manifest (without saving). */
  async close() {
    this.manifest.close();
    await this.#lock.release();
  }
  has(hash) {
    return this.#blobs.has(hash);
  }
  blobs() {
    return [...this.#blobs].map(([hash, size]) => ({ hash, size }));
  }
  get carriedBytes() {
    let n = 0;
    for (const size of this.#blobs.values()) n += size;
    return n;
  }
  blobPath(hash) {
    const hex = sha256Hex(hash);
    if (!hex) throw bitfogError("EBADSPOOL", `not a sha256 content hash: ${JSON.stringify(hash)}`);
    return path4.join(this.dir, "blobs", "sha256", hex.slice(0, 2), hex);
  }
  /** Opens a blob for reading. The caller must verify what it reads against `hash`. */
  async readBlob(hash, signal) {
    const file = this.blobPath(hash);
    try {
      const handle = await fsp5.open(file, C2.O_RDONLY | C2.O_NOFOLLOW);
      return createReadStream2("", { fd: handle, highWaterMark: 1 << 20, ...signal ? { signal } : {} });
    } catch (e) {
      throw toBitfogError(e, `cannot read blob ${hash}`);
    }
  }
  /**
   * Writes a blob from `content`, hashing as it goes. It lands under its final name only when
   * the content hashed to `expectedHash` (when given) and had `expectedSize` bytes; otherwise
   * it is discarded and EINTEGRITY thrown. Returns the hash. Throws ENOSPC on a full disk
   * (nothing partial is kept).
   */
  async writeBlob(content, expected, options = {}) {
    const tmp = path4.join(this.dir, "tmp", randomBytes3(8).toString("hex"));
    const h = createHash3("sha256");
    let bytes = 0;
    const handle = await fsp5.open(tmp, "w", 420).catch((e) => {
      throw toBitfogError(e, "cannot write to the spool");
    });
    try {
      for await (const chunk of content) {
        if (options.signal?.aborted) throw bitfogError("EABORTED", "operation aborted");
        h.update(chunk);
        let off = 0;
        while (off < chunk.length) {
          const { bytesWritten } = await handle.write(chunk, off, chunk.length - off, bytes + off);
          off += bytesWritten;
        }
        bytes += chunk.length;
        options.onBytes?.(chunk.length);
      }
      if (options.durable !== false) await handle.sync();
      await handle.close();
    } catch (e) {
      await handle.close().catch(() => {
      });
      await fsp5.rm(tmp, { force: true });
      throw toBitfogError(e, "cannot write to the spool");
    }
    const hash = formatHash(h);
    if (bytes !== expected.size || expected.hash !== void 0 && hash !== expected.hash) {
      await fsp5.rm(tmp, { force: true });
      throw bitfogError(
        "EINTEGRITY",
        bytes !== expected.size ? `read ${bytes} bytes, expected ${expected.size}: the file changed while being carried` : `content hashed to ${hash}, expected ${expected.hash}: the file changed while being carried`
      );
    }
    const final = this.blobPath(hash);
    await fsp5.mkdir(path4.dirname(final), { recursive: true });
    await fsp5.rename(tmp, final);
    this.#blobs.set(hash, bytes);
    return hash;
  }
  /** fsyncs the blob directories so that renamed blobs survive a power loss. */
  async syncBlobDirs(hashes) {
    const dirs = new Set(hashes.map((h) => path4.dirname(this.blobPath(h))));
    for (const d of dirs) await syncDir(d);
  }
  /** Deletes a blob (landed at the destination, or found corrupt). */
  async removeBlob(hash) {
    await fsp5.rm(this.blobPath(hash), { force: true });
    this.#blobs.delete(hash);
  }
  /** Free bytes on the spool's file system. */
  async freeSpace() {
    const st = await fsp5.statfs(this.dir);
    return Number(st.bavail) * Number(st.bsize);
  }
};
async function scanBlobs(root) {
  const blobs = /* @__PURE__ */ new Map();
  for (const prefix of await fsp5.readdir(root)) {
    if (!/^[0-9a-f]{2}$/.test(prefix)) continue;
    const dir = path4.join(root, prefix);
    for (const name of await fsp5.readdir(dir)) {
      if (!/^[0-9a-f]{64}$/.test(name) || !name.startsWith(prefix)) continue;
      const st = await fsp5.stat(path4.join(dir, name));
      blobs.set(`sha256:${name}`, st.size);
    }
  }
  return blobs;
}
var SpoolLock = class _SpoolLock {
  #file;
  #timer;
  constructor(file) {
    this.#file = file;
    this.#timer = setInterval(() => {
      const now = /* @__PURE__ */ new Date();
      fsp5.utimes(file, now, now).catch(() => {
      });
    }, LOCK_REFRESH_MS);
    this.#timer.unref();
  }
  static async acquire(file) {
    const me = JSON.stringify({ host: os2.hostname(), pid: process.pid, started: (/* @__PURE__ */ new Date()).toISOString() });
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const handle = await fsp5.open(file, "wx", 420);
        await handle.writeFile(me);
        await handle.close();
        return new _SpoolLock(file);
      } catch (e) {
        if (e.code !== "EEXIST") throw toBitfogError(e, "cannot lock the spool");
      }
      const owner = await readLockOwner(file);
      if (!owner) {
        const st = await fsp5.stat(file).catch(() => void 0);
        if (st && Date.now() - st.mtimeMs < 5e3) throw bitfogError("ELOCKED", "the spool is being locked by another process");
      } else if (!await ownerIsGone(file, owner)) {
        throw bitfogError(
          "ELOCKED",
          `the spool is in use by process ${owner.pid} on ${owner.host} since ${owner.started}; wait for it to finish`
        );
      }
      await fsp5.rm(file, { force: true });
    }
    throw bitfogError("ELOCKED", "could not take the spool lock (another process keeps taking it)");
  }
  async release() {
    clearInterval(this.#timer);
    await fsp5.rm(this.#file, { force: true });
  }
};
async function readLockOwner(file) {
  try {
    const parsed = JSON.parse(await fsp5.readFile(file, "utf8"));
    if (typeof parsed.pid === "number" && typeof parsed.host === "string") return parsed;
  } catch {
  }
  return void 0;
}
async function ownerIsGone(file, owner) {
  if (owner.host === os2.hostname()) {
    if (owner.pid === process.pid) return false;
    try {
      process.kill(owner.pid, 0);
      return false;
    } catch (e) {
      return e.code === "ESRCH";
    }
  }
  const st = await fsp5.stat(file).catch(() => void 0);
  return !st || Date.now() - st.mtimeMs > FOREIGN_LOCK_STALE_MS;
}

// src/cli/snapshot-file.ts
async function loadSnapshotFile(file) {
  const manifest = await Manifest.load(file);
  try {
    for (const role of ["snapshot", "source", "destination"]) {
      const s = manifest.getSnapshot(role);
      if (s && manifest.snapshotRoles().length === 1) return s;
      if (s && role === "snapshot") return s;
    }
    throw bitfogError("EBADSPOOL", `${file} holds no single snapshot (roles: ${manifest.snapshotRoles().join(", ") || "none"}); make one with "bitfog builddb"`);
  } finally {
    manifest.close();
  }
}

// src/cli/commands/fetch.ts
var fetchOptions = {
  max: () => Option4.String("--max", { description: "Carry at most SIZE in all (500G, 1.5T, 200MiB, bytes); default: the spool disk's free space less the reserve" }),
  reserve: () => Option4.String("--reserve", { description: "Free space to leave on the spool disk (default 64MiB)" }),
  order: () => Option4.String("--order", "largest", {
    description: `Which files first when not all fit: ${CARRY_ORDERS.join(", ")} (default largest)`,
    validator: t.isEnum(CARRY_ORDERS)
  })
};
var FetchBase = class extends BitfogCommand {
  max = fetchOptions.max();
  reserve = fetchOptions.reserve();
  order = fetchOptions.order();
  async fetchInto(sourceUrl, spoolDir, signal, destdb) {
    const maxBytes = this.max === void 0 ? void 0 : parseSize(this.max);
    const reserveBytes = this.reserve === void 0 ? void 0 : parseSize(this.reserve);
    const destination = destdb ? await loadSnapshotFile(destdb) : void 0;
    const registry = await this.registry();
    const source = await registry.openSource(sourceUrl, { signal });
    const spool = await Spool.open(spoolDir, { create: true });
    const progress = this.progress();
    try {
      const result = await fetchToSpool({
        source,
        spool,
        cache: await this.hashCache(source.url),
        signal,
        onProgress: progress.listener,
        order: this.order,
        ...destination ? { destination } : {},
        ...maxBytes === void 0 ? {} : { maxBytes },
        ...reserveBytes === void 0 ? {} : { reserveBytes }
      });
      progress.finish();
      this.summarize(result);
      return ExitCode.OK;
    } finally {
      progress.finish();
      await spool.close();
      await source.close();
    }
  }
  summarize(r) {
    this.out(`fetch finished in ${formatDuration(r.elapsedMs / 1e3)} (trip ${r.trip})`);
    this.out(`  source entries:    ${r.sourceEntries}`);
    this.out(`  carried now:       ${r.carriedFiles} files, ${formatSize(r.carriedBytes)}`);
    if (r.alreadyCarriedBytes) this.out(`  already on spool:  ${formatSize(r.alreadyCarriedBytes)}`);
    this.out(`  left for later:    ${r.deferredFiles} files, ${formatSize(r.deferredBytes)}`);
    this.out(`  removals planned:  ${r.plannedRemovals}`);
    if (r.skipped.length) this.out(`  skipped:           ${r.skipped.length} (see "bitfog status")`);
    if (r.assumedEmptyDestination) this.out("  destination state: none recorded; assumed empty");
    if (r.stoppedByFullDisk) this.out("  stopped: the spool disk is full; what was carried is kept");
  }
};
var FetchCommand = class extends FetchBase {
  static paths = [["fetch"]];
  static usage = Command4.Usage({
    category: "Sneakernet cycle",
    description: "At the source: carry onto the spool what the destination lacks.",
    details: `
      Snapshots \`<src-url>\` into the spool's manifest and copies onto the spool the content the destination (as last recorded on the spool by \`bitfog store\`) does not have, largest files first, until \`--max\` or the spool disk's free space (less \`--reserve\`) is used. Files that do not fit wait for the next trip; smaller ones that fit are still taken. With no destination state on the spool it assumes an empty destination and says so.

      Identical content is carried once. Every blob is hashed as it is copied and kept only if it matches; a file that changes while being carried is left for the next trip. Interrupting (even kill -9) is safe: run the same command again to continue.
    `,
    examples: [
      ["Carry a tree onto a USB disk, at most 500 GiB", "$0 fetch /srv/data /media/usb/spool --max 500G"],
      ["Carry from a classic bitfog server", "$0 fetch http://site-a:8675/vms/ /media/usb/spool"]
    ]
  });
  source = Option4.String({ name: "src-url" });
  spool = Option4.String({ name: "spool" });
  run(signal) {
    return this.fetchInto(this.source, this.spool, signal);
  }
};
var ClassicFetchCommand = class extends FetchBase {
  static paths = [["fetch"]];
  static usage = Command4.Usage({
    category: "Classic commands",
    description: "Classic form: carry into <dir> what the destination described by <destdb> lacks.",
    details: `
      \`<destdb>\` is a snapshot file made by \`bitfog builddb\` at the destination (or \`bitfog emptydb\`). \`<dir>\` becomes a spool (it is never wiped: rerunning resumes). Carry \`<dir>\` and a \`builddb\` of the source to the destination and run \`bitfog store <srcdb> <dest-url> <dir>\` there.
    `,
    examples: [["The original README's flow", "$0 fetch dest.db http://site-a:8675/src/ /media/usb/tmp"]]
  });
  destdb = Option4.String({ name: "destdb" });
  source = Option4.String({ name: "src-url" });
  dir = Option4.String({ name: "dir" });
  run(signal) {
    return this.fetchInto(this.source, this.dir, signal, this.destdb);
  }
};

// src/cli/commands/ls.ts
import { Command as Command5, Option as Option5 } from "clipanion";
var LsCommand = class extends BitfogCommand {
  static paths = [["ls"]];
  static usage = Command5.Usage({
    category: "Inspection",
    description: "List any backend's entries.",
    details: `
      One line per entry: kind (\`d\` directory, \`f\` file, \`l\` symlink), mode, size, mtime (UTC) and path (\`-> target\` for symlinks). Paths with control characters or quotes are shown JSON-quoted. \`--json\` prints one JSON object per line (NDJSON) as entries arrive, unsorted.
    `,
    examples: [["A local tree", "$0 ls ./site-a"], ["A bucket", "$0 ls s3://bucket/prefix/"], ["For scripts", "$0 ls sftp://me@nas/srv/data --json"]]
  });
  url = Option5.String({ name: "url" });
  json = Option5.Boolean("--json", false, { description: "One JSON object per entry (NDJSON), streamed" });
  async run(signal) {
    const backend = await (await this.registry()).openSource(this.url, { signal });
    try {
      const onSkip = (path5, reason) => this.context.stderr.write(`skipped: ${quote(path5)}: ${reason}
`);
      if (this.json) {
        for await (const e of backend.list({ signal, onSkip })) this.out(JSON.stringify(e));
        return ExitCode.OK;
      }
      const entries = [];
      for await (const e of backend.list({ signal, onSkip })) entries.push(e);
      entries.sort((a, b) => comparePaths(a.path, b.path));
      for (const e of entries) {
        const kind = e.kind === "directory" ? "d" : e.kind === "symlink" ? "l" : "f";
        const mode = e.mode === void 0 ? "----" : (e.mode & 4095).toString(8).padStart(4, "0");
        const mtime = e.mtimeMs === void 0 ? "-" : new Date(Math.floor(e.mtimeMs)).toISOString().replace(/\.\d+Z$/, "Z");
        this.out(`${kind} ${mode} ${String(e.size).padStart(12)} ${mtime} ${quote(e.path)}${e.kind === "symlink" ? ` -> ${quote(e.linkTarget ?? "")}` : ""}`);
      }
      return ExitCode.OK;
    } finally {
      await backend.close();
    }
  }
};

// src/cli/commands/status.ts
import { Command as Command6, Option as Option6 } from "clipanion";

// src/core/status.ts
function spoolStatus(manifest, blobs) {
  const source = manifest.getSnapshot("source");
  const destination = manifest.getSnapshot("destination");
  const carriedSet = new Set(blobs.map((b) => b.hash));
  const capacity = manifest.getMeta("capacity");
  const status = {
    formatVersion: Number(manifest.getMeta("format_version")),
    trip: Number(manifest.getMeta("trip") ?? "0"),
    carried: { blobs: blobs.length, files: 0, bytes: blobs.reduce((n, b) => n + b.size, 0) },
    left: { files: 0, bytes: 0, unhashedFiles: 0 },
    tooLarge: [],
    removalsPending: 0,
    conflicts: manifest.conflicts(),
    skipped: [
      ...manifest.skipped("source").map((s) => ({ side: "source", ...s })),
      ...manifest.skipped("destination").map((s) => ({ side: "destination", ...s }))
    ],
    history: manifest.journal({ events: ["fetch-finished", "store-finished", "recorded-destination"] }).map((j) => ({ trip: j.trip, command: j.command, at: j.at, detail: j.detail ?? "" })),
    ...capacity ? { capacityBytes: Number(capacity) } : {}
  };
  const summary = (s) => {
    let bytes = 0;
    for (const e of s.entries.values()) if (e.kind === "file") bytes += e.size;
    return { url: s.url, takenAt: s.takenAt, entries: s.entries.size, bytes };
  };
  if (source) status.source = summary(source);
  if (destination) status.destination = { ...summary(destination), assumedEmpty: destination.assumedEmpty === true };
  if (source) {
    const dest = destination ?? { url: "", takenAt: "", entries: /* @__PURE__ */ new Map() };
    const { needs, alreadyCarried } = contentNeeds(source, dest, carriedSet);
    status.carried.files = alreadyCarried.reduce((n, c) => n + c.paths.length, 0);
    status.left.files = needs.reduce((n, c) => n + c.paths.length, 0);
    status.left.bytes = needs.reduce((n, c) => n + c.size, 0);
    status.left.unhashedFiles = needs.filter((n) => !n.hash).length;
    for (const d of dest.entries.values()) if (!source.entries.has(d.path)) status.removalsPending++;
    if (status.capacityBytes !== void 0 && status.capacityBytes > 0) {
      const { trips, tooLarge } = planTrips(needs, status.capacityBytes);
      status.tripsLeft = trips.length;
      status.tooLarge = tooLarge.map((n) => ({ path: n.paths[0], size: n.size }));
    }
  }
  return status;
}

// src/cli/commands/status.ts
var StatusCommand = class extends BitfogCommand {
  static paths = [["status"]];
  static usage = Command6.Usage({
    category: "Sneakernet cycle",
    description: "What the spool carries, what is left to carry, and how many trips that is.",
    details: `
      Reads the spool's manifest (without taking its lock, so it works while another command runs). Trips are planned at the spool's size: the last fetch's \`--max\`, else the free space it saw. \`--json\` prints the same as one JSON object.
    `,
    examples: [["Where are we?", "$0 status /media/usb/spool"], ["For scripts", "$0 status /media/usb/spool --json"]]
  });
  spool = Option6.String({ name: "spool" });
  json = Option6.Boolean("--json", false, { description: "Print one JSON object" });
  async run() {
    const { manifest, blobs } = await Spool.inspect(this.spool);
    try {
      const s = spoolStatus(manifest, blobs);
      if (this.json) {
        this.out(JSON.stringify(s, null, 2));
        return ExitCode.OK;
      }
      this.out(`spool ${this.spool} (format ${s.formatVersion}, trip ${s.trip})`);
      this.out(`  source:       ${s.source ? `${s.source.url} \u2014 ${s.source.entries} entries, ${formatSize(s.source.bytes)}, snapshot ${s.source.takenAt}` : 'not recorded yet (run "bitfog fetch")'}`);
      this.out(`  destination:  ${s.destination ? `${s.destination.assumedEmpty ? "assumed empty" : `${s.destination.url} \u2014 ${s.destination.entries} entries, ${formatSize(s.destination.bytes)}, snapshot ${s.destination.takenAt}`}` : 'not recorded yet (run "bitfog store")'}`);
      this.out(`  carried:      ${s.carried.files} files, ${formatSize(s.carried.bytes)} (${s.carried.blobs} blobs)`);
      this.out(`  left:         ${s.left.files} files, ${formatSize(s.left.bytes)}`);
      if (s.tripsLeft !== void 0) {
        this.out(`  trips left:   ${s.tripsLeft} at ${formatSize(s.capacityBytes)} per trip${s.carried.bytes ? " (after storing what is carried now)" : ""}`);
      }
      if (s.tooLarge.length) this.out(`  too large:    ${s.tooLarge.length} files exceed the spool size (e.g. ${quote(s.tooLarge[0].path)}, ${formatSize(s.tooLarge[0].size)})`);
      this.out(`  removals:     ${s.removalsPending} pending at the destination`);
      this.out(`  conflicts:    ${s.conflicts.length}`);
      for (const c of s.conflicts.slice(0, 50)) this.out(`    ${quote(c.path)}: ${c.reason}`);
      if (s.conflicts.length > 50) this.out(`    \u2026 ${s.conflicts.length - 50} more (--json lists all)`);
      this.out(`  skipped:      ${s.skipped.length}`);
      for (const k of s.skipped.slice(0, 20)) this.out(`    ${k.side}: ${quote(k.path)}: ${k.reason}`);
      if (s.history.length) {
        this.out("  history:");
        for (const h of s.history.slice(-10)) this.out(`    trip ${h.trip} ${h.command} ${h.at} ${h.detail}`);
      }
      return ExitCode.OK;
    } finally {
      manifest.close();
    }
  }
};

// src/cli/commands/store.ts
import { Command as Command7, Option as Option7 } from "clipanion";

// src/core/store.ts
import pLimit3 from "p-limit";
import { pipeline, Transform } from "node:stream";
import { createHash as createHash4 } from "node:crypto";
var BATCH_FILES = 256;
var BATCH_BYTES = 64 * 1024 * 1024;
var PER_ENTRY_CODES = /* @__PURE__ */ new Set(["ENOENT", "EEXIST", "EISDIR", "ENOTDIR", "ENOTEMPTY", "EACCES", "EINTEGRITY", "EOPNOTSUPP", "EBADPATH"]);
async function storeFromSpool(options) {
  const t0 = Date.now();
  const { destination: dest, spool, cache, signal, onProgress } = options;
  const manifest = spool.manifest;
  const trip = Number(manifest.getMeta("trip") ?? "0");
  const caps = dest.capabilities;
  const journal = [];
  const result = {
    trip,
    recordedOnly: false,
    writtenFiles: 0,
    writtenBytes: 0,
    copiedFiles: 0,
    symlinks: 0,
    directories: 0,
    removed: 0,
    metadataUpdated: 0,
    conflicts: [],
    pendingFiles: 0,
    pendingBytes: 0,
    corrupt: [],
    unsupported: [],
    skipped: [],
    freedBytes: 0,
    elapsedMs: 0
  };
  const source = options.source ?? manifest.getSnapshot("source");
  const recorded = manifest.getSnapshot("destination") ?? {
    url: dest.url,
    takenAt: (/* @__PURE__ */ new Date(0)).toISOString(),
    entries: /* @__PURE__ */ new Map(),
    assumedEmpty: true
  };
  const liveScan = await takeSnapshot(dest, { side: "destination", cache, ...signal ? { signal } : {}, ...onProgress ? { onProgress } : {} });
  const live = liveScan.snapshot;
  result.skipped.push(...liveScan.skipped);
  for (const tmp of liveScan.tempFiles) await dest.remove(tmp).catch(() => {
  });
  if (!source) {
    if (spool.blobs().length > 0) {
      throw bitfogError("EBADSPOOL", 'the spool carries content but no source snapshot; it is damaged or was not written by "bitfog fetch"');
    }
    onProgress?.({ type: "notice", message: "the spool carries nothing: recording the destination state only" });
    result.recordedOnly = true;
    manifest.putSnapshot("destination", live);
    manifest.setSkipped("destination", result.skipped);
    manifest.appendJournal(trip, [{ command: "store", event: "recorded-destination", detail: `${live.entries.size} entries` }]);
    await spool.save();
    result.elapsedMs = Date.now() - t0;
    return result;
  }
  const plan = planStore({ source, recorded, live, onSpool: (h) => spool.has(h), capabilities: caps });
  result.unsupported = plan.unsupported;
  result.conflicts.push(...plan.conflicts);
  for (const c of plan.conflicts) onProgress?.({ type: "conflict", path: c.path, reason: c.reason });
  for (const u of plan.unsupported) onProgress?.({ type: "skip", path: u.path, reason: u.reason });
  const writes = plan.actions.filter((a) => a.op === "write");
  const totalBytes = writes.reduce((n, w) => n + w.size, 0);
  onProgress?.({ type: "transfer-start", phase: "store", files: writes.length, bytes: totalBytes });
  const knownDirs = /* @__PURE__ */ new Set([ROOT]);
  for (const e of live.entries.values()) if (e.kind === "directory") knownDirs.add(e.path);
  const written = /* @__PURE__ */ new Map();
  const limit = pLimit3(options.concurrency ?? Math.min(8, caps.maxConcurrency));
  let doneFiles = 0;
  let doneBytes = 0;
  const failed = (path5, err) => {
    if (!PER_ENTRY_CODES.has(err.code)) throw err;
    const reason = err.message;
    result.conflicts.push({ path: path5, reason });
    onProgress?.({ type: "conflict", path: path5, reason });
    journal.push({ command: "store", event: "failed", path: path5, detail: reason });
  };
  const ensureParents = async (path5) => {
    for (const dir of ancestors(path5)) {
      if (knownDirs.has(dir)) continue;
      await dest.mkdir(dir, { ...signal ? { signal } : {} });
      knownDirs.add(dir);
    }
  };
  const openContent = async (w) => {
    const raw = w.from.kind === "spool" ? w.size === 0 ? emptyStream() : await spool.readBlob(w.hash, signal) : await dest.read(w.from.path, { ...signal ? { signal } : {} });
    const verifier = new VerifyingStream(w.hash, w.size, (n) => {
      doneBytes += n;
      onProgress?.({ type: "transfer", phase: "store", files: doneFiles, bytes: doneBytes, current: w.path });
    });
    return pipeline(raw, verifier, () => {
    });
  };
  const writeStaged = async (w) => {
    throwIfAborted(signal);
    const target = caps.atomicRename ? tempSiblingOf(w.path) : w.path;
    try {
      await ensureParents(w.path);
      const content = await openContent(w);
      await dest.write(target, content, {
        size: w.size,
        hash: w.hash,
        ...w.mode === void 0 ? {} : { mode: w.mode },
        ...w.mtimeMs === void 0 ? {} : { mtimeMs: w.mtimeMs },
        ...signal ? { signal } : {}
      });
      if (!caps.atomicRename && (w.mode !== void 0 || w.mtimeMs !== void 0)) {
        await dest.setMetadata(target, { ...w.mode === void 0 ? {} : { mode: w.mode }, ...w.mtimeMs === void 0 ? {} : { mtimeMs: w.mtimeMs } });
      }
      return target;
    } catch (e) {
      const err = toBitfogError(e, `cannot write ${JSON.stringify(w.path)}`, w.path);
      if (caps.atomicRename) await dest.remove(target).catch(() => {
      });
      if (err.code === "EINTEGRITY" && w.from.kind === "spool") {
        result.corrupt.push({ path: w.path, hash: w.hash });
        await spool.removeBlob(w.hash);
        journal.push({ command: "store", event: "corrupt-blob", path: w.path, detail: w.hash });
        onProgress?.({ type: "skip", path: w.path, reason: `spool content failed verification (${w.hash}); removed from the spool, carried again next trip` });
        return void 0;
      }
      if (err.code === "EINTEGRITY") {
        onProgress?.({ type: "skip", path: w.path, reason: `the destination file it was copied from changed; carried on a later trip` });
        result.pendingFiles++;
        result.pendingBytes += w.size;
        return void 0;
      }
      failed(w.path, err);
      return void 0;
    }
  };
  const runWrites = async (batch) => {
    const staged = await Promise.all(batch.map((w) => limit(() => writeStaged(w))));
    const ok = batch.map((w, i) => ({ w, tmp: staged[i] })).filter((x) => x.tmp !== void 0);
    if (caps.atomicRename && ok.length) {
      await dest.sync?.(ok.map((x) => x.tmp), { ...signal ? { signal } : {} });
      await Promise.all(
        ok.map(
          ({ w, tmp }) => limit(async () => {
            try {
              await dest.rename(tmp, w.path, { ...signal ? { signal } : {} });
              landed(w);
            } catch (e) {
              await dest.remove(tmp).catch(() => {
              });
              failed(w.path, toBitfogError(e, `cannot move ${JSON.stringify(w.path)} into place`, w.path));
            }
          })
        )
      );
      await dest.sync?.([...new Set(ok.map((x) => parentPath(x.w.path)))], { ...signal ? { signal } : {} });
    } else {
      for (const { w } of ok) landed(w);
    }
  };
  const landed = (w) => {
    written.set(w.path, { hash: w.hash, size: w.size });
    result.writtenFiles++;
    result.writtenBytes += w.size;
    if (w.from.kind === "destination") result.copiedFiles++;
    doneFiles++;
    journal.push({ command: "store", event: "written", path: w.path, detail: `${w.size} ${w.hash}` });
  };
  const runOne = async (a) => {
    throwIfAborted(signal);
    const opt = signal ? { signal } : {};
    try {
      switch (a.op) {
        case "mkdir":
          await ensureParents(a.path);
          await dest.mkdir(a.path, opt);
          knownDirs.add(a.path);
          result.directories++;
          break;
        case "remove":
          try {
            await dest.remove(a.path, opt);
          } catch (e) {
            if (!isBitfogError(e, "ENOENT")) throw e;
          }
          result.removed++;
          journal.push({ command: "store", event: "removed", path: a.path });
          break;
        case "rmdir":
          try {
            await dest.rmdir(a.path, opt);
            result.removed++;
            journal.push({ command: "store", event: "removed", path: a.path });
          } catch (e) {
            if (isBitfogError(e, "ENOENT")) break;
            if (isBitfogError(e, "ENOTEMPTY")) {
              throw bitfogError("ENOTEMPTY", "directory left in place: it still holds entries bitfog left alone", { path: a.path });
            }
            throw e;
          }
          break;
        case "symlink": {
          await ensureParents(a.path);
          if (a.replaces && caps.atomicRename) {
            const tmp = tempSiblingOf(a.path);
            await dest.symlink(tmp, a.target, opt);
            await dest.rename(tmp, a.path, opt);
          } else {
            if (a.replaces) await dest.remove(a.path, opt).catch(() => {
            });
            await dest.symlink(a.path, a.target, opt);
          }
          if (a.mtimeMs !== void 0) await dest.setMetadata(a.path, { mtimeMs: a.mtimeMs }, opt);
          result.symlinks++;
          journal.push({ command: "store", event: "symlinked", path: a.path, detail: a.target });
          break;
        }
        case "meta":
          await dest.setMetadata(a.path, { ...a.mode === void 0 ? {} : { mode: a.mode }, ...a.mtimeMs === void 0 ? {} : { mtimeMs: a.mtimeMs } }, opt);
          result.metadataUpdated++;
          break;
        case "write":
          await runWrites([a]);
          break;
      }
    } catch (e) {
      failed(a.path, toBitfogError(e, `cannot ${a.op} ${JSON.stringify(a.path)}`, a.path));
    }
  };
  try {
    let i = 0;
    const actions = plan.actions;
    while (i < actions.length) {
      const a = actions[i];
      if (a.op === "write") {
        const batch = [];
        let bytes = 0;
        while (i < actions.length && actions[i].op === "write" && batch.length < BATCH_FILES && bytes < BATCH_BYTES) {
          const w = actions[i];
          if (batch.length > 0 && w.from.kind !== batch[0].from.kind) break;
          batch.push(w);
          bytes += w.size;
          i++;
        }
        await runWrites(batch);
      } else if (a.op === "symlink" || a.op === "meta") {
        const group = [];
        while (i < actions.length && actions[i].op === a.op && group.length < BATCH_FILES) group.push(actions[i++]);
        if (a.op === "meta") for (const m of group) await runOne(m);
        else await Promise.all(group.map((s) => limit(() => runOne(s))));
      } else {
        await runOne(a);
        i++;
      }
    }
  } finally {
    manifest.appendJournal(trip, journal);
    journal.length = 0;
    if (written.size > 0) await spool.save().catch(() => {
    });
  }
  const finalScan = await takeSnapshot(dest, {
    side: "destination",
    cache,
    knownHashes: written,
    ...signal ? { signal } : {},
    ...onProgress ? { onProgress } : {}
  });
  const finalState = finalScan.snapshot;
  const { alreadyCarried } = contentNeeds(source, finalState, new Set(spool.blobs().map((b) => b.hash)));
  const stillNeeded = new Set(alreadyCarried.map((c) => c.hash));
  for (const b of spool.blobs()) {
    if (!stillNeeded.has(b.hash)) {
      await spool.removeBlob(b.hash);
      result.freedBytes += b.size;
    }
  }
  const pendingNeeds = contentNeeds(source, finalState, /* @__PURE__ */ new Set()).needs.filter((n) => !n.hash || !stillNeeded.has(n.hash));
  result.pendingFiles = pendingNeeds.reduce((n, p) => n + p.paths.length, 0);
  result.pendingBytes = pendingNeeds.reduce((n, p) => n + p.size, 0);
  manifest.putSnapshot("destination", finalState);
  manifest.setConflicts(result.conflicts);
  manifest.setSkipped("destination", [...result.skipped, ...result.unsupported]);
  manifest.appendJournal(trip, [{
    command: "store",
    event: "store-finished",
    detail: JSON.stringify({
      written: result.writtenFiles,
      bytes: result.writtenBytes,
      removed: result.removed,
      conflicts: result.conflicts.length,
      pending: result.pendingFiles,
      corrupt: result.corrupt.length
    })
  }]);
  await spool.save();
  await cache.save();
  result.elapsedMs = Date.now() - t0;
  return result;
}
function emptyStream() {
  const t2 = new Transform();
  t2.end();
  return t2;
}
var VerifyingStream = class extends Transform {
  #hash = createHash4("sha256");
  #bytes = 0;
  #expectedHash;
  #expectedSize;
  #onBytes;
  constructor(expectedHash, expectedSize, onBytes) {
    super({ highWaterMark: 1 << 20 });
    this.#expectedHash = expectedHash;
    this.#expectedSize = expectedSize;
    this.#onBytes = onBytes;
  }
  _transform(chunk, _enc, cb) {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#expectedSize) {
      cb(bitfogError("EINTEGRITY", `content is longer than the expected ${this.#expectedSize} bytes`));
      return;
    }
    this.#hash.update(chunk);
    this.#onBytes(chunk.length);
    cb(null, chunk);
  }
  _flush(cb) {
    const got = formatHash(this.#hash);
    if (this.#bytes !== this.#expectedSize || got !== this.#expectedHash) {
      cb(bitfogError("EINTEGRITY", `content hashed to ${got} (${this.#bytes} bytes), expected ${this.#expectedHash} (${this.#expectedSize} bytes)`));
      return;
    }
    cb();
  }
};

// src/cli/commands/store.ts
var StoreBase = class extends BitfogCommand {
  async storeFrom(spoolDir, destUrl, signal, srcdb) {
    const source = srcdb ? await loadSnapshotFile(srcdb) : void 0;
    const registry = await this.registry();
    const destination = await registry.openDestination(destUrl, { signal });
    const spool = await Spool.open(spoolDir, { create: true });
    const progress = this.progress();
    try {
      const result = await storeFromSpool({
        destination,
        spool,
        cache: await this.hashCache(destination.url),
        signal,
        onProgress: progress.listener,
        ...source ? { source } : {}
      });
      progress.finish();
      this.summarize(result);
      if (result.corrupt.length) return ExitCode.CORRUPT;
      if (result.conflicts.length) return ExitCode.CONFLICTS;
      return ExitCode.OK;
    } finally {
      progress.finish();
      await spool.close();
      await destination.close();
    }
  }
  summarize(r) {
    if (r.recordedOnly) {
      this.out(`store: the spool carried nothing; recorded the destination's state (${formatDuration(r.elapsedMs / 1e3)})`);
      this.out('  next: take the spool to the source and run "bitfog fetch <src-url> <spool>"');
      return;
    }
    this.out(`store finished in ${formatDuration(r.elapsedMs / 1e3)} (trip ${r.trip})`);
    this.out(`  written:           ${r.writtenFiles} files, ${formatSize(r.writtenBytes)}${r.copiedFiles ? ` (${r.copiedFiles} copied from files already there)` : ""}`);
    if (r.symlinks) this.out(`  symlinks:          ${r.symlinks}`);
    if (r.directories) this.out(`  directories made:  ${r.directories}`);
    this.out(`  removed:           ${r.removed}`);
    if (r.metadataUpdated) this.out(`  metadata updated:  ${r.metadataUpdated}`);
    this.out(`  conflicts:         ${r.conflicts.length}${r.conflicts.length ? ' (left alone; see "bitfog status")' : ""}`);
    if (r.corrupt.length) this.out(`  corrupt on spool:  ${r.corrupt.length} (not written; carried again next trip)`);
    if (r.unsupported.length) this.out(`  not storable here: ${r.unsupported.length}`);
    this.out(`  still to carry:    ${r.pendingFiles} files, ${formatSize(r.pendingBytes)}`);
    this.out(`  spool space freed: ${formatSize(r.freedBytes)}`);
    if (r.pendingFiles === 0 && r.conflicts.length === 0) this.out("  the destination now matches the source snapshot");
  }
};
var StoreCommand = class extends StoreBase {
  static paths = [["store"]];
  static usage = Command7.Usage({
    category: "Sneakernet cycle",
    description: "At the destination: write what the spool carries, apply removals, record the new state.",
    details: `
      Writes every file the spool carries into \`<dest-url>\` (under a temporary name, verified against its hash, then renamed into place), creates symlinks and directories, sets modes and mtimes, and removes what the source no longer has. An entry at the destination is replaced or removed only if it still matches the destination state recorded when the plan was made; anything else is a conflict, left alone and listed by \`bitfog status\`. Then it records the destination's new state on the spool and frees the space of what landed.

      On a spool that carries nothing (a new spool) it only records the destination's state: that is how a first trip starts. Interrupting (even kill -9) is safe: run the same command again.

      Exit codes: 0 done; 3 done with conflicts left alone; 4 corrupt content found on the spool (not written).
    `,
    examples: [
      ["Store into a local tree", "$0 store /media/usb/spool /srv/mirror"],
      ["Start a first trip: record an empty or existing destination", "$0 store /media/usb/spool s3://bucket/mirror/"]
    ]
  });
  spool = Option7.String({ name: "spool" });
  dest = Option7.String({ name: "dest-url" });
  run(signal) {
    return this.storeFrom(this.spool, this.dest, signal);
  }
};
var ClassicStoreCommand = class extends StoreBase {
  static paths = [["store"]];
  static usage = Command7.Usage({
    category: "Classic commands",
    description: "Classic form: write what <dir> carries into <dest-url>, removing what <srcdb> lacks.",
    details: `
      \`<srcdb>\` is a \`bitfog builddb\` snapshot of the source, carried along with \`<dir>\` (the directory \`bitfog fetch <destdb> <src-url> <dir>\` filled). Safety rules are those of the spool form.
    `,
    examples: [["The original README's flow", "$0 store src.db http://site-b:8675/dest/ /media/usb/tmp"]]
  });
  srcdb = Option7.String({ name: "srcdb" });
  dest = Option7.String({ name: "dest-url" });
  dir = Option7.String({ name: "dir" });
  run(signal) {
    return this.storeFrom(this.dir, this.dest, signal, this.srcdb);
  }
};

// src/cli/commands/verify.ts
import { Command as Command8, Option as Option8 } from "clipanion";
var VerifyCommand = class extends BitfogCommand {
  static paths = [["verify"]];
  static usage = Command8.Usage({
    category: "Sneakernet cycle",
    description: "Re-hash everything the spool carries; list what is corrupt.",
    details: `
      Reads every blob on the spool and checks it against its SHA-256, and checks the manifest database. Corrupt blobs are listed with the files that would have used them; nothing is changed (\`bitfog store\` never writes a corrupt blob: it removes it so the next fetch carries it again).

      Exit codes: 0 all good; 4 something is corrupt.
    `,
    examples: [["Check a spool after a rough journey", "$0 verify /media/usb/spool"]]
  });
  spool = Option8.String({ name: "spool" });
  async run(signal) {
    const spool = await Spool.open(this.spool, { create: false });
    const progress = this.progress();
    try {
      const integrity = spool.manifest.db.exec("PRAGMA integrity_check")[0]?.values[0]?.[0];
      const manifestOk = integrity === "ok";
      const blobs = spool.blobs();
      const total = blobs.reduce((n, b) => n + b.size, 0);
      progress.listener({ type: "transfer-start", phase: "verify", files: blobs.length, bytes: total });
      const source = spool.manifest.getSnapshot("source");
      const pathsOf = /* @__PURE__ */ new Map();
      for (const e of source?.entries.values() ?? []) if (e.hash) pathsOf.set(e.hash, [...pathsOf.get(e.hash) ?? [], e.path]);
      const corrupt = [];
      let files = 0;
      let bytes = 0;
      for (const b of blobs) {
        throwIfAborted(signal);
        const { hash, bytes: n } = await hashStream(await spool.readBlob(b.hash, signal), (k) => {
          bytes += k;
          progress.listener({ type: "transfer", phase: "verify", files, bytes });
        });
        if (hash !== b.hash) corrupt.push({ hash: b.hash, reason: `content hashes to ${hash} (${n} bytes)` });
        files++;
      }
      progress.finish();
      for (const c of corrupt) {
        const paths = pathsOf.get(c.hash) ?? [];
        this.out(`corrupt: ${c.hash}: ${c.reason}${paths.length ? `; used by ${paths.slice(0, 3).map(quote).join(", ")}${paths.length > 3 ? ` and ${paths.length - 3} more` : ""}` : ""}`);
      }
      if (!manifestOk) this.out(`corrupt: manifest: ${String(integrity)}`);
      this.out(`verify: ${blobs.length} blobs, ${formatSize(total)} checked; ${corrupt.length} corrupt${manifestOk ? "" : "; manifest damaged"}`);
      return corrupt.length || !manifestOk ? ExitCode.CORRUPT : ExitCode.OK;
    } finally {
      progress.finish();
      await spool.close();
    }
  }
};

// src/cli/commands/index.ts
var commands = [
  FetchCommand,
  StoreCommand,
  StatusCommand,
  VerifyCommand,
  LsCommand,
  BuilddbCommand,
  EmptydbCommand,
  ClassicFetchCommand,
  ClassicStoreCommand
];

// src/cli/main.ts
var cli = new Cli({
  binaryLabel: "bitfog \u2014 sneakernet sync for terabytes",
  binaryName: "bitfog",
  binaryVersion: "0.1.0",
  enableColors: process.stdout.isTTY === true && !process.env.NO_COLOR
});
cli.register(Builtins.HelpCommand);
cli.register(Builtins.VersionCommand);
for (const command of commands) cli.register(command);
process.exitCode = await cli.run(process.argv.slice(2));
