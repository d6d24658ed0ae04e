/**
 * Host tensors: what saved values come back as, and what the host feeds in.
 * @module
 */
/**
 * Element types the IR and results use (ONNX names in lower case).
 * @category Model
 */
export type DType =
  | 'float32' | 'float16' | 'bfloat16' | 'float64'
  | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'uint16' | 'uint32' | 'uint64'
  | 'bool';

/**
 * Typed storage for a tensor's elements (int64 results are stored as `BigInt64Array`).
 * @category Results
 */
export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | BigUint64Array;

/**
 * A dense, row-major host tensor.
 * @category Results
 */
export interface Tensor {
  /** Element type. */
  readonly dtype: DType;
  /** Dimensions. */
  readonly shape: readonly number[];
  /** Row-major elements. */
  readonly data: TensorData;
}

/**
 * A number in JSON form: finite numbers as themselves, and the values JSON has no literal
 * for as the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (`JSON.stringify` would write
 * them all as `null`). JavaScript's `Number(x)` and Python's `float(x)` read every form back.
 * @category Results
 */
export type JSONNumber = number | 'NaN' | 'Infinity' | '-Infinity';

/**
 * The JSON form of a tensor in results files: `{ dtype, shape, data }`, data as {@link JSONNumber}s.
 * @category Results
 */
export interface TensorJSON {
  dtype: DType;
  shape: number[];
  data: JSONNumber[];
}

/** A number as a {@link JSONNumber} (non-finite values as strings). */
export function toJSONNumber(x: number): JSONNumber {
  return Number.isFinite(x) ? x : (String(x) as 'NaN' | 'Infinity' | '-Infinity');
}

/**
 * Converts a tensor to its JSON form (int64 as plain numbers; NaN and ±Infinity as strings).
 *
 * ```ts
 * const { saves } = await model.trace('The Eiffel Tower is in', (m) => { m.output.logits.save('logits'); });
 * JSON.stringify(tensorToJSON(saves.logits)); // {"dtype":"float32","shape":[1,6,874],"data":[...]}
 * ```
 * @category Results
 */
export function tensorToJSON(t: Tensor): TensorJSON {
  const data: JSONNumber[] = new Array(t.data.length);
  for (let i = 0; i < t.data.length; i++) data[i] = toJSONNumber(Number(t.data[i]));
  return { dtype: t.dtype, shape: [...t.shape], data };
}

/** Number of elements of a shape. */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Reads element `i` of a tensor as a JS number. */
export function elementAt(t: Tensor, i: number): number {
  return Number(t.data[i]);
}

/** Rows `rows` (along the first axis) of a tensor, copied into a new tensor of the same type. */
export function selectRows(t: Tensor, rows: readonly number[]): Tensor {
  const size = numel(t.shape.slice(1));
  const src = t.data as Float32Array;
  const data = new (src.constructor as Float32ArrayConstructor)(rows.length * size);
  rows.forEach((r, i) => data.set(src.subarray(r * size, (r + 1) * size), i * size));
  return { dtype: t.dtype, shape: [rows.length, ...t.shape.slice(1)], data };
}

/** Concatenates two tensors along `axis`. */
export function concatAxis(a: Tensor, b: Tensor, axis: number): Tensor {
  const outer = numel(a.shape.slice(0, axis));
  const n = outer * (numel(a.shape.slice(axis)) + numel(b.shape.slice(axis)));
  const data = new (a.data.constructor as Float32ArrayConstructor)(n);
  concatInto(a, b, axis, data);
  const shape = [...a.shape];
  shape[axis] = a.shape[axis]! + b.shape[axis]!;
  return { dtype: a.dtype, shape, data };
}

/**
 * Writes `a` and `b` concatenated along `axis` into the first elements of `into` (of their
 * element type, overlapping neither): the copy loop of {@link concatAxis}, also used for a
 * buffer the caller owns (src/fast/execute.ts `appendInto`).
 */
export function concatInto(a: Tensor, b: Tensor, axis: number, into: TensorData): void {
  const outer = numel(a.shape.slice(0, axis));
  const ia = numel(a.shape.slice(axis));
  const ib = numel(b.shape.slice(axis));
  const out = into as Float32Array, da = a.data as Float32Array, db = b.data as Float32Array;
  for (let o = 0; o < outer; o++) {
    if (ia) out.set(da.subarray(o * ia, (o + 1) * ia), o * (ia + ib));
    if (ib) out.set(db.subarray(o * ib, (o + 1) * ib), o * (ia + ib) + ia);
  }
}
