/**
 * Lift constants: every `const` node whose dtype onnxruntime-node can feed becomes a
 * `host` node named `nns.const.N` (N = order of appearance), and its data becomes a host
 * value fed at run time. Two traces that differ only in literal values (a steering
 * coefficient, a replacement vector, the value of an ablation) then have the same
 * structure, compile to the same ONNX graph and share one session.
 *
 * Scalars are lifted too. In this IR a `const` never determines a shape or an axis: index
 * items, dims, `k`, reshape targets are attributes and stay in the graph. So lifting is
 * always semantically safe, it costs one tiny graph input per literal, and it turns
 * sweeps over a scalar (`h * alpha` for many alphas, `set = v`) into one compiled graph.
 * The only loss is ORT folding arithmetic on the literal, which the IR already did
 * (fold-constants) for literal-only arithmetic.
 *
 * Constants of dtypes without a typed array that ORT accepts here (float16, bfloat16,
 * bool, …) stay inline; their data is then part of the structural key.
 *
 * Runs after the IR pipeline (types are known): the host node's result keeps the const's
 * type, so lowering casts exactly as it did for the literal.
 * @module
 */
import { Node, type DType, type Graph } from '../ir/ir.js';
import type { Tensor, TensorData } from '../src/tensor.js';
import { printIR } from '../ir/printer.js';
import type { Pass } from './pass.js';

/** Prefix of lifted constants' host names (never a valid script identifier). */
export const LIFTED_PREFIX = 'nns.const.';

const LIFTABLE: ReadonlySet<DType> = new Set<DType>(['float32', 'float64', 'int32', 'int64']);

/** Typed storage for `data` in `dtype`. */
function typed(dtype: DType, data: readonly number[]): TensorData {
  switch (dtype) {
    case 'float32': return Float32Array.from(data);
    case 'float64': return Float64Array.from(data);
    case 'int32': return Int32Array.from(data);
    default: return BigInt64Array.from(data, (x) => BigInt(Math.trunc(x)));
  }
}

/**
 * Replaces liftable `const` nodes of `ir` by `host` nodes in place and returns the lifted
 * values by host name (feed them with the trace's other host values).
 */
export function liftConstants(ir: Graph): Map<string, Tensor> {
  const values = new Map<string, Tensor>();
  ir.nodes = ir.nodes.map((n) => {
    if (!n.is('const') || !LIFTABLE.has(n.attrs.dtype)) return n;
    const { dtype, shape, data } = n.attrs;
    const name = `${LIFTED_PREFIX}${values.size}`;
    values.set(name, { dtype, shape: [...shape], data: typed(dtype, data) });
    const host = new Node('host', [], { name, dtype, shape: [...shape] }, 1, n.scope, n.span);
    const old = n.result;
    host.result.type = old.type;
    if (old.name !== undefined) host.result.name = old.name;
    old.replaceAllUsesWith(host.result);
    return host as Node;
  });
  return values;
}

/** {@link liftConstants} as a pass; the values go to `state.lifted`. Prints the IR and the lifted values. */
export const liftConstantsPass: Pass = {
  name: 'lift-constants',
  run(state) {
    const values = liftConstants(state.ir);
    state.lifted = new Map([...(state.lifted ?? []), ...values]);
    return { changed: values.size > 0 };
  },
  prints: (state) => {
    const vals = [...(state.lifted ?? [])].map(([k, t]) => `// ${k} = ${t.dtype}[${t.shape.join(', ')}] ${t.data.length <= 8 ? `[${Array.from(t.data as ArrayLike<number | bigint>, Number).join(', ')}]` : `(${t.data.length} values)`}`);
    return printIR(state.ir) + (vals.length ? vals.join('\n') + '\n' : '');
  },
};
