/**
 * The tail (src/fast/tail.ts): lm_head, found structurally, is left out of the instrumented
 * model's own layout and computed on demand — by the model's copy of it on a fed range of
 * positions (one session run) or on its module model — position selections sunk into it.
 * Checked on both gpt2-facts exports: plain logits bit for bit against the instrumented model
 * with the tail kept in (the previous layout), selections against PyTorch (reference.json)
 * and against the compiled path, one range (or one tail run) for every invoke's selection.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type Tensor } from '../../src/index.js';
import { runGraph } from '../../src/engine.js';
import { FastExecutor } from '../../src/fast/index.js';
import { sinkable } from '../../src/fast/execute.js';
import { findTail } from '../../src/fast/tail.js';
import { EXPORTS, refCase, expectClose, maxDiff } from '../helpers/reference.js';
import { onFastPath, type Built } from '../helpers/fast.js';
import type { OrtBackend } from '../../backends/ort.js';

function bitwise(a: Tensor, b: Tensor): boolean {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  return a.shape.join() === b.shape.join() && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
}

describe('sinkable selections', () => {
  it('leading axes only: indices become one-element slices, then are dropped; the last axis must stay whole', () => {
    expect(sinkable([{ kind: 'slice' }, { kind: 'index', index: -1 }, { kind: 'slice' }], 3)).toEqual({
      before: [{ kind: 'slice' }, { kind: 'slice', start: -1 }, { kind: 'slice' }],
      after: [{ kind: 'slice' }, { kind: 'index', index: 0 }, { kind: 'slice' }],
    });
    expect(sinkable([{ kind: 'index', index: 2 }], 3)!.before[0]).toEqual({ kind: 'slice', start: 2, stop: 3 });
    expect(sinkable([{ kind: 'ellipsis' }, { kind: 'index', index: 5 }], 3)).toBeNull(); // the vocabulary axis
    expect(sinkable([{ kind: 'slice' }, { kind: 'slice' }, { kind: 'slice', stop: 4 }], 3)).toBeNull();
    expect(sinkable([{ kind: 'newaxis' }], 3)).toBeNull();
  });
});

describe.each(EXPORTS)('the tail on the $name export', ({ path }) => {
  let model: LanguageModel;
  let fast: FastExecutor;
  let whole: FastExecutor;
  let moduleTail: FastExecutor;
  beforeAll(async () => {
    model = await LanguageModel.load(path);
    fast = model.mc.fast as FastExecutor;
    whole = new FastExecutor(model.mc, { cutTail: false, pinned: false });
    moduleTail = new FastExecutor(model.mc, { tailRange: false, pinned: false });
  });
  afterAll(async () => model?.dispose());

  /** Runs a trace on `ex`'s fast path (asserting it took it). */
  const on = (ex: FastExecutor, build: () => Built): Promise<Map<string, Tensor>> => onFastPath(model, ex, build);

  it('lm_head is the tail: found by structure, absent from the instrumented model', () => {
    const t = findTail(model.mc);
    expect('reject' in t ? t.reject : t.path).toBe('lm_head');
    const g = fast.ported.proto.graph!;
    expect(g.output!.map((o) => o.name)).not.toContain('logits');
    expect(g.output!.map((o) => o.name)).toContain(fast.ported.tail!.fetch);
    const lm = new Set(model.mc.tree.modules.get('lm_head')!.nodes.map((i) => model.mc.loaded.proto.graph!.node![i]!.name));
    expect(g.node!.filter((n) => lm.has(n.name))).toEqual([]);
    expect(whole.ported.proto.graph!.node!.filter((n) => lm.has(n.name)).length).toBe(lm.size);
  });

  it('plain logits: bit for bit the instrumented model with the tail kept in, and PyTorch within 1e-4', async () => {
    const c = refCase('clean_logits');
    const ids = c.input_ids as number[];
    const build = (): Built => model.build(ids, (m) => { m.output.logits.save('logits'); m.transformer.h[1]!.output.save('h1'); });
    const a = await on(fast, build);
    const b = await on(whole, build);
    expect(bitwise(a.get('logits')!, b.get('logits')!)).toBe(true);
    expect(bitwise(a.get('h1')!, b.get('h1')!)).toBe(true);
    const l = a.get('logits')!;
    const V = l.shape[2]!;
    expectClose((l.data as Float32Array).subarray((ids.length - 1) * V), (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('selections sink into the tail: one position per invoke, all invokes in one tail run (module model) or one range (in the model); equal to the compiled path', async () => {
    const ids = refCase('clean_logits').input_ids as number[];
    const prompts = [ids, ids.map((t) => (t * 7 + 3) % 800), [...ids].reverse()]; // equal lengths (the dynamo export takes no mask)
    const build = (): Built => model.build((tr) => {
      prompts.forEach((p, i) => tr.invoke(p, (m) => {
        m.output.logits.at(':', -1, ':').save(`last.${i}`);
        m.output.logits.at(0, 2).softmax(-1).save(`p2.${i}`);
      }));
    });
    const backend = model.mc.backend as OrtBackend;
    const run = backend.run.bind(backend);
    const tailFeeds: number[][] = [];
    const ranges: number[][] = [];
    const tailInput = (await import('../../src/fast/module-model.js')).moduleModelProto(model.mc, 'lm_head').graph!.input![0]!.name!;
    const range = fast.ported.tail!.range!;
    expect(range.axis).toBe(1);
    backend.run = async (s, feeds, fetch) => {
      if (feeds[tailInput] && Object.keys(feeds).length === 1) tailFeeds.push([...feeds[tailInput]!.shape]);
      if (feeds[range.start] && fetch?.includes(range.outputs.get('logits')!)) ranges.push([feeds[range.start]!.data[0], feeds[range.end]!.data[0]].map(Number));
      return run(s, feeds, fetch);
    };
    const runs0 = fast.stats.moduleRuns;
    const m0 = moduleTail.stats.moduleRuns;
    let a: Map<string, Tensor>, m: Map<string, Tensor>;
    try {
      a = await on(fast, build);
      m = await on(moduleTail, build);
    } finally {
      backend.run = run;
    }
    expect(fast.stats.moduleRuns - runs0).toBe(0);
    expect(ranges).toEqual([[2, ids.length]]); // positions 2 and T − 1 of every row: one range
    expect(moduleTail.stats.moduleRuns - m0).toBe(1);
    const D = model.mc.tree.modules.get('lm_head')!.inputs[0]!.sig!.shape!.at(-1);
    expect(tailFeeds).toEqual([[6, 1, D]]); // 3 invokes × (last position, position 2)
    const b = await on(whole, build);
    const cb = build();
    const compiled = await runGraph(cb.graph, model.mc, { host: cb.ctx.host, fast: false });
    for (const [k, t] of compiled) {
      for (const [name, r] of [['in-model tail', a], ['module tail', m], ['whole model', b]] as const) {
        expect(r.get(k)!.shape, `${name} ${k}`).toEqual(t.shape);
        expect(maxDiff(r.get(k)!, t), `${name} ${k}`).toBeLessThanOrEqual(1e-5);
      }
    }
  });
});
