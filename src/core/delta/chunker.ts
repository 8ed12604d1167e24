/**
 * FastCDC-style content-defined chunking.
 *
 * A file is cut where a rolling "gear" hash of the last 32 bytes has a chosen set of bits
 * all zero, so cut points depend on content, not on offsets: bytes inserted or removed
 * near the start of a file move the cut points after them by exactly the insertion, and
 * every chunk beyond the edit keeps its hash. That is what lets a changed, renamed or
 * appended-to file be rebuilt mostly from chunks the destination already holds.
 *
 * The algorithm is FastCDC (Xia et al., USENIX ATC 2016) with normalized chunking:
 *  - the first `minSize` bytes of a chunk are never cut (and never hashed: that skip is
 *    a large part of the speed);
 *  - up to `avgSize` a stricter mask (`log2(avgSize) + normalization` bits) must match,
 *    after it a looser one (`log2(avgSize) - normalization` bits), which pulls chunk sizes
 *    towards `avgSize`;
 *  - a chunk never exceeds `maxSize`.
 * The hash is `h = (h << 1) + GEAR[byte]` in 32-bit arithmetic, so bit k depends on the
 * last k+1 bytes; the masks take the top bits, which see the widest window. That scan
 * runs as WebAssembly (gear.wat): it is most of a signature's cost.
 *
 * Stability: the gear table, the mask rule and `chunkParamsForSize` are part of the
 * signature format (see signature.ts, SIGNATURE_VERSION). Changing any of them changes
 * every cut point and needs a new signature version. The golden tests pin them.
 */
import { createHash } from 'node:crypto';
import { BitfogError, throwIfAborted } from '../errors.ts';
import { GEAR_WASM_BASE64 } from './gear-wasm.ts';

/**
 * The gear table: 256 pseudo-random 32-bit words, generated once by `gearTableFromSeed`
 * with `GEAR_SEED` and committed here as literals so that cut points never depend on a
 * generator implementation. test/delta-chunker.test.ts regenerates and compares.
 */
export const GEAR_SEED = 0x62697466; // "bitf"

// prettier-ignore
const GEAR_WORDS = [
  0xbd94bff6, 0x793cb794, 0x3c00026c, 0x097434b3, 0xbf9f3ee2, 0xd1407a72, 0xcdd0f905, 0xc5e99e3f,
  0xa58dd988, 0xe19b79d9, 0x48ae5852, 0x5696cc2f, 0x7c41c70e, 0x294b7218, 0x1345881c, 0x297c48a1,
  0x4318b320, 0x7658f073, 0x4b4258c8, 0xa7cd6bd2, 0xa55eb626, 0xf54b1060, 0xdc675880, 0xc89a2c22,
  0x88af510e, 0xb3fd2b88, 0x1aa702dd, 0x18943b50, 0x2e825935, 0x9fc2ff14, 0xc5df8580, 0x1fa2d6ea,
  0xd2a5551e, 0xbcc333e2, 0x42656483, 0xfe87f421, 0x754d59db, 0x4b388039, 0x89ee02eb, 0x05554238,
  0xa7fef06a, 0x4990cfcc, 0xdb3d1faf, 0xdef7a884, 0x188c301c, 0x16f8cae5, 0x9578782b, 0x00f91173,
  0x88dee64c, 0xdee28ff0, 0x2ec32930, 0x5a88d03d, 0x52a6a363, 0xa8bed799, 0x54a31bd7, 0xec448e4f,
  0x4ac10135, 0x92870c42, 0x82a9d7db, 0x98323c2a, 0xa2731f10, 0x29743fb5, 0xfb102d51, 0xbc0adace,
  0x5bcd77f7, 0x6abcf9e5, 0xb9927b5a, 0xb685efe9, 0x813c503f, 0xf9b6d20e, 0x1b99b3e1, 0xf927f625,
  0x7322997f, 0x2c7d9dab, 0xfc35df66, 0x24b92168, 0x118ef55a, 0x16cfd053, 0x29697009, 0x2d7f2297,
  0xdb96d437, 0xd4d1bead, 0xfb2485ae, 0x2da0f427, 0xdc0fedf8, 0xca1a2130, 0x5ae45834, 0xba87c647,
  0xe8da62c9, 0x0aa1453b, 0x6299d32c, 0x9482b4e3, 0x3279307d, 0xf9b6e08e, 0x81cbf568, 0xcc0e049e,
  0xbe00f12e, 0x798a9d39, 0x8c6ea902, 0x2aa07b5e, 0xe39fc5aa, 0x13b083a5, 0x5c2a6432, 0x48e9f296,
  0xe1b9d9ff, 0xaebd543e, 0x28ccf45c, 0x21d8dbaa, 0xe29e07f8, 0xd0742cde, 0xf4443fd7, 0xf52797fa,
  0xf2dd1461, 0x8f0f24f0, 0x1ac6bebb, 0xb0a9903e, 0x6068e973, 0x402521f9, 0x72e62d7b, 0x51f05bd7,
  0x601b9dd4, 0xe85765ca, 0x637641f0, 0x7e6f6045, 0x8ea8f7d0, 0xbd3ab44f, 0x54b9c489, 0x36549f97,
  0x5b9710fe, 0x7fefffa3, 0xef6c9af6, 0x9f4dada1, 0x3cc2d1b1, 0x283dd737, 0xd8392320, 0xd4022211,
  0x794f3981, 0x9c64ae07, 0xd6eccc55, 0xd3b2384a, 0xbac26ff9, 0xc36d9f91, 0x1ff588af, 0xc81e7951,
  0xf6292e51, 0xa3953589, 0xa8b90d0c, 0xefeeffff, 0xd558d2b0, 0x3c7ac702, 0x67579e58, 0xccf25f78,
  0x4b350f59, 0x4aba92af, 0x9bc582b6, 0x0b505888, 0x47a661a2, 0xc8759035, 0xda974b11, 0xb700a726,
  0xbc14a757, 0xe644b8d1, 0xcbffbe34, 0x81a989da, 0x4422cfbc, 0x17bb4b28, 0xbc2d47ac, 0xbeb6d3b5,
  0x684e53eb, 0xe7d4ce90, 0x048e8c8b, 0xc9ca2ced, 0x087e709e, 0xd3834745, 0xa41aab71, 0xed7671c6,
  0x0ff929c3, 0x7b2b3a67, 0xd6920c78, 0x6395032d, 0x4055749e, 0x6d655d6d, 0x4f1385f6, 0x53aa253d,
  0x14cf4c91, 0x1404cb5d, 0xd5d14242, 0x4d5c86a2, 0x41526f5d, 0xc05edd7c, 0x54c1a099, 0x93ae4981,
  0xafcafac2, 0xeaf2b904, 0x8ff77476, 0x9a0c236b, 0x14e85895, 0xf5c02f70, 0x8a18de82, 0x491266c1,
  0x6cfe049e, 0x11a943f5, 0x4decda40, 0x5a3106a3, 0x64906bf2, 0x4ba06c4d, 0xabb633f2, 0x1a5d0993,
  0xd8ef9969, 0x7a4a89bb, 0xa7207384, 0x61d2bbfd, 0x61aac1c2, 0xe83f8b73, 0xe2481335, 0x6cf985bb,
  0xb510707c, 0x668fa709, 0x5107f033, 0xa3f4e1e4, 0xe2e7bcb5, 0x8c6dc9f4, 0x4c808a01, 0xd52676c8,
  0xaa7977cb, 0x6eb94522, 0x908cd1e7, 0x434f8272, 0xdc140c95, 0x5f45133b, 0x8e6c8867, 0x56d4c18f,
  0x10609cca, 0xa260b9a5, 0xc4ecef4a, 0x47ca7335, 0xa43f17e5, 0x2adb8a45, 0xf6bf84e1, 0xa11fe3b8,
  0x1104b346, 0x98dc97e4, 0xb8ce8f2b, 0x29663044, 0x39fa622a, 0x897291e5, 0xb446814f, 0x79606d24,
  0xbc29bda8, 0xb37a7692, 0xef894ee5, 0x8913fd1f, 0xc9100786, 0x6789dd1d, 0xa2b7e782, 0xa5bea6ba,
];

/** Regenerates the gear table from a seed with splitmix32. Only tests call this. */
export function gearTableFromSeed(seed: number): number[] {
  let state = seed | 0;
  const out: number[] = [];
  for (let i = 0; i < 256; i++) {
    state = (state + 0x9e3779b9) | 0;
    let t = state ^ (state >>> 16);
    t = Math.imul(t, 0x21f0aaad);
    t ^= t >>> 15;
    t = Math.imul(t, 0x735a2d97);
    out.push((t ^ (t >>> 15)) >>> 0);
  }
  return out;
}

/** The committed gear table, as unsigned words (for tests and documentation). */
export function gearTable(): readonly number[] {
  return GEAR_WORDS;
}

/** Sizes that decide where a file is cut. Two chunkings agree only if their params do. */
export interface ChunkParams {
  /** No chunk is shorter, except the last one of a file. At least 64 bytes. */
  minSize: number;
  /** The target average; a power of two. */
  avgSize: number;
  /** No chunk is longer. Also bounds the chunker's memory (about twice this). */
  maxSize: number;
  /** Normalization level (0–3): how many mask bits are added before, and removed after, `avgSize`. */
  normalization: number;
}

/** One chunk of a file: where it is and what it holds. */
export interface Chunk {
  /** Byte offset in the file. */
  offset: number;
  length: number;
  /** SHA-256 of the chunk's bytes, lowercase hex. */
  sha256: string;
  /** The bytes themselves, only when the chunker was asked for them (`withData`); a copy the caller owns. */
  data?: Buffer;
}

/** Smallest and largest average chunk size `chunkParamsForSize` picks, as powers of two. */
export const MIN_AVG_BITS = 15; // 32 KiB
export const MAX_AVG_BITS = 22; // 4 MiB

/**
 * The chunk sizes for a file of `fileSize` bytes.
 *
 *   avgSize = 2^clamp(floor(log2(fileSize) / 2), 15, 22)   (the largest power of two ≤ √size)
 *   minSize = avgSize / 4, maxSize = avgSize × 4, normalization 1
 *
 * The average grows with the square root of the file size (the rsync rule of thumb: a
 * signature of size/avg entries and an edit cost of about one chunk per change balance
 * there), but never below 32 KiB, so that a signature entry (a 16-byte hash plus a 3-byte
 * length, see signature.ts) costs at most 19 / 32768 ≈ 0.058 % of the data (0.05 % at the
 * measured mean chunk of about 38 KiB), and never above 4 MiB, so that the chunker's buffer
 * stays small (2 × maxSize = 32 MiB at most).
 *
 *   file size    < 4 GiB    < 16 GiB   < 64 GiB   < 256 GiB  < 1 TiB   ≥ 16 TiB
 *   avgSize      32 KiB     64 KiB     128 KiB    256 KiB    512 KiB   4 MiB
 *   signature    ≤ 0.058 %  ≤ 0.029 %  ≤ 0.015 %  ≤ 0.008 %  ≤ 0.004 %
 *
 * Normalization level 1 rather than FastCDC's usual 2: measured on 20 scattered 64 KiB
 * edits, level 2 carried a third more bytes (its chunk chains resynchronise later after an
 * edit), while level 1 still keeps sizes close to the average.
 */
export function chunkParamsForSize(fileSize: number): ChunkParams {
  const log2 = fileSize > 1 ? Math.log2(fileSize) : 0;
  const bits = Math.min(MAX_AVG_BITS, Math.max(MIN_AVG_BITS, Math.floor(log2 / 2)));
  const avgSize = 2 ** bits;
  return { minSize: avgSize / 4, avgSize, maxSize: avgSize * 4, normalization: 1 };
}

/** Throws EUSAGE unless `params` describe a chunking this module can do. */
export function validateChunkParams(params: ChunkParams): void {
  const { minSize, avgSize, maxSize, normalization } = params;
  const bits = Math.log2(avgSize);
  const ok =
    Number.isInteger(minSize) &&
    Number.isInteger(maxSize) &&
    Number.isInteger(bits) &&
    Number.isInteger(normalization) &&
    normalization >= 0 &&
    normalization <= 3 &&
    bits - normalization >= 1 &&
    bits + normalization <= 31 &&
    minSize >= 64 &&
    minSize < avgSize &&
    avgSize < maxSize &&
    maxSize <= 2 ** 28;
  if (!ok) throw new BitfogError('EUSAGE', `invalid chunk parameters ${JSON.stringify(params)}`);
}

/** A mask of the top `bits` bits of a 32-bit word, as an int32. */
function topBits(bits: number): number {
  return bits <= 0 ? 0 : (~0 << (32 - bits)) | 0;
}

/** Where gear.wat expects the chunker's buffer in its memory: after the gear table. */
const TABLE_BYTES = 256 * 4;
const WASM_PAGE_BYTES = 64 * 1024;

/** `scan` of gear.wat: the offset one past the cut, or `hardEnd`. */
type GearScan = (at: number, normalEnd: number, hardEnd: number, strictMask: number, looseMask: number) => number;

let gearModule: WebAssembly.Module | undefined;

/**
 * A buffer of `bytes` bytes in a WebAssembly memory of its own, with the gear scan over
 * it (gear.wat; compiled once per thread, instantiated per chunker).
 */
function gearScanner(bytes: number): { buffer: Buffer; scan: GearScan } {
  gearModule ??= new WebAssembly.Module(Buffer.from(GEAR_WASM_BASE64, 'base64'));
  const pages = Math.ceil((TABLE_BYTES + bytes) / WASM_PAGE_BYTES);
  const memory = new WebAssembly.Memory({ initial: pages, maximum: pages });
  const table = new DataView(memory.buffer, 0, TABLE_BYTES);
  GEAR_WORDS.forEach((word, i) => table.setUint32(i * 4, word, true));
  const instance = new WebAssembly.Instance(gearModule, { chunker: { memory } });
  return { buffer: Buffer.from(memory.buffer, TABLE_BYTES, bytes), scan: instance.exports.scan as GearScan };
}

/**
 * An incremental chunker: feed bytes with `push`, get the chunks that are complete, and
 * call `finish` once at the end for the rest. Holds at most about 2 × maxSize bytes,
 * whatever the sizes of the pieces pushed. The cut points depend only on the bytes and
 * the params, never on how the input was split into pieces.
 */
export class Chunker {
  readonly params: ChunkParams;
  private readonly maskS: number;
  private readonly maskL: number;
  private readonly buf: Buffer;
  private readonly scan: GearScan;
  /** Window of pending bytes in `buf`. */
  private start = 0;
  private end = 0;
  /** File offset of `buf[start]`. */
  private offset = 0;
  private finished = false;

  private readonly withData: boolean;

  /** The least `room` hands out. */
  private readonly minRoom: number;

  /**
   * `withData`: attach a copy of each chunk's bytes (to store new chunks in the same read).
   * `readBytes`: the least room `room()` offers for reading into (default `maxSize`); the
   * buffer grows by it.
   */
  constructor(params: ChunkParams, options: { withData?: boolean; readBytes?: number } = {}) {
    validateChunkParams(params);
    this.withData = options.withData ?? false;
    this.params = { ...params };
    const bits = Math.log2(params.avgSize);
    this.maskS = topBits(bits + params.normalization);
    this.maskL = topBits(bits - params.normalization);
    this.minRoom = Math.max(params.maxSize, options.readBytes ?? 0);
    // After a push or commit fewer than maxSize bytes are pending, so a compacted buffer
    // always has minRoom free.
    ({ buffer: this.buf, scan: this.scan } = gearScanner(params.maxSize + this.minRoom));
  }

  /** Bytes consumed so far. */
  get position(): number {
    return this.offset + (this.end - this.start);
  }

  /** Adds bytes; returns the chunks they completed, in file order. */
  push(data: Uint8Array): Chunk[] {
    if (this.finished) throw new BitfogError('EIO', 'Chunker.push after finish');
    const out: Chunk[] = [];
    const { maxSize } = this.params;
    let at = 0;
    while (at < data.length) {
      if (this.end === this.buf.length) this.compact();
      const n = Math.min(data.length - at, this.buf.length - this.end);
      this.buf.set(n === data.length ? data : data.subarray(at, at + n), this.end);
      this.end += n;
      at += n;
      while (this.end - this.start >= maxSize) out.push(this.cut(this.end));
    }
    return out;
  }

  /**
   * Free space after the pending bytes, at least `readBytes` (see the constructor) long, to
   * read the next bytes straight into; `commit` then takes them. Saves `push`'s copy when
   * the bytes come from a file (the sign worker reads into it). Valid until the next call.
   */
  room(): Buffer {
    if (this.finished) throw new BitfogError('EIO', 'Chunker.room after finish');
    if (this.buf.length - this.end < this.minRoom) this.compact();
    return this.buf.subarray(this.end);
  }

  /** Takes the first `n` bytes of the last `room()`; returns the chunks they completed, in file order. */
  commit(n: number): Chunk[] {
    if (this.finished) throw new BitfogError('EIO', 'Chunker.commit after finish');
    if (!Number.isInteger(n) || n < 0 || n > this.buf.length - this.end) throw new BitfogError('EIO', `Chunker.commit(${n}) beyond its room`);
    this.end += n;
    const out: Chunk[] = [];
    while (this.end - this.start >= this.params.maxSize) out.push(this.cut(this.end));
    return out;
  }

  /** Ends the input; returns the remaining chunks (none for an empty file). */
  finish(): Chunk[] {
    if (this.finished) return [];
    this.finished = true;
    const out: Chunk[] = [];
    while (this.end > this.start) out.push(this.cut(this.end));
    return out;
  }

  private cut(end: number): Chunk {
    const length = this.cutLength(end);
    const bytes = this.buf.subarray(this.start, this.start + length);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const chunk: Chunk = { offset: this.offset, length, sha256 };
    if (this.withData) chunk.data = Buffer.from(bytes);
    this.start += length;
    this.offset += length;
    return chunk;
  }

  /**
   * Where the chunk starting at `buf[start]` ends: its length. `end` is one past the last
   * available byte; unless the file ends there, at least `maxSize` bytes must be
   * available, since a cut is final.
   */
  private cutLength(end: number): number {
    const { minSize, avgSize, maxSize } = this.params;
    const start = this.start;
    let n = end - start;
    if (n <= minSize) return n;
    if (n > maxSize) n = maxSize;
    return this.scan(start + minSize, start + Math.min(n, avgSize), start + n, this.maskS, this.maskL) - start;
  }

  private compact(): void {
    this.buf.copyWithin(0, this.start, this.end);
    this.end -= this.start;
    this.start = 0;
  }
}

/**
 * Chunks a stream of bytes (a Readable or any async iterable of Uint8Array) without
 * holding it in memory. Yields chunks in file order. `onData`, when given, sees every
 * piece of input as it passes (to hash the whole file in the same read); `withData`
 * attaches each chunk's bytes (to copy new chunks to the spool in the same read).
 * Throws EABORTED when `signal` fires; errors of the source pass through.
 */
export async function* chunkStream(
  source: AsyncIterable<Uint8Array | string>,
  params: ChunkParams,
  options: { signal?: AbortSignal; onData?: (data: Uint8Array) => void; withData?: boolean } = {},
): AsyncGenerator<Chunk, void, undefined> {
  const chunker = new Chunker(params, { withData: options.withData ?? false });
  for await (const piece of source) {
    throwIfAborted(options.signal);
    const data = typeof piece === 'string' ? Buffer.from(piece) : piece;
    options.onData?.(data);
    yield* chunker.push(data);
  }
  throwIfAborted(options.signal);
  yield* chunker.finish();
}

/** All chunks of an in-memory buffer. For tests and small inputs. */
export function chunkBuffer(data: Uint8Array, params: ChunkParams): Chunk[] {
  const chunker = new Chunker(params);
  return [...chunker.push(data), ...chunker.finish()];
}
