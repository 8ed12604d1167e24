/**
 * What the spool dashboard shows, computed on the server: a read-only view of a spool's
 * manifest (taken without its lock, like `bitfog status`), aggregated so that no answer grows
 * with the number of entries. Lists (trip files, conflicts, skipped entries, trips) are
 * paged; folder totals are capped at MAX_FOLDERS rows plus one "everything else" row.
 *
 * The view reloads when the manifest file changes (its mtime, size or inode): every command
 * that changes a spool rewrites the manifest atomically at the end of its work, so a
 * cheap stat per request is enough to notice a finished fetch or store.
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Manifest } from '../../core/manifest.ts';
import { contentNeeds, planTrips, type ContentNeed } from '../../core/plan.ts';
import { Spool, type BlobInfo } from '../../core/spool.ts';
import { spoolStatus, type SpoolStatus } from '../../core/status.ts';

/** Rows per page of every paged list. */
export const PAGE_SIZE = 100;
/** Folder rows returned at most; the rest are summed into one `rest` row. */
export const MAX_FOLDERS = 50;
/** Examples of too-large files listed in the status (the count is always exact). */
const MAX_EXAMPLES = 20;

/** Files and bytes; `bytes` counts each distinct content once (as the spool carries it). */
export interface Tally {
  files: number;
  bytes: number;
}

export interface FolderTally extends Tally {
  /** The folder (or file, at the top) path; `''` for files directly at the root. */
  folder: string;
}

export interface FolderAnswer {
  /** The folder listed (`''` = root) and how many levels below it are grouped. */
  prefix: string;
  depth: number;
  total: Tally;
  folders: FolderTally[];
  /** Folders beyond the first MAX_FOLDERS (by bytes), summed. */
  rest?: Tally & { folders: number };
}

export interface SizeBucket extends Tally {
  /** Upper bound in bytes (exclusive); undefined for the last bucket. */
  below?: number;
  label: string;
}

export interface TripSummary {
  /** 1 = the next trip to make. */
  trip: number;
  contents: number;
  files: number;
  bytes: number;
}

export interface Page<T> {
  page: number;
  pageSize: number;
  total: number;
  pages: number;
  items: T[];
}

/** One trip's history, parsed from the journal's fetch-finished / store-finished details. */
export interface TripHistory {
  trip: number;
  fetch?: { at: string; runs: number; carriedFiles: number; carriedBytes: number; deferred: number; fullDisk: boolean; aborted: boolean };
  store?: { at: string; runs: number; written: number; bytes: number; removed: number; conflicts: number; pending: number; corrupt: number };
}

/** The status summary sent by /api/status: spoolStatus with its lists replaced by counts. */
export type StatusSummary = Omit<SpoolStatus, 'conflicts' | 'skipped' | 'history' | 'tooLarge'> & {
  spool: string;
  loadedAt: string;
  conflicts: number;
  skipped: number;
  tooLarge: { count: number; bytes: number; examples: Array<{ path: string; size: number }> };
  plannedTrips: number;
  historyTrips: number;
};

const SIZE_BOUNDS: Array<[number | undefined, string]> = [
  [1024, 'under 1 KiB'],
  [1024 ** 2, '1 KiB – 1 MiB'],
  [100 * 1024 ** 2, '1 – 100 MiB'],
  [1024 ** 3, '100 MiB – 1 GiB'],
  [undefined, '1 GiB and more'],
];

/** Everything derived from one load of the manifest. */
class View {
  readonly status: SpoolStatus;
  readonly needs: ContentNeed[];
  readonly carried: ContentNeed[];
  readonly trips: ContentNeed[][];
  readonly tripSummaries: TripSummary[];
  readonly tooLarge: ContentNeed[];
  readonly history: TripHistory[];
  readonly loadedAt = new Date().toISOString();
  readonly #folderCache = new Map<string, FolderAnswer>();

  constructor(manifest: Manifest, blobs: BlobInfo[]) {
    const source = manifest.getSnapshot('source');
    const recorded = manifest.getSnapshot('destination');
    this.status = spoolStatus(manifest, blobs, { source, destination: recorded });
    const destination = recorded ?? { url: '', takenAt: '', entries: new Map() };
    if (source) {
      const { needs, alreadyCarried } = contentNeeds(source, destination, new Set(blobs.map((b) => b.hash)));
      this.needs = needs;
      this.carried = alreadyCarried;
    } else {
      this.needs = [];
      this.carried = [];
    }
    const capacity = this.status.capacityBytes;
    if (capacity !== undefined && capacity > 0) {
      const plan = planTrips(this.needs, capacity);
      this.trips = plan.trips;
      this.tooLarge = plan.tooLarge;
    } else {
      this.trips = [];
      this.tooLarge = [];
    }
    this.tripSummaries = this.trips.map((t, i) => ({ trip: i + 1, contents: t.length, ...tally(t) }));
    this.history = tripHistory(manifest);
  }

  /**
   * Totals of `which` (what is left, or what the spool carries) grouped by the path's first
   * `depth` segments below `prefix`. A content shared by several paths counts its bytes
   * once, under its first path, so the folder bytes add up to the spool's totals.
   */
  folders(which: 'left' | 'carried', prefix: string, depth: number): FolderAnswer {
    const key = `${which}\0${prefix}\0${depth}`;
    const cached = this.#folderCache.get(key);
    if (cached) return cached;
    const base = prefix === '' ? '' : `${prefix}/`;
    const groups = new Map<string, Tally>();
    const total: Tally = { files: 0, bytes: 0 };
    for (const need of which === 'left' ? this.needs : this.carried) {
      let first = true;
      for (const p of need.paths) {
        if (base && !p.startsWith(base)) continue;
        const rest = p.slice(base.length).split('/');
        // Files directly in the listed folder are summed under the folder itself.
        const key2 = rest.length === 1 ? prefix : base + rest.slice(0, Math.min(depth, rest.length - 1)).join('/');
        const g = groups.get(key2) ?? { files: 0, bytes: 0 };
        g.files++;
        total.files++;
        if (first) {
          g.bytes += need.size;
          total.bytes += need.size;
          first = false;
        }
        groups.set(key2, g);
      }
    }
    const sorted = [...groups].map(([folder, t]) => ({ folder, ...t })).sort((a, b) => b.bytes - a.bytes || b.files - a.files || (a.folder < b.folder ? -1 : 1));
    const answer: FolderAnswer = { prefix, depth, total, folders: sorted.slice(0, MAX_FOLDERS) };
    if (sorted.length > MAX_FOLDERS) {
      const rest = sorted.slice(MAX_FOLDERS);
      answer.rest = { folders: rest.length, files: rest.reduce((n, f) => n + f.files, 0), bytes: rest.reduce((n, f) => n + f.bytes, 0) };
    }
    if (this.#folderCache.size > 200) this.#folderCache.clear();
    this.#folderCache.set(key, answer);
    return answer;
  }

  sizes(which: 'left' | 'carried'): SizeBucket[] {
    const buckets: SizeBucket[] = SIZE_BOUNDS.map(([below, label]) => ({ ...(below === undefined ? {} : { below }), label, files: 0, bytes: 0 }));
    for (const need of which === 'left' ? this.needs : this.carried) {
      const b = buckets.find((x) => x.below === undefined || need.size < x.below)!;
      b.files += need.paths.length;
      b.bytes += need.size;
    }
    return buckets;
  }
}

function tally(needs: ContentNeed[]): Tally {
  let files = 0;
  let bytes = 0;
  for (const n of needs) {
    files += n.paths.length;
    bytes += n.size;
  }
  return { files, bytes };
}

/** Numbers from a journal detail written as JSON by fetch/store; {} when it is not JSON. */
function parseDetail(detail: string | undefined): Record<string, unknown> {
  if (!detail) return {};
  try {
    const v = JSON.parse(detail) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/** Per trip: what the fetches carried and the stores wrote (a resumed command sums its runs). */
export function tripHistory(manifest: Manifest): TripHistory[] {
  const byTrip = new Map<number, TripHistory>();
  for (const row of manifest.journal({ events: ['fetch-finished', 'store-finished'] })) {
    const h = byTrip.get(row.trip) ?? { trip: row.trip };
    byTrip.set(row.trip, h);
    const d = parseDetail(row.detail);
    if (row.event === 'fetch-finished') {
      const f = (h.fetch ??= { at: row.at, runs: 0, carriedFiles: 0, carriedBytes: 0, deferred: 0, fullDisk: false, aborted: false });
      f.at = row.at;
      f.runs++;
      f.carriedFiles += num(d.carriedFiles);
      f.carriedBytes += num(d.carriedBytes);
      // What the last run left for later is what is deferred now.
      f.deferred = num(d.deferred);
      f.fullDisk = d.fullDisk === true;
      f.aborted = d.aborted === true;
    } else {
      const s = (h.store ??= { at: row.at, runs: 0, written: 0, bytes: 0, removed: 0, conflicts: 0, pending: 0, corrupt: 0 });
      s.at = row.at;
      s.runs++;
      s.written += num(d.written);
      s.bytes += num(d.bytes);
      s.removed += num(d.removed);
      s.conflicts = num(d.conflicts);
      s.pending = num(d.pending);
      s.corrupt += num(d.corrupt);
    }
  }
  return [...byTrip.values()].sort((a, b) => a.trip - b.trip);
}

export function paginate<T>(all: readonly T[], page: number, pageSize = PAGE_SIZE): Page<T> {
  const pages = Math.max(1, Math.ceil(all.length / pageSize));
  const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
  return { page: p, pageSize, total: all.length, pages, items: all.slice((p - 1) * pageSize, p * pageSize) };
}

/**
 * A spool, read without its lock and reloaded when its manifest changes. Throws what
 * Spool.inspect throws (ENOENT, EBADSPOOL) from `current()`.
 */
export class SpoolView {
  readonly dir: string;
  #stamp = '';
  #snapshot: View | undefined;
  #loading: Promise<View> | undefined;

  constructor(dir: string) {
    this.dir = path.resolve(dir);
  }

  /** The view of the manifest as it is now (one stat when unchanged). */
  async current(): Promise<View> {
    const st = await fsp.stat(path.join(this.dir, 'manifest.db')).catch(() => undefined);
    const stamp = st ? `${st.ino}:${st.size}:${st.mtimeMs}` : 'missing';
    if (this.#snapshot && stamp === this.#stamp) return this.#snapshot;
    // Concurrent requests share one load.
    this.#loading ??= (async () => {
      try {
        const { manifest, blobs } = await Spool.inspect(this.dir);
        try {
          const snap = new View(manifest, blobs);
          this.#snapshot = snap;
          this.#stamp = stamp;
          return snap;
        } finally {
          manifest.close();
        }
      } finally {
        this.#loading = undefined;
      }
    })();
    return this.#loading;
  }

  async status(): Promise<StatusSummary> {
    const s = await this.current();
    const { conflicts, skipped, history, tooLarge, ...rest } = s.status;
    return {
      spool: this.dir,
      loadedAt: s.loadedAt,
      ...rest,
      conflicts: conflicts.length,
      skipped: skipped.length,
      tooLarge: { count: s.tooLarge.length, bytes: tally(s.tooLarge).bytes, examples: tooLarge.slice(0, MAX_EXAMPLES) },
      plannedTrips: s.trips.length,
      historyTrips: s.history.length,
    };
  }

  async folders(which: 'left' | 'carried', prefix: string, depth: number): Promise<FolderAnswer> {
    return (await this.current()).folders(which, prefix, depth);
  }

  async sizes(): Promise<{ left: SizeBucket[]; carried: SizeBucket[] }> {
    const s = await this.current();
    return { left: s.sizes('left'), carried: s.sizes('carried') };
  }

  /** Planned trips (paged), each with its counts; the plan is the one `status` counts. */
  async trips(page: number): Promise<{ capacityBytes?: number; planned: Tally; tooLarge: Tally } & Page<TripSummary>> {
    const s = await this.current();
    return {
      ...(s.status.capacityBytes === undefined ? {} : { capacityBytes: s.status.capacityBytes }),
      planned: tally(s.trips.flat()),
      tooLarge: tally(s.tooLarge),
      ...paginate(s.tripSummaries, page),
    };
  }

  /**
   * The files of planned trip `trip` (1-based), in the order they are planned (largest
   * content first); a content at several paths lists each path, with `duplicate` set on
   * all but the first. Throws ENOENT-like undefined when there is no such trip.
   */
  async tripFiles(trip: number, page: number): Promise<(TripSummary & Page<{ path: string; size: number; hash?: string; duplicate?: true }>) | undefined> {
    const s = await this.current();
    const needs = s.trips[trip - 1];
    const summary = s.tripSummaries[trip - 1];
    if (!needs || !summary) return undefined;
    // Page over paths without flattening the whole trip: walk to the page's first row.
    const pageSize = PAGE_SIZE;
    const pages = Math.max(1, Math.ceil(summary.files / pageSize));
    const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
    const start = (p - 1) * pageSize;
    const items: Array<{ path: string; size: number; hash?: string; duplicate?: true }> = [];
    let row = 0;
    for (const need of needs) {
      if (row + need.paths.length <= start) {
        row += need.paths.length;
        continue;
      }
      need.paths.forEach((path, i) => {
        if (row >= start && items.length < pageSize) {
          items.push({ path, size: need.size, ...(need.hash ? { hash: need.hash } : {}), ...(i > 0 ? { duplicate: true as const } : {}) });
        }
        row++;
      });
      if (items.length >= pageSize) break;
    }
    return { ...summary, page: p, pageSize, total: summary.files, pages, items };
  }

  async conflicts(page: number): Promise<Page<{ path: string; reason: string }>> {
    return paginate((await this.current()).status.conflicts, page);
  }

  async skipped(page: number): Promise<Page<{ side: string; path: string; reason: string }>> {
    return paginate((await this.current()).status.skipped, page);
  }

  async tooLarge(page: number): Promise<Page<{ path: string; size: number }>> {
    const s = await this.current();
    return paginate(s.tooLarge.map((n) => ({ path: n.paths[0]!, size: n.size })), page);
  }

  /** Trips from the journal, oldest first (paged: a spool used for years has many). */
  async history(page: number): Promise<Page<TripHistory>> {
    const s = await this.current();
    // The newest trips matter most: page 1 is the latest PAGE_SIZE trips.
    const all = s.history;
    const pages = Math.max(1, Math.ceil(all.length / PAGE_SIZE));
    const p = Math.min(Math.max(1, Math.floor(page) || 1), pages);
    const end = all.length - (p - 1) * PAGE_SIZE;
    return { page: p, pageSize: PAGE_SIZE, total: all.length, pages, items: all.slice(Math.max(0, end - PAGE_SIZE), Math.max(0, end)) };
  }
}
