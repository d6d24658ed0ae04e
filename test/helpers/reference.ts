/**
 * Ground truth from PyTorch (forward hooks): models/gpt2-facts/reference.json, and
 * comparison helpers used by the API and language tests.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'vitest';
import type { Tensor } from '../../src/tensor.js';
import type { ModelRef, ModuleRef } from '../../src/trace.js';

export const ROOT = path.resolve(import.meta.dirname, '..', '..');
export const MODEL_DIR = path.join(ROOT, 'models', 'gpt2-facts');
/** Both exports of gpt2-facts: the model folder (TorchScript export) and the bare dynamo file. */
export const EXPORTS = [
  { name: 'torchscript', path: MODEL_DIR },
  { name: 'dynamo', path: path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx') },
] as const;

export interface RefCase {
  id: string;
  doc: string;
  prompt?: string;
  input_ids: number[] | number[][];
  source_ids?: number[];
  answer_id?: number;
  source_answer_id?: number;
  layer?: number;
  alpha?: number;
  vector?: number[];
  expect: unknown;
}

const reference = JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'reference.json'), 'utf8')) as { cases: RefCase[]; paths: Record<string, string | string[]> };

/** A reference case by id. */
export function refCase(id: string): RefCase {
  const c = reference.cases.find((x) => x.id === id);
  if (!c) throw new Error(`no reference case ${id}`);
  return c;
}

/** Asserts every element within `tol` (absolute), reporting the worst index. */
export function expectClose(actual: ArrayLike<number | bigint>, expected: readonly number[], tol: number, what = 'values'): void {
  expect(actual.length, `${what}: length`).toBe(expected.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(Number(actual[i]) - expected[i]!);
    if (!(d <= worst)) {
      worst = d;
      at = i;
    }
  }
  expect(worst, `${what}: max abs diff at ${at} (got ${at >= 0 ? Number(actual[at]) : ''}, want ${at >= 0 ? expected[at] : ''})`).toBeLessThanOrEqual(tol);
}

/** Softmax of a vector (float64). */
export function softmax(xs: ArrayLike<number>): number[] {
  let m = -Infinity;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, xs[i]!);
  const e = Array.from(xs, (x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

/** Index of the maximum. */
export function argmax(xs: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < xs.length; i++) if (xs[i]! > xs[best]!) best = i;
  return best;
}

/** Indices of the k largest values, largest first. */
export function topk(xs: ArrayLike<number>, k: number): number[] {
  return Array.from(xs, (v, i) => [v, i] as const).sort((a, b) => b[0] - a[0]).slice(0, k).map((p) => p[1]);
}

/** Row `r` of the last dimension of a tensor flattened to rows. */
export function row(t: Tensor, r: number): Float32Array {
  const n = t.shape[t.shape.length - 1]!;
  return (t.data as Float32Array).subarray(r * n, (r + 1) * n);
}

/** A module proxy by path: `transformer.h.0.mlp` → `m.transformer.h[0].mlp`. */
export function mod(m: ModelRef, p: string): ModuleRef {
  return p.split('.').reduce<ModuleRef>((acc, seg) => acc[seg]!, m);
}

/** Largest absolute elementwise difference of two tensors of the same shape. */
export function maxDiff(a: Tensor, b: Tensor): number {
  expect(a.shape).toEqual(b.shape);
  let d = 0;
  for (let i = 0; i < a.data.length; i++) d = Math.max(d, Math.abs(Number(a.data[i]) - Number(b.data[i])));
  return d;
}

/** One case of models/gpt2-facts/reference-generate.json (generation with per-step interventions, from PyTorch). */
export interface GenCase {
  id: string;
  prompt?: string;
  prompts?: string[];
  input_ids: number[] | number[][];
  max_new_tokens: number;
  stop_at_eos?: boolean;
  alpha?: number;
  vector?: number[];
  steps?: 'all' | number[];
  expect: { ids: number[] | number[][]; last_logits?: number[][]; top1?: number[]; outputs?: { step: number; shape: number[]; values: number[] }[] };
}

let genRef: { cases: GenCase[] } | undefined;
/** The case `id` of reference-generate.json. */
export function genCase(id: string): GenCase {
  genRef ??= JSON.parse(fs.readFileSync(path.join(MODEL_DIR, 'reference-generate.json'), 'utf8')) as { cases: GenCase[] };
  const c = genRef.cases.find((x) => x.id === id);
  if (!c) throw new Error(`reference-generate.json has no case ${id}`);
  return c;
}

/** The three gpt2-facts exports a generation runs on: with a key/value cache, and the two without. */
export const GEN_EXPORTS = {
  'with-past': path.join(MODEL_DIR, 'onnx', 'model.with-past.onnx'),
  torchscript: MODEL_DIR,
  dynamo: path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx'),
} as const;
/** A key of {@link GEN_EXPORTS}. */
export type GenExportName = keyof typeof GEN_EXPORTS;

/** A value in an `nns run --out FILE.json` results file. */
export interface SavedJSON { dtype: string; shape: number[]; data: number[] }

/**
 * Asserts the results of test/scripts/generate/reference_generate.nns against PyTorch: every
 * single-prompt case of reference-generate.json (token ids exact), the per-step case's
 * last-position logits and block outputs (within 1e-4), and reference.json's generate case
 * (clean and steered ids).
 */
export function expectGenerateReference(results: Record<string, SavedJSON>): void {
  for (const id of ['clean', 'steered_all_steps', 'steer_step0_only', 'steer_step2_only', 'stop_at_eos']) {
    expect(results[id]!.dtype, id).toBe('int64');
    expect(results[id]!.shape, id).toEqual([1, (genCase(id).expect.ids as number[]).length]);
    expect(results[id]!.data, id).toEqual(genCase(id).expect.ids);
  }
  const ps = genCase('per_step');
  expect(results.clean!.data).toEqual(ps.expect.ids);
  ps.expect.last_logits!.forEach((want, s) => expectClose(results[`logits.${s}`]!.data, want, 1e-4, `logits.${s}`));
  for (const o of ps.expect.outputs!) {
    expect(results[`h1.${o.step}`]!.shape).toEqual(o.shape);
    expectClose(results[`h1.${o.step}`]!.data, o.values, 1e-4, `h1.${o.step}`);
  }
  const g = refCase('generate').expect as { clean: number[]; steered: number[] };
  expect(results.clean!.data).toEqual(g.clean);
  expect(results.steered_all_steps!.data).toEqual(g.steered);
}
