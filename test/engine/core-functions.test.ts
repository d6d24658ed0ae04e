/**
 * Every core function of the language, computed two independent ways — lowered to ONNX
 * operators (compiled path) and evaluated on the host after a fast-path run — on both
 * gpt2-facts exports (opset 17 with reduction axes as attributes, opset 20 with axes as
 * inputs). They must agree; a few are also checked against arithmetic done here.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import { LanguageModel, type TensorProxy, type ModelRef, type Tensor } from '../../src/index.js';
import { EXPORTS, refCase, expectClose } from '../helpers/reference.js';
import type { FastExecutor } from '../../src/fast/index.js';

const IDS = refCase('clean_logits').input_ids as number[];

function body(m: ModelRef): void {
  const h: TensorProxy = m.transformer.h[1].output; // [1, 8, 128]
  const v = h.at(0, -1, ':'); // [128]
  h.at(':', '2:5', '...').save('slice');
  h.at('...', '::16').save('step');
  h.at(':', null, 3, ':').save('newaxis');
  v.add(1).mul(2).sub(v).div(3).neg().save('arith');
  v.matmul(m.transformer.h[1].output.at(0, ':', ':').transpose(0, 1)).save('matmul');
  v.softmax(-1).save('softmax');
  v.logSoftmax(-1).save('log_softmax');
  v.argmax(-1).save('argmax');
  const t = v.topk(5);
  t.values.save('topk_values');
  t.indices.save('topk_indices');
  h.sum(-1).save('sum');
  h.mean(1).save('mean');
  h.max(-1).save('max');
  h.norm(-1).save('norm');
  h.reshape([8, -1]).save('reshape');
  v.abs().add(1).log().sqrt().exp().save('unary');
  v.relu().save('relu');
  v.tanh().save('tanh');
  v.save('v');
  v.zerosLike().add(v.onesLike()).save('like');
}

describe.each(EXPORTS)('core functions on the $name export', ({ path }) => {
  let model: LanguageModel;
  let fast: Record<string, Tensor>;
  let compiled: Record<string, Tensor>;
  beforeAll(async () => {
    model = await LanguageModel.load(path);
    const executor = model.mc.fast as FastExecutor;
    const before = executor.stats.fastRuns;
    fast = (await model.trace(IDS, body)).saves;
    expect(executor.stats.fastRuns, executor.stats.lastReject).toBe(before + 1);
    compiled = (await model.trace(IDS, body, { fast: false })).saves;
  });

  it('the fast path and the compiled path agree on every function', () => {
    expect(Object.keys(fast).sort()).toEqual(Object.keys(compiled).sort());
    for (const k of Object.keys(compiled)) {
      expect(fast[k]!.shape, k).toEqual(compiled[k]!.shape);
      expect(fast[k]!.dtype, k).toBe(compiled[k]!.dtype);
      expectClose(fast[k]!.data as Float32Array, Array.from(compiled[k]!.data as Float32Array, Number), 1e-4, k);
    }
  });

  it('shapes and a few values follow PyTorch semantics', () => {
    const s = compiled;
    expect(s.slice!.shape).toEqual([1, 3, 128]);
    expect(s.step!.shape).toEqual([1, 8, 8]);
    expect(s.newaxis!.shape).toEqual([1, 1, 128]);
    expect(s.matmul!.shape).toEqual([8]);
    expect(s.argmax!.dtype).toBe('int64');
    expect(s.topk_values!.shape).toEqual([5]);
    expect(s.sum!.shape).toEqual([1, 8]);
    expect(s.mean!.shape).toEqual([1, 128]);
    expect(s.reshape!.shape).toEqual([8, 128]);
    const sm = s.softmax!.data as Float32Array;
    expect(Math.abs(sm.reduce((a, b) => a + b, 0) - 1)).toBeLessThan(1e-5);
    const vals = s.topk_values!.data as Float32Array;
    for (let i = 1; i < 5; i++) expect(vals[i - 1]!).toBeGreaterThanOrEqual(vals[i]!);
    expect(Number(s.argmax!.data[0])).toBe(Number(s.topk_indices!.data[0]));
    expect(Array.from(s.like!.data as Float32Array).every((x) => x === 1)).toBe(true);
    expectClose(s.tanh!.data as Float32Array, Array.from(s.v!.data as Float32Array, Math.tanh), 1e-6, 'tanh');
    const lsm = s.log_softmax!.data as Float32Array;
    expectClose(Array.from(lsm, Math.exp), Array.from(sm), 1e-6, 'exp(log_softmax) = softmax');
  });
});
