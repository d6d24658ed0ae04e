/**
 * Timing helpers and the measurement contract of the benchmark harness (bench/run.ts).
 *
 * A measurement is a named function `(ctx) => Promise<number>` returning one number (usually
 * milliseconds, already a median); bench/measurements.ts lists them, `run: null` marks one
 * not implemented yet (reported as `null`).
 * @module
 */
import fs from 'node:fs';
import v8 from 'node:v8';
import vm from 'node:vm';
import * as ort from 'onnxruntime-node';
import { trimNativeHeap } from '../backends/malloc-trim.js';

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
  /**
   * Median process CPU time (user + system, all threads — ORT's pools and workers included)
   * of one timed call, ms: robust to other jobs competing for the cores, unlike wall time.
   */
  cpuMedian: number;
}

/** Process CPU time so far (user + system, all threads), ms. */
export function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
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
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = cpuMs();
    const t0 = performance.now();
    const v = await fn();
    samples.push(performance.now() - t0);
    cpu.push(cpuMs() - c0);
    await opts.teardown?.(v);
  }
  return { median: median(samples), min: Math.min(...samples), max: Math.max(...samples), samples, cpuMedian: median(cpu) };
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
  /** Timed repetitions of a whole sweep (each takes seconds to minutes on GPT-2 small). */
  sweepRuns: number;
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
  /** Secondary text facts a measurement records (which path or session tier served a trace). */
  notes: Record<string, string>;
  /**
   * Ends a memory phase: records the peak RSS since the previous phase as
   * `ctx.extra['peak_rss_<name>_mb']` and resets the peak (see {@link resetPeakRss}).
   */
  rssPhase(name: string): void;
  /**
   * Which side the memory sampled from now on belongs to (bench/pss.ts, `peak_pss_baseline_mb`
   * / `peak_pss_onnsight_mb`): `baseline` while a plain onnxruntime session of the harness is
   * alive, `onnsight` otherwise. Use {@link withPlainSession}. Absent outside the harness (tests).
   */
  pssSide?(side: PssSide): Promise<void>;
}

/** Whose memory the PSS sampler is watching: the harness's plain onnxruntime sessions, or onnsight's. */
export type PssSide = 'baseline' | 'onnsight';

/**
 * onnxruntime sessions of this thread alive right now, by the side current when each was created,
 * and every moment one side's session was created (or the side switched) while the other side's
 * were alive (`overlaps`, reported as `pss_side_overlaps`: the harness means it to stay empty).
 * Filled once {@link trackSessionSides} ran. Sessions created in worker threads (onnsight's
 * second tier) are not seen.
 */
export const sideSessions = { side: 'onnsight' as PssSide, live: { baseline: 0, onnsight: 0 }, overlaps: [] as string[] };

const otherSide = (s: PssSide): PssSide => (s === 'baseline' ? 'onnsight' : 'baseline');

/** Records an overlap if the other side than `side` has sessions alive. */
export function checkSideOverlap(side: PssSide, what: string): void {
  const o = otherSide(side);
  if (sideSessions.live[o] > 0) sideSessions.overlaps.push(`${what} while ${sideSessions.live[o]} ${o} session(s) were alive`);
}

/** Makes `side` the current one ({@link sideSessions}), recording an overlap if the other side holds sessions. */
export function enterSide(side: PssSide): void {
  checkSideOverlap(side, `the side switched to ${side}`);
  sideSessions.side = side;
}

let tracking = false;
/** Wraps `InferenceSession.create` and `release` (once per process) to count live sessions by side ({@link sideSessions}). */
export function trackSessionSides(): void {
  if (tracking) return;
  tracking = true;
  const cls = ort.InferenceSession as unknown as { create: (...a: unknown[]) => Promise<ort.InferenceSession> };
  const create = cls.create.bind(cls);
  cls.create = async (...a: unknown[]): Promise<ort.InferenceSession> => {
    const side = sideSessions.side;
    checkSideOverlap(side, `a ${side} session was created`);
    const s = await create(...a);
    sideSessions.live[side]++;
    const release = s.release.bind(s);
    let released = false;
    s.release = async (): Promise<void> => {
      if (!released) {
        released = true;
        sideSessions.live[side]--;
      }
      return release();
    };
    return s;
  };
}

/**
 * Runs `fn` on a plain onnxruntime session of the harness as the `baseline` side: switches the
 * PSS side to `baseline`, creates the session, runs `fn`, releases the session, gives its freed
 * memory back (`malloc_trim`, as onnsight's backend does after a release) and switches back to
 * `onnsight`. Nothing of onnsight's may hold a session meanwhile (checked: {@link sideSessions}).
 */
export async function withPlainSession<T>(ctx: BenchContext, create: () => Promise<ort.InferenceSession>, fn: (s: ort.InferenceSession) => Promise<T>): Promise<T> {
  await settleMemory(); // onnsight's garbage (a model just disposed) is not the plain session's
  await ctx.pssSide?.('baseline');
  try {
    const s = await create();
    try {
      return await fn(s);
    } finally {
      await s.release();
      trimNativeHeap();
    }
  } finally {
    await ctx.pssSide?.('onnsight');
  }
}

let collect: (() => void) | undefined;

/**
 * Outside timed regions — between measurements, and before a plain session of the harness is
 * created: V8's full collection, then glibc's free pages given back (backends/malloc-trim.ts),
 * so that memory held only as garbage (results of an earlier measurement, a model just
 * disposed) is not counted in the next peak. Two collections before the trim: V8 frees the
 * memory of the ArrayBuffers a collection found dead after it and finishes that at the start of
 * the next one (src/js-heap.ts `collectBuffersAfter`; measured: a trim right after one
 * collection left the 40 MB of a load's probe outputs in place, and one event-loop turn later
 * still 23–36 MB one time in three).
 */
export async function settleMemory(): Promise<void> {
  if (!collect) {
    v8.setFlagsFromString('--expose-gc');
    collect = vm.runInNewContext('gc') as () => void;
  }
  collect();
  collect();
  trimNativeHeap();
}

/** Current and peak resident set size of this process (all threads, workers included), MB (10⁶ bytes, like `weights_mb`). */
export function rssMb(): { current: number; peak: number } {
  try {
    const status = fs.readFileSync('/proc/self/status', 'utf8');
    const kb = (k: string): number => Number(/^\S+:\s+(\d+)/m.exec(status.split('\n').find((l) => l.startsWith(`${k}:`)) ?? '')?.[1] ?? NaN);
    const current = kb('VmRSS'), peak = kb('VmHWM');
    if (Number.isFinite(current) && Number.isFinite(peak)) return { current: (current * 1024) / 1e6, peak: (peak * 1024) / 1e6 };
  } catch { /* not Linux */ }
  return { current: process.memoryUsage().rss / 1e6, peak: (process.resourceUsage().maxRSS * 1024) / 1e6 };
}

/**
 * Proportional set size, MB (10⁶ bytes): like RSS, but a file page mapped by several
 * sessions (each unprepacked session maps the external weights file) counts once, not once
 * per mapping. `anon` = private memory (prepacked weights, arenas, JS heap). Linux only.
 */
export function pssMb(): { pss: number; anon: number; file: number } | undefined {
  try {
    const s = fs.readFileSync('/proc/self/smaps_rollup', 'utf8');
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? NaN);
    const r = { pss: kb('Pss'), anon: kb('Pss_Anon'), file: kb('Pss_File') };
    if (!Object.values(r).every(Number.isFinite)) return undefined;
    return { pss: (r.pss * 1024) / 1e6, anon: (r.anon * 1024) / 1e6, file: (r.file * 1024) / 1e6 };
  } catch {
    return undefined;
  }
}

/**
 * Resets the peak RSS (VmHWM) to the current RSS (Linux: `echo 5 > /proc/self/clear_refs`),
 * so later peaks exclude what was released before. Returns false where unsupported (peaks
 * then include everything since the process started).
 */
export function resetPeakRss(): boolean {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

/** One named measurement. */
export interface Measurement {
  /** JSON field name, e.g. `plain_run_ms`. */
  name: string;
  /** What it measures (shown in bench/README.md and `--list`). */
  doc: string;
  /** The measurement, or `null` while not implemented (reported as `null`); it may answer `null` where it does not apply to the model. */
  run: ((ctx: BenchContext) => Promise<number | null>) | null;
  /**
   * `baseline` measurements use the plain onnxruntime session; before the first `onnsight`
   * one the harness releases it and resets the peak RSS, so `peak_rss_mb` is onnsight's.
   * Default `onnsight`.
   */
  phase?: 'baseline' | 'onnsight';
}
