import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ModelProto } from '../../src/onnx/proto.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { buildModuleTree } from '../../src/model/modules.js';
import { inferBoundaryTypes, withExtraOutputs, type ProbeRunner, type ProbeTensor } from '../../src/model/shapes.js';
import { createOrtProbe } from '../../backends/probe.js';
import { formatModuleTree, formatSig } from '../../src/model/format.js';
import { parsePyStringList } from '../../src/model/scopes.js';
import type { ModuleInfo, ModuleTree } from '../../src/model/types.js';
import { D, FF, V, dynamoLike, exportedOnlyOutputs, llamaLike, realUnderscoreModule } from '../fixtures/modules/synthetic.js';

const MODEL_DIR = path.resolve(import.meta.dirname, '..', '..', 'models', 'gpt2-facts');
const FILES = { torchscript: 'model.onnx', dynamo: 'model.dynamo.onnx' } as const;
type ExportName = keyof typeof FILES;

const mod = (t: ModuleTree, p: string): ModuleInfo => {
  const m = t.modules.get(p);
  if (!m) throw new Error(`no module ${p}`);
  return m;
};
const outSigs = (m: ModuleInfo) => m.outputs.map((o) => formatSig(o.sig));

describe('gpt2-facts: TorchScript and dynamo exports', () => {
  const models = {} as Record<ExportName, ModelProto>;
  const trees = {} as Record<ExportName, ModuleTree>;
  beforeAll(async () => {
    for (const [name, file] of Object.entries(FILES) as [ExportName, string][]) {
      models[name] = decodeModel(new Uint8Array(fs.readFileSync(path.join(MODEL_DIR, 'onnx', file))));
      trees[name] = buildModuleTree(models[name]);
      await inferBoundaryTypes(models[name], trees[name], createOrtProbe());
    }
  });

  it('has the expected module paths, identical in both exports', () => {
    const ts = [...trees.torchscript.modules.keys()];
    expect([...trees.dynamo.modules.keys()]).toEqual(ts);
    const expected = ['', 'transformer', 'transformer.wte', 'transformer.wpe', 'transformer.ln_f', 'lm_head'];
    for (let k = 0; k < 4; k++) {
      const h = `transformer.h.${k}`;
      expected.push(h, ...['ln_1', 'attn', 'attn.c_attn', 'attn.c_proj', 'ln_2', 'mlp', 'mlp.c_fc', 'mlp.c_proj', 'mlp.act'].map((s) => `${h}.${s}`));
    }
    expect(new Set(ts)).toEqual(new Set(expected));
    expect(mod(trees.torchscript, 'transformer.h.2').parent).toBe('transformer');
    expect(mod(trees.torchscript, 'transformer.h.2.attn').children).toEqual(['transformer.h.2.attn.c_attn', 'transformer.h.2.attn.c_proj']);
  });

  it('gives every module the same number of inputs and outputs in both exports (except where the graph inputs differ)', () => {
    for (const [p, m] of trees.torchscript.modules) {
      const d = mod(trees.dynamo, p);
      expect([p, d.outputs.length], p).toEqual([p, m.outputs.length]);
      expect(m.calls).toBe(1);
      expect(d.calls).toBe(1);
      // The dynamo graph takes input_ids only; attention_mask and position_ids are computed inside `transformer`.
      if (p === '' || p === 'transformer') continue;
      expect([p, d.inputs.length], p).toEqual([p, m.inputs.length]);
    }
    expect(mod(trees.torchscript, 'transformer').inputs.map((v) => v.name)).toEqual(['input_ids', 'position_ids', 'attention_mask']);
    expect(mod(trees.dynamo, 'transformer').inputs.map((v) => v.name)).toEqual(['input_ids']);
  });

  it('gives the same output shapes in both exports; blocks are float32[batch, sequence, 128]', () => {
    for (const [p, m] of trees.torchscript.modules) {
      if (p === 'transformer.wpe') continue; // see below
      expect([p, outSigs(mod(trees.dynamo, p))]).toEqual([p, outSigs(m)]);
    }
    // Position embeddings: the TorchScript graph gathers the [batch, sequence] position_ids input;
    // the dynamo graph computes positions as arange(sequence).unsqueeze(0), as PyTorch does without position_ids.
    expect(outSigs(mod(trees.torchscript, 'transformer.wpe'))).toEqual(['float32[batch, sequence, 128]']);
    expect(outSigs(mod(trees.dynamo, 'transformer.wpe'))).toEqual(['float32[1, sequence, 128]']);
    for (const t of Object.values(trees)) {
      for (let k = 0; k < 4; k++) for (const s of ['', '.attn', '.mlp']) expect(outSigs(mod(t, `transformer.h.${k}${s}`))).toEqual(['float32[batch, sequence, 128]']);
      expect(outSigs(mod(t, 'transformer.h.0.mlp.c_fc'))).toEqual(['float32[batch, sequence, 512]']);
      expect(t.graphInputs[0]).toEqual({ name: 'input_ids', sig: { dtype: 'int64', shape: ['batch', 'sequence'] } });
      expect(t.graphOutputs[0].sig).toEqual({ dtype: 'float32', shape: ['batch', 'sequence', 874] });
    }
  });

  it('finds mlp boundaries, the lm_head output and the parameters', () => {
    for (const [name, t] of Object.entries(trees)) {
      const mlp = mod(t, 'transformer.h.0.mlp');
      expect([name, mlp.inputs.length, mlp.outputs.length]).toEqual([name, 1, 1]);
      expect(mlp.inputs[0].name).toBe(mod(t, 'transformer.h.0.ln_2').outputs[0].name);
      expect(mlp.outputs[0].name).toBe(mod(t, 'transformer.h.0.mlp.c_proj').outputs[0].name);
      expect(mod(t, 'lm_head').outputs.map((o) => o.name)).toEqual(['logits']);
      const cfc = mod(t, 'transformer.h.0.mlp.c_fc').params.find((p) => p.name === 'transformer.h.0.mlp.c_fc.weight');
      expect(cfc?.sig?.shape).toEqual([128, 512]);
      expect(t.params.size).toBe(53);
      expect(mod(t, 'transformer.h.0').params).toHaveLength(12);
      expect(t.params.get('lm_head.weight')?.sig?.shape).toEqual([874, 128]);
      expect(t.params.get('transformer.wte.weight')?.sig?.shape).toEqual([874, 128]);
    }
    // TorchScript stores lm_head.weight only as a transposed copy; dynamo ties wte to lm_head.weight.
    expect(trees.torchscript.params.get('lm_head.weight')).toMatchObject({ initializer: 'onnx::MatMul_1005', perm: [1, 0] });
    expect(trees.dynamo.params.get('lm_head.weight')).toMatchObject({ initializer: 'lm_head.weight' });
    expect(trees.dynamo.params.get('lm_head.weight')?.perm).toBeUndefined();
    expect(trees.dynamo.params.get('transformer.wte.weight')).toMatchObject({ initializer: 'lm_head.weight' });
  });

  it('formats both trees to the same lines apart from class names', () => {
    const strip = (lines: string[]) => lines.map((l) => l.split(/\s{2,}/).filter((_, i) => i !== 1).join(' | '));
    const ts = formatModuleTree(trees.torchscript);
    const dy = formatModuleTree(trees.dynamo);
    expect(ts.find((l) => l.startsWith('transformer.h.0.mlp ')))
      .toMatch(/^transformer\.h\.0\.mlp\s+-\s+float32\[batch, sequence, 128\]$/);
    expect(dy.find((l) => l.startsWith('transformer.h.0.mlp '))).toMatch(/^transformer\.h\.0\.mlp\s+GPT2MLP\s+float32\[batch, sequence, 128\]$/);
    const diff = strip(ts).map((l, i) => [l, strip(dy)[i]]).filter(([a, b]) => a !== b);
    expect(diff.map(([a]) => a.split(' | ')[0])).toEqual(['transformer.wpe']);
    expect(new Set(ts.map((l) => l.indexOf('float32')))).toHaveProperty('size', 1); // aligned
  });

  it('first outputs match PyTorch forward-hook outputs (reference.json save_outputs)', async () => {
    const ref = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'reference.json'), 'utf8')) as {
      cases: { id: string; input_ids: number[]; expect: Record<string, { shape: number[]; values: number[] }> }[];
    };
    const c = ref.cases.find((x) => x.id === 'save_outputs')!;
    const seq = c.input_ids.length;
    for (const [name, t] of Object.entries(trees) as [ExportName, ModuleTree][]) {
      const feeds: Record<string, ProbeTensor> = {};
      for (const gi of t.graphInputs) {
        const data = gi.name === 'input_ids' ? c.input_ids : gi.name === 'attention_mask' ? c.input_ids.map(() => 1) : c.input_ids.map((_, i) => i);
        feeds[gi.name] = { dtype: 'int64', dims: [1, seq], data: BigInt64Array.from(data.map(BigInt)) };
      }
      const fetch = Object.keys(c.expect).map((p) => mod(t, p).outputs[0].name);
      const res = await createOrtProbe()(withExtraOutputs(models[name], fetch), feeds, fetch);
      for (const [p, want] of Object.entries(c.expect)) {
        const got = res[mod(t, p).outputs[0].name];
        expect([name, p, [...got.dims]]).toEqual([name, p, want.shape]);
        const worst = want.values.reduce((w, v, i) => Math.max(w, Math.abs(v - Number(got.data[i]))), 0);
        expect([name, p, worst < 1e-4]).toEqual([name, p, true]);
      }
    }
  });
});

describe('synthetic Llama-like TorchScript export', () => {
  const model = llamaLike();
  const tree = buildModuleTree(model);

  it('recovers paths, parents and calls (Sequential repetition, called-twice module, _N op suffixes)', () => {
    const L = 'model.layers.0';
    expect([...tree.modules.keys()]).toEqual([
      '', 'model', 'model.embed_tokens',
      L, `${L}.input_layernorm`, `${L}.self_attn`, `${L}.self_attn.q_proj`, `${L}.self_attn.k_proj`, `${L}.self_attn.v_proj`, `${L}.self_attn.o_proj`,
      `${L}.post_attention_layernorm`, `${L}.mlp`, `${L}.mlp.gate_proj`, `${L}.mlp.act_fn`, `${L}.mlp.up_proj`, `${L}.mlp.down_proj`,
      `${L}.adapter`, `${L}.adapter.0`, `${L}.adapter.1`,
      ...[...tree.modules.keys()].filter((p) => p.startsWith('model.layers.1')),
      'model.norm', 'lm_head',
    ]);
    expect([...tree.modules.keys()].filter((p) => p.startsWith('model.layers.1'))).toHaveLength(16);
    expect(mod(tree, `${L}.adapter.0`).parent).toBe(`${L}.adapter`);
    expect(mod(tree, `${L}.adapter`).children).toEqual([`${L}.adapter.0`, `${L}.adapter.1`]);
    expect(mod(tree, `${L}.mlp.act_fn`).calls).toBe(2);
    expect(tree.modules.has(`${L}.mlp.act_fn_1`)).toBe(false);
    expect(mod(tree, `${L}.mlp`).calls).toBe(1);
    expect(mod(tree, `${L}.input_layernorm`).nodes).toHaveLength(2); // Mul and Mul_1
    expect(mod(tree, '').outputs.map((o) => o.name)).toEqual(['logits', 'present.0.key', 'present.1.key']);
  });

  it('uses the first call of a reused module for its boundaries', () => {
    const act = mod(tree, 'model.layers.0.mlp.act_fn');
    expect(act.inputs.map((v) => v.name)).toEqual(['/model/layers.0/mlp/gate_proj/MatMul_output_0']);
    expect(act.outputs.map((v) => v.name)).toEqual(['/model/layers.0/mlp/act_fn/Mul_output_0']);
    expect(act.nodes).toHaveLength(4); // both calls
  });

  it('orders outputs: the returned hidden state before the present key', () => {
    const attn = mod(tree, 'model.layers.0.self_attn');
    expect(attn.outputs.map((v) => v.name)).toEqual(['/model/layers.0/self_attn/o_proj/MatMul_output_0', 'present.0.key']);
    const layer = mod(tree, 'model.layers.0');
    expect(layer.outputs.map((v) => v.name)).toEqual(['/model/layers.0/Add_1_output_0', 'present.0.key']);
    const t2 = buildModuleTree(exportedOnlyOutputs());
    expect(mod(t2, 'layer').outputs.map((v) => v.name)).toEqual(['hidden', 'present.key']);
  });

  it('keeps shape bookkeeping and constants out of inputs; ops outside modules stay in the root', () => {
    const attn = mod(tree, 'model.layers.0.self_attn');
    expect(attn.inputs.map((v) => v.name)).toEqual(['/model/layers.0/input_layernorm/Mul_1_output_0']);
    expect(mod(tree, 'model.layers.0.input_layernorm').inputs.map((v) => v.name)).toEqual(['/model/embed_tokens/Gather_output_0']);
    expect(mod(tree, 'lm_head').outputs.map((v) => v.name)).toEqual(['/lm_head/MatMul_output_0']);
    const rootOnly = mod(tree, '').nodes.filter((i) => ![...tree.modules.values()].some((m) => m.path !== '' && m.nodes.includes(i)));
    expect(rootOnly.map((i) => model.graph!.node![i].name)).toEqual(['Constant_7', '/Mul']);
  });

  it('names parameters, transposed exporter copies included', () => {
    expect(tree.params.get('model.layers.0.self_attn.q_proj.weight')).toEqual({ name: 'model.layers.0.self_attn.q_proj.weight', initializer: 'onnx::MatMul_100', perm: [1, 0] });
    expect(tree.params.get('model.layers.1.mlp.down_proj.weight')).toMatchObject({ initializer: 'onnx::MatMul_212', perm: [1, 0] });
    expect(tree.params.get('lm_head.weight')).toMatchObject({ initializer: 'onnx::MatMul_999', perm: [1, 0] });
    expect(tree.params.get('model.layers.0.adapter.0.bias')).toEqual({ name: 'model.layers.0.adapter.0.bias', initializer: 'model.layers.0.adapter.0.bias' });
    expect(mod(tree, 'model.layers.0.mlp.act_fn').params).toEqual([]);
    expect(mod(tree, 'model.layers.0').params.map((p) => p.name).sort()).toHaveLength(11);
  });

  it('infers symbolic boundary types by probing (no value_info), with a swappable runner', async () => {
    const ort = createOrtProbe();
    let runs = 0;
    const counting: ProbeRunner = (m, f, x) => { runs++; return ort(m, f, x); };
    await inferBoundaryTypes(model, tree, counting);
    expect(runs).toBe(2);
    expect(tree.graphInputs[0].sig).toEqual({ dtype: 'int64', shape: ['batch', 'sequence'] });
    expect(outSigs(mod(tree, 'model.layers.1'))).toEqual([`float32[batch, sequence, ${D}]`, `float32[batch, sequence, ${D}]`]);
    expect(outSigs(mod(tree, 'model.layers.0.mlp.up_proj'))).toEqual([`float32[batch, sequence, ${FF}]`]);
    expect(outSigs(mod(tree, ''))[0]).toBe(`float32[batch, sequence, ${V}]`);
    expect(tree.params.get('lm_head.weight')?.sig).toEqual({ dtype: 'float32', shape: [V, D] });
    const lines = formatModuleTree(tree);
    expect(lines[0]).toMatch(/^\(root\)\s+-\s+float32\[batch, sequence, 11\], float32\[batch, sequence, 8\], float32/);
  });
});

describe('other exporter quirks', () => {
  it('dynamo metadata: classes, a module called twice, nodes without metadata, tied weights', async () => {
    const model = dynamoLike();
    const tree = buildModuleTree(model);
    expect([...tree.modules.keys()]).toEqual(['', 'embed', 'block', 'block.fc', 'block.act', 'head']);
    expect(mod(tree, '').className).toBe('Net');
    expect(mod(tree, 'block.act')).toMatchObject({ className: 'ReLU', calls: 2, inputs: [{ name: 'linear_id' }], outputs: [{ name: 'relu' }] });
    expect(mod(tree, 'block').calls).toBe(1);
    // node_Identity_9 has no metadata: placed in the deepest module shared by its neighbours (block).
    const names = (m: ModuleInfo) => m.nodes.map((i) => model.graph!.node![i].name);
    expect(names(mod(tree, 'block'))).toContain('node_Identity_9');
    expect(names(mod(tree, 'block.fc'))).toEqual(['node_linear']);
    expect(names(mod(tree, 'block.act'))).toEqual(['node_relu', 'node_relu_1']);
    expect(names(mod(tree, ''))).toContain('node_Shape_0');
    expect(mod(tree, 'block').inputs.map((v) => v.name)).toEqual(['embedding']);
    expect(mod(tree, 'head').outputs.map((v) => v.name)).toEqual(['logits']);
    expect(tree.params.get('embed.weight')).toEqual({ name: 'embed.weight', initializer: 'head.weight' });
    expect(tree.params.get('head.weight')).toEqual({ name: 'head.weight', initializer: 'head.weight' });
    await inferBoundaryTypes(model, tree, createOrtProbe());
    expect(tree.graphInputs[0].sig?.shape).toEqual(['batch', 'sequence']);
    expect(outSigs(mod(tree, 'block'))).toEqual([`float32[batch, sequence, ${D}]`]);
  });

  it('a `_N` segment with its own weights is a real module, not a second call', () => {
    const tree = buildModuleTree(realUnderscoreModule());
    expect([...tree.modules.keys()]).toEqual(['', 'block', 'block.fc', 'block.fc_1']);
    expect(mod(tree, 'block.fc').calls).toBe(1);
  });

  it('parses Python list reprs', () => {
    expect(parsePyStringList(`['', 'a.b', "it's", 'x\\'y']`)).toEqual(['', 'a.b', "it's", "x'y"]);
    expect(parsePyStringList('not a list')).toBeNull();
  });
});
