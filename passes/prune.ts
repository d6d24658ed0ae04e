/**
 * Removes nodes no graph output needs (intervention temporaries that ended up unused,
 * model nodes made dead by a `set` that replaced their only consumer) and initializers
 * no node uses. Weights stay in their external file either way.
 * @module
 */
import type { Pass } from './pass.js';
import type { GraphProto } from '../src/onnx/proto.js';
import { nodeReads, OnnxGraphView } from '../src/onnx/view.js';

/** Drops nodes not needed for any graph output (reachability on the graph view), then unused initializers. */
export function pruneGraph(g: GraphProto): boolean {
  const live = new OnnxGraphView(g).live();
  const read = new Set((g.output ?? []).map((o) => o.name!));
  for (const n of live) for (const r of nodeReads(n)) read.add(r);
  const before = g.node?.length ?? 0;
  g.node = (g.node ?? []).filter((n) => live.has(n));
  const initBefore = g.initializer?.length ?? 0;
  if (g.initializer) g.initializer = g.initializer.filter((t) => read.has(t.name!));
  return g.node.length !== before || (g.initializer?.length ?? 0) !== initBefore;
}

/** The prune pass. */
export const prunePass: Pass = {
  name: 'prune',
  prints: 'model',
  run(state) {
    return { changed: pruneGraph(state.model.graph!) };
  },
};
