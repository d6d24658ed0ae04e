/**
 * Whole-batch statements that pick one batch row — `model.transformer.h[l].output[0]`
 * read, or `model.transformer.h[3].output[0, -1, :] = v` set, after the invokes — are
 * rewritten to the invoke that owns that row: `output[0]` of the whole batch is
 * `output[0]` of that invoke's one-row view. Exact, and it lets both paths see which rows a
 * statement touches (the fast path can then treat the row as a source; the compiled path
 * slices one row instead of the batch). Runs before type inference.
 * @module
 */
import type { Pass } from './pass.js';
import { Node, ROW_OPS, type Graph, type IndexItem } from '../ir/ir.js';

/** The invoke scope owning batch row `r` (negative counts from the end), if any. */
function scopeOfRow(ir: Graph, r: number): number | undefined {
  const row = r < 0 ? ir.batch + r : r;
  if (row < 0 || row >= ir.batch) return undefined;
  const s = ir.scopes.find((sc) => sc.id !== 0 && sc.rowStart === row && sc.rowEnd === row + 1);
  return s?.id;
}

function leadingRow(items: readonly IndexItem[] | null): number | undefined {
  const first = items?.[0];
  return first?.kind === 'index' ? first.index : undefined;
}

/** The narrow-rows pass. */
export const narrowRowsPass: Pass = {
  name: 'narrow-rows',
  run(state) {
    const ir = state.ir;
    if (ir.scopes.length <= 2) return { changed: false }; // one invoke: scope 0 is that row already
    let changed = false;
    const out: Node[] = [];
    for (const n of ir.nodes) {
      if (n.scope === 0 && n.is('set')) {
        const k = scopeOfRow(ir, leadingRow(n.attrs.items) ?? NaN);
        if (k !== undefined) {
          n.scope = k;
          n.attrs = { ...n.attrs, items: [{ kind: 'index', index: 0 }, ...n.attrs.items!.slice(1)] };
          changed = true;
        }
      } else if (n.is('index')) {
        const src = n.inputs[0]!.producer;
        const k = src.scope === 0 && ROW_OPS.has(src.op) ? scopeOfRow(ir, leadingRow(n.attrs.items) ?? NaN) : undefined;
        if (k !== undefined) {
          const read = new Node(src.op, [], src.attrs, 1, k, src.span);
          out.push(read);
          n.inputs = [read.result];
          n.attrs = { items: [{ kind: 'index', index: 0 }, ...n.attrs.items.slice(1)] };
          changed = true;
        }
      }
      out.push(n);
    }
    ir.nodes = out;
    return { changed };
  },
};
