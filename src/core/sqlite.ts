/**
 * sql.js, loaded once. The manifest and the hash cache are SQLite files any sqlite3 tool
 * can read; sql.js keeps a database in memory and we write it back whole, atomically.
 */
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { SqlJsStatic } from 'sql.js';
import { writeFileAtomic } from './fsutil.ts';

let loading: Promise<SqlJsStatic> | undefined;

export function sqlite(): Promise<SqlJsStatic> {
  // Imported on first use: a command that needs no database (an unchanged builddb among
  // them) does not pay for loading sql.js.
  loading ??= import('sql.js').then(({ default: initSqlJs }) => {
    const require = createRequire(import.meta.url);
    const wasm = require.resolve('sql.js/dist/sql-wasm.wasm');
    return initSqlJs({ locateFile: () => wasm });
  });
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
