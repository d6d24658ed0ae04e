/**
 * The fast path's limits: a batch of several rows over the memory budget goes to the
 * compiled path (which splits it) with the same results; one row over the budget stays on
 * the fast path (the compiled path could not split it); the default budget is derived from
 * the model's weights and the machine's memory; and the instrumented model's session survives
 * any number of compiled variants (it is pinned, not subject to the session LRU).
 */
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { LanguageModel } from '../../src/index.js';
import type { FastExecutor } from '../../src/fast/index.js';
import os from 'node:os';
import { batchBudget, chunkBudget, MIN_BATCH_BUDGET } from '../../src/compiled-run.js';
import { weightsBytes, type ModelContext } from '../../src/compile.js';
import { MODEL_DIR, refCase, expectClose } from '../helpers/reference.js';

describe('fast path limits', () => {
  let model: LanguageModel;
  let fast: FastExecutor;
  beforeAll(async () => {
    model = await LanguageModel.load(MODEL_DIR);
    fast = model.mc.fast as FastExecutor;
  });
  afterEach(() => { delete process.env.ONNSIGHT_BATCH_BUDGET_MB; });

  const patch = async () => {
    const c = refCase('patch_block_outputs');
    const { saves } = await model.trace((tr) => {
      let hb = undefined as unknown as ReturnType<typeof tr.model.output.at>;
      tr.invoke(c.source_ids!, (m) => { hb = m.transformer.h[1].output.at(':', 3, ':'); });
      tr.invoke(c.input_ids as number[], (m) => {
        m.transformer.h[1].output.at(':', 3, ':').set(hb);
        m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
      });
    });
    const probs = saves.probs!.data as Float32Array;
    const want = (c.expect as number[][][])[1]![3]!;
    expect(Math.abs(probs[c.answer_id!]! - want[0]!)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(probs[c.source_answer_id!]! - want[1]!)).toBeLessThanOrEqual(1e-5);
  };

  it('runs a small patch on the fast path', async () => {
    const before = fast.stats.fastRuns;
    await patch();
    expect(fast.stats.fastRuns).toBe(before + 1);
  });

  /** Two independent rows (prompts A and B), last-position logits of each, vs PyTorch. */
  const twoRows = async () => {
    const a = refCase('clean_logits'), b = refCase('batched_cross_prompt');
    const { saves } = await model.trace((tr) => {
      tr.invoke(a.input_ids as number[], (m) => { m.output.logits.at(':', -1, ':').save('a'); });
      tr.invoke((b.input_ids as number[][])[1]!, (m) => { m.output.logits.at(':', -1, ':').save('b'); });
    });
    expectClose(saves.a!.data as Float32Array, (a.expect as { last_logits: number[] }).last_logits, 1e-4, 'row A');
    expectClose(saves.b!.data as Float32Array, (b.expect as { row1: number[] }).row1, 1e-4, 'row B');
  };

  it('sends a batch of rows over the budget to the compiled path, with the same results', async () => {
    process.env.ONNSIGHT_BATCH_BUDGET_MB = '0.05';
    const before = fast.stats.fallbacks;
    await twoRows();
    expect(fast.stats.fallbacks).toBe(before + 1);
    expect(fast.stats.lastReject).toMatch(/budget/);
  });

  it('keeps one row over the budget on the fast path (the compiled path could not split it)', async () => {
    process.env.ONNSIGHT_BATCH_BUDGET_MB = '0.05';
    const runs = fast.stats.fastRuns, falls = fast.stats.fallbacks;
    const c = refCase('clean_logits');
    const { saves } = await model.trace(c.input_ids as number[], (m) => { m.output.logits.at(':', -1, ':').save('logits'); });
    expectClose(saves.logits!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4, 'logits');
    expect(fast.stats.fallbacks).toBe(falls);
    expect(fast.stats.fastRuns).toBe(runs + 1);
    await patch(); // a source row and a patched row, run one at a time
    expect(fast.stats.fallbacks).toBe(falls);
  });

  it('derives the default budget from the weights and the machine, not a fixed size', () => {
    const spare = (w: number): number => (os.totalmem() - w) / 4;
    // gpt2-facts: a few MB of weights → the 512 MiB floor (unless the machine is tiny)
    expect(batchBudget(model.mc)).toBe(Math.max(2 ** 26, Math.min(MIN_BATCH_BUDGET, spare(weightsBytes(model.mc.loaded)))));
    // a model of 4 GB of float32 weights (only its initializer sizes matter) → a quarter of them
    const big = { loaded: { proto: { graph: { initializer: [{ name: 'w', dims: [1e9], data_type: 1 }] } } } } as unknown as ModelContext;
    expect(weightsBytes(big.loaded)).toBe(4e9);
    expect(batchBudget(big)).toBe(Math.max(2 ** 26, Math.min(1e9, spare(4e9))));
    // compiled chunks: the same, except for models over 256 MiB, whose chunks hold a quarter of the weights below 512 MiB too
    expect(chunkBudget(model.mc)).toBe(batchBudget(model.mc));
    expect(chunkBudget(big)).toBe(batchBudget(big));
    const mid = { loaded: { proto: { graph: { initializer: [{ name: 'w', dims: [163e6], data_type: 1 }] } } } } as unknown as ModelContext; // GPT-2 small's size
    expect(chunkBudget(mid)).toBe(Math.min(batchBudget(mid), 163e6));
    expect(chunkBudget(mid)).toBeLessThan(MIN_BATCH_BUDGET);
    process.env.ONNSIGHT_BATCH_BUDGET_MB = '3';
    expect(batchBudget(model.mc)).toBe(3 * 2 ** 20);
    expect(chunkBudget(mid)).toBe(3 * 2 ** 20);
  });

  it('keeps the instrumented session through many compiled variants', async () => {
    const s1 = await fast.session();
    for (let l = 0; l < 10; l++) {
      // a new structure each time: logit lens at another position (module application → compiled)
      await model.trace(refCase('clean_logits').input_ids as number[], (m) => {
        m.lm_head(m.transformer.ln_f(m.transformer.h[l % 4].output.at(':', l % 8, ':'))).save('x');
      });
    }
    expect(await fast.session()).toBe(s1);
  });
});
