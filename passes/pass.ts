/**
 * The pass interface. A pass is a small named object whose `run` transforms the
 * compilation state in place and says whether it changed anything. The pipeline
 * (passes/pipeline.ts) is one ordered array of passes.
 *
 * The state has two halves: `ir`, the intervention program, and `model`, the ONNX model
 * being rewritten (present from the lowering pass on). Passes before lowering work on the
 * IR only; lowering splices the IR into `model`; later passes clean `model` up.
 * @module
 */
import type { NnsError, Span } from '../src/errors.js';
import type { Graph, Node, Value } from '../ir/ir.js';
import type { Provenance } from './onnx-emit.js';
import type { ModelProto, NodeProto } from '../src/onnx/proto.js';
import type { ModuleTree } from '../src/model/types.js';
import type { Tensor } from '../src/tensor.js';
import type { Chunk } from './split-batch.js';

/**
 * The fast path as the run stages see it (src/fast/ implements it): plan a trace as a
 * partition of the IR into port feeds, fetches and host work, printable; or say why not.
 */
export interface FastPlanner {
  /** Plans `ir` (after the IR pipeline and dedup). */
  plan(ir: Graph): { plan: unknown; text: string } | { reject: string };
}

/** What passes may read. */
export interface PassContext {
  /** The model's module tree (resolution, types, splicing). */
  tree: ModuleTree;
  /** Collected user errors; a pass that adds errors makes the pipeline stop after it. */
  errors: NnsError[];
  /** Print the state after every pass (`--print-ir-after-all`). */
  printAfterEach?: (passName: string, text: string) => void;
  /** The fast path, when the run may use it (plan-fast-path); absent: always compile. */
  fast?: FastPlanner;
  /**
   * The folder the model's external data is relative to, for passes that read weights at
   * compile time (sink-slices' column rule); absent: such rewrites leave external weights alone.
   */
  weightsDir?: string;
}

/** What passes transform. */
export interface CompileState {
  /** The intervention program. */
  ir: Graph;
  /** The ONNX model being rewritten: a deep-enough copy of the original (weights stay external). */
  model: ModelProto;
  /** Graph outputs added for saves: save name → ONNX value name. */
  saved: Map<string, string>;
  /** Graph inputs added for host values: host name → ONNX input name (set by lowering). */
  hostInputs?: Map<string, string>;
  /** ONNX value name of every lowered IR value (set by lowering; used by save-outputs). */
  valueNames?: Map<Value, string>;
  /** Statement, kind and module of every IR node (set by lowering; later passes name and document their nodes by it). */
  provenance?: Map<Node, Provenance>;
  /** `Grad` placeholders (set by lowering; consumed by autodiff). */
  grads?: GradRequest[];
  /** Module applications to expand (set by lowering; consumed by apply-modules). */
  moduleCalls?: ModuleCall[];
  /**
   * Keep the model's own graph outputs (default true: `nns compile`, `LanguageModel.compile`).
   * The compiled run path sets it false: it fetches only the saves, so passes/fetch-saves.ts
   * drops the other outputs and prune removes what only they needed.
   */
  keepModelOutputs?: boolean;
  /**
   * Lower for this trace's sizes only (`nns compile`): sets whose rows and positions are known
   * become one ScatterND with a constant index tensor, shapes become constants. Off for
   * compiled runs, whose graphs are cached across prompt lengths.
   */
  specialize?: boolean;
  /** Fold each statement's inserted nodes into one ONNX local function call (`nns compile` without `--flat`; passes/functions.ts). */
  functions?: boolean;
  /** A statement's source text (function doc strings), when the script text is known. */
  sourceText?: (p: Provenance) => string | undefined;
  /** Values of the constants lift-constants turned into host inputs, by host name. */
  lifted?: Map<string, Tensor>;
  /** The fast-path plan (plan-fast-path), or why there is none. */
  fastPlan?: { plan: unknown; text: string } | { reject: string };
  /** The executor choose-executor picked, and why. */
  executor?: { kind: 'fast' | 'compiled'; reason: string };
  /** Most batch rows one run may have (split-batch; set by the compiled path from the memory budget). */
  maxRows?: number;
  /** The chunks split-batch cut the batch into (one chunk: no split). */
  chunks?: Chunk[];
  /**
   * Let split-batch run the rows a gradient does not need first, feeding their values to a
   * second run that differentiates only the gradient's rows (passes/split-batch.ts
   * `splitGradRows`; set by the compiled path when each chunk is lowered by itself).
   */
  gradRows?: boolean;
}

/** ONNX domain of the placeholder nodes that stand for module applications until apply-modules expands them. */
export const CALL_DOMAIN = 'ai.onnsight';

/**
 * One `grad(Y, X)`: a placeholder node `Grad` (domain {@link CALL_DOMAIN}) with inputs
 * `[Y, X]` (X's whole-batch value) whose output stands for dY/dX until the autodiff pass
 * replaces it.
 */
export interface GradRequest {
  placeholder: NodeProto;
  span?: Span;
}

/** One module application: a placeholder node and the module's nodes as they were at that point of the program. */
export interface ModuleCall {
  /** The `CallModule` placeholder in the graph; its outputs are the call's results. */
  placeholder: NodeProto;
  /** Module path. */
  path: string;
  /** The module's nodes with their inputs already mapped onto the call's arguments, and which outputs are results ('' = internal). */
  nodes: { node: NodeProto; inputs: string[]; outputs: string[] }[];
}

/** One pass. */
export interface Pass {
  /** Unique, kebab-case (`infer-types`). */
  readonly name: string;
  /** Transform `state` in place. */
  run(state: CompileState, ctx: PassContext): { changed: boolean };
  /** What `--print-ir-after-all` shows after this pass: the IR (default), the rewritten model, or its own text. */
  readonly prints?: 'ir' | 'model' | ((state: CompileState) => string);
}
