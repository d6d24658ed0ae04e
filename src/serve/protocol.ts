/**
 * The wire format of remote execution (`nns serve` and its clients), shared by both ends.
 *
 * A job request and a job result are both a **tensor container**: an 8-byte magic
 * `NNSWIRE1`, a 4-byte little-endian length, that many bytes of UTF-8 JSON (the index),
 * then the raw little-endian bytes of the tensors the index lists, each at its `offset`
 * (relative to the end of the JSON, 8-byte aligned) with its `bytes`. Typed arrays are
 * copied bit for bit: what the server computed is what the client gets.
 *
 * A request's JSON: `{ model, ir, host: [index...] }` where `ir` is the IR's versioned JSON
 * form (ir/json.ts) — data, never code or a file path — and `host` the values of the IR's
 * `host` nodes. A generation is `{ model, generate, host }` instead: `generate` a generation
 * job (src/generate/job.ts: prompts as token ids, options, per-step IR templates).
 * A result's JSON: `{ id, saves: [index...] }` in save order; a generation's also
 * `generate: { ids, steps, mode }`.
 * @module
 */
import type { GraphJSON } from '../../ir/json.js';
import type { GenerationJobJSON } from '../generate/job.js';
import type { DType, Tensor, TensorData } from '../tensor.js';
import type { ErrorKind, Span } from '../errors.js';

/** Magic bytes that start every container. */
export const MAGIC = 'NNSWIRE1';
/** Media type of containers. */
export const CONTAINER_TYPE = 'application/x-nns-tensors';

/** Where one tensor of a container is. */
export interface TensorIndex {
  /** Save or host name. */
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offset after the JSON. */
  offset: number;
  /** Byte length. */
  bytes: number;
}

/** The JSON part of a job request. */
export interface JobRequestJSON {
  /** Served model name. */
  model: string;
  /** The trace, as the IR's JSON form (absent for a generation). */
  ir?: GraphJSON;
  /** A generation job instead of a trace. */
  generate?: GenerationJobJSON;
  /** Host values (saves of earlier traces, TS tensors) the IR reads. */
  host: TensorIndex[];
}

/** What a generation's result adds to its JSON (`generate`). */
export interface GenerationResultJSON {
  /** Per row: prompt ids followed by the generated ids (no padding). */
  ids: number[][];
  /** Steps run (fewer than max_new_tokens when every row stopped). */
  steps: number;
  /** `cache` (the model's key/value cache) or `recompute`. */
  mode: 'cache' | 'recompute';
}

/** A diagnostic as it crosses the wire (an NnsError's fields). */
export interface DiagnosticJSON {
  code: string;
  message: string;
  kind: ErrorKind;
  span?: Span;
  notes: string[];
}

/** Status of a job. */
export type JobState = 'queued' | 'running' | 'completed' | 'error';

/** One status event (also the body of `GET /jobs/ID`). */
export interface JobEvent {
  id: string;
  /** `token`: a generation chose a token (every one is kept and replayed to late listeners). */
  status: JobState | 'progress' | 'token';
  /** token: the step, batch row and token id. */
  token?: { step: number; row: number; token: number };
  /** Jobs ahead of this one (queued). */
  position?: number;
  /** progress: phase and counts. */
  progress?: { phase: string; done: number; total: number };
  /** error: the diagnostics (script errors carry their span). */
  errors?: DiagnosticJSON[];
  /** completed: how many saves, and bytes of the result. */
  saves?: number;
  /** Milliseconds from acceptance to completion (completed). */
  ms?: number;
  /** How many jobs shared this job's forward pass (completed; 1 = alone). */
  batched?: number;
}

/** Body of every non-2xx answer. */
export interface HttpErrorJSON {
  error: { code: string; message: string };
}

/** Byte width of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  float32: 4, float64: 8, float16: 2, bfloat16: 2, int64: 8, int32: 4, int16: 2, int8: 1, uint8: 1, uint16: 2, uint32: 4, uint64: 8, bool: 1,
};

type ArrayCtor = new (buf: ArrayBuffer, offset: number, length: number) => TensorData;
const CTORS: Readonly<Record<DType, ArrayCtor>> = {
  float32: Float32Array, float64: Float64Array, float16: Uint16Array, bfloat16: Uint16Array, int64: BigInt64Array, int32: Int32Array,
  int16: Int16Array, int8: Int8Array, uint8: Uint8Array, uint16: Uint16Array, uint32: Uint32Array, uint64: BigUint64Array, bool: Uint8Array,
};

/** A container that cannot be read: says what is wrong (no data echoed). */
export class WireError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WireError';
  }
}

/**
 * Encodes `json` (whose `tensorsKey` field is filled in here) and `tensors` into one container.
 * @param json the JSON part, without its tensor index
 * @param key the field of `json` that receives the index (`host` or `saves`)
 */
export function encodeContainer(json: Record<string, unknown>, key: string, tensors: ReadonlyMap<string, Tensor> | readonly (readonly [string, Tensor])[]): Buffer {
  const index: TensorIndex[] = [];
  const parts: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    index.push({ name, dtype: t.dtype, shape: [...t.shape], offset, bytes });
    parts.push(new Uint8Array(t.data.buffer, t.data.byteOffset, bytes));
    const pad = (8 - (bytes % 8)) % 8;
    if (pad) parts.push(new Uint8Array(pad));
    offset += bytes + pad;
  }
  const head = Buffer.from(JSON.stringify({ ...json, [key]: index }), 'utf8');
  const len = Buffer.alloc(4);
  len.writeUInt32LE(head.length);
  const pad = (8 - ((MAGIC.length + 4 + head.length) % 8)) % 8;
  return Buffer.concat([Buffer.from(MAGIC, 'ascii'), len, head, Buffer.alloc(pad, 0x20), ...parts]);
}

/** A decoded container: its JSON and its tensors by name, in index order. */
export interface Container {
  json: Record<string, unknown>;
  tensors: Map<string, Tensor>;
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Decodes a container; every tensor is copied into its own aligned typed array — unless
 * `view` is set: then a tensor whose data is aligned for its dtype is a view into `buf`
 * (no copy; for a buffer the caller owns alone, such as a response body it read itself).
 * @param key the JSON field holding the tensor index
 * @throws WireError naming what is malformed
 */
export function decodeContainer(buf: Uint8Array, key: string, opts: { view?: boolean } = {}): Container {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < MAGIC.length + 4 || b.toString('ascii', 0, MAGIC.length) !== MAGIC) throw new WireError(`not a tensor container (it must start with '${MAGIC}')`);
  const n = b.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  if (start + n > b.length) throw new WireError('the JSON part is cut short');
  let json: unknown;
  try {
    json = JSON.parse(b.toString('utf8', start, start + n));
  } catch (e) {
    throw new WireError(`the JSON part is not JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (!isObj(json)) throw new WireError('the JSON part is not an object');
  const dataStart = start + n + ((8 - ((start + n) % 8)) % 8);
  const index = json[key] ?? [];
  if (!Array.isArray(index)) throw new WireError(`'${key}' is not a list`);
  const tensors = new Map<string, Tensor>();
  index.forEach((raw, i) => {
    const at = `${key}[${i}]`;
    if (!isObj(raw)) throw new WireError(`${at} is not an object`);
    const { name, dtype, shape, offset, bytes } = raw;
    if (typeof name !== 'string') throw new WireError(`${at}.name is not a string`);
    if (typeof dtype !== 'string' || !Object.prototype.hasOwnProperty.call(CTORS, dtype)) throw new WireError(`${at}.dtype is not a dtype`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) throw new WireError(`${at}.shape is not a list of sizes`);
    const dt = dtype as DType;
    const count = (shape as number[]).reduce((a, d) => a * d, 1);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || (offset as number) < 0 || bytes !== count * DTYPE_BYTES[dt]) throw new WireError(`${at}: offset/bytes do not fit its dtype and shape`);
    const from = dataStart + (offset as number);
    if (from + (bytes as number) > b.length) throw new WireError(`${at}: its data lies past the end of the request`);
    if (tensors.has(name)) throw new WireError(`${at}: '${name}' is listed twice`);
    const at0 = b.byteOffset + from;
    if (opts.view && at0 % DTYPE_BYTES[dt] === 0) {
      tensors.set(name, { dtype: dt, shape: shape as number[], data: new CTORS[dt](b.buffer as ArrayBuffer, at0, count) });
      return;
    }
    const copy = new ArrayBuffer(bytes as number);
    new Uint8Array(copy).set(b.subarray(from, from + (bytes as number)));
    tensors.set(name, { dtype: dt, shape: shape as number[], data: new CTORS[dt](copy, 0, count) });
  });
  return { json, tensors };
}

/** Reads a diagnostic from the wire (tolerant: unknown fields are dropped). */
export function diagnosticOf(e: { code: string; message: string; kind?: ErrorKind; span?: Span; notes?: readonly string[] }): DiagnosticJSON {
  return { code: e.code, message: e.message, kind: e.kind ?? 'script', ...(e.span ? { span: { ...e.span } } : {}), notes: [...(e.notes ?? [])] };
}
