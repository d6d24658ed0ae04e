/**
 * Module calls on values of another rank, as PyTorch does them. An exported module has a
 * fixed input rank R (`mlp` takes `[batch, sequence, 128]`), and its graph may bake that
 * rank in (GPT-2's Conv1D reshapes to `[shape[0], shape[1], nf]`). PyTorch's layers take
 * any leading dimensions, so `mlp(h[:, -1, :])` (rank 2) or `mlp(stack)` (rank 4) work
 * there. A call whose first argument has rank r = R + delta is run at rank R:
 *
 * - delta < 0 (fewer dims): `-delta` leading dims of size 1 are added to every argument
 *   (`[1, 128]` → `[1, 1, 128]`: batch 1, the value's rows as positions, matching the type
 *   rule that aligns arguments with the input sig from the trailing dims), and the same
 *   number of leading dims (size 1) is dropped from every result.
 * - delta > 0 (more dims): the first `delta + 1` dims of every argument are flattened into
 *   the module's leading (batch) dim (`[12, 1, 8, 128]` → `[12, 8, 128]`) and restored on
 *   every result (`[12, 8, 874]` → `[12, 1, 8, 874]`).
 *
 * Both are exact for modules that treat batch rows (and, for delta < 0, positions)
 * independently, which {@link checkCallRank} requires of the signatures; the compiled path
 * also requires the module to read nothing but its arguments, weights and constants
 * (passes/lower-onnx.ts, which recomputes shapes the model derives from its input shapes),
 * the fast path only runs such modules (src/fast/module-model.ts).
 * Anything else is a located `shape-mismatch` error before anything runs.
 * @module
 */
import type { Dim } from './ir.js';
import type { ModuleInfo } from '../src/model/types.js';

/** `rank(first argument) - rank(module input 0)`; 0 when either rank is unknown. */
export function callRankDelta(m: ModuleInfo, argShapes: readonly (readonly unknown[] | null)[]): number {
  const sig = m.inputs[0]?.sig?.shape;
  const a = argShapes[0];
  return sig && a ? a.length - sig.length : 0;
}

/**
 * Why a call with rank difference `delta` cannot be adapted (a phrase for the error), or
 * null when it can. `same(a, b)` says whether two dims of arguments are known equal.
 */
export function checkCallRank(m: ModuleInfo, argShapes: readonly (readonly Dim[] | null)[], delta: number, same: (a: Dim, b: Dim) => boolean): string | null {
  if (delta === 0) return null;
  if (argShapes.length < m.inputs.length) {
    const k = argShapes.length;
    const more = m.inputs.length - k === 1 ? `inputs[${k}]` : `inputs[${k}..${m.inputs.length - 1}]`;
    return `the module also reads the model's own ${more} (ONNX value '${m.inputs[k]!.name}'${m.inputs.length - k > 1 ? ', ...' : ''}, e.g. an attention mask), which cannot follow another rank`;
  }
  for (const [i, a] of argShapes.entries()) {
    const sig = m.inputs[i]!.sig?.shape;
    if (!a || !sig) return `the rank of input ${i} is unknown`;
    if (a.length - sig.length !== delta) return `all arguments need the same number of ${delta < 0 ? 'missing' : 'extra'} leading dims`;
    if (delta > 0) {
      if (typeof sig[0] !== 'string') return `its input ${i} has a fixed leading dim ${String(sig[0])}`;
      for (let j = 0; j <= delta; j++) if (!same(a[j]!, argShapes[0]![j]!)) return 'the arguments\' leading dims differ';
    } else {
      // The added size-1 dims must be dims the module keeps per row (batch, sequence), never a fixed size other than 1.
      for (let j = 0; j < -delta; j++) if (typeof sig[j] === 'number' && sig[j] !== 1) return `its input ${i} has a fixed dim ${String(sig[j])}`;
    }
  }
  const lead = m.inputs[0]!.sig!.shape!;
  for (const o of m.outputs) {
    const s = o.sig?.shape;
    if (!s) return `the rank of output ${o.name} is unknown`;
    if (delta > 0) {
      if (s[0] !== lead[0]) return `its output ${o.name} does not keep the input's leading dim ${String(lead[0])}`;
    } else {
      for (let j = 0; j < -delta; j++) {
        const d = s[j];
        if (d !== 1 && d !== lead[j]) return `its output ${o.name} does not keep the input's leading dims`;
      }
    }
  }
  return null;
}

/** The shape a concrete argument is run at (see the module comment). */
export function adaptArgShape(shape: readonly number[], delta: number): number[] {
  if (delta < 0) return [...Array<number>(-delta).fill(1), ...shape];
  if (delta > 0) return [shape.slice(0, delta + 1).reduce((p, d) => p * d, 1), ...shape.slice(delta + 1)];
  return [...shape];
}

/** The shape of a concrete result, given the first argument's shape as called. */
export function restoreResultShape(shape: readonly number[], firstArg: readonly number[], delta: number): number[] {
  if (delta < 0) return shape.slice(-delta);
  if (delta > 0) return [...firstArg.slice(0, delta + 1), ...shape.slice(1)];
  return [...shape];
}
