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
import { moduleClasses, type ModuleClass } from './model/classes.js';
import { groupFamilies, type Family, type PromptInfo } from './report/families.js';
import { exportModel, type ExportResult } from './model/export.js';
import type { Tensor } from './tensor.js';
import { callSite, checkOpen, grad, moduleProxy, paramProxies, type ModelRef, type ParamProxies, type ParamValues, type TraceContext, TensorProxy } from './trace.js';
import { badTokenId, describeValue, vocabSizeOf } from './model/token-ids.js';
import { OipClient, type OipClientOptions } from './oip/client.js';
import { oipRunner } from './fast/oip-runner.js';
import { FastExecutor } from './fast/execute.js';
import { checkServingName, defaultServingName, type ServedModules } from './fast/serving.js';
import { exportServing, type ServingExportResult } from './fast/triton.js';
import { localTarget, type GenerationTarget } from './generate/decode.js';
import { generateWith, streamWith, type BatchStepFn, type GenerateCallOptions, type GeneratedToken, type GenerateResult, type StepFn } from './generate-api.js';

export { NnsError, NnsErrors, type Span, type ErrorKind } from './errors.js';
export { ERROR_CODES, type ErrorCode, type ErrorCodeTable, type ErrorCodeInfo, type ErrorPhase } from './error-codes.js';
export type { JSONNumber, Tensor, TensorData, TensorJSON } from './tensor.js';
export { tensorToJSON, toJSONNumber } from './tensor.js';
export { TensorProxy, ops, grad, type ParamValues, type ParamProxies, type ModelRef, type ModuleRef, type ModuleBase, type TensorLike, type IndexSpec, type NestedArray } from './trace.js';
export type { ModuleTree, ModuleInfo, TensorSig, Dim, DType, BoundaryValue, ParamInfo } from './model/types.js';
export type { ModelProto, GraphProto, NodeProto, TensorProto, ValueInfoProto, AttributeProto, FunctionProto, OperatorSetIdProto, StringStringEntryProto, TypeProto, TensorShapeProto, DimensionProto, SparseTensorProto, Int64 } from './onnx/proto.js';
export type { CompileOptions } from './engine.js';
export type { LoadOptions } from './model/load.js';
export type { TextTokenizer } from './model/tokenizer.js';
export type { GenerateCallOptions, GenerateResult, GeneratedToken, GenerationStep, GenerateTracer, StepFn, BatchStepFn, GeneratePrompt } from './generate-api.js';
export type { GenerateOptions, TokenEvent } from './generate/decode.js';
export { Mulberry32, chooseToken, argmax, type SamplingOptions } from './generate/sample.js';
export type { CompiledRunOptions } from './compiled-run.js';
export type { TieredOptions } from '../backends/tiered.js';
export type { ProgressEvent, ProgressCallback, ProgressMode, ProgressStream, ProgressReporterOptions } from './progress.js';
export { progressReporter } from './progress.js';
export { decodeModel, encodeModel } from './onnx/serde.js';
export type { ExportResult, WeightsPlacement } from './model/export.js';
export { demoModelPath } from './demo.js';
export { OipClient, type OipClientOptions, type OipClientStats } from './oip/client.js';
export type { OipModelMetadata, OipTensorMetadata } from './oip/protocol.js';
export type { ServingExportResult } from './fast/triton.js';
export type { ServedModules, ServedKind } from './fast/serving.js';
export { moduleClasses, type ModuleClass } from './model/classes.js';
export { groupFamilies, type Family, type PromptInfo, type FamilyJSON } from './report/families.js';
export type { ModuleTreeJSON, ModuleJSON, ValueJSON } from './model/format.js';

/**
 * Where a model's traces run: on a server that speaks the Open Inference Protocol v2
 * (NVIDIA Triton, KServe, `nns serve`) and serves the models `nns export-serving` writes.
 * Made by {@link oip}; given to {@link LanguageModel.load} as `executor`.
 * @category Serving
 */
export interface OipExecutor {
  readonly kind: 'oip';
  /** The client (its `stats` count the requests made). */
  readonly client: OipClient;
  /** The models' base name on the server. */
  readonly model: string;
  /** Tensors as JSON instead of binary. */
  readonly json: boolean;
}

/**
 * Runs a model's fast-path traces on an Open Inference Protocol v2 server: the instrumented
 * model `MODEL.ports` and the module models `MODEL.module.PATH` that `nns export-serving
 * --name MODEL` writes (and `nns serve` serves). The model is still opened locally, for
 * planning; every forward pass runs on the server. A trace the fast path cannot run fails
 * (`oip-needs-compiler`) rather than running locally.
 *
 * ```ts
 * const model = await LanguageModel.load('models/gpt2', { executor: oip('http://127.0.0.1:8000', 'gpt2') });
 * const { saves } = await model.trace('The Eiffel Tower is in the city of', (m) => {
 *   m.transformer.h[3].mlp.output = 0;
 *   m.output.logits.at(':', -1, ':').save('last');
 * });
 * ```
 * @param url the server (`http://host:8000`)
 * @param model the models' base name on the server
 * @param opts headers (e.g. an API key), `binary: false` for JSON tensors, `timeoutMs`
 * @category Serving
 */
export function oip(url: string, model: string, opts: OipClientOptions = {}): OipExecutor {
  return { kind: 'oip', client: new OipClient(url, opts), model: checkServingName(model), json: opts.binary === false };
}

/**
 * A prompt: text (tokenized with the model's tokenizer) or token ids.
 * @category Model
 */
export type Prompt = string | readonly number[];

/**
 * Inside a multi-prompt trace: add invokes; `model` refers to the whole batch.
 * @category Tracing
 */
export interface Tracer {
  /**
   * One prompt = one batch row; inside `fn`, module references mean this prompt's rows.
   *
   * ```ts
   * await model.trace((tr) => {
   *   tr.invoke('The Louvre is in the city of', (m) => { m.output.logits.at(':', -1, ':').save('louvre'); });
   *   tr.invoke([264, 758, 334], (m) => { m.output.logits.save('ids'); }); // token ids work too
   * });
   * ```
   */
  invoke(prompt: Prompt, fn: (m: ModelRef) => void): void;
  /** The whole batch (use after the invokes, e.g. to copy values between rows). */
  readonly model: ModelRef;
  /** `grad(y, x)` (see the exported {@link grad}): dy/dx, shaped like x. */
  grad(y: TensorProxy, x: TensorProxy): TensorProxy;
}

/**
 * What a trace returns.
 * @category Results
 */
export interface TraceResult {
  /** Saved values by save name. */
  readonly saves: Readonly<Record<string, Tensor>>;
  /**
   * Saves named `NAME.I`, `NAME.I.J` (made in loops) stacked into one tensor per family,
   * with index values (index names `i0`, `i1`, ...; `nns run` names them after the script's loop variables).
   *
   * ```ts
   * const { families } = await model.trace(sweep);
   * const paris = families.find((f) => f.name === 'paris')!; // shape [layers, positions, 1]
   * ```
   */
  readonly families: readonly Family[];
  /** The prompts of the trace: text, token ids and token strings, and how many rows used each. */
  readonly prompts: readonly PromptInfo[];
}

/**
 * Options of a trace. From {@link CompiledRunOptions}: `cache`, `tiered`, `memoryBudget`
 * (bigger batches run in chunks) and `onProgress` (called after each chunk's compile and run).
 * @category Tracing
 */
export interface TraceOptions<P extends ParamValues = ParamValues> extends CompiledRunOptions {
  /**
   * Host parameters: tensors by name, handed to the callback as proxies (its second
   * argument), usable like any value and differentiable with `grad(y, p.NAME)`. Traces that
   * differ only in these values (a gradient-descent loop) reuse one compiled graph.
   *
   * ```ts
   * const steer = { dtype: 'float32', shape: [768], data: new Float32Array(768) } as const;
   * await model.trace('The Eiffel Tower is in the city of', (m, p) => {
   *   m.transformer.h[2].output = m.transformer.h[2].output.add(p.steer);
   *   grad(m.output.logits.at(0, -1, 383), p.steer).save('g');
   * }, { params: { steer } });
   * ```
   */
  params?: P;
  /** `false` keeps identical read-only invokes as separate batch rows (default: merged). */
  dedup?: boolean;
  /** Called with the printed IR / graph after every pass. */
  printAfterEach?: (pass: string, text: string) => void;
  /** Run the IR verifier after every pass. */
  verifyEach?: boolean;
  /** `false` forces the compiled (spliced) path even when the fast path could run the trace. */
  fast?: boolean;
}

/**
 * Refuses a callback's result when it is a promise (an `async` callback): nothing runs
 * until the callback returns, so whatever it did after an `await` would be lost, and an
 * error it throws later would be an unhandled rejection. The promise's own failure is
 * absorbed here; the caller gets one clear error.
 */
function synchronous(result: unknown): void {
  if (result !== null && (typeof result === 'object' || typeof result === 'function') && typeof (result as { then?: unknown }).then === 'function') {
    (result as PromiseLike<unknown>).then(undefined, () => undefined);
    throw new NnsError('async-callback', 'trace callbacks must be synchronous (not async): the trace is built when the callback returns, so anything after an await would be lost; await model.trace(...) itself instead', { kind: 'usage', span: callSite() });
  }
}

/**
 * A language model loaded from a Hugging Face-style folder or an `.onnx` file.
 * @category Model
 */
export class LanguageModel {
  /** @internal */ readonly mc: ModelContext;
  private classMap?: ReadonlyMap<string, ModuleClass>;
  /** Set for a model served by `nns serve` ({@link LanguageModel.remote}): traces run there. */
  private readonly server?: { url: string; name: string; run(graph: Graph, host: ReadonlyMap<string, Tensor>, onProgress?: TraceOptions['onProgress']): Promise<Map<string, Tensor>>; target: GenerationTarget };

  private constructor(mc: ModelContext, server?: LanguageModel['server']) {
    this.mc = mc;
    this.server = server;
  }

  /**
   * A model served by `nns serve` at `url` under `name`. Traces are built here (with the
   * served model's module tree and tokenizer) and run on the server, sent as the IR's JSON
   * form; saved values come back bit for bit. `trace` (with invokes, params and `grad`),
   * `generate` and `stream` (each step's interventions sent as IR templates; the server runs
   * the same decode loop and streams the tokens back as it chooses them), `modules`,
   * `tokenizer` and `tokenize` work as on a loaded model; `compile`, `save`, `proto` and
   * `classes` need the model itself and throw `remote-unsupported`. Engine options of
   * `generate` (`run`) are not sent: the server compiles with its defaults. A refusal by the server (`unknown-model`, `unauthorized`,
   * `over-limit`) is an {@link NnsError} with that code.
   *
   * ```ts
   * const model = await LanguageModel.remote('http://127.0.0.1:8000', 'gpt2', { apiKey: process.env.NNS_API_KEY });
   * const { saves } = await model.trace('The Eiffel Tower is in the city of', (m) => { m.output.logits.save('logits'); });
   * ```
   */
  static async remote(url: string, name: string, opts: { apiKey?: string } = {}): Promise<LanguageModel> {
    const { RemoteClient } = await import('./remote/client.js');
    const { remoteTarget } = await import('./remote/generate.js');
    const client = new RemoteClient(url, opts);
    const m = await client.model(name);
    // Only what building a trace reads: the tree, config and tokenizer.
    const mc = { tree: m.tree, loaded: { source: `${url} (${name})`, config: m.config, tokenizer: m.tokenizer } } as unknown as ModelContext;
    return new LanguageModel(mc, { url, name, run: (graph, host, onProgress) => client.run(name, graph, host, onProgress), target: remoteTarget(client, name, m, { source: `${url} (${name})` }) });
  }

  /** Whether this model runs on a server ({@link LanguageModel.remote}). */
  get isRemote(): boolean {
    return this.server !== undefined;
  }

  private local(what: string): void {
    if (this.server) throw new NnsError('remote-unsupported', `${what} needs the model itself; '${this.server.name}' is served by ${this.server.url} (load it with LanguageModel.load to use ${what})`, { kind: 'usage', span: callSite() });
  }

  /**
   * Loads a model folder (`config.json`, `tokenizer.json`, `onnx/model.onnx`) or an `.onnx` file.
   * `fast: false` turns the zero-compile fast path off for this model (every trace is spliced and compiled).
   *
   * ```ts
   * const model = await LanguageModel.load(demoModelPath());           // the bundled demo model
   * const other = await LanguageModel.load('exports/gpt2/onnx/model.onnx');
   * const remote = await LanguageModel.load('models/gpt2', { executor: oip('http://127.0.0.1:8000', 'gpt2') });
   * ```
   * With `executor: oip(url, name)` ({@link oip}) every forward pass runs on that server.
   */
  static async load(path: string, opts: LoadOptions & { fast?: boolean; executor?: OipExecutor } = {}): Promise<LanguageModel> {
    const { executor, ...rest } = opts;
    if (executor && opts.fast === false) throw new NnsError('oip-unsupported', 'executor: oip(...) runs the fast path remotely; it cannot be combined with fast: false', { kind: 'usage', span: callSite() });
    return new LanguageModel(await openModel(path, executor ? { ...rest, runner: oipRunner({ client: executor.client, name: executor.model, json: executor.json }) } : rest));
  }

  /**
   * Writes the fast path's models as an NVIDIA Triton model repository (`nns export-serving`):
   * `NAME.ports` (the instrumented model), `NAME.module.PATH` (closed modules), and with
   * `plain: true` the model itself as `NAME`; one config.pbtxt per model, version folder `1/`,
   * and the weights once on disk (hard links). Atomic: on an error nothing is left.
   *
   * ```ts
   * const r = model.exportServing('serving', { name: 'gpt2' });
   * r.models.map((m) => m.name); // ['gpt2.ports', 'gpt2.module.transformer.ln_f', ...]
   * ```
   */
  exportServing(dir: string, opts: { name?: string; modules?: ServedModules; plain?: boolean } = {}): ServingExportResult {
    this.local('exportServing');
    const exec = this.mc.fast instanceof FastExecutor && !this.mc.fast.exclusive ? this.mc.fast : new FastExecutor(this.mc);
    return exportServing(exec, this.mc, dir, { name: checkServingName(opts.name ?? defaultServingName(this.mc.loaded.source)), ...(opts.modules ? { modules: opts.modules } : {}), ...(opts.plain ? { plain: true } : {}) });
  }

  /**
   * The model's module tree: every module by path, in the model's order, with its inputs,
   * outputs (with shapes) and parameters.
   *
   * ```ts
   * for (const [path, m] of model.modules.modules) console.log(path, m.outputs[0]?.sig?.shape);
   * ```
   */
  get modules(): ModuleTree {
    return this.mc.tree;
  }

  /**
   * Every module's class, by path: the export's class name, or one inferred from the
   * module's structure when the export recorded none (`inferred: true`).
   *
   * ```ts
   * model.classes.get('transformer.h.0.mlp'); // { name: 'MLP', inferred: true } (TorchScript export)
   * ```
   */
  get classes(): ReadonlyMap<string, ModuleClass> {
    this.local('classes');
    this.classMap ??= moduleClasses(this.mc.loaded.proto, this.mc.tree);
    return this.classMap;
  }

  /**
   * The tokenizer, when the model folder has one.
   *
   * ```ts
   * model.tokenizer?.tokenToString(383); // 'Paris' (leading-space marker stripped as the tokenizer does)
   * ```
   */
  get tokenizer(): TextTokenizer | undefined {
    return this.mc.loaded.tokenizer;
  }

  /**
   * The original model (weights external), as decoded ONNX.
   *
   * ```ts
   * model.proto.graph?.node?.length; // number of ONNX nodes
   * ```
   */
  get proto(): ModelProto {
    this.local('proto');
    return this.mc.loaded.proto;
  }

  /**
   * Token ids of a prompt. Token ids given directly must be whole numbers in the model's
   * vocabulary (as in `.nns` scripts); anything else is a `bad-prompt` error.
   *
   * ```ts
   * model.tokenize('The Eiffel Tower is in the city of'); // [264, 758, 334, 260, 268, 261, 271, 267]
   * ```
   */
  tokenize(prompt: Prompt): number[] {
    if (typeof prompt !== 'string') {
      if (!Array.isArray(prompt)) throw new NnsError('bad-prompt', `a prompt is a string or an array of token ids, got ${describeValue(prompt)}`, { kind: 'usage', span: callSite() });
      const ids = [...(prompt as readonly unknown[])];
      if (ids.length === 0) throw new NnsError('bad-prompt', 'the prompt is empty (it has no tokens)', { kind: 'usage', span: callSite() });
      const vocab = vocabSizeOf(this.mc.loaded.config);
      ids.forEach((id, i) => {
        const why = badTokenId(id, vocab);
        if (why) throw new NnsError('bad-prompt', `${why} (position ${i} of the prompt)`, { kind: 'usage', span: callSite() });
      });
      return ids as number[];
    }
    if (!this.tokenizer) throw new NnsError('no-tokenizer', 'this model has no tokenizer.json: give token ids instead of text', { kind: 'usage', span: callSite() });
    return this.tokenizer.encode(prompt);
  }

  /** Builds the IR of a trace without running it. @internal */
  build(prompt: Prompt, fn: (m: ModelRef, params: ParamProxies<ParamValues>) => void, params?: ParamValues): { graph: Graph; ctx: TraceContext };
  build(fn: (tr: Tracer, params: ParamProxies<ParamValues>) => void, params?: ParamValues): { graph: Graph; ctx: TraceContext };
  build(a: Prompt | ((tr: Tracer, params: ParamProxies<ParamValues>) => void), b?: ((m: ModelRef, params: ParamProxies<ParamValues>) => void) | ParamValues, c?: ParamValues): { graph: Graph; ctx: TraceContext } {
    const builder = new Builder({ file: '<api>', tree: this.mc.tree });
    const ctx: TraceContext = { builder, tree: this.mc.tree, saved: new Map(), host: new Map() };
    const p = paramProxies(ctx, typeof a === 'function' ? b as ParamValues | undefined : c);
    const invoke = (prompt: Prompt, fn: (m: ModelRef, params: ParamProxies<ParamValues>) => void): void => {
      checkOpen(ctx, 'invoke() was called');
      if (builder.scope !== 0) throw new NnsError('nested-invoke', 'an invoke cannot contain another invoke', { kind: 'usage', span: callSite() });
      if (typeof fn !== 'function') throw new NnsError('bad-argument', `invoke(prompt, fn) needs a function, got ${describeValue(fn)}`, { kind: 'usage', span: callSite() });
      const tokens = this.tokenize(prompt);
      const scope = builder.addInvoke(tokens, callSite(), typeof prompt === 'string' ? prompt : undefined);
      const outer = builder.scope;
      builder.scope = scope;
      try {
        synchronous(fn(moduleProxy(ctx, ''), p));
      } finally {
        builder.scope = outer;
      }
    };
    try {
      if (typeof a === 'function') {
        synchronous(a({ invoke, get model() { return moduleProxy(ctx, ''); }, grad }, p));
        if (builder.graph.scopes.length === 1) {
          throw new NnsError('no-prompt', 'this trace has no invoke: call tr.invoke(prompt, (m) => { ... }) at least once, or use trace(prompt, (m) => { ... })', { kind: 'usage', span: callSite() });
        }
      } else {
        if (typeof b !== 'function') throw new NnsError('bad-argument', `trace(prompt, fn) needs a function, got ${describeValue(b)}`, { kind: 'usage', span: callSite() });
        invoke(a, b as (m: ModelRef, params: ParamProxies<ParamValues>) => void);
      }
    } finally {
      ctx.closed = true;
    }
    const graph = builder.graph;
    graph.dimValues.sequence = Math.max(0, ...graph.scopes.slice(1).map((s) => s.tokens?.length ?? 0));
    return { graph, ctx };
  }

  /**
   * Runs one forward pass with interventions. With a prompt, `fn` receives the model;
   * without, it receives a {@link Tracer} to add several invokes (one batched pass).
   * Saved proxies get `.value`; the result holds every saved value by name.
   *
   * ```ts
   * const { saves } = await model.trace('The Eiffel Tower is in the city of', (m) => {
   *   m.transformer.h[3].mlp.output = 0;
   *   m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
   * });
   * ```
   */
  async trace<P extends ParamValues = ParamValues>(prompt: Prompt, fn: (m: ModelRef, params: ParamProxies<P>) => void, opts?: TraceOptions<P>): Promise<TraceResult>;
  /**
   * Several prompts in one batched pass: `tr.invoke(prompt, fn)` per prompt; values flow between invokes.
   *
   * ```ts
   * let hb: TensorProxy | undefined;
   * await model.trace((tr) => {
   *   tr.invoke('The Trevi Fountain is in the city of', (m) => { hb = m.transformer.h[3].output.at(':', -1, ':'); });
   *   tr.invoke('The Eiffel Tower is in the city of', (m) => {
   *     m.transformer.h[3].output.at(':', -1, ':').set(hb!);
   *     m.output.logits.at(':', -1, ':').save('patched');
   *   });
   * });
   * ```
   */
  async trace<P extends ParamValues = ParamValues>(fn: (tr: Tracer, params: ParamProxies<P>) => void, opts?: TraceOptions<P>): Promise<TraceResult>;
  async trace(a: Prompt | ((tr: Tracer, params: ParamProxies<ParamValues>) => void), b?: ((m: ModelRef, params: ParamProxies<ParamValues>) => void) | TraceOptions, c?: TraceOptions): Promise<TraceResult> {
    const opts = (typeof a === 'function' ? b : c) as TraceOptions | undefined;
    const { graph, ctx } = typeof a === 'function' ? this.build(a, opts?.params) : this.build(a, b as (m: ModelRef, params: ParamProxies<ParamValues>) => void, opts?.params);
    const results = this.server ? await this.server.run(graph, ctx.host, opts?.onProgress) : await runGraph(graph, this.mc, { ...opts, host: ctx.host });
    const saves: Record<string, Tensor> = {};
    for (const [name, t] of results) {
      saves[name] = t;
      const proxy: TensorProxy | undefined = ctx.saved.get(name);
      if (proxy) proxy.value = t;
    }
    const prompts: PromptInfo[] = [];
    const seen = new Map<string, PromptInfo>();
    const tok = this.tokenizer;
    for (const sc of graph.scopes.slice(1)) {
      const tokens = [...(sc.tokens ?? [])];
      const known = seen.get(tokens.join(','));
      if (known) { known.rows++; continue; }
      const info: PromptInfo = { ...(sc.prompt !== undefined ? { text: sc.prompt } : {}), tokens, ...(tok ? { tokenStrings: tokens.map((id) => tok.tokenToString(id)) } : {}), rows: 1 };
      seen.set(tokens.join(','), info);
      prompts.push(info);
    }
    return { saves, families: groupFamilies(saves), prompts };
  }

  /**
   * Compiles a trace into one rewritten model (open it in Netron) without running it;
   * {@link LanguageModel.save} writes it runnable.
   *
   * ```ts
   * const rewritten = model.compile('The Eiffel Tower is in the city of', (m) => { m.transformer.h[3].mlp.output = 0; });
   * model.save(rewritten, 'knockout.onnx');
   * ```
   */
  compile(prompt: Prompt, fn: (m: ModelRef) => void, opts?: CompileOptions): ModelProto;
  /**
   * Compiles a multi-prompt trace (one batch row per invoke).
   *
   * ```ts
   * const proto = model.compile((tr) => {
   *   tr.invoke('The Colosseum is in the city of', (m) => { m.output.logits.save('a'); });
   *   tr.invoke('The Louvre is in the city of', (m) => { m.output.logits.save('b'); });
   * });
   * ```
   */
  compile(fn: (tr: Tracer) => void, opts?: CompileOptions): ModelProto;
  compile(a: Prompt | ((tr: Tracer) => void), b?: ((m: ModelRef) => void) | CompileOptions, c?: CompileOptions): ModelProto {
    this.local('compile');
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
    if (this.mc.fast?.exclusive) throw new NnsError('oip-unsupported', `generation does not run on ${this.mc.fast.exclusive}: load the model without an executor to generate`, { kind: 'usage', span: callSite() });
    const target = this.server?.target ?? localTarget(this.mc);
    const tokenize = (p: Prompt): number[] => this.tokenize(p);
    if (typeof a === 'string' || Array.isArray(a)) return generateWith(target, tokenize, a as Prompt, b as GenerateCallOptions, c ?? (() => undefined));
    return generateWith(target, tokenize, null, a as GenerateCallOptions, b as BatchStepFn);
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
    this.local('save');
    return exportModel(this.mc.loaded, proto, outPath);
  }

  /**
   * Releases cached sessions (the model object is not usable afterwards).
   *
   * ```ts
   * await model.dispose();
   * ```
   */
  async dispose(): Promise<void> {
    if (this.server) return;
    await releaseCompiled(this.mc);
    await this.mc.backend.release();
  }
}
