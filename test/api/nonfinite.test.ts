/**
 * Non-finite constants (issue 8 item 3): `-1/0`, `1/0`, `0/0`, `-0` and `0` in one script
 * stay distinct values on the fast path and the compiled path (CSE used to key constants
 * with JSON.stringify, which writes NaN and ±Infinity as `null` and −0 as `0`), and
 * `nns run --out` writes NaN and ±Infinity losslessly as "NaN", "Infinity", "-Infinity".
 * Expected values are IEEE arithmetic on the host (1/0 = Infinity, ...), not model output.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';
import { LanguageModel } from '../../src/index.js';
import { eliminateCommonSubexpressions } from '../../passes/cse.js';
import { Graph, Node } from '../../ir/ir.js';
import { MODEL_DIR, ROOT } from '../helpers/reference.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-nonfinite-'));
const SCRIPT = path.join(ROOT, 'test', 'scripts', 'idioms', 'nonfinite.nns');
const WANT: Record<string, number> = { ninf: -1 / 0, pinf: 1 / 0, nan: 0 / 0, negz: 1 / -0, posz: 1 / 0 };

const nnsRun = (env: Record<string, string>, out: string) => runNns(['run', SCRIPT, '--model', MODEL_DIR, '--out', out], { env });

describe('non-finite constants', () => {
  it('CSE keeps constants apart that JSON.stringify cannot tell apart', () => {
    const g = new Graph();
    const span = { file: 't', line: 1, col: 1, endLine: 1, endCol: 1, offset: 0, endOffset: 0 };
    const nodes = [NaN, Infinity, -Infinity, 0, -0].map((x) => new Node('const', [], { dtype: 'float32', shape: [], data: [x] }, 1, 1, span));
    const twin = new Node('const', [], { dtype: 'float32', shape: [], data: [-Infinity] }, 1, 1, span);
    g.nodes.push(...nodes, twin);
    expect(eliminateCommonSubexpressions(g)).toBe(1); // only the second -Infinity merges
    expect(g.nodes.map((n) => (n.attrs as { data: number[] }).data[0])).toEqual([NaN, Infinity, -Infinity, 0, -0]);
  });

  it.each([
    ['fast path', {}],
    ['compiled path', { ONNSIGHT_FAST: '0' }],
  ])('nns run --out on the %s keeps every literal and writes non-finite numbers as strings', async (_label, env) => {
    const out = path.join(TMP, `${Object.keys(env).length}.json`);
    const r = await nnsRun(env, out);
    expect(r.code, r.err).toBe(0);
    const text = fs.readFileSync(out, 'utf8');
    expect(text).not.toContain('null');
    const json = JSON.parse(text) as Record<string, { data: (number | string)[] }>;
    for (const [name, want] of Object.entries(WANT)) {
      const data = json[name]!.data;
      expect(data, name).toHaveLength(4);
      // JSON has no -0 or non-finite literal: ±Infinity and NaN come back as strings that Number() reads.
      for (const x of data) {
        expect(typeof x, name).toBe('string');
        expect(Object.is(Number(x), want), `${name}: ${String(x)}`).toBe(true);
      }
    }
  }, 120_000);
});

describe('non-finite values through the TS API stay numbers', () => {
  let model: LanguageModel;
  beforeAll(async () => { model = await LanguageModel.load(MODEL_DIR); }, 60_000);
  afterAll(async () => model?.dispose());

  it.each([true, false])('fast: %s', async (fast) => {
    const { saves } = await model.trace('The Eiffel Tower is in the city of', (m) => {
      const h = m.transformer.h[0]!.output.at(':', -1, ':4');
      h.zerosLike().add(-Infinity).save('ninf');
      h.zerosLike().add(Infinity).save('pinf');
      h.zerosLike().add(NaN).save('nan');
      h.onesLike().div(-0).save('negz');
      h.onesLike().div(0).save('posz');
    }, { fast });
    for (const [name, want] of Object.entries(WANT)) {
      for (const x of saves[name]!.data as Float32Array) expect(Object.is(x, want), `${name}: ${x}`).toBe(true);
    }
  });
});
