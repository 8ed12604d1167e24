/**
 * `sftp://` URLs and the options that go with them. Light: no SSH library is loaded here.
 *
 *   sftp://user@host[:port]/absolute/path/on/the/server/[?option=value&...]
 *
 * The path is absolute on the server (`sftp://me@nas/srv/photos` is `/srv/photos`), so
 * `sftp://me@nas/` is the server's root directory. To name a directory relative to the
 * login (home) directory, start the path with `~`: `sftp://me@nas/~/photos`.
 * Percent-encoded bytes in the path are decoded (`/my%20files`).
 *
 * Options (query parameters, each with an environment variable that does the same; the
 * URL wins):
 *   key=FILE                   private key to use (BITFOG_SFTP_KEY); its passphrase only
 *                              from BITFOG_SFTP_PASSPHRASE
 *   known_hosts=FILE           known_hosts file to check host keys against
 *                              (BITFOG_SFTP_KNOWN_HOSTS; default ~/.ssh/known_hosts and
 *                              /etc/ssh/ssh_known_hosts)
 *   accept_new_host_key=1      accept a host key that is not known yet and append it to the
 *                              known_hosts file (BITFOG_SFTP_ACCEPT_NEW_HOST_KEY=1); a key
 *                              that differs from a known one is never accepted
 *   concurrency=N              at most this many files transferred at once (default 8; the
 *                              core moves up to 4 in a fetch, 8 in a store)
 *   requests=N                 read/write requests in flight per file (default 16; 1 for
 *                              servers that mishandle parallel writes)
 * A password is never taken from the URL: set BITFOG_SFTP_PASSWORD.
 */
import { bitfogError } from '../../core/errors.ts';

export interface SftpTarget {
  user: string | undefined;
  host: string;
  port: number;
  /** Server path of the root, decoded; absolute, or starting with `~` for the login directory. */
  path: string;
  /** The URL without query or credentials, for messages. */
  displayUrl: string;
  key?: string;
  knownHosts?: string;
  acceptNewHostKey: boolean;
  concurrency: number;
  requests: number;
}

export const DEFAULT_CONCURRENCY = 8;
export const DEFAULT_REQUESTS = 16;
const KNOWN_OPTIONS = new Set(['key', 'known_hosts', 'accept_new_host_key', 'concurrency', 'requests']);

/**
 * Parses an `sftp://` URL with its options, filling gaps from `env`.
 * Throws EBADURL for a malformed URL, a password in the URL, or an unknown option.
 */
export function parseSftpUrl(url: string, env: NodeJS.ProcessEnv = process.env): SftpTarget {
  let u: URL;
  try {
    u = new URL(url);
  } catch (e) {
    throw bitfogError('EBADURL', `invalid sftp URL: ${redact(url)}`, { cause: e });
  }
  if (u.protocol !== 'sftp:') throw bitfogError('EBADURL', `not an sftp:// URL: ${redact(url)}`);
  if (u.password) {
    throw bitfogError('EBADURL', 'sftp URLs must not contain a password; set BITFOG_SFTP_PASSWORD instead');
  }
  // A URL parser ends the path at "#": ".../photos#2" would name .../photos, a different directory.
  if (url.includes('#')) throw bitfogError('EBADURL', `an sftp URL has no fragment: percent-encode "#" as %23 in the path (${redact(url)})`);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw bitfogError('EBADURL', `sftp URL without a host: ${redact(url)}`);
  const port = u.port ? Number(u.port) : 22;
  let path: string;
  try {
    path = u.pathname
      .split('/')
      .map((s) => decodeURIComponent(s))
      .join('/');
  } catch (e) {
    throw bitfogError('EBADURL', `invalid percent-encoding in sftp URL path: ${redact(url)}`, { cause: e });
  }
  if (path.includes('\0')) throw bitfogError('EBADURL', 'sftp URL path contains NUL');
  // "/~/x" and "/~" name the login directory; everything else is absolute.
  if (path === '/~' || path.startsWith('/~/')) path = path.slice(1);
  path = path.replace(/\/+$/, '') || '/';
  if (path === '') path = '/';

  for (const name of u.searchParams.keys()) {
    if (!KNOWN_OPTIONS.has(name)) {
      throw bitfogError('EBADURL', `unknown sftp URL option "${name}" (known: ${[...KNOWN_OPTIONS].join(', ')}; a "?" in a path is written %3F)`);
    }
  }
  const q = (name: string) => u.searchParams.get(name) ?? undefined;
  const key = q('key') ?? nonEmpty(env.BITFOG_SFTP_KEY);
  const knownHosts = q('known_hosts') ?? nonEmpty(env.BITFOG_SFTP_KNOWN_HOSTS);
  const acceptNewHostKey = truthy(q('accept_new_host_key') ?? env.BITFOG_SFTP_ACCEPT_NEW_HOST_KEY);
  const concurrency = positiveInt('concurrency', q('concurrency'), DEFAULT_CONCURRENCY);
  const requests = positiveInt('requests', q('requests'), DEFAULT_REQUESTS);

  const user = u.username ? decodeURIComponent(u.username) : undefined;
  const hostPart = host.includes(':') ? `[${host}]` : host;
  const displayUrl = `sftp://${user ? `${encodeURIComponent(user)}@` : ''}${hostPart}${port === 22 ? '' : `:${port}`}${u.pathname}`;
  return {
    user,
    host,
    port,
    path,
    displayUrl,
    ...(key === undefined ? {} : { key }),
    ...(knownHosts === undefined ? {} : { knownHosts }),
    acceptNewHostKey,
    concurrency,
    requests,
  };
}

function nonEmpty(s: string | undefined): string | undefined {
  return s === undefined || s === '' ? undefined : s;
}

function truthy(v: string | undefined): boolean {
  return v !== undefined && /^(1|true|yes|on)$/i.test(v);
}

function positiveInt(name: string, raw: string | undefined, dflt: number): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 1024) {
    throw bitfogError('EBADURL', `sftp URL option ${name} must be an integer from 1 to 1024, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** The URL with any password and query removed, for error messages. */
function redact(url: string): string {
  return url.replace(/^(sftp:\/\/[^:/@]*):[^@/]*@/i, '$1:***@').replace(/\?.*$/s, '');
}
