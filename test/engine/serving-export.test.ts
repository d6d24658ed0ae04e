/**
 * `nns export-serving` (issue 13.5): the Triton model repository of the fast path's models.
 * - every config.pbtxt parses, strictly, as Triton's `ModelConfig` (protobuf text format
 *   against the schema in test/fixtures/triton/, which follows Triton's model_config.proto;
 *   TRITON_MODEL_CONFIG_PROTO=/path/to/model_config.proto also checks that schema against
 *   Triton's own), and says what the graph in `1/model.onnx` has: input and output names,
 *   data types, dims (`-1` where the graph's dim is symbolic);
 * - every `1/model.onnx` opens in onnxruntime from its own folder (what Triton's ONNX
 *   Runtime backend does), the weights are one file on disk (one inode, hard-linked), and
 *   the instrumented model and the unmodified model, fed as the fast path feeds them, give
 *   the PyTorch reference logits (reference.json `clean_logits`);
 * - errors: into the model's own folder, a model folder already in the repository, a missing
 *   parent, a full disk midway — each one clear line, and nothing left behind.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import protobuf from 'protobufjs';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { decodeModel } from '../../src/onnx/serde.js';
import { dtypeOf } from '../../src/model/shapes.js';
import { TRITON_DATATYPE } from '../../src/fast/triton.js';
import { LanguageModel } from '../../src/index.js';
import { parseTextProto, TextFormatError } from '../helpers/textproto.js';
import { MODEL_DIR, ROOT, refCase, expectClose } from '../helpers/reference.js';

const SCHEMA = path.join(ROOT, 'test', 'fixtures', 'triton', 'model_config.subset.proto');
const ModelConfig = protobuf.parse(fs.readFileSync(SCHEMA, 'utf8'), { keepCase: true }).root.lookupType('inference.ModelConfig');
ModelConfig.root.resolveAll();

let tmp: string;
let repo: string;
let printed = '';
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-serving-'));
  repo = path.join(tmp, 'repo');
  const r = await cli(['export-serving', MODEL_DIR, '-o', repo, '--plain', '--progress', 'none']);
  expect(r.err).toBe('');
  expect(r.code).toBe(0);
  printed = r.out;
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let o = '';
  let e = '';
  const io: CliIO = { out: (t) => void (o += `${t}\n`), err: (t) => void (e += `${t}\n`), cwd: ROOT, env: process.env };
  return { code: await main(args, io), out: o, err: e };
}

function modelFolders(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => fs.statSync(path.join(dir, n)).isDirectory()).sort();
}

/** Every file and folder under `dir` with size and inode (a snapshot to compare). */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  (function walk(d: string): void {
    for (const n of fs.readdirSync(d).sort()) {
      const p = path.join(d, n);
      const st = fs.statSync(p);
      out.push(`${path.relative(dir, p)} ${st.isDirectory() ? 'dir' : `${st.size} ${st.mtimeMs}`}`);
      if (st.isDirectory()) walk(p);
    }
  })(dir);
  return out;
}

describe('the repository', () => {
  it('has the instrumented model, the closed modules and the plain model, each with config.pbtxt and 1/model.onnx', () => {
    const names = modelFolders(repo);
    expect(names).toContain('gpt2-facts.ports');
    expect(names).toContain('gpt2-facts');
    expect(names).toContain('gpt2-facts.module.lm_head');
    expect(names).toContain('gpt2-facts.module.transformer.ln_f');
    expect(names).toContain('gpt2-facts.module.transformer.h.0.mlp');
    // the attention blocks read the mask computed outside: not closed, not served
    expect(names).not.toContain('gpt2-facts.module.transformer.h.0.attn.c_attn');
    for (const n of names) {
      expect(fs.readdirSync(path.join(repo, n)).sort(), n).toEqual(['1', 'config.pbtxt']);
      expect(fs.readdirSync(path.join(repo, n, '1')).some((f) => f === 'model.onnx'), n).toBe(true);
    }
    expect(printed).toMatch(/^wrote .*repo: \d+ models for Triton/);
    expect(fs.readdirSync(tmp).filter((n) => n.startsWith('.'))).toEqual([]); // no staging folder left
  });

  it('every config.pbtxt parses as Triton ModelConfig and matches its graph (names, data types, dims)', () => {
    let checked = 0;
    for (const n of modelFolders(repo)) {
      const text = fs.readFileSync(path.join(repo, n, 'config.pbtxt'), 'utf8');
      const cfg = parseTextProto(text, ModelConfig) as { name: string; platform: string; max_batch_size: number; input?: { name: string; data_type: string; dims: bigint[] }[]; output?: { name: string; data_type: string; dims: bigint[] }[]; parameters?: Record<string, { string_value: string }> };
      expect(cfg.name, n).toBe(n);
      expect(cfg.platform).toBe('onnxruntime_onnx');
      expect(cfg.max_batch_size).toBe(0);
      const g = decodeModel(fs.readFileSync(path.join(repo, n, '1', 'model.onnx'))).graph!;
      const inits = new Set((g.initializer ?? []).map((t) => t.name));
      const want = (vs: typeof g.input) => (vs ?? []).filter((v) => !inits.has(v.name)).map((v) => ({
        name: v.name,
        data_type: TRITON_DATATYPE[dtypeOf(v.type!.tensor_type!.elem_type)!],
        dims: (v.type!.tensor_type!.shape?.dim ?? []).map((d) => (d.dim_param === undefined && d.dim_value !== undefined ? BigInt(Number(d.dim_value)) : -1n)),
      }));
      // module models: any size in every dim
      const wantIn = want(g.input).map((t) => (cfg.parameters?.['onnsight.kind']?.string_value === 'module' ? { ...t, dims: t.dims.map(() => -1n) } : t));
      const wantOut = want(g.output).map((t) => (cfg.parameters?.['onnsight.kind']?.string_value === 'module' ? { ...t, dims: t.dims.map(() => -1n) } : t));
      expect(cfg.input, `${n} inputs`).toEqual(wantIn);
      expect(cfg.output, `${n} outputs`).toEqual(wantOut);
      expect(wantIn.every((t) => t.dims.length > 0)).toBe(true);
      checked++;
    }
    expect(checked).toBeGreaterThan(10);
    // the instrumented model: token ids, port feeds, every port value and the logits
    const ports = parseTextProto(fs.readFileSync(path.join(repo, 'gpt2-facts.ports', 'config.pbtxt'), 'utf8'), ModelConfig) as { input: { name: string; data_type: string; dims: bigint[] }[]; output: { name: string }[] };
    expect(ports.input[0]).toEqual({ name: 'input_ids', data_type: 'TYPE_INT64', dims: [-1n, -1n] });
    expect(ports.input.filter((i) => /^port\.\d+\.(keep|add)$/.test(i.name)).length).toBeGreaterThanOrEqual(20);
    // The tail (lm_head) is left out of the instrumented model (src/fast/tail.ts): the config names it and the output feeding it.
    expect(ports.output.map((o) => o.name)).not.toContain('logits');
    const pp = (parseTextProto(fs.readFileSync(path.join(repo, 'gpt2-facts.ports', 'config.pbtxt'), 'utf8'), ModelConfig) as { parameters?: Record<string, { string_value?: string }> }).parameters!;
    expect(pp['onnsight.tail_module']?.string_value).toBe('lm_head');
    expect(ports.output.map((o) => o.name)).toContain(pp['onnsight.tail_input']?.string_value);
  });

  it('the weights are one file on disk: every version folder holds a hard link to one inode', () => {
    const inodes = new Set<number>();
    let links = 0;
    for (const n of modelFolders(repo)) {
      for (const f of fs.readdirSync(path.join(repo, n, '1'))) {
        if (f === 'model.onnx') continue;
        expect(f).toMatch(/^weights-[0-9a-f]{16}\.data$/);
        inodes.add(fs.statSync(path.join(repo, n, '1', f)).ino);
        links++;
      }
    }
    expect(inodes.size).toBe(1);
    expect(links).toBeGreaterThan(10);
    expect(printed).toMatch(new RegExp(`hard-linked into ${links} version folders`));
  });

  it('every model opens in onnxruntime from its own folder; the instrumented and the plain model give the reference logits', async () => {
    const c = refCase('clean_logits');
    const ids = c.input_ids as number[];
    const feedsOf = (s: ort.InferenceSession): Record<string, ort.Tensor> => {
      const f: Record<string, ort.Tensor> = {};
      for (const name of s.inputNames) {
        if (name === 'input_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]);
        else if (name === 'attention_mask') f[name] = new ort.Tensor('int64', BigInt64Array.from(ids.map(() => 1n)), [1, ids.length]);
        else if (name === 'position_ids') f[name] = new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, ids.length]);
        else if (name.endsWith('.keep')) f[name] = new ort.Tensor('float32', Float32Array.of(1), [1, 1, 1]);
        else if (name.endsWith('.add')) f[name] = new ort.Tensor('float32', Float32Array.of(0), [1, 1, 1]);
        else throw new Error(`unexpected input ${name}`);
      }
      return f;
    };
    // The instrumented model stops before the tail: its named output fed to the lm_head module model gives the logits.
    const params = (parseTextProto(fs.readFileSync(path.join(repo, 'gpt2-facts.ports', 'config.pbtxt'), 'utf8'), ModelConfig) as { parameters?: Record<string, { string_value?: string }> }).parameters!;
    const tailIn = params['onnsight.tail_input']!.string_value!;
    const head = await ort.InferenceSession.create(path.join(repo, 'gpt2-facts.module.lm_head', '1', 'model.onnx'));
    for (const n of modelFolders(repo)) {
      const s = await ort.InferenceSession.create(path.join(repo, n, '1', 'model.onnx'));
      if (n === 'gpt2-facts.ports' || n === 'gpt2-facts') {
        const logits = n === 'gpt2-facts'
          ? (await s.run(feedsOf(s), ['logits'])).logits!
          : (await head.run({ [head.inputNames[0]!]: (await s.run(feedsOf(s), [tailIn]))[tailIn]! }, ['logits'])).logits!;
        const v = logits.data as Float32Array;
        const last = v.subarray((ids.length - 1) * logits.dims[2]!, ids.length * logits.dims[2]!);
        expectClose(last, (c.expect as { last_logits: number[] }).last_logits, 1e-4, n);
      }
      await s.release();
    }
    await head.release();
  }, 120_000);
});

describe('the text-format parser is strict', () => {
  const ok = 'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ -1, 3 ] } ]\n';
  it('accepts a valid config (list and repeated forms, comments, maps, oneof)', () => {
    const cfg = parseTextProto(`# comment\n${ok}output { name: 'y', data_type: TYPE_INT64, dims: [1] }\noutput: < name: "z" data_type: 9 dims: 2 dims: 3 >\n`
      + 'version_policy { latest { num_versions: 2 } }\nparameters { key: "a" value { string_value: "b" "c" } }\ninstance_group [ { kind: KIND_CPU count: 2 } ]', ModelConfig);
    expect(cfg.output).toEqual([{ name: 'y', data_type: 'TYPE_INT64', dims: [1n] }, { name: 'z', data_type: 'TYPE_INT64', dims: [2n, 3n] }]);
    expect(cfg.parameters).toEqual({ a: { string_value: 'bc' } });
    expect(cfg.version_policy).toEqual({ latest: { num_versions: 2 } });
  });
  it.each([
    ['an unknown field', `${ok}max_batch: 1`, /has no field 'max_batch'/],
    ['an unknown nested field', 'input { name: "x" datatype: TYPE_FP32 }', /ModelInput has no field 'datatype'/],
    ['a string where an int goes', 'max_batch_size: "0"', /takes an integer/],
    ['an int out of range', 'max_batch_size: 2147483648', /out of range/],
    ['an unknown enum name', 'input { data_type: FP32 }', /not a value of enum DataType/],
    ['a non-repeated field twice', 'name: "a" name: "b"', /more than once/],
    ['a list on a non-repeated field', 'name: ["a"]', /not repeated/],
    ['two members of a oneof', 'version_policy { latest {} all {} }', /both members of oneof/],
    ['a scalar without a colon', 'name "a"', /expected ':'/],
    ['an unclosed message', 'input { name: "x"', /expected '}'/],
    ['an extension', '[ext]: 1', /extensions/],
  ])('refuses %s', (_what, text, re) => {
    expect(() => parseTextProto(text, ModelConfig)).toThrow(TextFormatError);
    expect(() => parseTextProto(text, ModelConfig)).toThrow(re);
  });
});

describe.runIf(!!process.env.TRITON_MODEL_CONFIG_PROTO)('the schema against Triton\'s own model_config.proto', () => {
  it('every message, field and enum value of the subset is in Triton\'s schema, identically', () => {
    const real = protobuf.parse(fs.readFileSync(process.env.TRITON_MODEL_CONFIG_PROTO!, 'utf8'), { keepCase: true }).root;
    real.resolveAll();
    const walk = (ns: protobuf.NamespaceBase): void => {
      for (const o of ns.nestedArray) {
        const r = real.lookup(o.fullName);
        expect(r, o.fullName).toBeTruthy();
        if (o instanceof protobuf.Type) {
          for (const f of o.fieldsArray) {
            const rf = (r as protobuf.Type).fields[f.name];
            expect(rf, `${o.fullName}.${f.name}`).toBeTruthy();
            expect([rf!.id, rf!.type, rf!.repeated, rf!.map, rf!.partOf?.name], `${o.fullName}.${f.name}`).toEqual([f.id, f.type, f.repeated, f.map, f.partOf?.name]);
          }
          walk(o);
        } else if (o instanceof protobuf.Enum) {
          for (const [k, v] of Object.entries(o.values)) expect((r as protobuf.Enum).values[k], `${o.fullName}.${k}`).toBe(v);
        } else if (o instanceof protobuf.Namespace) walk(o);
      }
    };
    walk(ModelConfig.root);
  });
});

describe('errors leave nothing behind', () => {
  it('into the model\'s own folder: serving-into-model, the folder unchanged', async () => {
    const copy = path.join(tmp, 'model-copy');
    fs.cpSync(MODEL_DIR, copy, { recursive: true });
    const before = snapshot(copy);
    const r = await cli(['export-serving', copy, '-o', path.join(copy, 'serving'), '--progress', 'none']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^nns: error\[serving-into-model\]: .*inside the model's folder/m);
    expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
    expect(snapshot(copy)).toEqual(before);
  });

  it('a model folder already in the repository: serving-exists, the repository unchanged', async () => {
    const before = snapshot(repo);
    const r = await cli(['export-serving', MODEL_DIR, '-o', repo, '--modules', 'none', '--progress', 'none']);
    expect(r.code).toBe(2);
    // --modules none still exports the tail's module model (lm_head): both folders exist.
    expect(r.err).toMatch(/error\[serving-exists\]: .* already has model folders gpt2-facts\.ports, gpt2-facts\.module\.lm_head/);
    expect(snapshot(repo)).toEqual(before);
  });

  it('adds another model to an existing repository (--name), leaving the others as they were', async () => {
    const before = snapshot(repo);
    const r = await cli(['export-serving', path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx'), '-o', repo, '--modules', 'lm_head', '--progress', 'none']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const added = ['gpt2-facts-model.dynamo.ports', 'gpt2-facts-model.dynamo.module.lm_head'];
    expect(modelFolders(repo).filter((n) => !before.some((l) => l.startsWith(`${n} `)))).toEqual(added.sort());
    expect(snapshot(repo).filter((l) => !added.some((a) => l.startsWith(a)))).toEqual(before);
    for (const a of added) fs.rmSync(path.join(repo, a), { recursive: true });
  });

  it('a missing parent folder, a bad name, a module that is not closed: one clear line each', async () => {
    const r1 = await cli(['export-serving', MODEL_DIR, '-o', path.join(tmp, 'no', 'such', 'repo'), '--progress', 'none']);
    expect([r1.code, r1.err]).toEqual([2, expect.stringMatching(/^nns: error\[cannot-write\]: .*does not exist/)]);
    const r2 = await cli(['export-serving', MODEL_DIR, '-o', path.join(tmp, 'x'), '--name', '../evil', '--progress', 'none']);
    expect([r2.code, r2.err]).toEqual([2, expect.stringMatching(/^nns: error\[bad-flag\]: '\.\.\/evil' cannot name a served model/)]);
    const r3 = await cli(['export-serving', MODEL_DIR, '-o', path.join(tmp, 'x'), '--modules', 'transformer.h.0.attn.c_attn', '--progress', 'none']);
    expect([r3.code, r3.err]).toEqual([2, expect.stringMatching(/^nns: error\[unknown-module\]: module 'transformer\.h\.0\.attn\.c_attn' cannot be served on its own/)]);
    const r4 = await cli(['export-serving', MODEL_DIR, '--progress', 'none']);
    expect([r4.code, r4.err]).toEqual([2, expect.stringMatching(/^nns: error\[missing-argument\]: 'nns export-serving' needs -o DIR/)]);
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(false);
  });

  it('a full disk midway (ENOSPC writing a graph): no repository, no staging folder', async () => {
    const model = await LanguageModel.load(MODEL_DIR);
    const real = fs.writeFileSync;
    let n = 0;
    vi.spyOn(fs, 'writeFileSync').mockImplementation((file, data, opts) => {
      if (String(file).endsWith('model.onnx') && ++n === 5) throw Object.assign(new Error('no space'), { code: 'ENOSPC' });
      return real(file, data, opts);
    });
    const out = path.join(tmp, 'full');
    expect(() => model.exportServing(out)).toThrow(/cannot write the model repository '.*full': the disk is full/);
    vi.restoreAllMocks();
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((x) => x.startsWith('.'))).toEqual([]);
    await model.dispose();
  }, 60_000);
});

describe('another exporter\'s model (a real PyTorch export, test/fixtures/torch-gpt2-tiny)', () => {
  it('exports; every config.pbtxt parses; the instrumented model opens and runs in onnxruntime from its folder', async () => {
    const out = path.join(tmp, 'tiny');
    const r = await cli(['export-serving', path.join(ROOT, 'test', 'fixtures', 'torch-gpt2-tiny'), '-o', out, '--progress', 'none']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const names = modelFolders(out);
    expect(names[0]).toMatch(/^torch-gpt2-tiny\./);
    expect(names).toContain('torch-gpt2-tiny.ports');
    for (const n of names) {
      const cfg = parseTextProto(fs.readFileSync(path.join(out, n, 'config.pbtxt'), 'utf8'), ModelConfig) as { name: string; input: { name: string }[] };
      expect(cfg.name).toBe(n);
      const s = await ort.InferenceSession.create(path.join(out, n, '1', 'model.onnx'));
      expect([...s.inputNames].sort(), n).toEqual(cfg.input.map((i) => i.name).sort());
      await s.release();
    }
  }, 120_000);
});
