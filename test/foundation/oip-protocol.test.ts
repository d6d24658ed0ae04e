/**
 * The Open Inference Protocol wire format (src/oip/protocol.ts): tensors through JSON `data`
 * and through the binary extension come back with the same bits (float32 values of every
 * exponent range, int64 within 2^53, every dtype in binary); values JSON cannot carry exactly
 * and integers out of their type's range are refused, never wrapped or rounded.
 */
import { describe, expect, it } from 'vitest';
import { encodeBody, OipFormatError, readTensors, splitBody, tensorFromJSONData, tensorToJSONData, HEADER_LENGTH } from '../../src/oip/protocol.js';
import type { Tensor } from '../../src/tensor.js';

function bits(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Deterministic pseudo-random float32 values over many magnitudes (bit patterns, NaN/Inf excluded). */
function floats(n: number): Float32Array {
  const u = new Uint32Array(n);
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    u[i] = (s & 0x807fffff) | ((((s >>> 23) % 254) + 1) << 23) >>> 0; // exponent 1..254: finite, normal
  }
  const f = new Float32Array(u.buffer);
  f[0] = 0; f[1] = -0; f[2] = 1.4e-45; // zero, negative zero, the smallest subnormal
  return f;
}

describe('OIP tensors', () => {
  it('float32 through a JSON body (data arrays in the JSON text): the same bits, -0 included (10,000 values)', () => {
    const t: Tensor = { dtype: 'float32', shape: [100, 100], data: floats(10_000) };
    const enc = encodeBody({ id: 'a "quoted" \u0000 id' }, 'outputs', [{ name: 'x', tensor: t, binary: false }, { name: 'y', tensor: { dtype: 'int64', shape: [2], data: BigInt64Array.of(-3n, 2n ** 53n - 1n) }, binary: false }]);
    expect(enc.headerLength).toBeUndefined();
    const { json, rest } = splitBody(enc.body, undefined);
    expect((json as { id: string }).id).toBe('a "quoted" \u0000 id');
    const got = readTensors((json as { outputs: unknown }).outputs, rest, 'outputs');
    expect(Object.is((got.get('x')!.data as Float32Array)[1], -0)).toBe(true);
    expect(bits(got.get('x')!).equals(bits(t))).toBe(true);
    expect([...(got.get('y')!.data as BigInt64Array)]).toEqual([-3n, 2n ** 53n - 1n]);
  });

  it('every dtype through the binary extension: the same bits, in order, every byte used', () => {
    const ts: { name: string; tensor: Tensor; binary: boolean }[] = [
      { name: 'f', tensor: { dtype: 'float32', shape: [2, 3], data: floats(6) }, binary: true },
      { name: 'd', tensor: { dtype: 'float64', shape: [2], data: Float64Array.of(Math.PI, -0) }, binary: true },
      { name: 'i', tensor: { dtype: 'int64', shape: [3], data: BigInt64Array.of(-(2n ** 63n), 0n, 2n ** 63n - 1n) }, binary: true },
      { name: 'h', tensor: { dtype: 'float16', shape: [2], data: Uint16Array.of(0x3c00, 0xfc00) }, binary: true },
      { name: 'b', tensor: { dtype: 'bool', shape: [3], data: Uint8Array.of(1, 0, 1) }, binary: true },
      { name: 'j', tensor: { dtype: 'int32', shape: [2], data: Int32Array.of(-5, 7) }, binary: false },
    ];
    const enc = encodeBody({}, 'inputs', ts);
    expect(enc.headerLength).toBeGreaterThan(0);
    const { json, rest } = splitBody(enc.body, String(enc.headerLength));
    const got = readTensors((json as { inputs: unknown }).inputs, rest, 'inputs');
    expect([...got.keys()]).toEqual(ts.map((t) => t.name));
    for (const t of ts) {
      expect([got.get(t.name)!.dtype, got.get(t.name)!.shape]).toEqual([t.tensor.dtype, t.tensor.shape]);
      expect(bits(got.get(t.name)!).equals(bits(t.tensor)), t.name).toBe(true);
    }
    expect(HEADER_LENGTH).toBe('inference-header-content-length');
  });

  it.each([
    ['NaN in JSON', () => tensorToJSONData({ dtype: 'float32', shape: [1], data: Float32Array.of(NaN) }, 'x'), /NaN has no JSON form/],
    ['an int64 beyond 2^53 in JSON', () => tensorToJSONData({ dtype: 'int64', shape: [1], data: BigInt64Array.of(2n ** 60n) }, 'x'), /does not fit a JSON number exactly/],
    ['FP16 in JSON', () => tensorToJSONData({ dtype: 'float16', shape: [1], data: Uint16Array.of(0) }, 'x'), /only be sent in binary/],
    ['300 as UINT8', () => tensorFromJSONData('uint8', [1], [300], 'x'), /out of range for UINT8/],
    ['-1 as UINT64', () => tensorFromJSONData('uint64', [1], [-1], 'x'), /out of range for UINT64/],
    ['2^31 as INT32', () => tensorFromJSONData('int32', [1], [2 ** 31], 'x'), /out of range for INT32/],
    ['1.5 as INT64', () => tensorFromJSONData('int64', [1], [1.5], 'x'), /not an integer/],
    ['1 as BOOL', () => tensorFromJSONData('bool', [1], [1], 'x'), /not true or false/],
    ['too few elements', () => tensorFromJSONData('float32', [2, 2], [[1, 2], [3]], 'x'), /3 elements of data, but shape \[2, 2\] has 4/],
    ['a negative dim', () => readTensors([{ name: 'a', datatype: 'FP32', shape: [-1], data: [] }], new Uint8Array(0), 'inputs'), /"shape" must be an array of non-negative integers/],
    ['BYTES', () => readTensors([{ name: 'a', datatype: 'BYTES', shape: [1], data: ['x'] }], new Uint8Array(0), 'inputs'), /unsupported datatype "BYTES"/],
    ['binary bytes that belong to no tensor', () => readTensors([], new Uint8Array(4), 'inputs'), /4 bytes after the JSON part belong to no tensor/],
    ['a binary size not matching the shape', () => readTensors([{ name: 'a', datatype: 'FP32', shape: [2], parameters: { binary_data_size: 4 } }], new Uint8Array(4), 'inputs'), /4 bytes of binary data, but a FP32 tensor of shape \[2\] has 8/],
  ])('refuses %s', (_what, f, re) => {
    expect(f).toThrow(OipFormatError);
    expect(f).toThrow(re);
  });
});
