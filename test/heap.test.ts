/**
 * The CLI's heap tuning (src/cli/heap.ts): a fixed growing factor while the live heap is
 * small, V8's own above that, decided again after every full collection.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { heapGrowingPercentFor, type HeapTuningHooks, TUNED_GROWING_PERCENT, TUNED_MAX_LIVE_BYTES, tuneHeapGrowth, v8HeapHooks } from '../src/cli/heap.ts';

const MiB = 1024 * 1024;

/** Hooks with a heap size set by the test and full collections it announces. */
function fakeHeap(usedBytes: number) {
  const flags: string[] = [];
  let onMajor: (() => void) | undefined;
  let stopped = false;
  const hooks: HeapTuningHooks = {
    setFlags: (f) => flags.push(f),
    usedHeapBytes: () => usedBytes,
    afterFullCollections(cb) {
      onMajor = cb;
      return () => {
        stopped = true;
      };
    },
  };
  return {
    hooks,
    flags,
    collectWith(bytes: number) {
      usedBytes = bytes;
      onMajor?.();
    },
    get stopped() {
      return stopped;
    },
  };
}

describe('heap tuning', () => {
  it('picks the fixed factor up to the threshold and V8’s own above it', () => {
    assert.equal(heapGrowingPercentFor(0), TUNED_GROWING_PERCENT);
    assert.equal(heapGrowingPercentFor(TUNED_MAX_LIVE_BYTES), TUNED_GROWING_PERCENT);
    assert.equal(heapGrowingPercentFor(TUNED_MAX_LIVE_BYTES + 1), 0);
    assert.ok(TUNED_GROWING_PERCENT > 100, 'a factor well above V8’s choice for a fast-allocating small heap');
  });

  it('sets the factor at once, hands back to V8 when the heap grows, and takes over again when it shrinks', () => {
    const heap = fakeHeap(10 * MiB);
    const stop = tuneHeapGrowth(heap.hooks);
    assert.deepEqual(heap.flags, [`--heap-growing-percent=${TUNED_GROWING_PERCENT}`]);
    heap.collectWith(20 * MiB); // still small: nothing to change, no flag set again
    assert.equal(heap.flags.length, 1);
    heap.collectWith(500 * MiB);
    assert.deepEqual(heap.flags.slice(1), ['--heap-growing-percent=0']);
    heap.collectWith(600 * MiB);
    assert.equal(heap.flags.length, 2);
    heap.collectWith(30 * MiB);
    assert.deepEqual(heap.flags.slice(2), [`--heap-growing-percent=${TUNED_GROWING_PERCENT}`]);
    stop();
    assert.ok(heap.stopped);
  });

  it('hears of real full collections, not of young ones', async () => {
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as (options?: { type: 'major' | 'minor' }) => void;
    let majors = 0;
    const stop = v8HeapHooks.afterFullCollections(() => majors++);
    try {
      gc({ type: 'minor' });
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(majors, 0, 'a young collection is not a full one');
      gc(); // a full collection
      const deadline = Date.now() + 5000;
      while (majors === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.ok(majors >= 1, 'a full collection was reported');
    } finally {
      stop();
    }
  });

  it('measures the heap V8 reports', () => {
    const used = v8HeapHooks.usedHeapBytes();
    assert.ok(Number.isSafeInteger(used) && used > 1024 * 1024, `a plausible heap size, not ${used}`);
  });
});
