/**
 * sql.js, loaded once. The manifest and the hash cache are SQLite files any sqlite3 tool
 * can read; sql.js keeps a database in memory and we write it back whole, atomically.
 */
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { SqlJsStatic } from 'sql.js';
import { writeFileAtomic } from './fsutil.ts';

let compiling: Promise<WebAssembly.Module> | undefined;
let loading: Promise<SqlJsStatic> | undefined;

/**
 * Starts compiling SQLite's WebAssembly on V8's background threads, once: a caller that
 * knows a database comes next (the CLI, for the commands that open a manifest) calls this
 * before loading the rest of its code, so that the two overlap. `sqlite()` starts it too.
 */
export function startLoadingSqlite(): void {
  compiling ??= (async () => {
    const wasm = createRequire(import.meta.url).resolve('sql.js/dist/sql-wasm.wasm');
    return WebAssembly.compile(await fsp.readFile(wasm));
  })();
  compiling.catch(() => {}); // reported by sqlite(), to the caller that needs it
}

export function sqlite(): Promise<SqlJsStatic> {
  // Loaded on first use: a command that needs no database (an unchanged builddb among
  // them) does not pay for sql.js.
  loading ??= (async () => {
    startLoadingSqlite();
    const compiled = await compiling!;
    // Through require(): sql.js is CommonJS, and import() would first scan its source for
    // export names (about 15 ms).
    const initSqlJs = createRequire(import.meta.url)('sql.js') as (config: object) => Promise<SqlJsStatic>;
    return initSqlJs({
      // The module is compiled already: sql.js only instantiates it.
      instantiateWasm(imports: Record<string, Record<string, unknown>>, receive: (instance: WebAssembly.Instance) => void) {
        receive(new WebAssembly.Instance(compiled, imports));
        return {};
      },
    });
  })();
  return loading;
}

/** True when the bytes start with the SQLite file header. */
export function looksLikeSqlite(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, 16)).toString('latin1') === 'SQLite format 3\0';
}

/**
 * Every row `select` returns from the SQLite file `file`, or none when the file is missing,
 * not SQLite or unreadable: for caches, where a bad file only costs recomputation.
 */
export async function readCacheRows<Row extends unknown[]>(file: string, select: string): Promise<Row[]> {
  let bytes: Buffer;
  try {
    bytes = await fsp.readFile(file);
  } catch {
    return [];
  }
  if (!looksLikeSqlite(bytes)) return [];
  try {
    const SQL = await sqlite();
    const db = new SQL.Database(bytes);
    try {
      const stmt = db.prepare(select);
      const rows: Row[] = [];
      while (stmt.step()) rows.push(stmt.get() as Row);
      stmt.free();
      return rows;
    } finally {
      db.close();
    }
  } catch {
    return [];
  }
}

/**
 * Replaces the SQLite file `file` (atomically, creating its directory) with a database
 * holding one table made by `schema` and filled with `rows` through `insert`.
 */
export async function writeCacheTable(file: string, schema: string, insert: string, rows: Iterable<unknown[]>): Promise<void> {
  const SQL = await sqlite();
  const db = new SQL.Database();
  try {
    db.exec(schema);
    db.exec('BEGIN');
    const stmt = db.prepare(insert);
    for (const row of rows) stmt.run(row as never);
    stmt.free();
    db.exec('COMMIT');
    await fsp.mkdir(path.dirname(file), { recursive: true });
    await writeFileAtomic(file, db.export());
  } finally {
    db.close();
  }
}
