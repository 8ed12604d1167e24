/**
 * How much the V8 heap may grow between full collections, while what it holds is small.
 *
 * The SFTP client (ssh2), and to a lesser degree the HTTP stacks, allocate a new buffer for
 * every request and every packet they send. After each full collection V8 sets the next
 * one's limit from what survived and how fast the program allocates; with a small heap
 * (about 8 MB here) and such a rate it chose about 8 MB + 16 MB, and 16 MB of room is no
 * more than the young generation's capacity, which V8 counts as "limit nearly reached": it
 * started incremental marking again at once. Writing 1 GiB over SFTP ran about 240 full
 * collections, 1.7 s of the main thread, and the concurrent marking threads took the
 * second core from sshd (store of 1 GiB: 7.3–9.5 s, 5.3–7.5 CPU-s). A fixed growing
 * factor of 5 leaves room: 2–6 full collections, 6.1–6.9 s, 2.9–3.6 CPU-s. (A store of
 * 2 GiB into S3: 17–27 full collections before, 4–8 after; its time is the gateway's.)
 *
 * Only while the live heap is small: a factor of 5 on the heap of a large snapshot (a
 * million entries take hundreds of MB) would let garbage grow to gigabytes, so above
 * TUNED_MAX_LIVE_BYTES V8's own, adaptive factor is back in charge. Decided again after
 * every full collection, when the heap holds about what is live.
 */
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { getHeapStatistics, setFlagsFromString } from 'node:v8';

/** The growing factor while the heap is small: 1 + 400 % = 5. */
export const TUNED_GROWING_PERCENT = 400;
/** Above this much live heap the factor is V8's own. */
export const TUNED_MAX_LIVE_BYTES = 64 * 1024 * 1024;

/** The `--heap-growing-percent` for a heap holding `liveBytes`: 0 lets V8 choose. */
export function heapGrowingPercentFor(liveBytes: number): number {
  return liveBytes <= TUNED_MAX_LIVE_BYTES ? TUNED_GROWING_PERCENT : 0;
}

export interface HeapTuningHooks {
  /** Sets a V8 flag (v8.setFlagsFromString). */
  setFlags(flags: string): void;
  /** Bytes the heap holds now (right after a full collection: what is live). */
  usedHeapBytes(): number;
  /** Calls `onMajor` after every full collection; returns a function that stops that. */
  afterFullCollections(onMajor: () => void): () => void;
}

/** The hooks of this process's V8. */
export const v8HeapHooks: HeapTuningHooks = {
  setFlags: setFlagsFromString,
  usedHeapBytes: () => getHeapStatistics().used_heap_size,
  afterFullCollections(onMajor) {
    const observer = new PerformanceObserver((list) => {
      if (list.getEntries().some((e) => (e as { detail?: { kind?: number } }).detail?.kind === constants.NODE_PERFORMANCE_GC_MAJOR)) onMajor();
    });
    observer.observe({ entryTypes: ['gc'] });
    return () => observer.disconnect();
  },
};

/**
 * Applies `heapGrowingPercentFor` now and after every full collection, for the rest of
 * the process (or until the returned function is called).
 */
export function tuneHeapGrowth(hooks: HeapTuningHooks = v8HeapHooks): () => void {
  let current: number | undefined;
  const apply = () => {
    const wanted = heapGrowingPercentFor(hooks.usedHeapBytes());
    if (wanted === current) return;
    hooks.setFlags(`--heap-growing-percent=${wanted}`);
    current = wanted;
  };
  apply();
  return hooks.afterFullCollections(apply);
}
