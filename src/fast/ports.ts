/**
 * The instrumented model: the model's graph with *ports* spliced in at module boundary
 * values, built once per model with the ordinary splice machinery: an IR of `set`s and
 * `save`s through {@link portedPipeline} (the compile pipeline, then `port-outputs` and
 * `port-inputs`).
 *
 * A port at boundary value `h` becomes `h' = h * keep + add`, where `port.<n>.keep` and
 * `port.<n>.add` are float graph inputs with symbolic dims (broadcast against `h`). An
 * output port rewires the consumers outside its module, an input port those inside, like a
 * `set`. Both `h` (pre) and `h'` (post) are graph outputs, so any port can be fetched. Fed
 * keep = 1 and add = 0 (`[1,1,1]`), a port leaves `h` bit-exact. Those outputs are *gated*
 * ({@link gateOutputs}): a run computes only the ones it fetches as outputs, so the many
 * unfetched ones do not hold memory. A generation step's model also outputs the part each
 * key/value cache output appends to its past ({@link exposeAppendedParts}): the step fetches
 * those, not the whole cache.
 *
 * Default ports (generic, no model-specific names): every *block* — a module whose last path
 * segment is an integer (`transformer.h.3`, `model.layers.7`) — gets an input port and an
 * output port on its first input/output, and every direct child of a block that has children
 * of its own (`attn`, `mlp`, `self_attn`) gets an output port; so does every other child of
 * the module holding a top-level block list (`transformer.wte`, `transformer.ln_f`, `model.norm`).
 * @module
 */
import crypto from 'node:crypto';
import { Builder } from '../../ir/builder.js';
import type { Span } from '../errors.js';
import { compileGraph, type ModelContext } from '../compile.js';
import { writeVariant } from '../model/load.js';
import type { Dim, ModuleTree } from '../model/types.js';
import { defaultOpset, type ModelProto, type NodeProto } from '../onnx/proto.js';
import { OnnxGraphView, topoOrder } from '../onnx/view.js';
import type { Pass } from '../../passes/pass.js';
import { defaultPipeline } from '../../passes/pipeline.js';
import { pruneGraph } from '../../passes/prune.js';
import { addSelectedTail, cutTail, findTail, type SelectedTail, type TailModule } from './tail.js';
import { Emitter, makeTensor } from '../../passes/onnx-emit.js';
import { sinkSlices } from '../../passes/sink-slices.js';
import type { Tensor } from '../tensor.js';

/** Bump when the ported graph's layout changes (invalidates written variants). */
export const PORTS_FORMAT = 10;

/** Where a port sits: a module's first output or first input. */
export interface PortSpec {
  /** Module path (`transformer.h.3`). */
  path: string;
  /** Which boundary. */
  kind: 'output' | 'input';
}

/** One port of the instrumented model. */
export interface Port extends PortSpec {
  /** Index in {@link PortedModel.ports}. */
  id: number;
  /** The original ONNX value at the boundary. */
  value: string;
  /** Its symbolic shape (`['batch', 'sequence', 768]`). */
  shape: Dim[];
  /** Graph input multiplied into the value. */
  keep: string;
  /** Graph input added to the value. */
  add: string;
  /** Graph output holding the value before the port. */
  pre: string;
  /** Graph output holding the value after the port. */
  post: string;
  /** Ports whose result this port's `pre` value depends on (data flow in the ported graph). */
  upstream: ReadonlySet<number>;
}

/** The instrumented model, written next to the weights. */
export interface PortedModel {
  /** Graph file (weights external, shared with the model). */
  graphPath: string;
  /** Ports in splice order (output ports first, then input ports, outer modules first). */
  ports: Port[];
  /** Port by `path#kind`. */
  byKey: ReadonlyMap<string, Port>;
  /** Ports each graph output depends on, by graph output name. */
  outputUpstream: ReadonlyMap<string, ReadonlySet<number>>;
  /**
   * The rewritten proto (what `nns export-serving` serves, kept for tests and inspection): the
   * graph at `graphPath` with its output gate an all-open initializer ({@link openGate}).
   */
  proto: ModelProto;
  /**
   * The model's tail module (src/fast/tail.ts), when it was left out of the instrumented
   * model: `fetch` is the graph output to fetch instead of the tail's outputs (the tail
   * input after the ports), which the executor computes on the tail's module model — or,
   * with `range`, inside the same run on the positions fed ({@link SelectedTail}).
   */
  tail?: TailModule & { fetch: string; range?: SelectedTail };
  /** Graph outputs computed at the last position only ({@link PortedModelOptions.lastPosition}). */
  lastPosition: ReadonlySet<string>;
  /** Graph outputs whose appended part is a graph output too, by output ({@link PortedModelOptions.appendOf}). */
  appended: ReadonlyMap<string, AppendedOutput>;
  /**
   * The output gate ({@link gateOutputs}): every run of the instrumented model feeds `input`
   * ({@link gateFeed}); `index` numbers the gated graph outputs.
   */
  gate?: OutputGate;
}

/** `path#kind`, the key of {@link PortedModel.byKey}. */
export function portKey(path: string, kind: 'output' | 'input'): string {
  return `${path}#${kind}`;
}

/** The default port set of a module tree (see the module comment), in graph order. */
export function choosePorts(tree: ModuleTree): PortSpec[] {
  const graphInputs = new Set(tree.graphInputs.map((g) => g.name));
  const seen = new Set<string>();
  const out: PortSpec[] = [];
  const add = (path: string, kind: 'output' | 'input'): void => {
    const m = tree.modules.get(path);
    const bv = (kind === 'output' ? m?.outputs : m?.inputs)?.[0];
    const sig = bv?.sig;
    if (!bv || !sig || sig.dtype !== 'float32' || sig.shape === null || graphInputs.has(bv.name)) return;
    const k = `${kind}|${bv.name}`;
    if (seen.has(k)) return; // another module returns the same value: the first one owns the port
    seen.add(k);
    out.push({ path, kind });
  };
  const isBlock = (path: string): boolean => /^\d+$/.test(path.split('.').pop() ?? '');
  const inBlock = (path: string | undefined): boolean => {
    for (let p = path; p !== undefined; p = tree.modules.get(p)?.parent) if (isBlock(p)) return true;
    return false;
  };
  // Owners of top-level block lists (`transformer` for `transformer.h.N`): their other children get output ports.
  const owners = new Set<string>();
  const lists = new Set<string>();
  for (const m of tree.modules.values()) {
    if (!isBlock(m.path) || inBlock(m.parent)) continue;
    const list = m.path.split('.').slice(0, -1).join('.');
    lists.add(list);
    const owner = tree.modules.has(list) ? tree.modules.get(list)!.parent : m.parent;
    if (owner !== undefined) owners.add(owner);
  }
  for (const m of tree.modules.values()) {
    if (isBlock(m.path)) {
      add(m.path, 'input');
      for (const c of m.children) if ((tree.modules.get(c)?.children.length ?? 0) > 0) add(c, 'output');
      add(m.path, 'output');
    } else if (m.parent !== undefined && owners.has(m.parent) && !lists.has(m.path) && !inBlock(m.parent)) {
      add(m.path, 'output');
    }
  }
  return out;
}

/**
 * Ports in an order where each port's `pre` read comes after the ports before it in data
 * order on the same value (a block's output port before the next block's input port, an
 * outer module's input port before an inner one's), so `pre` is exactly what the port's
 * `keep`/`add` apply to: output ports first, then input ports, outer modules first.
 */
function spliceOrder(tree: ModuleTree, specs: readonly PortSpec[]): PortSpec[] {
  const size = (s: PortSpec): number => tree.modules.get(s.path)?.nodes.length ?? 0;
  const outputs = specs.filter((s) => s.kind === 'output');
  const inputs = specs.filter((s) => s.kind === 'input');
  return [...outputs, ...inputs.map((s, i) => ({ s, i })).sort((a, b) => size(b.s) - size(a.s) || a.i - b.i).map((x) => x.s)];
}

/**
 * Saves of model values are Identity nodes feeding new graph outputs: the instrumented model
 * outputs the values themselves instead (no copies); an inserted value saved under its own
 * name stays as it is. `state.saved` then maps each save to that value.
 */
export const portOutputsPass: Pass = {
  name: 'port-outputs',
  prints: 'model',
  run(state) {
    const g = state.model.graph!;
    const view = new OnnxGraphView(g);
    const direct = new Map<string, string>(); // save name → ONNX value
    const drop = new Set<NodeProto>();
    for (const [name, out] of state.saved) {
      const id = view.producer(out);
      if (!id || id.op_type !== 'Identity') { // an inserted value that is itself named by its save
        direct.set(name, out);
        continue;
      }
      direct.set(name, id.input![0]!);
      drop.add(id);
    }
    view.remove(drop);
    const outNames = new Set<string>();
    g.output = (g.output ?? []).flatMap((o) => {
      const name = [...state.saved].find(([, v]) => v === o.name)?.[0];
      const real = name ? direct.get(name)! : o.name!;
      if (outNames.has(real)) return [];
      outNames.add(real);
      return [{ ...o, name: real }];
    });
    state.saved = direct;
    return { changed: drop.size > 0 };
  },
};

/** Host inputs → `port.<n>.keep` / `port.<n>.add` with symbolic dims (broadcast against the port's value). */
export const portInputsPass: Pass = {
  name: 'port-inputs',
  prints: 'model',
  run(state) {
    const g = state.model.graph!;
    const view = new OnnxGraphView(g);
    const taken = new Set([...(g.node ?? []).flatMap((n) => n.output ?? []), ...(g.input ?? []).map((i) => i.name)]);
    const inputName = new Map<string, string>();
    for (const [host, gname] of state.hostInputs ?? []) {
      const want = taken.has(host) ? gname : host;
      inputName.set(host, want);
      const vi = g.input!.find((i) => i.name === gname)!;
      vi.name = want;
      const dims = vi.type!.tensor_type!.shape!.dim!;
      vi.type!.tensor_type!.shape!.dim = dims.map((_, d) => ({ dim_param: `${want.replace(/\./g, '_')}_d${d}` }));
      if (want !== gname) view.replaceAllUsesWith(gname, want);
    }
    state.hostInputs = inputName;
    return { changed: inputName.size > 0 };
  },
};

/** How the instrumented model is built: the compile pipeline, then its two own passes. */
export const portedPipeline: readonly Pass[] = [...defaultPipeline, portOutputsPass, portInputsPass];

const SPAN: Span = { file: '<ports>', line: 1, col: 1, endLine: 1, endCol: 1, offset: 0, endOffset: 0 };

/** Options of {@link buildPortedModel}. */
const ELEM_FLOAT = 1;

export interface PortedModelOptions {
  /**
   * Leave the model's tail module (lm_head) out and compute it on demand (default true; not
   * when one of its outputs is computed at the last position only: that slice is sunk into
   * the tail inside the graph).
   */
  cutTail?: boolean;
  /**
   * Graph outputs to compute at the last position of their `sequence` axis only (the
   * output keeps its name and rank, that axis of size 1): a generation step reads just the
   * last position's logits. The selection is sunk above position-wise nodes
   * (passes/sink-slices.ts), so the lm_head (and the final norm) run on one position.
   * Outputs without a sequence axis, or read inside the graph, stay whole.
   */
  lastPosition?: readonly string[];
  /** With the tail cut, keep a copy of it on a fed range of positions inside the model (default true; {@link SelectedTail}). */
  tailRange?: boolean;
  /**
   * Graph outputs that may be the concatenation of a graph input and a new part (a
   * key/value cache: `present.i.key = Concat(past_key_values.i.key, k)`), as (input,
   * output) pairs: for each pair whose output is produced by a `Concat` of exactly
   * `[input, part]`, the model also outputs `part` ({@link PortedModel.appended}), so a
   * caller can fetch the small new part and put the output together on the host. Pairs of
   * any other form are left out.
   */
  appendOf?: readonly { input: string; output: string }[];
}

/** A graph output that is a graph input with a new part appended ({@link PortedModelOptions.appendOf}). */
export interface AppendedOutput {
  /** The graph input it starts with. */
  input: string;
  /** The graph output holding the new part. */
  part: string;
  /** The concatenation axis (non-negative). */
  axis: number;
}

/**
 * Adds the appended parts of `pairs` ({@link PortedModelOptions.appendOf}) as graph outputs
 * of `model`; returns them by the output they make up.
 */
export function exposeAppendedParts(model: ModelProto, pairs: readonly { input: string; output: string }[]): Map<string, AppendedOutput> {
  const g = model.graph!;
  const found = new Map<string, AppendedOutput>();
  const view = new OnnxGraphView(g);
  const inputs = new Map((g.input ?? []).map((i) => [i.name!, i]));
  const outputs = new Map((g.output ?? []).map((o) => [o.name!, o]));
  for (const { input, output } of pairs) {
    const n = view.producer(output);
    const out = outputs.get(output);
    const rank = inputs.get(input)?.type?.tensor_type?.shape?.dim?.length;
    if (!n || !out || rank === undefined || n.op_type !== 'Concat' || (n.domain ?? '') !== '' || n.input?.length !== 2 || n.input[0] !== input) continue;
    const part = n.input[1]!;
    const a = Number((n.attribute ?? []).find((x) => x.name === 'axis')?.i ?? NaN);
    const axis = a < 0 ? a + rank : a;
    if (!Number.isInteger(axis) || axis < 0 || axis >= rank || part === '' || inputs.has(part) || outputs.has(part)) continue;
    const tt = out.type?.tensor_type;
    if (tt?.elem_type === undefined) continue; // a graph output needs its type
    const dims = tt?.shape?.dim?.map((d, i) => (i === axis ? {} : { ...d }));
    g.output = [...(g.output ?? []), { name: part, type: { tensor_type: { elem_type: tt.elem_type, ...(dims ? { shape: { dim: dims } } : {}) } } }];
    outputs.set(part, g.output[g.output.length - 1]!);
    found.set(output, { input, part, axis });
  }
  return found;
}

/**
 * Rewrites graph output `name` of `model` to its last position along `axis` (a `Slice`
 * keeping the rank), then sinks the selection above position-wise nodes. Returns whether
 * the output was rewritten.
 */
export function sliceOutputToLastPosition(model: ModelProto, name: string, axis: number, ranks: ReadonlyMap<string, number>): boolean {
  const g = model.graph!;
  const opset = defaultOpset(model) ?? 0;
  const out = (g.output ?? []).find((o) => o.name === name);
  const producer = (g.node ?? []).find((n) => (n.output ?? []).includes(name));
  const dims = out?.type?.tensor_type?.shape?.dim;
  // Slice with input starts/ends/axes from opset 10; an output also read inside the graph stays whole.
  if (opset < 10 || !out || !producer || !dims || axis >= dims.length || (g.node ?? []).some((n) => (n.input ?? []).includes(name))) return false;
  if ((g.output ?? []).filter((o) => o.name === name).length !== 1) return false;
  const em = new Emitter(g);
  em.prov = { module: '', irOp: 'last-position' };
  const all = em.unique(`${name}/nns.all_positions`);
  producer.output = producer.output!.map((o) => (o === name ? all : o));
  em.node('Slice', [all, em.ints([-1]), em.ints([Number.MAX_SAFE_INTEGER]), em.ints([axis])]);
  g.node![g.node!.length - 1]!.output = [name];
  dims[axis] = { dim_value: 1 };
  sinkSlices(g, opset, { ranks: new Map([...ranks, [all, dims.length]]) });
  const { order, cyclic } = topoOrder(g);
  if (cyclic.length) throw new Error(`internal: slicing ${name} to its last position made a cycle`);
  g.node = order;
  return true;
}

/** See {@link gateOutputs}. */
export interface OutputGate {
  /** The graph input: int64 `[index.size]`. */
  input: string;
  /** Gated graph output → its element of `input`. */
  index: ReadonlyMap<string, number>;
}

/** Element of the gate for a fetched output: the whole of axis 0 (Slice clamps the end). */
const GATE_OPEN = 2 ** 53 - 1;

/**
 * Gates graph outputs `names` of `model`: onnxruntime keeps every graph output alive until a
 * run ends, fetched or not (its memory planner never reuses a graph output's buffer), and its
 * arena keeps that memory for later runs. With two outputs per port (160 on a 22-layer model)
 * a run at 1024 positions held ~1.3 GB more than the plain model (measured: 1.1 B Llama-shaped
 * model, T = 1024; GPT-2 small, T = 1024: +305 MB with its 91 outputs against one). So each
 * gated output X becomes `Slice(X', 0, gate[k], axis 0)` where X' is the value the model
 * computes (its readers renamed to it) and `gate` is one int64 graph input, fed per run by
 * the local runner ({@link gateFeed}): the whole axis for the outputs fetched (a copy,
 * bit-exact), 0 for the others (an empty tensor); the gate's elements come from one `Split`.
 * The model's readers of X' read it through `Reshape(X', shape(X))` — X' bit for bit, open or
 * closed, since a 0 in a Reshape's shape keeps the input's dim, and without a copy
 * (onnxruntime aliases a Reshape's output to its input) — which makes onnxruntime run the gate
 * right after X' instead of after the whole model (its order ignores node placement; gated at
 * the end, every X' stayed alive to the end and memory grew: GPT-2 small, T = 1024, +832 MB
 * after two runs, vs +510 ungated and +237 with that dependency, then a `Where` on the gated
 * output's size, which copied every gated value per run; the Reshape keeps the peak PSS of two
 * T = 1024 traces the same, +418–441 MB). Outputs of rank 0 or without a producing
 * node are left alone. The gated outputs' first dim becomes symbolic. The served copy of the
 * model ({@link openGate}) has the gate as an initializer with every output open instead.
 */
export function gateOutputs(model: ModelProto, names: readonly string[]): OutputGate | undefined {
  const g = model.graph!;
  const producer = new Map<string, NodeProto>();
  for (const n of g.node ?? []) for (const o of n.output ?? []) producer.set(o, n);
  const outs = new Map((g.output ?? []).map((o) => [o.name!, o]));
  const gated = names.filter((x) => producer.has(x) && outs.has(x) && (outs.get(x)!.type?.tensor_type?.shape?.dim?.length ?? 0) > 0);
  if (!gated.length) return undefined;
  const em = new Emitter(g);
  em.prov = { module: '', irOp: 'output-gate' };
  const input = em.unique('nns.output_gate');
  g.input = [...(g.input ?? []), { name: input, type: { tensor_type: { elem_type: 7, shape: { dim: [{ dim_value: gated.length }] } } } }];
  const index = new Map<string, number>();
  const renamed = new Map<string, string>();
  for (const x of gated) renamed.set(x, em.unique(`${x}/nns.ungated`));
  for (const n of g.node ?? []) {
    n.input = (n.input ?? []).map((i) => renamed.get(i) ?? i);
    n.output = (n.output ?? []).map((o) => renamed.get(o) ?? o);
  }
  for (const v of g.value_info ?? []) if (v.name && renamed.has(v.name)) v.name = renamed.get(v.name)!;
  const model0 = [...(g.node ?? [])]; // the model's own nodes (readers of the X')
  const zero = em.ints([0]), axis0 = em.ints([0]);
  // The gate's elements, one [1] tensor each, from one Split (a Slice per output cost a node each per run).
  const opset = defaultOpset(model) ?? 0;
  const ones = gated.map(() => 1);
  const ends = gated.length === 1 ? [input]
    : opset >= 13 ? em.node('Split', [input, em.ints(ones)], { axis: 0 }, gated.length) : em.node('Split', [input], { axis: 0, split: ones }, gated.length);
  gated.forEach((x, k) => {
    index.set(x, k);
    const xp = renamed.get(x)!;
    em.node('Slice', [xp, zero, ends[k]!, axis0]);
    g.node![g.node!.length - 1]!.output = [x];
    // The model reads X' through Reshape(X', shape(X)) — X' itself, bit for bit: X is X' or X'
    // with an empty first axis, and a 0 in a Reshape's shape keeps the input's dim — and no
    // copy (onnxruntime aliases a Reshape's output to its input), so the gate runs before the
    // rest of the model and X' can be freed after its last reader.
    const after = em.op('Reshape', [xp, em.op('Shape', [x])]);
    for (const n of model0) if ((n.input ?? []).includes(xp)) n.input = n.input!.map((i) => (i === xp ? after : i));
    const d0 = outs.get(x)!.type!.tensor_type!.shape!.dim![0]!;
    if (d0.dim_value !== undefined) outs.get(x)!.type!.tensor_type!.shape!.dim![0] = { dim_param: `${input}_${k}` };
  });
  return { input, index };
}

/**
 * `model` with its gate an initializer that opens every output (also kept as a graph input,
 * so onnxruntime lets a run override it): what the exported `.ports` model serves, so a
 * Triton client that knows nothing of the gate gets every output, as before the gate.
 * (onnxruntime-node passes only a session's `inputNames` to a run, and those leave such
 * initializers out; the local runner therefore runs the gated model with the gate a plain input.)
 */
export function openGate(model: ModelProto, gate: OutputGate | undefined): ModelProto {
  if (!gate) return model;
  const g = model.graph!;
  return { ...model, graph: { ...g, initializer: [...(g.initializer ?? []), { ...makeTensor('int64', [gate.index.size], Array(gate.index.size).fill(GATE_OPEN)), name: gate.input }] } };
}

/**
 * The served copy of the instrumented model leaves the in-model tail ({@link SelectedTail})
 * out: a server's client fetches the tail input and runs the tail's module model, as it
 * knows nothing of the range inputs.
 */
function withoutTailRange(model: ModelProto, range: SelectedTail | undefined): ModelProto {
  if (!range) return model;
  const g = model.graph!;
  const outs = new Set(range.outputs.values());
  const served = { ...g, input: (g.input ?? []).filter((i) => i.name !== range.start && i.name !== range.end && i.name !== range.extra?.input), output: (g.output ?? []).filter((o) => !outs.has(o.name!)) };
  pruneGraph(served);
  return { ...model, graph: served };
}

/** The positions the in-model tail computes in a run ({@link SelectedTail}), and the rows the host appends (`extra`: its graph input's layout). */
export interface TailRange {
  start: number;
  end: number;
  extra?: Tensor;
}

/**
 * The feeds every run of the instrumented model needs besides the model's and the ports':
 * the output gate for a run that fetches `fetch` (see {@link gateOutputs}), and the range of
 * positions of the in-model tail ({@link SelectedTail}; empty unless `tailRange` is given).
 * Empty for a model with neither.
 */
export function gateFeed(ported: Pick<PortedModel, 'gate' | 'tail'>, fetch: readonly string[], tailRange?: TailRange): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  const range = ported.tail?.range;
  if (range) {
    out[range.start] = { dtype: 'int64', shape: [1], data: BigInt64Array.of(BigInt(tailRange?.start ?? 0)) };
    out[range.end] = { dtype: 'int64', shape: [1], data: BigInt64Array.of(BigInt(tailRange?.end ?? 0)) };
    // No rows of the host's unless the caller feeds them (src/fast/execute.ts, module calls of the tail).
    if (range.extra) out[range.extra.input] = tailRange?.extra ?? { dtype: 'float32', shape: [...Array<number>(range.axis).fill(1), 0, range.extra.hidden], data: new Float32Array(0) };
  }
  const gate = ported.gate;
  if (!gate) return out;
  const data = new BigInt64Array(gate.index.size);
  for (const f of fetch) {
    const k = gate.index.get(f);
    if (k !== undefined) data[k] = BigInt(GATE_OPEN);
  }
  out[gate.input] = { dtype: 'int64', shape: [data.length], data };
  return out;
}

/** Ranks of the module boundaries and graph inputs/outputs (what {@link sinkSlices} cannot infer itself). */
function boundaryRanks(tree: ModuleTree): Map<string, number> {
  const ranks = new Map<string, number>();
  const add = (b: { name: string; sig?: { shape: unknown[] | null } }): void => {
    if (b.sig?.shape && !ranks.has(b.name)) ranks.set(b.name, b.sig.shape.length);
  };
  for (const m of tree.modules.values()) [...m.outputs, ...m.inputs].forEach(add);
  [...tree.graphInputs, ...tree.graphOutputs].forEach(add);
  return ranks;
}

/** Builds (or reuses, when written before) the instrumented model for `specs`. */
export function buildPortedModel(mc: ModelContext, given: readonly PortSpec[] = choosePorts(mc.tree), opts: PortedModelOptions = {}): PortedModel {
  const specs = spliceOrder(mc.tree, given);
  const b = new Builder({ file: '<ports>', tree: mc.tree });
  const read = (s: PortSpec): ReturnType<Builder['moduleOutput']> => (s.kind === 'output' ? b.moduleOutput(s.path, 0, SPAN) : b.moduleInput(s.path, 0, SPAN));
  specs.forEach((s, i) => {
    const bv = (s.kind === 'output' ? mc.tree.modules.get(s.path)!.outputs : mc.tree.modules.get(s.path)!.inputs)[0]!;
    const ones = bv.sig!.shape!.map(() => 1);
    const pre = read(s);
    const keep = b.host(`port.${i}.keep`, 'float32', ones, SPAN);
    const add = b.host(`port.${i}.add`, 'float32', ones, SPAN);
    b.set(s.path, s.kind, 0, null, b.op('add', [b.op('mul', [pre, keep], {}, SPAN), add], {}, SPAN), SPAN);
    b.save(pre, `port.${i}.pre`, SPAN);
    b.save(read(s), `port.${i}.post`, SPAN);
  });
  const state = compileGraph(b.graph, mc, { pipeline: portedPipeline });
  const g = state.model.graph!;
  const saved = state.saved;
  const last: string[] = [];
  if (opts.lastPosition?.length) {
    const ranks = boundaryRanks(mc.tree);
    for (const name of opts.lastPosition) {
      const axis = mc.tree.graphOutputs.find((o) => o.name === name)?.sig?.shape?.indexOf('sequence') ?? -1;
      if (axis >= 0 && sliceOutputToLastPosition(state.model, name, axis, ranks)) last.push(name);
    }
  }
  const inputName = state.hostInputs ?? new Map<string, string>();

  // Data flow: which port results each value depends on.
  const postOf = new Map(specs.map((_, i) => [saved.get(`port.${i}.post`)!, i]));
  const deps = new Map<string, Set<number>>();
  for (const n of g.node ?? []) {
    const d = new Set<number>();
    for (const x of n.input ?? []) for (const p of deps.get(x) ?? []) d.add(p);
    for (const o of n.output ?? []) {
      const own = postOf.get(o);
      deps.set(o, own === undefined ? d : new Set([...d, own]));
    }
  }
  const ports: Port[] = specs.map((s, i) => {
    const bv = (s.kind === 'output' ? mc.tree.modules.get(s.path)!.outputs : mc.tree.modules.get(s.path)!.inputs)[0]!;
    const pre = saved.get(`port.${i}.pre`)!;
    return {
      ...s, id: i, value: bv.name, shape: [...bv.sig!.shape!],
      keep: inputName.get(`port.${i}.keep`)!, add: inputName.get(`port.${i}.add`)!,
      pre, post: saved.get(`port.${i}.post`)!, upstream: deps.get(pre) ?? new Set(),
    };
  });
  const outputUpstream = new Map(mc.tree.graphOutputs.map((o) => [o.name, deps.get(o.name) ?? new Set<number>()]));
  // The tail (lm_head) leaves the instrumented model: its outputs are computed on demand.
  let tail: PortedModel['tail'];
  const found = opts.cutTail === false ? null : findTail(mc);
  const t = found && !('reject' in found) && !last.some((o) => found.outputs.has(o)) ? found : null; // see PortedModelOptions.cutTail
  if (t) {
    const all = mc.loaded.proto.graph!.node ?? [];
    const names = new Set(mc.tree.modules.get(t.path)!.nodes.map((i) => all[i]!.name ?? ''));
    const sig = mc.tree.modules.get(t.path)!.inputs[0]!.sig!;
    if (!names.has('')) {
      const outputTypes = new Map((g.output ?? []).filter((o) => t.outputs.has(o.name!)).map((o) => [o.name!, o]));
      const fetch = cutTail(g, t, names, { elemType: ELEM_FLOAT, dims: sig.shape!.map((d) => (typeof d === 'number' ? d : String(d))) });
      if (fetch) {
        const range = opts.tailRange === false ? null : addSelectedTail(g, defaultOpset(state.model) ?? 0, t, names, fetch, outputTypes);
        pruneGraph(g);
        tail = { ...t, fetch, ...(range ? { range } : {}) };
      }
    }
  }
  // Port values (not the model's own outputs) are gated: a run holds only what it fetches.
  const own = new Set(mc.tree.graphOutputs.map((o) => o.name));
  const gate = gateOutputs(state.model, [...new Set(ports.flatMap((p) => [p.pre, p.post]))].filter((x) => !own.has(x)));
  const appended = opts.appendOf?.length ? exposeAppendedParts(state.model, opts.appendOf) : new Map<string, AppendedOutput>();
  const key = crypto.createHash('sha256').update(`${mc.loaded.id}|${JSON.stringify(specs)}|${tail ? `tail:${tail.path}${tail.range ? '+range' : ''}` : 'whole'}|${PORTS_FORMAT}${last.length ? `|last-position 1:${JSON.stringify(last)}` : ''}${appended.size ? `|appended:${JSON.stringify([...appended])}` : ''}`).digest('hex').slice(0, 24);
  const graphPath = writeVariant(mc.loaded, state.model, `ports-${key}`);
  return { graphPath, ports, byKey: new Map(ports.map((p) => [portKey(p.path, p.kind), p])), outputUpstream, proto: openGate(withoutTailRange(state.model, tail?.range), gate), lastPosition: new Set(last), appended, ...(tail ? { tail } : {}), ...(gate ? { gate } : {}) };
}
