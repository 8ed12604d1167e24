/**
 * Translation of AWS SDK and network errors into BitfogErrors, at the S3 backend's boundary.
 *
 * Messages name the bucket, the key's path below the root and the S3 error code, never
 * credentials (the server's `AWSAccessKeyId` echo stays in `cause`, which is not shown).
 */
import { BitfogError, bitfogError, type ErrorCode } from '../../core/errors.ts';

interface SdkErrorLike {
  name?: string;
  code?: string;
  Code?: string;
  message?: string;
  errors?: unknown[];
  cause?: unknown;
  $metadata?: { httpStatusCode?: number };
}

const BY_S3_CODE: Record<string, ErrorCode> = {
  NoSuchKey: 'ENOENT',
  NotFound: 'ENOENT',
  NoSuchUpload: 'ENOENT',
  InvalidAccessKeyId: 'EAUTH',
  SignatureDoesNotMatch: 'EAUTH',
  ExpiredToken: 'EAUTH',
  InvalidToken: 'EAUTH',
  TokenRefreshRequired: 'EAUTH',
  InvalidClientTokenId: 'EAUTH',
  CredentialsProviderError: 'EAUTH',
  RequestTimeTooSkewed: 'EAUTH',
  AccessDenied: 'EACCES',
  Forbidden: 'EACCES',
  AllAccessDisabled: 'EACCES',
  AccountProblem: 'EACCES',
  SlowDown: 'ETRANSIENT',
  Throttling: 'ETRANSIENT',
  ThrottlingException: 'ETRANSIENT',
  RequestTimeout: 'ETRANSIENT',
  RequestTimeoutException: 'ETRANSIENT',
  InternalError: 'ETRANSIENT',
  ServiceUnavailable: 'ETRANSIENT',
  TimeoutError: 'ETRANSIENT',
  EntityTooLarge: 'ENOSPC',
  QuotaExceeded: 'ENOSPC',
  InvalidBucketName: 'EBADURL',
  PermanentRedirect: 'EUSAGE',
  AuthorizationHeaderMalformed: 'EUSAGE',
  IllegalLocationConstraintException: 'EUSAGE',
};

const BY_ERRNO: Record<string, ErrorCode> = {
  ECONNREFUSED: 'EUNREACHABLE',
  ENOTFOUND: 'EUNREACHABLE',
  EHOSTUNREACH: 'EUNREACHABLE',
  ENETUNREACH: 'EUNREACHABLE',
  EAI_FAIL: 'EUNREACHABLE',
  ECONNRESET: 'ETRANSIENT',
  ETIMEDOUT: 'ETRANSIENT',
  EPIPE: 'ETRANSIENT',
  EAI_AGAIN: 'ETRANSIENT',
  ECONNABORTED: 'ETRANSIENT',
};

export interface S3ErrorContext {
  bucket: string;
  endpoint?: string;
  /** The entry path (below the root) the operation was about. */
  path?: string;
}

/** The S3 error code of an SDK error (`NoSuchKey`), or its name for errors without one. */
export function s3Code(err: unknown): string | undefined {
  const e = err as SdkErrorLike | null;
  return e?.Code ?? e?.name;
}

export function httpStatus(err: unknown): number | undefined {
  return (err as SdkErrorLike | null)?.$metadata?.httpStatusCode;
}

/** True for "this key does not exist" (GET's NoSuchKey, HEAD's bare 404). */
export function isNotFound(err: unknown): boolean {
  const code = s3Code(err);
  return code === 'NoSuchKey' || code === 'NotFound' || (httpStatus(err) === 404 && code !== 'NoSuchBucket');
}

/** Wraps any error from an S3 call as a BitfogError; `what` says what was being done. */
export function s3Error(err: unknown, what: string, ctx: S3ErrorContext): BitfogError {
  if (err instanceof BitfogError) return err;
  const e = (err ?? {}) as SdkErrorLike;
  const opts = { cause: err, ...(ctx.path === undefined ? {} : { path: ctx.path }) };
  const code = s3Code(err) ?? '';
  const status = httpStatus(err);
  const where = ctx.endpoint ?? 'the S3 endpoint';

  if (code === 'AbortError' || code === 'ABORT_ERR') return bitfogError('EABORTED', `${what}: aborted`, opts);
  if (code === 'NoSuchBucket') {
    return bitfogError('ENOENT', `${what}: bucket "${ctx.bucket}" does not exist at ${where}`, opts);
  }
  const errno = findErrno(err);
  if (errno && BY_ERRNO[errno]) {
    const mapped = BY_ERRNO[errno]!;
    const detail = mapped === 'EUNREACHABLE' ? `cannot reach ${where} (${errno})` : `connection problem with ${where} (${errno})`;
    return bitfogError(mapped, `${what}: ${detail}`, opts);
  }
  if (/region is missing/i.test(e.message ?? '')) {
    return bitfogError('EUSAGE', `${what}: no region configured: add ?region= to the URL or set AWS_REGION`, opts);
  }
  let mapped = BY_S3_CODE[code];
  if (!mapped && status !== undefined) {
    if (status === 401) mapped = 'EAUTH';
    else if (status === 403) mapped = 'EACCES';
    else if (status === 404) mapped = 'ENOENT';
    else if (status === 429 || status >= 500) mapped = 'ETRANSIENT';
  }
  switch (mapped) {
    case 'EAUTH':
      if (code === 'CredentialsProviderError') {
        return bitfogError('EAUTH', `${what}: no AWS credentials found (environment, shared credentials file or profile)`, opts);
      }
      if (code === 'RequestTimeTooSkewed') {
        return bitfogError('EAUTH', `${what}: ${where} refused the request because this machine's clock differs too much from its own`, opts);
      }
      return bitfogError('EAUTH', `${what}: ${where} refused the credentials (${code}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile`, opts);
    case 'EACCES':
      return bitfogError('EACCES', `${what}: access denied by ${where} (${code || status})`, opts);
    case 'EUSAGE':
      return bitfogError('EUSAGE', `${what}: ${code} — wrong region or endpoint for bucket "${ctx.bucket}"? (?region=, ?endpoint=)`, opts);
    case undefined:
      return bitfogError('EIO', `${what}: ${describe(e, code, status)}`, opts);
    default:
      return bitfogError(mapped, `${what}: ${describe(e, code, status)}`, opts);
  }
}

function describe(e: SdkErrorLike, code: string, status: number | undefined): string {
  const message = typeof e.message === 'string' && e.message !== '' && e.message !== code && e.message !== 'UnknownError' ? e.message : '';
  const parts = [code || 'error', status === undefined ? '' : `HTTP ${status}`, message].filter(Boolean);
  return parts.join(', ');
}

/** A Node errno code anywhere in the error, its cause chain, or an AggregateError's members. */
function findErrno(err: unknown, depth = 0): string | undefined {
  if (!err || typeof err !== 'object' || depth > 4) return undefined;
  const e = err as SdkErrorLike;
  if (typeof e.code === 'string' && BY_ERRNO[e.code]) return e.code;
  for (const inner of e.errors ?? []) {
    const found = findErrno(inner, depth + 1);
    if (found) return found;
  }
  return findErrno(e.cause, depth + 1);
}
