/**
 * Recognizing a key/value cache in a graph's inputs and outputs: the "with past" layout of
 * Optimum and Transformers.js decoders. Inputs `past_key_values.{i}.key|value` (rank 4,
 * float, `[batch, heads, past_length, head_dim]` with a symbolic past length, which may be 0),
 * outputs `present.{i}.key|value` (the past with the new positions appended along the past
 * axis), plus `input_ids`, `attention_mask` over past + new positions, and optionally
 * `position_ids` (and `token_type_ids`). Nothing here depends on a particular model: layer
 * count, heads, head size and axis are read from the graph (head sizes left symbolic by the
 * export come from `config.json`).
 * @module
 */
import { modelError, NnsError } from '../errors.js';
import type { FeedInput } from '../model/feeds.js';
import type { ModuleTree } from '../model/types.js';
import { DataType } from '../onnx/proto.js';

/** One cache tensor: a graph input fed from the previous step's matching graph output. */
export interface CacheEntry {
  /** Graph input (`past_key_values.0.key`). */
  input: string;
  /** Graph output (`present.0.key`). */
  output: string;
  /** Shape of an empty cache with batch 1: the past-length axis is 0. */
  emptyShape: number[];
}

/** A graph's cache layout. */
export interface CacheLayout {
  /** Cache tensors in input order. */
  entries: CacheEntry[];
  /** Axis of the past length (2 in the Optimum layout). */
  pastAxis: number;
  /** Whether the graph takes `attention_mask` (over past + new positions). */
  hasMask: boolean;
  /** Whether the graph takes `position_ids`. */
  hasPositions: boolean;
  /** Whether the graph takes `token_type_ids` (fed zeros). */
  hasTokenTypes: boolean;
  /** Element type of the token inputs (`int64` or `int32`). */
  idType: 'int64' | 'int32';
}

const PAST = /^past_key_values\.(\d+)\.(key|value)$/;
const TOKEN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'token_type_ids']);

/**
 * The cache layout of a graph, or `null` when it takes no `past_key_values.*` inputs (a model
 * without a cache: generation recomputes the whole sequence).
 * @throws NnsError `cache-layout` (a model error) when the graph takes cache inputs this
 *   layout cannot explain: an unpaired input or output, a rank other than 4, a non-float
 *   type, a fixed past length, a head size neither the graph nor config.json gives, or an
 *   input onnsight cannot fill.
 */
export function detectCache(inputs: readonly FeedInput[], tree: ModuleTree, config?: Record<string, unknown>): CacheLayout | null {
  const past = inputs.filter((i) => PAST.test(i.name));
  if (past.length === 0) return null;
  const bad = (why: string): NnsError => modelError('cache-layout', `the model's key/value cache inputs cannot be understood: ${why}`, ['onnsight understands the Optimum / Transformers.js "with past" layout: inputs past_key_values.{i}.key|value [batch, heads, past_length, head_dim], outputs present.{i}.key|value']);
  const outputs = new Map(tree.graphOutputs.map((o) => [o.name, o]));
  for (const i of inputs) {
    if (!PAST.test(i.name) && !TOKEN_INPUTS.has(i.name)) throw bad(`the model also requires input "${i.name}", which onnsight cannot fill`);
  }
  const ids = inputs.find((i) => i.name === 'input_ids');
  if (!ids) throw bad('the model has no input_ids input');
  const idType = ids.elemType === DataType.INT64 ? 'int64' : ids.elemType === DataType.INT32 ? 'int32' : undefined;
  if (!idType) throw bad(`input_ids has element type ${ids.elemType}; expected int64 or int32`);
  let pastAxis = -1;
  const entries: CacheEntry[] = [];
  const cfg = config ?? {};
  const heads = Number(cfg.n_head ?? cfg.num_key_value_heads ?? cfg.num_attention_heads ?? NaN);
  const width = Number(cfg.n_embd ?? cfg.hidden_size ?? cfg.d_model ?? NaN);
  for (const p of past) {
    const [, layer, kind] = PAST.exec(p.name)!;
    const out = `present.${layer}.${kind}`;
    if (!outputs.has(out)) throw bad(`input "${p.name}" has no matching output "${out}"`);
    if (p.elemType !== DataType.FLOAT && p.elemType !== DataType.FLOAT16) throw bad(`input "${p.name}" has element type ${p.elemType}; expected float`);
    const dims = p.dims;
    if (!dims || dims.length !== 4) throw bad(`input "${p.name}" has rank ${dims?.length ?? 'unknown'}; expected 4 [batch, heads, past_length, head_dim]`);
    if (typeof dims[2] === 'number') throw bad(`input "${p.name}" has a fixed past length ${dims[2]}`);
    if (pastAxis < 0) pastAxis = 2;
    const size = (d: number | string | undefined, fallback: number, what: string): number => {
      if (typeof d === 'number' && d > 0) return d;
      if (Number.isFinite(fallback) && fallback > 0) return fallback;
      throw bad(`input "${p.name}" leaves its ${what} symbolic and config.json does not give it`);
    };
    const h = size(dims[1], heads, 'head count');
    const hd = size(dims[3], width / heads, 'head size');
    entries.push({ input: p.name, output: out, emptyShape: [1, h, 0, hd] });
  }
  for (const o of outputs.keys()) {
    const m = /^present\.(\d+)\.(key|value)$/.exec(o);
    if (m && !past.some((p) => p.name === `past_key_values.${m[1]}.${m[2]}`)) throw bad(`output "${o}" has no matching input`);
  }
  if (past.some((p) => p.elemType === DataType.FLOAT16)) throw bad('float16 caches are not supported yet');
  return { entries, pastAxis, hasMask: inputs.some((i) => i.name === 'attention_mask'), hasPositions: inputs.some((i) => i.name === 'position_ids'), hasTokenTypes: inputs.some((i) => i.name === 'token_type_ids'), idType };
}
