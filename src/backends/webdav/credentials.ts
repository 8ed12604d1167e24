/**
 * Where WebDAV credentials come from, first match wins for each of user and password:
 *
 * 1. the URL's user part: `webdav://user:password@host/path/` (percent-encoded), or just
 *    `webdav://user@host/…` to pick a login whose password comes from below;
 * 2. the environment: `BITFOG_WEBDAV_USER`, `BITFOG_WEBDAV_PASSWORD`;
 * 3. a netrc-style file: `BITFOG_NETRC`, else `~/.netrc` — the `machine <host>` entry
 *    (matching the login when one is already known), else `default`.
 *
 * No credentials at all is allowed (an anonymous share). Credentials are never put into
 * messages, errors or the backend's `url`.
 */
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';

export interface Credentials {
  user?: string;
  password?: string;
}

export function resolveCredentials(url: URL, env: NodeJS.ProcessEnv): Credentials {
  let user = url.username ? safeDecode(url.username) : undefined;
  let password = url.password ? safeDecode(url.password) : undefined;
  const envUser = env.BITFOG_WEBDAV_USER || undefined;
  user ??= envUser;
  // The environment's password belongs to the environment's user (or to any user when none is set).
  if (password === undefined && env.BITFOG_WEBDAV_PASSWORD !== undefined && (envUser === undefined || envUser === user)) {
    password = env.BITFOG_WEBDAV_PASSWORD;
  }
  if (password === undefined) {
    const entry = netrcEntry(netrcFile(env), url.hostname, user);
    if (entry) {
      user ??= entry.login;
      if (entry.login === undefined || entry.login === user) password = entry.password;
    }
  }
  return { ...(user === undefined ? {} : { user }), ...(password === undefined ? {} : { password }) };
}

function netrcFile(env: NodeJS.ProcessEnv): string | undefined {
  if (env.BITFOG_NETRC) return env.BITFOG_NETRC;
  const home = env.HOME || homedir();
  return home ? path.join(home, '.netrc') : undefined;
}

interface NetrcEntry {
  login?: string;
  password?: string;
}

/**
 * The netrc entry for `host`: the first `machine host` whose login matches `login` (when
 * given), else `default`. A missing or unreadable file is no entry.
 */
export function netrcEntry(file: string | undefined, host: string, login?: string): NetrcEntry | undefined {
  if (!file) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const tokens = tokenize(text);
  let fallback: NetrcEntry | undefined;
  let i = 0;
  while (i < tokens.length) {
    const t = tokens[i++]!;
    if (t === 'machine' || t === 'default') {
      const machine = t === 'machine' ? tokens[i++] : undefined;
      const entry: NetrcEntry = {};
      while (i < tokens.length && tokens[i] !== 'machine' && tokens[i] !== 'default' && tokens[i] !== 'macdef') {
        const key = tokens[i++]!;
        const value = tokens[i++];
        if (key === 'login') entry.login = value;
        else if (key === 'password') entry.password = value;
      }
      const loginOk = login === undefined || entry.login === undefined || entry.login === login;
      if (machine !== undefined && machine.toLowerCase() === host.toLowerCase() && loginOk) return entry;
      if (machine === undefined && loginOk) fallback ??= entry;
    } else if (t === 'macdef') {
      // Macros come last in practice; their bodies are not credentials. Stop here.
      break;
    }
  }
  return fallback;
}

/** Whitespace-separated tokens; double quotes allow spaces in a value. */
function tokenize(text: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|([^\s"]+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
