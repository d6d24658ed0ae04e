/**
 * What the engine layer shares: a model ready for tracing ({@link ModelContext}), the
 * fast-path interface, and compiling an IR graph through the pass pipeline. The engine
 * (src/engine.ts), the compiled path (src/compiled-run.ts) and the fast path (src/fast/)
 * build on it; it imports none of them.
 * @module
 */
import { NnsError, NnsErrors } from './errors.js';
import type { Graph } from '../ir/ir.js';
import type { CompileState, FastPlanner, Pass, PassContext } from '../passes/pass.js';
import { defaultPipeline, onnxPipeline } from '../passes/pipeline.js';
import { runPasses } from '../passes/run.js';
import { tensorDataBytes, type ModelProto } from './onnx/proto.js';
import type { LoadedModel } from './model/load.js';
import type { FeedInput } from './model/feeds.js';
import type { ModuleTree } from './model/types.js';
import type { OrtBackend } from '../backends/ort.js';
import type { Tensor } from './tensor.js';

/**
 * The zero-compile fast path: runs a trace on the instrumented (ported) model when the
 * trace can be expressed as port feeds and fetches. `plan` is the plan-fast-path stage's
 * planner (passes/choose-executor.ts); `run` runs a plan.
 */
export interface FastPath extends FastPlanner {
  /** The instrumented model's graph file, once it has been built. */
  readonly builtGraphPath?: string | undefined;
  /**
   * Set when the fast path's models run remotely (an Open Inference Protocol server): where.
   * A trace the fast path cannot run then fails (`oip-needs-compiler`) instead of compiling.
   */
  readonly exclusive?: string | undefined;
  /** Why the last trace was handed to the compiler. */
  readonly lastReject?: string | undefined;
  /** Runs a plan made by `plan` for `ir`; null when it turns out to need the compiler. */
  run(ir: Graph, plan: unknown, host: ReadonlyMap<string, Tensor>, feeds?: Readonly<Record<string, Tensor>>): Promise<Map<string, Tensor> | null>;
  /** Plans and runs `ir` (already through the IR pipeline); null when it needs the compiler. `feeds` (generation) replace the feeds built from the invokes' tokens. */
  tryRun(ir: Graph, host: ReadonlyMap<string, Tensor>, feeds?: Readonly<Record<string, Tensor>>): Promise<Map<string, Tensor> | null>;
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
  /**
   * The longest prompt the model accepts (its learned positions, from `config.json` or the
   * position-embedding table); undefined when unknown.
   */
  readonly maxPositions?: number;
  /** Rows of the token-embedding table: token ids must be below it; undefined when unknown. */
  readonly vocabRows?: number;
}

/**
 * Options of `LanguageModel.compile` (`compileGraph`).
 * @category Tracing
 */
export interface CompileOptions {
  /** Called with the printed state after every pass (`--print-ir-after-all`). */
  printAfterEach?: (pass: string, text: string) => void;
  /** Run the IR verifier after every pass (tests). */
  verifyEach?: boolean;
  /** The passes to run (default: the whole pipeline). @internal */
  pipeline?: readonly Pass[];
  /**
   * Keep the model's own graph outputs (default true). The compiled run path compiles with
   * false: only the saves are outputs, so nothing only the model's outputs needed is computed.
   */
  keepModelOutputs?: boolean;
  /** Lower for this trace's sizes only (`nns compile`; see `CompileState.specialize`). */
  specialize?: boolean;
  /** Fold each statement into an ONNX local function call (`nns compile` without `--flat`). */
  functions?: boolean;
  /** The script text (statement source lines in doc strings). */
  sourceText?: string;
}

/** A copy of the model proto whose graph can be rewritten without touching the original. */
export function workingCopy(proto: ModelProto): ModelProto {
  const g = proto.graph!;
  return { ...proto, graph: { ...g, node: [...(g.node ?? [])], input: [...(g.input ?? [])], output: [...(g.output ?? [])], initializer: [...(g.initializer ?? [])] } };
}

/** The folder the model's external data is relative to (as the backend resolves it: src/model/load.ts). */
export function weightsDirOf(mc: Pick<ModelContext, 'loaded'>): string {
  return mc.loaded.externalDataDir ?? mc.loaded.dir;
}

/**
 * Runs the pipeline on `ir` against the model. Throws {@link NnsErrors} carrying every
 * user error found (later passes are skipped once a pass reports errors).
 */
export function compileGraph(ir: Graph, mc: ModelContext, opts: CompileOptions = {}): CompileState {
  checkPrompts(ir, mc);
  const state: CompileState = { ir, model: workingCopy(mc.loaded.proto), saved: new Map(), keepModelOutputs: opts.keepModelOutputs, ...(opts.specialize ? { specialize: true } : {}), ...(opts.functions ? { functions: true } : {}) };
  const text = opts.sourceText;
  if (text !== undefined) {
    state.sourceText = (p) => {
      const st = p.stmt ?? p.span;
      return st ? text.slice(st.offset, st.endOffset).split('\n')[0]!.trim() : undefined;
    };
  }
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach, weightsDir: weightsDirOf(mc), ...(mc.fast ? { fast: mc.fast } : {}) };
  const { ok } = runPasses([...(opts.pipeline ?? defaultPipeline)], state, ctx, { verifyEach: opts.verifyEach });
  if (!ok || ctx.errors.length) throw new NnsErrors(ctx.errors);
  return state;
}

/**
 * Refuses prompts the model cannot take, one located error per invoke, before anything
 * runs (onnxruntime would fail inside an embedding's `Gather`): longer than the model's
 * positions, or with a token id outside its embedding table.
 * @throws NnsErrors `prompt-too-long`, `bad-token-id`
 */
export function checkPrompts(ir: Graph, mc: Pick<ModelContext, 'maxPositions' | 'vocabRows'>): void {
  const limit = mc.maxPositions;
  const vocab = mc.vocabRows;
  const errors: NnsError[] = [];
  for (const s of ir.scopes.slice(1)) {
    const tokens = s.tokens ?? [];
    if (limit !== undefined && tokens.length > limit) {
      const over = tokens.length - limit;
      errors.push(new NnsError('prompt-too-long', `the prompt has ${tokens.length} tokens; the model takes at most ${limit} positions`, {
        span: s.span, notes: [`shorten the prompt by ${over} token${over === 1 ? '' : 's'}`],
      }));
    }
    const bad = vocab === undefined ? undefined : tokens.find((t) => t >= vocab);
    if (bad !== undefined) {
      errors.push(new NnsError('bad-token-id', `token id ${bad} is outside the model's vocabulary (0..${vocab! - 1}: the rows of its token-embedding table)`, { span: s.span }));
    }
  }
  if (errors.length) throw new NnsErrors(errors);
}

/** Runs the ONNX half of the pipeline on a state that went through {@link irPipeline}. */
export function continueCompile(state: CompileState, mc: ModelContext, opts: CompileOptions): CompileState {
  const ctx: PassContext = { tree: mc.tree, errors: [], printAfterEach: opts.printAfterEach, weightsDir: weightsDirOf(mc) };
  const { ok } = runPasses([...onnxPipeline], state, ctx, { verifyEach: opts.verifyEach });
  if (!ok || ctx.errors.length) throw new NnsErrors(ctx.errors);
  return state;
}


/**
 * Bytes of the model's weights (every initializer). Models above {@link BIG_WEIGHTS} keep
 * one copy of their weights in memory: the session cache is exclusive per weights group
 * (backends/ort.ts `exclusive`), and compiled graphs are not promoted to prepacked sessions.
 */
export function weightsBytes(loaded: LoadedModel): number {
  let bytes = 0;
  for (const t of loaded.proto.graph?.initializer ?? []) {
    bytes += tensorDataBytes(t);
  }
  return bytes;
}

/** Above this many bytes of weights a model is "big" (see {@link weightsBytes}): 256 MiB. */
export const BIG_WEIGHTS = 256 * 2 ** 20;

/** Batch rows of token ids, one per invoke scope (scope 0 alone when there are no invokes). */
export function batchRows(ir: Graph): number[][] {
  const rows = ir.scopes.slice(1).map((s) => s.tokens ?? []);
  if (rows.length === 0) throw new NnsError('no-prompt', 'the trace has no prompt', { kind: 'usage' });
  return rows;
}
