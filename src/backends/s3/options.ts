/**
 * `s3://` URLs and their options, parsed without loading the AWS SDK.
 *
 *   s3://BUCKET/PREFIX/?endpoint=http://127.0.0.1:7480&region=us-east-1&path_style=true
 *
 * Each option is taken from the first place that sets it:
 *
 *   endpoint    ?endpoint= > BITFOG_S3_ENDPOINT > AWS_ENDPOINT_URL_S3 > AWS_ENDPOINT_URL
 *               > AWS's own endpoint for the region
 *   region      ?region= > AWS_REGION > AWS_DEFAULT_REGION > the profile's `region` in the
 *               shared config file > `us-east-1` when a custom endpoint is set
 *   path_style  ?path_style= > BITFOG_S3_PATH_STYLE > true when a custom endpoint is set
 *               (Ceph, MinIO and most self-hosted servers), false for AWS itself
 *   profile     ?profile= > AWS_PROFILE > the SDK's default profile
 *
 * Tuning (query only): `part_size` (bytes, suffixes K/M/G = KiB/MiB/GiB; default 8M,
 * minimum 5M; also the single-PUT limit), `queue_size` (parts in flight per file, default
 * 4), `concurrency` (at most this many files in flight, default 16, at most 64; the core
 * moves up to 4 in a fetch, 8 in a store; also the HEADs of a listing at once),
 * `multipart_concurrency` (of those, files uploaded in parts at once, default 2; more suits
 * a distant endpoint),
 * `max_attempts` (per request, with
 * backoff, default 5), `cleanup_age` (seconds; on open for writing, multipart uploads under
 * the prefix older than this are aborted; default 86400, `off` disables), and
 * `list_metadata` (`head`, the default: one HEAD per object while listing, to return the
 * stored hash, mtime and mode; `none`: listing only).
 *
 * Credentials never come from the URL: a URL with user or password is refused.
 */
import { bitfogError } from '../../core/errors.ts';
import { relPathProblem } from '../../core/paths.ts';
import type { Capabilities } from '../../core/types.ts';

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last), its largest part, and its largest object. */
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PART_SIZE = 5 * 1024 * MiB;
export const MAX_PARTS = 10_000;
export const MAX_OBJECT_SIZE = 5 * 1024 * 1024 * MiB;
/** CopyObject's limit; larger objects cannot be renamed or have their metadata replaced. */
export const MAX_COPY_SIZE = 5 * 1024 * MiB;
/** The most files in flight the `concurrency` option allows (what the provider announces). */
export const MAX_CONCURRENCY = 64;

export interface S3Config {
  /** The URL as shown in messages: scheme, bucket, prefix and endpoint (no credentials, no tuning). */
  displayUrl: string;
  bucket: string;
  /** Key prefix of the root: empty, or ending in `/`. */
  prefix: string;
  endpoint?: string;
  region?: string;
  forcePathStyle: boolean;
  profile?: string;
  /** Credentials taken from `OpenOptions.env` when it carries keys; otherwise the SDK chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  partSize: number;
  queueSize: number;
  concurrency: number;
  /** Multipart uploads at once (the others wait their turn). */
  multipartConcurrency: number;
  maxAttempts: number;
  /** Abort stale multipart uploads older than this when opened for writing; undefined: never. */
  cleanupAgeMs?: number;
  listMetadata: 'head' | 'none';
}

/** What an `s3://` backend can do (the `none` listing mode keeps no mtimes, modes or hashes in listings). */
export function s3Capabilities(listMetadata: 'head' | 'none' = 'head', concurrency = MAX_CONCURRENCY): Capabilities {
  return {
    atomicRename: false,
    atomicWrite: true,
    symlinks: false,
    rangedReads: true,
    // The SHA-256 is in the object's metadata when bitfog wrote it, but not for objects
    // written by other tools: the core hashes those by reading (cached by ETag).
    serverSideHashes: false,
    // Stored as decimal seconds with nine digits; JavaScript numbers keep microseconds.
    mtimePrecisionMs: listMetadata === 'head' ? 0.001 : 0,
    modes: listMetadata === 'head',
    caseSensitive: true,
    emptyDirectories: false,
    maxConcurrency: concurrency,
  };
}

const KNOWN_OPTIONS = new Set([
  'endpoint',
  'region',
  'path_style',
  'profile',
  'part_size',
  'queue_size',
  'concurrency',
  'multipart_concurrency',
  'max_attempts',
  'cleanup_age',
  'list_metadata',
]);

/** Parses an `s3://` URL and the environment into a config. Throws EBADURL. */
export function parseS3Url(url: string, env: NodeJS.ProcessEnv = process.env): S3Config {
  let u: URL;
  try {
    u = new URL(url);
  } catch (e) {
    throw bitfogError('EBADURL', `invalid S3 URL ${JSON.stringify(url)}`, { cause: e });
  }
  if (u.protocol !== 's3:') throw bitfogError('EBADURL', `not an s3:// URL: ${JSON.stringify(url)}`);
  if (u.username || u.password) {
    throw bitfogError('EBADURL', 'credentials do not belong in an s3:// URL: use the environment, the shared credentials file or a profile');
  }
  if (u.port) throw bitfogError('EBADURL', 's3:// URLs name a bucket, not a host: put the server in ?endpoint=');
  if (u.hash) throw bitfogError('EBADURL', 'an s3:// URL cannot have a #fragment (write "#" in a prefix as %23)');
  const bucket = u.hostname;
  if (!/^[a-z0-9][a-z0-9.\-_]{1,254}$/i.test(bucket)) {
    throw bitfogError('EBADURL', `invalid bucket name ${JSON.stringify(bucket)} in ${JSON.stringify(url)}`);
  }
  let prefix: string;
  try {
    prefix = decodeURIComponent(u.pathname).replace(/^\/+/, '');
  } catch (e) {
    throw bitfogError('EBADURL', `invalid percent-encoding in ${JSON.stringify(url)}`, { cause: e });
  }
  if (prefix !== '') {
    const bare = prefix.replace(/\/+$/, '');
    const problem = relPathProblem(bare);
    if (problem) throw bitfogError('EBADURL', `invalid prefix ${JSON.stringify(prefix)}: ${problem}`);
    prefix = bare + '/';
  }

  const q = u.searchParams;
  for (const key of q.keys()) {
    if (!KNOWN_OPTIONS.has(key)) {
      throw bitfogError('EBADURL', `unknown s3:// option "${key}" (known: ${[...KNOWN_OPTIONS].join(', ')})`);
    }
  }
  const opt = (name: string): string | undefined => {
    const v = q.get(name);
    return v === null || v === '' ? undefined : v;
  };
  const fromEnv = (...names: string[]): string | undefined => {
    for (const n of names) if (env[n]) return env[n];
    return undefined;
  };

  const endpoint = opt('endpoint') ?? fromEnv('BITFOG_S3_ENDPOINT', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL');
  if (endpoint !== undefined) checkEndpoint(endpoint);
  const region = opt('region') ?? fromEnv('AWS_REGION', 'AWS_DEFAULT_REGION') ?? (endpoint ? 'us-east-1' : undefined);
  const pathStyleRaw = opt('path_style') ?? fromEnv('BITFOG_S3_PATH_STYLE');
  const forcePathStyle = pathStyleRaw === undefined ? endpoint !== undefined : parseBool('path_style', pathStyleRaw);
  const profile = opt('profile') ?? fromEnv('AWS_PROFILE');

  let credentials: S3Config['credentials'];
  // An explicit profile wins over keys in the environment, as with the AWS CLI's --profile.
  if (!opt('profile') && env.AWS_ACCESS_KEY_ID && env.AWS_SECRET_ACCESS_KEY) {
    credentials = {
      accessKeyId: env.AWS_ACCESS_KEY_ID,
      secretAccessKey: env.AWS_SECRET_ACCESS_KEY,
      ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}),
    };
  }

  const partSize = parseSize('part_size', opt('part_size') ?? '8M');
  if (partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE) {
    throw bitfogError('EBADURL', `part_size must be between 5M and 5G, not ${opt('part_size')}`);
  }
  const cleanupRaw = opt('cleanup_age') ?? '86400';
  const listMetadata = opt('list_metadata') ?? 'head';
  if (listMetadata !== 'head' && listMetadata !== 'none') {
    throw bitfogError('EBADURL', `list_metadata must be "head" or "none", not ${JSON.stringify(listMetadata)}`);
  }

  return {
    // Only what names the data: tuning options do not change it (hash caches are keyed by it).
    displayUrl: `s3://${bucket}/${encodePrefix(prefix)}${endpoint === undefined ? '' : `?endpoint=${endpoint.replace(/[&#%+\s]/g, (c) => encodeURIComponent(c))}`}`,
    bucket,
    prefix,
    ...(endpoint === undefined ? {} : { endpoint }),
    ...(region === undefined ? {} : { region }),
    forcePathStyle,
    ...(profile === undefined ? {} : { profile }),
    ...(credentials === undefined ? {} : { credentials }),
    partSize,
    queueSize: parseCount('queue_size', opt('queue_size') ?? '4', 64),
    concurrency: parseCount('concurrency', opt('concurrency') ?? '16', MAX_CONCURRENCY),
    multipartConcurrency: parseCount('multipart_concurrency', opt('multipart_concurrency') ?? '2', MAX_CONCURRENCY),
    maxAttempts: parseCount('max_attempts', opt('max_attempts') ?? '5', 20),
    ...(cleanupRaw === 'off' ? {} : { cleanupAgeMs: parseCount('cleanup_age', cleanupRaw, Number.MAX_SAFE_INTEGER, 0) * 1000 }),
    listMetadata,
  };
}

function checkEndpoint(endpoint: string): void {
  let e: URL;
  try {
    e = new URL(endpoint);
  } catch (err) {
    throw bitfogError('EBADURL', `invalid S3 endpoint ${JSON.stringify(endpoint)}`, { cause: err });
  }
  if (e.protocol !== 'http:' && e.protocol !== 'https:') {
    throw bitfogError('EBADURL', `S3 endpoint must be http:// or https://, not ${JSON.stringify(e.protocol)}`);
  }
  if (e.username || e.password) throw bitfogError('EBADURL', 'credentials do not belong in the S3 endpoint URL');
}

function encodePrefix(prefix: string): string {
  return prefix
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

function parseBool(name: string, raw: string): boolean {
  if (/^(1|true|yes|on)$/i.test(raw)) return true;
  if (/^(0|false|no|off)$/i.test(raw)) return false;
  throw bitfogError('EBADURL', `${name} must be true or false, not ${JSON.stringify(raw)}`);
}

function parseCount(name: string, raw: string, max: number, min = 1): number {
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < min || n > max) {
    throw bitfogError('EBADURL', `${name} must be a whole number from ${min} to ${max}, not ${JSON.stringify(raw)}`);
  }
  return n;
}

/** `16M` → bytes; K, M, G, T are powers of 1024. */
export function parseSize(name: string, raw: string): number {
  const m = /^(\d+)([KMGT]?)(i?B)?$/i.exec(raw);
  if (!m) throw bitfogError('EBADURL', `${name} must be a size like 16M, not ${JSON.stringify(raw)}`);
  const unit = { '': 1, K: 1024, M: MiB, G: 1024 * MiB, T: 1024 * 1024 * MiB }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(m[1]) * unit;
}

/**
 * The part size for an object of `size` bytes: the configured one, grown (to whole MiB)
 * so that the object fits in 10,000 parts. A 5 TiB object gets parts of 525 MiB.
 */
export function partSizeFor(size: number, configured: number): number {
  const needed = Math.ceil(size / MAX_PARTS / MiB) * MiB;
  return Math.max(configured, needed);
}

/**
 * mtimes are stored as decimal seconds with nine fraction digits ("1577934245.678000000"),
 * the format rclone uses for the same `mtime` metadata key, so each tool sees the other's
 * mtimes. Milliseconds are split before scaling so no precision is lost to floating point.
 */
export function formatMtime(mtimeMs: number): string {
  const wholeMs = Math.floor(mtimeMs);
  const fracNs = Math.min(999_999, Math.round((mtimeMs - wholeMs) * 1e6));
  const sec = Math.floor(wholeMs / 1000);
  const ns = (wholeMs - sec * 1000) * 1_000_000 + fracNs;
  return `${sec}.${String(ns).padStart(9, '0')}`;
}

/** Parses `formatMtime`'s output (and whole or fractional seconds in general); undefined if malformed. */
export function parseMtime(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const m = /^(-?\d+)(?:\.(\d{1,9}))?$/.exec(raw.trim());
  if (!m) return undefined;
  const sec = Number(m[1]);
  const ns = Number((m[2] ?? '').padEnd(9, '0'));
  return sec * 1000 + (sec < 0 ? -ns : ns) / 1e6;
}
