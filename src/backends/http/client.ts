/**
 * The bitfog-HTTP backend: an area of a `bitfog serve` server (or of an original Go
 * bitfog server) at `http://host:port/area/` or `https://…`.
 *
 * At open it asks `GET /.bitfog/info?area=NAME`. Our server answers (and marks every
 * answer with `X-Bitfog-Protocol`): the backend then uses the extensions — SHA-256 in
 * listings (capabilities.serverSideHashes), Range reads and resumption, `GET ?stat`,
 * atomic PUT (temp + rename on the server) verified against `X-Bitfog-Sha256`, mode and
 * mtime headers, `POST ?rename=` and `POST ?meta`. A classic server answers 404 there:
 * the backend then sends only the classic requests, identifies content by size + CRC-64
 * (`Entry.version = crc64:<decimal>:<size>`, or `size:<size>:<mtime>` when the area has no
 * checksum) so that the core's hash cache does not download unchanged files again, and
 * verifies every full download against the listed CRC.
 *
 * Atomicity: against our server a PUT is all-or-nothing (atomicWrite) and renames are
 * atomic. A classic server's PUT deletes the old file and then writes in place, and it
 * has no rename; no request sequence can make that atomic, so the backend declares
 * neither and says so — an interrupted store leaves a short file that the next run sees
 * (size/CRC differ) and sends again, exactly as the original client behaved.
 *
 * Environment: BITFOG_HTTP_TOKEN (or BITFOG_HTTP_TOKEN_FILE) — bearer token;
 * BITFOG_HTTP_CONNECTIONS — parallel connections (default 4); BITFOG_HTTP_CA_FILE — PEM
 * CA to trust for https (for self-signed servers); BITFOG_HTTP_RETRIES (default 4).
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Readable } from 'node:stream';
import { abortError, bitfogError, ErrorCode, isBitfogError, sleep, throwIfAborted, toBitfogError, type BitfogError } from '../../core/errors.ts';
import { ancestors, relPathProblem, type RelPath } from '../../core/paths.ts';
import type {
  Capabilities,
  Destination,
  Entry,
  ListOptions,
  Metadata,
  OpenOptions,
  ReadOptions,
  SignalOption,
  WriteOptions,
} from '../../core/types.ts';
import { classicCapabilities, extendedCapabilities } from './capabilities.ts';
import { Crc64 } from './crc64.ts';
import {
  fromGoFileMode,
  H_ERROR,
  H_MODE,
  H_MTIME_NS,
  H_PROTOCOL,
  H_SHA256,
  INFO_PATH,
  parseRecord,
  RecordSplitter,
  type WireRecord,
} from './wire.ts';
import { chunksOf } from '../../core/streams.ts';
import { type PieceConnection, PieceConnections, type PieceGetResult, type PieceResponseHead } from './pieces.ts';


const STATUS_RETRY = new Set([429, 502, 503, 504]);
const KNOWN_CODES = new Set<string>(Object.keys(ErrorCode));

interface Settings {
  token?: string;
  connections: number;
  retries: number;
  ca?: Buffer;
}

interface RequestOptions extends SignalOption {
  query?: string;
  headers?: Record<string, string>;
  /** A small body that can be sent again on retry. */
  body?: Buffer;
  /** Idempotent: retried with backoff on transient failures. */
  retry?: boolean;
}

export class HttpBackend implements Destination {
  readonly url: string;
  readonly capabilities: Capabilities;
  /** True when the server speaks our extensions. */
  readonly extended: boolean;
  readonly checksum: boolean;
  readonly #base: URL;
  /** Request path of the area, encoded, ending in `/`. */
  readonly #areaPath: string;
  readonly #agent: http.Agent;
  readonly #settings: Settings;
  /** CRC-64 per path from the last listing, to verify classic downloads. */
  readonly #crcs = new Map<string, bigint>();
  /**
   * Classic servers have no stat: the entries of the last complete listing answer it,
   * until this backend writes something. That is safe for change detection because a
   * read is checked against the CRC of that same listing (a file that changed since
   * fails with EINTEGRITY), and it keeps a fetch from listing the whole area per file.
   */
  #classicEntries: Map<string, Entry> | undefined;
  /** Connections for readPieces (plain http only), made on first use. */
  #pieceConnections: PieceConnections | undefined;

  private constructor(
    url: string,
    base: URL,
    areaPath: string,
    agent: http.Agent,
    settings: Settings,
    info: { extended: boolean; checksum: boolean },
  ) {
    this.url = url;
    this.#base = base;
    this.#areaPath = areaPath;
    this.#agent = agent;
    this.#settings = settings;
    this.extended = info.extended;
    this.checksum = info.checksum;
    const caps = info.extended ? extendedCapabilities : classicCapabilities;
    this.capabilities = {
      ...caps,
      serverSideHashes: info.extended && info.checksum,
      maxConcurrency: settings.connections,
    };
  }

  /**
   * Opens `url` (`http(s)://host[:port]/area/`). Throws EBADURL, ENOENT (no such area),
   * EROFS (write requested, area read-only), EAUTH, EUNREACHABLE, EHOSTKEY (TLS).
   */
  static async open(url: string, options: OpenOptions): Promise<HttpBackend> {
    const env = options.env ?? process.env;
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch (e) {
      throw bitfogError('EBADURL', `invalid URL ${JSON.stringify(url)}`, { cause: e });
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw bitfogError('EBADURL', `not an http(s) URL: ${url}`);
    if (parsed.username || parsed.password) {
      throw bitfogError('EBADURL', 'credentials in the URL are not accepted; use BITFOG_HTTP_TOKEN or BITFOG_HTTP_TOKEN_FILE');
    }
    if (url.includes('?') || url.includes('#')) {
      throw bitfogError('EBADURL', `${url}: a bitfog server URL has no query or fragment: percent-encode "?" as %3F and "#" as %23 in the area name`);
    }
    const segments = parsed.pathname.split('/').filter((s, i, all) => !(s === '' && (i === 0 || i === all.length - 1)));
    if (segments.length !== 1 || segments[0] === '') {
      throw bitfogError('EBADURL', `${url}: expected http(s)://host:port/AREA/ (one area name as the path)`);
    }
    let area: string;
    try {
      area = decodeURIComponent(segments[0]!);
    } catch (e) {
      throw bitfogError('EBADURL', `${url}: bad percent-encoding`, { cause: e });
    }
    const shown = `${parsed.protocol}//${parsed.host}/${encodeURIComponent(area)}/`;
    const settings = settingsFrom(env);
    const agentOptions = { keepAlive: true, maxSockets: settings.connections, ...(settings.ca ? { ca: settings.ca } : {}) };
    const agent = parsed.protocol === 'https:' ? new https.Agent(agentOptions) : new http.Agent(agentOptions);
    const base = new URL(`${parsed.protocol}//${parsed.host}/`);
    const probe = new HttpBackend(shown, base, `/${encodeURIComponent(area)}/`, agent, settings, { extended: false, checksum: false });
    try {
      const info = await probe.#probe(area, options.signal);
      if (options.write && info.writable === false) throw bitfogError('EROFS', `${shown} is a read-only area`);
      return new HttpBackend(shown, base, probe.#areaPath, agent, settings, info);
    } catch (e) {
      agent.destroy();
      throw e;
    }
  }

  async #probe(area: string, signal?: AbortSignal): Promise<{ extended: boolean; checksum: boolean; writable?: boolean }> {
    const res = await this.#send('GET', INFO_PATH, { query: `area=${encodeURIComponent(area)}`, retry: true, ...(signal ? { signal } : {}) });
    if (res.headers[H_PROTOCOL] !== undefined) {
      if (res.statusCode !== 200) throw await this.#errorFrom(res, 'GET', this.url);
      const info = JSON.parse(await readText(res, 1 << 16)) as { writable?: boolean; checksum?: boolean };
      return { extended: true, checksum: info.checksum === true, writable: info.writable === true };
    }
    // A classic server: 404 for the unknown area `.bitfog`. The index tells whether ours exists.
    res.resume();
    if (res.statusCode === 401 || res.statusCode === 403) throw await this.#errorFrom(res, 'GET', this.url);
    const index = await this.#send('GET', '/', { retry: true, ...(signal ? { signal } : {}) });
    if (index.statusCode !== 200) throw await this.#errorFrom(index, 'GET', this.url);
    const names = JSON.parse(await readText(index, 1 << 20)) as unknown;
    if (!Array.isArray(names) || !names.includes(area)) throw bitfogError('ENOENT', `${this.url}: the server has no area ${JSON.stringify(area)}`);
    // Whether a classic area lists checksums shows in its listing; until then assume not.
    return { extended: false, checksum: false };
  }

  // ------------------------------------------------------------------ reading

  async *list(options: ListOptions = {}): AsyncIterable<Entry> {
    const { signal, onSkip } = options;
    // Our server lists bitfog's temporary files when asked: the leftovers of an interrupted
    // store are then seen, and removed, like on every other backend.
    const res = await this.#send('GET', this.extended ? `${this.#areaPath}?temp` : this.#areaPath, { retry: true, ...(signal ? { signal } : {}) });
    if (res.statusCode !== 200) throw await this.#errorFrom(res, 'GET', this.url);
    res.setEncoding('utf8');
    const splitter = new RecordSplitter();
    const dirs = new Set<string>();
    this.#crcs.clear();
    const entries = this.extended ? undefined : new Map<string, Entry>();
    this.#classicEntries = undefined;
    try {
      for await (const text of res as AsyncIterable<string>) {
        throwIfAborted(signal);
        for (const json of splitter.push(text)) {
          let rec: WireRecord;
          try {
            rec = parseRecord(json);
          } catch (e) {
            throw bitfogError('EIO', `${this.url}: malformed listing record: ${(e as Error).message}`, { cause: e });
          }
          const entry = this.#entryOf(rec);
          if (typeof entry === 'string') {
            onSkip?.(rec.name, entry);
            continue;
          }
          for (const dir of ancestors(entry.path)) {
            if (dirs.has(dir)) continue;
            dirs.add(dir);
            entries?.set(dir, { path: dir, kind: 'directory', size: 0 });
            yield { path: dir, kind: 'directory', size: 0 };
          }
          entries?.set(entry.path, entry);
          yield { ...entry };
        }
      }
      splitter.end();
      this.#classicEntries = entries;
    } catch (e) {
      if (isBitfogError(e)) throw e;
      if (signal?.aborted) throw abortError(signal);
      throw bitfogError('ETRANSIENT', `${this.url}: listing interrupted`, { cause: e });
    } finally {
      res.destroy();
    }
  }

  /** An Entry from a listing record, or why it is skipped. */
  #entryOf(rec: WireRecord): Entry | string {
    const problem = relPathProblem(rec.name);
    if (problem) return `name cannot be carried (${problem})`;
    const { kind, mode } = fromGoFileMode(rec.mode);
    if (kind === 'other') return 'not a regular file or symlink';
    const path = rec.name as RelPath;
    const mtimeMs = rec.mtimeNs !== undefined ? Number(rec.mtimeNs / 1000n) / 1000 : rec.mtime * 1000;
    const entry: Entry = { path, kind: rec.linkdest !== undefined ? 'symlink' : kind, size: rec.size, mtimeMs };
    if (this.extended) entry.mode = mode;
    if (entry.kind === 'symlink') {
      entry.linkTarget = rec.linkdest ?? '';
      return entry;
    }
    if (entry.kind === 'directory') return entry;
    if (rec.sha256) {
      entry.hash = `sha256:${rec.sha256}`;
      entry.version = entry.hash;
    } else if (rec.hash !== undefined) {
      entry.version = `crc64:${rec.hash}:${rec.size}`;
      this.#crcs.set(path, rec.hash);
    } else if (rec.size === 0) {
      entry.version = 'empty';
    } else {
      // No checksum: size and mtime are all there is; the racy window applies to them.
      entry.version = `size:${rec.size}:${rec.mtimeNs ?? rec.mtime}`;
      entry.changedAtMs = mtimeMs;
    }
    return entry;
  }

  async stat(path: RelPath, options: SignalOption = {}): Promise<Entry> {
    if (this.extended) {
      const res = await this.#send('GET', this.#pathOf(path), { query: 'stat', retry: true, ...signalOf(options) });
      if (res.statusCode !== 200) throw await this.#errorFrom(res, 'stat', path);
      const entry = this.#entryOf(parseRecord(await readText(res, 1 << 20)));
      if (typeof entry === 'string') throw bitfogError('EOPNOTSUPP', `${JSON.stringify(path)}: ${entry}`, { path });
      return entry;
    }
    // A classic server has no stat: find the entry in a listing (see #classicEntries).
    if (!this.#classicEntries) for await (const _ of this.list(options)) void _;
    const found = this.#classicEntries?.get(path);
    if (found) return { ...found };
    throw bitfogError('ENOENT', `${JSON.stringify(path)} does not exist on ${this.url}`, { path });
  }

  async readlink(path: RelPath, options: SignalOption = {}): Promise<string> {
    const e = await this.stat(path, options);
    if (e.kind !== 'symlink') throw bitfogError('EIO', `${JSON.stringify(path)} is not a symlink`, { path });
    return e.linkTarget ?? '';
  }

  /**
   * Streams a file. A full read is verified against its length and, from a classic server,
   * the listed CRC-64 (from ours, the core checks the listed SHA-256); an interrupted transfer is resumed with
   * `Range` + `If-Range` when the server allows it. Throws ENOENT, EISDIR, EINTEGRITY.
   */
  async read(path: RelPath, options: ReadOptions = {}): Promise<Readable> {
    const { signal } = options;
    throwIfAborted(signal);
    const start = options.start ?? 0;
    const end = options.end;
    if (end !== undefined && end <= start) return Readable.from([]);
    const ranged = start > 0 || end !== undefined;
    if (ranged && !this.extended) throw bitfogError('EOPNOTSUPP', `${this.url} does not serve byte ranges`, { path });
    const rangeHeader = (from: number) => `bytes=${from}-${end === undefined ? '' : end - 1}`;
    const first = await this.#send('GET', this.#pathOf(path), {
      retry: true,
      ...signalOf(options),
      ...(ranged ? { headers: { range: rangeHeader(start) } } : {}),
    });
    if (first.statusCode !== (ranged ? 206 : 200)) {
      if (first.statusCode === 416) {
        first.resume();
        return Readable.from([]);
      }
      throw await this.#errorFrom(first, 'read', path);
    }
    const etag = first.headers.etag;
    const resumable = this.extended && first.headers['accept-ranges'] === 'bytes' && typeof etag === 'string';
    const length = first.headers['content-length'] !== undefined ? Number(first.headers['content-length']) : undefined;
    // SHA-256 is not checked here: our server lists it (Entry.hash), and the core verifies
    // every byte it carries against Entry.hash anyway — hashing twice would only cost CPU.
    // A classic server lists no SHA-256, so the listed CRC-64 is the only check there is.
    const wantCrc = !ranged ? this.#crcs.get(path) : undefined;
    const self = this;

    async function* body(): AsyncGenerator<Buffer> {
      const crc = wantCrc !== undefined ? new Crc64() : undefined;
      let got = 0;
      let res: http.IncomingMessage = first;
      let attempts = 0;
      for (;;) {
        try {
          for await (const chunk of chunksOf(res)) {
            got += chunk.length;
            crc?.update(chunk);
            yield chunk;
          }
          if (length !== undefined && got < length) throw bitfogError('ETRANSIENT', 'transfer ended early');
          break;
        } catch (e) {
          res.destroy();
          if (signal?.aborted) throw abortError(signal);
          if (isBitfogError(e) && e.code !== 'ETRANSIENT') throw e;
          if (!resumable || attempts >= self.#settings.retries) {
            throw bitfogError('ETRANSIENT', `${self.url}: download of ${JSON.stringify(path)} interrupted after ${got} bytes`, { cause: e, path });
          }
          attempts++;
          await sleep(backoffMs(attempts), signal);
          res = await self.#send('GET', self.#pathOf(path), {
            retry: true,
            ...signalOf(options),
            headers: { range: rangeHeader(start + got), 'if-range': etag! },
          });
          if (res.statusCode !== 206) {
            res.resume();
            throw bitfogError('ETRANSIENT', `${JSON.stringify(path)} changed on the server during the download`, { path });
          }
        }
      }
      if (length !== undefined && got !== length) {
        throw bitfogError('EINTEGRITY', `${JSON.stringify(path)}: got ${got} bytes, expected ${length}`, { path });
      }
      if (crc && crc.digest() !== wantCrc) {
        throw bitfogError('EINTEGRITY', `${JSON.stringify(path)} does not match its listed CRC-64`, { path });
      }
    }
    return Readable.from(body(), { objectMode: false, highWaterMark: 1 << 20 });
  }

  /**
   * The whole file, read from the socket into a few blocks that are reused (see pieces.ts)
   * and handed to `onPiece` as they fill; checked like `read` (byte count, and the listed
   * CRC-64 from a classic server). An interrupted transfer is resumed after the last byte
   * handed, with `Range` + `If-Range`, where the server allows it. Over https, and with a
   * token that cannot go into a header as it is, EOPNOTSUPP: the core then uses `read`.
   * An answer other than 200 is asked again through `read`, which turns it into the error it means.
   */
  async readPieces(path: RelPath, onPiece: (piece: Uint8Array) => Promise<void>, options: SignalOption = {}): Promise<number> {
    const { signal } = options;
    throwIfAborted(signal);
    const token = this.#settings.token;
    if (this.#base.protocol !== 'http:' || (token !== undefined && !/^[\x21-\x7e]+$/.test(token))) {
      throw bitfogError('EOPNOTSUPP', 'reads in pieces need plain http');
    }
    this.#pieceConnections ??= new PieceConnections(this.#hostname, Number(this.#base.port || 80));
    const connections = this.#pieceConnections;
    const wantCrc = this.#crcs.get(path);
    const crc = wantCrc !== undefined ? new Crc64() : undefined;
    const requestPath = this.#pathOf(path);
    let handed = 0;
    let length: number | undefined;
    let etag: string | undefined;
    let resumable = false;
    let fallBack = false;

    for (let attempt = 0; ; attempt++) {
      const lines = [`GET ${requestPath} HTTP/1.1`, `Host: ${this.#base.host}`, 'User-Agent: bitfog'];
      if (token !== undefined) lines.push(`Authorization: Bearer ${token}`);
      if (handed > 0) lines.push(`Range: bytes=${handed}-`, `If-Range: ${etag}`);
      const head = `${lines.join('\r\n')}\r\n\r\n`;
      let changed = false;
      const onHead = ({ status, headers }: PieceResponseHead): boolean => {
        if (handed === 0) {
          if (status !== 200) return !(fallBack = true);
          const declared = headers.get('content-length');
          if (declared !== undefined) length = Number(declared);
          etag = headers.get('etag');
          resumable = this.extended && headers.get('accept-ranges') === 'bytes' && etag !== undefined;
          return true;
        }
        // Resumed: the rest of the same file, or nothing.
        if (status !== 206 || !headers.get('content-range')?.startsWith(`bytes ${handed}-`)) return !(changed = true);
        return true;
      };
      let result: PieceGetResult = { complete: false };
      let conn: PieceConnection | undefined;
      try {
        conn = await connections.take(signal);
      } catch (e) {
        if (!isTransportError(e)) throw toTransport(e, `${this.url}: GET failed`, signal);
        result = { complete: false, error: e }; // retried below like an interrupted transfer
      }
      if (conn) {
        // Rejects only with what onPiece rejected with: that error stands as it is.
        result = await conn.get(
          head,
          onHead,
          (piece) => {
            handed += piece.length;
            crc?.update(piece);
            return onPiece(piece);
          },
          signal,
        );
        connections.give(conn);
      }
      if (fallBack) break;
      if (changed) throw bitfogError('ETRANSIENT', `${JSON.stringify(path)} changed on the server during the download`, { path });
      if (result.complete) {
        if (length !== undefined && handed !== length) {
          throw bitfogError('EINTEGRITY', `${JSON.stringify(path)}: got ${handed} bytes, expected ${length}`, { path });
        }
        if (crc && crc.digest() !== wantCrc) {
          throw bitfogError('EINTEGRITY', `${JSON.stringify(path)} does not match its listed CRC-64`, { path });
        }
        return handed;
      }
      if (signal?.aborted) throw abortError(signal);
      const err = toTransport(result.error, `${this.url}: GET failed`, signal);
      if (err.code !== 'ETRANSIENT') throw err;
      if ((handed > 0 && !resumable) || attempt >= this.#settings.retries) {
        throw bitfogError('ETRANSIENT', `${this.url}: download of ${JSON.stringify(path)} interrupted after ${handed} bytes`, { cause: result.error, path });
      }
      // A kept connection the server had closed fails at once: try again without waiting.
      if (attempt > 0 || handed > 0) await sleep(backoffMs(attempt + 1), signal);
    }

    // Not a 200: `read` knows what every other answer means.
    for await (const chunk of chunksOf(await this.read(path, options))) {
      handed += chunk.length;
      await onPiece(chunk);
    }
    return handed;
  }

  // ------------------------------------------------------------------ writing

  /**
   * PUTs a whole file (Content-Length, `X-Bitfog-Sha256`, mode and mtime headers). Our
   * server writes it to a temporary name, verifies it and renames it into place, so the
   * write is all-or-nothing. Throws EINTEGRITY (byte count or hash), EROFS, ENOSPC, EISDIR.
   */
  async write(path: RelPath, content: Readable, options: WriteOptions): Promise<void> {
    this.#classicEntries = undefined;
    const { signal, size } = options;
    throwIfAborted(signal);
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(size),
    };
    if (options.hash?.startsWith('sha256:')) headers[H_SHA256] = options.hash.slice(7);
    if (options.mode !== undefined) headers[H_MODE] = (options.mode & 0o7777).toString(8);
    if (options.mtimeMs !== undefined) headers[H_MTIME_NS] = (BigInt(Math.round(options.mtimeMs * 1000)) * 1000n).toString();
    const req = this.#request('PUT', this.#pathOf(path), { headers, ...signalOf(options) });
    const response = waitResponse(req);
    response.catch(() => {});
    let sent = 0;
    try {
      for await (const chunk of chunksOf(content)) {
        throwIfAborted(signal);
        sent += chunk.length;
        if (sent > size) throw bitfogError('EINTEGRITY', `${JSON.stringify(path)}: content is longer than the declared ${size} bytes`, { path });
        if (!req.write(chunk)) await drainOrFail(req, response);
      }
      if (sent !== size) throw bitfogError('EINTEGRITY', `${JSON.stringify(path)}: content has ${sent} bytes, declared ${size}`, { path });
      req.end();
    } catch (e) {
      // Cut the upload: the server discards its temporary file, nothing replaces the old one.
      req.destroy();
      content.destroy();
      if (isBitfogError(e, 'EINTEGRITY', 'EABORTED')) throw e;
      // The server may have answered (and closed) early, refusing the upload: prefer its reason.
      const early = await Promise.race([response.catch(() => undefined), new Promise<undefined>((r) => setImmediate(() => r(undefined)))]);
      if (early && early.statusCode !== 204) throw await this.#errorFrom(early, 'write', path);
      throw toTransport(e, `${this.url}: upload of ${JSON.stringify(path)}`, signal);
    }
    let res: http.IncomingMessage;
    try {
      res = await response;
    } catch (e) {
      throw toTransport(e, `${this.url}: upload of ${JSON.stringify(path)}`, signal);
    }
    if (res.statusCode !== 204) throw await this.#errorFrom(res, 'write', path);
    res.resume();
  }

  /** Directories exist implicitly on the server (a PUT creates the parents). */
  async mkdir(_path: RelPath, options: SignalOption = {}): Promise<void> {
    throwIfAborted(options.signal);
  }

  async remove(path: RelPath, options: SignalOption = {}): Promise<void> {
    this.#classicEntries = undefined;
    await this.#expect204('DELETE', path, { retry: true, ...signalOf(options) }, 'remove');
  }

  /** Removes an empty directory (our server); a classic server cannot, and needs not: empty directories are invisible. */
  async rmdir(path: RelPath, options: SignalOption = {}): Promise<void> {
    if (!this.extended) return;
    await this.#expect204('DELETE', path, { query: 'rmdir', retry: true, ...signalOf(options) }, 'rmdir');
  }

  async symlink(path: RelPath, target: string, options: SignalOption = {}): Promise<void> {
    this.#classicEntries = undefined;
    const body = Buffer.from(target, 'utf8');
    const headers: Record<string, string> = { 'content-type': 'application/symlink', 'content-length': String(body.length) };
    // Our server refuses to replace an existing entry (412 → EEXIST); a classic one replaces it.
    if (this.extended) headers['if-none-match'] = '*';
    await this.#expect204('PUT', path, { headers, body, ...signalOf(options) }, 'symlink');
  }

  async rename(from: RelPath, to: RelPath, options: SignalOption = {}): Promise<void> {
    if (!this.extended) throw bitfogError('EOPNOTSUPP', `${this.url} (a classic server) cannot rename`, { path: from });
    const query = `rename=${to.split('/').map(encodeURIComponent).join('/')}`;
    await this.#expect204('POST', from, { query, ...signalOf(options) }, 'rename');
  }

  async setMetadata(path: RelPath, metadata: Metadata, options: SignalOption = {}): Promise<void> {
    if (!this.extended) return; // a classic server keeps neither modes nor mtimes
    const headers: Record<string, string> = {};
    if (metadata.mode !== undefined) headers[H_MODE] = (metadata.mode & 0o7777).toString(8);
    if (metadata.mtimeMs !== undefined) headers[H_MTIME_NS] = (BigInt(Math.round(metadata.mtimeMs * 1000)) * 1000n).toString();
    if (Object.keys(headers).length === 0) return;
    await this.#expect204('POST', path, { query: 'meta', headers, retry: true, ...signalOf(options) }, 'set metadata of');
  }

  async close(): Promise<void> {
    this.#agent.destroy();
    this.#pieceConnections?.close();
  }

  // ------------------------------------------------------------------ transport

  /** The server's host name or address, an IPv6 address without its URL brackets. */
  get #hostname(): string {
    return this.#base.hostname.replace(/^\[|\]$/g, '');
  }

  #pathOf(path: RelPath): string {
    return this.#areaPath + path.split('/').map(encodeURIComponent).join('/');
  }

  async #expect204(method: string, path: RelPath, options: RequestOptions, what: string): Promise<void> {
    const res = await this.#send(method, this.#pathOf(path), options);
    if (res.statusCode !== 204) throw await this.#errorFrom(res, what, path);
    res.resume();
  }

  #request(method: string, requestPath: string, options: RequestOptions): http.ClientRequest {
    const headers: Record<string, string> = { 'user-agent': 'bitfog', ...options.headers };
    if (this.#settings.token) headers.authorization = `Bearer ${this.#settings.token}`;
    const mod = this.#base.protocol === 'https:' ? https : http;
    return mod.request({
      protocol: this.#base.protocol,
      hostname: this.#hostname,
      port: this.#base.port || (this.#base.protocol === 'https:' ? 443 : 80),
      method,
      path: requestPath + (options.query ? `?${options.query}` : ''),
      headers,
      agent: this.#agent,
      ...(options.signal ? { signal: options.signal } : {}),
    });
  }

  /** Sends a request with a small or no body; retries transient failures with backoff when `retry`. */
  async #send(method: string, requestPath: string, options: RequestOptions): Promise<http.IncomingMessage> {
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(options.signal);
      const req = this.#request(method, requestPath, options);
      const response = waitResponse(req);
      req.end(options.body);
      let res: http.IncomingMessage;
      try {
        res = await response;
      } catch (e) {
        const err = toTransport(e, `${this.url}: ${method} failed`, options.signal);
        if (options.retry && err.code === 'ETRANSIENT' && attempt < this.#settings.retries) {
          await sleep(backoffMs(attempt + 1), options.signal);
          continue;
        }
        throw err;
      }
      if (options.retry && STATUS_RETRY.has(res.statusCode ?? 0) && attempt < this.#settings.retries) {
        res.resume();
        const after = Number(res.headers['retry-after']);
        await sleep(Number.isFinite(after) && after > 0 ? Math.min(after, 30) * 1000 : backoffMs(attempt + 1), options.signal);
        continue;
      }
      return res;
    }
  }

  /** The BitfogError an unexpected response stands for (our server names the code in a header). */
  async #errorFrom(res: http.IncomingMessage, what: string, path: string): Promise<BitfogError> {
    const status = res.statusCode ?? 0;
    const text = await readText(res, 512).catch(() => '');
    const named = headerValue(res.headers[H_ERROR]);
    let code: ErrorCode;
    if (named && KNOWN_CODES.has(named)) code = named as ErrorCode;
    else if (status === 401 || status === 403) code = 'EAUTH';
    else if (status === 404) code = 'ENOENT';
    else if (status === 405) code = 'EROFS';
    else if (status === 400 && text.startsWith('Error getting file info.')) code = 'ENOENT';
    else if (status === 400 && text.startsWith("That's not a file.")) code = 'EISDIR';
    else if (status === 412) code = 'EEXIST';
    else if (status === 507) code = 'ENOSPC';
    else if (status >= 500) code = 'ETRANSIENT';
    else code = 'EIO';
    if (code === 'EBADPATH' || code === 'EUSAGE') code = 'EIO';
    const firstLine = text.split('\n')[0]!.slice(0, 200);
    const subject = path === this.url ? this.url : `${JSON.stringify(path)} on ${this.url}`;
    return bitfogError(code, `cannot ${what} ${subject}: ${status} ${firstLine}`.trim(), path === this.url ? {} : { path });
  }
}

function settingsFrom(env: NodeJS.ProcessEnv): Settings {
  const settings: Settings = {
    connections: positiveInt(env.BITFOG_HTTP_CONNECTIONS, 4, 'BITFOG_HTTP_CONNECTIONS'),
    retries: positiveInt(env.BITFOG_HTTP_RETRIES, 4, 'BITFOG_HTTP_RETRIES', true),
  };
  let token = env.BITFOG_HTTP_TOKEN?.trim();
  if (!token && env.BITFOG_HTTP_TOKEN_FILE) {
    try {
      token = readFileSync(env.BITFOG_HTTP_TOKEN_FILE, 'utf8').trim();
    } catch (e) {
      throw bitfogError('EAUTH', `cannot read BITFOG_HTTP_TOKEN_FILE: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
  }
  if (token) settings.token = token;
  if (env.BITFOG_HTTP_CA_FILE) {
    try {
      settings.ca = readFileSync(env.BITFOG_HTTP_CA_FILE);
    } catch (e) {
      throw bitfogError('EUSAGE', `cannot read BITFOG_HTTP_CA_FILE: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
    }
  }
  return settings;
}

function positiveInt(raw: string | undefined, fallback: number, name: string, zeroOk = false): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < (zeroOk ? 0 : 1)) throw bitfogError('EUSAGE', `${name} must be a ${zeroOk ? 'non-negative' : 'positive'} integer`);
  return n;
}

function signalOf(options: SignalOption): { signal?: AbortSignal } {
  return options.signal ? { signal: options.signal } : {};
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function waitResponse(req: http.ClientRequest): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
}

function drainOrFail(req: http.ClientRequest, response: Promise<http.IncomingMessage>): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      req.off('drain', done);
      req.off('close', done);
      req.off('error', fail);
      resolve();
    };
    const fail = (e: Error) => {
      req.off('drain', done);
      req.off('close', done);
      reject(e);
    };
    req.once('drain', done);
    req.once('error', fail);
    req.once('close', done);
    response.then(
      (res) => {
        // The server answered before taking the whole body: it refused it.
        if (res.statusCode !== 204) reject(bitfogError('EIO', `server answered ${res.statusCode} during the upload`));
      },
      reject,
    );
  });
}

async function readText(res: http.IncomingMessage, limit: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res as AsyncIterable<Buffer>) {
    if (n < limit) chunks.push(c.subarray(0, limit - n));
    n += c.length;
  }
  return Buffer.concat(chunks).toString('utf8');
}

const TLS_CODES = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
]);

/** A transport failure as a BitfogError: TLS → EHOSTKEY, refused → EUNREACHABLE, resets → ETRANSIENT. */
function toTransport(e: unknown, what: string, signal?: AbortSignal): BitfogError {
  if (isBitfogError(e)) return e;
  if (signal?.aborted) return abortError(signal);
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && TLS_CODES.has(code)) {
    return bitfogError('EHOSTKEY', `${what}: the server's TLS certificate is not trusted (${code}); set BITFOG_HTTP_CA_FILE`, { cause: e });
  }
  // What an https:// URL to a plain-http server meets: no TLS answer at all.
  if (typeof code === 'string' && (code === 'EPROTO' || code.startsWith('ERR_SSL_'))) {
    return bitfogError('EUNREACHABLE', `${what}: TLS handshake failed (${code}); is this really an https server? (http:// for a plain one)`, { cause: e });
  }
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'ETIMEDOUT' || code === 'ECONNABORTED' || code === 'UND_ERR_SOCKET') {
    return bitfogError('ETRANSIENT', `${what}: ${code}`, { cause: e });
  }
  return toBitfogError(e, what);
}

/** A failure to reach or keep a connection (not an answer, not our own error). */
function isTransportError(e: unknown): boolean {
  return !isBitfogError(e) && typeof (e as { code?: unknown } | null)?.code === 'string';
}

function backoffMs(attempt: number): number {
  return Math.min(10_000, 250 * 2 ** (attempt - 1)) * (0.75 + Math.random() / 2);
}
