/**
 * The benchmark's Llama generator (bench/llama-model.ts) on a tiny config: stored shapes and
 * parameter count, determinism (same seed → same bytes; another seed → other weights), the
 * with-past graph against the one without a cache (an independent computation of the same
 * logits), and onnsight finding its blocks and tail by structure.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { buildLlamaModel, llamaParamCount, llamaParams, LLAMA_1B, type LlamaConfig } from '../../bench/llama-model.js';
import { LanguageModel } from '../../src/index.js';
import { FastExecutor } from '../../src/fast/index.js';
import { decodeModel } from '../../src/onnx/serde.js';

const TINY: LlamaConfig = { layers: 2, width: 16, heads: 4, kvHeads: 2, intermediate: 24, vocab: 50, positions: 32 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-llama-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
const ids = (xs: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);

describe('Llama generator (tiny config)', () => {
  const a = buildLlamaModel({ ...TINY, seed: 1, dir: path.join(tmp, 'a') });

  it('the 1.1 B config has TinyLlama\'s parameter count; stored shapes follow the config', () => {
    expect(llamaParamCount(LLAMA_1B)).toBe(1_100_048_384);
    expect(a.params).toBe(llamaParamCount(TINY));
    const g = decodeModel(fs.readFileSync(a.graphPath)).graph!;
    const dims = new Map((g.initializer ?? []).map((t) => [t.name, (t.dims ?? []).map(Number)]));
    for (const p of llamaParams(TINY)) expect(dims.get(p.name), p.state).toEqual(p.dims);
    expect(dims.get('model.rotary_emb.cos_cached')).toEqual([32, 4]);
    const bytes = [...dims.values()].reduce((s, d) => s + 4 * d.reduce((x, y) => x * y, 1), 0);
    expect(fs.statSync(a.weightsPath).size).toBeGreaterThanOrEqual(bytes);
  });

  it('deterministic: the same seed gives the same files, another seed other weights; a complete build is reused', () => {
    const b = buildLlamaModel({ ...TINY, seed: 1, dir: path.join(tmp, 'b') });
    for (const f of ['model.onnx', 'model.with-past.onnx', 'model.onnx.data']) expect(sha(path.join(b.dir, f)), f).toBe(sha(path.join(a.dir, f)));
    const c = buildLlamaModel({ ...TINY, seed: 2, dir: path.join(tmp, 'c') });
    expect(sha(c.weightsPath)).not.toBe(sha(a.weightsPath));
    expect(buildLlamaModel({ ...TINY, seed: 1, dir: a.dir }).reused).toBe(true);
  });

  it('runs in onnxruntime; the with-past graph (prompt, then one token on the cache) gives the logits of the graph without one', async () => {
    const full = await ort.InferenceSession.create(a.graphPath);
    const toks = [3, 17, 42, 8, 29, 11];
    const T = toks.length;
    const ones = (n: number): ort.Tensor => new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
    const pos = (from: number, n: number): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(from + i)), [1, n]);
    const want = (await full.run({ input_ids: ids(toks), attention_mask: ones(T), position_ids: pos(0, T) })).logits!;
    expect(want.dims).toEqual([1, T, 50]);
    const past = await ort.InferenceSession.create(a.withPastPath);
    const empty: Record<string, ort.Tensor> = {};
    for (const n of past.inputNames.filter((x) => x.startsWith('past_key_values.'))) empty[n] = new ort.Tensor('float32', new Float32Array(0), [1, 2, 0, 4]);
    const first = await past.run({ input_ids: ids(toks.slice(0, T - 1)), attention_mask: ones(T - 1), position_ids: pos(0, T - 1), ...empty });
    const cache: Record<string, ort.Tensor> = {};
    for (const n of Object.keys(empty)) cache[n] = first[n.replace('past_key_values.', 'present.')]!;
    const step = (await past.run({ input_ids: ids(toks.slice(T - 1)), attention_mask: ones(T), position_ids: pos(T - 1, 1), ...cache })).logits!;
    const w = (want.data as Float32Array).subarray((T - 1) * 50);
    const s = step.data as Float32Array;
    let d = 0;
    for (let i = 0; i < 50; i++) d = Math.max(d, Math.abs(w[i]! - s[i]!));
    expect(d).toBeLessThanOrEqual(1e-5);
    expect(Math.max(...Array.from(w, Math.abs))).toBeGreaterThan(1e-3); // not trivially zero
    await full.release();
    await past.release();
  });

  it('onnsight finds its blocks and its tail; a trace\'s logits equal onnxruntime\'s', async () => {
    const m = await LanguageModel.load(a.graphPath);
    try {
      expect([...m.mc.tree.modules.keys()]).toEqual(expect.arrayContaining(['model.layers.0', 'model.layers.1', 'model.norm', 'lm_head']));
      const fast = m.mc.fast as FastExecutor;
      const toks = [5, 6, 7, 8];
      const r = await m.trace(toks, (mm) => { mm.output.logits.save('l'); (mm as unknown as { model: { layers: { output: { save(n: string): void } }[] } }).model.layers[1]!.output.save('h'); });
      expect(fast.ported.tail?.path).toBe('lm_head');
      expect(fast.stats.fastRuns).toBe(1);
      const s = await ort.InferenceSession.create(a.graphPath);
      const want = (await s.run({ input_ids: ids(toks), attention_mask: new ort.Tensor('int64', new BigInt64Array(4).fill(1n), [1, 4]), position_ids: new ort.Tensor('int64', BigInt64Array.of(0n, 1n, 2n, 3n), [1, 4]) })).logits!;
      await s.release();
      const got = r.saves.l!.data as Float32Array;
      let d = 0;
      (want.data as Float32Array).forEach((v, i) => { d = Math.max(d, Math.abs(v - got[i]!)); });
      expect(d).toBeLessThanOrEqual(1e-5);
      expect(r.saves.h!.shape).toEqual([1, 4, 16]);
    } finally {
      await m.dispose();
    }
  });
});
