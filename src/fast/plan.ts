/**
 * The fast-path planner: decides whether a trace (IR after the IR pipeline, types inferred)
 * can run on the instrumented model as port feeds and fetches, and how.
 *
 * Accepted: reads of ported boundaries and graph outputs; `set`s on ported boundaries (whole
 * or any basic slice, any scope) whose value is known on the host before the run — built
 * from literals, host values and *source reads* (reads no set changes, fetched by a first run
 * with the same batch) — or the steering form `read(same boundary, same scope) + X`; saves
 * of anything computable on the host from reads, literals and host values, including
 * applications of *closed* modules ({@link PlanOptions.callable}: the executor runs them as
 * standalone module models after the main run). Everything else (parameters, calls of other
 * modules, a set value that depends on a set or on a module call, ...) is rejected with a
 * reason, and the compiler splices a custom graph.
 *
 * Rows are independent through the model (every op of a language model acts per batch row),
 * so a set on some rows changes only those rows downstream; data flow between ports comes
 * from the ported graph ({@link Port.upstream}). Ports on one model value under several names
 * (a block's output and the next block's input) are chained in data order in the ported
 * graph, so sets on both compose per row as the compiler composes them; a read of one of
 * them is bound to the value between the chain's ports that its rows' sets leave (rejected
 * when no such value exists: a read between two sets of its rows).
 * @module
 */
import { expandItems, sliceRange } from '../../ir/shape.js';
import type { Graph, IndexItem, Node, Value } from '../../ir/ir.js';
import { numberValues, printNode } from '../../ir/printer.js';
import type { ModuleTree } from '../model/types.js';
import { HOST_OPS } from '../../ir/ops.js';
import { portKey, type Port, type PortedModel } from './ports.js';

/** Where a read's value comes from: a graph output of the instrumented model, sliced to the read's rows. */
export interface ReadBinding {
  /** Graph output to fetch (a port's pre/post value, or a model output). */
  fetch: string;
  /** Rows `[rowStart, rowEnd)` of the batch. */
  rowStart: number;
  rowEnd: number;
  /**
   * A model output the instrumented model does not compute (its tail, src/fast/tail.ts):
   * `fetch` is the tail's input, and the value is output `output` (graph output `name`) of
   * module `path` applied to it.
   */
  tail?: { path: string; output: number; name: string };
}

/** One `set`, as port feeds. */
export interface SetPlan {
  /** The IR node. */
  node: Node;
  /** The port written. */
  port: Port;
  /** `replace`: keep = 0 and add = value at the selected elements; `steer`: add += value. */
  kind: 'replace' | 'steer';
  /** The value written (replace) or added (steer), computed on the host. */
  value: Value;
  /** Rows of the set's scope. */
  rowStart: number;
  rowEnd: number;
  /** Slice of those rows, or null for all of them. */
  items: IndexItem[] | null;
}

/** How to run a trace on the instrumented model. */
export interface FastPlan {
  /** Every read the plan evaluates, bound to a fetch. */
  reads: ReadonlyMap<Value, ReadBinding>;
  /** Graph outputs the source run (no sets) fetches for set values; empty = no source run. */
  sourceFetch: string[];
  /** Graph outputs the main run fetches for saves. */
  mainFetch: string[];
  /** Batch rows the source run must compute (sorted): the rows of its reads. */
  sourceRows: number[];
  /** Batch rows the main run must compute (sorted): the rows saves read. */
  mainRows: number[];
  /** Sets in program order. */
  sets: SetPlan[];
  /** Saves in program order. */
  saves: { name: string; value: Value }[];
  /** Module applications the saves need, in program order (evaluated on the host after the main run). */
  calls: Node<'call_module'>[];
}

/** Planner options. */
export interface PlanOptions {
  /**
   * Let a set's value come from a read in rows that a set also writes, when data flow shows
   * the read is upstream of every such set (`h.output = h.input`: fetch the input in a first
   * run). Exact, but it costs two runs where a compiled graph costs one; default false: only
   * reads in rows no set writes ("run the source prompt first") are source reads.
   */
  sameRowSources?: boolean;
  /**
   * Whether applications of module `path` can run after the main run as a standalone module
   * model (src/fast/module-model.ts): null when they can, else why not. Without it every
   * `call_module` is rejected.
   */
  callable?: (path: string) => string | null;
}

/** A plan, or why there is none. */
export type PlanResult = { plan: FastPlan } | { reject: string };

class Reject extends Error {}

const READ_OPS = new Set(['module.output', 'module.input', 'model.output']);

/** Rows of `[r0, r1)` a set's items select (the first indexed axis is the batch axis). */
function setRows(r0: number, r1: number, items: IndexItem[] | null, rank: number): Set<number> {
  const all = new Set(Array.from({ length: r1 - r0 }, (_, i) => r0 + i));
  if (!items) return all;
  const full = expandItems(items, rank);
  if (!Array.isArray(full)) throw new Reject(full.message);
  const first = full.find((i) => i.kind === 'index' || i.kind === 'slice');
  if (!first || first.kind === 'slice' && first.start === undefined && first.stop === undefined && (first.step ?? 1) === 1) return all;
  const n = r1 - r0;
  if (first.kind === 'index') return new Set([r0 + (first.index < 0 ? first.index + n : first.index)]);
  if (first.kind !== 'slice') return all;
  const { start, step, len } = sliceRange(n, first);
  return new Set(Array.from({ length: len }, (_, i) => r0 + start + i * step));
}

const meets = (a: ReadonlySet<number>, r0: number, r1: number): boolean => [...a].some((r) => r >= r0 && r < r1);

/** A port whose value's leading dim is not the batch (`[1, sequence, D]` position embeddings): one tensor every row shares. */
const shared = (p: Port): boolean => p.shape[0] !== 'batch';

/**
 * Whether every use of `v` (a value with its sequence axis at `axis`) is an index taking
 * the last position of that axis (`x[:, -1]`, `x[0, -1, :5]`): then `v` may be computed at
 * its last position only (the axis of size 1) with the same results.
 */
export function readsLastPositionOnly(ir: Graph, v: Value, axis: number): boolean {
  if (axis < 0) return false;
  let uses = 0;
  for (const n of ir.nodes) {
    if (!n.inputs.includes(v)) continue;
    uses++;
    if (!n.is('index') || n.inputs.length !== 1) return false;
    const rank = v.type?.shape?.length;
    if (rank === undefined) return false;
    const full = expandItems(n.attrs.items, rank);
    if (!Array.isArray(full)) return false;
    const at = full.filter((it) => it.kind !== 'newaxis')[axis];
    if (at?.kind !== 'index' || at.index !== -1) return false;
  }
  return uses > 0;
}

/** Plans `ir` on the instrumented model, or says why it cannot. */
export function explainFastPath(ir: Graph, tree: ModuleTree, ported: PortedModel, opts: PlanOptions = {}): PlanResult {
  try {
    return { plan: plan(ir, tree, ported, opts) };
  } catch (e) {
    if (e instanceof Reject) return { reject: e.message };
    throw e;
  }
}

/** Plans `ir` on the instrumented model; null when the compiler must splice a custom graph. */
export function planFastPath(ir: Graph, tree: ModuleTree, ported: PortedModel, opts: PlanOptions = {}): FastPlan | null {
  const r = explainFastPath(ir, tree, ported, opts);
  return 'plan' in r ? r.plan : null;
}

interface SetInfo { node: Node; pos: number; port: Port; rows: Set<number> }

function plan(ir: Graph, tree: ModuleTree, ported: PortedModel, opts: PlanOptions): FastPlan {
  const pos = new Map(ir.nodes.map((n, i) => [n, i]));
  const rowsOf = (n: Node): [number, number] => {
    const s = ir.scopes[n.scope]!;
    return n.scope === 0 ? [0, ir.batch] : [s.rowStart, s.rowEnd];
  };
  const portOf = (path: string, kind: 'output' | 'input', index: number): Port => {
    const p = index === 0 ? ported.byKey.get(portKey(path, kind)) : undefined;
    if (!p) throw new Reject(`${path} ${kind}s[${index}] has no port`);
    return p;
  };

  // Sets, by port.
  const sets: SetInfo[] = [];
  for (const n of ir.nodes) {
    if (n.op === 'param') throw new Reject(`${n.op} needs the compiler`);
    if (n.is('call_module')) {
      const path = n.attrs.path;
      const why = opts.callable ? opts.callable(path) : 'call_module needs the compiler';
      if (why) throw new Reject(opts.callable ? `call_module ${path}: ${why}` : why);
      const want = tree.modules.get(path)?.inputs.length ?? -1;
      if (n.inputs.length !== want) throw new Reject(`call_module ${path} with ${n.inputs.length} of its ${want} inputs (the others come from the model's own run)`);
    }
    if (!n.is('set')) continue;
    const port = portOf(n.attrs.path, n.attrs.port, n.attrs.index);
    if (port.shape.some((d) => typeof d === 'string' && d !== 'batch' && d !== 'sequence')) throw new Reject(`${port.path} has a symbolic dim other than batch/sequence`);
    const [r0, r1] = rowsOf(n);
    if (shared(port) && r1 - r0 < ir.batch) throw new Reject(`a set of some rows of ${port.path}.${port.kind}, one tensor every row shares`);
    sets.push({ node: n, pos: pos.get(n)!, port, rows: setRows(r0, r1, n.attrs.items, port.shape.length) });
  }
  const setsOn = (p: Port): SetInfo[] => sets.filter((s) => s.port === p);
  // Ports on one model value under several names (a block's output is the next block's input)
  // compose in data order in the ported graph: `chain(p)` lists the ports whose result p's
  // value starts from (same value, upstream of p), first in data order first, p last.
  const chain = (p: Port): Port[] => {
    const c = ported.ports.filter((q) => q !== p && q.value === p.value && p.upstream.has(q.id));
    c.sort((a, b) => (b.upstream.has(a.id) ? -1 : a.upstream.has(b.id) ? 1 : 0));
    return [...c, p];
  };

  // Reads → the value between two ports of the chain: after every set of its rows that comes
  // before the read in program order, before every one that comes after it.
  const reads = new Map<Value, ReadBinding & { port: Port | null; post: boolean; upstream?: ReadonlySet<number> }>();
  for (const n of ir.nodes) {
    if (!READ_OPS.has(n.op)) continue;
    const [r0, r1] = rowsOf(n);
    if (n.is('model.output')) {
      const name = n.attrs.name ?? tree.graphOutputs[0]?.name;
      if (!name || !ported.outputUpstream.has(name)) throw new Reject(`no graph output ${name}`);
      if (ported.lastPosition.has(name) && !readsLastPositionOnly(ir, n.result, tree.graphOutputs.find((o) => o.name === name)?.sig?.shape?.indexOf('sequence') ?? -1)) {
        throw new Reject(`graph output ${name} is read beyond its last position`);
      }
      const t = ported.tail?.outputs.get(name);
      const tail = t === undefined ? {} : { fetch: ported.tail!.fetch, tail: { path: ported.tail!.path, output: t, name } };
      reads.set(n.result, { fetch: name, rowStart: r0, rowEnd: r1, port: null, post: true, upstream: ported.outputUpstream.get(name)!, ...tail });
      continue;
    }
    const a = n.attrs as { path: string; index: number };
    const own = portOf(a.path, n.op === 'module.output' ? 'output' : 'input', a.index);
    if (shared(own) && r1 - r0 < ir.batch) throw new Reject(`a read of some rows of ${own.path}.${own.kind}, one tensor every row shares`);
    const c = chain(own);
    const here = pos.get(n)!;
    const touching = c.map((q) => setsOn(q).filter((s) => meets(s.rows, r0, r1)));
    // Between the last port of the chain with a set before the read and the first with one
    // after it; of those positions, the read's own port's pre value when it is one of them.
    let lo = 0;
    let hi = c.length;
    touching.forEach((ts, i) => {
      if (ts.some((s) => s.pos < here)) lo = i + 1;
      if (hi === c.length && ts.some((s) => s.pos > here)) hi = i;
    });
    if (lo > hi || touching.some((ts, i) => ts.some((s) => (i < lo) !== (s.pos < here)))) {
      throw new Reject(`a read of ${a.path}.${n.op === 'module.output' ? 'output' : 'input'} between two sets of its rows`);
    }
    const j = Math.min(Math.max(c.length - 1, lo), hi);
    const [port, post] = j < c.length ? [c[j]!, false] : [c[c.length - 1]!, true];
    reads.set(n.result, { fetch: post ? port.post : port.pre, rowStart: r0, rowEnd: r1, port, post });
  }

  // Values computable on the host; reads feeding a set must not depend on any set touching their rows.
  const source = new Set<Value>();
  const hostComputable = (v: Value, forSet: SetInfo | null, seen = new Set<Value>()): void => {
    if (seen.has(v)) return;
    seen.add(v);
    const p = v.producer;
    if (p.op === 'const' || p.op === 'host') return;
    const b = reads.get(v);
    if (b) {
      if (!forSet) return;
      const up = b.port ? new Set([...b.port.upstream, ...(b.post ? [b.port.id] : [])]) : b.upstream!;
      for (const s of sets) {
        const affects = up.has(s.port.id);
        if (affects && s === forSet) throw new Reject(`the value set on ${s.port.path}.${s.port.kind} depends on that set`);
        if (!meets(s.rows, b.rowStart, b.rowEnd)) continue;
        if (affects) throw new Reject(`a value set on ${forSet.port.path}.${forSet.port.kind} depends on another set`);
        if (!opts.sameRowSources) throw new Reject(`a value set on ${forSet.port.path}.${forSet.port.kind} is read from rows that sets write`);
      }
      source.add(v);
      return;
    }
    if (p.op === 'call_module' && forSet) throw new Reject(`the value set on ${forSet.port.path}.${forSet.port.kind} depends on a module call (call_module)`);
    if (!HOST_OPS.has(p.op)) throw new Reject(`${p.op} cannot run on the host`);
    for (const x of p.inputs) hostComputable(x, forSet, seen);
  };

  const planned: SetPlan[] = sets.map((s) => {
    const n = s.node as Node<'set'>;
    const v = n.inputs[0]!;
    const [r0, r1] = rowsOf(n);
    const base = { node: n, port: s.port, rowStart: r0, rowEnd: r1, items: n.attrs.items };
    const steer = steerOperand(v, s, reads, sets, pos);
    if (steer) {
      hostComputable(steer, s);
      return { ...base, kind: 'steer', value: steer };
    }
    hostComputable(v, s);
    return { ...base, kind: 'replace', value: v };
  });
  // Two steering sets on the same rows of a port would have to add in order: leave it to the compiler.
  for (let j = 0; j < planned.length; j++) {
    for (let i = 0; i < j; i++) {
      const [p, q] = [planned[i]!, planned[j]!];
      if (p.kind === 'steer' && q.kind === 'steer' && p.port === q.port && [...sets[j]!.rows].some((r) => sets[i]!.rows.has(r))) {
        throw new Reject(`two additions to the same rows of ${p.port.path}.${p.port.kind}`);
      }
    }
  }

  const saves: { name: string; value: Value }[] = [];
  const mainReads = new Set<Value>();
  const called = new Set<Node>();
  // What each save needs, walked without recursion and visiting each value once (IR chains
  // may be as long as the script, and a DAG of reuse must not be walked once per path).
  const visited = new Set<Value>();
  for (const n of ir.nodes) {
    if (!n.is('save')) continue;
    const stack: Value[] = [n.inputs[0]!];
    while (stack.length > 0) {
      const v = stack.pop()!;
      if (visited.has(v)) continue;
      visited.add(v);
      if (reads.has(v)) mainReads.add(v);
      else if (v.producer.op === 'call_module') {
        if (called.has(v.producer)) continue;
        called.add(v.producer); // accepted above (closed module, every input given)
        stack.push(...v.producer.inputs);
      } else if (!['const', 'host'].includes(v.producer.op) && !HOST_OPS.has(v.producer.op)) throw new Reject(`${v.producer.op} cannot run on the host`);
      else stack.push(...v.producer.inputs);
    }
    saves.push({ name: n.attrs.name, value: n.inputs[0]! });
  }
  const fetches = (vs: Iterable<Value>): string[] => [...new Set([...vs].map((v) => reads.get(v)!.fetch))];
  const plain = new Map([...reads].map(([v, b]) => [v, { fetch: b.fetch, rowStart: b.rowStart, rowEnd: b.rowEnd, ...(b.tail ? { tail: b.tail } : {}) }]));
  const rowsOf2 = (vs: Iterable<Value>): number[] => {
    const r = new Set<number>();
    for (const v of vs) for (let i = reads.get(v)!.rowStart; i < reads.get(v)!.rowEnd; i++) r.add(i);
    return [...r].sort((x, y) => x - y);
  };
  return {
    reads: plain, sourceFetch: fetches(source), mainFetch: fetches(mainReads),
    sourceRows: rowsOf2(source), mainRows: rowsOf2(mainReads), sets: planned, saves,
    calls: ir.nodes.filter((n): n is Node<'call_module'> => called.has(n)),
  };
}

/** For `read + X` / `X + read` of the set's own boundary and scope with no set in between: X. */
function steerOperand(v: Value, s: SetInfo, reads: ReadonlyMap<Value, { port: Port | null; post: boolean; fetch: string }>, sets: readonly SetInfo[], pos: ReadonlyMap<Node, number>): Value | null {
  const add = v.producer;
  if (add.op !== 'add' || add.scope !== s.node.scope) return null;
  const items = (s.node as Node<'set'>).attrs.items;
  for (const [r, x] of [[add.inputs[0]!, add.inputs[1]!], [add.inputs[1]!, add.inputs[0]!]] as const) {
    let readV = r;
    if (items) {
      if (r.producer.op !== 'index' || JSON.stringify((r.producer.attrs as { items: IndexItem[] }).items) !== JSON.stringify(items)) continue;
      readV = r.producer.inputs[0]!;
    }
    const b = reads.get(readV);
    const rn = readV.producer;
    // The read must be the value the set's port starts from (its `pre`: every earlier set on the chain before it applied).
    if (!b || !b.port || b.fetch !== s.port.pre || rn.scope !== s.node.scope || rn.op === 'model.output') continue;
    const readAt = pos.get(rn)!;
    if (!sets.some((t) => t.port === s.port && t.pos > readAt && t.pos < s.pos)) return x;
  }
  return null;
}

/**
 * A plan as a partition of the IR, printed: the runs (rows, fetched outputs), then every
 * node with where it runs — `fetch` (a read bound to an output of the instrumented model),
 * `feed` (a set, as keep/add port feeds), `module model` (a call run on a standalone module
 * model), `host` (computed by the host evaluator), `result` (a save).
 */
export function printFastPlan(ir: Graph, plan: FastPlan): string {
  const ids = numberValues(ir);
  const setOf = new Map(plan.sets.map((s) => [s.node, s]));
  const calls = new Set<Node>(plan.calls);
  const rows = (r: number[]): string => (r.length ? `rows [${r.join(', ')}]` : 'no rows');
  const lines = [
    `// fast path: ${plan.sourceFetch.length ? 2 : 1} run(s) of the instrumented model`,
    ...(plan.sourceFetch.length ? [`//   source run: ${rows(plan.sourceRows)}, fetch ${plan.sourceFetch.join(', ')}`] : []),
    `//   main run: ${rows(plan.mainRows)}, fetch ${plan.mainFetch.join(', ') || 'nothing'}, ${plan.sets.length} set(s) as port feeds`,
  ];
  for (const n of ir.nodes) {
    const b = n.results[0] && plan.reads.get(n.results[0]);
    const s = setOf.get(n);
    const where = b ? `fetch ${b.fetch} rows ${b.rowStart}..${b.rowEnd}${b.tail ? `, then ${b.tail.path} on its module model` : ''}`
      : s ? `feed ${s.port.keep}, ${s.port.add} (${s.kind} with %${ids.get(s.value)})`
        : calls.has(n) ? 'module model'
          : n.op === 'save' ? 'result'
            : n.op === 'const' || n.op === 'host' ? 'host value'
              : HOST_OPS.has(n.op) ? 'host' : 'unused';
    lines.push(`${printNode(n, ids, { spans: false })}  -> ${where}`);
  }
  return lines.join('\n') + '\n';
}
