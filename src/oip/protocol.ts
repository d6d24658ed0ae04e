/**
 * The Open Inference Protocol (KServe v2, "OIP") over HTTP/REST: tensor data types, the
 * JSON form of tensors, and the binary tensor data extension (NVIDIA Triton's, also in
 * KServe), shared by the client (src/oip/client.ts) and the server endpoints of `nns serve`
 * (src/serve/oip.ts).
 *
 * An inference request or response is a JSON object; with the binary extension the HTTP
 * body is that JSON followed by the raw bytes of the tensors that carry a
 * `parameters.binary_data_size`, in the order they are listed, and the header
 * `Inference-Header-Content-Length` gives the JSON's length in bytes. Raw bytes are
 * little-endian, row-major. A request asks for an output in binary with
 * `parameters.binary_data: true` on that output (or `parameters.binary_data_output: true`
 * on the request, for all outputs).
 * @module
 */
import crypto from 'node:crypto';
import type { DType, Tensor, TensorData } from '../tensor.js';

/** The header carrying the JSON part's length in a binary request or response. */
export const HEADER_LENGTH = 'inference-header-content-length';

/** OIP data type names by element type. */
export const OIP_DATATYPE: Readonly<Record<DType, string>> = {
  bool: 'BOOL', uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64',
  int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  float16: 'FP16', float32: 'FP32', float64: 'FP64', bfloat16: 'BF16',
};

const FROM_OIP: ReadonlyMap<string, DType> = new Map(Object.entries(OIP_DATATYPE).map(([d, o]) => [o, d as DType]));

/** The element type of an OIP data type name, or undefined (`BYTES` and unknown names). */
export function dtypeOfOip(datatype: unknown): DType | undefined {
  return typeof datatype === 'string' ? FROM_OIP.get(datatype) : undefined;
}

/** Bytes per element. */
export function elementBytes(dtype: DType): number {
  switch (dtype) {
    case 'bool': case 'uint8': case 'int8': return 1;
    case 'uint16': case 'int16': case 'float16': case 'bfloat16': return 2;
    case 'uint32': case 'int32': case 'float32': return 4;
    default: return 8;
  }
}

/** A malformed request or response (the message says what is wrong). */
export class OipFormatError extends Error {}

/** One tensor of a request's `inputs` or a response's `outputs`, in JSON. */
export interface OipTensorJSON {
  name: string;
  shape: number[];
  datatype: string;
  parameters?: Record<string, unknown>;
  data?: unknown[];
}

/** An inference request's JSON part. */
export interface OipInferRequestJSON {
  id?: string;
  parameters?: Record<string, unknown>;
  inputs: OipTensorJSON[];
  outputs?: { name: string; parameters?: Record<string, unknown> }[];
}

/** An inference response's JSON part. */
export interface OipInferResponseJSON {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, unknown>;
  outputs: OipTensorJSON[];
}

/**
 * A tensor's metadata in a model metadata response (`-1` for a dimension of any size).
 * @category Serving
 */
export interface OipTensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}

/**
 * A model metadata response (`GET /v2/models/{name}`).
 * @category Serving
 */
export interface OipModelMetadata {
  name: string;
  versions?: string[];
  platform: string;
  inputs: OipTensorMetadata[];
  outputs: OipTensorMetadata[];
  /** onnsight's own addition (other servers leave it out): what the model is. */
  parameters?: Record<string, unknown>;
}

function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Checks a `shape` field: an array of non-negative safe integers. */
export function checkShape(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
    throw new OipFormatError(`${what}: "shape" must be an array of non-negative integers`);
  }
  return shape as number[];
}

/** The raw little-endian bytes of a tensor (a view, no copy, on little-endian hosts). */
export function tensorBytes(t: Tensor): Uint8Array {
  const d = t.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
}

function allocate(dtype: DType, n: number): TensorData {
  switch (dtype) {
    case 'float32': return new Float32Array(n);
    case 'float64': return new Float64Array(n);
    case 'int64': return new BigInt64Array(n);
    case 'uint64': return new BigUint64Array(n);
    case 'int32': return new Int32Array(n);
    case 'uint32': return new Uint32Array(n);
    case 'int16': return new Int16Array(n);
    case 'uint16': case 'float16': case 'bfloat16': return new Uint16Array(n);
    case 'int8': return new Int8Array(n);
    default: return new Uint8Array(n); // bool, uint8
  }
}

/** A tensor from raw little-endian bytes (copied into aligned storage). */
export function tensorFromBytes(dtype: DType, shape: readonly number[], bytes: Uint8Array, what: string): Tensor {
  const n = elementCount(shape);
  const want = n * elementBytes(dtype);
  if (bytes.byteLength !== want) throw new OipFormatError(`${what}: ${bytes.byteLength} bytes of binary data, but a ${OIP_DATATYPE[dtype]} tensor of shape [${shape.join(', ')}] has ${want}`);
  const data = allocate(dtype, n);
  new Uint8Array(data.buffer).set(bytes);
  return { dtype, shape: [...shape], data };
}

/**
 * A tensor's elements as a flat JSON array (BOOL as true/false). Values JSON cannot hold
 * exactly — NaN, ±Infinity, integers beyond 2^53, FP16 and BF16 — are refused: send those
 * in binary.
 */
export function tensorToJSONData(t: Tensor, what: string): (number | boolean)[] {
  if (t.dtype === 'float16' || t.dtype === 'bfloat16') throw new OipFormatError(`${what}: ${OIP_DATATYPE[t.dtype]} data can only be sent in binary`);
  const out: (number | boolean)[] = new Array(t.data.length);
  for (let i = 0; i < t.data.length; i++) {
    const v = t.data[i]!;
    if (t.dtype === 'bool') out[i] = v !== 0;
    else if (typeof v === 'bigint') {
      if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new OipFormatError(`${what}: ${v} does not fit a JSON number exactly; send it in binary`);
      out[i] = Number(v);
    } else {
      if (!Number.isFinite(v)) throw new OipFormatError(`${what}: ${v} has no JSON form; send it in binary`);
      out[i] = v;
    }
  }
  return out;
}

const INT_RANGE: Partial<Record<DType, [number, number]>> = {
  int8: [-128, 127], uint8: [0, 255], int16: [-32768, 32767], uint16: [0, 65535], int32: [-(2 ** 31), 2 ** 31 - 1], uint32: [0, 2 ** 32 - 1],
};

/** A tensor from JSON `data` (flat or nested row-major arrays, as the protocol allows). */
export function tensorFromJSONData(dtype: DType, shape: readonly number[], data: unknown, what: string): Tensor {
  if (!Array.isArray(data)) throw new OipFormatError(`${what}: "data" must be an array`);
  const flat = (data as unknown[]).flat(Infinity);
  const n = elementCount(shape);
  if (flat.length !== n) throw new OipFormatError(`${what}: ${flat.length} elements of data, but shape [${shape.join(', ')}] has ${n}`);
  if (dtype === 'float16' || dtype === 'bfloat16') throw new OipFormatError(`${what}: ${OIP_DATATYPE[dtype]} data must be sent in binary`);
  const out = allocate(dtype, n);
  for (let i = 0; i < n; i++) {
    const v = flat[i];
    if (dtype === 'bool') {
      if (typeof v !== 'boolean') throw new OipFormatError(`${what}: element ${i} of BOOL data is not true or false`);
      (out as Uint8Array)[i] = v ? 1 : 0;
    } else if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new OipFormatError(`${what}: element ${i} is not a number`);
    } else if (out instanceof BigInt64Array || out instanceof BigUint64Array) {
      if (!Number.isSafeInteger(v)) throw new OipFormatError(`${what}: element ${i} (${v}) is not an integer (or beyond 2^53: send it in binary)`);
      if (out instanceof BigUint64Array && v < 0) throw new OipFormatError(`${what}: element ${i} (${v}) is out of range for UINT64`);
      out[i] = BigInt(v);
    } else {
      if (!(out instanceof Float32Array || out instanceof Float64Array)) {
        if (!Number.isInteger(v)) throw new OipFormatError(`${what}: element ${i} (${v}) is not an integer`);
        const [lo, hi] = INT_RANGE[dtype]!;
        if (v < lo || v > hi) throw new OipFormatError(`${what}: element ${i} (${v}) is out of range for ${OIP_DATATYPE[dtype]}`);
      }
      (out as Float32Array)[i] = v;
    }
  }
  return { dtype, shape: [...shape], data: out };
}

/** Splits a body into its JSON part and the binary data after it. */
export function splitBody(body: Uint8Array, headerLength: string | null | undefined): { json: unknown; rest: Uint8Array } {
  let jsonLen = body.byteLength;
  if (headerLength !== undefined && headerLength !== null && headerLength !== '') {
    const n = Number(headerLength);
    if (!Number.isSafeInteger(n) || n < 0 || n > body.byteLength) throw new OipFormatError(`Inference-Header-Content-Length ${JSON.stringify(headerLength)} is not a length within the body (${body.byteLength} bytes)`);
    jsonLen = n;
  }
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body.buffer, body.byteOffset, jsonLen).toString('utf8'));
  } catch (e) {
    throw new OipFormatError(`the JSON part is not valid JSON (${(e as Error).message})`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new OipFormatError('the JSON part must be an object');
  return { json, rest: body.subarray(jsonLen) };
}

/**
 * Reads the tensors of `inputs` (a request) or `outputs` (a response), taking binary data
 * from `rest` in order. Every byte of `rest` must be used.
 */
export function readTensors(list: unknown, rest: Uint8Array, field: 'inputs' | 'outputs'): Map<string, Tensor> {
  if (!Array.isArray(list)) throw new OipFormatError(`"${field}" must be an array`);
  const out = new Map<string, Tensor>();
  let at = 0;
  for (const [i, raw] of (list as unknown[]).entries()) {
    const item = raw as Partial<OipTensorJSON> | null;
    if (!item || typeof item !== 'object' || typeof item.name !== 'string') throw new OipFormatError(`${field}[${i}] must be an object with a "name"`);
    const what = `${field.slice(0, -1)} '${item.name}'`;
    if (out.has(item.name)) throw new OipFormatError(`${what} is given twice`);
    const dtype = dtypeOfOip(item.datatype);
    if (!dtype) throw new OipFormatError(`${what}: unsupported datatype ${JSON.stringify(item.datatype)}`);
    const shape = checkShape(item.shape, what);
    const size = item.parameters?.binary_data_size;
    if (size !== undefined) {
      if (!Number.isSafeInteger(size) || (size as number) < 0) throw new OipFormatError(`${what}: binary_data_size must be a non-negative integer`);
      if (item.data !== undefined) throw new OipFormatError(`${what} has both "data" and binary_data_size`);
      if (at + (size as number) > rest.byteLength) throw new OipFormatError(`${what}: binary_data_size ${size as number} runs past the end of the body`);
      out.set(item.name, tensorFromBytes(dtype, shape, rest.subarray(at, at + (size as number)), what));
      at += size as number;
    } else {
      out.set(item.name, tensorFromJSONData(dtype, shape, item.data, what));
    }
  }
  if (at !== rest.byteLength) throw new OipFormatError(`${rest.byteLength - at} bytes after the JSON part belong to no tensor`);
  return out;
}

/** A request or response body: JSON, then binary data; `headerLength` when there is binary data. */
export interface EncodedBody {
  body: Buffer;
  /** The value of Inference-Header-Content-Length (only when binary data follows the JSON). */
  headerLength?: number;
}

/**
 * Encodes tensors into `items` (adding `shape`, `datatype` and either `data` or
 * `parameters.binary_data_size`) and the whole body.
 */
export function encodeBody(head: Record<string, unknown>, field: 'inputs' | 'outputs', tensors: readonly { name: string; tensor: Tensor; binary: boolean }[]): EncodedBody {
  const blobs: Uint8Array[] = [];
  const texts: string[] = [];
  const nonce = crypto.randomBytes(6).toString('hex'); // placeholders no string of the head can spell
  head[field] = tensors.map(({ name, tensor, binary }) => {
    const base = { name, shape: [...tensor.shape], datatype: OIP_DATATYPE[tensor.dtype] };
    if (!binary) {
      // Written by hand, not by JSON.stringify, which turns -0 into 0: JSON text keeps every float32 bit.
      const data = tensorToJSONData(tensor, `${field.slice(0, -1)} '${name}'`);
      texts.push(`[${data.map((v) => (Object.is(v, -0) ? '-0' : String(v))).join(',')}]`);
      return { ...base, data: `\u0000${nonce}:${texts.length - 1}\u0000` };
    }
    const bytes = tensorBytes(tensor);
    blobs.push(bytes);
    return { ...base, parameters: { binary_data_size: bytes.byteLength } };
  });
  const text = JSON.stringify(head).replace(new RegExp(`"\\\\u0000${nonce}:(\\d+)\\\\u0000"`, 'g'), (_, k: string) => texts[Number(k)]!);
  const json = Buffer.from(text, 'utf8');
  if (!blobs.length) return { body: json };
  return { body: Buffer.concat([json, ...blobs]), headerLength: json.byteLength };
}
