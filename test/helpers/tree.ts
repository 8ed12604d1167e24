/**
 * Trees from literals, and what a tree holds, for assertions a user would make: bytes,
 * symlink targets, modes, mtimes, and nothing else present.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import path from 'node:path';

export type TreeSpec = Record<
  string,
  | string
  | Buffer
  | { symlink: string }
  | { dir: true; mode?: number }
  | { bytes: number; seed?: number; mode?: number; mtime?: Date }
  | { content: string | Buffer; mode?: number; mtime?: Date }
>;

/** Deterministic pseudo-random bytes (xorshift), so tests need no fixtures on disk. */
export function pseudoRandom(bytes: number, seed = 1): Buffer {
  const out = Buffer.allocUnsafe(bytes);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < bytes; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i + 4 <= bytes) out.writeUInt32LE(x, i);
    else for (let j = i; j < bytes; j++) out[j] = (x >>> ((j - i) * 8)) & 0xff;
  }
  return out;
}

export async function makeTree(root: string, spec: TreeSpec): Promise<void> {
  await fsp.mkdir(root, { recursive: true });
  for (const [rel, value] of Object.entries(spec)) {
    const p = path.join(root, rel);
    await fsp.mkdir(path.dirname(p), { recursive: true });
    if (typeof value === 'string' || Buffer.isBuffer(value)) {
      await fsp.writeFile(p, value);
    } else if ('symlink' in value) {
      await fsp.symlink(value.symlink, p);
    } else if ('dir' in value) {
      await fsp.mkdir(p, { recursive: true });
      if (value.mode !== undefined) await fsp.chmod(p, value.mode);
    } else {
      const content = 'bytes' in value ? pseudoRandom(value.bytes, value.seed) : value.content;
      await fsp.writeFile(p, content);
      if (value.mode !== undefined) await fsp.chmod(p, value.mode);
      if (value.mtime) await fsp.utimes(p, value.mtime, value.mtime);
    }
  }
}

export interface TreeEntryState {
  kind: 'file' | 'symlink' | 'directory';
  sha256?: string;
  size?: number;
  target?: string;
  mode: number;
  mtimeMs: number;
}

/** Everything under `root` (lstat, never following symlinks), keyed by relative path. */
export async function readTree(root: string, options: { ignore?: (rel: string) => boolean } = {}): Promise<Map<string, TreeEntryState>> {
  const out = new Map<string, TreeEntryState>();
  const walk = async (dir: string, rel: string) => {
    for (const name of await fsp.readdir(dir)) {
      const r = rel ? `${rel}/${name}` : name;
      if (options.ignore?.(r)) continue;
      const p = path.join(dir, name);
      const st = await fsp.lstat(p);
      if (st.isSymbolicLink()) out.set(r, { kind: 'symlink', target: await fsp.readlink(p), mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
      else if (st.isDirectory()) {
        out.set(r, { kind: 'directory', mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
        await walk(p, r);
      } else if (st.isFile()) {
        out.set(r, { kind: 'file', sha256: await sha256File(p), size: st.size, mode: st.mode & 0o7777, mtimeMs: st.mtimeMs });
      }
    }
  };
  await walk(root, '');
  return out;
}

export async function sha256File(p: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(p)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** Content only (kind, bytes, link target) — what must be equal after a sync. */
export function contentOf(tree: Map<string, TreeEntryState>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [p, e] of [...tree].sort(([a], [b]) => (a < b ? -1 : 1))) {
    out[p] = e.kind === 'file' ? `file ${e.size} ${e.sha256}` : e.kind === 'symlink' ? `symlink ${e.target}` : 'dir';
  }
  return out;
}

/** Kind and mode of each entry, for checking that metadata was carried (mtimes: assertSameMetadata). */
export function metadataOf(tree: Map<string, TreeEntryState>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [p, e] of [...tree].sort(([a], [b]) => (a < b ? -1 : 1))) {
    out[p] = `${e.kind} ${e.kind === 'symlink' ? '' : e.mode.toString(8)}`;
  }
  return out;
}

/**
 * The same entries with the same kinds and modes, and the same mtimes (files and symlinks)
 * within 20 µs: times travel as microseconds and are set through a double of seconds, so
 * an exact comparison at any rounding would fail now and then at a rounding boundary.
 */
export function assertSameMetadata(actual: Map<string, TreeEntryState>, expected: Map<string, TreeEntryState>, message = 'modes and mtimes carried'): void {
  assert.deepEqual(metadataOf(actual), metadataOf(expected), message);
  for (const [p, e] of expected) {
    if (e.kind === 'directory') continue;
    const got = actual.get(p)!.mtimeMs;
    assert.ok(Math.abs(got - e.mtimeMs) < 0.02, `${message}: mtime of ${JSON.stringify(p)} is ${got}, expected ${e.mtimeMs}`);
  }
}
