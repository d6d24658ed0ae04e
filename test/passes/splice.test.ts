/**
 * Splicing edge cases, checked against PyTorch's saved activations (reference.json
 * `save_outputs`) or against a second, independent mechanism of the engine.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { LanguageModel, NnsErrors } from '../../src/index.js';
import { MODEL_DIR, refCase, expectClose } from '../helpers/reference.js';

const SAVE = refCase('save_outputs');
const IDS = SAVE.input_ids as number[];
const H0 = (SAVE.expect as Record<string, { shape: number[]; values: number[] }>)['transformer.h.0']!;

describe('splicing', () => {
  let model: LanguageModel;
  beforeAll(async () => { model = await LanguageModel.load(MODEL_DIR); });

  it('a slice set with a step writes exactly the selected positions; a later read sees it', async () => {
    const { saves } = await model.trace(IDS, (m) => {
      m.transformer.h[0].output.at(':', '::2', ':').set(0);
      m.transformer.h[0].output.save('after');
    }, { fast: false });
    const want = H0.values.map((v, i) => (Math.floor(i / 128) % 2 === 0 ? 0 : v));
    expectClose(saves.after!.data as Float32Array, want, 1e-4);
  });

  it('a read before a set sees the old value, a read after sees the new one', async () => {
    const { saves } = await model.trace(IDS, (m) => {
      m.transformer.h[0].output.save('before');
      m.transformer.h[0].output = 1;
      m.transformer.h[0].output.save('after');
    }, { fast: false });
    expectClose(saves.before!.data as Float32Array, H0.values, 1e-4);
    expect(Array.from(saves.after!.data as Float32Array).every((x) => x === 1)).toBe(true);
  });

  it('negative-step slices read positions in reverse', async () => {
    const { saves } = await model.trace(IDS, (m) => { m.transformer.h[0].output.at(':', '::-1', ':').save('rev'); });
    const rows = Array.from({ length: 8 }, (_, p) => H0.values.slice((7 - p) * 128, (8 - p) * 128)).flat();
    expectClose(saves.rev!.data as Float32Array, rows, 1e-4);
  });

  it('setting the module that produces a graph output replaces the graph output', async () => {
    const { saves } = await model.trace(IDS, (m) => {
      m.lm_head.output = 0;
      m.output.logits.save('logits');
    }, { fast: false });
    expect(saves.logits!.shape).toEqual([1, 8, 874]);
    expect(Array.from(saves.logits!.data as Float32Array).every((x) => x === 0)).toBe(true);
  });

  it('setting a module input changes only what that module sees (splice vs. module application agree)', async () => {
    const viaInput = await model.trace(IDS, (m) => {
      m.transformer.h[2].mlp.input = 0;
      m.transformer.h[2].mlp.output.save('mlp');
      m.transformer.h[2].ln_2.output.save('ln2');
    }, { fast: false });
    const viaCall = await model.trace(IDS, (m) => {
      const x = m.transformer.h[2].ln_2.output;
      m.transformer.h[2].mlp(x.zerosLike()).save('mlp');
      x.save('ln2');
    }, { fast: false });
    expectClose(viaInput.saves.mlp!.data as Float32Array, Array.from(viaCall.saves.mlp!.data as Float32Array), 1e-6);
    // ln_2's own output (the value feeding the mlp) is untouched outside the mlp
    expectClose(viaInput.saves.ln2!.data as Float32Array, Array.from(viaCall.saves.ln2!.data as Float32Array), 0);
  });

  it('assignment drops leading size-1 dims of the value, as numpy and PyTorch do', async () => {
    const c = refCase('batched_cross_prompt');
    const [a, b] = c.input_ids as number[][];
    const { saves } = await model.trace((tr) => {
      tr.invoke(a!, () => {});
      let hb = undefined as unknown as ReturnType<typeof tr.model.output.at>;
      tr.invoke(b!, (m) => { hb = m.transformer.h[3].output.at(':', -1); });
      tr.model.transformer.h[3].output.at(0, -1).set(hb); // [1, 128] into a [128] slot
      tr.model.output.logits.at(':', -1, ':').save('last');
    }, { fast: false });
    expectClose((saves.last!.data as Float32Array).subarray(0, 874), (c.expect as { row0: number[] }).row0, 1e-4);
  });

  it('an intervention that needs a later module\'s value is an error at the intervention', async () => {
    const err = await model.trace(IDS, (m) => {
      m.transformer.h[1].output = m.transformer.h[3].output;
    }, { fast: false }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(NnsErrors);
    const e = (err as NnsErrors).errors[0]!;
    expect(e.code).toBe('order');
    expect(e.span?.file).toMatch(/splice\.test\.ts$/);
  });
});

describe('rewritten models', () => {
  it('agree with and without onnxruntime graph optimizations', async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    const ort = (await import('onnxruntime-node')).default;
    const { exportModel } = await import('../../src/model/export.js');
    const model = await LanguageModel.load(MODEL_DIR);
    const proto = model.compile(IDS, (m) => {
      m.transformer.h[1].mlp.output = 0;
      const h = m.transformer.h[2].output.at(':', -1, ':');
      m.lm_head(m.transformer.ln_f(h)).softmax(-1).save('lens');
      m.transformer.h[3].output.at(':', '2:5', ':').set(m.transformer.h[3].output.at(':', '2:5', ':').mul(0.5));
      m.output.logits.save('logits');
    });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-opt-'));
    const file = exportModel(model.mc.loaded, proto, path.join(dir, 'rewritten.onnx')).graphPath;
    const feeds = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(IDS.map(BigInt)), [1, 8]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(8).fill(1n), [1, 8]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([0, 1, 2, 3, 4, 5, 6, 7].map(BigInt)), [1, 8]),
    };
    const results = [];
    for (const level of ['disabled', 'all'] as const) {
      const s = await ort.InferenceSession.create(file, { graphOptimizationLevel: level });
      results.push(await s.run(feeds));
      await s.release();
    }
    for (const name of ['lens', 'logits']) {
      expectClose(results[0]![name]!.data as Float32Array, Array.from(results[1]![name]!.data as Float32Array), 1e-5, name);
    }
  });
});
