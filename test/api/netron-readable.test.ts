/**
 * Rewritten graphs a person can read in Netron (issue 15): `nns compile` of the examples.
 *
 * - Drawn inserted nodes (main-graph nodes the original does not have; a function call counts
 *   once): examples/eiffel.nns ≤ 8, examples/patching.nns ≤ 150, in the default (functions)
 *   form and, for eiffel, in the --flat form too.
 * - Every inserted node — in the main graph and inside the functions — is under a module
 *   scope (`/transformer/h.3/mlp/nns.set`, never `/nns.*`), carries its source
 *   (`examples/eiffel.nns:7:3` as doc_string) and onnsight metadata, and every value it makes
 *   has a shape (value_info, function value_info or graph output).
 * - The model is stamped (producer onnsight, doc string, metadata_props), host inputs and
 *   saves have doc strings, and no value keeps a placeholder's name.
 * - onnxruntime runs the function form and the --flat form with bitwise identical outputs,
 *   and the numbers match PyTorch (models/gpt2-facts/reference.json): zero_ablate_mlp layer 3
 *   for eiffel, patch_block_outputs for patching, logit_lens for logit-lens.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';
import type { ModelProto, NodeProto, ValueInfoProto } from '../../src/onnx/proto.js';
import { ROOT, expectClose, refCase } from '../helpers/reference.js';
import { evalDim } from '../../src/onnx/shapes.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-netron-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** `nns compile examples/NAME.nns` (default or --flat) into the temp folder; the decoded first model and stdout. */
async function compile(name: string, flat: boolean): Promise<{ file: string; proto: ModelProto; out: string }> {
  const file = path.join(tmp, `${name}${flat ? '-flat' : ''}.onnx`);
  let out = '';
  let err = '';
  const code = await main(['compile', `examples/${name}.nns`, '-o', file, ...(flat ? ['--flat'] : [])], {
    out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`), cwd: ROOT, env: process.env,
  });
  expect(code, err).toBe(0);
  return { file, proto: decodeModel(fs.readFileSync(file)), out };
}

const meta = (n: { metadata_props?: { key?: string; value?: string }[] | null }): Map<string, string> => new Map((n.metadata_props ?? []).map((e) => [e.key!, e.value ?? '']));
const inserted = (p: ModelProto): NodeProto[] => (p.graph?.node ?? []).filter((n) => meta(n).has('onnsight.op'));

/** Runs a compiled model on `rows` of token ids; every output. */
async function run(file: string, rows: number[][], proto?: ModelProto): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(file);
  const B = rows.length;
  const n = rows[0]!.length;
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of s.inputNames) {
    if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [B, n]);
    else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', new BigInt64Array(B * n).fill(1n), [B, n]);
    else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from({ length: B * n }, (_, i) => BigInt(i % n)), [B, n]);
    else { // a host value: a fixed pattern of its shape
      const dims = (proto?.graph?.input ?? []).find((i) => i.name === name)!.type!.tensor_type!.shape!.dim!.map((d) => Number(d.dim_value));
      feeds[name] = new ort.Tensor('float32', Float32Array.from({ length: dims.reduce((p, d) => p * d, 1) }, (_, i) => Math.sin(i)), dims);
    }
  }
  const out = await s.run(feeds);
  await s.release();
  return out;
}

/** Every inserted node in the main graph or a function body has a scope, a source and typed outputs. */
function checkReadable(p: ModelProto, script: string): void {
  const g = p.graph!;
  const typed = (vis: readonly ValueInfoProto[]): Set<string> => new Set(vis.filter((v) => v.type?.tensor_type?.shape).map((v) => v.name!));
  const mainTyped = typed([...(g.value_info ?? []), ...(g.output ?? [])]);
  const source = new RegExp(`^examples/${script}\\.nns:\\d+:\\d+`);
  const bodies = new Map((p.functions ?? []).map((f) => [f.name!, f]));
  const check = (n: NodeProto, have: Set<string>, where: string): void => {
    const md = meta(n);
    expect(n.name, `${where}: a scope`).toMatch(/^\/[^/]/);
    expect(n.name, `${where}: not at the top level`).not.toMatch(/^\/nns\./);
    expect(md.get('onnsight.module'), `${n.name}: onnsight.module`).toBeTruthy();
    expect(n.doc_string ?? '', `${n.name}: doc_string`).toMatch(source);
    for (const o of n.output ?? []) if (o) expect(have.has(o), `${n.name}: value_info of ${o}`).toBe(true);
    for (const x of [...(n.input ?? []), ...(n.output ?? [])]) expect(x).not.toMatch(/CallModule/);
  };
  for (const n of inserted(p)) {
    check(n, mainTyped, 'main graph');
    const fn = n.domain === 'ai.onnsight' ? bodies.get(n.op_type!) : undefined;
    if (fn) {
      expect(fn.doc_string).toBe(n.doc_string);
      const inner = new Set([...typed(fn.value_info ?? []), ...mainTyped]);
      for (const m of fn.node ?? []) check(m, inner, `${fn.name}`);
    }
  }
}

describe('nns compile: graphs for Netron', () => {
  it('keeps every field of the model it does not touch (model, graph and node doc strings, metadata, value_info, attributes)', async () => {
    const dir = path.join(tmp, 'marked');
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(ROOT, 'models', 'gpt2-facts', f), path.join(dir, f));
    const src = decodeModel(fs.readFileSync(path.join(ROOT, 'models', 'gpt2-facts', 'onnx', 'model.onnx')));
    src.doc_string = 'the exporter\'s own description';
    src.metadata_props = [{ key: 'exporter.note', value: 'kept' }];
    src.domain = 'org.example';
    src.model_version = 7;
    src.graph!.doc_string = 'graph description';
    src.graph!.value_info = [...(src.graph!.value_info ?? []), { name: src.graph!.node![5]!.output![0]!, doc_string: 'a typed value', type: { tensor_type: { elem_type: 1 } } }];
    src.graph!.node!.forEach((n, i) => { n.doc_string = `node ${i}`; n.metadata_props = [{ key: 'exporter.index', value: String(i) }]; });
    fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(src));
    const file = path.join(tmp, 'marked.onnx');
    const code = await main(['compile', 'examples/eiffel.nns', '--model', path.join(dir, 'model.onnx'), '-o', file], { out: () => {}, err: () => {}, cwd: ROOT, env: process.env });
    expect(code).toBe(0);
    const out = decodeModel(fs.readFileSync(file));
    expect(out.doc_string).toMatch(/^Rewritten by onnsight[^]*\n\nthe exporter's own description$/);
    expect(out.metadata_props?.[0]).toEqual({ key: 'exporter.note', value: 'kept' });
    expect([out.domain, Number(out.model_version), out.ir_version, out.graph!.doc_string]).toEqual(['org.example', 7, src.ir_version, 'graph description']);
    expect(out.opset_import!.slice(0, src.opset_import!.length)).toEqual(src.opset_import); // ai.onnsight appended
    expect(out.graph!.value_info!.find((v) => v.doc_string === 'a typed value')).toBeTruthy();
    const byName = new Map(out.graph!.node!.map((n) => [n.name, n]));
    let kept = 0;
    for (const n of src.graph!.node!) {
      const m = byName.get(n.name);
      if (!m) continue; // pruned (the zeroed MLP's own computation)
      kept++;
      // (a large tensor attribute may move to the external weights file, as on any load: compared without tensors)
      const attrs = (x: NodeProto): unknown => (x.attribute ?? []).map((a) => ({ ...a, t: a.t ? a.t.dims : undefined }));
      expect([m.op_type, m.domain ?? '', m.doc_string, m.metadata_props, attrs(m), m.output]).toEqual([n.op_type, n.domain ?? '', n.doc_string, n.metadata_props, attrs(n), n.output]);
    }
    expect(kept).toBeGreaterThan(src.graph!.node!.length * 0.8);
  }, 120_000);

  it('eiffel: ≤ 8 drawn inserted nodes (functions and --flat), scopes, sources, shapes, stamp, same numbers as --flat and PyTorch', async () => {
    const fns = await compile('eiffel', false);
    const flat = await compile('eiffel', true);
    expect(inserted(fns.proto).length).toBeLessThanOrEqual(8);
    expect(inserted(flat.proto).length).toBeLessThanOrEqual(8);
    expect(inserted(fns.proto).every((n) => n.domain === 'ai.onnsight')).toBe(true);
    expect((fns.proto.functions ?? []).map((f) => f.name)).toContain('nns_set');
    for (const f of fns.proto.functions ?? []) expect(f.name).toMatch(/^nns_[a-z_0-9]+$/);
    const set = inserted(fns.proto).find((n) => n.op_type === 'nns_set')!;
    expect(set.name).toBe('/transformer/h.3/mlp/nns.set');
    expect(set.doc_string).toMatch(/^examples\/eiffel\.nns:7:3: model\.transformer\.h\[3\]\.mlp\.output = 0$/);
    expect(meta(set).get('onnsight.source')).toBe('examples/eiffel.nns:7:3');
    checkReadable(fns.proto, 'eiffel');
    checkReadable(flat.proto, 'eiffel');
    // The stamp.
    expect(fns.proto.producer_name).toBe('onnsight');
    expect(fns.proto.doc_string).toMatch(/^Rewritten by onnsight/);
    const m = meta(fns.proto);
    expect(m.get('onnsight.script')).toBe('examples/eiffel.nns');
    expect(m.get('onnsight.script_sha256')).toMatch(/^[0-9a-f]{64}$/);
    expect(m.get('onnsight.base_producer')).toMatch(/pytorch/);
    expect(m.get('onnsight.inserted_nodes')).toBe(String(inserted(fns.proto).length));
    expect((fns.proto.graph!.output ?? []).find((o) => o.name === 'probs')?.doc_string).toMatch(/^save 'probs' at examples\/eiffel\.nns:9:3/);
    // What nns compile says.
    expect(fns.out).toMatch(/examples\/eiffel\.nns:7:3 +set +transformer\.h\.3\.mlp +\d+ nodes? +\/transformer\/h\.3\/mlp\/nns\.set/);
    expect(fns.out).toMatch(/in Netron: /);
    // The numbers: functions = flat bit for bit; the ablated logits = PyTorch.
    const ids = refCase('zero_ablate_mlp').input_ids as number[];
    const [a, b] = [await run(fns.file, [ids]), await run(flat.file, [ids])];
    expect(Object.keys(a).sort()).toEqual(Object.keys(b).sort());
    for (const k of Object.keys(a)) expect(Array.from(a[k]!.data as Float32Array), k).toEqual(Array.from(b[k]!.data as Float32Array));
    const ablated3 = (refCase('zero_ablate_mlp').expect as { layer: number; last_logits: number[] }[]).find((k) => k.layer === 3)!.last_logits;
    expectClose(a.logits_1!.data as Float32Array, ablated3, 1e-4, 'logits');
  }, 120_000);

  it('patching: ≤ 150 drawn inserted nodes; every statement typed and scoped; functions = --flat = PyTorch', async () => {
    const fns = await compile('patching', false);
    const flat = await compile('patching', true);
    expect(inserted(fns.proto).length).toBeLessThanOrEqual(150);
    expect(inserted(flat.proto).length, "flat: the grid lowered once per statement, not per row").toBeLessThanOrEqual(150);
    expect(fns.proto.graph!.node!.filter((n) => n.op_type?.startsWith("nns_set")).length, "one set call per layer").toBe(4);
    checkReadable(fns.proto, 'patching');
    checkReadable(flat.proto, 'patching');
    const c = refCase('patch_block_outputs');
    const rows = [c.source_ids as number[], ...Array.from({ length: 32 }, () => c.input_ids as number[])];
    const [a, b] = [await run(fns.file, rows), await run(flat.file, rows)];
    for (const k of Object.keys(a)) expect(Array.from(a[k]!.data as Float32Array), k).toEqual(Array.from(b[k]!.data as Float32Array));
    const want = c.expect as number[][][];
    for (let l = 0; l < 4; l++) {
      for (let p = 0; p < 8; p++) {
        expectClose(a[`paris.${l}.${p}`]!.data as Float32Array, [want[l]![p]![0]!], 1e-5, `paris.${l}.${p}`);
        expectClose(a[`rome.${l}.${p}`]!.data as Float32Array, [want[l]![p]![1]!], 1e-5, `rome.${l}.${p}`);
      }
    }
  }, 180_000);

  it('logit-lens: clones under the block they decode; functions = --flat = PyTorch', async () => {
    const fns = await compile('logit-lens', false);
    const flat = await compile('logit-lens', true);
    checkReadable(fns.proto, 'logit-lens');
    checkReadable(flat.proto, 'logit-lens');
    for (let l = 0; l < 4; l++) expect(inserted(flat.proto).some((n) => n.name!.startsWith(`/transformer/h.${l}/nns.call/transformer/ln_f/`)), `h.${l}`).toBe(true);
    const c = refCase('logit_lens');
    const ids = c.input_ids as number[];
    const [a, b] = [await run(fns.file, [ids]), await run(flat.file, [ids])];
    for (const k of Object.keys(a)) expect(Array.from(a[k]!.data as Float32Array), k).toEqual(Array.from(b[k]!.data as Float32Array));
    for (const e of c.expect as { layer: number; top1: number; p_top1: number }[]) {
      const probs = a[`lens.${e.layer}`]!.data as Float32Array;
      let top = 0;
      for (let i = 1; i < probs.length; i++) if (probs[i]! > probs[top]!) top = i;
      expect(top).toBe(e.top1);
      expectClose([probs[top]!], [e.p_top1], 1e-5, `lens.${e.layer}`);
    }
  }, 120_000);

  it('steering, ablation, attribution: compile, run with functions = --flat; host inputs explained', async () => {
    const ids = refCase('clean_logits').input_ids as number[];
    for (const name of ['steering', 'ablation', 'attribution']) {
      const fns = await compile(name, false);
      const flat = await compile(name, true);
      const rows = Array.from({ length: Number(fns.proto.metadata_props?.find((e) => e.key === 'onnsight.rows')?.value ?? 1) }, () => ids);
      const [a, b] = [await run(fns.file, rows, fns.proto), await run(flat.file, rows, flat.proto)];
      for (const k of Object.keys(a)) expect(Array.from(a[k]!.data as Float32Array), `${name} ${k}`).toEqual(Array.from(b[k]!.data as Float32Array));
      for (const n of inserted(fns.proto)) expect(n.name, name).not.toMatch(/^\/nns\./);
      if (name === 'attribution') {
        // Every statement one call, nothing left flat: 4 patch sets and 1 save lowered once for their 32 invokes,
        // 4 attr saves, 2 metric statements, the saliency, and the one backward sweep its 5 grad calls share,
        // as one function per block it goes back through (lm_head, ln_f, h.3 .. h.0).
        expect(inserted(fns.proto).length, 'attribution: drawn inserted nodes').toBeLessThanOrEqual(20);
        expect(inserted(fns.proto).every((n) => n.domain === 'ai.onnsight')).toBe(true);
        const sweep = inserted(fns.proto).filter((n) => n.op_type?.startsWith('nns_backward'));
        expect(sweep.map((n) => n.name).sort()).toEqual(['/lm_head/nns.backward', '/transformer/h.0/nns.backward', '/transformer/h.1/nns.backward', '/transformer/h.2/nns.backward', '/transformer/h.3/nns.backward', '/transformer/ln_f/nns.backward']);
        for (const n of sweep) expect(n.doc_string).toMatch(/^examples\/attribution\.nns:17:\d+: backward sweep of one grad target, shared by 5 grad calls/);
        // attr.2 reads block 2's output and the gradient block 2's part of the sweep hands out
        const attr2 = inserted(fns.proto).find((n) => n.name === '/transformer/h.2/nns.save')!;
        const h2back = sweep.find((n) => n.name === '/transformer/h.2/nns.backward')!;
        expect(attr2.input!.some((x) => h2back.output!.includes(x))).toBe(true);
      }
      checkReadable(fns.proto, name);
      checkReadable(flat.proto, name);
    }
    const s2 = decodeModel(fs.readFileSync(path.join(tmp, 'steering.2.onnx')));
    const s2flat = decodeModel(fs.readFileSync(path.join(tmp, 'steering-flat.2.onnx')));
    const [a, b] = [await run(path.join(tmp, 'steering.2.onnx'), [ids], s2), await run(path.join(tmp, 'steering-flat.2.onnx'), [ids], s2flat)];
    for (const k of Object.keys(a)) expect(Array.from(a[k]!.data as Float32Array), `steering.2 ${k}`).toEqual(Array.from(b[k]!.data as Float32Array));
    checkReadable(s2, 'steering');
    checkReadable(s2flat, 'steering');
    const second = decodeModel(fs.readFileSync(path.join(tmp, 'steering.2.onnx')));
    const host = second.graph!.input!.find((i) => i.name === 'host.steer')!;
    expect(host.doc_string).toMatch(/the value saved as 'steer' by trace 1 at examples\/steering\.nns:\d+:\d+/);
  }, 240_000);
  it('every example: the shape written for each inserted value is the shape onnxruntime computes', async () => {
    const ids = refCase('clean_logits').input_ids as number[];
    let checked = 0;
    for (const name of ['eiffel', 'patching', 'logit-lens', 'steering', 'ablation', 'attribution']) {
      const file = path.join(tmp, `${name}-flat.onnx`);
      const proto = fs.existsSync(file) ? decodeModel(fs.readFileSync(file)) : (await compile(name, true)).proto;
      const g = proto.graph!;
      const outputs = new Set((g.output ?? []).map((o) => o.name!));
      const info = new Map((g.value_info ?? []).map((v) => [v.name!, v]));
      const names = inserted(proto).flatMap((n) => n.output ?? []).filter((o) => o && !outputs.has(o));
      for (const o of names) expect(info.get(o)?.type?.tensor_type?.shape, `${name}: ${o} has a shape`).toBeTruthy();
      // Every inserted value as an output (the probe sits next to the weights file it links).
      const probe = path.join(tmp, `${name}-probe.onnx`);
      fs.writeFileSync(probe, encodeModel({ ...proto, graph: { ...g, output: [...(g.output ?? []), ...names.map((o) => info.get(o)!)] } }));
      const rows = Array.from({ length: Number(proto.metadata_props?.find((e) => e.key === 'onnsight.rows')?.value ?? 1) }, () => ids);
      const got = await run(probe, rows, proto);
      // Dims are in the model's symbols (batch_size, sequence_length): bound to the batch fed.
      const bind: Record<string, number> = {};
      for (const i of g.input ?? []) {
        const fed = i.name === 'input_ids' || i.name === 'attention_mask' || i.name === 'position_ids' ? [rows.length, rows[0]!.length] : undefined;
        (i.type?.tensor_type?.shape?.dim ?? []).forEach((d, k) => { if (d.dim_param && fed?.[k] !== undefined) bind[d.dim_param] = fed[k]!; });
      }
      for (const o of names) {
        const dims = (info.get(o)!.type!.tensor_type!.shape!.dim ?? []).map((d) => (d.dim_value !== undefined && d.dim_value !== null ? Number(d.dim_value) : d.dim_param ? evalDim(d.dim_param, bind) : null));
        expect(dims, `${name}: ${o}`).toEqual([...got[o]!.dims]);
        checked++;
      }
    }
    // Not vacuous: 1848 inserted values over the six examples since the gradient graphs build run-time
    // shapes from the model input's shape (4fa9108: fewer Shape nodes; 2000+ before).
    expect(checked).toBeGreaterThan(1500);
  }, 240_000);
});
