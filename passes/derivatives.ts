/**
 * The derivative table of ONNX op types (reverse mode), one entry per op type: given a node
 * and the gradients of its outputs (null = none flows), it emits, with a {@link GradBuilder},
 * the gradients of the inputs the sweep asks for (`wants`). Broadcasting inputs get their
 * gradient summed back to their own shape ({@link GradBuilder.unbroadcast}, computed from
 * the shapes at run time). Used by passes/autodiff.ts; checked against central finite
 * differences op by op (test/passes/derivatives.test.ts).
 * @module
 */
import type { GraphProto, NodeProto } from '../src/onnx/proto.js';
import { attrOf, intAttr, intsAttr } from '../src/onnx/attributes.js';
import type { TensorSig } from '../src/model/types.js';
import type { AttrValue, Emitter } from './onnx-emit.js';
import { makeTensor } from './onnx-emit.js';

/** Thrown by a rule (or the sweep) for a node it cannot differentiate. */
export class NotDifferentiable extends Error {
  constructor(readonly node: NodeProto, readonly reason: string) {
    super(reason);
  }
}

/** Ops whose outputs carry no gradient (shape bookkeeping, comparisons, indices): they cut a path. */
export const NO_GRADIENT: ReadonlySet<string> = new Set([
  'Shape', 'Size', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor',
  'ArgMax', 'ArgMin', 'NonZero', 'ConstantOfShape', 'Range', 'IsNaN', 'IsInf', 'Sign', 'Floor', 'Ceil', 'Round',
  'EyeLike', 'OneHot',
]);

const FLOAT_TYPES = new Set([1, 10, 11, 16]);

function floatAttr(n: NodeProto, name: string, dflt: number): number {
  const a = attrOf(n, name);
  return a?.f !== undefined && a.f !== null ? Number(a.f) : dflt;
}

/** Emits the backward nodes; knows the opset, constant values and (where known) ranks. */
export class GradBuilder {
  private readonly consts = new Map<string, number[]>();
  private readonly producers = new Map<string, NodeProto>();
  private readonly ranks = new Map<string, number>();
  private readonly inits = new Map<string, import('../src/onnx/proto.js').TensorProto>();
  /** Static shapes where known (numbers, or symbols: one symbol is one size throughout the graph). */
  private readonly shapes = new Map<string, (number | string)[]>();
  /** The model input and axis giving each symbolic dim's run-time size (`batch`, `sequence`), from the probed types. */
  private readonly dimSources = new Map<string, [string, number]>();
  /** Shape vectors built by {@link GradBuilder.shapeOf}, by static shape. */
  private readonly shapeVectors = new Map<string, string>();

  constructor(readonly em: Emitter, readonly opset: number, graph: GraphProto, private readonly sigs: ReadonlyMap<string, TensorSig>) {
    for (const [k, s] of sigs) if (s.shape) { this.ranks.set(k, s.shape.length); this.shapes.set(k, [...s.shape]); }
    for (const vi of [...(graph.value_info ?? []), ...(graph.input ?? []), ...(graph.output ?? [])]) {
      const dims = vi.type?.tensor_type?.shape?.dim;
      if (vi.name && dims && vi.type?.tensor_type?.shape) {
        this.ranks.set(vi.name, dims.length);
        const sh = dims.map((d) => (d.dim_value !== undefined && d.dim_value !== null && Number(d.dim_value) > 0 ? Number(d.dim_value) : d.dim_param || undefined));
        if (!this.shapes.has(vi.name) && sh.every((d) => d !== undefined)) this.shapes.set(vi.name, sh as (number | string)[]);
      }
    }
    for (const t of graph.initializer ?? []) if (t.name) { this.ranks.set(t.name, (t.dims ?? []).length); this.inits.set(t.name, t); this.shapes.set(t.name, (t.dims ?? []).map(Number)); }
    for (const vi of graph.input ?? []) {
      (sigs.get(vi.name ?? '')?.shape ?? []).forEach((d, i) => {
        if ((d === 'batch' || d === 'sequence') && !this.dimSources.has(d)) this.dimSources.set(d, [vi.name!, i]);
      });
    }
    for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) this.producers.set(o, n);
  }

  op(type: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.em.op(type, inputs, attrs);
  }

  /** A float32 scalar constant cast like `like`. */
  scalar(v: number, like: string): string {
    return this.op('CastLike', [this.em.constant('float32', [], [v]), like]);
  }

  ints(v: readonly number[]): string {
    return this.em.ints(v);
  }

  onesLike(x: string): string {
    return this.op('CastLike', [this.op('ConstantOfShape', [this.shapeOf(x)], { value: makeTensor('float32', [1], [1]) }), x]);
  }

  zerosLike(x: string): string {
    return this.op('CastLike', [this.op('ConstantOfShape', [this.shapeOf(x)], { value: makeTensor('float32', [1], [0]) }), x]);
  }

  /**
   * The run-time shape of `x` (an int64 vector). For a value whose probed type has a shape
   * of numbers and the symbolic dims `batch` and `sequence` of a model input, it is built
   * from that input's shape instead of `Shape(x)`: onnxruntime runs a node when its first
   * consumer needs it, so a `Shape` of a forward value read by the backward keeps the value
   * itself alive from the forward pass to that point of the backward (on GPT-2 small's
   * gradient graph: each attention's keys, values and their head layouts, ~16 MB of
   * forward values kept for their shapes alone). One vector per static shape.
   */
  shapeOf(x: string): string {
    const sh = this.sigs.get(x)?.shape;
    if (!sh || !sh.every((d) => typeof d === 'number' ? d >= 0 : this.dimSources.has(d))) return this.op('Shape', [x]);
    const key = JSON.stringify(sh);
    const hit = this.shapeVectors.get(key);
    if (hit) return hit;
    const parts: string[] = [];
    let nums: number[] = [];
    for (const d of sh) {
      if (typeof d === 'number') { nums.push(d); continue; }
      if (nums.length) { parts.push(this.ints(nums)); nums = []; }
      const [input, axis] = this.dimSources.get(d)!;
      parts.push(this.op('Gather', [this.inputShape(input), this.ints([axis])]));
    }
    if (nums.length || !parts.length) parts.push(this.ints(nums));
    const v = parts.length === 1 ? parts[0]! : this.op('Concat', parts, { axis: 0 });
    this.shapeVectors.set(key, v);
    return v;
  }

  private inputShape(input: string): string {
    const key = `input:${input}`;
    let v = this.shapeVectors.get(key);
    if (!v) this.shapeVectors.set(key, (v = this.op('Shape', [input])));
    return v;
  }

  /** Whether a node's outputs carry no gradient (a Cast to a non-float type). */
  cutsGradient(n: NodeProto): boolean {
    if (n.op_type === 'Cast') return !FLOAT_TYPES.has(intAttr(n, 'to', 1));
    return false;
  }

  /** Value of a constant (initializer or Constant node) as numbers, or undefined. */
  constValue(name: string): number[] | undefined {
    if (this.consts.has(name)) return this.consts.get(name);
    const p = this.producers.get(name);
    let v: number[] | undefined;
    const init = this.inits.get(name);
    if (init && !p) v = tensorInts(init);
    if (p?.op_type === 'Constant') {
      const t = attrOf(p, 'value')?.t;
      if (t) v = tensorInts(t);
    }
    if (v) this.consts.set(name, v);
    return v;
  }

  /** Static rank of a value, when it can be known. */
  rank(name: string): number | undefined {
    const hit = this.ranks.get(name);
    if (hit !== undefined) return hit;
    const p = this.producers.get(name);
    if (!p) return undefined;
    this.ranks.set(name, -1); // cycle guard
    const r = this.inferRank(p, name);
    if (r === undefined) this.ranks.delete(name);
    else this.ranks.set(name, r);
    return r;
  }

  private inferRank(p: NodeProto, out: string): number | undefined {
    const ins = p.input ?? [];
    const r = (i: number): number | undefined => (ins[i] ? this.rank(ins[i]!) : undefined);
    const maxOf = (): number | undefined => {
      let m = 0;
      for (let i = 0; i < ins.length; i++) {
        if (!ins[i]) continue;
        const k = this.rank(ins[i]!);
        if (k === undefined || k < 0) return undefined;
        m = Math.max(m, k);
      }
      return m;
    };
    switch (p.op_type) {
      case 'Constant': {
        const t = attrOf(p, 'value')?.t;
        return t ? (t.dims ?? []).length : undefined;
      }
      case 'MatMul': {
        const a = r(0); const b = r(1);
        if (a === undefined || b === undefined || a < 0 || b < 0) return undefined;
        return a === 1 && b === 1 ? 0 : a === 1 ? b - 1 : b === 1 ? a - 1 : Math.max(a, b);
      }
      case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Where': case 'Max': case 'Min':
      case 'Equal': case 'Less': case 'Greater': case 'And': case 'Or':
        return maxOf();
      case 'Gemm': return 2;
      case 'Shape': return 1;
      case 'Size': return 0;
      case 'Gather': {
        const a = r(0); const b = r(1);
        return a === undefined || b === undefined ? undefined : a - 1 + b;
      }
      case 'Unsqueeze': {
        const axes = this.opset >= 13 ? (ins[1] ? this.constValue(ins[1]) : undefined) : intsAttr(p, 'axes');
        const a = r(0);
        return a === undefined || !axes ? undefined : a + axes.length;
      }
      case 'Squeeze': {
        const axes = this.opset >= 13 ? (ins[1] ? this.constValue(ins[1]) : undefined) : intsAttr(p, 'axes');
        const a = r(0);
        return a === undefined || !axes ? undefined : a - axes.length;
      }
      case 'Reshape': {
        const s = ins[1] ? this.constValue(ins[1]) : undefined;
        if (s) return s.length;
        const sp = ins[1] ? this.producers.get(ins[1]) : undefined;
        if (sp?.op_type === 'Shape') return this.rank(sp.input![0]!);
        return undefined;
      }
      case 'Expand': {
        const a = r(0);
        const s = ins[1] ? this.constValue(ins[1]) : undefined;
        const sp = ins[1] ? this.producers.get(ins[1]) : undefined;
        const len = s ? s.length : sp?.op_type === 'Shape' ? this.rank(sp.input![0]!) : undefined;
        return a === undefined || len === undefined ? undefined : Math.max(a, len);
      }
      case 'ReduceSum': case 'ReduceMean': case 'ReduceMax': case 'ReduceMin': case 'ReduceProd': case 'ReduceL2': {
        const a = r(0);
        if (a === undefined) return undefined;
        if (intAttr(p, 'keepdims', 1)) return a;
        const axes = intsAttr(p, 'axes') ?? (ins[1] ? this.constValue(ins[1]) : undefined);
        return axes ? a - axes.length : 0;
      }
      case 'Flatten': return 2;
      case 'TopK': return r(0);
      case 'Einsum': {
        const e = attrOf(p, 'equation')?.s;
        const rhs = e ? new TextDecoder().decode(e).replace(/\s+/g, '').split('->')[1] : undefined;
        return rhs !== undefined && !rhs.includes('...') ? rhs.length : undefined;
      }
      case 'ConstantOfShape': {
        const s = ins[0] ? this.producers.get(ins[0]) : undefined;
        if (s?.op_type === 'Shape') return this.rank(s.input![0]!);
        const c = ins[0] ? this.constValue(ins[0]) : undefined;
        return c?.length;
      }
      case 'Identity': case 'Cast': case 'CastLike': case 'Neg': case 'Sqrt': case 'Exp': case 'Log': case 'Tanh': case 'Erf':
      case 'Sigmoid': case 'Relu': case 'Abs': case 'Reciprocal': case 'Softmax': case 'LogSoftmax': case 'LayerNormalization':
      case 'Transpose': case 'Slice': case 'Concat': case 'Split': case 'Sin': case 'Cos': case 'ScatterND': case 'ScatterElements':
      case 'Dropout': case 'Not': case 'Sign': case 'Trilu': case 'CumSum': case 'GatherElements':
        return out === p.output?.[0] || p.op_type === 'Split' ? r(0) : undefined;
      default:
        return undefined;
    }
  }

  /** Rank or a NotDifferentiable error. */
  needRank(n: NodeProto, name: string): number {
    const r = this.rank(name);
    if (r === undefined || r < 0) throw new NotDifferentiable(n, `the rank of '${name}' is not known`);
    return r;
  }

  /** Reduction over constant axes (attribute before opset 18, input from 18; ReduceSum from 13). */
  reduce(type: string, x: string, axes: number[], keepdims: boolean): string {
    const asInput = type === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    return asInput
      ? this.op(type, [x, this.ints(axes)], { keepdims: keepdims ? 1 : 0 })
      : this.op(type, [x], { axes, keepdims: keepdims ? 1 : 0 });
  }

  /**
   * `g` (shaped like a broadcast result) summed back to the shape of `a` (computed at run
   * time) — or `g` itself when `a` is statically known to have the shape of `out` (the
   * node's output, which `g` has): nothing was broadcast.
   */
  unbroadcast(g: string, a: string, out?: string): string {
    if (out !== undefined) {
      const sa = this.shapes.get(a);
      const so = this.shapes.get(out);
      if (sa && so && sa.length === so.length && sa.every((d, i) => d === so[i] && d !== '?')) return g;
    }
    const ra = this.rank(a);
    const rg = this.rank(g);
    const sa = this.shapeOf(a);
    const sg = this.op('Shape', [g]);
    let padded = sa;
    if (!(ra !== undefined && rg !== undefined && ra === rg)) {
      const diff = this.op('Sub', [this.op('Size', [sg]), this.op('Size', [sa])]);
      const ones = this.op('ConstantOfShape', [this.op('Reshape', [diff, this.ints([1])])], { value: makeTensor('int64', [1], [1]) });
      padded = this.op('Concat', [ones, sa], { axis: 0 });
    }
    const one = this.ints([1]);
    const mask = this.op('And', [this.op('Equal', [padded, one]), this.op('Not', [this.op('Equal', [sg, one])])]);
    const axes = this.op('Reshape', [this.op('NonZero', [mask]), this.ints([-1])]);
    const summed = this.op('ReduceSum', [g, axes], { keepdims: 1, noop_with_empty_axes: 1 });
    return this.op('Reshape', [summed, sa]);
  }

  /**
   * {@link GradBuilder.unbroadcast} for an operand `a` of `out = MatMul(…)` (rank ≥ 2 both):
   * `g` itself when `a`'s batch axes (all but the last two) are statically `out`'s — the
   * product's gradient then has `a`'s shape (a head-split attention's scores and context).
   */
  unbroadcastBatch(g: string, a: string, out: string): string {
    const sa = this.shapes.get(a);
    const so = this.shapes.get(out);
    if (sa && so && sa.length === so.length && sa.slice(0, -2).every((d, i) => d === so[i] && d !== '?')) return g;
    return this.unbroadcast(g, a);
  }

  /** `Unsqueeze` at constant `axes` (attribute before opset 13, input from 13). */
  unsqueeze(x: string, axes: number[]): string {
    return this.opset >= 13 ? this.op('Unsqueeze', [x, this.ints(axes)]) : this.op('Unsqueeze', [x], { axes });
  }

  /**
   * The gradient of `x` in `MatMul(x, W)` for a 2-D weight `W` (an initializer of static shape
   * [K, N]) and `x` of any rank (1-D: a row, e.g. one position's logits after sink-slices):
   * `g · Wᵀ` as one `Gemm` with `transB` over `g` flattened to [rows, N], reshaped to `x`'s
   * shape (`W` has no batch axes: nothing to reduce); undefined when `y` is not such a weight. A `Transpose` of an initializer would be constant-folded by onnxruntime into a
   * transposed copy of the weight at session creation (GPT-2 small's gradient graph: +283 MB
   * beside the weights the forward pass maps from the file); `Gemm` reads the weight as it is.
   */
  matMulTransposed(g: string, y: string, ry: number, x: string): string | undefined {
    const shape = this.shapes.get(y);
    if (ry !== 2 || !this.inits.has(y) || this.producers.has(y) || typeof shape?.[1] !== 'number') return undefined;
    const flat = this.op('Reshape', [g, this.ints([-1, shape[1]])]);
    return this.op('Reshape', [this.op('Gemm', [flat, y], { transB: 1 }), this.shapeOf(x)]);
  }

  /** Swap the last two axes of a value of rank `r`. */
  swapLast(x: string, r: number): string {
    const perm = Array.from({ length: r }, (_, i) => i);
    [perm[r - 2], perm[r - 1]] = [perm[r - 1]!, perm[r - 2]!];
    return this.op('Transpose', [x], { perm });
  }
}

function tensorInts(t: import('../src/onnx/proto.js').TensorProto): number[] | undefined {
  if (t.int64_data?.length) return t.int64_data.map(Number);
  if (t.int32_data?.length) return t.int32_data.map(Number);
  if (t.float_data?.length) return t.float_data.map(Number);
  const raw = t.raw_data;
  if (raw && raw.length) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    if (t.data_type === 7) return Array.from({ length: raw.length / 8 }, (_, i) => Number(dv.getBigInt64(i * 8, true)));
    if (t.data_type === 6) return Array.from({ length: raw.length / 4 }, (_, i) => dv.getInt32(i * 4, true));
    if (t.data_type === 1) return Array.from({ length: raw.length / 4 }, (_, i) => dv.getFloat32(i * 4, true));
  }
  if ((t.dims ?? []).map(Number).reduce((a, b) => a * b, 1) === 0) return [];
  return undefined;
}

/** A rule: gradients of the inputs (null: none), given the gradients of the outputs. */
export type Derivative = (b: GradBuilder, n: NodeProto, gOut: readonly (string | null)[], wants: readonly boolean[]) => (string | null)[];

const unary = (f: (b: GradBuilder, g: string, x: string, y: string, n: NodeProto) => string): Derivative =>
  (b, n, [g]) => [f(b, g!, n.input![0]!, n.output![0]!, n)];

const same: Derivative = (_b, _n, [g]) => [g ?? null];
const reshapeBack: Derivative = (b, n, [g]) => [b.op('Reshape', [g!, b.shapeOf(n.input![0]!)])];

/** The table: ONNX op type → derivative rule. */
export const DERIVATIVES: Readonly<Record<string, Derivative>> = {
  Identity: same,
  Dropout: same,
  Cast: (b, n, [g]) => [b.op('CastLike', [g!, n.input![0]!])],
  CastLike: (b, n, [g]) => [b.op('CastLike', [g!, n.input![0]!]), null],
  Neg: unary((b, g) => b.op('Neg', [g])),
  Add: (b, n, [g], w) => [w[0] ? b.unbroadcast(g!, n.input![0]!, n.output![0]!) : null, w[1] ? b.unbroadcast(g!, n.input![1]!, n.output![0]!) : null],
  Sub: (b, n, [g], w) => [w[0] ? b.unbroadcast(g!, n.input![0]!, n.output![0]!) : null, w[1] ? b.unbroadcast(b.op('Neg', [g!]), n.input![1]!, n.output![0]!) : null],
  Mul: (b, n, [g], w) => {
    const [x, y] = n.input as [string, string];
    return [w[0] ? b.unbroadcast(b.op('Mul', [g!, y]), x, n.output![0]!) : null, w[1] ? b.unbroadcast(b.op('Mul', [g!, x]), y, n.output![0]!) : null];
  },
  Div: (b, n, [g], w) => {
    const [x, y] = n.input as [string, string];
    const out = n.output![0]!;
    return [
      w[0] ? b.unbroadcast(b.op('Div', [g!, y]), x, out) : null,
      w[1] ? b.unbroadcast(b.op('Neg', [b.op('Div', [b.op('Mul', [g!, out]), y])]), y, out) : null,
    ];
  },
  Pow: (b, n, [g], w) => {
    const [x, p] = n.input as [string, string];
    const out = n.output![0]!;
    const px = w[0] ? b.unbroadcast(b.op('Mul', [b.op('Mul', [g!, b.op('CastLike', [p, x])]), b.op('Pow', [x, b.op('Sub', [p, b.op('CastLike', [b.em.constant('float32', [], [1]), p])])])]), x) : null;
    const pp = w[1] ? b.unbroadcast(b.op('Mul', [b.op('Mul', [g!, out]), b.op('Log', [x])]), p) : null;
    return [px, pp];
  },
  Sqrt: unary((b, g, _x, y) => b.op('Div', [b.op('Mul', [g, b.scalar(0.5, g)]), y])),
  Reciprocal: unary((b, g, _x, y) => b.op('Neg', [b.op('Mul', [g, b.op('Mul', [y, y])])])),
  Exp: unary((b, g, _x, y) => b.op('Mul', [g, y])),
  Log: unary((b, g, x) => b.op('Div', [g, x])),
  Tanh: unary((b, g, _x, y) => b.op('Mul', [g, b.op('Sub', [b.scalar(1, g), b.op('Mul', [y, y])])])),
  Sigmoid: unary((b, g, _x, y) => b.op('Mul', [g, b.op('Mul', [y, b.op('Sub', [b.scalar(1, g), y])])])),
  Erf: unary((b, g, x) => b.op('Mul', [g, b.op('Mul', [b.scalar(2 / Math.sqrt(Math.PI), g), b.op('Exp', [b.op('Neg', [b.op('Mul', [x, x])])])])])),
  Relu: unary((b, g, x) => b.op('Mul', [g, b.op('CastLike', [b.op('Greater', [x, b.scalar(0, x)]), g])])),
  Abs: unary((b, g, x) => b.op('Mul', [g, b.op('Sign', [x])])),
  Sin: unary((b, g, x) => b.op('Mul', [g, b.op('Cos', [x])])),
  Cos: unary((b, g, x) => b.op('Neg', [b.op('Mul', [g, b.op('Sin', [x])])])),
  Softmax: unary((b, g, _x, y, n) => {
    const axis = intAttr(n, 'axis', b.opset >= 13 ? -1 : 1);
    if (b.opset < 13 && axis !== -1 && axis !== b.needRank(n, n.input![0]!) - 1) throw new NotDifferentiable(n, 'Softmax before opset 13 over several axes');
    const gy = b.op('Mul', [g, y]);
    return b.op('Sub', [gy, b.op('Mul', [y, b.reduce('ReduceSum', gy, [axis], true)])]);
  }),
  LogSoftmax: unary((b, g, _x, y, n) => {
    const axis = intAttr(n, 'axis', b.opset >= 13 ? -1 : 1);
    return b.op('Sub', [g, b.op('Mul', [b.op('Exp', [y]), b.reduce('ReduceSum', g, [axis], true)])]);
  }),
  MatMul: (b, n, [g], w) => {
    const [x, y] = n.input as [string, string];
    const rx = b.needRank(n, x);
    const ry = b.needRank(n, y);
    if (rx < 2 || ry < 2) {
      // numpy semantics: a 1-D x is a row [1, k], a 1-D y a column [k, 1], the axis dropped from the result.
      const x2 = rx === 1 ? b.unsqueeze(x, [0]) : x;
      const y2 = ry === 1 ? b.unsqueeze(y, [1]) : y;
      const g2 = rx === 1 && ry === 1 ? b.op('Reshape', [g!, b.ints([1, 1])]) : ry === 1 ? b.unsqueeze(g!, [-1]) : b.unsqueeze(g!, [-2]);
      const r2x = Math.max(rx, 2);
      const r2y = Math.max(ry, 2);
      return [
        w[0] ? b.matMulTransposed(g!, y, ry, x) ?? b.op('Reshape', [b.unbroadcast(b.op('MatMul', [g2, b.swapLast(y2, r2y)]), x2), b.shapeOf(x)]) : null,
        w[1] ? b.op('Reshape', [b.unbroadcast(b.op('MatMul', [b.swapLast(x2, r2x), g2]), y2), b.shapeOf(y)]) : null,
      ];
    }
    const out = n.output![0]!;
    return [
      w[0] ? b.matMulTransposed(g!, y, ry, x) ?? b.unbroadcastBatch(b.op('MatMul', [g!, b.swapLast(y, ry)]), x, out) : null,
      w[1] ? b.unbroadcastBatch(b.op('MatMul', [b.swapLast(x, rx), g!]), y, out) : null,
    ];
  },
  Gemm: (b, n, [g], w) => {
    const [A, B, C] = n.input as [string, string, string | undefined];
    const alpha = floatAttr(n, 'alpha', 1);
    const beta = floatAttr(n, 'beta', 1);
    const tA = intAttr(n, 'transA', 0);
    const tB = intAttr(n, 'transB', 0);
    const gA = !w[0] ? null : tA
      ? b.op('Gemm', [B, g!], { alpha: { f: alpha }, transA: tB, transB: 1 })
      : b.op('Gemm', [g!, B], { alpha: { f: alpha }, transB: tB ? 0 : 1 });
    const gB = !w[1] ? null : tB
      ? b.op('Gemm', [g!, A], { alpha: { f: alpha }, transA: 1, transB: tA })
      : b.op('Gemm', [A, g!], { alpha: { f: alpha }, transA: tA ? 0 : 1 });
    const gC = C && w[2] ? b.unbroadcast(beta === 1 ? g! : b.op('Mul', [g!, b.scalar(beta, g!)]), C) : null;
    return [gA, gB, gC];
  },
  LayerNormalization: (b, n, gOut, w) => {
    const g = gOut[0];
    if (!g) throw new NotDifferentiable(n, 'gradient through the mean or inverse standard deviation outputs');
    const [x, scale, bias] = n.input as [string, string, string | undefined];
    const axis = intAttr(n, 'axis', -1);
    const eps = floatAttr(n, 'epsilon', 1e-5);
    let axes: number[];
    if (axis < 0) axes = Array.from({ length: -axis }, (_, i) => axis + i);
    else {
      const r = b.needRank(n, x);
      axes = Array.from({ length: r - axis }, (_, i) => axis + i);
    }
    const mean = b.reduce('ReduceMean', x, axes, true);
    const xc = b.op('Sub', [x, mean]);
    const variance = b.reduce('ReduceMean', b.op('Mul', [xc, xc]), axes, true);
    const rstd = b.op('Reciprocal', [b.op('Sqrt', [b.op('Add', [variance, b.scalar(eps, x)])])]);
    const xhat = b.op('Mul', [xc, rstd]);
    let gx: string | null = null;
    if (w[0]) {
      const gh = b.op('Mul', [g, scale]);
      const m1 = b.reduce('ReduceMean', gh, axes, true);
      const m2 = b.reduce('ReduceMean', b.op('Mul', [gh, xhat]), axes, true);
      gx = b.op('Mul', [rstd, b.op('Sub', [b.op('Sub', [gh, m1]), b.op('Mul', [xhat, m2])])]);
    }
    const gs = w[1] ? b.unbroadcast(b.op('Mul', [g, xhat]), scale) : null;
    const gb = bias && w[2] ? b.unbroadcast(g, bias) : null;
    return [gx, gs, gb];
  },
  ReduceSum: (b, n, g) => reduceBack(b, n, g[0]!, false),
  ReduceMax: (b, n, g) => extremumReduceBack(b, n, g[0]!),
  ReduceMin: (b, n, g) => extremumReduceBack(b, n, g[0]!),
  ReduceL2: (b, n, [g]) => {
    // y = sqrt(Σ x²): dx = g · x / y (0 where y = 0).
    const x = n.input![0]!;
    const { gk, yk } = keptDims(b, n, g!);
    const y = b.op('Expand', [yk, b.shapeOf(x)]);
    const zero = b.scalar(0, x);
    const safe = b.op('Where', [b.op('Equal', [y, zero]), b.scalar(1, x), y]);
    return [b.op('Where', [b.op('Equal', [y, zero]), zero, b.op('Div', [b.op('Mul', [b.op('Expand', [gk, b.shapeOf(x)]), x]), safe])]), null];
  },
  Max: (b, n, [g], w) => extremumBack(b, n, g!, w),
  Min: (b, n, [g], w) => extremumBack(b, n, g!, w),
  CumSum: (b, n, [g], w) => {
    // The adjoint of a cumulative sum is the cumulative sum the other way (exclusive stays exclusive).
    if (!w[0]) return [null, null];
    const reverse = intAttr(n, 'reverse', 0);
    const exclusive = intAttr(n, 'exclusive', 0);
    return [b.op('CumSum', [g!, n.input![1]!], { exclusive, reverse: reverse ? 0 : 1 }), null];
  },
  Einsum: (b, n, [g], w) => einsumBack(b, n, g!, w),
  ReduceMean: (b, n, g) => reduceBack(b, n, g[0]!, true),
  Reshape: reshapeBack,
  Flatten: reshapeBack,
  Squeeze: reshapeBack,
  Unsqueeze: reshapeBack,
  Transpose: (b, n, [g]) => {
    const perm = intsAttr(n, 'perm');
    if (!perm) return [b.op('Transpose', [g!])];
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => { inv[p] = i; });
    return [b.op('Transpose', [g!], { perm: inv })];
  },
  Expand: (b, n, [g]) => [b.unbroadcast(g!, n.input![0]!), null],
  Where: (b, n, [g], w) => {
    const [c, x, y] = n.input as [string, string, string];
    const z = b.scalar(0, g!);
    return [null, w[1] ? b.unbroadcast(b.op('Where', [c, g!, z]), x, n.output![0]!) : null, w[2] ? b.unbroadcast(b.op('Where', [c, z, g!]), y, n.output![0]!) : null];
  },
  Gather: (b, n, [g], w) => {
    if (!w[0]) return [null, null];
    const [data, idx] = n.input as [string, string];
    const r = b.needRank(n, data);
    const q = b.needRank(n, idx);
    let axis = intAttr(n, 'axis', 0);
    if (axis < 0) axis += r;
    const shape = b.shapeOf(data);
    const dim = b.op('Gather', [shape, b.ints([axis])]);
    const i64 = b.op('Cast', [idx], { to: 7 });
    const norm = b.op('Where', [b.op('Less', [i64, b.em.constant('int64', [], [0])]), b.op('Add', [i64, b.op('Reshape', [dim, b.ints([])])]), i64]);
    const ind = b.op('Unsqueeze', [norm, b.ints([-1])]);
    // Move the gathered axis (data) / the index axes (g) to the front, scatter-add, move back.
    const permD = [axis, ...Array.from({ length: r }, (_, i) => i).filter((i) => i !== axis)];
    const permG = [...Array.from({ length: q }, (_, i) => axis + i), ...Array.from({ length: axis }, (_, i) => i), ...Array.from({ length: r - 1 - axis }, (_, i) => axis + q + i)];
    const gT = permG.every((p, i) => p === i) ? g! : b.op('Transpose', [g!], { perm: permG });
    const zeroT = b.op('CastLike', [b.op('ConstantOfShape', [b.op('Gather', [shape, b.ints(permD)])], { value: makeTensor('float32', [1], [0]) }), g!]);
    const sc = b.op('ScatterND', [zeroT, ind, gT], { reduction: 'add' });
    if (permD.every((p, i) => p === i)) return [sc, null];
    const inv = new Array<number>(r);
    permD.forEach((p, i) => { inv[p] = i; });
    return [b.op('Transpose', [sc], { perm: inv }), null];
  },
  Slice: (b, n, [g], w) => {
    if (!w[0]) return [null];
    const [x, starts, ends, axesIn, stepsIn] = n.input as string[];
    const st = starts ? b.constValue(starts) : undefined;
    const steps = stepsIn ? b.constValue(stepsIn) : undefined;
    const axesC = axesIn ? b.constValue(axesIn) : undefined;
    if ((stepsIn && (!steps || steps.some((s) => s !== 1))) || (axesIn && !axesC)) {
      // Any step (or run-time axes): slice the element indices of x the same way, then
      // scatter the gradient into zeros at those indices (they are distinct).
      const shape = b.shapeOf(x);
      const count = b.op('Size', [x]);
      const iota = b.op('Reshape', [b.op('Range', [b.em.constant('int64', [], [0]), count, b.em.constant('int64', [], [1])]), shape]);
      const idx = b.op('Slice', [iota, ...(n.input as string[]).slice(1)]);
      const flat = b.op('Reshape', [b.zerosLike(x), b.ints([-1])]);
      const sc = b.op('ScatterElements', [flat, b.op('Reshape', [idx, b.ints([-1])]), b.op('Reshape', [g!, b.ints([-1])])], { axis: 0 });
      return [b.op('Reshape', [sc, shape]), null, null, null, null];
    }
    const k = st?.length ?? undefined;
    const r = b.needRank(n, x);
    const count = k ?? axesC?.length;
    if (count === undefined) throw new NotDifferentiable(n, 'Slice with starts computed at run time and no axes');
    const axes = (axesC ?? Array.from({ length: count }, (_, i) => i)).map((a) => (a < 0 ? a + r : a));
    // Clamp starts/ends to [0, dim] as Slice does (step 1), then pad the gradient back.
    const shape = b.shapeOf(x);
    const dims = b.op('Gather', [shape, b.ints(axes)]);
    const zero = b.ints(Array(axes.length).fill(0));
    const norm = (v: string): string => {
      const v64 = b.op('Cast', [v], { to: 7 });
      const wrapped = b.op('Where', [b.op('Less', [v64, zero]), b.op('Add', [v64, dims]), v64]);
      return b.op('Min', [b.op('Max', [wrapped, zero]), dims]);
    };
    const s0 = norm(starts!);
    const e0 = b.op('Max', [norm(ends!), s0]);
    const before = b.op('ScatterElements', [b.ints(Array(r).fill(0)), b.ints(axes), s0]);
    const after = b.op('ScatterElements', [b.ints(Array(r).fill(0)), b.ints(axes), b.op('Sub', [dims, e0])]);
    const pads = b.op('Concat', [before, after], { axis: 0 });
    return [b.op('Pad', [g!, pads]), null, null, null, null];
  },
  Concat: (b, n, [g], w) => {
    const ins = n.input as string[];
    const r = b.needRank(n, ins[0]!);
    let axis = intAttr(n, 'axis', 0);
    if (axis < 0) axis += r;
    let start = b.ints([0]);
    return ins.map((x, i) => {
      const len = b.op('Gather', [b.shapeOf(x), b.ints([axis])]);
      const end = b.op('Add', [start, len]);
      const d = w[i] ? b.op('Slice', [g!, start, end, b.ints([axis])]) : null;
      start = end;
      return d;
    });
  },
  Split: (b, n, gOut) => {
    const x = n.input![0]!;
    const r = b.needRank(n, x);
    let axis = intAttr(n, 'axis', 0);
    if (axis < 0) axis += r;
    const parts = (n.output ?? []).map((o, i) => gOut[i] ?? b.zerosLike(o));
    return [b.op('Concat', parts, { axis }), null];
  },
  ScatterND: (b, n, [g], w) => {
    if (attrOf(n, 'reduction')?.s && new TextDecoder().decode(attrOf(n, 'reduction')!.s!) !== 'none') throw new NotDifferentiable(n, 'ScatterND with a reduction');
    const [, idx, upd] = n.input as [string, string, string];
    return [
      w[0] ? b.op('ScatterND', [g!, idx, b.zerosLike(upd)]) : null,
      null,
      w[2] ? b.op('GatherND', [g!, idx]) : null,
    ];
  },
  ScatterElements: (b, n, [g], w) => {
    if (attrOf(n, 'reduction')?.s && new TextDecoder().decode(attrOf(n, 'reduction')!.s!) !== 'none') throw new NotDifferentiable(n, 'ScatterElements with a reduction');
    const [, idx, upd] = n.input as [string, string, string];
    const axis = intAttr(n, 'axis', 0);
    return [
      w[0] ? b.op('ScatterElements', [g!, idx, b.zerosLike(upd)], { axis }) : null,
      null,
      w[2] ? b.op('GatherElements', [g!, idx], { axis }) : null,
    ];
  },
};

function reduceBack(b: GradBuilder, n: NodeProto, g: string, mean: boolean): (string | null)[] {
  const x = n.input![0]!;
  const keep = intAttr(n, 'keepdims', 1);
  let axes = intsAttr(n, 'axes') ?? (n.input![1] ? b.constValue(n.input![1]) : undefined);
  if (n.input![1] && !axes) throw new NotDifferentiable(n, 'a reduction over axes computed at run time');
  const shape = b.shapeOf(x);
  let gk = g;
  if (!keep && axes && axes.length) {
    const r = b.needRank(n, x);
    axes = axes.map((a) => (a < 0 ? a + r : a)).sort((p, q) => p - q);
    gk = b.unsqueeze(g, axes);
  }
  let d = b.op('Expand', [gk, shape]);
  if (mean) {
    const ratio = b.op('Div', [b.op('Size', [x]), b.op('Size', [n.output![0]!])]);
    d = b.op('Div', [d, b.op('CastLike', [ratio, g])]);
  }
  return [d, null];
}

/** The reduction's axes (normalized, sorted; all axes when none are given), or a NotDifferentiable error. */
function reduceAxes(b: GradBuilder, n: NodeProto): number[] | undefined {
  const axes = intsAttr(n, 'axes') ?? (n.input![1] ? b.constValue(n.input![1]) : undefined);
  if (n.input![1] && !axes) throw new NotDifferentiable(n, 'a reduction over axes computed at run time');
  if (!axes || axes.length === 0) return undefined;
  const r = b.needRank(n, n.input![0]!);
  return axes.map((a) => (a < 0 ? a + r : a)).sort((p, q) => p - q);
}

/** The output gradient and the output itself with the reduced axes kept (size 1), so they broadcast against the input. */
function keptDims(b: GradBuilder, n: NodeProto, g: string): { gk: string; yk: string } {
  const y = n.output![0]!;
  if (intAttr(n, 'keepdims', 1)) return { gk: g, yk: y };
  const axes = reduceAxes(b, n);
  if (!axes) {
    const r = b.needRank(n, n.input![0]!);
    const ones = b.ints(Array(r).fill(1));
    return { gk: b.op('Reshape', [g, ones]), yk: b.op('Reshape', [y, ones]) };
  }
  return { gk: b.unsqueeze(g, axes), yk: b.unsqueeze(y, axes) };
}

/** ReduceMax / ReduceMin: the gradient goes to the elements equal to the extremum, shared evenly among ties (as torch.amax). */
function extremumReduceBack(b: GradBuilder, n: NodeProto, g: string): (string | null)[] {
  const x = n.input![0]!;
  const { gk, yk } = keptDims(b, n, g);
  const mask = b.op('CastLike', [b.op('Equal', [x, yk]), x]);
  const axes = reduceAxes(b, n);
  const count = axes ? b.reduce('ReduceSum', mask, axes, true) : b.op('ReduceSum', [mask], { keepdims: 1 });
  return [b.op('Div', [b.op('Mul', [mask, gk]), count]), null];
}

/** Elementwise Max / Min of any number of inputs: each input gets the gradient where it is the result, ties shared evenly. */
function extremumBack(b: GradBuilder, n: NodeProto, g: string, w: readonly boolean[]): (string | null)[] {
  const ins = n.input as string[];
  const out = n.output![0]!;
  const masks = ins.map((x) => b.op('CastLike', [b.op('Equal', [x, out]), g]));
  let count = masks[0]!;
  for (const m of masks.slice(1)) count = b.op('Add', [count, m]);
  const share = b.op('Div', [g, count]);
  return ins.map((x, i) => (w[i] ? b.unbroadcast(b.op('Mul', [share, masks[i]!]), x, out) : null));
}

/**
 * Einsum with one or two operands: the gradient of an operand is the einsum of the output
 * gradient with the other operand, back to that operand's subscripts (summed back over
 * broadcast `...` dims). Subscripts repeated within a term (diagonals) and indices that occur
 * only in the operand being differentiated (summed away by it alone) are not differentiable here.
 */
function einsumBack(b: GradBuilder, n: NodeProto, g: string, w: readonly boolean[]): (string | null)[] {
  const a = attrOf(n, 'equation')?.s;
  const eq = (a ? new TextDecoder().decode(a) : '').replace(/\s+/g, '');
  const ins = n.input as string[];
  if (ins.length < 1 || ins.length > 2) throw new NotDifferentiable(n, `Einsum with ${ins.length} operands (one or two are differentiable)`);
  const [lhs, rhsGiven] = eq.split('->') as [string, string | undefined];
  const terms = lhs.split(',');
  if (terms.length !== ins.length) throw new NotDifferentiable(n, `Einsum equation '${eq}' does not match its ${ins.length} inputs`);
  const letters = (t: string): string[] => t.replace('...', '').split('');
  let rhs = rhsGiven;
  if (rhs === undefined) {
    // Implicit output: the letters that occur once, in alphabetical order (after '...').
    const all = terms.flatMap(letters);
    rhs = (terms.some((t) => t.includes('...')) ? '...' : '') + [...new Set(all)].filter((c) => all.indexOf(c) === all.lastIndexOf(c)).sort().join('');
  }
  for (const t of [...terms, rhs]) {
    const ls = letters(t);
    if (new Set(ls).size !== ls.length) throw new NotDifferentiable(n, `Einsum '${eq}' with a subscript repeated within a term`);
  }
  return ins.map((x, i) => {
    if (!w[i]) return null;
    const others = terms.filter((_, j) => j !== i);
    const avail = new Set([...letters(rhs!), ...others.flatMap(letters)]);
    const missing = letters(terms[i]!).filter((c) => !avail.has(c));
    if (missing.length) throw new NotDifferentiable(n, `Einsum '${eq}': index ${missing.join(', ')} is summed within operand ${i} alone`);
    let backIns = [rhs!, ...others];
    if (!terms[i]!.includes('...') && backIns.some((t) => t.includes('...'))) {
      // The operand has no '...' but the others do: spell the '...' dims out as letters (summed away).
      const used = new Set([...terms, rhs!].flatMap(letters));
      const free = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'.split('').filter((c) => !used.has(c));
      const ell = ins.map((v, j) => (terms[j]!.includes('...') ? b.needRank(n, v) - letters(terms[j]!).length : 0));
      const most = Math.max(...ell);
      if (most > free.length) throw new NotDifferentiable(n, `Einsum '${eq}' with too many '...' dims`);
      const spell = (t: string, k: number): string => t.replace('...', free.slice(most - k, most).join(''));
      const others2 = terms.map((t, j) => spell(t, ell[j]!)).filter((_, j) => j !== i);
      backIns = [spell(rhs!, most), ...others2];
    }
    const back = `${backIns.join(',')}->${terms[i]}`;
    const d = b.op('Einsum', [g, ...ins.filter((_, j) => j !== i)], { equation: back });
    return terms[i]!.includes('...') ? b.unbroadcast(d, x) : d;
  });
}
