import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { buildGpt2Model, gpt2ParamCount, GPT2_SMALL, type Gpt2Config } from '../../bench/gpt2-model.js';
import { tensorData } from '../../src/onnx/graph-builder.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { LanguageModel } from '../../src/index.js';

const FACTS = path.resolve(__dirname, '../../models/gpt2-facts');
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-model-'));
afterAll(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));

const TINY: Gpt2Config = { layers: 2, width: 32, heads: 2, vocab: 50, positions: 16 };

function feeds(ids: number[][]): Record<string, ort.Tensor> {
  const B = ids.length, T = ids[0]!.length;
  const flat = (f: (b: number, t: number) => number): BigInt64Array =>
    BigInt64Array.from({ length: B * T }, (_, i) => BigInt(f(Math.floor(i / T), i % T)));
  return {
    input_ids: new ort.Tensor('int64', flat((b, t) => ids[b]![t]!), [B, T]),
    attention_mask: new ort.Tensor('int64', flat(() => 1), [B, T]),
    position_ids: new ort.Tensor('int64', flat((_, t) => t), [B, T]),
  };
}

async function logitsOf(session: ort.InferenceSession, ids: number[][]): Promise<Float32Array> {
  const r = await session.run(feeds(ids));
  return r.logits!.data as Float32Array;
}

/** Node list with the exporter's arbitrary `Constant_N` / `onnx::Op_N` numbering removed. */
function nodeSignature(graphPath: string): string[] {
  const g = decodeModel(fs.readFileSync(graphPath)).graph!;
  const norm = (s: string): string => s.replace(/^Constant_\d+$/, 'Constant_#').replace(/^onnx::(\w+)_\d+$/, 'onnx::$1_#');
  return g.node!.map((n) =>
    [norm(n.name!), n.op_type, (n.input ?? []).map(norm).join(','), (n.output ?? []).map(norm).join(','),
      (n.attribute ?? []).map((a) => `${a.name}:${a.type}`).join(',')].join(' | '));
}

describe('GPT-2 benchmark model generator', () => {
  it('builds a tiny config that loads, has the right signature, and is causal', async () => {
    const dir = path.join(tmpRoot, 'tiny');
    const m = await buildGpt2Model({ ...TINY, seed: 7, dir });
    expect(m.reused).toBe(false);
    expect(m.params).toBe(gpt2ParamCount(TINY));
    // aligned external data; graph references it relatively
    const g = decodeModel(fs.readFileSync(m.graphPath)).graph!;
    for (const t of g.initializer!) {
      expect(t.data_location).toBe(1);
      expect(t.external_data!.find((e) => e.key === 'location')!.value).toBe('model.onnx.data');
      expect(Number(t.external_data!.find((e) => e.key === 'offset')!.value) % 64).toBe(0);
    }
    // LayerNorm weight 1 / bias 0; weights N(0, 0.02)-ish; lm_head = wteᵀ
    expect(Array.from(tensorData(g.initializer!.find((t) => t.name === 'transformer.h.1.ln_2.weight')!, dir) as Float32Array)).toEqual(new Array(32).fill(1));
    const wte = tensorData(g.initializer!.find((t) => t.name === 'transformer.wte.weight')!, dir) as Float32Array;
    const std = Math.sqrt(wte.reduce((s, x) => s + x * x, 0) / wte.length);
    expect(std).toBeGreaterThan(0.017);
    expect(std).toBeLessThan(0.023);
    const head = tensorData(g.initializer!.find((t) => t.name!.startsWith('onnx::MatMul_'))!, dir) as Float32Array;
    expect(head[3 * 50 + 7]).toBe(wte[7 * 32 + 3]);

    const s = await ort.InferenceSession.create(m.graphPath);
    expect(s.inputNames).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(s.outputNames).toEqual(['logits']);
    const a = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7];
    const b = [...a.slice(0, 5), 41, 0, 49, 2, 12]; // differs after position 4
    const la = await logitsOf(s, [a]);
    const lb = await logitsOf(s, [b]);
    expect(la.length).toBe(10 * 50);
    for (let i = 0; i < 5 * 50; i++) expect(lb[i]).toBeCloseTo(la[i]!, 6);
    let diff = 0;
    for (let i = 5 * 50; i < 10 * 50; i++) diff = Math.max(diff, Math.abs(lb[i]! - la[i]!));
    expect(diff).toBeGreaterThan(1e-6);
    // batch of 2 rows = each row alone; full 16 positions work
    const both = await logitsOf(s, [a, b]);
    for (let i = 0; i < 500; i++) expect(both[500 + i]).toBeCloseTo(lb[i]!, 5);
    const full = await logitsOf(s, [Array.from({ length: 16 }, (_, i) => (i * 7) % 50)]);
    expect(full.every(Number.isFinite)).toBe(true);
    // attention_mask is honoured: masking a token changes later logits
    const f = feeds([a]);
    (f.attention_mask!.data as BigInt64Array)[2] = 0n;
    const lm = (await s.run(f)).logits!.data as Float32Array;
    expect(Math.abs(lm[9 * 50]! - la[9 * 50]!)).toBeGreaterThan(1e-7);
    await s.release();

    // deterministic and cached: a second call reuses the build
    const again = await buildGpt2Model({ ...TINY, seed: 7, dir });
    expect(again.reused).toBe(true);
    const other = await buildGpt2Model({ ...TINY, seed: 8, dir: path.join(tmpRoot, 'tiny8') });
    expect(fs.readFileSync(other.weightsPath).equals(fs.readFileSync(m.weightsPath))).toBe(false);
    const same = await buildGpt2Model({ ...TINY, seed: 7, dir: path.join(tmpRoot, 'tiny7b') });
    expect(fs.readFileSync(same.weightsPath).equals(fs.readFileSync(m.weightsPath))).toBe(true);
    expect(fs.readdirSync(tmpRoot).filter((n) => n.includes('.tmp-'))).toEqual([]);
  });

  it('with gpt2-facts weights reproduces the exporter graph node for node and the reference logits', async () => {
    const config = JSON.parse(fs.readFileSync(path.join(FACTS, 'config.json'), 'utf8')) as Record<string, number>;
    const cfg: Gpt2Config = {
      layers: config.n_layer!, width: config.n_embd!, heads: config.n_head!, vocab: config.vocab_size!, positions: config.n_positions!,
      layerNormEpsilon: config.layer_norm_epsilon!,
    };
    const refGraph = path.join(FACTS, 'onnx/model.onnx');
    const weights = new Map<string, Float32Array>();
    for (const t of decodeModel(fs.readFileSync(refGraph)).graph!.initializer!) weights.set(t.name!, tensorData(t) as Float32Array);
    const m = await buildGpt2Model({ ...cfg, seed: 0, dir: path.join(tmpRoot, 'facts'), weights });
    expect(m.params).toBe(gpt2ParamCount(cfg));

    expect(nodeSignature(m.graphPath)).toEqual(nodeSignature(refGraph));

    const ref = JSON.parse(fs.readFileSync(path.join(FACTS, 'reference.json'), 'utf8')) as {
      cases: { id: string; input_ids: number[]; expect: { last_logits: number[] } }[];
    };
    const c = ref.cases.find((x) => x.id === 'clean_logits')!;
    const s = await ort.InferenceSession.create(m.graphPath);
    const logits = await logitsOf(s, [c.input_ids]);
    await s.release();
    const T = c.input_ids.length, V = cfg.vocab;
    const last = logits.subarray((T - 1) * V, T * V);
    let maxDiff = 0;
    for (let i = 0; i < V; i++) maxDiff = Math.max(maxDiff, Math.abs(last[i]! - c.expect.last_logits[i]!));
    expect(maxDiff).toBeLessThan(1e-4);

    // The with-past variant beside it (same weights file) generates what reference-generate.json says,
    // cached and batched, with per-step values of the reference.
    const withPast = path.join(m.dir, 'model.with-past.onnx');
    const gen = JSON.parse(fs.readFileSync(path.join(FACTS, 'reference-generate.json'), 'utf8')) as {
      cases: { id: string; input_ids: number[] | number[][]; max_new_tokens: number; expect: { ids: number[] | number[][]; last_logits?: number[][] } }[];
    };
    const lm = await LanguageModel.load(withPast);
    try {
      const ps = gen.cases.find((x) => x.id === 'per_step')!;
      const r = await lm.generate(ps.input_ids as number[], { maxNewTokens: ps.max_new_tokens, stopAtEos: false }, (mm) => void mm.output.logits.at(':', -1, ':').save('logits'));
      expect(r.mode).toBe('cache');
      expect(r.ids[0]).toEqual(ps.expect.ids);
      ps.expect.last_logits!.forEach((want, k) => {
        const got = r.saves[`logits.${k}`]!.data as Float32Array;
        expect(Math.max(...want.map((x, i) => Math.abs(x - got[i]!)))).toBeLessThan(1e-4);
      });
      const b = gen.cases.find((x) => x.id === 'batched')!;
      const rb = await lm.generate({ maxNewTokens: b.max_new_tokens, stopAtEos: false }, (tr) => { for (const ids of b.input_ids as number[][]) tr.invoke(ids, () => undefined); });
      expect(rb.ids).toEqual(b.expect.ids);
    } finally {
      await lm.dispose();
    }
  });

  it('counts GPT-2 small parameters like Hugging Face', () => {
    expect(gpt2ParamCount(GPT2_SMALL)).toBe(124_439_808);
  });
});
