/**
 * Module classes (src/model/classes.ts) and `nns modules --json`. The ground truth for
 * inferred classes is the dynamo export's own metadata: PyTorch's class of every module of
 * the same model. The TorchScript export records none, so every class there is inferred and
 * must name the same kind of module; so must inference on the dynamo graph with its
 * recorded classes removed.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { moduleClasses } from '../../src/model/classes.js';
import { formatModuleTree, type ModuleTreeJSON } from '../../src/model/format.js';
import { buildModuleTree } from '../../src/model/modules.js';
import type { ModuleTree } from '../../src/model/types.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { llamaLike } from '../fixtures/modules/synthetic.js';
import { MODEL_DIR } from '../helpers/reference.js';

const load = (file: string) => decodeModel(new Uint8Array(fs.readFileSync(path.join(MODEL_DIR, 'onnx', file))));

/** The generic kind a PyTorch class name stands for. */
function kindOfTorchClass(c: string): string {
  if (c === 'Conv1D' || c === 'Linear') return 'Linear';
  if (c.endsWith('LMHeadModel') || c.endsWith('ForCausalLM')) return 'CausalLM';
  if (c.endsWith('Attention')) return 'Attention';
  if (c.endsWith('MLP')) return 'MLP';
  if (c.endsWith('Block') || c.endsWith('DecoderLayer')) return 'Block';
  if (/GELU/i.test(c)) return 'GELU';
  if (c.endsWith('Model')) return 'Model';
  return c;
}

function stripClasses(tree: ModuleTree): ModuleTree {
  for (const m of tree.modules.values()) delete (m as { className?: string }).className;
  return tree;
}

describe('module classes', () => {
  const dynamo = load('model.dynamo.onnx');
  const dynTree = buildModuleTree(dynamo);
  const truth = new Map([...dynTree.modules].map(([p, m]) => [p, m.className]));

  it('the dynamo export records a class for every module (the ground truth below)', () => {
    expect([...truth.values()].every((c) => typeof c === 'string' && c.length > 0)).toBe(true);
    const classes = moduleClasses(dynamo, dynTree);
    for (const [p, c] of classes) expect(c, p).toEqual({ name: truth.get(p), inferred: false });
  });

  it('infers, for the TorchScript export (no classes recorded), the kind of module PyTorch has', () => {
    const ts = load('model.onnx');
    const tree = buildModuleTree(ts);
    expect([...tree.modules.values()].every((m) => m.className === undefined)).toBe(true);
    const classes = moduleClasses(ts, tree);
    expect([...classes.keys()].sort()).toEqual([...truth.keys()].sort());
    for (const [p, c] of classes) {
      expect(c.inferred).toBe(true);
      expect([p, c.name]).toEqual([p, kindOfTorchClass(truth.get(p)!)]);
    }
  });

  it('infers the same kinds from the dynamo graph with its classes removed', () => {
    const d = load('model.dynamo.onnx');
    const classes = moduleClasses(d, stripClasses(buildModuleTree(d)));
    for (const [p, c] of classes) expect([p, c.name]).toEqual([p, kindOfTorchClass(truth.get(p)!)]);
  });

  it('infers a Llama-style layout (separate q/k/v, gated MLP with SiLU)', () => {
    const m = llamaLike();
    const classes = moduleClasses(m, buildModuleTree(m));
    const name = (p: string) => classes.get(p)?.name;
    expect(name('')).toBe('CausalLM');
    expect(name('model')).toBe('Model');
    expect(name('model.embed_tokens')).toBe('Embedding');
    expect(name('model.layers.0')).toBe('Block');
    expect(name('model.layers.0.self_attn')).toBe('Attention');
    expect(name('model.layers.0.self_attn.q_proj')).toBe('Linear');
    expect(name('model.layers.0.mlp')).toBe('MLP');
    expect(name('model.layers.0.mlp.act_fn')).toBe('SiLU');
    expect(name('model.layers.0.adapter.1')).toBe('ReLU');
    expect(name('lm_head')).toBe('Linear');
  });

  it('marks inferred classes with ~ in the text listing', () => {
    const ts = load('model.onnx');
    const tree = buildModuleTree(ts);
    const lines = formatModuleTree(tree, moduleClasses(ts, tree));
    expect(lines.find((l) => l.startsWith('transformer.h.0.mlp ')) ?? '').toMatch(/^transformer\.h\.0\.mlp\s+~MLP\s/);
  });

  it('nns modules --json: every module in the model\'s order, with a class, shapes and parameters', async () => {
    let out = '';
    const io: CliIO = { out: (t) => { out += t; }, err: () => undefined, cwd: process.cwd(), env: {} };
    expect(await main(['modules', MODEL_DIR, '--json'], io)).toBe(0);
    const j = JSON.parse(out) as ModuleTreeJSON;
    const tree = buildModuleTree(load('model.onnx'));
    expect(j.modules.map((m) => m.path)).toEqual([...tree.modules.keys()]);
    expect(j.inputs.map((v) => v.name)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(j.outputs[0]).toMatchObject({ name: 'logits', dtype: 'float32' });
    const mlp = j.modules.find((m) => m.path === 'transformer.h.1.mlp')!;
    expect(mlp).toMatchObject({ class: 'MLP', classInferred: true, parent: 'transformer.h.1', calls: 1 });
    expect(mlp.outputs[0]!.shape).toEqual(['batch', 'sequence', 128]);
    expect(mlp.params.map((p) => p.name)).toContain('transformer.h.1.mlp.c_fc.weight');
    for (const m of j.modules) expect(m.class, m.path).toMatch(/^[A-Za-z]\w*$/);
  });
});
