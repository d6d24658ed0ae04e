/**
 * The fast path's limits: a batch over the memory budget goes to the compiled path (which
 * splits it) with the same results, and the instrumented model's session survives any
 * number of compiled variants (it is pinned, not subject to the session LRU).
 */
import { describe, it, expect, beforeAll, afterEach } from 'vitest';
import { LanguageModel } from '../../src/index.js';
import type { FastExecutor } from '../../src/fast/index.js';
import { MODEL_DIR, refCase } from '../helpers/reference.js';

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

  it('sends a batch over the budget to the compiled path, with the same results', async () => {
    process.env.ONNSIGHT_BATCH_BUDGET_MB = '0.05';
    const before = fast.stats.fallbacks;
    await patch();
    expect(fast.stats.fallbacks).toBe(before + 1);
    expect(fast.stats.lastReject).toMatch(/budget/);
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
