/**
 * Planning: pure functions from snapshots to what to carry and what to do.
 *
 * - `planFetch(source, destination, carried, budget)` → which contents to carry this trip.
 * - `planStore(source, recorded, live, availability, capabilities)` → the actions at the
 *   destination, the conflicts, and what is still pending.
 * - `planTrips(needs, capacity)` → how many trips the rest takes.
 *
 * Safety rule: an entry at the destination is removed or replaced only when its live state
 * still matches the recorded destination snapshot the plan was made from (same kind, same
 * content). Anything else is a conflict: reported and left alone.
 */
import { ancestors, comparePaths, depth, parentPath, type RelPath } from './paths.ts';
import type { Snapshot } from './manifest.ts';
import type { Capabilities, Entry } from './types.ts';

/** Orders in which contents are carried when not everything fits. */
export const CARRY_ORDERS = ['largest', 'smallest', 'path'] as const;
export type CarryOrder = (typeof CARRY_ORDERS)[number];

/** One content to carry: identical content at several paths is carried once. */
export interface ContentNeed {
  /** `sha256:<hex>`, or undefined when the source file is not hashed yet (hashed while carried). */
  hash?: string;
  size: number;
  /** Source paths with this content (the first readable one is carried). */
  paths: RelPath[];
}

/** Same kind and same content (hash or link target); metadata is not compared. */
export function sameContent(a: Entry | undefined, b: Entry | undefined): boolean {
  if (!a || !b || a.kind !== b.kind) return false;
  switch (a.kind) {
    case 'directory':
      return true;
    case 'symlink':
      return a.linkTarget !== undefined && a.linkTarget === b.linkTarget;
    case 'file':
      return a.size === b.size && a.hash !== undefined && a.hash === b.hash;
  }
}

/**
 * Hashes the destination can provide by copying one of its own files, with the path to copy
 * from: a file whose content is the same in the source (so no write replaces it in this
 * plan) or that the source no longer has (removed only after copies are done).
 */
export function destinationCopySources(source: Snapshot, destination: Snapshot): Map<string, RelPath> {
  const out = new Map<string, RelPath>();
  for (const d of destination.entries.values()) {
    if (d.kind !== 'file' || !d.hash || d.size === 0 || out.has(d.hash)) continue;
    const s = source.entries.get(d.path);
    if (!s || sameContent(s, d)) out.set(d.hash, d.path);
  }
  return out;
}

/**
 * Every content the destination lacks, given what the spool already carries. Files the
 * destination already has (same path, same content) and contents it can copy from its own
 * files are not needed.
 */
export function contentNeeds(source: Snapshot, destination: Snapshot, carried: ReadonlySet<string>): {
  needs: ContentNeed[];
  alreadyCarried: ContentNeed[];
} {
  const copySources = destinationCopySources(source, destination);
  const byHash = new Map<string, ContentNeed>();
  const unhashed: ContentNeed[] = [];
  const alreadyCarried = new Map<string, ContentNeed>();
  for (const s of source.entries.values()) {
    if (s.kind !== 'file' || s.size === 0) continue; // empty files need no content
    if (sameContent(s, destination.entries.get(s.path))) continue;
    if (!s.hash) {
      unhashed.push({ size: s.size, paths: [s.path] });
      continue;
    }
    if (carried.has(s.hash)) {
      const c = alreadyCarried.get(s.hash) ?? { hash: s.hash, size: s.size, paths: [] };
      c.paths.push(s.path);
      alreadyCarried.set(s.hash, c);
      continue;
    }
    if (copySources.has(s.hash)) continue;
    const need = byHash.get(s.hash);
    if (need) need.paths.push(s.path);
    else byHash.set(s.hash, { hash: s.hash, size: s.size, paths: [s.path] });
  }
  return { needs: [...byHash.values(), ...unhashed], alreadyCarried: [...alreadyCarried.values()] };
}

export function sortNeeds(needs: ContentNeed[], order: CarryOrder): ContentNeed[] {
  const byPath = (a: ContentNeed, b: ContentNeed) => comparePaths(a.paths[0]!, b.paths[0]!);
  const sorted = [...needs];
  if (order === 'largest') sorted.sort((a, b) => b.size - a.size || byPath(a, b));
  else if (order === 'smallest') sorted.sort((a, b) => a.size - b.size || byPath(a, b));
  else sorted.sort(byPath);
  return sorted;
}

/**
 * Picks the contents to carry within `budget` bytes, in `order`. When the next one does not
 * fit, later (smaller) ones that fit are still taken.
 */
export function selectForTrip(needs: ContentNeed[], budget: number, order: CarryOrder = 'largest'): {
  selected: ContentNeed[];
  deferred: ContentNeed[];
} {
  const selected: ContentNeed[] = [];
  const deferred: ContentNeed[] = [];
  let left = budget;
  for (const need of sortNeeds(needs, order)) {
    if (need.size <= left) {
      selected.push(need);
      left -= need.size;
    } else deferred.push(need);
  }
  return { selected, deferred };
}

/**
 * How many trips carrying `needs` takes with a spool of `capacity` bytes (first-fit
 * decreasing), and which needs can never fit.
 */
export function planTrips(needs: ContentNeed[], capacity: number): { trips: ContentNeed[][]; tooLarge: ContentNeed[] } {
  const trips: Array<{ left: number; items: ContentNeed[] }> = [];
  const tooLarge: ContentNeed[] = [];
  for (const need of sortNeeds(needs, 'largest')) {
    if (need.size > capacity) {
      tooLarge.push(need);
      continue;
    }
    const bin = trips.find((t) => t.left >= need.size);
    if (bin) {
      bin.items.push(need);
      bin.left -= need.size;
    } else trips.push({ left: capacity - need.size, items: [need] });
  }
  return { trips: trips.map((t) => t.items), tooLarge };
}

// ---------------------------------------------------------------------------- store

export type StoreAction =
  | { op: 'remove'; path: RelPath; kind: 'file' | 'symlink' }
  | { op: 'rmdir'; path: RelPath }
  | { op: 'mkdir'; path: RelPath; mode?: number; mtimeMs?: number; afterRemovals: boolean }
  | {
      op: 'write';
      path: RelPath;
      hash: string;
      size: number;
      mode?: number;
      mtimeMs?: number;
      /**
       * Where the content comes from: a spool blob, a file already at the destination, or
       * a delta (carried chunks plus the destination's own files, see delta/transfer.ts).
       */
      from: { kind: 'spool' } | { kind: 'destination'; path: RelPath } | { kind: 'delta' };
    }
  | { op: 'symlink'; path: RelPath; target: string; mtimeMs?: number; replaces: boolean }
  | { op: 'meta'; path: RelPath; mode?: number; mtimeMs?: number };

export interface StorePlan {
  actions: StoreAction[];
  conflicts: Array<{ path: RelPath; reason: string }>;
  /** Source files whose content is not on the spool yet (a later trip brings it). */
  pending: Array<{ path: RelPath; size: number }>;
  /** Source entries this destination cannot hold (e.g. symlinks on S3). */
  unsupported: Array<{ path: RelPath; reason: string }>;
}

export interface StorePlanInput {
  source: Snapshot;
  /** The destination as recorded on the spool (what fetch planned from). */
  recorded: Snapshot;
  /** The destination as it is now. */
  live: Snapshot;
  /** True when the spool holds a verified blob with this hash. */
  onSpool: (hash: string) => boolean;
  /** True when the spool carries this content as a delta (default: never). */
  hasRecipe?: (hash: string) => boolean;
  capabilities: Pick<Capabilities, 'symlinks' | 'modes' | 'mtimePrecisionMs' | 'emptyDirectories'>;
  /**
   * Paths the source could not read when its snapshot was taken (its skipped entries: an
   * unreadable directory, say). Their absence from the snapshot does not mean the source
   * no longer has them: what the destination has at or under them is never removed, and
   * their metadata is left as it is.
   */
  unreadAtSource?: Iterable<string>;
}

/** A test for "at or under one of `paths`". */
export function atOrUnder(paths: Iterable<string>): (path: string) => boolean {
  const set = new Set(paths);
  if (set.size === 0) return () => false;
  return (path) => set.has(path) || ancestors(path as RelPath).some((a) => set.has(a));
}

/**
 * How many entries of the recorded destination a store would remove, as store counts them:
 * what the source no longer has (except at or under a path the source could not read:
 * never removed), and what the source has as a directory where the destination has a file
 * or symlink, or the other way round (removed first). A file and a symlink that swap
 * places are replaced by a rename, which removes nothing. For fetch's summary and status,
 * before store sees the live destination (where a changed entry becomes a conflict instead).
 */
export function countPlannedRemovals(source: Snapshot, destination: Snapshot, unreadAtSource: Iterable<string>): number {
  const unread = atOrUnder(unreadAtSource);
  let n = 0;
  for (const d of destination.entries.values()) {
    const s = source.entries.get(d.path);
    if (s ? (s.kind === 'directory') !== (d.kind === 'directory') : !unread(d.path)) n++;
  }
  return n;
}

export function planStore(input: StorePlanInput): StorePlan {
  const { source, recorded, live, onSpool, capabilities: caps } = input;
  const unreadAtSource = atOrUnder(input.unreadAtSource ?? []);
  const actions: StoreAction[] = [];
  const conflicts: StorePlan['conflicts'] = [];
  const pending: StorePlan['pending'] = [];
  const unsupported: StorePlan['unsupported'] = [];
  const copySources = destinationCopySources(source, live);

  /** Live entry unchanged since the recorded snapshot: safe to remove or replace. */
  const unchangedSinceRecorded = (l: Entry) => sameContent(l, recorded.entries.get(l.path));
  const conflictReason = (l: Entry) =>
    recorded.entries.has(l.path)
      ? `changed at the destination since the snapshot this plan was made from (${l.kind})`
      : `not in the recorded destination state; bitfog will not replace what it does not know (${l.kind})`;

  const metaDiffers = (s: Entry, l: Entry) =>
    (caps.modes && s.mode !== undefined && l.mode !== undefined && s.kind !== 'symlink' && (s.mode & 0o7777) !== (l.mode & 0o7777)) ||
    (caps.mtimePrecisionMs > 0 &&
      s.kind !== 'directory' &&
      s.mtimeMs !== undefined &&
      (l.mtimeMs === undefined || Math.abs(s.mtimeMs - l.mtimeMs) >= Math.max(caps.mtimePrecisionMs, 0.001)));

  // Paths whose live entry blocks the source's kind and is removed first (type changes).
  const blockedByRemoval = new Set<string>();
  const sourceEntries = [...source.entries.values()].sort((a, b) => comparePaths(a.path, b.path));

  for (const s of sourceEntries) {
    const l = live.entries.get(s.path);
    if (s.kind === 'symlink' && !caps.symlinks) {
      unsupported.push({ path: s.path, reason: `symlink to ${JSON.stringify(s.linkTarget)}: this destination cannot store symlinks` });
      continue;
    }
    if (s.kind === 'directory' && !caps.emptyDirectories) continue; // implied by the files inside
    if (l && sameContent(s, l)) {
      if (s.kind !== 'directory' && metaDiffers(s, l)) actions.push(metaAction(s));
      continue;
    }
    if (l && !unchangedSinceRecorded(l)) {
      conflicts.push({ path: s.path, reason: conflictReason(l) });
      continue;
    }
    // The live entry (if any) may be replaced. A live directory in the way of a file or
    // symlink is emptied by the removals below (the source has nothing inside it).
    const replacing = l !== undefined;
    if (replacing && (l.kind === 'directory' || s.kind === 'directory')) blockedByRemoval.add(s.path);
    if (replacing && s.kind === 'directory') actions.push({ op: 'remove', path: s.path, kind: l.kind as 'file' | 'symlink' });

    switch (s.kind) {
      case 'directory':
        // Inside a path whose live entry is replaced (a file that becomes a directory tree),
        // it waits for that removal as well.
        actions.push({ op: 'mkdir', path: s.path, ...meta(s), afterRemovals: replacing || ancestors(s.path).some((a) => blockedByRemoval.has(a)) });
        break;
      case 'symlink':
        actions.push({ op: 'symlink', path: s.path, target: s.linkTarget!, ...(s.mtimeMs === undefined ? {} : { mtimeMs: s.mtimeMs }), replaces: replacing });
        break;
      case 'file': {
        if (s.size === 0 && s.hash) {
          actions.push({ op: 'write', path: s.path, hash: s.hash, size: 0, ...meta(s), from: { kind: 'spool' } });
        } else if (s.hash && onSpool(s.hash)) {
          actions.push({ op: 'write', path: s.path, hash: s.hash, size: s.size, ...meta(s), from: { kind: 'spool' } });
        } else if (s.hash && copySources.has(s.hash) && copySources.get(s.hash) !== s.path) {
          actions.push({
            op: 'write', path: s.path, hash: s.hash, size: s.size, ...meta(s),
            from: { kind: 'destination', path: copySources.get(s.hash)! },
          });
        } else if (s.hash && input.hasRecipe?.(s.hash)) {
          actions.push({ op: 'write', path: s.path, hash: s.hash, size: s.size, ...meta(s), from: { kind: 'delta' } });
        } else {
          pending.push({ path: s.path, size: s.size });
          blockedByRemoval.delete(s.path);
        }
        break;
      }
    }
  }

  // Removals: live entries the source does not have (or has as another kind, handled above
  // for non-directories). Directories go after their content, deepest first.
  const liveEntries = [...live.entries.values()].sort((a, b) => comparePaths(a.path, b.path));
  const rmdirs: RelPath[] = [];
  for (const l of liveEntries) {
    const s = source.entries.get(l.path);
    if (s) {
      // Same kind: handled above. File <-> symlink: replaced by rename above. A file or
      // symlink where the source has a directory: removed above. What remains is a live
      // directory where the source has a file or symlink: it goes once emptied.
      if (l.kind === 'directory' && s.kind !== 'directory' && blockedByRemoval.has(l.path)) rmdirs.push(l.path);
      continue;
    }
    if (unreadAtSource(l.path)) continue;
    if (!unchangedSinceRecorded(l)) {
      conflicts.push({ path: l.path, reason: conflictReason(l) });
      continue;
    }
    if (l.kind === 'directory') rmdirs.push(l.path);
    else actions.push({ op: 'remove', path: l.path, kind: l.kind });
  }
  rmdirs.sort((a, b) => depth(b) - depth(a) || comparePaths(a, b));
  for (const p of rmdirs) actions.push({ op: 'rmdir', path: p });

  // Directory metadata: every source directory whose content or metadata changes, deepest
  // first, after everything else (writing into a directory changes its mtime).
  const touched = new Set<string>();
  for (const a of actions) for (const anc of [parentPath(a.path), ...ancestors(a.path)]) touched.add(anc);
  for (const s of sourceEntries) {
    if (s.kind !== 'directory' || !caps.emptyDirectories) continue;
    // Nor the metadata of a directory the source could not read: a mode that locks its
    // reader out would hide from the next scan what is kept inside.
    if (unreadAtSource(s.path)) continue;
    const l = live.entries.get(s.path);
    if (touched.has(s.path) || !l || metaDiffers(s, l) || (caps.mtimePrecisionMs > 0 && dirMtimeDiffers(s, l, caps))) {
      if (s.mode !== undefined || s.mtimeMs !== undefined) actions.push(metaAction(s));
    }
  }

  return { actions: orderActions(actions), conflicts, pending, unsupported };
}

function dirMtimeDiffers(s: Entry, l: Entry, caps: Pick<Capabilities, 'mtimePrecisionMs'>): boolean {
  return s.mtimeMs !== undefined && (l.mtimeMs === undefined || Math.abs(s.mtimeMs - l.mtimeMs) >= Math.max(caps.mtimePrecisionMs, 0.001));
}

function meta(s: Entry): { mode?: number; mtimeMs?: number } {
  return { ...(s.mode === undefined ? {} : { mode: s.mode }), ...(s.mtimeMs === undefined ? {} : { mtimeMs: s.mtimeMs }) };
}

function metaAction(s: Entry): StoreAction {
  return { op: 'meta', path: s.path, ...meta(s), ...(s.kind === 'symlink' ? { mode: undefined } : {}) };
}

/**
 * The order actions run in, so that nothing needed is gone before it is used:
 *   1. mkdir of new directories (shallowest first)
 *   2. writes that copy from files already at the destination, or assemble deltas from
 *      them (their sources still exist)
 *   3. removals of files and symlinks, then empty directories (deepest first)
 *   4. mkdir of directories that replace a removed entry
 *   5. writes from the spool and symlinks
 *   6. metadata of files and symlinks, then of directories (deepest first)
 */
export function orderActions(actions: StoreAction[]): StoreAction[] {
  const rank = (a: StoreAction): number => {
    switch (a.op) {
      case 'mkdir':
        return a.afterRemovals ? 4 : 1;
      case 'write':
        return a.from.kind === 'spool' ? 5 : 2;
      case 'remove':
        return 3;
      case 'rmdir':
        return 3.5;
      case 'symlink':
        return 5;
      case 'meta':
        return 6;
    }
  };
  return actions
    .map((a, i) => ({ a, i }))
    .sort((x, y) => {
      const r = rank(x.a) - rank(y.a);
      if (r !== 0) return r;
      if (x.a.op === 'mkdir') return depth(x.a.path) - depth(y.a.path) || x.i - y.i;
      if (x.a.op === 'rmdir' || x.a.op === 'meta') return depth(y.a.path) - depth(x.a.path) || x.i - y.i;
      return x.i - y.i;
    })
    .map((x) => x.a);
}
