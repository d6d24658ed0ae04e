/**
 * Size budget: every value the intervention computes (pure operations, `topk`, literals)
 * must fit in {@link maxValueBytes}, checked on the inferred shapes before anything is
 * allocated — on the host (fast path, constant folding) or by onnxruntime. A value over
 * the budget is a located `too-large` error at the statement that computes it (a
 * broadcast of two long vectors, a reshape into a huge intermediate), never an
 * out-of-memory crash or `Invalid typed array length`. The model's own values (module
 * outputs, parameters, graph outputs) are not checked: they are the model's business.
 * @module
 */
import { NnsError } from '../src/errors.js';
import type { DType, Graph, Node } from '../ir/ir.js';
import { SOURCE_OPS } from '../ir/ops.js';
import { dimSize } from '../ir/shape.js';
import type { Pass } from './pass.js';

/** Bytes per element of each dtype. */
const BYTES: Record<DType, number> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, uint16: 2, uint32: 4, uint64: 8, bool: 1,
};

/** Default budget of one computed value: 2 GiB. */
export const DEFAULT_MAX_VALUE_BYTES = 2 ** 31;

/** The budget of one computed value, bytes: `ONNSIGHT_MAX_VALUE_MB` when set, else 2 GiB. */
export function maxValueBytes(): number {
  const mb = Number(process.env.ONNSIGHT_MAX_VALUE_MB);
  return Number.isFinite(mb) && mb > 0 ? mb * 2 ** 20 : DEFAULT_MAX_VALUE_BYTES;
}

/** Elements of a value's shape with every dim known (symbolic dims from `graph.dimValues`), or null. */
export function knownElements(g: Graph, shape: readonly (number | string)[] | null | undefined): number | null {
  if (!shape) return null;
  let n = 1;
  for (const d of shape) {
    const k = d === 'batch' ? g.batch : dimSize(d, g.dimValues);
    if (k === null) return null;
    n *= k;
  }
  return n;
}

function human(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = 0;
  while (bytes >= 1024 && u < units.length - 1) bytes /= 1024, u++;
  return `${bytes < 10 && u > 0 ? bytes.toFixed(1) : Math.round(bytes)} ${units[u]}`;
}

/** The errors for values over `budget` bytes (one per node). */
export function sizeErrors(g: Graph, budget: number): NnsError[] {
  const errors: NnsError[] = [];
  const computed = (n: Node): boolean => !SOURCE_OPS.has(n.op) || n.op === 'const';
  for (const n of g.nodes) {
    if (!computed(n) || n.op === 'call_module') continue;
    for (const v of n.results) {
      const t = v.type;
      const elems = knownElements(g, t?.shape);
      if (!t || elems === null) continue;
      const bytes = elems * BYTES[t.dtype];
      if (bytes <= budget) continue;
      errors.push(new NnsError('too-large', `this value would have ${elems.toLocaleString('en-US')} elements [${t.shape!.join(', ')}] (${human(bytes)}); one value may take at most ${human(budget)}`, {
        span: n.span,
        notes: ['set ONNSIGHT_MAX_VALUE_MB to change the budget'],
      }));
      break;
    }
  }
  return errors;
}

/** Refuses values over the budget (after type inference, before any evaluation). */
export const checkSizesPass: Pass = {
  name: 'check-sizes',
  run(state, ctx) {
    ctx.errors.push(...sizeErrors(state.ir, maxValueBytes()));
    return { changed: false };
  },
};
