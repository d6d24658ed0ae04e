/**
 * Reading ONNX model files from disk, with one clear {@link NnsError} (kind `model`) for
 * every way a file can be wrong: missing, a directory, empty, truncated, not ONNX at all,
 * an IR version or opset onnxruntime-node 1.30 cannot run.
 * @module
 */
import fs from 'node:fs';
import { fileKind, NOT_REGULAR, readRegularFile } from '../read-file.js';
import { modelError } from '../errors.js';
import type { ModelProto } from './proto.js';
import { decodeModel } from './serde.js';

/** Lowest ONNX IR version accepted (IR 3 = ONNX 1.0 with opset imports). */
export const MIN_IR_VERSION = 3;
/** Highest ONNX IR version accepted (what onnxruntime-node 1.30 runs). */
export const MAX_IR_VERSION = 13;
/** Highest default-domain (`ai.onnx`) opset accepted (what onnxruntime-node 1.30 runs). */
export const MAX_OPSET = 26;

/** A decoded model file. */
export interface ModelFile {
  /** The decoded model. Tensor `raw_data` fields are views into {@link ModelFile.bytes}. */
  proto: ModelProto;
  /** The file's bytes (a Node `Buffer`). */
  bytes: Uint8Array;
}

/**
 * Reads (only a regular file: never a FIFO or device) and decodes an ONNX file, then checks it
 * with {@link checkModelProto}.
 * @param path - file to read; error messages name it as given.
 * @throws NnsError `model-not-found`, `model-not-a-file`, `model-empty`, `model-truncated`,
 *   `model-not-onnx`, `model-ir-version`, `model-opset`.
 */
export function readModelFile(path: string): ModelFile {
  let bytes: Buffer;
  try {
    bytes = readRegularFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw modelError('model-not-found', `model file not found: ${path}`);
    if (code === 'EISDIR') throw modelError('model-not-a-file', `${path} is a directory, not an .onnx file`);
    if (code === NOT_REGULAR) throw modelError('model-not-a-file', `${path} is ${kindOf(path)}, not an .onnx file`);
    if (code === 'ERR_FS_FILE_TOO_LARGE') {
      throw modelError('model-too-large', `${path} is larger than 2 GB; an ONNX graph file must keep its weights in external data`);
    }
    throw modelError('model-unreadable', `cannot read model file ${path}: ${(e as Error).message}`);
  }
  return { proto: decodeModelFile(bytes, path), bytes };
}

/**
 * Decodes bytes that claim to be an ONNX model and checks them; `path` is only used in messages.
 * @throws NnsError as {@link readModelFile}.
 */
export function decodeModelFile(bytes: Uint8Array, path: string): ModelProto {
  if (bytes.length === 0) throw modelError('model-empty', `model file is empty: ${path}`);
  if (looksLikeText(bytes)) {
    throw modelError('model-not-onnx', `${path} is not an ONNX model (it is a ${textKind(bytes)} file)`);
  }
  let proto: ModelProto;
  try {
    proto = decodeModel(bytes);
  } catch {
    // A protobuf that starts like a model (field 1 ir_version, varint) but fails to decode
    // was cut short; anything else is not ONNX.
    if (bytes[0] === 0x08) throw modelError('model-truncated', `${path} is truncated or corrupt (protobuf decoding failed; the file has ${bytes.length} bytes)`);
    throw modelError('model-not-onnx', `${path} is not an ONNX model (not a protobuf ModelProto)`);
  }
  checkModelProto(proto, path);
  return proto;
}

/**
 * Checks that a decoded model is a runnable ONNX model: it has an IR version in
 * [{@link MIN_IR_VERSION}, {@link MAX_IR_VERSION}], opset imports with the default domain
 * at most {@link MAX_OPSET}, and a graph.
 * @throws NnsError `model-not-onnx`, `model-truncated`, `model-ir-version`, `model-opset`.
 */
export function checkModelProto(proto: ModelProto, path: string): void {
  const hasIr = proto.ir_version !== undefined;
  const hasOpset = (proto.opset_import?.length ?? 0) > 0;
  if (!hasIr && !hasOpset && !proto.graph) {
    throw modelError('model-not-onnx', `${path} is not an ONNX model (no ir_version, opset_import or graph)`);
  }
  if (!proto.graph) {
    throw modelError('model-truncated', `${path} is truncated or corrupt (the model has no graph)`);
  }
  if (!hasIr) throw modelError('model-not-onnx', `${path} is not a valid ONNX model (no ir_version)`);
  const ir = Number(proto.ir_version);
  if (ir < MIN_IR_VERSION || ir > MAX_IR_VERSION) {
    throw modelError('model-ir-version', `${path} has ONNX IR version ${ir}; supported IR versions are ${MIN_IR_VERSION} to ${MAX_IR_VERSION}`);
  }
  if (!hasOpset) throw modelError('model-not-onnx', `${path} is not a valid ONNX model (no opset_import)`);
  for (const o of proto.opset_import ?? []) {
    const domain = o.domain ?? '';
    if ((domain === '' || domain === 'ai.onnx') && Number(o.version ?? 0) > MAX_OPSET) {
      throw modelError('model-opset', `${path} uses ONNX opset ${Number(o.version)}; supported opsets are up to ${MAX_OPSET}`);
    }
  }
}

/** What a non-regular file is, for messages. */
function kindOf(path: string): string {
  try {
    return fileKind(fs.statSync(path));
  } catch {
    return 'not a regular file';
  }
}

/** True when the first bytes are printable text (JSON, YAML, a README, ...), which no ModelProto is. */
function looksLikeText(bytes: Uint8Array): boolean {
  const n = Math.min(bytes.length, 512);
  let start = 0;
  if (bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf) start = 3; // UTF-8 BOM
  if (n - start < 1) return false;
  for (let i = start; i < n; i++) {
    const b = bytes[i]!;
    const printable = b === 0x09 || b === 0x0a || b === 0x0d || (b >= 0x20 && b < 0x7f) || b >= 0x80;
    if (!printable) return false;
  }
  // A model starts with a field tag: 0x08 (ir_version) or 0x3a (graph) etc.; '{', '<', letters
  // are not tags a model writer emits first. Require the first byte to be text-like.
  const first = bytes[start]!;
  return first === 0x7b || first === 0x5b || first === 0x3c || first === 0x23 || first === 0x0a || first === 0x20
    || (first >= 0x41 && first <= 0x5a) || (first >= 0x61 && first <= 0x7a);
}

function textKind(bytes: Uint8Array): string {
  const head = Buffer.from(bytes.subarray(0, 64)).toString('utf8').trimStart();
  if (head.startsWith('{') || head.startsWith('[')) return 'JSON';
  if (head.startsWith('<')) return 'XML/HTML';
  return 'text';
}
