/**
 * An empty script compiles any valid model to itself (`nns compile empty.nns --model M -o OUT`):
 * byte for byte, or at least equal as a protobuf message.
 *
 * - Small hand-built models with inputs the open-time probe cannot feed (a sequence, an
 *   optional, a string tensor) and one whose inline weights loading moves into the cache.
 * - Every model of ONNX's backend-test corpus, when Debian's `libonnx-testdata` is installed
 *   (`/usr/share/libonnx-testdata/data/`; `.ci/run` installs it); skipped otherwise.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { ModelProto, TypeProto } from '../../src/onnx/proto.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-compile-rt-'));
const empty = path.join(tmp, 'empty.nns');
const savedCache = process.env.ONNSIGHT_CACHE;
beforeAll(() => {
  fs.writeFileSync(empty, '');
  process.env.ONNSIGHT_CACHE = path.join(tmp, 'cache');
});
afterAll(() => {
  if (savedCache === undefined) delete process.env.ONNSIGHT_CACHE;
  else process.env.ONNSIGHT_CACHE = savedCache;
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Compiles the empty script against `model` into a fresh folder; returns the exit code, stderr and output path. */
async function compileEmpty(model: string, name: string): Promise<{ code: number; err: string; out: string }> {
  const out = path.join(tmp, 'out', name, 'model.onnx');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  let err = '';
  const code = await main(['compile', empty, '--model', model, '-o', out], {
    out: () => {}, err: (t) => (err += `${t}\n`), cwd: tmp, env: process.env,
  });
  return { code, err, out };
}

/** Same bytes, or the same message once both are decoded and encoded again (field order normalized). */
function sameModel(a: Uint8Array, b: Uint8Array): 'bytes' | 'message' | false {
  if (Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0) return 'bytes';
  const ea = Buffer.from(encodeModel(decodeModel(a)));
  const eb = Buffer.from(encodeModel(decodeModel(b)));
  return Buffer.compare(ea, eb) === 0 ? 'message' : false;
}

const f32 = (shape: number[]): TypeProto => ({ tensor_type: { elem_type: 1, shape: { dim: shape.map((d) => ({ dim_value: d })) } } });

function modelOf(inputs: [string, TypeProto][], outputs: [string, TypeProto][], nodes: NonNullable<ModelProto['graph']>['node'], opset = 18): ModelProto {
  return {
    ir_version: 8, producer_name: 'onnsight-test', opset_import: [{ domain: '', version: opset }],
    graph: {
      name: 'g', node: nodes,
      input: inputs.map(([name, type]) => ({ name, type })),
      output: outputs.map(([name, type]) => ({ name, type })),
    },
  };
}

describe('an empty script compiles a model to itself', () => {
  const seq: TypeProto = { sequence_type: { elem_type: f32([2, 3]) } };
  const opt: TypeProto = { optional_type: { elem_type: f32([2]) } };
  const str: TypeProto = { tensor_type: { elem_type: 8, shape: { dim: [{ dim_value: 2 }] } } };
  const cases: [string, ModelProto][] = [
    ['sequence input', modelOf([['x', seq]], [['y', seq]], [{ op_type: 'Identity', input: ['x'], output: ['y'], name: 'id' }])],
    ['sequence output of a tensor input', modelOf([['a', f32([2, 3])]], [['s', seq]], [{ op_type: 'SequenceConstruct', input: ['a', 'a'], output: ['s'], name: 'sc' }])],
    ['optional input', modelOf([['x', opt]], [['y', { tensor_type: { elem_type: 9, shape: { dim: [] } } }]], [{ op_type: 'OptionalHasElement', input: ['x'], output: ['y'], name: 'has' }])],
    ['string input', modelOf([['x', str]], [['y', f32([2])]], [{ op_type: 'Cast', input: ['x'], output: ['y'], name: 'cast', attribute: [{ name: 'to', type: 2, i: 1 }] }])],
  ];
  // A float input with 64 KB of inline weights: loading moves them to the cache's data file.
  const w = new Float32Array(16384).map((_, i) => (i % 7) - 3);
  cases.push(['inline weights that loading externalizes', {
    ...modelOf([['x', f32([1, 16384])]], [['y', f32([1, 16384])]], [{ op_type: 'Add', input: ['x', 'w'], output: ['y'], name: 'add' }]),
    graph: {
      ...modelOf([['x', f32([1, 16384])]], [['y', f32([1, 16384])]], [{ op_type: 'Add', input: ['x', 'w'], output: ['y'], name: 'add' }]).graph,
      initializer: [{ name: 'w', data_type: 1, dims: [16384], raw_data: new Uint8Array(w.buffer) }],
    },
  }]);

  it.each(cases)('%s', async (name, model) => {
    const file = path.join(tmp, 'models', name.replace(/\W+/g, '-'), 'model.onnx');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const bytes = encodeModel(model);
    fs.writeFileSync(file, bytes);
    const r = await compileEmpty(file, name.replace(/\W+/g, '-'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(sameModel(fs.readFileSync(r.out), bytes)).toBe('bytes');
    // Nothing else next to the output: the model is self-contained, as the source was.
    expect(fs.readdirSync(path.dirname(r.out))).toEqual(['model.onnx']);
  });
});

const CORPUS = '/usr/share/libonnx-testdata/data';

/** Every `<group>/<test>/model.onnx` of the corpus. */
function corpusModels(): string[] {
  const files: string[] = [];
  for (const group of fs.readdirSync(CORPUS).sort()) {
    const gdir = path.join(CORPUS, group);
    if (!fs.statSync(gdir).isDirectory()) continue;
    for (const t of fs.readdirSync(gdir).sort()) {
      const f = path.join(gdir, t, 'model.onnx');
      if (fs.existsSync(f)) files.push(f);
    }
  }
  return files;
}

describe.skipIf(!fs.existsSync(CORPUS))('ONNX backend-test corpus (libonnx-testdata)', () => {
  // ~1,070 small models; the whole corpus takes seconds, so every model is checked.
  it('every model round-trips through nns compile of an empty script', { timeout: 600_000 }, async () => {
    const files = corpusModels();
    expect(files.length).toBeGreaterThan(500);
    const failed: string[] = [];
    let bytes = 0;
    let message = 0;
    for (const f of files) {
      const name = path.relative(CORPUS, path.dirname(f)).replace(/\//g, '__');
      const r = await compileEmpty(f, name);
      const same = r.code === 0 ? sameModel(fs.readFileSync(r.out), fs.readFileSync(f)) : false;
      if (same === 'bytes') bytes++;
      else if (same === 'message') message++;
      else failed.push(`${name}: ${r.code === 0 ? 'output differs' : r.err.split('\n')[0]}`);
      fs.rmSync(path.dirname(r.out), { recursive: true, force: true });
    }
    console.log(`libonnx-testdata: ${bytes + message} of ${files.length} models round-trip (${bytes} byte for byte, ${message} as equal messages)`);
    expect(failed).toEqual([]);
    expect(bytes + message).toBe(files.length);
  });
});
