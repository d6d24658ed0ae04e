/**
 * What makes a generation step cheap, checked on its own: the step model that computes the
 * logits at the last position only (against the unmodified model run by onnxruntime), the
 * rule for when a step may use it, and the host index's block-copy path (against a plain
 * element-by-element reading of numpy's basic indexing).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, type ModelRef } from '../../src/index.js';
import { compileGraph } from '../../src/engine.js';
import { irPipeline } from '../../passes/pipeline.js';
import { FastExecutor } from '../../src/fast/index.js';
import { readsLastPositionOnly } from '../../src/fast/plan.js';
import * as ort from 'onnxruntime-node';
import { appendInto } from '../../src/fast/execute.js';
import { exposeAppendedParts, gateFeed } from '../../src/fast/ports.js';
import { lastPositionOutputs, stepExecutors } from '../../src/generate/step-ports.js';
import { cacheLayoutOf } from '../../src/generate/decode.js';
import { indexTensor } from '../../ir/eval.js';
import type { IndexItem } from '../../ir/ir.js';
import type { Tensor } from '../../src/tensor.js';
import { MODEL_DIR } from '../helpers/reference.js';
import { buildLlamaModel } from '../../bench/llama-model.js';

const WITH_PAST = path.join(MODEL_DIR, 'onnx', 'model.with-past.onnx');
const IDS = [464, 412, 733, 318, 287, 262];

let model: LanguageModel;
beforeAll(async () => { model = await LanguageModel.load(WITH_PAST); }, 60_000);
afterAll(async () => model?.dispose());

/** Feeds of the prompt with an empty cache (what a generation's step 0 feeds). */
function promptFeeds(): Record<string, Tensor> {
  const T = IDS.length;
  const int = (v: number[]): Tensor => ({ dtype: 'int64', shape: [1, v.length], data: BigInt64Array.from(v, BigInt) });
  const feeds: Record<string, Tensor> = { input_ids: int(IDS), attention_mask: int(IDS.map(() => 1)), position_ids: int(IDS.map((_, i) => i)) };
  for (const f of model.mc.feedInputs) {
    if (!f.name.startsWith('past_key_values.')) continue;
    const dims = f.dims!.map((d) => (typeof d === 'number' ? d : 0));
    feeds[f.name] = { dtype: 'float32', shape: [1, dims[1]!, 0, dims[3]!], data: new Float32Array(0) };
  }
  expect(Object.keys(feeds).length).toBeGreaterThan(3);
  expect(T).toBe(6);
  return feeds;
}

describe('step model with last-position logits', () => {
  it('computes the lm_head on the last position only, with the logits and cache of the unmodified model', async () => {
    const mc = model.mc;
    const feeds = promptFeeds();
    const names = mc.tree.graphOutputs.map((o) => o.name);
    const session = await mc.backend.session(mc.loaded.graphPath, { externalDataDir: mc.loaded.externalDataDir });
    const full = await mc.backend.run(session, feeds, names);
    for (const ports of [[], [{ path: 'transformer.h.1', kind: 'output' as const }]]) {
      const ex = new FastExecutor(mc, { ports, lastPosition: ['logits'], pinned: false });
      const ported = ex.ported;
      expect([...ported.lastPosition]).toEqual(['logits']);
      // The selection sits above the final norm: lm_head's MatMul and ln_f's LayerNormalization read one position.
      const nodes = ported.proto.graph!.node!;
      const lm = nodes.find((n) => n.output!.includes('logits'))!;
      expect(lm.op_type).toBe('MatMul');
      const ln = nodes.find((n) => n.output!.includes(lm.input![0]!))!;
      expect(ln.op_type).toBe('LayerNormalization');
      expect(nodes.find((n) => n.output!.includes(ln.input![0]!))!.op_type).toBe('Slice');
      const portFeeds: Record<string, Tensor> = {};
      for (const p of ported.ports) {
        portFeeds[p.keep] = { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(1) };
        portFeeds[p.add] = { dtype: 'float32', shape: [1, 1, 1], data: Float32Array.of(0) };
      }
      const s = await ex.session();
      const out = await mc.backend.run(s, { ...feeds, ...portFeeds, ...gateFeed(ported, names) }, names);
      const V = full.logits!.shape[2]!;
      expect(out.logits!.shape).toEqual([1, 1, V]);
      const want = (full.logits!.data as Float32Array).subarray((IDS.length - 1) * V);
      const got = out.logits!.data as Float32Array;
      let worst = 0;
      for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      expect(worst).toBeLessThan(1e-5);
      // The cache outputs are untouched by the rewrite: bit-identical.
      for (const n of names.filter((x) => x.startsWith('present.'))) {
        expect(out[n]!.shape).toEqual(full[n]!.shape);
        expect(Buffer.from((out[n]!.data as Float32Array).buffer).equals(Buffer.from((full[n]!.data as Float32Array).buffer))).toBe(true);
      }
    }
  });

  it('is used only when every read of the output takes its last position', () => {
    const cases: [string, (m: ModelRef) => void, string[]][] = [
      ['[:, -1]', (m) => { m.output.at(':', -1).save('a'); }, ['logits']],
      ['[0, -1, :5] and [:, -1]', (m) => { m.output.at(0, -1, '0:5').save('a'); m.output.at(':', -1).softmax(-1).save('b'); }, ['logits']],
      ['[:, -2]', (m) => { m.output.at(':', -2).save('a'); }, []],
      ['the whole output', (m) => { m.output.save('a'); }, []],
      ['[:, -1] and the whole output', (m) => { m.output.at(':', -1).save('a'); m.output.save('b'); }, []],
      ['[-1] (the batch axis)', (m) => { m.output.at(-1).save('a'); }, []],
      ['no read of the output', (m) => { m.transformer.h[0].output.save('a'); }, []],
    ];
    for (const [what, fn, want] of cases) {
      const ir = compileGraph(model.build(IDS, fn).graph, model.mc, { pipeline: irPipeline }).ir;
      expect(lastPositionOutputs(model.mc, ir), what).toEqual(want);
      const out = ir.nodes.find((n) => n.is('model.output'));
      if (out) expect(readsLastPositionOnly(ir, out.result, 1), what).toBe(want.length > 0);
    }
  });
});

/**
 * A plain onnxruntime-node greedy loop on the unmodified with-past graph (its own session,
 * feeds and fetches only, every output fetched as it is): the tokens and each step's outputs.
 */
async function plainLoop(ids: number[], n: number, lm: LanguageModel = model): Promise<{ tokens: number[]; outputs: Record<string, ort.Tensor>[] }> {
  const mc = lm.mc;
  const session = await ort.InferenceSession.create(fs.readFileSync(mc.loaded.graphPath), { extra: { session: { model_external_initializers_file_folder_path: mc.loaded.externalDataDir ?? path.dirname(mc.loaded.graphPath) } } });
  try {
    const pastNames = session.inputNames.filter((x) => x.startsWith('past_key_values.'));
    const meta = session.inputMetadata as unknown as { name: string; shape?: (number | string)[] }[];
    let past: Record<string, ort.Tensor> = {};
    for (const name of pastNames) {
      const d = meta.find((m) => m.name === name)!.shape!;
      past[name] = new ort.Tensor('float32', new Float32Array(0), [1, Number(d[1]), 0, Number(d[3])]);
    }
    const tokens: number[] = [];
    const outputs: Record<string, ort.Tensor>[] = [];
    let step = [...ids];
    let total = 0;
    for (let s = 0; s < n; s++) {
      const T = step.length;
      total += T;
      const r = await session.run({
        input_ids: new ort.Tensor('int64', BigInt64Array.from(step, BigInt), [1, T]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(total - T + i)), [1, T]),
        ...past,
      });
      outputs.push(r);
      const V = r.logits!.dims[2]!;
      const row = (r.logits!.data as Float32Array).subarray((T - 1) * V, T * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
      tokens.push(best);
      step = [best];
      past = Object.fromEntries(pastNames.map((x) => [x, r[x.replace('past_key_values.', 'present.')]!]));
    }
    return { tokens, outputs };
  } finally {
    await session.release();
  }
}

const sameBits = (a: Tensor, b: ort.Tensor): boolean => JSON.stringify(a.shape) === JSON.stringify(b.dims)
  && Buffer.from((a.data as Float32Array).buffer, (a.data as Float32Array).byteOffset, (a.data as Float32Array).byteLength).equals(Buffer.from((b.data as Float32Array).buffer, (b.data as Float32Array).byteOffset, (b.data as Float32Array).byteLength));

describe('cache outputs put together on the host', () => {
  it('a step model outputs each cache output\'s new positions; other pairs are left out', () => {
    const layout = cacheLayoutOf(model.mc)!;
    const ex = new FastExecutor(model.mc, { ports: [], lastPosition: ['logits'], pinned: false, appendOf: [...layout.entries, { input: 'input_ids', output: 'logits' }] });
    const ported = ex.ported;
    expect(ported.appended.size).toBe(layout.entries.length);
    const outs = new Set(ported.proto.graph!.output!.map((o) => o.name));
    for (const e of layout.entries) {
      const a = ported.appended.get(e.output)!;
      expect([a.input, a.axis]).toEqual([e.input, layout.pastAxis]);
      expect(outs.has(a.part)).toBe(true);
    }
    // Not a Concat of the input: nothing added.
    const proto = structuredClone(ported.proto);
    expect(exposeAppendedParts(proto, [{ input: 'input_ids', output: 'logits' }, { input: 'attention_mask', output: layout.entries[0]!.output }]).size).toBe(0);
  });

  it('generations equal a plain onnxruntime loop: tokens, and saved cache outputs bit for bit at every step', async () => {
    const n = 5;
    const want = await plainLoop(IDS, n);
    const layout = cacheLayoutOf(model.mc)!;
    const first = layout.entries[0]!.output, last = layout.entries[layout.entries.length - 1]!.output;
    for (let round = 0; round < 2; round++) {
      const before = stepExecutors(model.mc).reduce((a, e) => a + e.stats.appendedOutputs, 0);
      const clean = await model.generate(IDS, { maxNewTokens: n, stopAtEos: false });
      expect(clean.newIds[0]).toEqual(want.tokens);
      // Saves of cache outputs share the buffers a generation reuses two steps later: each step's save stays its own.
      const r = await model.generate(IDS, { maxNewTokens: n, stopAtEos: false }, (m) => {
        m.output[first]!.save('k');
        m.output[last]!.save('v');
        m.output.logits.at(':', -1, ':').save('logits');
      });
      expect(r.newIds[0]).toEqual(want.tokens);
      for (let s = 0; s < n; s++) {
        expect(sameBits(r.saves[`k.${s}`]!, want.outputs[s]![first]!), `${first} at step ${s}`).toBe(true);
        expect(sameBits(r.saves[`v.${s}`]!, want.outputs[s]![last]!), `${last} at step ${s}`).toBe(true);
        const V = want.outputs[s]!.logits!.dims[2]!;
        const wl = (want.outputs[s]!.logits!.data as Float32Array);
        const got = r.saves[`logits.${s}`]!.data as Float32Array;
        let worst = 0;
        for (let i = 0; i < V; i++) worst = Math.max(worst, Math.abs(got[i]! - wl[wl.length - V + i]!));
        expect(worst).toBeLessThan(1e-5);
      }
      // Every step of both generations put every cache output together on the host.
      const after = stepExecutors(model.mc).reduce((a, e) => a + e.stats.appendedOutputs, 0);
      expect(after - before).toBe(2 * n * layout.entries.length);
    }
  });

  it('on another architecture (the Llama generator: grouped key/value heads, rotary keys), the same against a plain loop', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-gen-append-'));
    try {
      const llama = buildLlamaModel({ layers: 2, width: 16, heads: 4, kvHeads: 2, intermediate: 24, vocab: 50, positions: 32, seed: 5, dir: path.join(tmp, 'llama') });
      const lm = await LanguageModel.load(llama.withPastPath);
      try {
        const ids = [3, 17, 42, 8, 29];
        const n = 6;
        const want = await plainLoop(ids, n, lm);
        const layout = cacheLayoutOf(lm.mc)!;
        expect(layout.entries.length).toBe(4);
        const first = layout.entries[0]!.output, last = layout.entries[layout.entries.length - 1]!.output;
        const r = await lm.generate(ids, { maxNewTokens: n, stopAtEos: false }, (m) => { m.output[first]!.save('k'); m.output[last]!.save('v'); });
        expect(r.newIds[0]).toEqual(want.tokens);
        for (let s = 0; s < n; s++) {
          expect(sameBits(r.saves[`k.${s}`]!, want.outputs[s]![first]!), `${first} at step ${s}`).toBe(true);
          expect(sameBits(r.saves[`v.${s}`]!, want.outputs[s]![last]!), `${last} at step ${s}`).toBe(true);
        }
        expect(stepExecutors(lm.mc).reduce((a, e) => a + e.stats.appendedOutputs, 0)).toBe(n * layout.entries.length);
      } finally {
        await lm.dispose();
      }
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('appendInto concatenates like an element-by-element concat, into another buffer or growing its input in place', () => {
    let seed = 11;
    const rnd = (k: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % k; };
    for (let c = 0; c < 200; c++) {
      const rank = 1 + rnd(4);
      const axis = rnd(rank);
      const sa = Array.from({ length: rank }, () => 1 + rnd(3));
      const sb = [...sa];
      sa[axis] = rnd(4);
      sb[axis] = rnd(3);
      const na = sa.reduce((p, d) => p * d, 1), nb = sb.reduce((p, d) => p * d, 1);
      const a: Tensor = { dtype: 'float32', shape: sa, data: Float32Array.from({ length: na }, (_, i) => i + 0.25) };
      const b: Tensor = { dtype: 'float32', shape: sb, data: Float32Array.from({ length: nb }, (_, i) => -i - 0.5) };
      const into = new Float32Array(na + nb + rnd(3)).fill(NaN);
      // Every other case: a at the start of the output buffer itself (what a generation feeds back).
      const inPlace = c % 2 === 1;
      if (inPlace) into.set(a.data as Float32Array);
      const got = appendInto(inPlace ? { ...a, data: into.subarray(0, na) } : a, b, axis, into);
      expect(got.data.buffer).toBe(into.buffer);
      const shape = sa.map((d, i) => (i === axis ? d + sb[axis]! : d));
      expect(got.shape).toEqual(shape);
      // Element by element: the output index's axis coordinate picks a or b.
      const want: number[] = [];
      const idx = shape.map(() => 0);
      const flat = (s: number[], ix: number[]): number => ix.reduce((p, v, i) => p * s[i]! + v, 0);
      for (let k = 0; k < na + nb; k++) {
        const i = idx[axis]!;
        want.push(i < sa[axis]! ? (a.data as Float32Array)[flat(sa, idx)]! : (b.data as Float32Array)[flat(sb, idx.map((v, j) => (j === axis ? v - sa[axis]! : v)))]!);
        for (let j = rank - 1; j >= 0; j--) { if (++idx[j]! < shape[j]!) break; idx[j] = 0; }
      }
      expect(Array.from(got.data as Float32Array), JSON.stringify([sa, sb, axis])).toEqual(want);
    }
  });
});

/** numpy basic indexing, element by element (the reference for the block-copy path). */
function naiveIndex(x: Tensor, items: IndexItem[]): { shape: number[]; data: number[] } {
  const rank = x.shape.length;
  const used = items.filter((i) => i.kind === 'index' || i.kind === 'slice').length;
  const full = [...items, ...Array.from({ length: rank - used }, (): IndexItem => ({ kind: 'slice' }))];
  const strides = x.shape.map((_, a) => x.shape.slice(a + 1).reduce((p, d) => p * d, 1));
  const shape: number[] = [];
  // Per item: the source positions it picks along its axis (null for a new axis).
  const picks: (number[] | null)[] = [];
  let axis = 0;
  for (const it of full) {
    if (it.kind === 'newaxis') { shape.push(1); picks.push(null); continue; }
    const n = x.shape[axis]!;
    if (it.kind === 'index') picks.push([it.index < 0 ? it.index + n : it.index]);
    else if (it.kind === 'slice') {
      const step = it.step ?? 1;
      const pos: number[] = [];
      const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
      if (step > 0) {
        const start = it.start === undefined ? 0 : clamp(it.start < 0 ? it.start + n : it.start, 0, n);
        const stop = it.stop === undefined ? n : clamp(it.stop < 0 ? it.stop + n : it.stop, 0, n);
        for (let i = start; i < stop; i += step) pos.push(i);
      } else {
        const start = it.start === undefined ? n - 1 : clamp(it.start < 0 ? it.start + n : it.start, -1, n - 1);
        const stop = it.stop === undefined ? -1 : clamp(it.stop < 0 ? it.stop + n : it.stop, -1, n - 1);
        for (let i = start; i > stop; i += step) pos.push(i);
      }
      picks.push(pos);
      shape.push(pos.length);
    }
    axis++;
  }
  const data: number[] = [];
  const rec = (k: number, off: number, ax: number): void => {
    if (k === full.length) { data.push((x.data as Float32Array)[off]!); return; }
    const p = picks[k];
    if (p === null) { rec(k + 1, off, ax); return; }
    for (const i of p!) rec(k + 1, off + i * strides[ax]!, ax + 1);
  };
  rec(0, 0, 0);
  return { shape, data };
}

describe('host index', () => {
  it('copies whole trailing blocks with the same result as element-by-element indexing', () => {
    let seed = 7;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
    for (let c = 0; c < 300; c++) {
      const rank = 1 + rnd(4);
      const shape = Array.from({ length: rank }, () => 1 + rnd(4));
      const n = shape.reduce((a, b) => a * b, 1);
      const x: Tensor = { dtype: 'float32', shape, data: Float32Array.from({ length: n }, (_, i) => i + 0.5) };
      const items: IndexItem[] = [];
      const k = rnd(rank + 1);
      for (let a = 0; a < k; a++) {
        const d = shape[a]!;
        const r = rnd(5);
        if (r === 0) items.push({ kind: 'index', index: rnd(d) - (rnd(2) ? d : 0) });
        else if (r === 1) items.push({ kind: 'slice' });
        else if (r === 2) items.push({ kind: 'slice', start: rnd(d), stop: 1 + rnd(d + 1) });
        else if (r === 3) items.push({ kind: 'slice', step: rnd(2) ? -1 : 2 });
        else { items.push({ kind: 'newaxis' }); a--; if (items.length > 6) break; }
      }
      if (rnd(3) === 0) items.push({ kind: 'newaxis' });
      const got = indexTensor(x, items);
      const want = naiveIndex(x, items);
      expect(got.shape, JSON.stringify([shape, items])).toEqual(want.shape);
      expect(Array.from(got.data as Float32Array), JSON.stringify([shape, items])).toEqual(want.data);
    }
  });
});
