/**
 * Every reference.json case except gradients, generate and attention_probs, written as `.nns`
 * scripts (test/scripts/reference/), run through the real CLI (`node bin/nns.mjs run SCRIPT
 * --model EXPORT --out FILE.json`) on both gpt2-facts exports, and compared against PyTorch
 * within 1e-4 (probabilities 1e-5, top-1 ids exact). Mirrors test/api/api-reference.test.ts.
 *
 * The scripts give their prompts as text. The dynamo file lives in the model folder's `onnx/`
 * and so takes the folder's tokenizer; the scripts check the tokenizer's ids against
 * reference.json's `input_ids` (`model.transformer.wte.input`). One script gives its prompts
 * as token ids and also runs on a bare copy of the dynamo file (no tokenizer anywhere).
 *
 * Each (script, export) pair is one spawn; all spawns are started together in `beforeAll`
 * (at most `os.availableParallelism()` at a time) and each test awaits its own result.
 */
import { nns } from '../helpers/cli.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXPORTS, ROOT, refCase, expectClose, argmax } from '../helpers/reference.js';

const SCRIPTS = path.join(ROOT, 'test', 'scripts', 'reference');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-reference-'));
/** A copy of the dynamo export in a folder of its own: no config.json, no tokenizer.json. */
const BARE = path.join(TMP, 'bare', 'model.dynamo.onnx');

interface Saved { dtype: string; shape: number[]; data: number[] }
type Results = Record<string, Saved>;

const SCRIPT_NAMES = [
  'clean_logits', 'save_outputs', 'zero_ablate_mlp', 'patch_block_outputs',
  'steer_add', 'logit_lens', 'skip_block', 'batched_cross_prompt', 'batched_cross_prompt_ids',
] as const;
type ScriptName = (typeof SCRIPT_NAMES)[number];

// ---- running the CLI, a few spawns at a time ----------------------------------------------

const slots = Math.max(2, Math.min(4, os.availableParallelism?.() ?? os.cpus().length));
let running = 0;
const waiting: (() => void)[] = [];
async function limited<T>(f: () => Promise<T>): Promise<T> {
  if (running >= slots) await new Promise<void>((r) => waiting.push(r));
  running++;
  try {
    return await f();
  } finally {
    running--;
    waiting.shift()?.();
  }
}

/** `nns run SCRIPT --model MODEL --out TMP.json`; resolves to the parsed results (or rejects with the CLI's output). */
function runScript(script: ScriptName, model: string, tag: string): Promise<Results> {
  return limited(async () => {
    const out = path.join(TMP, `${script}.${tag}.json`);
    const r = await nns(['run', path.join(SCRIPTS, `${script}.nns`), '--model', model, '--out', out]);
    if (r.code !== 0) throw new Error(`nns run ${script}.nns --model ${model} exited ${r.code}:\n${r.err}`);
    // the saves; `$families` and `$prompts` (report data) are checked in report.test.ts
    const all = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, unknown>;
    return Object.fromEntries(Object.entries(all).filter(([k]) => !k.startsWith('$'))) as Results;
  });
}

const runs = new Map<string, Promise<Results>>();
function results(script: ScriptName, tag: string): Promise<Results> {
  const r = runs.get(`${script}@${tag}`);
  if (!r) throw new Error(`no run of ${script} on ${tag}`);
  return r;
}

beforeAll(() => {
  fs.mkdirSync(path.dirname(BARE), { recursive: true });
  fs.copyFileSync(EXPORTS[1].path, BARE);
  for (const script of SCRIPT_NAMES) {
    for (const { name, path: model } of EXPORTS) {
      const p = runScript(script, model, name);
      p.catch(() => {}); // reported by the test that awaits it
      runs.set(`${script}@${name}`, p);
    }
  }
  const bare = runScript('batched_cross_prompt_ids', BARE, 'bare');
  bare.catch(() => {});
  runs.set('batched_cross_prompt_ids@bare', bare);
});

afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

// ---- checks -------------------------------------------------------------------------------

/** A saved value, checked for dtype and shape. */
function get(r: Results, name: string, shape: number[], dtype = 'float32'): number[] {
  const v = r[name];
  expect(v, `saved value '${name}' (have: ${Object.keys(r).join(', ')})`).toBeDefined();
  expect(v!.dtype, `${name}: dtype`).toBe(dtype);
  expect(v!.shape, `${name}: shape`).toEqual(shape);
  return v!.data;
}

function softmax(xs: number[]): number[] {
  const m = Math.max(...xs);
  const e = xs.map((x) => Math.exp(x - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function checkBatchedCrossPrompt(r: Results): void {
  const e = refCase('batched_cross_prompt').expect as { row0: number[]; row1: number[] };
  const last = get(r, 'last', [2, 874]);
  expectClose(last.slice(0, 874), e.row0, 1e-4, 'row0');
  expectClose(last.slice(874), e.row1, 1e-4, 'row1');
}

describe.each(EXPORTS)('nns scripts on the $name export', ({ name: tag }) => {
  it('clean_logits (and the tokenizer gives reference.json\'s input_ids)', async () => {
    const c = refCase('clean_logits');
    const e = c.expect as { last_logits: number[]; top5: number[] };
    const r = await results('clean_logits', tag);
    expect(get(r, 'ids', [1, 8], 'int64')).toEqual(c.input_ids);
    expectClose(get(r, 'last', [1, 874]), e.last_logits, 1e-4, 'last_logits');
    expect(get(r, 'top5', [1, 5], 'int64')).toEqual(e.top5);
  });

  it('save_outputs', async () => {
    const e = refCase('save_outputs').expect as Record<string, { shape: number[]; values: number[] }>;
    const r = await results('save_outputs', tag);
    expect(Object.keys(r).sort()).toEqual(Object.keys(e).map((p) => `${p}.output`).sort());
    for (const [p, want] of Object.entries(e)) expectClose(get(r, `${p}.output`, want.shape), want.values, 1e-4, p);
  });

  it('zero_ablate_mlp', async () => {
    const c = refCase('zero_ablate_mlp');
    const r = await results('zero_ablate_mlp', tag);
    for (const k of c.expect as { layer: number; p_answer: number; top1: number; last_logits: number[] }[]) {
      const last = get(r, `last.${k.layer}`, [1, 874]);
      expectClose(last, k.last_logits, 1e-4, `layer ${k.layer}`);
      expect(Math.abs(get(r, `p_answer.${k.layer}`, [1])[0]! - k.p_answer), `layer ${k.layer} p_answer`).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(softmax(last)[c.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
      expect(get(r, `top1.${k.layer}`, [1], 'int64')).toEqual([k.top1]);
      expect(argmax(last)).toBe(k.top1);
    }
  });

  it('patch_block_outputs (the whole layer × position grid, one batched pass)', async () => {
    const c = refCase('patch_block_outputs');
    expect([c.answer_id, c.source_answer_id]).toEqual([383, 382]); // as written in the script
    const grid = c.expect as number[][][];
    const r = await results('patch_block_outputs', tag);
    expect(Object.keys(r)).toHaveLength(2 * 4 * 8);
    for (let k = 0; k < grid.length; k++) {
      for (let p = 0; p < grid[k]!.length; p++) {
        const [paris, rome] = grid[k]![p]!;
        expect(Math.abs(get(r, `paris.${k}.${p}`, [1])[0]! - paris!), `k=${k} p=${p} answer`).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(get(r, `rome.${k}.${p}`, [1])[0]! - rome!), `k=${k} p=${p} source answer`).toBeLessThanOrEqual(1e-5);
      }
    }
  });

  it('steer_add (vector computed as hB - hA, agrees with the given one; also the literal vector)', async () => {
    const c = refCase('steer_add');
    expect([c.layer, c.alpha]).toEqual([2, 4]); // as written in the script
    const e = c.expect as { last_logits: number[]; top1: number };
    const r = await results('steer_add', tag);
    expectClose(get(r, 'vector', [128]), c.vector!, 1e-4, 'computed vector vs reference vector');
    expectClose(get(r, 'last', [1, 874]), e.last_logits, 1e-4, 'steered with the computed vector');
    expect(get(r, 'top1', [1], 'int64')).toEqual([e.top1]);
    expectClose(get(r, 'last_given', [1, 874]), e.last_logits, 1e-4, 'steered with the literal vector');
  });

  it('logit_lens', async () => {
    const c = refCase('logit_lens');
    const r = await results('logit_lens', tag);
    for (const k of c.expect as { layer: number; top1: number; p_top1: number; p_answer: number }[]) {
      const probs = get(r, `lens.${k.layer}`, [1, 874]);
      expect(get(r, `top1.${k.layer}`, [1], 'int64'), `layer ${k.layer}`).toEqual([k.top1]);
      expect(argmax(probs), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(probs[k.top1]! - k.p_top1), `layer ${k.layer} p_top1`).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(probs[c.answer_id!]! - k.p_answer), `layer ${k.layer} p_answer`).toBeLessThanOrEqual(1e-5);
    }
  });

  it('skip_block', async () => {
    const c = refCase('skip_block');
    expect(c.layer).toBe(1); // as written in the script
    const r = await results('skip_block', tag);
    expectClose(get(r, 'last', [1, 874]), (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('batched_cross_prompt (whole-batch statement after the invokes)', async () => {
    const c = refCase('batched_cross_prompt');
    expect(c.layer).toBe(3); // as written in the script
    const r = await results('batched_cross_prompt', tag);
    expect(get(r, 'ids', [2, 8], 'int64')).toEqual((c.input_ids as number[][]).flat());
    checkBatchedCrossPrompt(r);
  });

  it('batched_cross_prompt with token-id prompts', async () => {
    checkBatchedCrossPrompt(await results('batched_cross_prompt_ids', tag));
  });
});

describe('nns scripts on a bare .onnx file (no tokenizer)', () => {
  it('batched_cross_prompt with token-id prompts', async () => {
    expect(refCase('batched_cross_prompt').input_ids).toEqual([
      [264, 758, 334, 260, 268, 261, 271, 267],
      [264, 676, 674, 260, 268, 261, 271, 267],
    ]); // as written in the script
    checkBatchedCrossPrompt(await results('batched_cross_prompt_ids', 'bare'));
  });
});
