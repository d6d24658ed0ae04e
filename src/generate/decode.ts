/**
 * The decode loop of `generate`: one forward pass per new token, each pass a trace of the
 * engine. A step's IR goes through the IR pipeline once per step structure (later steps of
 * the same structure reuse it); it runs on an instrumented model with ports at just the
 * boundaries the step touches (src/generate/step-ports.ts; interventions are port feeds,
 * saves are fetches), or, when ports cannot express it, on a compiled graph that the
 * structural compile cache builds once per structure and reuses across steps and runs.
 *
 * - **With a cache** (the Optimum / Transformers.js "with past" layout, src/generate/cache-layout.ts):
 *   step 0 runs the left-padded prompts with an empty cache; step s ≥ 1 runs each row's token
 *   of step s − 1 and feeds the previous step's `present.*` outputs back as `past_key_values.*`.
 *   The attention mask covers past + new positions (0 on left pads); `position_ids` are
 *   `cumsum(mask) - 1`, with 1 where the mask is 0 (as transformers and Transformers.js).
 *   On the fast path a step's model also outputs each cache output's new positions (the
 *   second input of the `Concat` that makes `present.*`, src/fast/ports.ts
 *   `exposeAppendedParts`); the step fetches those instead of the whole `present.*` and puts
 *   each cache output together in a buffer per output that the generation owns and grows
 *   in place ({@link CacheBuffers}): onnxruntime-node copies every fetched output
 *   into new JavaScript memory, so fetching `present.*` cost a fresh copy of the whole cache
 *   per step, its page faults and the garbage collections its memory triggers. The values
 *   are the same, bit for bit; a user's save that shares a buffer is copied out of it.
 * - **Without a cache** every step recomputes the whole sequence. Step s ≥ 1's statements
 *   see only the new position (a {@link StepBuilder} window), exactly as with a cache; the
 *   earlier positions keep what earlier steps did to them: every boundary value a step sets is
 *   recorded over that step's positions and written back there in later steps (replays), so
 *   the recomputed positions equal what a cache would hold.
 *
 * Rows that produced the end-of-text token (with `stopAtEos`) stop growing; they keep being
 * fed (the pad token, mask 1) until every row has stopped, as transformers does.
 * @module
 */
import type { Graph, IndexItem } from '../../ir/ir.js';
import { NnsError, type Span } from '../errors.js';
import { runGraph, type ModelContext, type RunOptions } from '../engine.js';
import { compileGraph } from '../compile.js';
import { structuralText } from '../compile-cache.js';
import { irPipeline } from '../../passes/pipeline.js';
import { stepExecutor } from './step-ports.js';
import type { AppendSink, FastExecutor } from '../fast/execute.js';
import type { FastPlan } from '../fast/plan.js';
import { concatAxis, numel, type Tensor } from '../tensor.js';
import { detectCache, type CacheLayout } from './cache-layout.js';
import { chooseToken, Mulberry32, type SamplingOptions } from './sample.js';
import { sequenceAxis, StepBuilder, type StepWindow } from './step-builder.js';

/** Options of a generation (the `generate` options of the language). */
export interface GenerateOptions extends SamplingOptions {
  /** Number of new tokens (steps), ≥ 1. */
  maxNewTokens: number;
  /** Stop a row after it produces the end-of-text token (default true). */
  stopAtEos?: boolean;
  /** PRNG seed for sampling (default 0). */
  seed?: number;
}

/** What a front end reports after building one step's statements into the builder. */
export interface StepBody {
  /** Values of the step's `host` nodes by name (values saved by earlier traces, API tensors). */
  host?: ReadonlyMap<string, Tensor>;
}

/**
 * Builds the statements of step `step` into `b`: one invoke per prompt, in order, with
 * `rows[i]` as row i's tokens (what this step's pass covers).
 */
export type BuildStep = (b: StepBuilder, step: number, rows: number[][]) => StepBody;

/** A token as it is generated. */
export interface TokenEvent {
  /** Step that produced it. */
  step: number;
  /** Batch row (invoke) index. */
  row: number;
  /** The token id. */
  token: number;
}

/** What {@link decode} returns. */
export interface DecodeResult {
  /** Per row: prompt ids followed by the generated ids (no padding). */
  ids: number[][];
  /** Per row: the generated ids. */
  newIds: number[][];
  /** Steps run (≤ maxNewTokens: fewer when every row stopped). */
  steps: number;
  /** Per-step saves as `NAME.S`, in step order. */
  saves: Map<string, Tensor>;
  /** `cache`: decoded with the model's key/value cache; `recompute`: the whole sequence each step. */
  mode: 'cache' | 'recompute';
}

/** A request to {@link decode}. */
export interface DecodeRequest {
  /** Token ids of each prompt (one batch row each). */
  prompts: number[][];
  options: GenerateOptions;
  /** Builds a step's statements. */
  build: BuildStep;
  /** Called with every token as soon as it is chosen. */
  onToken?: (e: TokenEvent) => void;
  /** Called after each step with its saves (named `NAME.S`). */
  onStep?: (step: number, saves: ReadonlyMap<string, Tensor>) => void;
  /** Engine options for every step's run (fast path, compile cache, ...). */
  run?: RunOptions;
  /** Source file for spans of internal nodes. */
  file?: string;
}

const INTERNAL = '#gen.';
const NEXT = `${INTERNAL}next`;

/** The cache layout of a model (cached per model context). */
const layouts = new WeakMap<ModelContext, CacheLayout | null>();
export function cacheLayoutOf(mc: ModelContext): CacheLayout | null {
  if (!layouts.has(mc)) layouts.set(mc, detectCache(mc.feedInputs, mc.tree, mc.loaded.config));
  return layouts.get(mc)!;
}

/** The end-of-text token of a model (config.json `eos_token_id`, the first when it lists several). */
export function eosTokenId(mc: ModelContext): number | undefined {
  const e = mc.loaded.config?.eos_token_id;
  const v = Array.isArray(e) ? e[0] : e;
  return typeof v === 'number' ? v : undefined;
}

/** The most positions the model takes (config.json `n_positions` / `max_position_embeddings`). */
export function maxPositions(mc: ModelContext): number | undefined {
  return configMaxPositions(mc.loaded.config);
}

/** The most positions a model with this config.json takes (`n_positions` / `max_position_embeddings` / `n_ctx`). */
export function configMaxPositions(config: Record<string, unknown> | null | undefined): number | undefined {
  const c = config ?? {};
  const v = c.n_positions ?? c.max_position_embeddings ?? c.n_ctx;
  return typeof v === 'number' ? v : undefined;
}

/**
 * Where a generation runs, as the front ends (`.nns` generate blocks, `LanguageModel.generate`)
 * see it: the module tree they lower against, the model's bounds and tokenizer, and a decode
 * loop — {@link localTarget} on an opened model, or a server's (src/remote/generate.ts), which
 * runs this same loop on its side.
 */
export interface GenerationTarget {
  /** The module tree steps are lowered against. */
  tree: ModelContext['tree'];
  /** The most positions the model takes (config.json), when known. */
  maxPositions?: number;
  /** The model's tokenizer, when it has one. */
  tokenizer?: ModelContext['loaded']['tokenizer'];
  /** How messages name the model. */
  source: string;
  /** Runs the decode loop. */
  decode(req: DecodeRequest): Promise<DecodeResult>;
}

/** A generation on an opened model: {@link decode} in this process. */
export function localTarget(mc: ModelContext): GenerationTarget {
  return { tree: mc.tree, maxPositions: maxPositions(mc), tokenizer: mc.loaded.tokenizer, source: mc.loaded.source, decode: (req) => decode(mc, req) };
}

/** A step structure after the IR pipeline, with its fast-path executor and plan once planned (null: not plannable). */
interface PreparedStep {
  ir: Graph;
  /** Structural text of `ir` as prepared (the compiled path changes the IR it runs: then it is dropped). */
  text: string;
  fast?: { executor: FastExecutor; plan: FastPlan } | null;
}

/** Prepared step structures kept per model (least recently used dropped beyond). */
const MAX_PREPARED = 32;

const preparedByModel = new WeakMap<ModelContext, Map<string, PreparedStep>>();

/**
 * The prepared step structures of a model, by sequence length and structural text: kept
 * across generations, so a generation with the same statements as an earlier one runs the
 * IR pipeline and the fast-path planner for none of its steps.
 */
function preparedSteps(mc: ModelContext): Map<string, PreparedStep> {
  let m = preparedByModel.get(mc);
  if (!m) preparedByModel.set(mc, (m = new Map()));
  return m;
}

function span(file: string): Span {
  return { file, line: 1, col: 1, endLine: 1, endCol: 1, offset: 0, endOffset: 0 };
}

/**
 * The cache buffers of one generation ({@link AppendSink}): one per cache output, holding
 * step s − 1's output at its start, which step s feeds back as its input and then grows in
 * place to its own output (src/fast/execute.ts `appendInto`), so a step allocates no cache
 * memory. Each is sized at first use for the generation's last step (`capacity`), or
 * replaced by a bigger one when a step asks more.
 */
class CacheBuffers implements AppendSink {
  private readonly bufs = new Map<string, Float32Array>();
  constructor(private readonly capacity: (output: string) => number) {}

  take(output: string, n: number): Float32Array {
    let b = this.bufs.get(output);
    if (!b || b.length < n) this.bufs.set(output, (b = new Float32Array(Math.max(n, this.capacity(output)))));
    return b;
  }

  /** Whether `t` shares memory with one of the buffers. */
  owns(t: Tensor): boolean {
    for (const b of this.bufs.values()) if (b.buffer === t.data.buffer) return true;
    return false;
  }
}

/** A recorded boundary value over absolute positions [start, stop) of the padded sequence. */
interface Record_ {
  path: string;
  port: 'output' | 'input';
  index: number;
  axis: number;
  start: number;
  stop: number;
  value: Tensor;
}

/**
 * Generates tokens for every prompt with per-step interventions (see the module comment).
 * @throws NnsError for bad options, a model whose cache cannot be understood, and any error
 *   of a step's trace (reported once, from the first step that has it).
 */
export async function decode(mc: ModelContext, req: DecodeRequest): Promise<DecodeResult> {
  const o = req.options;
  const file = req.file ?? '<generate>';
  const sp = span(file);
  const layout = cacheLayoutOf(mc);
  const B = req.prompts.length;
  if (B === 0) throw new NnsError('no-prompt', 'generate needs at least one prompt', { kind: 'usage' });
  if (req.prompts.some((p) => p.length === 0)) throw new NnsError('bad-prompt', 'a prompt of generate has no tokens', { kind: 'usage' });
  const P = Math.max(...req.prompts.map((p) => p.length));
  const eos = eosTokenId(mc);
  const stopAtEos = o.stopAtEos ?? true;
  const padId = mc.loaded.tokenizer?.padId ?? eos ?? 0;
  const rng = new Mulberry32(o.seed ?? 0);
  const seqs = req.prompts.map((p) => [...p]);
  /** What each row is fed: its sequence, then the pad token after it stopped (rows stay aligned). */
  const fed = req.prompts.map((p) => [...p]);
  const done = req.prompts.map(() => false);
  const saves = new Map<string, Tensor>();
  const records = new Map<string, Record_[]>();
  const mask: number[][] = req.prompts.map((p) => [...Array(P - p.length).fill(0), ...Array(p.length).fill(1)]);
  let past: Tensor[] | undefined = layout?.entries.map((e) => ({ dtype: 'float32', shape: [B, ...e.emptyShape.slice(1)], data: new Float32Array(0) }));
  // Cache outputs put together on the host (fast path): sized for the last step's P + maxNewTokens − 1 positions.
  const appendOf = layout?.entries.map((e) => ({ input: e.input, output: e.output }));
  const perPosition = new Map(layout?.entries.map((e) => [e.output, B * numel(e.emptyShape.filter((_, a) => a !== layout.pastAxis).slice(1))]) ?? []);
  const buffers = layout ? new CacheBuffers((out) => (perPosition.get(out) ?? 0) * (P + o.maxNewTokens - 1)) : undefined;
  let steps = 0;
  const prepared = preparedSteps(mc);
  for (let s = 0; s < o.maxNewTokens; s++) {
    const last = fed.map((r) => r[r.length - 1]!);
    const rows = layout ? (s === 0 ? fed.map((r) => [...r]) : last.map((t) => [t])) : fed.map((r) => [...r]);
    const L = P + s; // padded length of the whole sequence so far
    const window: StepWindow | undefined = !layout && s > 0 ? { start: L - 1, stop: L } : undefined;
    const b = new StepBuilder({ file, tree: mc.tree }, window);
    // Replays: what earlier steps made of the positions they covered (no cache only).
    const host = new Map<string, Tensor>();
    let j = 0;
    for (const segs of records.values()) {
      for (const r of segs) {
        const name = `${INTERNAL}replay.${j++}`;
        host.set(name, r.value);
        const items = [...Array(r.axis).fill({ kind: 'slice' }), { kind: 'slice', start: r.start, stop: r.stop }];
        b.rawSet(r.path, r.port, r.index, items, b.host(name, r.value.dtype, [...r.value.shape], sp), sp);
      }
    }
    const body = req.build(b, s, rows);
    for (const [k, v] of body.host ?? []) host.set(k, v);
    const graph: Graph = b.graph;
    if (graph.batch !== B) throw new Error(`internal: step ${s} built ${graph.batch} rows for ${B} prompts`);
    // Boundaries this step sets, to record (no cache).
    const setTargets = new Map<string, { path: string; port: 'output' | 'input'; index: number }>();
    const userSaves = graph.nodes.filter((n) => n.is('save')).map((n) => (n.attrs as { name: string }).name);
    if (!layout) {
      for (const n of graph.nodes) {
        if (!n.is('set') || n.inputs[0]!.producer.is('host') && (n.inputs[0]!.producer.attrs as { name: string }).name.startsWith(INTERNAL)) continue;
        const a = n.attrs as { path: string; port: 'output' | 'input'; index: number };
        setTargets.set(`${a.path}#${a.port}#${a.index}`, a);
      }
    }
    b.scope = 0;
    const outs = mc.tree.graphOutputs;
    const logitsName = outs.some((x) => x.name === 'logits') ? 'logits' : null;
    const seqAxis = Math.max(1, sequenceAxis((outs.find((x) => x.name === logitsName) ?? outs[0])?.sig?.shape));
    const lastItems: IndexItem[] = [...Array<IndexItem>(seqAxis).fill({ kind: 'slice' }), { kind: 'index', index: -1 }];
    b.save(b.index(b.modelOutput(logitsName, sp), lastItems, sp), NEXT, sp);
    if (layout) layout.entries.forEach((e, i) => b.save(b.modelOutput(e.output, sp), `${INTERNAL}present.${i}`, sp));
    const recorded: { key: string; path: string; port: 'output' | 'input'; index: number; axis: number }[] = [];
    for (const [key, t] of setTargets) {
      const shape = (t.port === 'output' ? mc.tree.modules.get(t.path)?.outputs : mc.tree.modules.get(t.path)?.inputs)?.[t.index]?.sig?.shape;
      const axis = sequenceAxis(shape);
      if (axis < 0) throw new NnsError('generate-recompute', `${t.path}'s ${t.port} has no sequence axis: a model without a key/value cache cannot keep what a step set there`, { kind: 'usage' });
      const v = t.port === 'output' ? b.moduleOutput(t.path, t.index, sp) : b.moduleInput(t.path, t.index, sp);
      b.save(v, `${INTERNAL}rec.${recorded.length}`, sp);
      recorded.push({ key, ...t, axis });
    }
    graph.dimValues.sequence = layout ? (s === 0 ? P : 1) : L;
    let feeds: Record<string, Tensor> | undefined;
    if (layout) feeds = cacheFeeds(layout, s === 0 ? req.prompts.map((p) => [...Array(P - p.length).fill(padId), ...p]) : last.map((t) => [t]), mask, past!);
    // The IR pipeline runs once per step structure (and prompt length); later steps of the same
    // structure reuse its result (tokens, host values and feeds are per step, not in the IR).
    const custom = !!req.run?.printAfterEach || !!req.run?.pipeline;
    const key = custom ? '' : `${graph.dimValues.sequence}|${req.run?.verifyEach ? 'verify|' : ''}${structuralText(graph)}`;
    let ready = custom ? undefined : prepared.get(key);
    if (ready) {
      prepared.delete(key); // most recently used last
      prepared.set(key, ready);
    } else if (!custom) {
      ready = { ir: compileGraph(graph, mc, { pipeline: irPipeline, verifyEach: req.run?.verifyEach }).ir, text: '' };
      ready.text = structuralText(ready.ir);
      prepared.set(key, ready);
      for (const k of prepared.keys()) if (prepared.size > MAX_PREPARED) prepared.delete(k);
    }
    let results: Map<string, Tensor> | null = null;
    if (ready && mc.fast && req.run?.fast !== false) {
      // The step's executor and plan, once per prepared step structure.
      if (ready.fast === undefined) {
        const executor = stepExecutor(mc, ready.ir, appendOf);
        const r = executor.planOnly(ready.ir);
        ready.fast = 'plan' in r ? { executor, plan: r.plan } : null;
      }
      if (ready.fast) results = await ready.fast.executor.run(ready.ir, ready.fast.plan, host, feeds, buffers);
    }
    if (!results) {
      results = await runGraph(ready?.ir ?? graph, mc, { ...req.run, host, ...(feeds ? { feeds } : {}), ...(ready ? { prepared: true, fast: false } : {}) });
      // The compiled path lifts literals out of the IR it runs: such an IR is not reused.
      if (ready && structuralText(ready.ir) !== ready.text) prepared.delete(key);
    }
    const next = results.get(NEXT)!;
    if (layout) past = layout.entries.map((_, i) => results.get(`${INTERNAL}present.${i}`)!);
    const stepStart = s === 0 ? 0 : L - 1;
    for (const r of recorded) {
      const value = results.get(`${INTERNAL}rec.${recorded.indexOf(r)}`)!;
      const segs = records.get(r.key) ?? [];
      const prev = segs[segs.length - 1];
      if (prev && prev.stop === stepStart) {
        prev.value = concatAxis(prev.value, value, r.axis);
        prev.stop = L;
      } else segs.push({ path: r.path, port: r.port, index: r.index, axis: r.axis, start: stepStart, stop: s === 0 ? P : L, value });
      records.set(r.key, segs);
    }
    const stepSaves = new Map<string, Tensor>();
    for (const name of userSaves) {
      const r = results.get(name);
      // A save sharing a cache buffer (a read of `present.*`) would change at the next step: copied out.
      const t = r && buffers?.owns(r) ? { ...r, shape: [...r.shape], data: r.data.slice() } : r;
      if (t) {
        saves.set(`${name}.${s}`, t);
        stepSaves.set(`${name}.${s}`, t);
      }
    }
    const V = next.shape[next.shape.length - 1]!;
    for (let i = 0; i < B; i++) {
      if (done[i]) {
        fed[i]!.push(padId);
        continue;
      }
      const row = (next.data as Float32Array).subarray(i * V, (i + 1) * V);
      const token = chooseToken(row, o, rng);
      seqs[i]!.push(token);
      fed[i]!.push(token);
      req.onToken?.({ step: s, row: i, token });
      if (stopAtEos && token === eos) done[i] = true;
    }
    for (const m of mask) m.push(1);
    steps = s + 1;
    req.onStep?.(s, stepSaves);
    if (done.every(Boolean)) break;
  }
  return { ids: seqs, newIds: seqs.map((r, i) => r.slice(req.prompts[i]!.length)), steps, saves, mode: layout ? 'cache' : 'recompute' };
}

/** The feeds of one step with a cache: ids `[B, T]`, the mask over past + new positions, positions, and the cache. */
function cacheFeeds(layout: CacheLayout, ids: number[][], mask: number[][], past: Tensor[]): Record<string, Tensor> {
  const B = ids.length;
  const T = ids[0]!.length;
  const total = mask[0]!.length;
  const feeds: Record<string, Tensor> = {};
  const int = (n: number, shape: number[], at: (k: number) => number): Tensor => {
    if (layout.idType === 'int64') {
      const data = new BigInt64Array(n);
      for (let k = 0; k < n; k++) data[k] = BigInt(at(k));
      return { dtype: 'int64', shape, data };
    }
    const data = new Int32Array(n);
    for (let k = 0; k < n; k++) data[k] = at(k);
    return { dtype: 'int32', shape, data };
  };
  feeds.input_ids = int(B * T, [B, T], (k) => ids[Math.floor(k / T)]![k % T]!);
  if (layout.hasMask) feeds.attention_mask = int(B * total, [B, total], (k) => mask[Math.floor(k / total)]![k % total]!);
  if (layout.hasPositions) {
    // cumsum(mask) - 1, and 1 where the mask is 0; the last T positions of each row.
    const pos = new Array<number>(B * T);
    mask.forEach((m, r) => {
      let c = 0;
      for (let t = 0; t < total; t++) {
        c += m[t]!;
        if (t >= total - T) pos[r * T + t - (total - T)] = m[t] === 0 ? 1 : c - 1;
      }
    });
    feeds.position_ids = int(B * T, [B, T], (k) => pos[k]!);
  }
  if (layout.hasTokenTypes) feeds.token_type_ids = int(B * T, [B, T], () => 0);
  layout.entries.forEach((e, i) => { feeds[e.input] = past[i]!; });
  return feeds;
}
