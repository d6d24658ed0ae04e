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
import type { Pass, PassContext, CompileState, ModuleCall } from './pass.js';
import { CALL_DOMAIN } from './pass.js';
import { scriptPath, type Dim, type Node, type Value, type IndexItem, type Graph, type OpName } from '../ir/ir.js';
import { formatType } from '../ir/shape.js';
import { callRankDelta } from '../ir/call-rank.js';
import { OPS, type LowerContext, type LowerRule } from '../ir/ops.js';
import type { NodeProto, GraphProto } from '../src/onnx/proto.js';
import type { ModuleInfo } from '../src/model/types.js';
import type { DType } from '../src/model/types.js';
import { NnsError } from '../src/errors.js';
import { OnnxGraphView, type Use } from '../src/onnx/view.js';
import { Emitter, valueInfo, onnxElemType, nodeSpans, makeTensor } from './onnx-emit.js';

const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

/** A slot of an original model node's input list. */
type Slot = Use;

class Lowerer {
  readonly em: Emitter;
  readonly g: GraphProto;
  readonly opset: number;
  readonly names = new Map<Value, string>();
  /** Current name of each set module output (`path#index`). */
  readonly currentOut = new Map<string, string>();
  /** Original names renamed because they were graph outputs that got replaced. */
  readonly renamed = new Map<string, string>();
  /** Graph outputs that must become Identity(current) at the end: output name → boundary key. */
  readonly outputFixes = new Map<string, string>();
  readonly calls: ModuleCall[] = [];
  readonly hostInputs = new Map<string, string>();
  private readonly originalNodes: NodeProto[];
  /** Use-lists of the model's own nodes as they were before lowering (rewiring a set's consumers does not change them). */
  private readonly original: OnnxGraphView;
  private readonly shapeCache = new Map<string, string>();

  constructor(readonly state: CompileState, readonly ctx: PassContext) {
    this.g = state.model.graph!;
    // Copy every node so rewiring never touches the caller's model objects.
    this.g.node = (this.g.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] }));
    this.originalNodes = [...this.g.node];
    this.g.output = [...(this.g.output ?? [])];
    this.g.input = [...(this.g.input ?? [])];
    this.em = new Emitter(this.g);
    const op = (state.model.opset_import ?? []).find((o) => !o.domain || o.domain === 'ai.onnx');
    this.opset = Number(op?.version ?? 0);
    this.original = new OnnxGraphView({ node: this.originalNodes });
  }

  module(path: string): ModuleInfo {
    const m = this.ctx.tree.modules.get(path);
    if (!m) throw new Error(`internal: module '${path}' not resolved`);
    return m;
  }

  private inside(m: ModuleInfo): Set<NodeProto> {
    return new Set(m.nodes.map((i) => this.originalNodes[i]!));
  }

  /** Slots inside (input) or outside (output) the module that consume the original boundary value. */
  private slots(m: ModuleInfo, port: 'output' | 'input', index: number): Slot[] {
    const list = port === 'output' ? m.outputs : m.inputs;
    const original = list[index]!.name;
    const name = this.renamed.get(original) ?? original;
    const inside = this.inside(m);
    return this.original.uses(name).filter((s) => (port === 'input') === inside.has(s.node));
  }

  /** The value a module boundary has at this point of the program (whole batch). */
  boundary(path: string, port: 'output' | 'input', index: number): string {
    const m = this.module(path);
    if (port === 'output') {
      const key = `${path}#${index}`;
      const original = m.outputs[index]!.name;
      return this.currentOut.get(key) ?? this.renamed.get(original) ?? original;
    }
    const slots = this.slots(m, 'input', index);
    if (slots.length) return slots[0]!.node.input![slots[0]!.index]!;
    const original = m.inputs[index]!.name;
    return this.renamed.get(original) ?? original;
  }

  /** Rows `[r0, r1)` of a whole-batch value for the node's scope. */
  rows(name: string, irGraph: Graph, scope: number): string {
    const s = irGraph.scopes[scope]!;
    if (coversBatch(irGraph, scope)) return name;
    return this.em.op('Slice', [name, this.em.ints([s.rowStart]), this.em.ints([s.rowEnd]), this.em.ints([0])]);
  }

  shape(name: string): string {
    let s = this.shapeCache.get(name);
    if (!s) this.shapeCache.set(name, (s = this.em.op('Shape', [name])));
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
    const key = `bigend${v}`;
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
    const name = this.names.get(v);
    if (name === undefined) throw new Error(`internal: value %${v.id} lowered before its producer`);
    return dt ? this.cast(name, v.type?.dtype, dt) : name;
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
        res(this.rows(this.boundary(path, port, index), ir, n.scope));
        return;
      }
      case 'model.output': {
        const name = (a.name as string | null) ?? this.g.output![0]!.name!;
        res(this.rows(name, ir, n.scope));
        return;
      }
      case 'param': {
        const p = this.ctx.tree.params.get(a.name as string);
        if (!p) throw new Error(`internal: parameter '${String(a.name)}' not resolved`);
        res(p.perm ? this.em.op('Transpose', [p.initializer], { perm: p.perm }) : p.initializer);
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
    // A replaced graph output: rename the original value first so the output name can be re-produced.
    if (a.port === 'output' && (this.g.output ?? []).some((o) => o.name === bv.name) && !this.renamed.has(bv.name)) this.renameOriginal(bv.name);
    const target = this.boundary(a.path, a.port, a.index);
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
    let next: string;
    if (!a.items && wholeBatch) {
      const vs = n.inputs[0]!.type?.shape;
      const ts = bv.sig?.shape;
      const same = vs && ts && vs.length === ts.length && vs.every((d, i) => d === ts[i] || (ts[i] === 'batch' && d === ir.batch));
      next = same ? value : this.em.op('Expand', [value, this.shape(target)]);
    } else {
      // Scatter into the selected elements: iota shaped like the target, selected the same way.
      const shape = this.shape(target);
      const count = this.em.op('ReduceProd', [shape], { keepdims: 0 });
      const iota = this.em.op('Reshape', [this.em.op('Range', [this.em.scalarInt(0), count, this.em.scalarInt(1)]), shape]);
      const rank = bv.sig?.shape?.length ?? 0;
      let sel = wholeBatch ? iota : this.em.op('Slice', [iota, this.em.ints([scope.rowStart]), this.em.ints([scope.rowEnd]), this.em.ints([0])]);
      if (a.items) sel = this.index(sel, rank, a.items);
      const flatIdx = this.em.op('Reshape', [sel, this.em.ints([-1])]);
      const vals = this.em.op('Reshape', [this.em.op('Expand', [value, this.em.op('Shape', [sel])]), this.em.ints([-1])]);
      const flat = this.em.op('Reshape', [target, this.em.ints([-1])]);
      next = this.em.op('Reshape', [this.em.op('ScatterElements', [flat, flatIdx, vals], { axis: 0 }), shape]);
    }
    this.rewire(m, a.port, a.index, next);
  }

  /** Point the model's consumers of a boundary at `next`. */
  private rewire(m: ModuleInfo, port: 'output' | 'input', index: number, next: string): void {
    const original = (port === 'output' ? m.outputs : m.inputs)[index]!.name;
    for (const s of this.slots(m, port, index)) {
      s.node.input![s.index] = next;
      // Errors found later (a cycle) blame the intervention that rewired this node.
      if (this.em.prov.span) nodeSpans.set(s.node, this.em.prov.span);
    }
    if (port === 'output') {
      const key = `${m.path}#${index}`;
      this.currentOut.set(key, next);
      if ((this.g.output ?? []).some((o) => o.name === original)) this.outputFixes.set(original, next);
      // Other modules whose output is the same value (e.g. a module and its last child) now read the new value too.
      for (const other of this.ctx.tree.modules.values()) {
        other.outputs.forEach((o, i) => { if (o.name === original && other !== m) this.currentOut.set(`${other.path}#${i}`, next); });
      }
    }
  }

  /** A graph output is being replaced: give the original value another name so the output can be re-produced. */
  private renameOriginal(name: string): void {
    const fresh = this.em.unique(`${name}/nns.original`);
    this.renamed.set(name, fresh);
    this.original.renameValue(name, fresh);
    for (const [k, v] of this.currentOut) if (v === name) this.currentOut.set(k, fresh);
  }

  /**
   * A placeholder `CallModule` node whose outputs stand for the module's outputs on the new
   * inputs; the apply-modules pass replaces it by a clone of the module's nodes. The inner
   * nodes' inputs are captured now, so sets later in the program do not leak into the call.
   */
  private callModule(path: string, given: string[], delta = 0, n?: Node): string[] {
    const m = this.module(path);
    const map = new Map<string, string>();
    const inner = m.nodes.map((idx) => this.originalNodes[idx]!);
    const args = delta === 0 ? given : given.map((x) => this.toRank(x, delta));
    m.inputs.forEach((inp, i) => {
      if (i >= args.length) return;
      map.set(this.renamed.get(inp.name) ?? inp.name, args[i]!);
      for (const s of this.slots(m, 'input', i)) map.set(s.node.input![s.index]!, args[i]!);
    });
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
    const resultOf = new Map(m.outputs.map((o, i) => [this.renamed.get(o.name) ?? o.name, outputs[i]!]));
    this.calls.push({
      placeholder,
      path,
      nodes: inner.map((n) => ({ node: n, inputs: n.input!.map((x) => map.get(x) ?? x), outputs: n.output!.map((o) => resultOf.get(o) ?? '') })),
    });
    return outputs;
  }

  finish(): void {
    for (const [outName, current] of this.outputFixes) {
      this.em.prov = { module: '', irOp: 'set' };
      this.em.node('Identity', [current], {}, 1);
      const id = this.g.node![this.g.node!.length - 1]!;
      this.em.reserve(outName);
      id.output = [outName];
    }
  }
}

/** Whether a scope's rows are the whole batch (scope 0, or the only invoke). */
function coversBatch(ir: Graph, scope: number): boolean {
  const s = ir.scopes[scope]!;
  return scope === 0 || (s.rowStart === 0 && s.rowEnd === ir.batch);
}

/** Splices the IR into `state.model`. */
export const lowerOnnxPass: Pass = {
  name: 'lower-onnx',
  prints: 'model',
  run(state, ctx) {
    const l = new Lowerer(state, ctx);
    for (const n of state.ir.nodes) {
      const path = (n.attrs as { path?: string }).path ?? n.inputs.map((v) => (v.producer.attrs as { path?: string }).path).find((p) => p !== undefined) ?? '';
      l.em.prov = { module: path, irOp: n.op.replace('module.', '').replace('model.output', 'output'), span: n.span };
      try {
        l.lower(n);
      } catch (e) {
        if (e instanceof NnsError) ctx.errors.push(e);
        else throw e;
      }
    }
    l.finish();
    state.hostInputs = l.hostInputs;
    state.valueNames = l.names;
    state.moduleCalls = l.calls;
    return { changed: true };
  },
};
