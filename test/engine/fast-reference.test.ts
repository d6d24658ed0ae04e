/**
 * The zero-compile fast path on gpt2-facts (both exports): which path each reference case
 * takes, fast-path results against PyTorch (reference.json), fast vs compiled agreement, and
 * unused ports leaving the model's logits bit-identical.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import ort from 'onnxruntime-node';
import { LanguageModel, type ModuleRef, type Tensor } from '../../src/index.js';
import { compileGraph, runGraph } from '../../src/engine.js';
import { irPipeline } from '../../passes/pipeline.js';
import { buildFeeds } from '../../src/model/feeds.js';
import { FastExecutor, explainFastPath } from '../../src/fast/index.js';
import { gateFeed } from '../../src/fast/ports.js';
import { ortSessionOptions, toOrtTensor, type OrtSessionOptions } from '../../backends/ort.js';
import { EXPORTS, refCase, expectClose, softmax, argmax, row, mod, maxDiff } from '../helpers/reference.js';
import type { TraceContext } from '../../src/trace.js';
import type { Graph } from '../../ir/ir.js';

type Built = { graph: Graph; ctx: TraceContext };

function bitwise(a: Tensor, b: Tensor): boolean {
  const x = a.data as Float32Array;
  const y = b.data as Float32Array;
  return Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
}

/** Worst fast-vs-compiled difference per case, printed at the end (numbers for the report). */
const agreement: string[] = [];

describe.each(EXPORTS)('fast path on the $name export', ({ name, path }) => {
  let model: LanguageModel;
  let fast: FastExecutor;
  beforeAll(async () => {
    model = await LanguageModel.load(path);
    fast = model.mc.fast as FastExecutor;
  });
  afterAll(async () => {
    await model?.dispose();
    if (name === 'dynamo') console.log(`fast vs compiled:\n  ${agreement.join('\n  ')}`);
  });

  /** Runs a trace on the default path and again compiled; says which path the first took. */
  async function both(label: string, build: () => Built): Promise<{ saves: Map<string, Tensor>; path: 'fast' | 'compiled'; sourceRun: boolean }> {
    const before = { ...fast.stats };
    const a = build();
    const saves = await runGraph(a.graph, model.mc, { host: a.ctx.host });
    const path = fast.stats.fastRuns > before.fastRuns ? 'fast' : 'compiled';
    const sourceRun = fast.stats.sourceRuns > before.sourceRuns;
    const b = build();
    const compiled = await runGraph(b.graph, model.mc, { host: b.ctx.host, fast: false });
    let worst = 0;
    let same = true;
    for (const [k, t] of compiled) {
      worst = Math.max(worst, maxDiff(saves.get(k)!, t));
      same &&= bitwise(saves.get(k)!, t);
    }
    expect(worst, label).toBeLessThanOrEqual(1e-5);
    if (path === 'fast') agreement.push(`${name} ${label}: ${same ? 'bitwise' : `max abs diff ${worst.toExponential(2)}`}`);
    return { saves, path, sourceRun };
  }

  it('clean_logits: fast, one run', async () => {
    const c = refCase('clean_logits');
    const r = await both('clean_logits', () => model.build(c.input_ids as number[], (m) => { m.output.logits.at(':', -1, ':').save('last'); }));
    expect([r.path, r.sourceRun]).toEqual(['fast', false]);
    expectClose(r.saves.get('last')!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('save_outputs: fast', async () => {
    const c = refCase('save_outputs');
    const e = c.expect as Record<string, { shape: number[]; values: number[] }>;
    const r = await both('save_outputs', () => model.build(c.input_ids as number[], (m) => {
      for (const p of Object.keys(e)) mod(m, p).output.save(p);
    }));
    expect(r.path).toBe('fast');
    for (const [p, want] of Object.entries(e)) expectClose(r.saves.get(p)!.data as Float32Array, want.values, 1e-4, p);
  });

  it('zero_ablate_mlp: fast at every layer', async () => {
    const c = refCase('zero_ablate_mlp');
    for (const k of c.expect as { layer: number; p_answer: number; top1: number; last_logits: number[] }[]) {
      const r = await both(`zero_ablate_mlp layer ${k.layer}`, () => model.build(c.input_ids as number[], (m) => {
        m.transformer.h[k.layer]!.mlp.output = 0;
        m.output.logits.at(':', -1, ':').save('last');
      }));
      expect([r.path, r.sourceRun]).toEqual(['fast', false]);
      const last = r.saves.get('last')!.data as Float32Array;
      expectClose(last, k.last_logits, 1e-4, `layer ${k.layer}`);
      expect(softmax(last)[c.answer_id!]).toBeCloseTo(k.p_answer, 5);
      expect(argmax(last)).toBe(k.top1);
    }
  });

  it('patch_block_outputs: the whole grid on the fast path, source run first', async () => {
    const c = refCase('patch_block_outputs');
    const grid = c.expect as number[][][];
    for (let k = 0; k < grid.length; k++) {
      for (let p = 0; p < grid[k]!.length; p++) {
        const r = await both(`patch k=${k} p=${p}`, () => model.build((tr) => {
          let hb = undefined as unknown as ReturnType<ModuleRef['output']['at']>;
          tr.invoke(c.source_ids!, (m) => { hb = m.transformer.h[k]!.output.at(':', p, ':'); });
          tr.invoke(c.input_ids as number[], (m) => {
            m.transformer.h[k]!.output.at(':', p, ':').set(hb);
            m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
          });
        }));
        expect([r.path, r.sourceRun], `k=${k} p=${p}`).toEqual(['fast', true]);
        const probs = r.saves.get('probs')!.data as Float32Array;
        expect(Math.abs(probs[c.answer_id!]! - grid[k]![p]![0]!)).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(probs[c.source_answer_id!]! - grid[k]![p]![1]!)).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('a patch runs each pass on the rows it needs only, with the same numbers as the batched compiled pass', async () => {
    const c = refCase('patch_block_outputs');
    const build = (): Built => model.build((tr) => {
      let hb = undefined as unknown as ReturnType<ModuleRef['output']['at']>;
      tr.invoke(c.source_ids!, (m) => { hb = m.transformer.h[2]!.output.at(':', 3, ':'); });
      tr.invoke(c.input_ids as number[], (m) => {
        m.transformer.h[2]!.output.at(':', 3, ':').set(hb);
        m.output.logits.save('logits');
      });
    });
    const ir = build().graph;
    const plan = explainFastPath(compileGraph(ir, model.mc, { pipeline: irPipeline }).ir, model.mc.tree, fast.ported);
    expect('plan' in plan && [plan.plan.sourceRows, plan.plan.mainRows]).toEqual([[0], [1]]);
    const r = await both('patch logits (row-subset runs)', build);
    expect([r.path, r.sourceRun]).toEqual(['fast', true]);
  });

  it('steer_add: fast, keep = 1 and add = the vector', async () => {
    const c = refCase('steer_add');
    const e = c.expect as { last_logits: number[]; top1: number };
    const r = await both('steer_add', () => model.build(c.input_ids as number[], (m) => {
      const h = m.transformer.h[c.layer!]!;
      h.output = h.output.add(new Float32Array(c.vector!).map((x) => x * c.alpha!));
      m.output.logits.at(':', -1, ':').save('last');
    }));
    expect([r.path, r.sourceRun]).toEqual(['fast', false]);
    expectClose(r.saves.get('last')!.data as Float32Array, e.last_logits, 1e-4);
  });

  it('batched_cross_prompt: fast, source row fetched first', async () => {
    const c = refCase('batched_cross_prompt');
    const [a, b] = c.input_ids as number[][];
    const e = c.expect as { row0: number[]; row1: number[] };
    const r = await both('batched_cross_prompt', () => model.build((tr) => {
      tr.invoke(a!, () => {});
      let hb = undefined as unknown as ReturnType<ModuleRef['output']['at']>;
      tr.invoke(b!, (m) => { hb = m.transformer.h[c.layer!]!.output.at(':', -1, ':'); });
      tr.model.transformer.h[c.layer!]!.output.at(0, -1, ':').set(hb.at(0));
      tr.model.output.logits.at(':', -1, ':').save('last');
    }));
    expect([r.path, r.sourceRun]).toEqual(['fast', true]);
    expectClose(row(r.saves.get('last')!, 0), e.row0, 1e-4, 'row0');
    expectClose(row(r.saves.get('last')!, 1), e.row1, 1e-4, 'row1');
  });

  it('logit_lens (module application of closed modules): fast; skip_block (output := input of the same pass) goes to the compiler', async () => {
    const lens = refCase('logit_lens');
    const r1 = await both('logit_lens', () => model.build(lens.input_ids as number[], (m) => {
      const h = m.transformer.h[1]!.output.at(':', -1, ':');
      m.lm_head(m.transformer.ln_f(h)).softmax(-1).save('lens');
    }));
    expect(r1.path).toBe('fast'); // module models after the main run (test/engine/fast-modules.test.ts)
    const skip = refCase('skip_block');
    const r2 = await both('skip_block', () => model.build(skip.input_ids as number[], (m) => {
      const b = m.transformer.h[skip.layer!]!;
      b.output = b.input;
      m.output.logits.at(':', -1, ':').save('last');
    }));
    expect(r2.path).toBe('compiled');
    expect(fast.stats.lastReject).toMatch(/rows that sets write/);
    expectClose(r2.saves.get('last')!.data as Float32Array, (skip.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('unused ports leave the logits bit-identical to the unmodified model in onnxruntime; the tail on its module model too', async () => {
    const ids = refCase('clean_logits').input_ids as number[];
    const r = await both('plain logits', () => model.build(ids, (m) => { m.output.save('logits'); }));
    expect(r.path).toBe('fast');
    // The fast path leaves the tail (lm_head) out of its instrumented model (src/fast/tail.ts)
    // and computes the logits on the tail's module model: the ORT-level check runs on the
    // instrumented model with the tail kept in, and the fast path must match it bit for bit.
    expect(fast.ported.tail?.path).toBe('lm_head');
    expect(fast.ported.proto.graph!.output!.map((o) => o.name)).not.toContain('logits');
    const whole = new FastExecutor(model.mc, { cutTail: false, pinned: false });
    expect(whole.ported.tail).toBeUndefined();
    const feeds = Object.fromEntries(Object.entries(buildFeeds(model.mc.feedInputs, [ids]).feeds).map(([k, t]) => [k, toOrtTensor(t)]));
    const portFeeds: Record<string, ort.Tensor> = { ...feeds };
    for (const p of whole.ported.ports) {
      portFeeds[p.keep] = new ort.Tensor('float32', Float32Array.of(1), p.shape.map(() => 1));
      portFeeds[p.add] = new ort.Tensor('float32', Float32Array.of(0), p.shape.map(() => 1));
    }
    for (const [k, t] of Object.entries(gateFeed(whole.ported, ['logits']))) portFeeds[k] = toOrtTensor(t);
    const logits = async (graph: string, f: Record<string, ort.Tensor>, opts: OrtSessionOptions): Promise<Tensor> => {
      const session = await ort.InferenceSession.create(graph, ortSessionOptions(opts));
      const out = (await session.run(f, ['logits'])).logits!;
      await session.release();
      return { dtype: 'float32', shape: [...out.dims], data: out.data as Float32Array };
    };
    // Without cross-op fusions the port arithmetic (h * 1 + 0) is exact.
    for (const optimization of ['disabled', 'basic'] as const) {
      const plain = await logits(model.mc.loaded.graphPath, feeds, { prepack: true, optimization });
      expect(bitwise(await logits(whole.ported.graphPath, portFeeds, { prepack: true, optimization }), plain), optimization).toBe(true);
    }
    // At 'all', a port can block a fusion across a boundary (dynamo: one Add + LayerNorm → SkipLayerNormalization).
    const plain = await logits(model.mc.loaded.graphPath, feeds, { prepack: true });
    const ported = await logits(whole.ported.graphPath, portFeeds, { prepack: true });
    expect(bitwise(r.saves.get('logits')!, ported)).toBe(true);
    const d = maxDiff(ported, plain);
    agreement.push(`${name} ported vs plain model (level all): ${d === 0 ? 'bitwise' : `max abs diff ${d.toExponential(2)}`}`);
    if (name === 'torchscript') expect(d).toBe(0);
    else expect(d).toBeLessThanOrEqual(1e-5);
  });
});
