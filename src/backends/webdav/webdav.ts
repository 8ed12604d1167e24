/**
 * The WebDAV backend: a collection on any WebDAV server (a NAS, Apache mod_dav, nginx,
 * Nextcloud), with no bitfog server on the other side.
 *
 * Which requests go where:
 * - PROPFIND (listing, stat), GET (ranged reads) and PUT (uploads) are sent directly with
 *   node:http(s): PROPFIND bodies are parsed as they stream in, one directory at a time
 *   with `Depth: 1` (servers refuse `Depth: infinity`), several directories in parallel;
 *   PUT streams the content with an exact `Content-Length` (Apache refuses chunked PUTs).
 * - MKCOL, DELETE, MOVE, PROPPATCH and the quota query go through the `webdav` client,
 *   with URLs we encode ourselves (its own path encoding mangles `\\`).
 *
 * Paths: every segment is encoded with encodeURIComponent; hrefs in PROPFIND answers
 * (absolute URLs or paths, encoded however the server likes) are decoded segment by
 * segment and compared decoded, never as strings.
 *
 * Modification times: WebDAV's `getlastmodified` is the server's own time, in seconds, and
 * cannot be set. bitfog keeps the source's mtime in a dead property
 * `{https://bitfog.dev/ns/webdav}mtime` whose value is `<ms since epoch> <tie>`, and `list`
 * reports it only while the file still matches the tie — so a file replaced by another
 * client shows the server's time again rather than a stale one. The tie is the file's
 * `version` (size and ETag) when set through `setMetadata`, and just its size when set by
 * `write` (that saves a PROPFIND per uploaded file; a foreign rewrite of the same size keeps
 * bitfog's mtime, but its ETag, hence its version, changes and its content is re-hashed).
 * Servers keep dead properties across MOVE (Apache does), so the temporary name's mtime
 * survives the rename into place.
 *
 * Versions: `Entry.version` is the ETag (weak prefix dropped: Apache marks a file's ETag
 * weak during the second it was written, then strong), so the core's hash cache re-reads
 * only files whose ETag changed.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import tls from 'node:tls';
import { abortError, bitfogError, BitfogError, sleep, throwIfAborted, toBitfogError, type ErrorCode } from '../../core/errors.ts';
import { childPath, type RelPath } from '../../core/paths.ts';
import type {
  Destination,
  Entry,
  ListOptions,
  Metadata,
  ReadOptions,
  SignalOption,
  WriteOptions,
} from '../../core/types.ts';
import { webdavCapabilities } from './capabilities.ts';
import { resolveCredentials } from './credentials.ts';
import { BITFOG_NS, DAV_NS, parseMultistatus, type DavResponse } from './multistatus.ts';
import { chunksOf } from '../../core/streams.ts';

export { webdavCapabilities };

/** Directories listed in parallel by `list`. */
const LIST_PARALLELISM = 4;
/** Attempts for a retryable request (first try included). */
const MAX_ATTEMPTS = 5;
const BACKOFF_MS = 250;
/** Uploads at least this large wait for `100 Continue`, so a refusal costs no body. */
const EXPECT_CONTINUE_BYTES = 1 << 20;

const PROPFIND_BODY =
  '<?xml version="1.0" encoding="utf-8"?>' +
  `<D:propfind xmlns:D="DAV:" xmlns:b="${BITFOG_NS}"><D:prop>` +
  '<D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/><b:mtime/>' +
  '</D:prop></D:propfind>';

type WebDAVClient = import('webdav').WebDAVClient;

export interface WebDavOpenOptions extends SignalOption {
  write: boolean;
  env: NodeJS.ProcessEnv;
}

export class WebDavBackend implements Destination {
  readonly url: string;
  readonly capabilities = webdavCapabilities;
  /** `http(s)://host[:port]` */
  readonly #origin: string;
  /** Encoded base path of the root, ending in `/`. */
  readonly #basePath: string;
  /** Decoded segments of the root path. */
  readonly #rootSegments: string[];
  readonly #agent: http.Agent;
  readonly #transport: typeof http | typeof https;
  readonly #authHeader: Record<string, string>;
  readonly #client: WebDAVClient;

  private constructor(
    url: string,
    origin: string,
    basePath: string,
    agent: http.Agent,
    transport: typeof http | typeof https,
    authHeader: Record<string, string>,
    client: WebDAVClient,
  ) {
    this.url = url;
    this.#origin = origin;
    this.#basePath = basePath;
    this.#rootSegments = decodedSegments(basePath);
    this.#agent = agent;
    this.#transport = transport;
    this.#authHeader = authHeader;
    this.#client = client;
  }

  /**
   * Opens `webdav://host[:port]/path/` (http) or `webdavs://…` (https). Checks the root
   * exists and is a collection; for writing, creates it (parents first) when missing.
   * Throws EBADURL, EAUTH, EHOSTKEY, EUNREACHABLE, ENOENT, ENOTDIR.
   */
  static async open(rawUrl: string, options: WebDavOpenOptions): Promise<WebDavBackend> {
    let parsed: URL;
    try {
      parsed = new URL(rawUrl);
    } catch (e) {
      throw bitfogError('EBADURL', 'invalid WebDAV URL (expected webdav://host[:port]/path/ or webdavs://…)', { cause: e });
    }
    const scheme = parsed.protocol.slice(0, -1).toLowerCase();
    if (scheme !== 'webdav' && scheme !== 'webdavs') throw bitfogError('EBADURL', `not a WebDAV URL: ${scheme}://`);
    if (!parsed.hostname) throw bitfogError('EBADURL', 'WebDAV URL without a host');
    if (parsed.search || parsed.hash) {
      throw bitfogError('EBADURL', 'a WebDAV URL has no query or fragment: percent-encode "?" as %3F and "#" as %23 in the path');
    }
    const secure = scheme === 'webdavs';
    const host = parsed.host;
    const origin = `${secure ? 'https' : 'http'}://${host}`;
    // Re-encode the path our way so that hrefs compare equal after decoding.
    const segments = decodedSegments(parsed.pathname);
    const basePath = '/' + segments.map((s) => encodeURIComponent(s) + '/').join('');
    const display = `${scheme}://${host}${basePath}`;

    const creds = resolveCredentials(parsed, options.env);
    const authHeader: Record<string, string> =
      creds.user !== undefined || creds.password !== undefined
        ? { Authorization: 'Basic ' + Buffer.from(`${creds.user ?? ''}:${creds.password ?? ''}`, 'utf8').toString('base64') }
        : {};
    const transport = secure ? https : http;
    const agent = secure
      ? new https.Agent({ keepAlive: true, maxSockets: 16, ...trustedCAs(options.env) })
      : new http.Agent({ keepAlive: true, maxSockets: 16 });
    const { createClient } = await import('webdav');
    const client = createClient(origin + basePath, {
      ...(creds.user !== undefined ? { username: creds.user } : {}),
      ...(creds.password !== undefined ? { password: creds.password } : {}),
      ...(secure ? { httpsAgent: agent as https.Agent } : { httpAgent: agent }),
    });
    const backend = new WebDavBackend(display, origin, basePath, agent, transport, authHeader, client);
    try {
      await backend.#openRoot(options.write, options.signal);
    } catch (e) {
      await backend.close();
      throw e;
    }
    return backend;
  }

  async #openRoot(write: boolean, signal?: AbortSignal): Promise<void> {
    let root: Entry;
    try {
      root = await this.#stat('' as RelPath, `cannot open ${this.url}`, { signal });
    } catch (e) {
      if (!write || !(e instanceof BitfogError) || e.code !== 'ENOENT') {
        if (e instanceof BitfogError && e.code === 'ENOENT') throw bitfogError('ENOENT', `${this.url} does not exist`, { cause: e });
        throw e;
      }
      await this.#mkcolParents(signal);
      return;
    }
    if (root.kind !== 'directory') throw bitfogError('ENOTDIR', `${this.url} is not a collection`);
  }

  /** Creates the root and its missing ancestors, outermost first. */
  async #mkcolParents(signal?: AbortSignal): Promise<void> {
    const segs = this.#rootSegments;
    // Find the deepest existing ancestor, then create downwards.
    let i = segs.length;
    while (i > 0) {
      const url = this.#origin + '/' + segs.slice(0, i).map((s) => encodeURIComponent(s) + '/').join('');
      const status = await this.#retry('cannot open ' + this.url, undefined, signal, async () => {
        const res = await this.#send('PROPFIND', url, { headers: { Depth: '0' }, body: PROPFIND_BODY, signal });
        res.resume();
        return res.statusCode ?? 0;
      });
      if (status === 207) break;
      if (status !== 404 && status !== 409) throw statusError(status, `cannot open ${this.url}`);
      i--;
    }
    for (i++; i <= segs.length; i++) {
      const url = this.#origin + '/' + segs.slice(0, i).map((s) => encodeURIComponent(s) + '/').join('');
      await this.#mkcolUrl(url, `cannot create ${this.url}`, undefined, signal);
    }
  }

  // ---------------------------------------------------------------- read side

  async *list(options: ListOptions = {}): AsyncIterable<Entry> {
    const { signal, onSkip } = options;
    const pending: RelPath[] = ['' as RelPath];
    const running = new Map<RelPath, Promise<{ dir: RelPath; entries?: Entry[]; error?: BitfogError }>>();
    while (pending.length > 0 || running.size > 0) {
      throwIfAborted(signal);
      while (pending.length > 0 && running.size < LIST_PARALLELISM) {
        const dir = pending.pop()!;
        running.set(
          dir,
          this.#listDirectory(dir, onSkip, signal).then(
            (entries) => ({ dir, entries }),
            (e: unknown) => ({ dir, error: toBitfogError(e) }),
          ),
        );
      }
      const { dir, entries, error } = await Promise.race(running.values());
      running.delete(dir);
      if (error) {
        if (dir === '') {
          if (error.code === 'ENOENT') throw bitfogError('ENOENT', `${this.url} does not exist`, { cause: error });
          throw error;
        }
        if (error.code === 'EABORTED' || error.code === 'EAUTH') throw error;
        // Removed while we listed: simply not part of this listing.
        if (error.code !== 'ENOENT') onSkip?.(dir, `unreadable collection (${error.message})`);
        continue;
      }
      for (const entry of entries!) {
        if (entry.kind === 'directory') pending.push(entry.path);
        yield entry;
      }
    }
  }

  /** The direct children of `dir`, from one `Depth: 1` PROPFIND parsed as it streams. */
  async #listDirectory(dir: RelPath, onSkip: ListOptions['onSkip'], signal?: AbortSignal): Promise<Entry[]> {
    const dirSegments = [...this.#rootSegments, ...relSegments(dir)];
    return this.#retry(`cannot list ${this.#describe(dir)}`, dir, signal, async () => {
      const res = await this.#send('PROPFIND', this.#urlOf(dir, true), {
        headers: { Depth: '1', 'Content-Type': 'application/xml; charset=utf-8' },
        body: PROPFIND_BODY,
        signal,
      });
      await this.#expect(res, [207], `cannot list ${this.#describe(dir)}`, dir);
      const entries: Entry[] = [];
      // Responses under another prefix (a reverse proxy that rewrites paths): kept aside
      // and matched by their own shortest href, only if nothing matched the expected one.
      const foreign: Array<{ segs: string[]; r: DavResponse }> = [];
      const take = (segs: string[], base: string[], r: DavResponse) => {
        if (segs.length === base.length) {
          if (!isCollection(r)) throw bitfogError('ENOTDIR', `${this.#describe(dir)} is not a collection`, { path: dir });
          return;
        }
        if (segs.length !== base.length + 1) return;
        const name = segs[segs.length - 1]!;
        let path: RelPath;
        try {
          path = childPath(dir, name);
        } catch {
          onSkip?.(`${dir}/${name}`, 'name cannot be carried portably');
          return;
        }
        if (r.status !== undefined && (r.status < 200 || r.status >= 300)) {
          onSkip?.(path, `server reports status ${r.status}`);
          return;
        }
        entries.push(entryOf(path, r));
      };
      let matched = 0;
      for await (const r of parseMultistatus(res)) {
        const segs = hrefSegments(r.href);
        if (startsWith(segs, dirSegments)) {
          matched++;
          take(segs, dirSegments, r);
        } else if (matched === 0) {
          foreign.push({ segs, r });
        }
      }
      if (matched === 0 && foreign.length > 0) {
        const base = foreign.reduce((a, b) => (b.segs.length < a.segs.length ? b : a)).segs;
        for (const f of foreign) if (startsWith(f.segs, base)) take(f.segs, base, f.r);
      }
      return entries;
    });
  }

  /** PROPFIND `Depth: 0`. Throws ENOENT. */
  async stat(path: RelPath, options: SignalOption = {}): Promise<Entry> {
    return this.#stat(path, `cannot stat ${this.#describe(path)}`, options);
  }

  async #stat(path: RelPath, what: string, options: SignalOption): Promise<Entry> {
    return this.#retry(what, path, options.signal, async () => {
      const res = await this.#send('PROPFIND', this.#urlOf(path, false), {
        headers: { Depth: '0', 'Content-Type': 'application/xml; charset=utf-8' },
        body: PROPFIND_BODY,
        signal: options.signal,
      });
      await this.#expect(res, [207], what, path);
      let found: DavResponse | undefined;
      for await (const r of parseMultistatus(res)) found ??= r;
      if (!found) throw bitfogError('EIO', `${what}: empty PROPFIND answer`, { path });
      if (found.status !== undefined && found.status >= 300) throw statusError(found.status, what, path);
      return entryOf(path, found);
    });
  }

  async read(path: RelPath, options: ReadOptions = {}): Promise<Readable> {
    const what = `cannot read ${this.#describe(path)}`;
    const start = options.start ?? 0;
    const ranged = start > 0 || options.end !== undefined;
    if (options.end !== undefined && options.end <= start) {
      await this.stat(path, options);
      return Readable.from([]);
    }
    const res = await this.#retry(what, path, options.signal, async () => {
      const headers: Record<string, string> = {};
      if (ranged) headers.Range = `bytes=${start}-${options.end === undefined ? '' : options.end - 1}`;
      const r = await this.#send('GET', this.#urlOf(path, false), { headers, signal: options.signal });
      if (r.statusCode === 416 && ranged) {
        // Asked past the end: nothing to read.
        r.resume();
        return Readable.from([]) as unknown as http.IncomingMessage;
      }
      if (r.statusCode !== 200 && r.statusCode !== 206) {
        const status = r.statusCode ?? 0;
        r.resume();
        if (status === 404 || status === 409) throw statusError(status, what, path);
        const st = await this.stat(path, options).catch(() => undefined);
        if (st?.kind === 'directory') throw bitfogError('EISDIR', `${this.#describe(path)} is a directory`, { path });
        throw statusError(status, what, path);
      }
      if (ranged && r.statusCode === 200 && start > 0) {
        r.destroy();
        throw bitfogError('EOPNOTSUPP', `${what}: the server ignores byte ranges`, { path });
      }
      return r;
    });
    return res;
  }

  async readlink(path: RelPath, options: SignalOption = {}): Promise<string> {
    await this.stat(path, options);
    throw bitfogError('EIO', `${this.#describe(path)} is not a symlink (WebDAV has none)`, { path });
  }

  // ---------------------------------------------------------------- write side

  /**
   * One PUT with `Content-Length: size`, streamed. Not retried here (the content stream
   * cannot be replayed): a transient failure throws ETRANSIENT for the caller to retry.
   * A large upload first waits for `100 Continue`, so auth and permission refusals come
   * before any byte is sent.
   */
  async write(path: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    const what = `cannot write ${this.#describe(path)}`;
    throwIfAborted(options.signal);
    const expectContinue = options.size >= EXPECT_CONTINUE_BYTES;
    const req = this.#transport.request(this.#origin + this.#urlOf(path, false), {
      method: 'PUT',
      agent: this.#agent,
      headers: {
        ...this.#authHeader,
        'Content-Length': String(options.size),
        'Content-Type': 'application/octet-stream',
        ...(expectContinue ? { Expect: '100-continue' } : {}),
      },
      ...(options.signal ? { signal: options.signal } : {}),
    });
    let response: http.IncomingMessage | undefined;
    let failure: unknown;
    const settled = new Promise<void>((resolve) => {
      req.once('response', (r) => {
        response = r;
        resolve();
      });
      req.once('error', (e) => {
        failure ??= e;
        resolve();
      });
      // A request destroyed before any answer may only close.
      req.once('close', () => resolve());
    });
    // Like curl, send the body anyway if no `100 Continue` comes within a second: some
    // servers and proxies ignore `Expect`.
    let continueTimer: NodeJS.Timeout | undefined;
    const goAhead = expectContinue
      ? new Promise<void>((resolve) => {
          req.once('continue', () => resolve());
          void settled.then(() => resolve());
          continueTimer = setTimeout(resolve, 1000);
        })
      : Promise.resolve();
    await goAhead;
    clearTimeout(continueTimer);
    let written = 0;
    try {
      if (!response && failure === undefined) {
        for await (const chunk of chunksOf(content)) {
          if (response || failure !== undefined) break;
          throwIfAborted(options.signal);
          written += chunk.length;
          if (written > options.size) {
            throw bitfogError('EINTEGRITY', `content of ${this.#describe(path)} is longer than the declared ${options.size} bytes`, { path });
          }
          if (!req.write(chunk)) {
            await Promise.race([new Promise<void>((resolve) => req.once('drain', () => resolve())), settled]);
          }
        }
        if (!response && failure === undefined) {
          if (written !== options.size) {
            throw bitfogError('EINTEGRITY', `content of ${this.#describe(path)} was ${written} bytes, declared ${options.size}`, { path });
          }
          req.end();
        }
      }
    } catch (e) {
      req.destroy();
      content.destroy();
      await settled;
      if (options.signal?.aborted) throw abortError(options.signal);
      throw mapError(e, what, path);
    }
    await settled;
    if (failure !== undefined || !response) {
      content.destroy();
      if (options.signal?.aborted) throw abortError(options.signal);
      if (failure === undefined) throw bitfogError('ETRANSIENT', `${what}: the connection closed before the server answered`, { path });
      throw mapError(failure, what, path);
    }
    const status = response.statusCode ?? 0;
    response.resume();
    if (status < 200 || status >= 300) {
      content.destroy();
      if (status === 405 || status === 409) {
        // 405 on a collection is EISDIR; 409 says the parent is missing.
        const st = await this.stat(path, options).catch(() => undefined);
        if (st?.kind === 'directory') throw bitfogError('EISDIR', `${this.#describe(path)} is a directory`, { path });
      }
      throw statusError(status, what, path);
    }
    if (written !== options.size) {
      // The server answered before taking the whole body.
      throw bitfogError('EIO', `${what}: the server answered before the upload ended`, { path });
    }
    if (options.mtimeMs !== undefined && Number.isFinite(options.mtimeMs)) {
      await this.#keepMtime(path, false, `${options.mtimeMs} ${options.size}`, options.signal);
    }
  }

  async mkdir(path: RelPath, options: SignalOption = {}): Promise<void> {
    await this.#mkcolUrl(this.#origin + this.#urlOf(path, true), `cannot create directory ${this.#describe(path)}`, path, options.signal);
  }

  async #mkcolUrl(url: string, what: string, path: RelPath | undefined, signal?: AbortSignal): Promise<void> {
    try {
      await this.#retry(what, path, signal, () => this.#clientRequest(url, 'MKCOL', {}, signal));
    } catch (e) {
      if (!(e instanceof BitfogError) || (e.code !== 'EROFS' && e.code !== 'EIO')) throw e;
      // RFC 4918: MKCOL answers 405 when something already exists there (Apache: 400 when
      // that something is a file, since the request URL ends in "/").
      const st = path === undefined ? undefined : await this.stat(path, { signal }).catch(() => undefined);
      if (st?.kind === 'directory') return;
      if (st) throw bitfogError('EEXIST', `${this.#describe(path!)} exists and is not a directory`, { path: path!, cause: e });
      throw e;
    }
  }

  async remove(path: RelPath, options: SignalOption = {}): Promise<void> {
    // A DELETE on a collection removes everything below it: make sure this is a file first.
    const st = await this.stat(path, options);
    if (st.kind === 'directory') throw bitfogError('EISDIR', `${this.#describe(path)} is a directory`, { path });
    await this.#delete(path, false, `cannot remove ${this.#describe(path)}`, options.signal);
  }

  async rmdir(path: RelPath, options: SignalOption = {}): Promise<void> {
    const st = await this.stat(path, options);
    if (st.kind !== 'directory') throw bitfogError('ENOTDIR', `${this.#describe(path)} is not a directory`, { path });
    const children = await this.#listDirectory(path, undefined, options.signal);
    if (children.length > 0) throw bitfogError('ENOTEMPTY', `${this.#describe(path)} is not empty`, { path });
    await this.#delete(path, true, `cannot remove directory ${this.#describe(path)}`, options.signal);
  }

  async #delete(path: RelPath, collection: boolean, what: string, signal?: AbortSignal): Promise<void> {
    let attempt = 0;
    await this.#retry(what, path, signal, async () => {
      try {
        await this.#clientRequest(this.#origin + this.#urlOf(path, collection), 'DELETE', {}, signal);
      } catch (e) {
        // A retried DELETE whose first try went through finds nothing: that is success.
        if (attempt > 0 && mapError(e, what, path).code === 'ENOENT') return;
        throw e;
      } finally {
        attempt++;
      }
    });
  }

  async symlink(path: RelPath): Promise<void> {
    throw bitfogError('EOPNOTSUPP', `WebDAV cannot store symlinks (${this.#describe(path)})`, { path });
  }

  /** MOVE with `Overwrite: T`. Throws ENOENT (source or target parent missing). */
  async rename(from: RelPath, to: RelPath, options: SignalOption = {}): Promise<void> {
    const what = `cannot rename ${this.#describe(from)} to ${this.#describe(to)}`;
    let attempt = 0;
    await this.#retry(what, to, options.signal, async () => {
      try {
        await this.#clientRequest(
          this.#origin + this.#urlOf(from, false),
          'MOVE',
          { Destination: this.#origin + this.#urlOf(to, false), Overwrite: 'T' },
          options.signal,
        );
      } catch (e) {
        // A retried MOVE whose first try went through finds its source gone and its target there.
        if (attempt > 0 && mapError(e, what, to).code === 'ENOENT') {
          const moved = await this.stat(to, options).then(() => true, () => false);
          if (moved) return;
        }
        throw e;
      } finally {
        attempt++;
      }
    });
  }

  /**
   * Keeps `mtimeMs` in the bitfog:mtime dead property, tied to the file's current ETag.
   * Modes are not kept. A server that refuses dead properties is ignored silently
   * (listings then show its own getlastmodified).
   */
  async setMetadata(path: RelPath, metadata: Metadata, options: SignalOption = {}): Promise<void> {
    if (metadata.mtimeMs === undefined || !Number.isFinite(metadata.mtimeMs)) return;
    const st = await this.stat(path, options);
    // Directories' ETags change with their content: their mtime is kept untied.
    const value = st.kind === 'file' && st.version ? `${metadata.mtimeMs} ${st.version}` : String(metadata.mtimeMs);
    await this.#keepMtime(path, st.kind === 'directory', value, options.signal);
  }

  /** PROPPATCH of bitfog:mtime. A 207 that refuses the property is accepted silently. */
  async #keepMtime(path: RelPath, collection: boolean, value: string, signal?: AbortSignal): Promise<void> {
    const body =
      '<?xml version="1.0" encoding="utf-8"?>' +
      `<D:propertyupdate xmlns:D="DAV:" xmlns:b="${BITFOG_NS}"><D:set><D:prop>` +
      `<b:mtime>${escapeXml(value)}</b:mtime></D:prop></D:set></D:propertyupdate>`;
    const what = `cannot set the mtime of ${this.#describe(path)}`;
    await this.#retry(what, path, signal, () =>
      this.#clientRequest(this.#origin + this.#urlOf(path, collection), 'PROPPATCH', { 'Content-Type': 'application/xml; charset=utf-8' }, signal, body),
    );
  }

  /** `quota-available-bytes` of the root, when the server reports it (Apache does not). */
  async freeSpace(): Promise<number | undefined> {
    try {
      const quota = await this.#retry('cannot read the quota', undefined, undefined, () => this.#client.getQuota());
      const available = (quota as { available?: unknown } | null)?.available;
      return typeof available === 'number' && Number.isFinite(available) ? available : undefined;
    } catch {
      return undefined;
    }
  }

  async close(): Promise<void> {
    this.#agent.destroy();
  }

  // ---------------------------------------------------------------- plumbing

  /** A path for messages: quoted, or the root's URL (never with credentials). */
  #describe(path: RelPath): string {
    return path === '' ? this.url : JSON.stringify(path);
  }

  /** Encoded absolute path of `path` on the server; collections end in `/`. */
  #urlOf(path: RelPath, collection: boolean): string {
    if (path === '') return this.#basePath;
    const encoded = relSegments(path).map(encodeURIComponent).join('/');
    return this.#basePath + encoded + (collection ? '/' : '');
  }

  /** One direct request with a replayable body. Resolves with the response, any status. */
  #send(
    method: string,
    pathOrUrl: string,
    { headers = {}, body, signal }: { headers?: Record<string, string>; body?: string; signal?: AbortSignal | undefined },
  ): Promise<http.IncomingMessage> {
    const url = pathOrUrl.startsWith('/') ? this.#origin + pathOrUrl : pathOrUrl;
    return new Promise((resolve, reject) => {
      const req = this.#transport.request(url, {
        method,
        agent: this.#agent,
        headers: {
          ...this.#authHeader,
          ...headers,
          ...(body === undefined ? {} : { 'Content-Length': String(Buffer.byteLength(body)) }),
        },
        ...(signal ? { signal } : {}),
      });
      req.once('response', resolve);
      req.once('error', reject);
      req.end(body);
    });
  }

  /** A request through the webdav client at an already encoded URL; throws on a status ≥ 400. */
  async #clientRequest(url: string, method: string, headers: Record<string, string>, signal?: AbortSignal, data?: string): Promise<void> {
    const res = await this.#client.customRequest('', {
      url,
      method,
      headers,
      ...(data === undefined ? {} : { data }),
      ...(signal ? { signal } : {}),
    });
    // Consume the body so the keep-alive socket returns to the pool. (A PROPPATCH's 207 may
    // refuse the property itself; setMetadata ignores what the server cannot keep.)
    await res.text().catch(() => '');
  }

  /** Throws the mapped error unless `res` has one of the `ok` statuses (draining the body). */
  async #expect(res: http.IncomingMessage, ok: number[], what: string, path?: RelPath): Promise<void> {
    const status = res.statusCode ?? 0;
    if (ok.includes(status)) return;
    res.resume();
    throw statusError(status, what, path);
  }

  /** Runs `fn`, retrying with exponential backoff while it fails with ETRANSIENT. */
  async #retry<T>(what: string, path: RelPath | undefined, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(signal);
      try {
        return await fn();
      } catch (e) {
        if (signal?.aborted) throw abortError(signal);
        const err = mapError(e, what, path);
        if (err.code !== 'ETRANSIENT' || attempt >= MAX_ATTEMPTS) throw err;
        await sleep(BACKOFF_MS * 2 ** (attempt - 1) * (0.5 + Math.random()), signal);
      }
    }
  }
}

// ------------------------------------------------------------------ helpers

/**
 * BITFOG_WEBDAV_CA: a PEM file of certificates to trust besides the system's (a NAS's
 * self-signed certificate or a private CA). Throws EUSAGE when it cannot be read.
 */
function trustedCAs(env: NodeJS.ProcessEnv): { ca?: string[] } {
  const file = env.BITFOG_WEBDAV_CA;
  if (!file) return {};
  try {
    return { ca: [...tls.rootCertificates, readFileSync(file, 'utf8')] };
  } catch (e) {
    throw bitfogError('EUSAGE', `cannot read the certificate file named by BITFOG_WEBDAV_CA (${toBitfogError(e).message})`, { cause: e });
  }
}


function relSegments(path: RelPath): string[] {
  return path === '' ? [] : path.split('/');
}

/** Decoded, non-empty segments of an encoded path. A segment that is not valid percent-encoding stays as it is. */
function decodedSegments(encodedPath: string): string[] {
  return encodedPath
    .split('/')
    .filter((s) => s !== '')
    .map((s) => {
      try {
        return decodeURIComponent(s);
      } catch {
        return s;
      }
    });
}

/** Segments of a PROPFIND href, which may be a full URL or an absolute path. */
export function hrefSegments(href: string): string[] {
  let p = href.trim();
  const m = /^[a-z][a-z0-9+.-]*:\/\/[^/]*/i.exec(p);
  if (m) p = p.slice(m[0].length);
  const q = p.search(/[?#]/);
  if (q >= 0) p = p.slice(0, q);
  return decodedSegments(p);
}

function startsWith(segs: string[], prefix: string[]): boolean {
  if (segs.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (segs[i] !== prefix[i]) return false;
  return true;
}

function isCollection(r: DavResponse): boolean {
  return r.props.get(DAV_NS + 'resourcetype')?.children.includes(DAV_NS + 'collection') ?? false;
}

/** An Entry from one PROPFIND response. */
function entryOf(path: RelPath, r: DavResponse): Entry {
  const dir = isCollection(r);
  const lastModified = Date.parse(r.props.get(DAV_NS + 'getlastmodified')?.text.trim() ?? '');
  const rawEtag = r.props.get(DAV_NS + 'getetag')?.text.trim();
  const etag = rawEtag ? rawEtag.replace(/^W\//, '') : undefined;
  const size = dir ? 0 : Number(r.props.get(DAV_NS + 'getcontentlength')?.text.trim() ?? 0) || 0;
  const entry: Entry = { path, kind: dir ? 'directory' : 'file', size };
  const kept = parseKeptMtime(r.props.get(BITFOG_NS + 'mtime')?.text);
  if (!dir && etag) entry.version = `${size}:${etag}`;
  const tieHolds = kept && (kept.tie === undefined || kept.tie === entry.version || (!dir && kept.tie === String(size)));
  if (kept && tieHolds) entry.mtimeMs = kept.mtimeMs;
  else if (Number.isFinite(lastModified)) entry.mtimeMs = lastModified;
  // getlastmodified has whole seconds: the change happened somewhere in that second.
  if (Number.isFinite(lastModified)) entry.changedAtMs = lastModified + 999;
  return entry;
}

/** `<mtimeMs>[ <tie: the version or size it was set for>]` from the bitfog:mtime property. */
function parseKeptMtime(text: string | undefined): { mtimeMs: number; tie?: string } | undefined {
  if (!text) return undefined;
  const t = text.trim();
  const space = t.indexOf(' ');
  const mtimeMs = Number(space < 0 ? t : t.slice(0, space));
  if (!Number.isFinite(mtimeMs)) return undefined;
  return space < 0 ? { mtimeMs } : { mtimeMs, tie: t.slice(space + 1) };
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

const STATUS_CODES: Record<number, ErrorCode> = {
  401: 'EAUTH',
  403: 'EACCES',
  404: 'ENOENT',
  // A read-only share refuses write methods; MKCOL on an existing name is handled by mkdir.
  405: 'EROFS',
  408: 'ETRANSIENT',
  // Conflict: the parent collection is missing.
  409: 'ENOENT',
  410: 'ENOENT',
  412: 'EEXIST',
  413: 'ENOSPC',
  423: 'EACCES',
  429: 'ETRANSIENT',
  507: 'ENOSPC',
};

const STATUS_HINTS: Record<number, string> = {
  401: 'credentials missing or refused (see BITFOG_WEBDAV_USER / BITFOG_WEBDAV_PASSWORD or ~/.netrc)',
  403: 'permission denied by the server',
  404: 'not found',
  405: 'the server refuses this method here (read-only share?)',
  409: 'the parent collection does not exist',
  413: 'the server refuses a body this large',
  423: 'locked',
  507: 'insufficient storage on the server',
};

/** The BitfogError for an HTTP status. */
export function statusError(status: number, what: string, path?: RelPath): BitfogError {
  let code: ErrorCode = STATUS_CODES[status] ?? 'EIO';
  if (status >= 500 && status !== 501 && status !== 505 && status !== 507) code = 'ETRANSIENT';
  const hint = STATUS_HINTS[status] ?? http.STATUS_CODES[status] ?? 'unexpected status';
  return bitfogError(code, `${what}: HTTP ${status} (${hint})`, path === undefined ? {} : { path });
}

const TLS_CODES = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/** Any failure as a BitfogError: HTTP statuses (ours or the webdav client's), TLS and socket errors. */
export function mapError(e: unknown, what: string, path?: RelPath): BitfogError {
  if (e instanceof BitfogError) return e;
  const status = (e as { status?: unknown } | null)?.status;
  if (typeof status === 'number') {
    const err = statusError(status, what, path);
    return new BitfogError(err.code, err.message, { cause: e, ...(path === undefined ? {} : { path }) });
  }
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (TLS_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_') || code === 'EPROTO')) {
    const handshake = code.startsWith('ERR_SSL_') || code === 'EPROTO';
    const msg = handshake
      ? `${what}: TLS handshake failed (${code}); is this really an https server?`
      : `${what}: the server's TLS certificate is not trusted (${code}); to trust a self-signed or private certificate, name its PEM file in BITFOG_WEBDAV_CA`;
    return new BitfogError(handshake ? 'EUNREACHABLE' : 'EHOSTKEY', msg, {
      cause: e,
      ...(path === undefined ? {} : { path }),
    });
  }
  const message = (e as { message?: unknown } | null)?.message;
  if (code === undefined && typeof message === 'string' && /socket hang up|premature close|other side closed/i.test(message)) {
    return new BitfogError('ETRANSIENT', `${what}: ${message}`, { cause: e, ...(path === undefined ? {} : { path }) });
  }
  return toBitfogError(e, what, path);
}
