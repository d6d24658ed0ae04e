import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import ort from 'onnxruntime-node';
import { decodeMessageOf, decodeModel, encodeMessageOf, encodeModel } from '../../src/onnx/serde.js';
import type { ModelProto, NodeProto } from '../../src/onnx/proto.js';

const MODELS = path.resolve(__dirname, '../../models/gpt2-facts/onnx');

describe('lossless round trip of real exports', () => {
  for (const file of ['model.onnx', 'model.dynamo.onnx']) {
    it(`${file} decodes and re-encodes byte-identically`, () => {
      const bytes = fs.readFileSync(path.join(MODELS, file));
      const model = decodeModel(bytes);
      const again = encodeModel(model);
      expect(again.length).toBe(bytes.length);
      expect(Buffer.compare(Buffer.from(again), bytes)).toBe(0);
    });
  }

  it('dynamo export keeps NodeProto.metadata_props through the round trip', () => {
    const model = decodeModel(fs.readFileSync(path.join(MODELS, 'model.dynamo.onnx')));
    const withScopes = model.graph!.node!.filter((n) => n.metadata_props?.some((p) => p.key === 'pkg.torch.onnx.name_scopes'));
    expect(withScopes.length).toBeGreaterThan(100);
    const back = decodeModel(encodeModel(model));
    expect(back.graph!.node![5]!.metadata_props).toEqual(model.graph!.node![5]!.metadata_props);
  });
});

/** Field 99, length-delimited, payload "nns": a field no ONNX version defines. */
const UNKNOWN_FIELD = Uint8Array.from([0x9a, 0x06, 0x03, 0x6e, 0x6e, 0x73]);

function syntheticModel(): ModelProto {
  const plain: NodeProto = {
    input: ['x'], output: ['h'], name: '/layer/Relu', op_type: 'Relu', domain: '',
    doc_string: 'relu doc',
    metadata_props: [{ key: 'pkg.torch.onnx.name_scopes', value: "['', 'layer']" }, { key: 'namespace', value: 'layer: Layer' }],
  };
  // A node whose bytes carry an extra field 99 the schema does not know.
  const nodeBytes = encodeMessageOf('NodeProto', { input: ['h'], output: ['y'], name: '/f/Call', op_type: 'AddOne', domain: 'local' });
  const withUnknown = new Uint8Array(nodeBytes.length + UNKNOWN_FIELD.length);
  withUnknown.set(nodeBytes);
  withUnknown.set(UNKNOWN_FIELD, nodeBytes.length);
  const call = decodeMessageOf<NodeProto>('NodeProto', withUnknown);
  const t = (name: string) => ({ name, type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 4 }] } } }, doc_string: `${name} doc` });
  return {
    ir_version: 10,
    opset_import: [{ domain: '', version: 20 }, { domain: 'local', version: 1 }],
    producer_name: 'onnsight-test', producer_version: '0', doc_string: 'model doc',
    metadata_props: [{ key: 'k', value: 'v' }],
    graph: {
      name: 'g', doc_string: 'graph doc',
      node: [plain, call],
      input: [t('x')], output: [t('y')], value_info: [t('h')],
    },
    functions: [{
      name: 'AddOne', domain: 'local', input: ['a'], output: ['b'], doc_string: 'function doc',
      opset_import: [{ domain: '', version: 20 }],
      node: [
        { op_type: 'Constant', output: ['one'], name: 'one', attribute: [{ name: 'value_float', type: 1, f: 1 }] },
        { op_type: 'Add', input: ['a', 'one'], output: ['b'], name: 'add', metadata_props: [{ key: 'm', value: 'n' }] },
      ],
    }],
  };
}

describe('lossless round trip of every field', () => {
  it('metadata_props, a model-local function, value_info, doc strings and an unknown field survive byte-identically', () => {
    const bytes = encodeModel(syntheticModel());
    expect(Buffer.from(bytes).includes(Buffer.from(UNKNOWN_FIELD))).toBe(true);
    const decoded = decodeModel(bytes);
    const again = encodeModel(decoded);
    expect(Buffer.compare(Buffer.from(again), Buffer.from(bytes))).toBe(0);
    // And the fields are really there after decoding.
    expect(decoded.graph!.node![0]!.metadata_props).toHaveLength(2);
    expect(decoded.graph!.node![0]!.doc_string).toBe('relu doc');
    expect(decoded.functions![0]!.name).toBe('AddOne');
    expect(decoded.functions![0]!.node![1]!.metadata_props).toEqual([{ key: 'm', value: 'n' }]);
    expect(decoded.graph!.value_info![0]!.name).toBe('h');
    expect(decoded.doc_string).toBe('model doc');
  });

  it('the synthetic model (unknown field included) runs in onnxruntime', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-rt-'));
    const file = path.join(dir, 'm.onnx');
    fs.writeFileSync(file, encodeModel(decodeModel(encodeModel(syntheticModel()))));
    const s = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
    const out = await s.run({ x: new ort.Tensor('float32', Float32Array.from([-1, 0, 2, 3]), [1, 4]) });
    expect(Array.from(out.y!.data as Float32Array)).toEqual([1, 1, 3, 4]);
    await s.release();
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
