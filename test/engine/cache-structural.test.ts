/**
 * The structural compile cache: another prompt of another length and other literal values
 * reuse the compiled graph (no ONNX pipeline, no variant write) and give exactly what a
 * fresh compile gives; every rewritten graph sits next to the one weights file.
 * Runs on the compiled path (fast path off) with tiers off, so runs are bit-comparable.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type ModelRef } from '../../src/index.js';
import { compileCacheOf, structuralKey } from '../../src/compile-cache.js';
import { liftConstants } from '../../passes/lift-constants.js';
import { decodeModel } from '../../src/onnx/serde.js';
import type { TensorProto } from '../../src/onnx/proto.js';
import { MODEL_DIR, refCase, argmax } from '../helpers/reference.js';

process.env.ONNSIGHT_FAST = '0';

/** Bytes of the tensors a model file holds inline (initializers without external data, Constant attributes). */
function inlineTensorBytes(file: string): number {
  const p = decodeModel(fs.readFileSync(file));
  const size = (t: TensorProto): number =>
    (t.raw_data?.length ?? 0) + 4 * ((t.float_data?.length ?? 0) + (t.int32_data?.length ?? 0)) + 8 * ((t.int64_data?.length ?? 0) + (t.double_data?.length ?? 0));
  const nodes = [...(p.graph?.node ?? []), ...(p.functions ?? []).flatMap((f) => f.node ?? [])];
  return (p.graph?.initializer ?? []).filter((t) => !t.external_data?.length).reduce((s, t) => s + size(t), 0)
    + nodes.flatMap((n) => n.attribute ?? []).reduce((s, a) => s + (a.t ? size(a.t) : 0) + (a.tensors ?? []).reduce((x, t) => x + size(t), 0), 0);
}

const bits = (a: Float32Array, b: Float32Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('structural compile cache', () => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(MODEL_DIR);
  });
  afterAll(async () => model?.dispose());

  const lens = (m: ModelRef): void => {
    for (let l = 0; l < 4; l++) m.lm_head(m.transformer.ln_f(m.transformer.h[l]!.output.at(':', -1, ':'))).softmax(-1).save(`lens.${l}`);
  };

  it('logit lens: a second prompt of another length hits the cache and matches the reference / a fresh compile', async () => {
    const cache = compileCacheOf(model.mc);
    const c = refCase('logit_lens');
    const e = c.expect as { layer: number; top1: number; p_top1: number }[];
    const misses = cache.misses;
    const a = await model.trace(c.input_ids as number[], lens, { tiered: false });
    for (const k of e) {
      const p = a.saves[`lens.${k.layer}`]!.data as Float32Array;
      expect(argmax(p)).toBe(k.top1);
      expect(Math.abs(p[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
    }
    expect(cache.misses).toBe(misses + 1);
    const hits = cache.hits;
    const prompt = 'The Colosseum is in the city of';
    expect(model.tokenize(prompt).length).not.toBe((c.input_ids as number[]).length);
    const b = await model.trace(prompt, lens, { tiered: false });
    expect(cache.hits).toBe(hits + 1);
    expect(argmax(b.saves['lens.3']!.data as Float32Array)).toBe(model.tokenize(' Rome')[0]);
    const fresh = await model.trace(prompt, lens, { tiered: false, cache: false });
    for (let l = 0; l < 4; l++) expect(bits(b.saves[`lens.${l}`]!.data as Float32Array, fresh.saves[`lens.${l}`]!.data as Float32Array)).toBe(true);
  });

  it('literals are lifted: other steering coefficients reuse the graph, bit-identical to a fresh compile', async () => {
    const cache = compileCacheOf(model.mc);
    const c = refCase('steer_add');
    const steer = (alpha: number) => (m: ModelRef): void => {
      const h = m.transformer.h[c.layer!]!;
      h.output = h.output.add(new Float32Array(c.vector!).map((x) => x * alpha));
      m.output.logits.at(':', -1, ':').save('last');
    };
    await model.trace(c.input_ids as number[], steer(1), { tiered: false });
    const hits = cache.hits;
    const r = await model.trace(c.input_ids as number[], steer(3.5), { tiered: false });
    expect(cache.hits).toBe(hits + 1);
    const fresh = await model.trace(c.input_ids as number[], steer(3.5), { tiered: false, cache: false });
    expect(bits(r.saves.last!.data as Float32Array, fresh.saves.last!.data as Float32Array)).toBe(true);
    const other = await model.trace(c.input_ids as number[], steer(0), { tiered: false });
    expect(bits(r.saves.last!.data as Float32Array, other.saves.last!.data as Float32Array)).toBe(false);
  });

  it('the key ignores tokens, prompt length, spans and literal values, but not rows or structure', () => {
    const key = (prompt: number[], fn: (m: ModelRef) => void): string => {
      const { graph } = model.build(prompt, fn);
      graph.dimValues = {};
      liftConstants(graph);
      return structuralKey(graph);
    };
    const k1 = key([1, 2, 3], (m) => { m.transformer.h[1].output = m.transformer.h[1].output.mul(2); });
    const k2 = key([4, 5, 6, 7, 8], (m) => { m.transformer.h[1].output = m.transformer.h[1].output.mul(-7); });
    const k3 = key([1, 2, 3], (m) => { m.transformer.h[2].output = m.transformer.h[2].output.mul(2); });
    expect(k1).toBe(k2);
    expect(k1).not.toBe(k3);
  });

  it('every rewritten graph is small and references the one weights file beside it', () => {
    const dir = model.mc.loaded.dir;
    const locs = (file: string): string[] => {
      const p = decodeModel(fs.readFileSync(file));
      return [...new Set((p.graph?.initializer ?? []).flatMap((t) => (t.external_data ?? []).filter((kv) => kv.key === 'location').map((kv) => kv.value!)))];
    };
    const original = locs(model.mc.loaded.graphPath);
    expect(original.length).toBe(1);
    const variants = fs.readdirSync(dir).filter((f) => /^nns-.*\.onnx$/.test(f));
    expect(variants.length).toBeGreaterThan(0);
    for (const v of variants) {
      // Graphs whose tensors are all small and inline (module models of a norm, traces on constants) reference none.
      expect(original, v).toEqual(expect.arrayContaining(locs(path.join(dir, v))));
      expect(locs(path.join(dir, v)).length, v).toBeLessThanOrEqual(1);
      // No weight copied into the graph: its inline tensors (initializers without external data and
      // Constant attributes, in the graph and its functions) stay far below the weights file. (Not the
      // file size: the cache holds graphs of every test, and a large script on this tiny model is a
      // graph of thousands of nodes without copying a weight.)
      expect(inlineTensorBytes(path.join(dir, v)), v).toBeLessThan(fs.statSync(path.join(dir, original[0]!)).size / 4);
    }
  });
});
