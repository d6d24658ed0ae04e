import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import {
  DataType, ExternalDataWriter, GraphBuilder, attr, collectNames, int64Tensor, scalarFloat, tensor, tensorData, topoSort,
} from '../../src/onnx/graph-builder.js';
import { AttributeType } from '../../src/onnx/proto.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';

/** y = Relu(x @ W + b) with x [2,3], W [3,2]. */
function tinyMlp(opts: { external?: ExternalDataWriter } = {}) {
  const b = new GraphBuilder({ namePrefix: '/mlp/' });
  const x = b.input('x', DataType.FLOAT, ['batch', 3]);
  const W = b.initializer('W', Float32Array.from([1, -1, 2, 0, -3, 1]), [3, 2], { external: opts.external });
  const bias = b.initializer('b', Float32Array.from([0.5, -0.5]), [2], { external: opts.external });
  const mm = b.op('MatMul', [x, W]);
  const add = b.op('Add', [mm, bias]);
  const y = b.op('Relu', [add], {}, { outputs: ['y'] });
  b.output(y, DataType.FLOAT, ['batch', 2]);
  return b;
}

// By hand: row [1,2,3]: [1*1+2*2+3*(-3), 1*(-1)+2*0+3*1] = [-4, 2] + b = [-3.5, 1.5] → relu [0, 1.5]
// row [-1,0,1]: [-1+0-3, 1+0+1] = [-4, 2] + b → [0, 1.5]; row [0.5,0.5,0]: [1.5, -0.5] + b = [2, -1] → [2, 0]
const X = Float32Array.from([1, 2, 3, -1, 0, 1]);
const X2 = Float32Array.from([0.5, 0.5, 0]);

describe('GraphBuilder', () => {
  it('builds MatMul+Add+Relu that runs in onnxruntime with hand-computed results', async () => {
    const model = tinyMlp().build();
    expect(model.graph!.node!.map((n) => n.name)).toEqual(['/mlp/MatMul', '/mlp/Add', '/mlp/Relu']);
    const bytes = encodeModel(model);
    // lossless round trip through the codec
    expect(Buffer.from(encodeModel(decodeModel(bytes))).equals(Buffer.from(bytes))).toBe(true);
    const s = await ort.InferenceSession.create(bytes);
    const r = await s.run({ x: new ort.Tensor('float32', X, [2, 3]) });
    expect(Array.from(r.y!.data as Float32Array)).toEqual([0, 1.5, 0, 1.5]);
    const r2 = await s.run({ x: new ort.Tensor('float32', X2, [1, 3]) });
    expect(Array.from(r2.y!.data as Float32Array)).toEqual([2, 0]);
    await s.release();
  });

  it('writes external initializers at 64-byte aligned offsets that onnxruntime reads', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gb-'));
    const w = new ExternalDataWriter(path.join(dir, 'model.onnx.data'));
    const model = tinyMlp({ external: w }).build();
    w.close();
    const inits = model.graph!.initializer!;
    expect(inits.every((t) => t.data_location === 1 && !t.raw_data)).toBe(true);
    const offsets = inits.map((t) => Number(t.external_data!.find((e) => e.key === 'offset')!.value));
    expect(offsets).toEqual([0, 64]);
    expect(Array.from(tensorData(inits[0]!, dir) as Float32Array)).toEqual([1, -1, 2, 0, -3, 1]);
    fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(model));
    const s = await ort.InferenceSession.create(path.join(dir, 'model.onnx'));
    const r = await s.run({ x: new ort.Tensor('float32', X, [2, 3]) });
    expect(Array.from(r.y!.data as Float32Array)).toEqual([0, 1.5, 0, 1.5]);
    await s.release();
    fs.rmSync(dir, { recursive: true });
  });

  it('numbers repeated node names like the TorchScript exporter and generates output names', () => {
    const b = new GraphBuilder({ namePrefix: '/act/' });
    const x = b.input('x', DataType.FLOAT, [2]);
    const c = b.constFloat(0.5);
    const m0 = b.op('Mul', [x, c]);
    const m1 = b.op('Mul', [m0, c]);
    const [s0, s1] = b.node('Split', [m1], { axis: attr.int(0) }, { outputs: 2 });
    expect(b.graph.node!.map((n) => n.name)).toEqual(['/act/Constant', '/act/Mul', '/act/Mul_1', '/act/Split']);
    expect([c, m0, m1, s0, s1]).toEqual([
      '/act/Constant_output_0', '/act/Mul_output_0', '/act/Mul_1_output_0', '/act/Split_output_0', '/act/Split_output_1',
    ]);
    expect(b.uniqueName('x')).toBe('x_1');
    expect(b.uniqueName('x')).toBe('x_2');
    expect(b.uniqueName('fresh')).toBe('fresh');
    expect(() => b.input('x', DataType.FLOAT, [1])).toThrow(/collision/);
    expect(() => b.op('Relu', ['nope'])).toThrow(/not a value/);
  });

  it('sets attribute types and tensor encodings correctly', () => {
    expect(attr.int(3)).toEqual({ type: AttributeType.INT, i: 3 });
    expect(attr.ints([0, 2, 1, 3]).type).toBe(AttributeType.INTS);
    expect(attr.float(1e-5)).toEqual({ type: AttributeType.FLOAT, f: 1e-5 });
    expect(attr.floats([1, 2]).type).toBe(AttributeType.FLOATS);
    expect(new TextDecoder().decode(attr.string('tanh').s)).toBe('tanh');
    expect(attr.tensor(scalarFloat(1)).type).toBe(AttributeType.TENSOR);
    const t = int64Tensor([1, -1, 9223372036854775807n]);
    expect(t.data_type).toBe(DataType.INT64);
    expect(t.dims).toEqual([3]);
    expect(Array.from(t.raw_data!)).toEqual([1, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 127]);
    expect(Array.from(tensorData(t) as BigInt64Array)).toEqual([1n, -1n, 9223372036854775807n]);
    const bool = tensor(Uint8Array.from([1, 0]), [2], { dataType: DataType.BOOL });
    expect(bool.data_type).toBe(DataType.BOOL);
    expect(scalarFloat(2).dims).toEqual([]);
    expect(() => tensor(new Float32Array(3), [2, 2])).toThrow();
  });

  it('wraps an existing model: no name collisions, insertion point, opset import for new domains', async () => {
    // A decoded model gets a tap: y2 = y * 2 inserted after Relu; an extra output.
    const model = decodeModel(encodeModel(tinyMlp().build()));
    const b = GraphBuilder.wrapModel(model, { namePrefix: '/mlp/' });
    expect(b.has('/mlp/MatMul') && b.has('y') && b.has('W')).toBe(true);
    const two = b.constFloat(2);
    const y2 = b.op('Mul', ['y', two], {}, { docString: 'line 3: y * 2', metadata: { 'nns.line': '3' } });
    b.output(y2, DataType.FLOAT, ['batch', 2]);
    // Insert a Neg before the existing Add, consuming MatMul's output: names never collide.
    b.insertBefore(model.graph!.node!.findIndex((n) => n.op_type === 'Add'));
    const neg = b.op('Neg', ['/mlp/MatMul_output_0'], {}, { name: '/mlp/MatMul' });
    expect(neg).toBe('/mlp/MatMul_1_output_0');
    b.node('Gelu', [neg], {}, { domain: 'com.microsoft' });
    const built = b.build();
    expect(built).toBe(model);
    expect(built.ir_version).toBe(10);
    expect(built.opset_import!.some((o) => o.domain === 'com.microsoft')).toBe(true);
    expect(model.graph!.node!.map((n) => n.op_type)).toEqual(['MatMul', 'Neg', 'Gelu', 'Add', 'Relu', 'Constant', 'Mul']);
    const names = collectNames(model.graph!);
    expect(names.size).toBeGreaterThan(10);
    const s = await ort.InferenceSession.create(encodeModel(built));
    const r = await s.run({ x: new ort.Tensor('float32', X, [2, 3]) });
    expect(Array.from(r[y2]!.data as Float32Array)).toEqual([0, 3, 0, 3]);
    await s.release();
  });

  it('topoSort restores a valid order, keeping it stable', () => {
    const b = new GraphBuilder();
    const x = b.input('x', DataType.FLOAT, [1]);
    const a = b.op('Relu', [x]);
    const c = b.op('Neg', [a]);
    b.op('Abs', [x]);
    b.op('Sigmoid', [c]);
    const nodes = b.graph.node!;
    b.graph.node = [nodes[3]!, nodes[1]!, nodes[2]!, nodes[0]!];
    topoSort(b.graph);
    expect(b.graph.node!.map((n) => n.op_type)).toEqual(['Abs', 'Relu', 'Neg', 'Sigmoid']);
    b.graph.node!.push({ input: ['Sigmoid_output_0'], output: ['x2'], op_type: 'Relu' });
    b.graph.node!.find((n) => n.op_type === 'Relu')!.input = ['x2'];
    expect(() => topoSort(b.graph)).toThrow(/cycle/);
  });
});
