/**
 * What a spool says about the sync: what it carries, what is left, how many trips that
 * takes at this spool's size, conflicts, skipped entries and the history of trips. Pure
 * reading of the manifest; used by `bitfog status` (and its --json) and the dashboard.
 */
import { DeltaCandidates, type DeltaStatus, deltaStatus } from './delta/transfer.ts';
import { FINISHED_EVENTS, type Manifest, type Snapshot } from './manifest.ts';
import { contentNeeds, countPlannedRemovals, planTrips } from './plan.ts';
import type { BlobInfo } from './spool.ts';

export interface SpoolStatus {
  formatVersion: number;
  trip: number;
  source?: { url: string; takenAt: string; entries: number; bytes: number };
  destination?: { url: string; takenAt: string; entries: number; bytes: number; assumedEmpty: boolean };
  carried: { blobs: number; files: number; bytes: number };
  left: { files: number; bytes: number; unhashedFiles: number };
  /** Spool size used for planning (the last fetch's --max, else its free space). */
  capacityBytes?: number;
  /** Trips still needed for what is left, at `capacityBytes`, not counting what is carried now. */
  tripsLeft?: number;
  /**
   * Files larger than the spool: they can never be carried whole with it. `mayGoAsDelta`:
   * the destination holds a version or a look-alike of it, so it may still travel as a
   * delta, which only takes its changed chunks (known once fetch has read it).
   */
  tooLarge: Array<{ path: string; size: number; mayGoAsDelta: boolean }>;
  removalsPending: number;
  conflicts: Array<{ path: string; reason: string }>;
  skipped: Array<{ side: string; path: string; reason: string }>;
  history: Array<{ trip: number; command: string; at: string; detail: string }>;
  /** Delta transfer: files carried as deltas now, bytes they save, and savings so far. */
  delta: DeltaStatus;
}

/**
 * `loaded` passes snapshots the caller already read from this manifest (reading a large
 * snapshot is the slow part; the dashboard needs them too and reads them once).
 */
export function spoolStatus(
  manifest: Manifest,
  blobs: BlobInfo[],
  loaded?: { source: Snapshot | undefined; destination: Snapshot | undefined },
): SpoolStatus {
  const source = loaded ? loaded.source : manifest.getSnapshot('source');
  const destination = loaded ? loaded.destination : manifest.getSnapshot('destination');
  const delta = deltaStatus(manifest);
  const carriedSet = new Set([...blobs.map((b) => b.hash), ...delta.contents]);
  const capacity = manifest.getMeta('capacity');
  const status: SpoolStatus = {
    formatVersion: Number(manifest.getMeta('format_version')),
    trip: Number(manifest.getMeta('trip') ?? '0'),
    carried: { blobs: blobs.length, files: 0, bytes: blobs.reduce((n, b) => n + b.size, 0) },
    left: { files: 0, bytes: 0, unhashedFiles: 0 },
    tooLarge: [],
    removalsPending: 0,
    conflicts: manifest.conflicts(),
    skipped: [
      ...manifest.skipped('source').map((s) => ({ side: 'source', ...s })),
      ...manifest.skipped('destination').map((s) => ({ side: 'destination', ...s })),
    ],
    history: manifest
      .journal({ events: [...FINISHED_EVENTS] })
      .map((j) => ({ trip: j.trip, command: j.command, at: j.at, detail: j.detail ?? '' })),
    ...(capacity ? { capacityBytes: Number(capacity) } : {}),
    delta,
  };
  const summary = (s: NonNullable<typeof source>) => {
    let bytes = 0;
    for (const e of s.entries.values()) if (e.kind === 'file') bytes += e.size;
    return { url: s.url, takenAt: s.takenAt, entries: s.entries.size, bytes };
  };
  if (source) status.source = summary(source);
  if (destination) status.destination = { ...summary(destination), assumedEmpty: destination.assumedEmpty === true };
  if (source) {
    const dest = destination ?? { url: '', takenAt: '', entries: new Map() };
    const { needs, alreadyCarried } = contentNeeds(source, dest, carriedSet);
    status.carried.files = alreadyCarried.reduce((n, c) => n + c.paths.length, 0);
    status.left.files = needs.reduce((n, c) => n + c.paths.length, 0);
    status.left.bytes = needs.reduce((n, c) => n + c.size, 0);
    status.left.unhashedFiles = needs.filter((n) => !n.hash).length;
    status.removalsPending = countPlannedRemovals(source, dest, manifest.skipped('source').map((s) => s.path));
    if (status.capacityBytes !== undefined && status.capacityBytes > 0) {
      const { trips, tooLarge } = planTrips(needs, status.capacityBytes);
      status.tripsLeft = trips.length;
      const deltas = DeltaCandidates.of(manifest, dest);
      status.tooLarge = tooLarge.map((n) => ({ path: n.paths[0]!, size: n.size, mayGoAsDelta: n.paths.some((p) => deltas.wants(p, n.size, n.hash)) }));
    }
  }
  return status;
}
