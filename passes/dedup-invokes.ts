/**
 * Deduplicate invokes: invokes with the same prompt (token ids) and no `set` in their
 * scope compute the same batch row, so all but the first are dropped and their nodes move
 * to the kept invoke's scope — a value read from a duplicate is read from the kept row.
 * Sweeps that repeat a clean prompt per variant (a patching source, a save per layer) then
 * run it once.
 *
 * Safe because rows of a batch are independent in the forward pass and the kept and the
 * dropped row see exactly the same interventions (none). Not applied when the whole-batch
 * scope (#0) reads module values or sets them: then results have the batch's shape or a
 * set may select rows by position.
 *
 * Runs after the IR pipeline (on typed IR): types of module reads depend only on their
 * scope's row count, which is unchanged (one row per invoke).
 * @module
 */
import { ROW_OPS, type Graph, type Scope } from '../ir/ir.js';
import { EFFECT_OPS } from '../ir/ops.js';
import type { Pass } from './pass.js';

/** What {@link dedupInvokes} did. */
export interface DedupResult {
  /** Batch rows before. */
  rowsBefore: number;
  /** Batch rows after. */
  rowsAfter: number;
  /** Old scope id → new scope id (the kept invoke's new id for a dropped duplicate). */
  scopeMap: number[];
}

/** Whether no node of the whole-batch scope reads or sets module values. */
function wholeBatchIsPure(ir: Graph): boolean {
  return !ir.nodes.some((n) => n.scope === 0 && (ROW_OPS.has(n.op) || n.op === 'set'));
}

/** Merges identical read-only invokes in place. */
export function dedupInvokes(ir: Graph): DedupResult {
  const rowsBefore = ir.batch;
  const identity = ir.scopes.map((s) => s.id);
  if (ir.scopes.length <= 2 || !wholeBatchIsPure(ir)) return { rowsBefore, rowsAfter: rowsBefore, scopeMap: identity };
  const writes = new Set<number>();
  // Every effect other than `save` writes into its scope's rows.
  for (const n of ir.nodes) if (EFFECT_OPS.has(n.op) && n.op !== 'save') writes.add(n.scope);
  const kept = new Map<string, number>();
  const target = [...identity];
  for (const s of ir.scopes.slice(1)) {
    if (writes.has(s.id) || !s.tokens || s.rowEnd - s.rowStart !== 1) continue;
    const key = s.tokens.join(',');
    const k = kept.get(key);
    if (k === undefined) kept.set(key, s.id);
    else target[s.id] = k;
  }
  if (target.every((t, i) => t === i)) return { rowsBefore, rowsAfter: rowsBefore, scopeMap: identity };
  // Renumber the surviving scopes and compact their rows.
  const scopes: Scope[] = [{ ...ir.scopes[0]!, rowStart: 0, rowEnd: 0 }];
  const newId = new Array<number>(ir.scopes.length).fill(0);
  let row = 0;
  for (const s of ir.scopes.slice(1)) {
    if (target[s.id] !== s.id) continue;
    const rows = s.rowEnd - s.rowStart;
    newId[s.id] = scopes.length;
    scopes.push({ ...s, id: scopes.length, rowStart: row, rowEnd: row + rows });
    row += rows;
  }
  scopes[0]!.rowEnd = row;
  const scopeMap = identity.map((id) => (id === 0 ? 0 : newId[target[id]!]!));
  for (const n of ir.nodes) n.scope = scopeMap[n.scope]!;
  ir.scopes = scopes;
  return { rowsBefore, rowsAfter: row, scopeMap };
}

/** {@link dedupInvokes} as a pass (the first run stage: skipped with `dedup: false`). */
export const dedupInvokesPass: Pass = {
  name: 'dedup-invokes',
  run(state) {
    const r = dedupInvokes(state.ir);
    return { changed: r.rowsAfter !== r.rowsBefore };
  },
};
