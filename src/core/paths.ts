/**
 * Portable relative paths: the only path form that crosses the Source/Destination
 * interfaces.
 *
 * A `RelPath` is `/`-separated, relative to the root of a backend, and validated once,
 * here, at the boundary: no empty segment, no `.` or `..` segment, no leading `/`, no NUL.
 * Every other character survives untouched, including spaces, `#`, `%`, `?`, `\`,
 * newlines and non-ASCII: backends must encode them for their own transport and never
 * interpret them. The root of a backend is the empty string `''` (ROOT).
 */
import { bitfogError } from './errors.ts';

declare const relPathBrand: unique symbol;
/** A validated portable relative path. Create with `toRelPath`. */
export type RelPath = string & { readonly [relPathBrand]: true };

export const ROOT = '' as RelPath;

/**
 * Validates `raw` as a portable relative path and returns it branded.
 * Throws EBADPATH (with the offending path quoted safely) otherwise.
 * The root is only accepted when `allowRoot` is set.
 */
export function toRelPath(raw: string, { allowRoot = false }: { allowRoot?: boolean } = {}): RelPath {
  const problem = relPathProblem(raw, allowRoot);
  if (problem) throw bitfogError('EBADPATH', `invalid path ${JSON.stringify(raw)}: ${problem}`);
  return raw as RelPath;
}

/** Why `raw` is not a valid RelPath, or undefined when it is. */
export function relPathProblem(raw: string, allowRoot = false): string | undefined {
  if (typeof raw !== 'string') return 'not a string';
  if (raw === '') return allowRoot ? undefined : 'empty path';
  if (raw.includes('\0')) return 'contains NUL';
  if (raw.startsWith('/')) return 'absolute path';
  if (raw.endsWith('/')) return 'trailing slash';
  for (const segment of raw.split('/')) {
    if (segment === '') return 'empty segment';
    if (segment === '.' || segment === '..') return `"${segment}" segment`;
  }
  if (!isWellFormedUnicode(raw)) return 'not valid Unicode';
  return undefined;
}

function isWellFormedUnicode(s: string): boolean {
  // Lone surrogates cannot be encoded as UTF-8 by any backend; refuse them up front.
  // (String.prototype.isWellFormed needs Node 20; keep a fallback for older typings.)
  const f = (s as { isWellFormed?: () => boolean }).isWellFormed;
  return f ? f.call(s) : !/[\uD800-\uDFFF]/.test(s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]/g, ''));
}

/** Joins a validated parent and one name (which must not contain `/`). */
export function childPath(parent: RelPath, name: string): RelPath {
  if (name.includes('/') || name === '' || name === '.' || name === '..' || name.includes('\0')) {
    throw bitfogError('EBADPATH', `invalid name ${JSON.stringify(name)} under ${JSON.stringify(parent)}`);
  }
  return (parent === '' ? name : `${parent}/${name}`) as RelPath;
}

/** The parent of a path; the parent of a top-level entry is ROOT. */
export function parentPath(path: RelPath): RelPath {
  const i = path.lastIndexOf('/');
  return (i < 0 ? '' : path.slice(0, i)) as RelPath;
}

/** The last segment of a path. */
export function baseName(path: RelPath): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

/** All ancestors of a path, outermost first, excluding ROOT and the path itself. */
export function ancestors(path: RelPath): RelPath[] {
  const out: RelPath[] = [];
  let i = path.indexOf('/');
  while (i >= 0) {
    out.push(path.slice(0, i) as RelPath);
    i = path.indexOf('/', i + 1);
  }
  return out;
}

/** Number of segments: ROOT has depth 0, `a` depth 1, `a/b` depth 2. */
export function depth(path: RelPath): number {
  if (path === '') return 0;
  let n = 1;
  for (let i = 0; i < path.length; i++) if (path.charCodeAt(i) === 47) n++;
  return n;
}

/** True when `path` is `dir` itself or lies below it. */
export function isWithin(path: RelPath, dir: RelPath): boolean {
  return dir === '' || path === dir || path.startsWith(dir + '/');
}

/**
 * Compares paths segment by segment, so that a directory's entries sort together
 * (`a/b` before `a-c`), the order a depth-first walk produces. Code-unit order per
 * segment keeps it identical on every platform.
 */
export function comparePaths(a: string, b: string): number {
  const as = a.split('/');
  const bs = b.split('/');
  const n = Math.min(as.length, bs.length);
  for (let i = 0; i < n; i++) {
    if (as[i] !== bs[i]) return as[i]! < bs[i]! ? -1 : 1;
  }
  return as.length - bs.length;
}
