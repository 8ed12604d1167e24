/**
 * store: at the destination site, write what the spool carries, apply removals, record
 * the destination's new state on the spool and free the space of what landed.
 *
 * Every file is written under a temporary name in its directory, verified against its
 * hash while it streams (a corrupt blob never lands: the write fails before the rename,
 * and on all-or-nothing backends the upload is aborted), made durable in batches, then
 * renamed into place. Removals and replacements happen only where the live entry still
 * matches the recorded destination snapshot (see plan.ts); everything else is a conflict.
 */
import pLimit from 'p-limit';
import { pipeline, Readable, Transform, type TransformCallback } from 'node:stream';
import { createHash, type Hash } from 'node:crypto';
import { bitfogError, isBitfogError, throwIfAborted, toBitfogError, type BitfogError } from './errors.ts';
import { formatHash, HASH_ALGORITHM, hashPieces } from './hashing.ts';
import type { HashCache } from './hashcache.ts';
import { EMPTY_SNAPSHOT_URL, type JournalEvent, type Snapshot } from './manifest.ts';
import { ancestors, parentPath, ROOT, type RelPath } from './paths.ts';
import { type DeltaConfig, DeltaStore, type DeltaStoreStats, recordDestinationSignatures, signatureMinBytes } from './delta/transfer.ts';
import { contentDigest, type ContentSigner, contentSigner, digestFile, prestartSignWorkers } from './delta/signer.ts';
import type { FileSignature } from './delta/signature.ts';
import { contentNeeds, planStore, type StoreAction } from './plan.ts';
import type { ProgressListener } from './progress.ts';
import { takeSnapshot } from './snapshot.ts';
import { assertSpoolApart, namesSameTree, recordedUrlsNameSameTree, type Spool } from './spool.ts';
import { tempSiblingOf } from './tempnames.ts';
import type { Destination, WriteOptions } from './types.ts';
import { FSYNC_EACH_MIN_BYTES, LARGE_FILES_AT_ONCE, OWN_COPY_MIN_BYTES } from './fsutil.ts';
import { chunksOf, readPieces, ScratchBuffers } from './streams.ts';

/** A batch of small files is made durable together: at most this many files… */
const BATCH_FILES = 1024;
/** …or this many bytes. */
const BATCH_BYTES = 64 * 1024 * 1024;

export interface StoreOptions {
  destination: Destination;
  spool: Spool;
  cache: HashCache;
  /** The source's state; default: the one recorded on the spool by fetch. */
  source?: Snapshot;
  /**
   * What the source skipped when `source` was taken (default, with the spool's source: what
   * fetch recorded). Nothing at or under those paths is removed from the destination.
   */
  sourceSkipped?: ReadonlyArray<{ path: string }>;
  /** Files written at once (default: min(8, the destination's maxConcurrency)). */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?: ProgressListener;
  /** Delta transfer settings (signature threshold; default from the environment, see delta/transfer.ts). */
  delta?: DeltaConfig;
  /** Write into this destination though the spool recorded another one (the same tree at a new address). Default: refuse with EUSAGE. */
  newDestination?: boolean;
  /** With `source`: take it though the spool's content was fetched from another tree (the same tree at a new address). Default: refuse with EUSAGE. */
  newSource?: boolean;
  /** With `source`: take an empty one though there was a tree (its removals empty the destination). Default: refuse with EUSAGE. */
  allowEmptySource?: boolean;
}

export interface StoreResult {
  trip: number;
  /** True when the spool carried nothing and only the destination's state was recorded. */
  recordedOnly: boolean;
  writtenFiles: number;
  writtenBytes: number;
  /** Files written by copying content already at the destination (renames, duplicates). */
  copiedFiles: number;
  symlinks: number;
  directories: number;
  removed: number;
  metadataUpdated: number;
  conflicts: Array<{ path: string; reason: string }>;
  /** Source files whose content is still to be carried (later trips). */
  pendingFiles: number;
  pendingBytes: number;
  /** Blobs that failed verification: not written, removed from the spool (carried again next trip). */
  corrupt: Array<{ path: string; hash: string }>;
  unsupported: Array<{ path: string; reason: string }>;
  skipped: Array<{ path: string; reason: string }>;
  freedBytes: number;
  /** Files assembled from deltas, and deltas refused because a base file changed. */
  delta: DeltaStoreStats;
  elapsedMs: number;
}

/** Errors that concern one entry: reported for it, the store goes on. Others stop the store. */
const PER_ENTRY_CODES = new Set(['ENOENT', 'EEXIST', 'EISDIR', 'ENOTDIR', 'ENOTEMPTY', 'EACCES', 'EINTEGRITY', 'EOPNOTSUPP', 'EBADPATH']);

/**
 * `err` about the file the user knows: a backend that failed to write a temporary file
 * names that (".bitfog-tmp-9178761369000000-q.txt"), which is nowhere in the user's trees.
 */
function namingTheFile(err: BitfogError, temporary: RelPath, path: RelPath): BitfogError {
  if (temporary === path) return err;
  const base = (p: string) => p.slice(p.lastIndexOf('/') + 1);
  // Changed in place: the error's class and its path (a delta's base file, say) stay.
  err.message = err.message.split(temporary).join(path).split(base(temporary)).join(base(path));
  if (err.path === temporary) Object.defineProperty(err, 'path', { value: path });
  return err;
}

/**
 * The classic form's `<srcdb>` decides what store removes, so it gets the checks fetch gives
 * a source in the spool form: a snapshot of the tree the spool's content was fetched from,
 * not of nothing (emptydb's) and not empty where there was a tree (a disk not mounted when
 * builddb ran). Each would have store remove the destination's files.
 */
async function checkGivenSource(
  given: Snapshot,
  manifest: Spool['manifest'],
  recordedDestination: ReturnType<Spool['manifest']['snapshotHeader']>,
  options: Pick<StoreOptions, 'newSource' | 'allowEmptySource'>,
): Promise<void> {
  if (given.url === EMPTY_SNAPSHOT_URL) {
    throw bitfogError('EUSAGE', 'the source snapshot given is an empty one made by "bitfog emptydb" (a destination\'s); store needs the source\'s: bitfog builddb <src-url> <srcdb>');
  }
  const fetched = manifest.snapshotHeader('source');
  if (fetched && fetched.entries > 0 && !options.newSource && !(await recordedUrlsNameSameTree(fetched.url, given.url))) {
    throw bitfogError(
      'EUSAGE',
      `the spool's content was fetched from ${fetched.url} (${fetched.takenAt}), but the source snapshot given is of ${given.url}; give a snapshot of that tree, or --new-source if it is the same tree at a new address`,
    );
  }
  if (given.entries.size === 0 && !options.allowEmptySource) {
    const had = fetched && fetched.entries > 0 ? `it had ${fetched.entries} entries when the spool was filled` : recordedDestination && recordedDestination.entries > 0 ? `the destination had ${recordedDestination.entries} entries` : undefined;
    if (had) {
      throw bitfogError('EUSAGE', `the source snapshot of ${given.url} is empty, but ${had}: storing it would remove everything at the destination. Was a disk not mounted when it was built? If the source really is empty now, run again with --allow-empty-source`);
    }
  }
}

export async function storeFromSpool(options: StoreOptions): Promise<StoreResult> {
  const t0 = Date.now();
  const { destination: dest, spool, cache, signal, onProgress } = options;
  await assertSpoolApart(spool.dir, dest, 'destination');
  const manifest = spool.manifest;
  // Another destination's own files would be conflicts this time, and once its state is
  // recorded here, removals on the next trip.
  const recordedDestination = manifest.snapshotHeader('destination');
  if (recordedDestination && !recordedDestination.assumedEmpty && recordedDestination.entries > 0 && !options.newDestination && !(await namesSameTree(recordedDestination.url, dest))) {
    throw bitfogError(
      'EUSAGE',
      `this spool's destination is ${recordedDestination.url} (recorded ${recordedDestination.takenAt}), not ${dest.url}; use another spool for another destination, or --new-destination if this is the same tree at a new address`,
    );
  }
  if (options.source) await checkGivenSource(options.source, manifest, recordedDestination, options);
  const trip = Number(manifest.getMeta('trip') ?? '0');
  const caps = dest.capabilities;
  const journal: JournalEvent[] = [];
  const result: StoreResult = {
    trip, recordedOnly: false, writtenFiles: 0, writtenBytes: 0, copiedFiles: 0, symlinks: 0, directories: 0,
    removed: 0, metadataUpdated: 0, conflicts: [], pendingFiles: 0, pendingBytes: 0, corrupt: [], unsupported: [],
    skipped: [], freedBytes: 0, delta: { files: 0, fileBytes: 0, carriedBytes: 0, refused: [] }, elapsedMs: 0,
  };
  const signOptions = { destination: dest, manifest, cache, ...(options.delta ? { config: options.delta } : {}), ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) };

  const source = options.source ?? manifest.getSnapshot('source');
  const recorded: Snapshot = manifest.getSnapshot('destination') ?? {
    url: dest.url, takenAt: new Date(0).toISOString(), entries: new Map(), assumedEmpty: true,
  };

  const liveScan = await takeSnapshot(dest, { side: 'destination', cache, ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}) });
  const live = liveScan.snapshot;
  result.skipped.push(...liveScan.skipped);
  // Leftovers of an interrupted store: bitfog's own temporary files, never a user's.
  for (const tmp of liveScan.tempFiles) await dest.remove(tmp).catch(() => {});

  if (!source) {
    if (spool.blobs().length > 0) {
      throw bitfogError('EBADSPOOL', 'the spool carries content but no source snapshot; it is damaged or was not written by "bitfog fetch"');
    }
    onProgress?.({ type: 'notice', message: 'the spool carries nothing: recording the destination state only' });
    result.recordedOnly = true;
    manifest.putSnapshot('destination', live);
    await recordDestinationSignatures({ ...signOptions, snapshot: live });
    manifest.setSkipped('destination', result.skipped);
    manifest.appendJournal(trip, [{ command: 'store', event: 'recorded-destination', detail: `${live.entries.size} entries` }]);
    await spool.save();
    result.elapsedMs = Date.now() - t0;
    return result;
  }

  const deltas = new DeltaStore(manifest, spool, dest);
  result.delta = deltas.stats;
  const unreadAtSource = (options.sourceSkipped ?? (options.source ? [] : manifest.skipped('source'))).map((s) => s.path);
  const plan = planStore({ source, recorded, live, onSpool: (h) => spool.has(h), hasRecipe: deltas.hasRecipe, capabilities: caps, unreadAtSource });
  result.unsupported = plan.unsupported;
  result.conflicts.push(...plan.conflicts);
  for (const c of plan.conflicts) onProgress?.({ type: 'conflict', path: c.path, reason: c.reason });
  for (const u of plan.unsupported) onProgress?.({ type: 'skip', path: u.path, reason: u.reason });

  const writes = plan.actions.filter((a): a is Extract<StoreAction, { op: 'write' }> => a.op === 'write');
  const totalBytes = writes.reduce((n, w) => n + w.size, 0);
  onProgress?.({ type: 'transfer-start', phase: 'store', files: writes.length, bytes: totalBytes });

  const knownDirs = new Set<string>([ROOT]);
  for (const e of live.entries.values()) if (e.kind === 'directory') knownDirs.add(e.path);
  const written = new Map<string, { hash: string; size: number }>();
  const limit = pLimit(options.concurrency ?? Math.min(8, caps.maxConcurrency));
  let doneFiles = 0;
  let doneBytes = 0;

  const failed = (path: RelPath, err: BitfogError) => {
    if (!PER_ENTRY_CODES.has(err.code)) throw err;
    const reason = err.message;
    result.conflicts.push({ path, reason });
    onProgress?.({ type: 'conflict', path, reason });
    journal.push({ command: 'store', event: 'failed', path, detail: reason });
  };

  const ensureParents = async (path: RelPath) => {
    for (const dir of ancestors(path)) {
      if (knownDirs.has(dir)) continue;
      await dest.mkdir(dir, { ...(signal ? { signal } : {}) });
      knownDirs.add(dir);
    }
  };

  // Large files are signed (delta transfer) from the bytes store writes or reads back anyway,
  // so that recording the destination's signatures does not read them again.
  const signFrom = signatureMinBytes(options.delta);
  const signedWrites = new Map<string, { hash: string; signature: FileSignature }>();
  const signs = (w: Extract<StoreAction, { op: 'write' }>): boolean => signFrom !== undefined && w.size >= signFrom && w.from.kind !== 'delta';
  /** What a write that landed handed back: the signature of its content, when it was signed. */
  type Landed = { signature?: FileSignature | undefined };
  const storeProgress = (w: Extract<StoreAction, { op: 'write' }>) => (n: number) => {
    doneBytes += n;
    onProgress?.({ type: 'transfer', phase: 'store', files: doneFiles, bytes: doneBytes, current: w.path });
  };

  // Large and signed files are digested on worker threads: started now, not at the first one.
  prestartSignWorkers(Math.min(LARGE_FILES_AT_ONCE, writes.filter((w) => w.size >= FSYNC_EACH_MIN_BYTES || signs(w)).length));
  /** Small spool content is read whole and verified before anything is written (no stream machinery per file). */
  const isSmall = (w: Extract<StoreAction, { op: 'write' }>, sign: boolean) =>
    w.from.kind === 'spool' && w.size > 0 && w.size < OWN_COPY_MIN_BYTES && !sign;
  const smallScratch = new ScratchBuffers();
  /** `into`: memory lent for the content (see ScratchBuffers); the result may be a view of it. */
  const readVerifiedSmall = async (w: Extract<StoreAction, { op: 'write' }>, into: Buffer): Promise<Buffer> => {
    const content = await spool.readSmallBlob(w.hash, w.size, into);
    const got = formatHash(createHash(HASH_ALGORITHM).update(content));
    if (got !== w.hash || content.length !== w.size) {
      throw bitfogError('EINTEGRITY', `content hashed to ${got} (${content.length} bytes), expected ${w.hash} (${w.size} bytes)`);
    }
    storeProgress(w)(content.length);
    return content;
  };

  /** Opens the content of a write, verified as it streams: a spool blob, a delta assembly or a file already at the destination. */
  const openContent = async (w: Extract<StoreAction, { op: 'write' }>, signer: ContentSigner | undefined): Promise<Readable & { signature?: FileSignature }> => {
    let hashVerifiedUpstream = false;
    let raw: Readable;
    if (w.from.kind === 'delta') {
      const assembled = deltas.open(w.hash, signal);
      raw = assembled.content;
      hashVerifiedUpstream = assembled.wholeFileVerified;
    } else {
      raw = w.from.kind === 'spool'
        ? w.size === 0 ? emptyStream() : await spool.readBlob(w.hash, signal)
        : await dest.read(w.from.path, { ...(signal ? { signal } : {}) });
    }
    const verifier = new VerifyingStream(w.hash, w.size, storeProgress(w), signer, hashVerifiedUpstream);
    // pipeline carries a read error of the source into the verifier, where the writer sees it.
    return pipeline(raw, verifier, () => {});
  };

  /**
   * After the destination did not end up with a spool blob's content: whose fault? The
   * blob's (EINTEGRITY: the usual corrupt-spool handling follows) or the destination's
   * (`destinationError`, and the blob stays for another attempt).
   */
  const blameDestinationUnlessBlobCorrupt = async (w: Extract<StoreAction, { op: 'write' }>, destinationError: BitfogError): Promise<never> => {
    const blob = await spool.hashBlob(w.hash, signal ? { signal } : {});
    if (blob.hash !== w.hash || blob.bytes !== w.size) {
      throw bitfogError('EINTEGRITY', `spool content hashed to ${blob.hash} (${blob.bytes} bytes), expected ${w.hash} (${w.size} bytes)`, { path: w.path });
    }
    throw destinationError;
  };

  const destinationSends = typeof dest.sendLocalFile === 'function' && (caps.atomicRename || caps.atomicWrite);
  /**
   * A spool blob handed to the destination as a file, on a temporary name or (all-or-nothing
   * writes) its final one: the destination reads it into its own buffers, hashes every byte
   * and commits only what checks out (Destination.sendLocalFile), so nothing is read back.
   * false: the destination cannot; stream through `write` instead.
   */
  const sendFromSpool = async (
    w: Extract<StoreAction, { op: 'write' }>, target: RelPath, writeOptions: WriteOptions, sign: boolean,
  ): Promise<Landed | false> => {
    if (!destinationSends || w.from.kind !== 'spool' || w.size < OWN_COPY_MIN_BYTES) return false;
    const progress = storeProgress(w);
    let seen = 0;
    const signer = sign ? contentSigner(w.size) : undefined;
    try {
      await dest.sendLocalFile!(target, spool.blobPath(w.hash), {
        ...writeOptions,
        hash: w.hash,
        onBytes: (bytes) => {
          seen += bytes.length;
          progress(bytes.length);
          if (signer && seen <= w.size) return signer.update(bytes);
        },
      });
      return { signature: await signer?.finish() };
    } catch (e) {
      // Declining is only allowed before reading: the signer has seen nothing yet then.
      if (isBitfogError(e, 'EOPNOTSUPP') && seen === 0) return false;
      if (!isBitfogError(e, 'EINTEGRITY')) throw e;
      return blameDestinationUnlessBlobCorrupt(w, bitfogError('EIO', `the destination refused the intact content of ${JSON.stringify(w.path)}: ${e.message}`, { path: w.path, cause: e }));
    } finally {
      signer?.dispose();
    }
  };

  const destinationCopies = typeof dest.writeFromLocalFile === 'function';
  /**
   * The destination's own copy of a spool blob onto a temporary name (an in-kernel copy for
   * local disks), then read back and verified there: what is renamed into place later is
   * what was checked. A large copy is hashed (and signed) on a worker thread, so that the
   * large files stored at once are hashed on as many cores. false: the destination cannot;
   * stream through `write` instead.
   */
  const copyFromSpool = async (
    w: Extract<StoreAction, { op: 'write' }>, target: RelPath, writeOptions: WriteOptions, sign: boolean,
  ): Promise<Landed | false> => {
    if (!destinationCopies || w.from.kind !== 'spool' || w.size < OWN_COPY_MIN_BYTES) return false;
    try {
      await dest.writeFromLocalFile!(target, spool.blobPath(w.hash), writeOptions);
    } catch (e) {
      if (isBitfogError(e, 'EOPNOTSUPP')) return false;
      throw e;
    }
    // Large or signed: hashed (and signed) on a worker thread, which reads a local file itself.
    const onWorker = sign || w.size >= FSYNC_EACH_MIN_BYTES;
    const request = { ...(sign ? { sign: { size: w.size } } : {}), wholeFile: true };
    const progress = storeProgress(w);
    const readOptions = { onBytes: progress, ...(signal ? { signal } : {}) };
    let landed: { hash?: string | undefined; bytes: number; signature?: FileSignature | undefined };
    if (dest.openFile) {
      const file = await dest.openFile(target, signal ? { signal } : {});
      try {
        landed = onWorker ? await digestFile(file, request, readOptions) : await hashPieces(file, readOptions);
      } finally {
        await file.close();
      }
    } else {
      const digest = onWorker ? contentDigest(request) : undefined;
      const hash = digest ? undefined : createHash(HASH_ALGORITHM);
      try {
        let bytes = 0;
        for await (const chunk of chunksOf(await dest.read(target, signal ? { signal } : {}))) {
          throwIfAborted(signal);
          bytes += chunk.length;
          progress(chunk.length);
          hash?.update(chunk);
          const wait = digest?.update(chunk);
          if (wait) await wait;
        }
        landed = { ...(digest ? await digest.finish() : { hash: formatHash(hash!) }), bytes };
      } finally {
        digest?.dispose();
      }
    }
    if (landed.hash === w.hash && landed.bytes === w.size) return { signature: landed.signature };
    return blameDestinationUnlessBlobCorrupt(w, bitfogError('EIO', `the destination did not keep what was written to ${JSON.stringify(w.path)}: it reads back as ${landed.hash} (${landed.bytes} bytes)`, { path: w.path }));
  };

  /** Writes one file under its temporary name (or in place on all-or-nothing backends). */
  const writeStaged = async (w: Extract<StoreAction, { op: 'write' }>): Promise<RelPath | undefined> => {
    throwIfAborted(signal);
    const target = caps.atomicRename ? tempSiblingOf(w.path) : w.path;
    let signer: ContentSigner | undefined;
    try {
      await ensureParents(w.path);
      const writeOptions = {
        size: w.size, hash: w.hash,
        ...(w.mode === undefined ? {} : { mode: w.mode }), ...(w.mtimeMs === undefined ? {} : { mtimeMs: w.mtimeMs }),
        ...(signal ? { signal } : {}),
      };
      const sign = signs(w);
      const done = (await sendFromSpool(w, target, writeOptions, sign)) || (target !== w.path && (await copyFromSpool(w, target, writeOptions, sign)));
      if (done) {
        if (done.signature) signedWrites.set(w.path, { hash: w.hash, signature: done.signature });
        return target;
      }
      if (isSmall(w, sign)) {
        // Held until the write is done: what was verified is what gets written.
        const scratch = smallScratch.take(w.size + 1);
        try {
          const content = await readVerifiedSmall(w, scratch);
          if (!(await dest.writeSmallFile?.(target, content, writeOptions))) {
            // A stream may be read after `write` gave up (an abort): its own copy, not lent memory.
            await dest.write(target, Readable.from([Buffer.from(content)]), { ...writeOptions, contentVerified: true });
          }
        } finally {
          smallScratch.give(scratch);
        }
        return target;
      }
      if (w.from.kind === 'delta' && target !== w.path && deltas.positional) {
        // Rebuilt where its pieces fall, through reused buffers; verified as it is written.
        const file = await dest.createFile!(target, writeOptions);
        try {
          await deltas.assembleInto(w.hash, file, { ...(signal ? { signal } : {}), onBytes: storeProgress(w) });
          await file.finish();
        } catch (e) {
          await file.discard();
          throw e;
        }
        return target;
      }
      signer = sign ? contentSigner(w.size) : undefined;
      const content = await openContent(w, signer);
      await dest.write(target, content, { ...writeOptions, contentVerified: true });
      if (content.signature) signedWrites.set(w.path, { hash: w.hash, signature: content.signature });
      return target;
    } catch (e) {
      const err = namingTheFile(toBitfogError(e, `cannot write ${JSON.stringify(w.path)}`, w.path), target, w.path);
      if (caps.atomicRename) await dest.remove(target).catch(() => {});
      signer?.dispose();
      const deltaRefused = w.from.kind === 'delta' ? deltas.failed(w.hash, w.path, err) : undefined;
      if (deltaRefused !== undefined) {
        onProgress?.({ type: 'skip', path: w.path, reason: deltaRefused });
        journal.push({ command: 'store', event: 'delta-refused', path: w.path, detail: deltaRefused });
        result.pendingFiles++;
        result.pendingBytes += w.size;
        return undefined;
      }
      if (err.code === 'EINTEGRITY' && w.from.kind === 'spool') {
        result.corrupt.push({ path: w.path, hash: w.hash });
        await spool.removeBlob(w.hash);
        journal.push({ command: 'store', event: 'corrupt-blob', path: w.path, detail: w.hash });
        onProgress?.({ type: 'skip', path: w.path, reason: `spool content failed verification (${w.hash}); removed from the spool, carried again next trip` });
        return undefined;
      }
      if (err.code === 'EINTEGRITY') {
        onProgress?.({ type: 'skip', path: w.path, reason: `the destination file it was copied from changed; carried on a later trip` });
        result.pendingFiles++;
        result.pendingBytes += w.size;
        return undefined;
      }
      failed(w.path, err);
      return undefined;
    }
  };

  /**
   * Large spool blobs are freed as soon as every source path that wants their content has
   * landed, while later files are still being written, instead of all at the end: on a disk
   * that discards freed blocks, unlinking 2 GiB of blobs took 1–1.7 s after the last write,
   * and the same unlinks cost next to nothing alongside the copies. Only blobs of files that
   * are batches of their own (FSYNC_EACH_MIN_BYTES and up): freeing thousands of small blobs
   * during the writes made a store much slower, the unlinks and the creates contending for
   * the file system's journal. Blobs that a delta recipe uses as a chunk, and contents some
   * source path still lacks (a conflict, a path not written), wait for the end, where the
   * destination's final state decides.
   */
  const largeContentPaths = new Map<string, RelPath[]>();
  for (const e of source.entries.values()) {
    if (e.kind !== 'file' || e.hash === undefined || e.size < FSYNC_EACH_MIN_BYTES) continue;
    const paths = largeContentPaths.get(e.hash);
    if (paths) paths.push(e.path);
    else largeContentPaths.set(e.hash, [e.path]);
  }
  const recipeChunks = deltas.chunkBlobs();
  /** One early free at a time, in the background: each holds a thread of the I/O pool the copies need. */
  let freeing: Promise<void> = Promise.resolve();
  const freeWhenAllLanded = (w: Extract<StoreAction, { op: 'write' }>) => {
    if (w.from.kind !== 'spool' || recipeChunks.has(w.hash)) return;
    const paths = largeContentPaths.get(w.hash); // none for small contents
    if (!paths || !paths.every((p) => written.get(p)?.hash === w.hash)) return;
    freeing = freeing.then(async () => {
      if (!spool.has(w.hash)) return;
      try {
        // The renames must be durable before the spool's copy of their content goes.
        await dest.sync?.([...new Set(paths.map(parentPath))], { ...(signal ? { signal } : {}) });
        await spool.removeBlob(w.hash);
        result.freedBytes += w.size;
      } catch {
        // Not freed now: the end of the store decides again, from the destination's final state.
      }
    });
  };

  const renamedDirs = new Set<RelPath>();
  const syncRenamedDirs = async () => {
    if (renamedDirs.size === 0) return;
    const dirs = [...renamedDirs];
    renamedDirs.clear();
    await dest.sync?.(dirs, { ...(signal ? { signal } : {}) });
  };

  const runWrites = async (batch: Array<Extract<StoreAction, { op: 'write' }>>) => {
    // Stage every file of the batch, flush them together, then rename each into place.
    const staged = await Promise.all(batch.map((w) => limit(() => writeStaged(w))));
    const ok = batch.map((w, i) => ({ w, tmp: staged[i] })).filter((x): x is { w: typeof x.w; tmp: RelPath } => x.tmp !== undefined);
    if (caps.atomicRename && ok.length) {
      try {
        await dest.sync?.(ok.map((x) => x.tmp), { ...(signal ? { signal } : {}) });
      } catch (e) {
        // Interrupted (or failed) before they could be renamed: staged files go, rather than
        // wait at the destination for the next store.
        await Promise.all(ok.map(({ tmp }) => dest.remove(tmp).catch(() => {})));
        throw e;
      }
      await Promise.all(
        ok.map(({ w, tmp }) =>
          limit(async () => {
            try {
              await dest.rename(tmp, w.path, { ...(signal ? { signal } : {}) });
              landed(w);
            } catch (e) {
              await dest.remove(tmp).catch(() => {});
              failed(w.path, toBitfogError(e, `cannot move ${JSON.stringify(w.path)} into place`, w.path));
            }
          }),
        ),
      );
      // The renames themselves are made durable once, after all writes (see syncRenamedDirs):
      // a file system's next flush covers them, and one call replaces one per batch.
      for (const { w } of ok) renamedDirs.add(parentPath(w.path));
    } else {
      for (const { w } of ok) landed(w);
    }
    for (const { w } of ok) freeWhenAllLanded(w);
  };

  const landed = (w: Extract<StoreAction, { op: 'write' }>) => {
    written.set(w.path, { hash: w.hash, size: w.size });
    result.writtenFiles++;
    result.writtenBytes += w.size;
    if (w.from.kind === 'destination') result.copiedFiles++;
    if (w.from.kind === 'delta') deltas.landed(w.hash, w.path);
    doneFiles++;
    journal.push({ command: 'store', event: 'written', path: w.path, detail: `${w.size} ${w.hash}` });
  };

  const runOne = async (a: StoreAction) => {
    throwIfAborted(signal);
    const opt = signal ? { signal } : {};
    try {
      switch (a.op) {
        case 'mkdir':
          await ensureParents(a.path);
          await dest.mkdir(a.path, opt);
          knownDirs.add(a.path);
          result.directories++;
          break;
        case 'remove':
          try {
            await dest.remove(a.path, opt);
          } catch (e) {
            if (!isBitfogError(e, 'ENOENT')) throw e;
          }
          result.removed++;
          journal.push({ command: 'store', event: 'removed', path: a.path });
          break;
        case 'rmdir':
          try {
            await dest.rmdir(a.path, opt);
            result.removed++;
            journal.push({ command: 'store', event: 'removed', path: a.path });
          } catch (e) {
            if (isBitfogError(e, 'ENOENT')) break;
            if (isBitfogError(e, 'ENOTEMPTY')) {
              throw bitfogError('ENOTEMPTY', 'directory left in place: it still holds entries bitfog left alone', { path: a.path });
            }
            throw e;
          }
          break;
        case 'symlink': {
          await ensureParents(a.path);
          if (a.replaces && caps.atomicRename) {
            const tmp = tempSiblingOf(a.path);
            await dest.symlink(tmp, a.target, opt);
            await dest.rename(tmp, a.path, opt);
          } else {
            if (a.replaces) await dest.remove(a.path, opt).catch(() => {});
            await dest.symlink(a.path, a.target, opt);
          }
          if (a.mtimeMs !== undefined) await dest.setMetadata(a.path, { mtimeMs: a.mtimeMs }, opt);
          result.symlinks++;
          journal.push({ command: 'store', event: 'symlinked', path: a.path, detail: a.target });
          break;
        }
        case 'meta':
          await dest.setMetadata(a.path, { ...(a.mode === undefined ? {} : { mode: a.mode }), ...(a.mtimeMs === undefined ? {} : { mtimeMs: a.mtimeMs }) }, opt);
          result.metadataUpdated++;
          break;
        case 'write':
          await runWrites([a]);
          break;
      }
    } catch (e) {
      failed(a.path, toBitfogError(e, `cannot ${a.op} ${JSON.stringify(a.path)}`, a.path));
    }
  };

  // Batches of writes run several at once: one stages while another is flushed, and files
  // of FSYNC_EACH_MIN_BYTES and more are batches of their own, renamed as soon as durable,
  // LARGE_FILES_AT_ONCE of them at a time. Any other action waits for them, so the phases
  // of the plan keep their order.
  const batches = new InFlight(Math.max(2, Math.min(4, options.concurrency ?? caps.maxConcurrency)));
  const largeWrites = new InFlight(Math.min(LARGE_FILES_AT_ONCE, options.concurrency ?? caps.maxConcurrency));
  try {
    // Actions come ordered in phases (plan.ts orderActions); writes and symlinks of one phase
    // run concurrently in durable batches, everything else in order.
    let i = 0;
    let runningKind: string | undefined;
    const actions = plan.actions;
    while (i < actions.length) {
      const a = actions[i]!;
      // Copies within the destination and delta assemblies read files other writes may
      // replace: batches of another kind of content wait for those running to finish.
      if (a.op !== 'write' || a.from.kind !== runningKind) await Promise.all([batches.drain(), largeWrites.drain()]);
      if (a.op === 'write') runningKind = a.from.kind;
      if (a.op === 'write' && a.size >= FSYNC_EACH_MIN_BYTES) {
        await largeWrites.add(runWrites([a]));
        i++;
        continue;
      }
      if (a.op === 'write') {
        const batch: Array<Extract<StoreAction, { op: 'write' }>> = [];
        let bytes = 0;
        while (i < actions.length && actions[i]!.op === 'write' && batch.length < BATCH_FILES && bytes < BATCH_BYTES) {
          const w = actions[i] as Extract<StoreAction, { op: 'write' }>;
          if (w.size >= FSYNC_EACH_MIN_BYTES || (batch.length > 0 && w.from.kind !== batch[0]!.from.kind)) break;
          batch.push(w);
          bytes += w.size;
          i++;
        }
        await batches.add(runWrites(batch));
      } else if (a.op === 'symlink' || a.op === 'meta') {
        const group: StoreAction[] = [];
        while (i < actions.length && actions[i]!.op === a.op && group.length < BATCH_FILES) group.push(actions[i++]!);
        if (a.op === 'meta') for (const m of group) await runOne(m); // deepest first matters for directories
        else await Promise.all(group.map((s) => limit(() => runOne(s))));
      } else {
        await runOne(a);
        i++;
      }
    }
    await Promise.all([batches.drain(), largeWrites.drain()]);
    await syncRenamedDirs();
  } finally {
    await Promise.all([batches.settle(), largeWrites.settle()]);
    await freeing;
    // Whatever happened, record what is known so a rerun starts from the truth.
    manifest.appendJournal(trip, journal);
    journal.length = 0;
    if (written.size > 0) await spool.save().catch(() => {});
  }

  // The destination's new state: one more listing, with the hashes of what was just
  // written taken from the verified writes rather than read back.
  const finalScan = await takeSnapshot(dest, {
    side: 'destination', cache, knownHashes: written,
    ...(signal ? { signal } : {}), ...(onProgress ? { onProgress } : {}),
  });
  const finalState = finalScan.snapshot;

  // Free the blobs whose content has landed everywhere the source wants it.
  const { alreadyCarried } = contentNeeds(source, finalState, new Set(spool.blobs().map((b) => b.hash)));
  const stillNeeded = new Set(alreadyCarried.map((c) => c.hash!));
  const deltaNeeded = new Set(contentNeeds(source, finalState, new Set(deltas.recipeHashes())).alreadyCarried.map((c) => c.hash!));
  const deltaChunks = deltas.keepFor(deltaNeeded);
  const landedBlobs = spool.blobs().filter((b) => !stillNeeded.has(b.hash) && !deltaChunks.has(b.hash));
  await spool.removeBlobs(landedBlobs.map((b) => b.hash));
  for (const b of landedBlobs) result.freedBytes += b.size;
  const pendingNeeds = contentNeeds(source, finalState, new Set()).needs.filter((n) => !n.hash || (!stillNeeded.has(n.hash) && !deltaNeeded.has(n.hash)));
  result.pendingFiles = pendingNeeds.reduce((n, p) => n + p.paths.length, 0);
  result.pendingBytes = pendingNeeds.reduce((n, p) => n + p.size, 0);

  manifest.putSnapshot('destination', finalState);
  await recordDestinationSignatures({ ...signOptions, snapshot: finalState, known: new Map([...signedWrites, ...deltas.knownSignatures]) });
  manifest.setConflicts(result.conflicts);
  manifest.setSkipped('destination', [...result.skipped, ...result.unsupported]);
  manifest.appendJournal(trip, [{
    command: 'store', event: 'store-finished',
    detail: JSON.stringify({
      written: result.writtenFiles, bytes: result.writtenBytes, removed: result.removed, conflicts: result.conflicts.length,
      pending: result.pendingFiles, corrupt: result.corrupt.length,
    }),
  }]);
  await spool.save();
  await cache.save();
  result.elapsedMs = Date.now() - t0;
  return result;
}

/**
 * Tasks running at once, at most `max`: `add` waits for room, `drain` for all of them.
 * The first failure is rethrown by the next `add` or `drain`.
 */
class InFlight {
  readonly #running = new Set<Promise<void>>();
  #failure: { error: unknown } | undefined;

  constructor(private readonly max: number) {}

  async add(task: Promise<void>): Promise<void> {
    const tracked = task.then(
      () => void this.#running.delete(tracked),
      (error: unknown) => {
        this.#running.delete(tracked);
        this.#failure ??= { error };
      },
    );
    this.#running.add(tracked);
    while (this.#running.size >= this.max) await Promise.race(this.#running);
    this.#rethrow();
  }

  async drain(): Promise<void> {
    await Promise.all(this.#running);
    this.#rethrow();
  }

  /** Waits for all, ignoring failures (after an error elsewhere, before cleaning up). */
  async settle(): Promise<void> {
    await Promise.all(this.#running);
  }

  #rethrow(): void {
    if (this.#failure) throw this.#failure.error;
  }
}

function emptyStream(): Readable {
  const t = new Transform();
  t.end();
  return t;
}

/**
 * Passes content through while hashing it; fails the stream (so the consumer's write fails
 * before anything is renamed or committed) when the hash or size does not match. With
 * `hashVerifiedUpstream` (a delta assembly that proves the whole file through its chunks,
 * and errors instead of ending otherwise) only the size is checked here.
 */
class VerifyingStream extends Transform {
  readonly #hash: Hash | undefined;
  #bytes = 0;
  readonly #expectedHash: string;
  readonly #expectedSize: number;
  readonly #onBytes: (n: number) => void;
  readonly #signer: ContentSigner | undefined;
  /** The content's signature, once the stream has ended, when a signer was given. */
  signature: FileSignature | undefined;

  constructor(expectedHash: string, expectedSize: number, onBytes: (n: number) => void, signer?: ContentSigner, hashVerifiedUpstream = false) {
    super({ highWaterMark: 1 << 20 });
    this.#hash = hashVerifiedUpstream ? undefined : createHash('sha256');
    this.#expectedHash = expectedHash;
    this.#expectedSize = expectedSize;
    this.#onBytes = onBytes;
    this.#signer = signer;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#expectedSize) {
      cb(bitfogError('EINTEGRITY', `content is longer than the expected ${this.#expectedSize} bytes`));
      return;
    }
    this.#hash?.update(chunk);
    this.#onBytes(chunk.length);
    let wait: void | Promise<void>;
    try {
      wait = this.#signer?.update(chunk);
    } catch (e) {
      cb(e as Error);
      return;
    }
    if (wait) wait.then(() => cb(null, chunk), cb);
    else cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    const got = this.#hash ? formatHash(this.#hash) : this.#expectedHash;
    if (this.#bytes !== this.#expectedSize || got !== this.#expectedHash) {
      cb(bitfogError('EINTEGRITY', `content hashed to ${got} (${this.#bytes} bytes), expected ${this.#expectedHash} (${this.#expectedSize} bytes)`));
      return;
    }
    if (!this.#signer) {
      cb();
      return;
    }
    this.#signer.finish().then((signature) => {
      this.signature = signature;
      cb();
    }, cb);
  }
}
