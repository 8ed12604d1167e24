/**
 * Delta transfer in the sneakernet cycle: the hooks fetch, store and status call.
 *
 *  - store records, with the destination snapshot, a signature of every file of at least
 *    `minBytes` (default 64 MiB, `DEFAULT_DELTA_MIN_BYTES`); signatures are cached beside
 *    the hash cache, so unchanged files are not re-read (`recordDestinationSignatures`).
 *  - fetch carries a content of at least `minBytes` as a delta when the destination
 *    recorded signatures: it reads the file once, cutting it into chunks with the params
 *    of the destination's signature of the same path (else those for its size), and
 *    carries only the chunks the destination holds nowhere in its tree, plus a recipe
 *    (`DeltaFetch`). Identical chunks are carried once per spool.
 *  - store assembles such a file from ranged reads of the destination's own files and the
 *    carried chunks, under a temporary name, verified chunk by chunk and then as a whole
 *    (store's own check against the source snapshot's hash), then renames it. A base file
 *    that changed behind the plan's back fails verification: the file is reported, left
 *    as it was, and its content is marked to travel whole on the next trip (`DeltaStore`).
 *
 * Known limits: fetch budgets a delta at the file's full size (its real cost is known only
 * once read), so near a full spool a delta may wait for a later trip it did not need; the
 * chunk index holds every signed chunk of the destination in memory (about 150 bytes per
 * chunk: some 4 GB for 1 TB of files under 4 GiB); delta writes are assembled before
 * removals, so a base file replaced earlier in the same store fails verification and its
 * dependant travels whole next trip.
 */
import { Readable } from 'node:stream';
import { BitfogError, isBitfogError, throwIfAborted, toBitfogError } from '../errors.ts';
import { type HashCache, RACY_WINDOW_MS } from '../hashcache.ts';
import type { Manifest, Snapshot } from '../manifest.ts';
import { toRelPath } from '../paths.ts';
import type { ProgressListener } from '../progress.ts';
import type { Spool } from '../spool.ts';
import type { Destination, Entry, Source, WritableFile } from '../types.ts';
import { chunkParamsForSize, chunkStream } from './chunker.ts';
import { assembleInto, assembleReadable, BaseFileChangedError, DeltaPlanner, type Recipe, recipeBasePaths } from './recipe.ts';
import { SignatureCache } from './sigcache.ts';
import { ChunkIndex, DEFAULT_HASH_LENGTH, encodeSignature, type FileSignature, signatureFileSize, signContent } from './signature.ts';
import { DeltaTables, type StoredSignature } from './tables.ts';
import { createHash } from 'node:crypto';

/** Files at least this large get signatures and travel as deltas, unless configured otherwise. */
export const DEFAULT_DELTA_MIN_BYTES = 64 * 1024 * 1024;

export interface DeltaConfig {
  /** Size from which files get signatures and travel as deltas; default DEFAULT_DELTA_MIN_BYTES. */
  minBytes?: number;
  /** false: no signatures recorded, everything carried whole. Default true. */
  enabled?: boolean;
}

/**
 * The delta settings from the environment: BITFOG_DELTA_MIN_SIZE (bytes) and
 * BITFOG_DELTA=0 to turn deltas off.
 */
export function deltaConfigFromEnv(env: NodeJS.ProcessEnv = process.env): Required<DeltaConfig> {
  const raw = env.BITFOG_DELTA_MIN_SIZE;
  const min = raw === undefined || raw === '' ? DEFAULT_DELTA_MIN_BYTES : Number(raw);
  if (!Number.isSafeInteger(min) || min < 1) throw new BitfogError('EUSAGE', `BITFOG_DELTA_MIN_SIZE must be a positive number of bytes, not ${JSON.stringify(raw)}`);
  return { minBytes: min, enabled: env.BITFOG_DELTA !== '0' };
}

function resolve(config: DeltaConfig = {}): Required<DeltaConfig> {
  const env = deltaConfigFromEnv();
  return { minBytes: config.minBytes ?? env.minBytes, enabled: config.enabled ?? env.enabled };
}

/** Files at least this large get signatures under `config`; undefined when signatures are off. */
export function signatureMinBytes(config?: DeltaConfig): number | undefined {
  const resolved = resolve(config);
  return resolved.enabled ? resolved.minBytes : undefined;
}

// ---------------------------------------------------------------------------- destination side

/**
 * Signs the large files of a destination snapshot (from the cache when unchanged, else by
 * reading them once) and records the signatures in the manifest. A file whose content no
 * longer hashes to the snapshot's hash is left unsigned (it travels whole if needed).
 * Returns how many files were read.
 */
export async function recordDestinationSignatures(options: {
  destination: Source;
  snapshot: Snapshot;
  manifest: Manifest;
  cache: HashCache;
  config?: DeltaConfig;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /**
   * Signatures already known for files bitfog just wrote and verified (path → content hash
   * and signature; `DeltaStore.knownSignatures`): taken instead of reading those files.
   */
  known?: ReadonlyMap<string, { hash: string; signature: FileSignature }>;
}): Promise<{ signed: number; read: number; bytes: number }> {
  const { destination, snapshot, manifest, signal } = options;
  const config = resolve(options.config);
  const tables = new DeltaTables(manifest);
  if (!config.enabled) {
    tables.putSignatures([]);
    return { signed: 0, read: 0, bytes: 0 };
  }
  const sigCache = await SignatureCache.besides(options.cache);
  const out: StoredSignature[] = [];
  let read = 0;
  let bytes = 0;
  for (const entry of snapshot.entries.values()) {
    if (entry.kind !== 'file' || entry.size < config.minBytes || !entry.hash) continue;
    throwIfAborted(signal);
    const cached = sigCache.lookup(entry);
    if (cached) {
      out.push({ path: entry.path, hash: entry.hash, size: entry.size, bytes: cached.bytes });
      bytes += cached.bytes.length;
      continue;
    }
    const known = options.known?.get(entry.path);
    if (known && known.hash === entry.hash && signatureFileSize(known.signature) === entry.size) {
      const encoded = encodeSignature(known.signature);
      // bitfog wrote and verified this content moments ago: trusted despite being recent.
      sigCache.record(entry, entry.hash, encoded, (entry.changedAtMs ?? 0) + RACY_WINDOW_MS);
      out.push({ path: entry.path, hash: entry.hash, size: entry.size, bytes: encoded });
      bytes += encoded.length;
      continue;
    }
    const startedAt = Date.now();
    try {
      const signed = await signContent(await destination.read(entry.path, signal ? { signal } : {}), entry.size, signal ? { signal } : {});
      read++;
      if (signed.hash !== entry.hash || signed.size !== entry.size) continue; // changed since listed
      const encoded = encodeSignature(signed.signature);
      sigCache.record(entry, signed.hash, encoded, startedAt);
      out.push({ path: entry.path, hash: entry.hash, size: entry.size, bytes: encoded });
      bytes += encoded.length;
    } catch (e) {
      const err = toBitfogError(e, `cannot sign ${JSON.stringify(entry.path)}`, entry.path);
      if (!isBitfogError(err, 'ENOENT', 'EACCES', 'EISDIR', 'EOPNOTSUPP')) throw err;
      options.onProgress?.({ type: 'skip', path: entry.path, reason: `no delta signature: ${err.message}` });
    }
  }
  sigCache.retainOnly((p) => snapshot.entries.has(p));
  await sigCache.save();
  tables.putSignatures(out);
  return { signed: out.length, read, bytes };
}

// ---------------------------------------------------------------------------- source side

export interface DeltaFetchStats {
  /** Files carried as deltas this run. */
  files: number;
  /** Their full size. */
  fileBytes: number;
  /** Bytes of new chunks carried for them. */
  chunkBytes: number;
}

/** The destination's signatures that still describe it: same hash and size at that path in `destination`. */
function* currentSignatures(tables: DeltaTables, destination: Snapshot): Generator<[string, { size: number; signature: FileSignature }]> {
  for (const [path, s] of tables.signatures()) {
    const d = destination.entries.get(path);
    if (d && d.kind === 'file' && d.hash === s.hash && d.size === s.size) yield [path, s];
  }
}

/**
 * Which contents fetch sends as deltas: those large enough, not refused, for which the
 * destination has a signature at the same path or of a file of similar size (half to
 * twice): a changed, renamed, copied or appended-to file. An unrelated new file travels
 * whole, as one blob rather than as many chunks of which none could be reused.
 */
export class DeltaCandidates {
  private readonly paths = new Set<string>();
  private readonly sizes: number[] = [];
  private readonly refused: Set<string>;
  private readonly refusedPaths: Set<string>;

  constructor(
    private readonly config: Required<DeltaConfig>,
    tables: DeltaTables,
  ) {
    this.refused = tables.refused();
    this.refusedPaths = tables.refusedPaths();
  }

  /** From the signatures recorded on this manifest that still describe `destination` (for status: fetch builds its own while it reads them). */
  static of(manifest: Manifest, destination: Snapshot, config?: DeltaConfig): DeltaCandidates {
    const tables = new DeltaTables(manifest);
    const candidates = new DeltaCandidates(resolve(config), tables);
    if (candidates.config.enabled) for (const [path, s] of currentSignatures(tables, destination)) candidates.add(path, s.size);
    return candidates;
  }

  /** A destination file of `size` bytes at `path` with a signature. */
  add(path: string, size: number): void {
    this.paths.add(path);
    this.sizes.push(size);
  }

  wants(path: string, size: number, hash: string | undefined): boolean {
    if (!this.config.enabled || size < this.config.minBytes || this.sizes.length === 0) return false;
    if ((hash !== undefined && this.refused.has(hash)) || this.refusedPaths.has(path)) return false;
    if (this.paths.has(path)) return true;
    for (const s of this.sizes) if (s >= size / 2 && s <= size * 2) return true;
    return false;
  }
}

/** fetch's side of delta transfer: which contents go as deltas, and carrying them. */
export class DeltaFetch {
  readonly stats: DeltaFetchStats = { files: 0, fileBytes: 0, chunkBytes: 0 };
  private readonly tables: DeltaTables;
  private readonly config: Required<DeltaConfig>;
  private readonly index = new ChunkIndex();
  private readonly signatures = new Map<string, FileSignature>();
  private readonly candidates: DeltaCandidates;
  /** Chunks written this run (shared by all files, so identical chunks are carried once). */
  private readonly carried = new Set<string>();

  /**
   * Reads the destination's signatures from the manifest; only those that still describe
   * the destination snapshot (same hash and size at that path) are used.
   */
  constructor(manifest: Manifest, destination: Snapshot, config?: DeltaConfig) {
    this.tables = new DeltaTables(manifest);
    this.config = resolve(config);
    this.candidates = new DeltaCandidates(this.config, this.tables);
    if (!this.config.enabled) return;
    for (const [path, s] of currentSignatures(this.tables, destination)) {
      this.index.add(path, s.signature);
      this.signatures.set(path, s.signature);
      this.candidates.add(path, s.size);
    }
  }

  /** Contents (`sha256:` hashes) already carried as deltas on this spool. */
  carriedContents(): string[] {
    return this.tables.recipeRows().map((r) => r.hash);
  }

  /**
   * Blobs to keep on the spool for the contents in `wanted`: the chunks of their recipes.
   * Recipes of contents no longer wanted are dropped.
   */
  keepFor(wanted: ReadonlySet<string>): Set<string> {
    const rows = this.tables.recipeRows();
    for (const r of rows) if (!wanted.has(r.hash)) this.tables.removeRecipe(r.hash);
    this.tables.retainRefused((h) => wanted.has(h));
    return this.tables.chunkBlobsOf(rows.filter((r) => wanted.has(r.hash)).map((r) => r.hash));
  }

  /** True when this content should travel as a delta (see `DeltaCandidates.wants`). */
  wants(path: string, size: number, hash: string | undefined): boolean {
    return this.candidates.wants(path, size, hash);
  }

  /**
   * Carries `entry` as a delta: reads it once, writes the chunks the destination lacks to
   * the spool, records the recipe, and returns the content's hash. With `maxNewBytes`, when
   * the new chunks come to more than that, takes the ones written off the spool again and
   * returns undefined (the file waits for a later trip). Throws EINTEGRITY when
   * the content is not `expectedHash` or `entry.size` (the file changed while carried;
   * nothing is recorded then), ENOSPC, EABORTED and the source's read errors.
   */
  async carry(
    source: Source,
    spool: Spool,
    entry: Entry,
    expectedHash: string | undefined,
    options: { signal?: AbortSignal; onBytes?: (n: number) => void; maxNewBytes?: number } = {},
  ): Promise<string | undefined> {
    const { signal } = options;
    /** Chunks this call put on the spool: taken off again when they do not fit `maxNewBytes`. */
    const added: string[] = [];
    let addedBytes = 0;
    /** Chunks the planner counted as carried by this file. */
    const planned: string[] = [];
    const base = this.signatures.get(entry.path);
    const params = base?.params ?? chunkParamsForSize(entry.size);
    const planner = new DeltaPlanner(this.index, { carried: this.carried, basePath: entry.path, params });
    const whole = createHash('sha256');
    let size = 0;
    const stream = await source.read(entry.path, signal ? { signal } : {});
    for await (const c of chunkStream(stream, params, {
      withData: true,
      ...(signal ? { signal } : {}),
      onData: (d) => {
        whole.update(d);
        size += d.length;
        options.onBytes?.(d.length);
      },
    })) {
      if (!planner.add(c)) continue;
      planned.push(c.sha256);
      const blob = `sha256:${c.sha256}`;
      if (spool.has(blob)) continue;
      if (options.maxNewBytes !== undefined && addedBytes + c.length > options.maxNewBytes) {
        // Nothing of this file stays: neither its chunks nor their place among those this
        // fetch carries (another file with the same chunk would take it for carried).
        await spool.removeBlobs(added);
        for (const sha256 of planned) this.carried.delete(sha256);
        stream.destroy();
        return undefined;
      }
      await spool.writeBlob(Readable.from([c.data!]), { hash: blob, size: c.length }, { ...(signal ? { signal } : {}), durable: false });
      added.push(blob);
      addedBytes += c.length;
    }
    const hash = `sha256:${whole.digest('hex')}`;
    if (size !== entry.size || (expectedHash !== undefined && hash !== expectedHash)) {
      throw new BitfogError('EINTEGRITY', `${JSON.stringify(entry.path)} changed while being carried`, { path: entry.path });
    }
    const plan = planner.finish(hash);
    // The recipe vouches that its chunks make up `hash`: they must be cut from exactly the bytes hashed.
    if (plan.recipe.size !== size) throw new BitfogError('EIO', `delta planner: chunks of ${JSON.stringify(entry.path)} cover ${plan.recipe.size} bytes, not ${size}`, { path: entry.path });
    this.tables.putRecipe(plan.recipe, plan.carryBytes);
    this.stats.files++;
    this.stats.fileBytes += size;
    this.stats.chunkBytes += plan.carryBytes;
    return hash;
  }

  /** Drops the recipe of `hash` (the file turned out to have changed while carried). */
  forget(hash: string): void {
    this.tables.removeRecipe(hash);
  }
}

// ---------------------------------------------------------------------------- destination side: store

export interface DeltaStoreStats {
  /** Files assembled from deltas. */
  files: number;
  fileBytes: number;
  /** Bytes of carried chunks and recipes they took. */
  carriedBytes: number;
  /** Deltas refused because a base file changed; those contents travel whole next trip. */
  refused: Array<{ path: string; base?: string; reason: string }>;
}

/** store's side of delta transfer: assembling, and what to keep on the spool. */
export class DeltaStore {
  readonly stats: DeltaStoreStats = { files: 0, fileBytes: 0, carriedBytes: 0, refused: [] };
  /** Signatures of the files assembled by this store, by path (for `recordDestinationSignatures`). */
  readonly knownSignatures = new Map<string, { hash: string; signature: FileSignature }>();
  private readonly tables: DeltaTables;
  /** Chunks seen while assembling each content, in order. */
  private readonly assembled = new Map<string, { signature: FileSignature | undefined }>();

  constructor(
    private readonly manifest: Manifest,
    private readonly spool: Spool,
    private readonly destination: Destination,
  ) {
    this.tables = new DeltaTables(manifest);
  }

  /** True when content `hash` is carried as a delta (planStore's `hasRecipe`). */
  hasRecipe = (hash: string): boolean => this.tables.hasRecipe(hash);

  /** Contents carried as deltas on this spool. */
  recipeHashes(): string[] {
    return this.tables.recipeRows().map((r) => r.hash);
  }

  /** The spool blobs that any recipe on this spool uses as a chunk. */
  chunkBlobs(): Set<string> {
    return this.tables.chunkBlobsOf(this.recipeHashes());
  }

  /**
   * The assembled content of `hash` as a stream, for `Destination.write` through store's
   * verifying stream. `wholeFileVerified`: the assembler proves the whole file through its
   * chunks (a recipe with a chunk-list digest), so the verifying stream need not hash it
   * again; false for a format 1 recipe, which the verifying stream must hash. Errors:
   * BaseFileChangedError (EINTEGRITY with the base's path), EINTEGRITY for a damaged spool
   * chunk or recipe, ENOENT for a missing one.
   */
  open(hash: string, signal?: AbortSignal): { content: Readable; wholeFileVerified: boolean } {
    const { recipe, onChunk } = this.#begin(hash);
    const dest = this.destination;
    const content = assembleReadable(
      recipe,
      {
        // A whole-file read passes no range at all: a backend without ranged reads may refuse any.
        readDestRange: (path, start, end, sig) =>
          dest.read(toRelPath(path), { ...(start === 0 ? {} : { start }), ...(end === undefined ? {} : { end }), ...(sig ? { signal: sig } : {}) }),
        readSpoolChunk: (sha256, sig) => this.spool.readBlob(`sha256:${sha256}`, sig),
      },
      {
        rangedReads: dest.capabilities.rangedReads,
        verifyWholeFile: false,
        ...(signal ? { signal } : {}),
        ...(onChunk ? { onChunk } : {}),
      },
    );
    return { content, wholeFileVerified: recipe.chunkListSha256 !== undefined };
  }

  /** Whether `assembleInto` can be used: the destination reads and writes at positions. */
  get positional(): boolean {
    return typeof this.destination.openFile === 'function' && typeof this.destination.createFile === 'function';
  }

  /**
   * Assembles the content of `hash` into `file` (from `Destination.createFile`, on a
   * temporary name) with positional reads of the base files, verified whole (see
   * `assembleInto`). Errors as `open`; on one, the caller discards the file.
   */
  async assembleInto(hash: string, file: WritableFile, options: { signal?: AbortSignal; onBytes?: (n: number) => void } = {}): Promise<void> {
    const { recipe, onChunk } = this.#begin(hash);
    const dest = this.destination;
    if (!dest.openFile) throw new BitfogError('EOPNOTSUPP', `${dest.url} cannot read at positions`);
    await assembleInto(
      recipe,
      {
        openDestFile: (path, sig) => dest.openFile!(toRelPath(path), sig ? { signal: sig } : {}),
        readSpoolChunk: (sha256, sig) => this.spool.readBlob(`sha256:${sha256}`, sig),
      },
      file,
      { ...options, ...(onChunk ? { onChunk } : {}) },
    );
  }

  /** The recipe of `hash`, and how to collect the rebuilt file's signature as its chunks are checked. */
  #begin(hash: string): { recipe: Recipe; onChunk?: (length: number, sha256: string) => void } {
    const recipe = this.tables.recipe(hash);
    if (!recipe) throw new BitfogError('ENOENT', `no delta recipe for ${hash} on the spool`);
    const signature: FileSignature | undefined = recipe.params ? { params: recipe.params, hashLength: DEFAULT_HASH_LENGTH, chunks: [] } : undefined;
    this.assembled.set(hash, { signature });
    if (!signature) return { recipe };
    return { recipe, onChunk: (length, sha256) => void signature.chunks.push({ length, sha256: sha256.slice(0, 2 * DEFAULT_HASH_LENGTH) }) };
  }

  /** The file at `path` with content `hash` was assembled and landed. */
  landed(hash: string, path: string): void {
    const signature = this.assembled.get(hash)?.signature;
    if (signature) this.knownSignatures.set(path, { hash, signature });
    const row = this.tables.recipeRows().find((r) => r.hash === hash);
    if (!row) return;
    this.stats.files++;
    this.stats.fileBytes += row.size;
    this.stats.carriedBytes += row.chunkBytes + row.recipeBytes;
  }

  /**
   * Assembling `hash` for `path` failed with `err`. A changed or missing base file, or a
   * damaged chunk: the delta is dropped and the content marked to travel whole; returns
   * the reason to report. Other errors (disk full, …) return undefined: not the delta's fault.
   */
  failed(hash: string, path: string, err: unknown): string | undefined {
    if (!isBitfogError(err, 'EINTEGRITY', 'ENOENT', 'EBADSPOOL')) return undefined;
    const base = err instanceof BaseFileChangedError ? err.path : undefined;
    const reason = base !== undefined
      ? `not assembled: ${err.message}; it is carried whole on the next trip`
      : `not assembled from its delta (${err.message}); it is carried whole on the next trip`;
    this.tables.refuse(hash, path, reason);
    this.tables.removeRecipe(hash);
    this.stats.refused.push({ path, ...(base === undefined ? {} : { base }), reason });
    return reason;
  }

  /**
   * Blobs to keep for contents still `needed` after this store: the chunks of their
   * recipes. Recipes of contents no longer needed (landed, or gone from the source) are
   * dropped, and the bytes saved are added to the spool's running total.
   */
  keepFor(needed: ReadonlySet<string>): Set<string> {
    const rows = this.tables.recipeRows();
    for (const r of rows) if (!needed.has(r.hash)) this.tables.removeRecipe(r.hash);
    const saved = this.stats.fileBytes - this.stats.carriedBytes;
    if (saved > 0) this.manifest.setMeta('delta_saved_bytes', String(Number(this.manifest.getMeta('delta_saved_bytes') ?? '0') + saved));
    return this.tables.chunkBlobsOf(rows.filter((r) => needed.has(r.hash)).map((r) => r.hash));
  }
}

/** The base files a content's recipe reads (for messages). */
export function deltaBasePaths(manifest: Manifest, hash: string): string[] {
  const recipe = new DeltaTables(manifest).recipe(hash);
  return recipe ? recipeBasePaths(recipe) : [];
}

// ---------------------------------------------------------------------------- status

export interface DeltaStatus {
  /** Contents on the spool as deltas (`sha256:` hashes), their full size and what they cost. */
  contents: string[];
  files: number;
  fileBytes: number;
  carriedBytes: number;
  /** fileBytes - carriedBytes. */
  savedBytes: number;
  /** Bytes saved by deltas stored at the destination so far (all trips). */
  storedSavedBytes: number;
  /** Destination files with signatures, and what the signatures cost on the spool. */
  signatures: number;
  signatureBytes: number;
  /** Contents whose delta failed; they travel whole next trip. */
  refused: number;
}

export function deltaStatus(manifest: Manifest): DeltaStatus {
  const tables = new DeltaTables(manifest);
  const rows = tables.recipeRows();
  const fileBytes = rows.reduce((n, r) => n + r.size, 0);
  const carriedBytes = rows.reduce((n, r) => n + r.chunkBytes + r.recipeBytes, 0);
  return {
    contents: rows.map((r) => r.hash),
    files: rows.length,
    fileBytes,
    carriedBytes,
    savedBytes: Math.max(0, fileBytes - carriedBytes),
    storedSavedBytes: Number(manifest.getMeta('delta_saved_bytes') ?? '0'),
    signatures: tables.signatures().size,
    signatureBytes: tables.signatureBytes(),
    refused: tables.refused().size,
  };
}
