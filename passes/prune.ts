/**
 * Removes nodes no graph output needs (intervention temporaries that ended up unused,
 * model nodes made dead by a `set` that replaced their only consumer) and initializers
 * no node uses. Weights stay in their external file either way.
 * @module
 */
import type { Pass } from './pass.js';
import type { GraphProto, NodeProto } from '../src/onnx/proto.js';
import { nodeReads } from '../src/onnx/graph-builder.js';

/** Drops nodes not needed for any graph output, then unused initializers. */
export function pruneGraph(g: GraphProto): boolean {
  const producer = new Map<string, NodeProto>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) if (o) producer.set(o, n);
  const live = new Set<NodeProto>();
  const stack = (g.output ?? []).map((o) => o.name!);
  const seen = new Set<string>();
  while (stack.length) {
    const name = stack.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    const p = producer.get(name);
    if (!p || live.has(p)) continue;
    live.add(p);
    stack.push(...nodeReads(p));
  }
  const before = g.node?.length ?? 0;
  g.node = (g.node ?? []).filter((n) => live.has(n));
  const initBefore = g.initializer?.length ?? 0;
  if (g.initializer) g.initializer = g.initializer.filter((t) => seen.has(t.name!));
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
