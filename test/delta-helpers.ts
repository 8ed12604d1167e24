/** Deterministic inputs and in-memory sources for the delta tests and bench. */
import { Readable } from 'node:stream';
import { type AssembleSources, type AssembleTarget, encodeRecipe, type PositionalAssembleSources, type Recipe } from '../src/core/delta/recipe.ts';
import { BitfogError } from '../src/core/errors.ts';

/** `n` pseudo-random bytes from xorshift32 seeded with `seed` (never changes: golden tests depend on it). */
export function xorshiftBytes(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= n) out.writeUInt32LE(x, i);
    else for (let j = 0; i + j < n; j++) out[i + j] = (x >>> (8 * j)) & 0xff;
  }
  return out;
}

/** Splits a buffer into pieces of pseudo-random sizes in [0, maxPiece] (zero-length pieces included). */
export function randomPieces(data: Buffer, seed: number, maxPiece: number): Buffer[] {
  const out: Buffer[] = [];
  let x = seed >>> 0 || 1;
  for (let at = 0; at < data.length; ) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    const n = x % (maxPiece + 1);
    out.push(data.subarray(at, at + n));
    at += n;
  }
  return out;
}

/** A readable of `data` in pieces of `piece` bytes. */
export function readableOf(data: Buffer, piece = 65536): Readable {
  const parts: Buffer[] = [];
  for (let at = 0; at < data.length; at += piece) parts.push(data.subarray(at, at + piece));
  return Readable.from(parts, { objectMode: false });
}

/**
 * Assembler sources over in-memory trees. `ranged: false` behaves like a backend without
 * ranged reads: a range throws EOPNOTSUPP. `reads` records every read for assertions.
 */
export function memorySources(dest: Map<string, Buffer>, spool: Map<string, Buffer>, options: { ranged?: boolean } = {}) {
  const reads: { path: string; start: number; end: number | undefined }[] = [];
  const sources: AssembleSources = {
    readDestRange(path, start, end) {
      const file = dest.get(path);
      if (!file) throw new BitfogError('ENOENT', `no such file ${path}`);
      if (options.ranged === false && (start !== 0 || end !== undefined)) throw new BitfogError('EOPNOTSUPP', 'no ranged reads');
      reads.push({ path, start, end });
      return readableOf(file.subarray(start, end));
    },
    readSpoolChunk(sha256) {
      const chunk = spool.get(sha256);
      if (!chunk) throw new BitfogError('ENOENT', `no spool chunk ${sha256}`);
      return readableOf(chunk, 10_000);
    },
  };
  return { sources, reads };
}

/**
 * `recipe` in the previous format (version 1: no chunk-list digest), as a spool written
 * by an older bitfog holds it.
 */
export function encodeRecipeV1(recipe: Recipe): Buffer {
  const v2 = encodeRecipe(recipe);
  const listAt = v2.indexOf(Buffer.from(recipe.sha256, 'hex')) + 32;
  const v1 = Buffer.concat([v2.subarray(0, listAt), v2.subarray(listAt + 32)]);
  v1[0] = 1;
  return v1;
}

/** `recipe` with two ops swapped: each op still holds what it says, the file they make does not. */
export function withOpsSwapped(recipe: Recipe, i: number, j: number): Recipe {
  const ops = [...recipe.ops];
  [ops[i], ops[j]] = [ops[j]!, ops[i]!];
  return { ...recipe, ops };
}

/**
 * Positional assembler sources over in-memory trees (`Source.openFile` semantics: a read
 * past the end returns 0). `open` counts the files opened and still open.
 */
export function memoryPositionalSources(dest: Map<string, Buffer>, spool: Map<string, Buffer>) {
  const open = { opened: 0, closed: 0 };
  const sources: PositionalAssembleSources = {
    async openDestFile(path) {
      const file = dest.get(path);
      if (!file) throw new BitfogError('ENOENT', `no such file ${path}`);
      open.opened++;
      let closed = false;
      return {
        size: file.length,
        async read(buffer, offset, length, position) {
          if (closed) throw new BitfogError('EIO', 'read after close');
          await new Promise((resolve) => setImmediate(resolve));
          return file.copy(buffer, offset, Math.min(position, file.length), Math.min(position + length, file.length));
        },
        async close() {
          if (!closed) open.closed++;
          closed = true;
        },
      };
    },
    readSpoolChunk(sha256) {
      const chunk = spool.get(sha256);
      if (!chunk) throw new BitfogError('ENOENT', `no spool chunk ${sha256}`);
      return readableOf(chunk, 10_000);
    },
  };
  return { sources, open };
}

/**
 * An assembly target in memory whose writes take a while and copy the caller's buffer only
 * when they complete: a caller that reused a buffer before its write resolved would be caught.
 * `failAt`: the write covering that position rejects with EIO.
 */
export function slowMemoryTarget(size: number, options: { failAt?: number } = {}) {
  const bytes = Buffer.alloc(size);
  const writes: Array<{ position: number; length: number }> = [];
  const target: AssembleTarget = {
    async write(buffer, offset, length, position) {
      writes.push({ position, length });
      await new Promise((resolve) => setTimeout(resolve, 1));
      if (options.failAt !== undefined && position <= options.failAt && options.failAt < position + length) throw new BitfogError('EIO', 'the disk broke');
      Buffer.from(buffer.buffer, buffer.byteOffset + offset, length).copy(bytes, position);
    },
  };
  return { target, bytes, writes };
}
