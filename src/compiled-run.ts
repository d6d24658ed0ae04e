/**
 * The compiled half of a run (after the IR pipeline and the executor stages): the
 * lift-constants and split-batch stages (passes/pipeline.ts `compiledStages`, printed like
 * every pass), then for each chunk look up its
 * structure in the compile cache — compiling, encoding and writing the variant only on a
 * miss — then run it on a tiered session and stitch the saves back together.
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import type { Graph } from '../ir/ir.js';
import { liftConstantsPass } from '../passes/lift-constants.js';
import { CUT_PREFIX, splitBatchPass, type Chunk } from '../passes/split-batch.js';
import type { CompileState, PassContext } from '../passes/pass.js';
import { runPasses } from '../passes/run.js';
import type { OrtSessionOptions } from '../backends/ort.js';
import { TieredSessions, type TieredOptions } from '../backends/tiered.js';
import { compileCacheOf, structuralKey, type CompiledEntry } from './compile-cache.js';
import { BIG_WEIGHTS, weightsBytes, type ModelContext } from './compile.js';
import { NnsError } from './errors.js';
import { buildFeeds } from './model/feeds.js';
import { writeVariant } from './model/load.js';
import { encodeModel } from './onnx/serde.js';
import { collectAfter, heapUsed } from './js-heap.js';
import type { ProgressCallback } from './progress.js';
import { selectRows, type Tensor } from './tensor.js';

/**
 * Options of the compiled path (part of `RunOptions` and `TraceOptions`).
 * @category Tracing
 */
export interface CompiledRunOptions {
  /** Use the structural compile cache (default true; `ONNSIGHT_COMPILE_CACHE=0` turns it off). */
  cache?: boolean;
  /** Session tiers: `false` runs every graph on a fast session only (default: on; `ONNSIGHT_TIERED=0` turns it off). */
  tiered?: boolean | TieredOptions;
  /**
   * Activation memory budget of one run, bytes (default {@link chunkBudget}: from the model's
   * weights and the machine's memory, at least 512 MiB for models up to 256 MiB of weights, a
   * quarter of the weights above; or `ONNSIGHT_BATCH_BUDGET_MB`);
   * bigger batches are split. Measured on GPT-2-small, T=128, a 97-row patching sweep:
   * 128 MiB → 48 chunks 44.5 s; 256 → 16 chunks 26.1 s; 512 → 7 chunks 22.7 s;
   * 1024 → 4 chunks 24.8 s; 2048 → 2 chunks 32.7 s (max RSS 2.8 GB vs 1.27 GB at 512).
   */
  memoryBudget?: number;
  /** Called after each compile and each run of a chunk. */
  onProgress?: ProgressCallback;
}

/** The fast path's planner-runner (src/fast/), as the compiled path uses it: the forward-only step of a gradient's row split. */
export interface FastRunner {
  tryRun(ir: Graph, host: ReadonlyMap<string, Tensor>, feeds?: Readonly<Record<string, Tensor>>, opts?: { spare?: boolean }): Promise<Map<string, Tensor> | null>;
}

const tiers = new WeakMap<ModelContext, TieredSessions>();

/** The session tiers of a model context (created on first use with `opts`). */
export function tieredOf(mc: ModelContext, opts: TieredOptions = {}): TieredSessions {
  let t = tiers.get(mc);
  // Big models keep one copy of their weights: no prepacked second tier (src/compile.ts weightsBytes).
  if (!t) tiers.set(mc, (t = new TieredSessions(mc.backend, { promoteAfter: weightsBytes(mc.loaded) > BIG_WEIGHTS ? 0 : undefined, ...opts })));
  return t;
}

/** Releases the tiered sessions (and worker) of a model context. */
export async function releaseCompiled(mc: ModelContext): Promise<void> {
  await tiers.get(mc)?.release();
  tiers.delete(mc);
}

/**
 * Rough bytes of activations one batch row needs at `seqLen` tokens: the graph outputs
 * (logits dominate: vocab × seqLen; only `withModelOutputs`, i.e. when they are computed
 * whole, or those of its names it accepts), ~16 hidden-state-sized buffers live at once,
 * the attention scores, and `savesPerRow` saved hidden states (4-byte elements).
 */
export function rowBytes(mc: ModelContext, seqLen: number, savesPerRow = 0, withModelOutputs: boolean | ((name: string) => boolean) = true): number {
  const dimSize = (d: number | string): number => (d === 'batch' ? 1 : typeof d === 'number' ? d : seqLen);
  let perRow = 0;
  for (const o of mc.tree.graphOutputs) {
    if (withModelOutputs === true || (typeof withModelOutputs === 'function' && withModelOutputs(o.name))) perRow += (o.sig?.shape ?? []).reduce<number>((a, d) => a * dimSize(d), 1);
  }
  const cfg = mc.loaded.config ?? {};
  const width = Number(cfg.n_embd ?? cfg.hidden_size ?? cfg.d_model ?? 1024);
  const heads = Number(cfg.n_head ?? cfg.num_attention_heads ?? 16);
  perRow += seqLen * width * (16 + savesPerRow) + heads * seqLen * seqLen;
  return 4 * perRow;
}

/** The smallest default budget of one run: 512 MiB (see {@link batchBudget}). */
export const MIN_BATCH_BUDGET = 2 ** 29;

const budgets = new WeakMap<ModelContext, number>();

/**
 * The activation memory budget of one run, bytes. `ONNSIGHT_BATCH_BUDGET_MB` when set;
 * otherwise derived from the model and the machine: a quarter of the model's weights
 * (activations grow with the model's width and depth, and a run's activations beside one
 * copy of the weights should stay near 1.3× the weights), at least {@link MIN_BATCH_BUDGET}
 * (512 MiB: the best-measured chunk size on GPT-2 small), and at most a quarter of the
 * memory the machine has beside the weights (`os.totalmem()` − weights; the total, not the
 * momentary free memory, so the same model splits the same way on a given machine). Without
 * a model: 512 MiB, capped the same way by the machine.
 */
export function batchBudget(mc?: ModelContext): number {
  const env = Number(process.env.ONNSIGHT_BATCH_BUDGET_MB) * 2 ** 20;
  if (env > 0) return env;
  if (mc) {
    const b = budgets.get(mc);
    if (b !== undefined) return b;
  }
  const weights = mc ? weightsBytes(mc.loaded) : 0;
  const spare = Math.max(0, os.totalmem() - weights) / 4;
  const b = Math.max(2 ** 26, Math.min(Math.max(MIN_BATCH_BUDGET, weights / 4), spare));
  if (mc) budgets.set(mc, b);
  return b;
}


/**
 * The activation budget of one chunk on the compiled path, bytes: {@link batchBudget}, except
 * for models over {@link BIG_WEIGHTS} without `ONNSIGHT_BATCH_BUDGET_MB`, where it is a quarter
 * of the weights (at least 64 MiB) even below 512 MiB: a compiled chunk runs on an unprepacked
 * session that maps the whole weights file, and its activations come on top. Measured on
 * GPT-2 small (652 MB of weights, T = 128, the 97-row patching sweep forced through the
 * compiled path, load 4–12): peak PSS 1367 MB at 512 MiB, 1073–1113 MB at 155 MiB (a quarter), CPU
 * 47.7 s vs 46.1–48.5 s. The fast path's own limit (a batch over {@link batchBudget} goes to the compiled
 * path) is unchanged.
 */
export function chunkBudget(mc: ModelContext): number {
  const b = batchBudget(mc);
  const weights = weightsBytes(mc.loaded);
  if (Number(process.env.ONNSIGHT_BATCH_BUDGET_MB) > 0 || weights <= BIG_WEIGHTS) return b;
  return Math.min(b, Math.max(2 ** 26, weights / 4));
}

function envOff(name: string): boolean {
  return process.env[name] === '0';
}

/**
 * Run variants fetch the saves only (see {@link runEntry}), so they are compiled without the
 * model's own outputs: prune then drops what only those needed (e.g. the full logits).
 */
const RUN_VARIANT = { keepModelOutputs: false } as const;

/**
 * Runs `state.ir` (through the IR pipeline) through the compile cache and tiered sessions.
 * `lower` runs the ONNX half of the pipeline on an IR against a fresh copy of the model,
 * with the given variant settings.
 */
export async function runCompiled(
  state: CompileState, mc: ModelContext, hostValues: ReadonlyMap<string, Tensor>,
  opts: CompiledRunOptions & { uncached?: boolean; printAfterEach?: PassContext['printAfterEach']; verifyEach?: boolean; feeds?: Readonly<Record<string, Tensor>>; wholeOnly?: boolean; fastExecutor?: FastRunner }, lower: (ir: Graph, settings: typeof RUN_VARIANT) => CompileState,
): Promise<Map<string, Tensor>> {
  const ir = state.ir;
  const rows = ir.scopes.slice(1).map((s) => s.tokens ?? []);
  if (rows.length === 0) throw new NnsError('no-prompt', 'the trace has no prompt', { kind: 'usage' });
  const saveOrder = ir.nodes.filter((n) => n.is('save')).map((n) => (n.attrs as { name: string }).name);
  const host = new Map(hostValues);
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach };
  runPasses([liftConstantsPass], state, ctx, { verifyEach: opts.verifyEach });
  for (const [k, v] of state.lifted ?? []) host.set(k, v);
  const { feeds: full, seqLen } = opts.feeds ? givenFeeds(opts.feeds) : buildFeeds(mc.feedInputs, rows, { padId: 0 });
  const budget = opts.feeds ? Infinity : opts.memoryBudget ?? chunkBudget(mc);
  // Run variants compute the model's outputs only when a save needs them whole (fetch-saves, sink-slices).
  const wholeOutputs = ir.nodes.some((n) => n.is('save') && n.inputs[0]!.producer.op === 'model.output');
  state.maxRows = Math.max(1, Math.floor(budget / rowBytes(mc, seqLen, saveOrder.length / rows.length, wholeOutputs)));
  // A gradient's rows may run apart from the others (split-batch), unless the batch must run
  // whole: caller-given feeds (generation), or a graph compiled beforehand (`wholeOnly`).
  state.gradRows = !opts.feeds && !opts.wholeOnly;
  runPasses([splitBatchPass], state, ctx, { verifyEach: opts.verifyEach });
  const chunks: Chunk[] = state.chunks!;
  const useCache = opts.cache !== false && !opts.uncached && !envOff('ONNSIGHT_COMPILE_CACHE');
  const cache = compileCacheOf(mc);
  const tiered = opts.tiered !== false && !envOff('ONNSIGHT_TIERED') ? tieredOf(mc, typeof opts.tiered === 'object' ? opts.tiered : {}) : undefined;
  // A compiled variant is a copy of the whole model graph: its weights overlap every module model's (backends/ort.ts).
  const sessionOpts: OrtSessionOptions = { whole: true, ...(mc.loaded.externalDataDir ? { externalDataDir: mc.loaded.externalDataDir } : {}) };
  const totalRows = chunks.reduce((a, c) => a + c.ownRows, 0);
  let done = 0;
  let rowsDone = 0;
  const progress = (phase: 'compile' | 'run'): void => opts.onProgress?.({ phase, done: ++done, total: chunks.length * 2, rowsDone, rows: totalRows });
  const results = new Map<string, Tensor>();
  // A gradient's graph to compile releases (exclusive backends) the idle sessions its session
  // will, before anything else of this run allocates: the other rows' forward step, then the
  // compile's garbage (GPT-2 small: an idle prepacked copy of the weights, or the last
  // gradient graph's arena, beside both).
  const gradOpts: OrtSessionOptions = { ...sessionOpts, arena: true, memPattern: false };
  const keys = new Map<Chunk, string>();
  const keyOf = (c: Chunk): string => keys.get(c) ?? keys.set(c, structuralKey(c.ir, RUN_VARIANT)).get(c)!;
  const backwardOf = (c: Chunk): boolean => c.ir.nodes.some((n) => n.is('grad'));
  if (chunks.some((c) => backwardOf(c) && !(useCache && cache.has(keyOf(c))))) await mc.backend.makeRoom(gradOpts);
  // A chunk's session holds an arena sized for its batch; chunk graphs are rarely reused.
  // (The two steps of a gradient's row split are reused like any graph: kept.)
  const releaseAfter = chunks.filter((c) => c.gradStep !== 'forward').length > 1;
  for (const chunk of chunks) {
    if (chunk.gradStep === 'forward' && opts.fastExecutor) {
      // The rows no gradient needs, forward only: on the instrumented model when it can (its
      // session is built already; a second compiled graph would compete for the prepacked tier).
      const feeds: Record<string, Tensor> = {};
      for (const [k, t] of Object.entries(full)) feeds[k] = selectRows(t, chunk.rows);
      // Unprepacked unless the prepacked session is open (exclusive backends): the gradient's
      // session releases a prepacked one right after (GPT-2 small: one built for these rows
      // peaked at 768 MB in attribution's first run, against ~620 for the rest).
      const out = await opts.fastExecutor.tryRun(chunk.ir, host, feeds, { spare: true });
      if (out) {
        for (const [name, t] of out) {
          results.set(name, t);
          if (name.startsWith(CUT_PREFIX)) host.set(name, t);
        }
        progress('compile');
        rowsDone += chunk.ownRows;
        progress('run');
        continue;
      }
    }
    const key = keyOf(chunk);
    let entry = useCache ? cache.get(key) : undefined;
    if (entry && !fs.existsSync(entry.graphPath)) entry = undefined; // the variant was deleted: compile again
    // A gradient's graph holds forward values until the backward reads them, so its runs hold
    // much at once. Measured on GPT-2 small's (T = 128, 6 runs): without the arena (the
    // big-model default, src/engine.ts) each run's tensors come from malloc, whose freed
    // blocks fragment the C heap (anon +200 MB at the run's peak); with the arena and
    // onnxruntime's memory patterns, the pattern's one block (planned after the first run)
    // comes on top of the arena's buffers from that first run (+257); the arena alone
    // reuses its buffers (+121), and keeps about as much after the run as malloc's heap did.
    //
    // A chunk of a batch split in several is released after its one run (below): its arena
    // lives for that run, reusing its buffers within it. Without it the run's blocks fragment
    // the C heap the same way: GPT-2 small's 97-row patching sweep forced through the compiled
    // path (7 chunks of ~14 rows, T = 128) peaked at 1026 MB PSS (anon 647 + the weights file
    // 379) without the arena, 775 MB (anon 272 + file 503) with it, the same results; CPU
    // 48.2 s vs 44.8 s (one run each, load ~9).
    const so = backwardOf(chunk) || releaseAfter ? gradOpts : sessionOpts;
    if (entry) entry.uses++;
    else {
      const heap = heapUsed();
      entry = compileEntry(chunk.ir, key, mc, lower);
      if (useCache) cache.set(entry);
      // What the compile allocated is garbage now: collected before the run when it is large.
      collectAfter(heap);
    }
    progress('compile');
    const feeds: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(full)) feeds[k] = chunks.length === 1 ? t : selectRows(t, chunk.rows);
    for (const [name, input] of entry.hostInputs) {
      const t = host.get(name);
      if (!t) throw new NnsError('missing-host-value', `no value was given for '${name}'`, { kind: 'usage' });
      feeds[input] = t;
    }
    const out = await runEntry(entry, mc, tiered, so, feeds);
    for (const [name, output] of entry.saved) {
      results.set(name, out[output]!);
      if (name.startsWith(CUT_PREFIX)) host.set(name, out[output]!); // fed to a later chunk
    }
    if (releaseAfter) await mc.backend.release(entry.graphPath);
    rowsDone += chunk.ownRows;
    progress('run');
  }
  return new Map(saveOrder.filter((n) => results.has(n)).map((n) => [n, results.get(n)!]));
}

/** Lowers a chunk's IR and writes its variant next to the weights (a compile cache miss). */
function compileEntry(ir: Graph, key: string, mc: ModelContext, lower: (ir: Graph, settings: typeof RUN_VARIANT) => CompileState): CompiledEntry {
  const st = lower(ir, RUN_VARIANT);
  const bytes = encodeModel(st.model);
  const file = crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 24);
  return { key, graphPath: writeVariant(mc.loaded, bytes, file), saved: new Map(st.saved), hostInputs: new Map(st.hostInputs ?? []), uses: 1 };
}

/** Feeds given by the caller (generation); the sequence length is `input_ids`' last dim. */
export function givenFeeds(given: Readonly<Record<string, Tensor>>): { feeds: Record<string, Tensor>; seqLen: number } {
  const ids = given.input_ids;
  return { feeds: { ...given }, seqLen: ids ? ids.shape[ids.shape.length - 1]! : 1 };
}

async function runEntry(entry: CompiledEntry, mc: ModelContext, tiered: TieredSessions | undefined, so: OrtSessionOptions, feeds: Record<string, Tensor>): Promise<Record<string, Tensor>> {
  const fetch = [...entry.saved.values()];
  if (fetch.length === 0) return {};
  if (tiered) return (await tiered.run(entry.graphPath, so, feeds, fetch)).outputs;
  const session = await mc.backend.session(entry.graphPath, so);
  return mc.backend.run(session, feeds, fetch);
}
