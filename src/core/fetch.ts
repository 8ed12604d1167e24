/**
 * fetch: at the source site, carry onto the spool what the destination lacks.
 *
 * 1. Snapshot the source (hash cache; files the destination obviously lacks are hashed
 *    while carried instead of read twice).
 * 2. Plan against the destination as last recorded on the spool (or as given, or empty).
 * 3. Carry contents, largest first by default, up to the budget (`maxBytes` and the
 *    spool's free space less a reserve). A blob lands only after its hash matched; a
 *    source file that changes while being carried is detected and left for the next trip.
 * 4. Record the source snapshot and a journal entry on the spool.
 *
 * Rerunning after a crash redoes nothing that finished: completed blobs are on the spool.
 */
import pLimit from 'p-limit';
import { bitfogError, isBitfogError, throwIfAborted, toBitfogError } from './errors.ts';
import { type DeltaConfig, DeltaFetch, type DeltaFetchStats } from './delta/transfer.ts';
import type { HashCache } from './hashcache.ts';
import { FINISHED_EVENTS, type JournalEvent, type Manifest, type Snapshot } from './manifest.ts';
import { contentNeeds, countPlannedRemovals, selectForTrip, type CarryOrder, type ContentNeed } from './plan.ts';
import type { ProgressListener } from './progress.ts';
import { takeSnapshot } from './snapshot.ts';
import { prestartSignWorkers } from './delta/signer.ts';
import { assertSpoolApart, type BlobWriteOptions, namesSameTree, type Spool } from './spool.ts';
import { ScratchBuffers } from './streams.ts';
import type { Entry, Source } from './types.ts';
import { FSYNC_EACH_MIN_BYTES, LARGE_FILES_AT_ONCE, OWN_COPY_MIN_BYTES } from './fsutil.ts';

/** Free space kept on the spool's disk by default, for the manifest and the file system. */
export const DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024;
/** Smaller files are not read ahead to find renames: carrying them costs less. */
const HASH_BEFORE_PLAN_BYTES = 128 * 1024;

export interface FetchOptions {
  source: Source;
  spool: Spool;
  cache: HashCache;
  /** The destination's state; default: the one recorded on the spool, else empty. */
  destination?: Snapshot;
  /** Upper bound for all blobs on the spool, bytes. */
  maxBytes?: number;
  /** Free space to leave on the spool's disk (default DEFAULT_RESERVE_BYTES). */
  reserveBytes?: number;
  order?: CarryOrder;
  /** Files carried at once (default: min(4, the source's maxConcurrency)). */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /** Delta transfer settings (threshold; default from the environment, see delta/transfer.ts). */
  delta?: DeltaConfig;
  /** Take this source though the spool carries another tree (the same tree at a new address). Default: refuse with EUSAGE. */
  newSource?: boolean;
  /** Take an empty source though it had entries, or the destination has (default: refuse with EUSAGE). */
  allowEmptySource?: boolean;
}

export interface FetchResult {
  trip: number;
  sourceEntries: number;
  assumedEmptyDestination: boolean;
  carriedFiles: number;
  carriedBytes: number;
  /** Content already on the spool from an earlier fetch, still needed. */
  alreadyCarriedBytes: number;
  /** Needed content left for later trips. */
  deferredFiles: number;
  deferredBytes: number;
  /** Of the files left for later, those that could not be read this time (listed in `skipped`): not left for lack of room. */
  unreadableFiles: number;
  /** Entries at the destination the source no longer has, or has as a directory where the destination has none or the other way round (removed at store). */
  plannedRemovals: number;
  skipped: Array<{ path: string; reason: string }>;
  stoppedByFullDisk: boolean;
  budgetBytes: number;
  /** Files carried as deltas this run: their size and the chunk bytes they took. */
  delta: DeltaFetchStats;
  elapsedMs: number;
}

/**
 * The trip a fetch belongs to: a new one after a store (the spool came back from the
 * destination), the same one after a fetch (topping the spool up before it leaves, or a
 * fetch rerun after an interruption). Read from the journal of finished commands, not from
 * the `trip` the last fetch set when it started: a fetch killed after its first save left
 * that raised, and its rerun counted the trip twice.
 */
function tripOfNextFetch(manifest: Manifest): number {
  const last = manifest.journal({ events: [...FINISHED_EVENTS], limit: 1 })[0];
  if (!last) return 1;
  return last.command === 'fetch' ? last.trip : last.trip + 1;
}

/**
 * Saves the spool's manifest; when the disk is full, removes the contents `carriedNow` (this
 * run's, newest last), largest first, until it fits. Returns the removed hashes. Throws the
 * save's error when it is not ENOSPC, or when nothing is left to remove.
 */
async function saveMakingRoom(spool: Spool, carriedNow: string[]): Promise<Set<string>> {
  const dropped = new Set<string>();
  const candidates = [...new Set(carriedNow)].filter((h) => spool.has(h)).sort((x, y) => (spool.sizeOf(y) ?? 0) - (spool.sizeOf(x) ?? 0));
  for (;;) {
    try {
      await spool.save();
      return dropped;
    } catch (e) {
      const next = candidates.shift();
      if (!isBitfogError(e, 'ENOSPC') || next === undefined) throw e;
      await spool.removeBlob(next);
      dropped.add(next);
    }
  }
}

export async function fetchToSpool(options: FetchOptions): Promise<FetchResult> {
  const t0 = Date.now();
  const { source, spool, cache, signal, onProgress } = options;
  await assertSpoolApart(spool.dir, source, 'source');
  const manifest = spool.manifest;
  // A spool carries one tree to one destination: content from another source would make
  // store remove at the destination whatever that other tree lacks.
  const previousSource = manifest.snapshotHeader('source');
  if (previousSource && previousSource.entries > 0 && !options.newSource && !(await namesSameTree(previousSource.url, source))) {
    throw bitfogError(
      'EUSAGE',
      `this spool carries ${previousSource.url} (last fetched ${previousSource.takenAt}), not ${source.url}; use another spool for another tree, or --new-source if this is the same tree at a new address`,
    );
  }
  const trip = tripOfNextFetch(manifest);

  let destination = options.destination ?? manifest.getSnapshot('destination');
  const assumedEmpty = !destination || destination.assumedEmpty === true;
  if (!destination) {
    onProgress?.({ type: 'notice', message: 'no destination state on the spool: assuming an empty destination (run "bitfog store" at the destination first to record it)' });
    destination = { url: '(assumed empty)', takenAt: new Date().toISOString(), entries: new Map(), assumedEmpty: true };
  }
  const spoolSizes = new Set(spool.blobs().map((b) => b.size));
  const destSizes = new Set<number>();
  for (const d of destination.entries.values()) if (d.kind === 'file') destSizes.add(d.size);

  // A file is hashed before planning only when that may spare carrying it: the destination
  // has a file of that size at the same path (unchanged?), the spool holds content of that
  // size (carried by an interrupted run?), or, for files large enough to
  // matter, anywhere (renamed or copied?). Everything else is hashed while it is carried,
  // so it is read once; duplicates inside the source still land once on the spool, whose
  // blobs are named by their content.
  const scan = await takeSnapshot(source, {
    side: 'source',
    cache,
    ...(signal ? { signal } : {}),
    ...(onProgress ? { onProgress } : {}),
    wantHash: (e) => {
      const d = destination.entries.get(e.path);
      if (d?.kind === 'file' && d.size === e.size) return true;
      // Already on the spool from an interrupted or earlier fetch? Then it is not carried again.
      if (spoolSizes.has(e.size)) return true;
      return e.size >= HASH_BEFORE_PLAN_BYTES && destSizes.has(e.size);
    },
  });
  const snapshot = scan.snapshot;
  const skipped = [...scan.skipped];
  // An empty source where there was a tree (a disk not mounted, say) would have store remove
  // everything at the destination.
  if (snapshot.entries.size === 0 && !options.allowEmptySource) {
    const had = previousSource && previousSource.entries > 0 ? `it had ${previousSource.entries} entries when last fetched` : destination.entries.size > 0 ? `the destination has ${destination.entries.size} entries` : undefined;
    if (had) {
      throw bitfogError('EUSAGE', `the source ${source.url} is empty, but ${had}: carrying that would make store remove everything at the destination. Is a disk not mounted? If the source really is empty now, run again with --allow-empty-source`);
    }
  }
  for (const s of skipped) onProgress?.({ type: 'skip', path: s.path, reason: s.reason });

  // Blobs no longer needed by this source (changed again before they were stored) only take space.
  const wanted = new Set<string>();
  for (const e of snapshot.entries.values()) if (e.kind === 'file' && e.hash) wanted.add(e.hash);
  const deltas = new DeltaFetch(manifest, destination, options.delta);
  const deltaChunks = deltas.keepFor(wanted);
  await spool.removeBlobs(spool.blobs().filter((b) => !wanted.has(b.hash) && !deltaChunks.has(b.hash)).map((b) => b.hash));

  const carriedSet = new Set([...spool.blobs().map((b) => b.hash), ...deltas.carriedContents()]);
  const { needs, alreadyCarried } = contentNeeds(snapshot, destination, carriedSet);
  const alreadyCarriedBytes = alreadyCarried.reduce((n, c) => n + c.size, 0);

  // Record the source snapshot before carrying: a crash mid-carry still leaves a spool whose
  // status tells what it holds. It is rewritten with the hashes learnt while carrying.
  manifest.putSnapshot('source', snapshot);
  manifest.setMeta('trip', String(trip));
  if (!manifest.hasSnapshot('destination')) manifest.putSnapshot('destination', destination);
  await spool.save();

  const reserve = options.reserveBytes ?? DEFAULT_RESERVE_BYTES;
  const free = await spool.freeSpace();
  const carriedNow = spool.carriedBytes;
  // Whatever the reserve, room stays for saving the manifest again at the end (next to the
  // copy it replaces, grown by what was carried): a disk filled to the last byte would leave
  // no room to record what landed.
  const room = Math.max(0, free - reserve - (await spool.manifestRoom()));
  let budget = room;
  if (options.maxBytes !== undefined) budget = Math.min(budget, Math.max(0, options.maxBytes - carriedNow));
  manifest.setMeta('capacity', String(options.maxBytes ?? room + carriedNow));

  // Files the scan could not read (EACCES, say) are not tried again now: they stay left for
  // a later trip, reported once, and are not what kept the trip from filling.
  const unreadable = new Set(skipped.map((s) => s.path));
  const blocked = needs.filter((n) => n.paths.every((p) => unreadable.has(p)));
  const { selected, deferred } = selectForTrip(blocked.length ? needs.filter((n) => !blocked.includes(n)) : needs, budget, options.order ?? 'largest');
  const totalBytes = selected.reduce((n, s) => n + s.size, 0);
  onProgress?.({ type: 'transfer-start', phase: 'fetch', files: selected.length, bytes: totalBytes });

  let doneFiles = 0;
  let doneBytes = 0;
  let carriedFiles = 0;
  let carriedBytes = 0;
  let fullDisk = false;
  const stop = new AbortController();
  const inner = signal ? AbortSignal.any([signal, stop.signal]) : stop.signal;
  const journal: JournalEvent[] = [];
  const limit = pLimit(options.concurrency ?? Math.min(4, source.capabilities.maxConcurrency));
  const largeLimit = pLimit(Math.min(LARGE_FILES_AT_ONCE, options.concurrency ?? source.capabilities.maxConcurrency));
  /** Large blobs carried but not yet fsynced: made durable before each save of the manifest. */
  const unsynced: string[] = [];
  const carriedNeeds = new Set<ContentNeed>();
  let lastSave = Date.now();

  /** `deltaRoom`: at most this many bytes of new chunks for a delta (else it waits). */
  const carryOne = async (need: ContentNeed, deltaRoom?: number) => {
    if (inner.aborted) return;
    let lastError: unknown;
    for (const path of need.paths) {
      const entry = snapshot.entries.get(path)!;
      try {
        const hash = await carryFile(entry, need, deltaRoom);
        if (hash === undefined) return; // a delta too large for the room left: a later trip
        carriedFiles++;
        carriedBytes += need.size;
        carriedNeeds.add(need);
        if (need.size >= FSYNC_EACH_MIN_BYTES && spool.has(hash)) unsynced.push(hash); // not a delta recipe
        journal.push({ command: 'fetch', event: 'carried', path, detail: `${need.size} ${hash}` });
        lastError = undefined;
        break;
      } catch (e) {
        lastError = e;
        if (isBitfogError(e, 'ENOSPC')) {
          fullDisk = true;
          stop.abort();
          return;
        }
        if (isBitfogError(e, 'EABORTED')) return;
      }
    }
    if (lastError !== undefined) {
      const err = toBitfogError(lastError);
      if (!['ENOENT', 'EACCES', 'EINTEGRITY', 'EISDIR', 'EOPNOTSUPP'].includes(err.code)) throw err;
      const reason = err.code === 'EINTEGRITY' ? `changed while being carried; it is carried on a later trip` : err.message;
      for (const path of need.paths) {
        if (unreadable.has(path)) continue; // reported by the scan already
        unreadable.add(path);
        skipped.push({ path, reason });
        onProgress?.({ type: 'skip', path, reason });
      }
    }
    doneFiles++;
    if (Date.now() - lastSave > 30_000) {
      lastSave = Date.now();
      await spool.syncBlobs(unsynced.splice(0));
      await spool.save().catch((e: unknown) => {
        // The disk filled under us: stop carrying; the final save makes room (saveMakingRoom).
        if (!isBitfogError(e, 'ENOSPC')) throw e;
        fullDisk = true;
        stop.abort();
      });
    }
  };

  /** The source's own copy into the spool, when it has one (undefined: stream instead). */
  const sourceCopies = typeof source.copyToLocalFile === 'function';
  const copyIntoSpool = async (entry: Entry, expected: { hash?: string; size: number }, blobOptions: BlobWriteOptions) => {
    if (!sourceCopies || expected.size < OWN_COPY_MIN_BYTES) return undefined;
    try {
      return await spool.importBlob((file) => source.copyToLocalFile!(entry.path, file, { signal: inner }), expected, blobOptions);
    } catch (e) {
      if (!isBitfogError(e, 'EOPNOTSUPP')) throw e;
      return undefined;
    }
  };

  /** The file in pieces of memory the source reuses, when it offers that (undefined: stream instead). */
  const sourceLendsPieces = typeof source.readPieces === 'function';
  const piecesIntoSpool = async (entry: Entry, expected: { hash?: string; size: number }, blobOptions: BlobWriteOptions) => {
    if (!sourceLendsPieces) return undefined;
    let handedAny = false;
    const read = (onPiece: (piece: Uint8Array) => Promise<void>) =>
      source.readPieces!(entry.path, (piece) => ((handedAny = true), onPiece(piece)), { signal: inner });
    try {
      return await spool.writeBlobFromPieces(read, expected, blobOptions);
    } catch (e) {
      if (handedAny || !isBitfogError(e, 'EOPNOTSUPP')) throw e;
      return undefined;
    }
  };

  /** A small file read whole, when the source offers that, put into the spool from memory (undefined: stream instead). */
  const sourceReadsSmall = typeof source.readSmallFile === 'function';
  const smallScratch = new ScratchBuffers();
  const putSmallIntoSpool = async (entry: Entry, expected: { hash?: string; size: number }, onBytes: (n: number) => void) => {
    if (!sourceReadsSmall || expected.size >= OWN_COPY_MIN_BYTES) return undefined;
    // Lent for the read and held until putSmallBlob returns (it no longer needs the bytes then).
    const scratch = smallScratch.take(expected.size + 1);
    try {
      const content = await source.readSmallFile!(entry.path, OWN_COPY_MIN_BYTES - 1, { signal: inner, into: scratch });
      if (content === undefined) return undefined; // grew past small, or not readable this way here
      const hash = await spool.putSmallBlob(content, expected);
      onBytes(content.length);
      return hash;
    } finally {
      smallScratch.give(scratch);
    }
  };

  const carryFile = async (entry: Entry, need: ContentNeed, deltaRoom?: number): Promise<string | undefined> => {
    throwIfAborted(inner);
    const startedAt = Date.now();
    const onBytes = (n: number) => {
      doneBytes += n;
      onProgress?.({ type: 'transfer', phase: 'fetch', files: doneFiles, bytes: doneBytes, current: entry.path });
    };
    const expected = { ...(need.hash ? { hash: need.hash } : {}), size: need.size };
    // Not fsynced here, where it would hold up this transfer: see `unsynced`.
    const blobOptions = { signal: inner, durable: false, onBytes };
    const hash: string | undefined = deltas.wants(entry.path, need.size, need.hash)
      ? await deltas.carry(source, spool, entry, need.hash, { signal: inner, onBytes, ...(deltaRoom === undefined ? {} : { maxNewBytes: deltaRoom }) })
      : (await putSmallIntoSpool(entry, expected, onBytes)) ??
        (await copyIntoSpool(entry, expected, blobOptions)) ??
        (await piecesIntoSpool(entry, expected, blobOptions)) ??
        (await spool.writeBlob(await source.read(entry.path, { signal: inner }), expected, blobOptions));
    if (hash === undefined) return undefined;
    if (!need.hash) {
      // Hashed while carried: make sure the file did not change under us, then remember it.
      const after = await source.stat(entry.path, { signal: inner });
      if (after.version !== entry.version || after.size !== entry.size) {
        await spool.removeBlob(hash);
        deltas.forget(hash);
        throw bitfogError('EINTEGRITY', `${JSON.stringify(entry.path)} changed while being carried`, { path: entry.path });
      }
      entry.hash = hash;
      cache.record(entry, hash, startedAt);
    }
    return hash;
  };

  // Large files are hashed on worker threads: started now, not at the first one.
  prestartSignWorkers(Math.min(LARGE_FILES_AT_ONCE, selected.filter((need) => need.size >= FSYNC_EACH_MIN_BYTES).length));
  try {
    // A large file waits for its own slot first, so that it holds none of the small files'.
    await Promise.all(
      selected.map((need) => (need.size >= FSYNC_EACH_MIN_BYTES ? largeLimit(() => limit(() => carryOne(need))) : limit(() => carryOne(need)))),
    );
    // What did not fit by its size may fit by what it takes: a changed file that goes as a
    // delta takes only its new chunks (tried against the room left, and taken off again if
    // they do not fit), and the room the deltas above did not use may hold smaller files.
    let room = budget - (spool.carriedBytes - carriedNow);
    for (const need of deferred) {
      if (inner.aborted || room <= 0) break;
      const asDelta = deltas.wants(need.paths[0]!, need.size, need.hash);
      if (!asDelta && need.size > room) continue;
      const before = spool.carriedBytes;
      await carryOne(need, asDelta ? room : undefined);
      room -= spool.carriedBytes - before;
    }
  } finally {
    // A failed fsync is reported, after the manifest is saved: store verifies every blob
    // it reads, so one that did not reach the disk intact is found and carried again.
    const synced = await spool.syncBlobs(unsynced.splice(0)).then(() => undefined, (e: unknown) => e);
    manifest.putSnapshot('source', snapshot);
    manifest.setSkipped('source', skipped);
    // Another program may have taken the room kept for this save (the spool disk filled
    // under us): then the contents carried last give their room back, until the manifest
    // fits. What it then records is what the spool holds.
    // A 'carried' event's detail is "<size> <hash>" (see carryOne).
    const carriedOf = (j: JournalEvent) => (j.event === 'carried' ? { size: Number(j.detail!.split(' ')[0]), hash: j.detail!.split(' ')[1]! } : undefined);
    const dropped = await saveMakingRoom(spool, journal.flatMap((j) => carriedOf(j)?.hash ?? []));
    if (dropped.size > 0) {
      fullDisk = true;
      for (let i = journal.length - 1; i >= 0; i--) {
        const carried = carriedOf(journal[i]!);
        if (!carried || !dropped.has(carried.hash)) continue;
        journal.splice(i, 1);
        carriedFiles--;
        carriedBytes -= carried.size;
      }
      for (const need of [...carriedNeeds]) {
        const hash = need.hash ?? need.paths.map((p) => snapshot.entries.get(p)?.hash).find((h) => h !== undefined);
        if (hash !== undefined && dropped.has(hash)) carriedNeeds.delete(need);
      }
    }
    journal.push({
      command: 'fetch',
      event: 'fetch-finished',
      detail: JSON.stringify({ carriedFiles, carriedBytes, deferred: deferred.length, fullDisk, aborted: signal?.aborted ?? false }),
    });
    manifest.appendJournal(trip, journal);
    await spool.save();
    await cache.save();
    if (synced !== undefined) throw synced;
  }
  throwIfAborted(signal);

  const left = [...deferred, ...selected, ...blocked].filter((n) => !carriedNeeds.has(n));
  const leftUnreadable = left.filter((n) => n.paths.every((p) => unreadable.has(p)));
  const plannedRemovals = countPlannedRemovals(snapshot, destination, skipped.map((s) => s.path));
  return {
    trip,
    sourceEntries: snapshot.entries.size,
    assumedEmptyDestination: assumedEmpty,
    carriedFiles,
    carriedBytes,
    alreadyCarriedBytes,
    deferredFiles: left.length,
    deferredBytes: left.reduce((n, d) => n + d.size, 0),
    unreadableFiles: leftUnreadable.length,
    plannedRemovals,
    skipped,
    stoppedByFullDisk: fullDisk,
    budgetBytes: budget,
    delta: deltas.stats,
    elapsedMs: Date.now() - t0,
  };
}
