/**
 * Type inference: a dtype and a symbolic shape for every value, and the user errors a
 * type checker finds (shape and dtype mismatches, indices and dims out of range). The rules
 * are the op catalogue's (ir/ops.ts; the model-facing ones in ir/infer-module.ts); this pass
 * runs them in program order.
 *
 * In a scope with rows r0..r1 the `batch` dim of module values becomes `r1 - r0`;
 * `sequence` stays symbolic and `graph.dimValues` supplies its size for range checks.
 * A value whose input types are unknown (after an earlier error) gets no type, silently.
 * @module
 */
import { NnsError, type ErrorCode } from '../src/errors.js';
import type { ModuleTree } from '../src/model/types.js';
import type { Graph, Node, TensorType } from '../ir/ir.js';
import { inferOp } from '../ir/ops.js';
import type { Pass } from './pass.js';

/** Infer one node's result types; returns user errors. */
export function inferNode(n: Node, graph: Graph, tree: ModuleTree): NnsError[] {
  const sc = graph.scopes[n.scope];
  const errors: NnsError[] = [];
  const ins = n.inputs.map((v) => v.type);
  let types: (TensorType | null)[] = [];
  if (!ins.some((t) => t === null)) {
    const fail = (code: ErrorCode, msg: string): void => void errors.push(new NnsError(code, msg, { span: n.span }));
    types = inferOp(n, ins as TensorType[], { tree, dims: { ...graph.dimValues, batch: graph.batch }, rows: sc ? sc.rowEnd - sc.rowStart : 0 }, fail);
  }
  n.results.forEach((v, i) => (v.type = types[i] ?? null));
  return errors;
}

/** Infers every value's type; collects type errors in `ctx.errors`. */
export const inferTypesPass: Pass = {
  name: 'infer-types',
  run(state, ctx) {
    for (const n of state.ir.nodes) ctx.errors.push(...inferNode(n, state.ir, ctx.tree));
    return { changed: true };
  },
};
