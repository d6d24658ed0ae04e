/**
 * Batched sweeps: identical read-only invokes merge into one batch row; over-budget
 * batches run in chunks (sources recomputed per chunk) with the results of one run.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, TensorProxy, type ProgressEvent, type TraceOptions, type Tracer } from '../../src/index.js';
import { rowBytes } from '../../src/compiled-run.js';
import { dedupInvokes } from '../../passes/dedup-invokes.js';
import { formatBar } from '../../src/progress.js';
import { MODEL_DIR, refCase } from '../helpers/reference.js';

process.env.ONNSIGHT_FAST = '0';

const c = refCase('patch_block_outputs');
const LAYERS = [0, 1, 2, 3];
const POSITIONS = [0, 3, 5];

/** Activation patching, NNsight style: a clean source invoke per variant (duplicates). */
function sweep(tr: Tracer): void {
  for (const k of LAYERS) {
    for (const p of POSITIONS) {
      let hb: TensorProxy | undefined;
      tr.invoke(c.source_ids!, (m) => { hb = m.transformer.h[k]!.output.at(':', p, ':'); });
      tr.invoke(c.input_ids as number[], (m) => {
        m.transformer.h[k]!.output.at(':', p, ':').set(hb!);
        m.output.logits.at(':', -1, ':').softmax(-1).save(`p.${k}.${p}`);
      });
    }
  }
}

describe('batched sweeps', () => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(MODEL_DIR);
  });
  afterAll(async () => model?.dispose());

  const run = async (opts: TraceOptions): Promise<{ saves: Record<string, Float32Array>; events: ProgressEvent[] }> => {
    const events: ProgressEvent[] = [];
    const { saves } = await model.trace(sweep, { tiered: false, ...opts, onProgress: (e) => events.push(e) });
    return { saves: Object.fromEntries(Object.entries(saves).map(([k, t]) => [k, t.data as Float32Array])), events };
  };
  const expectEqual = (a: Record<string, Float32Array>, b: Record<string, Float32Array>, tol: number): void => {
    expect(Object.keys(a)).toEqual(Object.keys(b));
    for (const k of Object.keys(a)) {
      let d = 0;
      for (let i = 0; i < a[k]!.length; i++) d = Math.max(d, Math.abs(a[k]![i]! - b[k]![i]!));
      expect(d, k).toBeLessThanOrEqual(tol);
    }
  };

  it('dedup merges the repeated clean source into one row, with the undeduplicated results', async () => {
    const { graph } = model.build(sweep);
    const r = dedupInvokes(graph);
    expect(r.rowsBefore).toBe(2 * LAYERS.length * POSITIONS.length);
    expect(r.rowsAfter).toBe(1 + LAYERS.length * POSITIONS.length);
    const merged = await run({});
    const plain = await run({ dedup: false });
    expect(merged.events.at(-1)!.rows).toBe(r.rowsAfter);
    expect(plain.events.at(-1)!.rows).toBe(r.rowsBefore);
    expectEqual(merged.saves, plain.saves, 1e-6); // measured ≤ 2e-9: a smaller batch can change GEMM blocking
    // The patched probabilities match the reference grid.
    const grid = c.expect as number[][][];
    const probs = merged.saves[`p.2.3`]!;
    expect(Math.abs(probs[c.answer_id!]! - grid[2]![3]![0]!)).toBeLessThanOrEqual(1e-5);
  });

  it('an over-budget batch runs in chunks (the source in each) with the results of one run', async () => {
    const one = await run({ memoryBudget: Infinity });
    expect(one.events.length).toBe(2);
    const budget = rowBytes(model.mc, (c.input_ids as number[]).length, 1) * 4;
    const be = model.mc.backend;
    const session = be.session.bind(be);
    const asked: { arena?: boolean; memPattern?: boolean }[] = [];
    be.session = (graphPath, opts) => {
      asked.push({ arena: opts?.arena, memPattern: opts?.memPattern });
      return session(graphPath, opts);
    };
    const split = await run({ memoryBudget: budget }).finally(() => { be.session = session; });
    const chunks = split.events.length / 2;
    expect(chunks).toBeGreaterThanOrEqual(3);
    expect(split.events.at(-1)!.rowsDone).toBe(split.events.at(-1)!.rows);
    // Each chunk's session (released after its one run) runs on onnxruntime's arena without memory patterns.
    expect(asked.length).toBe(chunks);
    expect(asked.every((o) => o.arena === true && o.memPattern === false)).toBe(true);
    expectEqual(split.saves, one.saves, 1e-6); // measured bit-identical here
    // Every patched probability of the split run = PyTorch's grid (reference.json patch_block_outputs).
    const grid = c.expect as number[][][];
    for (const k of LAYERS) {
      for (const p of POSITIONS) {
        const probs = split.saves[`p.${k}.${p}`]!;
        expect(Math.abs(probs[c.answer_id!]! - grid[k]![p]![0]!), `${k}.${p}`).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(probs[c.source_answer_id!]! - grid[k]![p]![1]!), `${k}.${p}`).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('progress bar text', () => {
    expect(formatBar({ phase: 'run', done: 3, total: 6, rowsDone: 8, rows: 13 }, 10, 'nns', 1500)).toBe('nns [#####-----] 50% run rows 8/13 1.5s');
  });
});
