/**
 * Common-subexpression elimination: merges structurally identical pure nodes — same op,
 * same attributes (constants compared by their bytes, so NaN, ±inf and −0 stay distinct), same inputs, and for row-reading ops (module refs, graph outputs)
 * the same scope. Module refs carry a `version` (sets before them), so a read before a
 * `set` never merges with a read after it. Effect ops (`set`, `save`) are never merged.
 * The first node in program order is kept; later ones are rewired to it and removed.
 * @module
 */
import { ROW_OPS, type Graph, type Node, type Value } from '../ir/ir.js';
import { EFFECT_OPS } from '../ir/ops.js';
import { attrsKey, stableStringify } from '../ir/key.js';
import type { Pass } from './pass.js';

/** The structural key of a node (null for effect ops). */
export function cseKey(n: Node, ids: ReadonlyMap<Value, number>): string | null {
  if (EFFECT_OPS.has(n.op)) return null;
  const scope = ROW_OPS.has(n.op) ? n.scope : -1;
  return stableStringify([n.op, scope, n.inputs.map((v) => ids.get(v) ?? -1 - v.id), attrsKey(n.op, n.attrs)]);
}

/** Merge duplicates in one forward sweep; returns how many nodes were removed. */
export function eliminateCommonSubexpressions(graph: Graph): number {
  const ids = new Map<Value, number>();
  const seen = new Map<string, Node>();
  const dead = new Set<Node>();
  for (const n of graph.nodes) {
    const key = cseKey(n, ids);
    const first = key === null ? undefined : seen.get(key);
    if (first && first.results.length === n.results.length) {
      n.results.forEach((v, i) => {
        const keep = first.results[i]!;
        if (keep.name === undefined && v.name !== undefined) keep.name = v.name;
        v.replaceAllUsesWith(keep);
      });
      dead.add(n);
      continue;
    }
    if (key !== null) seen.set(key, n);
    for (const v of n.results) ids.set(v, ids.size);
  }
  graph.remove(dead);
  return dead.size;
}

/** Merges identical pure nodes. */
export const csePass: Pass = {
  name: 'cse',
  run(state) {
    return { changed: eliminateCommonSubexpressions(state.ir) > 0 };
  },
};
