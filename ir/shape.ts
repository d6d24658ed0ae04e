/**
 * Shape and dtype rules shared by type inference and constant folding: numpy broadcasting,
 * PyTorch matmul, reductions, reshape, transpose and indexing over symbolic shapes.
 *
 * A {@link Dim} is a number or a symbol (`sequence`). Symbols whose value is known for the
 * trace (`graph.dimValues`) are resolved for range and size checks but kept symbolic in
 * results where the whole dimension passes through unchanged. `'?'` is an unknown size.
 * @module
 */
import type { Dim, DType, IndexItem, TensorType } from './ir.js';
import type { ErrorCode } from '../src/error-codes.js';

/** Known values of symbolic dims (`{ sequence: 8 }`). */
export type DimValues = Readonly<Record<string, number>>;

/** A shape rule's outcome: the result shape, or a user-facing problem. */
export type ShapeResult = { shape: Dim[] } | { code: ErrorCode; message: string };

/** `[1, sequence, 128]`; `[*]` for unknown rank. */
export function formatShape(shape: readonly Dim[] | null): string {
  return shape === null ? '[*]' : `[${shape.join(', ')}]`;
}

/** `float32[1, sequence, 128]`; `?` when the type is unknown. */
export function formatType(t: TensorType | null): string {
  return t === null ? '?' : `${t.dtype}${formatShape(t.shape)}`;
}

/** An index expression in Python syntax: `:, -1, 2:5:2, ..., None`. */
export function formatItems(items: readonly IndexItem[]): string {
  return items
    .map((it) => {
      switch (it.kind) {
        case 'index': return String(it.index);
        case 'ellipsis': return '...';
        case 'newaxis': return 'None';
        case 'slice': {
          const s = `${it.start ?? ''}:${it.stop ?? ''}`;
          return it.step === undefined ? s : `${s}:${it.step}`;
        }
      }
    })
    .join(', ');
}

/** The concrete size of a dim, or null when it is an unresolved symbol. */
export function dimSize(d: Dim, dims: DimValues = {}): number | null {
  if (typeof d === 'number') return d;
  const v = dims[d];
  return v === undefined ? null : v;
}

/** Describe a dim for messages: `8 (sequence)` or `8`; null when unknown. */
export function describeDim(d: Dim, dims: DimValues): string | null {
  const n = dimSize(d, dims);
  if (n === null) return null;
  return typeof d === 'number' ? String(n) : `${n} (${d})`;
}

/** Whether the dtype is a floating-point type. */
export function isFloat(t: DType): boolean {
  return t.startsWith('float') || t === 'bfloat16';
}

const FLOAT_RANK: Partial<Record<DType, number>> = { float16: 1, bfloat16: 1, float32: 2, float64: 3 };

/** Result dtype of a binary arithmetic op: floats win over ints, wider floats over narrower; else the first. */
export function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  if (isFloat(a) && isFloat(b)) return (FLOAT_RANK[a] ?? 0) >= (FLOAT_RANK[b] ?? 0) ? a : b;
  if (isFloat(a)) return a;
  if (isFloat(b)) return b;
  return a === 'int64' || b === 'int64' ? 'int64' : a;
}

/** Normalize a possibly negative axis; null when out of range. */
export function normAxis(dim: number, rank: number): number | null {
  const d = dim < 0 ? dim + rank : dim;
  return d >= 0 && d < rank ? d : null;
}

/** Whether two dims are known to differ (symbols compare through `dims`; unknown symbols match anything). */
function differ(a: Dim, b: Dim, dims: DimValues): boolean {
  if (a === b) return false;
  const x = dimSize(a, dims);
  const y = dimSize(b, dims);
  return x !== null && y !== null && x !== y;
}

/** numpy broadcasting of two shapes; null when incompatible. */
export function broadcast(a: readonly Dim[], b: readonly Dim[], dims: DimValues = {}): Dim[] | null {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1) out.push(x);
    else if (differ(x, y, dims)) return null;
    else out.push(typeof x === 'string' ? x : y);
  }
  return out;
}

/** PyTorch `matmul` shape rule (1-D operands, batched broadcasting). */
export function matmulShape(a: readonly Dim[], b: readonly Dim[], dims: DimValues = {}): ShapeResult {
  if (a.length === 0 || b.length === 0) return { code: 'shape-mismatch', message: 'matmul needs operands of rank 1 or more' };
  const a2 = a.length === 1 ? [1, a[0]!] : [...a];
  const b2 = b.length === 1 ? [b[0]!, 1] : [...b];
  const k1 = a2[a2.length - 1]!;
  const k2 = b2[b2.length - 2]!;
  if (differ(k1, k2, dims)) return { code: 'shape-mismatch', message: `inner dimensions ${k1} and ${k2} differ` };
  const batch = broadcast(a2.slice(0, -2), b2.slice(0, -2), dims);
  if (batch === null) return { code: 'shape-mismatch', message: 'batch dimensions do not broadcast' };
  const out = [...batch];
  if (a.length > 1) out.push(a2[a2.length - 2]!);
  if (b.length > 1) out.push(b2[b2.length - 1]!);
  return { shape: out };
}

/** Shape after reducing `dim` (or every dim when null). */
export function reduceShape(shape: readonly Dim[], dim: number | null, keepdim: boolean): ShapeResult {
  if (dim === null) return { shape: keepdim ? shape.map(() => 1) : [] };
  const d = normAxis(dim, shape.length);
  if (d === null) return axisError(dim, shape.length);
  return { shape: keepdim ? shape.map((x, i) => (i === d ? 1 : x)) : shape.filter((_, i) => i !== d) };
}

/** The `dimension-out-of-range` problem for an axis argument. */
export function axisError(dim: number, rank: number): { code: ErrorCode; message: string } {
  return { code: 'dimension-out-of-range', message: `dimension ${dim} is out of range for a tensor of rank ${rank}` };
}

/** Product of the sizes, or null when a size is unknown. */
export function concreteNumel(shape: readonly Dim[], dims: DimValues = {}): number | null {
  let n = 1;
  for (const d of shape) {
    const s = dimSize(d, dims);
    if (s === null) return null;
    n *= s;
  }
  return n;
}

/** PyTorch `reshape`: one `-1` inferred; total size checked when concrete. */
export function reshapeShape(input: readonly Dim[], target: readonly number[], dims: DimValues = {}): ShapeResult {
  const holes = target.filter((d) => d === -1).length;
  if (holes > 1) return { code: 'shape-mismatch', message: 'reshape: only one dimension can be -1' };
  if (target.some((d) => d < -1)) return { code: 'shape-mismatch', message: `reshape: invalid size in ${formatShape(target)}` };
  const known = target.filter((d) => d !== -1).reduce((p, d) => p * d, 1);
  const total = concreteNumel(input, dims);
  if (total === null) {
    const syms = input.filter((d) => dimSize(d, dims) === null);
    const rest = concreteNumel(input.filter((d) => dimSize(d, dims) !== null), dims)!;
    const fill: Dim = syms.length === 1 && rest === known ? syms[0]! : '?';
    return { shape: target.map((d) => (d === -1 ? fill : d)) };
  }
  const bad: ShapeResult = { code: 'shape-mismatch', message: `cannot reshape ${formatShape(input)} (${total} elements) to ${formatShape(target)}` };
  if (holes === 0) return known === total ? { shape: [...target] } : bad;
  if (known === 0 || total % known !== 0) return bad;
  return { shape: target.map((d) => (d === -1 ? total / known : d)) };
}

/** Python slice length for a dim of size n. */
export function sliceRange(n: number, it: { start?: number; stop?: number; step?: number }): { start: number; step: number; len: number } {
  const step = it.step ?? 1;
  const clamp = (v: number | undefined, dflt: number, lo: number, hi: number): number => {
    if (v === undefined) return dflt;
    const x = v < 0 ? v + n : v;
    return Math.min(Math.max(x, lo), hi);
  };
  const start = step > 0 ? clamp(it.start, 0, 0, n) : clamp(it.start, n - 1, -1, n - 1);
  const stop = step > 0 ? clamp(it.stop, n, 0, n) : clamp(it.stop, -1, -1, n - 1);
  const len = step > 0 ? Math.max(0, Math.ceil((stop - start) / step)) : Math.max(0, Math.ceil((start - stop) / -step));
  return { start, step, len };
}

/** Expand `...` and pad with full slices so there is one item per input dim (plus newaxis items). */
export function expandItems(items: readonly IndexItem[], rank: number): IndexItem[] | { code: ErrorCode; message: string } {
  const ell = items.filter((i) => i.kind === 'ellipsis').length;
  if (ell > 1) return { code: 'bad-index', message: 'an index can have only one ellipsis (...)' };
  const used = items.filter((i) => i.kind === 'index' || i.kind === 'slice').length;
  if (used > rank) return { code: 'index-out-of-range', message: `too many indices (${used}) for a tensor of rank ${rank}` };
  const fill: IndexItem[] = Array.from({ length: rank - used }, () => ({ kind: 'slice' }));
  const at = items.findIndex((i) => i.kind === 'ellipsis');
  return at < 0 ? [...items, ...fill] : [...items.slice(0, at), ...fill, ...items.slice(at + 1)];
}

/** Shape after numpy/PyTorch basic indexing; range-checks indices against known sizes. */
export function indexShape(shape: readonly Dim[], items: readonly IndexItem[], dims: DimValues = {}): ShapeResult {
  const full = expandItems(items, shape.length);
  if (!Array.isArray(full)) return full;
  const out: Dim[] = [];
  let axis = 0;
  for (const it of full) {
    if (it.kind === 'newaxis') { out.push(1); continue; }
    const d = shape[axis]!;
    const n = dimSize(d, dims);
    if (it.kind === 'index') {
      if (n !== null && (it.index >= n || it.index < -n)) {
        return { code: 'index-out-of-range', message: `index ${it.index} is out of range for dimension ${axis} of size ${describeDim(d, dims)}` };
      }
    } else if (it.kind === 'slice') {
      if (it.step === 0) return { code: 'bad-index', message: 'slice step cannot be zero' };
      const whole = it.start === undefined && it.stop === undefined && Math.abs(it.step ?? 1) === 1;
      out.push(whole ? d : n === null ? '?' : sliceRange(n, it).len);
    }
    axis++;
  }
  return { shape: out };
}
