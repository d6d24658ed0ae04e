/**
 * Type rules of the ops that touch the model (module boundary reads, `call_module`, `set`):
 * they need the module tree. The op catalogue (ir/ops.ts) binds them.
 *
 * - Module boundary values, graph outputs and params take their sigs from the tree; in a
 *   scope with rows r0..r1 the `batch` dim becomes `r1 - r0`.
 * - `call_module` is shape-polymorphic: each argument is aligned with the module's input
 *   sig from the trailing dims; numeric sig dims must match, symbolic ones are bound. The
 *   output sigs are then instantiated with that binding. When the first argument has fewer
 *   dims than the input sig, the same number of leading dims is dropped from each output
 *   sig (lm_head on [1, 128] gives [1, 874]); when it has more, its extra leading dims are
 *   prepended. Such calls run at the module's own rank (ir/call-rank.ts); one that cannot
 *   (the module also reads model values, or does not keep its leading dims) is a
 *   `shape-mismatch`, and so is a call whose batch or sequence differs from the model's when
 *   the module also reads model values of those dims (an attention mask).
 * - `set`: the value must broadcast to the target (sliced by `items`), and have its dtype
 *   (literals are exempt: they are cast).
 * @module
 */
import { checkCallRank } from './call-rank.js';
import type { ErrorCode } from '../src/error-codes.js';
import type { ModuleTree, TensorSig } from '../src/model/types.js';
import { scriptPath, type Dim, type IndexItem, type TensorType } from './ir.js';
import { dimSize, formatItems, formatType, indexShape, type DimValues } from './shape.js';

/** A type problem: error code and message (the caller adds the node's span). */
export interface TypeProblem {
  code: ErrorCode;
  message: string;
}

/** Replace `batch` by the scope's row count. */
export function inScope(sig: TensorSig | undefined, rows: number): TensorType | null {
  if (!sig) return null;
  return { dtype: sig.dtype, shape: sig.shape === null ? null : sig.shape.map((d) => (d === 'batch' && rows > 0 ? rows : d)) };
}

/**
 * Whether a value of shape `v` can be assigned to a slot of shape `t`: numpy/PyTorch
 * assignment rules, i.e. broadcasting after dropping leading size-1 dims of `v`
 * (`a[0, -1] = x` accepts `x` of shape [1, 128] for a [128] slot).
 */
export function broadcastsTo(v: readonly Dim[], t: readonly Dim[], dims: DimValues): boolean {
  let lead = 0;
  while (v.length - lead > t.length && v[lead] === 1) lead++;
  v = v.slice(lead);
  if (v.length > t.length) return false;
  return v.every((d, i) => {
    const td = t[t.length - v.length + i]!;
    if (d === 1 || d === td) return true;
    const a = dimSize(d, dims);
    const b = dimSize(td, dims);
    return a === null || b === null || a === b;
  });
}

/** The type of a module boundary value as seen from a scope. */
export function boundaryType(tree: ModuleTree, path: string, port: 'output' | 'input', index: number, rows: number): TensorType | null {
  const m = tree.modules.get(path);
  const b = port === 'output' ? m?.outputs[index] : m?.inputs[index];
  return inScope(b?.sig, rows);
}

/** Result types of `call_module` on arguments of types `args` (null types on a problem). */
export function inferCall(path: string, nResults: number, args: readonly TensorType[], tree: ModuleTree, dims: DimValues): { types: (TensorType | null)[]; problem?: TypeProblem } {
  const name = scriptPath(path);
  const m = tree.modules.get(path);
  const err = (code: ErrorCode, message: string): { types: (TensorType | null)[]; problem: TypeProblem } => ({ types: [], problem: { code, message } });
  if (!m) return err('unknown-module', `no module '${name}'`);
  if (args.length > m.inputs.length) return err('bad-call', `${name} takes ${m.inputs.length} input(s), got ${args.length}`);
  if (nResults > m.outputs.length) throw new Error(`internal: call_module ${path} has ${nResults} results, module has ${m.outputs.length} outputs`);
  const bind = new Map<string, Dim>();
  let delta = 0;
  for (const [i, a] of args.entries()) {
    const sig = m.inputs[i]!.sig;
    if (!sig) continue;
    if (a.dtype !== sig.dtype) return err('dtype-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of dtype ${a.dtype}`);
    if (sig.shape === null || a.shape === null) continue;
    const d = a.shape.length - sig.shape.length;
    if (i === 0) delta = d;
    const bad = err('shape-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of shape ${formatType(a)}`);
    for (let j = Math.max(0, -d); j < sig.shape.length; j++) {
      const sd = sig.shape[j]!;
      const ad = a.shape[j + d]!;
      const want = typeof sd === 'number' ? sd : bind.get(sd);
      if (want !== undefined) {
        const [p, q] = [dimSize(want, dims), dimSize(ad, dims)];
        if (p !== null && q !== null && p !== q) return bad;
      } else if (typeof sd === 'string') bind.set(sd, ad);
    }
  }
  // Inputs the call does not give are read from the model's own run: the dims they share with the given ones must be the model's.
  for (const [k, b] of m.inputs.entries()) {
    if (k < args.length || !b.sig?.shape) continue;
    for (const sym of new Set(b.sig.shape.filter((d): d is string => typeof d === 'string'))) {
      const got = bind.get(sym);
      const [g, own] = [got === undefined ? null : dimSize(got, dims), dimSize(sym, dims)];
      if (g === null || own === null || g === own) continue;
      return err('shape-mismatch', `cannot apply ${name} (input ${formatType(m.inputs[0]!.sig!)}) to a value of shape ${formatType(args[0]!)}: its ${sym} is ${g}, but the module also reads the model's own inputs[${k}] (ONNX value '${b.name}', e.g. an attention mask), whose ${sym} is ${own}`);
    }
  }
  const why = checkCallRank(m, args.map((a) => a.shape), delta, (x, y) => x === y || (dimSize(x, dims) !== null && dimSize(x, dims) === dimSize(y, dims)));
  if (why !== null) {
    const sig = m.inputs[0]!.sig!;
    return err('shape-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of shape ${formatType(args[0]!)}: ${why}; apply it to a value of rank ${sig.shape?.length ?? 0}`);
  }
  const lead = args[0]?.shape?.slice(0, Math.max(0, delta)) ?? [];
  const types = Array.from({ length: nResults }, (_, r): TensorType | null => {
    const sig = m.outputs[r]!.sig;
    if (!sig) return null;
    if (sig.shape === null) return { dtype: sig.dtype, shape: null };
    let shape = sig.shape.map((d) => (typeof d === 'string' ? bind.get(d) ?? d : d));
    if (delta < 0) shape = shape.slice(Math.min(-delta, shape.length));
    return { dtype: sig.dtype, shape: [...lead, ...shape] };
  });
  return { types };
}

/** Checks a `set` of a value of type `v` (`literal`: a literal, which is cast); returns the problem, if any. */
export function checkSet(
  a: { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null },
  v: TensorType, literal: boolean, tree: ModuleTree, rows: number, dims: DimValues,
): TypeProblem | null {
  const target = boundaryType(tree, a.path, a.port, a.index, rows);
  if (target === null) return null;
  const port = a.index === 0 ? a.port : `${a.port}s[${a.index}]`;
  let what = `${scriptPath(a.path)}.${port}`;
  let shape = target.shape;
  if (a.items !== null && shape !== null) {
    what += `[${formatItems(a.items)}]`;
    const r = indexShape(shape, a.items, dims);
    if ('code' in r) return r;
    shape = r.shape;
  }
  const t: TensorType = { dtype: target.dtype, shape };
  if (v.dtype !== t.dtype && !literal) {
    return { code: 'dtype-mismatch', message: `cannot set ${what} (${formatType(t)}) to a value of dtype ${v.dtype}` };
  }
  if (shape !== null && v.shape !== null && !broadcastsTo(v.shape, shape, dims)) {
    return { code: 'shape-mismatch', message: `cannot set ${what} (${formatType(t)}) to a value of shape ${formatType(v)}` };
  }
  return null;
}
