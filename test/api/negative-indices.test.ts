/**
 * Negative module-list indices (issue 8 item 4), NNsight's `model.transformer.h[-1]`: in
 * references, sets, module calls and loops (`h[l - 4]`), in `.nns` (CLI, fast and compiled
 * paths, both gpt2-facts exports) and in the TS API; saved names carry the resolved index;
 * an index before the start of the list is the usual located `unknown-module` error.
 * Values are compared against PyTorch (models/gpt2-facts/reference.json).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';
import { LanguageModel } from '../../src/index.js';
import { EXPORTS, MODEL_DIR, ROOT, argmax, expectClose, refCase } from '../helpers/reference.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-negidx-'));
const SCRIPTS = path.join(ROOT, 'test', 'scripts', 'idioms');
type Results = Record<string, { shape: number[]; data: number[] }>;

const nns = (args: string[], env: Record<string, string> = {}) => runNns(args, { env });

const saveOutputs = refCase('save_outputs').expect as Record<string, { shape: number[]; values: number[] }>;
const lensRef = refCase('logit_lens').expect as { layer: number; top1: number; p_top1: number; p_answer: number }[];
const ablateRef = (refCase('zero_ablate_mlp').expect as { layer: number; last_logits: number[] }[]).find((k) => k.layer === 3)!;

/** Checks a run of negative_indices.nns against PyTorch. */
function checkAgainstPyTorch(r: Results): void {
  expect(r.last_block!.shape).toEqual(saveOutputs['transformer.h.3']!.shape);
  expectClose(r.last_block!.data, saveOutputs['transformer.h.3']!.values, 1e-4, 'h[-1].output');
  for (const k of lensRef) {
    const lens = r[`lens.${k.layer}`]!.data;
    expect(argmax(lens), `lens.${k.layer} top1`).toBe(k.top1);
    expect(Math.abs(lens[k.top1]! - k.p_top1), `lens.${k.layer} p_top1`).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(lens[383]! - k.p_answer), `lens.${k.layer} p_answer`).toBeLessThanOrEqual(1e-5);
    const name = `transformer.h.${k.layer}.mlp.output`;
    expect(Object.keys(r)).toContain(name);
    expectClose(r[name]!.data, saveOutputs[`transformer.h.${k.layer}.mlp`]!.values, 1e-4, name);
  }
  expectClose(r.ablated!.data, ablateRef.last_logits, 1e-4, 'h[-1].mlp.output = 0');
}

describe('negative module indices in .nns', () => {
  it.each([
    ...EXPORTS.map((e) => [`${e.name} export`, e.path, {}] as const),
    ['torchscript export, compiled path', MODEL_DIR, { ONNSIGHT_FAST: '0' }] as const,
  ])('%s: h[-1], h[l - 4] agree with PyTorch and save under resolved names', async (label, model, env) => {
    const out = path.join(TMP, `${label.replace(/\W+/g, '_')}.json`);
    const r = await nns(['run', path.join(SCRIPTS, 'negative_indices.nns'), '--model', model, '--out', out], env);
    expect(r.code, r.err).toBe(0);
    const res = JSON.parse(fs.readFileSync(out, 'utf8')) as Results;
    expect(Object.keys(res).filter((k) => k.includes('-'))).toEqual([]);
    checkAgainstPyTorch(res);
  }, 120_000);

  it('an index before the start of the list is a located unknown-module error', async () => {
    const out = path.join(TMP, 'oor.json');
    const r = await nns(['run', path.join(SCRIPTS, 'negative_out_of_range.nns'), '--model', MODEL_DIR, '--out', out]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/negative_out_of_range\.nns:3:9: error\[unknown-module\]: no module 'model\.transformer\.h\[-5\]' \(the model has model\.transformer\.h\[0\]\.\.model\.transformer\.h\[3\]; from the end: model\.transformer\.h\[-4\]\.\.model\.transformer\.h\[-1\]\)/);
    expect(r.err.match(/error\[/g)).toHaveLength(1); // h[-4] is fine
    expect(fs.existsSync(out)).toBe(false);
  }, 60_000);
});

describe('negative module indices in the TS API', () => {
  let model: LanguageModel;
  beforeAll(async () => { model = await LanguageModel.load(MODEL_DIR); }, 60_000);
  afterAll(async () => model?.dispose());

  it.each([true, false])('fast: %s', async (fast) => {
    const ids = refCase('save_outputs').input_ids as number[];
    const { saves } = await model.trace(ids, (m) => {
      m.transformer.h[-1]!.output.save('last_block');
      m.lm_head(m.transformer.ln_f(m.transformer.h[-2]!.output.at(':', -1, ':'))).softmax(-1).save('lens');
    }, { fast });
    expectClose(saves.last_block!.data as Float32Array, saveOutputs['transformer.h.3']!.values, 1e-4, 'h[-1]');
    const k = lensRef.find((x) => x.layer === 2)!;
    const lens = saves.lens!.data as Float32Array;
    expect(argmax(lens)).toBe(k.top1);
    expect(Math.abs(lens[383]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
    const ab = await model.trace(ids, (m) => {
      m.transformer.h[-1]!.mlp.output = 0;
      m.output.logits.at(':', -1, ':').save('last');
    }, { fast });
    expectClose(ab.saves.last!.data as Float32Array, ablateRef.last_logits, 1e-4, 'set h[-1].mlp.output');
  });
});
