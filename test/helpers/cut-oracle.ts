/**
 * An independent evaluator of interventions on model values, for differential tests.
 *
 * It never goes through the compiler or the fast path: it runs the model in plain
 * onnxruntime with the tested values exposed as extra outputs, does the intervention's
 * arithmetic on the host, and feeds the result back through a copy of the model in which
 * every node input that reads a tested value reads `value * keep + replacement` with inputs of
 * its own. So each
 * consumer can be given the value it sees under PyTorch's hook semantics:
 *
 * - a value produced inside modules `O1 ⊂ O2 ⊂ …` that output it passes their forward hooks
 *   inner first, and a consumer outside `Ok` sees `Ok`'s output;
 * - a consumer inside modules `I1 ⊃ I2 ⊃ …` that take it as input (and do not produce it)
 *   then sees it through their pre-hooks, outer first;
 * - the graph output holding the value sees every output hook.
 *
 * A read of a name at some point of a program sees, along that name's chain, the sets made
 * on each name of the chain before that point.
 * @module
 */
import ort from 'onnxruntime-node';
import type { ModelProto, NodeProto, ValueInfoProto } from '../../src/onnx/proto.js';
import { encodeModel } from '../../src/onnx/serde.js';
import type { ModuleInfo, ModuleTree } from '../../src/model/types.js';

/** One name of a value: a module boundary. */
export interface ViewRef {
  path: string;
  port: 'output' | 'input';
  index: number;
}

/** Basic indexing: an integer (negative from the end) or a half-open range `[start, stop)` (undefined = open). */
export type Item = number | [number | undefined, number | undefined];

/** Flat row-major positions of `items` in a tensor of `shape`, and the selection's shape. */
export function select(shape: readonly number[], items: readonly Item[] | null): { idx: number[]; shape: number[] } {
  const axes: number[][] = shape.map((n, a) => {
    const it = items?.[a];
    if (it === undefined) return Array.from({ length: n }, (_, i) => i);
    if (typeof it === 'number') return [it < 0 ? it + n : it];
    const norm = (x: number | undefined, dflt: number): number => Math.min(n, Math.max(0, x === undefined ? dflt : x < 0 ? x + n : x));
    const s = norm(it[0], 0);
    const e = norm(it[1], n);
    return Array.from({ length: Math.max(0, e - s) }, (_, i) => s + i);
  });
  const out: number[] = [];
  const strides = shape.map((_, a) => shape.slice(a + 1).reduce((x, y) => x * y, 1));
  const rec = (a: number, base: number): void => {
    if (a === shape.length) { out.push(base); return; }
    for (const i of axes[a]!) rec(a + 1, base + i * strides[a]!);
  };
  rec(0, 0);
  const selShape = axes.map((x, a) => (typeof items?.[a] === 'number' ? -1 : x.length)).filter((d) => d >= 0);
  return { idx: out, shape: selShape };
}

/** Softmax over the last axis (float64 arithmetic, like a reference). */
export function softmaxLast(data: ArrayLike<number>, last: number): number[] {
  const out: number[] = [];
  for (let o = 0; o < data.length; o += last) {
    let m = -Infinity;
    for (let j = 0; j < last; j++) m = Math.max(m, data[o + j]!);
    let s = 0;
    const e: number[] = [];
    for (let j = 0; j < last; j++) { e.push(Math.exp(data[o + j]! - m)); s += e[j]!; }
    for (const x of e) out.push(x / s);
  }
  return out;
}

/** One set on a name, as the oracle applies it: `value` already computed (one per selected element, or one broadcast). */
interface AppliedSet {
  view: string;
  idx: number[];
  value: Float32Array;
}

/** A value's tensor for one row: data and shape. */
export interface RowValue {
  data: Float32Array;
  shape: number[];
}

const key = (v: ViewRef): string => `${v.path}#${v.port}#${v.index}`;

/** Per-row evaluation state of a program on one value (see {@link CutOracle.state}). */
export class RowState {
  private readonly sets: AppliedSet[] = [];

  constructor(private readonly oracle: CutOracle, readonly value: string, readonly clean: RowValue) {}

  /** The value a name has now: its chain's sets so far, in data order. */
  read(view: ViewRef): Float32Array {
    return this.apply(this.oracle.chainTo(this.value, view));
  }

  /** Records a set of `view` at `items` to `value` (a scalar, or one number per selected element). */
  set(view: ViewRef, items: readonly Item[] | null, value: number | Float32Array): void {
    const { idx } = select(this.clean.shape, items);
    const v = typeof value === 'number' ? new Float32Array(idx.length).fill(value) : value;
    if (v.length !== idx.length) throw new Error('oracle: value size does not match the selection');
    this.sets.push({ view: key(view), idx, value: v });
  }

  /** The tensor every consumer slot sees at the end, and the graph output's final value. */
  finals(): { slots: Float32Array[]; graphOutput: Float32Array } {
    return {
      slots: this.oracle.consumersOf(this.value).map((c) => this.apply(this.oracle.slotChain(this.value, c.node))),
      graphOutput: this.apply(this.oracle.outputViews(this.value).map(key)),
    };
  }

  private apply(chain: readonly string[]): Float32Array {
    const out = Float32Array.from(this.clean.data);
    for (const k of chain) {
      for (const s of this.sets) {
        if (s.view !== k) continue;
        s.idx.forEach((p, i) => { out[p] = s.value[i]!; });
      }
    }
    return out;
  }
}

/**
 * Graph-level helper: one session over a copy of the model in which every consumer of each
 * tested value reads `value * keep + replacement`, with `keep` and `replacement` graph inputs
 * of its own (fed 1 and 0: the unmodified model, bit for bit), and every tested value is also
 * a graph output. A run with 1 and 0 gives the clean values; a run with keep 0 and the wanted
 * value gives what the model computes downstream when each consumer sees the value it
 * should. Rows are independent, so one run serves many experiments.
 */
export class CutOracle {
  private readonly producer = new Map<string, number>();
  private readonly consumers = new Map<string, { node: number; index: number }[]>();
  private readonly nodeSets = new Map<ModuleInfo, Set<number>>();
  private session: Promise<ort.InferenceSession> | undefined;
  private values: string[] = [];

  constructor(readonly proto: ModelProto, readonly tree: ModuleTree) {
    (proto.graph!.node ?? []).forEach((n, k) => {
      for (const o of n.output ?? []) if (o) this.producer.set(o, k);
      (n.input ?? []).forEach((x, index) => {
        if (!x) return;
        let l = this.consumers.get(x);
        if (!l) this.consumers.set(x, (l = []));
        l.push({ node: k, index });
      });
    });
  }

  /** The first graph output (what `model.output` reads). */
  get firstOutput(): string {
    return this.proto.graph!.output![0]!.name!;
  }

  /** The ONNX value behind a name. */
  valueOf(v: ViewRef): string {
    const m = this.tree.modules.get(v.path)!;
    return (v.port === 'output' ? m.outputs : m.inputs)[v.index]!.name;
  }

  consumersOf(value: string): { node: number; index: number }[] {
    return this.consumers.get(value) ?? [];
  }

  private contains(m: ModuleInfo, node: number): boolean {
    let s = this.nodeSets.get(m);
    if (!s) this.nodeSets.set(m, (s = new Set(m.nodes)));
    return s.has(node);
  }

  private names(value: string, port: 'output' | 'input'): (ViewRef & { m: ModuleInfo })[] {
    const out: (ViewRef & { m: ModuleInfo })[] = [];
    for (const m of this.tree.modules.values()) {
      (port === 'output' ? m.outputs : m.inputs).forEach((b, index) => { if (b.name === value) out.push({ path: m.path, port, index, m }); });
    }
    const depth = (p: string): number => (p ? p.split('.').length : 0);
    // Inner modules first: fewer nodes, or (same nodes) the deeper path.
    out.sort((a, b) => a.m.nodes.length - b.m.nodes.length || depth(b.path) - depth(a.path));
    return out;
  }

  /** Output names of a value, innermost module first. */
  outputViews(value: string): ViewRef[] {
    return this.names(value, 'output');
  }

  /** The names whose sets a consumer node sees, in data order. */
  slotChain(value: string, node: number): string[] {
    const outs = this.names(value, 'output').filter((o) => !this.contains(o.m, node));
    const ins = this.names(value, 'input').filter((i) => this.contains(i.m, node)).reverse();
    return [...outs, ...ins].map(key);
  }

  /** The names whose sets a read of `view` sees, in data order, ending with `view`. */
  chainTo(value: string, view: ViewRef): string[] {
    const outs = this.names(value, 'output');
    if (view.port === 'output') {
      const at = outs.findIndex((o) => key(o) === key(view));
      return outs.slice(0, at + 1).map(key);
    }
    const me = this.names(value, 'input').find((i) => key(i) === key(view))!;
    const first = me.m.nodes[0]!;
    const depth = (p: string): number => (p ? p.split('.').length : 0);
    const encloses = (i: ModuleInfo): boolean => this.contains(i, first) && (i.nodes.length > me.m.nodes.length || (i.nodes.length === me.m.nodes.length && depth(i.path) < depth(me.path)));
    const ins = this.names(value, 'input').filter((i) => key(i) === key(me) || encloses(i.m)).reverse();
    return [...outs.filter((o) => !this.contains(o.m, first)), ...ins].map(key);
  }

  /** Feeds of the model's inputs for rows of token ids (all the same length: no padding). */
  feeds(rows: readonly (readonly number[])[]): Record<string, ort.Tensor> {
    const B = rows.length;
    const T = rows[0]!.length;
    const f: Record<string, ort.Tensor> = {};
    for (const inp of this.proto.graph!.input ?? []) {
      const name = inp.name!;
      if (!/input_ids|attention_mask|position_ids/.test(name)) throw new Error(`oracle: unknown graph input ${name}`);
      const data = new BigInt64Array(B * T);
      for (let b = 0; b < B; b++) {
        for (let t = 0; t < T; t++) data[b * T + t] = /input_ids/.test(name) ? BigInt(rows[b]![t]!) : /attention_mask/.test(name) ? 1n : BigInt(t);
      }
      f[name] = new ort.Tensor('int64', data, [B, T]);
    }
    return f;
  }

  /** The inputs (`.keep`, `.value`) of consumer `j` of a tested value. */
  private delta(value: string, j: number): string {
    return `oracle.delta.${this.values.indexOf(value)}.${j}`;
  }

  /** Makes the session for `values` (every value an experiment will touch). */
  prepare(values: readonly string[]): void {
    this.values = [...new Set(values)];
    const g = this.proto.graph!;
    const nodes: NodeProto[] = (g.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])] }));
    const inputs = [...(g.input ?? [])];
    const outs = new Set((g.output ?? []).map((o) => o.name));
    const extra: ValueInfoProto[] = [];
    const adds = new Map<number, NodeProto[]>(); // after node k (-1: first), in topological order
    for (const v of this.values) {
      if (!outs.has(v)) extra.push({ name: v, type: { tensor_type: { elem_type: 1 } } });
      const after = this.producer.get(v) ?? -1;
      this.consumersOf(v).forEach((c, j) => {
        const d = this.delta(v, j);
        inputs.push({ name: `${d}.keep`, type: { tensor_type: { elem_type: 1 } } }, { name: `${d}.value`, type: { tensor_type: { elem_type: 1 } } });
        if (!adds.has(after)) adds.set(after, []);
        adds.get(after)!.push(
          { op_type: 'Mul', name: `oracle.mul.${d}`, input: [v, `${d}.keep`], output: [`${d}.kept`] },
          { op_type: 'Add', name: `oracle.add.${d}`, input: [`${d}.kept`, `${d}.value`], output: [`${d}.seen`] },
        );
        nodes[c.node]!.input![c.index] = `${d}.seen`;
      });
    }
    const sorted = [...(adds.get(-1) ?? []), ...nodes.flatMap((n, k) => [n, ...(adds.get(k) ?? [])])];
    this.session = ort.InferenceSession.create(encodeModel({ ...this.proto, graph: { ...g, node: sorted, input: inputs, output: [...(g.output ?? []), ...extra] } }));
  }

  private async run(rows: readonly (readonly number[])[], deltas: ReadonlyMap<string, ort.Tensor>): Promise<Map<string, RowValue>> {
    const s = await this.session!;
    const feeds = this.feeds(rows);
    const zero = new ort.Tensor('float32', new Float32Array(1), [1]);
    const one = new ort.Tensor('float32', Float32Array.of(1), [1]);
    for (const v of this.values) {
      this.consumersOf(v).forEach((_, j) => {
        const d = this.delta(v, j);
        feeds[`${d}.keep`] = deltas.get(`${d}.keep`) ?? one;
        feeds[`${d}.value`] = deltas.get(`${d}.value`) ?? zero;
      });
    }
    const fetch = [...new Set([...this.values, this.firstOutput])];
    const r = await s.run(feeds, fetch);
    return new Map(fetch.map((n) => [n, { data: r[n]!.data as Float32Array, shape: [...r[n]!.dims] }]));
  }

  /** The unmodified model's tested values and first graph output, whole batch. */
  clean(rows: readonly (readonly number[])[]): Promise<Map<string, RowValue>> {
    return this.run(rows, new Map());
  }

  /** A row's slice of a whole-batch value (leading axis); a value with a leading 1 is shared by every row. */
  static row(v: RowValue, r: number): RowValue {
    if (v.shape[0] === 1) return { data: v.data.slice(), shape: [...v.shape] };
    const n = v.shape.slice(1).reduce((a, b) => a * b, 1);
    return { data: v.data.slice(r * n, (r + 1) * n), shape: [1, ...v.shape.slice(1)] };
  }

  /** A state for evaluating a program on `value` in one row. */
  state(value: string, clean: RowValue): RowState {
    return new RowState(this, value, clean);
  }

  /**
   * The first graph output of every row, each row's consumers of its state's value fed what
   * {@link RowState.finals} says (one run for all rows).
   */
  async downstream(rows: readonly (readonly number[])[], states: readonly RowState[]): Promise<RowValue[]> {
    const deltas = new Map<string, ort.Tensor>();
    const finals = states.map((s) => s.finals());
    states.forEach((st, r) => {
      const per = st.clean.data.length;
      finals[r]!.slots.forEach((f, j) => {
        const d = this.delta(st.value, j);
        let keep = deltas.get(`${d}.keep`);
        let value = deltas.get(`${d}.value`);
        if (!keep || !value) {
          // Rows of other experiments keep the model's value (keep 1, value 0); this row's is replaced.
          keep = new ort.Tensor('float32', new Float32Array(rows.length).fill(1), [rows.length, ...st.clean.shape.slice(1).map(() => 1)]);
          value = new ort.Tensor('float32', new Float32Array(rows.length * per), [rows.length, ...st.clean.shape.slice(1)]);
          deltas.set(`${d}.keep`, keep);
          deltas.set(`${d}.value`, value);
        }
        (keep.data as Float32Array)[r] = 0;
        (value.data as Float32Array).set(f, r * per);
      });
    });
    const out = (await this.run(rows, deltas)).get(this.firstOutput)!;
    return states.map((st, r) => (st.value === this.firstOutput ? { data: finals[r]!.graphOutput, shape: st.clean.shape } : CutOracle.row(out, r)));
  }
}
