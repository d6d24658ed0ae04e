/**
 * Final validity check of the rewritten model: unique node names and value names (SSA),
 * every input defined before use, graph outputs produced, opset imports and IR version
 * present. Failures here are compiler bugs, not user errors.
 * @module
 */
import type { Pass } from './pass.js';
import type { ModelProto } from '../src/onnx/proto.js';

/** Returns problems found in `model` (empty when valid). */
export function checkModel(model: ModelProto): string[] {
  const problems: string[] = [];
  const g = model.graph;
  if (!g) return ['model has no graph'];
  if (model.ir_version === undefined) problems.push('model has no ir_version');
  if (!(model.opset_import ?? []).length) problems.push('model has no opset_import');
  const defined = new Set<string>();
  for (const i of g.input ?? []) defined.add(i.name!);
  for (const t of g.initializer ?? []) defined.add(t.name!);
  const nodeNames = new Set<string>();
  for (const n of g.node ?? []) {
    if (n.name) {
      if (nodeNames.has(n.name)) problems.push(`duplicate node name '${n.name}'`);
      nodeNames.add(n.name);
    }
    for (const r of n.input ?? []) if (r && !defined.has(r)) problems.push(`node '${n.name}' reads '${r}' before it is defined`);
    for (const o of n.output ?? []) {
      if (!o) continue;
      if (defined.has(o)) problems.push(`value '${o}' is defined twice`);
      defined.add(o);
    }
  }
  for (const o of g.output ?? []) if (!defined.has(o.name!)) problems.push(`graph output '${o.name}' is never produced`);
  return problems;
}

/** The check pass: throws (an internal error) when the rewritten model is invalid. */
export const checkModelPass: Pass = {
  name: 'check-model',
  prints: 'model',
  run(state) {
    const problems = checkModel(state.model);
    if (problems.length) throw new Error(`internal: rewritten model is invalid:\n  ${problems.slice(0, 10).join('\n  ')}`);
    return { changed: false };
  },
};
