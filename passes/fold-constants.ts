/**
 * Constant folding and local simplification, as (pattern → rewrite) rules run to a fixed
 * point with a loop guard. Folding evaluates ops the catalogue marks foldable (ir/ops.ts
 * `fold`: elementwise arithmetic with broadcasting, neg/exp/log/sqrt/abs/relu, reshape,
 * transpose, index) whose inputs are all `const`, with the host evaluator (`evalOp`), into
 * a new `const` with the node's span and scope. Identities
 * (`x + 0`, `x * 1`, `x - 0`, `x / 1`, `--x`) are removed when the result type equals `x`'s.
 * Folded inputs left unused are removed by DCE.
 * @module
 */
import { Node, type DType, type Graph, type OpName, type Value } from '../ir/ir.js';
import { HostEvalError, tensorOf } from '../ir/eval.js';
import { evalOp, inferWith, OPS } from '../ir/ops.js';
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

/**
 * Evaluates a foldable op (catalogue `fold`) on literals with the host evaluator; null when
 * the op is not foldable or the host cannot compute it. The result dtype is `dtype` (the
 * IR's inferred type) or, when absent, what the op's type rule gives for these literals.
 */
export function evaluate(op: OpName, attrs: unknown, xs: Lit[], dtype?: DType): Lit | null {
  const def = OPS[op];
  if (!def.fold || !def.eval) return null;
  if (dtype === undefined) {
    let failed = false;
    const [t] = inferWith(op, {
      attrs: attrs as never, inputs: xs.map((x) => ({ dtype: x.dtype, shape: x.shape })), literal: (i) => xs[i] ?? null,
      results: 1, dims: {}, rows: 0, fail: () => void (failed = true),
      get tree(): never { throw new Error(`internal: folding ${op} needs no model`); },
    });
    if (failed || !t) return null;
    dtype = t.dtype;
  }
  try {
    const [r] = evalOp(op, attrs as never, xs.map((x) => tensorOf(x.dtype, x.shape, x.data)), dtype);
    return { dtype, shape: [...r!.shape], data: Array.from(r!.data as ArrayLike<number | bigint>, Number) };
  } catch (e) {
    if (e instanceof HostEvalError) return null;
    throw e;
  }
}

const lit = (v: Value): Lit | null => (v.producer.is('const') ? (v.producer.attrs as Lit) : null);

/** Largest literal that folding creates. */
const FOLD_MAX_ELEMENTS = 2 ** 16;

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
    const r = evaluate(n.op, n.attrs, xs as Lit[], n.result.type?.dtype);
    if (r === null) return null;
    const dtype = r.dtype;
    const node = new Node('const', [], { dtype, shape: [...r.shape], data: r.data }, 1, n.scope, n.span);
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
