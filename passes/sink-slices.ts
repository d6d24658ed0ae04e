/**
 * Sinks position selections below position-wise computations: `Slice(P(x, w))` →
 * `P(Slice(x), w)`, so a save of `logits[:, -1, :]` computes the lm_head (and the final
 * norm) on one position instead of all of them. Runs before `prune` (after fetch-saves has
 * dropped the model outputs no save needs), repeated to a fixed point.
 *
 * A *selection* S is a `Gather` (scalar or 1-D constant indices) or a `Slice` (constant
 * starts/ends/axes/steps, opset ≥ 10 input form) whose axes, normalized with the known rank,
 * are not the last one (except in rule 4). Four rewrites (1–3 exact):
 *
 * 1. **sink** — S's data input `y` is produced by a position-wise node P (below) whose output
 *    has S as its only reader and is not a graph output: S is re-emitted on P's data input
 *    and P after it, producing S's output name (readers of S are untouched).
 * 2. **swap** — `S2(Slice1(x))` with every axis of S2 above every axis of Slice1 and Slice1's
 *    output read only by S2 becomes `Slice1(S2(x))` (selections on different axes commute;
 *    Slice keeps the rank, so S2's axes are the same; Slice1's negative axes are normalized
 *    when S2 drops an axis). This puts the position selection of each invoke (`[:, -1, :]`)
 *    above its row slice (`rows r0:r1`).
 * 3. **merge** — identical selections (same op, attributes and parameter inputs) of one value
 *    become one; the readers of the others read the kept one. After 2 and 3, a batched sweep's
 *    N per-invoke `logits[r:r+1][:, -1, :]` read the logits through ONE Gather, which sinks.
 * 4. **columns** — a selection of the last axis only (`logits[0, -1, token]`, after the
 *    position selection sank) of `MatMul(x, W)` with a constant 2-D `W` whose output S alone
 *    (or the `Transpose` of one) whose output S alone reads becomes `MatMul(x, C)`, C a new
 *    constant holding the selected columns of `W` (at most an eighth of them), read from the
 *    weights at compile time: the product computes those columns only, and the session never
 *    maps the rest of the weight. The same products, summed by another kernel (within a few
 *    ulp: test/passes/sink-slices.test.ts).
 *
 * Position-wise P (r = rank of P's output = rank of its data operand, a = every selected axis):
 * - unary elementwise (Relu, Gelu, Tanh, Sigmoid, Erf, Sqrt, Cast, Neg, Exp, Log, Abs,
 *   Identity, Reciprocal, Softplus, Softsign, Elu, LeakyRelu, Selu, HardSigmoid, Floor, Ceil,
 *   Round, Sign, Not; Gelu also in com.microsoft): any a.
 * - Add/Sub/Mul/Div/Pow with exactly one constant operand (initializer or Constant) of known
 *   dims and rank ≤ r: its axis aligned with a must be absent, or of size 1 when S keeps
 *   the rank (Slice, 1-D Gather). A scalar Gather needs it absent (the rank drops).
 * - MatMul with a constant 2-D right operand and r ≥ 2: a ≤ r − 2 (rows of x @ W are rows of x).
 * - Gemm (2-D) with transA = 0: a = 0, rank-keeping S only, C absent or not varying along 0.
 * - LayerNormalization with normalized axis k: a < k; Mean/InvStdDev outputs unused.
 * - Softmax/LogSoftmax on the last axis: a < r − 1.
 * Anything else (attention's MatMul of two activations, Reshape, Transpose, ...) stops it.
 * Moved nodes are emitted as `/<module>/nns.sink/<Op>` with provenance `onnsight.op = sink`.
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { stableStringify } from '../ir/key.js';
import type { Pass } from './pass.js';
import type { GraphProto, NodeProto, TensorProto } from '../src/onnx/proto.js';
import { AttributeType, DataType, dataTypeBits, defaultOpset } from '../src/onnx/proto.js';
import { attrOf } from '../src/onnx/attributes.js';
import { externalRefOf, tensorData } from '../src/onnx/graph-builder.js';
import { OnnxGraphView, topoOrder } from '../src/onnx/view.js';
import { Emitter, nodeProvenance, nodeSpans } from './onnx-emit.js';

const UNARY = new Set([
  'Relu', 'Gelu', 'Tanh', 'Sigmoid', 'Erf', 'Sqrt', 'Cast', 'Neg', 'Exp', 'Log', 'Abs', 'Identity',
  'Reciprocal', 'Softplus', 'Softsign', 'Elu', 'LeakyRelu', 'Selu', 'HardSigmoid', 'Floor', 'Ceil', 'Round', 'Sign', 'Not',
]);
const BINARY = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow']);
const SAME_RANK = new Set([...UNARY, 'LayerNormalization', 'Softmax', 'LogSoftmax', 'Slice', 'Transpose', 'Dropout', 'Split', 'CumSum', 'Clip', 'Trilu']);
const BROADCAST = new Set([...BINARY, 'Where', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'And', 'Or', 'Xor', 'Max', 'Min', 'Mod']);

/** Safety bound on rewrite rounds (each round does at least one rewrite or stops). */
const MAX_ROUNDS = 10_000;

/** Options of {@link sinkSlices}. */
export interface SinkOptions {
  /** Ranks known from outside the graph (IR types, module boundaries), by value name. */
  ranks?: ReadonlyMap<string, number>;
  /** Emitter to create nodes with (a fresh one on the graph by default). */
  emitter?: Emitter;
  /** The folder the graph's external data is relative to (rule 4 reads weight columns from it; without it, external weights are left alone). */
  weightsDir?: string;
}

/** What {@link sinkSlices} did. */
export interface SinkStats {
  sunk: number;
  swapped: number;
  merged: number;
  /** Selections of a MatMul's last axis moved onto its constant weight's columns (rule 4). */
  columns: number;
}

/** A parsed selection node. */
interface Selection {
  node: NodeProto;
  /** Normalized axes (w.r.t. the rank of the data input). */
  axes: number[];
  /** 1 for a scalar-index Gather (drops the axis), else 0. */
  drop: 0 | 1;
  /** Rank of the data input. */
  rank: number;
}

function attrInt(n: NodeProto, name: string, dflt: number): number {
  const a = attrOf(n, name);
  return a?.i === undefined ? dflt : Number(a.i);
}

function setAttrInt(n: NodeProto, name: string, v: number): void {
  const rest = (n.attribute ?? []).filter((a) => a.name !== name);
  n.attribute = [...rest, { name, i: v, type: AttributeType.INT }];
}

/** Rewrites `g` in place; returns counts. */
export function sinkSlices(g: GraphProto, opset: number, opts: SinkOptions = {}): SinkStats {
  const stats: SinkStats = { sunk: 0, swapped: 0, merged: 0, columns: 0 };
  const em = opts.emitter ?? new Emitter(g);

  // ── constants, producers and readers: the graph view (refreshed every round) ──
  const view = new OnnxGraphView(g);
  const constTensor = (name: string): TensorProto | undefined => view.constTensor(name);
  const constDims = (name: string): number[] | undefined => {
    const t = constTensor(name);
    return t ? (t.dims ?? []).map(Number) : undefined;
  };
  /** Integer values of a small inline constant (undefined when not constant, external or not integer). */
  const constInts = (name: string): number[] | undefined => {
    const t = constTensor(name);
    if (!t || (t.data_type !== DataType.INT64 && t.data_type !== DataType.INT32)) return undefined;
    try {
      return Array.from(tensorData(t) as ArrayLike<number | bigint>, (x) => Number(x));
    } catch {
      return undefined;
    }
  };
  /** Content key of a constant (to compare parameter inputs by value). */
  const constKey = (name: string): string => {
    const t = constTensor(name);
    if (!t) return `name:${name}`;
    const dims = (t.dims ?? []).map(Number);
    let data: string;
    try {
      data = Array.from(tensorData(t) as ArrayLike<number | bigint>, (x) => (Object.is(x, -0) ? '-0' : String(x))).join(',');
    } catch {
      return `name:${name}`;
    }
    return `const:${t.data_type}:${dims.join('x')}:${data}`;
  };

  // ── ranks: seeds, then forward propagation in topological order ──
  const ranks = new Map<string, number>(opts.ranks ?? []);
  const seed = (name: string | undefined, dims: unknown[] | undefined): void => {
    if (name && dims && !ranks.has(name)) ranks.set(name, dims.length);
  };
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.value_info ?? [])]) {
    const shape = v.type?.tensor_type?.shape;
    if (shape) seed(v.name, shape.dim ?? []);
  }
  for (const t of g.initializer ?? []) seed(t.name, t.dims ?? []);
  for (const n of topoOrder(g).order) inferRank(n);

  function inferRank(n: NodeProto): void {
    const out = n.output?.[0];
    if (!out || ranks.has(out) || (n.domain ?? '') !== '') return;
    const r = (i: number): number | undefined => {
      const name = n.input?.[i];
      return name ? ranks.get(name) : undefined;
    };
    const op = n.op_type!;
    let v: number | undefined;
    if (op === 'Constant') v = constDims(out)?.length;
    else if (SAME_RANK.has(op)) {
      v = r(0);
      if (op === 'Split' && v !== undefined) for (const o of n.output ?? []) if (o) ranks.set(o, v);
    } else if (BROADCAST.has(op)) {
      const rs = (n.input ?? []).map((_, i) => r(i));
      v = rs.every((x) => x !== undefined) ? Math.max(...(rs as number[])) : undefined;
    } else if (op === 'MatMul') {
      const a = r(0), b = r(1);
      if (a !== undefined && b !== undefined) v = a >= 2 && b >= 2 ? Math.max(a, b) : a === 1 && b === 1 ? 0 : a === 1 ? b - 1 : a - 1;
    } else if (op === 'Gemm') v = 2;
    else if (op === 'Gather') {
      const a = r(0), q = r(1) ?? constDims(n.input![1]!)?.length;
      if (a !== undefined && q !== undefined) v = a + q - 1;
    } else if (op === 'Shape') v = 1;
    else if (op === 'Size') v = 0;
    else if (op === 'Concat') v = (n.input ?? []).map((_, i) => r(i)).find((x) => x !== undefined);
    else if (op === 'Unsqueeze' || op === 'Squeeze') {
      const axes = n.input?.[1] ? constInts(n.input[1]) : (attrOf(n, 'axes')?.ints ?? undefined)?.map(Number);
      const a = r(0);
      if (a !== undefined && axes) v = op === 'Unsqueeze' ? a + axes.length : a - axes.length;
    } else if (op === 'Reshape') {
      v = n.input?.[1] ? constDims(n.input[1])?.[0] : undefined;
    } else if (op.startsWith('Reduce')) {
      if (attrInt(n, 'keepdims', 1) === 1) v = r(0);
    }
    if (v !== undefined) ranks.set(out, v);
  }

  // ── selections and position-wise nodes ──
  const selection = (s: NodeProto): Selection | undefined => {
    if ((s.domain ?? '') !== '') return undefined;
    const ins = s.input ?? [];
    const data = ins[0];
    if (!data) return undefined;
    const rank = ranks.get(data);
    if (rank === undefined || rank < 1) return undefined;
    const norm = (a: number): number => (a < 0 ? a + rank : a);
    if (s.op_type === 'Gather') {
      if (ins.length !== 2 || !ins[1]) return undefined;
      const q = constDims(ins[1])?.length;
      if (q !== 0 && q !== 1) return undefined;
      const a = norm(attrInt(s, 'axis', 0));
      if (a < 0 || a >= rank) return undefined;
      return { node: s, axes: [a], drop: q === 0 ? 1 : 0, rank };
    }
    if (s.op_type === 'Slice') {
      if (ins.length < 3 || (s.attribute ?? []).length) return undefined; // opset < 10 attribute form
      const starts = constInts(ins[1]!);
      if (!starts || !constInts(ins[2]!)) return undefined;
      if (ins[4] && !constInts(ins[4])) return undefined;
      const axesRaw = ins[3] ? constInts(ins[3]) : starts.map((_, i) => i);
      if (!axesRaw) return undefined;
      const axes = axesRaw.map(norm);
      if (axes.some((a) => a < 0 || a >= rank) || new Set(axes).size !== axes.length) return undefined;
      return { node: s, axes, drop: 0, rank };
    }
    return undefined;
  };

  /** Index of P's data operand when S's selection commutes with P, plus attribute fixes for P. */
  const commutes = (p: NodeProto, sel: Selection): { data: number; fix?: (clone: NodeProto) => void } | undefined => {
    const r = sel.rank;
    const op = p.op_type!;
    const domain = p.domain ?? '';
    const ins = p.input ?? [];
    if (sel.axes.some((a) => a === r - 1)) return undefined; // never the last axis
    // Only the first output may be used.
    for (const o of (p.output ?? []).slice(1)) if (o && (view.uses(o).length > 0 || view.readInSubgraph(o) || view.isOutput(o))) return undefined;
    if (UNARY.has(op) && (domain === '' || (domain === 'com.microsoft' && op === 'Gelu'))) {
      return ins.length === 1 && ins[0] ? { data: 0 } : undefined;
    }
    if (domain !== '') return undefined;
    if (BINARY.has(op)) {
      if (ins.length !== 2 || !ins[0] || !ins[1]) return undefined;
      const c0 = constDims(ins[0]), c1 = constDims(ins[1]);
      if ((c0 === undefined) === (c1 === undefined)) return undefined; // exactly one constant operand
      const data = c0 === undefined ? 0 : 1;
      const dims = (c0 ?? c1)!;
      if (dims.length > r) return undefined;
      if (dims.length === r && ranks.get(ins[data]!) !== r) return undefined; // data must carry every axis
      for (const a of sel.axes) {
        const j = a - (r - dims.length);
        if (j >= 0 && (sel.drop || dims[j] !== 1)) return undefined;
      }
      return { data };
    }
    if (op === 'MatMul') {
      if (ins.length !== 2 || !ins[1] || constDims(ins[1])?.length !== 2 || r < 2) return undefined;
      return sel.axes.every((a) => a <= r - 2) ? { data: 0 } : undefined;
    }
    if (op === 'Gemm') {
      if (r !== 2 || sel.drop || attrInt(p, 'transA', 0) !== 0 || !sel.axes.every((a) => a === 0)) return undefined;
      if (ins[2]) {
        const c = ranks.get(ins[2]) ?? constDims(ins[2])?.length;
        const cd = constDims(ins[2]);
        if (c === undefined) return undefined;
        if (c === 2 && !(cd && cd[0] === 1)) return undefined;
      }
      return { data: 0 };
    }
    if (op === 'LayerNormalization') {
      const axisAttr = attrInt(p, 'axis', -1);
      const k = axisAttr < 0 ? axisAttr + r : axisAttr;
      if (!sel.axes.every((a) => a < k)) return undefined;
      return { data: 0, fix: sel.drop && axisAttr >= 0 ? (c) => setAttrInt(c, 'axis', k - r) : undefined };
    }
    if (op === 'Softmax' || op === 'LogSoftmax') {
      const axisAttr = attrInt(p, 'axis', opset >= 13 ? -1 : 1);
      const k = axisAttr < 0 ? axisAttr + r : axisAttr;
      if (k !== r - 1) return undefined;
      return { data: 0, fix: sel.drop && axisAttr >= 0 ? (c) => setAttrInt(c, 'axis', -1) : undefined };
    }
    return undefined;
  };

  /** Module path of a node for provenance: its `onnsight.module`, else from its scope-style name. */
  const moduleOf = (n: NodeProto): string => {
    const m = (n.metadata_props ?? []).find((e) => e.key === 'onnsight.module')?.value;
    if (m) return m;
    const segs = (n.name ?? '').split('/').filter((s) => s);
    segs.pop();
    const cut = segs.findIndex((s) => s.startsWith('nns.'));
    return (cut >= 0 ? segs.slice(0, cut) : segs).join('.');
  };

  /**
   * Emits a copy of `n` (op, domain, attributes) on `inputs` in the scope of module `at`;
   * `output` names its first output (a fresh name when undefined); the span is `span`'s.
   */
  const emitCopy = (n: NodeProto, inputs: string[], output: string | undefined, at: NodeProto, span: NodeProto): NodeProto => {
    const from = nodeProvenance.get(span) ?? nodeProvenance.get(n);
    // Named by the module whose nodes they copy (`/lm_head/nns.sink/MatMul`); grouped with their statement.
    em.prov = from ? { ...from, module: moduleOf(at), stmtModule: from.stmtModule ?? from.module, irOp: 'sink', sub: undefined, copyOf: moduleOf(at) } : { module: moduleOf(at), irOp: 'sink', span: nodeSpans.get(span) ?? nodeSpans.get(n) };
    const [fresh] = em.node(n.op_type!, inputs, {}, 1);
    const c = g.node![g.node!.length - 1]!;
    c.attribute = (n.attribute ?? []).map((a) => ({ ...a }));
    if (n.domain) c.domain = n.domain;
    if (output !== undefined) c.output = [output];
    else c.output = [fresh!];
    return c;
  };

  /** `name` is read exactly once, by input 0 of `n`, and is not a graph output. */
  const onlyReaderIs = (name: string, n: NodeProto): boolean =>
    view.uses(name).length === 1 && !view.isOutput(name) && !view.readInSubgraph(name) && n.input?.[0] === name;

  /** What one round of rules shares: nodes already rewritten this round, and nodes to remove at its end. */
  interface Round { claimed: Set<NodeProto>; remove: Set<NodeProto> }

  /** 3. merge: identical selections of one value → one; readers of the others read the kept one. */
  const mergeRule = (value: string, r: Round): boolean => {
    const list = view.users(value);
    if (list.length < 2) return false;
    let changed = false;
    const groups = new Map<string, Selection[]>();
    for (const s of list) {
      if (r.claimed.has(s) || s.input?.[0] !== value || s.input.slice(1).includes(value) || (s.output ?? []).length !== 1) continue;
      const sel = selection(s);
      if (!sel) continue;
      const key = [s.op_type, stableStringify(s.attribute ?? []),
        ...s.input.slice(1).map((x) => (x ? constKey(x) : ''))].join('|');
      let gl = groups.get(key);
      if (!gl) groups.set(key, (gl = []));
      gl.push(sel);
    }
    for (const gl of groups.values()) {
      if (gl.length < 2) continue;
      const keep = gl[0]!.node;
      const keptOut = keep.output![0]!;
      for (const { node: d } of gl.slice(1)) {
        const o = d.output![0]!;
        if (view.isOutput(o) || view.readInSubgraph(o)) continue;
        for (const rd of view.users(o)) r.claimed.add(rd);
        view.replaceAllUsesWith(o, keptOut);
        r.remove.add(d);
        r.claimed.add(d);
        stats.merged++;
        changed = true;
      }
      r.claimed.add(keep);
    }
    return changed;
  };

  /** 2. swap: S(Slice1(x)) → Slice1(S(x)) when S selects only axes above Slice1's. */
  const swapRule = (s: NodeProto, sel: Selection, p: NodeProto, r: Round): boolean => {
    if (p.op_type !== 'Slice' || (p.output ?? []).length !== 1) return false;
    const up = selection(p);
    if (!up || Math.min(...sel.axes) <= Math.max(...up.axes)) return false;
    const x = p.input![0]!;
    const s2 = emitCopy(s, [x, ...s.input!.slice(1)], undefined, s, s);
    const u = s2.output![0]!;
    ranks.set(u, sel.rank - sel.drop);
    const pIns = [u, ...p.input!.slice(1)];
    const rawAxes = p.input![3] ? constInts(p.input![3]) : undefined;
    if (sel.drop && rawAxes && rawAxes.some((a) => a < 0)) pIns[3] = em.ints(up.axes);
    emitCopy(p, pIns, s.output![0]!, p, p);
    r.remove.add(s).add(p);
    r.claimed.add(s).add(p);
    stats.swapped++;
    return true;
  };

  /**
   * The columns of an `n`-column axis that `s` selects, in order (a Gather's indices, a
   * Slice's range), normalized; undefined when not known or out of range.
   */
  const selectedColumns = (s: NodeProto, n: number): number[] | undefined => {
    const ins = s.input!;
    if (s.op_type === 'Gather') {
      const idx = constInts(ins[1]!);
      if (!idx || idx.some((i) => i < -n || i >= n)) return undefined;
      return idx.map((i) => (i < 0 ? i + n : i));
    }
    const [start, end] = [constInts(ins[1]!)?.[0], constInts(ins[2]!)?.[0]];
    const step = ins[4] ? constInts(ins[4])?.[0] : 1;
    if (start === undefined || end === undefined || step === undefined || step === 0) return undefined;
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + n : v, lo), hi);
    const out: number[] = [];
    if (step > 0) for (let i = clamp(start, 0, n); i < clamp(end, 0, n) && out.length <= n; i += step) out.push(i);
    else for (let i = clamp(start, -1, n - 1); i > clamp(end, -1, n - 1) && out.length <= n; i += step) out.push(i);
    return out;
  };

  /**
   * 4. columns: S(MatMul(x, W)) → MatMul(x, W[:, cols]) for a selection S of the last axis
   * only (a vocabulary index of the logits) and a constant 2-D W [K, N] (or the `Transpose` of
   * a constant [N, K]: a tied lm_head as the dynamo exporter writes it): the selected columns
   * become a constant of their own, read from W at compile time (from the weights file: one
   * read of the selected span per row). The product then computes those columns only, and the
   * session never maps the rest of W (GPT-2's lm_head: 154 MB of the weights file for one
   * logit). A `Gather` of W's columns in the graph instead would be folded by onnxruntime at
   * session creation, reading the whole of W into memory. Only when S keeps at most an eighth
   * of W's columns.
   */
  const columnRule = (s: NodeProto, sel: Selection, p0: NodeProto, r: Round): boolean => {
    if (sel.axes.length !== 1 || sel.axes[0] !== sel.rank - 1) return false;
    // Selections of other axes between S and the product (a position the Reshape before a
    // dynamo export's lm_head kept from sinking) stay where they are, on the new product.
    const between: { node: NodeProto; sel: Selection }[] = [];
    let p = p0;
    for (;;) {
      const ps = p.op_type === 'MatMul' ? undefined : selection(p);
      if (!ps) break;
      const up = view.producer(p.input![0]!);
      if (ps.axes.some((a) => a === ps.rank - 1) || (p.output ?? []).length !== 1 || !up || r.claimed.has(up) || !onlyReaderIs(p.input![0]!, p)) return false;
      between.unshift({ node: p, sel: ps });
      p = up;
    }
    if (p.op_type !== 'MatMul' || (p.domain ?? '') !== '') return false;
    const ins = p.input ?? [];
    if (ins.length !== 2 || !ins[0] || !ins[1]) return false;
    // W itself a constant, or the Transpose of one (a tied lm_head in a dynamo export: the columns are rows of the embedding).
    let t = constTensor(ins[1]);
    const tp = t ? undefined : view.producer(ins[1]);
    const perm = tp ? attrOf(tp, 'perm')?.ints?.map(Number) : undefined;
    const transposed = !!tp && tp.op_type === 'Transpose' && (tp.domain ?? '') === '' && !!tp.input?.[0] && (perm === undefined || (perm[0] === 1 && perm[1] === 0));
    if (transposed) t = constTensor(tp!.input![0]!);
    const dims = t ? (t.dims ?? []).map(Number) : undefined;
    if (!t || dims?.length !== 2) return false;
    const [k, n] = (transposed ? [dims[1], dims[0]] : dims) as [number, number];
    const cols = selectedColumns(s, n);
    if (!cols || cols.length === 0 || cols.length * 8 > n) return false;
    const raw = readColumns(t, transposed, k, n, cols, opts.weightsDir);
    if (!raw) return false;
    const name = em.unique(`${ins[1]}.nns.columns`);
    g.initializer = [...(g.initializer ?? []), { name, data_type: t.data_type, dims: sel.drop ? [k] : [k, cols.length], raw_data: raw }];
    ranks.set(name, 2 - sel.drop);
    let v = emitCopy(p, [ins[0], name], between.length ? undefined : s.output![0]!, p, s).output![0]!;
    ranks.set(v, (ranks.get(p.output![0]!) ?? sel.rank) - sel.drop);
    between.forEach(({ node, sel: bs }, i) => {
      // The same selection on the product without S's axis: its axes, all below the last, as non-negative numbers.
      const bIns = [v, ...node.input!.slice(1)];
      if (node.op_type === 'Slice') bIns[3] = em.ints(bs.axes);
      const c = emitCopy(node, bIns, i === between.length - 1 ? s.output![0]! : undefined, node, node);
      if (node.op_type === 'Gather') setAttrInt(c, 'axis', bs.axes[0]!);
      const rank = bs.rank - sel.drop - bs.drop;
      v = c.output![0]!;
      ranks.set(v, rank);
      r.remove.add(node);
      r.claimed.add(node);
    });
    r.remove.add(s).add(p);
    r.claimed.add(s).add(p);
    stats.columns++;
    return true;
  };

  /** 1. sink: S(P(x, w)) → P(S(x), w) for a position-wise P. */
  const sinkRule = (s: NodeProto, sel: Selection, p: NodeProto, r: Round): boolean => {
    const y = s.input![0]!;
    if ((p.output ?? [])[0] !== y) return false;
    const how = commutes(p, sel);
    if (!how) return false;
    const x = p.input![how.data]!;
    const moved = emitCopy(s, [x, ...s.input!.slice(1)], undefined, p, s);
    const xs = moved.output![0]!;
    ranks.set(xs, sel.rank - sel.drop);
    const pIns = [...p.input!];
    pIns[how.data] = xs;
    const pc = emitCopy(p, pIns, s.output![0]!, p, s);
    how.fix?.(pc);
    r.remove.add(s).add(p);
    r.claimed.add(s).add(p);
    stats.sunk++;
    return true;
  };

  // The rules, run to a fixed point: each round first merges (then starts over on the new
  // graph), else swaps or sinks every selection it can; MAX_ROUNDS guards the loop.
  for (let round = 0; ; round++) {
    if (round === MAX_ROUNDS) throw new Error(`internal: sink-slices did not reach a fixed point in ${MAX_ROUNDS} rounds`);
    view.refresh();
    const r: Round = { claimed: new Set(), remove: new Set() };
    const values = new Set<string>();
    for (const n of g.node ?? []) for (const x of n.input ?? []) if (x) values.add(x);
    let changed = false;
    for (const value of values) changed = mergeRule(value, r) || changed;
    if (!changed) {
      for (const s of [...(g.node ?? [])]) {
        if (r.claimed.has(s) || (s.output ?? []).length !== 1) continue;
        const sel = selection(s);
        if (!sel) continue;
        const y = s.input![0]!;
        const p = view.producer(y);
        if (!p || r.claimed.has(p) || !onlyReaderIs(y, s)) continue;
        changed = swapRule(s, sel, p, r) || sinkRule(s, sel, p, r) || columnRule(s, sel, p, r) || changed;
      }
    }
    if (!changed) break;
    g.node = (g.node ?? []).filter((n) => !r.remove.has(n));
  }
  return stats;
}

/**
 * Columns `cols` of the 2-D weight `W` [k, n] as the raw little-endian bytes of a [k, cols]
 * tensor (row-major): `t` is W itself, or with `transposed` the constant whose `Transpose` W is
 * ([n, k]: the columns are rows of `t`). External data is read from `weightsDir`, one read per
 * row (of W: the columns' span; of `t`: the selected rows). Undefined when the data cannot be
 * read that way (no folder for external data, an element type narrower than a byte, a
 * big-endian host).
 */
export function readColumns(t: TensorProto, transposed: boolean, k: number, n: number, cols: readonly number[], weightsDir?: string): Uint8Array | undefined {
  const w = dataTypeBits(t.data_type ?? 0) / 8;
  if (!Number.isInteger(w) || w < 1 || os.endianness() !== 'LE') return undefined;
  // The rows of `t` to read and the span of each: [lo, lo + span) elements.
  const lo = transposed ? 0 : Math.min(...cols);
  const span = transposed ? k : Math.max(...cols) - lo + 1;
  const rows = transposed ? cols : Array.from({ length: k }, (_, i) => i);
  const rowLen = transposed ? k : n;
  const read: Uint8Array[] = [];
  const ext = externalRefOf(t);
  if (ext) {
    if (weightsDir === undefined) return undefined;
    const fd = fs.openSync(path.join(weightsDir, ext.location), 'r');
    try {
      for (const r of rows) {
        const buf = Buffer.alloc(span * w);
        if (fs.readSync(fd, buf, 0, buf.length, ext.offset + (r * rowLen + lo) * w) !== buf.length) return undefined;
        read.push(buf);
      }
    } finally {
      fs.closeSync(fd);
    }
  } else {
    const all = tensorData(t);
    const bytes = new Uint8Array(all.buffer, all.byteOffset, all.byteLength);
    if (bytes.length !== k * n * w) return undefined;
    for (const r of rows) read.push(bytes.subarray((r * rowLen + lo) * w, (r * rowLen + lo + span) * w));
  }
  const out = new Uint8Array(k * cols.length * w);
  for (let i = 0; i < k; i++) {
    cols.forEach((c, j) => {
      const from = transposed ? read[j]!.subarray(i * w, (i + 1) * w) : read[i]!.subarray((c - lo) * w, (c - lo + 1) * w);
      out.set(from, (i * cols.length + j) * w);
    });
  }
  return out;
}

/** The sink-slices pass: ranks from the IR types and module boundaries, then {@link sinkSlices}. */
export const sinkSlicesPass: Pass = {
  name: 'sink-slices',
  prints: 'model',
  run(state, ctx) {
    const ranks = new Map<string, number>();
    for (const [v, name] of state.valueNames ?? []) if (v.type?.shape) ranks.set(name, v.type.shape.length);
    const boundary = (b: { name: string; sig?: { shape: unknown[] | null } }): void => {
      if (b.sig?.shape && !ranks.has(b.name)) ranks.set(b.name, b.sig.shape.length);
    };
    for (const m of ctx.tree.modules.values()) [...m.outputs, ...m.inputs].forEach(boundary);
    [...ctx.tree.graphInputs, ...ctx.tree.graphOutputs].forEach(boundary);
    const s = sinkSlices(state.model.graph!, defaultOpset(state.model) ?? 0, { ranks, ...(ctx.weightsDir !== undefined ? { weightsDir: ctx.weightsDir } : {}) });
    return { changed: s.sunk + s.swapped + s.merged + s.columns > 0 };
  },
};
