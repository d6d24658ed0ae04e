/**
 * Host parameters (`param NAME: f32[...]`, `--param NAME=FILE.json`, `params` from
 * TypeScript): the value they carry reaches the model (reference.json `steer_add`, PyTorch's
 * logits with alpha·vector added at block 2), their gradient agrees with finite differences
 * of the same loss evaluated at shifted values, repeated traces that differ only in param
 * values reuse one compiled graph (the compile cache's counters), and bad values are located
 * errors before anything runs (no output file).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, grad, type Tensor } from '../../src/index.js';
import { compileCacheOf } from '../../src/compile-cache.js';
import { EXPORTS, ROOT, refCase, expectClose } from '../helpers/reference.js';
import { nns } from '../helpers/cli.js';
import { main } from '../../src/cli/main.js';

/** `nns ARGS` in this process (the errors tested here stop before the model opens). */
async function nnsHere(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`), cwd: ROOT, env: {} });
  return { code, out, err };
}

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-params-'));
const SCRIPT = path.join(ROOT, 'test', 'scripts', 'params', 'steer.nns');

/** A seeded float32 vector (Mulberry32 → uniform in [-scale, scale]). */
function randomVector(n: number, seed: number, scale: number): Float32Array {
  let a = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

const vec = (data: Float32Array): Tensor => ({ dtype: 'float32', shape: [data.length], data });

function steerAdd(): { ids: number[]; steer: Float32Array; last: number[] } {
  const c = refCase('steer_add');
  return { ids: c.input_ids as number[], steer: Float32Array.from(c.vector!, (x) => x * c.alpha!), last: (c.expect as { last_logits: number[] }).last_logits };
}

describe('host parameters', () => {
  let model: LanguageModel;
  beforeAll(async () => {
    model = await LanguageModel.load(EXPORTS[0].path);
  }, 60_000);
  afterAll(async () => model?.dispose());

  const loss = (ids: number[], steer: Tensor, withGrad: boolean) => model.trace(ids, (m, p) => {
    m.transformer.h[2]!.output = m.transformer.h[2]!.output.add(p.steer);
    const y = m.output.logits.at(0, -1, 383).save('y');
    m.output.logits.at(0, -1, ':').save('last');
    if (withGrad) grad(y, p.steer).save('g');
  }, { params: { steer } });

  it('TS API: a param carries its value (reference.json steer_add), on the fast and the compiled path', async () => {
    const { ids, steer, last } = steerAdd();
    const fast = await loss(ids, vec(steer), false);
    expectClose(fast.saves.last!.data as Float32Array, last, 1e-4, 'steered logits (fast path)');
    const compiled = await loss(ids, vec(steer), true);
    expectClose(compiled.saves.last!.data as Float32Array, last, 1e-4, 'steered logits (compiled, with grad)');
  }, 60_000);

  it('TS API: grad(y, param) matches central finite differences of the same loss; repeated steps reuse one compiled graph', async () => {
    const { ids } = steerAdd();
    const base = randomVector(128, 7, 0.5);
    const cache = compileCacheOf(model.mc);
    const r = await loss(ids, vec(base), true);
    // From here on (the graph is compiled, by this trace or an earlier test's same structure) no step compiles.
    const misses0 = cache.misses;
    const hits0 = cache.hits;
    const g = r.saves.g!;
    expect(g.shape).toEqual([128]);
    const h = 0.01; // float32 model: small enough for the curvature, large enough for rounding
    for (const seed of [1, 2, 3]) {
      const u = randomVector(128, 100 + seed, 1);
      const shifted = (sign: number): Tensor => vec(base.map((x, i) => x + sign * h * u[i]!));
      const plus = Number((await loss(ids, shifted(1), true)).saves.y!.data[0]);
      const minus = Number((await loss(ids, shifted(-1), true)).saves.y!.data[0]);
      const fd = (plus - minus) / (2 * h);
      let an = 0;
      for (let i = 0; i < 128; i++) an += Number(g.data[i]) * u[i]!;
      expect(Math.abs(an - fd), `directional derivative ${seed}: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd)));
    }
    // Six more traces that differ only in the param's values: six cache hits, no compile.
    expect(cache.misses - misses0).toBe(0);
    expect(cache.hits - hits0).toBe(6);
  }, 120_000);

  it('TS API: bad params are bad-value; grad of a plain Tensor value works too', async () => {
    const { ids } = steerAdd();
    await expect(model.trace(ids, () => undefined, { params: { steer: [1, 2] as unknown as Tensor } })).rejects.toMatchObject({ code: 'bad-value' });
    await expect(model.trace(ids, () => undefined, { params: { steer: { dtype: 'float32', shape: [3], data: new Float32Array(2) } } })).rejects.toMatchObject({ code: 'bad-value' });
  }, 60_000);
});

describe('nns run --param', () => {
  it('runs a script with a param from a JSON tensor: the value and gradient agree with the TS API and PyTorch', async () => {
    const { steer, last } = steerAdd();
    const file = path.join(TMP, 'steer.json');
    fs.writeFileSync(file, JSON.stringify({ dtype: 'float32', shape: [128], data: [...steer] }));
    const out = path.join(TMP, 'out.json');
    const r = await nns(['run', SCRIPT, '--model', EXPORTS[0].path, '--param', `steer=${file}`, '--out', out]);
    expect(r.code, r.err).toBe(0);
    const saved = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { shape: number[]; data: number[] }>;
    expectClose(saved.last!.data, last, 1e-4, 'steered logits');
    expect(saved.g!.shape).toEqual([128]);
    expect(saved.steer, 'a param is not a save').toBeUndefined();
    // An --out file is a valid --param file (the tensor saved under the param's name, or its only one).
    const out2 = path.join(TMP, 'out2.json');
    fs.writeFileSync(path.join(TMP, 'g-as-steer.json'), JSON.stringify({ steer: { dtype: 'float32', shape: [128], data: saved.g!.data }, $prompts: [] }));
    const r2 = await nns(['run', SCRIPT, '--model', EXPORTS[0].path, '--param', `steer=${path.join(TMP, 'g-as-steer.json')}`, '--out', out2]);
    expect(r2.code, r2.err).toBe(0);
  }, 60_000);

  it('a param in a generate block: reference.json generate (steered, alpha·vector at block 2 every step)', async () => {
    const c = refCase('generate');
    const file = path.join(TMP, 'steer-gen.json');
    fs.writeFileSync(file, JSON.stringify({ dtype: 'float32', shape: [128], data: c.vector!.map((x) => x * c.alpha!) }));
    const script = path.join(TMP, 'gen.nns');
    fs.writeFileSync(script, [
      'param steer: f32[128]',
      `generate ${JSON.stringify(c.input_ids)} max_new_tokens=6 {`,
      '  model.transformer.h[2].output = model.transformer.h[2].output + steer',
      '  tokens = model.generator.output.save()',
      '}', ''].join('\n'));
    const out = path.join(TMP, 'gen-out.json');
    const r = await nnsHere(['run', script, '--model', EXPORTS[0].path, '--param', `steer=${file}`, '--out', out, '--progress=none']);
    expect(r.code, r.err).toBe(0);
    const saved = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { data: number[] }>;
    expect(saved.tokens!.data).toEqual((c.expect as { steered: number[] }).steered);
  }, 120_000);

  it('missing, unknown, mismatched or unreadable params are located errors, exit 2, nothing written', async () => {
    const out = path.join(TMP, 'never.json');
    const run = (...extra: string[]) => nnsHere(['run', SCRIPT, '--model', EXPORTS[0].path, '--out', out, ...extra]);
    const short = path.join(TMP, 'short.json');
    fs.writeFileSync(short, JSON.stringify({ dtype: 'float32', shape: [127], data: new Array(127).fill(0) }));
    const good = path.join(TMP, 'zeros.json');
    fs.writeFileSync(good, JSON.stringify({ dtype: 'float32', shape: [128], data: new Array(128).fill(0) }));
    const notJson = path.join(TMP, 'bad.json');
    fs.writeFileSync(notJson, '{"dtype": "float32", "shape": [128], "data": [1, 2');
    const cases: [string[], RegExp][] = [
      [[], /steer\.nns:2:1: error\[missing-param\]: no value for param 'steer: f32\[128\]'/],
      [['--param', `steer=${short}`], /steer\.nns:2:1: error\[param-mismatch\]: param 'steer' is declared f32\[128\] but --param steer=.*short\.json is f32\[127\]/],
      [['--param', `steer=${good}`, '--param', `ster=${good}`], /error\[unknown-param\]: --param ster=.*: the script declares no param 'ster'; did you mean 'steer'\?/],
      [['--param', `steer=${path.join(TMP, 'nope.json')}`], /error\[param-unreadable\]: --param steer=.*nope\.json: no such file/],
      [['--param', `steer=${notJson}`], /error\[param-unreadable\]: --param steer=.*bad\.json: not JSON/],
      [['--param', 'steer'], /error\[unknown-param\]: --param takes NAME=FILE\.json/],
    ];
    for (const [extra, want] of cases) {
      const r = await run(...extra);
      expect(r.code, `${extra.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err).toMatch(want);
      expect(r.err).not.toMatch(/^\s+at /m);
      expect(fs.existsSync(out)).toBe(false);
    }
  }, 120_000);

  it('bad declarations are bad-param at the declaration', async () => {
    const script = path.join(TMP, 'decl.nns');
    const check = async (lines: string[]) => {
      fs.writeFileSync(script, [...lines, 'trace "The Eiffel Tower is in the city of" { model.output.logits.save() }', ''].join('\n'));
      return nnsHere(['check', script]);
    };
    let r = await check(['param v: q8[3]']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/decl\.nns:1:10: error\[bad-param\]: unknown element type 'q8'/);
    r = await check(['param v: f32[3, -1]']);
    expect(r.err).toMatch(/decl\.nns:1:\d+: error\[bad-param\]: a param dimension must be/);
    r = await check(['param v', 'param v: f32[2]']);
    expect(r.err).toMatch(/decl\.nns:1:1: error\[bad-param\]: param 'v' needs a type and a shape/);
    r = await check(['param v: f32[2]', 'param v: f32[2]']);
    expect(r.err).toMatch(/decl\.nns:2:7: error\[bad-param\]: 'v' is already declared as a param/);
    fs.writeFileSync(script, 'trace "The Eiffel Tower is in the city of" {\n  param v: f32[2]\n  model.output.logits.save()\n}\n');
    r = await nnsHere(['check', script]);
    expect(r.err).toMatch(/decl\.nns:2:3: error\[bad-param\]: a param is declared at the top of the script/);
    r = await check(['param v: f32[2]']);
    expect(r.code, r.err).toBe(0);
  }, 60_000);
});
