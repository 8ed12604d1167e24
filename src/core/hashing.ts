/**
 * Content hashes: `sha256:<hex>`, computed while data streams past, never by buffering.
 */
import { createHash, type Hash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { Transform, type TransformCallback } from 'node:stream';
import { chunksOf, readPieces } from './streams.ts';
import type { OpenFile } from './types.ts';

export const HASH_ALGORITHM = 'sha256';
export const EMPTY_HASH = `sha256:${createHash('sha256').digest('hex')}`;

/** `sha256:<hex>` from a finished hash object. */
export function formatHash(hash: Hash): string {
  return `${HASH_ALGORITHM}:${hash.digest('hex')}`;
}

/** The hex part of a `sha256:<hex>` hash, or undefined for another algorithm or a malformed value. */
export function sha256Hex(hash: string | undefined): string | undefined {
  if (!hash) return undefined;
  const m = /^sha256:([0-9a-f]{64})$/.exec(hash);
  return m ? m[1] : undefined;
}

/**
 * A pass-through stream that hashes and counts what flows through it. Read `digest` and
 * `bytes` after it has ended.
 */
export class HashingStream extends Transform {
  readonly #hash = createHash(HASH_ALGORITHM);
  bytes = 0;
  #digest: string | undefined;

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    this.#digest = formatHash(this.#hash);
    cb();
  }

  /** `sha256:<hex>` of everything that passed; only valid after the stream ended. */
  get digest(): string {
    if (this.#digest === undefined) throw new Error('HashingStream: digest read before the stream ended');
    return this.#digest;
  }
}

/** Hashes a whole stream; resolves with the hash and byte count. */
export async function hashStream(stream: AsyncIterable<Buffer | Uint8Array>, onBytes?: (n: number) => void): Promise<{ hash: string; bytes: number }> {
  const h = createHash(HASH_ALGORITHM);
  let bytes = 0;
  for await (const chunk of chunksOf(stream as AsyncIterable<Buffer>)) {
    h.update(chunk);
    bytes += chunk.length;
    onBytes?.(chunk.length);
  }
  return { hash: formatHash(h), bytes };
}

/**
 * Hashes an open local file from its start through two reused buffers, reading the next
 * piece while the current one is hashed (`readPieces`). Resolves with the hash and the
 * byte count. Throws EABORTED when `signal` fires. (Large files are hashed on a worker
 * thread instead: `digestFile` in delta/signer.ts.)
 */
export async function hashFileHandle(
  handle: FileHandle,
  options: { onBytes?: (n: number) => void; signal?: AbortSignal } = {},
): Promise<{ hash: string; bytes: number }> {
  return await hashPieces(openFileOf(handle), options);
}

/** Like `hashFileHandle`, for any open file. */
export async function hashPieces(
  file: Pick<OpenFile, 'read'>,
  options: { onBytes?: (n: number) => void; signal?: AbortSignal } = {},
): Promise<{ hash: string; bytes: number }> {
  const h = createHash(HASH_ALGORITHM);
  const bytes = await readPieces(
    file,
    (piece) => {
      options.onBytes?.(piece.length);
      h.update(piece);
    },
    options.signal ? { signal: options.signal } : {},
  );
  return { hash: formatHash(h), bytes };
}

/** A local file handle as what `readPieces` and `digestFile` read: positional reads, and its descriptor. */
export function openFileOf(handle: FileHandle): Pick<OpenFile, 'read' | 'fd'> {
  return { fd: handle.fd, read: async (buffer, offset, length, position) => (await handle.read(buffer, offset, length, position)).bytesRead };
}
