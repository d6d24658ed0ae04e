/**
 * Collecting the JavaScript heap's garbage at a chosen moment: after a large compile, before
 * the onnxruntime run that follows it.
 *
 * Why: compiling a variant allocates far more than it keeps (GPT-2 small's gradient graph,
 * 4,467 nodes: ~130 MB of graph views, dependency graphs and copies, ~1 MB kept). V8 collects
 * its old generation only under allocation pressure, and a run hands its work to onnxruntime's
 * threads, so that garbage usually sat in the heap through the run — on top of the run's own
 * buffers, at the run's peak (measured: heap 160 MB used before the run, 29 MB after a full
 * collection). One full collection costs tens of milliseconds on such a heap, against seconds
 * of compilation; it is done only when the compile grew the heap by {@link GARBAGE_AFTER}.
 *
 * Node has no collection API without `--expose-gc`; the flag is set for the moment it takes
 * to get V8's `gc` function in a new context (the way test runners measure leaks), then unset
 * again, so no `gc` global appears. `ONNSIGHT_GC=0` turns it off; where it is unavailable it
 * does nothing.
 * @module
 */
import v8 from 'node:v8';
import vm from 'node:vm';

let gcFn: (() => void) | null | undefined;

/** V8's full collection, or null where it cannot be had (loaded once). */
function gcFunction(): (() => void) | null {
  if (gcFn !== undefined) return gcFn;
  gcFn = null;
  if (process.env.ONNSIGHT_GC === '0') return gcFn;
  const exposed = (globalThis as { gc?: unknown }).gc;
  if (typeof exposed === 'function') return (gcFn = exposed as () => void);
  try {
    v8.setFlagsFromString('--expose-gc');
    const f: unknown = vm.runInNewContext('gc');
    if (typeof f === 'function') gcFn = f as () => void;
  } catch {
    gcFn = null;
  } finally {
    v8.setFlagsFromString('--no-expose-gc');
  }
  return gcFn;
}

/** Heap growth (bytes) over a compile above which {@link collectAfter} collects: 64 MiB. */
export const GARBAGE_AFTER = 2 ** 26;

/** Bytes used in the JavaScript heap now (the starting point for {@link collectAfter}). */
export function heapUsed(): number {
  return v8.getHeapStatistics().used_heap_size;
}

/** Collections made so far (tests, benchmarks). */
export const gcStats = { calls: 0 };

/**
 * A full collection of the JavaScript heap when it grew by more than {@link GARBAGE_AFTER}
 * since `since` (a {@link heapUsed} reading); whether one was made.
 */
export function collectAfter(since: number): boolean {
  return heapUsed() - since > GARBAGE_AFTER && collectNow();
}

/**
 * A full collection when the heap holds more than {@link GARBAGE_AFTER} bytes now; whether one
 * was made. For the start of long work that follows a large front end whose start is not
 * known here (a patching grid's trace of thousands of invokes: parsed, lowered and planned
 * before the sweep, ~150 MB of garbage on GPT-2 small's 12 × 128 grid, sitting in the heap
 * through the sweep's clean run otherwise).
 */
export function collectIfLarge(): boolean {
  return heapUsed() > GARBAGE_AFTER && collectNow();
}

/** A full collection now, counted in {@link gcStats}; false where `gc` cannot be had. */
function collectNow(): boolean {
  const gc = gcFunction();
  if (!gc) return false;
  gcStats.calls++;
  gc();
  return true;
}

/** Growth of the ArrayBuffers' memory above which {@link collectBuffersAfter} collects: 16 MiB. */
export const BUFFERS_AFTER = 2 ** 24;

/** Bytes held by ArrayBuffers now (the starting point for {@link collectBuffersAfter}). */
export function buffersUsed(): number {
  return process.memoryUsage().arrayBuffers;
}

/**
 * A full collection when the memory of ArrayBuffers grew by more than {@link BUFFERS_AFTER}
 * since `since` (a {@link buffersUsed} reading); whether one was made. For a step that leaves
 * host tensors behind as garbage (the load's shape probe fetches every boundary value): their
 * buffers live outside V8's heap, so its heap-size heuristics may keep them for a long time,
 * through the next session's creation.
 *
 * Two collections, in fact: V8 frees the memory of the buffers a collection found dead after
 * it, partly off the main thread, and finishes that work at the start of its next collection.
 * So when this returns, that memory is back in the C heap and a `malloc_trim` right after
 * gives it back to the system. With one collection, a trim one event-loop turn later ran before
 * it was back in 2 loads of GPT-2 small in 6, leaving 23–36 MB of the probe's outputs in glibc's
 * heap until some later trim; with two, 8 loads in 8 left none.
 */
export function collectBuffersAfter(since: number): boolean {
  return buffersUsed() - since > BUFFERS_AFTER && collectNow() && collectNow();
}
