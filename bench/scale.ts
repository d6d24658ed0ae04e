/**
 * `npm run bench -- --scale [--model DIR] [--json FILE] [--seqs 32,128,512,1024]`: onnsight at
 * real scale. Without `--model`, on the Llama-shaped 1.1 B model bench/llama-model.ts writes
 * (first use: generated into `.cache/bench/llama-1b-<seed>/`, 4.4 GB). One process, batch 1:
 *
 * 1. **Baseline**: a plain onnxruntime session (default options) over the unmodified model:
 *    its creation, and one forward pass per sequence length; released before onnsight starts.
 * 2. **onnsight** at the default length (`--seq`, 128): `LanguageModel.load`, the instrumented
 *    model and its session, then plain (logits saved), save-all (every block's output),
 *    patch (a source run and a patched run), the logit lens at every layer, and a first
 *    trace (a new script of saves and a set, ready to run). Then the same plain / save-all /
 *    patch / first trace at every length of `--seqs`.
 * 3. **Generation**: 32 greedy tokens after the prompt, on `model.with-past.onnx` when the
 *    folder has one (the key/value cache; else on the model itself, recomputing every step,
 *    said in `scale_generate_mode`), through onnsight and as a plain onnxruntime loop, each
 *    with only its own session open.
 *
 * Every time is wall clock with the process CPU time beside it (`*_cpu_ms`); repetitions
 * shrink with the cost (1.1 B: a warm-up and one run up to 128 positions, one run without
 * warm-up above; smaller models: a warm-up and 5), since a forward pass of the 1.1 B model
 * at 1024 positions takes minutes on 2 shared cores. The figures at `--seq` and the
 * generation come first, the other lengths after. PSS is
 * sampled throughout by bench/pss.ts: `scale_peak_pss_mb`, and per phase. The keys
 * (`scale_*`) are merged into the JSON file given with `--json` (the main benchmark's report).
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { Tracer, TensorProxy, ModelRef } from '../src/index.js';
import { LanguageModel } from '../src/index.js';
import { compileGraph, runGraph } from '../src/engine.js';
import { irPipeline } from '../passes/pipeline.js';
import { dedupInvokes } from '../passes/dedup-invokes.js';
import { explainFastPath } from '../src/fast/plan.js';
import type { FastExecutor } from '../src/fast/index.js';
import { buildLlamaModel, llama1bDir, LLAMA_1B } from './llama-model.js';
import { cpuMs, median, type BenchContext } from './measure.js';
import { lowerScript, logitLensScript, savesAndSetScript, stateOf, type OnnsightState } from './onnsight.js';
import { plainGreedy, GENERATE_TOKENS } from './generate.js';
import { PssSampler, type PssReading } from './pss.js';
import { trimNativeHeap } from '../backends/malloc-trim.js';
import { describeModel, makeFeeds, maxPositions } from './setup.js';

/** Options of {@link runScale}. */
export interface ScaleOptions {
  model?: string;
  json?: string;
  seq: number;
  seqs: number[];
  seed: number;
  log: (msg: string) => void;
  /** Called with the keys so far after every phase (the harness writes them: a long run that is stopped keeps its figures). */
  onPhase?: (keys: Record<string, unknown>) => void;
}

/** One measurement: median wall and CPU time, fastest wall, runs, and the 1-minute load average when it ended. */
interface Timed { ms: number; cpu_ms: number; min_ms: number; runs: number; load: number }

/** warm-up + runs by cost: cheap lengths get a warm-up and 3 runs, long ones one run. */
function reps(T: number, big: boolean): { warmup: number; runs: number } {
  if (!big) return { warmup: 1, runs: 5 };
  return T <= 128 ? { warmup: 1, runs: 1 } : { warmup: 0, runs: 1 };
}

async function time(fn: () => Promise<unknown>, r: { warmup: number; runs: number }): Promise<Timed> {
  for (let i = 0; i < r.warmup; i++) await fn();
  const wall: number[] = [], cpu: number[] = [];
  for (let i = 0; i < r.runs; i++) {
    const c0 = cpuMs(), t0 = performance.now();
    await fn();
    wall.push(performance.now() - t0);
    cpu.push(cpuMs() - c0);
  }
  return { ms: round(median(wall)), cpu_ms: round(median(cpu)), min_ms: round(Math.min(...wall)), runs: r.runs, load: round(os.loadavg()[0]!) };
}
const round = (v: number): number => Math.round(v * 10) / 10;

function ref(m: ModelRef, p: string): { output: TensorProxy } {
  return p.split('.').reduce<unknown>((r, s) => (r as Record<string, unknown>)[s], m) as { output: TensorProxy };
}

/** Runs the scale benchmark (see the module comment); returns the `scale_*` keys. */
export async function runScale(opts: ScaleOptions): Promise<Record<string, unknown>> {
  const { log } = opts;
  let graphPath: string;
  if (opts.model) {
    const p = path.resolve(opts.model);
    graphPath = fs.statSync(p).isFile() ? p : [path.join(p, 'onnx', 'model.onnx'), path.join(p, 'model.onnx')].find((f) => fs.existsSync(f))!;
  } else {
    log('building or reusing the 1.1 B Llama-shaped model in .cache/bench (4.4 GB; first time: minutes) ...');
    const t0 = performance.now();
    const m = buildLlamaModel({ ...LLAMA_1B, seed: opts.seed, dir: llama1bDir(opts.seed), log });
    log(`${m.reused ? 'reused' : 'built'} ${m.dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    graphPath = m.graphPath;
  }
  const manifest = path.join(path.dirname(graphPath), 'manifest.json');
  const params = fs.existsSync(manifest) ? (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { params?: number }).params : undefined;
  const folder = path.dirname(graphPath);
  const bm = describeModel(graphPath, path.basename(path.basename(folder) === 'onnx' ? path.dirname(folder) : folder), params);
  const big = bm.weightsMb > 1000;
  const maxPos = maxPositions(graphPath) ?? Infinity;
  const seqs = opts.seqs.filter((T) => T <= maxPos);
  const seq = Math.min(opts.seq, maxPos);
  const out: Record<string, unknown> = {
    scale_model: bm.name, scale_graph_path: path.relative(process.cwd(), graphPath), scale_params: bm.params, scale_weights_mb: round(bm.weightsMb),
    scale_seq_len: seq, scale_load_avg_before: round(os.loadavg()[0]!), scale_cpus: os.cpus().length,
    scale_ram_mb: Math.round(os.totalmem() / 1e6), scale_swap_mb: swapMb(),
  };
  const swap0 = swapCounters();
  const pss = await PssSampler.start(100);
  const phases: Record<string, { peak_mb: number; anon_mb: number; file_mb: number; load_before: number; load_after: number; wall_s: number; cpu_s: number; swap_used_mb?: number; pages_swapped?: number; process_swap_mb?: number }> = {};
  let peak: PssReading | undefined;
  const phase = async (name: string, fn: () => Promise<void>): Promise<void> => {
    await pss?.reset();
    log(`scale: ${name} ...`);
    const t0 = performance.now(), c0 = cpuMs(), load0 = round(os.loadavg()[0]!), sw0 = swapCounters();
    await fn();
    const m = await pss?.mark();
    const sw1 = swapCounters();
    phases[name] = {
      peak_mb: m ? Math.round(m.peak.pss) : NaN, anon_mb: m ? Math.round(m.peak.anon) : NaN, file_mb: m ? Math.round(m.peak.file) : NaN,
      load_before: load0, load_after: round(os.loadavg()[0]!), wall_s: round((performance.now() - t0) / 1000), cpu_s: round((cpuMs() - c0) / 1000),
      ...(sw1 ? { swap_used_mb: sw1.usedMb, pages_swapped: sw1.pswpin + sw1.pswpout - (sw0 ? sw0.pswpin + sw0.pswpout : 0), process_swap_mb: sw1.processMb } : {}),
    };
    if (m && (!peak || m.peak.pss > peak.pss)) peak = m.peak;
    opts.onPhase?.({ ...out, scale_pss_by_phase: phases, scale_by_seq: bySeq, scale_peak_pss_mb: peak ? Math.round(peak.pss) : undefined, scale_ratios_by_seq: ratiosBySeq(bySeq), scale_complete: false });
    log(`scale: ${name} done in ${((performance.now() - t0) / 1000).toFixed(1)} s (peak PSS ${phases[name]?.peak_mb ?? '?'} MB, load ${os.loadavg()[0]!.toFixed(1)})`);
  };
  const bySeq: Record<number, Record<string, Timed | number>> = {};
  for (const T of seqs) bySeq[T] = {};
  const ctxFor = (T: number): BenchContext => ({
    model: bm, seqLen: T, batch: 1, feeds: makeFeeds(bm, 1, T, opts.seed), timing: { warmup: 1, runs: 1 }, sweepRuns: 1,
    plainSession: () => { throw new Error('internal'); }, scratchDir: os.tmpdir(), log, extra: {}, notes: {}, rssPhase: () => undefined,
  });

  // 1. Baseline: one plain session over `lengths`, released after.
  const baseline = async (lengths: number[]): Promise<void> => {
    const c0 = cpuMs(), t0 = performance.now();
    const s = await ort.InferenceSession.create(graphPath);
    if (out.scale_session_create_ms === undefined) {
      out.scale_session_create_ms = round(performance.now() - t0);
      out.scale_session_create_cpu_ms = round(cpuMs() - c0);
    }
    for (const T of lengths) {
      const feeds = ctxFor(T).feeds;
      const t = await time(() => s.run(feeds), reps(T, big));
      if (T === seq) { out.scale_plain_run_ms = t.ms; out.scale_plain_run_cpu_ms = t.cpu_ms; }
      if (bySeq[T]) bySeq[T]!.plain_run = t;
      log(`  plain run T=${T}: ${t.ms} ms (cpu ${t.cpu_ms})`);
    }
    await s.release();
    trimNativeHeap(); // the harness's plain session: its freed memory goes back as onnsight's does (backends/malloc-trim.ts)
  };

  // 2. onnsight.
  let lm: LanguageModel | undefined;
  const onnsight = async (lengths: number[]): Promise<void> => {
    const c0 = cpuMs(), t0 = performance.now();
    lm = await LanguageModel.load(graphPath);
    const fast = lm.mc.fast as FastExecutor;
    const c1 = cpuMs(), t1 = performance.now();
    void fast.ported;
    await fast.session();
    if (out.scale_model_open_ms === undefined) {
      out.scale_model_open_ms = round(t1 - t0);
      out.scale_model_open_cpu_ms = round(c1 - c0);
      out.scale_ported_build_ms = round(performance.now() - t1);
      out.scale_ported_build_cpu_ms = round(cpuMs() - c1);
      out.scale_tail = fast.ported.tail?.path ?? null;
    }
    for (const T of lengths) {
      const st: OnnsightState = stateOf(ctxFor(T), lm);
      const r = reps(T, big);
      const blocks = st.blocks.paths;
      const mid = blocks[blocks.length >> 1]!;
      const logits = (m: ModelRef): TensorProxy => (m.output as unknown as Record<string, TensorProxy>)[st.blocks.output]!;
      const ids = st.prompt(0), src = st.prompt(1);
      const s0 = { ...fast.stats };
      const plain = await time(() => lm!.trace(ids, (m) => { logits(m).save('logits'); }), r);
      const saveAll = await time(() => lm!.trace(ids, (m) => { blocks.forEach((p, i) => ref(m, p).output.save(`h.${i}`)); logits(m).save('logits'); }), r);
      const patch = await time(() => lm!.trace((tr: Tracer) => {
        let h: TensorProxy | undefined;
        tr.invoke(src, (m) => { h = ref(m, mid).output.at(':', T >> 1, ':'); });
        tr.invoke(ids, (m) => { ref(m, mid).output.at(':', T >> 1, ':').set(h!); logits(m).at(':', -1, ':').save('logits'); });
      }), r);
      let k = 0;
      const first = await time(async () => {
        k++;
        const state = compileGraph(lowerScript(st, savesAndSetScript(st, ids, (k * 7) % T, 0.25 + k, k)), lm!.mc, { pipeline: irPipeline });
        dedupInvokes(state.ir);
        const p = explainFastPath(state.ir, lm!.mc.tree, fast.ported, { callable: (x) => fast.modules.reason(x) });
        if ('reject' in p) throw new Error(`scale: first trace not on the fast path: ${p.reject}`);
      }, { warmup: 1, runs: 5 });
      if (fast.stats.fallbacks !== s0.fallbacks) throw new Error(`scale: a trace left the fast path (${fast.stats.lastReject})`);
      if (bySeq[T]) Object.assign(bySeq[T]!, { ported_plain_run: plain, save_all_run: saveAll, patch_run: patch, first_trace: first });
      log(`  T=${T}: plain ${plain.ms} ms (cpu ${plain.cpu_ms}), save-all ${saveAll.ms} (cpu ${saveAll.cpu_ms}), patch ${patch.ms} (cpu ${patch.cpu_ms}), first trace ${first.ms}, load ${os.loadavg()[0]!.toFixed(1)}`);
      if (T === seq) {
        Object.assign(out, {
          scale_ported_plain_run_ms: plain.ms, scale_ported_plain_run_cpu_ms: plain.cpu_ms, scale_save_all_run_ms: saveAll.ms, scale_save_all_run_cpu_ms: saveAll.cpu_ms,
          scale_patch_run_ms: patch.ms, scale_patch_run_cpu_ms: patch.cpu_ms, scale_first_trace_ms: first.ms, scale_first_trace_cpu_ms: first.cpu_ms,
        });
        const lens = await time(() => runGraph(lowerScript(st, logitLensScript(st, ids, T - 1)), lm!.mc), r);
        out.scale_logit_lens_ms = lens.ms;
        out.scale_logit_lens_cpu_ms = lens.cpu_ms;
        log(`  logit lens: ${lens.ms} ms`);
      }
    }
    await lm.dispose();
    lm = undefined;
  };
  // The figures at --seq first (baseline, onnsight, generation), then the other lengths.
  await phase('baseline', () => baseline([seq]));
  await phase('onnsight', () => onnsight([seq]));

  // 3. Generation: the with-past graph when there is one.
  const withPast = path.join(path.dirname(graphPath), 'model.with-past.onnx');
  const genFile = fs.existsSync(withPast) ? withPast : graphPath;
  out.scale_generate_mode = genFile === withPast ? 'with-past (key/value cache)' : 'recompute (no cache: every step runs the whole sequence)';
  out.scale_generate_tokens = GENERATE_TOKENS;
  const prompt = Array.from(ctxFor(Math.min(seq, maxPos - GENERATE_TOKENS)).feeds.input_ids!.data as BigInt64Array, Number);
  out.scale_generate_prompt = prompt.length;
  let onsTokens: number[] = [];
  await phase('generate', async () => {
    const g = await LanguageModel.load(genFile);
    // Untimed: the first generation builds the instrumented graph and opens its prepacked session
    // (seconds on this model); the plain loop's session is created outside its timing too.
    const w0 = performance.now();
    await g.generate(prompt, { maxNewTokens: 1, stopAtEos: false });
    out.scale_generate_setup_ms = round(performance.now() - w0);
    const c0 = cpuMs(), t0 = performance.now();
    const r = await g.generate(prompt, { maxNewTokens: GENERATE_TOKENS, stopAtEos: false });
    out.scale_generate_ms = round(performance.now() - t0);
    out.scale_generate_cpu_ms = round(cpuMs() - c0);
    out.scale_generate_tokens_per_s = round(GENERATE_TOKENS / ((performance.now() - t0) / 1000) * 100) / 100;
    onsTokens = r.newIds[0]!;
    await g.dispose();
  });
  if (genFile === withPast) {
    await phase('generate_plain', async () => {
      const s = await ort.InferenceSession.create(withPast);
      const c0 = cpuMs(), t0 = performance.now();
      const toks = await plainGreedy(s, prompt, GENERATE_TOKENS);
      out.scale_generate_plain_ms = round(performance.now() - t0);
      out.scale_generate_plain_cpu_ms = round(cpuMs() - c0);
      out.scale_generate_same_tokens = JSON.stringify(toks) === JSON.stringify(onsTokens);
      await s.release();
      trimNativeHeap();
    });
  }
  const rest = seqs.filter((T) => T !== seq);
  if (rest.length) {
    await phase('baseline_lengths', () => baseline(rest));
    await phase('onnsight_lengths', () => onnsight(rest));
  }
  pss?.stop();
  if (peak) {
    out.scale_peak_pss_mb = Math.round(peak.pss);
    out.scale_peak_pss_anon_mb = Math.round(peak.anon);
    out.scale_peak_pss_file_mb = Math.round(peak.file);
    out.scale_peak_pss_ratio = Math.round((peak.pss / bm.weightsMb) * 1000) / 1000;
  }
  out.scale_pss_by_phase = phases;
  out.scale_by_seq = bySeq;
  out.scale_load_avg_after = round(os.loadavg()[0]!);
  out.scale_swap_mb_after = swapMb();
  const sw = swapCounters();
  if (sw && swap0) out.scale_swap = { total_mb: sw.totalMb, used_mb_after: sw.usedMb, pages_swapped_in: sw.pswpin - swap0.pswpin, pages_swapped_out: sw.pswpout - swap0.pswpout };
  out.scale_ratios_by_seq = ratiosBySeq(bySeq);
  out.scale_date = new Date().toISOString();
  out.scale_complete = true;
  return out;
}

/**
 * Per length, each onnsight measurement over the plain onnxruntime run at that length, on wall
 * time and on CPU time (CPU time is robust to other jobs on the machine; wall is not).
 */
function ratiosBySeq(bySeq: Record<number, Record<string, Timed | number>>): Record<number, Record<string, { wall: number; cpu: number }>> {
  const r: Record<number, Record<string, { wall: number; cpu: number }>> = {};
  for (const [T, m] of Object.entries(bySeq)) {
    const plain = m.plain_run as Timed | undefined;
    if (!plain) continue;
    r[Number(T)] = {};
    for (const k of ['ported_plain_run', 'save_all_run', 'patch_run'] as const) {
      const t = m[k] as Timed | undefined;
      if (t) r[Number(T)]![k] = { wall: Math.round((t.ms / plain.ms) * 1000) / 1000, cpu: Math.round((t.cpu_ms / plain.cpu_ms) * 1000) / 1000 };
    }
  }
  return r;
}

/**
 * Swap now (Linux): swap in use on the machine and by this process (`VmSwap`), MB, and the
 * machine's swap-in / swap-out page counters since boot (`/proc/vmstat` pswpin / pswpout:
 * their difference over a phase is what it swapped, whoever did). Undefined elsewhere.
 */
function swapCounters(): { totalMb: number; usedMb: number; processMb: number; pswpin: number; pswpout: number } | undefined {
  try {
    const m = fs.readFileSync('/proc/meminfo', 'utf8');
    const v = fs.readFileSync('/proc/vmstat', 'utf8');
    const st = fs.readFileSync('/proc/self/status', 'utf8');
    const kb = (t: string, k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(t)?.[1] ?? 0);
    const n = (k: string): number => Number(new RegExp(`^${k} (\\d+)`, 'm').exec(v)?.[1] ?? 0);
    return {
      totalMb: Math.round((kb(m, 'SwapTotal') * 1024) / 1e6), usedMb: Math.round(((kb(m, 'SwapTotal') - kb(m, 'SwapFree')) * 1024) / 1e6),
      processMb: Math.round((kb(st, 'VmSwap') * 1024) / 1e6), pswpin: n('pswpin'), pswpout: n('pswpout'),
    };
  } catch {
    return undefined;
  }
}

/** Swap in use, MB (Linux `/proc/meminfo`); undefined elsewhere. */
function swapMb(): number | undefined {
  try {
    const m = fs.readFileSync('/proc/meminfo', 'utf8');
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(m)?.[1] ?? NaN);
    return Math.round(((kb('SwapTotal') - kb('SwapFree')) * 1024) / 1e6);
  } catch {
    return undefined;
  }
}
