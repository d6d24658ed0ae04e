/**
 * Type inference: a dtype and a symbolic shape for every value, and the user errors a
 * type checker finds (shape and dtype mismatches, indices and dims out of range).
 *
 * Rules:
 * - Module boundary values, graph outputs and params take their sigs from `ctx.tree`; in
 *   a scope with rows r0..r1 the `batch` dim becomes `r1 - r0`. `sequence` stays symbolic;
 *   `graph.dimValues` supplies its size for range checks.
 * - Arithmetic broadcasts per numpy; dtypes promote (floats win, wider floats win), except
 *   that a rank-0 literal adopts the other operand's dtype (PyTorch scalar rule).
 * - `call_module` is shape-polymorphic: each argument is aligned with the module's input
 *   sig from the trailing dims; numeric sig dims must match, symbolic ones are bound. The
 *   output sigs are then instantiated with that binding. When the first argument has fewer
 *   dims than the input sig, the same number of leading dims is dropped from each output
 *   sig (lm_head on [1, 128] gives [1, 874]); when it has more, its extra leading dims are
 *   prepended. Such calls run at the module's own rank (passes/call-rank.ts); one that
 *   cannot (the module also reads model values, or does not keep its leading dims) is a
 *   `shape-mismatch` error here.
 * - `set`: the value must broadcast to the target (sliced by `items`), and have its dtype
 *   (literals are exempt: they are cast).
 * A value whose input types are unknown (after an earlier error) gets no type, silently.
 * @module
 */
import { NnsError } from '../src/errors.js';
import type { ModuleTree, TensorSig } from '../src/model/types.js';
import { scriptPath, type Dim, type DType, type Graph, type IndexItem, type Node, type TensorType, type Value } from '../ir/ir.js';
import {
  axisError, broadcast, dimSize, formatItems, formatType, indexShape, isFloat, matmulShape, normAxis,
  promote, reduceShape, reshapeShape, describeDim, type DimValues, type ShapeResult,
} from '../ir/shape.js';
import type { Pass } from './pass.js';
import { checkCallRank } from './call-rank.js';

const BINARY_VERB: Record<string, string> = { add: 'add', sub: 'subtract', mul: 'multiply', div: 'divide', matmul: 'matmul' };
const FLOAT_RESULT = new Set(['exp', 'log', 'sqrt', 'softmax', 'log_softmax', 'mean', 'norm']);

/** Replace `batch` by the scope's row count. */
function inScope(sig: TensorSig | undefined, rows: number): TensorType | null {
  if (!sig) return null;
  return { dtype: sig.dtype, shape: sig.shape === null ? null : sig.shape.map((d) => (d === 'batch' && rows > 0 ? rows : d)) };
}

/** Whether `v` is a rank-0 literal (takes the other operand's dtype). */
function isScalarLiteral(v: Value): boolean {
  return v.producer.op === 'const' && (v.producer.attrs as { shape: number[] }).shape.length === 0;
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

/** Infer one node's result types; returns user errors. */
export function inferNode(n: Node, graph: Graph, tree: ModuleTree): NnsError[] {
  const dims = graph.dimValues;
  const sc = graph.scopes[n.scope];
  const rows = sc ? sc.rowEnd - sc.rowStart : 0;
  const errors: NnsError[] = [];
  const fail = (code: string, msg: string): void => void errors.push(new NnsError(code, msg, { span: n.span }));
  const setT = (...ts: (TensorType | null)[]): void => n.results.forEach((v, i) => (v.type = ts[i] ?? null));
  const ins = n.inputs.map((v) => v.type);
  if (ins.some((t) => t === null)) { setT(); return errors; }
  const x = ins[0]!;
  const withShape = (dtype: DType, r: ShapeResult | null): void => {
    if (r === null) return setT({ dtype, shape: null });
    if ('code' in r) { fail(r.code, r.message); return setT(); }
    setT({ dtype, shape: r.shape });
  };
  const unaryShape = (f: (s: Dim[]) => ShapeResult): ShapeResult | null => (x.shape === null ? null : f(x.shape));
  const floatOf = (d: DType): DType => (isFloat(d) ? d : 'float32');

  switch (n.op) {
    case 'module.output': case 'module.input': {
      const a = n.attrs as { path: string; index: number };
      setT(boundaryType(tree, a.path, n.op === 'module.output' ? 'output' : 'input', a.index, rows));
      break;
    }
    case 'model.output': {
      const name = (n.attrs as { name: string | null }).name;
      setT(inScope((name === null ? tree.graphOutputs[0] : tree.graphOutputs.find((o) => o.name === name))?.sig, rows));
      break;
    }
    case 'param': setT(inScope(tree.params.get((n.attrs as { name: string }).name)?.sig, 0)); break;
    case 'host': case 'const': {
      const a = n.attrs as { dtype: DType; shape: number[] };
      setT({ dtype: a.dtype, shape: [...a.shape] });
      break;
    }
    case 'add': case 'sub': case 'mul': case 'div': case 'matmul': {
      const [a, b] = [ins[0]!, ins[1]!];
      const [la, lb] = [isScalarLiteral(n.inputs[0]!), isScalarLiteral(n.inputs[1]!)];
      let dtype = la && !lb ? b.dtype : lb && !la ? a.dtype : promote(a.dtype, b.dtype);
      if (n.op === 'div' && !isFloat(dtype)) dtype = 'float32';
      if (!isFloat(dtype) && (la || lb)) {
        const lit = (la ? n.inputs[0]! : n.inputs[1]!).producer.attrs as { data: number[] };
        if (lit.data.some((v) => !Number.isInteger(v))) dtype = 'float32';
      }
      if (a.shape === null || b.shape === null) return setT({ dtype, shape: null }), errors;
      const verb = `cannot ${BINARY_VERB[n.op]} ${formatType(a)} and ${formatType(b)}`;
      if (n.op === 'matmul') {
        const r = matmulShape(a.shape, b.shape, dims);
        withShape(dtype, 'code' in r ? { code: r.code, message: `${verb}: ${r.message}` } : r);
      } else {
        const s = broadcast(a.shape, b.shape, dims);
        withShape(dtype, s ? { shape: s } : { code: 'shape-mismatch', message: `${verb}: shapes do not broadcast` });
      }
      break;
    }
    case 'neg': case 'abs': case 'relu': case 'zeros_like': case 'ones_like':
      setT({ dtype: x.dtype, shape: x.shape && [...x.shape] });
      break;
    case 'exp': case 'log': case 'sqrt':
      setT({ dtype: floatOf(x.dtype), shape: x.shape && [...x.shape] });
      break;
    case 'softmax': case 'log_softmax': {
      const dim = (n.attrs as { dim: number }).dim;
      withShape(floatOf(x.dtype), unaryShape((s) => (normAxis(dim, s.length) === null ? axisError(dim, s.length) : { shape: [...s] })));
      break;
    }
    case 'argmax': case 'sum': case 'mean': case 'max': case 'norm': {
      const a = n.attrs as { dim: number | null; keepdim: boolean };
      const dtype = n.op === 'argmax' ? 'int64' : FLOAT_RESULT.has(n.op) ? floatOf(x.dtype) : x.dtype;
      withShape(dtype, unaryShape((s) => reduceShape(s, a.dim, a.keepdim)));
      break;
    }
    case 'topk': {
      const { k, dim } = n.attrs as { k: number; dim: number };
      if (x.shape === null) return setT({ dtype: x.dtype, shape: null }, { dtype: 'int64', shape: null }), errors;
      const d = normAxis(dim, x.shape.length);
      if (d === null) { const e = axisError(dim, x.shape.length); fail(e.code, e.message); setT(); break; }
      const size = dimSize(x.shape[d]!, dims);
      if (k < 0 || (size !== null && k > size)) {
        fail('index-out-of-range', `topk: k = ${k} is out of range for dimension ${d} of size ${describeDim(x.shape[d]!, dims)}`);
        setT();
        break;
      }
      const shape = x.shape.map((s, i) => (i === d ? k : s));
      setT({ dtype: x.dtype, shape }, { dtype: 'int64', shape: [...shape] });
      break;
    }
    case 'reshape': withShape(x.dtype, unaryShape((s) => reshapeShape(s, (n.attrs as { shape: number[] }).shape, dims))); break;
    case 'transpose': {
      const { dim0, dim1 } = n.attrs as { dim0: number; dim1: number };
      withShape(x.dtype, unaryShape((s) => {
        const [a, b] = [normAxis(dim0, s.length), normAxis(dim1, s.length)];
        if (a === null || b === null) return axisError(a === null ? dim0 : dim1, s.length);
        const out = [...s];
        [out[a], out[b]] = [s[b]!, s[a]!];
        return { shape: out };
      }));
      break;
    }
    case 'index': withShape(x.dtype, unaryShape((s) => indexShape(s, (n.attrs as { items: IndexItem[] }).items, dims))); break;
    case 'call_module': errors.push(...inferCall(n, ins as TensorType[], tree, { ...dims, batch: graph.batch })); break;
    case 'set': errors.push(...checkSet(n, x, tree, rows, dims)); break;
    case 'save': break;
  }
  return errors;
}

function inferCall(n: Node, args: TensorType[], tree: ModuleTree, dims: DimValues): NnsError[] {
  const path = (n.attrs as { path: string }).path;
  const name = scriptPath(path);
  const m = tree.modules.get(path);
  const err = (code: string, msg: string): NnsError[] => {
    n.results.forEach((v) => (v.type = null));
    return [new NnsError(code, msg, { span: n.span })];
  };
  if (!m) return err('unknown-module', `no module '${name}'`);
  if (args.length > m.inputs.length) return err('bad-call', `${name} takes ${m.inputs.length} input(s), got ${args.length}`);
  if (n.results.length > m.outputs.length) throw new Error(`internal: call_module ${path} has ${n.results.length} results, module has ${m.outputs.length} outputs`);
  const bind = new Map<string, Dim>();
  let delta = 0;
  for (const [i, a] of args.entries()) {
    const sig = m.inputs[i]!.sig;
    if (!sig) continue;
    if (a.dtype !== sig.dtype) return err('dtype-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of dtype ${a.dtype}`);
    if (sig.shape === null || a.shape === null) continue;
    const d = a.shape.length - sig.shape.length;
    if (i === 0) delta = d;
    const bad = (): NnsError[] => err('shape-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of shape ${formatType(a)}`);
    for (let j = Math.max(0, -d); j < sig.shape.length; j++) {
      const sd = sig.shape[j]!;
      const ad = a.shape[j + d]!;
      const want = typeof sd === 'number' ? sd : bind.get(sd);
      if (want !== undefined) {
        const [p, q] = [dimSize(want, dims), dimSize(ad, dims)];
        if (p !== null && q !== null && p !== q) return bad();
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
    const r = sig.shape?.length ?? 0;
    return err('shape-mismatch', `cannot apply ${name} (input ${formatType(sig)}) to a value of shape ${formatType(args[0]!)}: ${why}; apply it to a value of rank ${r}`);
  }
  const lead = args[0]?.shape?.slice(0, Math.max(0, delta)) ?? [];
  n.results.forEach((v, r) => {
    const sig = m.outputs[r]!.sig;
    if (!sig) return void (v.type = null);
    if (sig.shape === null) return void (v.type = { dtype: sig.dtype, shape: null });
    let shape = sig.shape.map((d) => (typeof d === 'string' ? bind.get(d) ?? d : d));
    if (delta < 0) shape = shape.slice(Math.min(-delta, shape.length));
    v.type = { dtype: sig.dtype, shape: [...lead, ...shape] };
  });
  return [];
}

function checkSet(n: Node, v: TensorType, tree: ModuleTree, rows: number, dims: DimValues): NnsError[] {
  const a = n.attrs as { path: string; port: 'output' | 'input'; index: number; items: IndexItem[] | null };
  const target = boundaryType(tree, a.path, a.port, a.index, rows);
  if (target === null) return [];
  const port = a.index === 0 ? a.port : `${a.port}s[${a.index}]`;
  let what = `${scriptPath(a.path)}.${port}`;
  let shape = target.shape;
  if (a.items !== null && shape !== null) {
    what += `[${formatItems(a.items)}]`;
    const r = indexShape(shape, a.items, dims);
    if ('code' in r) return [new NnsError(r.code, r.message, { span: n.span })];
    shape = r.shape;
  }
  const t: TensorType = { dtype: target.dtype, shape };
  if (v.dtype !== t.dtype && n.inputs[0]!.producer.op !== 'const') {
    return [new NnsError('dtype-mismatch', `cannot set ${what} (${formatType(t)}) to a value of dtype ${v.dtype}`, { span: n.span })];
  }
  if (shape !== null && v.shape !== null && !broadcastsTo(v.shape, shape, dims)) {
    return [new NnsError('shape-mismatch', `cannot set ${what} (${formatType(t)}) to a value of shape ${formatType(v)}`, { span: n.span })];
  }
  return [];
}

/** Infers every value's type; collects type errors in `ctx.errors`. */
export const inferTypesPass: Pass = {
  name: 'infer-types',
  run(state, ctx) {
    for (const n of state.ir.nodes) ctx.errors.push(...inferNode(n, state.ir, ctx.tree));
    return { changed: true };
  },
};

