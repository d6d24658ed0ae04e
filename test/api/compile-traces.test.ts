/**
 * `nns compile` (issue 8 item 5): a script with several traces compiles to one model per
 * trace (`-o out.onnx` → out.onnx, out.2.onnx), listed on stdout; a later trace's use of
 * an earlier save is a graph input. Saves keep their names as graph outputs; a save whose
 * name the model's interface already uses is renamed and nns compile says so; an internal
 * value of the model with a save's name is renamed instead of the save. A script with an
 * error in any trace writes nothing. The written models are run in onnxruntime and compared
 * with PyTorch (reference.json clean_logits and zero_ablate_mlp at layer 3).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';
import { EXPORTS, MODEL_DIR, ROOT, expectClose, refCase } from '../helpers/reference.js';

const SCRIPTS = path.join(ROOT, 'test', 'scripts', 'idioms');
const ids = refCase('clean_logits').input_ids as number[];
const clean = (refCase('clean_logits').expect as { last_logits: number[] }).last_logits;
const ablated3 = (refCase('zero_ablate_mlp').expect as { layer: number; last_logits: number[] }[]).find((k) => k.layer === 3)!.last_logits;

const nns = (args: string[]) => runNns(args);

/** Runs a written model on the prompt (plus `extra` feeds); returns every output. */
async function runModel(file: string, extra: Record<string, ort.Tensor> = {}): Promise<Record<string, ort.Tensor>> {
  const s = await ort.InferenceSession.create(file);
  const n = ids.length;
  const feeds: Record<string, ort.Tensor> = { ...extra };
  for (const name of s.inputNames) {
    if (name === 'input_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, n]);
    else if (name === 'attention_mask') feeds[name] = new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]);
    else if (name === 'position_ids') feeds[name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(i)), [1, n]);
  }
  const out = await s.run(feeds);
  await s.release();
  return out;
}

describe('nns compile', () => {
  it('compiles every trace of a script to its own model, listed on stdout, each agreeing with PyTorch', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-compile-traces-'));
    const out = path.join(dir, 'out.onnx');
    const r = await nns(['compile', path.join(SCRIPTS, 'two_traces.nns'), '--model', MODEL_DIR, '-o', out]);
    expect(r.code, r.err).toBe(0);
    const second = path.join(dir, 'out.2.onnx');
    expect(r.out).toMatch(new RegExp(`^wrote ${out.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(trace 1 at .*two_traces\\.nns:2:1`, 'm'));
    expect(r.out).toMatch(/^wrote .*out\.2\.onnx \(trace 2 at .*two_traces\.nns:6:1; inputs host\.hb \(save 'hb' of an earlier trace\)/m);
    expect(r.out).toContain("note: save 'logits' is graph output 'logits_1'");
    expect(r.out).toContain("the model has an output 'logits'");
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.onnx')).sort()).toEqual(['out.2.onnx', 'out.onnx']);

    const one = await runModel(out);
    expectClose(one.logits_1!.data as Float32Array, clean, 1e-4, 'trace 1 logits');
    expect(Object.keys(one)).toContain('hb'); // the save's own name
    const two = await runModel(second, { 'host.hb': one.hb! });
    expectClose(two.ablated!.data as Float32Array, ablated3, 1e-4, 'trace 2 ablated');
  }, 120_000);

  it('writes nothing when a later trace has an error', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-compile-bad-'));
    const r = await nns(['compile', path.join(SCRIPTS, 'two_traces_bad.nns'), '--model', MODEL_DIR, '-o', path.join(dir, 'out.onnx')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/two_traces_bad\.nns:5:7: error\[unknown-module\]/);
    expect(fs.readdirSync(dir)).toEqual([]);
  }, 60_000);

  it.each(EXPORTS)('saves keep their names over internal value names ($name export)', async ({ path: model }) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-compile-names-'));
    const out = path.join(dir, 'out.onnx');
    const r = await nns(['compile', path.join(SCRIPTS, 'internal_name.nns'), '--model', model, '-o', out]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).not.toContain('note:');
    const res = await runModel(out);
    expectClose(res.where!.data as Float32Array, clean, 1e-4, "save 'where'");
    expect(res.logits!.dims).toEqual([1, ids.length, clean.length]);
    expectClose((res.logits!.data as Float32Array).subarray((ids.length - 1) * clean.length), clean, 1e-4, "the model's logits");
  }, 60_000);
});
