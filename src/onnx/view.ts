/**
 * A thin view of an ONNX graph with use-lists: who produces a value, who reads it
 * ({@link OnnxGraphView.uses}), rewiring readers ({@link OnnxGraphView.replaceAllUsesWith}),
 * and the one way to read a constant ({@link OnnxGraphView.constTensor}: an initializer or a
 * `Constant` node). The ONNX passes (lowering, sink-slices, prune, fetch-saves, toposort)
 * and the instrumented-model builder read graphs through it instead of each building its
 * own producer/consumer maps over value names.
 *
 * The graph algorithms — reachability from the graph outputs, cycle detection — run on a
 * `@dagrejs/graphlib` graph of node indices ({@link OnnxGraphView.dependencies}). The
 * topological order is a stable Kahn order ({@link topoOrder}): graphlib's `topsort` does not
 * keep the model's own order where it is valid (rewritten graphs should read like the
 * original, and their node order is part of what the compile cache and the goldens see).
 * @module
 */
import { alg, Graph as Digraph } from '@dagrejs/graphlib';
import type { GraphProto, NodeProto, TensorProto } from './proto.js';
import { DataType } from './proto.js';

/** One read of a value: input slot `index` of `node`. */
export interface Use {
  node: NodeProto;
  index: number;
}

/** Values defined at the top level of a graph: inputs, initializers, node outputs. */
export function definedValues(graph: GraphProto): Set<string> {
  const s = new Set<string>();
  for (const v of graph.input ?? []) if (v.name) s.add(v.name);
  for (const t of graph.initializer ?? []) if (t.name) s.add(t.name);
  for (const sp of graph.sparse_initializer ?? []) if (sp.values?.name) s.add(sp.values.name);
  for (const n of graph.node ?? []) for (const o of n.output ?? []) if (o) s.add(o);
  return s;
}

/** Names a node reads, including outer-scope names read inside its subgraphs. */
export function nodeReads(n: NodeProto): string[] {
  const reads = (n.input ?? []).filter((x) => x);
  for (const a of n.attribute ?? []) {
    for (const g of [a.g, ...(a.graphs ?? [])]) {
      if (!g) continue;
      const inner = definedValues(g);
      for (const m of g.node ?? []) for (const r of nodeReads(m)) if (!inner.has(r)) reads.push(r);
      for (const o of g.output ?? []) if (o.name && !inner.has(o.name)) reads.push(o.name);
    }
  }
  return reads;
}

/** The tensor of a `Constant` node (its `value*` attribute), or undefined. */
export function constantNodeTensor(p: NodeProto): TensorProto | undefined {
  if (p.op_type !== 'Constant' || (p.domain ?? '') !== '') return undefined;
  const a = (p.attribute ?? [])[0];
  if (!a) return undefined;
  if (a.name === 'value' && a.t) return a.t;
  if (a.name === 'value_int') return { dims: [], data_type: DataType.INT64, int64_data: [a.i ?? 0] };
  if (a.name === 'value_ints') return { dims: [(a.ints ?? []).length], data_type: DataType.INT64, int64_data: [...(a.ints ?? [])] };
  if (a.name === 'value_float') return { dims: [], data_type: DataType.FLOAT, float_data: [a.f ?? 0] };
  if (a.name === 'value_floats') return { dims: [(a.floats ?? []).length], data_type: DataType.FLOAT, float_data: [...(a.floats ?? [])] };
  return undefined;
}

/** A view of one graph (see the module comment). Call {@link OnnxGraphView.refresh} after editing `graph.node` by hand. */
export class OnnxGraphView {
  private producers = new Map<string, NodeProto>();
  private useLists = new Map<string, Use[]>();
  private subgraphReads = new Set<string>();
  private inits = new Map<string, TensorProto>();

  constructor(readonly graph: GraphProto) {
    this.refresh();
  }

  /** Rebuilds the indices from `graph`. */
  refresh(): void {
    this.producers.clear();
    this.useLists.clear();
    this.subgraphReads.clear();
    this.inits.clear();
    const inputs = new Set((this.graph.input ?? []).map((v) => v.name));
    for (const t of this.graph.initializer ?? []) if (t.name && !inputs.has(t.name)) this.inits.set(t.name, t);
    for (const n of this.graph.node ?? []) this.index(n);
  }

  private index(n: NodeProto): void {
    for (const o of n.output ?? []) if (o) this.producers.set(o, n);
    (n.input ?? []).forEach((x, index) => {
      if (!x) return;
      let l = this.useLists.get(x);
      if (!l) this.useLists.set(x, (l = []));
      l.push({ node: n, index });
    });
    const direct = new Set(n.input ?? []);
    for (const x of nodeReads(n)) if (!direct.has(x)) this.subgraphReads.add(x);
  }

  /** The node producing `name` (undefined for graph inputs, initializers and unknown names). */
  producer(name: string): NodeProto | undefined {
    return this.producers.get(name);
  }

  /** Input slots reading `name` directly (reads inside subgraphs: {@link OnnxGraphView.readInSubgraph}). */
  uses(name: string): readonly Use[] {
    return this.useLists.get(name) ?? [];
  }

  /** Distinct nodes reading `name` directly. */
  users(name: string): NodeProto[] {
    return [...new Set(this.uses(name).map((u) => u.node))];
  }

  /** Whether a subgraph (If/Loop/Scan body) reads `name` from the outer scope. */
  readInSubgraph(name: string): boolean {
    return this.subgraphReads.has(name);
  }

  /** Whether `name` is a graph output. */
  isOutput(name: string): boolean {
    return (this.graph.output ?? []).some((o) => o.name === name);
  }

  /** Sets input `index` of `node` to `name`, keeping the use-lists. */
  setInput(node: NodeProto, index: number, name: string): void {
    const old = node.input![index];
    if (old) {
      const l = this.useLists.get(old)?.filter((u) => !(u.node === node && u.index === index));
      if (l) this.useLists.set(old, l);
    }
    node.input![index] = name;
    if (name) {
      let l = this.useLists.get(name);
      if (!l) this.useLists.set(name, (l = []));
      l.push({ node, index });
    }
  }

  /** Points every direct use of `old` at `next` (except uses for which `except` is true). Graph outputs are not renamed. */
  replaceAllUsesWith(old: string, next: string, except: (u: Use) => boolean = () => false): void {
    for (const u of [...this.uses(old)]) if (!except(u)) this.setInput(u.node, u.index, next);
  }

  /**
   * Renames value `old` to `fresh`: its producer's output and every input that still reads
   * it; the use-list moves with it (uses recorded earlier stay recorded, even when their
   * slot was rewired since without {@link OnnxGraphView.setInput}).
   */
  renameValue(old: string, fresh: string): void {
    for (const n of this.graph.node ?? []) {
      n.output = (n.output ?? []).map((o) => (o === old ? fresh : o));
      n.input = (n.input ?? []).map((i) => (i === old ? fresh : i));
    }
    const p = this.producers.get(old);
    if (p) { this.producers.delete(old); this.producers.set(fresh, p); }
    this.useLists.set(fresh, this.useLists.get(old) ?? []);
  }

  /** Appends a node (indexed). */
  add(node: NodeProto): NodeProto {
    (this.graph.node ??= []).push(node);
    this.index(node);
    return node;
  }

  /** Removes nodes and their uses from the graph and the indices. */
  remove(dead: ReadonlySet<NodeProto>): void {
    if (dead.size === 0) return;
    this.graph.node = (this.graph.node ?? []).filter((n) => !dead.has(n));
    for (const n of dead) for (const o of n.output ?? []) if (this.producers.get(o) === n) this.producers.delete(o);
    for (const [k, l] of this.useLists) this.useLists.set(k, l.filter((u) => !dead.has(u.node)));
  }

  /** The constant tensor behind `name`: an initializer that is not a graph input, or a `Constant` node's value. */
  constTensor(name: string): TensorProto | undefined {
    const init = this.inits.get(name);
    if (init) return init;
    const p = this.producers.get(name);
    return p ? constantNodeTensor(p) : undefined;
  }

  /** The dependency graph: node index `i` → node index `j` when node j reads an output of node i (subgraph reads included). */
  dependencies(): Digraph {
    const nodes = this.graph.node ?? [];
    const at = new Map(nodes.map((n, i) => [n, String(i)]));
    const g = new Digraph();
    nodes.forEach((_, i) => g.setNode(String(i)));
    nodes.forEach((n, j) => {
      for (const r of nodeReads(n)) {
        const p = this.producers.get(r);
        if (p && p !== n && at.has(p)) g.setEdge(at.get(p)!, String(j));
      }
    });
    return g;
  }

  /** Nodes some graph output (or one of `roots`) needs: reachability backwards from them (graphlib preorder). */
  live(roots: readonly string[] = (this.graph.output ?? []).map((o) => o.name!)): Set<NodeProto> {
    const nodes = this.graph.node ?? [];
    const reversed = new Digraph();
    nodes.forEach((_, i) => reversed.setNode(String(i)));
    for (const e of this.dependencies().edges()) reversed.setEdge(e.w, e.v);
    const at = new Map(nodes.map((n, i) => [n, String(i)]));
    const starts = [...new Set(roots.map((r) => this.producers.get(r)).filter((p): p is NodeProto => !!p && at.has(p)).map((p) => at.get(p)!))];
    // Iterative (graphlib's preorder recurses once per node of a chain, and a script can chain thousands).
    const seen = new Set<string>();
    const stack = [...starts];
    while (stack.length > 0) {
      const v = stack.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      for (const w of reversed.successors(v) ?? []) if (!seen.has(w)) stack.push(w);
    }
    return new Set([...seen].map((i) => nodes[Number(i)]!));
  }

  /** Nodes on a dependency cycle (graphlib findCycles); empty when the graph is acyclic. */
  cyclic(): NodeProto[] {
    const nodes = this.graph.node ?? [];
    const deps = this.dependencies();
    // Peel off every node that is not on or behind a cycle first (iteratively: graphlib's
    // findCycles recurses once per node of a chain); an acyclic graph ends here.
    const indeg = new Map(deps.nodes().map((v) => [v, deps.predecessors(v)?.length ?? 0]));
    const ready = [...indeg].filter(([, d]) => d === 0).map(([v]) => v);
    while (ready.length > 0) {
      const v = ready.pop()!;
      indeg.delete(v);
      for (const w of deps.successors(v) ?? []) {
        const d = indeg.get(w)! - 1;
        indeg.set(w, d);
        if (d === 0) ready.push(w);
      }
    }
    if (indeg.size === 0) return [];
    const rest = new Digraph();
    for (const v of indeg.keys()) rest.setNode(v);
    for (const e of deps.edges()) if (indeg.has(e.v) && indeg.has(e.w)) rest.setEdge(e.v, e.w);
    return alg.findCycles(rest).flat().map(Number).sort((a, b) => a - b).map((i) => nodes[i]!);
  }
}

/** A topological order of a graph's nodes, and the nodes that sit on cycles (empty when there are none). */
export interface TopoOrder {
  /** Nodes in a valid order (all of them when acyclic); stable: the existing order is kept where valid. */
  order: NodeProto[];
  /** Nodes on a cycle (nodes that only hang below a cycle are left out). */
  cyclic: NodeProto[];
}

/**
 * Orders `graph.node` topologically without changing the graph (Kahn's algorithm, ready
 * nodes taken in their original order). Reads of names that no node produces (inputs,
 * initializers, outer scope) impose no order. Nodes on cycles come from graphlib.
 */
export function topoOrder(graph: GraphProto): TopoOrder {
  const view = new OnnxGraphView(graph);
  const nodes = graph.node ?? [];
  const deps = view.dependencies();
  const indeg = nodes.map((_, i) => deps.predecessors(String(i))?.length ?? 0);
  const users = nodes.map((_, i) => (deps.successors(String(i)) ?? []).map(Number));
  const heap = new MinHeap();
  indeg.forEach((d, i) => { if (d === 0) heap.push(i); });
  const order: NodeProto[] = [];
  while (heap.size) {
    const i = heap.pop();
    order.push(nodes[i]!);
    for (const u of users[i]!) if (--indeg[u]! === 0) heap.push(u);
  }
  return { order, cyclic: order.length === nodes.length ? [] : view.cyclic() };
}

/** A binary min-heap of integers (the ready set of {@link topoOrder}). */
class MinHeap {
  private readonly a: number[] = [];

  get size(): number {
    return this.a.length;
  }

  push(x: number): void {
    const a = this.a;
    a.push(x);
    for (let i = a.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (a[p]! <= a[i]!) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }

  pop(): number {
    const a = this.a;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length) {
      a[0] = last;
      for (let i = 0; ;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < a.length && a[l]! < a[m]!) m = l;
        if (r < a.length && a[r]! < a[m]!) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }
}
