/**
 * The benchmark's measurements, in report order. Compiler measurements are `run: null` until
 * the compiler lands; implement them here as `(ctx) => Promise<number>` (see bench/measure.ts).
 * @module
 */
import * as ort from 'onnxruntime-node';
import { timeRuns, type BenchContext, type Measurement } from './measure.js';

/**
 * Median run time of `session` on the context's feeds, fetching only `fetches` (default: all
 * outputs). With `minKey`, the fastest run is recorded in `ctx.extra[minKey]`.
 */
export async function medianRunMs(ctx: BenchContext, session: ort.InferenceSession, fetches?: readonly string[], minKey?: string): Promise<number> {
  const t = await timeRuns(() => (fetches ? session.run(ctx.feeds, [...fetches]) : session.run(ctx.feeds)), ctx.timing);
  if (minKey) ctx.extra[minKey] = t.min;
  return t.median;
}

/** Median creation time of a session over `graphPath` with `options` (each session released after); fastest into `ctx.extra[minKey]`. */
export async function medianCreateMs(graphPath: string, options: ort.InferenceSession.SessionOptions, ctx: BenchContext, minKey?: string): Promise<number> {
  const t = await timeRuns(() => ort.InferenceSession.create(graphPath, options), {
    warmup: 1, runs: ctx.timing.runs, teardown: (s) => s.release(),
  });
  if (minKey) ctx.extra[minKey] = t.min;
  return t.median;
}

/** Every measurement, in report order. */
export const MEASUREMENTS: Measurement[] = [
  {
    name: 'session_create_baseline_ms',
    doc: 'Creating a plain onnxruntime session (default options) over the unmodified model file; median of ≥5 after one warm-up (page cache warm).',
    run: (ctx) => medianCreateMs(ctx.model.graphPath, {}, ctx, 'session_create_baseline_min_ms'),
  },
  {
    name: 'plain_run_ms',
    doc: 'One forward pass of the unmodified model in a plain onnxruntime session (default options); median of ≥5 after warm-up.',
    run: async (ctx) => medianRunMs(ctx, await ctx.plainSession(), undefined, 'plain_run_min_ms'),
  },
  {
    name: 'ported_plain_run_ms',
    doc: 'Forward pass of the model loaded through onnsight (graph rewritten next to the shared weights file) with no intervention; should equal plain_run_ms.',
    run: null,
  },
  {
    name: 'save_all_run_ms',
    doc: 'Forward pass with every block output saved (all layer outputs fetched as extra graph outputs).',
    run: null,
  },
  {
    name: 'patch_run_ms',
    doc: 'Forward pass with one activation patched (block output at one position replaced by a fed value).',
    run: null,
  },
  {
    name: 'first_trace_ms',
    doc: 'First trace of a script: compile, write the rewritten graph, create its session, run — from script text to results.',
    run: null,
  },
  {
    name: 'first_custom_trace_ms',
    doc: 'First trace of a second, different script in the same process (new graph, new session; model already loaded).',
    run: null,
  },
  {
    name: 'repeat_trace_ms',
    doc: 'The same trace again with new inputs: compiled graph and session cached, so only the run.',
    run: null,
  },
  {
    name: 'sweep_variants',
    doc: 'Number of variants in the sweep (e.g. patch each layer × position): a count, not a time.',
    run: null,
  },
  {
    name: 'sweep_ms',
    doc: 'Total time of the sweep with onnsight (variants batched/fed into one compiled graph where possible).',
    run: null,
  },
  {
    name: 'sweep_naive_ms',
    doc: 'The same sweep done naively: one rewritten graph and one session per variant.',
    run: null,
  },
];

/** Ratios printed under the table: `[label, numerator field, denominator field]`. */
export const RATIOS: [string, string, string][] = [
  ['ported_plain_run / plain_run', 'ported_plain_run_ms', 'plain_run_ms'],
  ['save_all_run / plain_run', 'save_all_run_ms', 'plain_run_ms'],
  ['patch_run / plain_run', 'patch_run_ms', 'plain_run_ms'],
  ['first_trace / (session_create_baseline + plain_run)', 'first_trace_ms', 'session_create_plus_run_ms'],
  ['repeat_trace / plain_run', 'repeat_trace_ms', 'plain_run_ms'],
  ['sweep / sweep_naive', 'sweep_ms', 'sweep_naive_ms'],
];
