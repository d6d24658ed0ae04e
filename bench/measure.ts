/**
 * Timing helpers and the measurement contract of the benchmark harness (bench/run.ts).
 *
 * A measurement is a named function `(ctx) => Promise<number>` returning one number (usually
 * milliseconds, already a median); bench/measurements.ts lists them, `run: null` marks one
 * not implemented yet (reported as `null`).
 * @module
 */
import type * as ort from 'onnxruntime-node';

/** Median of a non-empty list (mean of the two middle values for even lengths). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error('internal: median of nothing');
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** How many untimed and timed repetitions a timing does. */
export interface TimingOptions {
  /** Untimed runs first (default 1). */
  warmup?: number;
  /** Timed runs (default 5; the harness never uses fewer than 5 for run times). */
  runs?: number;
}

/** The result of {@link timeRuns}. */
export interface Timing {
  /** Median of the timed runs, ms. */
  median: number;
  /** Fastest run, ms. */
  min: number;
  /** Slowest run, ms. */
  max: number;
  /** Every timed run, ms, in order. */
  samples: number[];
}

/** Wall time of one call, ms. */
export async function timeOnce(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/**
 * Runs `fn` `warmup` times untimed, then `runs` times timed. `setup`/`teardown` run around each
 * call outside the timed region (e.g. releasing a session after timing its creation).
 */
export async function timeRuns<T>(
  fn: () => Promise<T> | T,
  opts: TimingOptions & { teardown?: (value: T) => Promise<unknown> | unknown } = {},
): Promise<Timing> {
  const warmup = opts.warmup ?? 1;
  const runs = opts.runs ?? 5;
  for (let i = 0; i < warmup; i++) {
    const v = await fn();
    await opts.teardown?.(v);
  }
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    const v = await fn();
    samples.push(performance.now() - t0);
    await opts.teardown?.(v);
  }
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples };
}

/** The model under test, as the harness resolved it. */
export interface BenchModel {
  /** Human-readable name (folder or file). */
  name: string;
  /** The `.onnx` graph file (weights inline or external next to it). */
  graphPath: string;
  /** Parameter count (HF-style for generated GPT-2: tied embedding once; else initializer elements). */
  params: number;
  /** Initializer bytes (inline + external), MB (10⁶ bytes). */
  weightsMb: number;
  /** Vocabulary size (last dim of `logits`), if known. */
  vocab: number | undefined;
  /** Graph input names. */
  inputNames: string[];
  /** Graph output names. */
  outputNames: string[];
}

/** What every measurement function receives. */
export interface BenchContext {
  /** The model. */
  model: BenchModel;
  /** Sequence length of the feeds (128 by default). */
  seqLen: number;
  /** Batch size of the feeds (1). */
  batch: number;
  /** Feeds for the plain model: random `input_ids`, ones `attention_mask`, `position_ids` 0..T-1. */
  feeds: Record<string, ort.Tensor>;
  /** Timing repetitions to use. */
  timing: Required<TimingOptions>;
  /** The shared plain session (default options), created on first use; do not release it. */
  plainSession(): Promise<ort.InferenceSession>;
  /** A scratch folder for measurement artifacts (rewritten graphs, ...), inside `.cache/bench`. */
  scratchDir: string;
  /** Progress output (stderr). */
  log(msg: string): void;
  /**
   * Secondary numbers a measurement may record (e.g. `plain_run_min_ms`); written to the JSON
   * report after the measurements. Minimums are the best estimate under CPU contention.
   */
  extra: Record<string, number>;
}

/** One named measurement. */
export interface Measurement {
  /** JSON field name, e.g. `plain_run_ms`. */
  name: string;
  /** What it measures (shown in bench/README.md and `--list`). */
  doc: string;
  /** The measurement, or `null` while not implemented (reported as `null`). */
  run: ((ctx: BenchContext) => Promise<number>) | null;
}
