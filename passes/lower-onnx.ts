/**
 * Lowering + splicing: turns the IR into ONNX nodes inside the model being rewritten.
 *
 * Walks the IR in program order. Reads of module values see the value as it stands at
 * that point (earlier `set`s included). A `set` computes the new value and rewires the
 * model's own consumers of the boundary — for an output, every original consumer outside
 * the module; for an input, the consumers inside it — so the intervention's own nodes keep
 * seeing the old value. Slice sets and per-invoke sets scatter into the selected elements
 * (an index tensor sliced like the value gives the flat positions), so any basic slice
 * works and everything else is copied exactly. `call_module` clones the module's nodes
 * onto new inputs; `save` becomes a graph output named by the save name; `host` values
 * become graph inputs.
 * @module
 */
import type { Pass, PassContext, CompileState, ModuleCall, GradRequest } from './pass.js';
import { CALL_DOMAIN } from './pass.js';
import { scriptPath, type Span, type Dim, type Node, type Value, type IndexItem, type Graph, type OpName } from '../ir/ir.js';
import { formatType } from '../ir/shape.js';
import { callRankDelta } from '../ir/call-rank.js';
import { OPS, type LowerContext, type LowerRule } from '../ir/ops.js';
import { defaultOpset, type NodeProto, type GraphProto } from '../src/onnx/proto.js';
import type { ModuleInfo, TensorSig } from '../src/model/types.js';
import type { DType } from '../src/model/types.js';
import { NnsError } from '../src/errors.js';
import { parseOpPath } from '../src/model/modules.js';
import { OnnxGraphView, type Use } from '../src/onnx/view.js';
import { planFamilies, type Family, type Member } from './families.js';
import { Emitter, valueInfo, onnxElemType, nodeSpans, unitKey, makeTensor, type Provenance } from './onnx-emit.js';

const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

/** Members' values stacked on a new leading axis (shape `[members, ...member shape]`). */
interface Stacked {
  name: string;
  shape: number[];
  dtype: DType;
}

/** IR ops lowered elementwise by the catalogue (broadcasting, no axis attributes): batched on stacked values as they are. */
const ELEMENTWISE_OPS: ReadonlySet<string> = new Set(['add', 'sub', 'mul', 'div', 'neg', 'exp', 'log', 'sqrt', 'abs', 'relu', 'tanh']);

/** A slot of an original model node's input list. */
type Slot = Use;

/** One `set` on a view: emits the new value of the view given its value before the set. */
interface SetStep {
  apply: (base: string) => string;
  prov: Provenance;
}

/**
 * One name of a model value: a module output or input boundary (`path`, `port`, `index`).
 * Its value is its parent view's value (or the raw model value) with its own sets applied
 * in program order.
 */
interface View {
  path: string;
  port: 'output' | 'input';
  index: number;
  module: ModuleInfo;
  /** The view whose value this one starts from (`null`: the raw model value). */
  parent: View | null;
  steps: SetStep[];
  /** Last emitted value: from `base` with the first `count` steps. */
  cache?: { base: string; count: number; value: string };
}

/**
 * Every name of one model value, in data order. A value produced by a node inside modules
 * `O1 ⊂ O2 ⊂ ...` that output it and consumed inside modules `I1 ⊃ I2 ⊃ ...` that take it
 * as input is seen by a consumer through `O1.output → O2.output → ... → I1.input → I2.input`
 * (PyTorch: the producing modules' forward hooks fire inner first, then the consuming
 * modules' pre-hooks outer first): the output views whose module does not contain the
 * consumer, then the input views whose module does. The graph output sees every output view.
 */
interface ValueViews {
  /** The value's name in the model. */
  name: string;
  /** Output views, innermost module first. */
  outputs: View[];
  /** Every view by `path#port#index`. */
  byKey: Map<string, View>;
}

const viewKey = (path: string, port: 'output' | 'input', index: number): string => `${path}#${port}#${index}`;

class Lowerer {
  readonly em: Emitter;
  readonly g: GraphProto;
  readonly opset: number;
  readonly names = new Map<Value, string>();
  /** Whole-batch ONNX name of every module read and parameter (what `grad` differentiates with respect to). */
  private readonly whole = new Map<Value, { name: string; sig?: TensorSig }>();
  /** `Grad` placeholders for the autodiff pass. */
  readonly grads: GradRequest[] = [];
  readonly calls: ModuleCall[] = [];
  readonly hostInputs = new Map<string, string>();
  private readonly originalNodes: NodeProto[];
  private readonly nodeIndex = new Map<NodeProto, number>();
  /** Use-lists of the model's own nodes as they were before lowering (rewiring a set's consumers does not change them). */
  private readonly original: OnnxGraphView;
  private readonly shapeCache = new Map<string, string>();
  /** Module boundaries by value name (built on first use). */
  private boundaryIndex: Map<string, { m: ModuleInfo; port: 'output' | 'input'; index: number }[]> | undefined;
  private readonly moduleNodes = new Map<ModuleInfo, Set<number>>();
  private readonly views = new Map<string, ValueViews>();
  /** Placeholders read by `model.output` (the graph output's final value) → graph output name. */
  private readonly finalRefs = new Map<string, string>();

  constructor(readonly state: CompileState, readonly ctx: PassContext) {
    this.g = state.model.graph!;
    // Copy every node so rewiring never touches the caller's model objects.
    this.g.node = (this.g.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] }));
    this.originalNodes = [...this.g.node];
    this.g.output = [...(this.g.output ?? [])];
    this.g.input = [...(this.g.input ?? [])];
    this.em = new Emitter(this.g);
    this.opset = defaultOpset(state.model) ?? 0;
    this.originalNodes.forEach((n, k) => this.nodeIndex.set(n, k));
    this.original = new OnnxGraphView({ node: this.originalNodes });
  }

  module(path: string): ModuleInfo {
    const m = this.ctx.tree.modules.get(path);
    if (!m) throw new Error(`internal: module '${path}' not resolved`);
    return m;
  }

  private contains(m: ModuleInfo, node: number): boolean {
    let s = this.moduleNodes.get(m);
    if (!s) this.moduleNodes.set(m, (s = new Set(m.nodes)));
    return s.has(node);
  }

  /** Whether module `a` strictly encloses module `b` (same nodes: the shallower path encloses). */
  private encloses(a: ModuleInfo, b: ModuleInfo): boolean {
    if (a === b || !b.nodes.length || !this.contains(a, b.nodes[0]!)) return false;
    return a.nodes.length > b.nodes.length || (a.nodes.length === b.nodes.length && depth(a.path) < depth(b.path));
  }

  /** The views of a model value (see {@link ValueViews}). */
  private viewsOf(name: string): ValueViews {
    let vv = this.views.get(name);
    if (vv) return vv;
    if (!this.boundaryIndex) {
      this.boundaryIndex = new Map();
      // Operation pseudo-modules (`MODULE.op("TYPE", N)`) the program names are views too (one node: innermost).
      const opPaths = new Set<string>();
      for (const n of this.state.ir.nodes) {
        const p = (n.attrs as { path?: string }).path;
        if (p !== undefined && parseOpPath(p)) opPaths.add(p);
      }
      const ops = [...opPaths].map((p) => this.ctx.tree.modules.get(p)).filter((m): m is ModuleInfo => m !== undefined);
      for (const m of [...this.ctx.tree.modules.values(), ...ops]) {
        for (const port of ['output', 'input'] as const) {
          (port === 'output' ? m.outputs : m.inputs).forEach((b, index) => {
            let list = this.boundaryIndex!.get(b.name);
            if (!list) this.boundaryIndex!.set(b.name, (list = []));
            list.push({ m, port, index });
          });
        }
      }
    }
    const all = this.boundaryIndex.get(name) ?? [];
    const make = (e: { m: ModuleInfo; port: 'output' | 'input'; index: number }): View => ({ path: e.m.path, port: e.port, index: e.index, module: e.m, parent: null, steps: [] });
    const outputs = all.filter((e) => e.port === 'output').map(make);
    outputs.sort((a, b) => a.module.nodes.length - b.module.nodes.length || depth(b.path) - depth(a.path));
    outputs.forEach((v, i) => { v.parent = outputs[i - 1] ?? null; });
    const inputs = all.filter((e) => e.port === 'input').map(make);
    for (const v of inputs) {
      let parent: View | null = null;
      for (const w of inputs) if (this.encloses(w.module, v.module) && (!parent || this.encloses(parent.module, w.module))) parent = w;
      if (!parent) {
        const first = v.module.nodes[0];
        for (const o of outputs) if (first === undefined || !this.contains(o.module, first)) parent = o;
      }
      v.parent = parent;
    }
    vv = { name, outputs, byKey: new Map([...outputs, ...inputs].map((v) => [viewKey(v.path, v.port, v.index), v])) };
    this.views.set(name, vv);
    return vv;
  }

  private view(path: string, port: 'output' | 'input', index: number): View {
    const m = this.module(path);
    const bv = (port === 'output' ? m.outputs : m.inputs)[index];
    if (!bv) throw new Error(`internal: ${path} has no ${port} ${index}`);
    const v = this.viewsOf(bv.name).byKey.get(viewKey(path, port, index));
    if (!v) throw new Error(`internal: no view ${path}.${port}[${index}]`);
    return v;
  }

  /** The innermost view a model node's input slot reads the value through (null: the raw value). */
  private slotView(vv: ValueViews, node: number): View | null {
    let best: View | null = null;
    for (const v of vv.byKey.values()) {
      if (v.port !== 'input' || !this.contains(v.module, node)) continue;
      if (!best || this.encloses(best.module, v.module)) best = v;
    }
    if (best) return best;
    for (const o of vv.outputs) if (!this.contains(o.module, node)) best = o;
    return best;
  }

  /** The value of a view at this point of the program: its parent's value with its sets so far. */
  private valueOf(v: View | null, raw: string): string {
    if (!v) return raw;
    const base = this.valueOf(v.parent, raw);
    if (!v.steps.length) return base;
    const c = v.cache;
    if (c && c.base === base && c.count === v.steps.length) return c.value;
    let value = c && c.base === base ? c.value : base;
    const saved = this.em.prov;
    for (let i = c && c.base === base ? c.count : 0; i < v.steps.length; i++) {
      this.em.prov = v.steps[i]!.prov;
      value = v.steps[i]!.apply(value);
    }
    this.em.prov = saved;
    v.cache = { base, count: v.steps.length, value };
    return value;
  }

  /** The last set on a view or its ancestors (the intervention a rewired node is blamed on). */
  private lastSet(v: View | null): Provenance | undefined {
    for (let w = v; w; w = w.parent) if (w.steps.length) return w.steps[w.steps.length - 1]!.prov;
    return undefined;
  }

  /** What a model node's input slot reads at this point of the program. */
  private slotValue(node: number, name: string): string {
    const vv = this.views.get(name);
    return vv ? this.valueOf(this.slotView(vv, node), name) : name;
  }

  /** The value a module boundary has at this point of the program (whole batch). */
  boundary(path: string, port: 'output' | 'input', index: number): string {
    const v = this.view(path, port, index);
    const m = this.module(path);
    return this.valueOf(v, (port === 'output' ? m.outputs : m.inputs)[index]!.name);
  }

  /** Rows `[r0, r1)` of a whole-batch value for the node's scope. */
  rows(name: string, irGraph: Graph, scope: number, sig?: TensorSig): string {
    const s = irGraph.scopes[scope]!;
    if (coversBatch(irGraph, scope)) return name;
    // A value whose leading dim is a 1 rather than the batch (position embeddings `[1, sequence, D]`)
    // is one tensor every row shares, until a per-invoke set gives each row its own copy.
    const x = isShared(sig) ? this.perRow(name, irGraph.batch) : name;
    return this.em.op('Slice', [x, this.em.ints([s.rowStart]), this.em.ints([s.rowEnd]), this.em.ints([0])]);
  }

  /** `x` (leading dim 1 or `batch`) broadcast to `batch` rows along its leading dim. */
  perRow(x: string, batch: number): string {
    const rest = this.em.op('Slice', [this.shape(x), this.em.ints([1]), this.em.ints([Number.MAX_SAFE_INTEGER])]);
    return this.em.op('Expand', [x, this.em.op('Concat', [this.em.ints([batch]), rest], { axis: 0 })]);
  }

  /** Cache key prefix of the statement being lowered (nothing is shared across statements). */
  private stmtKey(): string {
    return `${unitKey(this.em.prov)}|`;
  }

  shape(name: string): string {
    const key = this.stmtKey() + name;
    let s = this.shapeCache.get(key);
    if (!s) this.shapeCache.set(key, (s = this.em.op('Shape', [name])));
    return s;
  }

  /** numpy-style basic indexing, lowered to Slice/Gather/Unsqueeze. */
  index(x: string, rank: number, items: IndexItem[]): string {
    const consumed = items.filter((i) => i.kind === 'index' || i.kind === 'slice').length;
    let cur = x;
    let axis = 0;
    for (const it of items) {
      switch (it.kind) {
        case 'index':
          cur = this.em.op('Gather', [cur, this.em.scalarInt(it.index)], { axis });
          break;
        case 'slice': {
          const step = it.step ?? 1;
          const start = it.start ?? (step > 0 ? 0 : -1);
          const stop = step > 0 ? INT64_MAX : INT64_MIN;
          if (!(it.start === undefined && it.stop === undefined && step === 1)) {
            const ends = it.stop === undefined ? this.bigEnd(stop) : this.em.ints([it.stop]);
            cur = this.em.op('Slice', [cur, this.em.ints([start]), ends, this.em.ints([axis]), this.em.ints([step])]);
          }
          axis++;
          break;
        }
        case 'newaxis':
          cur = this.em.op('Unsqueeze', [cur, this.em.ints([axis])]);
          axis++;
          break;
        case 'ellipsis':
          axis += rank - consumed;
          break;
      }
    }
    return cur;
  }

  private bigEnd(v: bigint): string {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setBigInt64(0, v, true);
    const key = `${this.stmtKey()}bigend${v}`;
    const cached = this.shapeCache.get(key);
    if (cached) return cached;
    const name = this.em.op('Constant', [], { value: { dims: [1], data_type: onnxElemType('int64'), raw_data: bytes } });
    this.shapeCache.set(key, name);
    return name;
  }

  cast(name: string, from: DType | undefined, to: DType): string {
    if (from === undefined || from === to) return name;
    return this.em.op('Cast', [name], { to: onnxElemType(to) });
  }

  /** The IR value's ONNX name, cast to `dt` when its dtype differs. */
  input(v: Value, dt?: DType): string {
    let name = this.names.get(v);
    const m = name === undefined ? this.memberVal.get(v) : undefined;
    if (m) { // one member's value of a statement lowered for all its invokes at once
      const saved = this.em.prov;
      this.em.prov = m.prov;
      name = this.em.op('Gather', [m.stacked.name, this.em.scalarInt(m.j)], { axis: 0 });
      this.em.prov = saved;
      this.names.set(v, name);
    }
    if (name === undefined) throw new Error(`internal: value %${v.id} lowered before its producer`);
    return dt ? this.cast(name, v.type?.dtype, dt) : name;
  }

  /** Values of family positions lowered for all members: member-0 result → the members stacked on a new leading axis. */
  private readonly stacked = new Map<Value, Stacked>();
  /** Each member's result of a batched position: extracted (one Gather) only if something else reads it. */
  private readonly memberVal = new Map<Value, { stacked: Stacked; j: number; prov: Provenance }>();

  /** The stacked value of family input `i` of position `q` (members' values stacked), or the shared value. */
  private familyInput(fam: Family, q: number, i: number): { kind: 'stacked'; v: Stacked } | { kind: 'shared'; value: Value } {
    const v0 = fam.runs[0]![q]!.inputs[i]!;
    if (fam.runs.every((r) => r[q]!.inputs[i] === v0)) return { kind: 'shared', value: v0 };
    let st = this.stacked.get(v0);
    if (!st) { // lowered member by member: stack them
      const shape = concreteDims(v0.type?.shape, this.state.ir);
      if (!shape) throw new Error('internal: a family value of unknown shape');
      const parts = fam.runs.map((r) => this.em.op('Unsqueeze', [this.input(r[q]!.inputs[i]!), this.em.ints([0])]));
      st = { name: this.em.op('Concat', parts, { axis: 0 }), shape: [fam.runs.length, ...shape], dtype: (v0.type?.dtype ?? 'float32') as DType };
      this.stacked.set(v0, st);
    }
    return { kind: 'stacked', v: st };
  }

  /** Records position `q` of `fam` as lowered to `st` (members stacked). */
  private setStacked(fam: Family, q: number, st: Stacked): void {
    this.stacked.set(fam.runs[0]![q]!.results[0]!, st);
    fam.runs.forEach((r, j) => this.memberVal.set(r[q]!.results[0]!, { stacked: st, j, prov: { ...this.em.prov } }));
  }

  /**
   * Lowers position `q` of a statement family once for all its members (passes/families.ts):
   * row reads as one Slice of the rows, index and arithmetic on the stacked values, one
   * ScatterND for the set, one Split for the saves. What it cannot batch is lowered member by
   * member, exactly as without families.
   */
  lowerFamily(fam: Family, q: number): void {
    const ir = this.state.ir;
    const n0 = fam.runs[0]![q]!;
    const R = fam.runs.length;
    const a = n0.attrs as Record<string, unknown>;
    const outShape = concreteDims(n0.results[0]?.type?.shape, ir);
    const dtype = (n0.results[0]?.type?.dtype ?? 'float32') as DType;
    const done = (name: string): void => this.setStacked(fam, q, { name, shape: [R, ...outShape!], dtype });
    // Member by member, still as one statement (one function): all of it is emitted here.
    const each = (): void => {
      for (const r of fam.runs) this.lower(r[q]!);
    };
    if (n0.op !== 'set' && n0.op !== 'save' && !outShape) return each();
    switch (n0.op) {
      case 'module.output': case 'module.input': case 'model.output': {
        let whole: string;
        if (n0.op === 'model.output') whole = this.finalRef((a.name as string | null) ?? this.g.output![0]!.name!);
        else {
          const path = a.path as string;
          const port = n0.op === 'module.output' ? 'output' : 'input';
          const m = this.module(path);
          if (isShared((port === 'output' ? m.outputs : m.inputs)[a.index as number]?.sig)) return each();
          whole = this.boundary(path, port, a.index as number);
        }
        const contiguous = fam.rows.every((r, j) => r === fam.rows[0]! + j);
        const rows = contiguous ? this.em.op('Slice', [whole, this.em.ints([fam.rows[0]!]), this.em.ints([fam.rows[0]! + R]), this.em.ints([0])])
          : this.em.op('Gather', [whole, this.em.ints(fam.rows)], { axis: 0 });
        done(this.opset >= 13 ? this.em.op('Unsqueeze', [rows, this.em.ints([1])]) : this.em.op('Unsqueeze', [rows], { axes: [1] }));
        return;
      }
      case 'index': {
        const items = a.items as IndexItem[];
        const ints = fam.runs.map((r) => (r[q]!.attrs as { items: IndexItem[] }).items.flatMap((it) => (it.kind === 'index' ? [it.index] : [])));
        const vary = ints[0]!.map((_, k) => ints.some((x) => x[k] !== ints[0]![k]));
        const x = this.familyInput(fam, q, 0);
        if (x.kind === 'stacked' && !vary.some(Boolean)) {
          done(this.index(x.v.name, x.v.shape.length, [{ kind: 'slice' }, ...items]));
          return;
        }
        const rank = x.kind === 'shared' ? x.value.type?.shape?.length : undefined;
        if (x.kind === 'shared' && rank !== undefined && items[0]?.kind === 'index' && vary[0] && !vary.slice(1).some(Boolean)) {
          const g = this.em.op('Gather', [this.input(x.value), this.em.ints(ints.map((v) => v[0]!))], { axis: 0 });
          done(items.length > 1 ? this.index(g, rank, [{ kind: 'slice' }, ...items.slice(1)]) : g);
          return;
        }
        return each();
      }
      case 'softmax': {
        const x = this.familyInput(fam, q, 0);
        if (x.kind !== 'stacked' || this.opset < 13 || dtype !== 'float32') return each();
        const r = x.v.shape.length - 1;
        const d = a.dim as number;
        done(this.em.op('Softmax', [x.v.name], { axis: (d < 0 ? d + r : d) + 1 }));
        return;
      }
      case 'save': {
        const x = this.familyInput(fam, q, 0);
        if (x.kind !== 'stacked') return each();
        const T = x.v.shape.slice(1);
        const split = (v: string): string[] => this.em.node('Split', this.opset >= 13 ? [v, this.em.ints(Array(R).fill(1))] : [v], this.opset >= 13 ? { axis: 0 } : { axis: 0, split: Array(R).fill(1) }, R);
        let outs: string[];
        if (T.length >= 1 && T[0] === 1) outs = split(this.em.op('Reshape', [x.v.name, this.em.ints([R, ...T.slice(1)])]));
        else outs = split(x.v.name).map((o) => this.em.op('Reshape', [o, this.em.ints(T)]));
        fam.runs.forEach((r, j) => this.names.set(r[q]!.inputs[0]!, outs[j]!));
        return;
      }
      case 'set':
        if (!this.setFamily(fam, q)) each();
        return;
      default: {
        if (!ELEMENTWISE_OPS.has(n0.op)) return each();
        const ins = n0.inputs.map((_, i) => this.familyInput(fam, q, i));
        const rOut = outShape!.length;
        const names: string[] = [];
        for (const x of ins) {
          if (x.kind === 'shared') {
            if ((x.value.type?.shape?.length ?? 99) > rOut) return each();
            names.push(this.input(x.value));
          } else {
            const T = x.v.shape.slice(1);
            names.push(T.length === rOut ? x.v.name : this.em.op('Reshape', [x.v.name, this.em.ints([R, ...Array(rOut - T.length).fill(1), ...T])]));
          }
        }
        const rule = OPS[n0.op].lower as Exclude<LowerRule<OpName>, 'splice'>;
        const ctx = this.context(n0, dtype);
        const dtOf = (i: number): DType | undefined => (ins[i]!.kind === 'shared' ? (ins[i] as { value: Value }).value.type?.dtype : (ins[i] as { v: Stacked }).v.dtype) as DType | undefined;
        const [out] = rule({ ...ctx, input: (i, dt) => (dt ? this.cast(names[i]!, dtOf(i), dt) : names[i]!), rank: (i) => (ins[i]!.kind === 'stacked' ? rOut + 1 : ctx.rank(i)) }, n0.attrs);
        done(out!);
      }
    }
  }

  /** A family of sets as one ScatterND over every member's rows and positions; false when it cannot be. */
  private setFamily(fam: Family, q: number): boolean {
    const ir = this.state.ir;
    const n0 = fam.runs[0]![q]!;
    const a = n0.attrs as { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null };
    const m = this.module(a.path);
    const bv = (a.port === 'output' ? m.outputs : m.inputs)[a.index]!;
    const dims = isShared(bv.sig) ? undefined : concreteDims(bv.sig?.shape, ir);
    if (!dims || this.opset < 11) return false;
    const sels = fam.runs.map((r, j) => selection(dims, [fam.rows[j]!, fam.rows[j]! + 1], (r[q]!.attrs as { items: IndexItem[] | null }).items ?? []));
    const s0 = sels[0];
    if (!s0 || s0.k === 0 || sels.some((x) => !x || x.k !== s0.k || x.count !== s0.count || !sameDims(x.shape, s0.shape))) return false;
    const items = a.items ?? [];
    const slotRank = (bv.sig?.shape?.length ?? 0) - items.filter((i) => i.kind === 'index').length;
    const x = this.familyInput(fam, q, 0);
    const tdtype = (bv.sig?.dtype ?? 'float32') as DType;
    const R = fam.runs.length;
    const rest = dims.slice(s0.k);
    const flat = [R * s0.count, ...rest];
    let upd: string;
    if (x.kind === 'shared') {
      const v = x.value;
      if ((v.type?.shape?.length ?? 99) > slotRank) return false;
      const src = v.producer;
      const literal = src.is('const') && src.attrs.data.length === 1 && src.attrs.dtype === tdtype ? src.attrs.data[0]! : undefined;
      if (literal !== undefined) upd = this.em.op('ConstantOfShape', [this.em.ints(flat)], { value: makeTensor(tdtype, [1], [literal]) });
      else upd = this.em.op('Reshape', [this.em.op('Expand', [this.input(v, tdtype), this.em.ints([R, ...s0.shape])]), this.em.ints(flat)]);
    } else {
      const Tv = x.v.shape.slice(1);
      if (Tv.length > slotRank) return false;
      upd = this.cast(x.v.name, x.v.dtype, tdtype);
      if (!sameDims(x.v.shape, flat)) {
        if (Tv.length < s0.shape.length) upd = this.em.op('Reshape', [upd, this.em.ints([R, ...Array(s0.shape.length - Tv.length).fill(1), ...Tv])]);
        if (!sameDims([...Array(s0.shape.length - Tv.length).fill(1), ...Tv], s0.shape)) upd = this.em.op('Expand', [upd, this.em.ints([R, ...s0.shape])]);
        if (!sameDims([R, ...s0.shape], flat)) upd = this.em.op('Reshape', [upd, this.em.ints(flat)]);
      }
    }
    const indices = this.em.constant('int64', [R * s0.count, s0.k], sels.flatMap((x2) => x2!.indices));
    const view = this.view(a.path, a.port, a.index);
    view.steps.push({ apply: (target) => this.em.op('ScatterND', [target, indices, upd]), prov: { ...this.em.prov } });
    this.valueOf(view, bv.name);
    return true;
  }

  lower(n: Node): void {
    const ir = this.state.ir;
    const res = (name: string, i = 0): void => {
      this.names.set(n.results[i]!, name);
    };
    const dt = (n.results[0]?.type?.dtype ?? 'float32') as DType;
    const a = n.attrs as Record<string, unknown>;
    const rule = OPS[n.op].lower;
    if (rule !== 'splice') {
      (rule as Exclude<LowerRule<OpName>, 'splice'>)(this.context(n, dt), n.attrs).forEach((name, i) => res(name, i));
      return;
    }
    switch (n.op) {
      case 'module.output':
      case 'module.input': {
        const { path, index } = a as { path: string; index: number };
        const port = n.op === 'module.output' ? 'output' : 'input';
        const m = this.module(path);
        const wholeName = this.boundary(path, port, index);
        const sig = (port === 'output' ? m.outputs : m.inputs)[index]!.sig;
        this.whole.set(n.results[0]!, { name: wholeName, ...(sig ? { sig } : {}) });
        res(this.rows(wholeName, ir, n.scope, sig));
        return;
      }
      case 'model.output': {
        const name = (a.name as string | null) ?? this.g.output![0]!.name!;
        res(this.rows(this.finalRef(name), ir, n.scope, this.ctx.tree.graphOutputs.find((o) => o.name === name)?.sig));
        return;
      }
      case 'param': {
        const p = this.ctx.tree.params.get(a.name as string);
        if (!p) throw new Error(`internal: parameter '${String(a.name)}' not resolved`);
        this.whole.set(n.results[0]!, { name: p.initializer });
        res(p.perm ? this.em.op('Transpose', [p.initializer], { perm: p.perm }) : p.initializer);
        return;
      }
      case 'grad': {
        // A placeholder: the autodiff pass replaces it by the backward sweep's gradient of Y
        // with respect to X's whole-batch value; this read's rows are then sliced out of it.
        const [y, x] = n.inputs as [Value, Value];
        const xw = this.whole.get(x);
        const xWhole = xw?.name;
        if (xWhole === undefined) throw new Error('internal: grad of a value that is not a module read, a parameter or a host value');
        // Emitted like any inserted node (name, doc_string, onnsight.* metadata), then marked as
        // the placeholder; named after X's module (`/transformer/h.2/nns.grad/Grad_output_0` is dY/d h.2).
        const stmtProv = this.em.prov;
        const xPath = x.producer.is('module.output') || x.producer.is('module.input') ? String((x.producer.attrs as { path?: string }).path ?? '') : '';
        if (xPath) this.em.prov = { ...stmtProv, module: xPath, stmtModule: stmtProv.stmtModule ?? stmtProv.module };
        const [out] = this.em.node('Grad', [this.input(y), xWhole]);
        this.em.prov = stmtProv;
        const node = this.g.node![this.g.node!.length - 1]!;
        node.domain = CALL_DOMAIN;
        this.grads.push({ placeholder: node, span: n.span });
        let g = out;
        const param = x.producer.is('param') ? this.ctx.tree.params.get(x.producer.attrs.name) : undefined;
        if (param?.perm) g = this.em.op('Transpose', [g], { perm: param.perm });
        // Parameters and host values have no batch rows: the gradient is the whole of it.
        res(x.producer.is('param') || x.producer.is('host') ? g : this.rows(g, ir, x.producer.scope, xw?.sig));
        return;
      }
      case 'const': {
        const c = a as { dtype: DType; shape: number[]; data: number[] };
        res(this.em.constant(c.dtype, c.shape, c.data));
        return;
      }
      case 'host': {
        const h = a as { name: string; dtype: DType; shape: number[] };
        let gname = this.hostInputs.get(h.name);
        if (!gname) {
          gname = this.em.unique(`host.${h.name}`);
          this.g.input!.push(valueInfo(gname, h.dtype, h.shape));
          this.hostInputs.set(h.name, gname);
        }
        this.whole.set(n.results[0]!, { name: gname });
        res(gname);
        return;
      }
      case 'call_module': {
        const delta = callRankDelta(this.module(a.path as string), n.inputs.map((v) => v.type?.shape ?? null));
        const outs = this.callModule(a.path as string, n.inputs.map((v) => this.input(v)), delta, n);
        outs.forEach((o, i) => { if (i < n.results.length) res(o, i); });
        return;
      }
      case 'set':
        this.set(n, a as { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null });
        return;
      case 'save':
        return; // saves become graph outputs in the save-outputs pass
      default:
        throw new Error(`internal: ${n.op} is not spliced`);
    }
  }

  /** What the op catalogue's lowering of `n` sees (ir/ops.ts `LowerContext`). */
  private context(n: Node, dtype: DType): LowerContext {
    return {
      opset: this.opset,
      dtype,
      input: (i, dt) => this.input(n.inputs[i]!, dt),
      rank: (i) => n.inputs[i]?.type?.shape?.length ?? 0,
      op: (type, inputs, attrs = {}) => this.em.op(type, inputs, attrs),
      node: (type, inputs, attrs, k) => this.em.node(type, inputs, attrs, k),
      ints: (values) => this.em.ints([...values]),
      shape: (x) => this.shape(x),
      index: (x, rank, items) => this.index(x, rank, items),
      tensor: makeTensor,
    };
  }

  private set(n: Node, a: { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null }): void {
    const ir = this.state.ir;
    const m = this.module(a.path);
    const list = a.port === 'output' ? m.outputs : m.inputs;
    const bv = list[a.index]!;
    const view = this.view(a.path, a.port, a.index);
    const tdtype = (bv.sig?.dtype ?? n.inputs[0]!.type?.dtype ?? 'float32') as DType;
    let value = this.input(n.inputs[0]!, tdtype);
    const scope = ir.scopes[n.scope]!;
    // Assignment drops leading size-1 dims of the value (numpy/PyTorch), e.g. [1, 128] into a [128] slot.
    const vrank = n.inputs[0]!.type?.shape?.length ?? 0;
    const items = a.items ?? [];
    const slotRank = (bv.sig?.shape?.length ?? 0) - items.filter((i) => i.kind === 'index').length + items.filter((i) => i.kind === 'newaxis').length;
    if (vrank > slotRank) {
      const axes = Array.from({ length: vrank - slotRank }, (_, i) => i);
      value = this.opset >= 13 ? this.em.op('Squeeze', [value, this.em.ints(axes)]) : this.em.op('Squeeze', [value], { axes });
    }
    const wholeBatch = coversBatch(ir, n.scope);
    const rank = bv.sig?.shape?.length ?? 0;
    // The new value of the view as a function of its value before this set: emitted now, and
    // again whenever a set on a view before it in data order changes what it starts from.
    let apply: (target: string) => string;
    // Every dim of the target known at compile time: the selected elements are a constant too.
    const dims = !this.state.specialize || (isShared(bv.sig) && !wholeBatch) ? undefined : concreteDims(bv.sig?.shape, ir);
    const vshape = concreteDims(n.inputs[0]!.type?.shape, ir);
    const src = n.inputs[0]!.producer;
    const literal = src.is('const') && src.attrs.data.length === 1 && src.attrs.dtype === tdtype && vrank <= slotRank ? src.attrs.data[0]! : undefined;
    const sel = dims && this.opset >= 11 ? selection(dims, wholeBatch ? null : [scope.rowStart, scope.rowEnd], a.items ?? []) : undefined;
    if (sel && sel.k === 0) {
      // The whole value: a constant of its shape, or the value broadcast to it.
      const same = vshape !== undefined && sameDims(vshape, dims!);
      apply = literal !== undefined ? () => this.em.op('ConstantOfShape', [this.em.ints(dims!)], { value: makeTensor(tdtype, [1], [literal]) })
        : same ? () => value : () => this.em.op('Expand', [value, this.em.ints(dims!)]);
    } else if (sel) {
      // One ScatterND with a constant index tensor: the rows and positions are known now.
      const rest = dims!.slice(sel.k);
      const flatShape = [sel.count, ...rest];
      apply = (target) => {
        let upd = value;
        if (literal !== undefined) upd = this.em.op('ConstantOfShape', [this.em.ints(flatShape)], { value: makeTensor(tdtype, [1], [literal]) });
        else {
          if (!(vshape && sameDims(vshape, sel.shape))) upd = this.em.op('Expand', [upd, this.em.ints(sel.shape)]);
          if (!sameDims(sel.shape, flatShape)) upd = this.em.op('Reshape', [upd, this.em.ints(flatShape)]);
        }
        return this.em.op('ScatterND', [target, this.em.constant('int64', [sel.count, sel.k], sel.indices), upd]);
      };
    } else if (!a.items && wholeBatch) {
      const vs = n.inputs[0]!.type?.shape;
      const ts = bv.sig?.shape;
      const same = vs && ts && vs.length === ts.length && vs.every((d, i) => d === ts[i] || (ts[i] === 'batch' && d === ir.batch));
      apply = same ? () => value : (target) => this.em.op('Expand', [value, this.shape(target)]);
    } else {
      // Scatter into the selected elements: iota shaped like the target, selected the same way.
      // A per-invoke set of a value every row shares first gives each row its own copy.
      const perRow = !wholeBatch && isShared(bv.sig) && ir.batch > 1;
      apply = (shared) => {
        const target = perRow ? this.perRow(shared, ir.batch) : shared;
        const shape = this.shape(target);
        const count = this.em.op('ReduceProd', [shape], { keepdims: 0 });
        const iota = this.em.op('Reshape', [this.em.op('Range', [this.em.scalarInt(0), count, this.em.scalarInt(1)]), shape]);
        let sel = wholeBatch ? iota : this.em.op('Slice', [iota, this.em.ints([scope.rowStart]), this.em.ints([scope.rowEnd]), this.em.ints([0])]);
        if (a.items) sel = this.index(sel, rank, a.items);
        const flatIdx = this.em.op('Reshape', [sel, this.em.ints([-1])]);
        const vals = this.em.op('Reshape', [this.em.op('Expand', [value, this.em.op('Shape', [sel])]), this.em.ints([-1])]);
        const flat = this.em.op('Reshape', [target, this.em.ints([-1])]);
        return this.em.op('Reshape', [this.em.op('ScatterElements', [flat, flatIdx, vals], { axis: 0 }), shape]);
      };
    }
    view.steps.push({ apply, prov: { ...this.em.prov } });
    this.valueOf(view, bv.name); // emit now, in program order
  }

  /** A name standing for a graph output's final value (every set included); resolved in {@link finish}. */
  private finalRef(name: string): string {
    for (const [ref, out] of this.finalRefs) if (out === name) return ref;
    const ref = this.em.unique(`${name}/nns.final`);
    this.finalRefs.set(ref, name);
    return ref;
  }

  /**
   * A placeholder `CallModule` node whose outputs stand for the module's outputs on the new
   * inputs; the apply-modules pass replaces it by a clone of the module's nodes. The inner
   * nodes' inputs are captured now (what each reads at this point of the program), so sets
   * later in the program do not leak into the call.
   */
  private callModule(path: string, given: string[], delta = 0, n?: Node): string[] {
    const m = this.module(path);
    const map = new Map<string, string>();
    const inner = m.nodes.map((idx) => this.originalNodes[idx]!);
    const args = delta === 0 ? given : given.map((x) => this.toRank(x, delta));
    // The module's inputs (as the model's nodes name them: lowering rewires nothing until the end) are the arguments.
    m.inputs.forEach((inp, i) => { if (i < args.length) map.set(inp.name, args[i]!); });
    // Values the module reads from the rest of the model (shapes computed from the model's
    // inputs, masks) have the model's batch and sequence. When the call has others, shapes
    // computed from the model's input shapes are recomputed from the argument's; anything
    // else (a mask computed from input data) makes the call an error.
    let outside = this.outsideReads(inner, map);
    if (outside !== undefined && n && (delta !== 0 || this.differsFromModel(m, n))) {
      const memo = new Map<string, string | undefined>();
      for (let x: string | undefined = outside; x !== undefined; x = this.outsideReads(inner, map)) {
        const y = this.recomputeShape(x, m, args[0]!, memo);
        if (y === undefined) break;
        map.set(x, y);
      }
      outside = this.outsideReads(inner, map);
    }
    if (outside !== undefined && n && (delta !== 0 || this.differsFromModel(m, n))) {
      const sig = m.inputs[0]!.sig!;
      const own = (sig.shape ?? []).map((d) => (d === 'batch' ? this.state.ir.batch : typeof d === 'string' ? this.state.ir.dimValues[d] ?? d : d));
      throw new NnsError('shape-mismatch', `cannot apply ${scriptPath(path)} (input ${formatType(sig)}) to a value of shape ${formatType(n.inputs[0]?.type ?? null)}: the module reads '${outside}', which the model computes for its own batch and sequence, so it only runs on values of the model's rank and sizes (${formatType({ dtype: sig.dtype, shape: own })} here)`, { span: n.span });
    }
    const outputs = delta === 0 ? this.placeholder(path, args, m, inner, map) : this.placeholder(path, args, m, inner, map).map((o) => this.fromRank(o, given[0]!, delta));
    return outputs;
  }

  /**
   * `name` (a value computed outside a called module from the model's input shapes and
   * constants only) recomputed with the shape of `arg` (the call's first argument at the
   * module's rank) in place of the model's: each `Shape(graph input)` becomes the argument's
   * dims of the same symbols (`input_ids: [batch, sequence]` → dims 0 and 1 of an argument
   * `[batch, sequence, 128]`), and the nodes between are cloned. Undefined when `name`
   * depends on anything else (input data, a dim the argument does not have).
   */
  private recomputeShape(name: string, m: ModuleInfo, arg: string, memo: Map<string, string | undefined>): string | undefined {
    if (memo.has(name)) return memo.get(name);
    memo.set(name, undefined); // cycles (none in a valid graph) end here
    let out: string | undefined;
    const p = this.producerOf(name);
    if (this.isWeightOrConstant(name)) out = name;
    else if (!p || (p.domain ?? '') !== '' || (p.attribute ?? []).some((a) => a.g || a.graphs?.length)) out = undefined;
    else if (p.op_type === 'Shape') {
      const g = this.ctx.tree.graphInputs.find((b) => b.name === p.input![0]);
      const all = g?.sig?.shape;
      const have = m.inputs[0]?.sig?.shape;
      const at = (k: string): number | undefined => { const a = (p.attribute ?? []).find((x) => x.name === k); return a ? Number(a.i) : undefined; };
      const norm = (i: number | undefined, dflt: number): number => (i === undefined ? dflt : i < 0 ? Math.max(0, i + all!.length) : Math.min(i, all!.length));
      const want = all ? all.slice(norm(at('start'), 0), norm(at('end'), all.length)) : undefined; // Shape's start/end (opset 15)
      if (want && have) {
        const pieces = want.map((d) => {
          if (typeof d === 'number') return this.em.ints([d]);
          const j = have.indexOf(d);
          return j < 0 ? undefined : this.em.op('Slice', [this.shape(arg), this.em.ints([j]), this.em.ints([j + 1])]);
        });
        if (pieces.every((x) => x !== undefined)) out = pieces.length === 1 ? pieces[0] : this.em.op('Concat', pieces as string[], { axis: 0 });
      }
    } else {
      const ins = (p.input ?? []).map((i) => (i ? this.recomputeShape(i, m, arg, memo) : ''));
      if (ins.every((x) => x !== undefined)) {
        if (ins.every((x, k) => x === p.input![k])) out = name;
        else {
          const outs = this.em.node(p.op_type!, ins as string[], {}, p.output!.length);
          const clone = this.g.node![this.g.node!.length - 1]!;
          clone.attribute = p.attribute;
          out = outs[p.output!.indexOf(name)];
        }
      }
    }
    memo.set(name, out);
    return out;
  }

  private producers?: Map<string, NodeProto>;
  private constantNames?: Set<string>;

  private producerOf(name: string): NodeProto | undefined {
    if (!this.producers) {
      this.producers = new Map();
      for (const x of this.originalNodes) for (const o of x.output ?? []) if (o) this.producers.set(o, x);
    }
    return this.producers.get(name);
  }

  /** An initializer or the output of an input-less `Constant` node. */
  private isWeightOrConstant(name: string): boolean {
    if (!this.constantNames) {
      this.constantNames = new Set((this.g.initializer ?? []).map((t) => t.name!));
      for (const x of this.originalNodes) if (x.op_type === 'Constant' && !(x.domain ?? '') && !(x.input ?? []).some(Boolean)) for (const o of x.output ?? []) this.constantNames.add(o);
    }
    return this.constantNames.has(name);
  }

  /** Whether an argument of call `n` binds a symbolic dim of the module's inputs (batch, sequence) to another size than the model's. */
  private differsFromModel(m: ModuleInfo, n: Node): boolean {
    const ir = this.state.ir;
    const size = (d: Dim): number | undefined => (typeof d === 'number' ? d : d === 'batch' ? ir.batch : ir.dimValues[d]);
    return n.inputs.some((v, i) => {
      const sig = m.inputs[i]?.sig?.shape;
      const a = v.type?.shape;
      if (!sig || !a || a.length !== sig.length) return false;
      return sig.some((d, j) => {
        if (typeof d !== 'string') return false;
        const [own, got] = [size(d), size(a[j]!)];
        return own !== undefined && got !== undefined && own !== got;
      });
    });
  }

  /** A value another module of the graph computes that `inner` reads (not an argument, weight or constant), if any. */
  private outsideReads(inner: NodeProto[], args: ReadonlyMap<string, string>): string | undefined {
    const produced = new Set(inner.flatMap((x) => x.output ?? []));
    for (const x of inner) {
      for (const i of x.input ?? []) if (i && !args.has(i) && !produced.has(i) && !this.isWeightOrConstant(i)) return i;
    }
    return undefined;
  }

  /** `x` (rank R + delta) at the module's rank R: see passes/call-rank.ts. */
  private toRank(x: string, delta: number): string {
    if (delta < 0) {
      const axes = Array.from({ length: -delta }, (_, i) => i);
      return this.opset >= 13 ? this.em.op('Unsqueeze', [x, this.em.ints(axes)]) : this.em.op('Unsqueeze', [x], { axes });
    }
    const rest = this.em.op('Slice', [this.shape(x), this.em.ints([delta + 1]), this.em.ints([Number.MAX_SAFE_INTEGER])]);
    return this.em.op('Reshape', [x, this.em.op('Concat', [this.em.ints([-1]), rest], { axis: 0 })]);
  }

  /** A result at the module's rank back at the rank of the call (`first` = the first argument as given). */
  private fromRank(y: string, first: string, delta: number): string {
    if (delta < 0) {
      const kept = this.em.op('Slice', [this.shape(y), this.em.ints([-delta]), this.em.ints([Number.MAX_SAFE_INTEGER])]);
      return this.em.op('Reshape', [y, kept]);
    }
    const lead = this.em.op('Slice', [this.shape(first), this.em.ints([0]), this.em.ints([delta + 1])]);
    const rest = this.em.op('Slice', [this.shape(y), this.em.ints([1]), this.em.ints([Number.MAX_SAFE_INTEGER])]);
    return this.em.op('Reshape', [y, this.em.op('Concat', [lead, rest], { axis: 0 })]);
  }

  private placeholder(path: string, args: string[], m: ModuleInfo, inner: NodeProto[], map: ReadonlyMap<string, string>): string[] {
    const outputs = this.em.node('CallModule', args, { module: path }, m.outputs.length);
    const placeholder = this.g.node![this.g.node!.length - 1]!;
    placeholder.domain = CALL_DOMAIN;
    const resultOf = new Map(m.outputs.map((o, i) => [o.name, outputs[i]!]));
    this.calls.push({
      placeholder,
      path,
      // Every other input reads what that node sees at this point of the program.
      nodes: inner.map((node) => ({ node, inputs: node.input!.map((x) => map.get(x) ?? (x ? this.slotValue(this.nodeIndex.get(node)!, x) : x)), outputs: node.output!.map((o) => resultOf.get(o) ?? '') })),
    });
    return outputs;
  }

  /**
   * Rewires the model's consumers of every set value to the value they see at the end of the
   * program (each through its own views, in data order), re-produces replaced graph outputs
   * under their names (the original value gets another name, everywhere it is read — by the
   * model and by intervention nodes emitted before the set), and resolves `model.output` reads.
   */
  finish(): void {
    const rename = new Map<string, string>();
    const finals = new Map<string, string>();
    const graphOutputs = new Set((this.g.output ?? []).map((o) => o.name!));
    for (const vv of this.views.values()) {
      if (![...vv.byKey.values()].some((v) => v.steps.length)) continue;
      for (const s of this.original.uses(vv.name) as Slot[]) {
        const view = this.slotView(vv, this.nodeIndex.get(s.node)!);
        const value = this.valueOf(view, vv.name);
        if (value === vv.name) continue;
        s.node.input![s.index] = value;
        // Errors found later (a cycle) blame the intervention that rewired this node.
        const span = this.lastSet(view)?.span;
        if (span) nodeSpans.set(s.node, span);
      }
      const outer = vv.outputs[vv.outputs.length - 1];
      if (graphOutputs.has(vv.name) && outer) {
        const value = this.valueOf(outer, vv.name);
        if (value !== vv.name) {
          finals.set(vv.name, value);
          rename.set(vv.name, this.em.unique(`${vv.name}/nns.original`));
        }
      }
    }
    for (const [ref, out] of this.finalRefs) rename.set(ref, out);
    if (rename.size) {
      const r = (x: string): string => rename.get(x) ?? x;
      for (const n of this.g.node!) renameIn(n, r);
      for (const [v, name] of this.names) this.names.set(v, r(name));
      for (const c of this.calls) for (const x of c.nodes) x.inputs = x.inputs.map(r);
    }
    for (const [outName, current] of finals) {
      this.em.prov = { module: '', irOp: 'set' };
      this.em.node('Identity', [current], {}, 1);
      this.g.node![this.g.node!.length - 1]!.output = [outName];
    }
  }
}

/** Renames the values a node reads and writes (and the outer values its subgraphs read). */
function renameIn(n: NodeProto, r: (x: string) => string): void {
  n.input = n.input!.map(r);
  n.output = n.output!.map(r);
  for (const a of n.attribute ?? []) {
    for (const sub of [a.g, ...(a.graphs ?? [])]) {
      if (!sub) continue;
      for (const m of sub.node ?? []) renameIn(m, r);
      for (const o of sub.output ?? []) if (o.name) o.name = r(o.name);
    }
  }
}

/** A symbolic shape with every dim known for this trace (`batch` the batch rows), or undefined. */
function concreteDims(shape: readonly Dim[] | null | undefined, ir: Graph): number[] | undefined {
  if (!shape) return undefined;
  const out: number[] = [];
  for (const d of shape) {
    const v = typeof d === 'number' ? d : d === 'batch' ? ir.batch : ir.dimValues[d];
    if (v === undefined) return undefined;
    out.push(v);
  }
  return out;
}

function sameDims(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Largest constant index tensor a set is lowered with (elements); larger selections use the iota form. */
const MAX_SET_INDICES = 1 << 20;

/**
 * The elements a set selects in a value of shape `dims`, computed at compile time: the
 * batch rows `rows` (null: all) then the basic index `items` (numpy semantics). `k` is the
 * number of leading axes the selection restricts (1 + the last axis that is not whole),
 * `indices` the ScatterND index tuples over them (row-major, `count` of them), `shape` the
 * selection's shape (what the value broadcasts to). Undefined for what it does not handle
 * (newaxis, an index out of range, a selection over {@link MAX_SET_INDICES}).
 */
export function selection(dims: readonly number[], rows: [number, number] | null, items: readonly IndexItem[]): { k: number; count: number; indices: number[]; shape: number[] } | undefined {
  const lists: number[][] = dims.map((d, i) => (i === 0 && rows ? range(rows[0], rows[1], 1) : range(0, d, 1)));
  const kept: boolean[] = dims.map(() => true);
  const consumed = items.filter((i) => i.kind === 'index' || i.kind === 'slice').length;
  let axis = 0;
  for (const it of items) {
    if (it.kind === 'newaxis') return undefined;
    if (it.kind === 'ellipsis') { axis += dims.length - consumed; continue; }
    const list = lists[axis];
    if (!list) return undefined;
    const L = list.length;
    if (it.kind === 'index') {
      const i = it.index < 0 ? it.index + L : it.index;
      if (i < 0 || i >= L) return undefined;
      lists[axis] = [list[i]!];
      kept[axis] = false;
    } else {
      const step = it.step ?? 1;
      if (step === 0) return undefined;
      const norm = (v: number | undefined, dflt: number): number => {
        if (v === undefined) return dflt;
        const x = v < 0 ? v + L : v;
        return step > 0 ? Math.min(Math.max(x, 0), L) : Math.min(Math.max(x, -1), L - 1);
      };
      const start = norm(it.start, step > 0 ? 0 : L - 1);
      const stop = norm(it.stop, step > 0 ? L : -1);
      lists[axis] = range(start, stop, step).map((j) => list[j]!);
    }
    axis++;
  }
  let k = 0;
  lists.forEach((l, i) => { if (!kept[i] || l.length !== dims[i] || l.some((x, j) => x !== j)) k = i + 1; });
  const lead = lists.slice(0, k);
  const count = lead.reduce((p, l) => p * l.length, 1);
  if (count === 0 || count * Math.max(k, 1) > MAX_SET_INDICES) return undefined;
  const indices: number[] = [];
  const tuple: number[] = [];
  const walk = (d: number): void => {
    if (d === k) { indices.push(...tuple); return; }
    for (const x of lead[d]!) { tuple[d] = x; walk(d + 1); }
  };
  if (count > 0) walk(0);
  const shape = lists.flatMap((l, i) => (kept[i] ? [l.length] : []));
  return { k, count, indices, shape };
}

function range(start: number, stop: number, step: number): number[] {
  const out: number[] = [];
  if (step > 0) for (let i = start; i < stop; i += step) out.push(i);
  else for (let i = start; i > stop; i += step) out.push(i);
  return out;
}

/** Depth of a module path (`''` is 0). */
function depth(path: string): number {
  return path ? path.split('.').length : 0;
}

/** Whether a boundary's leading dim is a fixed 1 rather than the batch: one tensor shared by every row. */
function isShared(sig: TensorSig | undefined): boolean {
  const d = sig?.shape?.[0];
  return d !== undefined && d !== 'batch' && d === 1;
}

/** Whether a scope's rows are the whole batch (scope 0, or the only invoke). */
function coversBatch(ir: Graph, scope: number): boolean {
  const s = ir.scopes[scope]!;
  return scope === 0 || (s.rowStart === 0 && s.rowEnd === ir.batch);
}


/**
 * Where each IR node's inserted ONNX nodes come from: its statement run (`ir.statementOf`;
 * a node a pass made later: its first input's, else its first user's, else the statement
 * whose span contains its own), the statement's kind and the module the statement touches — a set's target; else the
 * module of the first value the statement reads (a module read, the module that produces a
 * graph output for `model.output`, and through computations and module calls the module of
 * their first input): a logit-lens call on block 3's output is under `/transformer/h.3`.
 */
export function irProvenance(ir: Graph, tree: PassContext['tree']): Map<Node, Provenance> {
  const stmts = ir.statements.map((sp, i) => ({ sp, i })).sort((a, b) => a.sp.offset - b.sp.offset);
  const bySpan = (sp: Span): number => {
    let lo = 0;
    let hi = stmts.length - 1;
    let best = -1;
    while (lo <= hi) { // last statement run starting at or before the span
      const mid = (lo + hi) >> 1;
      if (stmts[mid]!.sp.offset <= sp.offset) { best = mid; lo = mid + 1; } else hi = mid - 1;
    }
    const c = stmts[best];
    return c && c.sp.file === sp.file && c.sp.endOffset >= sp.endOffset ? c.i : -1;
  };
  const unitOf = new Map<Node, number>();
  const unit = (n: Node): number => {
    let u = unitOf.get(n) ?? ir.statementOf.get(n);
    if (u !== undefined) return u;
    u = -1;
    unitOf.set(n, -1); // (cycle guard)
    for (const v of n.inputs) if ((u = unit(v.producer)) >= 0) break;
    // A node a pass made (narrow-rows' row read) belongs to the run of the node that uses it:
    // a loop runs one statement many times, so its span alone does not say which run.
    if (u < 0) for (const r of n.results) for (const user of r.uses) if (u < 0) u = ir.statementOf.get(user) ?? -1;
    if (u < 0) u = bySpan(n.span);
    unitOf.set(n, u);
    return u;
  };
  const outputModule = new Map<string, string>();
  const outModule = (name: string): string => {
    let m = outputModule.get(name);
    if (m !== undefined) return m;
    m = '';
    let size = Infinity;
    for (const mod of tree.modules.values()) {
      if (mod.path && mod.outputs.some((o) => o.name === name) && mod.nodes.length < size) { m = mod.path; size = mod.nodes.length; }
    }
    outputModule.set(name, m);
    return m;
  };
  const modOf = new Map<Node, string>();
  const nodeModule = (n: Node): string => {
    let m = modOf.get(n);
    if (m !== undefined) return m;
    const a = n.attrs as { path?: string; name?: string | null };
    if (n.op === 'module.output' || n.op === 'module.input' || n.op === 'set') m = a.path ?? '';
    else if (n.op === 'model.output') m = outModule(a.name ?? tree.graphOutputs[0]?.name ?? '');
    else {
      m = '';
      for (const v of n.inputs) if ((m = nodeModule(v.producer))) break;
    }
    modOf.set(n, m);
    return m;
  };
  const byStmt = new Map<number, Node[]>();
  for (const n of ir.nodes) {
    const u = unit(n);
    let list = byStmt.get(u);
    if (!list) byStmt.set(u, (list = []));
    list.push(n);
  }
  const stmtInfo = new Map<number, { module: string; kind: string }>();
  for (const [st, nodes] of byStmt) {
    const set = nodes.find((n) => n.is('set'));
    let module = set ? nodeModule(set) : '';
    if (!set) for (const n of nodes) if ((module = nodeModule(n))) break;
    const kind = set ? 'set' : nodes.some((n) => n.is('grad')) ? 'grad' : nodes.some((n) => n.is('call_module')) ? 'call' : nodes.some((n) => n.is('save')) ? 'save' : 'compute';
    stmtInfo.set(st, { module, kind });
  }
  const out = new Map<Node, Provenance>();
  for (const n of ir.nodes) {
    const u = unit(n);
    const info = stmtInfo.get(u)!;
    const irOp = n.op.replace('module.', '').replace('model.output', 'output').replace('call_module', 'call');
    out.set(n, { module: info.module, irOp, span: n.span, stmt: u >= 0 ? ir.statements[u]! : n.span, unit: u >= 0 ? u : undefined, kind: info.kind });
  }
  return out;
}

/** Splices the IR into `state.model`. */
export const lowerOnnxPass: Pass = {
  name: 'lower-onnx',
  prints: 'model',
  run(state, ctx) {
    const l = new Lowerer(state, ctx);
    const prov = irProvenance(state.ir, ctx.tree);
    // nns compile: a statement repeated in many invokes is lowered once for all of them.
    const families = state.specialize ? planFamilies(state.ir, ctx.tree) : new Map<Node, Member>();
    for (const n of state.ir.nodes) {
      l.em.prov = { ...prov.get(n)! };
      const fm = families.get(n);
      try {
        if (fm) {
          const rows = fm.fam.rows;
          const contiguous = rows.every((r, i) => r === rows[0]! + i);
          l.em.prov.invokes = { count: rows.length, rows: contiguous ? `${rows[0]}..${rows[rows.length - 1]}` : rows.join(',') };
          if (fm.j === 0) l.lowerFamily(fm.fam, fm.q);
          continue;
        }
        l.lower(n);
      } catch (e) {
        if (e instanceof NnsError) ctx.errors.push(e);
        else throw e;
      }
    }
    // A save of a member's value outside its family reads that member's own value.
    for (const n of state.ir.nodes) {
      if (!n.is('save')) continue;
      l.em.prov = { ...prov.get(n)! };
      try { l.input(n.inputs[0]!); } catch { /* reported by the pass that needs it */ }
    }
    l.finish();
    state.hostInputs = l.hostInputs;
    state.valueNames = l.names;
    state.moduleCalls = l.calls;
    state.grads = l.grads;
    state.provenance = prov;
    return { changed: true };
  },
};
