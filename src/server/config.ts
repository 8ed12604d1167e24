/**
 * The server's configuration: the classic `bitfog.json` file map, area name →
 * `{"path", "writable", "checksum"}` (missing booleans are false, unknown keys ignored), plus
 * our optional per-area token settings.
 *
 * `path` may be an absolute local path (with or without a trailing slash: areas are served
 * through the backend interfaces, which confine every request to the area whatever its
 * spelling), a path relative to the directory of the configuration file, or the URL of any
 * registered backend (`file:///srv/x`). An area whose directory does not exist fails the
 * start-up with a clear message instead of failing (or widening) later.
 *
 * Per-area tokens (all optional): `readTokenFile`, `writeTokenFile` (file whose content,
 * trimmed, is the token; relative to the config file) and `readTokenEnv`, `writeTokenEnv`
 * (name of an environment variable holding it).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { bitfogError } from '../core/errors.ts';

export interface AreaConfig {
  /** Backend URL or absolute local path of the area's root. */
  url: string;
  writable: boolean;
  /** List CRC-64 (`hash`) and SHA-256 of files. */
  checksum: boolean;
  /** Token granting reads (a write token grants reads too). */
  readToken?: string;
  /** Token granting writes. */
  writeToken?: string;
}

export type AreasConfig = Map<string, AreaConfig>;

/** Area names must be one plain URL segment; `.bitfog` is reserved for our extension endpoints. */
export function areaNameProblem(name: string): string | undefined {
  if (name === '' || name === '.' || name === '..') return 'empty or a dot name';
  if (name.startsWith('.')) return 'starts with "."';
  if (/[/\\\0]/.test(name)) return 'contains "/", "\\" or NUL';
  return undefined;
}

/** Reads a classic `bitfog.json`. Throws EUSAGE with a message naming the problem. */
export function loadConfigFile(file: string, env: NodeJS.ProcessEnv = process.env): AreasConfig {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw bitfogError('EUSAGE', `cannot read configuration ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw bitfogError('EUSAGE', `configuration ${file} is not valid JSON: ${(e as Error).message}`, { cause: e });
  }
  return parseConfig(raw, path.dirname(path.resolve(file)), env, file);
}

/** Validates a parsed configuration object; relative paths resolve against `baseDir`. */
export function parseConfig(raw: unknown, baseDir: string, env: NodeJS.ProcessEnv = process.env, what = 'configuration'): AreasConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw bitfogError('EUSAGE', `${what} must be a JSON object mapping area names to {"path", "writable", "checksum"}`);
  }
  const areas: AreasConfig = new Map();
  for (const [name, value] of Object.entries(raw as Record<string, unknown>)) {
    const problem = areaNameProblem(name);
    if (problem) throw bitfogError('EUSAGE', `${what}: area name ${JSON.stringify(name)} ${problem}`);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      throw bitfogError('EUSAGE', `${what}: area ${JSON.stringify(name)} must be an object with a "path"`);
    }
    const v = value as Record<string, unknown>;
    if (typeof v.path !== 'string' || v.path === '') {
      throw bitfogError('EUSAGE', `${what}: area ${JSON.stringify(name)} has no "path"`);
    }
    const bool = (k: string) => {
      if (v[k] === undefined) return false;
      if (typeof v[k] !== 'boolean') throw bitfogError('EUSAGE', `${what}: area ${JSON.stringify(name)}: "${k}" must be true or false`);
      return v[k] as boolean;
    };
    const token = (kind: 'read' | 'write'): string | undefined => {
      const fileKey = `${kind}TokenFile`;
      const envKey = `${kind}TokenEnv`;
      if (typeof v[fileKey] === 'string') return readTokenFile(path.resolve(baseDir, v[fileKey] as string));
      if (typeof v[envKey] === 'string') {
        const t = env[v[envKey] as string]?.trim();
        if (!t) throw bitfogError('EUSAGE', `${what}: area ${JSON.stringify(name)}: environment variable ${v[envKey] as string} is empty or unset`);
        return t;
      }
      return undefined;
    };
    const isUrl = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//.test(v.path);
    const area: AreaConfig = {
      url: isUrl ? v.path : path.resolve(baseDir, v.path),
      writable: bool('writable'),
      checksum: bool('checksum'),
    };
    const readToken = token('read');
    const writeToken = token('write');
    if (readToken) area.readToken = readToken;
    if (writeToken) area.writeToken = writeToken;
    areas.set(name, area);
  }
  return areas;
}

/** A token file's content, trimmed. Throws EUSAGE when unreadable or empty. */
export function readTokenFile(file: string): string {
  let t: string;
  try {
    t = readFileSync(file, 'utf8').trim();
  } catch (e) {
    throw bitfogError('EUSAGE', `cannot read token file ${file}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  if (!t) throw bitfogError('EUSAGE', `token file ${file} is empty`);
  return t;
}
