/**
 * The key/value cache added to models exported without one (src/fast/added-cache.ts): an
 * incremental sweep on such a model runs each variant over the positions from the patched one
 * on, on cached blocks. Differential: every grid runs batched on the added cache and one
 * variant per trace on the ordinary fast path (the whole instrumented model), within 1e-5, on
 * a real PyTorch TorchScript export (test/fixtures/torch-gpt2-tiny) and on the benchmark's
 * Llama generator (rotary embeddings from position ids, grouped key/value heads, RMS norms),
 * whose with-past export — the model's own cache, an independent computation — gives the same
 * results too. (gpt2-facts' TorchScript and dynamo exports: test/engine/sweep-incremental.test.ts.)
 * A cached block that does not compute what the model does is caught by the check against the
 * clean run: the trace takes the ordinary path, with the same numbers.
 * With-past exports (gpt2-facts', the Llama generator's) get the same form instead of their own
 * `Concat(past, new)`: their grids equal one variant per trace on the ordinary path and the
 * export's cache as it is (pasts stacked per row); a block rewritten wrongly is caught too.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildLlamaModel, type LlamaConfig } from '../../bench/llama-model.js';
import { encodeModel, LanguageModel, type ModelRef, type TensorProxy, type Tracer } from '../../src/index.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { DataType } from '../../src/onnx/proto.js';
import type { FastExecutor } from '../../src/fast/execute.js';
import { addCache } from '../../src/fast/added-cache.js';
import { splitAtBlocks, type Segments } from '../../src/fast/segments.js';

const TINY: LlamaConfig = { layers: 3, width: 16, heads: 4, kvHeads: 2, intermediate: 24, vocab: 50, positions: 32 };
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-added-cache-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const llama = buildLlamaModel({ ...TINY, seed: 11, dir: path.join(tmp, 'llama') });
const TORCH = path.join(import.meta.dirname, '..', 'fixtures', 'torch-gpt2-tiny', 'onnx', 'model.onnx');

const A = [5, 9, 14, 3, 27, 8, 30, 12, 6, 19];
const B = [7, 2, 33, 41, 18, 4, 26, 11, 39, 15];
const T = A.length;

/** Module `p` (`model.layers.2`) of a trace's model proxy. */
function moduleAt(m: ModelRef, p: string): { output: TensorProxy } {
  return p.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], m) as { output: TensorProxy };
}

/** Block `block`'s output at position `p` replaced by the source prompt's, last logits and a logits slice saved. */
function variant(tr: Tracer, block: string, p: number, name: string): void {
  let src: TensorProxy | undefined;
  tr.invoke(B, (m) => { src = moduleAt(m, block).output.at(':', p, ':'); });
  tr.invoke(A, (m) => {
    moduleAt(m, block).output.at(':', p, ':').set(src!);
    m.output.logits.at(':', -1, ':').save(`${name}.last`);
    m.output.logits.at(':', '4:7', ':').softmax(-1).save(`${name}.slice`);
  });
}

const grid = (blocks: readonly string[]): [string, number][] => blocks.flatMap((b) => [0, 1, 5, T - 1].map((p) => [b, p] as [string, number]));
const worstDiff = (a: Record<string, { data: unknown }>, b: Record<string, { data: unknown }>): number => {
  let worst = 0;
  for (const [k, t] of Object.entries(b)) {
    const x = a[k]!.data as Float32Array;
    const y = t.data as Float32Array;
    expect(x.length, k).toBe(y.length);
    for (let i = 0; i < y.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
};

/** The grid batched (forced incremental) and one variant per trace on the ordinary path. */
async function sweepAndNaive(model: LanguageModel): Promise<{ batched: Record<string, { data: unknown }>; naive: Record<string, { data: unknown }> }> {
  const fast = model.mc.fast as FastExecutor;
  const chain = splitAtBlocks(model.mc);
  if ('reject' in chain) throw new Error(chain.reject);
  const cells = grid(chain.blocks);
  fast.incremental = 'force';
  const { saves: batched } = await model.trace((tr) => cells.forEach(([b, p], i) => variant(tr, b, p, `v${i}`)));
  fast.incremental = 'off';
  const naive: Record<string, { data: unknown }> = {};
  for (let i = 0; i < cells.length; i++) Object.assign(naive, (await model.trace((tr) => variant(tr, cells[i]![0], cells[i]![1], `v${i}`))).saves);
  fast.incremental = 'auto';
  return { batched, naive };
}

describe.each([['torch-gpt2-tiny (TorchScript)', TORCH], ['the Llama generator (no cache)', llama.graphPath]])('added key/value cache: %s', (_, file) => {
  it('each block gets a cache; a sweep of every block × 4 positions runs on it = one variant per trace on the ordinary path (1e-5)', async () => {
    const model = await LanguageModel.load(file);
    try {
      const fast = model.mc.fast as FastExecutor;
      const segs = fast.segments() as Segments;
      const added = segs.added();
      if ('reject' in added) throw new Error(added.reject);
      expect(added.blocks.length).toBe(segs.chain.blocks.length);
      expect(added.pairs.length).toBe(2 * segs.chain.blocks.length); // a key and a value per block
      const before = fast.stats.sweepRuns;
      const { batched, naive } = await sweepAndNaive(model);
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      // every block checked at this length (the grid patches block 0's output: blocks 1.. run; block 0 never)
      expect([...segs.addedChecked].sort()).toEqual(segs.chain.blocks.slice(1).map((_, i) => `${T}/${i + 1}`));
      expect(worstDiff(batched, naive)).toBeLessThanOrEqual(1e-5);
      expect(Object.keys(batched).length).toBe(2 * 4 * segs.chain.blocks.length);
    } finally {
      await model.dispose();
    }
  });
});

describe('added key/value cache against the model\'s own', () => {
  it('the Llama generator: the with-past export\'s own cache in the broadcast form, its own cache as exported (pasts stacked per row) and the cache added to the plain export give the same results (1e-5)', async () => {
    const plain = await LanguageModel.load(llama.graphPath);
    const cached = await LanguageModel.load(llama.withPastPath);
    const stacked = await LanguageModel.load(llama.withPastPath);
    try {
      const cells = grid((splitAtBlocks(plain.mc) as { blocks: string[] }).blocks);
      const run = async (m: LanguageModel): Promise<{ saves: Record<string, { data: unknown }>; added: boolean; own: boolean }> => {
        const fast = m.mc.fast as FastExecutor;
        fast.incremental = 'force';
        const before = fast.stats.sweepRuns;
        const r = await m.trace((tr) => cells.forEach(([b, p], i) => variant(tr, b, p, `v${i}`)));
        expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
        return { saves: r.saves, added: fast.stats.lastSweep!.addedCache, own: fast.stats.lastSweep!.ownCache };
      };
      const a = await run(plain);
      expect(a).toMatchObject({ added: true, own: false });
      const b = await run(cached);
      expect(b).toMatchObject({ added: true, own: true });
      // The export's cache as it is: the broadcast form given up, the pasts stacked per variant row, the export's Concat(past, new).
      ((stacked.mc.fast as FastExecutor).segments() as Segments).dropAdded('test: the export\'s own cache as it is');
      const c = await run(stacked);
      expect(c).toMatchObject({ added: false, own: true });
      expect(worstDiff(a.saves, b.saves)).toBeLessThanOrEqual(1e-5);
      expect(worstDiff(c.saves, b.saves)).toBeLessThanOrEqual(1e-5);
    } finally {
      await plain.dispose();
      await cached.dispose();
      await stacked.dispose();
    }
  });
});

describe.each([
  // gpt2-facts: keys transposed as the scores read them (4 heads of 32); the Llama generator: keys and values
  // before the grouped-query repeat (2 key/value heads of 4 for 4 query heads), the export's own layout.
  ['gpt2-facts (TorchScript, with past)', path.join(import.meta.dirname, '..', '..', 'models', 'gpt2-facts', 'onnx', 'model.with-past.onnx'), [['batch', 4, 32, 'past'], ['batch', 4, 'past', 32]]],
  ['the Llama generator (with past)', llama.withPastPath, [['batch', TINY.kvHeads, 'past', TINY.width / TINY.heads], ['batch', TINY.kvHeads, 'past', TINY.width / TINY.heads]]],
] as [string, string, (number | string)[][]][])('a model\'s own cache in the broadcast form: %s', (_, file, layouts) => {
  it('every block rewritten (no past input, no present output, no Concat(past, new)); a sweep of every block × 4 positions on it = one variant per trace on the ordinary path (1e-5)', async () => {
    const model = await LanguageModel.load(file);
    try {
      const fast = model.mc.fast as FastExecutor;
      const segs = fast.segments() as Segments;
      expect(segs.chain.cache.length).toBe(2 * segs.chain.blocks.length);
      const added = segs.added();
      if ('reject' in added) throw new Error(added.reject);
      const pasts = new Set(segs.chain.cache.map((c) => c.past));
      const presents = new Set(segs.chain.cache.map((c) => c.present));
      for (const seg of [...added.blocks, added.lastCache!]) {
        const g = seg.proto.graph!;
        expect(g.input!.filter((v) => pasts.has(v.name!))).toEqual([]);
        expect(g.output!.filter((v) => presents.has(v.name!))).toEqual([]);
        expect(g.node!.filter((n) => n.input!.some((v) => pasts.has(v) || presents.has(v)))).toEqual([]);
        expect(seg.graphInputs.filter((v) => pasts.has(v))).toEqual([]);
      }
      // A key and a value per block.
      expect(added.pairs.map((p) => p.shape)).toEqual(segs.chain.blocks.flatMap(() => layouts));
      const before = fast.stats.sweepRuns;
      const { batched, naive } = await sweepAndNaive(model);
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      expect(fast.stats.lastSweep).toMatchObject({ addedCache: true, ownCache: true });
      expect([...segs.addedChecked].sort()).toEqual(segs.chain.blocks.slice(1).map((_, i) => `${T}/${i + 1}`));
      expect(worstDiff(batched, naive)).toBeLessThanOrEqual(1e-5);
      expect(Object.keys(batched).length).toBe(2 * 4 * segs.chain.blocks.length);
    } finally {
      await model.dispose();
    }
  });
});

/**
 * A Llama generator model of its own (another seed: another cache entry, so that the broken block
 * is written nowhere else) whose cached block `block` subtracts the past values' share of the
 * attention context instead of adding it: the same block over every position on an empty past
 * (that share is 0), other numbers on a past.
 */
async function withBrokenBlock(seed: number, block: number | 'last', withPast = false): Promise<{ model: LanguageModel; fast: FastExecutor; segs: Segments }> {
  const own = buildLlamaModel({ ...TINY, seed, dir: path.join(tmp, `broken-${seed}`) });
  const model = await LanguageModel.load(withPast ? own.withPastPath : own.graphPath);
  const fast = model.mc.fast as FastExecutor;
  const segs = fast.segments() as Segments;
  const added = segs.added();
  if ('reject' in added) throw new Error(added.reject);
  const seg = added.blocks[block === 'last' ? added.blocks.length - 1 : block]!;
  const join = seg.proto.graph!.node!.find((n) => n.op_type === 'Add' && n.input![0]!.endsWith('/nns.past') && n.input![1]!.endsWith('/nns.new'))!;
  join.op_type = 'Sub';
  join.input = [join.input![1]!, join.input![0]!];
  return { model, fast, segs };
}

describe('a cached block that computes something else', () => {
  it('is caught by the check against the clean run: the ordinary path, the same numbers; the next sweep runs without the added cache', async () => {
    const { model, fast, segs } = await withBrokenBlock(12, 'last');
    try {
      const before = fast.stats.sweepRuns;
      const { batched, naive } = await sweepAndNaive(model);
      expect(fast.stats.sweepRuns).toBe(before);
      expect(fast.stats.lastSweepReject).toMatch(/added key\/value cache of block 2 does not compute what the model does: differs by/);
      expect(worstDiff(batched, naive)).toBeLessThanOrEqual(1e-5);
      expect(segs.added()).toMatchObject({ reject: expect.stringMatching(/block 2/) });
      fast.incremental = 'force';
      await model.trace((tr) => variant(tr, segs.chain.blocks[1]!, 3, 'again'));
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      expect(fast.stats.lastSweep!.addedCache).toBe(false);
    } finally {
      await model.dispose();
    }
  });
});

describe('a with-past export\'s block rewritten wrongly', () => {
  it('is caught by the check against the clean run: the ordinary path, the same numbers; the next sweep runs on the export\'s own cache as it is', async () => {
    const { model, fast, segs } = await withBrokenBlock(15, 1, true);
    try {
      expect(segs.chain.cache.length).toBeGreaterThan(0);
      const before = fast.stats.sweepRuns;
      const { batched, naive } = await sweepAndNaive(model);
      expect(fast.stats.sweepRuns).toBe(before);
      expect(fast.stats.lastSweepReject).toMatch(/cache of block 1 does not compute what the model does: differs by/);
      expect(worstDiff(batched, naive)).toBeLessThanOrEqual(1e-5);
      expect(segs.added()).toMatchObject({ reject: expect.stringMatching(/block 1/) });
      fast.incremental = 'force';
      const again = await model.trace((tr) => grid(segs.chain.blocks).forEach(([b, p], i) => variant(tr, b, p, `v${i}`)));
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      expect(fast.stats.lastSweep).toMatchObject({ addedCache: false, ownCache: true });
      expect(worstDiff(again.saves, naive)).toBeLessThanOrEqual(1e-5);
    } finally {
      await model.dispose();
    }
  });
});

describe('a broken block that only a later sweep runs', () => {
  it('is checked when that sweep first runs it (each block is checked the first time it runs at a length)', async () => {
    const { model, fast, segs } = await withBrokenBlock(14, 1);
    try {
      const [b0, b1] = segs.chain.blocks;
      fast.incremental = 'force';
      const before = fast.stats.sweepRuns;
      await model.trace((tr) => [2, 5, 8].forEach((p, i) => variant(tr, b1!, p, `late${i}`))); // from block 2 on: block 1 not run
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      expect(fast.stats.lastSweep!.addedCache).toBe(true);
      const { saves } = await model.trace((tr) => [2, 5, 8].forEach((p, i) => variant(tr, b0!, p, `early${i}`))); // from block 1 on
      expect(fast.stats.sweepRuns).toBe(before + 1);
      expect(fast.stats.lastSweepReject).toMatch(/block 1 does not compute what the model does/);
      fast.incremental = 'off';
      const naive = (await model.trace((tr) => [2, 5, 8].forEach((p, i) => variant(tr, b0!, p, `early${i}`)))).saves;
      expect(worstDiff(saves, naive)).toBeLessThanOrEqual(1e-5);
    } finally {
      await model.dispose();
    }
  });
});

describe('keys and values repeated for grouped-query heads', () => {
  it('a repeat reshaped by the block\'s own batch (not the past\'s): the past stays in the repeated layout; the grid equals one variant per trace', async () => {
    // The Llama generator's head repeat `Reshape(Concat(u, u), [0, heads, -1, hd])` given the batch from
    // the repeated keys' own shape instead of 0: on a past of batch 1 beside a batch of rows it would
    // reshape the past by the rows' batch, so the past is not taken before that repeat.
    const own = buildLlamaModel({ ...TINY, seed: 16, dir: path.join(tmp, 'batch-reshape') });
    const proto = decodeModel(fs.readFileSync(own.graphPath));
    const g = proto.graph!;
    let n = 0;
    for (const r of [...g.node!]) {
      const c = g.node!.find((m) => m.op_type === 'Concat' && m.output![0] === r.input?.[0]);
      if (r.op_type !== 'Reshape' || !c || c.input!.some((x) => x !== c.input![0])) continue;
      const tag = `${r.name!.slice(0, r.name!.lastIndexOf('/'))}/TestBatch_${n++}`; // in the block's scope
      g.initializer!.push({ name: `onnx::TestReshape_${n}`, dims: [3], data_type: DataType.INT64, int64_data: [TINY.heads, -1, TINY.width / TINY.heads] });
      g.node!.splice(g.node!.indexOf(r), 0,
        { op_type: 'Shape', name: `${tag}.shape`, input: [c.output![0]!], output: [`${tag}.batch`], attribute: [{ name: 'end', type: 2, i: 1 }] },
        { op_type: 'Concat', name: `${tag}.target`, input: [`${tag}.batch`, `onnx::TestReshape_${n}`], output: [`${tag}.target`], attribute: [{ name: 'axis', type: 2, i: 0 }] });
      r.input![1] = `${tag}.target`;
    }
    expect(n).toBe(2 * TINY.layers);
    const file = path.join(own.dir, 'model.batch-reshape.onnx');
    fs.writeFileSync(file, encodeModel(proto));
    const model = await LanguageModel.load(file);
    try {
      const segs = (model.mc.fast as FastExecutor).segments();
      if (typeof segs === 'string') throw new Error(segs);
      const added = segs.added();
      if ('reject' in added) throw new Error(added.reject);
      const hd = TINY.width / TINY.heads;
      expect(added.pairs.map((p) => p.shape)).toEqual(segs.chain.blocks.flatMap(() => [['batch', TINY.heads, hd, 'past'], ['batch', TINY.heads, 'past', hd]]));
      const { batched, naive } = await sweepAndNaive(model);
      expect((model.mc.fast as FastExecutor).stats.lastSweep!.addedCache).toBe(true);
      expect(worstDiff(batched, naive)).toBeLessThanOrEqual(1e-5);
    } finally {
      await model.dispose();
    }
    // The generator's own models: the pasts before the repeat (key/value heads only).
    const plain = await LanguageModel.load(llama.graphPath);
    try {
      const added = ((plain.mc.fast as FastExecutor).segments() as Segments).added();
      if ('reject' in added) throw new Error(added.reject);
      expect(new Set(added.pairs.map((p) => JSON.stringify(p.shape)))).toEqual(new Set([JSON.stringify(['batch', TINY.kvHeads, 'past', TINY.width / TINY.heads])]));
    } finally {
      await plain.dispose();
    }
  });
});

describe('an attention that reads later positions (no causal mask)', () => {
  it('passes the structural rewrite, is refused by the causality check; the numbers equal one variant per trace; then sweeps without it', async () => {
    // The Llama generator's model with each attention's mask replaced by 0: every position reads every other.
    const own = buildLlamaModel({ ...TINY, seed: 13, dir: path.join(tmp, 'bidi') });
    const proto = decodeModel(fs.readFileSync(own.graphPath));
    const g = proto.graph!;
    g.initializer!.push({ name: 'test.no_mask', dims: [], data_type: DataType.FLOAT, float_data: [0] });
    let masks = 0;
    for (const n of g.node!) {
      if (n.op_type !== 'Add' || !g.node!.some((m) => m.op_type === 'Softmax' && m.input![0] === n.output![0])) continue;
      n.input![1] = 'test.no_mask';
      masks++;
    }
    expect(masks).toBe(TINY.layers);
    const file = path.join(own.dir, 'model.bidi.onnx');
    fs.writeFileSync(file, encodeModel(proto));
    const model = await LanguageModel.load(file);
    try {
      const fast = model.mc.fast as FastExecutor;
      const segs = fast.segments() as Segments;
      expect('reject' in segs.added()).toBe(false);
      const ids = [11, 4, 29, 7, 33, 5];
      const src = [6, 42, 2, 18, 7, 40];
      const cells = segs.chain.blocks.flatMap((b) => [1, 3].map((p) => [b, p] as const));
      const add = (tr: Tracer, b: string, p: number, name: string): void => {
        let h: TensorProxy | undefined;
        tr.invoke(src, (m) => { h = moduleAt(m, b).output.at(':', p, ':'); });
        tr.invoke(ids, (m) => {
          moduleAt(m, b).output.at(':', p, ':').set(h!);
          m.output.logits.at(':', -1, ':').save(name);
        });
      };
      fast.incremental = 'force';
      const before = fast.stats.sweepRuns;
      const { saves } = await model.trace((tr) => cells.forEach(([b, p], i) => add(tr, b, p, `v${i}`)));
      expect(fast.stats.sweepRuns).toBe(before);
      expect(fast.stats.lastSweepReject).toMatch(/does not compute what the model does: its attention is not causal/);
      const again = await model.trace((tr) => cells.forEach(([b, p], i) => add(tr, b, p, `v${i}`)));
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1); // the incremental path without the added cache
      expect(fast.stats.lastSweep!.addedCache).toBe(false);
      fast.incremental = 'off';
      const naive: Record<string, { data: unknown }> = {};
      for (let i = 0; i < cells.length; i++) Object.assign(naive, (await model.trace((tr) => add(tr, cells[i]![0], cells[i]![1], `v${i}`))).saves);
      expect(worstDiff(saves, naive)).toBeLessThanOrEqual(1e-5);
      expect(worstDiff(again.saves, naive)).toBeLessThanOrEqual(1e-5);
      // A patch at position 3 changes the last logits (not a vacuous grid).
      expect(worstDiff(naive, { v0: naive.v1! })).toBeGreaterThan(1e-4);
    } finally {
      await model.dispose();
    }
  });
});

describe('the rewritten blocks (gpt2-facts)', () => {
  const FACTS = path.join(import.meta.dirname, '..', '..', 'models', 'gpt2-facts', 'onnx');
  const neutralPads = async (file: string): Promise<{ matmuls: number; concats: number[]; pads: (number | boolean)[] }> => {
    const model = await LanguageModel.load(path.join(FACTS, file));
    try {
      const chain = splitAtBlocks(model.mc);
      if ('reject' in chain) throw new Error(chain.reject);
      const added = addCache(chain.segments.slice(0, -1), model.mc.loaded.proto);
      if ('reject' in added) throw new Error(added.reject);
      const ours = added.blocks[1]!.proto.graph!.node!.filter((n) => n.metadata_props?.some((m) => m.value === 'added-cache'));
      // Scores: Concat(Q·pastKᵀ, Q·Kᵀ) on the last axis; context: past weights · past values + new · new.
      const matmuls = ours.filter((n) => n.op_type === 'MatMul' && n.input![1]!.endsWith('/nns.past')).length;
      const concats = ours.filter((n) => n.op_type === 'Concat' && n.input![0]!.endsWith('/nns.past') && n.input![1]!.endsWith('/nns.new')).map((n) => Number(n.attribute![0]!.i));
      const pads = ours.filter((n) => n.op_type === 'ConstantOfShape').map((n) => {
        const t = n.attribute![0]!.t!;
        return t.data_type === 9 ? t.int32_data![0] === 1 : t.float_data![0]!;
      });
      return { matmuls, concats, pads };
    } finally {
      await model.dispose();
    }
  };

  it('TorchScript: scores joined on their last axis; the causal Where condition padded with true (past allowed)', async () => {
    // The block's causal mask is sliced from a buffer by its own length; the additive padding mask
    // comes from attention_mask, fed over every position, and is left as it is.
    expect(await neutralPads('model.onnx')).toEqual({ matmuls: 2, concats: [-1], pads: [true] });
  });

  it('dynamo: the additive mask built from the new tokens\' length padded with 0', async () => {
    expect(await neutralPads('model.dynamo.onnx')).toEqual({ matmuls: 2, concats: [-1], pads: [0] });
  });
});

describe('what gets no added cache', () => {
  it('a segment without attention (the head); a with-past block whose present is not Concat(past, new)', async () => {
    const model = await LanguageModel.load(TORCH);
    try {
      const chain = splitAtBlocks(model.mc);
      if ('reject' in chain) throw new Error(chain.reject);
      expect(addCache(chain.segments.slice(-1), model.mc.loaded.proto)).toEqual({ reject: expect.stringMatching(/^block 3: no attention/) });
    } finally {
      await model.dispose();
    }
    const cached = await LanguageModel.load(llama.withPastPath);
    try {
      const chain = splitAtBlocks(cached.mc);
      if ('reject' in chain) throw new Error(chain.reject);
      const blocks = chain.segments.slice(0, -1).map((seg) => ({ ...seg, proto: { ...seg.proto, graph: { ...seg.proto.graph!, node: seg.proto.graph!.node!.map((n) => ({ ...n, input: [...(n.input ?? [])] })) } } }));
      // Block 1's keys concatenated the other way round (new, past): not the form the rewrite knows.
      const c = blocks[1]!.proto.graph!.node!.find((n) => n.op_type === 'Concat' && n.output![0] === 'present.1.key')!;
      c.input!.reverse();
      expect(addCache(blocks, cached.mc.loaded.proto, chain.cache)).toEqual({ reject: 'block 1: its cache output present.1.key is not Concat(past_key_values.1.key, new)' });
    } finally {
      await cached.dispose();
    }
  });
});
