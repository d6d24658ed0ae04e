/**
 * src/js-heap.ts: a collection after a compile that grew the heap past the threshold frees
 * the compile's garbage (the heap's used size falls back), and none is made below it; the same
 * for ArrayBuffers (collectBuffersAfter, after the load's shape probe), and for a heap larger
 * than the threshold (collectIfLarge, before a sweep's clean run). collectBuffersAfter returns
 * with the dead buffers' memory already freed (its second collection finishes V8's freeing).
 */
import { describe, expect, it } from 'vitest';
import { BUFFERS_AFTER, buffersUsed, collectAfter, collectBuffersAfter, collectIfLarge, gcStats, GARBAGE_AFTER, heapUsed } from '../../src/js-heap.js';

/**
 * Many small objects, as a compile leaves them, allocated until the heap holds more than
 * `bytes`; live while the caller reads the heap, garbage once it lets them go.
 */
function rowsUntilHeap(bytes: number): { a: number; b: string }[] {
  const rows: { a: number; b: string }[] = [];
  for (let i = 0; heapUsed() <= bytes; i++) for (let j = 0; j < 10_000; j++) rows.push({ a: i, b: `v${i}.${j}` });
  return rows;
}

describe('collectAfter', () => {
  it('collects garbage past the threshold, and only then', () => {
    const since = heapUsed();
    expect(collectAfter(since)).toBe(false);
    let rows: { a: number; b: string }[] | null = rowsUntilHeap(since + GARBAGE_AFTER * 1.25);
    const grown = heapUsed() - since;
    expect(rows.length).toBeGreaterThan(0);
    rows = null; // now garbage
    const calls = gcStats.calls;
    expect(collectAfter(since)).toBe(true);
    expect(gcStats.calls).toBe(calls + 1);
    expect(heapUsed() - since).toBeLessThan(grown / 4);
  });
});

describe('collectBuffersAfter', () => {
  it('collects ArrayBuffers left as garbage past the threshold (the load\'s probe outputs), and only then', () => {
    const since = buffersUsed();
    expect(collectBuffersAfter(since)).toBe(false);
    let bufs: Float32Array[] | null = Array.from({ length: 12 }, () => new Float32Array(2 ** 20)); // 48 MiB
    const grown = buffersUsed() - since;
    expect(grown).toBeGreaterThan(BUFFERS_AFTER);
    expect(bufs.length).toBe(12);
    bufs = null; // now garbage
    const calls = gcStats.calls;
    expect(collectBuffersAfter(since)).toBe(true);
    expect(gcStats.calls).toBe(calls + 2); // the second finishes the freeing of the first's dead buffers
    expect(buffersUsed() - since).toBeLessThanOrEqual(2 ** 20); // freed when it returns, not a turn later
  });
});

describe('collectIfLarge', () => {
  it('collects when the heap holds more than the threshold, and only then', () => {
    collectIfLarge();
    expect(heapUsed()).toBeLessThan(GARBAGE_AFTER); // this test's premise: a worker's live heap is smaller
    expect(collectIfLarge()).toBe(false);
    let rows: { a: number; b: string }[] | null = rowsUntilHeap(GARBAGE_AFTER * 1.25);
    expect(rows.length).toBeGreaterThan(0);
    rows = null; // now garbage
    const calls = gcStats.calls;
    expect(collectIfLarge()).toBe(true);
    expect(gcStats.calls).toBe(calls + 1);
    expect(heapUsed()).toBeLessThan(GARBAGE_AFTER);
  });
});
