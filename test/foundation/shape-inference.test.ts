/**
 * Shape inference (src/onnx/shapes.ts) against independent ground truth, on real exports:
 * models/gpt2-facts/onnx/{model, model.dynamo, model.with-past}.onnx and the TorchScript
 * export test/fixtures/torch-gpt2-tiny.
 *
 * - onnxruntime: every value every node computes is made a graph output and the model run
 *   on a batch (B = 2, T = 5, 3 past positions); each inferred dim, with the symbols bound to
 *   those sizes, must equal the shape onnxruntime returns, and each inferred element type
 *   its type. Every value must be typed with a full shape (these models use only operators
 *   the inference knows).
 * - the dynamo export's own value_info (written by PyTorch's exporter): inference run
 *   without it must give the same symbolic shape (`s70`, `s70 + 1`, ...) for every value it
 *   lists (dims it left unknown are not compared).
 */
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';
import type { GraphProto, ModelProto, ValueInfoProto } from '../../src/onnx/proto.js';
import { canonicalDim, evalDim, inferShapes, infoOfType, typeOfInfo, type SymDim } from '../../src/onnx/shapes.js';
import { ROOT } from '../helpers/reference.js';

const B = 2;
const T = 5;
const P = 3;
const BIND: Record<string, number> = { batch_size: B, sequence_length: T, past_sequence_length: P, s72: B, s70: T };
const ELEM: Record<string, number> = { float32: 1, int64: 7, bool: 9, int32: 6, float16: 10, float64: 11, uint8: 2, int8: 3 };

const MODELS = [
  path.join(ROOT, 'models', 'gpt2-facts', 'onnx', 'model.onnx'),
  path.join(ROOT, 'models', 'gpt2-facts', 'onnx', 'model.dynamo.onnx'),
  path.join(ROOT, 'models', 'gpt2-facts', 'onnx', 'model.with-past.onnx'),
  path.join(ROOT, 'test', 'fixtures', 'torch-gpt2-tiny', 'onnx', 'model.onnx'),
];

const opsetOf = (p: ModelProto): number => Number((p.opset_import ?? []).find((o) => !o.domain || o.domain === 'ai.onnx')?.version ?? 0);

describe('shape inference', () => {
  it.each(MODELS.map((m) => [path.relative(ROOT, m), m]))('%s: every value typed, = onnxruntime on a real batch', async (_rel, file) => {
    const proto = decodeModel(fs.readFileSync(file));
    const g = proto.graph!;
    const { types } = inferShapes(g, opsetOf(proto), { valueInfo: false });
    const computed = (g.node ?? []).flatMap((n) => (n.output ?? []).filter(Boolean));
    const untyped = computed.filter((o) => !types.get(o)?.shape || types.get(o)!.shape!.some((d) => d === null));
    expect(untyped, 'values without a full shape').toEqual([]);
    // Every computed value as an output.
    const probe: ModelProto = { ...proto, graph: { ...g, value_info: [], output: computed.map((o) => infoOfType(o, { elem: types.get(o)!.elem, shape: null })) } };
    const s = await ort.InferenceSession.create(encodeModel(probe), { graphOptimizationLevel: 'disabled' });
    const feeds: Record<string, ort.Tensor> = {};
    for (const i of g.input ?? []) {
      const t = typeOfInfo(i)!;
      const dims = t.shape!.map((d) => evalDim(d, BIND)!);
      const size = dims.reduce((p, d) => p * d, 1);
      if (i.name === 'input_ids') feeds[i.name] = new ort.Tensor('int64', BigInt64Array.from({ length: size }, (_, k) => BigInt((k * 7 + 3) % 50)), dims);
      else if (i.name === 'position_ids') feeds[i.name] = new ort.Tensor('int64', BigInt64Array.from({ length: size }, (_, k) => BigInt((k % dims[1]!) + (dims[1] === T && g.input!.length > 3 ? P : 0))), dims);
      else if (t.elem === 7) feeds[i.name!] = new ort.Tensor('int64', new BigInt64Array(size).fill(1n), dims);
      else feeds[i.name!] = new ort.Tensor('float32', Float32Array.from({ length: size }, (_, k) => Math.sin(k)), dims);
    }
    const out = await s.run(feeds);
    await s.release();
    let checked = 0;
    for (const o of computed) {
      const want = out[o]!;
      const t = types.get(o)!;
      expect(t.elem, `${o}: element type`).toBe(ELEM[want.type]);
      expect(t.shape!.map((d) => evalDim(d, BIND)), `${o}: ${JSON.stringify(t.shape)}`).toEqual([...want.dims]);
      checked++;
    }
    expect(checked).toBe(computed.length);
  }, 120_000);

  it('the dynamo export: the symbolic shapes PyTorch wrote in its value_info', () => {
    const proto = decodeModel(fs.readFileSync(MODELS[1]!));
    const g = proto.graph!;
    const { types } = inferShapes(g, opsetOf(proto), { valueInfo: false });
    const listed = (g.value_info ?? []).filter((v) => v.type?.tensor_type?.shape);
    expect(listed.length).toBeGreaterThan(200);
    const canon = (s: readonly SymDim[] | null | undefined): SymDim[] | null => (s ? s.map(canonicalDim) : null);
    let dims = 0;
    for (const v of listed) {
      const want = canon(typeOfInfo(v)!.shape)!;
      const got = canon(types.get(v.name!)?.shape);
      expect(got?.length, `${v.name}: rank`).toBe(want.length);
      // (a dim the exporter left unknown is not compared: the inference may know more)
      want.forEach((d, i) => { if (d !== null) { expect(got![i], `${v.name} dim ${i}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`).toBe(d); dims++; } });
      expect(types.get(v.name!)?.elem, `${v.name}: element type`).toBe(typeOfInfo(v)!.elem);
    }
    expect(dims).toBeGreaterThan(500);
  });
  it('an operator it does not know leaves its outputs and what follows untyped, never guessed', () => {
    const vi = (name: string, dims: (number | string)[]): ValueInfoProto => ({ name, type: { tensor_type: { elem_type: 1, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } } });
    const g: GraphProto = {
      input: [vi('x', ['batch_size', 'sequence_length', 8])],
      node: [
        { op_type: 'FusedThing', domain: 'com.example', input: ['x'], output: ['y'] },
        { op_type: 'Relu', input: ['y'], output: ['z'] },
        { op_type: 'Add', input: ['x', 'z'], output: ['w'] },
        { op_type: 'Shape', input: ['x'], output: ['s'] },
        { op_type: 'Reshape', input: ['x', 'flat'], output: ['r'] },
      ],
      initializer: [{ name: 'flat', dims: [2], data_type: 7, int64_data: [-1, 8] }],
    };
    const { types, values } = inferShapes(g, 17, {});
    expect(types.get('y')).toBeUndefined();
    expect(types.get('z')).toBeUndefined();
    // Add broadcasts x with an unknown: only what x alone fixes is not claimed either
    expect(types.get('w')?.shape ?? null).toBeNull();
    expect(values.get('s')).toEqual(['batch_size', 'sequence_length', 8]);
    expect(types.get('r')?.shape).toEqual(['batch_size*sequence_length', 8]);
  });
});
