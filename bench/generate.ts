/**
 * Generation measurements (issue 11): tokens per second of a greedy 32-token generation after
 * a 128-token prompt (the context's `input_ids`), batch 1, on the with-past variant of the
 * model (`model.with-past.onnx` beside it, which bench/gpt2-model.ts writes for the
 * generated GPT-2 small) — through onnsight (clean and steered) and as a plain
 * onnxruntime-node loop (feeds and fetches only) — and through onnsight on the model without
 * a cache (recomputing the whole sequence each step). Each counts the prompt pass: tokens /
 * wall time of the whole generation. Medians over the context's runs after one warm-up
 * generation (the recompute one: 2 runs).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { LanguageModel, type ModelRef, type TensorProxy } from '../src/index.js';
import { trimNativeHeap } from '../backends/malloc-trim.js';
import { cpuMs, median, timeOnce, timeRuns, withPlainSession, type BenchContext, type Measurement } from './measure.js';
import { findBlocks } from './onnsight.js';

/** New tokens per generation. */
export const GENERATE_TOKENS = 32;

/** The with-past graph beside the model, if there is one. */
export function withPastPath(ctx: BenchContext): string | undefined {
  const p = path.join(path.dirname(ctx.model.graphPath), 'model.with-past.onnx');
  return fs.existsSync(p) ? p : undefined;
}

function promptIds(ctx: BenchContext): number[] {
  return Array.from(ctx.feeds.input_ids!.data as BigInt64Array, Number);
}

/** A plain greedy loop on a with-past graph: feeds and fetches only, the cache fed back as returned. */
export async function plainGreedy(session: ort.InferenceSession, prompt: readonly number[], n: number): Promise<number[]> {
  const pastNames = session.inputNames.filter((x) => x.startsWith('past_key_values.'));
  const meta = new Map<string, number[]>();
  // [batch, heads, past, head_dim]: heads and head_dim from the graph's declared input dims.
  for (const m of (session as unknown as { inputMetadata?: { name: string; shape?: (number | string)[] }[] }).inputMetadata ?? []) {
    if (m.shape) meta.set(m.name, m.shape.map((d) => (typeof d === 'number' ? d : 0)));
  }
  let past: Record<string, ort.Tensor> = {};
  for (const name of pastNames) {
    const s = meta.get(name) ?? [1, 0, 0, 0];
    past[name] = new ort.Tensor('float32', new Float32Array(0), [1, s[1]!, 0, s[3]!]);
  }
  const out: number[] = [];
  let ids = [...prompt];
  let total = 0;
  for (let s = 0; s < n; s++) {
    const T = ids.length;
    total += T;
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, T]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(total - T + i)), [1, T]),
      ...past,
    };
    const r = await session.run(feeds, ['logits', ...pastNames.map((x) => x.replace('past_key_values.', 'present.'))]);
    const logits = r.logits!;
    const V = logits.dims[2]!;
    const row = (logits.data as Float32Array).subarray((T - 1) * V, T * V);
    let best = 0;
    for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
    out.push(best);
    ids = [best];
    past = Object.fromEntries(pastNames.map((x) => [x, r[x.replace('past_key_values.', 'present.')]!]));
  }
  return out;
}

const models = new WeakMap<BenchContext, Map<string, LanguageModel>>();
/** The plain loop's new tokens (generate_plain_tokens_per_s), to compare onnsight's with. */
const plainTokens = new WeakMap<BenchContext, number[]>();
async function model(ctx: BenchContext, file: string): Promise<LanguageModel> {
  let m = models.get(ctx);
  if (!m) models.set(ctx, (m = new Map()));
  let lm = m.get(file);
  if (!lm) m.set(file, (lm = await LanguageModel.load(file)));
  return lm;
}

/** Tokens per second of `gen` (one generation of {@link GENERATE_TOKENS}), median of `runs`. */
async function tokensPerS(ctx: BenchContext, gen: () => Promise<unknown>, runs = ctx.timing.runs): Promise<number> {
  const t = await timeRuns(gen, { ...ctx.timing, warmup: 1, runs });
  return GENERATE_TOKENS / (t.median / 1000);
}

/** One side of a generation pair, ready to run: its sessions exist and it has generated once. */
interface Generator {
  /** One greedy generation of `n` new tokens. */
  run(n: number): Promise<unknown>;
  /** Releases its sessions and gives their memory back. */
  close(): Promise<void>;
}

/**
 * onnsight / plain, tokens per second, from paired runs (each pair timed back to back, so
 * both sides see the same machine load): median of the pairs, on wall time and on process CPU
 * time. Recorded as `ctx.extra[<key>_paired]` and `<key>_paired_cpu`. Each pair also times both
 * with one new token (the prompt pass alone): the decode phase (steps 1..31) is the difference,
 * recorded as `<key>_decode_paired` (and `_cpu`) — the whole-generation ratio includes the
 * prompt pass, where onnsight computes the lm_head on the last position only while the plain
 * loop fetches every position's logits.
 *
 * The two sides never hold sessions at the same time (else the process would hold two copies
 * of the weights, and the benchmark's peak memory would be the harness's doing): per pair, a
 * plain session is created, warmed up by one untimed generation, timed (32 tokens, then 1),
 * released and trimmed ({@link withPlainSession}); then onnsight's model is opened by `open`
 * (load, one untimed generation: its session is created and prepacked), timed the same way
 * and closed (disposed, trimmed). Session creation and the first run stay out of the timed region on both sides.
 */
async function paired(ctx: BenchContext, key: string, file: string, open: () => Promise<Generator>): Promise<void> {
  const ids = promptIds(ctx);
  const wall: number[] = [];
  const cpu: number[] = [];
  const dWall: number[] = [];
  const dCpu: number[] = [];
  const timed = async (f: () => Promise<unknown>): Promise<[number, number]> => {
    const c0 = cpuMs();
    const w = await timeOnce(f);
    return [w, cpuMs() - c0];
  };
  for (let i = 0; i < ctx.timing.runs; i++) {
    const [[p, pc], [p1, p1c]] = await withPlainSession(ctx, () => ort.InferenceSession.create(file), async (session) => {
      await plainGreedy(session, ids, GENERATE_TOKENS); // warm-up, untimed
      return [await timed(() => plainGreedy(session, ids, GENERATE_TOKENS)), await timed(() => plainGreedy(session, ids, 1))];
    });
    const ons = await open();
    let o: number, oc: number, o1: number, o1c: number;
    try {
      [o, oc] = await timed(() => ons.run(GENERATE_TOKENS));
      [o1, o1c] = await timed(() => ons.run(1));
    } finally {
      await ons.close();
    }
    wall.push(p / o);
    cpu.push(pc / oc);
    dWall.push((p - p1) / (o - o1));
    dCpu.push((pc - p1c) / (oc - o1c));
  }
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  ctx.extra[`${key}_paired`] = r(median(wall));
  ctx.extra[`${key}_paired_cpu`] = r(median(cpu));
  ctx.extra[`${key}_decode_paired`] = r(median(dWall));
  ctx.extra[`${key}_decode_paired_cpu`] = r(median(dCpu));
  const each = (xs: number[]): string => xs.map((x) => r(x).toFixed(3)).join(' ');
  ctx.notes[`${key}_paired`] = `onnsight / plain tokens per second, median of ${ctx.timing.runs} back-to-back pairs (wall time; _cpu: process CPU time); per pair each side's sessions created and warmed up untimed, the other side's released; pairs in order, wall: ${each(wall)}; cpu: ${each(cpu)}`;
  ctx.notes[`${key}_decode_paired`] = `the same for the decode phase only (steps 1..${GENERATE_TOKENS - 1}: each generation minus a one-token one); pairs, wall: ${each(dWall)}; cpu: ${each(dCpu)}`;
}

/** An onnsight {@link Generator} on `file`: a freshly loaded model, `fn` (from the model) every step, warmed up by one generation. */
async function openOnnsight(file: string, ids: readonly number[], fn?: (lm: LanguageModel) => (m: ModelRef) => void): Promise<Generator> {
  const lm = await LanguageModel.load(file);
  const step = fn?.(lm);
  const run = (n: number): Promise<unknown> => lm.generate([...ids], { maxNewTokens: n, stopAtEos: false }, step);
  await run(GENERATE_TOKENS);
  return {
    run,
    close: async () => {
      await lm.dispose();
      trimNativeHeap();
    },
  };
}

/** Disposes the context's onnsight generation models (their sessions must not sit beside a plain session). */
async function disposeModels(ctx: BenchContext, keep?: string): Promise<void> {
  const loaded = models.get(ctx);
  for (const [file, m] of loaded ?? []) {
    if (file === keep) continue;
    await m.dispose();
    loaded!.delete(file);
  }
  trimNativeHeap();
}

/** A steering vector of the block width (seeded, small), added at the middle block every step. */
function steer(lm: LanguageModel): (m: ModelRef) => void {
  const blocks = findBlocks(lm.modules);
  const mid = blocks.paths[Math.floor(blocks.paths.length / 2)]!;
  const width = Number(lm.modules.modules.get(mid)!.outputs[0]!.sig!.shape!.at(-1));
  let x = 12345;
  const v = Float32Array.from({ length: width }, () => ((x = (x * 1103515245 + 12345) % 2147483648) / 2147483648 - 0.5) * 0.1);
  return (m) => {
    const r = mid.split('.').reduce<unknown>((a, s) => (a as Record<string, unknown>)[s], m) as { output: TensorProxy };
    r.output = r.output.add(v);
  };
}

export const GENERATE_MEASUREMENTS: Measurement[] = [
  {
    name: 'generate_plain_tokens_per_s',
    phase: 'onnsight',
    doc: `A plain onnxruntime-node greedy loop on model.with-past.onnx (feeds and fetches only: the prompt with an empty cache, then one token per step with present.* fed back as past_key_values.*): ${GENERATE_TOKENS} new tokens after the 128-token prompt, batch 1; tokens per second of the whole generation.`,
    run: async (ctx) => {
      const file = withPastPath(ctx);
      if (!file) return NaN;
      return withPlainSession(ctx, () => ort.InferenceSession.create(file), async (session) => {
        ctx.notes.generate_plain_tokens_per_s = 'default session options';
        const v = await tokensPerS(ctx, () => plainGreedy(session, promptIds(ctx), GENERATE_TOKENS));
        // The cache leaves onnxruntime-node as JS typed arrays every step (IO binding and
        // preferredOutputLocation exist only in ONNX Runtime Web): what one such copy costs
        // at the last step's length (the plain loop's binding makes it into new memory every
        // step; onnsight fetches the new positions and makes it into reused buffers).
        const ids = promptIds(ctx);
        const total = ids.length + GENERATE_TOKENS - 1;
        const pastNames = session.inputNames.filter((x) => x.startsWith('past_key_values.'));
        const meta = (session as unknown as { inputMetadata?: { name: string; shape?: (number | string)[] }[] }).inputMetadata ?? [];
        const per = meta.filter((m) => pastNames.includes(m.name)).map((m) => Number(m.shape?.[1] ?? 0) * Number(m.shape?.[3] ?? 0) * total);
        const bufs = per.map((n) => new Float32Array(n).fill(1));
        const copy = await timeRuns(() => bufs.map((b) => b.slice()), { warmup: 1, runs: 9 });
        ctx.extra.generate_cache_bytes_per_step = per.reduce((a, b) => a + b, 0) * 4;
        ctx.extra.generate_cache_copy_ms = copy.median;
        ctx.extra.generate_plain_step_ms = 1000 / v;
        ctx.notes.generate_cache_copy_ms = 'one JS copy of every present.* tensor at the last step (the copy onnxruntime-node makes of each output into new memory in the plain loop; onnsight makes one into reused buffers from the fetched new positions); cache inputs are fed without a copy';
        plainTokens.set(ctx, await plainGreedy(session, promptIds(ctx), GENERATE_TOKENS));
        return v;
      });
    },
  },
  {
    name: 'generate_tokens_per_s',
    doc: `The same generation through onnsight (model.generate on model.with-past.onnx, greedy, stopAtEos false): ${GENERATE_TOKENS} new tokens per generation, tokens per second.`,
    run: async (ctx) => {
      const file = withPastPath(ctx);
      if (!file) return NaN;
      const ids = promptIds(ctx);
      // The plain loop's tokens (generate_plain_tokens_per_s keeps them; else a plain session now, before onnsight's model exists).
      const plain = plainTokens.get(ctx) ?? await withPlainSession(ctx, () => ort.InferenceSession.create(file), (s) => plainGreedy(s, ids, GENERATE_TOKENS));
      const lm = await model(ctx, file);
      const r = await lm.generate(ids, { maxNewTokens: GENERATE_TOKENS, stopAtEos: false });
      ctx.notes.generate_tokens_per_s = `tokens equal to the plain loop's: ${JSON.stringify(r.newIds[0]) === JSON.stringify(plain)}`;
      const v = await tokensPerS(ctx, () => lm.generate(ids, { maxNewTokens: GENERATE_TOKENS, stopAtEos: false }));
      await disposeModels(ctx);
      await paired(ctx, 'generate_vs_plain', file, () => openOnnsight(file, ids));
      return v;
    },
  },
  {
    name: 'generate_steered_tokens_per_s',
    doc: `As generate_tokens_per_s with a steering addition (a vector added to the middle block's output) at every step: port feeds on the instrumented with-past model.`,
    run: async (ctx) => {
      const file = withPastPath(ctx);
      if (!file) return NaN;
      const lm = await model(ctx, file);
      const ids = promptIds(ctx);
      const fn = steer(lm);
      const v = await tokensPerS(ctx, () => lm.generate(ids, { maxNewTokens: GENERATE_TOKENS, stopAtEos: false }, fn));
      await disposeModels(ctx);
      await paired(ctx, 'generate_steered_vs_plain', file, () => openOnnsight(file, ids, steer));
      return v;
    },
  },
  {
    name: 'generate_recompute_tokens_per_s',
    doc: `The clean generation through onnsight on the model without a cache (model.onnx): every step recomputes the whole sequence; 2 runs.`,
    run: async (ctx) => {
      // The with-past model of the measurements before is done: release it first (two models, two copies of the weights).
      await disposeModels(ctx, ctx.model.graphPath);
      const lm = await model(ctx, ctx.model.graphPath);
      const ids = promptIds(ctx);
      const v = await tokensPerS(ctx, () => lm.generate(ids, { maxNewTokens: GENERATE_TOKENS, stopAtEos: false }), 2);
      for (const m of models.get(ctx)?.values() ?? []) await m.dispose();
      models.delete(ctx);
      return v;
    },
  },
];

/** Generation ratios, `[label, numerator, denominator, goal (≤)]`: plain / onnsight tokens per second. */
export const GENERATE_RATIOS: [string, string, string, number][] = [
  ['generate_plain / generate (tok/s; ≥0.95 wanted)', 'generate_plain_tokens_per_s', 'generate_tokens_per_s', Math.round(1000 / 0.95) / 1000],
  ['generate_plain / generate_steered (tok/s; ≥0.90)', 'generate_plain_tokens_per_s', 'generate_steered_tokens_per_s', Math.round(1000 / 0.9) / 1000],
];
