/**
 * The one module that touches ONNX protobuf encoding.
 *
 * A generic, schema-driven codec over protobufjs's wire reader and writer: every message is
 * decoded into a plain object keyed by the schema's field names, and everything the schema
 * does not describe (fields of newer ONNX versions, unknown extensions, a field seen with an
 * unexpected wire type) is kept as raw bytes and written back unchanged. Known fields are
 * written in field-number order, as protobuf's C++ and Python serializers do, so a model
 * decoded and encoded again is byte-identical to the file it came from.
 *
 * `bytes` fields (tensor `raw_data`) are views into the input buffer, never copies.
 * @module
 */
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import Long from 'long';
import type { ModelProto, TensorProto } from './proto.js';

protobuf.util.Long = Long;
protobuf.configure();

const PROTO_PATH = fileURLToPath(new URL('./onnx.proto', import.meta.url));
const root = protobuf.parse(fs.readFileSync(PROTO_PATH, 'utf8'), { keepCase: true }).root;
root.resolveAll();

/** Raw bytes (tag included) of fields the schema does not know, kept per message. */
const UNKNOWN = Symbol('onnsight.unknownFields');
/** Field ids whose packed/unpacked encoding on the wire differs from the schema's default. */
const PACKING = Symbol('onnsight.packingOverride');

type Msg = Record<string | symbol, unknown>;

const WIRE: Record<string, number> = {
  int32: 0, int64: 0, uint32: 0, uint64: 0, sint32: 0, sint64: 0, bool: 0,
  fixed64: 1, sfixed64: 1, double: 1, string: 2, bytes: 2, fixed32: 5, sfixed32: 5, float: 5,
};

interface FieldInfo {
  name: string;
  id: number;
  repeated: boolean;
  /** 'message' | 'enum' | a scalar protobuf type name. */
  kind: string;
  wire: number;
  packedDefault: boolean;
  message?: TypeInfo;
}

interface TypeInfo {
  name: string;
  byId: Map<number, FieldInfo>;
  ordered: FieldInfo[];
}

const typeCache = new Map<protobuf.Type, TypeInfo>();

function typeInfo(t: protobuf.Type): TypeInfo {
  let info = typeCache.get(t);
  if (info) return info;
  info = { name: t.name, byId: new Map(), ordered: [] };
  typeCache.set(t, info);
  for (const f of t.fieldsArray) {
    f.resolve();
    const resolved = f.resolvedType;
    const kind = resolved instanceof protobuf.Type ? 'message' : resolved instanceof protobuf.Enum ? 'enum' : f.type;
    const fi: FieldInfo = {
      name: f.name,
      id: f.id,
      repeated: f.repeated,
      kind,
      wire: kind === 'message' ? 2 : kind === 'enum' ? 0 : WIRE[f.type] ?? 2,
      packedDefault: f.repeated && kind !== 'message' && kind !== 'string' && kind !== 'bytes' && f.packed,
    };
    if (resolved instanceof protobuf.Type) fi.message = typeInfo(resolved);
    info.byId.set(f.id, fi);
    info.ordered.push(fi);
  }
  info.ordered.sort((a, b) => a.id - b.id);
  return info;
}

function toInt64(v: Long | number): number | bigint {
  if (typeof v === 'number') return v;
  const n = v.toNumber();
  return Number.isSafeInteger(n) ? n : BigInt(v.toString());
}

function readScalar(r: protobuf.Reader, kind: string): unknown {
  switch (kind) {
    case 'int32': case 'enum': return r.int32();
    case 'uint32': return r.uint32();
    case 'sint32': return r.sint32();
    case 'int64': return toInt64(r.int64() as Long | number);
    case 'uint64': return toInt64(r.uint64() as Long | number);
    case 'sint64': return toInt64(r.sint64() as Long | number);
    case 'fixed64': return toInt64(r.fixed64() as Long | number);
    case 'sfixed64': return toInt64(r.sfixed64() as Long | number);
    case 'bool': return r.bool();
    case 'double': return r.double();
    case 'float': return r.float();
    case 'fixed32': return r.fixed32();
    case 'sfixed32': return r.sfixed32();
    case 'string': return r.string();
    case 'bytes': return r.bytes();
    default: throw new Error(`internal: unsupported protobuf scalar ${kind}`);
  }
}

function decodeMessage(info: TypeInfo, r: protobuf.Reader, end: number): Msg {
  const obj: Msg = {};
  while (r.pos < end) {
    const start = r.pos;
    const tag = r.uint32();
    const id = tag >>> 3;
    const wt = tag & 7;
    const f = info.byId.get(id);
    const packedOnWire = f !== undefined && f.repeated && wt === 2 && f.wire !== 2;
    if (!f || (wt !== f.wire && !packedOnWire)) {
      r.skipType(wt);
      const raw = r.buf.subarray(start, r.pos);
      ((obj[UNKNOWN] as Uint8Array[] | undefined) ?? (obj[UNKNOWN] = [] as Uint8Array[]) as Uint8Array[]).push(raw);
      continue;
    }
    if (f.repeated && (packedOnWire || (f.wire !== 2 && wt !== 2)) && packedOnWire !== f.packedDefault) {
      const set = (obj[PACKING] as Set<number> | undefined) ?? new Set<number>();
      set.add(id);
      obj[PACKING] = set;
    }
    let list: unknown[] | undefined;
    if (f.repeated) list = (obj[f.name] as unknown[] | undefined) ?? (obj[f.name] = [] as unknown[]) as unknown[];
    if (packedOnWire) {
      const len = r.uint32();
      const stop = r.pos + len;
      while (r.pos < stop) list!.push(readScalar(r, f.kind));
      continue;
    }
    let value: unknown;
    if (f.kind === 'message') {
      const len = r.uint32();
      value = decodeMessage(f.message!, r, r.pos + len);
    } else {
      value = readScalar(r, f.kind);
    }
    if (list) list.push(value);
    else obj[f.name] = value;
  }
  if (r.pos !== end) throw new RangeError('index out of range: message ends past its container');
  return obj;
}

function writeScalar(w: protobuf.Writer, kind: string, v: unknown): void {
  const big = (x: unknown): number | Long => (typeof x === 'bigint' ? Long.fromString(x.toString(), kind.startsWith('u') || kind === 'fixed64') : (x as number));
  switch (kind) {
    case 'int32': case 'enum': w.int32(v as number); break;
    case 'uint32': w.uint32(v as number); break;
    case 'sint32': w.sint32(v as number); break;
    case 'int64': w.int64(big(v)); break;
    case 'uint64': w.uint64(big(v)); break;
    case 'sint64': w.sint64(big(v)); break;
    case 'fixed64': w.fixed64(big(v)); break;
    case 'sfixed64': w.sfixed64(big(v)); break;
    case 'bool': w.bool(v as boolean); break;
    case 'double': w.double(v as number); break;
    case 'float': w.float(v as number); break;
    case 'fixed32': w.fixed32(v as number); break;
    case 'sfixed32': w.sfixed32(v as number); break;
    case 'string': w.string(v as string); break;
    case 'bytes': w.bytes(v as Uint8Array); break;
    default: throw new Error(`internal: unsupported protobuf scalar ${kind}`);
  }
}

function encodeMessage(info: TypeInfo, obj: Msg, w: protobuf.Writer): void {
  const packing = obj[PACKING] as Set<number> | undefined;
  for (const f of info.ordered) {
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    if (f.repeated) {
      const list = v as unknown[];
      if (list.length === 0) continue;
      const packed = f.wire !== 2 && (packing?.has(f.id) ? !f.packedDefault : f.packedDefault);
      if (packed) {
        w.uint32(((f.id << 3) | 2) >>> 0).fork();
        for (const x of list) writeScalar(w, f.kind, x);
        w.ldelim();
        continue;
      }
      for (const x of list) writeOne(f, x, w);
    } else {
      writeOne(f, v, w);
    }
  }
  const unknown = obj[UNKNOWN] as Uint8Array[] | undefined;
  if (unknown) for (const raw of unknown) writeRaw(w, raw);
}

function writeOne(f: FieldInfo, v: unknown, w: protobuf.Writer): void {
  w.uint32(((f.id << 3) | f.wire) >>> 0);
  if (f.kind === 'message') {
    w.fork();
    encodeMessage(f.message!, v as Msg, w);
    w.ldelim();
  } else {
    writeScalar(w, f.kind, v);
  }
}

/** Appends bytes verbatim (an unknown field, tag included). */
function writeRaw(w: protobuf.Writer, raw: Uint8Array): void {
  w.raw(raw);
}

function typeOf(name: string): TypeInfo {
  return typeInfo(root.lookupType(`onnx.${name}`));
}

/** Thrown when bytes are not a well-formed protobuf message of the expected type. */
export class ProtobufDecodeError extends Error {}

/** Decodes any ONNX message by its schema name (`"ModelProto"`, `"TensorProto"`, ...). */
export function decodeMessageOf<T>(typeName: string, bytes: Uint8Array): T {
  const r = protobuf.Reader.create(bytes);
  try {
    return decodeMessage(typeOf(typeName), r, bytes.length) as T;
  } catch (e) {
    throw new ProtobufDecodeError(e instanceof Error ? e.message : String(e));
  }
}

/** Encodes any ONNX message by its schema name. */
export function encodeMessageOf(typeName: string, msg: object): Uint8Array {
  const w = protobuf.Writer.create();
  encodeMessage(typeOf(typeName), msg as Msg, w);
  return w.finish();
}

/**
 * Decodes an ONNX model file's bytes. Tensor `raw_data` fields are views into `bytes`.
 *
 * ```ts
 * const proto = decodeModel(new Uint8Array(fs.readFileSync('model.onnx')));
 * ```
 * @category ONNX
 */
export function decodeModel(bytes: Uint8Array): ModelProto {
  return decodeMessageOf<ModelProto>('ModelProto', bytes);
}

/**
 * Encodes a model; fields the decoder did not recognise are written back unchanged.
 *
 * ```ts
 * fs.writeFileSync('copy.onnx', encodeModel(model.proto)); // byte-identical for an unchanged model
 * ```
 * @category ONNX
 */
export function encodeModel(model: ModelProto): Uint8Array {
  return encodeMessageOf('ModelProto', model);
}

/** Encodes a single tensor (used for tests and for constants shipped to a remote executor). */
export function encodeTensor(t: TensorProto): Uint8Array {
  return encodeMessageOf('TensorProto', t);
}
