/**
 * Smoke test of the benchmark's measurement functions (bench/measurements.ts) on gpt2-facts:
 * they run, take the paths they claim (fast path / compiled path, checked inside the
 * measurements), and the "ready to run" steps of the compiled path write the very graph the
 * engine runs. One timed call each; no timing is asserted.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BenchContext, Measurement } from '../../bench/measure.js';
import { MEASUREMENTS, RATIOS } from '../../bench/measurements.js';
import { disposeOnnsight, findBlocks, logitLensScript, lowerScript, nnsRef, onnsight, patchingSweepScript, spreadPositions } from '../../bench/onnsight.js';
import { describeModel, makeFeeds, resolveGraph } from '../../bench/setup.js';

const FACTS = path.resolve(__dirname, '../../models/gpt2-facts');

describe('benchmark measurements (gpt2-facts, one run each)', () => {
  let ctx: BenchContext;
  beforeAll(() => {
    const model = describeModel(resolveGraph(FACTS), 'gpt2-facts');
    ctx = {
      model, seqLen: 16, batch: 1, feeds: makeFeeds(model, 1, 16, 0), timing: { warmup: 0, runs: 1 }, sweepRuns: 1,
      plainSession: () => { throw new Error('not in this test'); },
      scratchDir: '', log: () => undefined, extra: {}, notes: {}, rssPhase: () => undefined,
    };
  });
  afterAll(async () => disposeOnnsight(ctx));
  const m = (name: string): Measurement => MEASUREMENTS.find((x) => x.name === name)!;

  it('finds the block list, final norm and unembedding generically', async () => {
    const st = await onnsight(ctx);
    const b = findBlocks(st.model.modules);
    expect(b.paths).toEqual(['transformer.h.0', 'transformer.h.1', 'transformer.h.2', 'transformer.h.3']);
    expect(b.finalNorm).toBe('transformer.ln_f');
    expect(b.unembed).toBe('lm_head');
    expect(nnsRef('transformer.h.3')).toBe('model.transformer.h[3]');
    expect(spreadPositions(16, 8)).toEqual([0, 2, 4, 6, 8, 10, 12, 14]);
    // The scripts parse and lower.
    lowerScript(st, logitLensScript(st, st.prompt(0), 15));
    const sweep = lowerScript(st, patchingSweepScript(st, st.prompt(1), st.prompt(0), spreadPositions(16, 8)));
    expect(sweep.scopes.length - 1).toBe(4 * (1 + 8));
  });

  for (const name of ['ported_build_ms', 'ported_plain_run_ms', 'save_all_run_ms', 'patch_run_ms', 'first_trace_ms', 'first_custom_trace_ms', 'repeat_trace_ms', 'sweep_variants', 'sweep_ms', 'sweep_full_ms', 'grad_all_blocks_ms', 'attribution_ms']) {
    it(name, async () => {
      const v = await m(name).run!(ctx);
      expect(v !== null && Number.isFinite(v) && v >= 0).toBe(true);
    });
  }

  it('sweep_cached_ms: the sweep and its naive variants on the with-past export beside the model', async () => {
    const v = await m('sweep_cached_ms').run!(ctx);
    expect(v !== null && Number.isFinite(v) && v >= 0).toBe(true);
    expect(ctx.notes.sweep_cached_ms).toBe('model.with-past.onnx; incremental sweep (its own cache rewritten to the broadcast form: src/fast/added-cache.ts)');
    expect(ctx.extra.sweep_cached_naive_ms).toBeGreaterThan(0);
  });

  it('sweep_full_added_ms: the full grid on the model itself, on the key/value cache added to its blocks', async () => {
    const v = await m('sweep_full_added_ms').run!(ctx);
    expect(v !== null && Number.isFinite(v) && v >= 0).toBe(true);
    expect(ctx.notes.sweep_full_added_ms).toBe('the model itself; incremental sweep on the key/value cache added to its blocks');
  });

  it('records which path served each trace', () => {
    expect(ctx.notes.ported_plain_run_ms).toMatch(/^fast path/);
    // The logit lens applies closed modules (ln_f, lm_head): module models on the fast path.
    expect(ctx.notes.first_custom_trace_ms).toMatch(/^fast path/);
    expect(ctx.notes.repeat_trace_ms).toMatch(/^fast path/);
    expect(ctx.notes.repeat_trace_prepacked_ms).toMatch(/^fast path/);
    // 4 blocks × 8 positions: the incremental sweep (block-range sub-models) pays off even here
    expect(ctx.notes.sweep_ms).toMatch(/^incremental sweep .*on a key\/value cache added to the blocks/);
    expect(ctx.notes.sweep_full_ms).toMatch(/^model\.with-past\.onnx; incremental sweep, keys\/values in the broadcast form \(src\/fast\/added-cache.ts: the export's own cache rewritten\)$/);
    expect(ctx.extra.sweep_full_variants).toBe(4 * 16);
    expect(ctx.extra.sweep_rows).toBe(1 + 4 * 8); // the per-layer source invokes merged into one row
  });

  it('every ratio names a measured field', () => {
    // sweep_cached_naive_ms: recorded by sweep_cached_ms (same variants, same export).
    const fields = new Set([...MEASUREMENTS.map((x) => x.name), 'peak_rss_mb', 'peak_pss_mb', 'weights_mb', 'sweep_cached_naive_ms']);
    for (const [, num, den] of RATIOS) {
      expect(fields.has(num)).toBe(true);
      expect(fields.has(den)).toBe(true);
    }
  });
});
