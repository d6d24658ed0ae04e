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
import { decodeModel } from '../src/onnx/serde.js';
import { dataTypeBits } from '../src/onnx/proto.js';
import type { ModelProto } from '../src/onnx/proto.js';
import { ensureGpt2Small } from './gpt2-model.js';
import { median, type BenchContext, type BenchModel } from './measure.js';
import { MEASUREMENTS, RATIOS } from './measurements.js';

interface Args {
  model?: string;
  json?: string;
  seq: number;
  runs: number;
  warmup: number;
  seed: number;
  sessionMatrix: boolean;
  list: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { seq: 128, runs: 5, warmup: 1, seed: 0, sessionMatrix: false, list: false };
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
      case '--session-matrix': a.sessionMatrix = true; break;
      case '--list': a.list = true; break;
      case '--help': case '-h':
        process.stdout.write('usage: npm run bench -- [--model DIR|FILE] [--json FILE] [--seq 128] [--runs 5] [--warmup 1] [--seed 0] [--session-matrix] [--list]\n');
        process.exit(0);
        break;
      default: throw new Error(`unknown option ${k}`);
    }
  }
  return a;
}

const log = (msg: string): void => { process.stderr.write(`[bench] ${msg}\n`); };

/** Resolves `--model` (folder with `onnx/model.onnx` or `model.onnx`, or an `.onnx` file) to a graph path. */
function resolveGraph(p: string): string {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) throw new Error(`no such model: ${p}`);
  if (fs.statSync(abs).isFile()) return abs;
  for (const c of ['onnx/model.onnx', 'model.onnx']) if (fs.existsSync(path.join(abs, c))) return path.join(abs, c);
  throw new Error(`${p}: no onnx/model.onnx or model.onnx inside`);
}

function describeModel(graphPath: string, name: string, paramsOverride?: number): BenchModel {
  const model: ModelProto = decodeModel(fs.readFileSync(graphPath));
  const g = model.graph ?? {};
  let elems = 0, bytes = 0;
  for (const t of g.initializer ?? []) {
    const n = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
    elems += n;
    bytes += Math.ceil((n * dataTypeBits(t.data_type ?? 0)) / 8);
  }
  const logits = g.output?.find((o) => o.name === 'logits') ?? g.output?.[0];
  const last = logits?.type?.tensor_type?.shape?.dim?.at(-1)?.dim_value;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  return {
    name,
    graphPath,
    params: paramsOverride ?? elems,
    weightsMb: bytes / 1e6,
    vocab: last !== undefined ? Number(last) : undefined,
    inputNames: (g.input ?? []).map((v) => v.name!).filter((n) => !inits.has(n)),
    outputNames: (g.output ?? []).map((v) => v.name!),
  };
}

/** The longest sequence the model supports, from a nearby `config.json` or our `manifest.json`. */
function maxPositions(graphPath: string): number | undefined {
  const dir = path.dirname(graphPath);
  for (const f of [path.join(dir, 'manifest.json'), path.join(dir, 'config.json'), path.join(dir, '..', 'config.json')]) {
    if (!fs.existsSync(f)) continue;
    const j = JSON.parse(fs.readFileSync(f, 'utf8')) as { config?: { positions?: number }; n_positions?: number; max_position_embeddings?: number };
    const n = j.config?.positions ?? j.n_positions ?? j.max_position_embeddings;
    if (typeof n === 'number') return n;
  }
  return undefined;
}

/** mulberry32: seeded uniform floats in [0, 1). */
function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeFeeds(m: BenchModel, batch: number, seq: number, seed: number): Record<string, ort.Tensor> {
  const rand = mulberry32(seed + 1);
  const vocab = m.vocab ?? 100;
  const n = batch * seq;
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of m.inputNames) {
    let data: BigInt64Array;
    switch (name) {
      case 'input_ids': data = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rand() * vocab))); break;
      case 'attention_mask': data = new BigInt64Array(n).fill(1n); break;
      case 'position_ids': data = BigInt64Array.from({ length: n }, (_, i) => BigInt(i % seq)); break;
      case 'token_type_ids': data = new BigInt64Array(n); break;
      default: throw new Error(`don't know how to feed model input ${JSON.stringify(name)} (supported: input_ids, attention_mask, position_ids, token_type_ids)`);
    }
    feeds[name] = new ort.Tensor('int64', data, [batch, seq]);
  }
  return feeds;
}

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

/** Process CPU time so far, ms (all threads, user + system). */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
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
  let plain: Promise<ort.InferenceSession> | undefined;
  const ctx: BenchContext = {
    model: bm,
    seqLen: args.seq,
    batch: 1,
    feeds: makeFeeds(bm, 1, args.seq, args.seed),
    timing: { warmup: args.warmup, runs: args.runs },
    plainSession: () => (plain ??= ort.InferenceSession.create(bm.graphPath)),
    scratchDir,
    log,
    extra: {},
  };

  const loadBefore = os.loadavg()[0]!;
  const values: Record<string, number | null> = {};
  for (const m of MEASUREMENTS) {
    if (!m.run) {
      values[m.name] = null;
      continue;
    }
    log(`measuring ${m.name} ...`);
    values[m.name] = await m.run(ctx);
  }
  const peakRssMb = process.resourceUsage().maxRSS / 1024;
  if (plain) await (await plain).release();
  const matrix = args.sessionMatrix ? await sessionMatrix(ctx) : undefined;

  const report: Record<string, unknown> = {
    model: bm.name,
    graph_path: path.relative(process.cwd(), bm.graphPath),
    params: bm.params,
    weights_mb: Math.round(bm.weightsMb * 10) / 10,
    seq_len: args.seq,
    batch: 1,
    runs: args.runs,
    warmup: args.warmup,
    ...Object.fromEntries(Object.entries(values).map(([k, v]) => [k, v === null ? null : Math.round(v * 100) / 100])),
    ...Object.fromEntries(Object.entries(ctx.extra).map(([k, v]) => [k, Math.round(v * 100) / 100])),
    peak_rss_mb: Math.round(peakRssMb),
    onnxruntime_node: ort.env.versions.common,
    node: process.version,
    cpus: os.cpus().length,
    // 1-minute load average before and after: above ~the core count, other processes competed
    // for the CPU and times are inflated (ORT's intra-op threads are very sensitive to it).
    load_avg_before: Math.round(loadBefore * 100) / 100,
    load_avg_after: Math.round(os.loadavg()[0]! * 100) / 100,
    date: new Date().toISOString(),
  };
  if (matrix) report.session_matrix = matrix;

  // ── table ──
  const out: string[] = [];
  out.push(`model       ${bm.name}`);
  out.push(`params      ${(bm.params / 1e6).toFixed(1)} M   weights ${bm.weightsMb.toFixed(0)} MB   seq_len ${args.seq}   batch 1   median of ${args.runs} after ${args.warmup} warm-up`);
  out.push(`load avg    ${loadBefore.toFixed(2)} before, ${os.loadavg()[0]!.toFixed(2)} after (${os.cpus().length} cores; higher = contended, times inflated)`);
  out.push('');
  const width = Math.max(...MEASUREMENTS.map((m) => m.name.length), ...Object.keys(ctx.extra).map((k) => k.length)) + 2;
  for (const m of MEASUREMENTS) out.push(`${m.name.padEnd(width)}${fmt(values[m.name] ?? null, m.name.endsWith('_ms') ? 'ms' : 'count')}`);
  for (const [k, v] of Object.entries(ctx.extra)) out.push(`${k.padEnd(width)}${fmt(v)}`);
  out.push(`${'peak_rss_mb'.padEnd(width)}${fmt(peakRssMb, 'MB')}`);
  out.push('');
  const derived: Record<string, number | null> = {
    ...values,
    session_create_plus_run_ms: values.session_create_baseline_ms != null && values.plain_run_ms != null
      ? values.session_create_baseline_ms + values.plain_run_ms : null,
  };
  for (const [label, num, den] of RATIOS) {
    const a = derived[num], b = derived[den];
    out.push(`${label.padEnd(52)}${a != null && b != null && b !== 0 ? `${(a / b).toFixed(2)}×` : '—'}`);
  }
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
