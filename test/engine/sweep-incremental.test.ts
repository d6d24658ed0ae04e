/**
 * Incremental sweeps (src/fast/sweep.ts, src/fast/segments.ts): a batch of variants that
 * each change one block boundary runs as a clean pass plus each variant from the changed
 * block on (block-range sub-models; with the with-past export also only over the positions
 * from the change on, on the clean keys/values). Differential: every grid is run batched on
 * the incremental path and one variant per trace on the ordinary fast path (the whole
 * instrumented model, no incremental path), on all three exports of gpt2-facts; results
 * equal within 1e-5. The reference grid (reference.json patch_block_outputs, PyTorch) is
 * checked on the incremental path too.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import path from 'node:path';
import { LanguageModel, type ModelRef, type TensorProxy, type Tracer } from '../../src/index.js';
import type { FastExecutor } from '../../src/fast/execute.js';
import { splitAtBlocks } from '../../src/fast/segments.js';
import { MODEL_DIR, refCase } from '../helpers/reference.js';
import { canTrimNativeHeap } from '../../backends/malloc-trim.js';

const c = refCase('patch_block_outputs');
const A = c.input_ids as number[];
const B = c.source_ids!;
const T = A.length;
const FILES = ['model.onnx', 'model.with-past.onnx', 'model.dynamo.onnx'];

/** One variant: block `k`'s output (or input) patched at `sel` with `value(src, target)`, saves read after it. */
interface Variant {
  k: number;
  port: 'output' | 'input';
  /** Position index or [start, stop) of the sequence axis. */
  at: number | [number, number];
  /** 'source': the source prompt's value there; 'const': 0.5; 'steer': target value + 1.5. */
  value: 'source' | 'const' | 'steer';
  target?: number[];
  /** Saves: last logits always; 'slice': logits[:, 2:6, :] too; 'whole': the whole logits. */
  reads?: 'slice' | 'whole';
}

const seqItem = (at: Variant['at']): number | string => (typeof at === 'number' ? at : `${at[0]}:${at[1]}`);

/** Adds one variant's invokes to a trace (a source invoke when it needs one). */
function addVariant(tr: Tracer, v: Variant, name: string): void {
  const block = (m: ModelRef): TensorProxy => m.transformer.h[v.k]![v.port];
  let hb: TensorProxy | undefined;
  if (v.value === 'source') tr.invoke(B, (m) => { hb = block(m).at(':', seqItem(v.at), ':'); });
  tr.invoke(v.target ?? A, (m) => {
    const here = block(m).at(':', seqItem(v.at), ':');
    here.set(v.value === 'source' ? hb! : v.value === 'const' ? 0.5 : here.add(1.5));
    const logits = m.output.logits;
    logits.at(':', -1, ':').save(`${name}.last`);
    if (v.reads === 'slice') logits.at(':', '2:6', ':').softmax(-1).save(`${name}.slice`);
    if (v.reads === 'whole') logits.save(`${name}.whole`);
  });
}

const GRIDS: Record<string, Variant[]> = {
  // every block × every position, the source's value (the reference case's grid)
  full: [0, 1, 2, 3].flatMap((k) => Array.from({ length: T }, (_, p) => ({ k, port: 'output' as const, at: p, value: 'source' as const }))),
  // block inputs, position ranges, constants and steering, several reads, a second target prompt
  mixed: [
    { k: 0, port: 'input', at: 3, value: 'source' },
    { k: 2, port: 'input', at: [5, 8], value: 'const', reads: 'slice' },
    { k: 1, port: 'output', at: [0, 8], value: 'steer' },
    { k: 1, port: 'output', at: 6, value: 'steer', reads: 'whole' },
    { k: 3, port: 'output', at: 7, value: 'const' },
    { k: 3, port: 'output', at: 2, value: 'source', reads: 'slice' },
    { k: 0, port: 'output', at: 4, value: 'source', target: B.slice().reverse() },
    { k: 2, port: 'output', at: 1, value: 'const', target: B.slice().reverse(), reads: 'slice' },
    { k: 0, port: 'output', at: -1, value: 'source' },
  ],
};

describe.each(FILES)('incremental sweeps on %s', (file) => {
  let model: LanguageModel;
  let fast: FastExecutor;
  beforeAll(async () => {
    model = await LanguageModel.load(path.join(MODEL_DIR, 'onnx', file));
    fast = model.mc.fast as FastExecutor;
  });
  afterAll(async () => model?.dispose());

  const data = (t: { data: unknown }): Float32Array => t.data as Float32Array;

  it('splits at the four blocks; the with-past export pairs its caches; the TorchScript heads are position-wise', () => {
    const chain = splitAtBlocks(model.mc);
    if ('reject' in chain) throw new Error(chain.reject);
    expect(chain.blocks).toEqual([0, 1, 2, 3].map((i) => `transformer.h.${i}`));
    expect(chain.segments.length).toBe(5);
    expect(chain.cache.length).toBe(file === 'model.with-past.onnx' ? 8 : 0);
    expect(chain.lastCache?.modelOutputs.length ?? 0).toBe(file === 'model.with-past.onnx' ? 2 : 0);
    // the dynamo export's head reshapes with the shape of input_ids: not shown position-wise (it then runs on every position)
    expect(chain.headPositionwise).toBe(file !== 'model.dynamo.onnx');
  });

  for (const [grid, variants] of Object.entries(GRIDS)) {
    it(`grid "${grid}": batched incremental = one variant per trace on the ordinary path (1e-5), also in batches of 1–2 rows`, async () => {
      fast.incremental = 'force';
      const before = fast.stats.sweepRuns;
      const { saves } = await model.trace((tr) => variants.forEach((v, i) => addVariant(tr, v, `v${i}`)));
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      // With a cache (the export's own, or the one added to the blocks of the others: src/fast/added-cache.ts),
      // batches reading the last position only run the last block in full there alone (the cache segment before
      // it) when the head is position-wise (not the dynamo export's).
      if (grid === 'full') expect(fast.stats.lastSweep!.lastBlockCut > 0).toBe(file !== 'model.dynamo.onnx');
      // Every export's variants run on blocks in the broadcast form (src/fast/added-cache.ts): the with-past
      // export's own cache rewritten to it, the others' added.
      expect(fast.stats.lastSweep!.addedCache).toBe(true);
      expect(fast.stats.lastSweep!.ownCache).toBe(file === 'model.with-past.onnx');
      // A tiny activation budget: batches of one or two rows.
      fast.sweepBudget = 100_000;
      const chunked = await model.trace((tr) => variants.forEach((v, i) => addVariant(tr, v, `v${i}`))).finally(() => { fast.sweepBudget = undefined; });
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 2);
      expect(fast.stats.lastSweep!.batches).toBeGreaterThanOrEqual(variants.length / 2);
      // Never more trims than batches (one check after each), none without a way to trim.
      expect(fast.stats.lastSweep!.trims).toBeLessThanOrEqual(fast.stats.lastSweep!.batches);
      if (!canTrimNativeHeap()) expect(fast.stats.lastSweep!.trims).toBe(0);
      fast.incremental = 'off';
      let worst = 0;
      for (let i = 0; i < variants.length; i++) {
        const one = await model.trace((tr) => addVariant(tr, variants[i]!, `v${i}`));
        for (const [k, t] of Object.entries(one.saves)) {
          const want = data(t);
          for (const got of [data(saves[k]!), data(chunked.saves[k]!)]) {
            expect(got.length, k).toBe(want.length);
            for (let j = 0; j < want.length; j++) worst = Math.max(worst, Math.abs(got[j]! - want[j]!));
          }
        }
      }
      expect(worst).toBeLessThanOrEqual(1e-5);
      expect(fast.stats.sweepRuns).toBe(before + 2);
    });
  }

  it('reference.json patch_block_outputs on the incremental path (PyTorch, 1e-5), the head ending on the whole head segment or on the open tail module session', async () => {
    fast.incremental = 'force';
    const tail = fast.ported.tail;
    if (tail) await model.mc.backend.release(fast.modules.model(tail.path).graphPath);
    for (const moduleOpen of [false, true]) {
      // The head ends on the tail's (lm_head's) module session only when it is open (then it holds the tail's weights).
      if (moduleOpen && tail) await fast.modules.session(tail.path);
      expect(!!tail && fast.modules.isOpen(tail.path)).toBe(moduleOpen && !!tail);
      const before = fast.stats.sweepRuns;
      const { saves } = await model.trace((tr) => {
        for (let k = 0; k < 4; k++) {
          for (let p = 0; p < T; p++) {
            let value: TensorProxy | undefined;
            tr.invoke(B, (m) => { value = m.transformer.h[k]!.output.at(':', p, ':'); });
            tr.invoke(A, (m) => {
              m.transformer.h[k]!.output.at(':', p, ':').set(value!);
              const probs = m.output.logits.at(':', -1, ':').softmax(-1);
              probs.at(':', c.answer_id!).save(`a.${k}.${p}`);
              probs.at(':', c.source_answer_id!).save(`b.${k}.${p}`);
            });
          }
        }
      });
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
      // With the module session open, the TorchScript exports' heads end on it (the dynamo head is not position-wise).
      if (moduleOpen && file !== 'model.dynamo.onnx') expect(fast.stats.lastSweep!.tailRuns).toBeGreaterThan(0);
      if (!moduleOpen) expect(fast.stats.lastSweep!.tailRuns).toBe(0);
      expect(fast.stats.lastSweep!.lastBlockCut > 0).toBe(file !== 'model.dynamo.onnx');
      expect(fast.stats.lastSweep!.addedCache).toBe(true);
      expect(fast.stats.lastSweep!.ownCache).toBe(file === 'model.with-past.onnx');
      // The saves read whole rows of the logits (a softmax over the vocabulary): the head computes every column.
      expect(fast.stats.lastSweep!.headColumns).toBeUndefined();
      const grid = c.expect as number[][][];
      for (let k = 0; k < 4; k++) {
        for (let p = 0; p < T; p++) {
          expect(Math.abs(data(saves[`a.${k}.${p}`]!)[0]! - grid[k]![p]![0]!), `a.${k}.${p}`).toBeLessThanOrEqual(1e-5);
          expect(Math.abs(data(saves[`b.${k}.${p}`]!)[0]! - grid[k]![p]![1]!), `b.${k}.${p}`).toBeLessThanOrEqual(1e-5);
        }
      }
    }
  });

  it('a grid saving one number per variant holds no variant\'s logits after its batch; the numbers equal one variant per trace (1e-5)', async () => {
    // As a full patching grid is written (the logit difference of two tokens per variant): in
    // batches of one or two rows, each batch's last-position logits are reduced to the saved
    // difference and dropped before the next batch (else a grid holds rows × vocabulary floats).
    const add = (tr: Tracer, k: number, p: number): void => {
      let src: TensorProxy | undefined;
      tr.invoke(B, (m) => { src = m.transformer.h[k]!.output.at(':', p, ':'); });
      tr.invoke(A, (m) => {
        m.transformer.h[k]!.output.at(':', p, ':').set(src!);
        // Written both ways: one bracket for block k even, the last row read first for k odd (composed by the planner).
        const l = m.output.logits;
        if (k % 2 === 0) l.at(':', -1, c.answer_id!).sub(l.at(':', -1, c.source_answer_id!)).save(`d.${k}.${p}`);
        else {
          const last = l.at(':', -1, ':');
          last.at(':', c.answer_id!).sub(last.at(':', c.source_answer_id!)).save(`d.${k}.${p}`);
        }
      });
    };
    const cells = [0, 1, 2, 3].flatMap((k) => Array.from({ length: T }, (_, p) => [k, p] as const));
    fast.incremental = 'force';
    fast.sweepBudget = 100_000;
    const before = fast.stats.sweepRuns;
    const { saves } = await model.trace((tr) => cells.forEach(([k, p]) => add(tr, k, p))).finally(() => { fast.sweepBudget = undefined; });
    expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(before + 1);
    expect(fast.stats.lastSweep!.batches).toBeGreaterThanOrEqual(cells.length / 2);
    expect(fast.stats.lastSweep!.heldMax).toBe(0);
    // The head computes the two columns the variants read, on those columns of lm_head alone (src/fast/segments.ts columnsHead).
    expect(fast.stats.lastSweep!.headColumns).toBe(2);
    fast.incremental = 'off';
    const grid = c.expect as number[][][];
    for (const [k, p] of cells) {
      const one = await model.trace((tr) => add(tr, k, p));
      const d = data(saves[`d.${k}.${p}`]!)[0]!;
      expect(Math.abs(d - data(one.saves[`d.${k}.${p}`]!)[0]!), `d.${k}.${p}`).toBeLessThanOrEqual(1e-5);
      // PyTorch: the logit difference is the log of the probabilities' ratio (reference.json patch_block_outputs).
      expect(Math.abs(d - Math.log(grid[k]![p]![0]! / grid[k]![p]![1]!)), `d.${k}.${p} vs PyTorch`).toBeLessThanOrEqual(1e-4);
    }
    fast.incremental = 'auto';
  });

  it('falls back to the ordinary path for what is not such a sweep', async () => {
    fast.incremental = 'force';
    const before = fast.stats.sweepRuns;
    // a set inside a block (not a block boundary)
    await model.trace((tr) => {
      tr.invoke(A, (m) => {
        m.transformer.h[1]!.attn.output.at(':', 2, ':').set(0);
        m.output.logits.at(':', -1, ':').save('x');
      });
    });
    expect(fast.stats.lastSweepReject).toMatch(/not a block boundary/);
    // a later block's output read in the changed row
    await model.trace((tr) => {
      tr.invoke(A, (m) => {
        m.transformer.h[1]!.output.at(':', 2, ':').set(0);
        m.transformer.h[2]!.output.save('h2');
      });
    });
    expect(fast.stats.lastSweepReject).toMatch(/changed row/);
    // prompts of different lengths (the dynamo export takes no attention mask: no padded batches at all)
    if (file !== 'model.dynamo.onnx') {
      await model.trace((tr) => {
        tr.invoke(A.slice(0, 5), (m) => { m.output.logits.save('short'); });
        tr.invoke(A, (m) => {
          m.transformer.h[1]!.output.at(':', 2, ':').set(0);
          m.output.logits.at(':', -1, ':').save('y');
        });
      });
      expect(fast.stats.lastSweepReject).toMatch(/different lengths/);
    }
    expect(fast.stats.sweepRuns).toBe(before);
  });

  it('auto: a single patch stays on the ordinary path (the clean pass would not pay)', async () => {
    fast.incremental = 'auto';
    const before = fast.stats.sweepRuns;
    await model.trace((tr) => addVariant(tr, { k: 1, port: 'output', at: 4, value: 'source' }, 'one'));
    expect(fast.stats.sweepRuns).toBe(before);
    expect(fast.stats.lastSweepReject).toMatch(/no gain/);
    await model.trace((tr) => GRIDS.full!.forEach((v, i) => addVariant(tr, v, `v${i}`)));
    expect(fast.stats.sweepRuns).toBe(before + 1);
  });
});
