/**
 * The TypeScript tracing API, in NNsight's spirit: inside `model.trace(prompt, (m) => ...)`
 * module references, arithmetic and assignments build intervention IR through the same
 * {@link Builder} the `.nns` language uses. Nothing runs until the callback returns; then
 * the trace is compiled into the model's graph and run, and every saved proxy gets its
 * `.value`.
 * @module
 */
import path from 'node:path';
import type { Span } from './errors.js';
import { NnsError } from './errors.js';
import type { Builder } from '../ir/builder.js';
import type { IndexItem, PureOp, OpAttrs, OpName, Value } from '../ir/ir.js';
import { FUNCTION_OPS, type NoAttrs } from '../ir/ops.js';
import type { DType, ModuleTree } from './model/types.js';
import { DTYPES } from '../ir/ir.js';
import { numel, type Tensor } from './tensor.js';
import { describeValue } from './model/token-ids.js';
import { opPath, resolveModulePath } from './model/modules.js';

/**
 * One index of `at(...)`: a number, `':'`, `'a:b'`, `'a:b:c'`, `'...'`, `null` (new axis) or a slice object.
 * @category Tracing
 */
export type IndexSpec = number | string | null | { start?: number; stop?: number; step?: number };

/**
 * Anything usable where a tensor is expected: a proxy, a number, nested number arrays, a Float32Array, or a host {@link Tensor} (e.g. a result of an earlier trace).
 * @category Tracing
 */
export type TensorLike = TensorProxy | number | NestedArray | Float32Array | Tensor;

/**
 * Nested arrays of numbers.
 * @category Tracing
 */
export type NestedArray = ReadonlyArray<number | NestedArray>;

/** Where a proxy's value lives in the model, when it can be assigned to. */
interface Target {
  path: string;
  port: 'output' | 'input';
  index: number;
  items: IndexItem[] | null;
}

/** The state shared by the proxies of one trace. */
export interface TraceContext {
  /** The IR builder. */
  readonly builder: Builder;
  /** The model's module tree (to tell parameters from submodules). */
  readonly tree: ModuleTree;
  /** Proxies that were saved, by save name. */
  readonly saved: Map<string, TensorProxy>;
  /** Host tensors fed to the trace (`host` values), by name. */
  readonly host: Map<string, Tensor>;
  /** Set when the trace's callback has returned: its proxies can no longer build IR. */
  closed?: boolean;
}

/** Throws when the trace of `ctx` has ended (a proxy kept and used after its trace). */
export function checkOpen(ctx: TraceContext, what: string): void {
  if (ctx.closed) {
    throw new NnsError('trace-ended', `${what} after its trace has ended: proxies only work inside the trace callback (after the trace, read a saved proxy's .value)`, { kind: 'usage', span: callSite() });
  }
}

const THIS_FILE = new URL(import.meta.url).pathname;

/**
 * The user's call site, as a span (the first stack frame outside onnsight's own files).
 * The stack is captured now but read only when a field of the span is: formatting a stack
 * (with source maps, under tsx) costs far more than capturing it, and most spans are never
 * read (a generation builds its steps' IR every step; a span matters only in an error).
 */
export function callSite(): Span {
  const capture = new Error();
  let s: Span | undefined;
  const r = (): Span => (s ??= spanOf(capture));
  return {
    get file() { return r().file; }, set file(v) { r().file = v; },
    get line() { return r().line; }, set line(v) { r().line = v; },
    get col() { return r().col; }, set col(v) { r().col = v; },
    get endLine() { return r().endLine; }, set endLine(v) { r().endLine = v; },
    get endCol() { return r().endCol; }, set endCol(v) { r().endCol = v; },
    get offset() { return r().offset; }, set offset(v) { r().offset = v; },
    get endOffset() { return r().endOffset; }, set endOffset(v) { r().endOffset = v; },
  };
}

/** Spans by the raw (unmapped) locations of a stack's frames: see {@link spanOf}. */
const SITES = new Map<string, Span>();
const SITES_MAX = 4096;

/**
 * The span of a captured stack. Formatting a stack maps every frame through its source map
 * (under tsx or `--enable-source-maps`), which costs far more than the capture; a remote
 * trace reads every span of its IR (to send them). So when Node's own formatter is in place,
 * the stack is first read as its raw call sites (cheap): the same raw frames format to the
 * same text, so the span found for them is remembered and formatting happens once per
 * distinct stack. The text formatted is Node's own for these call sites: the span is exactly
 * what reading `capture.stack` gives. Under any other formatter (a test runner's, a user's),
 * the stack is read as it is.
 */
function spanOf(capture: Error): Span {
  const format = Error.prepareStackTrace;
  if (format?.name !== 'ErrorPrepareStackTrace') return siteOf(capture.stack);
  let frames: unknown;
  Error.prepareStackTrace = (_e, cs) => cs;
  try {
    frames = capture.stack;
  } finally {
    Error.prepareStackTrace = format;
  }
  if (!Array.isArray(frames)) return siteOf(typeof frames === 'string' ? frames : undefined);
  const sites = frames as NodeJS.CallSite[];
  let key = '';
  for (const f of sites) key += `${f.getFileName()}:${f.getLineNumber()}:${f.getColumnNumber()}:${f.isNative()}:${f.isEval() ? f.getEvalOrigin() : ''}\n`;
  let span = SITES.get(key);
  if (!span) {
    const text: unknown = format(capture, sites);
    span = siteOf(typeof text === 'string' ? text : undefined);
    if (SITES.size >= SITES_MAX) SITES.clear();
    SITES.set(key, span);
  }
  return { ...span };
}

function siteOf(text: string | undefined): Span {
  const stack = text?.split('\n').slice(1) ?? [];
  const root = path.dirname(path.dirname(THIS_FILE));
  for (const line of stack) {
    const m = /\(?((?:file:\/\/)?[^()\s]+):(\d+):(\d+)\)?\s*$/.exec(line);
    if (!m) continue;
    const file = m[1]!.replace(/^file:\/\//, '');
    const inside = file.startsWith(path.join(root, 'src')) || file.startsWith(path.join(root, 'ir')) || file.includes('node_modules') || file.startsWith('node:');
    if (inside) continue;
    const l = Number(m[2]);
    const c = Number(m[3]);
    return { file: path.relative(process.cwd(), file) || file, line: l, col: c, endLine: l, endCol: c + 1, offset: 0, endOffset: 0 };
  }
  return { file: '<api>', line: 1, col: 1, endLine: 1, endCol: 2, offset: 0, endOffset: 0 };
}

/** Parses `at(...)` arguments into IR index items. */
export function parseIndex(specs: IndexSpec[]): IndexItem[] {
  return specs.map((s): IndexItem => {
    if (s === null) return { kind: 'newaxis' };
    if (typeof s === 'number') return { kind: 'index', index: s };
    if (typeof s === 'object') return { kind: 'slice', ...s };
    const t = s.replace(/\s+/g, '');
    if (t === '...') return { kind: 'ellipsis' };
    if (/^-?\d+$/.test(t)) return { kind: 'index', index: Number(t) };
    const m = /^(-?\d+)?:(-?\d+)?(?::(-?\d+)?)?$/.exec(t);
    if (!m) throw new NnsError('bad-index', `cannot read index '${s}' (use a number, ':', 'a:b', 'a:b:c', '...' or null)`, { span: callSite() });
    const item: IndexItem = { kind: 'slice' };
    if (m[1] !== undefined) item.start = Number(m[1]);
    if (m[2] !== undefined) item.stop = Number(m[2]);
    if (m[3] !== undefined) item.step = Number(m[3]);
    return item;
  });
}

/** `zeros_like` → `zerosLike`. */
type Camel<S extends string> = S extends `${infer A}_${infer B}` ? `${A}${Capitalize<Camel<B>>}` : S;

/** Ops without attributes that take one tensor: the elementwise functions (`exp`, `relu`, `zeros_like`, ...). */
type ElementwiseOp = Exclude<{ [K in OpName]: OpAttrs[K] extends NoAttrs ? K : never }[OpName], 'add' | 'sub' | 'mul' | 'div' | 'matmul' | 'neg'>;

/**
 * One method per elementwise function of the op catalogue (ir/ops.ts), camel-cased:
 * `x.exp()`, `x.log()`, `x.sqrt()`, `x.abs()`, `x.relu()`, `x.zerosLike()`, `x.onesLike()`
 * (each op's `doc` in the catalogue says what it computes).
 */
export type ElementwiseMethods = { readonly [K in ElementwiseOp as Camel<K>]: () => TensorProxy };

export interface TensorProxy extends ElementwiseMethods {}

/**
 * `grad(y, x)`: the gradient of the one-element value `y` with respect to `x` — a module
 * value (`m.transformer.h[2].output`, `.input`, `.outputs[i]`, an op value
 * `m.transformer.h[1].attn.op('Softmax').output`) or a parameter (`m.lm_head.weight`) of the
 * same trace; the result has `x`'s shape. The derivative is taken through the forward pass
 * as the trace modifies it; every `grad` of one `y` shares one backward pass (compiled into
 * the same graph as the forward pass).
 */
export function grad(y: TensorProxy, x: TensorProxy): TensorProxy {
  const span = callSite();
  checkOpen(y.ctx, 'grad was called');
  if (y.ctx !== x.ctx) throw new NnsError('foreign-value', 'grad(y, x): y and x belong to different traces', { span });
  if (!['module.output', 'module.input', 'param', 'host'].includes(x.ir.producer.op)) {
    throw new NnsError('bad-grad', 'grad(y, x): x must be a module value (.output, .input, .outputs[i], .inputs[i]), an op value (.op(TYPE).output), a parameter or a host value (a trace param, a Tensor)', { span });
  }
  return new TensorProxy(y.ctx, y.ctx.builder.op('grad', [y.ir, x.ir], {}, span));
}

/**
 * A value inside a trace: a module's output, a parameter, or anything computed from them.
 * @category Tracing
 */
export class TensorProxy {
  /** @internal */ readonly ctx: TraceContext;
  /** @internal */ readonly ir: Value;
  /** @internal */ readonly target: Target | null;
  /** The saved result, filled in after the trace runs (only for saved proxies). */
  value: Tensor | undefined;

  /** @internal */
  constructor(ctx: TraceContext, ir: Value, target: Target | null = null) {
    this.ctx = ctx;
    this.ir = ir;
    this.target = target;
  }

  private wrap(v: Value): TensorProxy {
    return new TensorProxy(this.ctx, v);
  }

  private live(what: string): void {
    checkOpen(this.ctx, what);
  }

  private lift(x: TensorLike, span: Span): Value {
    return toValue(this.ctx, x, span);
  }

  /** @internal */
  unary<K extends PureOp>(op: K, attrs: OpAttrs[K]): TensorProxy {
    this.live(`.${op}() was used`);
    return this.wrap(this.ctx.builder.op(op, [this.ir], attrs, callSite()));
  }

  private binary(op: 'add' | 'sub' | 'mul' | 'div' | 'matmul', other: TensorLike): TensorProxy {
    this.live(`.${op}() was used`);
    const span = callSite();
    return this.wrap(this.ctx.builder.op(op, [this.ir, this.lift(other, span)], {}, span));
  }

  /**
   * Send this value back; it appears in the results under `name` (default `save_N`) and in `.value`.
   *
   * ```ts
   * const { saves } = await model.trace('The Eiffel Tower is in', (m) => { m.transformer.h[2].output.save('h2'); });
   * saves.h2; // { dtype: 'float32', shape: [1, 6, 128], data }
   * ```
   */
  save(name?: string): this {
    this.live('.save() was called');
    if (name !== undefined && (typeof name !== 'string' || name === '')) {
      throw new NnsError('bad-argument', `a save name is a non-empty string, got ${describeValue(name)}`, { kind: 'usage', span: callSite() });
    }
    const n = name ?? `save_${this.ctx.saved.size}`;
    if (this.ctx.saved.has(n)) throw new NnsError('duplicate-save', `the name '${n}' is already saved in this trace`, { span: callSite() });
    this.ctx.builder.save(this.ir, n, callSite());
    this.ctx.saved.set(n, this);
    return this;
  }

  /**
   * Indexing and slicing, numpy style: `x.at(':', -1, ':')`, `x.at('...', '3:5')`.
   *
   * ```ts
   * m.output.logits.at(':', -1, ':').save('last');   // the last position
   * m.transformer.h[0].output.at(0, '2:4').save('two');
   * ```
   */
  at(...index: IndexSpec[]): TensorProxy {
    this.live('.at() was used');
    const items = parseIndex(index);
    const v = this.ctx.builder.index(this.ir, items, callSite());
    const target = this.target && this.target.items === null ? { ...this.target, items } : null;
    return new TensorProxy(this.ctx, v, target);
  }

  /**
   * Assign to this value in the model (only for module outputs/inputs and slices of them):
   * `m.transformer.h[3].output.at(':', -1).set(0)`.
   *
   * ```ts
   * m.transformer.h[3].output.at(':', -1, ':').set(hb); // patch in another invoke's value
   * m.transformer.h[1].mlp.output.at(':', 2).set(0);
   * ```
   */
  set(value: TensorLike): void {
    this.live('.set() was called');
    const span = callSite();
    if (!this.target) throw new NnsError('not-assignable', 'only a module output or input (or a slice of one) can be set', { span });
    const t = this.target;
    this.ctx.builder.set(t.path, t.port, t.index, t.items, this.lift(value, span), span);
  }

  /**
   * `this + other`, broadcasting.
   *
   * ```ts
   * m.transformer.h[2].output = m.transformer.h[2].output.add(steer.mul(4));   // steering: steer is a Float32Array or a saved value
   * ```
   */
  add(other: TensorLike): TensorProxy { return this.binary('add', other); }
  /**
   * `this - other`.
   *
   * ```ts
   * const diff = m.transformer.h[2].output.sub(m.transformer.h[1].output);
   * ```
   */
  sub(other: TensorLike): TensorProxy { return this.binary('sub', other); }
  /**
   * `this * other`.
   *
   * ```ts
   * m.transformer.h[2].output = m.transformer.h[2].output.mul(0.5);
   * ```
   */
  mul(other: TensorLike): TensorProxy { return this.binary('mul', other); }
  /**
   * `this / other`.
   *
   * ```ts
   * const unit = m.transformer.h[2].output.div(m.transformer.h[2].output.norm(-1, true));
   * ```
   */
  div(other: TensorLike): TensorProxy { return this.binary('div', other); }
  /**
   * Matrix product (`@`).
   *
   * ```ts
   * const scores = q.matmul(k.transpose(-1, -2));
   * ```
   */
  matmul(other: TensorLike): TensorProxy { return this.binary('matmul', other); }
  /**
   * `-this`.
   *
   * ```ts
   * m.transformer.h[2].output = m.transformer.h[2].output.neg();
   * ```
   */
  neg(): TensorProxy { return this.unary('neg', {}); }
  /**
   * Softmax along `dim`.
   *
   * ```ts
   * m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
   * ```
   */
  softmax(dim: number): TensorProxy { return this.unary('softmax', { dim }); }
  /**
   * Log-softmax along `dim`.
   *
   * ```ts
   * m.output.logits.logSoftmax(-1).save('logprobs');
   * ```
   */
  logSoftmax(dim: number): TensorProxy { return this.unary('log_softmax', { dim }); }
  /**
   * Index of the maximum along `dim` (int64).
   *
   * ```ts
   * m.output.logits.at(':', -1, ':').argmax(-1).save('best');
   * ```
   */
  argmax(dim: number, keepdim = false): TensorProxy { return this.unary('argmax', { dim, keepdim }); }
  /**
   * Sum along `dim` (all elements when omitted).
   *
   * ```ts
   * m.transformer.h[2].output.sum(-1).save('total');
   * ```
   */
  sum(dim: number | null = null, keepdim = false): TensorProxy { return this.unary('sum', { dim, keepdim }); }
  /**
   * Mean along `dim`.
   *
   * ```ts
   * m.transformer.h[2].output.mean(1, true).save('mean_over_positions');
   * ```
   */
  mean(dim: number | null = null, keepdim = false): TensorProxy { return this.unary('mean', { dim, keepdim }); }
  /**
   * Maximum along `dim`.
   *
   * ```ts
   * m.output.logits.max(-1).save('top_logit');
   * ```
   */
  max(dim: number | null = null, keepdim = false): TensorProxy { return this.unary('max', { dim, keepdim }); }
  /**
   * Euclidean norm along `dim`.
   *
   * ```ts
   * m.transformer.h[2].output.norm(-1).save('norms'); // [batch, sequence]
   * ```
   */
  norm(dim: number, keepdim = false): TensorProxy { return this.unary('norm', { dim, keepdim }); }
  /**
   * Reshape (`-1` infers one dimension).
   *
   * ```ts
   * m.transformer.h[2].output.reshape([-1, 128]);
   * ```
   */
  reshape(shape: number[]): TensorProxy { return this.unary('reshape', { shape: [...shape] }); }
  /**
   * Swap two dimensions.
   *
   * ```ts
   * m.transformer.h[2].output.transpose(0, 1);
   * ```
   */
  transpose(dim0: number, dim1: number): TensorProxy { return this.unary('transpose', { dim0, dim1 }); }
  /**
   * The `k` largest values along `dim` (default last) and their indices.
   *
   * ```ts
   * const { values, indices } = m.output.logits.at(':', -1, ':').softmax(-1).topk(5);
   * values.save('p'); indices.save('ids');
   * ```
   */
  topk(k: number, dim = -1): { values: TensorProxy; indices: TensorProxy } {
    this.live('.topk() was used');
    const [values, indices] = this.ctx.builder.topk(this.ir, k, dim, callSite());
    return { values: this.wrap(values), indices: this.wrap(indices) };
  }
}

// The elementwise methods, from the catalogue: every language function that takes `x` only.
for (const [op, fn] of FUNCTION_OPS) {
  const name = op.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
  if (fn.params.length > 0 || name in TensorProxy.prototype) continue;
  Object.defineProperty(TensorProxy.prototype, name, {
    value(this: TensorProxy): TensorProxy { return this.unary(op as PureOp, {} as OpAttrs[PureOp]); },
    writable: true, configurable: true,
  });
}

const TENSOR_LIKE = 'a proxy, a number, nested arrays of numbers, a Float32Array or a Tensor';

/** Nested arrays of numbers are rectangular-checked by the builder; here: only numbers, and not absurdly deep (or cyclic). */
function checkNested(x: readonly unknown[], span: Span): void {
  const stack: [readonly unknown[], number][] = [[x, 1]];
  while (stack.length > 0) {
    const [a, depth] = stack.pop()!;
    if (depth > 32) throw new NnsError('bad-value', 'nested arrays deeper than 32 levels (or cyclic) are not a tensor', { kind: 'usage', span });
    for (const e of a) {
      if (Array.isArray(e)) stack.push([e, depth + 1]);
      else if (typeof e !== 'number') throw new NnsError('bad-value', `expected ${TENSOR_LIKE}; the array holds ${describeValue(e)}`, { kind: 'usage', span });
    }
  }
}

/** Turns a TensorLike into an IR value; anything else is a `bad-value` error (never a crash). */
export function toValue(ctx: TraceContext, x: TensorLike, span: Span): Value {
  checkOpen(ctx, 'a value was used');
  if (x instanceof TensorProxy) {
    if (x.ctx !== ctx) {
      const why = x.ctx.closed ? 'comes from an earlier trace' : 'belongs to another trace (or another model)';
      throw new NnsError('foreign-value', `this proxy ${why}: a proxy is only valid inside its own trace; save it there and pass its .value (a Tensor)`, { kind: 'usage', span });
    }
    return x.ir;
  }
  if (typeof x === 'number') return ctx.builder.constant(x, span);
  if (x instanceof Float32Array) return ctx.builder.constant(Array.from(x), span);
  if (Array.isArray(x)) {
    checkNested(x, span);
    return ctx.builder.constant(x as NestedArray, span);
  }
  if (!isTensor(x)) throw new NnsError('bad-value', `expected ${TENSOR_LIKE}, got ${describeValue(x)}`, { kind: 'usage', span });
  const t = x as Tensor;
  checkTensor(t, span);
  let name = [...ctx.host].find(([, h]) => h === t)?.[0];
  if (!name) {
    name = `t${ctx.host.size}`;
    ctx.host.set(name, t);
  }
  return ctx.builder.host(name, t.dtype, [...t.shape], span);
}

/** Throws `bad-value` unless `t` is a well-formed tensor (known dtype, whole dims, as many elements as its shape). */
function checkTensor(t: Tensor, span: Span, what = 'this Tensor'): void {
  if (!DTYPES.has(t.dtype) || !Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) || !ArrayBuffer.isView(t.data) || numel(t.shape) !== (t.data as { length: number }).length) {
    throw new NnsError('bad-value', `${what} is malformed: dtype '${String(t.dtype)}', shape [${String(t.shape)}] and ${(t.data as { length?: number })?.length ?? 'no'} data elements do not agree`, { kind: 'usage', span });
  }
}

/**
 * Host parameters of a trace: tensors the caller supplies by name (`params` of a trace).
 * @category Tracing
 */
export type ParamValues = Readonly<Record<string, Tensor>>;

/**
 * What a trace callback gets for its {@link ParamValues}: one proxy per name, usable like any
 * value and differentiable (`grad(loss, p.steer)`).
 * @category Tracing
 */
export type ParamProxies<P extends ParamValues> = { readonly [K in keyof P]: TensorProxy };

/** Host name of trace param `name` (never a name `toValue` gives a bare Tensor). */
export function paramHostName(name: string): string {
  return `param.${name}`;
}

/**
 * The proxies of a trace's params: each read is a `host` value fed from `params[name]`.
 * Repeated traces whose params differ only in values have the same structure, so they share
 * one compiled graph.
 */
export function paramProxies<P extends ParamValues>(ctx: TraceContext, params: P | undefined): ParamProxies<P> {
  const out = {} as Record<string, TensorProxy>;
  if (params === undefined) return out as ParamProxies<P>;
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    throw new NnsError('bad-value', `params must be an object of Tensors by name, got ${describeValue(params)}`, { kind: 'usage', span: callSite() });
  }
  for (const [name, t] of Object.entries(params)) {
    const span = callSite();
    if (!isTensor(t)) throw new NnsError('bad-value', `params.${name} must be a Tensor {dtype, shape, data}, got ${describeValue(t)}`, { kind: 'usage', span });
    checkTensor(t, span, `params.${name}`);
    ctx.host.set(paramHostName(name), t);
    Object.defineProperty(out, name, {
      enumerable: true,
      get: () => {
        checkOpen(ctx, `params.${name} was read`);
        return new TensorProxy(ctx, ctx.builder.host(paramHostName(name), t.dtype, [...t.shape], callSite()));
      },
    });
  }
  return Object.freeze(out) as ParamProxies<P>;
}

function isTensor(x: unknown): x is Tensor {
  return typeof x === 'object' && x !== null && !Array.isArray(x) && 'dtype' in x && 'shape' in x && 'data' in x;
}

/**
 * A module inside a trace: navigate (`m.transformer.h[2]`), read `.output`, assign `.output = v`, call it.
 * @category Tracing
 */
export interface ModuleBase {
  /**
   * The module's (first) output. Assigning replaces it for the rest of the model.
   *
   * ```ts
   * m.transformer.h[2].output.save('h2');
   * m.transformer.h[3].mlp.output = 0;   // knock the MLP out
   * ```
   */
  get output(): TensorProxy;
  set output(v: TensorLike);
  /**
   * The module's (first) input. Assigning replaces what the module sees.
   *
   * ```ts
   * m.transformer.h[2].input.save('resid_pre2');
   * m.transformer.h[1].input = m.transformer.h[0].input; // block 0 skipped
   * ```
   */
  get input(): TensorProxy;
  set input(v: TensorLike);
  /** All outputs (for modules returning several tensors). */
  readonly outputs: readonly TensorProxy[];
  /** All inputs. */
  readonly inputs: readonly TensorProxy[];
  /** Apply the module out of order to new inputs; returns its first output. */
  (...args: TensorLike[]): TensorProxy;
  /**
   * The `n`-th (from 0, graph order) ONNX node of op type `type` in this module's subtree, with
   * `.output`, `.outputs[i]`, `.input`, `.inputs[i]` like a module:
   * `m.transformer.h[1].attn.op('Softmax').output` (the attention probabilities).
   */
  op(type: string, n?: number): ModuleRef;
}

/**
 * A module reference: its own members plus submodules and parameters by name or index.
 * @category Tracing
 */
export type ModuleRef = ModuleBase & { readonly [name: string]: ModuleRef; readonly [index: number]: ModuleRef };

/**
 * The root: like any module, plus `output.logits` style access to graph outputs by name.
 * @category Tracing
 */
export type ModelRef = ModuleRef & { readonly output: TensorProxy & { readonly [name: string]: TensorProxy } };

const PORTS = new Set(['output', 'input', 'outputs', 'inputs']);

/** Builds the proxy for module `modPath` (`''` = the model). */
export function moduleProxy(ctx: TraceContext, modPath: string): ModelRef {
  const join = (name: string): string => (modPath ? `${modPath}.${name}` : name);
  const boundary = (port: 'output' | 'input', index: number): TensorProxy => {
    checkOpen(ctx, `model.${modPath ? `${modPath}.` : ''}${port} was read`);
    const span = callSite();
    const b = ctx.builder;
    const v = port === 'output' ? b.moduleOutput(modPath, index, span) : b.moduleInput(modPath, index, span);
    return new TensorProxy(ctx, v, { path: modPath, port, index, items: null });
  };
  const list = (port: 'output' | 'input'): readonly TensorProxy[] => {
    const m = ctx.tree.modules.get(modPath);
    const n = (port === 'output' ? m?.outputs.length : m?.inputs.length) ?? 1;
    return Array.from({ length: n }, (_, i) => boundary(port, i));
  };
  const callable = function onnsightModule(): void {} as unknown as object;
  const handler: ProxyHandler<object> = {
    get(_t, prop) {
      if (typeof prop === 'symbol') return undefined;
      if (prop === 'output' && modPath === '') return graphOutputProxy(ctx);
      if (prop === 'output') return boundary('output', 0);
      if (prop === 'input') return boundary('input', 0);
      if (prop === 'outputs') return list('output');
      if (prop === 'inputs') return list('input');
      if (prop === 'then') return undefined; // not a thenable
      if (prop === 'op') return (type: string, n = 0): ModuleRef => moduleProxy(ctx, opPath(modPath, type, n));
      const p = resolveModulePath(ctx.tree, join(prop)); // m.transformer.h[-1]: the last block
      if (ctx.tree.params.has(p) && !ctx.tree.modules.has(p)) {
        checkOpen(ctx, `parameter ${p} was read`);
        return new TensorProxy(ctx, ctx.builder.param(p, callSite()));
      }
      return moduleProxy(ctx, p);
    },
    set(_t, prop, value: TensorLike) {
      checkOpen(ctx, 'a module was assigned to');
      if (typeof prop !== 'string' || !PORTS.has(prop) || prop.endsWith('s')) {
        throw new NnsError('not-assignable', `cannot assign to '${String(prop)}' of module '${modPath || 'model'}' (assign to .output or .input)`, { span: callSite() });
      }
      const span = callSite();
      ctx.builder.set(modPath, prop as 'output' | 'input', 0, null, toValue(ctx, value, span), span);
      return true;
    },
    apply(_t, _this, args: TensorLike[]) {
      checkOpen(ctx, 'a module was called');
      const span = callSite();
      const outs = ctx.builder.callModule(modPath, args.map((a) => toValue(ctx, a, span)), span);
      return new TensorProxy(ctx, outs[0]!);
    },
  };
  return new Proxy(callable, handler) as ModelRef;
}

function graphOutputProxy(ctx: TraceContext): TensorProxy & { readonly [name: string]: TensorProxy } {
  checkOpen(ctx, 'model.output was read');
  const first = new TensorProxy(ctx, ctx.builder.modelOutput(null, callSite()));
  return new Proxy(first, {
    get(target, prop, receiver) {
      if (typeof prop === 'symbol' || prop in target) return Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'then') return undefined; // not a thenable
      checkOpen(ctx, `model.output.${prop} was read`);
      return new TensorProxy(ctx, ctx.builder.modelOutput(prop, callSite()));
    },
  }) as TensorProxy & { readonly [name: string]: TensorProxy };
}

/**
 * Module-level functions for those who prefer `softmax(x, -1)` to `x.softmax(-1)`.
 *
 * ```ts
 * import { ops } from 'onnsight';
 * ops.softmax(m.output.logits, -1).save('probs');
 * ```
 * @category Tracing
 */
export const ops = {
  /** Softmax along `dim`. */
  softmax: (x: TensorProxy, dim: number): TensorProxy => x.softmax(dim),
  /** Log-softmax along `dim`. */
  logSoftmax: (x: TensorProxy, dim: number): TensorProxy => x.logSoftmax(dim),
  /** Index of the maximum along `dim`. */
  argmax: (x: TensorProxy, dim: number): TensorProxy => x.argmax(dim),
  /** The k largest values. */
  topk: (x: TensorProxy, k: number, dim = -1): { values: TensorProxy; indices: TensorProxy } => x.topk(k, dim),
};

/** dtype re-export for API users. */
export type { DType };
