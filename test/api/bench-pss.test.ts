/**
 * The benchmark's PSS sampler (bench/pss.ts): parsing smaps_rollup, and the child sampler
 * seeing memory this process allocates (checked against the allocation's size, not timing).
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { enterSide, sideSessions, trackSessionSides, withPlainSession, type BenchContext } from '../../bench/measure.js';
import { parseSmapsRollup, PssSampler } from '../../bench/pss.js';
import { LanguageModel } from '../../src/index.js';

const FACTS = path.resolve(__dirname, '../../models/gpt2-facts');

/** A full collection now, so garbage of earlier tests is not freed between a test's two samples. */
function collectNow(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

describe('PSS sampler', () => {
  it('parses smaps_rollup (kB → MB of 10⁶ bytes); a missing field is undefined', () => {
    const text = 'Rss:              204800 kB\nPss:              102400 kB\nPss_Dirty:          1000 kB\nPss_Anon:          98304 kB\nPss_File:           4096 kB\nPss_Shmem:             0 kB\n';
    expect(parseSmapsRollup(text)).toEqual({ pss: 104.8576, anon: 100.663296, file: 4.194304 });
    expect(parseSmapsRollup('Rss: 1 kB\n')).toBeUndefined();
  });

  it.runIf(fs.existsSync('/proc/self/smaps_rollup'))('a child process samples this process: a 200 MB allocation shows in the mark, the peak and a reset', async () => {
    collectNow(); // before the sampler starts: no earlier garbage in any of its peaks
    const s = (await PssSampler.start(20))!;
    try {
      const before = await s.reset();
      let big: Buffer | undefined = Buffer.alloc(200e6, 7); // touched: resident and private
      const during = await s.mark();
      expect(during.now.pss - before.now.pss).toBeGreaterThan(180);
      expect(during.now.anon - before.now.anon).toBeGreaterThan(180);
      expect(during.peak.pss).toBeGreaterThanOrEqual(during.now.pss);
      expect(big.length).toBe(200e6);
      big = undefined;
      const fresh = await s.reset(); // a new peak starts from the sample taken now
      expect(fresh.peak).toEqual(fresh.now);
      expect(fresh.samples).toBeGreaterThan(during.samples);
    } finally {
      s.stop();
    }
  });

  it.runIf(fs.existsSync('/proc/self/smaps_rollup'))('side peaks: memory held while a side is current counts toward that side only', async () => {
    collectNow(); // before the sampler starts: no earlier garbage in any of its peaks
    const s = (await PssSampler.start(20))!;
    try {
      const start = await s.side('baseline');
      let big: Buffer | undefined = Buffer.alloc(200e6, 7);
      await s.mark();
      expect(big.length).toBe(200e6);
      big = undefined;
      collectNow(); // the buffer's memory goes back now
      const back = await s.side('onnsight');
      const peaks = s.sidePeaks();
      expect(peaks.baseline!.pss - start.now.pss).toBeGreaterThan(180);
      expect(back.now.pss - start.now.pss).toBeLessThan(100);
      // The onnsight side saw the memory before the switch to baseline and after the switch back, not the buffer.
      expect(peaks.baseline!.pss - peaks.onnsight!.pss).toBeGreaterThan(100);
    } finally {
      s.stop();
    }
  });

  it('withPlainSession: the plain session lives on the baseline side only; an onnsight session alive meanwhile is an overlap', async () => {
    trackSessionSides();
    const switches: string[] = [];
    const ctx = { pssSide: async (side: 'baseline' | 'onnsight') => { enterSide(side); switches.push(side); } } as Partial<BenchContext> as BenchContext;
    const graph = path.join(FACTS, 'onnx', 'model.onnx');
    const n0 = sideSessions.overlaps.length;
    const live = await withPlainSession(ctx, () => ort.InferenceSession.create(graph), async () => ({ ...sideSessions.live }));
    expect(live).toEqual({ baseline: 1, onnsight: 0 });
    expect(sideSessions.live).toEqual({ baseline: 0, onnsight: 0 });
    expect(switches).toEqual(['baseline', 'onnsight']);
    expect(sideSessions.overlaps.length).toBe(n0);
    // onnsight's sessions still open when a plain one comes: recorded.
    const lm = await LanguageModel.load(FACTS);
    try {
      await lm.trace('The Eiffel Tower is in', (m) => { m.output.logits.save('l'); });
      expect(sideSessions.live.onnsight).toBeGreaterThan(0);
      await withPlainSession(ctx, () => ort.InferenceSession.create(graph), async () => undefined);
      expect(sideSessions.overlaps.length).toBeGreaterThan(n0);
      expect(sideSessions.overlaps.at(-1)).toMatch(/onnsight session\(s\) were alive/);
    } finally {
      await lm.dispose();
    }
    expect(sideSessions.live.onnsight).toBe(0);
  });
});
