/**
 * Statement families: the same statement run once per invoke (an activation-patching grid:
 * `model.transformer.h[l].output[:, p, :] = src[p]` in 8 invokes) recognized so lowering can
 * emit it ONCE over all its rows — one Gather with the 8 positions, one ScatterND with the 8
 * (row, position) pairs, one Softmax over the 32 rows, one Split into the 32 saves — instead
 * of once per row.
 *
 * A family is the runs of one statement (same span) in distinct one-row invoke scopes whose
 * IR nodes match position by position: the same ops and attributes except the integers of
 * index items, set items and save names; each input is the same value in every run (shared),
 * the same position of the same run, or the same position of another family's run of that
 * invoke (mapped, with the same invokes in the same order). Only ops lowering can batch are
 * admitted (row reads, index, softmax, elementwise arithmetic, set, save); literals are shared.
 *
 * Emitting a family at its first run is exact when nothing outside batched families touches
 * the model values it reads or sets between its first and last run (a set's rows are its own
 * invokes' rows: rows of other invokes never see it), so a family whose range contains such
 * a read, set, module call or gradient is dropped, and the rest is re-checked until stable.
 * @module
 */
import type { Graph, IndexItem, Node, Value } from '../ir/ir.js';
import type { ModuleTree } from '../src/model/types.js';

/** A family: runs[j][q] is position q of member j; member j runs in scope scopes[j] (one row: rows[j]). */
export interface Family {
  id: number;
  /** The statement runs (`Graph.statementOf` values) of the members. */
  units: number[];
  runs: Node[][];
  scopes: number[];
  rows: number[];
}

/** Where a node sits in a family. */
export interface Member {
  fam: Family;
  j: number;
  q: number;
}

const ELEMENTWISE = new Set(['add', 'sub', 'mul', 'div', 'neg', 'exp', 'log', 'sqrt', 'abs', 'relu', 'tanh']);
const BATCHABLE = new Set(['module.output', 'module.input', 'model.output', 'index', 'softmax', 'set', 'save', ...ELEMENTWISE]);

/** Whether an op is admitted in a family (`const` literals are shared inputs, never members). */
export function batchable(op: string): boolean {
  return BATCHABLE.has(op);
}

/** Index items with their integers blanked (what must be equal across members), and the integers. */
function itemsShape(items: readonly IndexItem[] | null | undefined): { key: string; ints: number[] } {
  const ints: number[] = [];
  const key = (items ?? []).map((it) => {
    if (it.kind === 'index') { ints.push(it.index); return 'i'; }
    if (it.kind === 'slice') return `s${it.start ?? ''}:${it.stop ?? ''}:${it.step ?? ''}`;
    return it.kind;
  }).join(',');
  return { key: items ? key : 'null', ints };
}

/** The attributes of a node with what may vary across members blanked. */
function shapeKey(n: Node): string {
  const a = n.attrs as Record<string, unknown>;
  switch (n.op) {
    case 'index': return `index|${itemsShape(a.items as IndexItem[]).key}`;
    case 'set': return `set|${String(a.path)}|${String(a.port)}|${String(a.index)}|${itemsShape(a.items as IndexItem[] | null).key}`;
    case 'save': return 'save';
    case 'module.output': case 'module.input': return `${n.op}|${String(a.path)}|${String(a.index)}|${String(a.version)}`;
    case 'model.output': return `model.output|${String(a.name)}`;
    case 'softmax': return `softmax|${String(a.dim)}`;
    default: return n.op;
  }
}

/**
 * The model value names a node touches through a module boundary (reads and sets), or '*'
 * for module calls. A gradient touches what its X reads (the whole-batch value it is taken
 * with respect to is named when it is lowered; its Y is computed before it).
 */
function touched(n: Node, tree: ModuleTree): string[] {
  const a = n.attrs as { path?: string; port?: 'output' | 'input'; index?: number };
  if (n.op === 'call_module') return ['*'];
  if (n.op === 'grad') {
    const x = n.inputs[1]?.producer;
    return x && (x.op === 'module.output' || x.op === 'module.input') ? touched(x, tree) : ['*'];
  }
  if (n.op !== 'module.output' && n.op !== 'module.input' && n.op !== 'set') return [];
  const m = tree.modules.get(a.path ?? '');
  const port = n.op === 'set' ? a.port : n.op === 'module.output' ? 'output' : 'input';
  const b = (port === 'output' ? m?.outputs : m?.inputs)?.[a.index ?? 0];
  return b ? [b.name] : ['*'];
}

/** Plans the families of `ir` (see the module doc); an empty map when there are none. */
export function planFamilies(ir: Graph, tree: ModuleTree): Map<Node, Member> {
  const out = new Map<Node, Member>();
  if (ir.nodes.some((n) => n.op === 'call_module')) return out;
  const pos = new Map<Node, number>(ir.nodes.map((n, i) => [n, i]));
  // Runs: the nodes of one statement run, in program order (literals left out).
  const runs = new Map<number, Node[]>();
  for (const n of ir.nodes) {
    const u = ir.statementOf.get(n);
    if (u === undefined || n.op === 'const') continue;
    let r = runs.get(u);
    if (!r) runs.set(u, (r = []));
    r.push(n);
  }
  const runOf = new Map<Node, { u: number; q: number }>();
  for (const [u, r] of runs) r.forEach((n, q) => runOf.set(n, { u, q }));
  // Candidate groups: same span, same shape of nodes and shared inputs; one run per one-row invoke scope.
  const groups = new Map<string, number[]>();
  for (const [u, r] of runs) {
    const scope = r[0]!.scope;
    const s = ir.scopes[scope]!;
    if (scope === 0 || s.rowEnd - s.rowStart !== 1) continue;
    if (r.some((n) => n.scope !== scope || !BATCHABLE.has(n.op) || n.results.length > 1)) continue;
    const parts = r.map((n, q) => {
      const ins = n.inputs.map((v) => {
        const p = runOf.get(v.producer);
        if (p && p.u === u) return `@${p.q}`;
        if (p) return `^${ir.statements[p.u]!.offset}:${p.q}`; // another run: mapped (checked below)
        return `=${v.id}`; // shared
      });
      return `${q}:${shapeKey(n)}(${ins.join(',')})`;
    });
    const sp = ir.statements[u]!;
    const key = `${sp.file}:${sp.offset}|${parts.join(';')}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push(u);
  }
  const fams: Family[] = [];
  const famOfRun = new Map<number, { fam: Family; j: number }>();
  for (const us of groups.values()) {
    if (us.length < 2) continue;
    const scopes = us.map((u) => runs.get(u)![0]!.scope);
    if (new Set(scopes).size !== scopes.length) continue;
    const fam: Family = { id: fams.length, units: us, runs: us.map((u) => runs.get(u)!), scopes, rows: scopes.map((s) => ir.scopes[s]!.rowStart) };
    fams.push(fam);
    us.forEach((u, j) => famOfRun.set(u, { fam, j }));
  }
  // Drop families until every remaining one is consistent and safe.
  const alive = new Set(fams);
  const sameScopes = (a: Family, b: Family): boolean => a.scopes.length === b.scopes.length && a.scopes.every((s, i) => s === b.scopes[i]);
  const memberAt = (v: Value): { fam: Family; j: number } | undefined => {
    const p = runOf.get(v.producer);
    const f = p ? famOfRun.get(p.u) : undefined;
    return f && alive.has(f.fam) ? f : undefined;
  };
  for (let changed = true; changed;) {
    changed = false;
    for (const fam of [...alive]) {
      let ok = true;
      // Shared inputs are the same value; mapped inputs come from a live family over the same invokes, same member.
      for (let j = 0; j < fam.runs.length && ok; j++) {
        fam.runs[j]!.forEach((n, q) => {
          n.inputs.forEach((v, i) => {
            const own = runOf.get(v.producer);
            if (own && own.u === fam.units[j]) return;
            if (fam.runs.every((r) => r[q]!.inputs[i] === fam.runs[0]![q]!.inputs[i])) return;
            const m = memberAt(v);
            if (!m || m.j !== j || !sameScopes(m.fam, fam)) ok = false;
          });
        });
      }
      // Nothing outside live families touches the values it reads or sets within its range.
      if (ok) {
        const vals = new Set(fam.runs.flatMap((r) => r.flatMap((n) => touched(n, tree))));
        const first = pos.get(fam.runs[0]![0]!)!;
        const last = pos.get(fam.runs[fam.runs.length - 1]![fam.runs[0]!.length - 1]!)!;
        for (let i = first; i <= last && ok; i++) {
          const x = ir.nodes[i]!;
          const t = touched(x, tree);
          if (!t.length) continue;
          if (!t.includes('*') && !t.some((v) => vals.has(v))) continue;
          const p = runOf.get(x);
          const f = p ? famOfRun.get(p.u) : undefined;
          if (!f || !alive.has(f.fam) || !sameScopes(f.fam, fam)) ok = false;
        }
      }
      if (!ok) {
        alive.delete(fam);
        changed = true;
      }
    }
  }
  for (const fam of alive) fam.runs.forEach((r, j) => r.forEach((n, q) => out.set(n, { fam, j, q })));
  return out;
}
