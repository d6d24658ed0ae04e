/**
 * The engine: open a model (load, module tree, boundary types), compile an IR graph
 * through the pass pipeline into a rewritten model, and run it with onnxruntime-node.
 * Rewritten graphs are cached by content next to the model's weights; sessions are
 * cached by the backend.
 * @module
 */
import crypto from 'node:crypto';
import ort from 'onnxruntime-node';
import { NnsError, NnsErrors } from './errors.js';
import type { Graph } from '../ir/ir.js';
import type { CompileState, Pass, PassContext } from '../passes/pass.js';
import { defaultPipeline, irPipeline, onnxPipeline } from '../passes/pipeline.js';
import { runPasses } from '../passes/run.js';
import { encodeModel } from './onnx/serde.js';
import type { ModelProto } from './onnx/proto.js';
import { loadModel, writeVariant, type LoadedModel, type LoadOptions } from './model/load.js';
import { buildFeeds, graphFeedInputs, type FeedInput } from './model/feeds.js';
import { buildModuleTree } from './model/modules.js';
import { inferBoundaryTypes, createOrtProbe } from './model/shapes.js';
import type { ModuleTree } from './model/types.js';
import { OrtBackend } from '../backends/ort.js';
import type { Tensor } from './tensor.js';

/**
 * The zero-compile fast path: runs a trace on the instrumented (ported) model when the
 * trace can be expressed as port feeds and fetches; returns `null` when it cannot.
 */
export interface FastPath {
  /** Try to run `ir` (already through the IR pipeline). */
  tryRun(ir: Graph, host: ReadonlyMap<string, Tensor>): Promise<Map<string, Tensor> | null>;
}

/** A model ready for tracing. */
export interface ModelContext {
  /** The fast path, when enabled for this model. */
  fast?: FastPath;
  /** Files and decoded graph. */
  readonly loaded: LoadedModel;
  /** Module tree with boundary types. */
  readonly tree: ModuleTree;
  /** Session cache. */
  readonly backend: OrtBackend;
  /** Inputs the graph needs fed. */
  readonly feedInputs: FeedInput[];
}

/** Opens a model folder or `.onnx` file for tracing. */
export async function openModel(source: string, opts: LoadOptions & { backend?: OrtBackend } = {}): Promise<ModelContext> {
  const loaded = await loadModel(source, opts);
  const tree = buildModuleTree(loaded.proto);
  await inferBoundaryTypes(loaded.proto, tree, createOrtProbe(loaded.externalDataDir ?? loaded.dir));
  return { loaded, tree, backend: opts.backend ?? new OrtBackend(), feedInputs: graphFeedInputs(loaded.proto) };
}

/** Options of {@link compileGraph}. */
export interface CompileOptions {
  /** Called with the printed state after every pass (`--print-ir-after-all`). */
  printAfterEach?: (pass: string, text: string) => void;
  /** Run the IR verifier after every pass (tests). */
  verifyEach?: boolean;
  /** The passes to run (default: the whole pipeline). */
  pipeline?: readonly Pass[];
}

/** A copy of the model proto whose graph can be rewritten without touching the original. */
function workingCopy(proto: ModelProto): ModelProto {
  const g = proto.graph!;
  return { ...proto, graph: { ...g, node: [...(g.node ?? [])], input: [...(g.input ?? [])], output: [...(g.output ?? [])], initializer: [...(g.initializer ?? [])] } };
}

/**
 * Runs the pipeline on `ir` against the model. Throws {@link NnsErrors} carrying every
 * user error found (later passes are skipped once a pass reports errors).
 */
export function compileGraph(ir: Graph, mc: ModelContext, opts: CompileOptions = {}): CompileState {
  const state: CompileState = { ir, model: workingCopy(mc.loaded.proto), saved: new Map() };
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach };
  const { ok } = runPasses([...(opts.pipeline ?? defaultPipeline)], state, ctx, { verifyEach: opts.verifyEach });
  if (!ok || ctx.errors.length) throw new NnsErrors(ctx.errors);
  return state;
}

/** Runs the ONNX half of the pipeline on a state that went through {@link irPipeline}. */
function continueCompile(state: CompileState, mc: ModelContext, opts: CompileOptions): CompileState {
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach };
  const { ok } = runPasses([...onnxPipeline], state, ctx, { verifyEach: opts.verifyEach });
  if (!ok || ctx.errors.length) throw new NnsErrors(ctx.errors);
  return state;
}

/** Host tensor → onnxruntime tensor. */
function toOrt(t: Tensor): ort.Tensor {
  return new ort.Tensor(t.dtype === 'float32' ? 'float32' : t.dtype === 'int64' ? 'int64' : t.dtype === 'int32' ? 'int32' : 'float64', t.data as Float32Array, [...t.shape]);
}

/** Batch rows of token ids, one per invoke scope (scope 0 alone when there are no invokes). */
export function batchRows(ir: Graph): number[][] {
  const rows = ir.scopes.slice(1).map((s) => s.tokens ?? []);
  if (rows.length === 0) throw new NnsError('no-prompt', 'the trace has no prompt', { kind: 'usage' });
  return rows;
}

/** Options of {@link runGraph}. */
export interface RunOptions extends CompileOptions {
  /** Values of `host` nodes by name. */
  host?: ReadonlyMap<string, Tensor>;
  /** Set `false` to always compile (never use the fast path). */
  fast?: boolean;
}

/** Compiles and runs `ir`; returns saved values by save name. */
export async function runGraph(ir: Graph, mc: ModelContext, opts: RunOptions = {}): Promise<Map<string, Tensor>> {
  let state: CompileState;
  if (mc.fast && !opts.pipeline && opts.fast !== false) {
    state = compileGraph(ir, mc, { ...opts, pipeline: irPipeline });
    const fast = await mc.fast.tryRun(state.ir, opts.host ?? new Map());
    if (fast) return fast;
    state = continueCompile(state, mc, opts);
  } else {
    state = compileGraph(ir, mc, opts);
  }
  const bytes = encodeModel(state.model);
  const key = crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 24);
  const graphPath = writeVariant(mc.loaded, state.model, key);
  const session = await mc.backend.session(graphPath);
  const { feeds } = buildFeeds(mc.feedInputs, batchRows(ir), { padId: 0 });
  const allFeeds: Record<string, ort.Tensor> = { ...feeds };
  for (const [name, input] of state.hostInputs ?? []) {
    const t = opts.host?.get(name);
    if (!t) throw new NnsError('missing-host-value', `no value was given for '${name}'`, { kind: 'usage' });
    allFeeds[input] = toOrt(t);
  }
  const fetch = [...state.saved.values()];
  const out = fetch.length ? await mc.backend.run(session, allFeeds, fetch) : {};
  const results = new Map<string, Tensor>();
  for (const [name, output] of state.saved) results.set(name, out[output]!);
  return results;
}
