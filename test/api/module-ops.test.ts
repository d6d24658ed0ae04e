/**
 * `MODULE.op("TYPE", N)`: any ONNX node inside a module, read, saved, sliced and set like a
 * module boundary, through the TS API and `.nns` (the CLI), on both gpt2-facts exports.
 * Ground truth: reference.json `attention_probs` (PyTorch's softmax attention weights of
 * block 1) and `clean_logits` (a set that writes back the value it read changes nothing).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel } from '../../src/index.js';
import { EXPORTS, ROOT, refCase, expectClose } from '../helpers/reference.js';
import { nns } from '../helpers/cli.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-ops-'));


describe.each(EXPORTS)('op() on the $name export', ({ name, path: modelPath }) => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(modelPath);
  }, 60_000);
  afterAll(async () => model?.dispose());

  it('TS API: attn.op("Softmax").output is reference.json attention_probs', async () => {
    const c = refCase('attention_probs');
    const e = c.expect as { shape: number[]; values: number[] };
    const { saves } = await model.trace(c.input_ids as number[], (m) => {
      m.transformer.h[1]!.attn.op('Softmax').output.save('probs');
    });
    expect(saves.probs!.shape).toEqual(e.shape);
    expectClose(saves.probs!.data as Float32Array, e.values, 1e-4);
  });

  it('TS API: writing back a slice of the op output it read keeps the clean logits; writing zeros changes them', async () => {
    const c = refCase('clean_logits');
    const e = c.expect as { last_logits: number[] };
    const same = await model.trace(c.input_ids as number[], (m) => {
      const sm = m.transformer.h[1]!.attn.op('Softmax', 0);
      sm.output.at(':', 0).set(sm.output.at(':', 0).mul(1));
      m.output.logits.at(':', -1, ':').save('last');
    });
    expectClose(same.saves.last!.data as Float32Array, e.last_logits, 1e-4);
    const zero = await model.trace(c.input_ids as number[], (m) => {
      m.transformer.h[1]!.attn.op('Softmax').output = 0;
      m.output.logits.at(':', -1, ':').save('last');
    });
    const z = zero.saves.last!.data as Float32Array;
    let d = 0;
    for (let i = 0; i < z.length; i++) d = Math.max(d, Math.abs(z[i]! - e.last_logits[i]!));
    expect(d).toBeGreaterThan(1e-3);
  });

  it('.nns: model.transformer.h[1].attn.op("Softmax").output is attention_probs', async () => {
    const c = refCase('attention_probs');
    const e = c.expect as { shape: number[]; values: number[] };
    const out = path.join(TMP, `probs.${name}.json`);
    const r = await nns(['run', path.join(ROOT, 'test', 'scripts', 'ops', 'attention_probs.nns'), '--model', modelPath, '--out', out]);
    expect(r.code, r.err).toBe(0);
    const saved = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { shape: number[]; data: number[] }>;
    expect(saved.ids!.data).toEqual(c.input_ids);
    expect(saved.probs!.shape).toEqual(e.shape);
    expectClose(saved.probs!.data, e.values, 1e-4);
  }, 60_000);

  it('nns modules --ops lists each module\'s operations', async () => {
    const r = await nns(['modules', modelPath, '--ops']);
    expect(r.code, r.err).toBe(0);
    const lines = r.out.split('\n');
    const at = lines.findIndex((l) => l.startsWith('transformer.h.1.attn '));
    expect(at).toBeGreaterThanOrEqual(0);
    const own: string[] = [];
    for (let i = at + 1; i < lines.length && lines[i]!.startsWith('    '); i++) own.push(lines[i]!.trim());
    expect(own.find((l) => l.startsWith('op("Softmax", 0)'))).toMatch(/float32\[batch, 4, sequence, sequence\]/);
  }, 60_000);
});

describe('op() errors', () => {
  it('an unknown op type or index is a located error with the valid range or a suggestion', async () => {
    const script = path.join(TMP, 'bad.nns');
    fs.writeFileSync(script, [
      'trace "The Eiffel Tower is in the city of" {',
      '  a = model.transformer.h[1].attn.op("Softmax", 3).output.save()',
      '  b = model.transformer.h[1].attn.op("Sofmax").output.save()',
      '}', ''].join('\n'));
    const r = await nns(['run', script, '--model', EXPORTS[0].path]);
    expect(r.code).toBe(1);
    expect(r.err).toContain('bad.nns:2:7: error[unknown-module]: transformer.h[1].attn has 1 Softmax node');
    expect(r.err).toContain("bad.nns:3:7: error[unknown-module]: transformer.h[1].attn has no Sofmax node; did you mean 'Softmax'?");
    expect(r.err).not.toMatch(/^\s+at /m);
  }, 60_000);
});
