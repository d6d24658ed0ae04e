/**
 * Shape inference for ONNX graphs, ONNX-style, in TypeScript (onnxruntime-node does not
 * expose its own, and the product needs no Python): the element type and shape of every
 * value a node computes, from the graph's inputs, initializers and constants, through the
 * operators transformer exports use (TorchScript and dynamo exports of GPT-2 and Llama-style
 * models, and what onnsight inserts: gradients, scatters, gathers, reductions).
 *
 * Dims are numbers, symbols (`batch_size`, `sequence_length`, `s70`) or polynomials of
 * symbols in a canonical text form (`past_sequence_length + sequence_length`,
 * `batch_size*sequence_length`, `s70 + 1`), or `null` where a size is not known. Small
 * integer tensors (the shape arithmetic exporters emit: `Shape → Gather → Unsqueeze →
 * Concat → Reshape`) are evaluated element by element with the same dims, so a Reshape to a
 * computed shape gets its shape. An operator this module does not know, or an input it could
 * not type, leaves the outputs untyped or their unknown dims `null`: never a guessed shape.
 * Symbolic slices assume their bounds lie within the sliced dim (what exporters emit).
 * @module
 */
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from './proto.js';
import { attrOf, intAttr, intsAttr } from './attributes.js';
import { DataType } from './proto.js';
import { constantNodeTensor } from './view.js';
import { tensorData } from './graph-builder.js';

/** A dim: a size, a symbol or polynomial of symbols in canonical text, or null (unknown). */
export type SymDim = number | string | null;

/** An element type (ONNX `DataType`) and shape (null: rank unknown). */
export interface TypeShape {
  elem: number;
  shape: SymDim[] | null;
}

/** What {@link inferShapes} found. */
export interface InferredShapes {
  /** Type and shape of every value it could type (seeds included). */
  types: Map<string, TypeShape>;
  /** Elements of small integer tensors (shapes, indices) it could evaluate; `null` elements are unknown. */
  values: Map<string, SymDim[]>;
}

/** Options of {@link inferShapes}. */
export interface InferOptions {
  /** Types known beforehand (win over the graph's own value_info and over what inference finds). */
  seed?: ReadonlyMap<string, TypeShape>;
  /** Also trust the graph's value_info and outputs (default true; false to check them). */
  valueInfo?: boolean;
  /** Types used for a value when inference finds no shape for it (an operator it does not know). */
  fallback?: ReadonlyMap<string, TypeShape>;
  /**
   * Sizes of symbols (`{ batch_size: 34, sequence_length: 8 }`) for a graph run at one size:
   * comparisons, min/max and slice clamps between symbolic sizes are decided by them (shapes
   * stay symbolic; what they decide holds for these sizes).
   */
  bind?: Readonly<Record<string, number>>;
  /** Only these nodes are inferred (in this order; default every node of the graph, in its order). */
  nodes?: readonly NodeProto[];
}

// ---------------------------------------------------------------------------------------
// Polynomials over symbols: Map<monomial, coefficient>, a monomial being sorted factors
// joined by '*' ('' for the constant term).

type Poly = Map<string, number>;

const SYMBOL = /^[A-Za-z_][A-Za-z0-9_.:/]*$/;

/** The polynomial of a dim (null for an unknown dim or one that does not parse). */
function poly(d: SymDim): Poly | null {
  if (d === null) return null;
  if (typeof d === 'number') return new Map(d === 0 ? [] : [['', d]]);
  const p: Poly = new Map();
  const text = d.replace(/\s+/g, ' ').trim();
  const terms = text.split(/ (?=[+-] )/);
  for (let t of terms) {
    let sign = 1;
    if (t.startsWith('+ ')) t = t.slice(2);
    else if (t.startsWith('- ')) { sign = -1; t = t.slice(2); }
    let coef = sign;
    const atoms: string[] = [];
    for (const f of t.split('*').map((x) => x.trim())) {
      if (/^-?\d+$/.test(f)) coef *= Number(f);
      else if (SYMBOL.test(f)) atoms.push(f);
      else return new Map([[`(${text})`, 1]]); // not a polynomial we read: one opaque symbol
    }
    const key = atoms.sort().join('*');
    p.set(key, (p.get(key) ?? 0) + coef);
  }
  for (const [k, v] of p) if (v === 0) p.delete(k);
  return p;
}

/** The canonical dim of a polynomial. */
function dimOf(p: Poly | null): SymDim {
  if (!p) return null;
  const terms = [...p].filter(([, c]) => c !== 0);
  if (terms.every(([k]) => k === '')) return terms.length ? terms[0]![1] : 0;
  terms.sort(([a], [b]) => (a === '' ? 1 : b === '' ? -1 : a < b ? -1 : a > b ? 1 : 0));
  let s = '';
  for (const [k, c] of terms) {
    const mag = Math.abs(c);
    const body = k === '' ? String(mag) : mag === 1 ? k : `${mag}*${k}`;
    s += s === '' ? (c < 0 ? `-${body}` : body) : c < 0 ? ` - ${body}` : ` + ${body}`;
  }
  return s;
}

function padd(a: Poly, b: Poly, sign = 1): Poly {
  const r = new Map(a);
  for (const [k, v] of b) r.set(k, (r.get(k) ?? 0) + sign * v);
  for (const [k, v] of r) if (v === 0) r.delete(k);
  return r;
}

function pmul(a: Poly, b: Poly): Poly {
  const r: Poly = new Map();
  for (const [ka, va] of a) {
    for (const [kb, vb] of b) {
      const key = [...(ka ? ka.split('*') : []), ...(kb ? kb.split('*') : [])].sort().join('*');
      r.set(key, (r.get(key) ?? 0) + va * vb);
    }
  }
  for (const [k, v] of r) if (v === 0) r.delete(k);
  return r;
}

/** a / b when exact (b a single term dividing every term of a), else null. */
function pdiv(a: Poly, b: Poly): Poly | null {
  if (b.size !== 1) return null;
  const [[kb, vb]] = [...b] as [[string, number]];
  const fb = kb ? kb.split('*') : [];
  const r: Poly = new Map();
  for (const [ka, va] of a) {
    if (va % vb !== 0) return null;
    const fa = ka ? ka.split('*') : [];
    for (const f of fb) {
      const i = fa.indexOf(f);
      if (i < 0) return null;
      fa.splice(i, 1);
    }
    r.set(fa.join('*'), va / vb);
  }
  return r;
}

const add = (a: SymDim, b: SymDim): SymDim => { const [p, q] = [poly(a), poly(b)]; return p && q ? dimOf(padd(p, q)) : null; };
const sub = (a: SymDim, b: SymDim): SymDim => { const [p, q] = [poly(a), poly(b)]; return p && q ? dimOf(padd(p, q, -1)) : null; };
const mul = (a: SymDim, b: SymDim): SymDim => { const [p, q] = [poly(a), poly(b)]; return p && q ? dimOf(pmul(p, q)) : null; };
/** Integer division: exact for numbers (floor) and for polynomials a single term divides; else null. */
const div = (a: SymDim, b: SymDim): SymDim => {
  if (typeof a === 'number' && typeof b === 'number') return b === 0 ? null : Math.floor(a / b);
  const [p, q] = [poly(a), poly(b)];
  return p && q ? dimOf(pdiv(p, q)) : null;
};

/** Canonical form of a dim (`b + a` → `a + b`); numbers and null unchanged. */
export function canonicalDim(d: SymDim): SymDim {
  return typeof d === 'string' ? dimOf(poly(d)) : d;
}

/** The value of a dim under symbol values (null when a symbol is unbound or the dim unknown). */
export function evalDim(d: SymDim, bind: Readonly<Record<string, number>>): number | null {
  const p = poly(d);
  if (!p) return null;
  let s = 0;
  for (const [k, c] of p) {
    let t = c;
    for (const f of k ? k.split('*') : []) {
      const v = bind[f];
      if (v === undefined) return null;
      t *= v;
    }
    s += t;
  }
  return s;
}

/**
 * Sizes of symbols during one {@link inferShapes} call (its `bind` option): comparisons,
 * min/max and clamps between symbolic sizes are decided by them, arithmetic stays symbolic.
 */
let bound: Readonly<Record<string, number>> = {};
/** A dim's size: itself, or its value under the bound symbols (null when not bound). */
const sizeOf = (d: SymDim): number | null => (typeof d === 'number' ? d : d === null ? null : evalDim(d, bound));

const product = (ds: readonly SymDim[]): SymDim => ds.reduce<SymDim>((p, d) => mul(p, d), 1);

/** Broadcast of two dims (numpy rules); null when they cannot be told apart. */
function bdim(x: SymDim, y: SymDim): SymDim {
  if (x === y) return x;
  if (x === 1) return y;
  if (y === 1) return x;
  if (x === null || y === null) return typeof x === 'number' && x !== 1 ? x : typeof y === 'number' && y !== 1 ? y : null;
  if (typeof x === 'number' && typeof y === 'number') return null; // a mismatch: not ours to guess
  if (typeof x === 'number') return x; // a symbol broadcast against a size > 1 is that size
  if (typeof y === 'number') return y;
  return canonicalDim(x) === canonicalDim(y) ? canonicalDim(x) : null;
}

function broadcast(a: readonly SymDim[], b: readonly SymDim[]): SymDim[] {
  const r = Math.max(a.length, b.length);
  const out: SymDim[] = [];
  // (an unknown dim is null, not a missing one: only dims before a shape's start are 1)
  for (let i = 0; i < r; i++) out.push(bdim(i >= r - a.length ? a[a.length - r + i]! : 1, i >= r - b.length ? b[b.length - r + i]! : 1));
  return out;
}

// ---------------------------------------------------------------------------------------

const INT_TYPES = new Set<number>([DataType.INT64, DataType.INT32, DataType.INT16, DataType.INT8, DataType.UINT8, DataType.UINT16, DataType.UINT32, DataType.UINT64, DataType.BOOL]);
/** Integer tensors up to this many elements are evaluated (shape arithmetic, index lists). */
const MAX_VALUES = 4096;

function tensorInts(t: TensorProto): SymDim[] | undefined {
  if (!INT_TYPES.has(t.data_type ?? 0)) return undefined;
  const n = (t.dims ?? []).reduce<number>((p, d) => p * Number(d), 1);
  if (n > MAX_VALUES) return undefined;
  try {
    return Array.from(tensorData(t) as ArrayLike<number | bigint | boolean>, (v) => Number(v));
  } catch {
    return undefined;
  }
}

const ELEMENTWISE = new Set(['Identity', 'Softmax', 'LogSoftmax', 'Relu', 'LeakyRelu', 'Elu', 'Selu', 'Tanh', 'Sigmoid', 'HardSigmoid', 'Softplus', 'Exp', 'Log', 'Sqrt', 'Abs', 'Neg', 'Erf', 'Reciprocal', 'Floor', 'Ceil', 'Not', 'Gelu', 'FastGelu', 'IsNaN', 'IsInf', 'Sign', 'Cos', 'Sin', 'Round', 'ScatterND', 'ScatterElements', 'CastLike', 'Trilu', 'CumSum', 'Clip', 'Hardmax', 'Mish', 'HardSwish', 'Cast', 'BitwiseNot']);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Mod', 'BitShift', 'Sum', 'Mean', 'PRelu', 'BitwiseAnd', 'BitwiseOr', 'BitwiseXor']);
const BOOL_OUT = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf']);
const REDUCE = new Set(['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp', 'ReduceSumSquare']);
/** Slice bounds at or beyond this are "to the end" (INT64_MAX, INT32_MAX sentinels). */
const HUGE = 2 ** 30;

/** The types of one node's outputs (undefined: not known) and the values of its first output, if evaluable. */
function inferNode(n: NodeProto, opset: number, type: (x: string) => TypeShape | undefined, vals: (x: string) => SymDim[] | undefined): { out: (TypeShape | undefined)[]; value?: SymDim[] } {
  const op = n.op_type ?? '';
  const inNames = n.input ?? [];
  const ins = inNames.map((x) => (x ? type(x) : undefined));
  const iv = inNames.map((x) => (x ? vals(x) : undefined));
  const x = ins[0];
  const xs = x?.shape ?? null;
  const one = (t: TypeShape | undefined, value?: SymDim[]): { out: (TypeShape | undefined)[]; value?: SymDim[] } => ({ out: [t], ...(value ? { value } : {}) });
  const rank = (a: number, r: number): number => (a < 0 ? a + r : a);
  const axesFrom = (i: number, attr = 'axes'): number[] | undefined => {
    if (inNames[i]) { const v = iv[i]; return v && v.every((d) => typeof d === 'number') ? (v as number[]) : undefined; }
    return intsAttr(n, attr);
  };
  if (n.domain && n.domain !== 'ai.onnx') return { out: [] };

  switch (op) {
    case 'Constant': {
      const t = constantNodeTensor(n);
      if (!t) return { out: [] };
      return one({ elem: t.data_type ?? DataType.FLOAT, shape: (t.dims ?? []).map(Number) }, tensorInts(t));
    }
    case 'ConstantOfShape': {
      const s = iv[0];
      const t = attrOf(n, 'value')?.t;
      const elem = t?.data_type ?? DataType.FLOAT;
      if (!s) return one(ins[0]?.shape && typeof ins[0].shape[0] === 'number' ? { elem, shape: Array.from({ length: ins[0].shape[0] }, () => null) } : undefined);
      const fill = t ? tensorInts(t)?.[0] : 0;
      const count = s.every((d) => typeof d === 'number') ? (s as number[]).reduce((p, d) => p * d, 1) : Infinity;
      return one({ elem, shape: s }, fill !== undefined && count <= MAX_VALUES ? Array.from({ length: count }, () => fill) : undefined);
    }
    case 'Shape': {
      if (!xs) return one({ elem: DataType.INT64, shape: [null] });
      const r = xs.length;
      const norm = (v: number): number => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
      const s = xs.slice(norm(intAttr(n, 'start', 0)), norm(intAttr(n, 'end', r)));
      return one({ elem: DataType.INT64, shape: [s.length] }, s);
    }
    case 'Size':
      return one({ elem: DataType.INT64, shape: [] }, xs ? [product(xs)] : undefined);
  }
  if (!x) return { out: [] };
  const elem = x.elem;

  if (op === 'Cast') {
    const to = intAttr(n, 'to', DataType.FLOAT);
    return one({ elem: to, shape: xs }, INT_TYPES.has(to) ? iv[0] : undefined);
  }
  if (op === 'Dropout') return { out: [{ elem, shape: xs }, { elem: DataType.BOOL, shape: xs }] };
  if (op === 'LayerNormalization' || op === 'SimplifiedLayerNormalization' || op === 'RMSNormalization') {
    const stat = xs ? (() => { const a = rank(intAttr(n, 'axis', -1), xs.length); return xs.map((d, i) => (i < a ? d : 1)); })() : null;
    return { out: [{ elem, shape: xs }, { elem: DataType.FLOAT, shape: stat }, { elem: DataType.FLOAT, shape: stat }] };
  }
  if (ELEMENTWISE.has(op)) {
    const e = BOOL_OUT.has(op) ? DataType.BOOL : op === 'CastLike' ? (ins[1]?.elem ?? elem) : elem;
    let value: SymDim[] | undefined;
    const v = iv[0];
    if (v && (op === 'Identity' || op === 'CastLike')) value = v;
    else if (v && op === 'Neg') value = v.map((d) => mul(d, -1));
    else if (v && op === 'Not') value = v.map((d) => { const z = sizeOf(d); return z === null ? null : Number(!z); });
    else if (v && op === 'Abs') value = v.map((d) => (typeof d === 'number' ? Math.abs(d) : null));
    else if (v && (op === 'ScatterElements' || op === 'ScatterND') && xs?.length === 1 && iv[1] && iv[2] && !attrOf(n, 'reduction')) {
      // 1-D data: data[idx[i]] = upd[i] (ScatterND's indices are [k, 1] here)
      const out = [...v];
      const idx = iv[1];
      let ok = idx.length === iv[2].length;
      idx.forEach((k, i) => { if (typeof k !== 'number' || k >= out.length || k < -out.length) ok = false; else out[k < 0 ? k + out.length : k] = iv[2]![i]!; });
      if (ok) value = out;
    }
    return one({ elem: e, shape: xs }, value);
  }
  if (BROADCAST.has(op)) {
    let s: SymDim[] | null = xs;
    for (const t of ins.slice(1)) s = s && t?.shape ? broadcast(s, t.shape) : null;
    const e = op === 'Where' ? (ins[1]?.elem ?? elem) : BOOL_OUT.has(op) ? DataType.BOOL : elem;
    return one({ elem: e, shape: s }, evalBroadcast(op, iv, s));
  }
  switch (op) {
    case 'Range': {
      const [a, b, d] = [iv[0]?.[0], iv[1]?.[0], iv[2]?.[0]];
      let len: SymDim = null;
      if (typeof a === 'number' && typeof b === 'number' && typeof d === 'number' && d !== 0) len = Math.max(0, Math.ceil((b - a) / d));
      else if (d === 1 && a !== undefined && b !== undefined) len = sub(b, a);
      const value = typeof len === 'number' && len <= MAX_VALUES && typeof a === 'number' && typeof d === 'number' ? Array.from({ length: len }, (_, i) => a + i * d) : undefined;
      return one({ elem, shape: [len] }, value);
    }
    case 'NonZero': {
      const v = iv[0];
      const sz = v?.map(sizeOf);
      const hits = sz && sz.every((d) => d !== null) ? sz.flatMap((d, i) => (d !== 0 ? [i] : [])) : undefined;
      return one({ elem: DataType.INT64, shape: xs ? [xs.length, hits ? hits.length : null] : null }, hits && xs?.length === 1 ? hits : undefined);
    }
  }
  if (!xs) return one({ elem, shape: null });
  const r = xs.length;

  switch (op) {
    case 'Gather': {
      const idx = ins[1]?.shape;
      if (!idx) return one({ elem, shape: null });
      const a = rank(intAttr(n, 'axis', 0), r);
      const shape = [...xs.slice(0, a), ...idx, ...xs.slice(a + 1)];
      let value: SymDim[] | undefined;
      const [v, i] = [iv[0], iv[1]];
      if (v && i && r === 1) value = i.map((k) => (typeof k === 'number' ? v[k < 0 ? k + v.length : k] ?? null : null));
      return one({ elem, shape }, value);
    }
    case 'GatherElements':
      return one({ elem, shape: ins[1]?.shape ?? null });
    case 'GatherND': {
      const idx = ins[1]?.shape;
      const b = intAttr(n, 'batch_dims', 0);
      const k = idx?.[idx.length - 1];
      if (!idx || typeof k !== 'number') return one({ elem, shape: null });
      return one({ elem, shape: [...idx.slice(0, -1), ...xs.slice(b + k)] });
    }
    case 'Slice': {
      let starts: SymDim[] | undefined; let ends: SymDim[] | undefined; let axes: number[] | undefined; let steps: SymDim[] | undefined;
      if (opset < 10) {
        starts = intsAttr(n, 'starts'); ends = intsAttr(n, 'ends'); axes = intsAttr(n, 'axes');
      } else {
        starts = iv[1]; ends = iv[2];
        axes = inNames[3] ? axesFrom(3) : undefined;
        steps = inNames[4] ? iv[4] : undefined;
        if (inNames[3] && !axes) return one({ elem, shape: xs.map(() => null) });
      }
      if (!starts || !ends) return one({ elem, shape: xs.map(() => null) });
      const ax = axes ?? starts.map((_, i) => i);
      const s = [...xs];
      ax.forEach((a0, i) => {
        const a = rank(a0, r);
        s[a] = sliceLen(xs[a]!, starts![i]!, ends![i]!, steps ? steps[i]! : 1);
      });
      let value: SymDim[] | undefined;
      const v = iv[0];
      const st0 = steps ? steps[0]! : 1;
      if (v && r === 1 && ax.length === 1 && [starts[0], ends[0], st0].every((d) => typeof d === 'number')) {
        const [b0, e0, st] = [starts[0] as number, ends[0] as number, st0 as number];
        if (st === 1) {
          const L = v.length;
          const c = (q: number): number => Math.min(Math.max(q < 0 ? q + L : q, 0), L);
          value = v.slice(c(b0), c(e0));
        }
      }
      return one({ elem, shape: s }, value);
    }
    case 'Reshape': {
      const target = iv[1];
      const tshape = ins[1]?.shape;
      if (!target) return one({ elem, shape: tshape && typeof tshape[0] === 'number' ? Array.from({ length: tshape[0] }, () => null) : null }, undefined);
      const allowzero = intAttr(n, 'allowzero', 0);
      const out: SymDim[] = target.map((d, i) => (d === 0 && !allowzero ? xs[i] ?? null : d));
      const hole = out.indexOf(-1);
      if (hole >= 0) {
        const known = out.filter((_, i) => i !== hole);
        out[hole] = known.some((d) => d === null) || xs.some((d) => d === null) ? null : div(product(xs), product(known));
      }
      return one({ elem, shape: out }, iv[0]);
    }
    case 'Expand': {
      const s = iv[1];
      const sl = ins[1]?.shape?.[0];
      if (!s) return one({ elem, shape: typeof sl === 'number' ? Array.from({ length: Math.max(sl, r) }, () => null) : null });
      return one({ elem, shape: broadcast(xs, s) });
    }
    case 'Tile': {
      const rep = iv[1];
      return one({ elem, shape: rep ? xs.map((d, i) => mul(d, rep[i] ?? null)) : xs.map(() => null) });
    }
    case 'Squeeze': case 'Unsqueeze': {
      const axes = opset >= 13 ? (inNames[1] ? axesFrom(1) : undefined) : intsAttr(n, 'axes');
      if (op === 'Squeeze') {
        if (!axes && inNames[1]) return one({ elem, shape: null });
        if (!axes) return xs.every((d) => d !== null) ? one({ elem, shape: xs.filter((d) => d !== 1) }, iv[0]) : one({ elem, shape: null });
        const drop = new Set(axes.map((a) => rank(a, r)));
        return one({ elem, shape: xs.filter((_, i) => !drop.has(i)) }, iv[0]);
      }
      if (!axes) return one({ elem, shape: null });
      const R = r + axes.length;
      const addAt = new Set(axes.map((a) => rank(a, R)));
      const s: SymDim[] = [];
      let k = 0;
      for (let i = 0; i < R; i++) s.push(addAt.has(i) ? 1 : xs[k++]!);
      return one({ elem, shape: s }, iv[0]);
    }
    case 'Flatten': {
      const a = rank(intAttr(n, 'axis', 1), r);
      return one({ elem, shape: [product(xs.slice(0, a)), product(xs.slice(a))] });
    }
    case 'Transpose': {
      const perm = intsAttr(n, 'perm') ?? xs.map((_, i) => r - 1 - i);
      return one({ elem, shape: perm.map((p) => xs[p] ?? null) });
    }
    case 'Concat': {
      const a = rank(intAttr(n, 'axis', 0), r);
      if (ins.some((t) => !t?.shape || t.shape.length !== r)) return one({ elem, shape: xs.map((d, i) => (i === a ? null : d)) });
      const s = xs.map((d, i) => (i === a ? ins.reduce<SymDim>((p, t) => add(p, t!.shape![i]!), 0) : ins.reduce<SymDim>((p, t) => bdim(p, t!.shape![i]!), d)));
      const value = r === 1 && iv.every((v) => v) ? iv.flatMap((v) => v!) : undefined;
      return one({ elem, shape: s }, value);
    }
    case 'Split': {
      const a = rank(intAttr(n, 'axis', 0), r);
      const k = (n.output ?? []).length;
      let sizes: SymDim[] | undefined = opset >= 13 ? (inNames[1] ? iv[1] : undefined) : intsAttr(n, 'split');
      if (!sizes && !(opset >= 13 && inNames[1])) {
        const L = xs[a]!;
        const part = div(L, k);
        sizes = typeof L === 'number' && L % k !== 0 ? undefined : Array.from({ length: k }, () => part);
        const nos = intAttr(n, 'num_outputs', 0);
        if (nos && typeof L === 'number') { const c = Math.ceil(L / nos); sizes = Array.from({ length: nos }, (_, i) => Math.max(0, Math.min(c, L - i * c))); }
      }
      return { out: (n.output ?? []).map((_, i) => ({ elem, shape: xs.map((d, j) => (j === a ? sizes?.[i] ?? null : d)) })) };
    }
    case 'MatMul': case 'MatMulInteger': {
      const w = ins[1]?.shape;
      if (!w) return one({ elem, shape: null });
      if (r === 1 && w.length === 1) return one({ elem, shape: [] });
      if (r === 1) return one({ elem, shape: [...w.slice(0, -2), w[w.length - 1]!] });
      if (w.length === 1) return one({ elem, shape: xs.slice(0, -1) });
      return one({ elem, shape: [...broadcast(xs.slice(0, -2), w.slice(0, -2)), xs[r - 2]!, w[w.length - 1]!] });
    }
    case 'Gemm': {
      const w = ins[1]?.shape;
      if (!w || r !== 2 || w.length !== 2) return one({ elem, shape: null });
      return one({ elem, shape: [intAttr(n, 'transA', 0) ? xs[1]! : xs[0]!, intAttr(n, 'transB', 0) ? w[0]! : w[1]!] });
    }
    case 'Einsum': {
      const eq = new TextDecoder().decode(attrOf(n, 'equation')?.s ?? new Uint8Array()).replace(/\s+/g, '');
      const [lhs, rhs] = eq.split('->') as [string, string | undefined];
      if (rhs === undefined || eq.includes('.')) return one({ elem, shape: null });
      const size = new Map<string, SymDim>();
      lhs.split(',').forEach((term, i) => {
        const s = ins[i]?.shape;
        [...term].forEach((c, j) => { const d = s?.[j] ?? null; size.set(c, size.has(c) ? bdim(size.get(c)!, d) : d); });
      });
      return one({ elem, shape: [...rhs].map((c) => size.get(c) ?? null) });
    }
    case 'Pad': {
      const pads = opset >= 11 ? iv[1] : intsAttr(n, 'pads');
      if (!pads) return one({ elem, shape: xs.map(() => null) });
      const axes = (opset >= 18 && inNames[3] ? axesFrom(3) : undefined)?.map((a) => rank(a, r)) ?? xs.map((_, i) => i);
      const s = [...xs];
      const k = axes.length;
      axes.forEach((a, i) => { s[a] = add(add(xs[a]!, pads[i] ?? null), pads[i + k] ?? null); });
      return one({ elem, shape: s });
    }
    case 'TopK': {
      const k = iv[1]?.[0] ?? null;
      const a = rank(intAttr(n, 'axis', -1), r);
      const s = xs.map((d, i) => (i === a ? k : d));
      return { out: [{ elem, shape: s }, { elem: DataType.INT64, shape: s }] };
    }
    case 'ArgMax': case 'ArgMin': {
      const a = rank(intAttr(n, 'axis', 0), r);
      const keep = intAttr(n, 'keepdims', 1);
      return one({ elem: DataType.INT64, shape: xs.flatMap((d, i) => (i === a ? (keep ? [1] : []) : [d])) });
    }
  }
  if (REDUCE.has(op)) {
    const keep = intAttr(n, 'keepdims', 1);
    const fromInput = op === 'ReduceSum' ? opset >= 13 : opset >= 18;
    let axes = fromInput ? (inNames[1] ? axesFrom(1) : []) : intsAttr(n, 'axes') ?? [];
    if (!axes) return one({ elem, shape: null });
    if (!axes.length) {
      if (intAttr(n, 'noop_with_empty_axes', 0)) return one({ elem, shape: xs });
      axes = xs.map((_, i) => i);
    }
    const drop = new Set(axes.map((a) => rank(a, r)));
    const s = xs.flatMap((d, i) => (drop.has(i) ? (keep ? [1] : []) : [d]));
    const v = iv[0];
    const value = op === 'ReduceProd' && v && r === 1 ? [product(v)] : op === 'ReduceSum' && v && r === 1 ? [v.reduce<SymDim>((p, d) => add(p, d), 0)] : undefined;
    return one({ elem, shape: s }, value);
  }
  return { out: [] };
}

/** The length of `start:end:step` over a dim of size L (symbolic bounds are taken as in range). */
function sliceLen(L: SymDim, start: SymDim, end: SymDim, step: SymDim): SymDim {
  if (typeof step !== 'number' || step === 0) return null;
  if (typeof L === 'number' && typeof start === 'number' && typeof end === 'number') {
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
    let b = start < 0 ? start + L : start;
    let e = end < 0 ? end + L : end;
    if (step > 0) { b = clamp(b, 0, L); e = clamp(e, 0, L); return Math.max(0, Math.ceil((e - b) / step)); }
    b = clamp(b, -1, L - 1); e = clamp(e, -1, L - 1);
    return Math.max(0, Math.ceil((b - e) / -step));
  }
  if (step !== 1) return null;
  const Lv = sizeOf(L);
  const norm = (v: SymDim): SymDim => {
    const n = sizeOf(v);
    if (typeof v === 'number' && v >= HUGE) return L;
    if (typeof v === 'number' && v <= -HUGE) return 0;
    if (n !== null && n < 0) return Lv !== null && n + Lv < 0 ? 0 : add(L, v);
    if (n !== null && Lv !== null && n > Lv) return L;
    return typeof v === 'number' && typeof L === 'number' ? Math.min(v, L) : v;
  };
  const b = norm(start);
  const e = norm(end);
  if (b === null || e === null) return null;
  const len = sub(e, b);
  const lv = sizeOf(len);
  return typeof len === 'number' ? Math.max(0, len) : lv !== null && lv < 0 ? 0 : len;
}

/** Element-wise arithmetic on evaluated integer tensors (1-D or scalars). */
function evalBroadcast(op: string, iv: (SymDim[] | undefined)[], shape: SymDim[] | null): SymDim[] | undefined {
  if (!shape || shape.length > 1 || iv.some((v) => !v)) return undefined;
  const len = shape.length ? shape[0] : 1;
  if (typeof len !== 'number' || iv.some((v) => v!.length !== 1 && v!.length !== len)) return undefined;
  const at = (v: SymDim[], i: number): SymDim => v[v.length === 1 ? 0 : i]!;
  const num = (f: (...a: number[]) => number) => (...a: SymDim[]): SymDim => { const v = a.map(sizeOf); return v.every((d) => d !== null) ? f(...(v as number[])) : null; };
  /** The operand min/max picks (by size; symbolic operands keep their symbols). */
  const pick = (better: (x: number, y: number) => boolean) => (...a: SymDim[]): SymDim => {
    if (a.every((d) => d === a[0])) return a[0]!;
    const v = a.map(sizeOf);
    if (v.some((d) => d === null)) return null;
    let k = 0;
    v.forEach((d, i) => { if (better(d!, v[k]!)) k = i; });
    return a[k]!;
  };
  const fs: Record<string, (...a: SymDim[]) => SymDim> = {
    Add: add, Sub: sub, Mul: mul, Div: div, Sum: (...a) => a.reduce<SymDim>((p, d) => add(p, d), 0),
    Max: pick((x, y) => x > y),
    Min: pick((x, y) => x < y),
    Equal: (p, q) => (p !== null && p === q ? 1 : num((a, b) => Number(a === b))(p!, q!)),
    Less: num((a, b) => Number(a < b)), Greater: num((a, b) => Number(a > b)),
    LessOrEqual: num((a, b) => Number(a <= b)), GreaterOrEqual: num((a, b) => Number(a >= b)),
    And: num((a, b) => Number(!!a && !!b)), Or: num((a, b) => Number(!!a || !!b)),
    Mod: num((a, b) => ((a % b) + b) % b), Where: (c, p, q) => { const cv = sizeOf(c!); return cv !== null ? (cv ? p! : q!) : p === q ? p! : null; },
  };
  const f = fs[op];
  if (!f) return undefined;
  return Array.from({ length: len }, (_, i) => f(...iv.map((v) => at(v!, i))));
}

/** The type of a ValueInfoProto (dim_value → number, dim_param → symbol, neither → null). */
export function typeOfInfo(v: ValueInfoProto): TypeShape | undefined {
  const t = v.type?.tensor_type;
  if (!t?.elem_type) return undefined;
  const dims = t.shape?.dim;
  return {
    elem: t.elem_type,
    shape: t.shape ? (dims ?? []).map((d) => (d.dim_value !== undefined && d.dim_value !== null ? Number(d.dim_value) : d.dim_param ? canonicalDim(d.dim_param) : null)) : null,
  };
}

/** A ValueInfoProto for a type. */
export function infoOfType(name: string, t: TypeShape): ValueInfoProto {
  return {
    name,
    type: { tensor_type: { elem_type: t.elem, ...(t.shape ? { shape: { dim: t.shape.map((d) => (typeof d === 'number' ? { dim_value: d } : d === null ? {} : { dim_param: d })) } } : {}) } },
  };
}

/**
 * Infers the type and shape of every value `graph`'s nodes compute (see the module doc).
 * Nodes are taken in the order given (a graph's own order is topological); a value read
 * before it is typed is unknown.
 */
export function inferShapes(graph: GraphProto, opsetVersion: number, opts: InferOptions = {}): InferredShapes {
  const types = new Map<string, TypeShape>();
  const values = new Map<string, SymDim[]>();
  const fixed = new Set<string>();
  for (const v of graph.input ?? []) { const t = typeOfInfo(v); if (t && v.name) types.set(v.name, t); }
  for (const t of graph.initializer ?? []) {
    if (!t.name) continue;
    types.set(t.name, { elem: t.data_type ?? DataType.FLOAT, shape: (t.dims ?? []).map(Number) });
    const v = tensorInts(t);
    if (v) values.set(t.name, v);
  }
  if (opts.valueInfo !== false) {
    for (const v of [...(graph.value_info ?? []), ...(graph.output ?? [])]) {
      const t = typeOfInfo(v);
      if (t?.shape && v.name) { types.set(v.name, t); fixed.add(v.name); }
    }
  }
  for (const [k, t] of opts.seed ?? []) { types.set(k, t); if (t.shape) fixed.add(k); }
  bound = opts.bind ?? {};
  const type = (x: string): TypeShape | undefined => types.get(x);
  const vals = (x: string): SymDim[] | undefined => values.get(x);
  for (const n of opts.nodes ?? graph.node ?? []) {
    let r: ReturnType<typeof inferNode>;
    try {
      r = inferNode(n, opsetVersion, type, vals);
    } catch {
      continue; // a malformed node: its outputs stay untyped
    }
    (n.output ?? []).forEach((o, i) => {
      if (!o) return;
      const f = opts.fallback?.get(o);
      const t = r.out[i]?.shape || !f ? r.out[i] : f;
      if (i === 0 && r.value && !values.has(o)) values.set(o, r.value);
      if (fixed.has(o) || !t) return;
      const have = types.get(o);
      if (!have || t.shape || !have.shape) types.set(o, t);
    });
  }
  bound = {};
  return { types, values };
}
