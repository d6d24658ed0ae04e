/**
 * The fast-path planner's accept/reject decisions on small traces (gpt2-facts), pre/post
 * binding of reads around sets, the opt-in same-row sources, and the generic port choice on
 * a Llama-like model with other module names.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type ModelRef, type TensorProxy } from '../../src/index.js';
import { compileGraph, runGraph } from '../../src/engine.js';
import { irPipeline } from '../../passes/pipeline.js';
import { FastExecutor, choosePorts, explainFastPath, type FastPlan, type PlanOptions } from '../../src/fast/index.js';
import { encodeModel } from '../../src/onnx/serde.js';
import type { Graph, Value } from '../../ir/ir.js';
import { llamaLike } from '../fixtures/modules/synthetic.js';
import { MODEL_DIR, refCase, expectClose } from '../helpers/reference.js';

let model: LanguageModel;
let fast: FastExecutor;
beforeAll(async () => {
  model = await LanguageModel.load(MODEL_DIR);
  fast = model.mc.fast as FastExecutor;
});
afterAll(async () => model?.dispose());

const IDS = [464, 412, 733, 318];
const OTHER = [383, 412, 733, 318];

/** Plans a trace (after the IR pipeline); returns the plan or the reason. */
function planOf(fn: (m: ModelRef) => void, opts?: PlanOptions): { plan?: FastPlan; reject?: string; ir: Graph } {
  const ir = compileGraph(model.build(IDS, fn).graph, model.mc, { pipeline: irPipeline }).ir;
  return { ...explainFastPath(ir, model.mc.tree, fast.ported, opts), ir };
}

/** Two invokes: `first` runs in the first prompt's scope, `second` in the other's with what `first` returned. */
function planOfBatch<T>(first: (m: ModelRef) => T, second: (m: ModelRef, t: T) => void): { plan?: FastPlan; reject?: string } {
  const { graph } = model.build((tr) => {
    let t: T | undefined;
    tr.invoke(IDS, (m) => { t = first(m); });
    tr.invoke(OTHER, (m) => second(m, t!));
  });
  return explainFastPath(compileGraph(graph, model.mc, { pipeline: irPipeline }).ir, model.mc.tree, fast.ported);
}

/** The value a save of `name` reads. */
function saved(ir: Graph, name: string): Value {
  return ir.nodes.find((n) => n.is('save') && n.attrs.name === name)!.inputs[0]!;
}

const port = (p: string, kind: 'output' | 'input') => fast.ported.byKey.get(`${p}#${kind}`)!;

describe('planner', () => {
  it('accepts saves of ported values and graph outputs, one run', () => {
    const r = planOf((m) => { m.transformer.h[1].output.save('h1'); m.output.at(':', -1).softmax(-1).save('p'); });
    expect(r.reject).toBeUndefined();
    expect(r.plan!.sourceFetch).toEqual([]);
    // The logits come from the tail (lm_head) applied to its fetched input (src/fast/tail.ts).
    expect(new Set(r.plan!.mainFetch)).toEqual(new Set([port('transformer.h.1', 'output').pre, fast.ported.tail!.fetch]));
    expect(fast.ported.tail!.fetch).toBe(port('transformer.ln_f', 'output').post);
  });

  it('binds reads before a set to the pre value and reads after it to the post value', () => {
    const r = planOf((m) => {
      const h = m.transformer.h[1];
      h.output.save('before');
      h.output.at(':', -1).set(0);
      h.output.save('after');
      m.transformer.h[2].input.save('next'); // the same ONNX value, read through the next block
    });
    const p = port('transformer.h.1', 'output');
    expect(r.plan!.reads.get(saved(r.ir, 'before'))!.fetch).toBe(p.pre);
    expect(r.plan!.reads.get(saved(r.ir, 'after'))!.fetch).toBe(p.post);
    expect(r.plan!.reads.get(saved(r.ir, 'next'))!.fetch).toBe(p.post);
    expect(r.plan!.sets.map((s) => s.kind)).toEqual(['replace']);
  });

  it('recognizes steering (h + X) and per-invoke sets on one port', () => {
    const steer = planOf((m) => { const h = m.transformer.h[2]; h.output = h.output.add([0.5]); m.output.save('o'); });
    expect(steer.plan!.sets.map((s) => s.kind)).toEqual(['steer']);
    const rows = planOfBatch((a) => { a.transformer.h[0].mlp.output = 0; }, (b) => { b.transformer.h[0].mlp.output = 1; b.output.save('o'); });
    expect(rows.plan!.sets.map((s) => [s.kind, s.rowStart, s.rowEnd])).toEqual([['replace', 0, 1], ['replace', 1, 2]]);
  });

  it('takes a set value from another prompt with a source run', () => {
    const r = planOfBatch((a) => a.transformer.h[1].output.at(':', 2), (b, h) => { b.transformer.h[1].output.at(':', 2).set(h); b.output.save('o'); });
    expect(r.plan!.sourceFetch).toEqual([port('transformer.h.1', 'output').pre]);
  });

  it.each([
    ['a set on a boundary with no port', (m: ModelRef) => { m.transformer.h[0].ln_1.output = 0; m.output.save('o'); }, /has no port/],
    ['a parameter', (m: ModelRef) => { (m.lm_head.weight as unknown as TensorProxy).save('w'); }, /param/],
    ['module application', (m: ModelRef) => { m.lm_head(m.transformer.h[1].output).save('l'); }, /call_module/],
    ['a read between two sets of its rows', (m: ModelRef) => {
      const h = m.transformer.h[1];
      h.output.at(':', 0).set(0);
      h.output.save('x');
      h.output.at(':', 1).set(1);
    }, /between two sets/],
    ['steering with a set in between (not h + X any more)', (m: ModelRef) => {
      const h = m.transformer.h[1];
      const r = h.output;
      h.output.at(':', 0).set(0);
      h.output = r.add(1);
      m.output.save('o');
    }, /rows that sets write/],
    ['output := input of the same pass (default)', (m: ModelRef) => { m.transformer.h[1].output = m.transformer.h[1].input; m.output.save('o'); }, /rows that sets write/],
  ])('rejects %s', (_label, fn, why) => {
    expect(planOf(fn).reject).toMatch(why);
  });

  it('rejects a set whose value depends on that set (time travel) or on another set of its rows', () => {
    expect(planOfBatch((a) => a.transformer.h[3].output, (b, h3) => { b.transformer.h[1].output = h3; b.output.save('o'); }).reject).toMatch(/depends on that set/);
    expect(planOfBatch((a) => {
      a.transformer.h[0].mlp.output = 0;
      return a.transformer.h[1].output.mul(2);
    }, (b, h) => {
      b.transformer.h[2].output = h;
      b.output.save('o');
    }).reject).toMatch(/depends on another set/);
  });

  it('with sameRowSources, skip_block runs as two passes and matches PyTorch', async () => {
    const c = refCase('skip_block');
    const fn = (m: ModelRef): void => {
      const b = m.transformer.h[c.layer!]!;
      b.output = b.input;
      m.output.logits.at(':', -1, ':').save('last');
    };
    expect(planOf(fn, { sameRowSources: true }).plan!.sourceFetch).toEqual([port(`transformer.h.${c.layer}`, 'input').pre]);
    const ex = new FastExecutor(model.mc, { plan: { sameRowSources: true } });
    const { graph, ctx } = model.build(c.input_ids as number[], fn);
    const ir = compileGraph(graph, model.mc, { pipeline: irPipeline }).ir;
    const out = await ex.tryRun(ir, ctx.host);
    expect(ex.stats).toMatchObject({ fastRuns: 1, sourceRuns: 1 });
    expectClose(out!.get('last')!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });
});

describe('ports on a non-GPT-2 model (Llama-like names)', () => {
  let dir: string;
  let llama: LanguageModel;
  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-fast-'));
    fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(llamaLike()));
    llama = await LanguageModel.load(path.join(dir, 'model.onnx'), { cacheDir: path.join(dir, 'cache') });
  });
  afterAll(async () => {
    await llama?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('chooses blocks by integer path segments and their children with children', () => {
    const ports = choosePorts(llama.modules).map((p) => `${p.path}.${p.kind}`);
    for (const l of [0, 1]) {
      expect(ports).toEqual(expect.arrayContaining([
        `model.layers.${l}.input`, `model.layers.${l}.self_attn.output`, `model.layers.${l}.mlp.output`, `model.layers.${l}.output`,
        `model.layers.${l}.adapter.output`, `model.layers.${l}.adapter.0.input`,
      ]));
    }
    expect(ports).toEqual(expect.arrayContaining(['model.embed_tokens.output', 'model.norm.output']));
    expect(ports.some((p) => /q_proj|act_fn|lm_head/.test(p))).toBe(false);
  });

  it('runs ablations and cross-prompt patches on the fast path, matching the compiler', async () => {
    const fx = llama.mc.fast as FastExecutor;
    const build = () => llama.build((tr) => {
      let src: ReturnType<ModelRef['output']['at']> | undefined;
      tr.invoke([1, 2, 3, 4], (m) => { src = m.model.layers[1].output.at(':', 2); });
      tr.invoke([5, 6, 7, 8], (m) => {
        m.model.layers[0].mlp.output = 0;
        m.model.layers[1].output.at(':', 2).set(src!);
        m.model.layers[1].self_attn.output.save('attn');
        m.output.save('logits');
      });
    });
    const a = build();
    const got = await runGraph(a.graph, llama.mc, { host: a.ctx.host });
    expect(fx.stats).toMatchObject({ fastRuns: 1, sourceRuns: 1, fallbacks: 0 });
    const b = build();
    const want = await runGraph(b.graph, llama.mc, { host: b.ctx.host, fast: false });
    for (const k of ['attn', 'logits']) expectClose(got.get(k)!.data as Float32Array, Array.from(want.get(k)!.data as Float32Array), 1e-6, k);
  });
});
