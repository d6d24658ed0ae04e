/**
 * Cross-request batching: the traces of several jobs of one model as one IR graph, so that
 * one forward pass serves them all (NDIF's trick). Each job's invokes become batch rows of
 * the merged graph after those of the jobs before it; its saves and host values are renamed
 * `J␟NAME` (J = the job's place in the batch) and split back afterwards.
 *
 * Only traces whose statements all sit in invokes merge: a node in a trace's whole-batch
 * scope that reads rows (module values, `model.output`) or writes them (`set`) would cover
 * the other jobs' rows too. Rows are independent through the model (the fast path already
 * relies on it when it runs a subset of a batch), and the worker only merges jobs whose
 * padded length (`dimValues`) is the same, so each job's numbers are those of its run alone.
 * @module
 */
import { Graph, ROW_OPS, type Scope } from '../../ir/ir.js';

/** Separator between a job's place in the batch and its save or host names. */
export const SEP = '\u241f';

/** Whether a trace can share a forward pass with other traces (see the module comment). */
export function mergeable(g: Graph): boolean {
  if (g.scopes.length < 2) return false;
  return g.nodes.every((n) => n.scope !== 0 || (!ROW_OPS.has(n.op) && n.op !== 'set'));
}

/** The key traces must share to merge: their dim values (the padded sequence length among them). */
export function mergeKey(g: Graph): string {
  return JSON.stringify(Object.entries(g.dimValues).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * Merges `graphs` (consumed: their nodes are moved) into one graph.
 * Precondition: every graph is {@link mergeable} and they share {@link mergeKey}.
 */
export function mergeGraphs(graphs: readonly Graph[]): Graph {
  const out = new Graph();
  const total = graphs.reduce((a, g) => a + g.batch, 0);
  out.scopes = [{ id: 0, rowStart: 0, rowEnd: total, ...(graphs[0]?.scopes[0]?.span ? { span: graphs[0].scopes[0].span } : {}) }];
  out.dimValues = { ...(graphs[0]?.dimValues ?? {}) };
  let offset = 0;
  graphs.forEach((g, j) => {
    const map = new Map<number, number>([[0, 0]]);
    for (const s of g.scopes.slice(1)) {
      const id = out.scopes.length;
      map.set(s.id, id);
      const scope: Scope = { ...s, id, rowStart: s.rowStart + offset, rowEnd: s.rowEnd + offset };
      out.scopes.push(scope);
    }
    for (const n of g.nodes) {
      n.scope = map.get(n.scope)!;
      if (n.is('save') || n.is('host')) n.attrs = { ...n.attrs, name: `${j}${SEP}${n.attrs.name}` };
      out.nodes.push(n);
    }
    offset += g.batch;
  });
  return out;
}

/** Splits merged results back: one map per job, each in the merged order of its saves. */
export function splitResults<T>(merged: ReadonlyMap<string, T>, jobs: number): Map<string, T>[] {
  const out = Array.from({ length: jobs }, () => new Map<string, T>());
  for (const [k, v] of merged) {
    const at = k.indexOf(SEP);
    const j = Number(k.slice(0, at));
    out[j]?.set(k.slice(at + 1), v);
  }
  return out;
}
