/**
 * Errors with stable codes.
 *
 * Every error that crosses a module boundary is a `BitfogError` with a `code` from
 * `ErrorCode`. Backends translate their native errors at their own boundary (an S3
 * `NoSuchKey` becomes `ENOENT`, an SFTP status 3 becomes `EACCES`) and keep the
 * original as `cause`. The CLI maps codes to exit codes and the server maps them to
 * HTTP statuses, each in one place; nothing else branches on message text.
 */

import { setTimeout as delay } from 'node:timers/promises';
export const ErrorCode = {
  /** The entry does not exist. */
  ENOENT: 'ENOENT',
  /** The entry exists and the operation would replace it. */
  EEXIST: 'EEXIST',
  /** The entry is a directory where a file was expected. */
  EISDIR: 'EISDIR',
  /** A path component is not a directory. */
  ENOTDIR: 'ENOTDIR',
  /** A directory that had to be empty is not. */
  ENOTEMPTY: 'ENOTEMPTY',
  /** Permission denied by the storage. */
  EACCES: 'EACCES',
  /** The storage (or this area of it) is read-only. */
  EROFS: 'EROFS',
  /** No space left (disk full, quota, HTTP 507). */
  ENOSPC: 'ENOSPC',
  /** Content did not match its expected hash or size. */
  EINTEGRITY: 'EINTEGRITY',
  /** Credentials missing or refused. */
  EAUTH: 'EAUTH',
  /** The remote host is not who it claims (unknown or changed host key, bad TLS certificate). */
  EHOSTKEY: 'EHOSTKEY',
  /** A temporary failure worth retrying (timeout, throttling, 5xx, reset connection). */
  ETRANSIENT: 'ETRANSIENT',
  /** The storage cannot be reached at all (connection refused, DNS failure). */
  EUNREACHABLE: 'EUNREACHABLE',
  /** The backend does not support this operation. */
  EOPNOTSUPP: 'EOPNOTSUPP',
  /** A path is not a valid portable relative path (`..`, absolute, NUL, empty segment). */
  EBADPATH: 'EBADPATH',
  /** A URL is malformed or names an unknown scheme. */
  EBADURL: 'EBADURL',
  /** A spool or manifest is damaged, of an unknown format, or belongs to another pairing. */
  EBADSPOOL: 'EBADSPOOL',
  /** Another process holds the spool's lock. */
  ELOCKED: 'ELOCKED',
  /** The operation was aborted through its AbortSignal. */
  EABORTED: 'EABORTED',
  /** A plugin failed to load or violated the plugin contract. */
  EPLUGIN: 'EPLUGIN',
  /** The user asked for something that cannot be done as asked (bad size, bad option value). */
  EUSAGE: 'EUSAGE',
  /** Anything else; always carries the original error as `cause`. */
  EIO: 'EIO',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * Marks BitfogErrors across copies of this module. A plugin installed with its own copy of
 * bitfog (a peer dependency resolved to a second install) throws errors built from that
 * copy's class; the brand, registered globally through Symbol.for, makes `instanceof` and
 * `isBitfogError` recognise them all the same.
 */
const BITFOG_ERROR_BRAND = Symbol.for('bitfog.BitfogError');

export class BitfogError extends Error {
  static [Symbol.hasInstance](value: unknown): boolean {
    return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BITFOG_ERROR_BRAND] === true;
  }

  readonly code: ErrorCode;
  /** The entry path the error is about, when there is one (portable relative form). */
  readonly path?: string;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; path?: string } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'BitfogError';
    Object.defineProperty(this, BITFOG_ERROR_BRAND, { value: true });
    this.code = code;
    if (options.path !== undefined) this.path = options.path;
  }
}

/** True when `err` is a BitfogError, optionally with one of the given codes. */
export function isBitfogError(err: unknown, ...codes: ErrorCode[]): err is BitfogError {
  return err instanceof BitfogError && (codes.length === 0 || codes.includes(err.code));
}

export function bitfogError(code: ErrorCode, message: string, options?: { cause?: unknown; path?: string }): BitfogError {
  return new BitfogError(code, message, options);
}

/** Node's own errno codes that map one to one onto ours. */
const ERRNO_TO_CODE: Record<string, ErrorCode> = {
  ENOENT: 'ENOENT',
  EEXIST: 'EEXIST',
  EISDIR: 'EISDIR',
  ENOTDIR: 'ENOTDIR',
  ENOTEMPTY: 'ENOTEMPTY',
  EACCES: 'EACCES',
  EPERM: 'EACCES',
  EROFS: 'EROFS',
  ENOSPC: 'ENOSPC',
  EDQUOT: 'ENOSPC',
  EFBIG: 'ENOSPC',
  ELOOP: 'ENOENT',
  ECONNREFUSED: 'EUNREACHABLE',
  ENOTFOUND: 'EUNREACHABLE',
  EHOSTUNREACH: 'EUNREACHABLE',
  ENETUNREACH: 'EUNREACHABLE',
  ECONNRESET: 'ETRANSIENT',
  ETIMEDOUT: 'ETRANSIENT',
  EPIPE: 'ETRANSIENT',
  EAI_AGAIN: 'ETRANSIENT',
  ABORT_ERR: 'EABORTED',
};

/**
 * Wraps any thrown value as a BitfogError. Node errno errors keep their meaning;
 * BitfogErrors pass through unchanged. `what` says what was being done, for the message.
 */
export function toBitfogError(err: unknown, what?: string, path?: string): BitfogError {
  if (err instanceof BitfogError) return err;
  const errno = (err as { code?: unknown } | null)?.code;
  const name = (err as { name?: unknown } | null)?.name;
  let code: ErrorCode = typeof errno === 'string' && ERRNO_TO_CODE[errno] ? ERRNO_TO_CODE[errno] : 'EIO';
  if (name === 'AbortError') code = 'EABORTED';
  const detail = describeNativeError(err);
  const message = what ? `${what}: ${detail}` : detail;
  return new BitfogError(code, message, { cause: err, ...(path === undefined ? {} : { path }) });
}

/** A short description of a native error that never includes an absolute local path. */
function describeNativeError(err: unknown): string {
  const e = err as { code?: unknown; syscall?: unknown; message?: unknown } | null;
  if (e && typeof e.code === 'string' && typeof e.syscall === 'string') {
    // Node's messages embed absolute paths ("ENOENT: no such file or directory, open '/x/y'");
    // the code and syscall say the same without leaking where things live.
    return `${e.code} (${e.syscall})`;
  }
  if (e && typeof e.message === 'string') return e.message;
  return String(err);
}

export function abortError(signal?: AbortSignal): BitfogError {
  const reason = signal?.reason;
  return new BitfogError('EABORTED', 'operation aborted', reason === undefined ? {} : { cause: reason });
}

/** Waits `ms` (between retries); rejects with EABORTED as soon as `signal` fires. */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : {});
  } catch (e) {
    if (signal?.aborted) throw abortError(signal);
    throw e;
  }
}

/** Throws EABORTED if the signal has fired. Call at the top of each unit of long work. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortError(signal);
}

/** A system call's error as it crosses threads (from a worker): what toBitfogError needs to describe it. */
export interface NativeErrorInfo {
  code?: string;
  syscall?: string;
  message: string;
}

/** The Error a NativeErrorInfo describes, shaped like Node's own (code, syscall). */
export function nativeError(info: NativeErrorInfo | undefined): Error {
  return Object.assign(new Error(info?.message ?? 'unknown error'), { code: info?.code, syscall: info?.syscall });
}
