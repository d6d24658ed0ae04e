/**
 * The op catalogue: every IR operation is one entry of {@link OPS} — its schema (arity,
 * attributes), its type rule, its host evaluation (the one evaluator: constant folding and
 * the fast path's host work both call {@link evalOp}), its ONNX lowering, its surface in the
 * language and the TypeScript API, and a slot for its derivative. `OPS` is a
 * `Record<OpName, ...>`: an op missing an entry, or an entry missing a field, does not compile.
 *
 * Adding an elementwise unary op is one line in {@link OpAttrs} and one entry here (see
 * `unaryOp`); the grammar's function table (grammar/functions.ts), the TS API's methods
 * (src/trace.ts), the printer, verifier, JSON reader, type inference, folding, the fast
 * path's planner and evaluator and the ONNX lowering pick it up from here.
 * @module
 */
import type { ErrorCode } from '../src/error-codes.js';
import type { ModuleTree } from '../src/model/types.js';
import type { TensorProto } from '../src/onnx/proto.js';
import type { Tensor } from '../src/tensor.js';
import type { Builder } from './builder.js';
import type { Dim, DType, IndexItem, Node, TensorType, Value } from './ir.js';
import {
  argmax, castTo, fill, HostEvalError, indexTensor, map1, map2, matmul, reduce, reshape, softmax, topk, transpose,
} from './eval.js';
import { boundaryType, checkSet, inferCall, inScope } from './infer-module.js';
import {
  axisError, broadcast, describeDim, dimSize, formatType, indexShape, isFloat, matmulShape, normAxis, promote,
  reduceShape, reshapeShape, type DimValues, type ShapeResult,
} from './shape.js';

/** Attributes of each operation. */
export interface OpAttrs {
  /** A module's output (`index` selects among several); reads the value as set so far in program order (`version`). */
  'module.output': { path: string; index: number; version: number };
  /** A module's input. */
  'module.input': { path: string; index: number; version: number };
  /** A graph output: `name` null means the first one. */
  'model.output': { name: string | null };
  /** A parameter by state-dict name (`lm_head.weight`). */
  param: { name: string };
  /** A value supplied by the host at run time under `name` (a saved result of an earlier trace, a TS array, a lifted constant). Becomes a graph input. */
  host: { name: string; dtype: DType; shape: number[] };
  /** A literal tensor, row-major data. */
  const: { dtype: DType; shape: number[]; data: number[] };
  /** Indexing and slicing. */
  index: { items: IndexItem[] };
  add: NoAttrs;
  sub: NoAttrs;
  mul: NoAttrs;
  div: NoAttrs;
  matmul: NoAttrs;
  neg: NoAttrs;
  exp: NoAttrs;
  log: NoAttrs;
  sqrt: NoAttrs;
  abs: NoAttrs;
  relu: NoAttrs;
  tanh: NoAttrs;
  zeros_like: NoAttrs;
  ones_like: NoAttrs;
  softmax: { dim: number };
  log_softmax: { dim: number };
  argmax: { dim: number; keepdim: boolean };
  sum: { dim: number | null; keepdim: boolean };
  mean: { dim: number | null; keepdim: boolean };
  max: { dim: number | null; keepdim: boolean };
  norm: { dim: number; keepdim: boolean };
  /** Two results: values, indices. */
  topk: { k: number; dim: number };
  /** Target shape, PyTorch semantics: `-1` infers one dimension. */
  reshape: { shape: number[] };
  transpose: { dim0: number; dim1: number };
  /** Apply a module out of order to new inputs; results are the module's outputs. */
  call_module: { path: string };
  /** Replace a module boundary value (whole, or the slice `items`) with the single input, broadcast. No results. */
  set: { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null };
  /** Send the single input back to the user under `name`. No results. */
  save: { name: string };
  grad: NoAttrs;
}

/** Attributes of an op that has none. */
export type NoAttrs = Record<string, never>;

/** Every operation name. */
export type OpName = keyof OpAttrs;

/** How an attribute value is checked and serialized. */
export type AttrKind =
  | 'string' | 'string?' | 'int' | 'int?' | 'bool' | 'dtype' | 'port'
  | 'ints' | 'numbers' | 'items' | 'items?';

/** Static description of one operation: arity and attribute kinds (in printing order). */
export interface OpSchema {
  /** Number of inputs, or `'variadic'` (at least one). */
  inputs: number | 'variadic';
  /** Number of results, or `'variadic'` (at least one; `call_module`). */
  results: number | 'variadic';
  /** Attribute names and kinds, in the order they are printed. */
  attrs: ReadonlyArray<readonly [string, AttrKind]>;
}

/**
 * What kind of operation: `source` (no inputs: module refs, params, host values, literals),
 * `effect` (no results, never removed or merged: set, save), `pure` (a function of its
 * inputs), `call` (call_module: pure, but the module's nodes are cloned).
 */
export type OpKind = 'source' | 'effect' | 'pure' | 'call';

/** What a type rule sees: the node's input types (all known), literals, the model and the scope. */
export interface InferContext<K extends OpName = OpName> {
  /** Attributes. */
  readonly attrs: OpAttrs[K];
  /** Input types (the driver skips nodes with an unknown input type). */
  readonly inputs: readonly TensorType[];
  /** Data of input `i` when it is a literal (`const`), else null. */
  literal(i: number): { shape: number[]; data: number[] } | null;
  /** Number of results the node has. */
  readonly results: number;
  /** Known values of symbolic dims. */
  readonly dims: DimValues;
  /** The model's module tree. */
  readonly tree: ModuleTree;
  /** Rows of the node's scope (0 when unknown). */
  readonly rows: number;
  /** Report a user error at the node. */
  fail(code: ErrorCode, message: string): void;
}

/** A type rule: the result types (null = unknown, after an error). */
export type InferRule<K extends OpName> = (c: InferContext<K>) => (TensorType | null)[];

/** ONNX attribute values a lowering may set (plain numbers are ints). */
export type OnnxAttr = number | number[] | TensorProto;

/**
 * What a lowering sees (implemented by passes/lower-onnx.ts): the node's inputs as ONNX value
 * names and a small emitter. Every emitted node carries the IR node's provenance.
 */
export interface LowerContext {
  /** The model's default-domain opset version. */
  readonly opset: number;
  /** The IR result dtype (float32 when unknown). */
  readonly dtype: DType;
  /** ONNX name of input `i`, cast to `dtype` when given and different. */
  input(i: number, dtype?: DType): string;
  /** Rank of input `i`'s IR type (0 when unknown). */
  rank(i: number): number;
  /** Emits one node with one output; returns the output's name. */
  op(type: string, inputs: string[], attrs?: Record<string, OnnxAttr>): string;
  /** Emits one node with `n` outputs. */
  node(type: string, inputs: string[], attrs: Record<string, OnnxAttr>, n: number): string[];
  /** A 1-D int64 constant. */
  ints(values: readonly number[]): string;
  /** `Shape(x)`, emitted once per name. */
  shape(x: string): string;
  /** numpy basic indexing of `x` (rank `rank`) as Slice/Gather/Unsqueeze. */
  index(x: string, rank: number, items: IndexItem[]): string;
  /** A small inline tensor (for attributes such as ConstantOfShape's `value`). */
  tensor(dtype: DType, dims: number[], data: readonly number[]): TensorProto;
}

/** A lowering: ONNX names of the node's results. `'splice'`: passes/lower-onnx.ts splices it into the model. */
export type LowerRule<K extends OpName> = ((c: LowerContext, attrs: OpAttrs[K]) => string[]) | 'splice';

/** Host evaluation: the results (one tensor each) of the op on host tensors; `dtype` is the IR result dtype. */
export type EvalRule<K extends OpName> = (attrs: OpAttrs[K], xs: readonly Tensor[], dtype: DType) => Tensor[];

/**
 * Reverse-mode derivative (the backward pass, see docs/internals.md): given the node and the
 * gradient of each of its results (null = no gradient flows), builds the gradient of each
 * input with `b` (null = none). Filled in by the gradients work; null = not differentiable yet.
 */
export type DerivativeRule<K extends OpName> = (b: Builder, node: Node<K>, gradOut: readonly (Value | null)[]) => (Value | null)[];

/** How a parameter after `x` is read in the language. */
export type ParamKind = 'int' | 'ints' | 'bool';

/**
 * The op as a function of the language (`softmax(x, dim)`) and a TensorProxy method:
 * parameters after `x` in order, each an attribute of the same name, with a default
 * (`undefined` = required).
 */
export interface FnSurface {
  /** Parameters after `x`: name (= attribute name), kind, default when omitted. */
  params: ReadonlyArray<readonly [string, ParamKind, (number | boolean | null)?]>;
  /** Checks argument values; returns a message for a `bad-argument` error. */
  check?: (attrs: Record<string, unknown>) => string | null;
}

/** One catalogue entry. */
export interface OpDef<K extends OpName> {
  /** One line for docs and messages. */
  doc: string;
  kind: OpKind;
  schema: OpSchema;
  infer: InferRule<K>;
  /** Host evaluation, or null (the host cannot compute it: sources, effects, call_module). */
  eval: EvalRule<K> | null;
  /**
   * Whether constant folding may evaluate it on literals: elementwise ops and data movement.
   * Arithmetic, neg/abs/relu and data movement fold to exactly what the lowered graph
   * computes; exp/log/sqrt/tanh fold in float64 rounded once (within an ulp of onnxruntime).
   * Reductions, softmax and matmul do not fold (their order of accumulation differs).
   */
  fold: boolean;
  lower: LowerRule<K>;
  derivative: DerivativeRule<K> | null;
  /** Its surface as a language function and TS method, or null (operators, sources, effects). */
  fn: FnSurface | null;
}

/** The catalogue type: one complete entry per op. */
export type OpCatalogue = { readonly [K in OpName]: OpDef<K> };

// ---- type rules -------------------------------------------------------------------------

const floatOf = (d: DType): DType => (isFloat(d) ? d : 'float32');

/** A shape rule's outcome as a result type, reporting a problem through the context. */
function shaped(c: InferContext, dtype: DType, r: ShapeResult | null): (TensorType | null)[] {
  if (r === null) return [{ dtype, shape: null }];
  if ('code' in r) { c.fail(r.code, r.message); return []; }
  return [{ dtype, shape: r.shape }];
}

/** Same shape; dtype from `dt`. */
const sameShape = (dt: (d: DType) => DType): InferRule<OpName> => (c) => [{ dtype: dt(c.inputs[0]!.dtype), shape: c.inputs[0]!.shape && [...c.inputs[0]!.shape] }];

/** A rule on input 0's shape (unknown rank passes through as unknown). */
const onShape = <K extends OpName>(dt: (d: DType, c: InferContext<K>) => DType, f: (s: Dim[], c: InferContext<K>) => ShapeResult): InferRule<K> => (c) => {
  const x = c.inputs[0]!;
  return shaped(c as InferContext, dt(x.dtype, c), x.shape === null ? null : f(x.shape, c));
};

const BINARY_VERB = { add: 'add', sub: 'subtract', mul: 'multiply', div: 'divide', matmul: 'matmul' } as const;

/**
 * Arithmetic: numpy broadcasting (PyTorch matmul for `matmul`); dtypes promote (floats win,
 * wider floats win), except that a rank-0 literal adopts the other operand's dtype (PyTorch
 * scalar rule); `div` and non-integer literals give float.
 */
function binaryRule(op: keyof typeof BINARY_VERB): InferRule<OpName> {
  return (c) => {
    const [a, b] = [c.inputs[0]!, c.inputs[1]!];
    const [la, lb] = [c.literal(0), c.literal(1)];
    const [sa, sb] = [la?.shape.length === 0, lb?.shape.length === 0];
    let dtype = sa && !sb ? b.dtype : sb && !sa ? a.dtype : promote(a.dtype, b.dtype);
    if (op === 'div' && !isFloat(dtype)) dtype = 'float32';
    if (!isFloat(dtype) && (sa || sb) && (sa ? la! : lb!).data.some((v) => !Number.isInteger(v))) dtype = 'float32';
    if (a.shape === null || b.shape === null) return [{ dtype, shape: null }];
    const verb = `cannot ${BINARY_VERB[op]} ${formatType(a)} and ${formatType(b)}`;
    if (op === 'matmul') {
      const r = matmulShape(a.shape, b.shape, c.dims);
      return shaped(c, dtype, 'code' in r ? { code: r.code, message: `${verb}: ${r.message}` } : r);
    }
    const s = broadcast(a.shape, b.shape, c.dims);
    return shaped(c, dtype, s ? { shape: s } : { code: 'shape-mismatch', message: `${verb}: shapes do not broadcast` });
  };
}

const boundaryRule = (port: 'output' | 'input'): InferRule<'module.output' | 'module.input'> => (c) => [boundaryType(c.tree, c.attrs.path, port, c.attrs.index, c.rows)];

const reduceRule = (dt: (d: DType) => DType): InferRule<'sum' | 'mean' | 'max' | 'norm' | 'argmax'> =>
  onShape((d) => dt(d), (s, c) => reduceShape(s, c.attrs.dim, c.attrs.keepdim));

// ---- lowering helpers ---------------------------------------------------------------------

/** ReduceX over `dim` (all axes when null): axes as an input from `inputSince` on, else as an attribute. */
function reduceOnnx(onnx: string, inputSince: number): LowerRule<'sum' | 'mean' | 'max' | 'norm'> {
  return (c, a) => {
    const x = c.input(0, c.dtype);
    const keepdims = a.keepdim ? 1 : 0;
    if (a.dim === null) return [c.op(onnx, [x], { keepdims })];
    if (c.opset >= inputSince) return [c.op(onnx, [x, c.ints([a.dim])], { keepdims })];
    return [c.op(onnx, [x], { axes: [a.dim], keepdims })];
  };
}

const sumOf = (v: Float64Array): number => v.reduce((s, e) => s + e, 0);

// ---- entry families -----------------------------------------------------------------------

const UNARY: OpSchema = { inputs: 1, results: 1, attrs: [] };
const BINARY: OpSchema = { inputs: 2, results: 1, attrs: [] };
const REDUCE: OpSchema = { inputs: 1, results: 1, attrs: [['dim', 'int?'], ['keepdim', 'bool']] };
const REF: OpSchema = { inputs: 0, results: 1, attrs: [['path', 'string'], ['index', 'int'], ['version', 'int']] };
const REDUCE_FN: FnSurface = { params: [['dim', 'int', null], ['keepdim', 'bool', false]] };
const noHost = null;

/**
 * An elementwise unary op: `f` per element (in the result dtype), ONNX op `onnx` on the
 * input cast to the result dtype. `float`: integer inputs give float32 (exp, log, ...).
 * `fn`: callable as `name(x)` in the language and `x.name()` in TS.
 */
function unaryOp(doc: string, f: (v: number) => number, onnx: string, o: { float?: boolean; fn?: boolean } = {}): OpDef<OpName> {
  return {
    doc, kind: 'pure', schema: UNARY, infer: sameShape(o.float ? floatOf : (d) => d),
    eval: (_a, xs, dtype) => [map1(xs[0]!, dtype, f)], fold: true,
    lower: (c) => [c.op(onnx, [c.input(0, c.dtype)])], derivative: null,
    fn: o.fn === false ? null : { params: [] },
  };
}

/** An elementwise binary arithmetic op (`+ - * /`). */
function binaryOp(doc: string, op: 'add' | 'sub' | 'mul' | 'div', f: (a: number, b: number) => number, onnx: string): OpDef<OpName> {
  return {
    doc, kind: 'pure', schema: BINARY, infer: binaryRule(op),
    eval: (_a, xs, dtype) => [map2(xs[0]!, xs[1]!, dtype, f)], fold: true,
    lower: (c) => [c.op(onnx, [c.input(0, c.dtype), c.input(1, c.dtype)])], derivative: null, fn: null,
  };
}

/** `zeros_like` / `ones_like`: ConstantOfShape of the input's shape. */
function fillOp(doc: string, value: number): OpDef<OpName> {
  return {
    doc, kind: 'pure', schema: UNARY, infer: sameShape((d) => d),
    eval: (_a, xs, dtype) => [fill(xs[0]!, dtype, value)], fold: false,
    lower: (c) => [c.op('ConstantOfShape', [c.shape(c.input(0))], { value: c.tensor(c.dtype, [1], [value]) })],
    derivative: null, fn: { params: [] },
  };
}

/** A reduction along `dim` (all elements when null) with `f(line)`, as ONNX `onnx` (axes an input from opset `inputSince`). */
function reduceOp(doc: string, f: (v: Float64Array) => number, onnx: string, inputSince: number, o: { float?: boolean; fn?: FnSurface; schema?: OpSchema } = {}): OpDef<OpName> {
  const dt = o.float ? floatOf : (d: DType): DType => d;
  return {
    doc, kind: 'pure', schema: o.schema ?? REDUCE, infer: reduceRule(dt) as InferRule<OpName>,
    eval: (a, xs, dtype) => {
      const { dim, keepdim } = a as OpAttrs['sum'];
      return [reduce(isFloat(dtype) ? castTo(xs[0]!, dtype) : xs[0]!, dim, keepdim, dtype, f)];
    },
    fold: false, lower: reduceOnnx(onnx, inputSince) as LowerRule<OpName>, derivative: null, fn: o.fn ?? REDUCE_FN,
  };
}

/** Softmax / log-softmax along `dim`. */
function softmaxOp(doc: string, log: boolean, onnx: string): OpDef<'softmax' | 'log_softmax'> {
  return {
    doc, kind: 'pure', schema: { inputs: 1, results: 1, attrs: [['dim', 'int']] },
    infer: onShape(floatOf, (s, c) => (normAxis(c.attrs.dim, s.length) === null ? axisError(c.attrs.dim, s.length) : { shape: [...s] })),
    eval: (a, xs, dtype) => [softmax(castTo(xs[0]!, dtype), a.dim, log, dtype)], fold: false,
    lower: (c, a) => [c.op(onnx, [c.input(0, c.dtype)], { axis: a.dim })], derivative: null,
    fn: { params: [['dim', 'int']] },
  };
}

// ---- the catalogue ------------------------------------------------------------------------

/** The op catalogue (see the module comment). */
export const OPS: OpCatalogue = {
  'module.output': { doc: "a module's output as set so far", kind: 'source', schema: REF, infer: boundaryRule('output'), eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null },
  'module.input': { doc: "a module's input as set so far", kind: 'source', schema: REF, infer: boundaryRule('input'), eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null },
  'model.output': {
    doc: 'a graph output', kind: 'source', schema: { inputs: 0, results: 1, attrs: [['name', 'string?']] },
    infer: (c) => [inScope((c.attrs.name === null ? c.tree.graphOutputs[0] : c.tree.graphOutputs.find((o) => o.name === c.attrs.name))?.sig, c.rows)],
    eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  param: {
    doc: 'a parameter by state-dict name', kind: 'source', schema: { inputs: 0, results: 1, attrs: [['name', 'string']] },
    infer: (c) => [inScope(c.tree.params.get(c.attrs.name)?.sig, 0)], eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  host: {
    doc: 'a value the host supplies at run time (a graph input)', kind: 'source',
    schema: { inputs: 0, results: 1, attrs: [['name', 'string'], ['dtype', 'dtype'], ['shape', 'ints']] },
    infer: (c) => [{ dtype: c.attrs.dtype, shape: [...c.attrs.shape] }], eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  const: {
    doc: 'a literal tensor', kind: 'source', schema: { inputs: 0, results: 1, attrs: [['dtype', 'dtype'], ['shape', 'ints'], ['data', 'numbers']] },
    infer: (c) => [{ dtype: c.attrs.dtype, shape: [...c.attrs.shape] }], eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  index: {
    doc: 'numpy basic indexing and slicing', kind: 'pure', schema: { inputs: 1, results: 1, attrs: [['items', 'items']] },
    infer: onShape((d) => d, (s, c) => indexShape(s, c.attrs.items, c.dims)),
    eval: (a, xs) => [indexTensor(xs[0]!, a.items)], fold: true,
    lower: (c, a) => [c.index(c.input(0), c.rank(0), a.items)], derivative: null, fn: null,
  },
  add: binaryOp('a + b, broadcasting', 'add', (a, b) => a + b, 'Add'),
  sub: binaryOp('a - b', 'sub', (a, b) => a - b, 'Sub'),
  mul: binaryOp('a * b', 'mul', (a, b) => a * b, 'Mul'),
  div: binaryOp('a / b (integers give float)', 'div', (a, b) => a / b, 'Div'),
  matmul: {
    doc: 'matrix product (PyTorch matmul)', kind: 'pure', schema: BINARY, infer: binaryRule('matmul'),
    eval: (_a, xs, dtype) => [matmul(castTo(xs[0]!, dtype), castTo(xs[1]!, dtype), dtype)], fold: false,
    lower: (c) => [c.op('MatMul', [c.input(0, c.dtype), c.input(1, c.dtype)])], derivative: null, fn: null,
  },
  neg: unaryOp('-x', (v) => -v, 'Neg', { fn: false }),
  softmax: softmaxOp('softmax along `dim`', false, 'Softmax'),
  log_softmax: softmaxOp('log-softmax along `dim`', true, 'LogSoftmax'),
  argmax: {
    doc: 'index of the maximum along `dim` (int64 result)', kind: 'pure', schema: { inputs: 1, results: 1, attrs: [['dim', 'int'], ['keepdim', 'bool']] },
    infer: reduceRule(() => 'int64'), eval: (a, xs) => [argmax(xs[0]!, a.dim, a.keepdim)], fold: false,
    lower: (c, a) => [c.op('ArgMax', [c.input(0)], { axis: a.dim, keepdims: a.keepdim ? 1 : 0 })], derivative: null,
    fn: { params: [['dim', 'int'], ['keepdim', 'bool', false]] },
  },
  topk: {
    doc: 'the `k` largest values along `dim` and their indices: use `.values` or `.indices` (`topk-without-field` otherwise); `t = topk(x, 5)` then `t.values` also works', kind: 'pure', schema: { inputs: 1, results: 2, attrs: [['k', 'int'], ['dim', 'int']] },
    infer: (c) => {
      const { k, dim } = c.attrs;
      const x = c.inputs[0]!;
      if (x.shape === null) return [{ dtype: x.dtype, shape: null }, { dtype: 'int64', shape: null }];
      const d = normAxis(dim, x.shape.length);
      if (d === null) { const e = axisError(dim, x.shape.length); c.fail(e.code, e.message); return []; }
      const size = dimSize(x.shape[d]!, c.dims);
      if (k < 0 || (size !== null && k > size)) {
        c.fail('index-out-of-range', `topk: k = ${k} is out of range for dimension ${d} of size ${describeDim(x.shape[d]!, c.dims)}`);
        return [];
      }
      const shape = x.shape.map((s, i) => (i === d ? k : s));
      return [{ dtype: x.dtype, shape }, { dtype: 'int64', shape: [...shape] }];
    },
    eval: (a, xs) => topk(xs[0]!, a.k, a.dim), fold: false,
    lower: (c, a) => c.node('TopK', [c.input(0), c.ints([a.k])], { axis: a.dim, largest: 1, sorted: 1 }, 2), derivative: null,
    fn: { params: [['k', 'int'], ['dim', 'int', -1]], check: (a) => ((a.k as number) < 1 ? `topk needs k >= 1, got ${String(a.k)}` : null) },
  },
  sum: reduceOp('sum along `dim`; without `dim`: over all elements', sumOf, 'ReduceSum', 13),
  mean: reduceOp('mean along `dim`; without `dim`: over all elements', (v) => sumOf(v) / v.length, 'ReduceMean', 18, { float: true }),
  max: reduceOp('maximum along `dim`; without `dim`: over all elements', (v) => v.reduce((s, e) => Math.max(s, e), -Infinity), 'ReduceMax', 18),
  norm: reduceOp('L2 norm along `dim`', (v) => Math.sqrt(v.reduce((s, e) => s + e * e, 0)), 'ReduceL2', 18, {
    float: true, schema: { inputs: 1, results: 1, attrs: [['dim', 'int'], ['keepdim', 'bool']] }, fn: { params: [['dim', 'int'], ['keepdim', 'bool', false]] },
  }),
  reshape: {
    doc: 'reshape; `-1` infers one dimension', kind: 'pure', schema: { inputs: 1, results: 1, attrs: [['shape', 'ints']] },
    infer: onShape((d) => d, (s, c) => reshapeShape(s, c.attrs.shape, c.dims)),
    eval: (a, xs) => [reshape(xs[0]!, a.shape)], fold: true,
    lower: (c, a) => [c.op('Reshape', [c.input(0), c.ints(a.shape)], a.shape.includes(0) ? { allowzero: 1 } : {})], derivative: null,
    fn: { params: [['shape', 'ints']] },
  },
  transpose: {
    doc: 'swap two dimensions', kind: 'pure', schema: { inputs: 1, results: 1, attrs: [['dim0', 'int'], ['dim1', 'int']] },
    infer: onShape((d) => d, (s, c) => {
      const [a, b] = [normAxis(c.attrs.dim0, s.length), normAxis(c.attrs.dim1, s.length)];
      if (a === null || b === null) return axisError(a === null ? c.attrs.dim0 : c.attrs.dim1, s.length);
      const out = [...s];
      [out[a], out[b]] = [s[b]!, s[a]!];
      return { shape: out };
    }),
    eval: (a, xs) => [transpose(xs[0]!, a.dim0, a.dim1)], fold: true,
    lower: (c, a) => {
      const rank = c.rank(0);
      const norm = (d: number): number => (d < 0 ? d + rank : d);
      const perm = Array.from({ length: rank }, (_, i) => i);
      const [d0, d1] = [norm(a.dim0), norm(a.dim1)];
      [perm[d0], perm[d1]] = [perm[d1]!, perm[d0]!];
      return [c.op('Transpose', [c.input(0)], { perm })];
    },
    derivative: null, fn: { params: [['dim0', 'int'], ['dim1', 'int']] },
  },
  zeros_like: fillOp('zeros of the same shape and dtype', 0),
  ones_like: fillOp('ones of the same shape and dtype', 1),
  exp: unaryOp('e^x', Math.exp, 'Exp', { float: true }),
  log: unaryOp('natural log', Math.log, 'Log', { float: true }),
  sqrt: unaryOp('square root', Math.sqrt, 'Sqrt', { float: true }),
  abs: unaryOp('absolute value', Math.abs, 'Abs'),
  relu: unaryOp('max(x, 0)', (v) => (v > 0 ? v : 0), 'Relu'),
  tanh: unaryOp('hyperbolic tangent', Math.tanh, 'Tanh', { float: true }),
  call_module: {
    doc: 'apply a module to new inputs', kind: 'call', schema: { inputs: 'variadic', results: 'variadic', attrs: [['path', 'string']] },
    infer: (c) => {
      const r = inferCall(c.attrs.path, c.results, c.inputs, c.tree, c.dims);
      if (r.problem) c.fail(r.problem.code, r.problem.message);
      return r.types;
    },
    eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  set: {
    doc: 'replace a module boundary value (or a slice of it)', kind: 'effect',
    schema: { inputs: 1, results: 0, attrs: [['path', 'string'], ['port', 'port'], ['index', 'int'], ['items', 'items?']] },
    infer: (c) => {
      const p = checkSet(c.attrs, c.inputs[0]!, c.literal(0) !== null, c.tree, c.rows, c.dims);
      if (p) c.fail(p.code, p.message);
      return [];
    },
    eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  grad: {
    doc: 'the gradient of a one-element value (input 0) with respect to a module value, op value or parameter (input 1)',
    kind: 'pure', schema: { inputs: 2, results: 1, attrs: [] },
    infer: (c) => {
      const [y, x] = [c.inputs[0]!, c.inputs[1]!];
      if (y.shape !== null && !y.shape.every((d) => d === 1)) {
        c.fail('bad-grad', `grad(Y, X) needs Y with exactly one element, but Y is ${formatType(y)}; select one element (logits[0, -1, 383]) or reduce it (sum(...))`);
        return [];
      }
      if (!isFloat(x.dtype) || !isFloat(y.dtype)) {
        c.fail('bad-grad', `grad(Y, X) needs floating-point Y and X, but they are ${formatType(y)} and ${formatType(x)}`);
        return [];
      }
      return [{ dtype: x.dtype, shape: x.shape && [...x.shape] }];
    },
    eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null,
  },
  save: { doc: 'send a value back to the user', kind: 'effect', schema: { inputs: 1, results: 0, attrs: [['name', 'string']] }, infer: () => [], eval: noHost, fold: false, lower: 'splice', derivative: null, fn: null },
};

/** The catalogue entry of an op (typed by the op). */
export function opDef<K extends OpName>(op: K): OpDef<K> {
  return OPS[op] as OpDef<K>;
}

/** Arity and attributes of every operation (verifier, printer, JSON reader). */
export const OP_SCHEMA: Readonly<Record<OpName, OpSchema>> = Object.fromEntries(
  (Object.keys(OPS) as OpName[]).map((k) => [k, OPS[k].schema]),
) as Record<OpName, OpSchema>;

/** Operations the host evaluator implements (every pure op, plus `topk`). */
export const HOST_OPS: ReadonlySet<OpName> = new Set((Object.keys(OPS) as OpName[]).filter((k) => OPS[k].eval !== null));

/**
 * The host evaluator: one IR operation on host tensors. `dtype` is the IR result type
 * (inputs are cast to it where the lowering casts them); one tensor per result.
 * @throws HostEvalError for ops the host cannot compute and values it cannot (bad shapes, indices, dtypes).
 */
export function evalOp<K extends OpName>(op: K, attrs: OpAttrs[K], xs: readonly Tensor[], dtype: DType): Tensor[] {
  const f = opDef(op).eval;
  if (!f) throw new HostEvalError(`${op} is not a host operation`);
  return f(attrs, xs, dtype);
}

/**
 * The result types of a node by its op's type rule; user errors go to `fail`. Types of
 * inputs must be known (callers skip nodes after an earlier error).
 */
export function inferOp(n: Node, inputs: readonly TensorType[], ctx: { tree: ModuleTree; dims: DimValues; rows: number }, fail: (code: ErrorCode, message: string) => void): (TensorType | null)[] {
  return inferWith(n.op, {
    attrs: n.attrs, inputs, results: n.results.length, dims: ctx.dims, tree: ctx.tree, rows: ctx.rows, fail,
    literal: (i) => {
      const p = n.inputs[i]?.producer;
      return p?.is('const') ? p.attrs : null;
    },
  });
}

/** Runs an op's type rule on a context. */
export function inferWith<K extends OpName>(op: K, c: InferContext<K>): (TensorType | null)[] {
  return (OPS[op].infer as InferRule<K>)(c);
}

/** Ops with effects: never removed by DCE, never merged by CSE. */
export const EFFECT_OPS: ReadonlySet<OpName> = new Set((Object.keys(OPS) as OpName[]).filter((k) => OPS[k].kind === 'effect'));

/** Operations with no inputs that introduce a value (module refs, params, host values, literals). */
export const SOURCE_OPS: ReadonlySet<OpName> = new Set((Object.keys(OPS) as OpName[]).filter((k) => OPS[k].kind === 'source'));

/** Ops that are language functions and TS methods, by name. */
export const FUNCTION_OPS: ReadonlyMap<OpName, FnSurface> = new Map(
  (Object.keys(OPS) as OpName[]).flatMap((k) => (OPS[k].fn ? [[k, OPS[k].fn!] as const] : [])),
);
