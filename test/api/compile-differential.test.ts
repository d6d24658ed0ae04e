/**
 * A rewritten model computes what `nns run` computes: every save of `nns compile`'s file
 * (run in onnxruntime on the trace's own batch) equals the save `nns run` prints, for the
 * examples, the reference scripts and a script made to exercise what nns compile lowers
 * differently from a run (issue 15): constant-index ScatterND sets with steps, negative
 * indices and ranges, statements lowered once for many invokes (reads before sets of the
 * same value in every invoke, a literal set, an arithmetic set), next to an invoke that is
 * not part of the family. `nns run` compiles its graphs without these rules (cached across
 * prompt lengths), so it is an independent evaluation of the same script; both the function
 * form and the --flat form are checked.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import { openModel } from '../../src/engine.js';
import { parseScript } from '../../grammar/parse.js';
import { traces } from '../../grammar/script.js';
import { lowerTrace } from '../../grammar/lower.js';
import { batchRows } from '../../src/compile.js';
import { MODEL_DIR, ROOT } from '../helpers/reference.js';
import { decodeModel } from '../../src/onnx/serde.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-compile-diff-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const TRICKY = `
trace {
  for p in 0..3 {
    invoke "The Eiffel Tower is in the city of" {
      pre = model.transformer.h[1].output[:, p, 0:4].save()
      model.transformer.h[1].output[:, p, 0:4] = 0
      model.transformer.h[2].output[:, -1, ::2] = model.transformer.h[2].output[:, -1, ::2] * 2
      post = model.transformer.h[1].output[:, p, :].save()
      q = softmax(model.output.logits[:, -1, :], -1)[:, 383].save()
    }
  }
  invoke "The Trevi Fountain is in the city of" {
    model.transformer.h[0].output[:, 1:7:2, :] = 1.5
    model.transformer.h[3].mlp.output[0, -3:, 5] = model.transformer.h[2].output[0, -3:, 5] - 1
    r = model.output.logits[:, -2, :].save()
  }
}
`;

/** Statements lowered once for all their invokes: a literal slice set, a set from a shared value indexed per invoke, arithmetic, a per-invoke position read. */
const FAMILIES = `
trace {
  invoke "The Trevi Fountain is in the city of" {
    r0 = model.output.logits[:, -1, 0:3].save()
  }
  src = model.transformer.h[0].output
  for p in 0..4 {
    invoke "The Eiffel Tower is in the city of" {
      model.transformer.h[1].output[:, p, 2:6] = 0.5
      model.transformer.h[2].output[:, -1 - p, :] = src[0, p]
      x = softmax(model.output.logits[:, -1, :] * 2, -1)[:, 383:385].save()
      y = (model.output.logits[:, p, 10] - 1).save()
    }
  }
}
`;

async function cli(args: string[]): Promise<string> {
  let err = '';
  const code = await main(args, { out: () => {}, err: (t) => (err += `${t}\n`), cwd: ROOT, env: process.env });
  expect(code, err).toBe(0);
  return err;
}

describe('nns compile = nns run', async () => {
  const mc = await openModel(MODEL_DIR);
  const tricky = path.join(tmp, 'tricky.nns');
  fs.writeFileSync(tricky, TRICKY);
  const families = path.join(tmp, 'families.nns');
  fs.writeFileSync(families, FAMILIES);
  const scripts = [
    ...['eiffel', 'patching', 'logit-lens', 'ablation', 'attribution'].map((e) => path.join(ROOT, 'examples', `${e}.nns`)),
    ...['zero_ablate_mlp', 'patch_block_outputs', 'skip_block', 'steer_add', 'save_outputs', 'logit_lens'].map((e) => path.join(ROOT, 'test', 'scripts', 'reference', `${e}.nns`)),
    tricky,
    families,
  ];
  it.each(scripts.map((s) => [path.relative(ROOT, s), s]))('%s', async (_rel, file) => {
    const text = fs.readFileSync(file, 'utf8');
    const t = traces(parseScript(text, file).ast!)[0]!;
    const lowered = lowerTrace(t, { file, tokenize: (s) => mc.loaded.tokenizer!.encode(s), host: new Map(), tree: mc.tree });
    const rows = batchRows(lowered.graph);
    const name = path.basename(file, '.nns');
    const json = path.join(tmp, `${name}.json`);
    await cli(['run', file, '--model', MODEL_DIR, '--out', json]);
    const want = JSON.parse(fs.readFileSync(json, 'utf8')) as Record<string, { data: (number | string)[] }>;
    // (netron-readable.test.ts compares the two forms bit for bit on the examples)
    for (const flat of file === tricky || file === families || name === 'attribution' ? [false, true] : [false]) {
      const out = path.join(tmp, `${name}${flat ? '-flat' : ''}.onnx`);
      await cli(['compile', file, '--model', MODEL_DIR, '-o', out, ...(flat ? ['--flat'] : [])]);
      const s = await ort.InferenceSession.create(out);
      const B = rows.length;
      const n = rows[0]!.length;
      const feeds: Record<string, ort.Tensor> = {
        input_ids: new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [B, n]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(B * n).fill(1n), [B, n]),
        position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: B * n }, (_, i) => BigInt(i % n)), [B, n]),
      };
      const got = await s.run(Object.fromEntries(s.inputNames.map((k) => [k, feeds[k]!])));
      await s.release();
      // The first trace's saves, by the doc strings of the graph outputs (`save 'logits' at ...` on `logits_1`).
      const outputOf = new Map<string, string>();
      for (const o of decodeModel(fs.readFileSync(out)).graph!.output ?? []) {
        const m = /^save '([^']+)'/.exec(o.doc_string ?? '');
        if (m) outputOf.set(m[1]!, o.name!);
      }
      expect(outputOf.size).toBeGreaterThan(0);
      let compared = 0;
      for (const [save, output] of outputOf) {
        const w = want[save]!;
        const g = got[output];
        expect(g, `${name}: output for save ${save}`).toBeDefined();
        const a = Array.from(g!.data as ArrayLike<number | bigint>, Number);
        const b = w.data.map(Number);
        expect(a.length, `${name} ${save}`).toBe(b.length);
        const bad = a.findIndex((x, i) => !(Math.abs(x - b[i]!) <= 1e-5 + 1e-5 * Math.abs(b[i]!)));
        expect(bad, `${name} ${save}${flat ? ' (flat)' : ''}: element ${bad}: ${a[bad]} vs ${b[bad]}`).toBe(-1);
        compared++;
      }
      expect(compared).toBe(outputOf.size);
    }
  }, 120_000);
});
