/**
 * `nns run --param NAME=FILE.json`: the values of a script's `param` declarations, read from
 * JSON tensors in the form `nns run --out` writes them — a tensor `{"dtype", "shape", "data"}`
 * (data flat, row-major; `"NaN"`, `"Infinity"`, `"-Infinity"` as strings), or a results file
 * holding a tensor under NAME (or holding exactly one tensor).
 * @module
 */
import path from 'node:path';
import { usageError } from '../errors.js';
import { NOT_REGULAR, TOO_LARGE, readRegularFile } from '../read-file.js';
import { DTYPES } from '../../ir/ir.js';
import { numel, type DType, type Tensor, type TensorData } from '../tensor.js';

/** Largest `--param` file read (256 MiB). */
const MAX_PARAM_BYTES = 256 * 2 ** 20;

/** Splits one `--param` value `NAME=FILE`. */
export function parseParamFlag(v: string): { name: string; file: string } {
  const eq = v.indexOf('=');
  if (eq <= 0 || eq === v.length - 1) throw usageError('unknown-param', `--param takes NAME=FILE.json, not '${v}'`);
  return { name: v.slice(0, eq), file: v.slice(eq + 1) };
}

/** Typed storage for `dtype` filled from JSON numbers. */
function typedData(dtype: DType, values: readonly number[]): TensorData {
  switch (dtype) {
    case 'float32': return Float32Array.from(values);
    case 'float64': return Float64Array.from(values);
    case 'int32': return Int32Array.from(values);
    case 'int64': return BigInt64Array.from(values, (x) => BigInt(x));
    default: throw new Error(`a ${dtype} param value is not supported (use float32, float64, int32 or int64)`);
  }
}

/**
 * A tensor from its JSON form (`{dtype, shape, data}`), checked: a known dtype, whole
 * non-negative dims, as many numbers as the shape holds.
 * @throws Error with a one-line reason
 */
export function tensorFromJSON(j: unknown): Tensor {
  if (j === null || typeof j !== 'object' || Array.isArray(j)) throw new Error('not a JSON object {dtype, shape, data}');
  const o = j as Record<string, unknown>;
  const dtype = o.dtype ?? 'float32';
  if (typeof dtype !== 'string' || !DTYPES.has(dtype as DType)) throw new Error(`unknown dtype ${JSON.stringify(dtype)}`);
  const shape = o.shape;
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) throw new Error('"shape" must be a list of whole numbers >= 0');
  if (!Array.isArray(o.data)) throw new Error('"data" must be a flat list of numbers');
  const values = (o.data as unknown[]).map((x) => (typeof x === 'number' ? x : x === 'NaN' || x === 'Infinity' || x === '-Infinity' ? Number(x) : undefined));
  const bad = values.findIndex((x) => x === undefined);
  if (bad >= 0) throw new Error(`"data"[${bad}] is not a number`);
  const n = numel(shape as number[]);
  if (values.length !== n) throw new Error(`"data" holds ${values.length} numbers but shape [${shape.join(', ')}] needs ${n}`);
  if (dtype.startsWith('int') && !values.every((x) => Number.isSafeInteger(x))) throw new Error(`"data" of an ${dtype} tensor holds a number that is not whole`);
  return { dtype: dtype as DType, shape: [...(shape as number[])], data: typedData(dtype as DType, values as number[]) };
}

/**
 * Reads the value of param `name` from `file` (relative to `cwd`).
 * @throws NnsError `param-unreadable` (usage) naming the file and why
 */
export function readParamFile(name: string, file: string, cwd: string): Tensor {
  const fail = (why: string): never => {
    throw usageError('param-unreadable', `--param ${name}=${file}: ${why}`);
  };
  let text = '';
  try {
    text = readRegularFile(path.resolve(cwd, file), MAX_PARAM_BYTES).toString('utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    fail(code === 'ENOENT' ? 'no such file' : code === NOT_REGULAR || code === 'EISDIR' ? 'not a regular file' : code === TOO_LARGE ? 'the file is over 256 MiB' : `cannot read it (${code ?? (e as Error).message})`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    fail(`not JSON (${(e as Error).message.split('\n')[0]})`);
  }
  let t: unknown = j;
  if (j !== null && typeof j === 'object' && !Array.isArray(j) && !('data' in j)) {
    // A results file of `nns run --out`: the tensor saved as NAME, or its only tensor.
    const o = j as Record<string, unknown>;
    const keys = Object.keys(o).filter((k) => !k.startsWith('$'));
    if (name in o) t = o[name];
    else if (keys.length === 1) t = o[keys[0]!];
    else fail(keys.length === 0 ? 'holds no tensor' : `a results file without '${name}' (it holds ${keys.slice(0, 5).join(', ')}${keys.length > 5 ? ', ...' : ''})`);
  }
  try {
    return tensorFromJSON(t);
  } catch (e) {
    return fail(`not a JSON tensor: ${(e as Error).message}`);
  }
}
