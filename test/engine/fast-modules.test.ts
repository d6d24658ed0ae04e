/**
 * Module application on the fast path (src/fast/module-model.ts): closed modules as
 * standalone module models, the logit lens at every layer on the fast path against PyTorch
 * (reference.json) and against the compiled path, calls batched into one session run per
 * module and argument shape, and calls of modules that are not closed (or not given every
 * input, or feeding a set) going to the compiler.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, type ModelRef, type Tensor } from '../../src/index.js';
import { runGraph } from '../../src/engine.js';
import { FastExecutor } from '../../src/fast/index.js';
import { moduleClosure, moduleModelProto } from '../../src/fast/module-model.js';
import { EXPORTS, refCase, argmax, maxDiff } from '../helpers/reference.js';
import { onFastPath, type Built } from '../helpers/fast.js';

describe.each(EXPORTS)('module application on the $name export', ({ name, path }) => {
  let model: LanguageModel;
  let fast: FastExecutor;
  beforeAll(async () => {
    model = await LanguageModel.load(path);
    fast = model.mc.fast as FastExecutor;
  });
  afterAll(async () => model?.dispose());

  /** Runs a trace on the default path and again compiled (agreeing within 1e-5); which path the first took, and module runs. */
  async function both(build: () => Built): Promise<{ saves: Map<string, Tensor>; path: 'fast' | 'compiled'; calls: number; runs: number }> {
    const before = { ...fast.stats };
    const a = build();
    const saves = await runGraph(a.graph, model.mc, { host: a.ctx.host });
    const path = fast.stats.fastRuns > before.fastRuns ? 'fast' : 'compiled';
    const b = build();
    const compiled = await runGraph(b.graph, model.mc, { host: b.ctx.host, fast: false });
    expect([...saves.keys()].sort()).toEqual([...compiled.keys()].sort());
    for (const [k, t] of compiled) expect(maxDiff(saves.get(k)!, t), k).toBeLessThanOrEqual(1e-5);
    return { saves, path, calls: fast.stats.moduleCalls - before.moduleCalls, runs: fast.stats.moduleRuns - before.moduleRuns };
  }

  it('module models: ln_f and lm_head are closed; shape-free inputs; the weights stay references, never copied', () => {
    const mc = model.mc;
    const inits = new Set(mc.loaded.proto.graph!.initializer);
    for (const p of ['transformer.ln_f', 'lm_head']) {
      const c = moduleClosure(mc, p);
      expect('reject' in c ? c.reject : null).toBeNull();
      const proto = moduleModelProto(mc, p);
      const g = proto.graph!;
      expect(g.input!.map((i) => i.name)).toEqual(mc.tree.modules.get(p)!.inputs.map((b) => b.name));
      expect(g.output!.map((o) => o.name)).toEqual(mc.tree.modules.get(p)!.outputs.map((b) => b.name));
      for (const i of g.input!) expect(i.type!.tensor_type!.shape).toBeUndefined();
      for (const t of g.initializer!) expect(inits.has(t)).toBe(true); // the same TensorProto objects
      expect(proto.opset_import).toBe(mc.loaded.proto.opset_import);
    }
    const lm = moduleModelProto(mc, 'lm_head').graph!.initializer!;
    expect(lm.some((t) => (t.external_data ?? []).some((e) => e.key === 'location'))).toBe(true);
    const attn = moduleClosure(mc, 'transformer.h.0.attn');
    if (name === 'dynamo') expect('reject' in attn && attn.reject).toMatch(/reads \S+ from outside the module/);
    // TorchScript: the mask is an input of attn (and its constants are copied in).
    else expect(mc.tree.modules.get('transformer.h.0.attn')!.inputs.length).toBe(2);
  });

  it('logit lens at every layer: fast path, every call of a module in one session run, PyTorch values within 1e-5', async () => {
    const c = refCase('logit_lens');
    const e = c.expect as { layer: number; top1: number; p_top1: number; p_answer: number }[];
    expect(e.length).toBeGreaterThan(1);
    const r = await both(() => model.build(c.input_ids as number[], (m) => {
      for (const k of e) {
        const h = m.transformer.h[k.layer]!.output.at(':', -1, ':');
        m.lm_head(m.transformer.ln_f(h)).softmax(-1).save(`lens.${k.layer}`);
      }
    }));
    expect(r.path).toBe('fast');
    expect(r.calls).toBe(2 * e.length);
    expect(r.runs).toBe(2); // ln_f once, lm_head once, stacked over the layers
    for (const k of e) {
      const probs = r.saves.get(`lens.${k.layer}`)!;
      expect(probs.shape).toEqual([1, 874]);
      const p = probs.data as Float32Array;
      expect(argmax(p), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(p[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(p[c.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('logit lens: lm_head\'s calls run on the instrumented model\'s own copy of it (no session over lm_head\'s module model), equal to the module model\'s results and to PyTorch', async () => {
    const c = refCase('logit_lens');
    const e = c.expect as { layer: number; top1: number; p_top1: number; p_answer: number }[];
    expect(fast.tailCallsInModel('lm_head')).toBe(true);
    expect(fast.tailCallsInModel('transformer.ln_f')).toBe(false);
    const moduleTail = new FastExecutor(model.mc, { tailRange: false, pinned: false });
    expect(moduleTail.tailCallsInModel('lm_head')).toBe(false);
    const build = (): Built => model.build(c.input_ids as number[], (m) => {
      for (const k of e) {
        const h = m.transformer.h[k.layer]!.output.at(':', -1, ':');
        m.lm_head(m.transformer.ln_f(h)).softmax(-1).save(`lens.${k.layer}`);
      }
      m.output.logits.at(':', -1, ':').save('last'); // the range and the host's rows in one model, one run each
    });
    const lmGraph = fast.modules.model('lm_head').graphPath;
    const backend = model.mc.backend;
    const session = backend.session.bind(backend);
    const opened: string[] = [];
    backend.session = (g, o) => { opened.push(g); return session(g, o); };
    const runs = (ex: FastExecutor): Promise<Map<string, Tensor>> => onFastPath(model, ex, build);
    let inModel: Map<string, Tensor>;
    try {
      inModel = await runs(fast);
    } finally {
      backend.session = session;
    }
    expect(opened).not.toContain(lmGraph);
    expect(opened).toContain(fast.ported.graphPath);
    const viaModule = await runs(moduleTail);
    for (const k of e) {
      const probs = inModel.get(`lens.${k.layer}`)!;
      expect(probs.shape).toEqual([1, 874]);
      expect(maxDiff(probs, viaModule.get(`lens.${k.layer}`)!)).toBeLessThanOrEqual(1e-6);
      const p = probs.data as Float32Array;
      expect(argmax(p), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(p[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(p[c.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
    }
    expect(maxDiff(inModel.get('last')!, viaModule.get('last')!)).toBeLessThanOrEqual(1e-6);
    const clean = refCase('clean_logits');
    expect(clean.input_ids).toEqual(c.input_ids);
    expect(maxDiff(inModel.get('last')!, { dtype: 'float32', shape: [1, 874], data: Float32Array.from((clean.expect as { last_logits: number[] }).last_logits) })).toBeLessThanOrEqual(1e-4);
  });

  it('calls of different argument shapes run separately; full-rank arguments are not stacked; results feed host ops', async () => {
    const ids = refCase('logit_lens').input_ids as number[];
    const r = await both(() => model.build(ids, (m) => {
      const a = m.lm_head(m.transformer.ln_f(m.transformer.h[1]!.output)); // [1, T, 874], rank of the input sig
      const b = m.lm_head(m.transformer.ln_f(m.transformer.h[2]!.output));
      a.sub(b).save('diff');
      m.lm_head(m.transformer.h[3]!.output.at(':', -1, ':')).softmax(-1).save('last3'); // [1, 874]
      m.lm_head(m.transformer.h[0]!.output.at(0)).save('row0'); // [T, 874]
    }));
    expect(r.path).toBe('fast');
    expect(r.calls).toBe(6);
    // ln_f: 2 runs (rank 3, not stacked); lm_head: 2 (rank 3) + 1 ([1,128]) + 1 ([T,128]).
    expect(r.runs).toBe(6);
  });

  it('a module that is not closed, or is not given every input, goes to the compiler', async () => {
    const ids = refCase('logit_lens').input_ids as number[];
    const r = await both(() => model.build(ids, (m) => {
      (m.transformer.h[1]!.attn as unknown as (x: unknown) => { save(n: string): void })(m.transformer.h[1]!.ln_1.output).save('a');
    }));
    expect(r.path).toBe('compiled');
    expect(fast.stats.lastReject).toMatch(name === 'dynamo' ? /call_module transformer\.h\.1\.attn: .*reads \S+ from outside/ : /call_module transformer\.h\.1\.attn with 1 of its 2 inputs/);
  });

  it('a set whose value depends on a module call goes to the compiler', async () => {
    const ids = refCase('logit_lens').input_ids as number[];
    const r = await both(() => model.build(ids, (m: ModelRef) => {
      m.transformer.h[2]!.output.at(':', -1, ':').set(m.transformer.ln_f(m.transformer.h[1]!.output.at(':', -1, ':')));
      m.output.logits.at(':', -1, ':').save('last');
    }));
    expect(r.path).toBe('compiled');
    expect(fast.stats.lastReject).toMatch(/depends on a module call/);
  });
});
