/**
 * Lookup tables over one ONNX graph used by the module-tree builder: who produces and who
 * consumes each value, which values are weights, and which values carry data as opposed to
 * constants or shape bookkeeping.
 * @module
 */
import type { AttributeProto, GraphProto, NodeProto, TensorProto } from '../onnx/proto.js';

/**
 * What a value carries.
 * - `const`: an initializer, a `Constant` output, or computed from constants only.
 * - `meta`: shape bookkeeping — a `Shape`/`Size` output, or computed from such values and
 *   constants without materializing a tensor (`Gather`, `Concat`, `Unsqueeze` of shapes...).
 * - `data`: everything else (depends on graph inputs, or materializes a tensor from a shape
 *   with `Range`, `Expand`, `ConstantOfShape`, ... — e.g. position ids or a causal mask).
 */
export type ValueKind = 'const' | 'meta' | 'data';

/** Ops that turn constants and shapes into a tensor whose size follows the input: `data`. */
const MATERIALIZE = new Set([
  'Range', 'Expand', 'ConstantOfShape', 'Tile', 'EyeLike', 'OneHot',
  'RandomNormalLike', 'RandomUniformLike', 'RandomNormal', 'RandomUniform', 'Multinomial', 'Bernoulli',
]);
/** Ops whose output is shape bookkeeping whatever their input. */
const SHAPE_OPS = new Set(['Shape', 'Size']);

/** Producer/consumer tables and value kinds of a graph. */
export interface GraphIndex {
  nodes: NodeProto[];
  /** Value name → index of the node producing it. */
  producer: Map<string, number>;
  /** Value name → indices of the nodes consuming it (including uses inside subgraphs), ascending. */
  consumers: Map<string, number[]>;
  /** Per node: the values it uses (its inputs, then free values of its subgraphs), in order. */
  uses: string[][];
  /** Initializers by name. */
  inits: Map<string, TensorProto>;
  /** Graph inputs that are not initializers. */
  graphInputs: string[];
  /** Graph output names, in order. */
  graphOutputs: string[];
  /** Kind of every value (graph inputs are `data`; unknown names default to `data`). */
  kind: Map<string, ValueKind>;
}

/** Names a subgraph uses without defining them (its outer-scope references). */
function freeValues(g: GraphProto | undefined, out: string[]): void {
  if (!g) return;
  const defined = new Set<string>();
  for (const i of g.input ?? []) if (i.name) defined.add(i.name);
  for (const t of g.initializer ?? []) if (t.name) defined.add(t.name);
  for (const n of g.node ?? []) {
    const inner: string[] = [...(n.input ?? [])];
    for (const a of n.attribute ?? []) subgraphsOf(a).forEach((sg) => freeValues(sg, inner));
    for (const v of inner) if (v && !defined.has(v)) out.push(v);
    for (const v of n.output ?? []) if (v) defined.add(v);
  }
}

function subgraphsOf(a: AttributeProto): GraphProto[] {
  return [...(a.g ? [a.g] : []), ...(a.graphs ?? [])];
}

/** Builds the {@link GraphIndex} of a graph whose nodes are topologically sorted. */
export function indexGraph(graph: GraphProto): GraphIndex {
  const nodes = graph.node ?? [];
  const inits = new Map<string, TensorProto>();
  for (const t of graph.initializer ?? []) if (t.name) inits.set(t.name, t);
  const graphInputs = (graph.input ?? []).map((i) => i.name ?? '').filter((n) => n && !inits.has(n));
  const graphOutputs = (graph.output ?? []).map((o) => o.name ?? '').filter((n) => n);
  const producer = new Map<string, number>();
  const consumers = new Map<string, number[]>();
  const uses: string[][] = [];
  const kind = new Map<string, ValueKind>();
  for (const n of inits.keys()) kind.set(n, 'const');
  for (const n of graphInputs) kind.set(n, 'data');

  nodes.forEach((node, idx) => {
    const used: string[] = [...(node.input ?? [])];
    for (const a of node.attribute ?? []) subgraphsOf(a).forEach((sg) => freeValues(sg, used));
    const seen = new Set<string>();
    const list: string[] = [];
    for (const v of used) {
      if (!v || seen.has(v)) continue;
      seen.add(v);
      list.push(v);
      const c = consumers.get(v);
      if (c) c.push(idx);
      else consumers.set(v, [idx]);
    }
    uses.push(list);
    for (const v of node.output ?? []) if (v) producer.set(v, idx);

    // Value kind of this node's outputs.
    const op = node.op_type ?? '';
    let k: ValueKind;
    if (op === 'Constant') k = 'const';
    else if (SHAPE_OPS.has(op) && (node.domain ?? '') === '') k = 'meta';
    else {
      const ks = list.map((v) => kind.get(v) ?? 'data');
      if (ks.includes('data')) k = 'data';
      else if (MATERIALIZE.has(op)) k = ks.includes('meta') ? 'data' : 'const';
      else k = ks.includes('meta') ? 'meta' : 'const';
      if (op.startsWith('Random') || op === 'Multinomial' || op === 'Bernoulli') k = 'data';
    }
    for (const v of node.output ?? []) if (v) kind.set(v, k);
  });
  return { nodes, producer, consumers, uses, inits, graphInputs, graphOutputs, kind };
}
