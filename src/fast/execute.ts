/**
 * The fast-path executor: runs a planned trace on the instrumented model. Sets become port
 * feeds (keep = 0 and add = value at the selected elements; add = X for `h + X`), saves are
 * fetched port values and graph outputs, finished on the host. When a set value needs
 * values of the trace's own prompts, a first run with no sets (same batch, so the same
 * numbers) fetches them. Each run computes only the batch rows it needs (the source run the
 * source prompts' rows, the main run the rows saves read), keeping the whole batch's padded
 * length, since rows are independent through the model. The instrumented model is built
 * lazily on first use and run in one prepacked session.
 *
 * Module applications (`lm_head(ln_f(h))`) of closed modules run after the main run on
 * standalone module models (src/fast/module-model.ts), in program order by dependency level:
 * calls of one module whose arguments have the same shape are stacked along a new leading
 * axis and run in one session run (a logit lens at every layer streams `lm_head`'s weight
 * once), then split back. Stacking relies on what the fast path already relies on — modules
 * act on each leading index independently — and is only done when the stacked rank stays
 * within the module input's own rank, and checked on the result shapes.
 * @module
 */
import { adaptArgShape, callRankDelta, restoreResultShape } from '../../ir/call-rank.js';
import type { Graph, IndexItem, Node, Value } from '../../ir/ir.js';
import { expandItems } from '../../ir/shape.js';
import { NnsError } from '../errors.js';
import { batchRows, type FastPath, type ModelContext } from '../compile.js';
import { buildFeeds } from '../model/feeds.js';
import { batchBudget, givenFeeds, rowBytes } from '../compiled-run.js';
import { concatInto, numel, selectRows, type Tensor } from '../tensor.js';
import type { OrtSession, OrtSessionOptions } from '../../backends/ort.js';
import { broadcastTo, castTo, HostEvalError, indexTensor, strides, tensorOf } from '../../ir/eval.js';
import { evalOp, HOST_OPS } from '../../ir/ops.js';
import { explainFastPath, printFastPlan, type FastPlan, type PlanOptions, type ReadBinding } from './plan.js';
import { ModuleModels } from './module-model.js';
import { buildPortedModel, choosePorts, gateFeed, type PortedModel, type PortedModelOptions, type PortSpec } from './ports.js';
import { localRunner, type FastRunner, type PortedRunOptions, type RunnerFactory } from './runner.js';
import { Segments, splitAtBlocks } from './segments.js';
import type { AddedCache } from './added-cache.js';
import { planSweep, runSweep, SweepFallback, type Env, type SweepStats } from './sweep.js';

/** Counters of an executor (tests and benchmarks assert which path a trace took). */
export interface FastStats {
  /** Traces run on the fast path. */
  fastRuns: number;
  /** Of those, how many needed a source run first. */
  sourceRuns: number;
  /** Traces handed back to the compiler. */
  fallbacks: number;
  /** Why the last fallback happened. */
  lastReject?: string;
  /** Module applications evaluated on module models. */
  moduleCalls: number;
  /** Session runs of module models (≤ moduleCalls: calls of one module with same-shape arguments share a run). */
  moduleRuns: number;
  /** Traces run as incremental sweeps (src/fast/sweep.ts: clean run once, variants from the changed block on). */
  sweepRuns: number;
  /** Why the last trace with sets was not run as an incremental sweep. */
  lastSweepReject?: string;
  /** Where the last incremental sweep's time went. */
  lastSweep?: SweepStats;
  /** Outputs put together on the host from a fed input and a fetched new part ({@link FastExecutorOptions.appendOf}). */
  appendedOutputs: number;
}

/** Options of a {@link FastExecutor}. */
export interface FastExecutorOptions {
  /** Prepack weights in the ported session (default true: it is reused by every fast trace). */
  prepack?: boolean;
  /** Planner options. */
  plan?: PlanOptions;
  /** The ports of the instrumented model (default: {@link choosePorts} of the tree). */
  ports?: readonly PortSpec[];
  /** Keep the session open for good (default true); false leaves it to the session LRU. */
  pinned?: boolean;
  /** Leave the model's tail (lm_head) out of the instrumented model and compute it on demand (default true; src/fast/tail.ts). */
  cutTail?: boolean;
  /** Graph outputs the instrumented model computes at the last position only ({@link PortedModelOptions.lastPosition}). */
  lastPosition?: readonly string[];
  /** With the tail cut, keep its copy on a fed range of positions in the instrumented model (default true; {@link PortedModelOptions.tailRange}). */
  tailRange?: boolean;
  /**
   * Graph outputs that are a graph input with a new part appended (a key/value cache:
   * {@link PortedModelOptions.appendOf}). A run given an {@link AppendSink} fetches only
   * the new parts of those it reads and puts each output together on the host, from the
   * fed input and the part, into the sink's buffers ({@link FastExecutor.run}).
   */
  appendOf?: readonly { input: string; output: string }[];
  /**
   * Where the instrumented model and the module models run (default: local onnxruntime
   * sessions). An {@link FastRunner} over an Open Inference Protocol server sends the same
   * feeds and fetches over HTTP instead (src/fast/oip-runner.ts).
   */
  runner?: RunnerFactory;
  /**
   * Incremental sweeps (src/fast/sweep.ts): `'auto'` (default) when the estimated cost is
   * lower, `'force'` whenever the trace has that structure, `'off'` never. The environment
   * variable `ONNSIGHT_SWEEP` (`0`, `1` = force) overrides the default.
   */
  incremental?: 'auto' | 'force' | 'off';
}

/**
 * Buffers for the outputs a run puts together on the host ({@link FastExecutorOptions.appendOf}):
 * `take(output, n)` returns a `Float32Array` of at least `n` elements whose first `n` the
 * run overwrites. It may be the buffer whose start holds the fed input (a generation keeps
 * one buffer per cache output: the previous step's output is this step's input): the output
 * then grows over it in place, after the run ({@link appendInto}).
 */
export interface AppendSink {
  take(output: string, n: number): Float32Array;
}

/** A read of a tail output (see `FastExecutor.tailReads`). */
interface TailRead {
  target: Value;
  output: number;
  binding: ReadBinding;
  before: IndexItem[] | null;
  after: IndexItem[] | null;
}

/** A value the host cannot produce after all (shape or host value problem): the compiler reports it. */
class Fallback extends Error {}

/** Keeps the elements of the first slab along each axis the data is constant on (`[B,T,D]` → `[B,T,1]`, `[1,1,1]`). */
export function compress(data: Float32Array, shape: readonly number[]): Tensor {
  let d = data;
  const s = [...shape];
  for (let a = 0; a < s.length; a++) {
    const len = s[a]!;
    if (len === 1) continue;
    const inner = strides(s)[a]!;
    const outer = numel(s.slice(0, a));
    let same = true;
    for (let o = 0; o < outer && same; o++) {
      const base = o * len * inner;
      for (let j = inner; j < len * inner && same; j++) same = Object.is(d[base + j], d[base + (j % inner)]);
    }
    if (!same) continue;
    const next = new Float32Array(outer * inner);
    for (let o = 0; o < outer; o++) next.set(d.subarray(o * len * inner, o * len * inner + inner), o * inner);
    d = next;
    s[a] = 1;
  }
  return { dtype: 'float32', shape: s, data: d };
}

/**
 * A selection that may be sunk into a position-wise module (src/fast/tail.ts): `items` of a
 * tensor of `rank` touch only leading axes (no new axes, the last axis whole). `before`
 * selects the same elements keeping every axis (an index `i` becomes the slice `i:i+1`),
 * `after` then drops the indexed axes.
 */
export function sinkable(items: readonly IndexItem[], rank: number): { before: IndexItem[]; after: IndexItem[] } | null {
  const full = expandItems(items, rank);
  if (!Array.isArray(full) || full.length !== rank || full.some((i) => i.kind === 'newaxis' || i.kind === 'ellipsis')) return null;
  const last = full[rank - 1]!;
  if (last.kind !== 'slice' || last.start !== undefined || last.stop !== undefined || (last.step ?? 1) !== 1) return null;
  const before: IndexItem[] = full.map((i) => (i.kind === 'index' ? { kind: 'slice', start: i.index, ...(i.index === -1 ? {} : { stop: i.index + 1 }) } : i));
  const after: IndexItem[] = full.map((i) => (i.kind === 'index' ? { kind: 'index', index: 0 } : { kind: 'slice' }));
  return { before, after };
}


/**
 * `Concat([a, b], axis)` into the first elements of `into` (float32; `a`'s and `b`'s other
 * dims equal, else an internal error): the output of {@link FastExecutorOptions.appendOf}
 * from its fed input and its new part. When `a` is the start of `into` itself, the output
 * grows in place: `a`'s blocks move up from the last one down (each to an offset at or above
 * its own, never over a block not yet moved), and `b`'s go into the gaps — the same values,
 * with half the memory traffic of a copy into another buffer. `a` then no longer holds its
 * values. Any other overlap of `a` and `into` is an internal error.
 */
export function appendInto(a: Tensor, b: Tensor, axis: number, into: Float32Array): Tensor {
  if (b.dtype !== 'float32' || a.shape.length !== b.shape.length || a.shape.some((d, i) => i !== axis && d !== b.shape[i])) {
    throw new Error(`internal: cannot append [${b.shape}] ${b.dtype} to [${a.shape}] along axis ${axis}`);
  }
  const outer = numel(a.shape.slice(0, axis));
  const ia = numel(a.shape.slice(axis));
  const ib = numel(b.shape.slice(axis));
  const n = outer * (ia + ib);
  if (into.length < n) throw new Error(`internal: an append buffer of ${into.length} elements for ${n}`);
  const da = a.data as Float32Array, db = b.data as Float32Array;
  if (db.buffer === into.buffer) throw new Error('internal: an appended part in its own output buffer');
  if (da.buffer === into.buffer && da.length > 0) {
    if (da.byteOffset !== into.byteOffset) throw new Error('internal: an append buffer overlapping its input elsewhere than at its start');
    for (let o = outer - 1; o >= 0; o--) {
      if (o > 0 && ia) into.copyWithin(o * (ia + ib), o * ia, (o + 1) * ia);
      if (ib) into.set(db.subarray(o * ib, (o + 1) * ib), o * (ia + ib) + ia);
    }
  } else {
    concatInto(a, b, axis, into);
  }
  const shape = [...a.shape];
  shape[axis] = a.shape[axis]! + b.shape[axis]!;
  return { dtype: 'float32', shape, data: into.length === n ? into : into.subarray(0, n) };
}

/** Whether `v` is computed from literals alone (no reads, host values or module calls). */
function literalOnly(v: Value): boolean {
  const stack = [v];
  const seen = new Set<Value>();
  while (stack.length > 0) {
    const u = stack.pop()!;
    if (seen.has(u)) continue;
    seen.add(u);
    const p = u.producer;
    if (p.is('const')) continue;
    if (p.is('host') || p.is('call_module') || READ_OPS.has(p.op) || !HOST_OPS.has(p.op)) return false;
    stack.push(...p.inputs);
  }
  return true;
}

const READ_OPS = new Set(['module.output', 'module.input', 'model.output', 'param']);

/** Runs traces on the instrumented model (see the module comment). */
export class FastExecutor implements FastPath {
  /** Counters. */
  readonly stats: FastStats = { fastRuns: 0, sourceRuns: 0, fallbacks: 0, moduleCalls: 0, moduleRuns: 0, sweepRuns: 0, appendedOutputs: 0 };
  /** Incremental sweeps: see {@link FastExecutorOptions.incremental} (may be changed between traces). */
  incremental: 'auto' | 'force' | 'off';
  /** Activation bytes a sweep's segment run may hold (default: src/fast/sweep.ts `sweepBudget`; tests make it small). */
  sweepBudget: number | undefined;
  private segmentsOrWhy: Segments | string | undefined;
  /** Standalone models of closed modules, for module applications. */
  readonly modules: ModuleModels;
  /** Where the graphs run (local sessions unless {@link FastExecutorOptions.runner} says otherwise). */
  readonly runner: FastRunner;
  private portedModel: PortedModel | undefined;
  private separable: boolean | undefined;
  private readonly neutral = new Map<string, Tensor>();
  private readonly feedCache = new WeakMap<FastPlan, { literal: boolean; key: string; feeds: Record<string, Tensor> }>();

  constructor(private readonly mc: ModelContext, private readonly opts: FastExecutorOptions = {}) {
    this.modules = new ModuleModels(mc);
    this.runner = (opts.runner ?? localRunner)(this, mc);
    const env = process.env.ONNSIGHT_SWEEP;
    this.incremental = opts.incremental ?? (env === '0' ? 'off' : env === '1' ? 'force' : 'auto');
  }

  /** Why the last trace was handed to the compiler. */
  get lastReject(): string | undefined {
    return this.stats.lastReject;
  }

  /** Set when the runner is not local: traces the fast path cannot run fail with this explanation instead of compiling locally. */
  get exclusive(): string | undefined {
    return this.runner.exclusive;
  }

  /** The model split at its block boundaries (src/fast/segments.ts), or why it cannot be. */
  segments(): Segments | string {
    if (this.segmentsOrWhy === undefined) {
      const c = splitAtBlocks(this.mc, this.ported.tail ? { tail: this.ported.tail } : {});
      this.segmentsOrWhy = 'reject' in c ? c.reject : new Segments(this.mc, c);
    }
    return this.segmentsOrWhy;
  }

  /** The instrumented model's graph file, once built (never builds it). */
  get builtGraphPath(): string | undefined {
    return this.portedModel?.graphPath;
  }

  /** The instrumented model (built and written on first use). */
  get ported(): PortedModel {
    this.portedModel ??= buildPortedModel(this.mc, this.opts.ports ?? choosePorts(this.mc.tree), { cutTail: this.opts.cutTail ?? true, lastPosition: this.opts.lastPosition, tailRange: this.opts.tailRange ?? true, ...(this.opts.appendOf ? { appendOf: this.opts.appendOf } : {}) });
    return this.portedModel;
  }

  /** The one session over the instrumented model. */
  session(): Promise<OrtSession> {
    return this.mc.backend.session(this.ported.graphPath, this.sessionOptions());
  }

  private sessionOptions(): OrtSessionOptions {
    const externalDataDir = this.mc.loaded.externalDataDir;
    return { prepack: this.opts.prepack ?? true, pinned: this.opts.pinned ?? true, ...(externalDataDir ? { externalDataDir } : {}) };
  }

  /**
   * The session for one run that a prepacked session would serve once — an incremental
   * sweep's clean run, a gradient's forward rows ({@link PortedRunOptions.spare}): the
   * instrumented model's own ({@link session}), except with a backend that keeps one copy of
   * the weights when that session (prepacked) is not open: then the same graph without
   * prepacking. The sweep's segment sessions (the gradient's session), opened right after,
   * release a prepacked session of the model's weights at once, so one built for that run
   * served one run, at the cost of its creation (GPT-2 small: 2–3 s of CPU) and a peak while it
   * was built (its packed copy beside the weights file's pages: 850 MB on GPT-2 small's 652 MB,
   * against 820 for the whole sweep after it). Without prepacking it maps the weights file,
   * whose pages the segments share.
   */
  spareSession(): Promise<OrtSession> {
    const o = this.sessionOptions();
    const backend = this.mc.backend;
    if (!o.prepack || !backend.exclusiveGroups || backend.isOpen(this.ported.graphPath, o)) return this.session();
    return backend.session(this.ported.graphPath, { ...o, prepack: false });
  }

  /** Plans `ir` on the instrumented model: the plan and its printed partition, or why not. */
  plan(ir: Graph): { plan: FastPlan; text: string } | { reject: string } {
    const r = explainFastPath(ir, this.mc.tree, this.ported, { callable: (p) => this.modules.reason(p), ...this.opts.plan });
    if ('reject' in r) {
      this.fallback(r.reject);
      return r;
    }
    // The printed partition is read only when a pass's output is printed (--print-after, FileCheck
    // goldens): printed on first read, not for every run (tens of ms for a batch of save-all traces).
    let text: string | undefined;
    const plan = r.plan;
    return { plan, get text() { return (text ??= printFastPlan(ir, plan)); } };
  }

  /** Plans `ir` on the instrumented model (as {@link plan}, without printing the partition). */
  planOnly(ir: Graph): { plan: FastPlan } | { reject: string } {
    const r = explainFastPath(ir, this.mc.tree, this.ported, { callable: (p) => this.modules.reason(p), ...this.opts.plan });
    if ('reject' in r) this.fallback(r.reject);
    return r;
  }

  /**
   * Runs a plan of `ir`; null when a value turns out not computable on the host after all (the compiler takes over).
   * With given `feeds` and a `sink`, the outputs of {@link FastExecutorOptions.appendOf} the
   * run reads are fetched as their new parts and put together in the sink's buffers (the
   * same values, bit for bit): results may then share the sink's memory.
   */
  async run(ir: Graph, plan: unknown, host: ReadonlyMap<string, Tensor>, feeds?: Readonly<Record<string, Tensor>>, sink?: AppendSink, opts?: PortedRunOptions): Promise<Map<string, Tensor> | null> {
    try {
      const out = await this.execute(ir, plan as FastPlan, host, feeds, sink, opts);
      this.stats.fastRuns++;
      return out;
    } catch (e) {
      if (e instanceof Fallback || e instanceof HostEvalError) return this.fallback(e.message);
      throw e;
    }
  }

  /** Plans and runs `ir`; null when it needs the compiler. */
  async tryRun(ir: Graph, host: ReadonlyMap<string, Tensor>, feeds?: Readonly<Record<string, Tensor>>, opts?: PortedRunOptions): Promise<Map<string, Tensor> | null> {
    const r = this.plan(ir);
    return 'reject' in r ? null : this.run(ir, r.plan, host, feeds, undefined, opts);
  }

  private fallback(reason: string): null {
    this.stats.fallbacks++;
    this.stats.lastReject = reason;
    return null;
  }

  /**
   * Whether runs may compute a subset of the batch rows: every port, graph output and feed
   * has the batch first (rows are independent; the padded length stays the whole batch's).
   */
  private get rowsSeparable(): boolean {
    this.separable ??= this.ported.ports.every((p) => p.shape[0] === 'batch')
      && this.mc.tree.graphOutputs.every((o) => o.sig?.shape?.[0] === 'batch')
      && this.mc.feedInputs.every((f) => typeof f.dims?.[0] !== 'number');
    return this.separable;
  }

  private async execute(ir: Graph, plan: FastPlan, host: ReadonlyMap<string, Tensor>, given?: Readonly<Record<string, Tensor>>, sink?: AppendSink, runOpts?: PortedRunOptions): Promise<Map<string, Tensor>> {
    const results = new Map<string, Tensor>();
    if (plan.saves.length === 0) return results; // like the compiler: nothing to fetch, nothing to run
    const { feeds, seqLen } = given ? givenFeeds(given) : buildFeeds(this.mc.feedInputs, batchRows(ir), { padId: 0 });
    // Given feeds (generation) run the whole batch: the caller fetches every row's cache.
    const separable = !given && this.rowsSeparable;
    // Sweeps run the model's segments in local sessions: not with a remote runner.
    const swept = !given && plan.sets.length > 0 && this.incremental !== 'off' && !this.runner.exclusive ? await this.trySweep(ir, plan, host, results) : false;
    if (swept) return results;
    if (!given) this.checkBudget(plan, separable && plan.mainRows.length ? plan.mainRows.length : ir.batch, seqLen);
    const all = Array.from({ length: ir.batch }, (_, i) => i);
    const runRows = (rows: number[]): number[] => (separable && rows.length > 0 ? rows : all);
    const base = (rows: number[]): Record<string, Tensor> => {
      const f: Record<string, Tensor> = {};
      for (const [k, t] of Object.entries(feeds)) f[k] = rows.length === ir.batch ? t : selectRows(t, rows);
      for (const p of this.ported.ports) {
        f[p.keep] = this.constant(1, p.shape.length);
        f[p.add] = this.constant(0, p.shape.length);
      }
      return f;
    };
    let source: Env = { out: {}, rows: all };
    const sourceMemo = new Map<Value, Tensor>();
    if (plan.sourceFetch.length) {
      const rows = runRows(plan.sourceRows);
      source = { out: await this.runner.runPorted(base(rows), plan.sourceFetch, undefined, runOpts), rows };
      this.stats.sourceRuns++;
      await this.runTails(ir, plan, plan.sets.map((x) => x.value), source, sourceMemo);
    }
    const rows = runRows(plan.mainRows);
    const main = { ...base(rows), ...this.cachedPortFeeds(ir, plan, seqLen, host, source, rows, sourceMemo) };
    const memo = new Map<Value, Tensor>();
    const roots = plan.saves.map((x) => x.value);
    const inModel = this.runner.exclusive ? null : this.tailInModel(ir, plan, roots, seqLen, rows.length);
    const fetch = inModel?.fetch ?? plan.mainFetch;
    const joined = given && sink && !this.runner.exclusive ? this.appendedReads(fetch, given) : [];
    const out = await this.runner.runPorted(main, joined.length ? fetch.map((f) => joined.find((j) => j.output === f)?.part ?? f) : fetch, inModel?.range, runOpts);
    for (const j of joined) {
      const x = given![j.input]!, part = out[j.part]!;
      const n = numel(x.shape) + numel(part.shape);
      const buf = sink!.take(j.output, n);
      // In place over the fed input when that is the buffer's start (the run is done with it); never over it elsewhere.
      const own = buf.buffer === x.data.buffer && (x.data.byteOffset !== buf.byteOffset || numel(x.shape) === 0);
      out[j.output] = appendInto(x, part, j.axis, own ? new Float32Array(n) : buf);
      delete out[j.part];
      this.stats.appendedOutputs++;
    }
    const fetched: Env = { out, rows };
    if (inModel) inModel.finish(fetched, memo); // every tail read of the saves, from the run itself
    else await this.runTails(ir, plan, roots, fetched, memo);
    await this.runCalls(plan, host, fetched, memo);
    for (const s of plan.saves) results.set(s.name, this.evaluate(s.value, plan, host, fetched, memo));
    return results;
  }

  /**
   * Runs `ir` as an incremental sweep (src/fast/sweep.ts) when it is one and that pays;
   * false (nothing run) otherwise, the reason in `stats.lastSweepReject`.
   */
  private async trySweep(ir: Graph, plan: FastPlan, host: ReadonlyMap<string, Tensor>, results: Map<string, Tensor>): Promise<boolean> {
    const segs = this.segments();
    if (typeof segs === 'string') {
      this.stats.lastSweepReject = segs;
      return false;
    }
    const batchFirst = (fetch: string): boolean => {
      const port = this.ported.ports.find((p) => p.pre === fetch || p.post === fetch);
      const sig = port ? port.shape : this.mc.tree.graphOutputs.find((o) => o.name === fetch)?.sig?.shape;
      return sig?.[0] === 'batch';
    };
    const sp = this.mc.feedInputs.some((f) => typeof f.dims?.[0] === 'number')
      ? { reject: 'a graph input with a fixed batch size' }
      : planSweep(ir, plan, segs.chain, this.ported, { force: this.incremental === 'force', batchFirst, ...addedOf(segs) });
    if ('reject' in sp) {
      this.stats.lastSweepReject = sp.reject;
      return false;
    }
    const session = await this.spareSession();
    const tokens = batchRows(ir);
    const neutral = (rows: number[]): Record<string, Tensor> => {
      const { feeds } = buildFeeds(this.mc.feedInputs, rows.map((r) => tokens[r]!), { padId: 0 });
      for (const p of this.ported.ports) {
        feeds[p.keep] = this.constant(1, p.shape.length);
        feeds[p.add] = this.constant(0, p.shape.length);
      }
      return feeds;
    };
    let out: { env: Env; memo: Map<Value, Tensor>; stats: SweepStats };
    try {
      out = await runSweep({
        mc: this.mc, ported: this.ported, segments: segs, ...(this.sweepBudget ? { budget: this.sweepBudget } : {}),
        cleanRun: async (rows, fetch) => ({ out: await this.mc.backend.run(session, { ...neutral(rows), ...gateFeed(this.ported, fetch) }, fetch), rows }),
        evaluate: (v, env, memo) => this.evaluate(v, plan, host, env, memo),
        afterBatch: this.settleSaves(ir, plan, host, new Set(sp.rows.map((r) => r.row))),
        // The head ends on the tail's module session only when that is open already (it holds the
        // tail's weights); else the whole head segment runs, reading the tail's weights from the
        // file's pages, released with the segments after the sweep: a module session opened for
        // the sweep stayed after it beside the instrumented model's own copy of the tail
        // (src/fast/tail.ts; 154 MB on GPT-2 small), and was built while the segments held the file.
        ...(this.ported.tail && this.modules.isOpen(this.ported.tail.path) ? {
          runTail: async (x: Tensor, outputs: readonly string[]) => {
            const tail = this.ported.tail!;
            const mm = this.modules.model(tail.path);
            const out = await this.runner.runModule(tail.path, { [mm.inputs[0]!.name]: castTo(x, mm.inputs[0]!.sig!.dtype) }, outputs.map((o) => mm.outputs[tail.outputs.get(o)!]!.name));
            return Object.fromEntries(outputs.map((o) => [o, out[mm.outputs[tail.outputs.get(o)!]!.name]!]));
          },
        } : {}),
      }, ir, sp);
    } catch (e) {
      // onnxruntime refusing a segment model (an operator it cannot run alone): the ordinary path (nothing was returned yet).
      if (e instanceof SweepFallback || (e instanceof NnsError && (e.code === 'ort-session' || e.code === 'ort-run'))) {
        this.stats.lastSweepReject = e.message;
        return false;
      }
      throw e;
    } finally {
      await segs.release();
    }
    this.stats.sweepRuns++;
    this.stats.lastSweep = out.stats;
    await this.runTails(ir, plan, plan.saves.map((x) => x.value), out.env, out.memo); // tail reads of the clean rows
    await this.runCalls(plan, host, out.env, out.memo);
    for (const s of plan.saves) results.set(s.name, this.evaluate(s.value, plan, host, out.env, out.memo));
    return true;
  }

  /**
   * The sweep's `afterBatch` (src/fast/sweep.ts): after each batch, the saves whose inputs are
   * all there (served by the batches so far or fetched by the clean run; none through a module
   * application or a tail read of a clean row, which come after the sweep) are evaluated, and the
   * values the sweep served are dropped once every node reading them has its result (a grid's
   * per-variant logits rows: GPT-2 small's 12 × 128 grid held 309 MB of them to the end).
   */
  private settleSaves(ir: Graph, plan: FastPlan, host: ReadonlyMap<string, Tensor>, changed: ReadonlySet<number>): (memo: Map<Value, Tensor>, env: Env, written: readonly Value[]) => void {
    const saved = new Set(plan.saves.map((x) => x.value));
    const pending = new Set(saved);
    const served: Value[] = [];
    /** 'ready', 'wait' (a changed row's read the sweep serves later) or 'never' (needs what comes after the sweep). */
    const state = (root: Value, memo: ReadonlyMap<Value, Tensor>): 'ready' | 'wait' | 'never' => {
      const stack = [root];
      const seen = new Set<Value>();
      let wait = false;
      while (stack.length) {
        const v = stack.pop()!;
        if (seen.has(v) || memo.has(v)) continue;
        seen.add(v);
        const b = plan.reads.get(v);
        if (b) {
          let mine = false;
          for (let r = b.rowStart; r < b.rowEnd; r++) if (changed.has(r)) mine = true;
          if (mine) wait = true;
          else if (b.tail) return 'never';
          continue;
        }
        if (v.producer.is('call_module')) return 'never';
        stack.push(...v.producer.inputs);
      }
      return wait ? 'wait' : 'ready';
    };
    return (memo, env, written) => {
      served.push(...written);
      for (const v of [...pending]) {
        const st = state(v, memo);
        if (st === 'wait') continue;
        pending.delete(v);
        if (st === 'ready') this.evaluate(v, plan, host, env, memo);
      }
      for (let i = served.length - 1; i >= 0; i--) {
        const v = served[i]!;
        if (saved.has(v) || ![...v.uses].every((n) => n.results.every((r) => memo.has(r)))) continue;
        memo.delete(v);
        served.splice(i, 1);
      }
    };
  }

  /**
   * Evaluates the plan's module applications into `memo`: by dependency level (a call whose
   * arguments need another call's results comes a level later), and within a level, calls of
   * one module whose arguments have the same shapes and dtypes in one stacked session run.
   */
  private async runCalls(plan: FastPlan, host: ReadonlyMap<string, Tensor>, env: Env, memo: Map<Value, Tensor>): Promise<void> {
    if (!plan.calls.length) return;
    const level = new Map<Node, number>();
    const depth = new Map<Value, number>();
    const levelOf = (v: Value): number => {
      let d = depth.get(v);
      if (d !== undefined) return d;
      const p = v.producer;
      d = plan.reads.has(v) ? 0 : p.op === 'call_module' ? level.get(p)! : Math.max(0, ...p.inputs.map(levelOf));
      depth.set(v, d);
      return d;
    };
    for (const c of plan.calls) level.set(c, 1 + Math.max(0, ...c.inputs.map(levelOf)));
    const levels = [...new Set(level.values())].sort((a, b) => a - b);
    for (const l of levels) {
      const groups = new Map<string, { path: string; calls: Node<'call_module'>[]; args: Tensor[][] }>();
      for (const c of plan.calls) {
        if (level.get(c) !== l) continue;
        const args = c.inputs.map((x) => this.evaluate(x, plan, host, env, memo));
        const key = JSON.stringify([c.attrs.path, args.map((a) => [a.dtype, a.shape])]);
        let g = groups.get(key);
        if (!g) groups.set(key, (g = { path: c.attrs.path, calls: [], args: [] }));
        g.calls.push(c);
        g.args.push(args);
      }
      for (const g of groups.values()) {
        const outs = await this.applyModule(g.path, g.args, Math.max(...g.calls.map((c) => c.results.length)));
        g.calls.forEach((c, j) => c.results.forEach((v, r) => memo.set(v, outs[j]![r]!)));
        this.stats.moduleCalls += g.calls.length;
      }
    }
  }

  /** Results `[call][output]` of module `path` applied to each argument list (same shapes), stacked when it can. */
  private async applyModule(path: string, argLists: Tensor[][], nOut: number): Promise<Tensor[][]> {
    const module = this.mc.tree.modules.get(path)!;
    const mm = module; // the module model's inputs and outputs are the module's (src/fast/module-model.ts)
    const fetch = mm.outputs.slice(0, nOut).map((o) => o.name);
    const inModel = this.tailCallsInModel(path);
    const runOnce = async (args: Tensor[]): Promise<Tensor[]> => {
      const feeds: Record<string, Tensor> = {};
      // A value of another rank runs at the module's rank (passes/call-rank.ts; infer-types checked that it can).
      const delta = callRankDelta(module, args.map((a) => a.shape));
      args.forEach((a, i) => {
        const t = castTo(a, mm.inputs[i]!.sig!.dtype);
        feeds[mm.inputs[i]!.name] = delta === 0 ? t : { ...t, shape: adaptArgShape(t.shape, delta) };
      });
      let out: Record<string, Tensor>;
      try {
        out = inModel ? await this.tailRows(feeds[mm.inputs[0]!.name]!, fetch) : await this.runner.runModule(path, feeds, fetch);
      } catch (e) {
        // A local module run that onnxruntime refuses goes to the compiler; a remote runner's errors are the user's to see.
        if (e instanceof NnsError && !this.runner.exclusive) throw new Fallback(`module ${path}: ${e.message}`);
        throw e;
      }
      this.stats.moduleRuns++;
      return fetch.map((f) => (delta === 0 ? out[f]! : { ...out[f]!, shape: restoreResultShape(out[f]!.shape, args[0]!.shape, delta) }));
    };
    const k = argLists.length;
    const first = argLists[0]!;
    const stackable = k > 1 && first.every((a, i) => {
      const sig = mm.inputs[i]!.sig?.shape;
      return !!sig && a.shape.length < sig.length;
    });
    if (stackable) {
      const stacked = first.map((a0, i) => {
        const n = numel(a0.shape);
        const data = new (a0.data.constructor as Float32ArrayConstructor)(k * n);
        argLists.forEach((args, j) => data.set(castTo(args[i]!, a0.dtype).data as Float32Array, j * n));
        return { dtype: a0.dtype, shape: [k, ...a0.shape], data } as Tensor;
      });
      const outs = await runOnce(stacked);
      if (outs.every((o) => o.shape[0] === k)) {
        return argLists.map((_, j) => outs.map((o) => {
          const n = numel(o.shape.slice(1));
          return { dtype: o.dtype, shape: o.shape.slice(1), data: o.data.subarray(j * n, (j + 1) * n) } as Tensor;
        }));
      }
    }
    const res: Tensor[][] = [];
    for (const args of argLists) res.push(await runOnce(args));
    return res;
  }

  /**
   * The fast path runs a batch in one go; a batch of several rows whose activations, fetched
   * outputs and port feeds would exceed the memory budget ({@link batchBudget}: from the
   * model's weights and the machine's memory, or `ONNSIGHT_BATCH_BUDGET_MB`) goes to the
   * compiled path, which splits it into chunks. One row stays here whatever its size: the
   * compiled path cannot split it either (it runs at least one row per chunk) and would only
   * add a compile and a second session over the weights. The model outputs the tail computes
   * (src/fast/tail.ts) are not outputs of the instrumented run and are not counted.
   */
  private checkBudget(plan: FastPlan, rows: number, seqLen: number): void {
    if (rows <= 1) return;
    const budget = batchBudget(this.mc);
    const ports = new Set(plan.sets.map((x) => x.port.id)).size;
    const width = Math.max(1, ...this.ported.ports.map((p) => Number(p.shape[p.shape.length - 1]) || 1));
    const tail = this.ported.tail;
    const bytes = rows * (rowBytes(this.mc, seqLen, plan.mainFetch.length, (name) => !tail?.outputs.has(name)) + ports * 2 * 4 * seqLen * width);
    if (bytes > budget) throw new Fallback(`a batch of ${rows} rows needs ~${Math.round(bytes / 2 ** 20)} MiB in one run (budget ${Math.round(budget / 2 ** 20)} MiB); the compiled path splits it`);
  }

  /**
   * {@link portFeeds}, kept per plan when every set value is built from literals alone (a
   * steering vector given as numbers): such feeds depend only on the plan, the sequence
   * length and the rows, so a generation builds them once per step structure, not per step.
   */
  private cachedPortFeeds(ir: Graph, plan: FastPlan, seqLen: number, host: ReadonlyMap<string, Tensor>, source: Env, rows: number[], memo: Map<Value, Tensor>): Record<string, Tensor> {
    if (plan.sets.length === 0) return {};
    let c = this.feedCache.get(plan);
    if (!c) this.feedCache.set(plan, (c = { literal: plan.sets.every((s) => literalOnly(s.value)), key: '', feeds: {} }));
    if (!c.literal) return this.portFeeds(ir, plan, seqLen, host, source, rows, memo);
    const key = `${ir.batch}|${seqLen}|${rows.join(',')}`;
    if (c.key !== key) {
      c.feeds = this.portFeeds(ir, plan, seqLen, host, source, rows, memo);
      c.key = key;
    }
    return c.feeds;
  }

  /** keep/add feeds of every port a set writes (`memo`: values already computed from the source run). */
  private portFeeds(ir: Graph, plan: FastPlan, seqLen: number, host: ReadonlyMap<string, Tensor>, source: Env, rows: number[], memo: Map<Value, Tensor>): Record<string, Tensor> {
    const bufs = new Map<number, { keep: Float32Array; add: Float32Array; steered: Uint8Array; shape: number[] }>();
    for (const s of plan.sets) {
      const p = s.port;
      let buf = bufs.get(p.id);
      if (!buf) {
        const shape = p.shape.map((d) => (d === 'batch' ? ir.batch : d === 'sequence' ? seqLen : Number(d)));
        const n = numel(shape);
        buf = { keep: new Float32Array(n).fill(1), add: new Float32Array(n), steered: new Uint8Array(n), shape };
        bufs.set(p.id, buf);
      }
      // Flat positions of this scope's rows only (an index tensor over the whole batch would cost batch× more per set).
      const inner = numel(buf.shape.slice(1));
      const rowIota = tensorOf('float64', [s.rowEnd - s.rowStart, ...buf.shape.slice(1)], Float64Array.from({ length: (s.rowEnd - s.rowStart) * inner }, (_, i) => s.rowStart * inner + i));
      const sel = s.items ? indexTensor(rowIota, s.items) : rowIota;
      const vals = broadcastTo(castTo(this.evaluate(s.value, plan, host, source, memo), 'float32'), sel.shape);
      const idx = sel.data as Float64Array;
      const v = vals.data as Float32Array;
      for (let i = 0; i < idx.length; i++) {
        const k = idx[i]!;
        if (s.kind === 'replace') {
          buf.keep[k] = 0;
          buf.add[k] = v[i]!;
          buf.steered[k] = 0;
        } else {
          if (buf.steered[k]) throw new Fallback('two additions to one element');
          buf.add[k] = buf.keep[k] === 0 ? Math.fround(buf.add[k]! + v[i]!) : v[i]!;
          buf.steered[k] = 1;
        }
      }
    }
    const out: Record<string, Tensor> = {};
    const pick = (data: Float32Array, shape: number[]): Tensor => {
      if (rows.length === ir.batch) return compress(data, shape);
      const t = selectRows({ dtype: 'float32', shape, data }, rows);
      return compress(t.data as Float32Array, [...t.shape]);
    };
    for (const [id, b] of bufs) {
      const p = this.ported.ports[id]!;
      out[p.keep] = pick(b.keep, b.shape);
      out[p.add] = pick(b.add, b.shape);
    }
    return out;
  }

  /**
   * Whether calls of module `path` run on the instrumented model's own copy of the tail
   * ({@link SelectedTail.extra} in src/fast/tail.ts) rather than on the module's model: when
   * `path` is the tail, the model has that copy, the runner is local, and the model can be fed
   * a one-token prompt. Then the tail's weights are held once, by the instrumented model's
   * session (a prepacked module session beside it held a second copy of `lm_head`: 154 MB
   * on GPT-2 small), at the cost of the model's body run over one token per call level.
   */
  tailCallsInModel(path: string): boolean {
    const tail = this.ported.tail;
    return !!tail?.range?.extra && tail.path === path && !this.runner.exclusive && this.oneToken() !== null;
  }

  /**
   * The session calls of module `path` run on: the instrumented model's when the tail's
   * calls run there ({@link tailCallsInModel}), else the module model's.
   */
  callSession(path: string): Promise<OrtSession> {
    return this.tailCallsInModel(path) ? this.session() : this.modules.session(path);
  }

  private oneTokenFeeds: Record<string, Tensor> | null | undefined;

  /** Feeds of a one-token prompt with neutral ports (the body's cheapest run), or null when the model cannot take one. */
  private oneToken(): Record<string, Tensor> | null {
    if (this.oneTokenFeeds === undefined) {
      try {
        const f = buildFeeds(this.mc.feedInputs, [[0]], { padId: 0 }).feeds;
        for (const p of this.ported.ports) {
          f[p.keep] = this.constant(1, p.shape.length);
          f[p.add] = this.constant(0, p.shape.length);
        }
        this.oneTokenFeeds = f;
      } catch (e) {
        if (!(e instanceof NnsError)) throw e;
        this.oneTokenFeeds = null; // a fixed sequence length, an input it cannot fill: the module model serves
      }
    }
    return this.oneTokenFeeds;
  }

  /**
   * The tail applied to `x` (`[…, hidden]`, the tail module's input) in a run of the
   * instrumented model over a one-token prompt, `x`'s rows fed as the tail copy's extra rows
   * (empty range). Returns tail outputs `fetch` by name, shaped `[…x's leading dims, …]`.
   */
  private async tailRows(x: Tensor, fetch: readonly string[]): Promise<Record<string, Tensor>> {
    const range = this.ported.tail!.range!;
    const extra = range.extra!;
    const rows = numel(x.shape) / extra.hidden;
    if (x.shape.at(-1) !== extra.hidden || !Number.isInteger(rows)) throw new Fallback(`module ${this.ported.tail!.path}: an input of shape [${x.shape.join(', ')}]`);
    const feed: Tensor = { dtype: 'float32', shape: [...Array<number>(range.axis).fill(1), rows, extra.hidden], data: castTo(x, 'float32').data };
    const names = fetch.map((o) => range.outputs.get(o)!);
    const out = await this.runner.runPorted(this.oneToken()!, names, { start: 0, end: 0, extra: feed });
    const res: Record<string, Tensor> = {};
    fetch.forEach((o, i) => {
      const t = out[names[i]!]!;
      res[o] = { ...t, shape: [...x.shape.slice(0, -1), ...t.shape.slice(range.axis + 1)] };
    });
    return res;
  }

  /**
   * Computes the reads of tail outputs (`logits`: the instrumented model stops at the tail's
   * input, src/fast/tail.ts) that `roots` need, into `memo`. A read used only through
   * selections of leading axes (`logits[:, -1, :]`) gets each selection applied to the tail's
   * input first, the tail run on the selected positions only (the module is position-wise),
   * and the selection's dropped axes removed after; any other use gets the whole output.
   * Inputs of one shape (but the first axis) are concatenated along the first axis and run
   * in one session run, then split.
   */
  private async runTails(ir: Graph, plan: FastPlan, roots: readonly Value[], env: Env, memo: Map<Value, Tensor>): Promise<void> {
    const tail = this.ported.tail;
    if (!tail) return;
    interface Job { target: Value; output: number; x: Tensor; after: IndexItem[] | null }
    const jobs: Job[] = this.tailReads(ir, plan, roots, memo).map((r) => {
      const x = this.fetchedRows(r.binding, env);
      return { target: r.target, output: r.output, x: r.before ? indexTensor(x, r.before) : x, after: r.after };
    });
    if (!jobs.length) return;
    const mm = this.modules.model(tail.path);
    const groups = new Map<string, Job[]>();
    for (const j of jobs) {
      const k = `${j.x.dtype}|${j.x.shape.slice(1).join(',')}`;
      groups.set(k, [...(groups.get(k) ?? []), j]);
    }
    for (const js of groups.values()) {
      const rowsIn = js.map((j) => j.x.shape[0]!);
      const total = rowsIn.reduce((a, c) => a + c, 0);
      const inner = numel(js[0]!.x.shape.slice(1));
      let x = js[0]!.x;
      if (js.length > 1) {
        const data = new Float32Array(total * inner);
        let off = 0;
        for (const j of js) { data.set(castTo(j.x, 'float32').data as Float32Array, off); off += numel(j.x.shape); }
        x = { dtype: 'float32', shape: [total, ...x.shape.slice(1)], data };
      }
      const outputs = [...new Set(js.map((j) => j.output))];
      const fetch = outputs.map((o) => mm.outputs[o]!.name);
      let out: Record<string, Tensor>;
      try {
        out = await this.runner.runModule(tail.path, { [mm.inputs[0]!.name]: castTo(x, mm.inputs[0]!.sig!.dtype) }, fetch);
      } catch (e) {
        if (e instanceof NnsError && !this.runner.exclusive) throw new Fallback(`module ${tail.path}: ${e.message}`);
        throw e;
      }
      this.stats.moduleRuns++;
      let row = 0;
      for (const j of js) {
        const whole = out[mm.outputs[j.output]!.name]!;
        const n = j.x.shape[0]!;
        const part = js.length === 1 ? whole : indexTensor(whole, [{ kind: 'slice', start: row, stop: row + n }]);
        row += n;
        memo.set(j.target, j.after ? indexTensor(part, j.after) : part);
      }
    }
  }

  /**
   * The reads of tail outputs that `roots` need and `memo` does not hold yet, each as the
   * value to compute (`target`) from tail output `output` on the read's rows: a read used
   * only through selections of leading axes (`logits[:, -1, :]`) gives one job per
   * selection, `before` applied to the tail's input (keeping every axis) and `after`
   * dropping the indexed axes from the result; any other use gives the whole output.
   */
  private tailReads(ir: Graph, plan: FastPlan, roots: readonly Value[], memo: ReadonlyMap<Value, Tensor>): TailRead[] {
    const tail = this.ported.tail;
    if (!tail) return [];
    const wanted: Value[] = [];
    const seen = new Set<Value>();
    const stack = [...roots];
    while (stack.length) {
      const v = stack.pop()!;
      if (seen.has(v) || memo.has(v)) continue; // served already (an incremental sweep's changed rows)
      seen.add(v);
      if (plan.reads.get(v)?.tail) wanted.push(v);
      else stack.push(...v.producer.inputs);
    }
    if (!wanted.length) return [];
    const users = new Map<Value, Node[]>();
    for (const n of ir.nodes) for (const x of n.inputs) if (wanted.includes(x)) users.set(x, [...(users.get(x) ?? []), n]);
    const out: TailRead[] = [];
    for (const v of wanted) {
      const b = plan.reads.get(v)!;
      const us = (users.get(v) ?? []).filter((u) => !(u.results.length > 0 && u.results.every((r) => memo.has(r))));
      if (!us.length && users.get(v)?.length) continue;
      const sunk = us.length > 0 && us.every((u) => u.is('index') && sinkable((u.attrs as { items: IndexItem[] }).items, tail.rank))
        ? us.map((u) => ({ u, s: sinkable((u.attrs as { items: IndexItem[] }).items, tail.rank)! })) : null;
      if (sunk) for (const { u, s } of sunk) out.push({ target: u.results[0]!, output: b.tail!.output, binding: b, before: s.before, after: s.after });
      else out.push({ target: v, output: b.tail!.output, binding: b, before: null, after: null });
    }
    return out;
  }

  /**
   * The tail reads of a run served by the instrumented model's own copy of the tail
   * (src/fast/tail.ts `SelectedTail`): the range of positions covering every read's
   * selection, the fetch list with the range outputs (and the tail input only when another
   * read wants it), and `finish`, which puts each read's value into `memo` after the run.
   * Null when the model has no such copy, nothing reads the tail, or a selection is not a
   * forward range of positions (a step) or the positions' count is not known before the run.
   */
  private tailInModel(ir: Graph, plan: FastPlan, roots: readonly Value[], seqLen: number, rowCount: number): { fetch: string[]; range: { start: number; end: number }; finish(env: Env, memo: Map<Value, Tensor>): void } | null {
    const tail = this.ported.tail;
    const range = tail?.range;
    if (!tail || !range) return null;
    const reads = this.tailReads(ir, plan, roots, new Map());
    if (!reads.length) return null;
    const sig = this.mc.tree.modules.get(tail.path)?.inputs[0]?.sig?.shape;
    const dim = sig?.[range.axis];
    const L = dim === 'sequence' ? seqLen : typeof dim === 'number' ? dim : undefined;
    if (L === undefined) return null;
    // With extra rows, the range's outputs come flattened to [1, …, rows, …]: their leading dims, to put back.
    const lead = sig!.slice(0, range.axis).map((d) => (d === 'batch' ? rowCount : typeof d === 'number' ? d : undefined));
    if (range.extra && lead.some((d) => d === undefined)) return null;
    // Each read's positions along the range axis, as [from, to).
    const spans: [number, number][] = [];
    for (const r of reads) {
      const item = r.before?.[range.axis];
      if (!item) { spans.push([0, L]); continue; }
      if (item.kind !== 'slice' || (item.step ?? 1) !== 1) return null;
      const at = (x: number | undefined, dflt: number): number => (x === undefined ? dflt : Math.min(L, Math.max(0, x < 0 ? x + L : x)));
      const from = at(item.start, 0), to = at(item.stop, L);
      spans.push([from, Math.max(from, to)]);
    }
    const live = spans.filter(([a, b]) => b > a);
    const start = live.length ? Math.min(...live.map(([a]) => a)) : 0;
    const end = live.length ? Math.max(...live.map(([, b]) => b)) : 0;
    const outputs = [...new Set(reads.map((r) => r.binding.tail!.name))].map((o) => range.outputs.get(o)!);
    const tailInputRead = [...plan.reads.values()].some((b) => !b.tail && b.fetch === tail.fetch);
    const fetch = [...plan.mainFetch.filter((f) => f !== tail.fetch || tailInputRead), ...outputs];
    return {
      fetch, range: { start, end },
      finish: (env, memo) => {
        if (range.extra) {
          for (const o of outputs) {
            const t = env.out[o]!;
            env.out[o] = { ...t, shape: [...(lead as number[]), end - start, ...t.shape.slice(range.axis + 1)] };
          }
        }
        reads.forEach((r, i) => {
          const x = this.fetchedRows({ ...r.binding, fetch: range.outputs.get(r.binding.tail!.name)! }, env);
          if (!r.before) {
            memo.set(r.target, x); // the whole axis: start 0, end L
            return;
          }
          const [from, to] = spans[i]!;
          const before = r.before.map((it, a) => (a === range.axis ? { kind: 'slice', start: from - start, stop: to - start } as IndexItem : it));
          memo.set(r.target, indexTensor(indexTensor(x, before), r.after!));
        });
      },
    };
  }

  /** The fetched outputs a run may put together from their fed input and new part ({@link FastExecutorOptions.appendOf}). */
  private appendedReads(fetch: readonly string[], given: Readonly<Record<string, Tensor>>): { output: string; input: string; part: string; axis: number }[] {
    const out: { output: string; input: string; part: string; axis: number }[] = [];
    for (const f of fetch) {
      const a = this.ported.appended.get(f);
      const x = a && given[a.input];
      if (a && x && x.dtype === 'float32' && x.shape.length > a.axis && !fetch.includes(a.part)) out.push({ output: f, ...a });
    }
    return out;
  }

  /** The rows of a read from a run's fetched outputs. */
  private fetchedRows(b: ReadBinding, env: Env): Tensor {
    const whole = env.out[b.fetch];
    const at = env.rows.indexOf(b.rowStart);
    if (!whole || at < 0) throw new Error(`internal: ${b.fetch} rows ${b.rowStart}..${b.rowEnd} were not fetched`);
    const n = b.rowEnd - b.rowStart;
    return at === 0 && n === whole.shape[0] ? whole : indexTensor(whole, [{ kind: 'slice', start: at, stop: at + n }]);
  }

  /** A value on the host, from fetched outputs, literals and host values (inputs first, without recursion: chains may be long). */
  private evaluate(v: Value, plan: FastPlan, host: ReadonlyMap<string, Tensor>, env: Env, memo: Map<Value, Tensor>): Tensor {
    const stack: [Value, boolean][] = [[v, false]];
    while (stack.length > 0) {
      const [u, ready] = stack.pop()!;
      if (memo.has(u)) continue;
      const p = u.producer;
      const computed = !plan.reads.get(u) && !p.is('const') && !p.is('call_module') && !p.is('host');
      if (computed && !ready) {
        stack.push([u, true]);
        for (const x of p.inputs) if (!memo.has(x)) stack.push([x, false]);
        continue;
      }
      memo.set(u, this.evaluateOne(u, plan, host, env, memo));
    }
    return memo.get(v)!;
  }

  /** One value whose inputs are already in `memo`. */
  private evaluateOne(v: Value, plan: FastPlan, host: ReadonlyMap<string, Tensor>, env: Env, memo: Map<Value, Tensor>): Tensor {
    const p = v.producer;
    const b = plan.reads.get(v);
    let t: Tensor;
    if (b?.tail) {
      throw new Error(`internal: ${b.tail.path}'s output was not computed before its use`);
    } else if (b) {
      t = this.fetchedRows(b, env);
    } else if (p.is('const')) {
      t = tensorOf(p.attrs.dtype, p.attrs.shape, p.attrs.data);
    } else if (p.is('call_module')) {
      throw new Error(`internal: call_module ${p.attrs.path} was not evaluated before its use`);
    } else if (p.is('host')) {
      const h = host.get(p.attrs.name);
      if (!h) throw new Fallback(`no value was given for '${p.attrs.name}'`);
      t = h;
    } else {
      const xs = p.inputs.map((x) => memo.get(x)!);
      t = evalOp(p.op, p.attrs, xs, p.results[0]!.type?.dtype ?? xs[0]?.dtype ?? 'float32')[v.resultIndex]!;
    }
    return t;
  }

  private constant(value: number, rank: number): Tensor {
    const key = `${value}/${rank}`;
    let t = this.neutral.get(key);
    if (!t) this.neutral.set(key, (t = { dtype: 'float32', shape: Array(rank).fill(1), data: Float32Array.of(value) }));
    return t;
  }
}

/** The added key/value cache of a model without one (src/fast/added-cache.ts) as planner options, when there is one. */
function addedOf(segs: Segments): { added?: AddedCache } {
  const a = segs.added();
  return 'reject' in a ? {} : { added: a };
}
