/**
 * Split a batch into chunks that run one after another, so a sweep too large for memory
 * still runs, with the same results as one batched run.
 *
 * Dependencies between invokes come from dataflow: a `set` in invoke j whose value reads
 * invoke i makes j depend on i (i is a *source*); a save of a value combining several
 * invokes ties them into one unit. Each chunk holds some units plus the transitive sources
 * they need — a source is recomputed in every chunk that needs it (one extra row per chunk;
 * feeding it instead would need its values cut out of the graph as host inputs, and a
 * source with its own sets would need its whole closure run first). Each save is emitted by
 * exactly one chunk (the one owning its unit), so stitching is a union of the chunks' saves.
 *
 * A `grad(Y, X)` is a value combining Y's and X's invokes like any other, so saving it ties
 * them into one unit, and the rows Y depends on through sets come along as sources: the
 * backward sweep of a chunk sees every row the derivative runs through (a host param's
 * gradient gets contributions from Y's rows only, which are all in that chunk).
 *
 * Not split (one chunk): when the whole-batch scope (#0) reads or sets module values.
 * Rows keep their prompts' padding: the runner slices the chunk's rows out of the feeds of
 * the whole batch, so every row sees the same sequence length as in one run.
 * @module
 */
import { Graph, Node, ROW_OPS, type Scope, type Value } from '../ir/ir.js';
import { printIR } from '../ir/printer.js';
import type { Pass } from './pass.js';

/** One chunk: a self-contained IR over some of the original scopes. */
export interface Chunk {
  /** The chunk's IR (scopes renumbered, rows compacted). */
  ir: Graph;
  /** Original batch row of each of the chunk's rows. */
  rows: number[];
  /** Rows this chunk owns (not recomputed sources), for progress. */
  ownRows: number;
  /** For the two steps of {@link splitGradRows}: the other rows first (`forward`), then the gradient's rows (`gradient`). */
  gradStep?: 'forward' | 'gradient';
}

/**
 * Save names (prefix) of values one chunk computes for a later one: the earlier chunk saves
 * them, the later reads them as host values of the same name (never a user's save name).
 */
export const CUT_PREFIX = 'nns.cut.';

function find(parent: number[], x: number): number {
  while (parent[x] !== x) x = parent[x] = parent[parent[x]!]!;
  return x;
}

/**
 * Splits `ir` into chunks of at most `maxRows` rows where the dependencies allow (a unit
 * and its sources never split). Returns `null` when one run is needed or possible.
 */
export function splitBatch(ir: Graph, maxRows: number): Chunk[] | null {
  const nScopes = ir.scopes.length;
  if (ir.batch <= maxRows || nScopes <= 2) return null;
  if (ir.nodes.some((n) => n.scope === 0 && (ROW_OPS.has(n.op) || n.op === 'set'))) return null;
  // deps: invoke scopes each value reads (transitively).
  const deps = new Map<Value, Set<number>>();
  const parent = Array.from({ length: nScopes }, (_, i) => i);
  const edges: Array<[number, number]> = [];
  const needOf = new Map<Node, Set<number>>();
  for (const n of ir.nodes) {
    const d = new Set<number>();
    if (ROW_OPS.has(n.op)) d.add(n.scope);
    for (const v of n.inputs) for (const s of deps.get(v) ?? []) d.add(s);
    for (const r of n.results) deps.set(r, d);
    const need = new Set(d);
    if (n.op === 'set') {
      need.add(n.scope);
      for (const s of d) if (s !== n.scope) edges.push([n.scope, s]);
    }
    if (n.op === 'save') {
      const first = [...d][0];
      for (const s of d) parent[find(parent, s)] = find(parent, first!);
    }
    needOf.set(n, need);
  }
  // Units, their rows and direct sources.
  const unitOf = (s: number): number => find(parent, s);
  const sources = new Map<number, Set<number>>();
  for (const [a, b] of edges) {
    const ua = unitOf(a), ub = unitOf(b);
    if (ua === ub) continue;
    if (!sources.has(ua)) sources.set(ua, new Set());
    sources.get(ua)!.add(ub);
  }
  const members = new Map<number, number[]>();
  for (let s = 1; s < nScopes; s++) {
    const u = unitOf(s);
    if (!members.has(u)) members.set(u, []);
    members.get(u)!.push(s);
  }
  const rowsOf = (units: Set<number>): number => [...units].reduce((a, u) => a + members.get(u)!.reduce((b, s) => b + ir.scopes[s]!.rowEnd - ir.scopes[s]!.rowStart, 0), 0);
  const closure = (u: number, acc: Set<number>): Set<number> => {
    if (acc.has(u)) return acc;
    acc.add(u);
    for (const s of sources.get(u) ?? []) closure(s, acc);
    return acc;
  };
  // Greedy packing in scope order.
  const plans: Array<{ own: Set<number>; all: Set<number> }> = [];
  let cur = { own: new Set<number>(), all: new Set<number>() };
  for (const u of members.keys()) {
    const all = closure(u, new Set(cur.all));
    if (cur.own.size > 0 && rowsOf(all) > maxRows) {
      plans.push(cur);
      cur = { own: new Set(), all: closure(u, new Set()) };
    } else cur.all = all;
    cur.own.add(u);
  }
  plans.push(cur);
  if (plans.length <= 1) return null;
  return plans.map((p, i) => buildChunk(ir, p.own, p.all, members, unitOf, needOf, deps, i === 0));
}

function buildChunk(
  ir: Graph, own: Set<number>, all: Set<number>, members: Map<number, number[]>, unitOf: (s: number) => number,
  needOf: Map<Node, Set<number>>, deps: Map<Value, Set<number>>, first: boolean,
): Chunk {
  const included = [...all].flatMap((u) => members.get(u)!).sort((a, b) => a - b);
  const newId = new Map<number, number>([[0, 0]]);
  const g = new Graph();
  g.dimValues = { ...ir.dimValues };
  g.statements = ir.statements;
  g.statementOf = ir.statementOf;
  const scopes: Scope[] = [{ ...ir.scopes[0]!, rowStart: 0, rowEnd: 0 }];
  const rows: number[] = [];
  let ownRows = 0;
  for (const s of included) {
    const sc = ir.scopes[s]!;
    const n = sc.rowEnd - sc.rowStart;
    newId.set(s, scopes.length);
    scopes.push({ ...sc, id: scopes.length, rowStart: rows.length, rowEnd: rows.length + n });
    for (let r = sc.rowStart; r < sc.rowEnd; r++) rows.push(r);
    if (own.has(unitOf(s))) ownRows += n;
  }
  scopes[0]!.rowEnd = rows.length;
  g.scopes = scopes;
  // Keep effects whose needs are present (saves only in the owning chunk), then what they use.
  const keep = new Set<Node>();
  const mark = (n: Node): void => {
    if (keep.has(n)) return;
    keep.add(n);
    for (const v of n.inputs) mark(v.producer);
  };
  for (const n of ir.nodes) {
    const need = needOf.get(n)!;
    if (![...need].every((s) => newId.has(s))) continue;
    if (n.op === 'set') mark(n);
    if (n.op === 'save') {
      const d = [...(deps.get(n.inputs[0]!) ?? [])];
      if (d.length ? own.has(unitOf(d[0]!)) : first) mark(n);
    }
  }
  copyKept(ir, keep, g, new Map<Value, Value>(), newId);
  return { ir: g, rows, ownRows };
}

/**
 * Differentiate only the rows a gradient needs: a chunk whose `grad`s read X in some invokes
 * and Y in some (their *gradient scopes*) runs in two steps — first the other invokes, forward
 * only, saving the values the gradient scopes read from them (`nns.cut.K`), then the gradient
 * scopes alone, with those values fed as host values — so the backward sweep (and the
 * forward it needs) runs over the gradient's rows, not the whole batch. Attribution patching
 * (a source and a clean invoke, `(h_source − h_clean) · grad(y, h_clean)`) then differentiates
 * one row instead of two. Exact: the first step does not depend on the second (no invoke of it
 * reads a gradient scope; those that do join the gradient scopes), and a fed value does not
 * depend on X (X is read in a gradient scope, and only module reads qualify: a parameter or
 * host value is used by every row). Returns `null` when it does not apply: no grad, a grad
 * with respect to a parameter or host value, whole-batch reads or sets, no other invoke, or a
 * fed value whose shape is not known.
 */
export function splitGradRows(ir: Graph): [Chunk, Chunk] | null {
  const grads = ir.nodes.filter((n) => n.op === 'grad');
  if (!grads.length) return null;
  if (ir.nodes.some((n) => n.scope === 0 && (ROW_OPS.has(n.op) || n.op === 'set'))) return null;
  if (grads.some((g) => !['module.output', 'module.input'].includes(g.inputs[1]!.producer.op) || g.inputs[1]!.producer.scope === 0)) return null;
  const deps = new Map<Value, Set<number>>();
  for (const n of ir.nodes) {
    const d = new Set<number>();
    if (ROW_OPS.has(n.op)) d.add(n.scope);
    for (const v of n.inputs) for (const s of deps.get(v) ?? []) d.add(s);
    for (const r of n.results) deps.set(r, d);
  }
  const inB = new Set<number>();
  for (const g of grads) {
    inB.add(g.inputs[1]!.producer.scope);
    for (const s of deps.get(g.inputs[0]!) ?? []) inB.add(s);
  }
  // An invoke that reads a gradient scope (a set from it) must run with them.
  for (let changed = true; changed;) {
    changed = false;
    for (const n of ir.nodes) {
      if (n.op !== 'set' || inB.has(n.scope)) continue;
      if ([...(deps.get(n.inputs[0]!) ?? [])].some((s) => inB.has(s))) { inB.add(n.scope); changed = true; }
    }
  }
  const invokes = ir.scopes.slice(1).map((s) => s.id);
  const inA = new Set(invokes.filter((s) => !inB.has(s)));
  if (inA.size === 0) return null;
  const onlyA = (v: Value): boolean => {
    const d = deps.get(v)!;
    return d.size > 0 && [...d].every((s) => inA.has(s));
  };
  const bNodes = new Set<Node>();
  const aNodes = new Set<Node>();
  const cuts: Value[] = [];
  const markB = (n: Node): void => {
    if (bNodes.has(n)) return;
    bNodes.add(n);
    for (const v of n.inputs) {
      if (onlyA(v)) { if (!cuts.includes(v)) cuts.push(v); } else markB(v.producer);
    }
  };
  const markA = (n: Node): void => {
    if (aNodes.has(n)) return;
    aNodes.add(n);
    for (const v of n.inputs) markA(v.producer);
  };
  for (const n of ir.nodes) {
    if (n.op === 'set') (inB.has(n.scope) ? markB : markA)(n);
    if (n.op === 'save') {
      const d = deps.get(n.inputs[0]!)!;
      if (d.size > 0 && [...d].every((s) => inA.has(s))) markA(n);
      else markB(n);
    }
  }
  for (const v of cuts) markA(v.producer);
  // The fed values' shapes, concrete.
  const shapes: number[][] = [];
  for (const v of cuts) {
    const shape = v.type?.shape?.map((d) => (typeof d === 'number' ? d : ir.dimValues[d]));
    if (!v.type || !shape || shape.some((d) => d === undefined)) return null;
    shapes.push(shape as number[]);
  }
  const build = (scopesIn: Set<number>, keep: Set<Node>, extra: (g: Graph, map: Map<Value, Value>, newId: Map<number, number>) => void): Chunk => {
    const newId = new Map<number, number>([[0, 0]]);
    const g = new Graph();
    g.dimValues = { ...ir.dimValues };
    const scopes: Scope[] = [{ ...ir.scopes[0]!, rowStart: 0, rowEnd: 0 }];
    const rows: number[] = [];
    for (const s of [...scopesIn].sort((a, b) => a - b)) {
      const sc = ir.scopes[s]!;
      const k = sc.rowEnd - sc.rowStart;
      newId.set(s, scopes.length);
      scopes.push({ ...sc, id: scopes.length, rowStart: rows.length, rowEnd: rows.length + k });
      for (let r = sc.rowStart; r < sc.rowEnd; r++) rows.push(r);
    }
    scopes[0]!.rowEnd = rows.length;
    g.scopes = scopes;
    const map = new Map<Value, Value>();
    extra(g, map, newId);
    copyKept(ir, keep, g, map, newId);
    return { ir: g, rows, ownRows: rows.length };
  };
  const a = build(inA, aNodes, () => undefined);
  // The first step saves the fed values (after its own nodes).
  const aMap = new Map<Value, Value>();
  {
    const byOld = new Map<Value, Value>();
    let k = 0;
    for (const n of ir.nodes) if (aNodes.has(n)) n.results.forEach((r, i) => byOld.set(r, a.ir.nodes[k]!.results[i]!)), k++;
    for (const [o, v] of byOld) aMap.set(o, v);
  }
  cuts.forEach((v, i) => {
    const sv = aMap.get(v)!;
    a.ir.add(new Node('save', [sv], { name: `${CUT_PREFIX}${i}` }, 0, sv.producer.scope, v.producer.span));
  });
  const b = build(inB, bNodes, (g, map) => {
    cuts.forEach((v, i) => {
      const h = new Node('host', [], { name: `${CUT_PREFIX}${i}`, dtype: v.type!.dtype, shape: shapes[i]! }, 1, 0, v.producer.span);
      h.result.type = { dtype: v.type!.dtype, shape: [...shapes[i]!] };
      g.add(h);
      map.set(v, h.result);
    });
  });
  return [a, b];
}

/**
 * {@link splitBatch} as a pass: `state.chunks` = the chunks of at most `state.maxRows` rows
 * (one chunk, the whole IR, when no split is needed or possible). Prints each chunk's rows and IR.
 */
export const splitBatchPass: Pass = {
  name: 'split-batch',
  run(state) {
    const ir = state.ir;
    const split = splitBatch(ir, state.maxRows ?? Infinity);
    const chunks = split ?? [{ ir, rows: Array.from({ length: ir.batch }, (_, i) => i), ownRows: ir.batch }];
    // Then, per chunk, the rows a gradient does not need run first (forward only).
    state.chunks = !state.gradRows ? chunks : chunks.flatMap((c) => {
      const two = splitGradRows(c.ir);
      if (!two) return [c];
      return two.map((t, i) => ({ ...t, rows: t.rows.map((r) => c.rows[r]!), ownRows: t.rows.length, gradStep: i === 0 ? 'forward' as const : 'gradient' as const }));
    });
    return { changed: state.chunks.length > 1 };
  },
  prints: (state) => {
    const chunks = state.chunks ?? [];
    if (chunks.length <= 1) return `// one chunk: all ${state.ir.batch} rows in one run (at most ${state.maxRows ?? 'any number of'} rows)\n`;
    return chunks.map((c, i) => `// chunk ${i}: rows [${c.rows.join(', ')}] (${c.ownRows} own)${c.gradStep ? ` (${c.gradStep === 'forward' ? 'forward only: the rows no gradient needs, feeding the next chunk' : "the gradient's rows"})` : ''}\n${printIR(c.ir)}`).join('');
  },
};

/**
 * Copies the nodes of `ir` in `keep` into `g` in order, with their types and names, each in
 * the scope `newId` gives its old scope (0 when none); `map` takes old values to new ones
 * (values defined before the copy must already be in it) and is filled with the results.
 */
function copyKept(ir: Graph, keep: ReadonlySet<Node>, g: Graph, map: Map<Value, Value>, newId: ReadonlyMap<number, number>): void {
  for (const n of ir.nodes) {
    if (!keep.has(n)) continue;
    const c = new Node(n.op, n.inputs.map((v) => map.get(v)!), structuredClone(n.attrs), n.results.length, newId.get(n.scope) ?? 0, n.span);
    n.results.forEach((r, i) => {
      const cr = c.results[i]!;
      cr.type = r.type;
      if (r.name !== undefined) cr.name = r.name;
      map.set(r, cr);
    });
    g.add(c);
  }
}
