/**
 * Resolving the model under test and building its feeds (shared by bench/run.ts and the
 * smoke test).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeModel } from '../src/onnx/serde.js';
import { dataTypeBits } from '../src/onnx/proto.js';
import type { ModelProto } from '../src/onnx/proto.js';
import type { BenchModel } from './measure.js';

/** Resolves `--model` (folder with `onnx/model.onnx` or `model.onnx`, or an `.onnx` file) to a graph path. */
export function resolveGraph(p: string): string {
  const abs = path.resolve(p);
  if (!fs.existsSync(abs)) throw new Error(`no such model: ${p}`);
  if (fs.statSync(abs).isFile()) return abs;
  for (const c of ['onnx/model.onnx', 'model.onnx']) if (fs.existsSync(path.join(abs, c))) return path.join(abs, c);
  throw new Error(`${p}: no onnx/model.onnx or model.onnx inside`);
}

export function describeModel(graphPath: string, name: string, paramsOverride?: number): BenchModel {
  const model: ModelProto = decodeModel(fs.readFileSync(graphPath));
  const g = model.graph ?? {};
  let elems = 0, bytes = 0;
  for (const t of g.initializer ?? []) {
    const n = (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1);
    elems += n;
    bytes += Math.ceil((n * dataTypeBits(t.data_type ?? 0)) / 8);
  }
  const logits = g.output?.find((o) => o.name === 'logits') ?? g.output?.[0];
  const last = logits?.type?.tensor_type?.shape?.dim?.at(-1)?.dim_value;
  const inits = new Set((g.initializer ?? []).map((t) => t.name));
  return {
    name,
    graphPath,
    params: paramsOverride ?? elems,
    weightsMb: bytes / 1e6,
    vocab: last !== undefined ? Number(last) : undefined,
    inputNames: (g.input ?? []).map((v) => v.name!).filter((n) => !inits.has(n)),
    outputNames: (g.output ?? []).map((v) => v.name!),
  };
}

/** The longest sequence the model supports, from a nearby `config.json` or our `manifest.json`. */
export function maxPositions(graphPath: string): number | undefined {
  const dir = path.dirname(graphPath);
  for (const f of [path.join(dir, 'manifest.json'), path.join(dir, 'config.json'), path.join(dir, '..', 'config.json')]) {
    if (!fs.existsSync(f)) continue;
    const j = JSON.parse(fs.readFileSync(f, 'utf8')) as { config?: { positions?: number }; n_positions?: number; max_position_embeddings?: number };
    const n = j.config?.positions ?? j.n_positions ?? j.max_position_embeddings;
    if (typeof n === 'number') return n;
  }
  return undefined;
}

/** mulberry32: seeded uniform floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function makeFeeds(m: BenchModel, batch: number, seq: number, seed: number): Record<string, ort.Tensor> {
  const rand = mulberry32(seed + 1);
  const vocab = m.vocab ?? 100;
  const n = batch * seq;
  const feeds: Record<string, ort.Tensor> = {};
  for (const name of m.inputNames) {
    let data: BigInt64Array;
    switch (name) {
      case 'input_ids': data = BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rand() * vocab))); break;
      case 'attention_mask': data = new BigInt64Array(n).fill(1n); break;
      case 'position_ids': data = BigInt64Array.from({ length: n }, (_, i) => BigInt(i % seq)); break;
      case 'token_type_ids': data = new BigInt64Array(n); break;
      default: throw new Error(`don't know how to feed model input ${JSON.stringify(name)} (supported: input_ids, attention_mask, position_ids, token_type_ids)`);
    }
    feeds[name] = new ort.Tensor('int64', data, [batch, seq]);
  }
  return feeds;
}

