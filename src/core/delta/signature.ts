/**
 * File signatures and the chunk index built from them.
 *
 * A signature lists a file's content-defined chunks (see chunker.ts): each chunk's length
 * and strong hash. A destination records one for each large file; the source, holding
 * the destination's signatures, can then tell which chunks of a changed file the
 * destination already has, anywhere in its tree (`ChunkIndex`).
 *
 * Binary format, version 1 (all integers unsigned LEB128 unless noted):
 *
 *   u8 version (1) · u8 normalization · u8 hashLength · minSize · avgSize · maxSize ·
 *   count · count × (length · hashLength bytes of the chunk's SHA-256)
 *
 * `hashLength` is how many leading bytes of each chunk's SHA-256 are kept: 16 by default
 * (`DEFAULT_HASH_LENGTH`). The prefix only serves to find candidate chunks; it never
 * decides what gets written: every chunk taken from the destination is hashed in full at
 * assembly and checked against the source's full SHA-256s, and so is the whole file. A
 * false match (2^-128 per pair by chance) would therefore fail verification, never
 * corrupt. 16 bytes halve the signature: at the smallest average chunk (32 KiB, measured
 * mean about 38 KiB) an entry is 16 + 3 bytes, about 0.05 % of the data.
 */
import { createHash } from 'node:crypto';
import { BitfogError } from '../errors.ts';
import { type ChunkParams, chunkParamsForSize, chunkStream, validateChunkParams } from './chunker.ts';
import { ByteReader, pushVarint } from './varint.ts';

export const SIGNATURE_VERSION = 1;

/** Bytes of each chunk's SHA-256 a signature keeps unless told otherwise. */
export const DEFAULT_HASH_LENGTH = 16;

/** What a signature keeps of a chunk's SHA-256 (lowercase hex): its first `hashLength` bytes. */
export function keptHash(sha256: string, hashLength: number): string {
  return sha256.slice(0, hashLength * 2);
}

/** One chunk as a signature records it: no offset (implied by the lengths before it). */
export interface SignatureChunk {
  length: number;
  /** Lowercase hex of the first `hashLength` bytes of the chunk's SHA-256. */
  sha256: string;
}

/** The signature of one file's content. */
export interface FileSignature {
  params: ChunkParams;
  /** Bytes of each chunk's SHA-256 kept (1–32; see DEFAULT_HASH_LENGTH). */
  hashLength: number;
  chunks: SignatureChunk[];
}

/** Sum of the chunk lengths: the size of the file the signature was taken from. */
export function signatureFileSize(signature: FileSignature): number {
  let size = 0;
  for (const c of signature.chunks) size += c.length;
  return size;
}

/** Serialises a signature (format above). Throws EUSAGE for invalid params or hashes. */
export function encodeSignature(signature: FileSignature): Buffer {
  const { params, hashLength, chunks } = signature;
  validateChunkParams(params);
  if (!Number.isInteger(hashLength) || hashLength < 1 || hashLength > 32) {
    throw new BitfogError('EUSAGE', `invalid signature hash length ${hashLength}`);
  }
  const head: number[] = [SIGNATURE_VERSION, params.normalization, hashLength];
  pushVarint(head, params.minSize);
  pushVarint(head, params.avgSize);
  pushVarint(head, params.maxSize);
  pushVarint(head, chunks.length);
  const out = Buffer.allocUnsafe(head.length + chunks.length * (hashLength + 8));
  out.set(head, 0);
  let at = head.length;
  const len: number[] = [];
  for (const c of chunks) {
    len.length = 0;
    pushVarint(len, c.length);
    out.set(len, at);
    at += len.length;
    if (c.sha256.length !== hashLength * 2) throw new BitfogError('EUSAGE', `signature hash ${c.sha256} is not ${hashLength} bytes`);
    at += out.write(c.sha256, at, 'hex');
  }
  return out.subarray(0, at);
}

/**
 * Parses a signature. Throws EBADSPOOL for damaged bytes, and for a format version this
 * build does not read, with a message that says so.
 */
export function decodeSignature(bytes: Uint8Array): FileSignature {
  const r = new ByteReader(bytes, 'file signature');
  const version = r.u8();
  if (version !== SIGNATURE_VERSION) {
    throw new BitfogError(
      'EBADSPOOL',
      `file signature has format version ${version}; this bitfog reads version ${SIGNATURE_VERSION} (written by a ${version > SIGNATURE_VERSION ? 'newer' : 'older'} bitfog)`,
    );
  }
  const normalization = r.u8();
  const hashLength = r.u8();
  if (hashLength < 1 || hashLength > 32) r.fail(`hash length ${hashLength}`);
  const params: ChunkParams = { normalization, minSize: r.varint(), avgSize: r.varint(), maxSize: r.varint() };
  try {
    validateChunkParams(params);
  } catch {
    r.fail('invalid chunk parameters');
  }
  const count = r.varint();
  if (count > r.remaining) r.fail('chunk count larger than the data');
  const chunks: SignatureChunk[] = new Array(count);
  for (let i = 0; i < count; i++) {
    const length = r.varint();
    if (length < 1 || length > params.maxSize) r.fail(`chunk length ${length}`);
    chunks[i] = { length, sha256: Buffer.from(r.bytes(hashLength)).toString('hex') };
  }
  r.end();
  return { params, hashLength, chunks };
}

/** What one read of a file yields: its signature, whole-file hash and size. */
export interface SignedFile {
  signature: FileSignature;
  /** `sha256:<hex>` of the whole content, in the form `Entry.hash` uses. */
  hash: string;
  size: number;
}

/**
 * Reads a file's content once and returns both its signature and its whole-file hash.
 * `expectedSize` (from a stat) picks the chunk params unless `params` are given.
 * Throws EABORTED; errors of the source pass through.
 */
export async function signContent(
  content: AsyncIterable<Uint8Array>,
  expectedSize: number,
  options: { params?: ChunkParams; hashLength?: number; signal?: AbortSignal } = {},
): Promise<SignedFile> {
  const params = options.params ?? chunkParamsForSize(expectedSize);
  const hashLength = options.hashLength ?? DEFAULT_HASH_LENGTH;
  const whole = createHash('sha256');
  const chunks: SignatureChunk[] = [];
  let size = 0;
  const onData = (data: Uint8Array) => {
    whole.update(data);
    size += data.length;
  };
  for await (const c of chunkStream(content, params, { signal: options.signal, onData })) {
    chunks.push({ length: c.length, sha256: keptHash(c.sha256, hashLength) });
  }
  return { signature: { params, hashLength, chunks }, hash: `sha256:${whole.digest('hex')}`, size };
}

/** Where the destination holds a chunk. */
export interface ChunkLocation {
  path: string;
  offset: number;
  length: number;
}

/** Alternatives kept per chunk hash: enough to continue runs through repeated content. */
const MAX_LOCATIONS = 4;

/**
 * Every chunk the destination holds, by hash: "hash → where". Built from the
 * signatures of a destination snapshot; the delta planner asks it for each chunk of a
 * new file. A chunk found in several files keeps up to four locations so the planner can
 * pick the one that continues the current run.
 */
export class ChunkIndex {
  /** Hash prefix length (hex chars) keys are cut to: the shortest among the signatures added. */
  private keyChars = 64;
  private readonly byHash = new Map<string, ChunkLocation | ChunkLocation[]>();
  private readonly paths = new Set<string>();

  /** Adds every chunk of `path`'s signature. Adding a path twice is a no-op. */
  add(path: string, signature: FileSignature): void {
    if (this.paths.has(path)) return;
    this.paths.add(path);
    const chars = signature.hashLength * 2;
    if (chars < this.keyChars) this.rekey(chars);
    let offset = 0;
    for (const c of signature.chunks) {
      this.put(c.sha256.slice(0, this.keyChars), { path, offset, length: c.length });
      offset += c.length;
    }
  }

  /** Number of distinct chunk hashes known. */
  get size(): number {
    return this.byHash.size;
  }

  has(path: string): boolean {
    return this.paths.has(path);
  }

  /**
   * Where a chunk with this full SHA-256 (hex) and length is held, or undefined.
   * Prefers, in order: the location at `continueAt` (the end of the run being built),
   * one in `preferPath`, the first added.
   */
  lookup(sha256: string, length: number, hint: { continueAt?: ChunkLocation; preferPath?: string } = {}): ChunkLocation | undefined {
    const found = this.byHash.get(sha256.slice(0, this.keyChars));
    if (found === undefined) return undefined;
    const all = Array.isArray(found) ? found : [found];
    const fits = all.filter((l) => l.length === length);
    if (fits.length === 0) return undefined;
    const at = hint.continueAt;
    if (at) {
      const next = fits.find((l) => l.path === at.path && l.offset === at.offset + at.length);
      if (next) return next;
    }
    if (hint.preferPath !== undefined) {
      const same = fits.find((l) => l.path === hint.preferPath);
      if (same) return same;
    }
    return fits[0];
  }

  private put(key: string, loc: ChunkLocation): void {
    const had = this.byHash.get(key);
    if (had === undefined) this.byHash.set(key, loc);
    else if (!Array.isArray(had)) this.byHash.set(key, [had, loc]);
    else if (had.length < MAX_LOCATIONS) had.push(loc);
  }

  private rekey(chars: number): void {
    this.keyChars = chars;
    const old = [...this.byHash];
    this.byHash.clear();
    for (const [key, locs] of old) for (const l of Array.isArray(locs) ? locs : [locs]) this.put(key.slice(0, chars), l);
  }
}
