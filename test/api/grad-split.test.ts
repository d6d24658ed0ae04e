/**
 * Gradients when the compiled path splits a batch into chunks (memory budget): each chunk
 * carries the invokes a `grad` ties together (Y's and X's rows, and the rows their sets read),
 * so the results equal PyTorch's reference.json `gradients` — per pair of (source, clean)
 * invokes, across invokes (X read in one invoke, set into another that computes Y), and with
 * respect to a host param used by every row (only Y's rows contribute). Also the gradient row
 * split (passes/split-batch.ts splitGradRows): the invokes no gradient needs run first,
 * forward only (on the fast path when allowed), and the gradient's invokes after them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, grad, type ProgressEvent, type TensorProxy } from '../../src/index.js';
import { EXPORTS, refCase, expectClose } from '../helpers/reference.js';

interface GradExpect { grads: Record<string, { shape: number[]; values: number[] }>; attribution: number[][] }

describe('grad with the batch split into chunks', () => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(EXPORTS[0].path);
  }, 60_000);
  afterAll(async () => model?.dispose());

  /** Runs with a budget of one row per chunk (or the default); returns the saves and how many chunks ran. */
  async function split(fn: Parameters<LanguageModel['trace']>[0] & ((tr: never) => void), params?: Record<string, import('../../src/index.js').Tensor>, memoryBudget = 1) {
    let chunks = 0;
    const onProgress = (e: ProgressEvent): void => { if (e.phase === 'compile') chunks = e.total / 2; };
    const r = await model.trace(fn as never, { memoryBudget, fast: false, dedup: false, onProgress, ...(params ? { params } : {}) });
    return { saves: r.saves, chunks };
  }

  it('attribution (source, clean): the source row runs first, forward only on the instrumented model, then the clean row with its gradient', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const fast = model.mc.fast as unknown as { stats: { fastRuns: number } };
    const runs0 = fast.stats.fastRuns;
    const { saves } = await model.trace((tr) => {
      const src: TensorProxy[] = [];
      tr.invoke(c.source_ids!, (m) => { for (let l = 0; l < 4; l++) src.push(m.transformer.h[l]!.output); });
      tr.invoke(c.input_ids as number[], (m) => {
        const y = m.output.logits.at(0, -1, c.answer_id!);
        for (let l = 0; l < 4; l++) {
          const h = m.transformer.h[l]!.output;
          src[l]!.sub(h).mul(grad(y, h)).sum(-1).save(`a${l}`);
        }
      });
    });
    expect(fast.stats.fastRuns - runs0).toBe(1);
    for (let l = 0; l < 4; l++) expectClose(saves[`a${l}`]!.data as Float32Array, e.attribution[l]!, 1e-4, `attribution h.${l}`);
  }, 120_000);

  it('attribution of two (source, clean) pairs, one budget chunk per pair (each in two steps), equals the reference', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const { saves, chunks } = await split(((tr: import('../../src/index.js').Tracer) => {
      for (const pair of [0, 1]) {
        const src: TensorProxy[] = [];
        tr.invoke(c.source_ids!, (m) => { for (let l = 0; l < 4; l++) src.push(m.transformer.h[l]!.output); });
        tr.invoke(c.input_ids as number[], (m) => {
          const y = m.output.logits.at(0, -1, c.answer_id!);
          for (let l = 0; l < 4; l++) {
            const h = m.transformer.h[l]!.output;
            const g = grad(y, h).save(`g${pair}.${l}`);
            src[l]!.sub(h).mul(g).sum(-1).save(`a${pair}.${l}`);
          }
        });
      }
    }) as never);
    expect(chunks).toBe(4);
    for (const pair of [0, 1]) {
      for (let l = 0; l < 4; l++) {
        expectClose(saves[`g${pair}.${l}`]!.data as Float32Array, e.grads[`transformer.h.${l}`]!.values, 1e-4, `pair ${pair} grad h.${l}`);
        expectClose(saves[`a${pair}.${l}`]!.data as Float32Array, e.attribution[l]!, 1e-4, `pair ${pair} attribution h.${l}`);
      }
    }
  }, 120_000);

  it('X read in one invoke and set into another that computes Y: both land in one chunk', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const ids = c.input_ids as number[];
    const { saves, chunks } = await split(((tr: import('../../src/index.js').Tracer) => {
      let hx: TensorProxy | undefined;
      tr.invoke(c.source_ids!, (m) => { m.output.logits.at(0, -1, 0).save('other'); });
      tr.invoke(ids, (m) => { hx = m.transformer.h[2]!.output; });
      tr.invoke(ids, (m) => {
        m.transformer.h[2]!.output = hx!;
        grad(m.output.logits.at(0, -1, c.answer_id!), hx!).save('g');
      });
    }) as never);
    expect(chunks).toBe(2);
    // Y's row sees X exactly as its own block-2 output: the gradient is the clean one.
    expectClose(saves.g!.data as Float32Array, e.grads['transformer.h.2']!.values, 1e-4, 'cross-invoke grad h.2');
  }, 120_000);

  it('a param used by every row: its gradient comes from Y\'s rows only', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const ids = c.input_ids as number[];
    const D = 128;
    const steer = { dtype: 'float32' as const, shape: [D], data: new Float32Array(D) };
    const { saves, chunks } = await split(((tr: import('../../src/index.js').Tracer, p: { steer: TensorProxy }) => {
      tr.invoke(c.source_ids!, (m) => {
        m.transformer.h[2]!.output = m.transformer.h[2]!.output.add(p.steer);
        m.output.logits.at(0, -1, 0).save('other');
      });
      tr.invoke(ids, (m) => {
        m.transformer.h[2]!.output = m.transformer.h[2]!.output.add(p.steer);
        grad(m.output.logits.at(0, -1, c.answer_id!), p.steer).save('g');
      });
    }) as never, { steer });
    expect(chunks).toBe(2);
    // Adding the param at every position: its gradient is the block-2 gradient summed over positions.
    const want = e.grads['transformer.h.2']!;
    const T = want.shape[1]!;
    const sum = Array.from({ length: D }, (_, d) => { let s = 0; for (let t = 0; t < T; t++) s += want.values[t * D + d]!; return s; });
    expectClose(saves.g!.data as Float32Array, sum, 1e-4, 'param grad');
  }, 120_000);
});
