/**
 * Constant folding and local simplification, as (pattern → rewrite) rules run to a fixed
 * point with a loop guard. Folding evaluates pure ops whose inputs are all `const`
 * (elementwise arithmetic with broadcasting, neg/exp/log/sqrt/abs/relu, reshape,
 * transpose, index) into a new `const` with the node's span and scope. Identities
 * (`x + 0`, `x * 1`, `x - 0`, `x / 1`, `--x`) are removed when the result type equals `x`'s.
 * Folded inputs left unused are removed by DCE.
 * @module
 */
import { Node, type DType, type Graph, type IndexItem, type OpAttrs, type Value } from '../ir/ir.js';
import { broadcast, expandItems, isFloat, promote, reshapeShape, sliceRange } from '../ir/shape.js';
import type { Pass } from './pass.js';

/** A concrete tensor. */
interface Lit { dtype: DType; shape: number[]; data: number[] }

/** A rewrite: the value that replaces the node's single result, or a new node to insert in its place. */
export type Rewrite = { value: Value } | { node: Node };

/** One local rule. */
export interface Rule {
  readonly name: string;
  apply(n: Node): Rewrite | null;
}

const UNARY: Partial<Record<string, (x: number) => number>> = {
  neg: (x) => -x, exp: Math.exp, log: Math.log, sqrt: Math.sqrt, abs: Math.abs, relu: (x) => (x > 0 ? x : 0),
};
const BINARY: Partial<Record<string, (a: number, b: number) => number>> = {
  add: (a, b) => a + b, sub: (a, b) => a - b, mul: (a, b) => a * b, div: (a, b) => a / b,
};

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** Element of `x` at the multi-index `idx` of a (broadcast) output of rank ≥ x's. */
function at(x: Lit, idx: readonly number[]): number {
  const st = strides(x.shape);
  const off = idx.length - x.shape.length;
  let k = 0;
  x.shape.forEach((d, i) => (k += (d === 1 ? 0 : idx[i + off]!) * st[i]!));
  return x.data[k]!;
}

function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let j = shape.length - 1; j >= 0; j--) { idx[j] = i % shape[j]!; i = Math.floor(i / shape[j]!); }
  return idx;
}

/** Round values to what `dtype` can hold. */
export function castData(data: number[], dtype: DType): number[] {
  if (dtype === 'float32') return data.map(Math.fround);
  if (dtype === 'bool') return data.map((v) => (v ? 1 : 0));
  if (!isFloat(dtype)) return data.map(Math.trunc);
  return data;
}

/** Evaluate a pure op on literals; null when not foldable. */
export function evaluate(op: string, attrs: unknown, xs: Lit[]): Lit | null {
  const [x, y] = xs;
  if (!x) return null;
  const f1 = UNARY[op];
  if (f1) return { dtype: isFloat(x.dtype) || op === 'neg' || op === 'abs' || op === 'relu' ? x.dtype : 'float32', shape: x.shape, data: x.data.map(f1) };
  const f2 = BINARY[op];
  if (f2 && y) {
    const shape = broadcast(x.shape, y.shape) as number[] | null;
    if (shape === null) return null;
    const n = shape.reduce((p, d) => p * d, 1);
    const data = Array.from({ length: n }, (_, i) => { const idx = unravel(i, shape); return f2(at(x, idx), at(y, idx)); });
    let dtype = x.shape.length === 0 && y.shape.length > 0 ? y.dtype : y.shape.length === 0 && x.shape.length > 0 ? x.dtype : promote(x.dtype, y.dtype);
    if (op === 'div' && !isFloat(dtype)) dtype = 'float32';
    return { dtype, shape, data };
  }
  if (op === 'reshape') {
    const r = reshapeShape(x.shape, (attrs as OpAttrs['reshape']).shape);
    return 'code' in r ? null : { dtype: x.dtype, shape: r.shape as number[], data: x.data };
  }
  if (op === 'transpose') {
    const { dim0, dim1 } = attrs as OpAttrs['transpose'];
    const r = x.shape.length;
    const [a, b] = [dim0 < 0 ? dim0 + r : dim0, dim1 < 0 ? dim1 + r : dim1];
    if (a < 0 || b < 0 || a >= r || b >= r) return null;
    const shape = [...x.shape];
    [shape[a], shape[b]] = [x.shape[b]!, x.shape[a]!];
    const data = x.data.map((_, i) => { const idx = unravel(i, shape); [idx[a], idx[b]] = [idx[b]!, idx[a]!]; return at(x, idx); });
    return { dtype: x.dtype, shape, data };
  }
  if (op === 'index') return indexLit(x, (attrs as OpAttrs['index']).items);
  return null;
}

function indexLit(x: Lit, items: IndexItem[]): Lit | null {
  const full = expandItems(items, x.shape.length);
  if (!Array.isArray(full)) return null;
  const shape: number[] = [];
  const pick: number[][] = []; // per input axis: the source indices kept
  const keep: boolean[] = [];
  let axis = 0;
  for (const it of full) {
    if (it.kind === 'newaxis') { shape.push(1); continue; }
    const n = x.shape[axis++]!;
    if (it.kind === 'index') {
      if (it.index >= n || it.index < -n) return null;
      pick.push([it.index < 0 ? it.index + n : it.index]);
      keep.push(false);
    } else if (it.kind === 'slice') {
      if (it.step === 0) return null;
      const { start, step, len } = sliceRange(n, it);
      pick.push(Array.from({ length: len }, (_, i) => start + i * step));
      keep.push(true);
      shape.push(len);
    }
  }
  const st = strides(x.shape);
  let offs = [0];
  pick.forEach((p, i) => { offs = offs.flatMap((o) => p.map((j) => o + j * st[i]!)); });
  return { dtype: x.dtype, shape, data: offs.map((o) => x.data[o]!) };
}

/** Largest literal that folding creates. */
const FOLD_MAX_ELEMENTS = 2 ** 16;

const lit = (v: Value): Lit | null => (v.producer.is('const') ? (v.producer.attrs as Lit) : null);

/** Fold a pure op whose inputs are all literals. */
export const foldRule: Rule = {
  name: 'fold',
  apply(n) {
    if (n.results.length !== 1 || n.inputs.length === 0) return null;
    const xs = n.inputs.map(lit);
    if (xs.some((x) => x === null)) return null;
    // Big results stay operations (onnxruntime computes them; the model file stays small).
    const shape = n.result.type?.shape;
    if (!shape || shape.some((d) => typeof d !== 'number') || (shape as number[]).reduce((p, d) => p * d, 1) > FOLD_MAX_ELEMENTS) return null;
    const r = evaluate(n.op, n.attrs, xs as Lit[]);
    if (r === null) return null;
    const dtype = n.result.type?.dtype ?? r.dtype;
    const node = new Node('const', [], { dtype, shape: [...r.shape], data: castData(r.data, dtype) }, 1, n.scope, n.span);
    node.result.type = { dtype, shape: [...r.shape] };
    return { node };
  },
};

const sameType = (a: Value, b: Value): boolean =>
  a.type !== null && b.type !== null && a.type.dtype === b.type.dtype && JSON.stringify(a.type.shape) === JSON.stringify(b.type.shape);
const isAll = (v: Value, k: number): boolean => { const l = lit(v); return l !== null && l.data.every((x) => x === k); };

/** Remove arithmetic identities. */
export const identityRule: Rule = {
  name: 'identity',
  apply(n) {
    const [a, b] = n.inputs;
    const ok = (x: Value | undefined): Rewrite | null => (x && sameType(x, n.results[0]!) ? { value: x } : null);
    if (n.op === 'add') return (isAll(b!, 0) ? ok(a) : null) ?? (isAll(a!, 0) ? ok(b) : null);
    if (n.op === 'mul') return (isAll(b!, 1) ? ok(a) : null) ?? (isAll(a!, 1) ? ok(b) : null);
    if (n.op === 'sub') return isAll(b!, 0) ? ok(a) : null;
    if (n.op === 'div') return isAll(b!, 1) ? ok(a) : null;
    if (n.op === 'neg' && a!.producer.op === 'neg') return ok(a!.producer.inputs[0]);
    return null;
  },
};

/** Apply rules to a fixed point (at most `maxRounds` sweeps); returns the number of rewrites. */
export function rewriteToFixedPoint(graph: Graph, rules: readonly Rule[], maxRounds = 100): number {
  let total = 0;
  for (let round = 0; round < maxRounds; round++) {
    let changed = 0;
    const out: Node[] = [];
    for (const n of graph.nodes) {
      let rw: Rewrite | null = null;
      for (const r of rules) if ((rw = r.apply(n)) !== null) break;
      if (rw === null) { out.push(n); continue; }
      const v = 'value' in rw ? rw.value : rw.node.result;
      if ('node' in rw) out.push(rw.node);
      const old = n.result;
      if (old.name !== undefined && v.name === undefined) v.name = old.name;
      old.replaceAllUsesWith(v);
      n.drop();
      changed++;
    }
    graph.nodes = out;
    total += changed;
    if (changed === 0) return total;
  }
  throw new Error(`internal: fold-constants did not reach a fixed point in ${maxRounds} rounds`);
}

/** Folds constant subexpressions and removes identities. */
export const foldConstantsPass: Pass = {
  name: 'fold-constants',
  run(state) {
    return { changed: rewriteToFixedPoint(state.ir, [foldRule, identityRule]) > 0 };
  },
};
