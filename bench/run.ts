/**
 * The benchmark harness: `npm run bench -- [--model DIR|FILE] [--json FILE] [--seq N] [--runs N]
 * [--warmup N] [--seed N] [--session-matrix] [--list]`.
 *
 * Without `--model`, builds (or reuses) the GPT-2-small-shaped model in
 * `.cache/bench/gpt2-small-<seed>/`. Runs every measurement of bench/measurements.ts in this one
 * process (batch 1, sequence length 128, medians of ≥5 runs after warm-up), prints a table and
 * ratios, and writes the JSON report described in bench/README.md.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { ensureGpt2Small } from './gpt2-model.js';
import { cpuMs, enterSide, median, resetPeakRss, rssMb, settleMemory, sideSessions, trackSessionSides, type BenchContext, type BenchModel } from './measure.js';
import { MEASUREMENTS, RATIOS } from './measurements.js';
import { describeModel, makeFeeds, maxPositions, resolveGraph } from './setup.js';
import { PssSampler, type PssReading } from './pss.js';
import { trimNativeHeap } from '../backends/malloc-trim.js';
import { runScale } from './scale.js';

interface Args {
  model?: string;
  json?: string;
  seq: number;
  runs: number;
  warmup: number;
  seed: number;
  sweepRuns: number;
  only?: Set<string>;
  sessionMatrix: boolean;
  list: boolean;
  scale: boolean;
  seqs: number[];
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seq: 128, runs: 5, warmup: 1, seed: 0, sweepRuns: 1, sessionMatrix: false, list: false, scale: false, seqs: [32, 128, 512, 1024] };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const val = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${k} needs a value`);
      return v;
    };
    const int = (): number => {
      const n = Number(val());
      if (!Number.isInteger(n) || n < 0) throw new Error(`${k} needs a non-negative integer`);
      return n;
    };
    switch (k) {
      case '--model': a.model = val(); break;
      case '--json': a.json = val(); break;
      case '--seq': a.seq = int(); break;
      case '--runs': a.runs = Math.max(5, int()); break;
      case '--warmup': a.warmup = int(); break;
      case '--seed': a.seed = int(); break;
      case '--sweep-runs': a.sweepRuns = Math.max(1, int()); break;
      case '--only': a.only = new Set(val().split(',')); break;
      case '--session-matrix': a.sessionMatrix = true; break;
      case '--list': a.list = true; break;
      case '--scale': a.scale = true; break;
      case '--seqs': a.seqs = val().split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0); break;
      case '--help': case '-h':
        process.stdout.write('usage: npm run bench -- [--model DIR|FILE] [--json FILE] [--seq 128] [--runs 5] [--warmup 1] [--seed 0] [--sweep-runs 1] [--only NAME,...] [--session-matrix] [--list] [--scale [--seqs 32,128,512,1024]]\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  return a;
}

/**
 * PSS sampling interval of the child sampler (bench/pss.ts), ms; `ONNSIGHT_PSS_INTERVAL_MS`
 * overrides. 200, not 50: every read of smaps_rollup walks the page tables of the whole address
 * space, and at 50 ms the sampler took enough of the 2 cores to slow `plain_run_ms` by ~40 %
 * (measured 2026-11-27, idle machine: 312/350 ms at 50 ms vs 211/229 at 200 and 216/225 without sampling).
 */
const PSS_INTERVAL_MS = Number(process.env.ONNSIGHT_PSS_INTERVAL_MS) || 200;

const log = (msg: string): void => { process.stderr.write(`[bench] ${msg}\n`); };

// A full garbage collection of the JavaScript heap between measurements (outside every timed
// region), then glibc's free pages given back (settleMemory, bench/measure.ts): results of an
// earlier measurement (logits, saves: array buffers of tens of MB) would otherwise be collected
// whenever V8 decides, inside a later measurement's peak (bench/README.md, "Memory").

/** One row of the session-options matrix. */
interface SessionMatrixRow {
  disable_prepacking: '0' | '1';
  graph_optimization_level: 'all' | 'disabled';
  create_ms: number;
  run_ms: number;
  create_min_ms: number;
  run_min_ms: number;
  /** Process CPU time (user + system, all threads) of one creation / run, median: robust to contention. */
  create_cpu_ms: number;
  run_cpu_ms: number;
}


/**
 * Session creation and run times under four option sets. Paired: each repetition goes through
 * all four configurations in turn, so load changes during the measurement hit all of them alike.
 */
async function sessionMatrix(ctx: BenchContext): Promise<SessionMatrixRow[]> {
  const configs = (['0', '1'] as const).flatMap((prepack) => (['all', 'disabled'] as const).map((level) => ({
    prepack, level,
    options: { graphOptimizationLevel: level, extra: { session: { disable_prepacking: prepack } } } as ort.InferenceSession.SessionOptions,
    creates: [] as number[], runs: [] as number[], createCpu: [] as number[], runCpu: [] as number[],
  })));
  const createReps = 3;
  log(`session matrix: ${configs.length} configs × (1 + ${createReps}) creations, interleaved`);
  for (let rep = 0; rep <= createReps; rep++) {
    for (const c of configs) {
      const t0 = performance.now(), c0 = cpuMs();
      const s = await ort.InferenceSession.create(ctx.model.graphPath, c.options);
      if (rep > 0) {
        c.creates.push(performance.now() - t0);
        c.createCpu.push(cpuMs() - c0);
      }
      await s.release();
    }
  }
  log(`session matrix: ${ctx.timing.runs} runs per config after ${ctx.timing.warmup} warm-up, interleaved`);
  const sessions = [];
  for (const c of configs) sessions.push(await ort.InferenceSession.create(ctx.model.graphPath, c.options));
  for (let rep = 0; rep < ctx.timing.warmup + ctx.timing.runs; rep++) {
    for (let i = 0; i < configs.length; i++) {
      const t0 = performance.now(), c0 = cpuMs();
      await sessions[i]!.run(ctx.feeds);
      if (rep >= ctx.timing.warmup) {
        configs[i]!.runs.push(performance.now() - t0);
        configs[i]!.runCpu.push(cpuMs() - c0);
      }
    }
  }
  for (const s of sessions) await s.release();
  const r2 = (x: number): number => Math.round(x * 100) / 100;
  return configs.map((c) => ({
    disable_prepacking: c.prepack, graph_optimization_level: c.level, create_ms: r2(median(c.creates)), run_ms: r2(median(c.runs)),
    create_min_ms: r2(Math.min(...c.creates)), run_min_ms: r2(Math.min(...c.runs)),
    create_cpu_ms: r2(median(c.createCpu)), run_cpu_ms: r2(median(c.runCpu)),
  }));
}

const fmt = (v: number | null, unit = 'ms'): string =>
  v === null ? '—' : unit === 'ms' ? `${v.toFixed(1)} ms` : unit === 'MB' ? `${v.toFixed(0)} MB` : String(v);

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.scale) {
    // Real scale (bench/scale.ts): its own model and measurements; `scale_*` keys merged into --json.
    const prev = args.json && fs.existsSync(args.json) ? (JSON.parse(fs.readFileSync(args.json, 'utf8')) as Record<string, unknown>) : {};
    const save = (keys: Record<string, unknown>): void => {
      if (!args.json) return;
      fs.mkdirSync(path.dirname(path.resolve(args.json)), { recursive: true });
      fs.writeFileSync(args.json, JSON.stringify({ ...prev, ...keys }, null, 2) + '\n');
    };
    const keys = await runScale({ ...(args.model ? { model: args.model } : {}), seq: args.seq, seqs: args.seqs, seed: args.seed, log, onPhase: save });
    process.stdout.write(JSON.stringify(keys, null, 2) + '\n');
    save(keys);
    if (args.json) log(`merged the scale_* keys into ${args.json}`);
    return;
  }
  if (args.list) {
    for (const m of MEASUREMENTS) process.stdout.write(`${m.name}${m.run ? '' : ' (not implemented)'}\n    ${m.doc}\n`);
    return;
  }
  let bm: BenchModel;
  if (args.model) {
    const graph = resolveGraph(args.model);
    let params: number | undefined;
    const manifest = path.join(path.dirname(graph), 'manifest.json');
    if (fs.existsSync(manifest)) params = (JSON.parse(fs.readFileSync(manifest, 'utf8')) as { params?: number }).params;
    bm = describeModel(graph, args.model, params);
    const maxPos = maxPositions(graph);
    if (maxPos !== undefined && maxPos < args.seq) {
      log(`model supports ${maxPos} positions: using --seq ${maxPos} instead of ${args.seq}`);
      args.seq = maxPos;
    }
  } else {
    log(`building or reusing GPT-2 small (seed ${args.seed}) in .cache/bench ...`);
    const t0 = performance.now();
    const g = await ensureGpt2Small(args.seed);
    log(`${g.reused ? 'reused' : 'built'} ${g.dir} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    bm = describeModel(g.graphPath, `gpt2-small-${args.seed} (generated)`, g.params);
  }
  const scratchDir = path.join(process.cwd(), '.cache', 'bench', 'scratch');
  fs.mkdirSync(scratchDir, { recursive: true });
  // Which side (the harness's plain onnxruntime sessions or onnsight's) holds sessions: counted
  // from here on, so that the two are never alive at once (bench/README.md, "Memory").
  trackSessionSides();
  let plain: Promise<ort.InferenceSession> | undefined;
  // Peak RSS by phase: each phase's peak is recorded, then the peak is reset (Linux).
  let onnsightPeak = 0;
  let peakResettable = true;
  const ctx: BenchContext = {
    model: bm,
    seqLen: args.seq,
    batch: 1,
    feeds: makeFeeds(bm, 1, args.seq, args.seed),
    timing: { warmup: args.warmup, runs: args.runs },
    sweepRuns: args.sweepRuns,
    plainSession: () => (plain ??= ort.InferenceSession.create(bm.graphPath)),
    scratchDir,
    log,
    extra: {},
    notes: {},
    rssPhase: (name) => {
      const { peak, current } = rssMb();
      ctx.extra[`peak_rss_${name}_mb`] = peak;
      if (name !== 'baseline') onnsightPeak = Math.max(onnsightPeak, peak);
      peakResettable = resetPeakRss() && peakResettable;
      ctx.extra[`rss_after_${name}_mb`] = current;
    },
    pssSide: async (side) => {
      enterSide(side);
      await pss?.side(side);
    },
  };

  // PSS sampled by a child process through the whole benchmark (bench/pss.ts), and marked
  // right before and after every measurement.
  // Each sample also counts toward the current side's peak: `baseline` while a plain
  // onnxruntime session of the harness is alive (ctx.pssSide, withPlainSession), else `onnsight`.
  const pss = await PssSampler.start(PSS_INTERVAL_MS);
  await ctx.pssSide!(MEASUREMENTS[0]?.phase === 'baseline' ? 'baseline' : 'onnsight');
  const pssBy: Record<string, { before_mb: number; peak_mb: number; peak_anon_mb: number; peak_file_mb: number; after_mb: number }> = {};
  let pssPeak: PssReading | undefined;
  const r1 = (v: number): number => Math.round(v * 10) / 10;

  const loadBefore = os.loadavg()[0]!;
  const values: Record<string, number | null> = {};
  let phase: 'baseline' | 'onnsight' = 'baseline';
  for (const m of MEASUREMENTS) {
    if ((m.phase ?? 'onnsight') === 'onnsight' && phase === 'baseline') {
      // The plain session holds its own (prepacked) weights: release it so the onnsight
      // phases' peak RSS is what onnsight needs.
      if (plain) await (await plain).release();
      plain = undefined;
      trimNativeHeap(); // as onnsight's backend does after a release (backends/malloc-trim.ts)
      await ctx.pssSide!('onnsight');
      ctx.rssPhase('baseline');
      phase = 'onnsight';
    }
    if (!m.run || (args.only && !args.only.has(m.name))) {
      values[m.name] = null;
      continue;
    }
    log(`measuring ${m.name} ...`);
    await settleMemory();
    const before = await pss?.reset();
    const t0 = performance.now();
    values[m.name] = await m.run(ctx);
    const after = await pss?.mark();
    if (before && after) {
      pssBy[m.name] = { before_mb: r1(before.now.pss), peak_mb: r1(after.peak.pss), peak_anon_mb: r1(after.peak.anon), peak_file_mb: r1(after.peak.file), after_mb: r1(after.now.pss) };
      if (!pssPeak || after.peak.pss > pssPeak.pss) pssPeak = after.peak;
    }
    log(`  ${m.name} = ${values[m.name]!.toFixed(1)} (${((performance.now() - t0) / 1000).toFixed(1)} s, load ${os.loadavg()[0]!.toFixed(2)})`);
  }
  ctx.rssPhase('end');
  const pssSamples = (await pss?.mark())?.samples;
  await pss?.side(sideSessions.side); // the sides' peaks up to now
  const sidePeaks = pss?.sidePeaks() ?? {};
  pss?.stop();
  // Without a resettable peak (not Linux), the process maximum is all we have.
  const peakRssMb = peakResettable ? onnsightPeak : rssMb().peak;
  if (plain) await (await plain).release();
  const matrix = args.sessionMatrix ? await sessionMatrix(ctx) : undefined;

  const r2 = (v: number): number => Math.round(v * 100) / 100;
  const report: Record<string, unknown> = {
    model: bm.name,
    graph_path: path.relative(process.cwd(), bm.graphPath),
    params: bm.params,
    weights_mb: Math.round(bm.weightsMb * 10) / 10,
    seq_len: args.seq,
    batch: 1,
    runs: args.runs,
    warmup: args.warmup,
    sweep_runs: args.sweepRuns,
    ...Object.fromEntries(Object.entries(values).map(([k, v]) => [k, v === null ? null : r2(v)])),
    peak_rss_mb: Math.round(peakRssMb),
    ...(pssPeak ? { peak_pss_mb: Math.round(pssPeak.pss), peak_pss_anon_mb: Math.round(pssPeak.anon), peak_pss_file_mb: Math.round(pssPeak.file), pss_samples: pssSamples, pss_interval_ms: PSS_INTERVAL_MS } : {}),
    // The peak while the harness's plain onnxruntime sessions were alive, and the peak of the rest (onnsight's).
    ...Object.fromEntries(Object.entries(sidePeaks).flatMap(([side, r]) => [
      [`peak_pss_${side}_mb`, Math.round(r.pss)], [`peak_pss_${side}_anon_mb`, Math.round(r.anon)], [`peak_pss_${side}_file_mb`, Math.round(r.file)],
    ])),
    ...(pss ? { pss_side_overlaps: sideSessions.overlaps.length } : {}),
    ...Object.fromEntries(Object.entries(ctx.extra).map(([k, v]) => [k, r2(v)])),
    notes: ctx.notes,
    onnxruntime_node: ort.env.versions.common,
    node: process.version,
    cpus: os.cpus().length,
    // 1-minute load average before and after: above ~the core count, other processes competed
    // for the CPU and times are inflated (ORT's intra-op threads are very sensitive to it).
    // glibc's allocator settings from the environment, if any (bench/README.md, "Memory": they change peak PSS).
    malloc_env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('MALLOC_') || k === 'GLIBC_TUNABLES')),
    load_avg_before: r2(loadBefore),
    load_avg_after: r2(os.loadavg()[0]!),
    date: new Date().toISOString(),
  };
  if (matrix) report.session_matrix = matrix;
  if (pss) report.pss_by_measurement = pssBy;
  if (sideSessions.overlaps.length) ctx.notes.pss_side_overlaps = sideSessions.overlaps.join('; ');

  // ── table ──
  const out: string[] = [];
  out.push(`model       ${bm.name}`);
  out.push(`params      ${(bm.params / 1e6).toFixed(1)} M   weights ${bm.weightsMb.toFixed(0)} MB   seq_len ${args.seq}   batch 1   median of ${args.runs} after ${args.warmup} warm-up (sweeps: ${args.sweepRuns})`);
  out.push(`load avg    ${loadBefore.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after (${os.cpus().length} cores; higher = contended, times inflated)`);
  out.push('');
  const width = Math.max(...MEASUREMENTS.map((m) => m.name.length), ...Object.keys(ctx.extra).map((k) => k.length)) + 2;
  const unit = (k: string): string => (k.endsWith('_ms') ? 'ms' : k.endsWith('_mb') ? 'MB' : 'count');
  for (const m of MEASUREMENTS) {
    const note = ctx.notes[m.name];
    out.push(`${m.name.padEnd(width)}${fmt(values[m.name] ?? null, unit(m.name)).padEnd(14)}${note ? `  ${note}` : ''}`);
  }
  out.push(`${'peak_rss_mb'.padEnd(width)}${fmt(peakRssMb, 'MB')}`);
  if (pssPeak) out.push(`${'peak_pss_mb'.padEnd(width)}${fmt(pssPeak.pss, 'MB').padEnd(14)}  anon ${pssPeak.anon.toFixed(0)} MB + file ${pssPeak.file.toFixed(0)} MB (${Object.entries(pssBy).sort((a, b) => b[1].peak_mb - a[1].peak_mb)[0]?.[0] ?? '?'})`);
  for (const [side, r] of Object.entries(sidePeaks)) {
    out.push(`${`peak_pss_${side}_mb`.padEnd(width)}${fmt(r.pss, 'MB').padEnd(14)}  anon ${r.anon.toFixed(0)} MB + file ${r.file.toFixed(0)} MB, ${(r.pss / bm.weightsMb).toFixed(2)}× the weights`);
  }
  if (pss) out.push(`${'pss_side_overlaps'.padEnd(width)}${sideSessions.overlaps.length}`);
  out.push('');
  for (const [k, v] of Object.entries(ctx.extra)) {
    const note = ctx.notes[k];
    out.push(`${k.padEnd(width)}${fmt(v, unit(k)).padEnd(14)}${note ? `  ${note}` : ''}`);
  }
  out.push('');
  const derived: Record<string, number | null> = { ...values, ...ctx.extra, peak_rss_mb: peakRssMb, weights_mb: bm.weightsMb, peak_pss_mb: pssPeak?.pss ?? null };
  const ratios: Record<string, { value: number | null; goal: number; pass: boolean | null; cpu_value?: number }> = {};
  out.push(`${'ratio'.padEnd(48)}${'value'.padEnd(10)}${'goal'.padEnd(10)}${'result'.padEnd(30)}cpu-time ratio`);
  const ratio = (num: string, den: string): number | null => {
    const a = derived[num], b = derived[den];
    return a != null && b != null && b !== 0 ? a / b : null;
  };
  for (const [label, num, den, goal] of RATIOS) {
    const v = ratio(num, den);
    // The same ratio on process CPU time, where both sides have one (robust to contention).
    const c = num.endsWith('_ms') && den.endsWith('_ms') ? ratio(num.replace(/_ms$/, '_cpu_ms'), den.replace(/_ms$/, '_cpu_ms')) : null;
    ratios[label] = { value: v === null ? null : Math.round(v * 1000) / 1000, goal, pass: v === null ? null : v <= goal, ...(c !== null ? { cpu_value: Math.round(c * 1000) / 1000 } : {}) };
    const result = v === null ? '—' : v <= goal ? 'pass' : `MISS (${(v / goal).toFixed(2)}× the goal)`;
    out.push(`${label.padEnd(48)}${(v === null ? '—' : `${v.toFixed(3)}×`).padEnd(10)}${`≤ ${goal}`.padEnd(10)}${result.padEnd(30)}${c === null ? '' : `${c.toFixed(3)}×`}`);
  }
  const pre = ratio('repeat_trace_prepacked_ms', 'plain_run_ms');
  if (pre !== null) out.push(`${'(repeat_trace_prepacked / plain_run)'.padEnd(48)}${`${pre.toFixed(3)}×`.padEnd(10)}${'≤ 1.05'.padEnd(10)}${(pre <= 1.05 ? 'pass' : 'miss').padEnd(30)}${ratio('repeat_trace_prepacked_cpu_ms', 'plain_run_cpu_ms')?.toFixed(3) ?? ''}×`);
  report.ratios = ratios;
  if (matrix) {
    out.push('');
    out.push(`session options, paired (create: median of 3; run: median of ${args.runs})`);
    out.push('disable_prepacking  optimization  create (min)            create cpu  run (min)               run cpu');
    for (const r of matrix) {
      out.push(`${r.disable_prepacking.padEnd(20)}${r.graph_optimization_level.padEnd(14)}${`${fmt(r.create_ms)} (${fmt(r.create_min_ms)})`.padEnd(24)}`
        + `${fmt(r.create_cpu_ms).padEnd(12)}${`${fmt(r.run_ms)} (${fmt(r.run_min_ms)})`.padEnd(24)}${fmt(r.run_cpu_ms)}`);
    }
  }
  process.stdout.write(out.join('\n') + '\n');
  if (args.json) {
    fs.mkdirSync(path.dirname(path.resolve(args.json)), { recursive: true });
    fs.writeFileSync(args.json, JSON.stringify(report, null, 2) + '\n');
    log(`wrote ${args.json}`);
  }
}


main().catch((e: unknown) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});
