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
import { topoOrder } from '../src/onnx/view.js';
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
    const doc = where ? `${spanText(where)}${src ? `: ${src}` : ''}${inv ? ` (once for ${inv.count} invokes: batch rows ${inv.rows})` : ''}` : undefined;
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
