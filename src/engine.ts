/**
 * The engine: open a model (load, module tree, boundary types), compile an IR graph
 * through the pass pipeline into a rewritten model, and run it with onnxruntime-node.
 * Rewritten graphs are cached by content next to the model's weights; sessions are
 * cached by the backend.
 * @module
 */
import { NnsError, modelError } from './errors.js';
import { checkModel } from '../passes/check-model.js';
import type { Graph } from '../ir/ir.js';
import { executorStages, irPipeline } from '../passes/pipeline.js';
import { runPasses } from '../passes/run.js';
import type { PassContext } from '../passes/pass.js';
import { loadModel, type LoadedModel, type LoadOptions } from './model/load.js';
import { graphFeedInputs } from './model/feeds.js';
import { buildModuleTree } from './model/modules.js';
import { inferBoundaryTypes } from './model/shapes.js';
import { maxPositions, vocabTableSize } from './model/positions.js';
import { OrtBackend, oneLine } from '../backends/ort.js';
import { createOrtProbe } from '../backends/probe.js';
import { dedupInvokesPass } from '../passes/dedup-invokes.js';
import { runCompiled, type CompiledRunOptions } from './compiled-run.js';
import type { Tensor } from './tensor.js';
import type { ProgressCallback } from './progress.js';
import { FastExecutor } from './fast/execute.js';
import type { RunnerFactory } from './fast/runner.js';
import { fixMmapThreshold, trimNativeHeap } from '../backends/malloc-trim.js';
import { buffersUsed, collectBuffersAfter } from './js-heap.js';
import { BIG_WEIGHTS, compileGraph, continueCompile, weightsBytes, workingCopy, type CompileOptions, type ModelContext } from './compile.js';

export { compileGraph, batchRows, type CompileOptions, type ModelContext, type FastPath } from './compile.js';

/**
 * Opens a model folder or `.onnx` file for tracing. The zero-compile fast path (src/fast/)
 * is attached unless `fast: false` or the environment sets `ONNSIGHT_FAST=0`; its
 * instrumented model is built on first use. `runner` makes the fast path run elsewhere
 * (src/fast/oip-runner.ts); it is then the model's only path.
 */
export async function openModel(source: string, opts: LoadOptions & { backend?: OrtBackend; fast?: boolean; onProgress?: ProgressCallback; runner?: RunnerFactory } = {}): Promise<ModelContext> {
  const step = (done: number, what?: string): void => opts.onProgress?.({ phase: 'load', done, total: 4, rowsDone: 0, rows: 0, ...(what ? { what } : {}) });
  step(0, 'reading the model');
  const loaded = await loadModel(source, opts);
  step(1, 'checking the graph');
  const problems = checkModel(loaded.proto);
  if (problems.length) {
    throw modelError('invalid-model', `${source} is not a valid ONNX graph: ${problems[0]}`, problems.length > 1 ? [`and ${problems.length - 1} more problem(s)`] : []);
  }
  step(2, 'building the module tree');
  const tree = buildModuleTree(loaded.proto);
  step(3, 'inferring shapes');
  const buffers = buffersUsed();
  try {
    await inferBoundaryTypes(loaded.proto, tree, createOrtProbe(loaded.externalDataDir ?? loaded.dir));
  } catch (e) {
    if (e instanceof NnsError) throw e;
    const reason = oneLine(e);
    throw modelError('invalid-model', `onnxruntime cannot run ${source}: ${reason}`);
  }
  // The probe's fetched boundary values are garbage now (~40 MB on GPT-2 small): collected and
  // their pages given back before the model's first session is created, not at its peak.
  if (collectBuffersAfter(buffers)) trimNativeHeap();
  step(4);
  const mc: ModelContext = {
    loaded, tree, backend: opts.backend ?? defaultBackend(loaded), feedInputs: graphFeedInputs(loaded.proto),
    maxPositions: maxPositions(loaded.proto, loaded.config), vocabRows: vocabTableSize(loaded.proto),
  };
  if (opts.runner) mc.fast = new FastExecutor(mc, { runner: opts.runner }); // a remote fast path is the only path
  else if (opts.fast !== false && process.env.ONNSIGHT_FAST !== '0') mc.fast = new FastExecutor(mc);
  return mc;
}

/**
 * glibc's mmap threshold once a model over {@link MMAP_THRESHOLD_WEIGHTS} is open
 * ({@link fixMmapThreshold}): tensors of 4 MiB and more are mapped per allocation and unmapped
 * when freed, instead of piling up in glibc's heaps (such models' sessions run without
 * onnxruntime's arena). Measured on the 1.1 B Llama-shaped model (bench/README.md, "Memory"): one
 * run of the instrumented model at T = 1024 peaked 1.8–1.9 GB above the session's memory with
 * glibc's dynamic threshold, 0.35 GB with this one; CPU per trace at T = 128 and 1024 the same
 * within the noise (paired processes). Smaller models keep glibc's dynamic threshold: their
 * runs are short, so faulting in a mapped block's pages afresh each run is a visible share
 * (GPT-2 small's sweeps: +13 % CPU with a 1 MiB threshold), and their tensors are small.
 */
export const BIG_MMAP_THRESHOLD = 4 * 2 ** 20;
/** Weights above which {@link BIG_MMAP_THRESHOLD} is set: 1 GiB. */
export const MMAP_THRESHOLD_WEIGHTS = 2 ** 30;

/**
 * The session cache of a model opened without a backend of the caller's. Big models (weights
 * over {@link BIG_WEIGHTS}) keep one copy of their weights (`exclusive`) and run every session
 * without onnxruntime's arena: an arena keeps each session's buffers for its largest run until
 * the session is released, which at long sequences outweighs a share of the weights (GPT-2
 * small at T = 1024: peak PSS over plain, save-all and patch traces 1502 MB with arenas, 1123 MB
 * without; at T = 128 the CPU time of a trace was the same within the noise, bench/README.md).
 * Gradient graphs are the exception (src/compiled-run.ts): their runs hold the forward values
 * until the backward, and the arena reuses its buffers where malloc's heap fragmented.
 */
function defaultBackend(loaded: LoadedModel): OrtBackend {
  const bytes = weightsBytes(loaded);
  const big = bytes > BIG_WEIGHTS;
  if (bytes > MMAP_THRESHOLD_WEIGHTS) fixMmapThreshold(BIG_MMAP_THRESHOLD);
  return new OrtBackend({ maxSessions: sessionBound(loaded), exclusive: big, ...(big ? { defaults: { arena: false } } : {}) });
}

/**
 * How many unpinned sessions to keep open for a model. Every session maps the weights file
 * (RSS counts it once per session, though the pages are shared) and holds its own
 * activation arena; sessions without prepacking are cheap to recreate (~0.1 s for
 * GPT-2 small), so big models keep only 2, small ones 8. `ONNSIGHT_MAX_SESSIONS` overrides.
 */
export function sessionBound(loaded: LoadedModel): number {
  const env = Number(process.env.ONNSIGHT_MAX_SESSIONS);
  if (env >= 1) return env;
  return weightsBytes(loaded) > BIG_WEIGHTS ? 2 : 8;
}

/** A trace the fast path cannot run, on a model whose fast path runs remotely. */
function needsCompiler(where: string, why: string): NnsError {
  return new NnsError('oip-needs-compiler', `this trace needs the compiled path (${why}), but the model runs on ${where}, which serves only the instrumented model and the module models`, {
    kind: 'usage', notes: ['run it with a local model (without --oip / the oip executor), or change it so the fast path can run it (nns run --print-ir-after=plan-fast-path shows why not)'],
  });
}

/**
 * Options of {@link runGraph}.
 * @category Tracing
 */
export interface RunOptions extends CompileOptions, CompiledRunOptions {
  /** Values of `host` nodes by name. */
  host?: ReadonlyMap<string, Tensor>;
  /** Set `false` to always compile (never use the fast path). */
  fast?: boolean;
  /** Set `false` to keep identical read-only invokes as separate batch rows. */
  dedup?: boolean;
  /**
   * Graph feeds supplied by the caller, replacing those built from the invokes' tokens
   * (generation: input ids, attention mask, positions and the key/value cache). The batch
   * then runs whole: no invoke merging, no splitting into chunks.
   */
  feeds?: Readonly<Record<string, Tensor>>;
  /**
   * The IR already went through the IR pipeline (generation runs one prepared IR per step
   * structure); it is then run as it is.
   */
  prepared?: boolean;
}

/**
 * Compiles and runs `ir`; returns saved values by save name. The stages are the lists of
 * passes/pipeline.ts: the IR pipeline, the executor stages (dedup-invokes, plan-fast-path,
 * choose-executor), then the fast path's run, or the compiled path (src/compiled-run.ts:
 * lift-constants, split-batch, compile cache, the ONNX pipeline per chunk, tiered sessions).
 * Printing or verifying after each pass, or a custom pipeline, always compiles afresh.
 */
export async function runGraph(ir: Graph, mc: ModelContext, opts: RunOptions = {}): Promise<Map<string, Tensor>> {
  const host = opts.host ?? new Map<string, Tensor>();
  const remote = mc.fast?.exclusive;
  if (remote && (opts.pipeline || opts.fast === false)) throw needsCompiler(remote, opts.fast === false ? 'the fast path was turned off for this trace' : 'a custom pass pipeline compiles the trace');
  if (opts.pipeline) {
    const done = compileGraph(ir, mc, opts);
    return runCompiled(done, mc, host, { ...opts, uncached: true, memoryBudget: Infinity, wholeOnly: true }, () => done);
  }
  const state = opts.prepared ? { ir, model: workingCopy(mc.loaded.proto), saved: new Map<string, string>() } : compileGraph(ir, mc, { ...opts, pipeline: irPipeline });
  const fast = mc.fast && opts.fast !== false ? mc.fast : undefined;
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach, fast };
  // Given feeds (generation) fix the batch rows: identical invokes are not merged.
  runPasses(executorStages.filter((p) => p !== dedupInvokesPass || (opts.dedup !== false && !opts.feeds)), state, ctx, { verifyEach: opts.verifyEach });
  if (fast && state.executor?.kind === 'fast' && state.fastPlan && 'plan' in state.fastPlan) {
    const rows = state.ir.scopes.length - 1;
    opts.onProgress?.({ phase: 'run', done: 0, total: 1, rowsDone: 0, rows, what: 'instrumented model' });
    const out = await fast.run(state.ir, state.fastPlan.plan, host, opts.feeds);
    if (out) {
      opts.onProgress?.({ phase: 'run', done: 1, total: 1, rowsDone: rows, rows });
      return out;
    }
  }
  if (remote) {
    const why = fast?.lastReject ?? (state.fastPlan && 'reject' in state.fastPlan ? state.fastPlan.reject : undefined);
    throw needsCompiler(remote, why ?? 'the fast path cannot run it');
  }
  const uncached = !!(opts.printAfterEach || opts.verifyEach);
  return runCompiled(state, mc, host, { ...opts, uncached, ...(fast ? { fastExecutor: fast } : {}) }, (g, settings) => continueCompile({ ir: g, model: workingCopy(mc.loaded.proto), saved: new Map(), ...settings }, mc, opts));
}
