/**
 * A real PyTorch export (test/fixtures/torch-gpt2-tiny: GPT-2's module tree, seeded random
 * weights, exported by torch's TorchScript exporter; see make.py there). Its exporter
 * deduplicates the identical LayerNorm weights into `Identity` nodes written first in the
 * graph and named after the *last* block, which made the module tree start with
 * `transformer.h.2`, the benchmark's final-norm finder pick `transformer.wpe`, and its
 * logit lens fail (issue 8.9).
 *
 * Ground truth is PyTorch's: the order in which forward pre-hooks fired (reference.json
 * `forward_order`) and the logits of the export's prompt (`last_logits`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { findBlocks } from '../../bench/onnsight.js';
import { MEASUREMENTS } from '../../bench/measurements.js';
import type { BenchContext } from '../../bench/measure.js';
import { disposeOnnsight } from '../../bench/onnsight.js';
import { describeModel, makeFeeds, resolveGraph } from '../../bench/setup.js';
import { main } from '../../src/cli/main.js';
import { buildModuleTree } from '../../src/model/modules.js';
import type { ModuleTree } from '../../src/model/types.js';
import type { ModelProto, NodeProto } from '../../src/onnx/proto.js';
import { decodeModel } from '../../src/onnx/serde.js';

const DIR = path.join(import.meta.dirname, '..', 'fixtures', 'torch-gpt2-tiny');
const REF = JSON.parse(fs.readFileSync(path.join(DIR, 'reference.json'), 'utf8')) as {
  input_ids: number[]; last_logits: number[]; forward_order: string[];
};
const MODEL = decodeModel(fs.readFileSync(path.join(DIR, 'onnx', 'model.onnx')));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-torch-export-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Module paths (root excluded) as `nns modules` lists them. */
const order = (tree: ModuleTree): string[] => [...tree.modules.keys()].filter((p) => p !== '');

/** Checks what holds in any node order: parents first, blocks in order, each block's children in forward order, norm and head last. */
function checkForwardOrder(tree: ModuleTree): void {
  const got = order(tree);
  const at = (p: string): number => got.indexOf(p);
  for (const p of got) {
    const parent = tree.modules.get(p)!.parent;
    if (parent) expect(at(parent), `${parent} before ${p}`).toBeLessThan(at(p));
  }
  const inBlock = ['ln_1', 'attn', 'attn.c_attn', 'attn.c_proj', 'ln_2', 'mlp', 'mlp.c_fc', 'mlp.act', 'mlp.c_proj'];
  const blocks = [0, 1, 2].flatMap((b) => [`transformer.h.${b}`, ...inBlock.map((c) => `transformer.h.${b}.${c}`)]);
  expect(got.filter((p) => p.startsWith('transformer.h.'))).toEqual(blocks);
  expect(got.slice(-2)).toEqual(['transformer.ln_f', 'lm_head']);
  expect(at('transformer')).toBe(0);
  expect(Math.max(at('transformer.wte'), at('transformer.wpe'))).toBeLessThan(at('transformer.h.0'));
}

/** A copy of `model` with its nodes in a random topological order (Kahn's algorithm, ready node drawn by `pick`). */
function shuffled(model: ModelProto, pick: (n: number) => number): ModelProto {
  const nodes = model.graph!.node!;
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => (n.output ?? []).forEach((o) => o && producer.set(o, i)));
  const deps = nodes.map((n) => new Set((n.input ?? []).map((v) => producer.get(v)).filter((p): p is number => p !== undefined)));
  const users = nodes.map(() => [] as number[]);
  deps.forEach((ds, i) => ds.forEach((d) => users[d]!.push(i)));
  const waiting = deps.map((d) => d.size);
  const ready = nodes.map((_, i) => i).filter((i) => waiting[i] === 0);
  const out: NodeProto[] = [];
  while (ready.length) {
    const [i] = ready.splice(pick(ready.length), 1);
    out.push(nodes[i!]!);
    for (const u of users[i!]!) if (--waiting[u] === 0) ready.push(u);
  }
  expect(out.length).toBe(nodes.length);
  return { ...model, graph: { ...model.graph, node: out } };
}

describe('a real TorchScript export of GPT-2 (issue 8.9)', () => {
  it('the exporter wrote weight-alias Identity nodes of the last block first (the case under test)', () => {
    const first = MODEL.graph!.node![0]!;
    expect(first.op_type).toBe('Identity');
    expect(first.output![0]).toMatch(/^transformer\.(h\.2|ln_f)\./);
  });

  it('modules come in PyTorch\'s forward order (forward pre-hooks), parents before children', () => {
    const tree = buildModuleTree(MODEL);
    const mine = order(tree);
    // Every module of the tree is a PyTorch module, and the order is PyTorch's.
    expect(mine.filter((p) => !REF.forward_order.includes(p))).toEqual([]);
    expect(mine).toEqual(REF.forward_order.filter((p) => tree.modules.has(p) && p !== ''));
    checkForwardOrder(tree);
  });

  it('module order and the benchmark\'s block finder do not depend on the node order (random topological orders)', () => {
    fc.assert(fc.property(fc.array(fc.nat(), { minLength: 64, maxLength: 64 }), (draws) => {
      let k = 0;
      const tree = buildModuleTree(shuffled(MODEL, (n) => draws[k++ % draws.length]! % n));
      checkForwardOrder(tree);
      const b = findBlocks(tree);
      expect(b.paths).toEqual(['transformer.h.0', 'transformer.h.1', 'transformer.h.2']);
      expect(b.unembed).toBe('lm_head');
    }), { numRuns: 25 });
  });

  it('nns modules lists them in that order', async () => {
    let out = '';
    const code = await main(['modules', DIR], { out: (t) => (out += `${t}\n`), err: () => {}, cwd: tmp, env: process.env });
    expect(code).toBe(0);
    const listed = out.trim().split('\n').map((l) => l.split(/\s+/)[0]!).filter((p) => p !== '(root)');
    expect(listed).toEqual(REF.forward_order.filter((p) => listed.includes(p) && p !== ''));
    expect(listed[0]).toBe('transformer');
    expect(listed.at(-1)).toBe('lm_head');
  });

  it('the logits and the logit lens at the last block equal PyTorch\'s logits', async () => {
    const script = path.join(tmp, 'lens.nns');
    fs.writeFileSync(script, [
      `trace [${REF.input_ids.join(', ')}] {`,
      '  logits = model.output[:, -1, :].save()',
      '  lens = model.lm_head(model.transformer.ln_f(model.transformer.h[2].output[:, -1, :])).save()',
      '}',
    ].join('\n'));
    const out = path.join(tmp, 'lens.json');
    let err = '';
    const code = await main(['run', script, '--model', DIR, '--out', out], { out: () => {}, err: (t) => (err += t), cwd: tmp, env: process.env });
    expect(err).toBe('');
    expect(code).toBe(0);
    const got = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { data: number[] }>;
    for (const name of ['logits', 'lens']) {
      const d = got[name]!.data;
      expect(d.length).toBe(REF.last_logits.length);
      const worst = Math.max(...d.map((x, i) => Math.abs(x - REF.last_logits[i]!)));
      expect(worst, name).toBeLessThanOrEqual(1e-4);
    }
  });

  it('the benchmark finds ln_f and lm_head and runs its logit lens (first_custom_trace) on it', async () => {
    const model = describeModel(resolveGraph(DIR), 'torch-gpt2-tiny');
    const ctx: BenchContext = {
      model, seqLen: 8, batch: 1, feeds: makeFeeds(model, 1, 8, 0), timing: { warmup: 0, runs: 1 }, sweepRuns: 1,
      plainSession: () => { throw new Error('not in this test'); },
      scratchDir: '', log: () => undefined, extra: {}, notes: {}, rssPhase: () => undefined,
    };
    try {
      const b = findBlocks(buildModuleTree(MODEL));
      expect(b.finalNorm).toBe('transformer.ln_f');
      expect(b.unembed).toBe('lm_head');
      const v = await MEASUREMENTS.find((x) => x.name === 'first_custom_trace_ms')!.run!(ctx);
      expect(Number.isFinite(v)).toBe(true);
    } finally {
      await disposeOnnsight(ctx);
    }
  });
});
