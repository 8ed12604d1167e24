/**
 * The S3 backend: a key prefix in a bucket of any S3-compatible store (AWS, Ceph RGW,
 * MinIO, …), through the AWS SDK v3. Loaded only when an `s3://` URL is opened.
 *
 * Mapping. An entry `a/b/c.txt` is the object `PREFIX + "a/b/c.txt"`. Directories are not
 * stored: they are the prefixes of keys, so `mkdir` succeeds without a request and an empty
 * directory does not survive (`emptyDirectories: false`). Zero-byte "folder marker" keys
 * ending in `/` (made by consoles and other tools) are listed as directories. Keys that are
 * not portable paths (`a//b`, `../x`) are reported through `onSkip`, never mangled.
 *
 * Symlinks: S3 has none. `capabilities.symlinks` is false, so the core reports each symlink
 * of a source instead of storing it; `symlink` throws EOPNOTSUPP.
 *
 * Writes. A PUT is atomic: readers see the old object or the new one, never a part, so
 * the core writes straight to the final key (`atomicWrite`). Files up to the part size go
 * in one PutObject, buffered so the SDK can retry it; larger ones go through a multipart
 * upload whose parts grow with the file so 5 TiB fits in 10,000 parts, `queue_size` parts
 * in flight; memory per file ≈ (queue_size + 1) × part size. The SHA-256 (checked against
 * the streamed bytes: a mismatch aborts the upload with EINTEGRITY), the mtime and the mode
 * go into the object's metadata (`x-amz-meta-sha256`, `-mtime`, `-mode`), so a later
 * listing knows them without downloading. `setMetadata` rewrites them in place (CopyObject
 * onto itself) only when they differ from what `write` stored. A failed or aborted multipart upload is aborted on the server;
 * uploads left behind by a killed process are aborted by `cleanupMultipartUploads`, which
 * runs when the backend is opened for writing (uploads older than `cleanup_age`).
 *
 * Listing. ListObjectsV2 pages of 1,000 keys, streamed (the next page is fetched while
 * this one is yielded). Directory entries are derived from the sorted keys: all keys below
 * a prefix are contiguous, so remembering the previous key's ancestors deduplicates them
 * with O(depth) memory. ListObjectsV2 returns no user metadata, so with
 * `list_metadata=head` (the default) each object is HEADed (in parallel, bounded by
 * `concurrency`) to return its stored hash, mtime and mode — except objects this backend
 * wrote itself whose listed ETag and size match what it remembers. `version` is the ETag,
 * so the core's hash cache never re-reads an unchanged object that carries no hash.
 *
 * Opening checks the endpoint, credentials and bucket with one ListObjectsV2 of the
 * prefix, so the credentials need s3:ListBucket as well as Get/Put/DeleteObject (and
 * ListBucketMultipartUploads / AbortMultipartUpload for the cleanup, which is skipped
 * silently when refused).
 *
 * Retries: the SDK's standard strategy (exponential backoff with jitter) on throttling,
 * 5xx and network errors, `max_attempts` tries per request.
 */
import http from 'node:http';
import https from 'node:https';
import { setMaxListeners } from 'node:events';
import { PassThrough, Readable } from 'node:stream';
import pLimit, { type LimitFunction } from 'p-limit';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompleteMultipartUploadCommandOutput,
  type CopyObjectCommandOutput,
  type CreateMultipartUploadCommandOutput,
  type HeadObjectCommandOutput,
  type ListObjectsV2CommandOutput,
  type PutObjectCommandOutput,
  type UploadPartCommandOutput,
} from '@aws-sdk/client-s3';
import { abortError, bitfogError, throwIfAborted, type BitfogError } from '../../core/errors.ts';
import { ancestors, relPathProblem, type RelPath } from '../../core/paths.ts';
import type {
  Capabilities,
  Destination,
  Entry,
  ListOptions,
  Metadata,
  ReadOptions,
  SendLocalFileOptions,
  SignalOption,
  WriteOptions,
} from '../../core/types.ts';
import { isNotFound, s3Code, s3Error } from './errors.ts';
import {
  MAX_COPY_SIZE,
  MAX_OBJECT_SIZE,
  formatMtime,
  parseMtime,
  partSizeFor,
  s3Capabilities,
  type S3Config,
} from './options.ts';
import { filePartSource, hashMismatch, type PartSource, sizeMismatch, streamPartSource } from './part-source.ts';

const derivedSignals = new WeakMap<AbortSignal, AbortSignal>();

/** How many recent writes an open backend remembers (about 200 bytes each). */
const RECENT_WRITES = 100_000;

interface RecentWrite {
  etag?: string;
  size: number;
  /** Our `x-amz-meta-*` values as stored. */
  metadata: Record<string, string>;
}

/** Names of our `x-amz-meta-*` keys (the SDK lowercases and strips the prefix). */
const META_SHA256 = 'sha256';
const META_MTIME = 'mtime';
const META_MODE = 'mode';

const SHA256_RE = /^[0-9a-f]{64}$/;

export interface CleanupOptions extends SignalOption {
  /** Abort uploads initiated more than this many milliseconds ago (default: the URL's cleanup_age). */
  olderThanMs?: number;
}

export class S3Backend implements Destination {
  readonly url: string;
  readonly capabilities: Capabilities;
  readonly #config: S3Config;
  readonly #client: S3Client;
  readonly #writable: boolean;
  readonly #agent: http.Agent;
  #closed = false;
  /**
   * What this process wrote recently: key → ETag, size and the metadata stored. It answers
   * the `setMetadata` the core sends right after a write, and the listing after a store,
   * without a HEAD per object; an entry counts only while the listed ETag and size still
   * match. Bounded (oldest dropped first).
   */
  readonly #recent = new Map<string, RecentWrite>();
  /**
   * Part buffers of the configured part size, reused across uploads: first-touch page faults
   * on fresh 10 MiB allocations cost more than the copy itself on some machines. At most
   * 4 × (queue_size + 1) are kept, and none once idle for a few seconds or after close.
   */
  readonly #partPool: Buffer[] = [];
  #partPoolTimer: NodeJS.Timeout | undefined;
  /**
   * Admits `multipart_concurrency` multipart uploads at a time, in the order they came;
   * small files (one PUT each) are not held by it. A gateway that stores what it receives
   * may take large files faster a few at a time than all at once. Ceph RGW on two cores,
   * 2 GiB in 8 files, four parts each in flight: 27–31 s two at a time, 29–32 s four at a
   * time, and 35–40 s all eight at once (measured while earlier deletions were being
   * garbage-collected, which slows every run by a few seconds).
   */
  readonly #multipartSlots: LimitFunction;

  private constructor(config: S3Config, client: S3Client, agent: http.Agent, writable: boolean) {
    this.url = config.displayUrl;
    this.#config = config;
    this.#client = client;
    this.#agent = agent;
    this.#writable = writable;
    this.capabilities = s3Capabilities(config.listMetadata, config.concurrency);
    this.#multipartSlots = pLimit(config.multipartConcurrency);
  }

  /**
   * Connects and checks, with one ListObjectsV2, that the endpoint answers, the credentials
   * are accepted and the bucket exists. Opened for writing, it then aborts stale multipart
   * uploads under the prefix (best effort). Throws EAUTH, ENOENT (no such bucket),
   * EACCES, EUNREACHABLE, EUSAGE (no region).
   */
  static async open(config: S3Config, { write, signal }: { write: boolean; signal?: AbortSignal }): Promise<S3Backend> {
    // The SDK warns once per process that its releases from 2027 need Node 22. That is about
    // upgrading the SDK, not actionable by a bitfog user, and library code does not print.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const sockets = config.concurrency * config.queueSize + config.concurrency;
    const isHttps = !config.endpoint || config.endpoint.startsWith('https:');
    const agent = isHttps
      ? new https.Agent({ keepAlive: true, maxSockets: sockets })
      : new http.Agent({ keepAlive: true, maxSockets: sockets });
    const client = new S3Client({
      ...(config.endpoint === undefined ? {} : { endpoint: config.endpoint }),
      ...(config.region === undefined ? {} : { region: config.region }),
      ...(config.profile === undefined ? {} : { profile: config.profile }),
      ...(config.credentials === undefined ? {} : { credentials: config.credentials }),
      forcePathStyle: config.forcePathStyle,
      // Checksums only where S3 requires them: servers that predate the 2025 default
      // (Ceph Pacific, older MinIO) reject streamed bodies with trailing CRC32 checksums.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: config.maxAttempts,
      retryMode: 'standard',
      requestHandler: isHttps
        ? { httpsAgent: agent as https.Agent, connectionTimeout: 10_000, requestTimeout: 300_000 }
        : { httpAgent: agent, connectionTimeout: 10_000, requestTimeout: 300_000 },
    });
    const backend = new S3Backend(config, client, agent, write);
    try {
      await backend.#send(
        new ListObjectsV2Command({ Bucket: config.bucket, Prefix: config.prefix, MaxKeys: 1 }),
        `cannot open ${config.displayUrl}`,
        signal,
      );
      if (write && config.cleanupAgeMs !== undefined) {
        await backend.cleanupMultipartUploads({ olderThanMs: config.cleanupAgeMs, ...(signal ? { signal } : {}) }).catch((e) => {
          // Cleaning up is a courtesy: a user allowed to write but not to list uploads still writes.
          if ((e as BitfogError).code === 'EABORTED') throw e;
        });
      }
    } catch (e) {
      await backend.close();
      throw e;
    }
    return backend;
  }

  /** The bucket, for tests and tools. */
  get bucket(): string {
    return this.#config.bucket;
  }

  /** The key prefix of the root (empty or ending in `/`). */
  get prefix(): string {
    return this.#config.prefix;
  }

  /** The underlying SDK client, for tests and tools that need a request the interface lacks. */
  get client(): S3Client {
    return this.#client;
  }

  /**
   * The caller's signal as the SDK should see it: every request adds an abort listener, and a
   * listing HEADs `concurrency` objects at once, past Node's leak warning at 10 listeners.
   */
  #sdkSignal(signal: AbortSignal | undefined): { abortSignal?: AbortSignal } {
    if (!signal) return {};
    let derived = derivedSignals.get(signal);
    if (!derived) {
      derived = AbortSignal.any([signal]);
      setMaxListeners(0, derived);
      derivedSignals.set(signal, derived);
    }
    return { abortSignal: derived };
  }

  #key(p: RelPath): string {
    return this.#config.prefix + p;
  }

  #ctx(path?: string) {
    return {
      bucket: this.#config.bucket,
      ...(this.#config.endpoint === undefined ? {} : { endpoint: this.#config.endpoint }),
      ...(path === undefined ? {} : { path }),
    };
  }

  /** Sends a command, translating every failure into a BitfogError. */
  async #send<T>(command: { input: unknown } & object, what: string, signal?: AbortSignal, path?: string): Promise<T> {
    throwIfAborted(signal);
    try {
      return (await this.#client.send(command as never, this.#sdkSignal(signal))) as T;
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      throw s3Error(e, what, this.#ctx(path));
    }
  }

  async #head(p: RelPath, signal?: AbortSignal): Promise<HeadObjectCommandOutput | undefined> {
    try {
      return await this.#client.send(
        new HeadObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(p) }),
        this.#sdkSignal(signal),
      );
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (isNotFound(e)) return undefined;
      throw s3Error(e, `cannot stat ${JSON.stringify(p)}`, this.#ctx(p));
    }
  }

  /** True when at least one key lies below `p/` (an implied directory). */
  async #isPrefix(p: RelPath, signal?: AbortSignal): Promise<boolean> {
    const res = await this.#send<ListObjectsV2CommandOutput>(
      new ListObjectsV2Command({ Bucket: this.#config.bucket, Prefix: this.#key(p) + '/', MaxKeys: 1 }),
      `cannot stat ${JSON.stringify(p)}`,
      signal,
      p,
    );
    return (res.KeyCount ?? res.Contents?.length ?? 0) > 0;
  }

  /** ENOENT, or EISDIR when `p` is a prefix of other keys. */
  async #missing(p: RelPath, what: string, signal?: AbortSignal): Promise<BitfogError> {
    if (await this.#isPrefix(p, signal)) return bitfogError('EISDIR', `${what}: ${JSON.stringify(p)} is a directory`, { path: p });
    return bitfogError('ENOENT', `${what}: ${JSON.stringify(p)} does not exist in ${this.url}`, { path: p });
  }

  #entryFromHead(p: RelPath, head: HeadObjectCommandOutput): Entry {
    const meta = head.Metadata ?? {};
    const entry: Entry = { path: p, kind: 'file', size: head.ContentLength ?? 0 };
    applyStoredMetadata(entry, meta, head.LastModified);
    if (head.ETag) entry.version = head.ETag;
    if (head.LastModified) entry.changedAtMs = head.LastModified.getTime();
    return entry;
  }

  async *list(options: ListOptions = {}): AsyncIterable<Entry> {
    const { signal, onSkip } = options;
    const prefix = this.#config.prefix;
    const fetchPage = (token: string | undefined) =>
      this.#send<ListObjectsV2CommandOutput>(
        new ListObjectsV2Command({
          Bucket: this.#config.bucket,
          Prefix: prefix,
          // URL-encoded keys survive XML intact (newlines, tabs, control characters).
          EncodingType: 'url',
          ...(token === undefined ? {} : { ContinuationToken: token }),
        }),
        `cannot list ${this.url}`,
        signal,
      );
    let sawKey = false;
    let previousDirs: string[] = [];
    let page: Promise<ListObjectsV2CommandOutput> | undefined = fetchPage(undefined);
    while (page) {
      const res: ListObjectsV2CommandOutput = await page;
      page = res.IsTruncated && res.NextContinuationToken ? fetchPage(res.NextContinuationToken) : undefined;
      // Keep a rejected prefetch from surfacing as an unhandled rejection if we stop early.
      page?.catch(() => {});
      const files: Entry[] = [];
      for (const obj of res.Contents ?? []) {
        throwIfAborted(signal);
        if (obj.Key === undefined) continue;
        const key = decodeListedKey(obj.Key);
        sawKey = true;
        if (!key.startsWith(prefix)) continue;
        const rel = key.slice(prefix.length);
        if (rel === '') continue; // a folder marker for the root itself
        const isMarker = rel.endsWith('/');
        const relPath = isMarker ? rel.slice(0, -1) : rel;
        const problem = relPathProblem(relPath);
        if (problem) {
          onSkip?.(rel, `key is not a portable path (${problem})`);
          continue;
        }
        const dirs = isMarker ? [...ancestors(relPath as RelPath), relPath] : ancestors(relPath as RelPath);
        for (let i = 0; i < dirs.length; i++) {
          // Keys below a prefix are contiguous in the sorted listing: a directory differing
          // from the previous key's at the same depth has not been yielded yet.
          if (previousDirs[i] !== dirs[i]) yield { path: dirs[i] as RelPath, kind: 'directory', size: 0 };
        }
        previousDirs = dirs;
        if (isMarker) continue;
        const entry: Entry = { path: relPath as RelPath, kind: 'file', size: obj.Size ?? 0 };
        if (obj.LastModified) {
          entry.mtimeMs = obj.LastModified.getTime();
          entry.changedAtMs = entry.mtimeMs;
        }
        if (obj.ETag) entry.version = obj.ETag;
        files.push(entry);
      }
      if (this.#config.listMetadata === 'head') {
        yield* this.#withStoredMetadata(files, signal);
      } else {
        for (const f of files) {
          delete f.mtimeMs; // LastModified is the upload time, not the file's mtime
          yield f;
        }
      }
    }
    if (!sawKey && prefix !== '' && !this.#writable) {
      throw bitfogError('ENOENT', `${this.url} does not exist (no objects under the prefix)`);
    }
  }

  /** HEADs each listed object (bounded parallelism) to add the stored hash, mtime and mode. */
  async *#withStoredMetadata(files: Entry[], signal?: AbortSignal): AsyncIterable<Entry> {
    const limit = this.#config.concurrency;
    let next = 0;
    const done: Array<Entry | undefined> = new Array(files.length);
    const worker = async () => {
      while (next < files.length) {
        const i = next++;
        const listed = files[i]!;
        const recent = this.#recent.get(this.#key(listed.path));
        if (recent && recent.etag === listed.version && recent.size === listed.size) {
          const entry: Entry = { ...listed };
          applyStoredMetadata(entry, recent.metadata, undefined);
          done[i] = entry;
          continue;
        }
        const head = await this.#head(listed.path, signal);
        // Gone since the listing: not part of this listing, like a file deleted mid-walk.
        done[i] = head ? this.#entryFromHead(listed.path, head) : undefined;
      }
    };
    await Promise.all(Array.from({ length: Math.min(limit, files.length) }, worker));
    for (const e of done) if (e) yield e;
  }

  async stat(p: RelPath, options: SignalOption = {}): Promise<Entry> {
    if (p === '') return { path: p, kind: 'directory', size: 0 };
    const head = await this.#head(p, options.signal);
    if (head) return this.#entryFromHead(p, head);
    if (await this.#isPrefix(p, options.signal)) return { path: p, kind: 'directory', size: 0 };
    throw bitfogError('ENOENT', `cannot stat ${JSON.stringify(p)}: it does not exist in ${this.url}`, { path: p });
  }

  async read(p: RelPath, options: ReadOptions = {}): Promise<Readable> {
    const { signal } = options;
    const start = options.start ?? 0;
    const what = `cannot read ${JSON.stringify(p)}`;
    if (options.end !== undefined && options.end <= start) {
      if (!(await this.#head(p, signal))) throw await this.#missing(p, what, signal);
      return Readable.from([]);
    }
    const range = start > 0 || options.end !== undefined ? `bytes=${start}-${options.end === undefined ? '' : options.end - 1}` : undefined;
    let body: Readable;
    try {
      const res = await this.#client.send(
        new GetObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(p), ...(range ? { Range: range } : {}) }),
        this.#sdkSignal(signal),
      );
      body = res.Body as Readable;
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (isNotFound(e)) throw await this.#missing(p, what, signal);
      // A range starting at or past the end: nothing to read, as with a local file.
      if (s3Code(e) === 'InvalidRange') return Readable.from([]);
      throw s3Error(e, what, this.#ctx(p));
    }
    // Network errors in the middle of the body become BitfogErrors too.
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    const onAbort = () => {
      const err = abortError(signal);
      body.destroy(err);
      out.destroy(err);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    body.on('error', (e) => out.destroy(s3Error(e, what, this.#ctx(p))));
    out.on('close', () => {
      signal?.removeEventListener('abort', onAbort);
      if (!body.destroyed) body.destroy();
    });
    body.pipe(out);
    return out;
  }

  async readlink(p: RelPath, options: SignalOption = {}): Promise<string> {
    const what = `cannot read symlink ${JSON.stringify(p)}`;
    if (await this.#head(p, options.signal)) throw bitfogError('EIO', `${what}: not a symlink (S3 stores no symlinks)`, { path: p });
    throw await this.#missing(p, what, options.signal);
  }

  async write(p: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    const expectedHex = options.hash?.startsWith('sha256:') ? options.hash.slice(7) : undefined;
    // A stream that checks itself fails before its end, so the upload is never completed
    // with wrong bytes even without hashing them here once more.
    const verifiedHex = options.contentVerified === true ? expectedHex : undefined;
    await this.#upload(p, streamPartSource(content, p, verifiedHex), expectedHex, options);
  }

  /** From the spool blob straight into the part buffers, hashed as it is read (see Destination.sendLocalFile). */
  async sendLocalFile(p: RelPath, localFile: string, options: SendLocalFileOptions): Promise<void> {
    const expectedHex = options.hash.startsWith('sha256:') ? options.hash.slice(7) : undefined;
    if (expectedHex === undefined) throw bitfogError('EOPNOTSUPP', `sendLocalFile needs a sha256 hash, not ${options.hash}`, { path: p });
    throwIfAborted(options.signal);
    await this.#upload(p, await filePartSource(localFile, p, options.onBytes, options.signal), expectedHex, options);
  }

  /** One object from `source`: a single PUT up to one part's size, else a multipart upload. */
  async #upload(p: RelPath, source: PartSource, expectedHex: string | undefined, options: WriteOptions): Promise<void> {
    const { signal, size } = options;
    const what = `cannot write ${JSON.stringify(p)}`;
    const onAbort = () => void source.close(abortError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      throwIfAborted(signal);
      if (size > MAX_OBJECT_SIZE) {
        throw bitfogError('ENOSPC', `${what}: ${size} bytes is over S3's 5 TiB object limit`, { path: p });
      }
      const metadata: Record<string, string> = {};
      if (options.mode !== undefined) metadata[META_MODE] = (options.mode & 0o7777).toString(8);
      if (options.mtimeMs !== undefined) metadata[META_MTIME] = formatMtime(options.mtimeMs);
      this.#recent.delete(this.#key(p));
      let etag: string | undefined;
      if (size <= this.#config.partSize) {
        etag = await this.#putSmall(p, source, size, expectedHex, metadata, signal);
      } else {
        if (expectedHex) metadata[META_SHA256] = expectedHex;
        // Some servers (Ceph RGW) return no ETag when completing a multipart upload.
        etag = await this.#multipartSlots(() => this.#putMultipart(p, source, size, expectedHex, metadata, signal));
      }
      this.#remember(this.#key(p), { size, metadata, ...(etag ? { etag } : {}) });
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      throw s3Error(e, what, this.#ctx(p));
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Always: a stream read only in part is destroyed, a file is closed.
      await source.close();
    }
  }

  #remember(key: string, write: RecentWrite): void {
    this.#recent.delete(key);
    if (this.#recent.size >= RECENT_WRITES) this.#recent.delete(this.#recent.keys().next().value!);
    this.#recent.set(key, write);
  }

  /** One PutObject from a buffer of at most one part, so the SDK can resend it on retry. */
  async #putSmall(p: RelPath, source: PartSource, size: number, expectedHex: string | undefined, metadata: Record<string, string>, signal?: AbortSignal): Promise<string | undefined> {
    const buf = Buffer.allocUnsafe(size);
    for (let n = 0; n < size; ) {
      throwIfAborted(signal);
      const got = await source.fill(buf, n, size - n);
      if (got === 0) throw sizeMismatch(p, n, size);
      n += got;
    }
    const hex = await source.finish();
    if (expectedHex && hex !== expectedHex) throw hashMismatch(p, hex, expectedHex);
    metadata[META_SHA256] = hex;
    const res = await this.#send<PutObjectCommandOutput>(
      new PutObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(p), Body: buf, ContentLength: size, Metadata: metadata }),
      `cannot write ${JSON.stringify(p)}`,
      signal,
      p,
    );
    return res.ETag;
  }

  /**
   * A multipart upload, parts sent `queue_size` at a time. The source fills part buffers
   * that are reused (at most queue_size + 1 per upload), and proves the content's size and
   * hash before the last part is sent, so a wrong upload is never completed. On any failure
   * or abort the upload is aborted on the server before this returns.
   *
   * Why not lib-storage's Upload: its chunker concatenates every part into a freshly
   * allocated buffer (most of the CPU time of a large store, in profiles), and its abort()
   * returns before the server-side abort has happened.
   */
  async #putMultipart(p: RelPath, source: PartSource, size: number, expectedHex: string | undefined, metadata: Record<string, string>, signal?: AbortSignal): Promise<string | undefined> {
    const what = `cannot write ${JSON.stringify(p)}`;
    const bucket = this.#config.bucket;
    const key = this.#key(p);
    const partSize = partSizeFor(size, this.#config.partSize);
    const created = await this.#send<CreateMultipartUploadCommandOutput>(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: key, Metadata: metadata }),
      what,
      signal,
      p,
    );
    const uploadId = created.UploadId!;
    const free: Buffer[] = [];
    const take = () => free.pop() ?? (partSize === this.#config.partSize ? this.#partPool.pop() : undefined) ?? Buffer.allocUnsafeSlow(partSize);
    const inFlight = new Set<Promise<void>>();
    const parts: Array<{ PartNumber: number; ETag: string }> = [];
    let failure: unknown;
    let partNumber = 0;
    let buf: Buffer = take();
    let fill = 0;

    const sendPart = async () => {
      const n = ++partNumber;
      const owned = buf;
      const task: Promise<void> = this.#send<UploadPartCommandOutput>(
        new UploadPartCommand({ Bucket: bucket, Key: key, UploadId: uploadId, PartNumber: n, Body: owned.subarray(0, fill), ContentLength: fill }),
        what,
        signal,
        p,
      ).then(
        (res) => {
          inFlight.delete(task);
          parts.push({ PartNumber: n, ETag: res.ETag ?? '' });
          free.push(owned);
        },
        (e) => {
          inFlight.delete(task);
          failure ??= e;
        },
      );
      inFlight.add(task);
      buf = take();
      fill = 0;
      while (inFlight.size >= this.#config.queueSize && failure === undefined) await Promise.race(inFlight);
      if (failure !== undefined) throw failure;
    };

    try {
      for (let count = 0; count < size; ) {
        if (failure !== undefined) throw failure;
        const n = await source.fill(buf, fill, Math.min(partSize - fill, size - count));
        if (n === 0) throw sizeMismatch(p, count, size);
        fill += n;
        count += n;
        // The last part waits until the whole content has been checked.
        if (fill === partSize && count < size) await sendPart();
      }
      const hex = await source.finish();
      if (expectedHex && hex !== expectedHex) throw hashMismatch(p, hex, expectedHex);
      await sendPart();
      await Promise.all(inFlight);
      if (failure !== undefined) throw failure;
      parts.sort((a, b) => a.PartNumber - b.PartNumber);
      const done = await this.#send<CompleteMultipartUploadCommandOutput>(
        new CompleteMultipartUploadCommand({ Bucket: bucket, Key: key, UploadId: uploadId, MultipartUpload: { Parts: parts } }),
        what,
        signal,
        p,
      );
      return done.ETag || undefined;
    } catch (e) {
      await Promise.allSettled(inFlight);
      // Without the signal: it may be the reason we are here, and the abort must still go out.
      await this.#abortUpload(key, uploadId).catch(() => {});
      throw e;
    } finally {
      // Buffers of parts still being sent on a failure are not returned: the SDK may hold them.
      if (partSize === this.#config.partSize) this.#returnParts(inFlight.size === 0 ? [...free, buf] : free);
    }
  }

  #returnParts(buffers: Buffer[]): void {
    const cap = 4 * (this.#config.queueSize + 1);
    for (const b of buffers) if (this.#partPool.length < cap && !this.#closed) this.#partPool.push(b);
    clearTimeout(this.#partPoolTimer);
    this.#partPoolTimer = setTimeout(() => (this.#partPool.length = 0), 5000).unref();
  }

  async #abortUpload(key: string, uploadId: string, signal?: AbortSignal): Promise<void> {
    try {
      await this.#client.send(
        new AbortMultipartUploadCommand({ Bucket: this.#config.bucket, Key: key, UploadId: uploadId }),
        this.#sdkSignal(signal),
      );
    } catch (e) {
      if (s3Code(e) === 'NoSuchUpload' || isNotFound(e)) return; // already gone
      throw s3Error(e, 'cannot abort a multipart upload', this.#ctx());
    }
  }

  /**
   * Aborts the multipart uploads under this root that were initiated more than
   * `olderThanMs` ago (default: the URL's `cleanup_age`, 24 h), freeing the parts a killed
   * process left behind. Returns how many were aborted. Idempotent. Throws EACCES when
   * listing uploads is not allowed.
   */
  async cleanupMultipartUploads(options: CleanupOptions = {}): Promise<number> {
    const { signal } = options;
    const age = options.olderThanMs ?? this.#config.cleanupAgeMs ?? 24 * 3600_000;
    const cutoff = Date.now() - age;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    let aborted = 0;
    for (;;) {
      const res = await this.#send<import('@aws-sdk/client-s3').ListMultipartUploadsCommandOutput>(
        new ListMultipartUploadsCommand({
          Bucket: this.#config.bucket,
          Prefix: this.#config.prefix,
          ...(keyMarker === undefined ? {} : { KeyMarker: keyMarker }),
          ...(uploadIdMarker === undefined ? {} : { UploadIdMarker: uploadIdMarker }),
        }),
        `cannot list multipart uploads in ${this.url}`,
        signal,
      );
      for (const u of res.Uploads ?? []) {
        if (!u.Key || !u.UploadId) continue;
        if (u.Initiated && u.Initiated.getTime() > cutoff) continue;
        await this.#abortUpload(u.Key, u.UploadId, signal);
        aborted++;
      }
      if (!res.IsTruncated) break;
      keyMarker = res.NextKeyMarker;
      uploadIdMarker = res.NextUploadIdMarker;
      if (keyMarker === undefined && uploadIdMarker === undefined) break;
    }
    return aborted;
  }

  /** Directories are implied by keys: nothing to create. A file at the same key is not detected. */
  async mkdir(_p: RelPath, options: SignalOption = {}): Promise<void> {
    throwIfAborted(options.signal);
  }

  async remove(p: RelPath, options: SignalOption = {}): Promise<void> {
    const what = `cannot remove ${JSON.stringify(p)}`;
    this.#recent.delete(this.#key(p));
    if (!(await this.#head(p, options.signal))) throw await this.#missing(p, what, options.signal);
    await this.#send(new DeleteObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(p) }), what, options.signal, p);
  }

  /**
   * A directory exists only while keys lie below it: ENOTEMPTY when some do, otherwise it
   * succeeds (removing a folder marker `p/` if another tool made one).
   */
  async rmdir(p: RelPath, options: SignalOption = {}): Promise<void> {
    const what = `cannot remove directory ${JSON.stringify(p)}`;
    const marker = this.#key(p) + '/';
    const res = await this.#send<ListObjectsV2CommandOutput>(
      new ListObjectsV2Command({ Bucket: this.#config.bucket, Prefix: marker, MaxKeys: 2 }),
      what,
      options.signal,
      p,
    );
    const keys = (res.Contents ?? []).map((o) => o.Key);
    if (keys.some((k) => k !== marker)) throw bitfogError('ENOTEMPTY', `${what}: it is not empty`, { path: p });
    if (keys.includes(marker)) {
      await this.#send(new DeleteObjectCommand({ Bucket: this.#config.bucket, Key: marker }), what, options.signal, p);
    }
  }

  async symlink(p: RelPath, _target: string, _options: SignalOption = {}): Promise<void> {
    throw bitfogError('EOPNOTSUPP', `cannot create symlink ${JSON.stringify(p)}: S3 stores no symlinks`, { path: p });
  }

  /**
   * Server-side CopyObject then DeleteObject: not atomic (a reader may briefly see both
   * names), hence `atomicRename: false`. Throws ENOENT, EOPNOTSUPP over 5 GiB.
   */
  async rename(from: RelPath, to: RelPath, options: SignalOption = {}): Promise<void> {
    const what = `cannot rename ${JSON.stringify(from)} to ${JSON.stringify(to)}`;
    this.#recent.delete(this.#key(from));
    this.#recent.delete(this.#key(to));
    const head = await this.#head(from, options.signal);
    if (!head) throw await this.#missing(from, what, options.signal);
    if ((head.ContentLength ?? 0) > MAX_COPY_SIZE) {
      throw bitfogError('EOPNOTSUPP', `${what}: objects over 5 GiB cannot be copied in one request`, { path: from });
    }
    await this.#send(
      new CopyObjectCommand({
        Bucket: this.#config.bucket,
        Key: this.#key(to),
        CopySource: this.#copySource(from),
        MetadataDirective: 'COPY',
      }),
      what,
      options.signal,
      to,
    );
    await this.#send(new DeleteObjectCommand({ Bucket: this.#config.bucket, Key: this.#key(from) }), what, options.signal, from);
  }

  /**
   * Rewrites the object's metadata in place (CopyObject onto itself, MetadataDirective
   * REPLACE), keeping its SHA-256 and content headers. Skipped when the stored values are
   * already the requested ones (the usual case: `write` stores mode and mtime itself), and
   * for objects over 5 GiB, which CopyObject cannot rewrite (their metadata was stored by
   * `write`). Throws ENOENT.
   */
  async setMetadata(p: RelPath, metadata: Metadata, options: SignalOption = {}): Promise<void> {
    const what = `cannot set metadata of ${JSON.stringify(p)}`;
    const wantMode = metadata.mode === undefined ? undefined : (metadata.mode & 0o7777).toString(8);
    const wantMtime = metadata.mtimeMs === undefined ? undefined : formatMtime(metadata.mtimeMs);
    const recent = this.#recent.get(this.#key(p));
    if (recent && (wantMode ?? recent.metadata[META_MODE]) === recent.metadata[META_MODE] && (wantMtime ?? recent.metadata[META_MTIME]) === recent.metadata[META_MTIME]) {
      return;
    }
    const head = await this.#head(p, options.signal);
    if (!head) {
      if (await this.#isPrefix(p, options.signal)) return; // directories keep no metadata
      throw await this.#missing(p, what, options.signal);
    }
    const stored = { ...(head.Metadata ?? {}) };
    const wanted = { ...stored };
    if (wantMode !== undefined) wanted[META_MODE] = wantMode;
    if (wantMtime !== undefined) wanted[META_MTIME] = wantMtime;
    if (wanted[META_MODE] === stored[META_MODE] && wanted[META_MTIME] === stored[META_MTIME]) return;
    if ((head.ContentLength ?? 0) > MAX_COPY_SIZE) return;
    const copied = await this.#send<CopyObjectCommandOutput>(
      new CopyObjectCommand({
        Bucket: this.#config.bucket,
        Key: this.#key(p),
        CopySource: this.#copySource(p),
        MetadataDirective: 'REPLACE',
        Metadata: wanted,
        ...(head.ContentType ? { ContentType: head.ContentType } : {}),
        ...(head.ContentEncoding ? { ContentEncoding: head.ContentEncoding } : {}),
        ...(head.ContentDisposition ? { ContentDisposition: head.ContentDisposition } : {}),
        ...(head.ContentLanguage ? { ContentLanguage: head.ContentLanguage } : {}),
        ...(head.CacheControl ? { CacheControl: head.CacheControl } : {}),
        // Only replace what we read: a concurrent overwrite in between makes this fail.
        ...(head.ETag ? { CopySourceIfMatch: head.ETag } : {}),
      }),
      what,
      options.signal,
      p,
    );
    const etag = copied.CopyObjectResult?.ETag;
    if (etag) this.#remember(this.#key(p), { etag, size: head.ContentLength ?? 0, metadata: wanted });
    else this.#recent.delete(this.#key(p));
  }

  /** `bucket/key`, percent-encoded as CopyObject's x-amz-copy-source header wants. */
  #copySource(p: RelPath): string {
    const key = this.#key(p)
      .split('/')
      .map((s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`))
      .join('/');
    return `${this.#config.bucket}/${key}`;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#partPoolTimer);
    this.#partPool.length = 0;
    this.#client.destroy();
    this.#agent.destroy();
  }
}

/** Hash, mtime and mode from our `x-amz-meta-*` keys; without a stored mtime, the upload time. */
function applyStoredMetadata(entry: Entry, meta: Record<string, string>, lastModified: Date | undefined): void {
  const sha = meta[META_SHA256]?.toLowerCase();
  if (sha && SHA256_RE.test(sha)) entry.hash = `sha256:${sha}`;
  const mtime = parseMtime(meta[META_MTIME]);
  if (mtime !== undefined) entry.mtimeMs = mtime;
  else if (lastModified) entry.mtimeMs = lastModified.getTime();
  const mode = meta[META_MODE];
  if (mode && /^[0-7]{1,6}$/.test(mode)) entry.mode = parseInt(mode, 8) & 0o7777;
}

/** Keys from a listing with EncodingType=url: percent-encoded, and `+` for a space on some servers. */
function decodeListedKey(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, '%20'));
  } catch {
    return raw;
  }
}
