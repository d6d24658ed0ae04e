/**
 * ONNX external data: finding every tensor of a model, checking `external_data` references
 * against the files on disk, and moving inline weights into one external data file.
 *
 * Layout written by {@link externalizeWeights}: one data file, each tensor at an offset
 * aligned to {@link DATA_ALIGNMENT} bytes. Measured with onnxruntime-node 1.30 on Linux: ORT
 * memory-maps external initializers at any offset (it maps from the enclosing page;
 * `/proc/self/maps` shows `model.onnx.data` mappings for offsets aligned to 1, 64 and 4096),
 * so page alignment buys nothing; 64-byte alignment makes every mapped tensor's data pointer
 * cache-line and AVX-512 aligned.
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { modelError, NnsError } from '../errors.js';
import type { GraphProto, ModelProto, NodeProto, StringStringEntryProto, TensorProto } from './proto.js';
import { DataType } from './proto.js';

/** Offset alignment of each tensor in a data file written by {@link externalizeWeights}. */
export const DATA_ALIGNMENT = 64;

/**
 * Tensors whose data is smaller than this many bytes stay inline in the graph file. Same
 * threshold as `onnx.external_data_helper.convert_model_to_external_data` (1024): small
 * tensors are shape constants, scalars, biases of tiny layers; shape inference and constant
 * folding read them at session creation, and a graph full of 4-byte external reads would
 * only add syscalls. Weights are ≥ 1 KB in any real model.
 */
export const INLINE_THRESHOLD = 1024;

/** A tensor of a model, with a short description of where it sits (for messages). */
export interface TensorSite {
  /** The tensor (mutable: {@link externalizeWeights} rewrites it in place). */
  tensor: TensorProto;
  /** `initializer transformer.wte.weight`, `Constant node /Constant_3`, ... */
  where: string;
}

/** A parsed `external_data` reference. */
export interface ExternalRef {
  /** `location`: path of the data file, relative to the graph file's folder. */
  location: string;
  /** Byte offset in the file (0 when absent). */
  offset: number;
  /** Byte length (`undefined` when absent: the rest of the file). */
  length?: number;
}

/**
 * Every tensor of a model that can hold weights: graph initializers (also of subgraphs in
 * `If`/`Loop`/`Scan` attributes and of model-local functions' subgraphs), sparse initializer
 * parts, and tensor-valued node attributes (`Constant.value`).
 */
export function allTensors(model: ModelProto): TensorSite[] {
  const out: TensorSite[] = [];
  if (model.graph) graphTensors(model.graph, out);
  for (const f of model.functions ?? []) nodeTensors(f.node ?? [], out);
  return out;
}

function graphTensors(g: GraphProto, out: TensorSite[]): void {
  for (const t of g.initializer ?? []) out.push({ tensor: t, where: `initializer ${t.name ?? '?'}` });
  for (const s of g.sparse_initializer ?? []) {
    if (s.values) out.push({ tensor: s.values, where: `sparse initializer ${s.values.name ?? '?'}` });
    if (s.indices) out.push({ tensor: s.indices, where: `sparse initializer indices ${s.indices.name ?? '?'}` });
  }
  nodeTensors(g.node ?? [], out);
}

function nodeTensors(nodes: NodeProto[], out: TensorSite[]): void {
  for (const n of nodes) {
    for (const a of n.attribute ?? []) {
      const where = `${n.op_type ?? '?'} node ${n.name ?? '?'} attribute ${a.name ?? '?'}`;
      if (a.t) out.push({ tensor: a.t, where });
      for (const t of a.tensors ?? []) out.push({ tensor: t, where });
      if (a.g) graphTensors(a.g, out);
      for (const g of a.graphs ?? []) graphTensors(g, out);
    }
  }
}

/** True when the tensor's data lives in an external file. */
export function isExternal(t: TensorProto): boolean {
  return t.data_location === 1 || (t.external_data?.length ?? 0) > 0;
}

/** Parses a tensor's `external_data` entries. */
export function externalRef(t: TensorProto): ExternalRef | undefined {
  if (!isExternal(t)) return undefined;
  const kv = new Map((t.external_data ?? []).map((e: StringStringEntryProto) => [e.key ?? '', e.value ?? '']));
  const len = kv.get('length');
  return { location: kv.get('location') ?? '', offset: Number(kv.get('offset') ?? 0), length: len === undefined ? undefined : Number(len) };
}

/** True when any tensor of the model keeps its data in an external file. */
export function usesExternalData(model: ModelProto): boolean {
  return allTensors(model).some((s) => isExternal(s.tensor));
}

/** Byte size of a tensor's inline data (raw or typed fields); 0 for external tensors. */
export function inlineByteSize(t: TensorProto): number {
  if (isExternal(t)) return 0;
  if (t.raw_data) return t.raw_data.length;
  return (t.float_data?.length ?? 0) * 4 + (t.int32_data?.length ?? 0) * elemBytesOfInt32Data(t.data_type ?? 0)
    + (t.int64_data?.length ?? 0) * 8 + (t.double_data?.length ?? 0) * 8 + (t.uint64_data?.length ?? 0) * (t.data_type === DataType.UINT32 ? 4 : 8);
}

/** True when some inline tensor is at least `threshold` bytes (the model would benefit from externalizing). */
export function hasLargeInlineTensors(model: ModelProto, threshold = INLINE_THRESHOLD): boolean {
  return allTensors(model).some((s) => inlineByteSize(s.tensor) >= threshold);
}

/**
 * Checks every external reference of a model whose graph file sits in `dir`: locations are
 * relative and stay inside `dir`, the files exist, and each is at least `offset + length`
 * bytes long. Returns the distinct locations (as written in the model).
 * @param graphPath - used in messages.
 * @throws NnsError `external-data-absolute`, `external-data-escapes`, `external-data-missing`,
 *   `external-data-short`.
 */
export function checkExternalData(model: ModelProto, dir: string, graphPath: string): string[] {
  const sizes = new Map<string, number>();
  for (const { tensor, where } of allTensors(model)) {
    const ref = externalRef(tensor);
    if (!ref) continue;
    const loc = ref.location;
    if (!loc) throw modelError('external-data-missing', `${graphPath}: ${where} has external data without a location`);
    if (/[\0-\x1f]/.test(loc)) {
      throw modelError('external-data-bad-location', `${graphPath}: ${where} has external data location ${JSON.stringify(loc)} with a control character; a location is a relative file name`);
    }
    if (path.isAbsolute(loc) || path.win32.isAbsolute(loc)) {
      throw modelError('external-data-absolute', `${graphPath}: ${where} has an absolute external data location "${loc}"; locations must be relative to the model's folder`);
    }
    const resolved = path.resolve(dir, loc);
    const rel = path.relative(path.resolve(dir), resolved);
    if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
      throw modelError('external-data-escapes', `${graphPath}: ${where} has external data location "${loc}" outside the model's folder ${dir}`);
    }
    let size = sizes.get(loc);
    if (size === undefined) {
      try {
        const st = fs.statSync(resolved);
        if (!st.isFile()) throw modelError('external-data-missing', `${graphPath}: weights file ${resolved} is not a file`);
        size = st.size;
      } catch (e) {
        if (e instanceof NnsError) throw e;
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') {
          throw modelError('external-data-missing', `${graphPath}: weights file not found: ${resolved} (external data "${loc}" of ${where})`);
        }
        const why = code === 'ELOOP' ? 'too many levels of symbolic links (a symlink loop?)' : code === 'ENOTDIR' ? 'a part of the path is not a folder' : code ?? (e as Error).message;
        throw modelError('external-data-unreadable', `${graphPath}: cannot read weights file ${resolved} (external data "${loc}" of ${where}): ${why}`);
      }
      sizes.set(loc, size);
    }
    const end = ref.offset + (ref.length ?? 0);
    if (!Number.isFinite(end) || end > size) {
      throw modelError('external-data-short', `${graphPath}: weights file ${resolved} is ${size} bytes but ${where} needs bytes ${ref.offset}..${end} (truncated weights file?)`);
    }
  }
  return [...sizes.keys()];
}

/** Statistics of one {@link externalizeWeights} call. */
export interface ExternalizeResult {
  /** Number of tensors moved into the data file. */
  tensors: number;
  /** Size of the data file in bytes (including alignment padding). */
  bytes: number;
  /** sha256 (hex) of the data file as written. */
  sha256: string;
}

/**
 * Moves every inline tensor of at least `threshold` bytes into the data file `dataPath`,
 * rewriting the tensors **in place** to reference it as `location` (relative to the graph
 * file that will be written). `raw_data` views are written straight from the buffer they
 * point into (no copy into JS arrays); `float_data`/`int32_data`/`int64_data`/`double_data`/
 * `uint64_data` are converted to little-endian raw bytes. String tensors and sub-byte types
 * stored in typed fields stay inline. The data file is created (truncated) and fsynced.
 */
export function externalizeWeights(model: ModelProto, dataPath: string, location: string, threshold = INLINE_THRESHOLD): ExternalizeResult {
  const fd = fs.openSync(dataPath, 'w');
  const hash = crypto.createHash('sha256');
  const writeAll = (b: Uint8Array): void => {
    hash.update(b);
    writeFully(fd, b);
  };
  let pos = 0;
  let count = 0;
  const pad = new Uint8Array(DATA_ALIGNMENT);
  try {
    for (const { tensor } of allTensors(model)) {
      if (isExternal(tensor) || inlineByteSize(tensor) < threshold) continue;
      const bytes = tensor.raw_data ?? typedFieldBytes(tensor);
      if (!bytes) continue;
      const offset = Math.ceil(pos / DATA_ALIGNMENT) * DATA_ALIGNMENT;
      if (offset > pos) writeAll(pad.subarray(0, offset - pos));
      writeAll(bytes);
      pos = offset + bytes.length;
      count++;
      clearInlineData(tensor);
      tensor.data_location = 1;
      tensor.external_data = [
        { key: 'location', value: location },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(bytes.length) },
      ];
    }
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return { tensors: count, bytes: pos, sha256: hash.digest('hex') };
}

function writeFully(fd: number, bytes: Uint8Array): void {
  let done = 0;
  while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

function clearInlineData(t: TensorProto): void {
  delete t.raw_data;
  delete t.float_data;
  delete t.int32_data;
  delete t.int64_data;
  delete t.double_data;
  delete t.uint64_data;
}

/** Bytes per element that an `int32_data` entry stands for, by data type (0: not convertible). */
function elemBytesOfInt32Data(dt: number): number {
  switch (dt) {
    case DataType.INT32: return 4;
    case DataType.INT16: case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16: return 2;
    case DataType.INT8: case DataType.UINT8: case DataType.BOOL:
    case DataType.FLOAT8E4M3FN: case DataType.FLOAT8E4M3FNUZ: case DataType.FLOAT8E5M2: case DataType.FLOAT8E5M2FNUZ: case DataType.FLOAT8E8M0:
      return 1;
    default: return 0;
  }
}

/** Little-endian raw bytes of a tensor stored in typed fields, or `undefined` when it cannot be converted. */
function typedFieldBytes(t: TensorProto): Uint8Array | undefined {
  const dt = t.data_type ?? 0;
  const asBytes = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  if (t.float_data?.length && (dt === DataType.FLOAT || dt === DataType.COMPLEX64)) return asBytes(Float32Array.from(t.float_data));
  if (t.double_data?.length && (dt === DataType.DOUBLE || dt === DataType.COMPLEX128)) return asBytes(Float64Array.from(t.double_data));
  if (t.int64_data?.length && dt === DataType.INT64) return asBytes(BigInt64Array.from(t.int64_data, (v) => BigInt(v)));
  if (t.uint64_data?.length && dt === DataType.UINT64) return asBytes(BigUint64Array.from(t.uint64_data, (v) => BigInt(v)));
  if (t.uint64_data?.length && dt === DataType.UINT32) return asBytes(Uint32Array.from(t.uint64_data, (v) => Number(v)));
  if (t.int32_data?.length) {
    switch (elemBytesOfInt32Data(dt)) {
      case 4: return asBytes(Int32Array.from(t.int32_data));
      case 2: return asBytes(Uint16Array.from(t.int32_data, (v) => v & 0xffff));
      case 1: return asBytes(Uint8Array.from(t.int32_data, (v) => v & 0xff));
      default: return undefined;
    }
  }
  return undefined;
}
