/**
 * What delta transfer keeps in the spool's manifest (manifest format 2):
 *
 *   signatures(path PRIMARY KEY, hash, size, signature BLOB)
 *       the destination's large files as its last snapshot saw them (signature.ts format);
 *       written by store with the destination snapshot, read by fetch
 *   recipes(hash PRIMARY KEY, size, chunk_bytes, recipe BLOB, created_at)
 *       content carried as a delta: `hash` is the whole file's `sha256:<hex>`, `chunk_bytes`
 *       what its newly carried chunks cost (recipe.ts format); the chunks are ordinary
 *       blobs of the spool, named by their SHA-256
 *   delta_refused(hash PRIMARY KEY, path, reason, at)
 *       contents whose delta failed at the destination (a base file changed behind the
 *       plan's back): the next fetch carries them whole
 *
 * A format 1 manifest gains these (empty) tables when loaded.
 */
import { BitfogError } from '../errors.ts';
import type { Manifest } from '../manifest.ts';
import { decodeRecipe, encodeRecipe, type Recipe } from './recipe.ts';
import { decodeSignature, type FileSignature } from './signature.ts';

export const DELTA_SCHEMA = `
CREATE TABLE IF NOT EXISTS signatures (path TEXT PRIMARY KEY, hash TEXT NOT NULL, size INTEGER NOT NULL, signature BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recipes (
  hash TEXT PRIMARY KEY, size INTEGER NOT NULL, chunk_bytes INTEGER NOT NULL, recipe BLOB NOT NULL, created_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delta_refused (hash TEXT PRIMARY KEY, path TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL) WITHOUT ROWID;
`;

export interface StoredSignature {
  path: string;
  hash: string;
  size: number;
  bytes: Uint8Array;
}

export interface RecipeRow {
  hash: string;
  size: number;
  chunkBytes: number;
  recipeBytes: number;
}

/** Typed access to the delta tables of one manifest. */
export class DeltaTables {
  constructor(private readonly manifest: Manifest) {
    manifest.db.exec(DELTA_SCHEMA);
  }

  private get db() {
    return this.manifest.db;
  }

  /** Replaces the destination's signatures. */
  putSignatures(signatures: Iterable<StoredSignature>): void {
    this.db.exec('BEGIN');
    try {
      this.db.run('DELETE FROM signatures');
      const stmt = this.db.prepare('INSERT INTO signatures(path, hash, size, signature) VALUES (?,?,?,?)');
      try {
        for (const s of signatures) stmt.run([s.path, s.hash, s.size, s.bytes]);
      } finally {
        stmt.free();
      }
      this.db.exec('COMMIT');
    } catch (e) {
      this.db.exec('ROLLBACK');
      throw e;
    }
  }

  /** The destination's signatures by path. Damaged or unreadable ones are left out (those files travel whole). */
  signatures(): Map<string, { hash: string; size: number; signature: FileSignature; bytes: number }> {
    const out = new Map<string, { hash: string; size: number; signature: FileSignature; bytes: number }>();
    const stmt = this.db.prepare('SELECT path, hash, size, signature FROM signatures');
    try {
      while (stmt.step()) {
        const [path, hash, size, bytes] = stmt.get() as [string, string, number, Uint8Array];
        try {
          out.set(path, { hash, size, signature: decodeSignature(bytes), bytes: bytes.length });
        } catch {
          /* an unknown or damaged signature only means no delta against that file */
        }
      }
    } finally {
      stmt.free();
    }
    return out;
  }

  /** Total bytes of the recorded signatures (what they cost on the spool). */
  signatureBytes(): number {
    const r = this.db.exec('SELECT coalesce(sum(length(signature)), 0) FROM signatures');
    return Number(r[0]?.values[0]?.[0] ?? 0);
  }

  putRecipe(recipe: Recipe, chunkBytes: number): void {
    this.db.run('INSERT OR REPLACE INTO recipes(hash, size, chunk_bytes, recipe, created_at) VALUES (?,?,?,?,?)', [
      `sha256:${recipe.sha256}`,
      recipe.size,
      chunkBytes,
      encodeRecipe(recipe),
      new Date().toISOString(),
    ]);
  }

  /**
   * The recipe for content `hash` (`sha256:<hex>`). Throws EBADSPOOL when it is damaged,
   * or rebuilds some other content than its row says.
   */
  recipe(hash: string): Recipe | undefined {
    const r = this.db.exec('SELECT recipe FROM recipes WHERE hash = ?', [hash]);
    const bytes = r[0]?.values[0]?.[0] as Uint8Array | undefined;
    if (!bytes) return undefined;
    const recipe = decodeRecipe(bytes);
    if (`sha256:${recipe.sha256}` !== hash) throw new BitfogError('EBADSPOOL', `the delta recipe for ${hash} rebuilds sha256:${recipe.sha256}: the manifest is damaged`);
    return recipe;
  }

  recipeRows(): RecipeRow[] {
    const r = this.db.exec('SELECT hash, size, chunk_bytes, length(recipe) FROM recipes ORDER BY hash');
    return (r[0]?.values ?? []).map((v) => ({ hash: v[0] as string, size: Number(v[1]), chunkBytes: Number(v[2]), recipeBytes: Number(v[3]) }));
  }

  hasRecipe(hash: string): boolean {
    return this.db.exec('SELECT 1 FROM recipes WHERE hash = ?', [hash]).length > 0;
  }

  removeRecipe(hash: string): void {
    this.db.run('DELETE FROM recipes WHERE hash = ?', [hash]);
  }

  /** Blob names (`sha256:<hex>`) of the chunks the recipes of `hashes` read from the spool. */
  chunkBlobsOf(hashes: Iterable<string>): Set<string> {
    const out = new Set<string>();
    for (const h of hashes) {
      let recipe: Recipe | undefined;
      try {
        recipe = this.recipe(h);
      } catch {
        continue;
      }
      for (const op of recipe?.ops ?? []) if (op.from === 'spool') out.add(`sha256:${op.sha256}`);
    }
    return out;
  }

  refuse(hash: string, path: string, reason: string): void {
    this.db.run('INSERT OR REPLACE INTO delta_refused(hash, path, reason, at) VALUES (?,?,?,?)', [hash, path, reason, new Date().toISOString()]);
  }

  refused(): Set<string> {
    const r = this.db.exec('SELECT hash FROM delta_refused');
    return new Set((r[0]?.values ?? []).map((v) => v[0] as string));
  }

  /** Paths whose delta was refused (the source may not know a file's hash before reading it). */
  refusedPaths(): Set<string> {
    const r = this.db.exec('SELECT path FROM delta_refused');
    return new Set((r[0]?.values ?? []).map((v) => v[0] as string));
  }

  /** Forgets refusals of contents no longer wanted (they landed, or the source moved on). */
  retainRefused(keep: (hash: string) => boolean): void {
    for (const h of this.refused()) if (!keep(h)) this.db.run('DELETE FROM delta_refused WHERE hash = ?', [h]);
  }
}
