/**
 * Host kernels: the IR's pure operations on host {@link Tensor}s, computed the way
 * the ONNX lowering computes them (passes/lower-onnx.ts) so that results taken on the
 * fast path agree with the compiled path. Elementwise float32 arithmetic rounds every
 * result to float32 (`Math.fround`), which makes `+ - * /`, `neg`, `abs`, `relu`, index,
 * reshape and transpose bit-identical to onnxruntime; `exp`/`log`/`sqrt`, reductions,
 * softmax (max subtracted, exp, sum, divide) and matmul accumulate in float64 and round
 * once, so they agree with onnxruntime's vectorized kernels to a few float32 ulps.
 *
 * The op catalogue (ir/ops.ts) binds each op to these kernels; its `evalOp` is the one host
 * evaluator, used by constant folding and by the fast path alike.
 * @module
 */
import type { DType, IndexItem } from './ir.js';
import { broadcast, expandItems, reshapeShape, sliceRange } from './shape.js';
import { numel, type Tensor, type TensorData } from '../src/tensor.js';

/** A value the host evaluator cannot compute (bad shapes, indices out of range, unsupported dtype or op). */
export class HostEvalError extends Error {}

/**
 * Most elements the host evaluator computes in one operation (it works in float64 with
 * index tables: ~20 bytes per element). Bigger results are a {@link HostEvalError} (the
 * fast path then leaves the trace to the compiled path, folding leaves the op to
 * onnxruntime), raised before anything is allocated.
 */
export const HOST_MAX_ELEMENTS = 2 ** 25;

/** Throws a HostEvalError when a result of `shape` is over {@link HOST_MAX_ELEMENTS}. */
function room(shape: readonly number[]): void {
  const n = shape.reduce((p, d) => p * d, 1);
  if (n > HOST_MAX_ELEMENTS) throw new HostEvalError(`a result of ${n} elements [${shape.join(', ')}] is too large for the host evaluator`);
}

/** Row-major strides of a shape. */
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** Allocates storage of a dtype, filled from `values` (numbers, rounded/truncated as the dtype holds them). */
export function makeData(dtype: DType, n: number, values?: ArrayLike<number>): TensorData {
  switch (dtype) {
    case 'float32': return values ? Float32Array.from(values as ArrayLike<number>) : new Float32Array(n);
    case 'float64': return values ? Float64Array.from(values) : new Float64Array(n);
    case 'int64': return values ? BigInt64Array.from(Array.from(values, (x) => BigInt(Math.trunc(x)))) : new BigInt64Array(n);
    case 'int32': return values ? Int32Array.from(values, Math.trunc) : new Int32Array(n);
    case 'bool': case 'uint8': return values ? Uint8Array.from(values, (x) => (dtype === 'bool' ? (x ? 1 : 0) : x)) : new Uint8Array(n);
    default: throw new HostEvalError(`dtype ${dtype} is not supported`);
  }
}

/** A tensor from numbers. */
export function tensorOf(dtype: DType, shape: readonly number[], values: ArrayLike<number>): Tensor {
  return { dtype, shape: [...shape], data: makeData(dtype, values.length, values) };
}

/** The elements of a tensor as float64 numbers. */
export function nums(t: Tensor): Float64Array {
  if (t.data instanceof BigInt64Array || t.data instanceof BigUint64Array) return Float64Array.from(t.data as ArrayLike<bigint>, Number);
  return Float64Array.from(t.data as ArrayLike<number>);
}

/** Flat offsets into `x` of every element of a broadcast result of shape `out`. */
function broadcastOffsets(xShape: readonly number[], out: readonly number[]): Int32Array {
  const n = numel(out);
  const st = strides(xShape);
  const pad = out.length - xShape.length;
  const res = new Int32Array(n);
  const idx = new Array<number>(out.length).fill(0);
  for (let i = 0; i < n; i++) {
    let k = 0;
    for (let a = pad; a < out.length; a++) if (xShape[a - pad] !== 1) k += idx[a]! * st[a - pad]!;
    res[i] = k;
    for (let a = out.length - 1; a >= 0; a--) { if (++idx[a]! < out[a]!) break; idx[a] = 0; }
  }
  return res;
}

/** Broadcasts `x` to `shape` (numpy rules; throws when it does not broadcast to exactly `shape`). */
export function broadcastTo(x: Tensor, shape: readonly number[]): Tensor {
  const b = broadcast(x.shape, shape) as number[] | null;
  if (b === null || b.length !== shape.length || b.some((d, i) => d !== shape[i])) throw new HostEvalError(`cannot broadcast [${x.shape}] to [${shape}]`);
  room(shape);
  const off = broadcastOffsets(x.shape, shape);
  const data = makeData(x.dtype, off.length);
  const src = x.data;
  for (let i = 0; i < off.length; i++) (data as Float32Array)[i] = (src as Float32Array)[off[i]!]!;
  return { dtype: x.dtype, shape: [...shape], data };
}

/** numpy basic indexing (negative indices, slices with steps, `...`, newaxis), as ONNX Slice/Gather/Unsqueeze compute it. */
export function indexTensor(x: Tensor, items: readonly IndexItem[]): Tensor {
  const full = expandItems(items, x.shape.length);
  if (!Array.isArray(full)) throw new HostEvalError(`${full.message}`);
  const st = strides(x.shape);
  // Trailing items that take whole axes (full slices, no new axes after them) select
  // contiguous blocks: offsets are computed for the leading items only, blocks are copied.
  let lead = full.length;
  let block = 1;
  for (let i = full.length - 1, a = x.shape.length - 1; i >= 0; i--, a--) {
    const it = full[i]!;
    if (it.kind !== 'slice' || a < 0) break;
    const n = x.shape[a]!;
    const { start, step, len } = sliceRange(n, it);
    if (start !== 0 || step !== 1 || len !== n) break;
    lead = i;
    block *= n;
  }
  const shape: number[] = [];
  let offs = [0];
  let axis = 0;
  for (const it of full.slice(0, lead)) {
    if (it.kind === 'newaxis') { shape.push(1); continue; }
    const n = x.shape[axis]!;
    if (it.kind === 'index') {
      if (it.index >= n || it.index < -n) throw new HostEvalError(`index ${it.index} out of range for size ${n}`);
      const j = it.index < 0 ? it.index + n : it.index;
      offs = offs.map((o) => o + j * st[axis]!);
    } else if (it.kind === 'slice') {
      const { start, step, len } = sliceRange(n, it);
      const next = new Array<number>(offs.length * len);
      for (let a = 0; a < offs.length; a++) for (let i = 0; i < len; i++) next[a * len + i] = offs[a]! + (start + i * step) * st[axis]!;
      offs = next;
      shape.push(len);
    }
    axis++;
  }
  shape.push(...x.shape.slice(axis));
  const data = makeData(x.dtype, offs.length * block);
  if (block === 1) {
    for (let i = 0; i < offs.length; i++) (data as Float32Array)[i] = (x.data as Float32Array)[offs[i]!]!;
  } else {
    for (let i = 0; i < offs.length; i++) (data as Float32Array).set((x.data as Float32Array).subarray(offs[i]!, offs[i]! + block), i * block);
  }
  return { dtype: x.dtype, shape, data };
}

/** Converts a tensor to another dtype (what the lowering's Cast does). */
export function castTo(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  return tensorOf(dtype, x.shape, nums(x));
}

/** Iterates lines along axis `d`: calls `fn(base, step, len)` for every combination of the other axes. */
function lines(shape: readonly number[], d: number, fn: (base: number, step: number, len: number, line: number) => void): void {
  const st = strides(shape);
  const len = shape[d]!;
  const outer = numel(shape.slice(0, d));
  const inner = st[d]!;
  let line = 0;
  for (let o = 0; o < outer; o++) for (let i = 0; i < inner; i++) fn(o * len * inner + i, inner, len, line++);
}

/** A dimension index normalized against `rank` (negative counts from the end). */
export function axis(dim: number, rank: number): number {
  const d = dim < 0 ? dim + rank : dim;
  if (d < 0 || d >= rank) throw new HostEvalError(`dimension ${dim} out of range for rank ${rank}`);
  return d;
}

/** Reduction along `dim` (all axes when null) with `f(values) → number`. */
export function reduce(x: Tensor, dim: number | null, keepdim: boolean, outType: DType, f: (v: Float64Array) => number): Tensor {
  const v = nums(x);
  if (dim === null) return tensorOf(outType, keepdim ? x.shape.map(() => 1) : [], [f(v)]);
  const d = axis(dim, x.shape.length);
  const out: number[] = [];
  lines(x.shape, d, (base, step, len) => {
    const line = new Float64Array(len);
    for (let i = 0; i < len; i++) line[i] = v[base + i * step]!;
    out.push(f(line));
  });
  const shape = keepdim ? x.shape.map((s, i) => (i === d ? 1 : s)) : x.shape.filter((_, i) => i !== d);
  return tensorOf(outType, shape, out);
}

/** Softmax / log-softmax along `dim` like onnxruntime's MLAS kernel: subtract the max, exp, sum, multiply by 1/sum (or add −log sum). */
export function softmax(x: Tensor, dim: number, log: boolean, dtype: DType): Tensor {
  if (dtype === 'float32' && (x.data instanceof Float32Array || x.data instanceof Float64Array)) return softmax32(x, dim, log);
  const f32 = dtype === 'float32';
  const r = (v: number): number => (f32 ? Math.fround(v) : v);
  const v = nums(x);
  const out = new Float64Array(v.length);
  lines(x.shape, axis(dim, x.shape.length), (base, step, len) => {
    let m = -Infinity;
    for (let i = 0; i < len; i++) m = Math.max(m, v[base + i * step]!);
    let s = 0;
    for (let i = 0; i < len; i++) {
      const k = base + i * step;
      const e = r(Math.exp(r(v[k]! - m)));
      out[k] = e; // kept for the second pass (one exp per element)
      s += e;
    }
    const sum = r(s);
    const inv = r(1 / sum);
    const negLogSum = r(-Math.log(sum));
    for (let i = 0; i < len; i++) {
      const k = base + i * step;
      out[k] = log ? r(v[k]! - m) + negLogSum : out[k]! * inv;
    }
  });
  return tensorOf(dtype, x.shape, out);
}

/**
 * {@link softmax} into float32 from float data: the same operations, each result rounded to
 * float32 where the general version rounds it (`Math.fround`, or its store into the float32
 * result), without the float64 copies — a logit lens softmaxes 12 × 50 257 values per trace.
 */
function softmax32(x: Tensor, dim: number, log: boolean): Tensor {
  const v = x.data as Float32Array | Float64Array;
  const out = new Float32Array(v.length);
  const f = Math.fround;
  lines(x.shape, axis(dim, x.shape.length), (base, step, len) => {
    const end = base + len * step;
    let m = -Infinity;
    for (let k = base; k < end; k += step) m = Math.max(m, v[k]!);
    let s = 0;
    for (let k = base; k < end; k += step) {
      out[k] = Math.exp(f(v[k]! - m)); // stored as float32: rounded as the general version rounds it
      s += out[k]!;
    }
    const sum = f(s);
    if (log) {
      const negLogSum = f(-Math.log(sum));
      for (let k = base; k < end; k += step) out[k] = f(v[k]! - m) + negLogSum;
    } else {
      const inv = f(1 / sum);
      for (let k = base; k < end; k += step) out[k] = out[k]! * inv;
    }
  });
  return { dtype: 'float32', shape: [...x.shape], data: out };
}

/** PyTorch matmul (1-D operands promoted and squeezed, batch dims broadcast); float64 accumulation. */
export function matmul(a: Tensor, b: Tensor, dtype: DType): Tensor {
  const as = a.shape.length === 1 ? [1, a.shape[0]!] : [...a.shape];
  const bs = b.shape.length === 1 ? [b.shape[0]!, 1] : [...b.shape];
  const [m, k] = [as[as.length - 2]!, as[as.length - 1]!];
  const [k2, n] = [bs[bs.length - 2]!, bs[bs.length - 1]!];
  if (k !== k2) throw new HostEvalError('matmul inner dimensions differ');
  const batch = broadcast(as.slice(0, -2), bs.slice(0, -2)) as number[] | null;
  if (batch === null) throw new HostEvalError('matmul batch dimensions do not broadcast');
  room([...batch, m, n]);
  const ao = broadcastOffsets(as.slice(0, -2), batch);
  const bo = broadcastOffsets(bs.slice(0, -2), batch);
  const av = nums(a);
  const bv = nums(b);
  const out = new Float64Array(ao.length * m * n);
  for (let p = 0; p < ao.length; p++) {
    const A = ao[p]! * m * k;
    const B = bo[p]! * k * n;
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += av[A + i * k + q]! * bv[B + q * n + j]!;
      out[(p * m + i) * n + j] = s;
    }
  }
  const shape = [...batch];
  if (a.shape.length > 1) shape.push(m);
  if (b.shape.length > 1) shape.push(n);
  return tensorOf(dtype, shape, out);
}

/** `f` on every element of `x` (cast to `dtype` first), in `dtype`. */
export function map1(x: Tensor, dtype: DType, f: (v: number) => number): Tensor {
  return tensorOf(dtype, x.shape, Array.from(nums(castTo(x, dtype)), f));
}

/** `f` on the broadcast elements of `x` and `y` (both cast to `dtype` first), in `dtype`. */
export function map2(x: Tensor, y: Tensor, dtype: DType, f: (a: number, b: number) => number): Tensor {
  const [p, q] = [castTo(x, dtype), castTo(y, dtype)];
  const shape = broadcast(p.shape, q.shape) as number[] | null;
  if (shape === null) throw new HostEvalError('shapes do not broadcast');
  room(shape);
  const [pv, qv] = [nums(p), nums(q)];
  const [po, qo] = [broadcastOffsets(p.shape, shape), broadcastOffsets(q.shape, shape)];
  const out = new Float64Array(po.length);
  for (let i = 0; i < out.length; i++) out[i] = f(pv[po[i]!]!, qv[qo[i]!]!);
  return tensorOf(dtype, shape, out);
}

/** A tensor of `x`'s shape filled with `value`, in `dtype`. */
export function fill(x: Tensor, dtype: DType, value: number): Tensor {
  return tensorOf(dtype, x.shape, new Float64Array(numel(x.shape)).fill(value));
}

/** Reshape, PyTorch semantics (`-1` infers one dimension); the data is shared. */
export function reshape(x: Tensor, target: readonly number[]): Tensor {
  const r = reshapeShape(x.shape, target);
  if ('code' in r) throw new HostEvalError(r.message);
  return { dtype: x.dtype, shape: r.shape as number[], data: x.data };
}

/** Swaps two dimensions. */
export function transpose(x: Tensor, dim0: number, dim1: number): Tensor {
  const r = x.shape.length;
  const [d0, d1] = [axis(dim0, r), axis(dim1, r)];
  const perm = Array.from({ length: r }, (_, i) => (i === d0 ? d1 : i === d1 ? d0 : i));
  const shape = perm.map((p) => x.shape[p]!);
  const st = strides(x.shape);
  const pst = perm.map((p) => st[p]!);
  const n = numel(shape);
  const data = makeData(x.dtype, n);
  const idx = new Array<number>(r).fill(0);
  for (let i = 0; i < n; i++) {
    let k = 0;
    for (let j = 0; j < r; j++) k += idx[j]! * pst[j]!;
    (data as Float32Array)[i] = (x.data as Float32Array)[k]!;
    for (let j = r - 1; j >= 0; j--) { if (++idx[j]! < shape[j]!) break; idx[j] = 0; }
  }
  return { dtype: x.dtype, shape, data };
}

/** The `k` largest values along `dim` (sorted, ties by lower index) and their int64 indices. */
export function topk(x: Tensor, k: number, dim: number): [Tensor, Tensor] {
  const d = axis(dim, x.shape.length);
  const v = nums(x);
  const shape = x.shape.map((s, i) => (i === d ? k : s));
  const vals = new Float64Array(numel(shape));
  const inds = new Float64Array(vals.length);
  const ost = strides(shape);
  lines(x.shape, d, (base, step, len, line) => {
    const order = Array.from({ length: len }, (_, i) => i).sort((p, q) => v[base + q * step]! - v[base + p * step]! || p - q);
    const inner = step;
    const obase = Math.floor(line / inner) * k * inner + (line % inner);
    for (let i = 0; i < k; i++) {
      vals[obase + i * ost[d]!] = v[base + order[i]! * step]!;
      inds[obase + i * ost[d]!] = order[i]!;
    }
  });
  return [tensorOf(x.dtype, shape, vals), tensorOf('int64', shape, inds)];
}

/** Index of the maximum along `dim` (first on ties), int64. */
export function argmax(x: Tensor, dim: number, keepdim: boolean): Tensor {
  return reduce(x, dim, keepdim, 'int64', (v) => { let b = 0; for (let i = 1; i < v.length; i++) if (v[i]! > v[b]!) b = i; return b; });
}
