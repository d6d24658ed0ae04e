/**
 * Each intervention statement as one ONNX local function (`nns compile`'s default; `--flat`
 * keeps every inserted node in the main graph): the nodes one statement run inserted — its
 * reads' indexing, its computation, a set's scatter, a module call's clones — become the
 * body of a function in domain `ai.onnsight` (`nns_set`, `nns_save_2`, `nns_call`, ...),
 * called once from the main graph by a node named by the statement's scope
 * (`/transformer/h.3/mlp/nns.set`) whose `doc_string` is the source line and whose
 * `metadata_props` say what it is. Netron draws one node per statement and opens its body on
 * click; onnxruntime inlines the functions when it builds a session, so the numbers are the
 * flat graph's.
 *
 * A statement whose nodes would form a cycle with the model's once folded into one node
 * (it reads a value the model computes from another of its own values), or whose nodes
 * carry subgraphs, stays flat.
 * @module
 */
import type { Pass } from './pass.js';
import type { FunctionProto, GraphProto, NodeProto, OperatorSetIdProto, ValueInfoProto } from '../src/onnx/proto.js';
import { constantNodeTensor, nodeReads, topoOrder } from '../src/onnx/view.js';
import { CALL_DOMAIN } from './pass.js';
import { nodeProvenance, scopePrefix, spanText, unitKey, type Provenance } from './onnx-emit.js';

/** One statement run's inserted nodes. */
interface Group {
  key: string;
  prov: Provenance;
  nodes: NodeProto[];
}

/** The function name of a statement kind (`set` → `nns_set`); no dots (ONNX function names are identifiers to many tools). */
function functionBase(kind: string | undefined): string {
  return `nns_${(kind ?? 'compute').replace(/[^A-Za-z0-9_]/g, '_')}`;
}

/** Whether a node (or a subgraph of it) has graph attributes. */
function hasSubgraph(n: NodeProto): boolean {
  return (n.attribute ?? []).some((a) => a.g || (a.graphs?.length ?? 0) > 0);
}

/** Ops cheap enough to repeat in each statement that reads them: constants, shapes, and data movement no larger than its input. */
const COPYABLE = new Set(['Constant', 'ConstantOfShape', 'Shape', 'Size', 'Slice', 'Gather', 'Reshape', 'Squeeze', 'Unsqueeze', 'Identity', 'Cast', 'Flatten', 'Range', 'Concat']);

/**
 * Gives each statement its own copy of the cheap sources it reads from another statement's
 * nodes (constants never shared across statements): a node of group G whose op is in
 * {@link COPYABLE} and whose inputs come from outside G (or from such nodes) is copied, with
 * those, into every other group reading it. A shared source makes an edge between two
 * statements that computes nothing (the row `h[0]` one statement saves and another patches
 * with), and with a gradient sweep between them such an edge closes a cycle when each
 * statement becomes one node. The copies compute the same values from the same inputs; a
 * node no one reads any more is dropped.
 */
function copySharedSources(g: GraphProto, groups: Group[], graphOutputs: ReadonlySet<string>, which: (n: NodeProto, owner: Group | undefined) => boolean, readers: (grp: Group) => boolean = () => true): void {
  const groupOf = new Map<NodeProto, Group>();
  for (const grp of groups) for (const n of grp.nodes) groupOf.set(n, grp);
  const producer = new Map<string, NodeProto>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) if (o) producer.set(o, n);
  // The copyable sources of each group.
  const copyable = new Set<NodeProto>();
  for (const grp of groups) {
    for (const n of grp.nodes) {
      if (!COPYABLE.has(n.op_type ?? '') || n.domain || hasSubgraph(n) || !which(n, grp)) continue;
      if ((n.input ?? []).every((x) => { const p = x ? producer.get(x) : undefined; return !p || groupOf.get(p) !== grp || copyable.has(p); })) copyable.add(n);
    }
  }
  // The model's own constants too (a backward sweep reads the GELU's): a function holds its constants.
  for (const n of g.node ?? []) if (!groupOf.has(n) && n.op_type === 'Constant' && !n.domain && !(n.input ?? []).length && which(n, undefined)) copyable.add(n);
  if (!copyable.size) return;
  const taken = new Set<string>();
  for (const n of g.node ?? []) { if (n.name) taken.add(n.name); for (const o of n.output ?? []) taken.add(o); }
  for (const v of [...(g.input ?? []), ...(g.output ?? [])]) if (v.name) taken.add(v.name);
  for (const t of g.initializer ?? []) if (t.name) taken.add(t.name);
  const unique = (base: string): string => {
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    return name;
  };
  const info = new Map([...(g.output ?? []), ...(g.value_info ?? [])].map((v) => [v.name!, v]));
  const newInfo: ValueInfoProto[] = [];
  const copies = new Map<string, string>(); // `${group key}|${value}` → the group's copy of the value
  const before = new Map<NodeProto, NodeProto[]>(); // copies to place before a reader
  let changed = false;
  const copyInto = (grp: Group, reader: NodeProto, p: NodeProto, out: string): string => {
    const key = `${grp.key}|${out}`;
    const hit = copies.get(key);
    if (hit) return hit;
    const ins = (p.input ?? []).map((x) => {
      const q = x ? producer.get(x) : undefined;
      return q && copyable.has(q) && groupOf.get(q) === groupOf.get(p) ? copyInto(grp, reader, q, x) : x;
    });
    const scope = (reader.name ?? '').replace(/\/[^/]*$/, '');
    const name = unique(`${scope}/${p.op_type}`);
    const outs = (p.output ?? []).map((o, i) => (o ? unique(`${name}_output_${i}`) : o));
    const copy: NodeProto = { ...p, name, input: ins, output: outs, ...(reader.doc_string ? { doc_string: reader.doc_string } : {}), ...(reader.metadata_props ? { metadata_props: reader.metadata_props.map((e) => ({ ...e })) } : {}) };
    const prov = nodeProvenance.get(reader);
    if (prov) nodeProvenance.set(copy, prov);
    (p.output ?? []).forEach((o, i) => {
      if (!o) return;
      copies.set(`${grp.key}|${o}`, outs[i]!);
      const v = info.get(o);
      const t = v ? undefined : constantNodeTensor(p);
      if (v) newInfo.push({ ...v, name: outs[i]! });
      else if (t) newInfo.push({ name: outs[i]!, type: { tensor_type: { elem_type: t.data_type ?? 1, shape: { dim: (t.dims ?? []).map((d) => ({ dim_value: Number(d) })) } } } });
    });
    before.set(reader, [...(before.get(reader) ?? []), copy]);
    groupOf.set(copy, grp);
    changed = true;
    return copies.get(key)!;
  };
  for (const grp of groups) {
    if (!readers(grp)) continue;
    for (const m of grp.nodes) {
      m.input = (m.input ?? []).map((x) => {
        const p = x ? producer.get(x) : undefined;
        return p && copyable.has(p) && groupOf.get(p) !== grp ? copyInto(grp, m, p, x) : x;
      });
    }
  }
  if (!changed) return;
  // Place the copies before their readers (copies of inputs first: they were made first).
  const place = (list: NodeProto[]): NodeProto[] => list.flatMap((n) => [...(before.get(n) ?? []), n]);
  g.node = place(g.node ?? []);
  for (const grp of groups) grp.nodes = place(grp.nodes);
  g.value_info = [...(g.value_info ?? []), ...newInfo];
  // Drop originals no one reads now.
  let nodes: NodeProto[] = g.node;
  for (;;) {
    const read = new Set<string>(graphOutputs);
    for (const n of nodes) for (const x of nodeReads(n)) read.add(x);
    const dead = new Set<NodeProto>(nodes.filter((n) => copyable.has(n) && groupOf.has(n) && (n.output ?? []).every((o) => !o || !read.has(o))));
    if (!dead.size) break;
    nodes = nodes.filter((n) => !dead.has(n));
    const gone = new Set([...dead].flatMap((n) => n.output ?? []));
    g.value_info = (g.value_info ?? []).filter((v) => !gone.has(v.name!));
    for (const grp of groups) grp.nodes = grp.nodes.filter((n) => !dead.has(n));
  }
  g.node = nodes;
}

/** The groups that would sit on a cycle if each were folded into one node. */
function groupsOnCycle(g: GraphProto, groups: readonly Group[]): Set<Group> {
  const callOf = new Map<NodeProto, NodeProto>();
  const groupOfCall = new Map<NodeProto, Group>();
  for (const grp of groups) {
    if (!grp.nodes.length) continue;
    const produced = new Set(grp.nodes.flatMap((n) => n.output ?? []));
    const call: NodeProto = { input: [...new Set(grp.nodes.flatMap((n) => nodeReads(n)).filter((x) => !produced.has(x)))], output: [...produced].filter(Boolean) };
    for (const n of grp.nodes) callOf.set(n, call);
    groupOfCall.set(call, grp);
  }
  const seen = new Set<NodeProto>();
  const node: NodeProto[] = [];
  for (const n of g.node ?? []) {
    const c = callOf.get(n) ?? n;
    if (!seen.has(c)) { seen.add(c); node.push(c); }
  }
  const { cyclic } = topoOrder({ ...g, node });
  return new Set(cyclic.map((c) => groupOfCall.get(c)).filter((x): x is Group => x !== undefined));
}

/**
 * Folds each group into a function call in `g`; returns the functions made. `text` gives a
 * statement's source text for the doc strings.
 */
export function foldStatements(model: { graph?: GraphProto; functions?: FunctionProto[]; opset_import?: OperatorSetIdProto[] }, text?: (p: Provenance) => string | undefined): FunctionProto[] {
  const g = model.graph!;
  const groups = new Map<string, Group>();
  for (const n of g.node ?? []) {
    const prov = nodeProvenance.get(n);
    if (!prov) continue;
    const key = unitKey(prov);
    let grp = groups.get(key);
    if (!grp) groups.set(key, (grp = { key, prov: { ...prov, module: prov.stmtModule ?? prov.module }, nodes: [] }));
    grp.nodes.push(n);
  }
  const graphOutputs = new Set((g.output ?? []).map((o) => o.name!));
  // Constants are never shared across statements; cheap sources (a row read) are not shared
  // between statements that would otherwise sit on a cycle once folded.
  const groupList = [...groups.values()];
  copySharedSources(g, groupList, graphOutputs, (n) => n.op_type === 'Constant' && !(n.input ?? []).length);
  const cyclic = groupsOnCycle(g, groupList);
  if (cyclic.size) copySharedSources(g, groupList, graphOutputs, (_n, owner) => owner !== undefined && cyclic.has(owner), (reader) => cyclic.has(reader));
  const valueInfo = new Map((g.value_info ?? []).map((v) => [v.name!, v]));
  const outputInfo = new Map((g.output ?? []).map((v) => [v.name!, v]));
  const taken = new Set<string>([...(g.node ?? []).map((n) => n.name ?? ''), ...(model.functions ?? []).map((f) => f.name ?? '')]);
  const unique = (base: string): string => {
    let name = base;
    for (let i = 1; taken.has(name); i++) name = `${base}_${i}`;
    taken.add(name);
    return name;
  };
  const folded: { call: NodeProto; fn: FunctionProto; nodes: NodeProto[] }[] = [];
  for (const grp of groups.values()) {
    if (grp.nodes.length < 1 || grp.nodes.some(hasSubgraph)) continue;
    const inside = new Set(grp.nodes);
    const produced = new Set(grp.nodes.flatMap((n) => (n.output ?? []).filter(Boolean)));
    const inputs: string[] = [];
    const seenIn = new Set<string>();
    for (const n of grp.nodes) for (const x of n.input ?? []) if (x && !produced.has(x) && !seenIn.has(x)) { seenIn.add(x); inputs.push(x); }
    const readOutside = new Set<string>();
    for (const n of g.node ?? []) if (!inside.has(n)) for (const x of n.input ?? []) if (produced.has(x)) readOutside.add(x);
    const outputs = grp.nodes.flatMap((n) => (n.output ?? []).filter((o) => o && (readOutside.has(o) || graphOutputs.has(o))));
    if (outputs.length === 0) continue; // nothing needs it (prune keeps no such statement)
    const kind = grp.prov.kind ?? grp.prov.irOp;
    const where = grp.prov.stmt ?? grp.prov.span;
    const src = text?.(grp.prov);
    const inv = grp.prov.invokes;
    const doc = where ? `${spanText(where)}${grp.prov.doc ? `: ${grp.prov.doc}` : src ? `: ${src}` : ''}${inv ? ` (once for ${inv.count} invokes: batch rows ${inv.rows})` : ''}` : undefined;
    const domains = new Set(grp.nodes.map((n) => n.domain ?? ''));
    const meta = [
      { key: 'onnsight.op', value: kind },
      ...(where ? [{ key: 'onnsight.source', value: spanText(where) }] : []),
      ...(grp.prov.module ? [{ key: 'onnsight.module', value: grp.prov.module }] : []),
      { key: 'onnsight.nodes', value: String(grp.nodes.length) },
      ...(inv ? [{ key: 'onnsight.invokes', value: String(inv.count) }, { key: 'onnsight.rows', value: inv.rows }] : []),
    ];
    const fnName = unique(functionBase(kind));
    const fn: FunctionProto = {
      name: fnName,
      domain: CALL_DOMAIN,
      input: inputs,
      output: outputs,
      node: grp.nodes,
      opset_import: (model.opset_import ?? []).filter((o) => domains.has(o.domain ?? '') || (!o.domain && domains.has('ai.onnx'))),
      ...(doc ? { doc_string: doc } : {}),
      metadata_props: meta,
    };
    const infos = grp.nodes.flatMap((n) => n.output ?? []).map((o) => valueInfo.get(o) ?? outputInfo.get(o)).filter((v): v is ValueInfoProto => v !== undefined);
    if (infos.length) fn.value_info = infos.map((v) => ({ ...v }));
    const call: NodeProto = {
      name: unique(`${scopePrefix(grp.prov.module)}/nns.${kind}`),
      op_type: fnName,
      domain: CALL_DOMAIN,
      input: inputs,
      output: outputs,
      ...(doc ? { doc_string: doc } : {}),
      metadata_props: meta,
    };
    folded.push({ call, fn, nodes: grp.nodes });
  }
  if (!folded.length) return [];
  // Replace each group by its call, then sort; a call on a cycle goes back to flat nodes.
  const apply = (): NodeProto[] => {
    const callOf = new Map<NodeProto, NodeProto>();
    const first = new Map<NodeProto, NodeProto>();
    for (const f of folded) {
      for (const n of f.nodes) callOf.set(n, f.call);
      first.set(f.nodes[f.nodes.length - 1]!, f.call);
    }
    const out: NodeProto[] = [];
    for (const n of g.node ?? []) {
      const c = first.get(n);
      if (c) out.push(c);
      else if (!callOf.has(n)) out.push(n);
    }
    return out;
  };
  const flatNodes = g.node ?? [];
  for (;;) {
    const trial: GraphProto = { ...g, node: apply() };
    const { order, cyclic } = topoOrder(trial);
    if (!cyclic.length) {
      g.node = order;
      break;
    }
    // Unfold the largest call on a cycle: a statement whose nodes sit on both sides of model
    // nodes (a gradient sweep reading forward values it also feeds) is what makes one.
    const onCycle = new Set(cyclic);
    let bad = -1;
    folded.forEach((f, i) => { if (onCycle.has(f.call) && (bad < 0 || f.nodes.length > folded[bad]!.nodes.length)) bad = i; });
    if (bad < 0) { g.node = flatNodes; return []; }
    folded.splice(bad, 1);
    if (!folded.length) { g.node = flatNodes; return []; }
  }
  // Values now inside a function are typed there, not in the main graph.
  const internal = new Set(folded.flatMap((f) => f.nodes.flatMap((n) => n.output ?? []).filter((o) => !f.call.output!.includes(o))));
  if (g.value_info) g.value_info = g.value_info.filter((v) => !internal.has(v.name!));
  const fns = folded.map((f) => f.fn);
  model.functions = [...(model.functions ?? []), ...fns];
  if (!(model.opset_import ?? []).some((o) => o.domain === CALL_DOMAIN)) model.opset_import = [...(model.opset_import ?? []), { domain: CALL_DOMAIN, version: 1 }];
  return fns;
}

/** The wrap-functions pass: a no-op unless the state asks for functions (`nns compile` without `--flat`). */
export const functionsPass: Pass = {
  name: 'wrap-functions',
  prints: 'model',
  run(state) {
    if (!state.functions) return { changed: false };
    const fns = foldStatements(state.model, state.sourceText);
    return { changed: fns.length > 0 };
  },
};

