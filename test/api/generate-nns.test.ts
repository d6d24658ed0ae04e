/**
 * Generation through `.nns` scripts and the real CLI (`node bin/nns.mjs run SCRIPT --model
 * EXPORT --out FILE.json`): every case of models/gpt2-facts/reference-generate.json
 * (test/scripts/generate/) on the with-past export (tokens exact, per-step logits and block
 * outputs within 1e-4), and the same scripts — which include reference.json's generate case,
 * clean and steered — on the two exports without a cache (recomputed each step; the dynamo
 * export takes no attention mask, so it runs the single-prompt cases only). Also: bad input
 * exits 1 with located errors and writes nothing.
 */
import { nns } from '../helpers/cli.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, expectGenerateReference, genCase, GEN_EXPORTS, type SavedJSON } from '../helpers/reference.js';

const SCRIPTS = path.join(ROOT, 'test', 'scripts', 'generate');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-generate-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

type Results = Record<string, SavedJSON>;

const EXPORTS = GEN_EXPORTS;

async function run(script: string, model: keyof typeof EXPORTS): Promise<{ results: Results; stdout: string; stderr: string }> {
  const out = path.join(TMP, `${script}.${model}.json`);
  const r = await nns(['run', path.join(SCRIPTS, `${script}.nns`), '--model', EXPORTS[model], '--out', out]);
  if (r.code !== 0) throw new Error(`nns run ${script} on ${model} exited ${r.code}:\n${r.err}`);
  return { results: JSON.parse(fs.readFileSync(out, 'utf8')) as Results, stdout: r.out, stderr: r.err };
}

describe('reference-generate.json through .nns scripts', () => {
  for (const model of ['with-past', 'torchscript', 'dynamo'] as const) {
    it(`every single-prompt case on ${model}`, async () => {
      const { results, stdout, stderr } = await run('reference_generate', model);
      expectGenerateReference(results);
      // The text is printed as it is generated; without a cache, a one-line note says so.
      expect(stdout).toContain('generate: The capital of France is Paris.<|endoftext|>The capital city\n');
      expect(stdout).toContain('generate: The capital of France is Rome Rome Rome Rome Rome Rome\n');
      expect(stderr.includes('has no key/value cache: each step recomputed the whole sequence')).toBe(model !== 'with-past');
    }, 120_000);
  }

  for (const model of ['with-past', 'torchscript'] as const) {
    it(`batched (left padding) on ${model}`, async () => {
      const { results } = await run('batched', model);
      const want = genCase('batched').expect.ids as number[][];
      expect(results.row0!.data).toEqual(want[0]);
      expect(results.row1!.data).toEqual(want[1]);
      expect(results['last.3']!.shape).toEqual([2, 874]);
    }, 120_000);
  }
});

describe('bad input', () => {
  it('exits 1 with located errors, runs nothing and writes no output', async () => {
    const out = path.join(TMP, 'bad.json');
    const file = path.join(TMP, 'bad.nns');
    fs.writeFileSync(file, 'generate "The capital of France is" max_new_token=4 {\n  step 4 { }\n}\n');
    const r = await nns(['run', file, '--model', EXPORTS['with-past'], '--out', out]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("bad.nns:1:37: error[unknown-option]: generate has no option 'max_new_token'; did you mean 'max_new_tokens'?");
    expect(r.err).toContain('bad.nns:1:1: error[missing-option]');
    expect(r.err).not.toMatch(/at .*\.ts:\d+/); // no stack trace
    expect(r.out).not.toContain('generate:');
    expect(fs.existsSync(out)).toBe(false);
  }, 60_000);

  it('max_new_tokens past the model\'s positions', async () => {
    const file = path.join(TMP, 'long.nns');
    fs.writeFileSync(file, 'generate "The capital of France is" max_new_tokens=61 { }\n');
    const r = await nns(['run', file, '--model', EXPORTS['with-past']]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('long.nns:1:52: error[too-long]: the prompt (5 tokens) and max_new_tokens=61 need 65 positions, but the model has 64');
  }, 60_000);
});
