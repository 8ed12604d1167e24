/**
 * Recipes: how to rebuild a changed file at the destination from chunks it already holds
 * plus the few new chunks carried on the spool — and the assembler that follows one.
 *
 * Planning (at the source): the new file's chunks (chunker.ts, with the params of the
 * destination's signature of the same path when there is one) are looked up in the
 * destination's `ChunkIndex`. Each chunk found becomes part of a "dest" op — a run of
 * contiguous chunks of one destination file, read with one ranged read — and each chunk
 * not found becomes a "spool" op and, unless carried already (this file or another one in
 * the same trip: pass one `carried` set to every plan), a chunk to carry.
 *
 * Assembling (at the destination): ops are followed in order; every chunk is hashed
 * (full SHA-256) and verified as it streams (spool chunks against their SHA-256; dest runs
 * against the digest of their chunks' SHA-256s), and the whole file against the source's
 * hash. A run or chunk that fails stops the assembly as soon as its hash is in (at once,
 * or when chunks are hashed on a worker thread, at most a few MiB of output later),
 * naming the base file. The last bytes are held back until everything has verified: a
 * consumer never sees a complete stream of wrong content, only an error.
 *
 * The whole file is checked through its chunks, not hashed a second time (which would
 * double the assembler's work: SHA-256 is most of it). At the source, the planner cut the
 * chunks from the same bytes it hashed whole, and records `chunkListSha256`: the SHA-256
 * of every chunk's digest in file order followed by the whole-file digest. The assembler
 * recomputes that list digest from the chunks it verified, and the recipe's whole-file
 * hash. When they agree, the rebuilt bytes are the bytes that had the whole-file hash (a
 * hash list, as strong as SHA-256 itself); a recipe whose chunk list or file hash was
 * damaged, or planned wrong, does not agree. A recipe without it (format 1) is checked by
 * hashing the whole file.
 *
 * Binary format, version 2 (integers unsigned LEB128 unless noted):
 *
 *   u8 version (2) · u8 hasParams · [u8 normalization · minSize · avgSize · maxSize] · size ·
 *   32 bytes whole-file SHA-256 · 32 bytes chunk-list SHA-256 ·
 *   pathCount · pathCount × (byteLength · UTF-8) · opCount · ops, each one of:
 *     u8 0 · pathIndex · offset · chunkCount · chunkCount × length · 32 bytes run digest   (dest)
 *     u8 1 · length · 32 bytes chunk SHA-256                                               (spool)
 *
 * A dest op costs about 3 bytes per chunk: the destination's signature already said
 * which hashes those chunks have; the recipe only needs their lengths to check them.
 * Version 1 is the same without the chunk-list SHA-256; it is still read.
 */
import { createHash, type Hash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BitfogError, isBitfogError, throwIfAborted, toBitfogError } from '../errors.ts';
import { type Chunk, type ChunkParams, validateChunkParams } from './chunker.ts';
import { type ChunkHasher, type StreamHasher, syncChunkHasher, syncHasher, workerChunkHasher } from './hasher.ts';
import type { OpenFile } from '../types.ts';
import type { ChunkIndex, ChunkLocation } from './signature.ts';
import { ByteReader, pushVarint } from './varint.ts';

export const RECIPE_VERSION = 2;
/** The oldest recipe format this build reads (1: no chunk-list digest). */
const OLDEST_RECIPE_VERSION = 1;

/**
 * A run of contiguous chunks `[offset, offset + length)` of a destination file.
 * `runSha256` is the SHA-256 of the concatenated 32-byte SHA-256 digests of those chunks
 * (split by `chunkLengths`), so one value checks them all and each is still hashed alone.
 */
export interface DestOp {
  from: 'dest';
  path: string;
  offset: number;
  length: number;
  chunkLengths: number[];
  runSha256: string;
}

/** One chunk carried on the spool, named by its SHA-256 (lowercase hex). */
export interface SpoolOp {
  from: 'spool';
  sha256: string;
  length: number;
}

export type RecipeOp = DestOp | SpoolOp;

/** How to rebuild one file: its ops in order, and what the result must be. */
export interface Recipe {
  /**
   * The chunk params the new file was cut with, when known: with them the destination
   * knows the rebuilt file's signature without reading it again (`AssembleOptions.onChunk`).
   */
  params?: ChunkParams;
  /** Size of the rebuilt file (the sum of the op lengths). */
  size: number;
  /** SHA-256 of the rebuilt file, lowercase hex (no `sha256:` prefix). */
  sha256: string;
  /**
   * SHA-256 (hex) of the 32-byte SHA-256 digests of all the file's chunks in order, then
   * the 32-byte whole-file digest: binds the chunk list to `sha256` (see the top of this
   * file). Absent in recipes of format 1; the whole file is hashed then.
   */
  chunkListSha256?: string;
  ops: RecipeOp[];
}

/** A planned delta: the recipe, the chunks to carry for it, and what it saves. */
export interface DeltaPlan {
  recipe: Recipe;
  /** New chunks not carried before in this trip, in file order (offsets in the new file). */
  carry: Chunk[];
  /** Bytes of chunks newly carried for this file. */
  carryBytes: number;
  /** Bytes of this file taken from the destination. */
  reuseBytes: number;
}

export interface PlanOptions {
  /** The params the chunks were cut with (recorded in the recipe). */
  params?: ChunkParams;
  /** SHA-256s already carried this trip; the plan adds its own. Share one set across files. */
  carried?: Set<string>;
  /** The destination path this file replaces: its chunks are preferred (longer runs). */
  basePath?: string;
}

/**
 * Plans a file chunk by chunk as its chunks stream out of the chunker, so the chunk list
 * is never held whole (only the recipe, a few bytes per chunk).
 */
export class DeltaPlanner {
  private readonly ops: RecipeOp[] = [];
  private readonly carry: Chunk[] = [];
  private readonly carried: Set<string>;
  /** Digest of every chunk's digest so far (`Recipe.chunkListSha256`). */
  private readonly chunkList = createHash('sha256');
  private carryBytes = 0;
  private reuseBytes = 0;
  private size = 0;
  /** The dest run being extended, with its location cursor and digest so far. */
  private run: { op: DestOp; end: ChunkLocation; digest: ReturnType<typeof createHash> } | undefined;

  constructor(
    private readonly index: ChunkIndex,
    private readonly options: PlanOptions = {},
  ) {
    this.carried = options.carried ?? new Set();
  }

  /**
   * Adds the next chunk of the new file (chunks must come in file order). Returns true
   * when this chunk must be carried: the caller stores its bytes on the spool now (from
   * `chunkStream(…, { withData: true })`), so the new file is read only once.
   */
  add(chunk: Chunk): boolean {
    if (chunk.offset !== this.size) throw new BitfogError('EIO', `delta planner: chunk at ${chunk.offset}, expected ${this.size}`);
    this.size += chunk.length;
    this.chunkList.update(Buffer.from(chunk.sha256, 'hex'));
    const hint: { continueAt?: ChunkLocation; preferPath?: string } = {};
    if (this.run) hint.continueAt = this.run.end;
    if (this.options.basePath !== undefined) hint.preferPath = this.options.basePath;
    const at = this.index.lookup(chunk.sha256, chunk.length, hint);
    if (at) {
      this.reuseBytes += chunk.length;
      const run = this.run;
      if (run && run.end.path === at.path && run.end.offset + run.end.length === at.offset) {
        run.op.length += chunk.length;
        run.op.chunkLengths.push(chunk.length);
        run.end = at;
      } else {
        this.closeRun();
        const op: DestOp = { from: 'dest', path: at.path, offset: at.offset, length: chunk.length, chunkLengths: [chunk.length], runSha256: '' };
        this.run = { op, end: at, digest: createHash('sha256') };
        this.ops.push(op);
      }
      this.run!.digest.update(Buffer.from(chunk.sha256, 'hex'));
      return false;
    }
    this.closeRun();
    this.ops.push({ from: 'spool', sha256: chunk.sha256, length: chunk.length });
    if (!this.carried.has(chunk.sha256)) {
      this.carried.add(chunk.sha256);
      const { data: _bytes, ...withoutData } = chunk;
      this.carry.push(withoutData);
      this.carryBytes += chunk.length;
      return true;
    }
    return false;
  }

  /**
   * Ends the file. `sha256` is its whole-file hash (hex, or `sha256:<hex>`), which the
   * caller computed from the very bytes the chunks were cut from: the recipe vouches that
   * these chunks make a file of that hash.
   */
  finish(sha256: string): DeltaPlan {
    this.closeRun();
    const hex = sha256.startsWith('sha256:') ? sha256.slice(7) : sha256;
    const chunkListSha256 = this.chunkList.update(Buffer.from(hex, 'hex')).digest('hex');
    return {
      recipe: { ...(this.options.params ? { params: { ...this.options.params } } : {}), size: this.size, sha256: hex, chunkListSha256, ops: this.ops },
      carry: this.carry,
      carryBytes: this.carryBytes,
      reuseBytes: this.reuseBytes,
    };
  }

  private closeRun(): void {
    if (!this.run) return;
    this.run.op.runSha256 = this.run.digest.digest('hex');
    this.run = undefined;
  }
}

/** Plans a whole chunk list at once (see `DeltaPlanner`). */
export function planDelta(chunks: Iterable<Chunk>, sha256: string, index: ChunkIndex, options: PlanOptions = {}): DeltaPlan {
  const planner = new DeltaPlanner(index, options);
  for (const c of chunks) planner.add(c);
  return planner.finish(sha256);
}

/** The base files a recipe reads from the destination. */
export function recipeBasePaths(recipe: Recipe): string[] {
  return [...new Set(recipe.ops.flatMap((op) => (op.from === 'dest' ? [op.path] : [])))];
}

// ---------------------------------------------------------------------------------------
// Encoding

function writeHash(out: number[], hex: string, what: string): void {
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new BitfogError('EUSAGE', `recipe ${what} is not a SHA-256: ${hex}`);
  for (let i = 0; i < 64; i += 2) out.push(parseInt(hex.slice(i, i + 2), 16));
}

/** Serialises a recipe (format above). Throws EUSAGE for malformed hashes. */
export function encodeRecipe(recipe: Recipe): Buffer {
  const out: number[] = [RECIPE_VERSION];
  if (recipe.params) {
    validateChunkParams(recipe.params);
    out.push(1, recipe.params.normalization);
    pushVarint(out, recipe.params.minSize);
    pushVarint(out, recipe.params.avgSize);
    pushVarint(out, recipe.params.maxSize);
  } else out.push(0);
  pushVarint(out, recipe.size);
  writeHash(out, recipe.sha256, 'file hash');
  if (recipe.chunkListSha256 === undefined) throw new BitfogError('EUSAGE', 'recipe has no chunk-list digest (format 1 recipes are only read)');
  writeHash(out, recipe.chunkListSha256, 'chunk-list digest');
  const paths = recipeBasePaths(recipe);
  const pathIndex = new Map(paths.map((p, i) => [p, i]));
  pushVarint(out, paths.length);
  for (const p of paths) {
    const bytes = Buffer.from(p, 'utf8');
    pushVarint(out, bytes.length);
    for (const b of bytes) out.push(b);
  }
  pushVarint(out, recipe.ops.length);
  for (const op of recipe.ops) {
    if (op.from === 'dest') {
      out.push(0);
      pushVarint(out, pathIndex.get(op.path)!);
      pushVarint(out, op.offset);
      pushVarint(out, op.chunkLengths.length);
      for (const l of op.chunkLengths) pushVarint(out, l);
      writeHash(out, op.runSha256, 'run digest');
    } else {
      out.push(1);
      pushVarint(out, op.length);
      writeHash(out, op.sha256, 'chunk hash');
    }
  }
  return Buffer.from(out);
}

/**
 * Parses a recipe. Throws EBADSPOOL for damaged bytes or inconsistent sizes, and for a
 * format version this build does not read, with a message that says so.
 */
export function decodeRecipe(bytes: Uint8Array): Recipe {
  const r = new ByteReader(bytes, 'delta recipe');
  const version = r.u8();
  if (version < OLDEST_RECIPE_VERSION || version > RECIPE_VERSION) {
    throw new BitfogError(
      'EBADSPOOL',
      `delta recipe has format version ${version}; this bitfog reads versions ${OLDEST_RECIPE_VERSION} to ${RECIPE_VERSION} (written by a ${version > RECIPE_VERSION ? 'newer' : 'older'} bitfog)`,
    );
  }
  const hex = (n: number) => Buffer.from(r.bytes(n)).toString('hex');
  let params: ChunkParams | undefined;
  const hasParams = r.u8();
  if (hasParams === 1) {
    params = { normalization: r.u8(), minSize: r.varint(), avgSize: r.varint(), maxSize: r.varint() };
    try {
      validateChunkParams(params);
    } catch {
      r.fail('invalid chunk parameters');
    }
  } else if (hasParams !== 0) r.fail('bad params flag');
  const size = r.varint();
  const sha256 = hex(32);
  const chunkListSha256 = version >= 2 ? hex(32) : undefined;
  const pathCount = r.varint();
  if (pathCount > r.remaining) r.fail('path count larger than the data');
  const paths: string[] = [];
  for (let i = 0; i < pathCount; i++) paths.push(Buffer.from(r.bytes(r.varint())).toString('utf8'));
  const opCount = r.varint();
  if (opCount > r.remaining) r.fail('op count larger than the data');
  const ops: RecipeOp[] = [];
  let total = 0;
  for (let i = 0; i < opCount; i++) {
    const tag = r.u8();
    if (tag === 0) {
      const path = paths[r.varint()] ?? r.fail('path index out of range');
      const offset = r.varint();
      const count = r.varint();
      if (count < 1 || count > r.remaining) r.fail('bad chunk count');
      const chunkLengths: number[] = [];
      let length = 0;
      for (let j = 0; j < count; j++) {
        const l = r.varint();
        if (l < 1) r.fail('empty chunk');
        chunkLengths.push(l);
        length += l;
      }
      ops.push({ from: 'dest', path, offset, length, chunkLengths, runSha256: hex(32) });
      total += length;
    } else if (tag === 1) {
      const length = r.varint();
      if (length < 1) r.fail('empty chunk');
      ops.push({ from: 'spool', length, sha256: hex(32) });
      total += length;
    } else {
      r.fail(`unknown op ${tag}`);
    }
  }
  r.end();
  if (total !== size) r.fail(`ops add up to ${total} bytes, not ${size}`);
  return { ...(params ? { params } : {}), size, sha256, ...(chunkListSha256 ? { chunkListSha256 } : {}), ops };
}

// ---------------------------------------------------------------------------------------
// Assembling

/** Where the assembler gets bytes from. Both may return a stream or a promise of one. */
export interface AssembleSources {
  /**
   * Bytes `[start, end)` of a destination file (`end` undefined: to the end of the file).
   * When ranged reads are off (see `AssembleOptions.rangedReads`) the assembler only ever
   * asks for `start` 0 and `end` undefined. May throw EOPNOTSUPP for a range: the assembler
   * then switches to reading from the start and skipping.
   */
  readDestRange(path: string, start: number, end: number | undefined, signal?: AbortSignal): Readable | Promise<Readable>;
  /** The bytes of a chunk carried on the spool. */
  readSpoolChunk(sha256: string, signal?: AbortSignal): Readable | Promise<Readable>;
}

export interface AssembleOptions {
  signal?: AbortSignal;
  /**
   * Whether the destination honours ranged reads (`capabilities.rangedReads`; default
   * true). Without them the assembler reads each base file from its start and skips to
   * the bytes it needs, keeping one base stream open while the recipe reads forward in
   * it; a recipe that goes back in a file (moved blocks) reopens it, which costs a re-read
   * up to that point. Recipes from `DeltaPlanner` of an edited file read mostly forward.
   */
  rangedReads?: boolean;
  /**
   * Computes the whole-file hash; default `syncHasher` (this thread, while the chunk
   * hashes of a large file are computed on a worker: see `chunkHasher`).
   */
  wholeFileHasher?: () => StreamHasher;
  /**
   * Computes the chunk hashes. Default: on a machine of more than two cores, for recipes
   * that take at least 32 MiB from base files, `workerChunkHasher` (shared with a worker
   * thread as far as it keeps up, while this thread hashes the whole file or the caller
   * does); else `syncChunkHasher` (this thread).
   */
  chunkHasher?: () => ChunkHasher;
  /**
   * For a recipe of format 1 (no chunk-list digest), false: do not hash the whole file
   * (the caller verifies it on the way, as store's verifying stream does); chunks and the
   * size are still checked. Default true. A recipe with a chunk-list digest is always
   * verified whole through its chunks, never hashed twice.
   */
  verifyWholeFile?: boolean;
  /**
   * Called for every chunk of the rebuilt file, in order, with its length and SHA-256
   * (hex), as it is verified: with `recipe.params`, that is the new file's signature.
   * Only complete when the assembly succeeded.
   */
  onChunk?: (length: number, sha256: string) => void;
}

export interface AssembleResult {
  size: number;
  /** `sha256:<hex>` of what was assembled: the recipe's (verified when `wholeFileVerified`). */
  hash: string;
  /**
   * True when the assembled bytes were proven to have `hash` (through the chunk list, or
   * by hashing the whole file); false only for a format 1 recipe with `verifyWholeFile: false`.
   */
  wholeFileVerified: boolean;
  /** Bytes read from destination files and from the spool. */
  destBytes: number;
  spoolBytes: number;
}

/**
 * The error for a base file whose bytes are not what its signature said (changed since
 * the snapshot, shortened, gone). Code EINTEGRITY; `path` names the base file. The store
 * leaves the target for a whole-file transfer on the next trip.
 */
export class BaseFileChangedError extends BitfogError {
  constructor(path: string, reason: string, cause?: unknown) {
    super('EINTEGRITY', `base file ${JSON.stringify(path)} ${reason}; it changed since its signature was taken`, {
      path,
      ...(cause === undefined ? {} : { cause }),
    });
    this.name = 'BaseFileChangedError';
  }
}

/** Reads a stream by byte counts. */
class ExactReader {
  private readonly it: AsyncIterator<unknown>;
  private left: Buffer | undefined;
  /** Bytes consumed from the stream's start. */
  position = 0;

  constructor(
    private readonly stream: Readable,
    startPosition: number,
  ) {
    this.it = stream[Symbol.asyncIterator]();
    this.position = startPosition;
  }

  private async next(): Promise<Buffer | undefined> {
    if (this.left) {
      const b = this.left;
      this.left = undefined;
      return b;
    }
    const r = await this.it.next();
    if (r.done) return undefined;
    const v = r.value;
    return Buffer.isBuffer(v) ? v : Buffer.from(v as Uint8Array);
  }

  /** The next bytes as the stream gives them, at most `max` (a view: no copy); undefined at its end. */
  async read(max: number): Promise<Buffer | undefined> {
    const b = await this.next();
    if (!b) return undefined;
    if (b.length > max) {
      this.left = b.subarray(max);
      this.position += max;
      return b.subarray(0, max);
    }
    this.position += b.length;
    return b;
  }

  /** Exactly `n` bytes as one buffer, or undefined if the stream ends first. */
  async take(n: number): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const b = await this.read(n - have);
      if (!b) return undefined;
      parts.push(b);
      have += b.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  /** Skips `n` bytes; false if the stream ends first. */
  async skip(n: number): Promise<boolean> {
    while (n > 0) {
      const b = await this.read(n);
      if (!b) return false;
      n -= b.length;
    }
    return true;
  }

  close(): void {
    this.stream.destroy();
  }
}

/**
 * Checks chunk digests as they come (in chunk order, possibly some way behind the bytes):
 * each dest run against its run digest once its last chunk is in, each spool chunk
 * against its name. Throws at the first that fails.
 */
class ChunkChecks {
  private readonly queue: Array<{ op: DestOp; next: number; run: Hash } | { op: SpoolOp }> = [];
  private head = 0;
  /** Digest of every checked chunk's digest, in order (`Recipe.chunkListSha256`). */
  private readonly chunkList = createHash('sha256');

  constructor(private readonly onChunk: ((length: number, sha256: string) => void) | undefined) {}

  /** The chunks of `op` come next. */
  expect(op: RecipeOp): void {
    this.queue.push(op.from === 'dest' ? { op, next: 0, run: createHash('sha256') } : { op });
  }

  /** Checks the next digests. */
  verify(digests: Buffer[]): void {
    for (const digest of digests) {
      this.chunkList.update(digest);
      const item = this.queue[this.head];
      if (!item) throw new BitfogError('EIO', 'delta assembler: more chunk digests than chunks');
      if (item.op.from === 'spool') {
        const hex = digest.toString('hex');
        if (hex !== item.op.sha256) throw new BitfogError('EINTEGRITY', `spool chunk ${item.op.sha256} is damaged (its content does not match its hash)`);
        this.onChunk?.(item.op.length, hex);
        this.advance();
        continue;
      }
      const { op, run } = item as { op: DestOp; next: number; run: Hash };
      run.update(digest);
      this.onChunk?.(op.chunkLengths[(item as { next: number }).next]!, digest.toString('hex'));
      if (++(item as { next: number }).next === op.chunkLengths.length) {
        if (run.digest('hex') !== op.runSha256) {
          throw new BaseFileChangedError(op.path, `does not hold the expected bytes at ${op.offset}–${op.offset + op.length}`);
        }
        this.advance();
      }
    }
  }

  /**
   * Throws unless every chunk expected was checked. Returns the chunk-list digest, ended
   * with `wholeFileHex` (compare with `Recipe.chunkListSha256`).
   */
  done(wholeFileHex: string): string {
    if (this.head !== this.queue.length) throw new BitfogError('EIO', 'delta assembler: chunks left unchecked');
    return this.chunkList.update(Buffer.from(wholeFileHex, 'hex')).digest('hex');
  }

  private advance(): void {
    this.head++;
    if (this.head >= 1024 && this.head * 2 >= this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    }
  }
}

/**
 * Follows a recipe and yields the rebuilt file's bytes, verified as described at the top
 * of this file. Throws `BaseFileChangedError` (EINTEGRITY, with `path`) when a
 * destination file does not hold what the recipe expects, EINTEGRITY without `path` when
 * a spool chunk is damaged or the whole file does not match, EABORTED; other read errors
 * pass through as BitfogErrors. The last piece is yielded only after all checks passed.
 *
 * How it goes fast (a large file is mostly bytes of its base, each hashed twice): bytes
 * pass through as the sources' buffers, never copied into new ones; the consumer's writes
 * overlap the next reads and hashes (READ_AHEAD); and where cores are to spare, chunk
 * digests are computed with a worker thread (`options.chunkHasher`, `workerChunkHasher`)
 * while this thread hashes the whole file (or, with `verifyWholeFile: false`, leaves its
 * core to the caller's own hash).
 */
export async function* assembleChunks(recipe: Recipe, sources: AssembleSources, options: AssembleOptions = {}): AsyncGenerator<Buffer, AssembleResult, undefined> {
  const { signal } = options;
  let ranged = options.rangedReads ?? true;
  const verifier = new RecipeVerifier(recipe, options);

  /** One base stream kept open for the read-and-skip fallback. */
  let cursor: { path: string; reader: ExactReader } | undefined;
  const closeCursor = () => {
    cursor?.reader.close();
    cursor = undefined;
  };

  const openDest = async (op: DestOp): Promise<{ reader: ExactReader; shared: boolean }> => {
    if (ranged) {
      try {
        const s = await sources.readDestRange(op.path, op.offset, op.offset + op.length, signal);
        return { reader: new ExactReader(s, op.offset), shared: false };
      } catch (err) {
        if (!isBitfogError(err, 'EOPNOTSUPP')) throw baseReadError(op.path, err);
        ranged = false;
      }
    }
    if (!cursor || cursor.path !== op.path || cursor.reader.position > op.offset) {
      closeCursor();
      try {
        cursor = { path: op.path, reader: new ExactReader(await sources.readDestRange(op.path, 0, undefined, signal), 0) };
      } catch (err) {
        throw baseReadError(op.path, err);
      }
    }
    let skipped: boolean;
    try {
      skipped = await cursor.reader.skip(op.offset - cursor.reader.position);
    } catch (err) {
      throw baseReadError(op.path, err);
    }
    if (!skipped) throw new BaseFileChangedError(op.path, 'is shorter than expected');
    return { reader: cursor.reader, shared: true };
  };

  // Output: buffers go out as the sources gave them (no copy); small ones (spool chunks,
  // ends of runs) are gathered into pieces of about OUTPUT_PIECE, since one write per
  // ~40 KiB chunk would cost a round trip to the file system (or the network) each. The
  // last piece is held back until everything has been verified.
  let held: Buffer | undefined;
  const ready: Buffer[] = [];
  const pending: Buffer[] = [];
  let pendingBytes = 0;
  const emit = (b: Buffer) => {
    if (held) ready.push(held);
    held = b;
  };
  const flushPending = () => {
    if (pendingBytes === 0) return;
    emit(pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes));
    pending.length = 0;
    pendingBytes = 0;
  };
  const output = (b: Buffer) => {
    if (b.length >= SMALL_PIECE) {
      flushPending();
      emit(b);
      return;
    }
    pending.push(b);
    pendingBytes += b.length;
    if (pendingBytes >= OUTPUT_PIECE) flushPending();
  };

  try {
    for (const op of recipe.ops) {
      throwIfAborted(signal);
      verifier.begin(op);
      if (op.from === 'dest') {
        const { reader, shared } = await openDest(op);
        try {
          let left = op.length;
          while (left > 0) {
            throwIfAborted(signal);
            let bytes: Buffer | undefined;
            try {
              bytes = await reader.read(left);
            } catch (err) {
              throw baseReadError(op.path, err);
            }
            if (!bytes) throw new BaseFileChangedError(op.path, 'is shorter than expected');
            left -= bytes.length;
            const wait = verifier.add(bytes);
            if (wait) await wait;
            verifier.check();
            output(bytes);
            while (ready.length > 0) yield ready.shift()!;
          }
        } finally {
          if (!shared) reader.close();
        }
      } else {
        const bytes = await readSpoolChunk(sources, op, signal);
        const wait = verifier.add(bytes);
        if (wait) await wait;
        verifier.check();
        output(bytes);
        while (ready.length > 0) yield ready.shift()!;
      }
    }
    const result = await verifier.finish();
    flushPending();
    while (ready.length > 0) yield ready.shift()!;
    if (held) yield held;
    return result;
  } finally {
    closeCursor();
    verifier.dispose();
  }
}

/** The bytes of a spool op, exactly its length. */
async function readSpoolChunk(sources: Pick<AssembleSources, 'readSpoolChunk'>, op: SpoolOp, signal: AbortSignal | undefined): Promise<Buffer> {
  let bytes: Buffer | undefined;
  let reader: ExactReader | undefined;
  try {
    reader = new ExactReader(await sources.readSpoolChunk(op.sha256, signal), 0);
    bytes = await reader.take(op.length);
  } catch (err) {
    throw toBitfogError(err, `reading spool chunk ${op.sha256}`);
  } finally {
    reader?.close();
  }
  if (!bytes) throw new BitfogError('EINTEGRITY', `spool chunk ${op.sha256} is shorter than ${op.length} bytes`);
  return bytes;
}

/**
 * The checks of an assembly, fed the rebuilt file's bytes in order, op by op: chunk hashes
 * against the recipe (ChunkChecks), the whole file through the chunk list or, for a
 * format 1 recipe, by hashing it. Bytes are hashed (or copied) before `add` returns, so
 * the caller may reuse its buffer then.
 */
class RecipeVerifier {
  private readonly whole: StreamHasher | undefined;
  private readonly chunks: ChunkHasher;
  private readonly checks: ChunkChecks;
  /** The current op's chunk lengths, the next chunk's index and what is left of the current one. */
  private chunkLengths: readonly number[] = [];
  private nextChunk = 0;
  private leftInChunk = 0;
  private size = 0;
  private destBytes = 0;
  private spoolBytes = 0;
  private fromDest = false;

  constructor(
    private readonly recipe: Recipe,
    options: AssembleOptions,
  ) {
    // A recipe with a chunk-list digest proves the whole file through its chunks.
    const verifyWhole = recipe.chunkListSha256 === undefined && (options.verifyWholeFile ?? true);
    this.whole = verifyWhole ? (options.wholeFileHasher?.() ?? syncHasher()) : undefined;
    this.chunks = (options.chunkHasher ?? defaultChunkHasher(recipe))();
    this.checks = new ChunkChecks(options.onChunk);
  }

  /** The bytes of `op` come next. */
  begin(op: RecipeOp): void {
    this.checks.expect(op);
    this.fromDest = op.from === 'dest';
    this.chunkLengths = op.from === 'dest' ? op.chunkLengths : [op.length];
    this.nextChunk = 0;
    this.leftInChunk = 0;
  }

  /** The next bytes of the current op (never past its end). A returned promise means "wait before adding more". */
  add(bytes: Uint8Array): void | Promise<void> {
    // Chunk hashes: the bytes cut at chunk boundaries.
    for (let at = 0; at < bytes.length; ) {
      if (this.leftInChunk === 0) {
        this.leftInChunk = this.chunkLengths[this.nextChunk++]!;
        this.chunks.begin(this.leftInChunk);
      }
      const n = Math.min(this.leftInChunk, bytes.length - at);
      this.chunks.update(n === bytes.length ? bytes : bytes.subarray(at, at + n));
      this.leftInChunk -= n;
      at += n;
    }
    this.size += bytes.length;
    if (this.fromDest) this.destBytes += bytes.length;
    else this.spoolBytes += bytes.length;
    return this.whole?.update(bytes);
  }

  /** Checks the chunk digests that are in; throws at the first that fails. */
  check(): void {
    this.checks.verify(this.chunks.take());
  }

  /** Checks everything left; throws unless the whole file is what the recipe says. */
  async finish(): Promise<AssembleResult> {
    const { recipe } = this;
    this.checks.verify(await this.chunks.finish());
    const chunkList = this.checks.done(recipe.sha256);
    if (recipe.chunkListSha256 !== undefined && chunkList !== recipe.chunkListSha256) {
      throw new BitfogError('EINTEGRITY', `assembled file does not match its source: its chunks do not make up sha256:${recipe.sha256} (the recipe is damaged)`);
    }
    const hex = this.whole ? await this.whole.digest() : recipe.sha256;
    if (this.size !== recipe.size || hex !== recipe.sha256) {
      throw new BitfogError('EINTEGRITY', `assembled file does not match its source (sha256:${hex}, ${this.size} bytes; expected sha256:${recipe.sha256}, ${recipe.size} bytes)`);
    }
    return {
      size: this.size,
      hash: `sha256:${hex}`,
      wholeFileVerified: this.whole !== undefined || recipe.chunkListSha256 !== undefined,
      destBytes: this.destBytes,
      spoolBytes: this.spoolBytes,
    };
  }

  dispose(): void {
    this.whole?.dispose();
    this.chunks.dispose();
  }
}

/** Sources for `assembleInto`: base files opened for positional reads (`Source.openFile`). */
export interface PositionalAssembleSources {
  /** A destination file opened for positional reads. */
  openDestFile(path: string, signal?: AbortSignal): Promise<OpenFile>;
  /** The bytes of a chunk carried on the spool. */
  readSpoolChunk(sha256: string, signal?: AbortSignal): Readable | Promise<Readable>;
}

/** Where `assembleInto` writes: positional writes from buffers it reuses once a write resolves. */
export interface AssembleTarget {
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<void>;
}

/**
 * Follows a recipe into `target` with positional reads and writes through a few reused
 * buffers: no memory per chunk, where the streaming assembler gets a new buffer for every
 * read (on the machines we measured, touching fresh memory cost more than the copies). A
 * buffer is filled from base files and spool chunks while the one before is hashed, and
 * written while the next ones fill. Same checks and errors as `assembleChunks`; `onBytes`
 * counts bytes written. On rejection `target` holds a partial or wrong file: the caller
 * writes to a temporary name and discards it.
 */
export async function assembleInto(
  recipe: Recipe,
  sources: PositionalAssembleSources,
  target: AssembleTarget,
  options: AssembleOptions & { onBytes?: (n: number) => void } = {},
): Promise<AssembleResult> {
  const { signal } = options;
  const verifier = new RecipeVerifier(recipe, options);
  const files = new Map<string, Promise<OpenFile>>();
  /** Base files open, for a read issued at once: the next buffer's read must be on its way before this thread starts hashing. */
  const opened = new Map<string, OpenFile>();
  const openBase = (path: string) => {
    let file = files.get(path);
    if (!file) {
      file = sources.openDestFile(path, signal).then(
        (f) => (opened.set(path, f), f),
        (err: unknown) => Promise.reject(baseReadError(path, err)),
      );
      file.catch(() => {}); // rejection handled where it is awaited
      files.set(path, file);
    }
    return file;
  };

  // The fill position in the recipe: op index and bytes of it already placed.
  let opIndex = 0;
  let opDone = 0;
  let spoolChunk: Buffer | undefined;
  /** Fills `buffer` with the file's next bytes; returns how many, and which op each stretch belongs to. */
  const fill = async (buffer: Buffer): Promise<{ length: number; stretches: Array<{ op: number; length: number }> }> => {
    const stretches: Array<{ op: number; length: number }> = [];
    let n = 0;
    while (n < buffer.length && opIndex < recipe.ops.length) {
      throwIfAborted(signal);
      const op = recipe.ops[opIndex]!;
      const want = Math.min(buffer.length - n, op.length - opDone);
      let got: number;
      if (op.from === 'dest') {
        const file = opened.get(op.path) ?? (await openBase(op.path));
        try {
          got = await file.read(buffer, n, want, op.offset + opDone);
        } catch (err) {
          throw baseReadError(op.path, err);
        }
        if (got === 0) throw new BaseFileChangedError(op.path, 'is shorter than expected');
      } else {
        if (opDone === 0) spoolChunk = await readSpoolChunk(sources, op, signal);
        got = spoolChunk!.copy(buffer, n, opDone, opDone + want);
      }
      const last = stretches[stretches.length - 1];
      if (last?.op === opIndex) last.length += got;
      else stretches.push({ op: opIndex, length: got });
      n += got;
      opDone += got;
      if (opDone === op.length) {
        opIndex++;
        opDone = 0;
        spoolChunk = undefined;
      }
    }
    return { length: n, stretches };
  };

  const buffers = Array.from({ length: POSITIONAL_BUFFERS }, () => Buffer.allocUnsafeSlow(POSITIONAL_PIECE));
  const writes: Array<Promise<void> | undefined> = [];
  let position = 0;
  let begun = -1;
  let filling: Promise<Awaited<ReturnType<typeof fill>>> | undefined;
  try {
    filling = fill(buffers[0]!);
    for (let i = 0; filling; i++) {
      const filled = await filling;
      const buffer = buffers[i % POSITIONAL_BUFFERS]!;
      filling = undefined;
      if (opIndex < recipe.ops.length) {
        // The next buffer fills (its reads on the thread pool) while this one is hashed.
        const next = (i + 1) % POSITIONAL_BUFFERS;
        await writes[next];
        filling = fill(buffers[next]!);
        filling.catch(() => {}); // rejection handled where it is awaited
      }
      let at = 0;
      for (const { op, length } of filled.stretches) {
        if (op !== begun) {
          verifier.begin(recipe.ops[op]!);
          begun = op;
        }
        const wait = verifier.add(buffer.subarray(at, at + length));
        if (wait) await wait;
        at += length;
      }
      verifier.check();
      const written = target.write(buffer, 0, filled.length, position).then(() => options.onBytes?.(filled.length));
      written.catch(() => {}); // rejection handled where it is awaited
      writes[i % POSITIONAL_BUFFERS] = written;
      position += filled.length;
    }
    await Promise.all(writes);
    return await verifier.finish();
  } finally {
    // Nothing may still be reading from the base files or writing from the buffers.
    await Promise.allSettled([...writes, filling]);
    verifier.dispose();
    for (const file of files.values()) await file.then((f) => f.close(), () => {});
  }
}

/** Buffers of `assembleInto`: one filling, one being hashed, the rest being written. */
const POSITIONAL_BUFFERS = 4;
/** Their size: large enough that a write costs little per byte, small enough to stay in the CPU's caches. */
const POSITIONAL_PIECE = 1 << 20;

/**
 * Size of the pieces small buffers are gathered into. Not less than the buffering of the
 * streams they go through (store's verifying stream, 1 MiB): a stream that holds several
 * pieces when read hands them on concatenated, a copy into a new buffer.
 */
const OUTPUT_PIECE = 1 << 20;
/** Buffers from this size go out as they are; smaller ones are gathered. */
const SMALL_PIECE = 64 * 1024;
/** From this many bytes of base files, chunks are hashed with a worker thread by default (where it pays). */
const WORKER_MIN_BYTES = 32 * 1024 * 1024;

/**
 * The default chunk hasher: with a worker thread only for a large recipe on a machine of
 * more than two cores. On two, the second core is already busy with the kernel's side of
 * the reads and writes (on libuv's threads); there, measured on 1 GiB, the worker's copies
 * cost more than its hashing saved.
 */
function defaultChunkHasher(recipe: Recipe): () => ChunkHasher {
  if (availableParallelism() <= 2) return syncChunkHasher;
  let destBytes = 0;
  for (const op of recipe.ops) if (op.from === 'dest') destBytes += op.length;
  return destBytes >= WORKER_MIN_BYTES ? workerChunkHasher : syncChunkHasher;
}

function baseReadError(path: string, err: unknown): unknown {
  if (isBitfogError(err, 'ENOENT', 'EISDIR', 'ENOTDIR')) return new BaseFileChangedError(path, 'is gone', err);
  return toBitfogError(err, `reading base file ${JSON.stringify(path)}`, path);
}

/** The rebuilt file as a Readable (for `Destination.write`); it errors instead of ending when a check fails. */
export function assembleReadable(recipe: Recipe, sources: AssembleSources, options: AssembleOptions = {}): Readable {
  return Readable.from(assembleChunks(recipe, sources, options), { objectMode: false, highWaterMark: READ_AHEAD });
}

/**
 * Bytes assembled ahead of the consumer, so that reading and hashing here overlap its
 * writes (which happen on other threads) instead of taking turns with them.
 */
const READ_AHEAD = 4 << 20;

/**
 * Follows a recipe into `out` and resolves with what was written. Rejects (see
 * `assembleChunks`) without ending `out` normally when a check fails; the caller writes
 * to a temporary name and discards it then.
 */
export async function assemble(recipe: Recipe, sources: AssembleSources, out: Writable, options: AssembleOptions = {}): Promise<AssembleResult> {
  const gen = assembleChunks(recipe, sources, options);
  let result: AssembleResult | undefined;
  async function* drain() {
    for (;;) {
      const r = await gen.next();
      if (r.done) {
        result = r.value;
        return;
      }
      yield r.value;
    }
  }
  await pipeline(Readable.from(drain(), { objectMode: false, highWaterMark: READ_AHEAD }), out, options.signal ? { signal: options.signal } : {});
  return result!;
}
