/**
 * The benchmark's measurements (issue 5), in report order. Each is `(ctx) => Promise<number>`
 * (see bench/measure.ts); secondary numbers go to `ctx.extra`, text facts (which path or
 * session tier served a trace) to `ctx.notes`.
 *
 * Baseline measurements use a plain onnxruntime session over the unmodified model file; the
 * onnsight ones go through onnsight as a user would: `.nns` script text parsed and lowered
 * through grammar/, or the TypeScript API, run by the engine with its defaults (fast path,
 * structural compile cache, tiered sessions, dedup, batch splitting). Where the issue asks
 * for "ready to run" (first traces) the engine's own steps are called one by one up to the
 * point where only the run is left (see {@link readyFast} / {@link readyCompiled}); the same
 * scripts are also timed end to end (`*_e2e_ms`).
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CLI_MEASUREMENTS } from './cli.js';
import * as ort from 'onnxruntime-node';
import { toOrtTensor } from '../backends/ort.js';
import type { Graph } from '../ir/ir.js';
import { dedupInvokes } from '../passes/dedup-invokes.js';
import { liftConstants } from '../passes/lift-constants.js';
import { irPipeline, onnxPipeline } from '../passes/pipeline.js';
import { structuralKey } from '../src/compile-cache.js';
import { releaseCompiled, tieredOf } from '../src/compiled-run.js';
import { compileGraph, runGraph } from '../src/engine.js';
import { explainFastPath, type PlanOptions } from '../src/fast/plan.js';
import type { SweepStats } from '../src/fast/sweep.js';
import { gateFeed } from '../src/fast/ports.js';
import { grad, type ModelRef, type TensorProxy, type Tracer } from '../src/index.js';
import { writeVariant } from '../src/model/load.js';
import { encodeModel } from '../src/onnx/serde.js';
import { cpuMs, median, pssMb, rssMb, timeOnce, timeRuns, type BenchContext, type Measurement } from './measure.js';
import {
  disposeOnnsight, logitLensScript, lowerScript, onnsight, onnsightOther, patchingSweepScript, patchingVariantScript,
  savesAndSetScript, spreadPositions, type OnnsightState,
} from './onnsight.js';
import { GENERATE_MEASUREMENTS, GENERATE_RATIOS } from './generate.js';
import { REMOTE_MEASUREMENTS } from './remote.js';

/**
 * Median run time of `session` on the context's feeds, fetching only `fetches` (default: all
 * outputs). With `minKey`, the fastest run is recorded in `ctx.extra[minKey]`.
 */
export async function medianRunMs(ctx: BenchContext, session: ort.InferenceSession, fetches?: readonly string[], minKey?: string): Promise<number> {
  const t = await timeRuns(() => (fetches ? session.run(ctx.feeds, [...fetches]) : session.run(ctx.feeds)), ctx.timing);
  if (minKey) {
    ctx.extra[minKey] = t.min;
    ctx.extra[minKey.replace(/_min_ms$/, '_cpu_ms')] = t.cpuMedian;
  }
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

/** `m.a.b.3` for path `a.b.3`. */
function ref(m: ModelRef, path: string): { output: TensorProxy } {
  return path.split('.').reduce<unknown>((r, s) => (r as Record<string, unknown>)[s], m) as { output: TensorProxy };
}
const logitsOf = (st: OnnsightState, m: ModelRef): TensorProxy => (m.output as unknown as Record<string, TensorProxy>)[st.blocks.output]!;

/** Times `fn` (warm-up + runs) and checks that every call took the fast path, no fallback. */
async function timeFast(ctx: BenchContext, st: OnnsightState, name: string, fn: () => Promise<unknown>, sourceRunsPerCall = 0): Promise<number> {
  const s0 = { ...st.fast.stats };
  const t = await timeRuns(fn, ctx.timing);
  const calls = ctx.timing.warmup + ctx.timing.runs;
  const s = st.fast.stats;
  if (s.fallbacks !== s0.fallbacks || s.fastRuns - s0.fastRuns !== calls || s.sourceRuns - s0.sourceRuns !== calls * sourceRunsPerCall) {
    throw new Error(`${name}: expected ${calls} fast-path traces (${sourceRunsPerCall} source run each); got ${s.fastRuns - s0.fastRuns} fast, ${s.fallbacks - s0.fallbacks} fallbacks (${s.lastReject ?? ''}), ${s.sourceRuns - s0.sourceRuns} source runs`);
  }
  ctx.extra[name.replace(/_ms$/, '_min_ms')] = t.min;
  ctx.extra[name.replace(/_ms$/, '_cpu_ms')] = t.cpuMedian;
  ctx.notes[name] = 'fast path (instrumented model, prepacked session; no compilation)';
  return t.median;
}

/**
 * "Ready to run" on the fast path: what `runScript` + `runGraph` do before the first ONNX
 * run — parse, lower, the IR pipeline, dedup, the fast-path plan — with the instrumented
 * model's session open (it is, after the per-model build). Throws if the plan is rejected.
 */
async function readyFast(st: OnnsightState, text: string): Promise<void> {
  const mc = st.model.mc;
  const state = compileGraph(lowerScript(st, text), mc, { pipeline: irPipeline });
  dedupInvokes(state.ir);
  const r = explainFastPath(state.ir, mc.tree, st.fast.ported, fastPlanOptions(st));
  if ('reject' in r) throw new Error(`benchmark: expected the fast path, got: ${r.reject}`);
  await st.fast.session();
  // Module applications run on module models (src/fast/module-model.ts), written and opened once per model —
  // or, for the tail (lm_head), on the instrumented model's own copy of it (FastExecutor.tailCallsInModel).
  for (const path of new Set(r.plan.calls.map((c) => c.attrs.path))) await st.fast.callSession(path);
}

/** The planner options the engine's fast path uses (closed modules run as module models). */
function fastPlanOptions(st: OnnsightState): PlanOptions {
  return { callable: (p) => st.fast.modules.reason(p) };
}

/** Whether the engine runs `text` on the fast path. */
function takesFastPath(st: OnnsightState, text: string): boolean {
  const state = compileGraph(lowerScript(st, text), st.model.mc, { pipeline: irPipeline });
  dedupInvokes(state.ir);
  return 'plan' in explainFastPath(state.ir, st.model.mc.tree, st.fast.ported, fastPlanOptions(st));
}

/**
 * "Ready to run" on the compiled path, the steps of `runGraph` → `runCompiled` on a compile
 * cache miss: parse, lower, IR pipeline, dedup, fast-path plan (rejected), lift constants,
 * structural key, ONNX pipeline (splicing), encode, hash, write the variant next to the
 * weights, and create its first-tier session (no prepacking) as `TieredSessions` does.
 * Returns the variant's path.
 */
async function readyCompiled(st: OnnsightState, text: string, split?: { front: number[]; splice: number[]; write: number[]; session: number[] }): Promise<string> {
  const mc = st.model.mc;
  const t0 = performance.now();
  const state = compileGraph(lowerScript(st, text), mc, { pipeline: irPipeline });
  dedupInvokes(state.ir);
  const r = explainFastPath(state.ir, mc.tree, st.fast.ported, fastPlanOptions(st));
  if (!('reject' in r)) throw new Error('benchmark: expected the compiled path, but the fast path accepts this script');
  liftConstants(state.ir);
  structuralKey(state.ir, { keepModelOutputs: false }); // run variants fetch the saves only (src/compiled-run.ts)
  const t1 = performance.now();
  const lowered = compileGraph(state.ir as Graph, mc, { pipeline: onnxPipeline, keepModelOutputs: false });
  const t2 = performance.now();
  const bytes = encodeModel(lowered.model);
  const file = crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 24);
  const graphPath = writeVariant(mc.loaded, lowered.model, file);
  const t3 = performance.now();
  const externalDataDir = mc.loaded.externalDataDir;
  await mc.backend.session(graphPath, { prepack: false, ...(externalDataDir ? { externalDataDir } : {}) });
  const t4 = performance.now();
  split?.front.push(t1 - t0);
  split?.splice.push(t2 - t1);
  split?.write.push(t3 - t2);
  split?.session.push(t4 - t3);
  return graphPath;
}

/** Lowers a script and runs it with the engine's defaults (`nns run` for one trace). */
async function runText(st: OnnsightState, text: string, opts: { fast?: boolean } = {}): Promise<Map<string, unknown>> {
  return runGraph(lowerScript(st, text), st.model.mc, opts);
}

/**
 * Releases the compiled path's sessions — the first-tier sessions in the model's backend and
 * the worker's prepacked ones — keeping the instrumented model's session open.
 */
async function releaseTiers(st: OnnsightState): Promise<void> {
  const mc = st.model.mc;
  const graphs = tieredOf(mc).known();
  await releaseCompiled(mc);
  for (const g of graphs) await mc.backend.release(g);
}

/**
 * repeat_trace_ms when the logit lens runs on the fast path (module models): a fresh lens
 * script (new position) end to end, then the same structure with another prompt, every
 * trace checked to take the fast path.
 */
async function repeatOnFastPath(ctx: BenchContext, st: OnnsightState): Promise<number> {
  const firsts: number[] = [], repeats: number[] = [], repeatCpu: number[] = [];
  let lastPos = 0, promptNo = 2;
  const s0 = { ...st.fast.stats };
  const n = ctx.timing.warmup + ctx.timing.runs;
  for (let i = 0; i < n; i++) {
    lastPos = ctx.seqLen - 1 - (st.fresh() % ctx.seqLen);
    const first = await timeOnce(() => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)));
    const c0 = cpuMs();
    const again = await timeOnce(() => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)));
    const againCpu = cpuMs() - c0;
    if (i >= ctx.timing.warmup) {
      firsts.push(first);
      repeats.push(again);
      repeatCpu.push(againCpu);
    }
  }
  const s = st.fast.stats;
  if (s.fallbacks !== s0.fallbacks || s.fastRuns - s0.fastRuns !== 2 * n) throw new Error(`repeat_trace_ms: expected ${2 * n} fast-path traces; got ${s.fastRuns - s0.fastRuns} (${s.fallbacks - s0.fallbacks} fallbacks: ${s.lastReject ?? ''})`);
  ctx.extra.first_custom_trace_e2e_ms = median(firsts);
  ctx.extra.repeat_trace_min_ms = Math.min(...repeats);
  ctx.extra.repeat_trace_cpu_ms = median(repeatCpu);
  ctx.extra.module_runs_per_trace = (s.moduleRuns - s0.moduleRuns) / (2 * n);
  ctx.notes.repeat_trace_ms = 'fast path: the instrumented model\'s run, then ln_f on its module model and lm_head on the instrumented model\'s copy of the tail (a one-token run; each once, all layers stacked)';
  // Steady state: the same sessions (the instrumented one is prepacked; module models are not).
  ctx.extra.repeat_trace_prepacked_ms = await timeFast(ctx, st, 'repeat_trace_prepacked_ms', () => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)));
  ctx.notes.repeat_trace_prepacked_ms = 'fast path (steady state; no tiers: nothing was compiled)';
  ctx.extra.rss_with_tiers_mb = rssMb().current;
  ctx.rssPhase('traces');
  return median(repeats);
}

/** Positions patched by the sweep. */
const SWEEP_POSITIONS = 8;

/** Every measurement, in report order. */
export const MEASUREMENTS: Measurement[] = [
  {
    name: 'session_create_baseline_ms',
    phase: 'baseline',
    doc: 'Creating a plain onnxruntime session (default options: optimization all, prepacking on) over the unmodified model file; median of ≥5 after one warm-up (page cache warm).',
    run: (ctx) => medianCreateMs(ctx.model.graphPath, {}, ctx, 'session_create_baseline_min_ms'),
  },
  {
    name: 'plain_run_ms',
    phase: 'baseline',
    doc: 'One forward pass of the unmodified model in that plain onnxruntime session (default options), fetching every output; median of ≥5 after warm-up.',
    run: async (ctx) => medianRunMs(ctx, await ctx.plainSession(), undefined, 'plain_run_min_ms'),
  },
  {
    name: 'model_open_ms',
    doc: 'Per-model, once: LanguageModel.load — decode the graph, module tree, boundary types (an onnxruntime probe). Not part of any trace time.',
    run: async (ctx) => {
      await onnsight(ctx);
      ctx.extra.rss_after_open_mb = rssMb().current;
      return ctx.extra.model_open_ms!;
    },
  },
  {
    name: 'ported_build_ms',
    doc: 'Per-model, once: building the instrumented (ported) model — ports spliced at every block input/output, attention/MLP output — and writing it next to the weights, plus creating its one prepacked session (that part also in ported_session_create_ms). Not part of any trace time.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const build = await timeOnce(() => st.fast.ported);
      const create = await timeOnce(() => st.fast.session());
      ctx.extra.ported_session_create_ms = create;
      ctx.extra.rss_after_ported_session_mb = rssMb().current;
      const pss = pssMb();
      if (pss) Object.assign(ctx.extra, { pss_after_ported_session_mb: pss.pss, pss_anon_after_ported_session_mb: pss.anon, pss_file_after_ported_session_mb: pss.file });
      ctx.extra.ports = st.fast.ported.ports.length;
      return build + create;
    },
  },
  {
    name: 'ported_plain_run_ms',
    doc: 'model.trace(ids, m => m.output.logits.save()) — no intervention, the full logits saved — end to end through onnsight: IR, IR pipeline, fast-path plan, one run of the instrumented model (every port fed neutral [1,1,1] keep/add), logits back as a host tensor. ported_session_run_ms is the bare onnxruntime run of that session with the same feeds.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const ids = st.prompt(0);
      const ms = await timeFast(ctx, st, 'ported_plain_run_ms', () => st.model.trace(ids, (m) => { logitsOf(st, m).save('logits'); }));
      // The bare session run, for the overhead split.
      const session = await st.fast.session();
      const feeds: Record<string, ort.Tensor> = { ...ctx.feeds };
      const one = (v: number, rank: number): ort.Tensor => new ort.Tensor('float32', Float32Array.of(v), Array(rank).fill(1));
      for (const p of st.fast.ported.ports) {
        feeds[p.keep] = one(1, p.shape.length);
        feeds[p.add] = one(0, p.shape.length);
      }
      const fetch = [st.fast.ported.tail?.fetch ?? st.blocks.output];
      for (const [k, g] of Object.entries(gateFeed(st.fast.ported, fetch))) feeds[k] = toOrtTensor(g);
      const t = await timeRuns(() => session.run(feeds, fetch), ctx.timing); // the tail (lm_head) is not in the instrumented model
      ctx.extra.ported_session_run_ms = t.median;
      ctx.extra.ported_session_run_cpu_ms = t.cpuMedian;
      ctx.extra.ported_session_run_min_ms = t.min;
      return ms;
    },
  },
  {
    name: 'save_all_run_ms',
    doc: 'model.trace saving every block output (every module of the model\'s block list, found generically) and the logits: fast path, one run fetching the ports\' values.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const ids = st.prompt(0);
      return timeFast(ctx, st, 'save_all_run_ms', () => st.model.trace(ids, (m) => {
        st.blocks.paths.forEach((p, i) => ref(m, p).output.save(`h.${i}`));
        logitsOf(st, m).save('logits');
      }));
    },
  },
  {
    name: 'patch_run_ms',
    doc: 'model.trace with two invokes: a source prompt whose middle-block output at the middle position is set into the target prompt\'s, the target\'s last logits saved. Fast path: a source run (1 row) then the patched run (1 row), both included.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const [src, tgt] = [st.prompt(1), st.prompt(0)];
      const mid = st.blocks.paths[st.blocks.paths.length >> 1]!;
      const pos = ctx.seqLen >> 1;
      return timeFast(ctx, st, 'patch_run_ms', () => st.model.trace((tr: Tracer) => {
        let h: TensorProxy | undefined;
        tr.invoke(src, (m) => { h = ref(m, mid).output.at(':', pos, ':'); });
        tr.invoke(tgt, (m) => {
          ref(m, mid).output.at(':', pos, ':').set(h!);
          logitsOf(st, m).at(':', -1, ':').save('logits');
        });
      }), 1);
    },
  },
  {
    name: 'first_trace_ms',
    doc: 'A new .nns script (saves of a block output and the last logits, plus a slice set of the middle block to a constant): parse + lower + IR pipeline + dedup + fast-path plan, ready to run on the already-open instrumented session. A fresh text (position, constant, saved block) every time. first_trace_e2e_ms: the same kind of fresh script including its run.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const text = (): string => {
        const k = st.fresh();
        return savesAndSetScript(st, st.prompt(0), k % ctx.seqLen, 0.25 + k, k);
      };
      const t = await timeRuns(() => readyFast(st, text()), ctx.timing);
      ctx.extra.first_trace_min_ms = t.min;
      const e2e = await timeRuns(() => runText(st, text()), ctx.timing);
      ctx.extra.first_trace_e2e_ms = e2e.median;
      ctx.notes.first_trace_ms = 'fast path (no compilation, no session)';
      ctx.rssPhase('fast'); // everything so far ran on the instrumented session alone
      return t.median;
    },
  },
  {
    name: 'first_custom_trace_ms',
    doc: 'A new .nns script with module application, the logit lens at every layer (each block\'s output at one position through the final norm and the unembedding, softmaxed, saved), until ready to run. When the fast path accepts it (closed modules run as module models on the host side): parse + lower + IR pipeline + plan. Otherwise: … + lift constants + structural key + splice (ONNX pipeline) + encode + write + create its first-tier session (no prepacking). A new position (= a new structure) every time. first_custom_trace_e2e_ms: fresh logit-lens scripts end to end, including the run.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const mc = st.model.mc;
      const fresh = (): string => logitLensScript(st, st.prompt(0), ctx.seqLen - 1 - (st.fresh() % ctx.seqLen));
      if (takesFastPath(st, fresh())) {
        // Module applications of closed modules run on module models: no splice, no new session per script.
        await st.fast.session();
        ctx.extra.module_sessions_ms = await timeOnce(() => readyFast(st, fresh()));
        ctx.notes.module_sessions_ms = 'once per model: write the module models and open the sessions the calls run on (ln_f\'s, prepacked and pinned; lm_head\'s calls run on the instrumented model\'s own copy of the tail)';
        const t = await timeRuns(() => readyFast(st, fresh()), ctx.timing);
        ctx.extra.first_custom_trace_min_ms = t.min;
        ctx.notes.first_custom_trace_ms = 'fast path: parse, lower, IR pipeline, dedup, plan (module calls on module models); no compilation, no new session';
        return t.median;
      }
      // Check once that these steps produce the graph the engine itself produces for the script.
      const probe = fresh();
      const mine = await readyCompiled(st, probe);
      await mc.backend.release(mine);
      await runText(st, probe, {});
      const tiers = tieredOf(mc);
      if (!tiers.known().includes(mine)) throw new Error(`benchmark: readyCompiled wrote ${mine}, the engine ran ${tiers.known().join(', ')}`);
      const split = { front: [] as number[], splice: [] as number[], write: [] as number[], session: [] as number[] };
      const t = await timeRuns(() => readyCompiled(st, fresh(), split), { ...ctx.timing, teardown: (p) => mc.backend.release(p) });
      ctx.extra.first_custom_trace_min_ms = t.min;
      // Where it goes (medians over warm-up and timed calls).
      ctx.extra.first_custom_front_ms = median(split.front);
      ctx.notes.first_custom_front_ms = 'parse, lower, IR pipeline, dedup, plan, lift constants, structural key';
      ctx.extra.first_custom_splice_ms = median(split.splice);
      ctx.notes.first_custom_splice_ms = 'ONNX pipeline (splice into a copy of the model graph)';
      ctx.extra.first_custom_write_ms = median(split.write);
      ctx.notes.first_custom_write_ms = 'encode, hash, write the variant (writeVariant encodes again on a new file)';
      ctx.extra.first_custom_session_ms = median(split.session);
      ctx.notes.first_custom_session_ms = 'create the first-tier session (no prepacking)';
      ctx.notes.first_custom_trace_ms = 'compiled path: cache miss, first-tier session (no prepacking)';
      return t.median;
    },
  },
  {
    name: 'repeat_trace_ms',
    doc: 'The logit-lens script again with another prompt, end to end including the run. On the fast path: parse, lower, IR pipeline, plan, the instrumented model\'s run, the module models\' (stacked) runs and the host softmax. On the compiled path: its second use (structural cache hit, no compile) on the first-tier session; repeat_trace_prepacked_ms is then the steady state on the prepacked session built in the worker.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const mc = st.model.mc;
      if (takesFastPath(st, logitLensScript(st, st.prompt(0), ctx.seqLen - 1))) return repeatOnFastPath(ctx, st);
      const tiers = tieredOf(mc);
      const firsts: number[] = [], repeats: number[] = [], repeatCpu: number[] = [];
      let lastPos = 0, promptNo = 2;
      const tierSeen = new Set<string>();
      for (let i = 0; i < ctx.timing.warmup + ctx.timing.runs; i++) {
        lastPos = ctx.seqLen - 1 - (st.fresh() % ctx.seqLen);
        const before = new Set(tiers.known());
        const first = await timeOnce(() => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)));
        const graph = tiers.known().find((p) => !before.has(p));
        if (!graph) throw new Error('benchmark: the logit lens did not compile a new graph');
        const c0 = cpuMs();
        const again = await timeOnce(() => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)));
        const againCpu = cpuMs() - c0;
        tierSeen.add(tiers.lastTier);
        await tiers.whenReady(graph);
        if (i >= ctx.timing.warmup) {
          firsts.push(first);
          repeats.push(again);
          repeatCpu.push(againCpu);
        }
      }
      ctx.extra.first_custom_trace_e2e_ms = median(firsts);
      ctx.extra.repeat_trace_min_ms = Math.min(...repeats);
      ctx.extra.repeat_trace_cpu_ms = median(repeatCpu);
      ctx.notes.repeat_trace_ms = `compiled path, structural cache hit, served by the ${[...tierSeen].join('/')} tier`;
      // Steady state: the last structure is prepacked now (promoted on its second use).
      const pre = await timeRuns(() => runText(st, logitLensScript(st, st.prompt(promptNo++), lastPos)), ctx.timing);
      ctx.extra.repeat_trace_prepacked_ms = pre.median;
      ctx.extra.repeat_trace_prepacked_min_ms = pre.min;
      ctx.notes.repeat_trace_prepacked_ms = `served by the ${tiers.lastTier} tier`;
      ctx.extra.repeat_trace_prepacked_cpu_ms = pre.cpuMedian;
      if (tiers.createTimes.length) ctx.extra.prepacked_build_ms = median(tiers.createTimes);
      ctx.extra.rss_with_tiers_mb = rssMb().current;
      const pss = pssMb();
      if (pss) Object.assign(ctx.extra, { pss_with_tiers_mb: pss.pss, pss_anon_with_tiers_mb: pss.anon, pss_file_with_tiers_mb: pss.file });
      ctx.notes.rss_with_tiers_mb = `RSS with the instrumented session, ${(await tiers.worker.sessions())} prepacked worker session(s) and the first-tier sessions still open`;
      // The tiers are done: release them (and the worker) before the sweeps.
      await releaseTiers(st);
      ctx.rssPhase('traces');
      return median(repeats);
    },
  },
  {
    name: 'sweep_variants',
    doc: 'Variants of the activation-patching sweep: every block × 8 positions spread over the prompt (a count).',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      return st.blocks.paths.length * spreadPositions(ctx.seqLen, SWEEP_POSITIONS).length;
    },
  },
  {
    name: 'sweep_ms',
    doc: 'Activation patching as ONE .nns trace (NNsight style: the source prompt once, then one invoke per block × position with that block\'s output at that position replaced by the source\'s, last logits saved), run by onnsight\'s batched path with its defaults; median of --sweep-runs (after the warm-up of the earlier measurements).',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const positions = spreadPositions(ctx.seqLen, SWEEP_POSITIONS);
      const text = patchingSweepScript(st, st.prompt(1), st.prompt(0), positions);
      // First, for comparison, the same script forced through the compiled path (one spliced
      // graph for the whole batch, split by the memory budget): one run. Measured before the
      // default run so its peak RSS is its own (the fast path's arena stays grown after).
      const p0 = { n: 0 };
      const c0 = cpuMs();
      ctx.extra.sweep_compiled_ms = await timeOnce(() => runGraph(lowerScript(st, text), st.model.mc, { fast: false, onProgress: (e) => { p0.n = Math.max(p0.n, e.total / 2); } }));
      ctx.extra.sweep_compiled_cpu_ms = cpuMs() - c0;
      ctx.notes.sweep_compiled_ms = `the same script with fast: false: compiled path, ${p0.n} chunk(s) (source row recomputed in each), first-tier session; one run`;
      await releaseTiers(st);
      ctx.rssPhase('sweep_compiled');
      const s0 = { ...st.fast.stats };
      const samples: number[] = [];
      const cpu: number[] = [];
      for (let i = 0; i < ctx.sweepRuns; i++) {
        const c = cpuMs();
        samples.push(await timeOnce(() => runText(st, text)));
        cpu.push(cpuMs() - c);
      }
      ctx.extra.sweep_cpu_ms = median(cpu);
      const fast = st.fast.stats.fastRuns - s0.fastRuns;
      const swept = st.fast.stats.sweepRuns - s0.sweepRuns;
      ctx.notes.sweep_ms = swept === samples.length ? `incremental sweep (clean run once, each block's variants batched from the next block on: block-range sub-models${st.fast.stats.lastSweep?.addedCache ? '; over the positions from the patched one on, on a key/value cache added to the blocks: the model has none' : ''})`
        : fast === samples.length ? `fast path (source run + one batched patched run; incremental: ${st.fast.stats.lastSweepReject ?? '?'})` : `compiled path (fast path: ${st.fast.stats.lastReject ?? '?'})`;
      ctx.extra.sweep_min_ms = Math.min(...samples);
      const dedup = dedupInvokes(compileGraph(lowerScript(st, text), st.model.mc, { pipeline: irPipeline }).ir);
      ctx.extra.sweep_rows = dedup.rowsAfter;
      ctx.notes.sweep_rows = `batch rows after dedup (${dedup.rowsBefore} invokes before)`;
      await releaseTiers(st);
      ctx.rssPhase('sweep');
      return median(samples);
    },
  },
  {
    name: 'sweep_naive_ms',
    doc: 'The same variants as one .nns trace each (its own source invoke, one patched invoke), run one after another through onnsight with its defaults — what a user who does not batch gets; total of one pass.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const positions = spreadPositions(ctx.seqLen, SWEEP_POSITIONS);
      const variants = st.blocks.paths.flatMap((_, l) => positions.map((p) => [l, p] as const));
      const s0 = { ...st.fast.stats };
      const per: number[] = [];
      const c0 = cpuMs();
      for (const [l, p] of variants) per.push(await timeOnce(() => runText(st, patchingVariantScript(st, st.prompt(1), st.prompt(0), l, p))));
      ctx.extra.sweep_naive_cpu_ms = cpuMs() - c0;
      const fast = st.fast.stats.fastRuns - s0.fastRuns;
      ctx.notes.sweep_naive_ms = `${fast} of ${variants.length} variants on the fast path`;
      ctx.extra.sweep_naive_variant_ms = median(per);
      // The pre-fast-path alternative: each variant spliced into its own graph (a new
      // structure each) with its own session; a sample of variants, extrapolated.
      const sample = variants.filter((_, i) => i % Math.max(1, Math.floor(variants.length / 8)) === 0).slice(0, 8);
      const comp: number[] = [];
      for (const [l, p] of sample) comp.push(await timeOnce(() => runText(st, patchingVariantScript(st, st.prompt(1), st.prompt(0), l, p), { fast: false })));
      ctx.extra.naive_compiled_variant_ms = median(comp);
      ctx.extra.sweep_naive_compiled_est_ms = median(comp) * variants.length;
      ctx.notes.sweep_naive_compiled_est_ms = `estimate: median of ${sample.length} variants forced through the compiled path (fast: false; each a new structure: compile + first-tier session + run) × ${variants.length}`;
      await disposeOnnsight(ctx);
      ctx.rssPhase('naive');
      return per.reduce((a, b) => a + b, 0);
    },
  },
  {
    name: 'sweep_cached_ms',
    doc: 'sweep_ms\'s script (12 blocks × 8 positions, last logits saved) on the model\'s with-past export when there is one beside it (model.with-past.onnx: a model that has a key/value cache, so each variant runs over the positions from the patched one on, on the clean keys and values); sweep_cached_naive_ms: the same variants one by one on that export, as sweep_naive_ms. Null without a with-past export. The goal row sweep / sweep_naive stays on the model itself (which gets a key/value cache added to its blocks).',
    run: async (ctx) => {
      const withPast = path.join(path.dirname(ctx.model.graphPath), 'model.with-past.onnx');
      if (!fs.existsSync(withPast)) return null;
      const st = await onnsightOther(ctx, withPast);
      try {
        const positions = spreadPositions(ctx.seqLen, SWEEP_POSITIONS);
        const text = patchingSweepScript(st, st.prompt(1), st.prompt(0), positions);
        await runText(st, text); // warm-up: segment models written, sessions opened
        const s0 = { ...st.fast.stats };
        const c0 = cpuMs();
        const t = await timeOnce(() => runText(st, text));
        ctx.extra.sweep_cached_cpu_ms = cpuMs() - c0;
        ctx.notes.sweep_cached_ms = st.fast.stats.sweepRuns > s0.sweepRuns ? `model.with-past.onnx; incremental sweep${st.fast.stats.lastSweep?.addedCache ? ' (its own cache rewritten to the broadcast form: src/fast/added-cache.ts)' : ''}` : `model.with-past.onnx; not incremental: ${st.fast.stats.lastSweepReject ?? '?'}`;
        const variants = st.blocks.paths.flatMap((_, l) => positions.map((p) => [l, p] as const));
        const c1 = cpuMs();
        let naive = 0;
        for (const [l, p] of variants) naive += await timeOnce(() => runText(st, patchingVariantScript(st, st.prompt(1), st.prompt(0), l, p)));
        ctx.extra.sweep_cached_naive_ms = naive;
        ctx.extra.sweep_cached_naive_cpu_ms = cpuMs() - c1;
        ctx.notes.sweep_cached_naive_ms = 'model.with-past.onnx; the variants one by one (its own source invoke, one patched invoke each)';
        return t;
      } finally {
        await st.model.dispose();
        ctx.rssPhase('sweep_cached');
      }
    },
  },
  {
    name: 'sweep_full_ms',
    doc: 'A full activation-patching grid: every block × every position (12 × 128 on GPT-2 small) as ONE .nns trace like sweep_ms, saving the logit difference of two tokens at the last position (the prompts\' last tokens) per variant; run on the model\'s with-past export when there is one beside it (model.with-past.onnx: incremental sweep over the positions from the patched one on, on the clean keys/values), else on the model itself; one run, end to end (model open not included).',
    run: async (ctx) => {
      const withPast = path.join(path.dirname(ctx.model.graphPath), 'model.with-past.onnx');
      const cached = fs.existsSync(withPast);
      const st = cached ? await onnsightOther(ctx, withPast) : await onnsight(ctx);
      try {
        const { t, cpu, swept, ls } = await fullGrid(ctx, st);
        ctx.extra.sweep_full_cpu_ms = cpu;
        ctx.extra.sweep_full_variants = st.blocks.paths.length * ctx.seqLen;
        if (swept && ls) Object.assign(ctx.extra, { sweep_full_run_ms: ls.totalMs, sweep_full_clean_ms: ls.cleanMs, sweep_full_segments_ms: ls.segmentMs, sweep_full_batches: ls.batches, sweep_full_session_runs: ls.runs });
        ctx.notes.sweep_full_ms = `${cached ? 'model.with-past.onnx' : 'the model itself (no with-past export beside it)'}; ${swept ? `incremental sweep${ls?.addedCache ? `, keys/values in the broadcast form (src/fast/added-cache.ts${ls.ownCache ? ': the export\'s own cache rewritten' : ': a cache added to the blocks'})` : ''}` : `not incremental: ${st.fast.stats.lastSweepReject ?? '?'}`}`;
        ctx.rssPhase('sweep_full');
        return t;
      } finally {
        if (cached) await st.model.dispose();
        else await disposeOnnsight(ctx);
      }
    },
  },
  {
    name: 'sweep_full_added_ms',
    doc: 'sweep_full_ms\'s grid (every block × every position, one logit difference per variant) on the model itself when sweep_full_ms ran on its with-past export: the model has no cache, so the variants run on the key/value cache onnsight adds to its blocks (src/fast/added-cache.ts); null when sweep_full_ms already ran on the model itself or the model has a cache of its own. One run, end to end.',
    run: async (ctx) => {
      if (!fs.existsSync(path.join(path.dirname(ctx.model.graphPath), 'model.with-past.onnx'))) return null;
      const st = await onnsight(ctx);
      const { t, cpu, swept, ls } = await fullGrid(ctx, st);
      ctx.extra.sweep_full_added_cpu_ms = cpu;
      if (swept && !ls?.addedCache) return null; // a cache of its own: sweep_full_ms measured it
      ctx.notes.sweep_full_added_ms = swept ? 'the model itself; incremental sweep on the key/value cache added to its blocks' : `the model itself; not incremental: ${st.fast.stats.lastSweepReject ?? '?'}`;
      ctx.rssPhase('sweep_full_added');
      return t;
    },
  },
  {
    name: 'grad_all_blocks_ms',
    doc: 'model.trace saving grad(logit, block output) for every block (one logit of the last position of prompt 0): forward and one backward sweep compiled into one graph (compiled path, structural compile cache), end to end.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const ids = st.prompt(0);
      const t = await timeRuns(() => st.model.trace(ids, (m) => {
        const y = logitsOf(st, m).at(0, -1, 0);
        st.blocks.paths.forEach((p, i) => grad(y, ref(m, p).output).save(`g.${i}`));
      }), ctx.timing);
      ctx.extra.grad_all_blocks_min_ms = t.min;
      ctx.extra.grad_all_blocks_cpu_ms = t.cpuMedian;
      ctx.notes.grad_all_blocks_ms = 'compiled path (forward + backward in one graph)';
      return t.median;
    },
  },
  {
    name: 'attribution_ms',
    doc: 'Attribution patching over every block and position: two invokes (source prompt 1, clean prompt 0), sum((h_source - h_clean) * grad(logit, h_clean), -1) saved per block — two forward rows and one backward sweep, end to end. Real activation patching of the same grid needs blocks × positions forward passes.',
    run: async (ctx) => {
      const st = await onnsight(ctx);
      const [src, tgt] = [st.prompt(1), st.prompt(0)];
      const t = await timeRuns(() => st.model.trace((tr: Tracer) => {
        const hs: TensorProxy[] = [];
        tr.invoke(src, (m) => { st.blocks.paths.forEach((p) => hs.push(ref(m, p).output)); });
        tr.invoke(tgt, (m) => {
          const y = logitsOf(st, m).at(0, -1, 0);
          st.blocks.paths.forEach((p, i) => {
            const h = ref(m, p).output;
            hs[i]!.sub(h).mul(grad(y, h)).sum(-1).save(`attr.${i}`);
          });
        });
      }), ctx.timing);
      ctx.extra.attribution_min_ms = t.min;
      ctx.extra.attribution_cpu_ms = t.cpuMedian;
      ctx.notes.attribution_ms = `compiled path; the same grid by patching: ${st.blocks.paths.length * ctx.seqLen} forward passes`;
      // The shared model's last measurement: generation and the remote ones load their own models
      // (its sessions would otherwise stay beside theirs: a second copy of the weights in their peaks).
      await disposeOnnsight(ctx);
      return t.median;
    },
  },
  ...CLI_MEASUREMENTS,
  ...GENERATE_MEASUREMENTS,
  ...REMOTE_MEASUREMENTS,
];

/**
 * The full patching grid (every block × every position) as one trace, one run: its wall and
 * CPU time, whether the incremental sweep ran it, and that sweep's stats.
 */
async function fullGrid(ctx: BenchContext, st: OnnsightState): Promise<{ t: number; cpu: number; swept: boolean; ls: SweepStats | undefined }> {
  const positions = Array.from({ length: ctx.seqLen }, (_, i) => i);
  // One number per variant, the logit difference of the two prompts' last tokens (a grid of whole
  // last-position logits would be 1,536 × the vocabulary: 309 MB of results on GPT-2 small).
  const diff = [st.prompt(1).at(-1)!, st.prompt(0).at(-1)!] as const;
  const text = patchingSweepScript(st, st.prompt(1), st.prompt(0), positions, false, diff);
  const s0 = { ...st.fast.stats };
  const c0 = cpuMs();
  const t = await timeOnce(() => runText(st, text));
  return { t, cpu: cpuMs() - c0, swept: st.fast.stats.sweepRuns > s0.sweepRuns, ls: st.fast.stats.lastSweep };
}

/** Ratios and the issue's goals: `[label, numerator field, denominator field, goal (≤)]`. */
export const RATIOS: [string, string, string, number][] = [
  ['ported_plain_run / plain_run', 'ported_plain_run_ms', 'plain_run_ms', 1.05],
  ['save_all_run / plain_run', 'save_all_run_ms', 'plain_run_ms', 1.10],
  ['patch_run / plain_run', 'patch_run_ms', 'plain_run_ms', 2.2],
  ['first_trace / session_create_baseline', 'first_trace_ms', 'session_create_baseline_ms', 0.02],
  ['first_custom_trace / session_create_baseline', 'first_custom_trace_ms', 'session_create_baseline_ms', 0.15],
  ['repeat_trace / plain_run', 'repeat_trace_ms', 'plain_run_ms', 1.05],
  ['sweep / sweep_naive', 'sweep_ms', 'sweep_naive_ms', 0.25],
  ['(sweep_cached / sweep_cached_naive)', 'sweep_cached_ms', 'sweep_cached_naive_ms', 0.25],
  ['sweep_full / plain_run', 'sweep_full_ms', 'plain_run_ms', 300],
  ['(sweep_full_added / plain_run)', 'sweep_full_added_ms', 'plain_run_ms', 300],
  ['grad_all_blocks / plain_run', 'grad_all_blocks_ms', 'plain_run_ms', 3.0],
  ['attribution / plain_run', 'attribution_ms', 'plain_run_ms', 4.0],
  ['peak_rss / weights', 'peak_rss_mb', 'weights_mb', 1.5],
  ['peak_pss / weights', 'peak_pss_mb', 'weights_mb', 1.3],
  ...GENERATE_RATIOS,
];
