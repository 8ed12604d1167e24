/**
 * OpenSSH known_hosts files: reading, matching a host's key, and appending a new one.
 *
 * Supported, as OpenSSH's sshd(8) "SSH_KNOWN_HOSTS FILE FORMAT" describes: plain host
 * patterns with `*` and `?` wildcards and `!` negation, comma-separated; `[host]:port`
 * for non-standard ports; hashed names (`|1|salt|hash`, HMAC-SHA1 of the name keyed with
 * the salt); the `@revoked` marker. `@cert-authority` lines are ignored (no certificates).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';

export interface KnownHostLine {
  marker?: 'revoked' | 'cert-authority';
  patterns: string;
  keyType: string;
  key: Buffer;
}

export type HostKeyVerdict =
  /** A known key matches. */
  | { status: 'ok' }
  /** No key of this type is known for the host. `otherTypes` lists the types that are known. */
  | { status: 'unknown'; otherTypes: string[] }
  /** Keys of this type are known for the host, and this is not one of them. */
  | { status: 'changed' }
  /** The key is listed as revoked. */
  | { status: 'revoked' };

/** The name a host is filed under: `host` on port 22, `[host]:port` otherwise. */
export function knownHostsName(host: string, port: number): string {
  const h = host.toLowerCase();
  return port === 22 ? h : `[${h}]:${port}`;
}

/** Parses the text of a known_hosts file; malformed lines are skipped. */
export function parseKnownHosts(text: string): KnownHostLine[] {
  const out: KnownHostLine[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const fields = line.split(/\s+/);
    let marker: KnownHostLine['marker'];
    if (fields[0] === '@revoked' || fields[0] === '@cert-authority') {
      marker = fields.shift()!.slice(1) as KnownHostLine['marker'];
    } else if (fields[0]?.startsWith('@')) {
      continue;
    }
    const [patterns, keyType, b64] = fields;
    if (!patterns || !keyType || !b64 || !/^[A-Za-z0-9+/]+=*$/.test(b64)) continue;
    const key = Buffer.from(b64, 'base64');
    out.push({ ...(marker ? { marker } : {}), patterns, keyType, key });
  }
  return out;
}

/** True when `name` matches the host-pattern field of a known_hosts line. */
export function hostMatches(patterns: string, name: string): boolean {
  if (patterns.startsWith('|1|')) return hashedMatches(patterns, name);
  let matched = false;
  for (const raw of patterns.split(',')) {
    const negated = raw.startsWith('!');
    const pattern = (negated ? raw.slice(1) : raw).toLowerCase();
    if (wildcardMatch(pattern, name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

function hashedMatches(field: string, name: string): boolean {
  const parts = field.split('|'); // ['', '1', salt, hash]
  if (parts.length !== 4) return false;
  const salt = Buffer.from(parts[2]!, 'base64');
  const want = Buffer.from(parts[3]!, 'base64');
  const got = createHmac('sha1', salt).update(name).digest();
  return want.length === got.length && timingSafeEqual(want, got);
}

function wildcardMatch(pattern: string, s: string): boolean {
  // Glob with * and ? only; everything else literal (brackets included, as in [host]:port).
  const re = new RegExp(
    '^' +
      pattern
        .split('')
        .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
        .join('') +
      '$',
    's',
  );
  return re.test(s);
}

/** The key type named inside an SSH public key blob (`ssh-ed25519`, `ssh-rsa`, …). */
export function keyTypeOf(blob: Buffer): string {
  if (blob.length < 4) return 'unknown';
  const n = blob.readUInt32BE(0);
  if (n > blob.length - 4 || n > 64) return 'unknown';
  return blob.subarray(4, 4 + n).toString('latin1');
}

/** `SHA256:<base64>` as `ssh-keygen -l` shows it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
}

/** Decides whether `key` (a raw public key blob) is the known key of `host`:`port`. */
export function verifyHostKey(lines: KnownHostLine[], host: string, port: number, key: Buffer): HostKeyVerdict {
  const name = knownHostsName(host, port);
  const type = keyTypeOf(key);
  const forHost = lines.filter((l) => l.marker !== 'cert-authority' && hostMatches(l.patterns, name));
  if (forHost.some((l) => l.marker === 'revoked' && l.key.equals(key))) return { status: 'revoked' };
  const known = forHost.filter((l) => l.marker === undefined);
  if (known.some((l) => l.key.equals(key))) return { status: 'ok' };
  const sameType = known.filter((l) => keyTypeOf(l.key) === type || l.keyType === type);
  if (sameType.length > 0) return { status: 'changed' };
  return { status: 'unknown', otherTypes: [...new Set(known.map((l) => l.keyType))] };
}

/** The key types known for a host, to ask the server for one of those first. */
export function knownKeyTypes(lines: KnownHostLine[], host: string, port: number): string[] {
  const name = knownHostsName(host, port);
  return [...new Set(lines.filter((l) => l.marker === undefined && hostMatches(l.patterns, name)).map((l) => l.keyType))];
}

/** Reads and parses the given files; missing files count as empty. */
export async function readKnownHosts(files: string[]): Promise<KnownHostLine[]> {
  const out: KnownHostLine[] = [];
  for (const file of files) {
    try {
      out.push(...parseKnownHosts(await fsp.readFile(file, 'utf8')));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  return out;
}

/**
 * Appends `host`:`port` with `key` to `file` (creating it, and its directory with mode
 * 0700, when missing), on a line of its own.
 */
export async function appendKnownHost(file: string, host: string, port: number, key: Buffer): Promise<void> {
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  let prefix = '';
  try {
    const handle = await fsp.open(file, 'r');
    try {
      const { size } = await handle.stat();
      if (size > 0) {
        const last = Buffer.alloc(1);
        await handle.read(last, 0, 1, size - 1);
        if (last[0] !== 0x0a) prefix = '\n';
      }
    } finally {
      await handle.close();
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const line = `${prefix}${knownHostsName(host, port)} ${keyTypeOf(key)} ${key.toString('base64')}\n`;
  await fsp.appendFile(file, line, { mode: 0o600 });
}
