/**
 * The bitfog-HTTP wire format, shared by the client backend and the server: header
 * names, Go FileMode bits, and listing records.
 *
 * Classic protocol (what the original Go server and client speak): a listing is NDJSON,
 * one object per non-directory entry, fields in the order `name, size, mode, mtime, hash,
 * linkdest`; `mode` is Go's os.FileMode, `mtime` whole seconds, `hash` the CRC-64/GO-ISO as
 * a bare unsigned 64-bit integer (never through a JS number: it exceeds 2^53).
 *
 * Our additions, ignored by classic clients (Go's decoder skips unknown fields):
 *   `sha256`   hex SHA-256 of the content (areas with checksum), so clients need not read it;
 *   `mtime_ns` the modification time in nanoseconds, as an exact integer.
 * Extension requests are only sent to servers that answer `GET /.bitfog/info` (a classic
 * server says 404 there, since no area may be named `.bitfog`). Every answer of such a
 * server carries `X-Bitfog-Protocol: 1`, and errors carry `X-Bitfog-Error: <code>`.
 *
 *   GET  /.bitfog/info?area=A      {"protocol":1,"writable":bool,"checksum":bool}
 *   GET  /A/?temp                  the listing with bitfog's temporary files (.bitfog-tmp-…)
 *                                  too, unhashed: a store removes an interrupted one's leftovers
 *   GET  /A/path?stat              one listing record for any entry (directories too:
 *                                  mode has Go's ModeDir bit), 404 when missing
 *   GET  /A/path  + Range          206 with Content-Range (one range; If-Range honoured),
 *                                  ETag, Last-Modified, If-None-Match → 304, and
 *                                  X-Bitfog-Sha256 when the server knows the hash; HEAD too
 *   PUT  /A/path                   written to a temporary name and renamed into place;
 *                                  X-Bitfog-Sha256 verified first (400 + EINTEGRITY on a
 *                                  mismatch), X-Bitfog-Mode (octal) and X-Bitfog-Mtime-Ns
 *                                  applied; `If-None-Match: *` → 412 when the name exists
 *   POST /A/from?rename=to         atomic rename within the area (`to` percent-encoded)
 *   POST /A/path?meta              sets X-Bitfog-Mode / X-Bitfog-Mtime-Ns
 *   DELETE /A/dir?rmdir            removes an empty directory
 */
import { parse as parseLossless, isLosslessNumber } from 'lossless-json';

/** Response header naming our stable error code (ENOENT, EISDIR, ...); absent on classic servers. */
export const H_ERROR = 'x-bitfog-error';
/** Request/response header: hex SHA-256 of the body (PUT: verified before the file replaces anything). */
export const H_SHA256 = 'x-bitfog-sha256';
/** Request header: permission bits (octal) to set on the uploaded file. */
export const H_MODE = 'x-bitfog-mode';
/** Request header: modification time in nanoseconds since the epoch to set on the uploaded file. */
export const H_MTIME_NS = 'x-bitfog-mtime-ns';
/** Response header on every answer of an extended (non-classic) server. */
export const H_PROTOCOL = 'x-bitfog-protocol';
export const PROTOCOL_VERSION = '1';
/** Path of the extension endpoint describing an area: `GET /.bitfog/info?area=NAME`. */
export const INFO_PATH = '/.bitfog/info';

export const GO_MODE_DIR = 2 ** 31;
export const GO_MODE_SYMLINK = 2 ** 27;
export const GO_MODE_DEVICE = 2 ** 26;
export const GO_MODE_NAMED_PIPE = 2 ** 25;
export const GO_MODE_SOCKET = 2 ** 24;
export const GO_MODE_SETUID = 2 ** 23;
export const GO_MODE_SETGID = 2 ** 22;
export const GO_MODE_CHAR_DEVICE = 2 ** 21;
export const GO_MODE_STICKY = 2 ** 20;

/** Go os.FileMode bits of an entry with POSIX permission bits `mode` (0o7777 range). */
export function goFileMode(kind: 'file' | 'symlink' | 'directory', mode: number): number {
  let m = mode & 0o777;
  if (mode & 0o4000) m += GO_MODE_SETUID;
  if (mode & 0o2000) m += GO_MODE_SETGID;
  if (mode & 0o1000) m += GO_MODE_STICKY;
  if (kind === 'symlink') m += GO_MODE_SYMLINK;
  if (kind === 'directory') m += GO_MODE_DIR;
  return m;
}

/** POSIX permission bits (0o7777 range) and kind from Go os.FileMode bits. */
export function fromGoFileMode(goMode: number): { kind: 'file' | 'symlink' | 'directory' | 'other'; mode: number } {
  // Go FileMode is a uint32; classic servers emit it as int32, so normalise a negative value.
  const m = goMode < 0 ? goMode + 2 ** 32 : goMode;
  const bit = (b: number) => Math.floor(m / b) % 2 === 1;
  let mode = m % 512;
  if (bit(GO_MODE_SETUID)) mode |= 0o4000;
  if (bit(GO_MODE_SETGID)) mode |= 0o2000;
  if (bit(GO_MODE_STICKY)) mode |= 0o1000;
  const kind = bit(GO_MODE_DIR)
    ? 'directory'
    : bit(GO_MODE_SYMLINK)
      ? 'symlink'
      : bit(GO_MODE_DEVICE) || bit(GO_MODE_NAMED_PIPE) || bit(GO_MODE_SOCKET)
        ? 'other'
        : 'file';
  return { kind, mode };
}

/** One listing record as it travels. */
export interface WireRecord {
  name: string;
  size: number;
  /** Go FileMode bits. */
  mode: number;
  /** Whole seconds. */
  mtime: number;
  /** CRC-64/GO-ISO; omitted when 0 or unknown. */
  hash?: bigint;
  linkdest?: string;
  /** Our addition: hex SHA-256. */
  sha256?: string;
  /** Our addition: exact nanoseconds. */
  mtimeNs?: bigint;
}

/**
 * Encodes a string the way Go's encoding/json does by default, so classic tools that
 * compare bytes see the same thing: `& < >` and U+2028/U+2029 as \u escapes, short escapes
 * for `" \ \n \r \t`, other control characters as \u00XX, everything else raw.
 */
export function goJsonString(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x26 || c === 0x3c || c === 0x3e || c === 0x2028 || c === 0x2029) {
      esc =
        c === 0x22 ? '\\"' : c === 0x5c ? '\\\\' : c === 0x0a ? '\\n' : c === 0x0d ? '\\r' : c === 0x09 ? '\\t' : `\\u${c.toString(16).padStart(4, '0')}`;
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

/** One NDJSON line (with its `\n`) for a record, byte-compatible with the classic server. */
export function encodeRecord(r: WireRecord, extended: boolean): string {
  let line = `{"name":${goJsonString(r.name)},"size":${r.size},"mode":${r.mode},"mtime":${r.mtime}`;
  if (r.hash !== undefined && r.hash !== 0n) line += `,"hash":${r.hash.toString()}`;
  if (r.linkdest) line += `,"linkdest":${goJsonString(r.linkdest)}`;
  if (extended) {
    if (r.sha256) line += `,"sha256":"${r.sha256}"`;
    if (r.mtimeNs !== undefined) line += `,"mtime_ns":${r.mtimeNs.toString()}`;
  }
  return line + '}\n';
}

function intField(v: unknown, what: string): bigint | undefined {
  if (v === undefined || v === null) return undefined;
  if (isLosslessNumber(v)) {
    const text = v.toString();
    if (!/^-?\d+$/.test(text)) throw new Error(`${what} is not an integer: ${text}`);
    return BigInt(text);
  }
  throw new Error(`${what} is not a number`);
}

/**
 * Parses one JSON object of a listing with full integer precision (lossless-json keeps
 * the digits; `hash` becomes a BigInt). Throws on anything that is not such an object.
 */
export function parseRecord(text: string): WireRecord {
  const o = parseLossless(text) as Record<string, unknown> | unknown[] | null;
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new Error('listing record is not a JSON object');
  const num = (k: string) => {
    const v = intField(o[k], k);
    return v === undefined ? 0 : Number(v);
  };
  const rec: WireRecord = {
    name: typeof o.name === 'string' ? o.name : '',
    size: num('size'),
    mode: num('mode'),
    mtime: num('mtime'),
  };
  const hash = intField(o.hash, 'hash');
  if (hash !== undefined && hash !== 0n) {
    if (hash < 0n || hash >= 1n << 64n) throw new Error('hash is not an unsigned 64-bit integer');
    rec.hash = hash;
  }
  if (typeof o.linkdest === 'string' && o.linkdest !== '') rec.linkdest = o.linkdest;
  if (typeof o.sha256 === 'string' && /^[0-9a-f]{64}$/.test(o.sha256)) rec.sha256 = o.sha256;
  const ns = intField(o.mtime_ns, 'mtime_ns');
  if (ns !== undefined) rec.mtimeNs = ns;
  return rec;
}

/**
 * Splits a stream of text into the JSON objects of a listing. Classic clients accept any
 * whitespace between objects (CRLF, pretty-printed objects), so this scans for balanced
 * braces outside strings rather than splitting on newlines.
 */
export class RecordSplitter {
  #buf = '';
  #depth = 0;
  #inString = false;
  #escaped = false;
  #start = -1;
  #pos = 0;

  /** Feeds text; returns the complete objects found so far. */
  push(text: string): string[] {
    this.#buf += text;
    const out: string[] = [];
    const b = this.#buf;
    for (let i = this.#pos; i < b.length; i++) {
      const c = b.charCodeAt(i);
      if (this.#inString) {
        if (this.#escaped) this.#escaped = false;
        else if (c === 0x5c) this.#escaped = true;
        else if (c === 0x22) this.#inString = false;
        continue;
      }
      if (c === 0x22) this.#inString = true;
      else if (c === 0x7b) {
        if (this.#depth === 0) this.#start = i;
        this.#depth++;
      } else if (c === 0x7d) {
        this.#depth--;
        if (this.#depth === 0) {
          out.push(b.slice(this.#start, i + 1));
          this.#start = -1;
        } else if (this.#depth < 0) throw new Error('unbalanced "}" in listing');
      } else if (this.#depth === 0 && c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) {
        throw new Error(`unexpected ${JSON.stringify(String.fromCharCode(c))} between listing records`);
      }
    }
    // Keep only the unfinished object.
    if (this.#depth === 0) {
      this.#buf = '';
      this.#pos = 0;
    } else {
      this.#buf = b.slice(this.#start);
      this.#pos = this.#buf.length;
      this.#start = 0;
    }
    return out;
  }

  /** Throws when the stream ended inside an object (a truncated listing). */
  end(): void {
    if (this.#depth !== 0 || this.#inString) throw new Error('listing ends in the middle of a record');
  }
}
