/**
 * The benchmark's PSS sampler (bench/pss.ts): parsing smaps_rollup, and the child sampler
 * seeing memory this process allocates (checked against the allocation's size, not timing).
 */
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseSmapsRollup, PssSampler } from '../../bench/pss.js';

describe('PSS sampler', () => {
  it('parses smaps_rollup (kB → MB of 10⁶ bytes); a missing field is undefined', () => {
    const text = 'Rss:              204800 kB\nPss:              102400 kB\nPss_Dirty:          1000 kB\nPss_Anon:          98304 kB\nPss_File:           4096 kB\nPss_Shmem:             0 kB\n';
    expect(parseSmapsRollup(text)).toEqual({ pss: 104.8576, anon: 100.663296, file: 4.194304 });
    expect(parseSmapsRollup('Rss: 1 kB\n')).toBeUndefined();
  });

  it.runIf(fs.existsSync('/proc/self/smaps_rollup'))('a child process samples this process: a 200 MB allocation shows in the mark, the peak and a reset', async () => {
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
});
