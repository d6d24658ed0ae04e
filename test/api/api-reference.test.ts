/**
 * Every reference.json case except gradients, generate and attention_probs, written with
 * the TypeScript API, on both gpt2-facts exports, against PyTorch within 1e-4
 * (probabilities 1e-5).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type ModuleRef } from '../../src/index.js';
import { EXPORTS, refCase, expectClose, softmax, argmax, topk, row, mod } from '../helpers/reference.js';


describe.each(EXPORTS)('TS API on the $name export', ({ path }) => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(path);
  });
  afterAll(async () => model?.dispose());

  it('clean_logits', async () => {
    const c = refCase('clean_logits');
    const e = c.expect as { last_logits: number[]; top5: number[] };
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      m.output.logits.at(':', -1, ':').save('last');
    });
    expect(saves.last!.shape).toEqual([1, 874]);
    expectClose(saves.last!.data as Float32Array, e.last_logits, 1e-4);
    expect(topk(saves.last!.data as Float32Array, 5)).toEqual(e.top5);
  });

  it('a trace that changes nothing returns the plain run bit-identically', async () => {
    const c = refCase('clean_logits');
    const ids = c.input_ids as number[];
    const plain = await model.trace(ids, (m) => { m.output.save('logits'); });
    const touched = await model.trace(ids, (m) => {
      m.transformer.h[1].output.save('h1');
      m.output.save('logits');
    });
    expect(Buffer.from((touched.saves.logits!.data as Float32Array).buffer).equals(Buffer.from((plain.saves.logits!.data as Float32Array).buffer))).toBe(true);
  });

  it('save_outputs', async () => {
    const c = refCase('save_outputs');
    const e = c.expect as Record<string, { shape: number[]; values: number[] }>;
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      for (const p of Object.keys(e)) mod(m, p).output.save(p);
    });
    for (const [p, want] of Object.entries(e)) {
      expect(saves[p]!.shape, p).toEqual(want.shape);
      expectClose(saves[p]!.data as Float32Array, want.values, 1e-4, p);
    }
  });

  it('zero_ablate_mlp', async () => {
    const c = refCase('zero_ablate_mlp');
    for (const k of c.expect as { layer: number; p_answer: number; top1: number; last_logits: number[] }[]) {
      const { saves } = await model.trace(c.input_ids as number[], (m) => {
        m.transformer.h[k.layer]!.mlp.output = 0;
        m.output.logits.at(':', -1, ':').save('last');
      });
      const last = saves.last!.data as Float32Array;
      expectClose(last, k.last_logits, 1e-4, `layer ${k.layer}`);
      expect(softmax(last)[c.answer_id!]).toBeCloseTo(k.p_answer, 5);
      expect(argmax(last)).toBe(k.top1);
    }
  });

  it('patch_block_outputs (the whole layer × position grid)', async () => {
    const c = refCase('patch_block_outputs');
    const grid = c.expect as number[][][];
    for (let k = 0; k < grid.length; k++) {
      for (let p = 0; p < grid[k]!.length; p++) {
        const { saves } = await model.trace((tr) => {
          let hb = undefined as unknown as ReturnType<ModuleRef['output']['at']>;
          tr.invoke(c.source_ids!, (m) => { hb = m.transformer.h[k]!.output.at(':', p, ':'); });
          tr.invoke(c.input_ids as number[], (m) => {
            m.transformer.h[k]!.output.at(':', p, ':').set(hb);
            m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
          });
        });
        const probs = saves.probs!.data as Float32Array;
        expect(Math.abs(probs[c.answer_id!]! - grid[k]![p]![0]!), `k=${k} p=${p} answer`).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(probs[c.source_answer_id!]! - grid[k]![p]![1]!), `k=${k} p=${p} source answer`).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('steer_add', async () => {
    const c = refCase('steer_add');
    const e = c.expect as { last_logits: number[]; top1: number };
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      const h = m.transformer.h[c.layer!]!;
      h.output = h.output.add(new Float32Array(c.vector!).map((x) => x * c.alpha!));
      m.output.logits.at(':', -1, ':').save('last');
    });
    expectClose(saves.last!.data as Float32Array, e.last_logits, 1e-4);
    expect(argmax(saves.last!.data as Float32Array)).toBe(e.top1);
  });

  it('logit_lens', async () => {
    const c = refCase('logit_lens');
    const e = c.expect as { layer: number; top1: number; p_top1: number; p_answer: number }[];
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      for (const k of e) {
        const h = m.transformer.h[k.layer]!.output.at(':', -1, ':');
        m.lm_head(m.transformer.ln_f(h)).softmax(-1).save(`lens.${k.layer}`);
      }
    });
    for (const k of e) {
      const probs = saves[`lens.${k.layer}`]!.data as Float32Array;
      expect(argmax(probs), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(probs[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(probs[c.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('skip_block', async () => {
    const c = refCase('skip_block');
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      const b = m.transformer.h[c.layer!]!;
      b.output = b.input;
      m.output.logits.at(':', -1, ':').save('last');
    });
    expectClose(saves.last!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('batched_cross_prompt', async () => {
    const c = refCase('batched_cross_prompt');
    const [a, b] = c.input_ids as number[][];
    const e = c.expect as { row0: number[]; row1: number[] };
    const { saves } = await model.trace((tr) => {
      tr.invoke(a!, () => {});
      let hb = undefined as unknown as ReturnType<ModuleRef['output']['at']>;
      tr.invoke(b!, (m) => { hb = m.transformer.h[c.layer!]!.output.at(':', -1, ':'); });
      tr.model.transformer.h[c.layer!]!.output.at(0, -1, ':').set(hb.at(0));
      tr.model.output.logits.at(':', -1, ':').save('last');
    });
    expect(saves.last!.shape).toEqual([2, 874]);
    expectClose(row(saves.last!, 0), e.row0, 1e-4, 'row0');
    expectClose(row(saves.last!, 1), e.row1, 1e-4, 'row1');
  });
});
