/**
 * onnsight — NNsight's interventions, compiled into the model's ONNX graph.
 *
 * ```ts
 * import { LanguageModel, demoModelPath } from 'onnsight';
 * const model = await LanguageModel.load(demoModelPath()); // or your model folder / .onnx file
 * const { saves } = await model.trace('The Eiffel Tower is in the city of', (m) => {
 *   m.transformer.h[2].output.save('h2');
 *   m.transformer.h[3].mlp.output = 0;
 *   m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
 * });
 * ```
 * @module
 */
import { Builder } from '../ir/builder.js';
import type { Graph } from '../ir/ir.js';
import { NnsError } from './errors.js';
import { compileGraph, openModel, runGraph, type CompileOptions, type ModelContext } from './engine.js';
import { releaseCompiled, type CompiledRunOptions } from './compiled-run.js';
import type { LoadOptions } from './model/load.js';
import type { TextTokenizer } from './model/tokenizer.js';
import type { ModuleTree } from './model/types.js';
import type { ModelProto } from './onnx/proto.js';
import { exportModel, type ExportResult } from './model/export.js';
import type { Tensor } from './tensor.js';
import { callSite, moduleProxy, type ModelRef, type TraceContext, TensorProxy } from './trace.js';
import { generateWith, streamWith, type BatchStepFn, type GenerateCallOptions, type GeneratedToken, type GenerateResult, type StepFn } from './generate-api.js';

export { NnsError, NnsErrors, type Span, type ErrorKind } from './errors.js';
export type { JSONNumber, Tensor, TensorData, TensorJSON } from './tensor.js';
export { tensorToJSON, toJSONNumber } from './tensor.js';
export { TensorProxy, ops, type ModelRef, type ModuleRef, type ModuleBase, type TensorLike, type IndexSpec, type NestedArray } from './trace.js';
export type { ModuleTree, ModuleInfo, TensorSig, Dim, DType, BoundaryValue, ParamInfo } from './model/types.js';
export type { ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, AttributeProto, FunctionProto, OperatorSetIdProto, StringStringEntryProto, TypeProto, TensorShapeProto, DimensionProto, SparseTensorProto, Int64 } from './onnx/proto.js';
export type { CompileOptions, RunOptions, ModelContext, FastPath } from './engine.js';
export type { LoadOptions, LoadedModel } from './model/load.js';
export type { TextTokenizer } from './model/tokenizer.js';
export type { Graph, Value, Node, Scope, TensorType, IndexItem } from '../ir/ir.js';
export type { TraceContext } from './trace.js';
export type { GenerateCallOptions, GenerateResult, GeneratedToken, GenerationStep, GenerateTracer, StepFn, BatchStepFn, GeneratePrompt } from './generate-api.js';
export type { GenerateOptions, TokenEvent } from './generate/decode.js';
export { Mulberry32, chooseToken, argmax, type SamplingOptions } from './generate/sample.js';
export { TieredSessions } from '../backends/tiered.js';
export type { CompiledRunOptions } from './compiled-run.js';
export type { TieredOptions } from '../backends/tiered.js';
export type { ProgressEvent, ProgressCallback } from './progress.js';
export { decodeModel, encodeModel } from './onnx/serde.js';
export type { ExportResult } from './model/export.js';
export { demoModelPath } from './demo.js';

/** A prompt: text (tokenized with the model's tokenizer) or token ids. */
export type Prompt = string | readonly number[];

/** Inside a multi-prompt trace: add invokes; `model` refers to the whole batch. */
export interface Tracer {
  /** One prompt = one batch row; inside `fn`, module references mean this prompt's rows. */
  invoke(prompt: Prompt, fn: (m: ModelRef) => void): void;
  /** The whole batch (use after the invokes, e.g. to copy values between rows). */
  readonly model: ModelRef;
}

/** What a trace returns. */
export interface TraceResult {
  /** Saved values by save name. */
  readonly saves: Readonly<Record<string, Tensor>>;
}

/**
 * Options of a trace. From {@link CompiledRunOptions}: `cache`, `tiered`, `memoryBudget`
 * (bigger batches run in chunks) and `onProgress` (called after each chunk's compile and run).
 */
export interface TraceOptions extends CompiledRunOptions {
  /** `false` keeps identical read-only invokes as separate batch rows (default: merged). */
  dedup?: boolean;
  /** Called with the printed IR / graph after every pass. */
  printAfterEach?: (pass: string, text: string) => void;
  /** Run the IR verifier after every pass. */
  verifyEach?: boolean;
  /** `false` forces the compiled (spliced) path even when the fast path could run the trace. */
  fast?: boolean;
}

/** A language model loaded from a Hugging Face-style folder or an `.onnx` file. */
export class LanguageModel {
  /** @internal */ readonly mc: ModelContext;

  private constructor(mc: ModelContext) {
    this.mc = mc;
  }

  /**
   * Loads a model folder (`config.json`, `tokenizer.json`, `onnx/model.onnx`) or an `.onnx` file.
   * `fast: false` turns the zero-compile fast path off for this model (every trace is spliced and compiled).
   */
  static async load(path: string, opts: LoadOptions & { fast?: boolean } = {}): Promise<LanguageModel> {
    return new LanguageModel(await openModel(path, opts));
  }

  /** The model's module tree. */
  get modules(): ModuleTree {
    return this.mc.tree;
  }

  /** The tokenizer, when the model folder has one. */
  get tokenizer(): TextTokenizer | undefined {
    return this.mc.loaded.tokenizer;
  }

  /** The original model (weights external). */
  get proto(): ModelProto {
    return this.mc.loaded.proto;
  }

  /** Token ids of a prompt. */
  tokenize(prompt: Prompt): number[] {
    if (typeof prompt !== 'string') return [...prompt];
    if (!this.tokenizer) throw new NnsError('no-tokenizer', 'this model has no tokenizer.json: give token ids instead of text', { kind: 'usage', span: callSite() });
    return this.tokenizer.encode(prompt);
  }

  /** Builds the IR of a trace without running it. */
  build(prompt: Prompt, fn: (m: ModelRef) => void): { graph: Graph; ctx: TraceContext };
  build(fn: (tr: Tracer) => void): { graph: Graph; ctx: TraceContext };
  build(a: Prompt | ((tr: Tracer) => void), b?: (m: ModelRef) => void): { graph: Graph; ctx: TraceContext } {
    const builder = new Builder({ file: '<api>', tree: this.mc.tree });
    const ctx: TraceContext = { builder, tree: this.mc.tree, saved: new Map(), host: new Map() };
    const invoke = (prompt: Prompt, fn: (m: ModelRef) => void): void => {
      const tokens = this.tokenize(prompt);
      const scope = builder.addInvoke(tokens, callSite(), typeof prompt === 'string' ? prompt : undefined);
      const outer = builder.scope;
      builder.scope = scope;
      try {
        fn(moduleProxy(ctx, ''));
      } finally {
        builder.scope = outer;
      }
    };
    if (typeof a === 'function') {
      a({ invoke, get model() { return moduleProxy(ctx, ''); } });
    } else {
      if (!b) throw new NnsError('usage', 'trace(prompt, fn) needs a function', { kind: 'usage' });
      invoke(a, b);
    }
    const graph = builder.graph;
    graph.dimValues.sequence = Math.max(0, ...graph.scopes.slice(1).map((s) => s.tokens?.length ?? 0));
    return { graph, ctx };
  }

  /**
   * Runs one forward pass with interventions. With a prompt, `fn` receives the model;
   * without, it receives a {@link Tracer} to add several invokes (one batched pass).
   * Saved proxies get `.value`; the result holds every saved value by name.
   */
  async trace(prompt: Prompt, fn: (m: ModelRef) => void, opts?: TraceOptions): Promise<TraceResult>;
  async trace(fn: (tr: Tracer) => void, opts?: TraceOptions): Promise<TraceResult>;
  async trace(a: Prompt | ((tr: Tracer) => void), b?: ((m: ModelRef) => void) | TraceOptions, c?: TraceOptions): Promise<TraceResult> {
    const { graph, ctx } = typeof a === 'function' ? this.build(a) : this.build(a, b as (m: ModelRef) => void);
    const opts = (typeof a === 'function' ? b : c) as TraceOptions | undefined;
    const results = await runGraph(graph, this.mc, { ...opts, host: ctx.host });
    const saves: Record<string, Tensor> = {};
    for (const [name, t] of results) {
      saves[name] = t;
      const proxy: TensorProxy | undefined = ctx.saved.get(name);
      if (proxy) proxy.value = t;
    }
    return { saves };
  }

  /** Compiles a trace into one rewritten model (open it in Netron) without running it. */
  compile(prompt: Prompt, fn: (m: ModelRef) => void, opts?: CompileOptions): ModelProto;
  compile(fn: (tr: Tracer) => void, opts?: CompileOptions): ModelProto;
  compile(a: Prompt | ((tr: Tracer) => void), b?: ((m: ModelRef) => void) | CompileOptions, c?: CompileOptions): ModelProto {
    const { graph } = typeof a === 'function' ? this.build(a) : this.build(a, b as (m: ModelRef) => void);
    const opts = (typeof a === 'function' ? b : c) as CompileOptions | undefined;
    return compileGraph(graph, this.mc, opts).model;
  }

  /**
   * Generates `maxNewTokens` tokens with interventions at every step. The callback describes
   * one step and runs once per step: statements in it apply at every step,
   * `g.at(S, () => ...)` / `g.range(A, B, () => ...)` only at those steps, and saves come back
   * per step as `NAME.S` (`g.generator.output.save('tokens')`: the finished sequence). Step 0
   * covers the prompt; at step s ≥ 1 module values cover only the new position (with a
   * key/value cache as NNsight; without one, the model recomputes the sequence and the
   * same is emulated). Without a prompt, `fn` gets a tracer to add one invoke per prompt.
   *
   * ```ts
   * const r = await model.generate('The capital of France is', { maxNewTokens: 6, stopAtEos: false }, (m, g) => {
   *   m.transformer.h[2].output = m.transformer.h[2].output.add(v.mul(4));   // every step
   *   g.at(0, () => m.transformer.h[1].output.save('h'));                    // h.0
   *   m.output.logits.at(':', -1, ':').save('logits');                       // logits.0 .. logits.5
   * });
   * r.text[0]; r.ids[0]; r.saves['logits.3'];
   * ```
   */
  async generate(prompt: Prompt, opts: GenerateCallOptions, fn?: StepFn): Promise<GenerateResult>;
  async generate(opts: GenerateCallOptions, fn: BatchStepFn): Promise<GenerateResult>;
  async generate(a: Prompt | GenerateCallOptions, b?: GenerateCallOptions | BatchStepFn, c?: StepFn): Promise<GenerateResult> {
    const tokenize = (p: Prompt): number[] => this.tokenize(p);
    if (typeof a === 'string' || Array.isArray(a)) return generateWith(this.mc, tokenize, a as Prompt, b as GenerateCallOptions, c ?? (() => undefined));
    return generateWith(this.mc, tokenize, null, a as GenerateCallOptions, b as BatchStepFn);
  }

  /**
   * {@link generate} as an async iterator of tokens as they are chosen; `.result` resolves to
   * the whole result. `for await (const t of model.stream(p, { maxNewTokens: 20 })) process.stdout.write(t.text);`
   */
  stream(prompt: Prompt, opts: GenerateCallOptions, fn?: StepFn): AsyncIterable<GeneratedToken> & { result: Promise<GenerateResult> } {
    return streamWith((onToken) => this.generate(prompt, { ...opts, onToken: (t) => { opts.onToken?.(t); onToken(t); } }, fn));
  }

  /**
   * Writes a model (the result of {@link LanguageModel.compile}, or {@link LanguageModel.proto})
   * to `outPath` runnable: the graph goes to `outPath` (atomically) and the weights file it
   * references is placed beside it without copying (a hard link; a copy-on-write clone across
   * file systems). This is what `nns compile -o OUT.onnx` does; open the file in Netron or run
   * it with any ONNX Runtime.
   *
   * ```ts
   * const rewritten = model.compile('The Eiffel Tower is in the city of', (m) => { m.transformer.h[3].mlp.output = 0; });
   * model.save(rewritten, 'out/knockout.onnx'); // out/knockout.onnx + out/<weights file>
   * ```
   */
  save(proto: ModelProto, outPath: string): ExportResult {
    return exportModel(this.mc.loaded, proto, outPath);
  }

  /** Releases cached sessions. */
  async dispose(): Promise<void> {
    await releaseCompiled(this.mc);
    await this.mc.backend.release();
  }
}
