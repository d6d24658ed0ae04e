/**
 * `nns run --out FILE`: saved values written to a file, streamed so that results of any size
 * fit (one `JSON.stringify` of everything stops at V8's string limit, about 2^29 characters —
 * some 28 M floats). Written to a temporary file and renamed after success only.
 *
 * - `FILE.json` (any name but `.safetensors`): `{"NAME": {"dtype", "shape", "data": [...]}, ...,
 *   "$families": ..., "$prompts": ...}` (src/report/report.ts `reportToJSON`, byte for byte),
 *   exactly what `JSON.stringify` of {@link tensorToJSON} gives (int64 as plain numbers, NaN
 *   and ±Infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"`), in save order.
 * - `FILE.safetensors`: the safetensors format (8-byte little-endian header length, a JSON
 *   header `{NAME: {dtype: "F32", shape, data_offsets}}`, then the raw little-endian data),
 *   readable by `safetensors`, PyTorch, NumPy or a few lines of any language; about a third of
 *   the JSON's size and exact for every dtype.
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { NnsError, usageError } from '../errors.js';
import type { DType, Tensor } from '../tensor.js';

const FLUSH = 1 << 20;

/** A buffered writer on a file descriptor. */
class Sink {
  private parts: string[] = [];
  private size = 0;
  constructor(private readonly fd: number) {}

  text(s: string): void {
    this.parts.push(s);
    this.size += s.length;
    if (this.size >= FLUSH) this.flush();
  }

  bytes(b: Uint8Array): void {
    this.flush();
    let done = 0;
    while (done < b.length) done += fs.writeSync(this.fd, b, done, Math.min(b.length - done, 1 << 26));
  }

  flush(): void {
    if (this.size === 0) return;
    const buf = Buffer.from(this.parts.join(''), 'utf8');
    this.parts = [];
    this.size = 0;
    let done = 0;
    while (done < buf.length) done += fs.writeSync(this.fd, buf, done, buf.length - done);
  }
}

/** Writes the JSON form of `results` and then of `extra`'s fields (see the module comment) to `sink`, a chunk at a time. */
function writeJson(sink: Sink, results: ReadonlyMap<string, Tensor>, extra: Readonly<Record<string, unknown>>): void {
  sink.text('{');
  let first = true;
  for (const [name, t] of results) {
    sink.text(`${first ? '' : ','}${JSON.stringify(name)}:{"dtype":${JSON.stringify(t.dtype)},"shape":${JSON.stringify([...t.shape])},"data":[`);
    first = false;
    const data = t.data;
    const n = data.length;
    for (let i = 0; i < n; i += 4096) {
      const end = Math.min(n, i + 4096);
      let s = i === 0 ? '' : ',';
      for (let j = i; j < end; j++) {
        const v = Number(data[j]);
        s += (j === i ? '' : ',') + (Number.isFinite(v) ? String(v) : `"${String(v)}"`);
      }
      sink.text(s);
    }
    sink.text(']}');
  }
  for (const [k, v] of Object.entries(extra)) {
    if (!jsonable(v)) continue;
    sink.text(`${first ? '' : ','}${JSON.stringify(k)}:`);
    first = false;
    streamValue(sink, v);
  }
  sink.text('}\n');
  sink.flush();
}

function jsonable(v: unknown): boolean {
  return v !== undefined && typeof v !== 'function' && typeof v !== 'symbol';
}

/** Writes `v` as `JSON.stringify(v)` would, long arrays a chunk at a time. */
function streamValue(sink: Sink, v: unknown): void {
  if (v === null || typeof v !== 'object') {
    sink.text(JSON.stringify(v) ?? 'null');
    return;
  }
  if (Array.isArray(v)) {
    sink.text('[');
    for (let i = 0; i < v.length; i += 4096) {
      const end = Math.min(v.length, i + 4096);
      let s = '';
      for (let j = i; j < end; j++) {
        const x: unknown = v[j];
        const sep = j === 0 ? '' : ',';
        if (x !== null && typeof x === 'object') {
          sink.text(s + sep);
          s = '';
          streamValue(sink, x);
        } else s += sep + (jsonable(x) ? JSON.stringify(x) : 'null');
      }
      sink.text(s);
    }
    sink.text(']');
    return;
  }
  if (typeof (v as { toJSON?: unknown }).toJSON === 'function') {
    sink.text(JSON.stringify(v));
    return;
  }
  sink.text('{');
  let first = true;
  for (const [k, x] of Object.entries(v)) {
    if (!jsonable(x)) continue;
    sink.text(`${first ? '' : ','}${JSON.stringify(k)}:`);
    first = false;
    streamValue(sink, x);
  }
  sink.text('}');
}

const SAFETENSORS_DTYPE: Record<DType, string> = {
  float32: 'F32', float64: 'F64', float16: 'F16', bfloat16: 'BF16', int64: 'I64', int32: 'I32', int16: 'I16', int8: 'I8',
  uint8: 'U8', uint16: 'U16', uint32: 'U32', uint64: 'U64', bool: 'BOOL',
};

/** Writes `results` in the safetensors format to `sink`. */
function writeSafetensors(sink: Sink, results: ReadonlyMap<string, Tensor>): void {
  const header: Record<string, unknown> = { __metadata__: { format: 'pt', producer: 'onnsight' } };
  let offset = 0;
  for (const [name, t] of results) {
    const dtype = SAFETENSORS_DTYPE[t.dtype];
    if (!dtype) throw usageError('out-dtype', `cannot write '${name}' (${t.dtype}) to safetensors`);
    header[name] = { dtype, shape: [...t.shape], data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  json = Buffer.concat([json, Buffer.alloc(padded - json.length, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  sink.bytes(len);
  sink.bytes(json);
  for (const t of results.values()) sink.bytes(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
}

/**
 * Writes saved values to `file` (JSON, or safetensors for a `.safetensors` name), streamed,
 * through a temporary file renamed into place after success only. The JSON form also holds
 * `extra`'s fields after the saves (`$families`, `$prompts`), written as `JSON.stringify`
 * would; safetensors holds the saves only.
 * @throws NnsError `cannot-write` (usage) when the file cannot be written (no partial file stays).
 */
export function writeResultsFile(file: string, results: ReadonlyMap<string, Tensor>, extra: Readonly<Record<string, unknown>> = {}): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, 'w');
    const sink = new Sink(fd);
    if (file.toLowerCase().endsWith('.safetensors')) writeSafetensors(sink, results);
    else writeJson(sink, results, extra);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    if (e instanceof NnsError) throw e;
    throw usageError('cannot-write', `cannot write '${file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
