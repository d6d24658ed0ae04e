/**
 * A key/value cache the compiler adds to a model exported without one, so that an
 * incremental sweep (src/fast/sweep.ts) on it runs each variant over the positions from the
 * patched one on only, as it does on a with-past export.
 *
 * Each block segment (src/fast/segments.ts) is rewritten into a *cached block*: it reads its
 * cut over the new positions only (`[batch, new, D]`), and for every attention in it, a past
 * key and a past value; it returns the next cut and the keys and values of the new positions
 * (with an empty past: of every position, which is what a sweep's pass over the clean prompts
 * keeps as the variants' pasts). Attention is found by structure, never by names: a
 * `Softmax` over the last axis of a value computed from the block's input, reached from a
 * `MatMul` of two such values (the scores: `Q @ Kᵀ`) through element-wise operators only, and
 * read (through element-wise operators) as the first operand of a `MatMul` whose second
 * operand is also such a value (the context: `P @ V`). The rewrite:
 *
 * - the scores become `Concat(Q·pastKᵀ, Q·Kᵀ, axis −1)` and the context
 *   `P[…, :past]·pastV + P[…, past:]·V` (the key axis of a MatMul's second operand is its last
 *   and second-to-last axis: no layout assumed). A past of batch 1 broadcasts over the rows: a
 *   sweep feeds one prompt's keys and values once for a whole batch of its variants, and no
 *   `[rows, …, past + new, …]` keys or values are ever materialized (a 12 × 128 grid of GPT-2
 *   small: peak PSS 1156 → 979 MB, 84 → 76 s, with `Concat(past, new)` keys and values before).
 *   The presents (graph outputs) are the new positions' keys and values `Kᵀ` and `V` — or,
 *   for keys or values repeated for grouped-query heads, the values before the repeat, which
 *   the block then applies to the past too (`repeatedPast`: a past `heads / kv_heads` smaller);
 * - every other operand of the operators between the two MatMuls (the scale, the causal and
 *   padding masks) is brought to the scores' `[…, new, past + new]`, from its symbolic shape
 *   (src/onnx/shapes.ts, with the cut's sequence `nns_new`, the pasts' `nns_past` and the
 *   attention mask, fed over every position, `nns_past + nns_new`): a query axis over every
 *   position keeps its last `new` rows (`Slice`); a key axis over the new positions only (a
 *   causal mask the block computes from its own input's shape, relative to the first new
 *   position) gets `past` columns on its left that change nothing (`0` for `Add`, `1` for
 *   `Mul`/`Div`, `true` for the condition of a `Where` selecting the scores, ...): the past
 *   positions all precede the new ones, so a causal mask allows them. Anything else (an
 *   operand of another size, an operator not listed, a block without attention) rejects.
 *
 * The shapes prove the rewrite well-formed, not that the block computes the same numbers
 * (a rotary embedding computed from the positions `0..new−1` of its input's length would
 * be silently shifted; an attention without a causal mask would pass every shape): the sweep
 * therefore checks each cached block against the clean run the first time it runs at a
 * sequence length — over every position, over the second half on the first half's keys and
 * values, and that the first half does not read the second (src/fast/sweep.ts
 * `addedCachePass`) — and on a mismatch takes the ordinary path for that model.
 *
 * A model with its own cache (a with-past export: `present = Concat(past, new)` read by the
 * attention) gets the same form: each block is first made the block of a model without a
 * cache ({@link withoutOwnCache}: the present replaced by `new`, the past by an empty one),
 * then rewritten as above, so its sweeps need neither the per-row stacked pasts nor the
 * export's `[rows, …, past + new, …]` concatenations.
 * @module
 */
import { AttributeType, DataType, defaultOpset, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/proto.js';
import { canonicalDim, inferShapes, infoOfType, typeOfInfo, type TypeShape } from '../onnx/shapes.js';
import { nodeReads, OnnxGraphView, topoOrder } from '../onnx/view.js';
import { intAttr } from '../onnx/attributes.js';
import type { BlockChain, CachePair, Segment } from './segments.js';
import { pruneGraph } from '../../passes/prune.js';

/** Bump when the cached blocks' layout changes (invalidates written files). */
export const ADDED_CACHE_FORMAT = 3;

/** The sequence length of a cached block's input (the new positions). */
export const NEW = 'nns_new';
/** The length of its pasts. */
export const PAST = 'nns_past';
/** Past + new (canonical text). */
export const TOTAL = canonicalDim(`${PAST} + ${NEW}`) as string;

/**
 * A cache pair of a cached block, with the past's shape (numbers, `batch` on axis 0, the past
 * length on the key axis). Unlike a model's own cache, `present` holds the new positions' keys
 * or values alone (with an empty past: every position's).
 */
export interface AddedPair extends CachePair {
  /** Dims of the past: numbers, except `'batch'` and `'past'` (the key axis). */
  shape: (number | 'batch' | 'past')[];
}

/** The cached blocks of a model (one per block segment). */
export interface AddedCache {
  /** Cached block i: input its cut over the new positions, outputs the next cut and the presents (`modelOutputs`). */
  blocks: Segment[];
  /** Every pair, block by block. */
  pairs: AddedPair[];
  /**
   * The last cached block computing only its presents (no attention, no MLP: the keys and
   * values of the positions it is given), as {@link BlockChain.lastCache} for a model's own cache.
   */
  lastCache?: Segment;
}

/**
 * Whether a graph input is fed over every position (past + new) on a cached run: the
 * attention mask; the model's other `[batch, sequence]` inputs (token and position ids) are
 * fed over the new positions (what a with-past export takes too).
 */
export function fedOverAll(name: string): boolean {
  return name === 'attention_mask';
}

const ELEMENTWISE_UNARY = new Set(['Cast', 'Identity', 'Neg', 'Tanh', 'Dropout']);
const ELEMENTWISE_BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Where', 'Max', 'Min']);
/** Operators that only move or repeat their first input's elements (their other inputs: shapes, axes). */
const LAYOUT = new Set(['Transpose', 'Reshape', 'Unsqueeze', 'Squeeze', 'Expand', 'Tile', 'Identity', 'Concat']);
/** Of those, the ones that repeat elements (a past before them is smaller). */
const REPEATS = new Set(['Expand', 'Tile', 'Concat']);

/** A past's dims from a key or value's over the new positions (`k`: its key axis): numbers but for the batch and the past; null when another dim is symbolic. */
function pastShapeOf(shape: readonly (number | string | null)[], k: number): AddedPair['shape'] | null {
  const out: AddedPair['shape'] = [];
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (i === k) out.push('past');
    else if (i === 0 && d === 'batch') out.push('batch');
    else if (typeof d === 'number') out.push(d);
    else return null;
  }
  return out;
}

/**
 * The cached blocks of block segments `segments` (the head excluded), or why there are none.
 * `own`: the model's own cache pairs (a with-past export, {@link BlockChain.cache}): each block
 * is first made the block of a model without a cache ({@link withoutOwnCache}), then given the
 * broadcast form like any other.
 */
export function addCache(segments: readonly Segment[], model: ModelProto, own: readonly CachePair[] = []): AddedCache | { reject: string } {
  const opset = defaultOpset(model) ?? 0;
  if (opset < 13) return { reject: `opset ${opset} < 13 (a cache is added on opset 13 and later)` };
  const inputInfo = new Map((model.graph?.input ?? []).map((v) => [v.name!, v]));
  const blocks: Segment[] = [];
  const pairs: AddedPair[] = [];
  for (const seg0 of segments) {
    const seg = own.length ? withoutOwnCache(seg0, own) : seg0;
    if ('reject' in seg) return { reject: `block ${seg0.index}: ${seg.reject}` };
    const r = cacheBlock(seg, opset, inputInfo);
    if ('reject' in r) return { reject: `block ${seg.index}: ${r.reject}` };
    blocks.push(r.segment);
    pairs.push(...r.pairs);
  }
  const lastCache = presentsOnly(blocks.at(-1)!);
  return { blocks, pairs, ...(lastCache ? { lastCache } : {}) };
}

/**
 * Block segment `seg` of a model with its own cache as it computes on an empty past, without
 * the cache: each `present = Concat(past, new)` (a pair of `own` whose present the segment
 * outputs) is replaced by `new` wherever it is read and is no output any more, and any other
 * reader of `past` (its shape: a past length, a key length) reads `new`'s zero-length slice
 * along the pair's axis, the empty past's value. With an empty past each of those is the
 * value it replaces, so the block computes what the model does over every position; the
 * past inputs are gone, and the block is then given a cache like the block of a model
 * exported without one (its keys and values in the layout its attention reads them, of
 * batch 1 over a batch of one prompt's variants: no `[rows, …, past + new, …]` tensor like
 * the export's own `Concat`). Rejects a segment whose present is not such a `Concat`.
 */
export function withoutOwnCache(seg: Segment, own: readonly CachePair[]): Segment | { reject: string } {
  const src = seg.proto.graph!;
  const nodes: NodeProto[] = (src.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] }));
  const g: GraphProto = { ...src, node: nodes, input: [...(src.input ?? [])], output: [...(src.output ?? [])], initializer: [...(src.initializer ?? [])] };
  const mine = own.filter((p) => seg.modelOutputs.includes(p.present));
  if (!mine.length) return seg;
  const renamed = new Map<string, string>(); // present → new
  const emptyOf = new Map<string, string>(); // past → new's zero-length slice
  const drop = new Set<NodeProto>();
  const inserts: NodeProto[] = [];
  for (const pair of mine) {
    const c = nodes.find((n) => (n.output ?? []).includes(pair.present));
    if (!c || c.op_type !== 'Concat' || (c.domain ?? '') !== '' || c.input!.length !== 2 || c.input![0] !== pair.past || !c.input![1]) {
      return { reject: `its cache output ${pair.present} is not Concat(${pair.past}, new)` };
    }
    const fresh = c.input![1]!;
    renamed.set(pair.present, fresh);
    drop.add(c);
    const empty = `${pair.past}/nns.empty`;
    const ints = (name: string, v: number): string => {
      inserts.push(addedNode('Constant', name, [], name, int64Value([v])));
      return name;
    };
    inserts.push(addedNode('Slice', empty, [fresh, ints(`${empty}/zero`, 0), ints(`${empty}/end`, 0), ints(`${empty}/axis`, pair.axis)], empty));
    emptyOf.set(pair.past, empty);
  }
  const kept = nodes.filter((n) => !drop.has(n));
  for (const n of kept) n.input = n.input!.map((v) => renamed.get(v) ?? emptyOf.get(v) ?? v);
  g.node = [...inserts, ...kept];
  g.output = g.output!.filter((o) => !renamed.has(o.name!));
  pruneGraph(g);
  const ordered = topoOrder(g);
  if (ordered.cyclic.length || ordered.order.length !== g.node.length) return { reject: 'the block without its cache has a cycle' };
  g.node = ordered.order;
  const read = new Set(g.node.flatMap((n) => nodeReads(n)));
  for (const o of g.output) read.add(o.name!);
  g.input = g.input!.filter((v) => v.name === seg.input || read.has(v.name!));
  return {
    index: seg.index, input: seg.input, ...(seg.next ? { next: seg.next } : {}),
    modelOutputs: seg.modelOutputs.filter((o) => !renamed.has(o)),
    graphInputs: seg.graphInputs.filter((v) => read.has(v)),
    proto: { ...seg.proto, graph: g },
  };
}

/** Cached block `seg` computing its presents alone (undefined when that still needs its next cut). */
function presentsOnly(seg: Segment): Segment | undefined {
  const src = seg.proto.graph!;
  const g: GraphProto = { ...src, node: [...(src.node ?? [])], output: (src.output ?? []).filter((o) => seg.modelOutputs.includes(o.name!)), initializer: [...(src.initializer ?? [])] };
  pruneGraph(g);
  if (seg.next && (g.node ?? []).some((n) => (n.output ?? []).includes(seg.next!))) return undefined;
  const read = new Set((g.node ?? []).flatMap((n) => nodeReads(n)));
  g.input = (src.input ?? []).filter((v) => read.has(v.name!));
  if (!read.has(seg.input)) return undefined;
  return { index: seg.index, input: seg.input, modelOutputs: seg.modelOutputs, graphInputs: seg.graphInputs.filter((v) => read.has(v)), proto: { ...seg.proto, graph: g } };
}

/** One attention of a block: its scores and context MatMuls and the element-wise nodes between them. */
interface Attention {
  scores: NodeProto;
  context: NodeProto;
  /** Nodes between them (scores → softmax → context), with the index of the input on that path. */
  path: { node: NodeProto; at: number }[];
}

function cacheBlock(seg: Segment, opset: number, inputInfo: ReadonlyMap<string, ValueInfoProto>): { segment: Segment; pairs: AddedPair[] } | { reject: string } {
  const src = seg.proto.graph!;
  const nodes: NodeProto[] = (src.node ?? []).map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] }));
  const g: GraphProto = { ...src, node: nodes, input: [...(src.input ?? [])], output: [...(src.output ?? [])] };
  const view = new OnnxGraphView(g);
  const x = seg.input;

  // Values computed from the block's input data (not only from its shape).
  const data = new Set<string>([x]);
  for (const n of nodes) {
    if (n.op_type === 'Shape' || n.op_type === 'Size') continue;
    if (nodeReads(n).some((v) => data.has(v))) for (const o of n.output ?? []) if (o) data.add(o);
  }

  // Seeds: the cut over the new positions, the graph inputs as a cached run feeds them.
  const seed = new Map<string, TypeShape>();
  const cutInfo = src.input!.find((v) => v.name === x)!;
  const width = typeOfInfo(cutInfo)?.shape?.[2];
  if (typeof width !== 'number') return { reject: 'the cut has no width' };
  seed.set(x, { elem: DataType.FLOAT, shape: ['batch', NEW, width] });
  for (const name of seg.graphInputs) {
    const t = typeOfInfo(inputInfo.get(name) ?? { name });
    if (!t?.shape) return { reject: `graph input ${name} has no shape` };
    seed.set(name, t.shape.length === 2 ? { elem: t.elem, shape: ['batch', fedOverAll(name) ? TOTAL : NEW] } : t);
  }

  // The attentions.
  const attentions: Attention[] = [];
  const readers = (v: string): NodeProto[] => view.users(v);
  for (const s of nodes) {
    if (s.op_type !== 'Softmax' || (s.domain ?? '') !== '' || !data.has(s.input![0]!)) continue;
    const path: Attention['path'] = [];
    let v = s.input![0]!;
    let scores: NodeProto | undefined;
    for (let step = 0; step < 32 && !scores; step++) {
      const p = view.producer(v);
      if (!p || (p.domain ?? '') !== '') return { reject: `no attention scores before ${s.name ?? 'a Softmax'}` };
      if (readers(v).length !== 1 || view.isOutput(v)) return { reject: `${v} (between attention scores and softmax) has other readers` };
      if (p.op_type === 'MatMul' && data.has(p.input![0]!) && data.has(p.input![1]!)) { scores = p; break; }
      const at = onPath(p, data);
      if (at === null) return { reject: `${p.op_type} ${p.name ?? ''} between attention scores and softmax` };
      path.unshift({ node: p, at });
      v = p.input![at]!;
    }
    if (!scores) return { reject: `no attention scores before ${s.name ?? 'a Softmax'}` };
    path.push({ node: s, at: 0 });
    v = s.output![0]!;
    let context: NodeProto | undefined;
    for (let step = 0; step < 32 && !context; step++) {
      const rs = readers(v);
      if (rs.length !== 1 || view.isOutput(v)) return { reject: `the attention weights ${v} have other readers` };
      const r = rs[0]!;
      if ((r.domain ?? '') !== '') return { reject: `${r.op_type} after a softmax` };
      if (r.op_type === 'MatMul' && r.input![0] === v && data.has(r.input![1]!)) { context = r; break; }
      const at = onPath(r, data);
      if (at === null || r.input![at] !== v) return { reject: `${r.op_type} ${r.name ?? ''} between softmax and attention context` };
      path.push({ node: r, at });
      v = r.output![0]!;
    }
    if (!context) return { reject: `no attention context after ${s.name ?? 'a Softmax'}` };
    attentions.push({ scores, context, path });
  }
  if (!attentions.length) return { reject: 'no attention (Softmax between two MatMuls of the block\'s values)' };

  // Shapes before the rewrite: keys and values over the new positions.
  const before = inferShapes(g, opset, { seed, valueInfo: false }).types;
  const pairs: AddedPair[] = [];
  const pastOf = new Map<string, AddedPair>(); // by the operand it extends (attentions may share keys)
  const newInputs: ValueInfoProto[] = [];
  const newOutputs: ValueInfoProto[] = [];
  const inserts: NodeProto[] = [];
  const add = (op: string, input: string[], output: string, attribute: NodeProto['attribute'] = []): void => {
    inserts.push(addedNode(op, `${output}/${op}`, input, output, attribute));
  };
  const intConst = (name: string, values: number[]): string => {
    add('Constant', [], name, int64Value(values));
    return name;
  };
  const fedAs = new Map<string, string>(); // operand → the value standing for its past (the past itself, or the repeat of it)
  const extend = (operand: string, axisFromEnd: 1 | 2): AddedPair | { reject: string } => {
    let pair = pastOf.get(operand);
    if (!pair) {
      const t = before.get(operand);
      const shape = t?.shape;
      if (!t || t.elem !== DataType.FLOAT || !shape || shape.length < 2) return { reject: `attention operand ${operand} has no float shape` };
      const k = shape.length - axisFromEnd;
      if (shape[k] !== NEW) return { reject: `attention operand ${operand}'s key axis is ${String(shape[k])}, not the block's sequence` };
      const pastShape = pastShapeOf(shape, k);
      if (!pastShape) return { reject: `attention operand ${operand} has dims ${JSON.stringify(shape)}` };
      const found = repeatedPast(operand, pastShape);
      const repeated = found && !pairs.some((p) => p.past === found.past) ? found : undefined; // (another operand repeated from it: its own past)
      if (repeated) {
        // Keys or values repeated (grouped-query heads): the past before the repeat, the repeat applied to it.
        pair = { past: repeated.past, present: repeated.base, axis: repeated.shape.indexOf('past') - repeated.shape.length, shape: repeated.shape };
        inserts.push(...repeated.nodes);
        fedAs.set(operand, repeated.out);
      } else {
        pair = { past: `${operand}/nns.past`, present: operand, axis: -axisFromEnd, shape: pastShape };
        fedAs.set(operand, pair.past);
      }
      pastOf.set(operand, pair);
      pairs.push(pair);
      newInputs.push(infoOfType(pair.past, { elem: DataType.FLOAT, shape: pair.shape.map((d) => (d === 'past' ? PAST : d)) }));
      newOutputs.push(infoOfType(pair.present, { elem: DataType.FLOAT, shape: pair.shape.map((d) => (d === 'past' ? NEW : d)) }));
    }
    return pair;
  };
  /**
   * When `operand` is a value repeated from a smaller one (grouped-query attention's key/value
   * heads: `Unsqueeze`, `Concat` of copies or `Expand`/`Tile`, `Reshape`, `Transpose`, each
   * reading the one before and otherwise only shapes), the earliest such value as the past's
   * layout and those nodes cloned onto the past: a past `heads / kv_heads` times smaller. Only
   * when the cloned nodes give the operand's shape over the past (inferred with a batch of the
   * past's own, so that a reshape by the block's batch, which is not the past's, rejects).
   */
  const repeatedPast = (operand: string, want: AddedPair['shape']): { base: string; past: string; shape: AddedPair['shape']; nodes: NodeProto[]; out: string } | undefined => {
    const chain: NodeProto[] = [];
    for (let v = operand, step = 0; step < 8; step++) {
      const p = view.producer(v);
      const ins = p?.input ?? [];
      if (!p || (p.domain ?? '') !== '' || !LAYOUT.has(p.op_type!) || !ins[0] || !data.has(ins[0])) break;
      if (p.op_type === 'Concat' ? ins.some((x) => x !== ins[0]) : ins.slice(1).some((x) => x && data.has(x))) break;
      chain.unshift(p);
      v = ins[0];
    }
    // From the first repeat back (over axes only inserted or removed: the value before them), then further back.
    let first = chain.findIndex((n) => REPEATS.has(n.op_type!));
    if (first < 0) return undefined;
    while (first > 0 && ['Unsqueeze', 'Squeeze', 'Identity'].includes(chain[first - 1]!.op_type!)) first--;
    for (let i = first; i >= 0; i--) {
      const sub = chain.slice(i);
      const base = sub[0]!.input![0]!;
      const shape = before.get(base)?.shape;
      const k = shape ? shape.indexOf(NEW) : -1;
      if (!shape || before.get(base)!.elem !== DataType.FLOAT || k < 0 || shape.lastIndexOf(NEW) !== k) continue;
      const baseShape = pastShapeOf(shape, k);
      if (!baseShape) continue;
      const past = `${base}/nns.past`;
      let prev = past;
      const clones = sub.map((n) => {
        const out = `${n.output![0]!}/nns.past`;
        const c: NodeProto = { ...n, name: `${n.name ?? out}/nns.past`, input: n.op_type === 'Concat' ? n.input!.map(() => prev) : [prev, ...n.input!.slice(1)], output: [out], ...provenance() };
        prev = out;
        return c;
      });
      const PB = 'nns_past_batch';
      const trial: GraphProto = { ...g, node: [...g.node!, ...clones], input: [...g.input!, infoOfType(past, { elem: DataType.FLOAT, shape: baseShape.map((d) => (d === 'past' ? PAST : d === 'batch' ? PB : d)) })] };
      const got = inferShapes(trial, opset, { seed, valueInfo: false }).types.get(prev)?.shape;
      const expect = want.map((d) => (d === 'past' ? PAST : d === 'batch' ? PB : d));
      if (got && got.length === expect.length && got.every((d, j) => d === expect[j])) return { base, past, shape: baseShape, nodes: clones, out: prev };
    }
    return undefined;
  };
  const scoresOf = new Map<Attention, string>();
  for (const a of attentions) {
    const kp = extend(a.scores.input![1]!, 1);
    if ('reject' in kp) return kp;
    const vp = extend(a.context.input![1]!, 2);
    if ('reject' in vp) return vp;
    // Scores: Q·pastKᵀ beside Q·Kᵀ (a past of batch 1 broadcasts over the rows).
    const sOut = a.scores.output![0]!;
    a.scores.output![0] = `${sOut}/nns.new`;
    add('MatMul', [a.scores.input![0]!, fedAs.get(a.scores.input![1]!)!], `${sOut}/nns.past`);
    add('Concat', [`${sOut}/nns.past`, `${sOut}/nns.new`], sOut, [{ name: 'axis', type: AttributeType.INT, i: -1 }]);
    scoresOf.set(a, sOut);
    // Context: the weights of the past positions times the past values, plus the new ones times the new.
    const cOut = a.context.output![0]!;
    const weights = a.context.input![0]!;
    const k = vp.shape.indexOf('past');
    const pastV = fedAs.get(a.context.input![1]!)!;
    add('Shape', [vp.past], `${cOut}/nns.past_length`, [{ name: 'start', type: AttributeType.INT, i: k }, { name: 'end', type: AttributeType.INT, i: k + 1 }]);
    add('Slice', [weights, intConst(`${cOut}/nns.zero`, [0]), `${cOut}/nns.past_length`, intConst(`${cOut}/nns.last_axis`, [-1])], `${cOut}/nns.past_weights`);
    add('Slice', [weights, `${cOut}/nns.past_length`, intConst(`${cOut}/nns.end`, [2 ** 53 - 1]), `${cOut}/nns.last_axis`], `${cOut}/nns.new_weights`);
    add('MatMul', [`${cOut}/nns.past_weights`, pastV], `${cOut}/nns.past`);
    a.context.input![0] = `${cOut}/nns.new_weights`;
    a.context.output![0] = `${cOut}/nns.new`;
    add('Add', [`${cOut}/nns.past`, `${cOut}/nns.new`], cOut);
  }
  nodes.push(...inserts);
  g.input!.push(...newInputs);
  g.output!.push(...newOutputs);
  for (const p of pairs) seed.set(p.past, typeOfInfo(newInputs.find((i) => i.name === p.past)!)!);
  g.node = topoOrder(g).order;

  // The other operands of the attention path, brought to [..., new, past + new].
  const after = inferShapes(g, opset, { seed, valueInfo: false }).types;
  const emit = new Emit(x, pairs[0]!);
  for (const a of attentions) {
    const scores = after.get(scoresOf.get(a)!)?.shape;
    if (!scores || scores.length < 2 || scores.at(-2) !== NEW || scores.at(-1) !== TOTAL) return { reject: `attention scores ${scoresOf.get(a)} are not [..., new, past + new] (${JSON.stringify(scores)})` };
    for (const { node, at } of a.path) {
      for (let i = 0; i < (node.input ?? []).length; i++) {
        const o = node.input![i]!;
        if (i === at || !o) continue;
        if (data.has(o)) return { reject: `${node.op_type} ${node.name ?? ''} combines the attention path with another value of the block` };
        if (node.op_type === 'Where' && at === 0) return { reject: 'a Where whose condition is the attention path' };
        const t = after.get(o);
        if (!t?.shape) return { reject: `operand ${o} of ${node.op_type} ${node.name ?? ''} has no shape` };
        const fixed = fix(emit, node, i, at, o, t);
        if (typeof fixed !== 'string') return fixed;
        node.input![i] = fixed;
      }
    }
  }
  g.node!.push(...emit.take());
  const ordered = topoOrder(g);
  if (ordered.cyclic.length || ordered.order.length !== g.node!.length) return { reject: 'the rewritten block has a cycle' };
  g.node = ordered.order;
  // Every value on the attention path now spans the new positions × past + new.
  const fixed = inferShapes(g, opset, { seed, valueInfo: false }).types;
  for (const a of attentions) {
    for (const { node } of a.path) {
      const s = fixed.get(node.output![0]!)?.shape;
      if (!s || s.length < 2 || s.at(-2) !== NEW || s.at(-1) !== TOTAL) return { reject: `attention value ${node.output![0]} is not [..., new, past + new] after the rewrite (${JSON.stringify(s)})` };
      if (node.op_type === 'Softmax') {
        const axis = intAttr(node, 'axis', -1);
        if ((axis < 0 ? axis + s.length : axis) !== s.length - 1) return { reject: `${node.name ?? 'a Softmax'} is not over the last axis` };
      }
    }
  }
  const outputs = (g.output ?? []).map((o) => o.name!);
  const graphInputs = [...seg.graphInputs, ...pairs.map((p) => p.past)];
  const proto: ModelProto = { ...seg.proto, graph: g };
  return {
    segment: { index: seg.index, input: x, ...(seg.next ? { next: seg.next } : {}), modelOutputs: outputs.filter((o) => o !== seg.next), graphInputs, proto },
    pairs,
  };
}

/** Index of the one input of an element-wise node computed from the block's data, or null. */
function onPath(n: NodeProto, data: ReadonlySet<string>): number | null {
  const ins = n.input ?? [];
  const dataIns = ins.map((v, i) => (v && data.has(v) ? i : -1)).filter((i) => i >= 0);
  if (ELEMENTWISE_UNARY.has(n.op_type!)) return dataIns.length === 1 && dataIns[0] === 0 ? 0 : null;
  if (!ELEMENTWISE_BINARY.has(n.op_type!)) return null;
  if (dataIns.length !== 1) return null;
  return dataIns[0]!;
}

/** What `node`'s operand `i` becomes so that it meets the attention path (at input `at`) over past + new positions. */
function fix(emit: Emit, node: NodeProto, i: number, at: number, o: string, t: TypeShape): string | { reject: string } {
  const shape = t.shape!;
  let out = o;
  if (shape.length >= 2) {
    const q = shape.at(-2);
    if (q === TOTAL) out = emit.lastRows(out);
    else if (q !== 1 && q !== NEW) return { reject: `operand ${o} of ${node.op_type} has query axis ${String(q)}` };
  }
  if (shape.length >= 1) {
    const k = shape.at(-1);
    if (k === NEW) {
      const neutral = neutralOf(node, i, at, t.elem);
      if (neutral === null || !([DataType.FLOAT, DataType.DOUBLE, DataType.BOOL] as number[]).includes(t.elem)) return { reject: `operand ${o} of ${node.op_type} over the new positions only has no neutral value` };
      out = emit.padPast(out, t.elem, neutral);
    } else if (k !== 1 && k !== TOTAL) return { reject: `operand ${o} of ${node.op_type} has key axis ${String(k)}` };
  }
  return out;
}

/** The value of operand `i` of `node` that leaves its path input `at` unchanged (null: none). */
function neutralOf(node: NodeProto, i: number, at: number, elem: number): number | boolean | null {
  const op = node.op_type!;
  if (op === 'Where') return i === 0 ? (elem === DataType.BOOL ? at === 1 : null) : 0;
  if (elem === DataType.BOOL) return null;
  if (op === 'Add') return 0;
  if (op === 'Sub') return i === 1 ? 0 : null;
  if (op === 'Mul') return 1;
  if (op === 'Div') return i === 1 ? 1 : null;
  if (op === 'Max') return -Infinity;
  if (op === 'Min') return Infinity;
  return null;
}

const provenance = (): Pick<NodeProto, 'metadata_props'> => ({ metadata_props: [{ key: 'onnsight.op', value: 'added-cache' }] });

/** A node of the rewrite, marked as the added cache's (`onnsight.op` metadata). */
function addedNode(op: string, name: string, input: string[], output: string, attribute: NodeProto['attribute'] = []): NodeProto {
  return { op_type: op, name, input, output: [output], attribute, ...provenance() };
}

/** The `value` attribute of a `Constant` holding the 1-D int64 tensor `values`. */
function int64Value(values: number[]): NodeProto['attribute'] {
  return [{ name: 'value', type: AttributeType.TENSOR, t: { dims: [values.length], data_type: DataType.INT64, int64_data: values } }];
}

/** Emits the nodes of the operand fixes (inserted before the first node that reads them). */
class Emit {
  private readonly pending: NodeProto[] = [];
  private shared?: { negNew: string; past: string };
  private count = 0;

  constructor(private readonly x: string, private readonly pair: AddedPair) {}

  private name(what: string): string {
    return `${this.x}/nns.added/${what}_${this.count++}`;
  }

  private node(op: string, input: string[], attrs: NodeProto['attribute'] = []): string {
    const out = this.name(op);
    this.pending.push(addedNode(op, out, input, out, attrs));
    return out;
  }

  private constInt(values: number[]): string {
    return this.node('Constant', [], int64Value(values));
  }

  /** `-new` and `past` as 1-D int64 tensors (the new positions from the cut's shape, the past from the first pair's). */
  private lengths(): { negNew: string; past: string } {
    if (!this.shared) {
      const seq = this.node('Shape', [this.x], [{ name: 'start', type: AttributeType.INT, i: 1 }, { name: 'end', type: AttributeType.INT, i: 2 }]);
      const negNew = this.node('Neg', [seq]);
      const k = this.pair.shape.indexOf('past');
      const past = this.node('Shape', [this.pair.past], [{ name: 'start', type: AttributeType.INT, i: k }, { name: 'end', type: AttributeType.INT, i: k + 1 }]);
      this.shared = { negNew, past };
    }
    return this.shared;
  }

  /** The last `new` rows (axis −2) of `v`. */
  lastRows(v: string): string {
    const { negNew } = this.lengths();
    return this.node('Slice', [v, negNew, this.constInt([2 ** 53 - 1]), this.constInt([-2])]);
  }

  /** `past` columns of `neutral` on the left of `v` (axis −1). */
  padPast(v: string, elem: number, neutral: number | boolean): string {
    const { past } = this.lengths();
    const shp = this.node('Shape', [v]);
    const lead = this.node('Slice', [shp, this.constInt([0]), this.constInt([-1])]);
    const padShape = this.node('Concat', [lead, past], [{ name: 'axis', type: AttributeType.INT, i: 0 }]);
    const value: TensorProto = elem === DataType.BOOL
      ? { dims: [1], data_type: DataType.BOOL, int32_data: [neutral ? 1 : 0] }
      : elem === DataType.DOUBLE ? { dims: [1], data_type: DataType.DOUBLE, double_data: [Number(neutral)] }
        : { dims: [1], data_type: DataType.FLOAT, float_data: [Number(neutral)] };
    const fill = this.node('ConstantOfShape', [padShape], [{ name: 'value', type: AttributeType.TENSOR, t: value }]);
    return this.node('Concat', [fill, v], [{ name: 'axis', type: AttributeType.INT, i: -1 }]);
  }

  /** The nodes emitted (placed by a topological sort). */
  take(): NodeProto[] {
    return this.pending.splice(0);
  }
}

