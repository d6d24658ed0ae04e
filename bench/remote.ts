/**
 * Remote execution (`nns serve`, issue 13): servers started in this process on 127.0.0.1,
 * port 0; clients are `LanguageModel.remote` in this process too (loopback HTTP).
 *
 * - `remote_overhead_ms`: the gpt2-facts eiffel trace (save block 2's output and the last
 *   logits) through a server minus the same trace on the model loaded here; median of
 *   paired differences (remote and local runs alternate, a 50 ms pause before each). Goal ≤ 10 ms.
 * - `remote_batched_speedup`: 16 concurrent clients × 10 save-all traces (every block output
 *   and the last position's logits; a distinct random prompt of `REMOTE_PROMPT_TOKENS` tokens
 *   per trace, so no two rows are deduplicated) on the benchmark model: throughput with
 *   cross-request batching (`maxBatch` 16) / throughput with batching off (`maxBatch` 1, the
 *   same 16 clients: jobs run one after another), in alternating rounds with both servers up.
 *   Goal ≥ 1.5. p50/p99 latency per trace of both. Beside it, the ceiling inside the engine:
 *   a plain onnxruntime session, 16 passes of one row vs one pass of 16 rows.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { ortSessionOptions, setIntraOpSpinning } from '../backends/ort.js';
import { LanguageModel, type ModelRef, type TensorProxy } from '../src/index.js';
import { startServer } from '../src/serve/server.js';
import { median, withPlainSession, type BenchContext, type Measurement } from './measure.js';
import { makeFeeds } from './setup.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FACTS = path.join(ROOT, 'models', 'gpt2-facts');
/** Prompt length of the batched measurement (short prompts, as interactive traces are). */
export const REMOTE_PROMPT_TOKENS = 16;
const CLIENTS = 16;
const PER_CLIENT = 10;

/** CPU time (user + system) of process `pid` so far, ms (Linux /proc; 10 ms resolution). */
function procCpuMs(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return NaN;
  }
}

/** CPU time of this process so far, ms. */
function selfCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

function quantile(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

/** The block list: the numbered children of the module with the most of them. */
function blockPaths(model: LanguageModel): string[] {
  const lists = new Map<string, string[]>();
  for (const p of model.modules.modules.keys()) {
    const m = /^(.*)\.(\d+)$/.exec(p);
    if (m) (lists.get(m[1]!) ?? lists.set(m[1]!, []).get(m[1]!)!).push(p);
  }
  return [...lists.values()].sort((a, b) => b.length - a.length)[0] ?? [];
}

function ref(m: ModelRef, p: string): { output: TensorProxy } {
  return p.split('.').reduce<unknown>((r, s) => (r as Record<string, unknown>)[s], m) as { output: TensorProxy };
}

/** sfc32-ish deterministic ids. */
function promptIds(seed: number, n: number, vocab: number): number[] {
  let s = (seed * 2654435761) >>> 0;
  return Array.from({ length: n }, () => {
    s = (s ^ (s << 13)) >>> 0;
    s = (s ^ (s >>> 17)) >>> 0;
    s = (s ^ (s << 5)) >>> 0;
    return s % vocab;
  });
}

let overheadDone: Promise<void> | undefined;

async function overhead(ctx: BenchContext): Promise<void> {
  const server = await startServer({ models: [{ name: 'gpt2-facts', path: FACTS }], port: 0, host: '127.0.0.1' });
  const local = await LanguageModel.load(FACTS);
  try {
    const remote = await LanguageModel.remote(server.url, 'gpt2-facts');
    const prompt = 'The Eiffel Tower is in the city of';
    const fn = (m: ModelRef): void => {
      m.transformer.h[2]!.output.save('h2');
      m.output.logits.at(':', -1, ':').save('logits');
    };
    for (let i = 0; i < 3; i++) { await local.trace(prompt, fn); await remote.trace(prompt, fn); }
    const l: number[] = [], r: number[] = [], d: number[] = [];
    // 40 pairs: under load, single traces vary by tens of ms; the median of 40 differences is stable to a few.
    const pairs = Math.max(40, ctx.timing.runs);
    // The same 50 ms pause before each remote and each local trace: the local session's
    // onnxruntime threads spin for a while after its run (the library's default), and a remote
    // trace started right then would compete with them for the cores — something no real client
    // of a server does; and after an idle pause every trace starts slower (the processes and
    // threads it wakes), so both halves of a pair get one. Until 2026-11-28 only the remote
    // trace followed the pause and the local one ran right after it, warm: on the machine of
    // session 10 that charged the remote trace ~10 ms of wake-ups the local one never paid
    // (`--only remote_overhead_ms`: 10.4 ms, remote 14.9 / local 4.4; symmetric: 5.8–6.9 ms,
    // remote 15.5–16.1 / local 8.8–10.0; block medians 2.4–2.6 ms either way).
    const pause = (): Promise<void> => new Promise((res) => setTimeout(res, 50));
    for (let i = 0; i < pairs; i++) {
      await pause();
      const t0 = performance.now();
      await remote.trace(prompt, fn);
      const t1 = performance.now();
      await pause();
      const t2 = performance.now();
      await local.trace(prompt, fn);
      const t3 = performance.now();
      r.push(t1 - t0);
      l.push(t3 - t2);
      d.push(t1 - t0 - (t3 - t2));
    }
    // CPU time in blocks (not interleaved: onnxruntime's threads spin a little after a run, which
    // would be charged to the next trace): client + server (this process) + worker, vs local.
    // Their wall times too: the median of each block (back to back: no idle pause before a
    // trace, as in the pairs).
    const rb: number[] = [], lb: number[] = [];
    const c0 = selfCpuMs(), w0 = procCpuMs(server.worker.pid);
    for (let i = 0; i < pairs; i++) {
      const t = performance.now();
      await remote.trace(prompt, fn);
      rb.push(performance.now() - t);
    }
    const remoteCpu = selfCpuMs() - c0 + procCpuMs(server.worker.pid) - w0;
    const c1 = selfCpuMs();
    for (let i = 0; i < pairs; i++) {
      const t = performance.now();
      await local.trace(prompt, fn);
      lb.push(performance.now() - t);
    }
    const localCpu = selfCpuMs() - c1;
    ctx.extra.remote_overhead_block_ms = median(rb) - median(lb);
    ctx.extra.remote_trace_ms = median(r);
    ctx.extra.remote_local_trace_ms = median(l);
    ctx.extra.remote_overhead_min_ms = Math.min(...r) - Math.min(...l);
    got.remote_overhead_ms = median(d);
    ctx.extra.remote_overhead_cpu_ms = (remoteCpu - localCpu) / pairs;
    ctx.extra.remote_trace_cpu_ms = remoteCpu / pairs;
    ctx.extra.remote_local_trace_cpu_ms = localCpu / pairs;
    ctx.notes.remote_overhead_ms = `gpt2-facts eiffel trace, ${pairs} pairs (remote, local, a 50 ms pause before each); median remote ${median(r).toFixed(2)} ms vs local ${median(l).toFixed(2)} ms (load average ${os.loadavg()[0]!.toFixed(2)})`;
  } finally {
    await local.dispose();
    await server.close();
  }
}

/** One mode (batching on or off) of the batched measurement: its server and 16 clients. */
interface Mode {
  server: Awaited<ReturnType<typeof startServer>>;
  clients: LanguageModel[];
}

/** What the rounds of one mode add up to. */
interface Throughput { ms: number[]; cpuMs: number[]; lat: number[]; merged: number; batches: number; sizes: Record<number, number> }

/** Rounds of the batched measurement: each client's traces are split into this many rounds, batched and one-by-one rounds alternating. */
const ROUNDS = 2;

async function openMode(ctx: BenchContext, maxBatch: number): Promise<Mode> {
  const server = await startServer({ models: [{ name: 'model', path: ctx.model.graphPath }], port: 0, host: '127.0.0.1', limits: { maxBatch } });
  const clients = await Promise.all(Array.from({ length: CLIENTS }, () => LanguageModel.remote(server.url, 'model')));
  return { server, clients };
}

/**
 * One round of one mode: every client runs `per` save-all traces one after another (all
 * clients at once). Checks every job completed; adds wall and CPU time (this process —
 * clients and server — plus the mode's worker) to `acc`.
 */
async function round(ctx: BenchContext, mode: Mode, first: number, per: number, acc: Throughput): Promise<void> {
  const { server, clients } = mode;
  const blocks = blockPaths(clients[0]!);
  const vocab = ctx.model.vocab ?? 50257;
  const n = Math.min(REMOTE_PROMPT_TOKENS, ctx.seqLen);
  const fn = (m: ModelRef): void => {
    blocks.forEach((p, i) => ref(m, p).output.save(`h.${i}`));
    m.output.logits.at(':', -1, ':').save('logits');
  };
  const s0 = { ...server.jobs.stats, sizes: { ...server.jobs.stats.sizes } };
  const cpu0 = selfCpuMs() + procCpuMs(server.worker.pid);
  const t0 = performance.now();
  await Promise.all(clients.map(async (m, c) => {
    for (let i = first; i < first + per; i++) {
      const t = performance.now();
      await m.trace(promptIds(c * 1000 + i + 1, n, vocab), fn);
      acc.lat.push(performance.now() - t);
    }
  }));
  acc.ms.push(performance.now() - t0);
  acc.cpuMs.push(selfCpuMs() + procCpuMs(server.worker.pid) - cpu0);
  const s = server.jobs.stats;
  if (s.completed - s0.completed !== CLIENTS * per) throw new Error(`remote: ${s.completed - s0.completed} of ${CLIENTS * per} jobs completed`);
  acc.merged += s.merged - s0.merged;
  acc.batches += s.batches - s0.batches;
  for (const [k, v] of Object.entries(s.sizes)) {
    const d = v - (s0.sizes[Number(k)] ?? 0);
    if (d > 0) acc.sizes[Number(k)] = (acc.sizes[Number(k)] ?? 0) + d;
  }
}

const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0);

let batchedDone: Promise<void> | undefined;
/** Results of the batched measurement (reported by several measurement names). */
const got: Record<string, number> = {};

/**
 * The ceiling batching can reach in the engine itself: a plain onnxruntime session of the
 * benchmark model (options as the job worker's instrumented model: prepacked, no spinning threads), one forward pass of
 * `CLIENTS` rows against `CLIENTS` passes of one row, alternating, 5 times each.
 */
async function ortCeiling(ctx: BenchContext, n: number): Promise<void> {
  const create = async (): Promise<ort.InferenceSession> => {
    setIntraOpSpinning(false);
    try {
      return await ort.InferenceSession.create(ctx.model.graphPath, ortSessionOptions({ prepack: true }));
    } finally {
      setIntraOpSpinning(true);
    }
  };
  // The harness's own session (released and trimmed before onnsight's servers open: bench/measure.ts).
  await withPlainSession(ctx, create, async (session) => {
    const one = makeFeeds(ctx.model, 1, n, 1);
    const all = makeFeeds(ctx.model, CLIENTS, n, 2);
    await session.run(one);
    await session.run(all);
    const w1: number[] = [], c1: number[] = [], wb: number[] = [], cb: number[] = [];
    for (let r = 0; r < 5; r++) {
      let c = selfCpuMs(), t = performance.now();
      for (let i = 0; i < CLIENTS; i++) await session.run(one);
      w1.push(performance.now() - t); c1.push(selfCpuMs() - c);
      c = selfCpuMs(); t = performance.now();
      await session.run(all);
      wb.push(performance.now() - t); cb.push(selfCpuMs() - c);
    }
    ctx.extra.remote_ort_rows1_ms = median(w1) / CLIENTS;
    ctx.extra.remote_ort_rows1_cpu_ms = median(c1) / CLIENTS;
    ctx.extra.remote_ort_rows16_ms = median(wb) / CLIENTS;
    ctx.extra.remote_ort_rows16_cpu_ms = median(cb) / CLIENTS;
    ctx.extra.remote_ort_batch_ceiling = median(w1) / median(wb);
    ctx.extra.remote_ort_batch_ceiling_cpu = median(c1) / median(cb);
    ctx.log(`remote: plain onnxruntime, ${n} tokens: ${CLIENTS} passes of 1 row ${median(w1).toFixed(0)} ms (CPU ${median(c1).toFixed(0)}) vs 1 pass of ${CLIENTS} rows ${median(wb).toFixed(0)} ms (CPU ${median(cb).toFixed(0)}): ceiling ${(median(w1) / median(wb)).toFixed(2)} wall, ${(median(c1) / median(cb)).toFixed(2)} CPU`);
  });
}

async function batched(ctx: BenchContext): Promise<void> {
  await ortCeiling(ctx, Math.min(REMOTE_PROMPT_TOKENS, ctx.seqLen));
  // Both servers up at once; rounds alternate (on, off, off, on, ...) so that a change in the
  // machine's load hits both modes alike; the ratio is of the totals, with the median of the
  // per-round ratios beside it.
  const on = await openMode(ctx, 16);
  const off = await openMode(ctx, 1);
  try {
    const vocab = ctx.model.vocab ?? 50257;
    const n = Math.min(REMOTE_PROMPT_TOKENS, ctx.seqLen);
    // Warm-up: the instrumented model is built and its session opened by the first trace;
    // then one untimed round per mode (every client one trace, other prompts than the timed
    // ones), so the batched mode has run a pass of CLIENTS rows before it is timed, as the
    // one-by-one mode has run its one-row passes (the first pass at a new batch size costs
    // more: whole-2026-11-28f's first batched round took 3331 ms, its second 2316).
    for (const m of [on, off]) await m.clients[0]!.trace(promptIds(999, n, vocab), (r: ModelRef) => { r.output.logits.at(':', -1, ':').save('logits'); });
    for (const m of [on, off]) await round(ctx, m, PER_CLIENT, 1, { ms: [], cpuMs: [], lat: [], merged: 0, batches: 0, sizes: {} });
    const a: Throughput = { ms: [], cpuMs: [], lat: [], merged: 0, batches: 0, sizes: {} };
    const b: Throughput = { ms: [], cpuMs: [], lat: [], merged: 0, batches: 0, sizes: {} };
    const per = PER_CLIENT / ROUNDS;
    for (let r = 0; r < ROUNDS; r++) {
      const order: [Mode, Throughput][] = r % 2 === 0 ? [[on, a], [off, b]] : [[off, b], [on, a]];
      for (const [mode, acc] of order) await round(ctx, mode, r * per, per, acc);
      ctx.log(`remote: round ${r + 1}/${ROUNDS}: batched ${a.ms[r]!.toFixed(0)} ms (CPU ${a.cpuMs[r]!.toFixed(0)}), one by one ${b.ms[r]!.toFixed(0)} ms (CPU ${b.cpuMs[r]!.toFixed(0)}), load ${os.loadavg()[0]!.toFixed(1)}`);
    }
    const traces = CLIENTS * PER_CLIENT;
    const onMs = sum(a.ms), offMs = sum(b.ms);
    ctx.log(`remote: batched ${traces} traces in ${onMs.toFixed(0)} ms (${a.batches} batches, ${a.merged} jobs in shared passes; batch sizes ${JSON.stringify(a.sizes)}); one by one ${offMs.toFixed(0)} ms (CPU ${sum(b.cpuMs).toFixed(0)} ms vs ${sum(a.cpuMs).toFixed(0)} ms batched)`);
    ctx.extra.remote_batched_throughput_per_s = (traces / onMs) * 1000;
    ctx.extra.remote_sequential_throughput_per_s = (traces / offMs) * 1000;
    got.remote_batched_speedup = offMs / onMs;
    ctx.extra.remote_batched_speedup_round_median = median(a.ms.map((x, i) => b.ms[i]! / x));
    ctx.extra.remote_batched_cpu_speedup = sum(b.cpuMs) / sum(a.cpuMs);
    ctx.extra.remote_batched_cpu_speedup_round_median = median(a.cpuMs.map((x, i) => b.cpuMs[i]! / x));
    ctx.extra.remote_batched_cpu_ms = sum(a.cpuMs);
    ctx.extra.remote_sequential_cpu_ms = sum(b.cpuMs);
    got.remote_latency_p50_ms = quantile(a.lat, 0.5);
    got.remote_latency_p99_ms = quantile(a.lat, 0.99);
    ctx.extra.remote_sequential_latency_p50_ms = quantile(b.lat, 0.5);
    ctx.extra.remote_sequential_latency_p99_ms = quantile(b.lat, 0.99);
    ctx.extra.remote_batched_jobs_merged = a.merged;
    ctx.notes.remote_batch_sizes = `batches by size (jobs: count), batched rounds: ${JSON.stringify(a.sizes)}`;
    ctx.notes.remote_batched_speedup = `${CLIENTS} clients x ${PER_CLIENT} save-all traces in ${ROUNDS} alternating rounds, ${n}-token prompts; batched ${onMs.toFixed(0)} ms (${a.batches} batches, ${a.merged} jobs shared a pass) vs one by one ${offMs.toFixed(0)} ms (load average ${os.loadavg()[0]!.toFixed(2)})`;
  } finally {
    await on.server.close();
    await off.server.close();
  }
}

/** The remote measurements. */
export const REMOTE_MEASUREMENTS: Measurement[] = [
  {
    name: 'remote_overhead_ms',
    doc: 'gpt2-facts eiffel trace (block 2 output and last logits saved) through nns serve on 127.0.0.1 (LanguageModel.remote) minus the same trace on the loaded model; median of paired differences (runs alternate). remote_trace_ms / remote_local_trace_ms are the medians of each. Goal ≤ 10 ms.',
    run: async (ctx) => {
      await (overheadDone ??= overhead(ctx));
      return got.remote_overhead_ms!;
    },
  },
  {
    name: 'remote_batched_speedup',
    doc: '16 concurrent clients × 10 save-all traces (every block output + last logits, distinct 16-token prompts) on the benchmark model through nns serve: throughput with cross-request batching (max batch 16) / with batching off (max batch 1). Goal ≥ 1.5.',
    run: async (ctx) => {
      await (batchedDone ??= batched(ctx));
      return got.remote_batched_speedup!;
    },
  },
  {
    name: 'remote_latency_p50_ms',
    doc: 'Median latency of one trace (submit to saves back) in the batched run of remote_batched_speedup.',
    run: async (ctx) => {
      await (batchedDone ??= batched(ctx));
      return got.remote_latency_p50_ms!;
    },
  },
  {
    name: 'remote_latency_p99_ms',
    doc: '99th-percentile latency of one trace in the batched run of remote_batched_speedup.',
    run: async (ctx) => {
      await (batchedDone ??= batched(ctx));
      return got.remote_latency_p99_ms!;
    },
  },
];
