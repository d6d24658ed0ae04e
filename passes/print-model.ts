/**
 * A readable dump of what the compiler added to an ONNX graph (for `--print-ir-after-all`
 * after the ONNX passes): the inserted nodes in graph order, with inputs, outputs and the
 * script location, then the added graph inputs and outputs. Untouched model nodes are
 * summarized by count.
 * @module
 */
import type { ModelProto, NodeProto } from '../src/onnx/proto.js';

function inserted(n: NodeProto): boolean {
  return (n.metadata_props ?? []).some((p) => p.key === 'onnsight.op');
}

/** Text summary of the onnsight-inserted part of `model`. */
export function printModelChanges(model: ModelProto): string {
  const g = model.graph!;
  const nodes = g.node ?? [];
  const lines: string[] = [];
  let untouched = 0;
  for (const n of nodes) {
    if (!inserted(n)) {
      untouched++;
      continue;
    }
    const where = n.doc_string ? `  # ${n.doc_string}` : '';
    lines.push(`${(n.output ?? []).join(', ')} = ${n.domain ? `${n.domain}.` : ''}${n.op_type}(${(n.input ?? []).join(', ')})  [${n.name}]${where}`);
  }
  const ins = (g.input ?? []).filter((i) => i.name?.startsWith('host.') || i.name?.startsWith('port.')).map((i) => i.name);
  const outs = (g.output ?? []).map((o) => o.name);
  return [
    `graph: ${nodes.length} nodes (${untouched} from the model, ${nodes.length - untouched} inserted)`,
    ...lines,
    ...(ins.length ? [`inputs added: ${ins.join(', ')}`] : []),
    `outputs: ${outs.join(', ')}`,
  ].join('\n');
}
