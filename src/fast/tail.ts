/**
 * The model's *tail*: the module that turns the final hidden state into the graph outputs,
 * position by position (`lm_head`: `h @ W`). It is left out of the instrumented model and
 * computed on demand on its module model (src/fast/module-model.ts) from the fetched tail
 * input, so a trace that never looks at the logits (a logit lens, a save of block outputs)
 * does not pay for the vocabulary projection of every position, and one that reads
 * `logits[:, -1, :]` computes it for that position only (the selection is sunk into the
 * call, as the compiled path's sink-slices pass does).
 *
 * Detected structurally, never by name: a module other than the root whose outputs are all
 * graph outputs, that is *closed* (it reads only its one input, weights and input-less
 * constants: {@link moduleClosure}), whose internal values nothing outside reads, and that is
 * *position-wise*: every node that depends on the input acts on the last axis only —
 * elementwise ops, binary ops with a constant of rank ≤ 1 or of two input-derived values,
 * `MatMul` by a constant matrix, `LayerNormalization`/`Softmax`/`LogSoftmax` and keep-dims
 * reductions over the last axis. Then every leading index (batch row, position) of its output
 * depends only on the same index of its input. Of several candidates the largest is taken.
 * @module
 */
import type { ModelContext } from '../compile.js';
import type { GraphProto, NodeProto, TensorProto, ValueInfoProto } from '../onnx/proto.js';
import { Emitter } from '../../passes/onnx-emit.js';
import { attrOf } from '../onnx/attributes.js';
import { tensorData } from '../onnx/graph-builder.js';
import { moduleClosure } from './module-model.js';

/** The tail module of a model. */
export interface TailModule {
  /** Module path (`lm_head`). */
  path: string;
  /** The module's one input in the model (`/transformer/ln_f/LayerNormalization_output_0`). */
  input: string;
  /** Rank of that input (= rank of every output). */
  rank: number;
  /** The graph outputs it produces, by name: index among the module's outputs. */
  outputs: ReadonlyMap<string, number>;
}

const UNARY = new Set([
  'Relu', 'Gelu', 'Tanh', 'Sigmoid', 'Erf', 'Sqrt', 'Cast', 'Neg', 'Exp', 'Log', 'Abs', 'Identity',
  'Reciprocal', 'Softplus', 'Softsign', 'Elu', 'LeakyRelu', 'Selu', 'HardSigmoid', 'Floor', 'Ceil', 'Round', 'Sign',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow']);
const LAST_AXIS = new Set(['LayerNormalization', 'Softmax', 'LogSoftmax']);
const REDUCE = new Set(['ReduceMean', 'ReduceSum', 'ReduceMax', 'ReduceMin', 'ReduceL2', 'ReduceSumSquare']);

/** The tail of the loaded model, or why it has none (see the module comment). */
export function findTail(mc: ModelContext): TailModule | { reject: string } {
  const g = mc.loaded.proto.graph!;
  const all = g.node ?? [];
  const graphOut = new Set(mc.tree.graphOutputs.map((o) => o.name));
  let best: TailModule | undefined;
  let bestSize = 0;
  let why = 'no module produces only graph outputs';
  for (const m of mc.tree.modules.values()) {
    if (m.path === '' || !m.outputs.length || !m.outputs.every((o) => graphOut.has(o.name))) continue;
    const r = tailOf(mc, g, all, m.path);
    if ('reject' in r) {
      why = `${m.path}: ${r.reject}`;
      continue;
    }
    if (m.nodes.length > bestSize) {
      best = r;
      bestSize = m.nodes.length;
    }
  }
  return best ?? { reject: why };
}

function tailOf(mc: ModelContext, g: GraphProto, all: NodeProto[], path: string): TailModule | { reject: string } {
  const m = mc.tree.modules.get(path)!;
  if (m.inputs.length !== 1) return { reject: `${m.inputs.length} inputs` };
  const inSig = m.inputs[0]!.sig;
  const rank = inSig?.shape?.length;
  if (!inSig || rank === undefined || rank < 2 || inSig.dtype !== 'float32') return { reject: 'its input is not a float tensor of rank ≥ 2 with a known rank' };
  if (mc.tree.graphInputs.some((x) => x.name === m.inputs[0]!.name)) return { reject: 'its input is a graph input' };
  for (const o of m.outputs) if (o.sig?.shape?.length !== rank) return { reject: `output ${o.name} has another rank than its input` };
  const c = moduleClosure(mc, path);
  if ('reject' in c) return c;
  const mine = new Set(c.nodes);
  const produced = new Set(c.nodes.flatMap((n) => n.output ?? []));
  for (const n of all) {
    if (mine.has(n)) continue;
    for (const x of n.input ?? []) if (x && produced.has(x)) return { reject: `${n.name ?? n.op_type} outside it reads ${x}` };
  }
  // Position-wise: every node depending on the input acts on the last axis only.
  const inits = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  const constRank = new Map<string, number>();
  for (const [k, t] of inits) constRank.set(k, (t.dims ?? []).length);
  const varying = new Set([m.inputs[0]!.name]);
  for (const n of c.nodes) {
    const ins = (n.input ?? []).filter(Boolean);
    const op = n.op_type ?? '';
    if (!ins.some((x) => varying.has(x))) {
      // Computed from weights and constants only (a transposed tied weight): constant.
      if (op === 'Constant') {
        const t = attrOf(n, 'value')?.t;
        if (t) constRank.set(n.output![0]!, (t.dims ?? []).length);
      } else if ((op === 'Transpose' || op === 'Cast' || op === 'Identity') && constRank.has(ins[0]!)) {
        constRank.set(n.output![0]!, constRank.get(ins[0]!)!);
      }
      continue;
    }
    if ((n.domain ?? '') !== '') return { reject: `${op} (domain ${n.domain}) is not known to be position-wise` };
    const ok = ((): boolean => {
      if (UNARY.has(op)) return true;
      if (BINARY.has(op)) return ins.length === 2 && ins.every((x) => varying.has(x) || (constRank.get(x) ?? Infinity) <= 1);
      if (op === 'MatMul') return varying.has(ins[0]!) && !varying.has(ins[1]!) && constRank.get(ins[1]!) === 2;
      if (LAST_AXIS.has(op)) {
        const axis = Number(attrOf(n, 'axis')?.i ?? -1);
        return varying.has(ins[0]!) && ins.slice(1).every((x) => !varying.has(x)) && (axis === -1 || axis === rank - 1) && (op !== 'LayerNormalization' || (n.output ?? []).slice(1).every((o) => !o));
      }
      if (REDUCE.has(op)) {
        const axesIn = ins[1] ? inits.get(ins[1]) ?? constantTensor(c.nodes, ins[1]) : undefined;
        let axes: number[] | undefined = attrOf(n, 'axes')?.ints?.map(Number);
        if (!axes && axesIn) {
          try { axes = Array.from(tensorData(axesIn) as ArrayLike<number | bigint>, Number); } catch { axes = undefined; }
        }
        return Number(attrOf(n, 'keepdims')?.i ?? 1) === 1 && !!axes && axes.length === 1 && (axes[0] === -1 || axes[0] === rank - 1);
      }
      return false;
    })();
    if (!ok) return { reject: `${n.name ?? op} (${op}) is not position-wise` };
    for (const o of n.output ?? []) if (o) varying.add(o);
  }
  return { path, input: m.inputs[0]!.name, rank, outputs: new Map(m.outputs.map((o, i) => [o.name, i])) };
}

function constantTensor(nodes: readonly NodeProto[], name: string): TensorProto | undefined {
  const n = nodes.find((x) => x.op_type === 'Constant' && x.output?.[0] === name);
  return n ? attrOf(n, 'value')?.t : undefined;
}

/**
 * Removes the tail from a rewritten copy of the model graph (the instrumented model): its
 * outputs stop being graph outputs, the value its nodes read (the tail input as rewired by
 * the ports) becomes one, and the tail's nodes are dropped with the caller's prune. Returns
 * that value's name, or null (graph unchanged) when the tail's nodes cannot be found or read
 * more than one value from outside.
 */
export function cutTail(g: GraphProto, tail: TailModule, tailNodeNames: ReadonlySet<string>, inputInfo: { elemType: number; dims: (number | string)[] }): string | null {
  const nodes = (g.node ?? []).filter((n) => n.name && tailNodeNames.has(n.name));
  if (nodes.length !== tailNodeNames.size) return null;
  const produced = new Set(nodes.flatMap((n) => n.output ?? []));
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  const consts = new Set((g.node ?? []).filter((n) => n.op_type === 'Constant' && !(n.input ?? []).some(Boolean)).flatMap((n) => n.output ?? []));
  const outside = new Set<string>();
  for (const n of nodes) for (const x of n.input ?? []) if (x && !produced.has(x) && !inits.has(x) && !consts.has(x)) outside.add(x);
  if (outside.size !== 1) return null;
  const input = [...outside][0]!;
  g.output = (g.output ?? []).filter((o) => !tail.outputs.has(o.name!));
  if (!g.output.some((o) => o.name === input)) {
    g.output.push({
      name: input,
      type: { tensor_type: { elem_type: inputInfo.elemType, shape: { dim: inputInfo.dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } },
    });
  }
  return input;
}

/**
 * The tail inside the instrumented model, on a feed-selected range of positions: a copy of
 * the tail's nodes reading `Slice(input, start, end, axis)` (the same weights), its outputs
 * new graph outputs. A trace that reads the tail's outputs then gets them from the same run
 * of the instrumented model — one session, like the plain model — instead of a second
 * session run on the tail's module model (whose threads would start while the instrumented
 * session's were still spinning: ~30 ms per trace on GPT-2 small, 2 cores). Runs that read
 * no tail output feed an empty range, and the copy computes nothing.
 *
 * With {@link SelectedTail.extra}, the copy also takes rows given by the host: the range's
 * positions are flattened to `[1, …, rows, hidden]` and the fed rows appended on that axis,
 * so that one node of each kind (one `MatMul` over the weight: onnxruntime prepacks a weight
 * once per node that reads it) computes both. A module call of the tail (the logit lens's
 * `lm_head(ln_f(h))`) then runs on the instrumented model's own copy of the tail's weights
 * instead of a second session holding them again (src/fast/execute.ts `applyModule`).
 */
export interface SelectedTail {
  /** int64 `[1]` graph input: the first position of the range. */
  start: string;
  /** int64 `[1]` graph input: the end of the range (exclusive); equal to `start`: empty. */
  end: string;
  /** The axis of the tail input that is sliced (rank − 2: the positions of `[batch, sequence, hidden]`). */
  axis: number;
  /**
   * Tail output (graph output of the model) → the graph output holding it on the range. With
   * {@link extra}, laid out as `[1, …, 1, rows, …]` (rows on {@link axis}): the range's rows
   * (every leading index in order, then the positions) followed by the extra rows.
   */
  outputs: ReadonlyMap<string, string>;
  /**
   * float graph input `[1, …, 1, rows, hidden]` (rank of the tail input, rows on {@link axis}):
   * rows the copy computes after the range's, fed empty unless the host asks for them
   * ({@link gateFeed} in src/fast/ports.ts). Absent when the tail input's last dim is not a
   * known number.
   */
  extra?: { input: string; hidden: number };
}

/**
 * Adds {@link SelectedTail} to a rewritten copy of the model graph, before the tail's own
 * nodes are cut and pruned: `tailNodeNames` names them, `input` is the value they read from
 * outside ({@link cutTail}'s result), `outputTypes` the tail outputs' graph output types.
 * Null (graph unchanged) below opset 10 (Slice with input ranges) or when a node is missing.
 */
export function addSelectedTail(g: GraphProto, opset: number, tail: TailModule, tailNodeNames: ReadonlySet<string>, input: string, outputTypes: ReadonlyMap<string, ValueInfoProto>): SelectedTail | null {
  if (opset < 10 || tail.rank < 2) return null;
  const nodes = (g.node ?? []).filter((n) => n.name && tailNodeNames.has(n.name));
  if (nodes.length !== tailNodeNames.size || [...tail.outputs.keys()].some((o) => !outputTypes.get(o)?.type?.tensor_type)) return null;
  const em = new Emitter(g);
  em.prov = { module: tail.path, irOp: 'tail-range' };
  const axis = tail.rank - 2;
  const start = em.unique('nns.tail_range.start');
  const end = em.unique('nns.tail_range.end');
  const range = (name: string): ValueInfoProto => ({ name, type: { tensor_type: { elem_type: 7, shape: { dim: [{ dim_value: 1 }] } } } });
  g.input = [...(g.input ?? []), range(start), range(end)];
  const sliced = em.op('Slice', [input, start, end, em.ints([axis])]);
  // The host's rows beside the range's (see the interface comment): one node reads the weights either way.
  const hidden = inputDims(g, input)?.[tail.rank - 1];
  let extra: SelectedTail['extra'];
  let x = sliced;
  if (opset >= 5 && typeof hidden === 'number' && hidden > 0) {
    const name = em.unique('nns.tail_range.extra');
    const lead = Array<number>(tail.rank - 2).fill(1);
    g.input = [...(g.input ?? []), { name, type: { tensor_type: { elem_type: 1, shape: { dim: [...lead.map((d) => ({ dim_value: d })), { dim_param: `${name}_rows` }, { dim_value: hidden }] } } } }];
    const flat = em.op('Reshape', [sliced, em.ints([...lead, -1, hidden])]);
    x = em.op('Concat', [flat, name], { axis });
    extra = { input: name, hidden };
  }
  const renamed = new Map<string, string>([[input, x]]);
  for (const n of nodes) for (const o of n.output ?? []) if (o) renamed.set(o, em.unique(`${o}/nns.tail_range`));
  const copies: NodeProto[] = nodes.map((n) => ({
    ...n,
    name: em.unique(`${n.name}/nns.tail_range`),
    input: (n.input ?? []).map((x) => renamed.get(x) ?? x),
    output: (n.output ?? []).map((o) => (o ? renamed.get(o)! : o)),
  }));
  g.node = [...g.node!, ...copies];
  const outputs = new Map<string, string>();
  const added: ValueInfoProto[] = [];
  for (const o of tail.outputs.keys()) {
    const name = renamed.get(o)!;
    outputs.set(o, name);
    const t = outputTypes.get(o)!.type!.tensor_type!;
    const dims = (t.shape?.dim ?? []).map((d, i) => (i === axis ? { dim_param: `${start}_positions` } : extra && i < axis ? { dim_value: 1 } : d));
    added.push({ name, type: { tensor_type: { elem_type: t.elem_type, shape: { dim: dims } } } });
  }
  g.output = [...(g.output ?? []), ...added];
  return { start, end, axis, outputs, ...(extra ? { extra } : {}) };
}

/** The dims of graph value `name` as the graph declares them (its output, input or value_info entry). */
function inputDims(g: GraphProto, name: string): (number | string)[] | undefined {
  const vi = [...(g.output ?? []), ...(g.input ?? []), ...(g.value_info ?? [])].find((v) => v.name === name);
  return vi?.type?.tensor_type?.shape?.dim?.map((d) => (d.dim_value !== undefined && d.dim_value !== null && !d.dim_param ? Number(d.dim_value) : String(d.dim_param ?? '?')));
}
