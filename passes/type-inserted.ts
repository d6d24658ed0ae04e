/**
 * Types every value the rewrite inserted (`value_info`: element type and shape), so Netron
 * shows shapes on the new edges as it does on the model's own. Shapes come from what is
 * known — the model's inputs, outputs and value_info, module boundaries, the IR's types of
 * lowered values, constants — and are carried through the inserted operators (Gather,
 * Slice, Reshape, Expand, ScatterND, elementwise and broadcasting ops, reductions, ...).
 * Runs for `nns compile` only (`state.specialize`: every dim is known); a value whose shape
 * cannot be derived keeps what is known (its element type) and is listed by the pass.
 * @module
 */
import type { Pass } from './pass.js';
import type { Dim } from '../src/model/types.js';
import type { AttributeProto, NodeProto, TensorProto, ValueInfoProto } from '../src/onnx/proto.js';
import { OnnxGraphView } from '../src/onnx/view.js';
import { tensorData } from '../src/onnx/graph-builder.js';
import { nodeProvenance, onnxElemType } from './onnx-emit.js';
import type { DType } from '../src/model/types.js';

/** Element type and shape (null: rank unknown). */
interface VType { elem: number; shape: number[] | null }

const ELEMENTWISE = new Set(['Identity', 'Softmax', 'LogSoftmax', 'Relu', 'Tanh', 'Sigmoid', 'Exp', 'Log', 'Sqrt', 'Abs', 'Neg', 'Erf', 'Reciprocal', 'Floor', 'Ceil', 'Not', 'LayerNormalization', 'Gelu', 'IsNaN', 'IsInf', 'Sign', 'Cos', 'Sin', 'Round', 'ScatterND', 'ScatterElements', 'CastLike', 'Dropout', 'Trilu', 'CumSum']);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Where', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Mod', 'BitShift', 'Sum', 'Mean', 'PRelu']);
const BOOL_OUT = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Not', 'IsNaN', 'IsInf']);
const REDUCE = new Set(['ReduceSum', 'ReduceMean', 'ReduceMax', 'ReduceMin', 'ReduceProd', 'ReduceL2', 'ReduceLogSumExp', 'ArgMax', 'ArgMin']);

function attrOf(n: NodeProto, name: string): AttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

function intAttr(n: NodeProto, name: string, dflt: number): number {
  const a = attrOf(n, name);
  return a?.i !== undefined && a.i !== null ? Number(a.i) : dflt;
}

function broadcast(a: number[], b: number[]): number[] | null {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return null;
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** The typing of one node's outputs from its inputs' types and constant inputs. */
function inferNode(n: NodeProto, type: (x: string) => VType | undefined, ints: (x: string) => number[] | undefined, constant: (x: string) => TensorProto | undefined): (VType | undefined)[] {
  const ins = (n.input ?? []).map((x) => (x ? type(x) : undefined));
  const x = ins[0];
  const op = n.op_type ?? '';
  const one = (t: VType | undefined): (VType | undefined)[] => [t];
  const rankAxis = (a: number, r: number): number => (a < 0 ? a + r : a);
  if (n.domain) return [];
  if (op === 'Constant') {
    const t = attrOf(n, 'value')?.t;
    return one(t ? { elem: t.data_type ?? 1, shape: (t.dims ?? []).map(Number) } : undefined);
  }
  if (op === 'ConstantOfShape') {
    const s = ints(n.input![0]!);
    const t = attrOf(n, 'value')?.t;
    return one(s ? { elem: t?.data_type ?? 1, shape: s } : undefined);
  }
  if (op === 'Shape') {
    if (!x?.shape) return one({ elem: 7, shape: null });
    const r = x.shape.length;
    const norm = (v: number): number => (v < 0 ? Math.max(0, v + r) : Math.min(v, r));
    return one({ elem: 7, shape: [Math.max(0, norm(intAttr(n, 'end', r)) - norm(intAttr(n, 'start', 0)))] });
  }
  if (op === 'Size') return one({ elem: 7, shape: [] });
  if (op === 'NonZero') {
    const v = ints(n.input![0]!);
    return one(x?.shape && v ? { elem: 7, shape: [x.shape.length, v.filter((e) => e !== 0).length] } : { elem: 7, shape: null });
  }
  if (op === 'Cast') return one({ elem: intAttr(n, 'to', 1), shape: x?.shape ?? null });
  if (!x) return [];
  const xs = x.shape;
  if (ELEMENTWISE.has(op)) return one({ elem: BOOL_OUT.has(op) ? 9 : op === 'CastLike' ? (ins[1]?.elem ?? x.elem) : x.elem, shape: xs });
  if (BROADCAST.has(op)) {
    let s: number[] | null = xs;
    for (const t of ins.slice(1)) s = s && t?.shape ? broadcast(s, t.shape) : null;
    const elem = op === 'Where' ? (ins[1]?.elem ?? x.elem) : BOOL_OUT.has(op) ? 9 : x.elem;
    return one({ elem, shape: s });
  }
  if (!xs) return one({ elem: x.elem, shape: null });
  switch (op) {
    case 'Gather': {
      const idx = ins[1]?.shape ?? (constant(n.input![1]!)?.dims ?? null)?.map(Number) ?? null;
      if (!idx) return one({ elem: x.elem, shape: null });
      const a = rankAxis(intAttr(n, 'axis', 0), xs.length);
      return one({ elem: x.elem, shape: [...xs.slice(0, a), ...idx, ...xs.slice(a + 1)] });
    }
    case 'Slice': {
      const [st, en] = [ints(n.input![1]!), ints(n.input![2]!)];
      const axes = n.input![3] ? ints(n.input![3]) : xs.map((_, i) => i).slice(0, st?.length ?? 0);
      const steps = n.input![4] ? ints(n.input![4]) : st?.map(() => 1);
      if (!st || !en || !axes || !steps) return one({ elem: x.elem, shape: null });
      const s = [...xs];
      axes.forEach((a0, i) => {
        const a = rankAxis(a0, xs.length);
        const L = xs[a]!;
        const step = steps[i]!;
        const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
        let b = st[i]!;
        let e = en[i]!;
        b = b < 0 ? b + L : b;
        e = e < 0 ? e + L : e;
        if (step > 0) { b = clamp(b, 0, L); e = clamp(e, 0, L); s[a] = Math.max(0, Math.ceil((e - b) / step)); } else { b = clamp(b, -1, L - 1); e = clamp(e, -1, L - 1); s[a] = Math.max(0, Math.ceil((b - e) / -step)); }
      });
      return one({ elem: x.elem, shape: s });
    }
    case 'Reshape': {
      const s = ints(n.input![1]!);
      if (!s) return one({ elem: x.elem, shape: null });
      const total = xs.reduce((p, d) => p * d, 1);
      const out = s.map((d, i) => (d === 0 ? xs[i]! : d));
      const known = out.reduce((p, d) => (d === -1 ? p : p * d), 1);
      return one({ elem: x.elem, shape: out.map((d) => (d === -1 ? (known ? total / known : 0) : d)) });
    }
    case 'Expand': {
      const s = ints(n.input![1]!);
      return one({ elem: x.elem, shape: s ? broadcast(xs, s) : null });
    }
    case 'Squeeze': case 'Unsqueeze': {
      const axes = n.input![1] ? ints(n.input![1]) : attrOf(n, 'axes')?.ints?.map(Number);
      if (!axes && op === 'Squeeze') return one({ elem: x.elem, shape: xs.filter((d) => d !== 1) });
      if (!axes) return one({ elem: x.elem, shape: null });
      if (op === 'Squeeze') {
        const drop = new Set(axes.map((a) => rankAxis(a, xs.length)));
        return one({ elem: x.elem, shape: xs.filter((_, i) => !drop.has(i)) });
      }
      const r = xs.length + axes.length;
      const add = new Set(axes.map((a) => rankAxis(a, r)));
      const s: number[] = [];
      let k = 0;
      for (let i = 0; i < r; i++) s.push(add.has(i) ? 1 : xs[k++]!);
      return one({ elem: x.elem, shape: s });
    }
    case 'Transpose': {
      const perm = attrOf(n, 'perm')?.ints?.map(Number) ?? xs.map((_, i) => xs.length - 1 - i);
      return one({ elem: x.elem, shape: perm.map((p) => xs[p]!) });
    }
    case 'Concat': {
      const a = rankAxis(intAttr(n, 'axis', 0), xs.length);
      if (ins.some((t) => !t?.shape)) return one({ elem: x.elem, shape: null });
      const s = [...xs];
      s[a] = ins.reduce((p, t) => p + t!.shape![a]!, 0);
      return one({ elem: x.elem, shape: s });
    }
    case 'Split': {
      const a = rankAxis(intAttr(n, 'axis', 0), xs.length);
      const k = (n.output ?? []).length;
      const sizes = n.input![1] ? ints(n.input![1]) : attrOf(n, 'split')?.ints?.map(Number) ?? Array.from({ length: k }, () => xs[a]! / k);
      return (n.output ?? []).map((_, i) => (sizes ? { elem: x.elem, shape: xs.map((d, j) => (j === a ? sizes[i]! : d)) } : undefined));
    }
    case 'MatMul': {
      const w = ins[1]?.shape;
      if (!w) return one({ elem: x.elem, shape: null });
      if (xs.length === 1 || w.length === 1) return one({ elem: x.elem, shape: null });
      const lead = broadcast(xs.slice(0, -2), w.slice(0, -2));
      return one({ elem: x.elem, shape: lead ? [...lead, xs[xs.length - 2]!, w[w.length - 1]!] : null });
    }
    case 'Gemm': {
      const w = ins[1]?.shape;
      const tA = intAttr(n, 'transA', 0);
      const tB = intAttr(n, 'transB', 0);
      return one({ elem: x.elem, shape: w ? [tA ? xs[1]! : xs[0]!, tB ? w[0]! : w[1]!] : null });
    }
    case 'Range': {
      const [s0, l0, d0] = [ints(n.input![0]!), ints(n.input![1]!), ints(n.input![2]!)];
      return one({ elem: x.elem, shape: s0 && l0 && d0 ? [Math.max(0, Math.ceil((l0[0]! - s0[0]!) / d0[0]!))] : null });
    }
    case 'TopK': {
      const k = ints(n.input![1]!);
      const a = rankAxis(intAttr(n, 'axis', -1), xs.length);
      const s = k ? xs.map((d, i) => (i === a ? k[0]! : d)) : null;
      return [{ elem: x.elem, shape: s }, { elem: 7, shape: s }];
    }
  }
  if (REDUCE.has(op)) {
    const keep = intAttr(n, 'keepdims', 1);
    const arg = op === 'ArgMax' || op === 'ArgMin';
    const axesIn = arg ? [intAttr(n, 'axis', 0)] : n.input![1] ? ints(n.input![1]) : attrOf(n, 'axes')?.ints?.map(Number) ?? xs.map((_, i) => i);
    if (!axesIn) return one({ elem: x.elem, shape: null });
    const axes = new Set(axesIn.map((a) => rankAxis(a, xs.length)));
    const s = xs.flatMap((d, i) => (axes.has(i) ? (keep ? [1] : []) : [d]));
    return one({ elem: arg ? 7 : x.elem, shape: s });
  }
  return [];
}

/**
 * The integer values of a node's first output when they follow from known shapes and
 * constants (Shape, Size, Gather, Slice, Concat, Cast, Reshape, elementwise arithmetic on
 * 1-D or scalar values); undefined otherwise.
 */
function evalInts(n: NodeProto, type: (x: string) => VType | undefined, ints: (x: string) => number[] | undefined): number[] | undefined {
  if (n.domain) return undefined;
  const op = n.op_type ?? '';
  const x = n.input?.[0];
  if (op === 'Shape') {
    const s = x ? type(x)?.shape : undefined;
    if (!s) return undefined;
    const norm = (v: number): number => (v < 0 ? v + s.length : Math.min(v, s.length));
    return s.slice(norm(intAttr(n, 'start', 0)), norm(intAttr(n, 'end', s.length)));
  }
  if (op === 'Size') {
    const s = x ? type(x)?.shape : undefined;
    return s ? [s.reduce((p, d) => p * d, 1)] : undefined;
  }
  const ins = (n.input ?? []).map((i) => (i ? ints(i) : undefined));
  if (ins.some((v, i) => v === undefined && i < (op === 'Slice' ? 3 : op === 'Reshape' || op === 'Unsqueeze' || op === 'Squeeze' ? 1 : ins.length))) return undefined;
  const a = ins[0]!;
  switch (op) {
    case 'Identity': case 'Cast': case 'Reshape': case 'Unsqueeze': case 'Squeeze': case 'Flatten': return a;
    case 'Concat': return ins.flatMap((v) => v!);
    case 'Gather': {
      if ((type(x!)?.shape?.length ?? 1) > 1) return undefined;
      return ins[1]!.map((i) => a[i < 0 ? i + a.length : i]!).filter((v) => v !== undefined);
    }
    case 'Slice': {
      if (n.input![3] && ints(n.input![3])?.some((ax) => ax !== 0 && ax !== -1)) return undefined;
      const L = a.length;
      const step = n.input![4] ? ints(n.input![4])?.[0] ?? 1 : 1;
      if (step !== 1) return undefined;
      const clamp = (v: number): number => Math.min(Math.max(v < 0 ? v + L : v, 0), L);
      return a.slice(clamp(ins[1]![0]!), clamp(ins[2]![0]!));
    }
    case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Equal': case 'Less': case 'Greater': case 'Max': case 'Min': {
      const b = ins[1]!;
      const len = Math.max(a.length, b.length);
      if ((a.length !== 1 && a.length !== len) || (b.length !== 1 && b.length !== len)) return undefined;
      const f = (p: number, q: number): number => (op === 'Add' ? p + q : op === 'Sub' ? p - q : op === 'Mul' ? p * q : op === 'Div' ? Math.trunc(p / q) : op === 'Equal' ? Number(p === q) : op === 'Less' ? Number(p < q) : op === 'Greater' ? Number(p > q) : op === 'Max' ? Math.max(p, q) : Math.min(p, q));
      return Array.from({ length: len }, (_, i) => f(a[a.length === 1 ? 0 : i]!, b[b.length === 1 ? 0 : i]!));
    }
    case 'Where': {
      const [c, p, q] = [a, ins[1]!, ins[2]!];
      const len = Math.max(c.length, p.length, q.length);
      return Array.from({ length: len }, (_, i) => (c[c.length === 1 ? 0 : i] ? p[p.length === 1 ? 0 : i]! : q[q.length === 1 ? 0 : i]!));
    }
    case 'And': case 'Or': {
      const b = ins[1]!;
      if (a.length !== b.length) return undefined;
      return a.map((p, i) => Number(op === 'And' ? p && b[i] : p || b[i]));
    }
  }
  return undefined;
}

/** The type-inserted pass. */
export const typeInsertedPass: Pass = {
  name: 'type-inserted',
  prints: (state) => {
    const g = state.model.graph!;
    const info = new Map((g.value_info ?? []).map((v) => [v.name!, v]));
    const lines: string[] = [];
    for (const n of g.node ?? []) {
      if (!nodeProvenance.has(n)) continue;
      for (const o of n.output ?? []) {
        const t = info.get(o)?.type?.tensor_type ?? (g.output ?? []).find((v) => v.name === o)?.type?.tensor_type;
        const dims = t?.shape ? `[${(t.shape.dim ?? []).map((d) => d.dim_value ?? d.dim_param ?? '?').join(', ')}]` : '(shape unknown)';
        lines.push(`${o}: ${t ? `elem ${t.elem_type} ${dims}` : 'untyped'}`);
      }
    }
    return lines.join('\n');
  },
  run(state, ctx) {
    if (!state.specialize) return { changed: false };
    const g = state.model.graph!;
    const ir = state.ir;
    const concrete = (d: Dim): number | undefined => (typeof d === 'number' ? d : d === 'batch' ? ir.batch : ir.dimValues[d]);
    const known = new Map<string, VType>();
    const fromSig = (name: string, dtype: DType | undefined, shape: readonly Dim[] | null | undefined): void => {
      if (!dtype || known.has(name)) return;
      const s = shape ? shape.map(concrete) : null;
      known.set(name, { elem: onnxElemType(dtype), shape: s && s.every((d) => d !== undefined) ? (s as number[]) : null });
    };
    const fromInfo = (v: ValueInfoProto): void => {
      const t = v.type?.tensor_type;
      if (!v.name || !t?.elem_type || known.has(v.name)) return;
      const dims = t.shape?.dim?.map((d) => (d.dim_value !== undefined && d.dim_value !== null ? Number(d.dim_value) : d.dim_param ? concrete(d.dim_param) : undefined));
      known.set(v.name, { elem: t.elem_type, shape: dims && dims.every((d) => d !== undefined) ? (dims as number[]) : null });
    };
    for (const [v, name] of state.valueNames ?? []) fromSig(name, v.type?.dtype, v.type?.shape);
    for (const m of ctx.tree.modules.values()) for (const b of [...m.inputs, ...m.outputs]) fromSig(b.name, b.sig?.dtype, b.sig?.shape);
    for (const b of [...ctx.tree.graphInputs, ...ctx.tree.graphOutputs]) fromSig(b.name, b.sig?.dtype, b.sig?.shape);
    for (const v of [...(g.input ?? []), ...(g.value_info ?? []), ...(g.output ?? [])]) fromInfo(v);
    for (const t of g.initializer ?? []) if (t.name && !known.has(t.name)) known.set(t.name, { elem: t.data_type ?? 1, shape: (t.dims ?? []).map(Number) });
    const view = new OnnxGraphView(g);
    const ints = (x: string): number[] | undefined => {
      const t = view.constTensor(x);
      if (!t) return undefined;
      try {
        return Array.from(tensorData(t) as ArrayLike<number | bigint>, Number);
      } catch {
        return undefined;
      }
    };
    const typed = new Map<string, VType>();
    const type = (x: string): VType | undefined => typed.get(x) ?? known.get(x);
    // Integer values computed from known shapes (the gradient sweep's shape arithmetic).
    const values = new Map<string, number[]>();
    const intsOf = (x: string): number[] | undefined => values.get(x) ?? ints(x);
    for (const n of g.node ?? []) {
      if (!nodeProvenance.has(n)) continue;
      const v = evalInts(n, type, intsOf);
      if (v) values.set(n.output![0]!, v);
      const outs = inferNode(n, type, intsOf, (x) => view.constTensor(x));
      (n.output ?? []).forEach((o, i) => {
        const t = outs[i];
        const have = known.get(o);
        const best = t?.shape ? t : have?.shape ? have : t ?? have;
        if (o && best) typed.set(o, best);
      });
    }
    const outputs = new Set((g.output ?? []).map((o) => o.name!));
    const existing = new Set((g.value_info ?? []).map((v) => v.name!));
    const added: ValueInfoProto[] = [];
    for (const [name, t] of typed) {
      if (existing.has(name)) continue;
      const info: ValueInfoProto = { name, type: { tensor_type: { elem_type: t.elem, ...(t.shape ? { shape: { dim: t.shape.map((d) => ({ dim_value: d })) } } : {}) } } };
      if (outputs.has(name)) continue; // a save: typed by save-outputs (symbolic dims)
      added.push(info);
    }
    g.value_info = [...(g.value_info ?? []), ...added];
    return { changed: added.length > 0 };
  },
};
