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
import { LanguageModel, encodeModel, grad, type Tensor, type TensorProxy } from '../../src/index.js';
import { llamaLike, D, V } from '../fixtures/modules/synthetic.js';

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

  it('grad(logit, block 0 output) and grad(logit, a weight) match central finite differences of the model', async () => {
    // Y = logits[0, -1, 3]; directional derivatives along seeded directions u, by finite
    // differences of forward-only traces that add ±h·u to the block output (or the weight's use).
    const T = ids.length;
    const dir = (n: number, k: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(1.3 * i + k));
    const run = (shift?: Tensor, withGrad = false) => model.trace(ids, (m) => {
      const b = m.model.layers[0];
      if (shift) b.output = b.output.add(shift);
      const y = m.output.logits.at(0, -1, 3).save('y');
      if (withGrad) {
        grad(y, b.output).save('gh');
        grad(y, m.model.norm.weight as unknown as TensorProxy).save('gw');
      }
    }, { fast: false });
    const { saves } = await run(undefined, true);
    expect(saves.gh!.shape).toEqual([1, T, D]);
    expect(saves.gw!.shape).toEqual([D]);
    const h = 1e-2;
    for (const k of [0, 1]) {
      const u = dir(T * D, k);
      const shifted = (sign: number): Tensor => ({ dtype: 'float32', shape: [1, T, D], data: u.map((x) => sign * h * x) });
      const fd = (Number((await run(shifted(1))).saves.y!.data[0]) - Number((await run(shifted(-1))).saves.y!.data[0])) / (2 * h);
      let an = 0;
      for (let i = 0; i < u.length; i++) an += Number(saves.gh!.data[i]) * u[i]!;
      expect(Math.abs(an - fd), `direction ${k}: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(1e-3 * Math.max(1, Math.abs(fd)));
    }
    // The final norm's weight: y is linear in it, so its gradient times a direction is exactly
    // the change of y when the norm's output is scaled per channel by that direction.
    const u = dir(D, 5);
    const scaled = async (sign: number): Promise<number> => Number((await model.trace(ids, (m) => {
      m.model.norm.output = m.model.norm.output.mul({ dtype: 'float32', shape: [D], data: u.map((x) => 1 + sign * h * x) });
      m.output.logits.at(0, -1, 3).save('y');
    }, { fast: false })).saves.y!.data[0]);
    const wv = (await model.trace(ids, (m) => { (m.model.norm.weight as unknown as TensorProxy).save('w'); })).saves.w!.data as Float32Array;
    const fdw = ((await scaled(1)) - (await scaled(-1))) / (2 * h);
    let anw = 0;
    for (let i = 0; i < D; i++) anw += Number(saves.gw!.data[i]) * u[i]! * wv[i]!;
    expect(Math.abs(anw - fdw), `weight: analytic ${anw}, finite differences ${fdw}`).toBeLessThanOrEqual(1e-3 * Math.max(1, Math.abs(fdw)));
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
