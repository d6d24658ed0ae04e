/**
 * Dead-code elimination: removes pure nodes none of whose results are used. Effect ops
 * (`set`, `save`; {@link EFFECT_OPS}) are always kept. One backward sweep removes whole
 * dead chains.
 * @module
 */
import type { Graph, Node } from '../ir/ir.js';
import { EFFECT_OPS } from '../ir/ops.js';
import type { Pass } from './pass.js';

/** Remove dead pure nodes; returns how many were removed. */
export function eliminateDeadCode(graph: Graph): number {
  const dead = new Set<Node>();
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i]!;
    if (EFFECT_OPS.has(n.op)) continue;
    if (n.results.every((v) => [...v.uses].every((u) => dead.has(u)))) {
      dead.add(n);
      n.drop();
    }
  }
  graph.remove(dead);
  return dead.size;
}

/** Removes unused pure nodes. */
export const dcePass: Pass = {
  name: 'dce',
  run(state) {
    return { changed: eliminateDeadCode(state.ir) > 0 };
  },
};
