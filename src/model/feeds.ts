/**
 * Graph feeds for language models: token id rows → `input_ids`, `attention_mask`,
 * `position_ids` (and `token_type_ids`), left-padded, in the element type the graph declares.
 * @module
 */
import { modelError } from '../errors.js';
import type { ModelProto } from '../onnx/proto.js';
import { DataType } from '../onnx/proto.js';
import type { Tensor } from '../tensor.js';

/** A graph input as {@link buildFeeds} needs it. */
export interface FeedInput {
  /** Input name, e.g. `input_ids`. */
  name: string;
  /** ONNX `TensorProto.DataType` number (7 = int64, 6 = int32). */
  elemType: number;
  /** Declared dims: a number for a fixed size, a string (or undefined) for a symbolic one. */
  dims?: (number | string | undefined)[];
}

/** What {@link buildFeeds} returns. */
export interface Feeds {
  /** One tensor per graph input, by name. */
  feeds: Record<string, Tensor>;
  /** Padded sequence length (the longest row). */
  seqLen: number;
  /** Number of pad tokens on the left of each row. */
  padLeft: number[];
}

/** Options of {@link buildFeeds}. */
export interface FeedOptions {
  /** Token id put in padded positions (default 0; pass the tokenizer's pad or eos id). */
  padId?: number;
}

/** The inputs a graph really requires: `graph.input` minus initializers (IR < 4 lists weights as inputs). */
export function graphFeedInputs(model: ModelProto): FeedInput[] {
  const g = model.graph;
  const inits = new Set((g?.initializer ?? []).map((t) => t.name));
  return (g?.input ?? []).filter((v) => v.name !== undefined && !inits.has(v.name)).map((v) => ({
    name: v.name!,
    elemType: v.type?.tensor_type?.elem_type ?? 0,
    dims: v.type?.tensor_type?.shape?.dim?.map((d) => (d.dim_value !== undefined ? Number(d.dim_value) : d.dim_param)),
  }));
}

/**
 * Builds the feeds for a batch of token id rows. Rows of unequal length are padded on the
 * left with `padId`; `attention_mask` is 1 on tokens and 0 on pads; `position_ids` is
 * `cumsum(mask) - 1` clamped at 0 (pads get 0), as Hugging Face computes it for left-padded
 * batches; `token_type_ids` is all 0; key/value cache inputs (`past_key_values.{i}.key|value`,
 * `[batch, heads, past, head_dim]`) are empty (past length 0). Each is produced only when the graph takes it.
 * @throws NnsError `feeds-empty` for no rows or an empty row, `feeds-unknown-input` for a
 *   graph input this function cannot fill (named), `feeds-dtype` for an input that is not
 *   int32/int64, `feeds-shape` when the graph fixes a batch or sequence size the rows don't have,
 *   `feeds-padding` when rows need padding but the graph takes no `attention_mask` (it would
 *   attend to the pads: e.g. dynamo exports that build their mask inside).
 */
export function buildFeeds(inputs: FeedInput[], rows: number[][], opts: FeedOptions = {}): Feeds {
  if (rows.length === 0) throw modelError('feeds-empty', 'no input rows: give at least one prompt');
  const empty = rows.findIndex((r) => r.length === 0);
  if (empty >= 0) throw modelError('feeds-empty', `input row ${empty} has no tokens`);
  const batch = rows.length;
  const seqLen = Math.max(...rows.map((r) => r.length));
  const padLeft = rows.map((r) => seqLen - r.length);
  if (padLeft.some((p) => p > 0) && !inputs.some((i) => i.name === 'attention_mask')) {
    throw modelError('feeds-padding', `the prompts of one batch have different lengths (${[...new Set(rows.map((r) => r.length))].join(', ')} tokens), but this model takes no attention_mask, so padding would change its results; use prompts of equal length or separate traces`);
  }
  const padId = opts.padId ?? 0;
  const n = batch * seqLen;
  const values = new Map<string, (b: number, t: number) => number>();
  values.set('input_ids', (b, t) => (t < padLeft[b]! ? padId : rows[b]![t - padLeft[b]!]!));
  values.set('attention_mask', (b, t) => (t < padLeft[b]! ? 0 : 1));
  values.set('position_ids', (b, t) => Math.max(0, t - padLeft[b]!));
  values.set('token_type_ids', () => 0);

  const feeds: Record<string, Tensor> = {};
  for (const input of inputs) {
    // A key/value cache input (the Optimum "with past" layout) is empty in a plain forward pass.
    const d = input.dims;
    if (/^past_key_values\.\d+\.(key|value)$/.test(input.name) && input.elemType === DataType.FLOAT && d?.length === 4 && typeof d[1] === 'number' && typeof d[3] === 'number') {
      feeds[input.name] = { dtype: 'float32', shape: [batch, d[1], 0, d[3]], data: new Float32Array(0) };
      continue;
    }
    const fill = values.get(input.name);
    if (!fill) {
      throw modelError('feeds-unknown-input', `the model requires input "${input.name}", which onnsight cannot fill (it feeds input_ids, attention_mask, position_ids, token_type_ids)`);
    }
    const dims = input.dims;
    if (dims && dims.length !== 2) throw modelError('feeds-shape', `model input "${input.name}" has rank ${dims.length}; expected [batch, sequence]`);
    const fixed = [batch, seqLen];
    dims?.forEach((d, i) => {
      if (typeof d === 'number' && d > 0 && d !== fixed[i]) {
        throw modelError('feeds-shape', `model input "${input.name}" has fixed ${i === 0 ? 'batch size' : 'sequence length'} ${d}, but the input has ${fixed[i]}`);
      }
    });
    if (input.elemType === DataType.INT64) {
      const data = new BigInt64Array(n);
      for (let b = 0; b < batch; b++) for (let t = 0; t < seqLen; t++) data[b * seqLen + t] = BigInt(fill(b, t));
      feeds[input.name] = { dtype: 'int64', shape: [batch, seqLen], data };
    } else if (input.elemType === DataType.INT32) {
      const data = new Int32Array(n);
      for (let b = 0; b < batch; b++) for (let t = 0; t < seqLen; t++) data[b * seqLen + t] = fill(b, t);
      feeds[input.name] = { dtype: 'int32', shape: [batch, seqLen], data };
    } else {
      throw modelError('feeds-dtype', `model input "${input.name}" has element type ${input.elemType}; expected int64 (7) or int32 (6)`);
    }
  }
  return { feeds, seqLen, padLeft };
}
