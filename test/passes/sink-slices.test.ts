/**
 * Run variants compute only what the saves need: fetch-saves drops the model outputs no save
 * needs (run path only) and sink-slices moves position selections above position-wise nodes.
 * Synthetic graphs check each rule (and the cases that must stay), run in onnxruntime before
 * and after; gpt2-facts checks the lm_head runs on the saved position only, against PyTorch
 * and against the unoptimized variant.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as ort from 'onnxruntime-node';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DataType, GraphBuilder, attr, externalTensor, int64Tensor, scalarInt64, topoSort } from '../../src/onnx/graph-builder.js';
import type { ModelProto, NodeProto } from '../../src/onnx/proto.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';
import { sinkSlices, sinkSlicesPass, type SinkStats } from '../../passes/sink-slices.js';
import { pruneGraph } from '../../passes/prune.js';
import { checkModel } from '../../passes/check-model.js';
import { defaultPipeline } from '../../passes/pipeline.js';
import { LanguageModel, NnsErrors, type ModelRef, type Tracer } from '../../src/index.js';
import { compileGraph, runGraph } from '../../src/engine.js';
import { structuralKey } from '../../src/compile-cache.js';
import type { Tensor } from '../../src/tensor.js';
import { MODEL_DIR, refCase, expectClose, argmax } from '../helpers/reference.js';

const F = DataType.FLOAT;
const INT64_MAX = 9223372036854775807n;

/** Rewrites a copy of `m` (then prune + toposort, as the pipeline does); checks it is valid. */
function rewrite(m: ModelProto, ranks?: Map<string, number>, weightsDir?: string): { model: ModelProto; stats: SinkStats } {
  const c = decodeModel(encodeModel(m));
  const stats = sinkSlices(c.graph!, 17, { ranks, ...(weightsDir ? { weightsDir } : {}) });
  pruneGraph(c.graph!);
  topoSort(c.graph!);
  expect(checkModel(c)).toEqual([]);
  return { model: c, stats };
}

/** Deterministic pseudo-random floats. */
function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

async function run(m: ModelProto, feeds: Record<string, ort.Tensor>): Promise<Record<string, Float32Array>> {
  const s = await ort.InferenceSession.create(encodeModel(m));
  const r = await s.run(feeds);
  await s.release();
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array]));
}

/** Runs before and after; every output within `tol`. */
async function expectSame(before: ModelProto, after: ModelProto, feeds: Record<string, ort.Tensor>, tol = 1e-6): Promise<void> {
  const a = await run(before, feeds);
  const b = await run(after, feeds);
  expect(Object.keys(b).sort()).toEqual(Object.keys(a).sort());
  for (const k of Object.keys(a)) expectClose(b[k]!, Array.from(a[k]!), tol, k);
}

const producerOf = (m: ModelProto, name: string): NodeProto | undefined => m.graph!.node!.find((n) => n.output?.includes(name));
const x3 = (b: number, s: number, d: number, seed = 1): ort.Tensor => new ort.Tensor('float32', rand(b * s * d, seed), [b, s, d]);

describe('sink-slices on synthetic graphs', () => {
  it('sinks a last-position Gather through Add(bias), MatMul(W) and LayerNormalization (lm_head-like)', async () => {
    const b = new GraphBuilder({ namePrefix: '/head/' });
    const x = b.input('x', F, ['B', 'S', 4]);
    const ln = b.op('LayerNormalization', [x, b.initializer('g', rand(4, 2), [4]), b.initializer('beta', rand(4, 3), [4])], { axis: attr.int(-1), epsilon: attr.float(1e-5) }, { name: '/ln_f/LayerNormalization' });
    const mm = b.op('MatMul', [ln, b.initializer('W', rand(20, 4), [4, 5])], {}, { name: '/lm_head/MatMul' });
    const add = b.op('Add', [mm, b.initializer('bias', rand(5, 5), [5])]);
    const last = b.op('Gather', [add, b.constant(scalarInt64(-1))], { axis: attr.int(1) }, { outputs: ['last'] });
    b.output(last, F, ['B', 5]);
    const m = b.build();
    const { model, stats } = rewrite(m);
    expect(stats.sunk).toBe(3);
    // The Gather now reads x; LayerNorm, MatMul and Add run on one position.
    const mmNode = model.graph!.node!.find((n) => n.op_type === 'MatMul')!;
    expect(mmNode.name).toBe('/lm_head/nns.sink/MatMul');
    const lnNode = producerOf(model, mmNode.input![0]!)!;
    expect(lnNode.op_type).toBe('LayerNormalization');
    const g = producerOf(model, lnNode.input![0]!)!;
    expect([g.op_type, g.input![0], g.name]).toEqual(['Gather', 'x', '/ln_f/nns.sink/Gather']);
    expect(g.metadata_props).toContainEqual({ key: 'onnsight.op', value: 'sink' });
    expect(producerOf(model, 'last')!.op_type).toBe('Add');
    await expectSame(m, model, { x: x3(2, 7, 4) });
  });

  it('sinks a position Slice through Mul by a [1,1,D] constant, Pow, Relu, Softmax(-1), Cast, Gemm-free chain', async () => {
    const b = new GraphBuilder();
    const x = b.input('x', F, ['B', 'S', 4]);
    const mul = b.op('Mul', [b.initializer('c', rand(4, 7), [1, 1, 4]), x]);
    const pow = b.op('Pow', [mul, b.initializer('two', Float32Array.from([2]), [])]);
    const relu = b.op('Relu', [pow]);
    const sm = b.op('Softmax', [relu], { axis: attr.int(2) });
    const cast = b.op('Cast', [sm], { to: attr.int(DataType.DOUBLE) });
    const sl = b.op('Slice', [cast, b.constInt64([-2]), b.constant(int64Tensor([INT64_MAX])), b.constInt64([1])], {}, { outputs: ['tail'] });
    b.output(sl, DataType.DOUBLE, ['B', 2, 4]);
    const m = b.build();
    const { model, stats } = rewrite(m);
    expect(stats.sunk).toBe(5);
    const first = model.graph!.node!.find((n) => n.input?.includes('x'))!;
    expect(first.op_type).toBe('Slice');
    const a = await run(m, { x: x3(2, 5, 4, 9) });
    const r = await run(model, { x: x3(2, 5, 4, 9) });
    expect(Array.from(r.tail!)).toEqual(Array.from(a.tail!));
  });

  it('batched sweep: per-row Slice then last-position Gather — swapped, merged into one Gather, which sinks', async () => {
    const b = new GraphBuilder();
    const x = b.input('x', F, [3, 'S', 4]);
    const y = b.op('MatMul', [x, b.initializer('W', rand(20, 11), [4, 5])], {}, { name: '/lm_head/MatMul' });
    const idx = b.constant(scalarInt64(-1));
    for (let r = 0; r < 3; r++) {
      const rows = b.op('Slice', [y, b.constInt64([r]), b.constInt64([r + 1]), b.constInt64([0])]);
      const o = b.op('Gather', [rows, r === 2 ? b.constant(scalarInt64(-1)) : idx], { axis: attr.int(1) }, { outputs: [`o${r}`] });
      b.output(o, F, [1, 5]);
    }
    const m = b.build();
    const { model, stats } = rewrite(m);
    expect(stats).toEqual({ swapped: 3, merged: 2, sunk: 1, columns: 0 });
    const mm = model.graph!.node!.filter((n) => n.op_type === 'MatMul');
    expect(mm.length).toBe(1);
    expect(producerOf(model, mm[0]!.input![0]!)!.op_type).toBe('Gather');
    await expectSame(m, model, { x: x3(3, 6, 4, 4) });
  });

  it('Gemm (2-D, rows) and a [1,D] bias: a row Slice sinks', async () => {
    const b = new GraphBuilder();
    const x = b.input('x', F, ['N', 4]);
    const gm = b.op('Gemm', [x, b.initializer('W', rand(12, 3), [4, 3]), b.initializer('C', rand(3, 4), [1, 3])]);
    const sl = b.op('Slice', [gm, b.constInt64([1]), b.constInt64([3]), b.constInt64([-2])], {}, { outputs: ['y'] });
    b.output(sl, F, [2, 3]);
    const m = b.build();
    const { model, stats } = rewrite(m);
    expect(stats.sunk).toBe(1);
    await expectSame(m, model, { x: new ort.Tensor('float32', rand(20, 5), [5, 4]) });
  });

  describe('columns: a last-axis selection of MatMul(x, W) reads only those columns of W', () => {
    const W = rand(4 * 40, 21);
    /** x [B, S, 4] @ W [4, 40], then `select` on the last axis; the output named `o`. */
    const head = (select: (b: GraphBuilder, y: string) => string): ModelProto => {
      const b = new GraphBuilder({ namePrefix: '/lm_head/' });
      const x = b.input('x', F, ['B', 'S', 4]);
      const y = b.op('MatMul', [x, b.initializer('W', W, [4, 40])], {}, { name: '/lm_head/MatMul' });
      b.output(select(b, y), F, null as never);
      return b.build();
    };
    /** As {@link head}, with W the Transpose of a constant [40, 4] holding W's transpose (a tied lm_head as the dynamo exporter writes it). */
    const transposedHead = (select: (b: GraphBuilder, y: string) => string): ModelProto => {
      const T = new Float32Array(40 * 4);
      for (let r = 0; r < 4; r++) for (let c = 0; c < 40; c++) T[c * 4 + r] = W[r * 40 + c]!;
      const b = new GraphBuilder({ namePrefix: '/lm_head/' });
      const x = b.input('x', F, ['B', 'S', 4]);
      const wt = b.op('Transpose', [b.initializer('T', T, [40, 4])], { perm: attr.ints([1, 0]) });
      const y = b.op('MatMul', [x, wt], {}, { name: '/lm_head/MatMul' });
      b.output(select(b, y), F, null as never);
      return b.build();
    };
    const gather = (idx: number | number[]) => (b: GraphBuilder, y: string): string =>
      b.op('Gather', [y, typeof idx === 'number' ? b.constant(scalarInt64(idx)) : b.constInt64(idx)], { axis: attr.int(-1) }, { outputs: ['o'] });
    const slice = (start: number, end: number, step: number) => (b: GraphBuilder, y: string): string =>
      b.op('Slice', [y, b.constInt64([start]), b.constInt64([end]), b.constInt64([2]), b.constInt64([step])], {}, { outputs: ['o'] });
    /** The MatMul's constant right operand after the rewrite: W's columns `cols`, as W holds them. */
    const expectColumns = (model: ModelProto, cols: number[], dims: number[]): void => {
      const mm = model.graph!.node!.filter((n) => n.op_type === 'MatMul');
      expect(mm.map((n) => [n.name, n.output![0]])).toEqual([['/lm_head/nns.sink/MatMul', 'o']]);
      const t = model.graph!.initializer!.find((i) => i.name === mm[0]!.input![1])!;
      expect(t.dims!.map(Number)).toEqual(dims);
      const got = new Float32Array(t.raw_data!.slice().buffer);
      expect(Array.from(got)).toEqual(Array.from({ length: 4 }, (_, r) => cols.map((c) => W[r * 40 + c]!)).flat());
      expect(model.graph!.initializer!.some((i) => i.name === 'W' || i.name === 'T')).toBe(false); // pruned: nothing reads W
    };

    it('a scalar Gather (the logit of one token), 1-D Gather indices, Slices with steps: the same numbers', async () => {
      const cases: [(b: GraphBuilder, y: string) => string, number[], number[]][] = [
        [gather(7), [7], [4]],
        [gather(-1), [39], [4]],
        [gather([3, 39, 3]), [3, 39, 3], [4, 3]],
        [slice(10, 14, 2), [10, 12], [4, 2]],
        [slice(-1, -6, -2), [39, 37, 35], [4, 3]],
      ];
      for (const [select, cols, dims] of cases) {
        const m = head(select);
        const { model, stats } = rewrite(m);
        expect(stats.columns).toBe(1);
        expectColumns(model, cols, dims);
        await expectSame(m, model, { x: x3(2, 3, 4, 5) });
      }
    });

    it('W the Transpose of a constant [N, K] (a tied lm_head as the dynamo exporter writes it): the columns are its rows', async () => {
      const m = transposedHead((b, y) => gather([31, 0])(b, y));
      const { model, stats } = rewrite(m);
      expect(stats.columns).toBe(1);
      expectColumns(model, [31, 0], [4, 2]);
      expect(model.graph!.node!.some((n) => n.op_type === 'Transpose')).toBe(false);
      await expectSame(m, model, { x: x3(2, 3, 4, 7) });
    });

    it('a position selection first, then the token: both move (the product is one position × one column)', async () => {
      const m = head((b, y) => gather(5)(b, b.op('Gather', [y, b.constant(scalarInt64(-1))], { axis: attr.int(1) })));
      const { model, stats } = rewrite(m);
      expect([stats.sunk, stats.columns]).toEqual([1, 1]);
      const mm = model.graph!.node!.find((n) => n.op_type === 'MatMul')!;
      expect(producerOf(model, mm.input![0]!)!.op_type).toBe('Gather');
      await expectSame(m, model, { x: x3(2, 3, 4, 6) });
    });

    it('a position selection that cannot sink (W a Transpose, as in dynamo exports) stays, on the product of the token\'s column', async () => {
      const m = transposedHead((b, y) => gather(11)(b, b.op('Gather', [y, b.constant(scalarInt64(-1))], { axis: attr.int(-2) })));
      const { model, stats } = rewrite(m);
      expect([stats.sunk, stats.columns]).toEqual([0, 1]);
      const last = producerOf(model, 'o')!;
      expect([last.op_type, producerOf(model, last.input![0]!)!.op_type]).toEqual(['Gather', 'MatMul']);
      expect(last.attribute!.find((a) => a.name === 'axis')!.i).toBe(1); // -2 of [B, S, 40] is 1 of [B, S]
      await expectSame(m, model, { x: x3(2, 3, 4, 9) });
    });

    it('W in an external data file: read from the weights folder, one span per row', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-columns-'));
      try {
        fs.writeFileSync(path.join(dir, 'w.bin'), Buffer.concat([Buffer.alloc(12), Buffer.from(W.buffer)]));
        const m = head(gather([9, 2]));
        const ext = decodeModel(encodeModel(m));
        ext.graph!.initializer = ext.graph!.initializer!.map((t) => (t.name === 'W' ? externalTensor('W', F, [4, 40], { location: 'w.bin', offset: 12, length: 640 }) : t));
        expect(rewrite(ext).stats.columns).toBe(0); // no folder to read it from: left alone
        const { model, stats } = rewrite(ext, undefined, dir);
        expect(stats.columns).toBe(1);
        expectColumns(model, [9, 2], [4, 2]);
        await expectSame(m, model, { x: x3(1, 5, 4, 8) });
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('left alone: more than an eighth of the columns, a non-constant right operand, another reader of the product', () => {
      const none = { sunk: 0, swapped: 0, merged: 0, columns: 0 };
      expect(rewrite(head(slice(0, 6, 1))).stats).toEqual(none); // 6 of 40
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 'S', 4]);
      const w = b.input('w', F, [4, 40]);
      b.output(gather(3)(b, b.op('MatMul', [x, w])), F, null as never);
      expect(rewrite(b.build()).stats).toEqual(none);
      const b2 = new GraphBuilder();
      const x2 = b2.input('x', F, ['B', 'S', 4]);
      const y2 = b2.op('MatMul', [x2, b2.initializer('W', W, [4, 40])], {}, { outputs: ['y'] });
      b2.output(y2, F, ['B', 'S', 40]);
      b2.output(gather(3)(b2, y2), F, null as never);
      expect(rewrite(b2.build()).stats).toEqual(none);
    });
  });

  describe('must NOT be rewritten', () => {
    const unchanged = (m: ModelProto, ranks?: Map<string, number>): void => {
      const { stats } = rewrite(m, ranks);
      expect(stats).toEqual({ sunk: 0, swapped: 0, merged: 0, columns: 0 });
    };
    const gatherOn = (b: GraphBuilder, v: string, axis: number, index = -1): string => b.op('Gather', [v, b.constant(scalarInt64(index))], { axis: attr.int(axis) }, { outputs: ['o'] });

    it('a second consumer of the position-wise output', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 'S', 4]);
      const y = b.op('Relu', [x]);
      b.output(gatherOn(b, y, 1), F, ['B', 4]);
      b.output(b.op('Add', [y, y], {}, { outputs: ['o2'] }), F, ['B', 'S', 4]);
      unchanged(b.build());
    });

    it('a position-wise output that is itself a graph output', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 'S', 4]);
      const y = b.op('Relu', [x], {}, { outputs: ['y'] });
      b.output(y, F, ['B', 'S', 4]);
      b.output(gatherOn(b, y, 1), F, ['B', 4]);
      unchanged(b.build());
    });

    it('an attention-like MatMul of two activations', () => {
      const b = new GraphBuilder();
      const q = b.input('q', F, ['B', 'S', 4]);
      const k = b.input('k', F, ['B', 'S', 4]);
      const kt = b.op('Transpose', [k], { perm: attr.ints([0, 2, 1]) });
      const s = b.op('MatMul', [q, kt]);
      b.output(gatherOn(b, s, 1), F, ['B', 'S']);
      unchanged(b.build());
    });

    it('Softmax on axis 1 (selection on axis 1, and on axis 0)', () => {
      for (const axis of [1, 0]) {
        const b = new GraphBuilder();
        const x = b.input('x', F, ['B', 'S', 4]);
        const sm = b.op('Softmax', [x], { axis: attr.int(1) });
        b.output(gatherOn(b, sm, axis, 0), F, null as never);
        unchanged(b.build());
      }
    });

    it('a selection on the last axis', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 'S', 4]);
      b.output(gatherOn(b, b.op('Relu', [x]), -1), F, ['B', 'S']);
      unchanged(b.build());
    });

    it('an Add whose constant varies along the selected axis; a scalar Gather against a [1,1,D] constant', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 3, 4]);
      b.output(gatherOn(b, b.op('Add', [x, b.initializer('pos', rand(12, 1), [3, 4])]), 1), F, ['B', 4]);
      unchanged(b.build());
      const b2 = new GraphBuilder();
      const x2 = b2.input('x', F, ['B', 'S', 4]);
      b2.output(gatherOn(b2, b2.op('Add', [x2, b2.initializer('c', rand(4, 1), [1, 1, 4])]), 1), F, ['B', 4]);
      unchanged(b2.build());
    });

    it('an unknown rank (no shapes anywhere)', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F);
      b.output(gatherOn(b, b.op('Relu', [x]), 1), F);
      unchanged(b.build());
    });

    it('a MatMul selection on the contracted-side (last) axis, and a LayerNormalization over the selected axis', () => {
      const b = new GraphBuilder();
      const x = b.input('x', F, ['B', 'S', 4]);
      const ln = b.op('LayerNormalization', [x, b.initializer('g', rand(12, 2), [3, 4])], { axis: attr.int(1) });
      b.output(gatherOn(b, ln, 1), F, ['B', 4]);
      unchanged(b.build());
    });
  });
});

describe('gpt2-facts: run variants compute the lm_head on the saved position only', () => {
  let model: LanguageModel;
  const c = refCase('clean_logits');
  const ids = c.input_ids as number[];
  const unoptimized = defaultPipeline.filter((p) => p !== sinkSlicesPass);
  /** The same trace on the unoptimized variant (full outputs kept, no sinking). */
  const plain = (fn: (m: ModelRef) => void): Promise<Map<string, Tensor>> => runGraph(model.build(ids, fn).graph, model.mc, { fast: false, pipeline: unoptimized });
  const bits = (t: Tensor): Buffer => Buffer.from((t.data as Float32Array).buffer, (t.data as Float32Array).byteOffset, (t.data as Float32Array).byteLength);
  const maxDiff = (a: Tensor, b: Tensor): number => (a.data as Float32Array).reduce((m, v, i) => Math.max(m, Math.abs(v - (b.data as Float32Array)[i]!)), 0);
  /**
   * Not bitwise: the lm_head MatMul on 1 row instead of T takes another kernel (other summation
   * order); measured 1.9e-6 at most on logits up to 13 in magnitude (~2 ulp). Bound: 1e-6 of
   * the values' scale (max |ref|, at least 1).
   */
  const expectNear = (a: Tensor, ref: Tensor, what: string): void => {
    const scale = Math.max(1, ...Array.from(ref.data as Float32Array, Math.abs));
    expect(maxDiff(a, ref), what).toBeLessThanOrEqual(1e-6 * scale);
  };

  beforeAll(async () => {
    model = await LanguageModel.load(MODEL_DIR, { fast: false });
  });
  afterAll(async () => model?.dispose());

  const lastLogits = (m: ModelRef): void => { m.output.logits.at(':', -1, ':').save('last'); };

  it('the run variant has no full logits: the lm_head MatMul reads the last position (nns compile keeps them)', () => {
    const ir = model.build(ids, lastLogits).graph;
    const run = compileGraph(ir, model.mc, { keepModelOutputs: false }).model.graph!;
    expect(run.output!.map((o) => o.name)).toEqual(['last']);
    expect(run.node!.some((n) => n.output!.includes('logits'))).toBe(false);
    const head = run.node!.find((n) => n.op_type === 'MatMul' && n.name!.startsWith('/lm_head/'))!;
    expect(head.name).toBe('/lm_head/nns.sink/MatMul');
    const ln = run.node!.find((n) => n.output!.includes(head.input![0]!))!;
    expect(ln.op_type).toBe('LayerNormalization');
    const sel = run.node!.find((n) => n.output!.includes(ln.input![0]!))!;
    expect([sel.op_type, sel.name]).toEqual(['Gather', '/transformer/ln_f/nns.sink/Gather']);
    // nns compile / LanguageModel.compile: the model's outputs stay, the logits are computed in full.
    const full = model.compile(ids, lastLogits).graph!;
    expect(full.output!.map((o) => o.name)).toEqual(['logits', 'last']);
    expect(full.node!.find((n) => n.name === '/lm_head/MatMul')!.output).toEqual(['logits']);
    // The compile cache never mixes the two settings.
    expect(structuralKey(ir, { keepModelOutputs: false })).not.toBe(structuralKey(ir));
  });

  it('clean_logits: last-position logits match PyTorch (1e-4) and the unoptimized variant', async () => {
    const e = c.expect as { last_logits: number[]; top5: number[] };
    const { saves } = await model.trace(ids, lastLogits, { fast: false });
    expect(saves.last!.shape).toEqual([1, 874]);
    expectClose(saves.last!.data as Float32Array, e.last_logits, 1e-4);
    const ref = (await plain(lastLogits)).get('last')!;
    expectNear(saves.last!, ref, 'last');
  });

  it('one token\'s logit (columns): the lm_head reads that column only; = PyTorch (1e-4) and the unoptimized variant', async () => {
    const e = c.expect as { last_logits: number[]; top5: number[] };
    for (const t of [e.top5[0]!, 3, 873]) {
      const fn = (m: ModelRef): void => { m.output.logits.at(0, -1, t).save('y'); };
      const graph = compileGraph(model.build(ids, fn).graph, model.mc, { keepModelOutputs: false }).model.graph!;
      expect(graph.node!.some((n) => n.input?.includes('onnx::MatMul_1005'))).toBe(false);
      expect(graph.initializer!.filter((x) => x.name!.endsWith('.nns.columns')).map((x) => x.dims!.map(Number))).toEqual([[128]]);
      const { saves } = await model.trace(ids, fn, { fast: false });
      expect(saves.y!.shape).toEqual([]);
      expectClose(saves.y!.data as Float32Array, [e.last_logits[t]!], 1e-4, `logit ${t}`);
      expectNear(saves.y!, (await plain(fn)).get('y')!, `logit ${t}`);
    }
  });

  it('an intervention that needs a later module\'s value is still the order error when no save depends on it', async () => {
    const err = await model.trace(ids, (m) => {
      m.transformer.h[0]!.output.save('h0');
      m.transformer.h[1]!.output = m.transformer.h[3]!.output;
    }, { fast: false }).then(() => null, (e: unknown) => e);
    expect((err as NnsErrors).errors?.[0]?.code).toBe('order');
  });

  it('saving model.output.logits itself still works (bit-identical to the unoptimized variant)', async () => {
    const fn = (m: ModelRef): void => { m.output.logits.save('logits'); m.output.logits.at(':', -1, ':').save('last'); };
    const { saves } = await model.trace(ids, fn, { fast: false });
    expect(saves.logits!.shape).toEqual([1, ids.length, 874]);
    const ref = await plain(fn);
    expect(bits(saves.logits!).equals(bits(ref.get('logits')!))).toBe(true);
    expectClose(saves.last!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('logit lens at every layer, position selected after lm_head: matches PyTorch (1e-5) and the unoptimized variant', async () => {
    const lc = refCase('logit_lens');
    const e = lc.expect as { layer: number; top1: number; p_top1: number; p_answer: number }[];
    const fn = (m: ModelRef): void => {
      for (const k of e) m.lm_head(m.transformer.ln_f(m.transformer.h[k.layer]!.output)).at(':', -1, ':').softmax(-1).save(`lens.${k.layer}`);
    };
    const graph = compileGraph(model.build(lc.input_ids as number[], fn).graph, model.mc, { keepModelOutputs: false }).model.graph!;
    const heads = graph.node!.filter((n) => n.op_type === 'MatMul' && n.input![1] === 'onnx::MatMul_1005');
    expect(heads.length).toBe(e.length);
    // Copies of the lens call's lm_head MatMul: under the block each one decodes.
    for (const h of heads) expect(h.name).toMatch(/^\/transformer\/h\.\d\/nns\.sink\/MatMul/);
    const { saves } = await model.trace(lc.input_ids as number[], fn, { fast: false });
    const ref = await runGraph(model.build(lc.input_ids as number[], fn).graph, model.mc, { fast: false, pipeline: unoptimized });
    for (const k of e) {
      const probs = saves[`lens.${k.layer}`]!.data as Float32Array;
      expect(argmax(probs), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(probs[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(probs[lc.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
      expectNear(saves[`lens.${k.layer}`]!, ref.get(`lens.${k.layer}`)!, `lens.${k.layer}`);
    }
  });

  it('a batched two-invoke trace: both rows\' last logits through one sunk Gather, equal to the unoptimized variant', async () => {
    const src = refCase('patch_block_outputs').source_ids!;
    const fn = (tr: Tracer): void => {
      tr.invoke(ids, (m) => { m.output.logits.at(':', -1, ':').save('a'); });
      tr.invoke(src, (m) => { m.transformer.h[1]!.mlp.output = 0; m.output.logits.at(':', -1, ':').save('b'); });
    };
    const ir = model.build(fn).graph;
    const graph = compileGraph(ir, model.mc, { keepModelOutputs: false }).model.graph!;
    const heads = graph.node!.filter((n) => n.op_type === 'MatMul' && n.input![1] === 'onnx::MatMul_1005');
    expect(heads.map((h) => h.name)).toEqual(['/lm_head/nns.sink/MatMul']);
    const { saves } = await model.trace(fn, { fast: false, dedup: false });
    const ref = await runGraph(model.build(fn).graph, model.mc, { fast: false, pipeline: unoptimized, dedup: false });
    for (const k of ['a', 'b']) {
      expect(saves[k]!.shape).toEqual([1, 874]);
      expectNear(saves[k]!, ref.get(k)!, k);
    }
    expectClose(saves.a!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });
});
