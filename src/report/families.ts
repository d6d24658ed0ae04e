/**
 * Results as a researcher reads them: saves made in loops (`paris.2.5`, `lens.3`) grouped
 * into families — one stacked tensor per family with its index names and index values —
 * plus the prompts and their token strings. `nns run --out` writes these under the keys
 * `$families` and `$prompts` next to the saves; plots and the HTML report read them.
 * @module
 */
import type { Script, Statement } from '../../grammar/ast.js';
import type { Graph } from '../../ir/ir.js';
import type { Tensor } from '../tensor.js';
import { numel } from '../tensor.js';

/**
 * A family of saves: `NAME.I`, `NAME.I.J`, ... stacked. `shape` is the index dimensions
 * followed by the members' own shape; `data` is row-major, `NaN` where a combination of
 * indices was not saved.
 * @category Results
 */
export interface Family {
  /** The family's name (`paris`). */
  name: string;
  /** One name per index dimension: the loop variables when known (`['l', 'p']`), else `i0`, `i1`, ... */
  indexNames: string[];
  /** The index values along each index dimension, ascending (`[[0, 1, 2, 3], [0, ..., 7]]`). */
  indices: number[][];
  /** Index dimensions, then the members' shape. */
  shape: number[];
  /** The members' shape (`[1]` for `probs[:, 383]`). */
  valueShape: number[];
  /**
   * Stacked values (float32; int64 members as numbers). When the float32 members lie one
   * after another in one buffer, in stacking order (a remote trace's result), this is a view
   * over them (no copy): the same memory as the members' data.
   */
  data: Float32Array;
  /** Member save names in stacking order. */
  members: string[];
}

/**
 * A prompt of a run, with its tokens as text.
 * @category Results
 */
export interface PromptInfo {
  /** The text, when the prompt was text. */
  text?: string;
  /** Token ids. */
  tokens: number[];
  /** Each token as it reads in decoded text (`' Paris'`), when there is a tokenizer. */
  tokenStrings?: string[];
  /** How many batch rows (invokes) used this prompt. */
  rows: number;
}

/**
 * `$families` in `--out` JSON: a family without typed arrays.
 * @category Results
 */
export interface FamilyJSON {
  indexNames: string[];
  indices: number[][];
  shape: number[];
  valueShape: number[];
  dtype: 'float32';
  /** Stacked values; `null` where a member is missing. */
  data: (number | null)[];
  members: string[];
  /** For members whose last dimension is the vocabulary: the top tokens of each index cell's last row (row-major over the index dimensions; empty for a missing member). */
  topTokens?: { token: string; id: number; p: number }[][];
}

const MEMBER = /^(.+?)((?:\.\d+)+)$/;

/**
 * Groups saves named `NAME.I[.J...]` (what loops produce) into families. A family needs at
 * least two members with the same number of indices, shape and a numeric dtype.
 * `indexNames` maps a family name to its loop variables (`nns run` takes them from the script's loops).
 *
 * ```ts
 * const { saves } = await model.trace(prompt, (m) => {
 *   for (let l = 0; l < 4; l++) m.transformer.h[l].output.at(':', -1, ':').norm(-1).save(`norm.${l}`);
 * });
 * groupFamilies(saves)[0]; // { name: 'norm', indexNames: ['i0'], indices: [[0, 1, 2, 3]], shape: [4, 1], ... }
 * ```
 * @category Results
 */
export function groupFamilies(saves: ReadonlyMap<string, Tensor> | Readonly<Record<string, Tensor>>, indexNames: ReadonlyMap<string, string[]> = new Map()): Family[] {
  const entries = saves instanceof Map ? [...saves] : Object.entries(saves as Record<string, Tensor>);
  const groups = new Map<string, { idx: number[]; name: string; t: Tensor }[]>();
  for (const [name, t] of entries) {
    const m = MEMBER.exec(name);
    if (!m) continue;
    const idx = m[2]!.slice(1).split('.').map(Number);
    let g = groups.get(m[1]!);
    if (!g) groups.set(m[1]!, (g = []));
    g.push({ idx, name, t });
  }
  const out: Family[] = [];
  for (const [base, ms] of groups) {
    if (ms.length < 2) continue;
    const rank = ms[0]!.idx.length;
    const vshape = [...ms[0]!.t.shape];
    if (!ms.every((x) => x.idx.length === rank && x.t.dtype !== 'bool' && x.t.shape.length === vshape.length && x.t.shape.every((d, i) => d === vshape[i]))) continue;
    const indices = Array.from({ length: rank }, (_, d) => [...new Set(ms.map((x) => x.idx[d]!))].sort((a, b) => a - b));
    const shape = [...indices.map((v) => v.length), ...vshape];
    const per = numel(vshape);
    const order = [...ms].sort((a, b) => { for (let d = 0; d < rank; d++) if (a.idx[d] !== b.idx[d]) return a.idx[d]! - b.idx[d]!; return 0; });
    const names = indexNames.get(base);
    const family = (data: Float32Array): Family => ({
      name: base,
      indexNames: names && names.length === rank ? [...names] : Array.from({ length: rank }, (_, d) => `i${d}`),
      indices, shape, valueShape: vshape, data, members: order.map((x) => x.name),
    });
    const flatOf = (x: { idx: number[] }): number => {
      let flat = 0;
      for (let d = 0; d < rank; d++) flat = flat * indices[d]!.length + indices[d]!.indexOf(x.idx[d]!);
      return flat;
    };
    const view = order.every((x, k) => flatOf(x) === k) ? adjacent(order.map((x) => x.t.data), per, numel(shape)) : undefined;
    if (view) {
      out.push(family(view));
      continue;
    }
    const data = new Float32Array(numel(shape)).fill(NaN);
    for (const x of order) {
      const flat = flatOf(x);
      const src = x.t.data;
      // Typed-array copy (a memcpy for float32; the same ToNumber conversion otherwise); 64-bit integers element by element.
      if (src instanceof BigInt64Array || src instanceof BigUint64Array) for (let i = 0; i < per; i++) data[flat * per + i] = Number(src[i]);
      else data.set(src.length === per ? src : src.subarray(0, per), flat * per);
    }
    out.push(family(data));
  }
  return out;
}

/**
 * The stacked data as a view, when the members (one per cell, in stacking order: checked by
 * the caller) fill every cell and are float32 arrays of `per` values lying one right after another in
 * one buffer; else undefined (they are copied).
 */
function adjacent(datas: readonly Tensor['data'][], per: number, cells: number): Float32Array | undefined {
  if (datas.length !== cells / per || datas.length === 0) return undefined;
  const first = datas[0]!;
  if (!(first instanceof Float32Array)) return undefined;
  for (let k = 0; k < datas.length; k++) {
    const d = datas[k]!;
    if (!(d instanceof Float32Array) || d.buffer !== first.buffer || d.length !== per || d.byteOffset !== first.byteOffset + k * per * 4) return undefined;
  }
  return new Float32Array(first.buffer, first.byteOffset, cells);
}

/**
 * The loop variables around each name bound in a script: `NAME → ['l', 'p']` for
 * `for l ... { for p ... { NAME = ....save() } }` (a family's index names).
 */
export function loopIndexNames(script: Script): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const walk = (stmts: readonly Statement[], loops: string[]): void => {
    for (const s of stmts) {
      if (s.kind === 'For') walk(s.body, [...loops, s.name]);
      else if (s.kind === 'Invoke') walk(s.body, loops);
      else if (s.kind === 'Bind' && loops.length && !out.has(s.name)) out.set(s.name, loops);
    }
  };
  for (const t of script.statements) if (t.kind === 'Trace') walk(t.body, []);
  return out;
}

/** A family as `$families` JSON. */
export function familyToJSON(f: Family, topTokens?: FamilyJSON['topTokens']): FamilyJSON {
  return {
    indexNames: f.indexNames, indices: f.indices, shape: f.shape, valueShape: f.valueShape, dtype: 'float32',
    data: Array.from(f.data, (v) => (Number.isNaN(v) ? null : v)), members: f.members, ...(topTokens ? { topTokens } : {}),
  };
}

/** A family back from `$families` JSON. */
export function familyFromJSON(name: string, j: FamilyJSON): Family {
  return { name, indexNames: j.indexNames, indices: j.indices, shape: j.shape, valueShape: j.valueShape, data: Float32Array.from(j.data, (v) => (v === null ? NaN : v)), members: j.members };
}

/**
 * The top `k` entries of the last row of each member of a family whose last dimension is
 * the vocabulary (`vocab`), as probabilities: the values themselves when each row already
 * sums to 1, else their softmax.
 */
export function familyTopTokens(f: Family, vocab: number, tokenToString: (id: number) => string, k = 5): FamilyJSON['topTokens'] | undefined {
  if (f.valueShape.at(-1) !== vocab) return undefined;
  const per = numel(f.valueShape);
  const cells = f.data.length / per;
  const out: NonNullable<FamilyJSON['topTokens']> = [];
  for (let m = 0; m < cells; m++) {
    const row = f.data.subarray(m * per + per - vocab, m * per + per);
    if (Number.isNaN(row[0])) { out.push([]); continue; }
    let sum = 0;
    let max = -Infinity;
    for (const v of row) { sum += v; max = Math.max(max, v); }
    const isProb = Math.abs(sum - 1) < 1e-3 && row.every((v) => v >= 0);
    let z = 0;
    const p = Array.from(row, (v) => (isProb ? v : Math.exp(v - max)));
    if (!isProb) { for (const v of p) z += v; for (let i = 0; i < p.length; i++) p[i]! /= z; }
    const top = p.map((v, id) => [v, id] as const).sort((a, b) => b[0] - a[0]).slice(0, k);
    out.push(top.map(([pv, id]) => ({ token: tokenToString(id), id, p: pv })));
  }
  return out;
}

/**
 * The distinct prompts of a lowered trace's invokes, in order, each with the number of rows
 * (invokes) that use it and, with a tokenizer, its tokens as strings.
 */
export function promptsOf(graph: Graph, tok: { tokenToString(id: number): string } | undefined): PromptInfo[] {
  const seen = new Map<string, PromptInfo>();
  for (const sc of graph.scopes.slice(1)) {
    const tokens = [...(sc.tokens ?? [])];
    const key = tokens.join(',');
    const p = seen.get(key);
    if (p) {
      p.rows++;
      continue;
    }
    seen.set(key, { ...(sc.prompt !== undefined ? { text: sc.prompt } : {}), tokens, ...(tok ? { tokenStrings: tokens.map((id) => tok.tokenToString(id)) } : {}), rows: 1 });
  }
  return [...seen.values()];
}
