/**
 * Where the bytes of an upload come from: a stream (`write`) or a local file read straight
 * into the part buffers (`sendLocalFile`). Either way the uploader asks for the next bytes
 * into a buffer it owns, and after the declared size asks the source to prove that the
 * content ends there and hashes to what it should, before the last part goes out.
 */
import { createHash } from 'node:crypto';
import { constants as C, promises as fsp } from 'node:fs';
import type { Readable } from 'node:stream';
import { bitfogError, throwIfAborted, toBitfogError, type BitfogError } from '../../core/errors.ts';
import type { RelPath } from '../../core/paths.ts';
import { chunksOf } from '../../core/streams.ts';

export interface PartSource {
  /** Copies up to `length` (at least 1) of the next bytes into `buffer` at `offset`; resolves how many, 0 only at the end. */
  fill(buffer: Buffer, offset: number, length: number): Promise<number>;
  /**
   * Once the declared size has been filled: throws EINTEGRITY when more bytes follow, else
   * resolves the content's SHA-256 (hex) — computed here, or the expected one when the
   * content checked itself upstream.
   */
  finish(): Promise<string>;
  /** Stops the source early (a failure or an abort); `reason` goes to a stream. */
  close(reason?: Error): Promise<void>;
}

/**
 * A stream's bytes. `verifiedHex`: the stream checks itself against this hash and fails
 * instead of ending on a mismatch (WriteOptions.contentVerified), so it is not hashed again.
 */
export function streamPartSource(content: Readable, p: RelPath, verifiedHex: string | undefined): PartSource {
  const chunks = chunksOf(content)[Symbol.asyncIterator]();
  const hash = verifiedHex === undefined ? createHash('sha256') : undefined;
  let pending: Buffer | undefined;
  let at = 0;
  return {
    async fill(buffer, offset, length) {
      while (pending === undefined || at === pending.length) {
        const next = await chunks.next();
        if (next.done) return 0;
        pending = next.value;
        at = 0;
      }
      const n = Math.min(length, pending.length - at);
      pending.copy(buffer, offset, at, at + n);
      hash?.update(buffer.subarray(offset, offset + n));
      at += n;
      return n;
    },
    async finish() {
      // Drained to its end: a self-checking stream reports a wrong hash only there.
      const tooLong = () => sizeMismatch(p, 'the content has more bytes than declared');
      if (pending !== undefined && at < pending.length) throw tooLong();
      for (let next = await chunks.next(); !next.done; next = await chunks.next()) if (next.value.length > 0) throw tooLong();
      return hash ? hash.digest('hex') : verifiedHex!;
    },
    async close(reason) {
      content.destroy(reason);
      await chunks.return?.(undefined).catch(() => {});
    },
  };
}

/**
 * A local file (a spool blob) read with positional reads straight into the caller's
 * buffers, hashed as it is read: no stream, no memory of its own. `onBytes` sees every
 * byte in order.
 */
export async function filePartSource(
  localFile: string,
  p: RelPath,
  onBytes: ((bytes: Uint8Array) => void | Promise<void>) | undefined,
  signal: AbortSignal | undefined,
): Promise<PartSource> {
  let handle: fsp.FileHandle;
  try {
    handle = await fsp.open(localFile, C.O_RDONLY | C.O_NOFOLLOW);
  } catch (e) {
    throw toBitfogError(e, `cannot read ${JSON.stringify(localFile)}`);
  }
  const hash = createHash('sha256');
  let position = 0;
  let closed = false;
  const read = async (buffer: Buffer, offset: number, length: number): Promise<number> => {
    throwIfAborted(signal);
    if (closed) throw bitfogError('EIO', `reading ${JSON.stringify(localFile)} after it was closed`);
    try {
      const { bytesRead } = await handle.read(buffer, offset, length, position);
      position += bytesRead;
      return bytesRead;
    } catch (e) {
      throw toBitfogError(e, `cannot read ${JSON.stringify(localFile)}`);
    }
  };
  return {
    async fill(buffer, offset, length) {
      const n = await read(buffer, offset, length);
      if (n > 0) {
        const bytes = buffer.subarray(offset, offset + n);
        hash.update(bytes);
        const wait = onBytes?.(bytes);
        if (wait) await wait;
      }
      return n;
    },
    async finish() {
      const probe = Buffer.allocUnsafe(1);
      if ((await read(probe, 0, 1)) > 0) throw sizeMismatch(p, 'the file has more bytes than declared');
      return hash.digest('hex');
    },
    async close() {
      if (closed) return;
      closed = true;
      await handle.close().catch(() => {});
    },
  };
}

/** EINTEGRITY: `got` bytes where `expected` were declared, or what was wrong (a sentence). */
export function sizeMismatch(p: RelPath, got: number | string, expected?: number): BitfogError {
  const detail = typeof got === 'string' ? got : `got ${got} bytes, expected ${expected}`;
  return bitfogError('EINTEGRITY', `cannot write ${JSON.stringify(p)}: ${detail}`, { path: p });
}

export function hashMismatch(p: RelPath, got: string, expected: string): BitfogError {
  return bitfogError('EINTEGRITY', `cannot write ${JSON.stringify(p)}: content hashes to sha256:${got}, expected sha256:${expected}`, { path: p });
}
