/**
 * `grad(Y, X)` against PyTorch: reference.json `gradients` (d logit[answer] at the last
 * position / d each block output, and the attribution Σ_d (h_source − h_clean) · grad per
 * position) on both gpt2-facts exports within 1e-4, through the TS API and `.nns` (the CLI,
 * a batched trace whose gradient rows are the clean invoke's). Also: gradients through a
 * `set` and with respect to an op value agree with finite differences of the real model
 * (float32, so a loose tolerance); a path through an op without a derivative is the located
 * error `not-differentiable` naming the op and its module.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, grad, type ModelRef, type TensorProxy } from '../../src/index.js';
import { EXPORTS, ROOT, refCase, expectClose } from '../helpers/reference.js';
import { nns } from '../helpers/cli.js';
import type { OrtBackend } from '../../backends/ort.js';
import { tieredOf } from '../../src/compiled-run.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { ModuleMap } from '../../src/model/modules.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-grad-'));


interface GradExpect { grads: Record<string, { shape: number[]; values: number[] }>; attribution: number[][] }

describe.each(EXPORTS)('grad on the $name export', ({ name, path: modelPath }) => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(modelPath);
  }, 60_000);
  afterAll(async () => model?.dispose());

  it('TS API: per-block gradients and attribution equal reference.json gradients', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const blocks = Object.keys(e.grads).length;
    const { saves } = await model.trace((tr) => {
      const src: TensorProxy[] = [];
      tr.invoke(c.source_ids!, (m) => { for (let l = 0; l < blocks; l++) src.push(m.transformer.h[l]!.output); });
      tr.invoke(c.input_ids as number[], (m) => {
        const y = m.output.logits.at(0, -1, c.answer_id!);
        for (let l = 0; l < blocks; l++) {
          const h = m.transformer.h[l]!.output;
          const g = grad(y, h).save(`g${l}`);
          src[l]!.sub(h).mul(g).sum(-1).save(`a${l}`);
        }
      });
    });
    for (let l = 0; l < blocks; l++) {
      const want = e.grads[`transformer.h.${l}`]!;
      expect(saves[`g${l}`]!.shape).toEqual(want.shape);
      expectClose(saves[`g${l}`]!.data as Float32Array, want.values, 1e-4, `grad h.${l}`);
      expectClose(saves[`a${l}`]!.data as Float32Array, e.attribution[l]!, 1e-4, `attribution h.${l}`);
    }
    // The gradient's graph (a whole-model compiled variant) runs on onnxruntime's arena without
    // its memory patterns, whose block would come on top of the arena's buffers (src/compiled-run.ts).
    const compiled = (model.mc.backend as OrtBackend).liveSessions().filter((s) => s.whole);
    expect(compiled.length).toBeGreaterThan(0);
    expect(compiled.every((s) => s.arena && !s.memPattern)).toBe(true);
    // Y is one logit: the gradient's graph reads the answer's column of the lm_head weight only,
    // a constant of its own (sink-slices' column rule), never the whole weight (or, in the
    // dynamo export, the tied embedding it is the transpose of).
    const proto = model.mc.loaded.proto.graph!;
    const head = proto.node!.find((n) => n.output!.includes('logits'))!;
    const weight = proto.node!.find((n) => n.output!.includes(head.input![1]!) && n.op_type === 'Transpose')?.input![0] ?? head.input![1]!;
    for (const s of compiled) {
      const g = decodeModel(fs.readFileSync(s.graphPath)).graph!;
      // (A tied weight's embedding lookup reads the rows of the prompt's tokens: that stays.)
      const readers = g.node!.filter((n) => (n.input ?? []).includes(weight) && !(n.op_type === 'Gather' && n.input![0] === weight));
      expect(readers.map((n) => `${n.op_type} ${n.name}`), s.graphPath).toEqual([]);
      const columns = g.initializer!.filter((t) => t.name!.endsWith('.nns.columns'));
      expect(columns.map((t) => t.dims!.map(Number))).toEqual([[e.grads['transformer.h.0']!.shape.at(-1)]]); // one column: [hidden]
    }
  });

  it('.nns: the same in one batched script', async () => {
    const c = refCase('gradients');
    const e = c.expect as GradExpect;
    const out = path.join(TMP, `grad.${name}.json`);
    const r = await nns(['run', path.join(ROOT, 'test', 'scripts', 'grad', 'gradients.nns'), '--model', modelPath, '--out', out]);
    expect(r.code, r.err).toBe(0);
    const saved = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { shape: number[]; data: number[] }>;
    for (let l = 0; l < 4; l++) {
      const want = e.grads[`transformer.h.${l}`]!;
      expect(saved[`g.${l}`]!.shape).toEqual(want.shape);
      expectClose(saved[`g.${l}`]!.data, want.values, 1e-4, `grad h.${l}`);
      expectClose(saved[`a${l}`]!.data, e.attribution[l]!, 1e-4, `attribution h.${l}`);
    }
  }, 60_000);

  it('one gradient graph serves another length: its backward takes shapes from the model inputs and recomputes 1 + tanh, not keeping forward values (finite differences)', async () => {
    const c = refCase('gradients');
    const ids = c.input_ids as number[];
    const longer = [...ids.slice(0, 5), ...ids]; // another length, the same structure
    const T = longer.length;
    const delta = 0.05;
    const body = (bump?: { p: number; d: number; h: number }) => (m: ModelRef): void => {
      const h = m.transformer.h[1]!.output;
      if (bump) h.at(0, bump.p, bump.d).set(h.at(0, bump.p, bump.d).add(bump.h));
      const y = m.output.logits.at(0, -1, c.answer_id!).save('y');
      if (!bump) grad(y, h).save('g');
    };
    const tiers = tieredOf(model.mc);
    const before = new Set(tiers.known());
    await model.trace(ids, body());
    const made = tiers.known().filter((p) => !before.has(p));
    expect(made.length).toBe(1);
    const { saves } = await model.trace(longer, body());
    expect(tiers.known().filter((p) => !before.has(p))).toEqual(made); // the same graph (structural cache)
    const g = saves.g!;
    const D = g.shape[2]!;
    expect(g.shape).toEqual([1, T, D]);
    for (const [p, d] of [[0, 3], [T - 1, 10], [7, 40], [T - 2, D - 1]] as const) {
      const plus = (await model.trace(longer, body({ p, d, h: delta }))).saves.y!.data[0] as number;
      const minus = (await model.trace(longer, body({ p, d, h: -delta }))).saves.y!.data[0] as number;
      const fd = (plus - minus) / (2 * delta);
      const an = (g.data as Float32Array)[p * D + d]!;
      expect(Math.abs(an - fd), `d y / d h.1[0, ${p}, ${d}]: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd)));
    }
    // The mechanism: no backward Shape reads a forward value whose probed shape is made of numbers,
    // batch and sequence (such a Shape would keep that value alive until the backward reaches it).
    const proto = decodeModel(fs.readFileSync(made[0]!));
    const sigs = (model.mc.tree.modules as ModuleMap).sigs;
    const inputs = new Set((proto.graph!.input ?? []).map((i) => i.name));
    const kept = (proto.graph!.node ?? []).filter((n) => n.op_type === 'Shape' && /nns\.backward/.test(n.name ?? '') && !inputs.has(n.input![0]!)
      && (sigs.get(n.input![0]!)?.shape ?? ['?']).every((d) => typeof d === 'number' || d === 'batch' || d === 'sequence'));
    expect(kept.map((n) => n.input![0])).toEqual([]);
    // And `1 + tanh(u)` (GELU) is computed again in the backward from tanh(u), which the backward
    // reads anyway, instead of kept: no backward node reads the forward sum; a copy with the
    // operands swapped (so onnxruntime does not merge it back) does.
    const nodes = proto.graph!.node ?? [];
    const backward = nodes.filter((n) => /nns\.backward/.test(n.name ?? ''));
    const tanhs = new Set(nodes.filter((n) => n.op_type === 'Tanh' && !/nns\./.test(n.name ?? '')).map((n) => n.output![0]!));
    const sums = nodes.filter((n) => n.op_type === 'Add' && !/nns\./.test(n.name ?? '') && tanhs.has(n.input![0]!));
    if (name === 'torchscript') expect(sums.length).toBeGreaterThan(0);
    for (const sum of sums) {
      expect(backward.filter((b) => (b.input ?? []).includes(sum.output![0]!)).map((b) => b.name)).toEqual([]);
      if (backward.some((b) => (b.input ?? []).includes(sum.input![0]!))) expect(backward.some((b) => b.op_type === 'Add' && b.input?.[0] === sum.input![1] && b.input?.[1] === sum.input![0])).toBe(true);
    }
  }, 60_000);

  it('gradients with respect to an op value, through a set, match finite differences of the model', async () => {
    const c = refCase('gradients');
    const ids = c.input_ids as number[];
    const delta = 0.05;
    // Y = logit[answer] with block 2's MLP output scaled by 0.5 (a set after X); X = block 1's attention probabilities.
    const body = (bump?: { i: number; j: number; k: number; h: number }) => (m: ModelRef): void => {
      const sm = m.transformer.h[1]!.attn.op('Softmax');
      if (bump) sm.output.at(0, bump.i, bump.j, bump.k).set(sm.output.at(0, bump.i, bump.j, bump.k).add(bump.h));
      m.transformer.h[2]!.mlp.output = m.transformer.h[2]!.mlp.output.mul(0.5);
      const y = m.output.logits.at(0, -1, c.answer_id!).save('y');
      if (!bump) grad(y, sm.output).save('g');
    };
    const { saves } = await model.trace(ids, body());
    const g = saves.g!;
    expect(g.shape).toEqual([1, 4, ids.length, ids.length]);
    const T = ids.length;
    for (const [i, j, k] of [[0, T - 1, 2], [3, T - 1, T - 1], [2, 5, 1]] as const) {
      const plus = (await model.trace(ids, body({ i, j, k, h: delta }))).saves.y!.data[0] as number;
      const minus = (await model.trace(ids, body({ i, j, k, h: -delta }))).saves.y!.data[0] as number;
      const fd = (plus - minus) / (2 * delta);
      const an = (g.data as Float32Array)[((0 * 4 + i) * T + j) * T + k]!;
      expect(Math.abs(an - fd), `d y / d probs[0, ${i}, ${j}, ${k}]: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd)));
    }
  }, 60_000);
});

describe('grad errors', () => {
  it('a path through an op without a derivative is not-differentiable, naming the op and module; Y of several elements is bad-grad', async () => {
    const script = path.join(TMP, 'bad.nns');
    fs.writeFileSync(script, [
      'trace "The Eiffel Tower is in the city of" {',
      '  y = max(model.output.logits[0, -1, :], 0)',
      '  g = grad(y, model.transformer.h[3].output).save()',
      '  z = grad(model.output.logits, model.transformer.h[3].output).save()',
      '}', ''].join('\n'));
    const r = await nns(['run', script, '--model', EXPORTS[0].path]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/bad\.nns:4:7: error\[bad-grad\]: grad\(Y, X\) needs Y with exactly one element, but Y is float32\[1, sequence, 874\]/);
    expect(r.err).not.toMatch(/^\s+at /m);
    fs.writeFileSync(script, [
      'trace "The Eiffel Tower is in the city of" {',
      '  y = topk(model.output.logits[0, -1, :], 1).values[0]',
      '  g = grad(y, model.transformer.h[3].output).save()',
      '}', ''].join('\n'));
    const r2 = await nns(['run', script, '--model', EXPORTS[0].path]);
    expect(r2.code).toBe(1);
    // The script's own node is under the scope of the module its statement reads (lm_head's output).
    expect(r2.err).toMatch(/bad\.nns:3:7: error\[not-differentiable\]: cannot differentiate through TopK node '\/lm_head\/nns\.topk\/TopK' of the script's own computation: no derivative rule for TopK/);
    expect(r2.err).not.toMatch(/^\s+at /m);
  }, 60_000);
});
