/**
 * Every derivative rule of passes/derivatives.ts against central finite differences, in
 * float64, on onnxruntime: for each op, a one-node graph `Y = op(inputs)` with a scalar
 * `L = Σ W ⊙ Y` (W random), differentiated by passes/autodiff.ts `emitGradients`; for each
 * differentiable input and random direction v (nonzero on that input only), the emitted
 * gradient's ⟨dL/dx, v⟩ must match (L(x + hv) − L(x − hv)) / 2h. Property test sized by
 * count: TRIALS random draws (inputs, W, v) per op. Erf runs in float32 (onnxruntime has no
 * float64 Erf kernel) with a larger step and a 1e-3 tolerance. Independent of the code under test: the
 * finite differences only run the forward op.
 */
import { describe, expect, it } from 'vitest';
import { createOrtProbe } from '../../backends/probe.js';
import { emitGradients } from '../../passes/autodiff.js';
import { attr, makeTensor, valueInfo, type AttrValue } from '../../passes/onnx-emit.js';
import type { ModelProto, NodeProto, TensorProto } from '../../src/onnx/proto.js';
import type { ProbeTensor } from '../../src/model/shapes.js';

const TRIALS = 3;
const H = 1e-5;
const probe = createOrtProbe();

/** A deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface DataIn { name: string; shape: number[]; lo?: number; hi?: number; awayFromZero?: boolean }
interface Case {
  op: string;
  /** Differentiable float64 inputs. */
  data: DataIn[];
  /** Node inputs in order: a data input's name, a constant's name, or '' for an absent one. */
  inputs: string[];
  consts?: Record<string, TensorProto>;
  attrs?: Record<string, AttrValue>;
  /** Output shapes (W's shapes). */
  outs: number[][];
  /** Inputs whose gradient is not checked (e.g. Pow's exponent at 0). */
  skip?: string[];
  /** Run in float32 (onnxruntime has no float64 kernel): larger step, looser tolerance. */
  f32?: boolean;
}

const i64 = (dims: number[], v: number[]): TensorProto => makeTensor('int64', dims, v);
const f64 = (dims: number[], v: number[]): TensorProto => makeTensor('float64', dims, v);

const CASES: Case[] = [
  { op: 'Identity', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x'], outs: [[2, 3]] },
  { op: 'Cast', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x'], attrs: { to: 11 }, outs: [[2, 3]] },
  { op: 'Erf', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x'], outs: [[2, 3]], f32: true },
  ...['Neg', 'Exp', 'Tanh', 'Sigmoid', 'Sin', 'Cos'].map((op) => ({ op, data: [{ name: 'x', shape: [2, 3] }], inputs: ['x'], outs: [[2, 3]] })),
  ...['Sqrt', 'Log'].map((op) => ({ op, data: [{ name: 'x', shape: [2, 3], lo: 0.5, hi: 2 }], inputs: ['x'], outs: [[2, 3]] })),
  ...['Reciprocal', 'Relu', 'Abs'].map((op) => ({ op, data: [{ name: 'x', shape: [2, 3], awayFromZero: true }], inputs: ['x'], outs: [[2, 3]] })),
  ...['Add', 'Sub', 'Mul'].flatMap((op) => [
    { op, data: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }], inputs: ['a', 'b'], outs: [[2, 3]] },
    { op, data: [{ name: 'a', shape: [2, 1, 3] }, { name: 'b', shape: [4, 1] }], inputs: ['a', 'b'], outs: [[2, 4, 3]] },
  ]),
  { op: 'Div', data: [{ name: 'a', shape: [2, 1, 3] }, { name: 'b', shape: [4, 1], awayFromZero: true }], inputs: ['a', 'b'], outs: [[2, 4, 3]] },
  { op: 'Pow', data: [{ name: 'x', shape: [2, 3], lo: 0.5, hi: 2 }, { name: 'p', shape: [], lo: 1.5, hi: 3 }], inputs: ['x', 'p'], outs: [[2, 3]] },
  { op: 'Pow', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x', 'two'], consts: { two: f64([], [2]) }, outs: [[2, 3]] },
  { op: 'Softmax', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], outs: [[2, 3, 4]] },
  { op: 'Softmax', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axis: 1 }, outs: [[2, 3, 4]] },
  { op: 'LogSoftmax', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], outs: [[2, 3, 4]] },
  { op: 'MatMul', data: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4, 5] }], inputs: ['a', 'b'], outs: [[2, 3, 5]] },
  { op: 'MatMul', data: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [2, 4, 2] }], inputs: ['a', 'b'], outs: [[2, 3, 2]] },
  { op: 'Gemm', data: [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [5, 4] }, { name: 'c', shape: [5] }], inputs: ['a', 'b', 'c'], attrs: { transB: 1, alpha: { f: 0.5 }, beta: { f: 2 } }, outs: [[3, 5]] },
  { op: 'Gemm', data: [{ name: 'a', shape: [4, 3] }, { name: 'b', shape: [4, 5] }, { name: 'c', shape: [3, 1] }], inputs: ['a', 'b', 'c'], attrs: { transA: 1 }, outs: [[3, 5]] },
  { op: 'LayerNormalization', data: [{ name: 'x', shape: [2, 3, 4] }, { name: 's', shape: [4] }, { name: 'b', shape: [4] }], inputs: ['x', 's', 'b'], attrs: { epsilon: { f: 1e-5 } }, outs: [[2, 3, 4]] },
  { op: 'LayerNormalization', data: [{ name: 'x', shape: [2, 3, 4] }, { name: 's', shape: [3, 4] }], inputs: ['x', 's'], attrs: { axis: 1 }, outs: [[2, 3, 4]] },
  { op: 'ReduceSum', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x', 'ax'], consts: { ax: i64([1], [1]) }, attrs: { keepdims: 0 }, outs: [[2, 4]] },
  { op: 'ReduceMean', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axes: [-1] }, outs: [[2, 3, 1]] },
  { op: 'ReduceMean', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axes: [0, 2], keepdims: 0 }, outs: [[3]] },
  { op: 'Reshape', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x', 'sh'], consts: { sh: i64([2], [6, 4]) }, outs: [[6, 4]] },
  { op: 'Flatten', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axis: 2 }, outs: [[6, 4]] },
  { op: 'Squeeze', data: [{ name: 'x', shape: [2, 1, 3] }], inputs: ['x', 'ax'], consts: { ax: i64([1], [1]) }, outs: [[2, 3]] },
  { op: 'Unsqueeze', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x', 'ax'], consts: { ax: i64([1], [0]) }, outs: [[1, 2, 3]] },
  { op: 'Transpose', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { perm: [2, 0, 1] }, outs: [[4, 2, 3]] },
  { op: 'Transpose', data: [{ name: 'x', shape: [2, 3] }], inputs: ['x'], outs: [[3, 2]] },
  { op: 'Expand', data: [{ name: 'x', shape: [3, 1] }], inputs: ['x', 'sh'], consts: { sh: i64([3], [2, 3, 4]) }, outs: [[2, 3, 4]] },
  { op: 'Where', data: [{ name: 'x', shape: [2, 3] }, { name: 'y', shape: [3] }], inputs: ['c', 'x', 'y'], consts: { c: makeTensor('bool', [2, 3], [1, 0, 1, 0, 0, 1]) }, outs: [[2, 3]] },
  { op: 'Gather', data: [{ name: 'x', shape: [4, 3] }], inputs: ['x', 'i'], consts: { i: i64([3], [3, -1, 0]) }, outs: [[3, 3]] },
  { op: 'Gather', data: [{ name: 'x', shape: [2, 4, 3] }], inputs: ['x', 'i'], consts: { i: i64([2, 2], [0, 2, 1, 1]) }, attrs: { axis: 1 }, outs: [[2, 2, 2, 3]] },
  { op: 'Gather', data: [{ name: 'x', shape: [2, 4, 3] }], inputs: ['x', 'i'], consts: { i: i64([], [-1]) }, attrs: { axis: 2 }, outs: [[2, 4]] },
  { op: 'Slice', data: [{ name: 'x', shape: [4, 5] }], inputs: ['x', 's', 'e', 'a'], consts: { s: i64([2], [1, -3]), e: i64([2], [3, 100]), a: i64([2], [0, 1]) }, outs: [[2, 3]] },
  { op: 'Slice', data: [{ name: 'x', shape: [3, 4, 2] }], inputs: ['x', 's', 'e'], consts: { s: i64([1], [-2]), e: i64([1], [-1]) }, outs: [[1, 4, 2]] },
  { op: 'Concat', data: [{ name: 'x', shape: [2, 3] }, { name: 'y', shape: [2, 2] }], inputs: ['x', 'y'], attrs: { axis: -1 }, outs: [[2, 5]] },
  { op: 'Split', data: [{ name: 'x', shape: [2, 6] }], inputs: ['x', 'sp'], consts: { sp: i64([2], [2, 4]) }, attrs: { axis: 1 }, outs: [[2, 2], [2, 4]] },
  { op: 'ScatterND', data: [{ name: 'x', shape: [4, 3] }, { name: 'u', shape: [2, 3] }], inputs: ['x', 'i', 'u'], consts: { i: i64([2, 1], [1, 3]) }, outs: [[4, 3]] },
  { op: 'ScatterElements', data: [{ name: 'x', shape: [3, 3] }, { name: 'u', shape: [1, 3] }], inputs: ['x', 'i', 'u'], consts: { i: i64([1, 3], [1, 0, 2]) }, outs: [[3, 3]] },
  // Extrema (random inputs have no ties), reductions, cumulative sums, einsum, strided slices, 1-D matmuls.
  { op: 'ReduceMax', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axes: [1], keepdims: 0 }, outs: [[2, 4]] },
  { op: 'ReduceMax', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axes: [-1] }, outs: [[2, 3, 1]] },
  { op: 'ReduceMin', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { keepdims: 0 }, outs: [[]] },
  { op: 'ReduceMin', data: [{ name: 'x', shape: [3, 4] }], inputs: ['x'], attrs: { axes: [0, 1] }, outs: [[1, 1]] },
  { op: 'ReduceL2', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { axes: [2], keepdims: 0 }, outs: [[2, 3]] },
  { op: 'Max', data: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }], inputs: ['a', 'b'], outs: [[2, 3]] },
  { op: 'Min', data: [{ name: 'a', shape: [2, 1, 3] }, { name: 'b', shape: [4, 1] }, { name: 'c', shape: [2, 4, 3] }], inputs: ['a', 'b', 'c'], outs: [[2, 4, 3]] },
  { op: 'CumSum', data: [{ name: 'x', shape: [2, 5] }], inputs: ['x', 'ax'], consts: { ax: i64([], [1]) }, outs: [[2, 5]] },
  { op: 'CumSum', data: [{ name: 'x', shape: [3, 4] }], inputs: ['x', 'ax'], consts: { ax: i64([], [0]) }, attrs: { exclusive: 1, reverse: 1 }, outs: [[3, 4]] },
  { op: 'Einsum', data: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [2, 4, 5] }], inputs: ['a', 'b'], attrs: { equation: 'bij,bjk->bik' }, outs: [[2, 3, 5]] },
  { op: 'Einsum', data: [{ name: 'q', shape: [2, 3, 4] }, { name: 'k', shape: [2, 5, 4] }], inputs: ['q', 'k'], attrs: { equation: 'bqd, bkd -> bqk' }, outs: [[2, 3, 5]] },
  { op: 'Einsum', data: [{ name: 'a', shape: [3, 4] }, { name: 'b', shape: [4] }], inputs: ['a', 'b'], attrs: { equation: 'ij,j' }, outs: [[3]] },
  { op: 'Einsum', data: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4, 5] }], inputs: ['a', 'b'], attrs: { equation: '...j,jk->...k' }, outs: [[2, 3, 5]] },
  { op: 'Einsum', data: [{ name: 'x', shape: [2, 3, 4] }], inputs: ['x'], attrs: { equation: 'abc->cab' }, outs: [[4, 2, 3]] },
  { op: 'Slice', data: [{ name: 'x', shape: [5, 6] }], inputs: ['x', 's', 'e', 'a', 'st'], consts: { s: i64([2], [0, 5]), e: i64([2], [5, 0]), a: i64([2], [0, 1]), st: i64([2], [2, -2]) }, outs: [[3, 3]] },
  { op: 'Slice', data: [{ name: 'x', shape: [7] }], inputs: ['x', 's', 'e', 'a', 'st'], consts: { s: i64([1], [-1]), e: i64([1], [-100]), a: i64([1], [0]), st: i64([1], [-3]) }, outs: [[3]] },
  { op: 'MatMul', data: [{ name: 'a', shape: [4] }, { name: 'b', shape: [2, 4, 3] }], inputs: ['a', 'b'], outs: [[2, 3]] },
  { op: 'MatMul', data: [{ name: 'a', shape: [2, 3, 4] }, { name: 'b', shape: [4] }], inputs: ['a', 'b'], outs: [[2, 3]] },
  { op: 'MatMul', data: [{ name: 'a', shape: [4] }, { name: 'b', shape: [4] }], inputs: ['a', 'b'], outs: [[]] },
];

const size = (s: number[]): number => s.reduce((a, b) => a * b, 1);

function buildModel(c: Case): { model: ModelProto; loss: string; grads: Map<string, string> } {
  const node: NodeProto = {
    op_type: c.op, name: `the_${c.op}`, input: c.inputs,
    output: c.outs.map((_, i) => `y${i}`),
    attribute: Object.entries(c.attrs ?? {}).map(([k, v]) => attr(k, v)),
  };
  const nodes: NodeProto[] = [node];
  const terms: string[] = [];
  c.outs.forEach((_, i) => {
    nodes.push({ op_type: 'Mul', name: `wmul${i}`, input: [`y${i}`, `w${i}`], output: [`p${i}`] });
    nodes.push({ op_type: 'ReduceSum', name: `sum${i}`, input: [`p${i}`], output: [`l${i}`], attribute: [attr('keepdims', 0)] });
    terms.push(`l${i}`);
  });
  let loss = terms[0]!;
  for (let i = 1; i < terms.length; i++) {
    nodes.push({ op_type: 'Add', name: `acc${i}`, input: [loss, terms[i]!], output: [`acc${i}`] });
    loss = `acc${i}`;
  }
  const model: ModelProto = {
    ir_version: 8, opset_import: [{ domain: '', version: 17 }],
    graph: {
      name: 'g', node: nodes,
      input: [...c.data.map((d) => valueInfo(d.name, dt(c), d.shape)), ...c.outs.map((s, i) => valueInfo(`w${i}`, dt(c), s))],
      initializer: Object.entries(c.consts ?? {}).map(([name, t]) => ({ ...t, name })),
      output: [valueInfo(loss, dt(c), [])],
    },
  };
  const grads = emitGradients(model, loss, c.data.map((d) => d.name));
  for (const d of c.data) {
    const gname = grads.get(d.name);
    if (gname) model.graph!.output!.push(valueInfo(gname, dt(c), d.shape));
  }
  return { model, loss, grads };
}

function draw(r: () => number, d: DataIn): Float64Array {
  const lo = d.lo ?? -1.5;
  const hi = d.hi ?? 1.5;
  return Float64Array.from({ length: size(d.shape) }, () => {
    let v = lo + (hi - lo) * r();
    if (d.awayFromZero && Math.abs(v) < 0.3) v = v < 0 ? v - 0.3 : v + 0.3;
    return v;
  });
}

const dt = (c: Case): 'float32' | 'float64' => (c.f32 ? 'float32' : 'float64');
const tensor = (c: Case, shape: number[], data: Float64Array): ProbeTensor =>
  (c.f32 ? { dtype: 'float32', dims: shape, data: Float32Array.from(data) } : { dtype: 'float64', dims: shape, data });

describe('derivative rules vs central finite differences (float64, onnxruntime)', () => {
  it.each(CASES.map((c, k) => [`${c.op} #${k}`, c] as const))('%s', async (_label, c) => {
    const { model, loss, grads } = buildModel(c);
    const h = c.f32 ? 1e-2 : H;
    const tol = c.f32 ? 1e-3 : 1e-6;
    for (let trial = 0; trial < TRIALS; trial++) {
      const r = rng(1000 * trial + 7 + CASES.indexOf(c)); // deterministic per op and trial
      const xs = new Map(c.data.map((d) => [d.name, draw(r, d)]));
      const ws = c.outs.map((s) => Float64Array.from({ length: size(s) }, () => r() * 2 - 1));
      const feeds = (shift?: { name: string; v: Float64Array; h: number }): Record<string, ProbeTensor> => {
        const f: Record<string, ProbeTensor> = {};
        for (const d of c.data) {
          let x = xs.get(d.name)!;
          if (shift?.name === d.name) x = x.map((e, i) => e + shift.h * shift.v[i]!);
          f[d.name] = tensor(c, d.shape, x);
        }
        c.outs.forEach((s, i) => { f[`w${i}`] = tensor(c, s, ws[i]!); });
        return f;
      };
      const fetch = [loss, ...c.data.map((d) => grads.get(d.name)).filter((g): g is string => !!g)];
      const base = await probe(model, feeds(), fetch);
      for (const d of c.data) {
        if (c.skip?.includes(d.name)) continue;
        const gname = grads.get(d.name);
        expect(gname, `${c.op}: a gradient for ${d.name}`).toBeDefined();
        const g = base[gname!]!.data as Float64Array | Float32Array;
        expect(g.length).toBe(size(d.shape));
        const v = Float64Array.from({ length: size(d.shape) }, () => r() * 2 - 1);
        const plus = (await probe(model, feeds({ name: d.name, v, h }), [loss]))[loss]!.data as Float64Array | Float32Array;
        const minus = (await probe(model, feeds({ name: d.name, v, h: -h }), [loss]))[loss]!.data as Float64Array | Float32Array;
        const fd = (plus[0]! - minus[0]!) / (2 * h);
        let an = 0;
        for (let i = 0; i < v.length; i++) an += g[i]! * v[i]!;
        expect(Math.abs(an - fd), `${c.op} d/d${d.name} trial ${trial}: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(fd)));
      }
    }
  }, 60_000);
});
