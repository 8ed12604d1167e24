/**
 * sql.js, loaded once. The manifest and the hash cache are SQLite files any sqlite3 tool
 * can read; sql.js keeps a database in memory and we write it back whole, atomically.
 */
import { createRequire } from 'node:module';
import initSqlJs, { type SqlJsStatic } from 'sql.js';

let loading: Promise<SqlJsStatic> | undefined;

export function sqlite(): Promise<SqlJsStatic> {
  if (!loading) {
    const require = createRequire(import.meta.url);
    const wasm = require.resolve('sql.js/dist/sql-wasm.wasm');
    loading = initSqlJs({ locateFile: () => wasm });
  }
  return loading;
}

/** True when the bytes start with the SQLite file header. */
export function looksLikeSqlite(bytes: Uint8Array): boolean {
  return Buffer.from(bytes.subarray(0, 16)).toString('latin1') === 'SQLite format 3\0';
}
