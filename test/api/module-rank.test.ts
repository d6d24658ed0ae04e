/**
 * Module calls on values of another rank (issue 8 item 10), as PyTorch does them: GPT-2's
 * MLP (whose exported Conv1D bakes rank 3 into a Reshape) and LayerNorm applied to rank 1,
 * 2 and 4 values, on the fast and compiled paths of both gpt2-facts exports.
 *
 * Ground truth is independent of the code under test: the block-0 output comes from
 * PyTorch (reference.json save_outputs), and the MLP / LayerNorm are evaluated on the host
 * in float64 from the module's weights (gelu_new, eps from config.json). Calls that cannot
 * run at another rank (a block or its attention, which read the model's own mask) are
 * located shape errors before anything runs, never an onnxruntime failure. On the
 * Llama-like test model, a call on a slice equals the call on the full value, sliced.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, decodeModel, encodeModel, type Tensor } from '../../src/index.js';
import { tensorData } from '../../src/onnx/graph-builder.js';
import { NnsError, NnsErrors } from '../../src/errors.js';
import { EXPORTS, MODEL_DIR, expectClose, refCase } from '../helpers/reference.js';
import { llamaLike } from '../fixtures/modules/synthetic.js';

const config = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'config.json'), 'utf8')) as { n_embd: number; layer_norm_epsilon: number; activation_function: string };
const H = config.n_embd;
const save = refCase('save_outputs');
const ids = save.input_ids as number[];
/** PyTorch's block-0 output, [1, T, H]. */
const h0 = (save.expect as Record<string, { shape: number[]; values: number[] }>)['transformer.h.0']!;
const T = h0.shape[1]!;
if (config.activation_function !== 'gelu_new') throw new Error('the host MLP below implements gelu_new only');
const row = (t: number): number[] => h0.values.slice(t * H, (t + 1) * H);

/** x @ W + b for one row (Conv1D: W is [in, out]). */
function affine(x: readonly number[], w: Tensor, b: Tensor): number[] {
  const [nIn, nOut] = w.shape as [number, number];
  const W = w.data as Float32Array;
  const out = Array.from(b.data as Float32Array, Number);
  for (let i = 0; i < nIn; i++) for (let j = 0; j < nOut; j++) out[j]! += x[i]! * W[i * nOut + j]!;
  return out;
}
const geluNew = (x: number): number => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
function layerNorm(x: readonly number[], g: Tensor, b: Tensor): number[] {
  const mean = x.reduce((p, v) => p + v, 0) / x.length;
  const v = x.reduce((p, y) => p + (y - mean) ** 2, 0) / x.length;
  const G = g.data as Float32Array;
  const B = b.data as Float32Array;
  return x.map((y, i) => ((y - mean) / Math.sqrt(v + config.layer_norm_epsilon)) * G[i]! + B[i]!);
}

/** Block 3's MLP and ln_2 weights, read straight from the TorchScript export's initializers (both exports hold PyTorch's weights). */
const w: Record<string, Tensor> = (() => {
  const g = decodeModel(fs.readFileSync(path.join(MODEL_DIR, 'onnx', 'model.onnx'))).graph!;
  const get = (name: string): Tensor => {
    const t = g.initializer!.find((x) => x.name === name)!;
    return { dtype: 'float32', shape: t.dims!.map(Number), data: tensorData(t) as Float32Array };
  };
  const p = 'transformer.h.3.';
  return {
    fcW: get(`${p}mlp.c_fc.weight`), fcB: get(`${p}mlp.c_fc.bias`), projW: get(`${p}mlp.c_proj.weight`), projB: get(`${p}mlp.c_proj.bias`),
    lnW: get(`${p}ln_2.weight`), lnB: get(`${p}ln_2.bias`),
  };
})();
const mlp = (x: number[]): number[] => affine(affine(x, w.fcW!, w.fcB!).map(geluNew), w.projW!, w.projB!);

describe.each(EXPORTS)('module calls at another rank on the $name export', ({ path: modelPath }) => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(modelPath);
  }, 60_000);
  afterAll(async () => model?.dispose());


  it.each([true, false])('mlp and ln_2 on rank 1, 2 and 4 values agree with a host evaluation (fast: %s)', async (fast) => {
    const { saves } = await model.trace(ids, (m) => {
      const h = m.transformer.h[0]!.output;
      const b = m.transformer.h[3]!;
      b.mlp(h.at(':', -1, ':')).save('r2');                 // [1, H]: the example
      b.mlp(h.at(0, -1, ':')).save('r1');                   // [H]
      b.mlp(h.reshape([1, 2, T / 2, H])).save('r4');        // [1, 2, T/2, H]
      b.ln_2(h.at(':', -1, ':')).save('ln');                // [1, H]
    }, { fast });
    expect(saves.r2!.shape).toEqual([1, H]);
    expect(saves.r1!.shape).toEqual([H]);
    expect(saves.r4!.shape).toEqual([1, 2, T / 2, H]);
    expect(saves.ln!.shape).toEqual([1, H]);
    const last = mlp(row(T - 1));
    expectClose(saves.r2!.data as Float32Array, last, 1e-4, 'mlp(h[:, -1, :])');
    expectClose(saves.r1!.data as Float32Array, last, 1e-4, 'mlp(h[0, -1, :])');
    expectClose(saves.r4!.data as Float32Array, Array.from({ length: T }, (_, t) => mlp(row(t))).flat(), 1e-4, 'mlp(reshape(h, [1, 2, T/2, H]))');
    expectClose(saves.ln!.data as Float32Array, layerNorm(row(T - 1), w.lnW!, w.lnB!), 1e-4, 'ln_2(h[:, -1, :])');
  });

  it.each([true, false])('a block or attention call at another rank is a located shape error (fast: %s)', async (fast) => {
    for (const call of ['block', 'attn'] as const) {
      let caught: unknown;
      try {
        await model.trace(ids, (m) => {
          const x = m.transformer.h[0]!.output.at(':', -1, ':');
          (call === 'block' ? m.transformer.h[3]! : m.transformer.h[3]!.attn)(x).save('y');
        }, { fast });
      } catch (e) {
        caught = e;
      }
      const errs = caught instanceof NnsErrors ? caught.errors : caught instanceof NnsError ? [caught] : [];
      expect(errs.map((e) => e.code), String(caught)).toEqual(['shape-mismatch']);
      expect(errs[0]!.span?.file).toMatch(/module-rank\.test\.ts$/);
      expect(errs[0]!.message).toMatch(/cannot apply transformer\.h\[3\](\.attn)? \(input float32\[batch, sequence, 128\]\) to a value of shape float32\[1, 128\]/);
    }
  });

  it('attention applied in one invoke of a two-prompt batch is a located shape error, not an onnxruntime failure', async () => {
    let caught: unknown;
    try {
      await model.trace((tr) => {
        tr.invoke(ids, (m) => { m.transformer.h[3]!.attn(m.transformer.h[3]!.ln_1.output).save('a'); });
        tr.invoke(ids.slice(0, 5), (m) => { m.output.logits.save('b'); });
      });
    } catch (e) {
      caught = e;
    }
    const errs = caught instanceof NnsErrors ? caught.errors : [];
    expect(errs.map((e) => e.code), String(caught)).toEqual(['shape-mismatch']);
    expect(errs[0]!.message).toMatch(/its batch is 1, but the module also reads the model's own inputs\[\d\]/);
  });
});

describe('module calls at another rank on the Llama-like model', () => {
  let model: LanguageModel;
  const tokens = [1, 4, 2, 7, 3, 5];
  beforeAll(async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-llama-rank-'));
    const file = path.join(dir, 'llama.onnx');
    fs.writeFileSync(file, encodeModel(llamaLike()));
    model = await LanguageModel.load(file, { cacheDir: path.join(dir, 'cache') });
  }, 60_000);
  afterAll(async () => model?.dispose());

  it.each([true, false])('mlp and norm on a slice equal the call on the full value, sliced (fast: %s)', async (fast) => {
    const { saves } = await model.trace(tokens, (m) => {
      const h = m.model.layers[0].output;
      const mlp = m.model.layers[1].mlp;
      mlp(h).save('full');
      mlp(h.at(':', -1, ':')).save('last');
      mlp(h.reshape([1, 2, 3, -1])).save('r4');
      m.model.norm(h).save('nfull');
      m.model.norm(h.at(0, 2, ':')).save('n1');
    }, { fast });
    const full = saves.full!.data as Float32Array;
    const d = saves.full!.shape[2]!;
    expectClose(saves.last!.data as Float32Array, Array.from(full.subarray((tokens.length - 1) * d)), 1e-6, 'mlp(h[:, -1, :])');
    expect(saves.r4!.shape).toEqual([1, 2, 3, d]);
    expectClose(saves.r4!.data as Float32Array, Array.from(full), 1e-6, 'mlp(reshape(h, [1, 2, 3, -1]))');
    const nd = saves.nfull!.shape[2]!;
    expectClose(saves.n1!.data as Float32Array, Array.from((saves.nfull!.data as Float32Array).subarray(2 * nd, 3 * nd)), 1e-6, 'norm(h[0, 2, :])');
  });
});
