/**
 * Incremental patching sweeps: a batch of invokes that each change one block boundary (the
 * residual stream between two blocks) at some positions, and read only model outputs
 * after it, runs as *clean pass once, then each variant from the changed block on*.
 *
 * Changing cut `c_i` (block i's input = block i-1's output, src/fast/segments.ts) at
 * positions ≥ p leaves every value of blocks before i, and every value at positions < p,
 * unchanged. So: one clean run of the instrumented model over the distinct prompts (and the
 * source rows the set values come from) fetches `c_i` and, for a model with a key/value
 * cache, every `present` tensor; then each variant runs segments i..L-1 and the head on its
 * changed residual, and with a cache only over positions ≥ p, feeding the clean keys and
 * values of positions < p as the past. Variants that start at the same cut run as one batch
 * (with a cache: positions bucketed, each bucket from its smallest position — a few
 * positions recomputed, which equal the clean ones); the head runs only at the positions
 * the saves index (when it is position-wise), and when every read takes single columns of
 * the head's outputs (`logits[:, -1, token]`: a patching grid's logit difference), only those
 * columns ({@link headColumns}, src/fast/segments.ts `columnsHead`: the unembedding's other
 * columns are never computed nor read from the weights file). The keys and values are those of blocks in the
 * broadcast form (src/fast/added-cache.ts: a past of batch 1 for a batch of one prompt's
 * variants, from a pass of those blocks over the clean prompts) when the form applies — a
 * cache added to a model without one, or a with-past export's own rewritten to it — else the
 * export's own presents from the clean run, stacked per variant row.
 *
 * The detection is structural, on the fast-path plan ({@link planSweep}): every set is a
 * replace or steer of a port whose value is a cut, one port per row and one row per set
 * scope; reads in rows with sets are model outputs the head computes; every invoke has the
 * same length; and the estimated cost beats running every row (else the ordinary fast path
 * runs the trace). Results equal the one-by-one runs up to float rounding.
 * @module
 */
import { expandItems, sliceRange } from '../../ir/shape.js';
import type { Graph, IndexItem, Node, Value } from '../../ir/ir.js';
import { broadcastTo, castTo, indexTensor, tensorOf } from '../../ir/eval.js';
import { batchRows, weightsBytes, type ModelContext } from '../compile.js';
import { batchBudget } from '../compiled-run.js';
import { TrimOnGrowth } from '../../backends/malloc-trim.js';
import { collectIfLarge } from '../js-heap.js';
import { buildFeeds } from '../model/feeds.js';
import { concatAxis, numel, selectRows, type Tensor } from '../tensor.js';
import type { FastPlan, SetPlan } from './plan.js';
import type { Port, PortedModel } from './ports.js';
import type { BlockChain, CachePair, Segment, Segments } from './segments.js';
import { fedOverAll, type AddedCache } from './added-cache.js';

/** Outputs of one run and the batch rows it computed (fetched tensors hold those rows, in order). */
export interface Env {
  out: Record<string, Tensor>;
  rows: number[];
}

/** How one use of a model-output read is served: the positions it indexes and the items that then apply. */
interface UsePlan {
  node: Node;
  /** Positions (sequence axis) the use reads, in its order; null: the whole read (every position). */
  positions: number[] | null;
  /** The use's items with the sequence item rewritten for a tensor holding just `positions`. */
  items: IndexItem[] | null;
}

/** One changed row. */
interface RowPlan {
  row: number;
  /** Sets of this row, program order (all on one port). */
  sets: SetPlan[];
  /** Cut index the row changes (its variant starts at segment `start`). */
  start: number;
  /** Model-output reads of the row and their uses. */
  reads: { value: Value; output: string; uses: UsePlan[] }[];
  /** Positions the reads need (sorted), all of them when some use needs the whole read. */
  need: number[];
}

/** A sweep plan (see the module comment). */
export interface SweepPlan {
  rows: RowPlan[];
  /** Rows the clean run computes (sorted): sources, rows without sets that saves read, one row per distinct changed prompt. */
  cleanRows: number[];
  /** What the clean run fetches. */
  cleanFetch: string[];
  /** Clean row whose prompt each changed row has. */
  rep: Map<number, number>;
  /** Fetch name of each cut needed (by cut index). */
  cutFetch: Map<number, string>;
  /** Sequence length (every invoke has it). */
  seqLen: number;
  /** Whether the model has a key/value cache, its own or added (variants then run over their positions ≥ p only). */
  cached: boolean;
  /** The cache added to the blocks of a model without one (src/fast/added-cache.ts): variants run on those blocks. */
  added?: AddedCache;
}

/** What the executor lends the sweep runner. */
export interface SweepHost {
  mc: ModelContext;
  ported: PortedModel;
  segments: Segments;
  /** A run of the instrumented model with no sets, over `rows`, fetching `fetch`. */
  cleanRun(rows: number[], fetch: string[]): Promise<Env>;
  /** A value on the host (reads from `env`, `memo` first). */
  evaluate(v: Value, env: Env, memo: Map<Value, Tensor>): Tensor;
  /**
   * Runs the tail module ({@link BlockChain.tailHead}) on its input `x`, returning the graph
   * outputs `outputs`; without it the whole head segment runs (the executor gives it only when
   * the tail's module session is open already).
   */
  runTail?(x: Tensor, outputs: readonly string[]): Promise<Record<string, Tensor>>;
  /** Activation bytes one batch may hold (default {@link sweepBudget}; tests set it small to run many batches). */
  budget?: number;
  /**
   * Called after each batch with the values it served (`written`, now in `memo`): what is
   * complete may be evaluated and the served values no later evaluation needs dropped, so that
   * a grid of thousands of variants does not hold every variant's logits until the end.
   */
  afterBatch?(memo: Map<Value, Tensor>, env: Env, written: readonly Value[]): void;
}

/** Planner options. */
export interface SweepOptions {
  /** Skip the cost comparison (tests: always take the incremental path when it applies). */
  force?: boolean;
  /** Whether a fetched value has the batch as its first axis (rows of a run over some rows are those rows). */
  batchFirst?: (fetch: string) => boolean;
  /** The blocks in the broadcast form of a cache, added or the model's own rewritten (src/fast/added-cache.ts): used when given. */
  added?: AddedCache;
}

/**
 * The sweep plan of a fast-path plan, or why the trace is not such a sweep. Structural only:
 * which ports the sets write, which rows read what, and the prompt lengths.
 */
export function planSweep(ir: Graph, plan: FastPlan, chain: BlockChain, ported: PortedModel, opts: SweepOptions = {}): SweepPlan | { reject: string } {
  if (plan.sets.length === 0) return { reject: 'no sets' };
  const tokens = batchRows(ir);
  const T = tokens[0]!.length;
  if (tokens.some((t) => t.length !== T)) return { reject: 'prompts of different lengths' };
  const L = chain.blocks.length;
  const head = chain.segments[L]!;
  const cutOf = new Map(chain.cuts.map((c, i) => [c, i]));
  const added = opts.added;
  const cached = chain.cache.length > 0 || added !== undefined;

  const byRow = new Map<number, SetPlan[]>();
  for (const s of plan.sets) {
    if (s.rowEnd - s.rowStart !== 1) return { reject: 'a set over several rows' };
    if (cutOf.get(s.port.value) === undefined) return { reject: `a set of ${s.port.path}.${s.port.kind}, which is not a block boundary` };
    const l = byRow.get(s.rowStart) ?? [];
    if (l.length && l[0]!.port !== s.port) return { reject: 'sets of two ports in one row' };
    l.push(s);
    byRow.set(s.rowStart, l);
  }
  const setRows = new Set(byRow.keys());

  // Reads: in rows with sets, only model outputs the head computes (read in that row alone).
  const usesOf = new Map<Value, Node[]>();
  for (const n of ir.nodes) for (const x of n.inputs) usesOf.set(x, [...(usesOf.get(x) ?? []), n]);
  const rowReads = new Map<number, RowPlan['reads']>();
  const cleanMain = new Set<string>();
  const cleanMainRows = new Set<number>();
  const mainReads = new Set(plan.mainFetch);
  // Reads the saves and set values need (a steering set's own read is the port's value: not one of them).
  const needed = new Set<Value>();
  const walk: Value[] = [...plan.saves.map((s) => s.value), ...plan.sets.map((s) => s.value)];
  const seenV = new Set<Value>();
  while (walk.length) {
    const v = walk.pop()!;
    if (seenV.has(v)) continue;
    seenV.add(v);
    if (plan.reads.has(v)) { needed.add(v); continue; }
    walk.push(...v.producer.inputs);
  }
  for (const [v, b] of plan.reads) {
    if (!needed.has(v)) continue;
    let touches = false;
    for (let r = b.rowStart; r < b.rowEnd; r++) if (setRows.has(r)) touches = true;
    if (!touches) {
      // Served by the clean run (source values, and saves of rows nothing changes).
      if (mainReads.has(b.fetch)) cleanMain.add(b.fetch);
      for (let r = b.rowStart; r < b.rowEnd; r++) cleanMainRows.add(r);
      continue;
    }
    if (b.rowEnd - b.rowStart !== 1) return { reject: 'a read over several rows, some of them changed' };
    const output = b.tail?.name ?? b.fetch; // a tail output (logits) is fetched as the tail's input on the ordinary path
    if (v.producer.op !== 'model.output' || !head.modelOutputs.includes(output)) return { reject: `a read of ${output} in a changed row (only model outputs after the last block)` };
    const shape = v.type?.shape;
    if (!shape || shape.length !== 3 || shape[1] !== 'sequence') return { reject: `model output ${output} is not [batch, sequence, ...]` };
    const uses: UsePlan[] = (usesOf.get(v) ?? []).flatMap((u) => indexedAgain(usePlan(u, v, T)));
    const l = rowReads.get(b.rowStart) ?? [];
    l.push({ value: v, output, uses });
    rowReads.set(b.rowStart, l);
  }

  // Changed rows: start cut, positions needed, the clean row of the same prompt.
  const rep = new Map<number, number>();
  const firstOf = new Map<string, number>();
  const cutFetch = new Map<number, string>();
  const rows: RowPlan[] = [];
  for (const [row, sets] of [...byRow].sort((a, b) => a[0] - b[0])) {
    const port: Port = sets[0]!.port;
    const start = cutOf.get(port.value)!;
    cutFetch.set(start, port.pre);
    const key = tokens[row]!.join(',');
    if (!firstOf.has(key)) firstOf.set(key, row);
    rep.set(row, firstOf.get(key)!);
    const reads = rowReads.get(row) ?? [];
    const all = reads.some((r) => r.uses.some((u) => u.positions === null)) || !chain.headPositionwise;
    const need = all ? Array.from({ length: T }, (_, i) => i) : [...new Set(reads.flatMap((r) => r.uses.flatMap((u) => u.positions!)))].sort((a, b) => a - b);
    rows.push({ row, sets, start, reads, need });
  }
  const cleanRows = [...new Set([...plan.sourceRows, ...cleanMainRows, ...firstOf.values()])].sort((a, b) => a - b);
  const minStart = Math.min(...rows.map((r) => r.start));
  if (added) {
    // The added cache's pass over the clean prompts reads every cut from the first start on.
    for (let j = minStart; j <= L; j++) {
      if (cutFetch.has(j)) continue;
      const port = ported.ports.find((p) => p.value === chain.cuts[j]);
      if (!port) return { reject: `the clean run cannot fetch boundary ${chain.cuts[j]}` };
      cutFetch.set(j, port.pre);
    }
  }
  const cleanFetch = [...new Set([...plan.sourceFetch, ...cleanMain, ...cutFetch.values(), ...(cached && !added ? chain.cache.map((c) => c.present) : [])])];
  if (cleanFetch.some((f) => !ported.outputUpstream.has(f) && !ported.ports.some((p) => p.pre === f || p.post === f))) return { reject: 'a value the clean run cannot fetch' };
  const shared = opts.batchFirst ? cleanFetch.find((f) => !opts.batchFirst!(f)) : undefined;
  if (shared) return { reject: `${shared} is one tensor every row shares` };

  if (!opts.force) {
    // Cost in forward passes of one row: the ordinary fast path runs the source rows and every
    // main row; the sweep runs the clean rows, then each changed row over its segments (and positions).
    const ordinary = plan.sourceRows.length + plan.mainRows.length;
    let incremental = cleanRows.length + (added ? firstOf.size * (L - minStart) / (L + 1) : 0);
    for (const r of rows) incremental += ((L - r.start + 0.5) / (L + 1)) * (cached ? (T - Math.min(r.need[0] ?? 0, firstChanged(r))) / T : 1);
    if (incremental > 0.7 * ordinary) return { reject: `no gain expected (${incremental.toFixed(1)} vs ${ordinary} row passes)` };
  }
  return { rows, cleanRows, cleanFetch, rep, cutFetch, seqLen: T, cached, ...(added ? { added } : {}) };
}

/** Lowest position any set of the row may touch, from its items (a lower bound; the exact one comes with the values). */
function firstChanged(r: RowPlan): number {
  let lo = Infinity;
  for (const s of r.sets) {
    const full = s.items ? expandItems(s.items, 3) : null;
    const seq = Array.isArray(full) ? full.filter((i) => i.kind !== 'newaxis')[1] : undefined;
    if (seq?.kind === 'index') lo = Math.min(lo, seq.index >= 0 ? seq.index : 0);
    else if (seq?.kind === 'slice' && (seq.step ?? 1) > 0 && (seq.start ?? 0) >= 0) lo = Math.min(lo, seq.start ?? 0);
    else lo = 0;
  }
  return lo === Infinity ? 0 : lo;
}

/** How a use of a `[1, sequence, ...]` read is served: an `index` whose sequence item is an index or a slice, else the whole read. */
function usePlan(u: Node, v: Value, T: number): UsePlan {
  if (u.op !== 'index' || u.inputs[0] !== v) return { node: u, positions: null, items: null };
  const full = expandItems((u.attrs as { items: IndexItem[] }).items, 3);
  if (!Array.isArray(full)) return { node: u, positions: null, items: null };
  let axis = 0;
  const items: IndexItem[] = [];
  let positions: number[] | null = null;
  for (const it of full) {
    if (it.kind === 'newaxis') { items.push(it); continue; }
    if (axis === 1) {
      if (it.kind === 'index') {
        const q = it.index < 0 ? it.index + T : it.index;
        if (q < 0 || q >= T) return { node: u, positions: null, items: null };
        positions = [q];
        items.push({ kind: 'index', index: 0 });
      } else if (it.kind === 'slice') {
        const { start, step, len } = sliceRange(T, it);
        positions = Array.from({ length: len }, (_, i) => start + i * step);
        items.push({ kind: 'slice' });
      } else return { node: u, positions: null, items: null };
    } else items.push(it);
    axis++;
  }
  return positions ? { node: u, positions, items } : { node: u, positions: null, items: null };
}

/**
 * A use taking whole slices besides its positions (`l = logits[:, -1, :]`) whose result only
 * indexes read again (`l[:, a] - l[:, b]`): those indexes, each served as one use with the two
 * item lists composed (`logits[:, -1, a]`), so the reads say which columns they take
 * ({@link headColumns}). Otherwise the use itself.
 */
function indexedAgain(up: UsePlan): UsePlan[] {
  if (!up.positions || !up.items || up.items.some((it) => it.kind === 'newaxis')) return [up];
  const users = [...up.node.results[0]!.uses];
  if (users.length === 0 || users.some((w) => w.op !== 'index' || w.inputs[0] !== up.node.results[0])) return [up];
  const rank = up.items.filter((it) => it.kind === 'slice').length;
  const out: UsePlan[] = [];
  for (const w of users) {
    const b = expandItems((w.attrs as { items: IndexItem[] }).items, rank);
    if (!Array.isArray(b)) return [up];
    const items: IndexItem[] = [];
    let k = 0;
    for (const it of up.items) {
      if (it.kind === 'index') { items.push(it); continue; }
      if (it.kind !== 'slice' || it.start !== undefined || it.stop !== undefined || (it.step ?? 1) !== 1) return [up];
      while (b[k]?.kind === 'newaxis') items.push(b[k++]!);
      const next = b[k++];
      if (!next) return [up];
      items.push(next);
    }
    while (b[k]?.kind === 'newaxis') items.push(b[k++]!);
    if (k !== b.length) return [up];
    out.push({ node: w, positions: up.positions, items });
  }
  return out;
}

/** Rows of a fetched `[rows, ...]` tensor: row `r` of the batch, from a run over `env.rows`. */
function rowOf(env: Env, name: string, r: number): Tensor {
  const t = env.out[name];
  const at = env.rows.indexOf(r);
  if (!t || at < 0) throw new Error(`internal: ${name} row ${r} was not fetched`);
  return selectRows(t, [at]);
}

/** Slice `[start, stop)` of axis `axis` of a float tensor. */
function sliceAxis(t: Tensor, axis: number, start: number, stop: number): Tensor {
  const shape = [...t.shape];
  const outer = numel(shape.slice(0, axis));
  const inner = numel(shape.slice(axis + 1));
  const n = shape[axis]!;
  const len = stop - start;
  const src = t.data as Float32Array;
  const data = new Float32Array(outer * len * inner);
  for (let o = 0; o < outer; o++) data.set(src.subarray((o * n + start) * inner, (o * n + stop) * inner), o * len * inner);
  shape[axis] = len;
  return { dtype: 'float32', shape, data };
}

/** Positions `pos` of axis 1 of a `[B, N, ...]` float tensor. */
function gatherPositions(t: Tensor, pos: readonly number[]): Tensor {
  const [B, N] = t.shape as [number, number];
  const inner = numel(t.shape.slice(2));
  const src = t.data as Float32Array;
  const data = new Float32Array(B * pos.length * inner);
  for (let b = 0; b < B; b++) pos.forEach((p, i) => data.set(src.subarray((b * N + p) * inner, (b * N + p + 1) * inner), (b * pos.length + i) * inner));
  return { dtype: 'float32', shape: [B, pos.length, ...t.shape.slice(2)], data };
}

/** Stacks `[1, ...]` float tensors along axis 0. */
function stack(ts: readonly Tensor[]): Tensor {
  const n = numel(ts[0]!.shape);
  const data = new Float32Array(ts.length * n);
  ts.forEach((t, i) => data.set(t.data as Float32Array, i * n));
  return { dtype: 'float32', shape: [ts.length, ...ts[0]!.shape.slice(1)], data };
}

/** Flat indices (into one row's `[1, T, D]` value) each set selects, memoized by its items (rows share them). */
class Selections {
  private readonly iota: Tensor;
  private readonly memo = new Map<string, Tensor>();

  constructor(T: number, D: number) {
    this.iota = tensorOf('float64', [1, T, D], Float64Array.from({ length: T * D }, (_, i) => i));
  }

  of(s: SetPlan): Tensor {
    const key = JSON.stringify(s.items);
    let t = this.memo.get(key);
    if (!t) this.memo.set(key, (t = s.items ? indexTensor(this.iota, s.items) : this.iota));
    return t;
  }
}

/**
 * Writes a row's residual from position `from` on into `x` at `at`: the clean value, then its
 * sets in program order (replace: the value; steer: added onto what is there).
 */
function writeResidual(host: SweepHost, r: RowPlan, sel: Selections, clean: Tensor, from: number, x: Float32Array, at: number, env: Env, memo: Map<Value, Tensor>, D: number): void {
  const n = clean.data.length - from * D;
  x.set((clean.data as Float32Array).subarray(from * D), at);
  const steered = r.sets.filter((s) => s.kind === 'steer').length > 1 ? new Uint8Array(n) : undefined;
  for (const s of r.sets) {
    const idxT = sel.of(s);
    const vals = broadcastTo(castTo(host.evaluate(s.value, env, memo), 'float32'), idxT.shape);
    const idx = idxT.data as Float64Array;
    const v = vals.data as Float32Array;
    for (let i = 0; i < idx.length; i++) {
      const k = idx[i]! - from * D;
      if (k < 0) continue; // a position before the run's first (see runSweep's join: never read)
      if (s.kind === 'replace') {
        x[at + k] = v[i]!;
        if (steered) steered[k] = 0;
      } else {
        if (steered?.[k]) throw new SweepFallback('two additions to one element');
        x[at + k] = Math.fround(x[at + k]! + v[i]!); // onto the clean value, or onto what an earlier replace wrote
        if (steered) steered[k] = 1;
      }
    }
  }
}

/** The sweep cannot go on (the ordinary path takes the trace). */
export class SweepFallback extends Error {}

/**
 * Activation bytes one sweep batch may hold: an eighth of the model's weights (at least
 * 32 MiB, at most the run budget `ONNSIGHT_BATCH_BUDGET_MB`). Segment sessions run without
 * onnxruntime's arena, so a batch's activations are freed after each run, but at the batch's
 * peak they sit beside the weights: measured on GPT-2 small (652 MB of weights, the 96-variant
 * sweep, T = 128), peak PSS 1570 MB with 512 MiB batches, 1393 with 160 MiB, 1218 with 78 MiB
 * (an eighth), CPU time the same (24.3, 23.5, 23.6 s): rows of 10 still fill the GEMMs.
 */
export function sweepBudget(mc: ModelContext): number {
  return Math.min(batchBudget(mc), Math.max(32 * 2 ** 20, weightsBytes(mc.loaded) / 8));
}

/** Rows per batch at most for `N` positions of `T` (by `budget` bytes; at least 1). */
function chunkRows(N: number, T: number, D: number, budget: number): number {
  const perRow = N * D * 4 * 16 + N * T * 4 * 16;
  return Math.max(1, Math.min(512, Math.floor(budget / perRow)));
}

/**
 * Runs a sweep plan: the clean run, then the variants grouped by start (and, with a cache, by
 * position bucket), segment by segment; returns the memo of served reads (the model-output
 * reads of changed rows, by their uses) and the clean run's env for everything else.
 */
export async function runSweep(host: SweepHost, ir: Graph, sp: SweepPlan): Promise<{ env: Env; memo: Map<Value, Tensor>; stats: SweepStats }> {
  const t0 = performance.now();
  const stats: SweepStats = { rows: sp.rows.length, batches: 0, runs: 0, tailRuns: 0, lastBlockCut: 0, trims: 0, heldMax: 0, addedCache: !!sp.added, ownCache: host.segments.chain.cache.length > 0, cleanMs: 0, segmentMs: 0, totalMs: 0 };
  const { chain } = host.segments;
  const L = chain.blocks.length;
  const D = chain.width;
  const T = sp.seqLen;
  collectIfLarge(); // the front end's garbage (a grid's thousands of invokes), before the clean run
  const env = await host.cleanRun(sp.cleanRows, sp.cleanFetch);
  const memo = new Map<Value, Tensor>();
  const tokens = batchRows(ir);
  const full = buildFeeds(host.mc.feedInputs, tokens, { padId: 0 }).feeds;
  // The presents the variants' pasts come from: the clean run's, or the added cache's pass.
  const kv = sp.added ? await addedCachePass(host, sp, sp.added, env, full) : env;
  stats.cleanMs = performance.now() - t0;
  const pairs: readonly CachePair[] = sp.added ? sp.added.pairs : chain.cache;
  const segmentAt = (j: number): Segment => (sp.added ? sp.added.blocks[j]! : chain.segments[j]!);
  const lastCache = sp.added ? sp.added.lastCache : chain.lastCache;

  // Each changed row: the first position its sets change (its residual is written per group).
  const sel = new Selections(T, D);
  const rows = sp.rows.filter((r) => r.reads.length > 0).map((r) => {
    let first = T;
    for (const s of r.sets) {
      const idx = sel.of(s).data as Float64Array;
      for (let i = 0; i < idx.length; i++) first = Math.min(first, Math.floor(idx[i]! / D));
    }
    return { r, from: sp.cached ? Math.min(first, r.need[0] ?? T, T - 1) : 0 };
  });
  const cleanCuts = new Map<string, Tensor>();
  const cleanCut = (start: number, row: number): Tensor => {
    const key = `${start}/${row}`;
    let t = cleanCuts.get(key);
    if (!t) cleanCuts.set(key, (t = rowOf(env, sp.cutFetch.get(start)!, row)));
    return t;
  };

  // Batches: with a cache, rows bucketed by the position they run from (a bucket runs from
  // its smallest: at most 8 % of its positions recomputed); each bucket is one batch through
  // the segments, rows joining at their start cut (rows of every start share the later runs).
  const budget = host.budget ?? sweepBudget(host.mc);
  // Freed batch memory goes back when it piles up (backends/malloc-trim.ts): by more than a batch's budget.
  const trim = new TrimOnGrowth(budget);
  trim.check();
  const sorted = [...rows].sort((a, b) => a.from - b.from || a.r.start - b.r.start);
  const groups: { from: number; items: typeof rows }[] = [];
  let cur: (typeof groups)[number] | undefined;
  for (const v of sorted) {
    if (!cur || cur.items.length >= chunkRows(T - cur.from, T, D, budget) || (T - cur.from) > 1.08 * (T - v.from) + 1) {
      cur = { from: v.from, items: [] };
      groups.push(cur);
    }
    cur.items.push(v);
  }

  const head = chain.segments[L]!;
  // Reads of single columns of the head's outputs (a token's logit): the head of those columns only.
  const narrow = headColumns(rows.map((v) => v.r));
  const colsHead = narrow ? host.segments.columns(narrow.cols) : undefined;
  if (colsHead) stats.headColumns = [...narrow!.cols.values()].reduce((a, c) => a + c.length, 0);
  const pasts = new Map<string, Tensor>();
  const held = new Set<Value>(); // served values still in the memo
  const pastOf = (pair: BlockChain['cache'][number], rep: number, from: number): Tensor => {
    const key = `${pair.past}/${rep}/${from}`;
    let t = pasts.get(key);
    if (!t) {
      const present = rowOf(kv, pair.present, rep);
      pasts.set(key, (t = sliceAxis(present, pair.axis < 0 ? pair.axis + present.shape.length : pair.axis, 0, from)));
    }
    return t;
  };
  for (const g of groups) {
    pasts.clear(); // keyed by the group's start position: a later group never reuses them
    g.items.sort((a, b) => a.r.start - b.r.start);
    const N = T - g.from;
    // The first position the head reads for any row of the group: with the last block's cache
    // segment, the last block runs in full only from there (its keys and values before it from
    // a run of the cache segment), when that saves at least half of its positions.
    let q = chain.headPositionwise ? T - 1 : g.from;
    for (const v of chain.headPositionwise ? g.items : []) for (const p of v.r.need) if (p >= g.from && p < q) q = p; // (no spread: rows × positions can exceed the argument limit)
    const lastFrom = sp.cached && lastCache && T - q <= N / 2 ? q : g.from;
    const active: typeof rows = [];
    let x: Tensor | null = null;
    let xFrom = g.from; // the first position `x` holds (axis 1)
    // Rows starting at cut j join the batch before segment j (positions of their sets before
    // `xFrom` are left out: only after the last block, where the head reads none of them).
    const join = (j: number): void => {
      const add = g.items.filter((v) => v.r.start === j);
      if (!add.length) return;
      const n = (T - xFrom) * D;
      const data = new Float32Array((active.length + add.length) * n);
      if (x) data.set(x.data as Float32Array);
      add.forEach((v, i) => writeResidual(host, v.r, sel, cleanCut(j, sp.rep.get(v.r.row)!), xFrom, data, (active.length + i) * n, env, memo, D));
      active.push(...add);
      x = { dtype: 'float32', shape: [active.length, T - xFrom, D], data };
    };
    // Feeds of the graph inputs `names` for a run over positions ≥ `from` (`given`: pasts computed by the sweep).
    const feedsFor = (names: readonly string[], from: number, given?: ReadonlyMap<string, Tensor>): Record<string, Tensor> => {
      const f: Record<string, Tensor> = {};
      const batch = active.map((v) => v.r.row);
      for (const name of names) {
        const own = given?.get(name);
        if (own) {
          f[name] = own;
          continue;
        }
        const pair = pairs.find((c) => c.past === name);
        if (pair) {
          // The added cache's blocks broadcast a past of batch 1 over the rows (src/fast/added-cache.ts): one copy when the rows share a prompt.
          const reps = new Set(active.map((v) => sp.rep.get(v.r.row)!));
          f[name] = sp.added && reps.size === 1 ? pastOf(pair, [...reps][0]!, from) : stack(active.map((v) => pastOf(pair, sp.rep.get(v.r.row)!, from)));
          continue;
        }
        f[name] = inputFeed(full, name, batch, sp.cached ? from : 0);
      }
      return f;
    };
    const runSegment = async (i: number | 'cache', feeds: Record<string, Tensor>, fetch: readonly string[]): Promise<Record<string, Tensor>> => {
      const t1 = performance.now();
      const out = await host.mc.backend.run(await host.segments.session(sp.added ? (typeof i === 'number' ? `added${i}` : 'addedcache') : i), feeds, fetch);
      stats.segmentMs += performance.now() - t1;
      stats.runs++;
      return out;
    };
    for (let j = g.items[0]!.r.start; j < L; j++) {
      join(j);
      const seg = segmentAt(j);
      if (j === L - 1 && lastFrom > xFrom) {
        // The last block's keys and values over every position, then the block over positions ≥ lastFrom on them.
        const kv = lastCache!;
        const kvOut = await runSegment('cache', { [kv.input]: x!, ...feedsFor(kv.graphInputs, xFrom) }, kv.modelOutputs);
        const given = new Map<string, Tensor>();
        for (const pair of pairs) {
          const present = kvOut[pair.present];
          if (!present) continue;
          const axis = pair.axis < 0 ? pair.axis + present.shape.length : pair.axis;
          // A model's own cache returns past + new; the added cache's blocks the new positions alone (from xFrom on).
          given.set(pair.past, sp.added
            ? concatAxis(stack(active.map((v) => pastOf(pair, sp.rep.get(v.r.row)!, xFrom))), sliceAxis(present, axis, 0, lastFrom - xFrom), axis)
            : sliceAxis(present, axis, 0, lastFrom));
        }
        const xs = sliceAxis(x!, 1, lastFrom - xFrom, T - xFrom);
        x = (await runSegment(j, { [seg.input]: xs, ...feedsFor(seg.graphInputs, lastFrom, given) }, [seg.next!]))[seg.next!]!;
        xFrom = lastFrom;
        stats.lastBlockCut++;
        continue;
      }
      x = (await runSegment(j, { [seg.input]: x!, ...feedsFor(seg.graphInputs, xFrom) }, [seg.next!]))[seg.next!]!;
    }
    join(L);
    const xs: Tensor = x!;
    // The head at the positions the reads need (relative to xFrom), or at every computed one.
    const need = chain.headPositionwise ? [...new Set(active.flatMap((v) => v.r.need))].filter((p) => p >= xFrom).sort((a, b) => a - b) : Array.from({ length: T - xFrom }, (_, i) => xFrom + i);
    const hx = chain.headPositionwise ? gatherPositions(xs, need.map((p) => p - xFrom)) : xs;
    // Reads of tail outputs only: the head up to the tail's input, then the tail on its module model.
    const wanted = [...new Set(active.flatMap((v) => v.r.reads.map((rd) => rd.output)))];
    const tailHead = !colsHead && host.runTail && chain.tailHead && wanted.every((o) => chain.tailHead!.tail.outputs.has(o)) ? chain.tailHead : undefined;
    const hseg = colsHead?.segment ?? tailHead?.segment ?? head;
    const hfeeds = { [hseg.input]: hx, ...feedsFor(hseg.graphInputs, xFrom) };
    const t2 = performance.now();
    let hout = await host.mc.backend.run(await host.segments.session(colsHead?.key ?? (tailHead ? 'tail' : L)), hfeeds, hseg.modelOutputs);
    if (tailHead) {
      hout = await host.runTail!(hout[tailHead.tail.input]!, wanted);
      stats.tailRuns++;
    }
    stats.segmentMs += performance.now() - t2;
    stats.runs++;
    stats.batches++;
    const written: Value[] = [];
    active.forEach((v, i) => {
      for (const rd of v.r.reads) {
        const o = hout[rd.output]!;
        const mine = selectRows(o, [i]);
        const at = (p: number): number => {
          const k = need.indexOf(p);
          if (k < 0) throw new Error(`internal: position ${p} of ${rd.output} was not computed`);
          return k;
        };
        for (const u of rd.uses) {
          if (u.positions === null) {
            if (need.length !== T) throw new Error('internal: a whole read needs every position');
            memo.set(rd.value, mine);
            written.push(rd.value);
            continue;
          }
          memo.set(u.node.results[0]!, indexTensor(gatherPositions(mine, u.positions.map(at)), (colsHead && narrow!.items.get(u)) || u.items!));
          written.push(u.node.results[0]!);
        }
      }
    });
    host.afterBatch?.(memo, env, written);
    for (const v of written) held.add(v);
    for (const v of held) if (!memo.has(v)) held.delete(v);
    stats.heldMax = Math.max(stats.heldMax, held.size);
    if (trim.check()) stats.trims++;
  }
  stats.totalMs = performance.now() - t0;
  return { env, memo, stats };
}

/**
 * The columns of the head's outputs every read of the changed rows indexes, when each use
 * of each read takes one column (`logits[:, -1, token]`: an index item on the last of the
 * three axes): the sorted columns per output, and each use's items with that index rewritten
 * for a tensor holding just those columns. Undefined when some use takes more (a whole row of
 * logits, a slice of the vocabulary) or a negative column of an output of unknown width.
 */
function headColumns(rows: readonly RowPlan[]): { cols: Map<string, number[]>; items: Map<UsePlan, IndexItem[]> } | undefined {
  const found = new Map<string, Set<number>>();
  const at = new Map<UsePlan, { output: string; item: number; col: number }>();
  for (const r of rows) {
    for (const rd of r.reads) {
      for (const u of rd.uses) {
        if (!u.positions || !u.items) return undefined;
        let axis = 0;
        let item = -1;
        u.items.forEach((it, i) => {
          if (it.kind === 'newaxis') return;
          if (axis === 2) item = i;
          axis++;
        });
        const it = u.items[item];
        if (axis !== 3 || it?.kind !== 'index') return undefined;
        let col = it.index;
        if (col < 0) {
          const n = rd.value.type?.shape?.[2]; // the read's type: [batch, sequence, columns]
          if (typeof n !== 'number') return undefined;
          col += n;
        }
        if (col < 0) return undefined;
        let set = found.get(rd.output);
        if (!set) found.set(rd.output, (set = new Set()));
        set.add(col);
        at.set(u, { output: rd.output, item, col });
      }
    }
  }
  if (found.size === 0) return undefined;
  const cols = new Map([...found].map(([o, set]) => [o, [...set].sort((a, b) => a - b)]));
  const items = new Map<UsePlan, IndexItem[]>();
  for (const [u, { output, item, col }] of at) {
    const its = [...u.items!];
    its[item] = { kind: 'index', index: cols.get(output)!.indexOf(col) };
    items.set(u, its);
  }
  return { cols, items };
}

/** What the last sweep did (benchmarks: where its time went). */
export interface SweepStats {
  /** Changed rows. */
  rows: number;
  /** Batches (each a pass through the segments from its first start). */
  batches: number;
  /** Session runs of segment models (head included). */
  runs: number;
  /** Head runs that ended on the tail's module model ({@link BlockChain.tailHead}). */
  tailRuns: number;
  /** Batches whose last block ran in full only from the first position the head reads ({@link BlockChain.lastCache}). */
  lastBlockCut: number;
  /**
   * Columns of the head's outputs the head computed ({@link headColumns}; the head then reads
   * those columns of the unembedding only), or undefined when it computed whole outputs.
   */
  headColumns?: number;
  /** Times freed batch memory was given back to the system during the sweep (`malloc_trim`, backends/malloc-trim.ts {@link TrimOnGrowth}). */
  trims: number;
  /** Most values served by the batches (model-output reads of changed rows) held at once after a batch ({@link SweepHost.afterBatch} drops those nothing needs any more). */
  heldMax: number;
  /**
   * Whether the variants ran on blocks in the broadcast form of a key/value cache
   * (src/fast/added-cache.ts): a cache added to the blocks of a model without one, or, with
   * {@link ownCache}, the model's own cache rewritten to that form.
   */
  addedCache: boolean;
  /** Whether the model has a key/value cache of its own (a with-past export). */
  ownCache: boolean;
  /** The clean run (and the added cache's pass over the clean prompts). */
  cleanMs: number;
  /** Inside segment session runs. */
  segmentMs: number;
  /** The whole sweep run (clean run, host work, segment runs). */
  totalMs: number;
}

/**
 * The added cache's pass (src/fast/added-cache.ts): each cached block from the first start
 * on, over the clean prompts (one row each), from the clean run's cut with an empty past:
 * its presents are the pasts of the variants. The first time at a sequence length, each
 * block (the first time it runs at that length) is also checked against the clean run: its next cut over every position, and over
 * the second half of the positions on the first half's keys and values, must equal the
 * clean run's (1e-5 of the cut's largest magnitude: passing blocks differ by ≤ 1.1e-7 of it on
 * gpt2-facts' exports, the Llama generator and GPT-2 small, broken ones by ≥ 7.6e-3), and over the first half it must not
 * change when the second half's inputs do (causal attention: a variant changes no earlier
 * position); else the added cache is dropped for the model and the trace takes the ordinary
 * path ({@link SweepFallback}).
 */
async function addedCachePass(host: SweepHost, sp: SweepPlan, added: AddedCache, env: Env, full: Record<string, Tensor>): Promise<Env> {
  const T = sp.seqLen;
  const reps = [...new Set(sp.rep.values())].sort((a, b) => a - b);
  const start = Math.min(...sp.rows.map((r) => r.start));
  const L = added.blocks.length;
  const checked = host.segments.addedChecked;
  const half = T >> 1;
  const clean = (j: number): Tensor => selectRows(env.out[sp.cutFetch.get(j)!]!, reps.map((r) => env.rows.indexOf(r)));
  const out: Record<string, Tensor> = {};
  const run = async (j: number, x: Tensor, from: number, pasts: (p: AddedCache['pairs'][number]) => Tensor): Promise<Record<string, Tensor>> => {
    const seg = added.blocks[j]!;
    const feeds: Record<string, Tensor> = { [seg.input]: x };
    for (const name of seg.graphInputs) {
      const pair = added.pairs.find((p) => p.past === name);
      if (pair) { feeds[name] = pasts(pair); continue; }
      feeds[name] = inputFeed(full, name, reps, from);
    }
    return host.mc.backend.run(await host.segments.session(`added${j}`), feeds, [seg.next!, ...seg.modelOutputs]);
  };
  const differs = (got: Tensor, want: Tensor): string | null => {
    if (got.shape.join() !== want.shape.join()) return `shape [${got.shape}] instead of [${want.shape}]`;
    const a = got.data as Float32Array;
    const b = want.data as Float32Array;
    let scale = 1;
    for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
    let worst = 0;
    for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
    return worst <= 1e-5 * scale ? null : `differs by ${worst.toExponential(2)} (largest magnitude ${scale.toPrecision(3)})`;
  };
  for (let j = start; j < L; j++) {
    const seg = added.blocks[j]!;
    const x = clean(j);
    const empty = (p: AddedCache['pairs'][number]): Tensor => {
      const shape = p.shape.map((d) => (d === 'batch' ? reps.length : d === 'past' ? 0 : d));
      return { dtype: 'float32', shape, data: new Float32Array(0) };
    };
    let why: string | null = null;
    const check = !checked.has(`${T}/${j}`); // each block, the first time at each length
    try {
      const res = await run(j, x, 0, empty);
      for (const o of seg.modelOutputs) out[o] = res[o]!;
      if (!check) continue;
      const next = clean(j + 1);
      why = differs(res[seg.next!]!, next);
      if (!why && half > 0) {
        const part = await run(j, sliceAxis(x, 1, half, T), half, (p) => {
          const present = out[p.present]!;
          return sliceAxis(present, p.axis + present.shape.length, 0, half);
        });
        why = differs(part[seg.next!]!, sliceAxis(next, 1, half, T));
      }
      if (!why && half > 0) {
        // Causal: the first half's outputs do not depend on the second half's inputs (each of
        // those rows' features reversed). A block whose attention sees later positions (an
        // encoder's) would pass the checks above and still be wrong in a sweep, whose variants
        // change later positions: their earlier positions' keys and values would change too.
        const moved = new Float32Array(x.data as Float32Array);
        const D = x.shape[2]!;
        for (let r = 0; r < x.shape[0]!; r++) for (let t = half; t < T; t++) moved.subarray((r * T + t) * D, (r * T + t + 1) * D).reverse();
        const out2 = await run(j, { dtype: 'float32', shape: x.shape, data: moved }, 0, empty);
        if (differs(sliceAxis(out2[seg.next!]!, 1, 0, half), sliceAxis(next, 1, 0, half))) why = 'its attention is not causal (earlier positions read later ones)';
      }
    } catch (e) {
      if (!check || e instanceof SweepFallback) throw e;
      why = `onnxruntime: ${(e as Error).message.split('\n')[0]}`; // a block onnxruntime refuses is one more way of not computing what the model does
    }
    if (why) {
      const reason = `the added key/value cache of block ${j} does not compute what the model does: ${why}`;
      host.segments.dropAdded(reason);
      throw new SweepFallback(reason);
    }
    checked.add(`${T}/${j}`);
  }
  return { out, rows: reps };
}

/**
 * Graph input `name`'s feed (from the whole batch's `full`) for rows `rows` of a run over the
 * positions from `from` on: over a cache, the mask covers past + new positions
 * ({@link fedOverAll}), the other `[batch, sequence]` inputs (token and position ids) the new ones.
 */
function inputFeed(full: Readonly<Record<string, Tensor>>, name: string, rows: readonly number[], from: number): Tensor {
  const t = full[name];
  if (!t) throw new SweepFallback(`no feed for ${name}`);
  const rowsT = selectRows(t, rows);
  return from > 0 && !fedOverAll(name) && rowsT.shape.length === 2 ? sliceInt(rowsT, from) : rowsT;
}

/** Columns `[from, n)` of a `[B, n]` integer tensor. */
function sliceInt(t: Tensor, from: number): Tensor {
  const [B, n] = t.shape as [number, number];
  const Ctor = t.data.constructor as BigInt64ArrayConstructor | Int32ArrayConstructor;
  const data = new Ctor(B * (n - from));
  for (let b = 0; b < B; b++) (data as BigInt64Array).set((t.data as BigInt64Array).subarray(b * n + from, (b + 1) * n), b * (n - from));
  return { dtype: t.dtype, shape: [B, n - from], data } as Tensor;
}
