/**
 * Block-range sub-models: the model split at its block boundaries, so that a variant of a
 * trace that changes block k's output can run from block k+1 on, on the clean value of
 * that boundary with the change applied, instead of from the embeddings.
 *
 * The *cuts* are found from the module tree, never from names: the model's block list is the
 * longest list of modules whose last path segment is an integer (`transformer.h.N`,
 * `model.layers.N`) and that sit in no other block; cut `c_i` is block i's first input and
 * `c_{i+1}` its first output, which must be block i+1's first input (the residual stream),
 * of shape `[batch, sequence, D]`.
 *
 * Segment i (0 ≤ i < L) is the sub-graph that computes `c_{i+1}` from `c_i`: every node an
 * output of the segment needs, walking back from its outputs and stopping at `c_i`, graph
 * inputs and initializers. Its outputs are `c_{i+1}` and the graph outputs whose deepest cut
 * is `c_i` (a with-past model's `present.i.*`); its inputs are `c_i` and whatever graph inputs
 * its nodes read (the attention mask, a layer's `past_key_values.i.*`, ...: side values such
 * as the additive mask are recomputed in every segment, which is cheap). Segment L (the
 * *head*) computes the remaining graph outputs (`logits`) from `c_L`. A segment whose walk
 * reaches another cut's producer (a path around the cut) makes the split invalid: the
 * model then has no segments and traces take the ordinary path.
 *
 * Key/value caches are recognized by structure too: a graph output produced by a `Concat`
 * whose first input is a graph input (`present = Concat(past, new)` along the past axis).
 *
 * Segment models are written next to the weights with `writeVariant` (initializers are the
 * model's own `TensorProto`s: external data stays a reference to the one weights file) and
 * run in sessions without prepacking and without onnxruntime's memory arena, pinned during a
 * sweep and released after it (each weight lives in exactly one segment, and the sessions map
 * the weights file, so all segments together hold the weights once). Without the arena, a
 * run's activations are freed when it ends: with it, each of the L + 1 sessions kept a buffer
 * pool sized for its largest batch (GPT-2 small, 96-variant sweep: peak PSS 3428 MB with
 * arenas, 1570 MB without; 1952 vs 1218 MB with the smaller batches of `sweepBudget`).
 * Their intra-op threads do not spin between parallel sections: a sweep runs hundreds of
 * short runs back to back, and spinning threads cost it up to a third of its CPU time on 2
 * cores (GPT-2 small, 96-variant sweep: 15.3–16.3 s CPU without vs 19.9–23.2 s with, paired,
 * load 13; the 12 block segments chained over one row: 370 vs 834 ms CPU).
 * @module
 */
import crypto from 'node:crypto';
import type { OrtSession } from '../../backends/ort.js';
import { weightsDirOf, type ModelContext } from '../compile.js';
import { writeVariant } from '../model/load.js';
import type { ModuleTree } from '../model/types.js';
import { AttributeType, DataType, defaultOpset, type GraphProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/proto.js';
import { nodeReads, OnnxGraphView } from '../onnx/view.js';
import { sinkSlices } from '../../passes/sink-slices.js';
import type { TailModule } from './tail.js';
import { ADDED_CACHE_FORMAT, addCache, type AddedCache } from './added-cache.js';

/** Bump when the segment models' layout changes (invalidates written files). */
export const SEGMENT_FORMAT = 1;

/** One segment of the split model. */
export interface Segment {
  /** 0..L-1: block i; L: the head (the outputs after the last block). */
  index: number;
  /** The cut this segment starts from (a graph input of the segment model). */
  input: string;
  /** The next cut (undefined for the head). */
  next?: string;
  /** Graph outputs of the whole model this segment computes. */
  modelOutputs: string[];
  /** Graph inputs of the whole model the segment reads (besides its cut). */
  graphInputs: string[];
  /** The segment model. */
  proto: ModelProto;
}

/** A key/value cache pair: graph input `past` and graph output `present = Concat(past, new)` along `axis`. */
export interface CachePair {
  past: string;
  present: string;
  axis: number;
}

/** The model split at its block boundaries. */
export interface BlockChain {
  /** Cut values `c_0..c_L` (block i reads `c_i` and produces `c_{i+1}`). */
  cuts: string[];
  /** Block module paths in order. */
  blocks: string[];
  /** Width of the residual stream (last dim of the cuts). */
  width: number;
  /** Segments 0..L (L = the head). */
  segments: Segment[];
  /** Key/value cache pairs (empty for a model without a cache). */
  cache: CachePair[];
  /**
   * Whether the head acts on each position independently (its outputs at a set of positions
   * are the head applied to the cut at those positions), shown by sinking a position
   * selection of every head output all the way to the head's input (passes/sink-slices.ts).
   */
  headPositionwise: boolean;
  /**
   * With a tail module (src/fast/tail.ts, `lm_head`) given to {@link splitAtBlocks}: the head
   * up to the tail's input (`modelOutputs` = that one value), so that a sweep runs the tail
   * on its own (prepacked) module model instead of on the weights file's pages of the whole
   * head when that module's session is open already (src/fast/execute.ts): the tail's weights
   * are then held once, by its module session. Only when it is position-wise exactly when the
   * head is.
   */
  tailHead?: { segment: Segment; tail: TailModule };
  /**
   * With a key/value cache: the last block's segment computing only its cache outputs (the
   * keys and values of every position it is given) from `c_{L-1}`, without `c_L`. A sweep
   * whose head reads positions ≥ q only runs it over the batch's positions, then the whole
   * last block over positions ≥ q alone on those keys and values as its past (a quarter of a
   * block's work for the other positions instead of all of it).
   */
  lastCache?: Segment;
}

const isIndex = (seg: string | undefined): boolean => seg !== undefined && /^\d+$/.test(seg);

/** The model's block list (see the module comment), in index order; empty when there is none. */
export function blockList(tree: ModuleTree): string[] {
  const lists = new Map<string, string[]>();
  for (const m of tree.modules.values()) {
    const segs = m.path.split('.');
    if (!isIndex(segs.at(-1)) || segs.slice(0, -1).some(isIndex)) continue;
    const list = segs.slice(0, -1).join('.');
    lists.set(list, [...(lists.get(list) ?? []), m.path]);
  }
  const best = [...lists.values()].sort((a, b) => b.length - a.length)[0] ?? [];
  return best.sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()));
}

/** The model split at its block boundaries, or why it cannot be. */
export function splitAtBlocks(mc: Pick<ModelContext, 'tree' | 'loaded'>, opts: { tail?: TailModule } = {}): BlockChain | { reject: string } {
  const tree = mc.tree;
  const blocks = blockList(tree);
  if (blocks.length < 2) return { reject: 'the model has no block list of two or more blocks' };
  const cuts: string[] = [];
  let width = 0;
  for (let i = 0; i < blocks.length; i++) {
    const m = tree.modules.get(blocks[i]!)!;
    const inp = m.inputs[0];
    const out = m.outputs[0];
    if (!inp || !out) return { reject: `${blocks[i]} has no input or output` };
    if (i === 0) cuts.push(inp.name);
    else if (cuts[i] !== inp.name) return { reject: `${blocks[i]}'s first input is not ${blocks[i - 1]}'s first output` };
    cuts.push(out.name);
    for (const b of [inp, out]) {
      const s = b.sig?.shape;
      if (!s || b.sig!.dtype !== 'float32' || s.length !== 3 || s[0] !== 'batch' || s[1] !== 'sequence' || typeof s[2] !== 'number') {
        return { reject: `${blocks[i]}'s boundary ${b.name} is not float32 [batch, sequence, D]` };
      }
      width = s[2];
    }
  }
  if (new Set(cuts).size !== cuts.length) return { reject: 'two blocks share a boundary value' };
  const g = mc.loaded.proto.graph!;
  const view = new OnnxGraphView(g);
  const graphInputs = new Map((g.input ?? []).map((v) => [v.name!, v]));
  const inits = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  for (const c of cuts) if (graphInputs.has(c) || !view.producer(c)) return { reject: `boundary ${c} is not computed by the graph` };

  // Deepest cut each value depends on (-1: none), in graph order (ONNX node lists are topological).
  const cutIndex = new Map(cuts.map((c, i) => [c, i]));
  const depth = new Map<string, number>();
  for (const n of g.node ?? []) {
    let d = -1;
    for (const x of nodeReads(n)) d = Math.max(d, depth.get(x) ?? -1);
    for (const o of n.output ?? []) if (o) depth.set(o, cutIndex.get(o) ?? d);
  }
  const L = blocks.length;
  const outputs = (g.output ?? []).map((o) => o.name!);
  const segments: Segment[] = [];
  const cache: CachePair[] = [];
  for (const o of outputs) {
    const p = view.producer(o);
    const first = p?.input?.[0];
    if (p?.op_type === 'Concat' && !(p.domain ?? '') && first && graphInputs.has(first) && !inits.has(first)) {
      const axis = Number((p.attribute ?? []).find((a) => a.name === 'axis')?.i ?? 0);
      cache.push({ past: first, present: o, axis });
    }
  }
  const segmentOf = (i: number, modelOutputs: string[], withNext = true): Segment | { reject: string } => {
    const input = cuts[i]!;
    const next = i < L && withNext ? cuts[i + 1] : undefined;
    const wanted = [...(next ? [next] : []), ...modelOutputs];
    if (wanted.length === 0) return { reject: `segment ${i} computes nothing` };
    const taken = new Set<NodeProto>();
    const readInputs = new Set<string>();
    const readInits = new Map<string, TensorProto>();
    const stack = [...wanted];
    const seen = new Set<string>([input]);
    while (stack.length) {
      const v = stack.pop()!;
      if (seen.has(v)) continue;
      seen.add(v);
      if (graphInputs.has(v) && !inits.has(v)) { readInputs.add(v); continue; }
      const t = inits.get(v);
      if (t) { readInits.set(v, t); continue; }
      const n = view.producer(v);
      if (!n) return { reject: `segment ${i} reads ${v}, which nothing produces` };
      if (taken.has(n)) continue;
      if ((n.output ?? []).some((o) => cutIndex.has(o) && o !== next)) return { reject: `segment ${i} needs ${blocks[Math.max(0, i - 1)]} again (a path around boundary ${input})` };
      taken.add(n);
      for (const x of nodeReads(n)) stack.push(x);
    }
    if (i === L && ![...taken].some((n) => nodeReads(n).includes(input))) return { reject: 'the outputs do not depend on the last block' };
    const nodes = (g.node ?? []).filter((n) => taken.has(n));
    const vi = (name: string): ValueInfoProto => {
      const orig = graphInputs.get(name) ?? (g.output ?? []).find((o) => o.name === name);
      return orig ?? { name, type: { tensor_type: { elem_type: DataType.FLOAT } } };
    };
    const cutInfo = (name: string): ValueInfoProto => ({
      name, type: { tensor_type: { elem_type: DataType.FLOAT, shape: { dim: [{ dim_param: 'batch' }, { dim_param: 'sequence' }, { dim_value: width }] } } },
    });
    const src = mc.loaded.proto;
    const proto: ModelProto = {
      ir_version: src.ir_version,
      opset_import: src.opset_import,
      producer_name: 'onnsight.segment',
      ...(src.functions?.length ? { functions: src.functions } : {}),
      graph: {
        name: `segment ${i}`,
        node: nodes,
        initializer: [...readInits.values()],
        input: [cutInfo(input), ...[...readInputs].map(vi)],
        output: [...(next ? [cutInfo(next)] : []), ...modelOutputs.map(vi)],
      },
    };
    return { index: i, input, ...(next ? { next } : {}), modelOutputs, graphInputs: [...readInputs], proto };
  };
  for (let i = 0; i <= L; i++) {
    const seg = segmentOf(i, outputs.filter((o) => (depth.get(o) ?? -1) === i && o !== cuts[i + 1]));
    if ('reject' in seg) return seg;
    segments.push(seg);
  }
  const head = segments[L]!;
  const headPositionwise = positionwise(head, mc.loaded.proto);
  let tailHead: BlockChain['tailHead'];
  if (opts.tail && [...opts.tail.outputs.keys()].every((o) => head.modelOutputs.includes(o))) {
    const seg = segmentOf(L, [opts.tail.input]);
    if (!('reject' in seg) && positionwise(seg, mc.loaded.proto) === headPositionwise) tailHead = { segment: seg, tail: opts.tail };
  }
  // The last block's cache outputs alone (its keys and values: no attention, no MLP).
  let lastCache: Segment | undefined;
  const presents = new Set(cache.map((c) => c.present));
  const lastOuts = segments[L - 1]!.modelOutputs;
  if (lastOuts.length && lastOuts.every((o) => presents.has(o))) {
    const seg = segmentOf(L - 1, lastOuts, false);
    if (!('reject' in seg)) lastCache = seg;
  }
  return { cuts, blocks, width, segments, cache, headPositionwise, ...(tailHead ? { tailHead } : {}), ...(lastCache ? { lastCache } : {}) };
}

/** A `Constant` node named `name` holding int64 `indices` (1-D), its output of the same name. */
function indicesNode(name: string, indices: readonly number[]): NodeProto {
  return { op_type: 'Constant', name, output: [name], attribute: [{ name: 'value', type: AttributeType.TENSOR, t: { dims: [indices.length], data_type: DataType.INT64, int64_data: [...indices] } }] };
}

/** A `Gather` of `data` at the int64 `indices` along `axis`, writing (and named) `out`. */
function gatherNode(out: string, data: string, indices: string, axis: number): NodeProto {
  return { op_type: 'Gather', name: out, input: [data, indices], output: [out], attribute: [{ name: 'axis', type: AttributeType.INT, i: axis }] };
}

/**
 * Whether the head segment acts on each position independently: a `Gather` of position 0
 * on every output, sunk by passes/sink-slices.ts, must end up reading the head's input
 * directly with nothing else reading it, and the head must read no other graph input.
 */
function positionwise(head: Segment, model: ModelProto): boolean {
  if (head.graphInputs.length) return false;
  const g0 = head.proto.graph!;
  const g: GraphProto = { ...g0, node: g0.node!.map((n) => ({ ...n, input: [...(n.input ?? [])], output: [...(n.output ?? [])] })), output: [] };
  const ranks = new Map<string, number>([[head.input, 3]]);
  const idx = `${head.input}/nns.positionwise.index`;
  g.node!.push(indicesNode(idx, [0]));
  for (const o of head.modelOutputs) {
    const out = `${o}/nns.positionwise`;
    g.node!.push(gatherNode(out, o, idx, 1));
    g.output!.push({ name: out });
    ranks.set(o, 3);
  }
  try {
    sinkSlices(g, defaultOpset(model) ?? 0, { ranks });
  } catch {
    return false;
  }
  const live = new OnnxGraphView(g).live();
  const readers = [...live].filter((n) => nodeReads(n).includes(head.input));
  return readers.length > 0 && readers.every((n) => n.op_type === 'Gather' && n.input?.[1] === idx);
}

/**
 * The head computing only some columns (last-axis items) of its outputs: `cols` maps a head
 * output to the columns a sweep's reads index (one token's logit each), the segment's outputs
 * are those outputs narrowed to them, in that order. A `Gather` of the columns on each output,
 * moved onto the unembedding's weight by passes/sink-slices.ts (rule 4, columns: the selected
 * columns become a small constant read from the weights file now), so the head's product
 * computes those columns only and its session never maps the rest of the weight (GPT-2 small's
 * `lm_head`: 154 MB of the weights file, resident through a whole patching grid otherwise).
 * Undefined when rule 4 does not apply to every output (no constant 2-D weight under it, more
 * than an eighth of the columns): the whole head is no worse then.
 */
export function columnsHead(head: Segment, cols: ReadonlyMap<string, readonly number[]>, model: ModelProto, weightsDir: string): Segment | undefined {
  if (![...cols.keys()].every((o) => head.modelOutputs.includes(o))) return undefined;
  const g0 = head.proto.graph!;
  const full = (o: string): string => (cols.has(o) ? `${o}/nns.full` : o);
  const g: GraphProto = {
    ...g0,
    node: g0.node!.map((n) => ({ ...n, input: (n.input ?? []).map(full), output: (n.output ?? []).map(full) })),
    initializer: [...(g0.initializer ?? [])],
    output: [],
  };
  const ranks = new Map<string, number>([[head.input, 3]]);
  for (const [o, c] of cols) {
    const idx = `${o}/nns.columns.index`;
    g.node!.push(indicesNode(idx, c), { ...gatherNode(o, full(o), idx, 2), name: `${o}/nns.columns` });
    ranks.set(full(o), 3);
    const orig = (g0.output ?? []).find((v) => v.name === o);
    g.output!.push({ name: o, type: { tensor_type: { elem_type: orig?.type?.tensor_type?.elem_type ?? DataType.FLOAT } } });
  }
  let moved: number;
  try {
    moved = sinkSlices(g, defaultOpset(model) ?? 0, { ranks, weightsDir }).columns;
  } catch {
    return undefined;
  }
  if (moved < cols.size) return undefined;
  const live = new OnnxGraphView(g).live();
  g.node = g.node!.filter((n) => live.has(n));
  const read = new Set(g.node.flatMap(nodeReads));
  g.initializer = g.initializer!.filter((t) => read.has(t.name!));
  const modelOutputs = [...cols.keys()];
  return { ...head, modelOutputs, graphInputs: head.graphInputs.filter((x) => read.has(x)), proto: { ...head.proto, graph: { ...g, input: (g.input ?? []).filter((v) => v.name === head.input || read.has(v.name!)) } } };
}

/** A segment model of {@link Segments}: a segment index, the head up to the tail, the last block's cache outputs, a block with an added cache, the last of those's cache outputs, or a head of some columns ({@link Segments.columns}). */
export type SegmentKey = number | 'tail' | 'cache' | `added${number}` | 'addedcache' | `cols${string}`;

/** The segment models of one model: written on first use, one pinned session each (no prepacking). */
export class Segments {
  private readonly paths = new Map<SegmentKey, string>();
  /** Heads of some columns ({@link columnsHead}) by key; null: rule 4 did not apply. */
  private readonly heads = new Map<string, Segment | null>();
  private addedOrWhy?: AddedCache | { reject: string };
  /** The added cache's blocks checked against the clean run, as `<sequence length>/<block index>`. */
  readonly addedChecked = new Set<string>();

  constructor(private readonly mc: ModelContext, readonly chain: BlockChain) {}

  /**
   * The blocks in the broadcast form of a key/value cache (src/fast/added-cache.ts), or why
   * not (also after a failed check against the clean run: {@link dropAdded}): a cache added to
   * the blocks of a model without one, and for a model with its own cache (a with-past export)
   * its blocks rewritten to read their pasts in that form instead of the export's
   * `Concat(past, new)` (without it, a sweep stacks the clean past per variant row: the
   * model's own cache as it is).
   */
  added(): AddedCache | { reject: string } {
    this.addedOrWhy ??= addCache(this.chain.segments.slice(0, this.chain.blocks.length), this.mc.loaded.proto, this.chain.cache);
    return this.addedOrWhy;
  }

  /**
   * The head computing only the columns `cols` of its outputs ({@link columnsHead}): its key and
   * segment, or undefined when that head cannot be made. One per column set, made once.
   */
  columns(cols: ReadonlyMap<string, readonly number[]>): { key: SegmentKey; segment: Segment } | undefined {
    const key: SegmentKey = `cols${crypto.createHash('sha256').update(JSON.stringify([...cols])).digest('hex').slice(0, 16)}`;
    let seg = this.heads.get(key);
    if (seg === undefined) {
      seg = columnsHead(this.chain.segments[this.chain.blocks.length]!, cols, this.mc.loaded.proto, weightsDirOf(this.mc)) ?? null;
      this.heads.set(key, seg);
    }
    return seg ? { key, segment: seg } : undefined;
  }

  /** Gives up the added cache (its blocks did not compute what the model does). */
  dropAdded(why: string): void {
    this.addedOrWhy = { reject: why };
  }

  /**
   * The written model of segment `i` (`'tail'`: the head up to the tail's input,
   * {@link BlockChain.tailHead}; `'cache'`: the last block's cache outputs, {@link BlockChain.lastCache};
   * `'added<i>'`: block i with the cache added to it, {@link Segments.added}; `'addedcache'`: the
   * last of those's cache outputs, {@link AddedCache.lastCache}).
   */
  graphPath(i: SegmentKey): string {
    let p = this.paths.get(i);
    if (!p) {
      const added = typeof i === 'string' && i.startsWith('added') ? this.added() : undefined;
      if (added && 'reject' in added) throw new Error(`internal: no added cache (${added.reject})`);
      const seg = added
        ? (i === 'addedcache' ? added.lastCache! : added.blocks[Number((i as string).slice(5))]!)
        : typeof i === 'string' && i.startsWith('cols') ? this.heads.get(i)!
        : i === 'tail' ? this.chain.tailHead!.segment : i === 'cache' ? this.chain.lastCache! : this.chain.segments[i as number]!;
      const key = crypto.createHash('sha256').update(`${this.mc.loaded.id}|segment|${i}|${seg.modelOutputs.join(',')}|${SEGMENT_FORMAT}${added ? `|${ADDED_CACHE_FORMAT}` : ''}`).digest('hex').slice(0, 24);
      p = writeVariant(this.mc.loaded, seg.proto, `segment-${key}`);
      this.paths.set(i, p);
    }
    return p;
  }

  /**
   * Releases the segment sessions (after each sweep: together they hold about one more copy
   * of the weights, which should not stay alive beside the instrumented model's).
   */
  async release(): Promise<void> {
    await Promise.all([...this.paths.values()].map((p) => this.mc.backend.release(p)));
  }

  /** The session of segment `i` (or of the head up to the tail, or of the last block's cache outputs). */
  session(i: SegmentKey): Promise<OrtSession> {
    const externalDataDir = this.mc.loaded.externalDataDir;
    return this.mc.backend.session(this.graphPath(i), { prepack: false, pinned: true, arena: false, spinning: false, ...(externalDataDir ? { externalDataDir } : {}) });
  }
}
