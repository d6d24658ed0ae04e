/**
 * The host evaluator against the compiled path: every pure op the fast path finishes on the
 * host, saved from one trace on gpt2-facts, compared with the same trace compiled into the
 * graph (onnxruntime computes it). Exact ops must be bit-identical; transcendental ops,
 * reductions, softmax and matmul within 1e-6 relative.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type ModelRef, type Tensor } from '../../src/index.js';
import { runGraph } from '../../src/engine.js';
import { FastExecutor, compress, indexTensor, tensorOf } from '../../src/fast/index.js';
import { MODEL_DIR } from '../helpers/reference.js';

const IDS = [464, 412, 733, 318, 287, 262];

function relDiff(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) {
    const [x, y] = [Number(a.data[i]), Number(b.data[i])];
    d = Math.max(d, Math.abs(x - y) / Math.max(1, Math.abs(y)));
  }
  return d;
}

describe('host evaluator vs onnxruntime', () => {
  let model: LanguageModel;
  beforeAll(async () => { model = await LanguageModel.load(MODEL_DIR); });
  afterAll(async () => model?.dispose());

  const exact = ['slice', 'step', 'reverse', 'newaxis', 'ellipsis', 'arith', 'neg', 'abs', 'relu', 'zeros', 'ones', 'reshape', 'transpose', 'argmax', 'topk_i'];
  const close = ['softmax', 'log_softmax', 'exp', 'log', 'sqrt', 'sum', 'sum_all', 'mean', 'max', 'norm', 'matmul', 'topk_v'];

  it('agrees with the compiled path on every op', async () => {
    const trace = (m: ModelRef): void => {
      const h = m.transformer.h[1].output;
      const l = m.output.logits;
      h.at(':', -1, ':').save('slice');
      h.at('...', '1:9:3').save('step');
      h.at(0, '::-1', -2).save('reverse');
      h.at(0, null, -1).save('newaxis');
      h.at('...', 5).save('ellipsis');
      h.div(3).sub(h.mul(2)).add(0.25).save('arith');
      h.neg().save('neg');
      h.abs().save('abs');
      h.relu().save('relu');
      h.zerosLike().save('zeros');
      h.onesLike().save('ones');
      h.reshape([-1, 64]).save('reshape');
      h.transpose(1, 2).save('transpose');
      l.argmax(-1).save('argmax');
      const t = l.at(0, -1).topk(5);
      t.values.save('topk_v');
      t.indices.save('topk_i');
      l.at(':', -1, ':').softmax(-1).save('softmax');
      l.logSoftmax(-1).save('log_softmax');
      h.exp().save('exp');
      h.abs().add(1).log().save('log');
      h.abs().sqrt().save('sqrt');
      h.sum(-1).save('sum');
      h.sum().save('sum_all');
      h.mean(1, true).save('mean');
      h.max(-1).save('max');
      h.norm(-1).save('norm');
      h.at(0).matmul(h.at(0).transpose(0, 1)).save('matmul');
    };
    const fx = model.mc.fast as FastExecutor;
    const before = fx.stats.fastRuns;
    const a = model.build(IDS, trace);
    const got = await runGraph(a.graph, model.mc, { host: a.ctx.host });
    expect(fx.stats.fastRuns).toBe(before + 1);
    const b = model.build(IDS, trace);
    const want = await runGraph(b.graph, model.mc, { host: b.ctx.host, fast: false });
    const report: string[] = [];
    for (const k of exact) {
      expect(got.get(k)!.dtype, k).toBe(want.get(k)!.dtype);
      expect(got.get(k)!.shape, k).toEqual(want.get(k)!.shape);
      expect(Array.from(got.get(k)!.data, Number), k).toEqual(Array.from(want.get(k)!.data, Number));
    }
    for (const k of close) {
      const d = relDiff(got.get(k)!, want.get(k)!);
      report.push(`${k} ${d.toExponential(1)}`);
      expect(d, k).toBeLessThanOrEqual(1e-6);
    }
    console.log(`host vs onnxruntime (max rel diff): ${report.join(', ')}`);
  });
});

describe('host helpers', () => {
  it('indexes like numpy', () => {
    const x = tensorOf('float32', [2, 3, 4], Array.from({ length: 24 }, (_, i) => i));
    expect(Array.from(indexTensor(x, [{ kind: 'index', index: -1 }, { kind: 'slice', step: -2 }, { kind: 'index', index: 1 }]).data as Float32Array)).toEqual([21, 13]);
    const y = indexTensor(x, [{ kind: 'ellipsis' }, { kind: 'newaxis' }, { kind: 'slice', start: 1, stop: -1 }]);
    expect(y.shape).toEqual([2, 3, 1, 2]);
  });

  it('compresses keep/add feeds along constant axes', () => {
    const keep = new Float32Array(2 * 3 * 4).fill(1);
    keep.fill(0, 12 + 4, 12 + 8); // row 1, position 1, every feature
    expect(compress(keep, [2, 3, 4]).shape).toEqual([2, 3, 1]);
    expect(compress(new Float32Array(24), [2, 3, 4]).shape).toEqual([1, 1, 1]);
    const add = Float32Array.from({ length: 24 }, (_, i) => i % 4);
    expect(compress(add, [2, 3, 4]).shape).toEqual([1, 1, 4]);
  });
});
