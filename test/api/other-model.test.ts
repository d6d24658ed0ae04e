/**
 * Nothing in the compiler knows the bundled model's names: a Llama-like model with other
 * names (model.layers.N.self_attn / mlp / adapter, model.norm, lm_head, an op outside every
 * module) goes through the same API. No PyTorch exists for it, so each test checks an
 * identity the model's own structure implies.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect, beforeAll } from 'vitest';
import { LanguageModel, encodeModel } from '../../src/index.js';
import { llamaLike, V } from '../fixtures/modules/synthetic.js';

describe('a Llama-like model with other names', () => {
  let model: LanguageModel;
  const ids = [1, 4, 2, 7, 3];
  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-llama-'));
    const file = path.join(dir, 'llama.onnx');
    fs.writeFileSync(file, encodeModel(llamaLike()));
    model = await LanguageModel.load(file, { cacheDir: path.join(dir, 'cache') });
  });

  it('the module tree has the model\'s own paths', () => {
    const paths = [...model.modules.modules.keys()];
    expect(paths).toContain('model.layers.1.self_attn');
    expect(paths).toContain('model.layers.0.adapter.0');
    expect(paths).not.toContain('transformer.h.0');
  });

  it('logit lens at the last layer reproduces the logits (module application)', async () => {
    for (const fast of [true, false]) {
      const { saves } = await model.trace(ids, (m) => {
        m.lm_head(m.model.norm(m.model.layers[1].output)).mul(0.5).save('lens');
        m.output.logits.save('logits');
      }, { fast });
      expect(saves.lens!.shape).toEqual([1, ids.length, V]);
      expect(Array.from(saves.lens!.data as Float32Array)).toEqual(Array.from(saves.logits!.data as Float32Array));
    }
  });

  it('with the adapter zeroed, a block\'s output is its input plus its attention', async () => {
    const { saves } = await model.trace(ids, (m) => {
      const b = m.model.layers[0];
      b.adapter.output = 0;
      b.input.save('in');
      b.self_attn.output.save('attn');
      b.output.save('out');
    }, { fast: false });
    const [x, a, o] = [saves.in!, saves.attn!, saves.out!].map((t) => t.data as Float32Array);
    expect(Array.from(o!)).toEqual(Array.from(x!, (v, i) => Math.fround(v + a![i]!)));
  });

  it('patching the last block\'s output from another prompt gives that prompt\'s logits', async () => {
    const other = [5, 5, 9, 0, 6];
    const { saves } = await model.trace((tr) => {
      let hb = undefined as unknown as ReturnType<typeof tr.model.output.at>;
      tr.invoke(other, (m) => { hb = m.model.layers[1].output.at(':', ':', ':'); m.output.logits.save('b'); });
      tr.invoke(ids, (m) => {
        m.model.layers[1].output = hb;
        m.output.logits.save('a');
      });
    }, { fast: false });
    expect(Array.from(saves.a!.data as Float32Array)).toEqual(Array.from(saves.b!.data as Float32Array));
  });
});
