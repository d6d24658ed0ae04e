/**
 * Results as families, plots and the HTML report (src/report/). The patching example's
 * `paris` family stacked as [layers, positions, 1] matches the PyTorch reference grid
 * (patch_block_outputs), the logit lens's top tokens match reference logit_lens, `--out`
 * JSON carries `$families` and `$prompts`, `nns plot` reads it back, the heatmap's SVG is
 * labelled with the prompt's tokens, and the HTML report, opened in headless Chromium
 * (skipped when Debian's `chromium` is not installed), shows every plot; the screenshot
 * is docs/report.png.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupFamilies, loopIndexNames, type FamilyJSON, type PromptInfo } from '../../src/report/families.js';
import type { Tensor } from '../../src/tensor.js';
import { ROOT, refCase } from '../helpers/reference.js';
import { nns } from '../helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-report-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));


type Out = Record<string, unknown> & { $families: Record<string, FamilyJSON>; $prompts: PromptInfo[] };

describe('families', () => {
  it('stacks NAME.I.J saves with index values, shapes and NaN for missing members', () => {
    const t = (v: number): Tensor => ({ dtype: 'float32', shape: [1], data: Float32Array.of(v) });
    const saves = new Map<string, Tensor>([['a.0.1', t(1)], ['a.1.0', t(2)], ['a.0.0', t(3)], ['b.0', t(4)], ['c', t(5)], ['transformer.h.0.output', t(6)]]);
    const fams = groupFamilies(saves, new Map([['a', ['l', 'p']]]));
    expect(fams.map((f) => f.name)).toEqual(['a']); // b has one member; c and the module path are not families
    const a = fams[0]!;
    expect(a.indexNames).toEqual(['l', 'p']);
    expect(a.indices).toEqual([[0, 1], [0, 1]]);
    expect(a.shape).toEqual([2, 2, 1]);
    expect(Array.from(a.data)).toEqual([3, 1, 2, NaN]);
  });

  it('stacks members of every numeric dtype as float32 values (float64 rounded, 64-bit integers converted)', () => {
    const f64 = [Math.PI, -1e-300, 1e40];
    const saves = new Map<string, Tensor>([
      ['d.0', { dtype: 'float64', shape: [3], data: Float64Array.from(f64) }],
      ['d.1', { dtype: 'float64', shape: [3], data: Float64Array.from(f64, (v) => -v) }],
      ['i.0', { dtype: 'int64', shape: [2], data: BigInt64Array.of(-(2n ** 40n), 7n) }],
      ['i.1', { dtype: 'int64', shape: [2], data: BigInt64Array.of(3n, 2n ** 62n) }],
      ['n.0', { dtype: 'int32', shape: [2], data: Int32Array.of(-5, 16_777_217) }],
      ['n.1', { dtype: 'int32', shape: [2], data: Int32Array.of(0, 1) }],
    ]);
    const by = new Map(groupFamilies(saves).map((f) => [f.name, Array.from(f.data)]));
    expect(by.get('d')).toEqual([...f64, ...f64.map((v) => -v)].map(Math.fround));
    expect(by.get('i')).toEqual([-(2 ** 40), 7, 3, 2 ** 62].map(Math.fround));
    expect(by.get('n')).toEqual([-5, 16_777_216, 0, 1]);
  });

  it('stacks float32 members lying one after another in one buffer as a view; otherwise copies (holes NaN, duplicates, gaps, order)', () => {
    // One buffer as a remote result holds them: x.0 = [1, 2], x.1 = [3, 4], x.2 = [5, 6], then a gap, then [7, 8].
    const buf = Float32Array.of(1, 2, 3, 4, 5, 6, 0, 7, 8).buffer;
    const at = (k: number): Tensor => ({ dtype: 'float32', shape: [2], data: new Float32Array(buf, k * 8, 2) });
    const gap: Tensor = { dtype: 'float32', shape: [2], data: new Float32Array(buf, 28, 2) };
    const fam = (saves: [string, Tensor][]): Float32Array => groupFamilies(new Map(saves))[0]!.data;
    // Adjacent, named out of order: stacked by index, a view over the same memory.
    const v = fam([['x.1', at(1)], ['x.0', at(0)], ['x.2', at(2)]]);
    expect(Array.from(v)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(v.buffer).toBe(buf);
    // Stacking order differs from buffer order: copied, values by index.
    const swapped = fam([['x.0', at(1)], ['x.1', at(0)]]);
    expect(Array.from(swapped)).toEqual([3, 4, 1, 2]);
    expect(swapped.buffer).not.toBe(buf);
    // A gap between members: copied.
    expect(Array.from(fam([['x.0', at(2)], ['x.1', gap]]))).toEqual([5, 6, 7, 8]);
    // A hole (two indices, one cell missing) and a duplicate index (x.0.0 and x.00.0: the later wins, as before): copied.
    const holes = fam([['x.0.0', at(0)], ['x.00.0', at(1)], ['x.0.1', at(2)], ['x.1.1', gap]]);
    expect(Array.from(holes)).toEqual([3, 4, 5, 6, NaN, NaN, 7, 8]);
  });
});

describe('nns run --out / --plot / --html, nns plot', { timeout: 120_000 }, () => {
  let patch: Out;
  let lens: Out;
  const html = path.join(tmp, 'report.html');
  beforeAll(async () => {
    const [a, b] = await Promise.all([
      nns(['run', 'examples/patching.nns', '--out', path.join(tmp, 'patch.json'), '--plot', path.join(tmp, 'plots'), '--html', html]),
      nns(['run', 'examples/logit-lens.nns', '--out', path.join(tmp, 'lens.json')]),
    ]);
    expect(a.code, a.err).toBe(0);
    expect(b.code, b.err).toBe(0);
    patch = JSON.parse(fs.readFileSync(path.join(tmp, 'patch.json'), 'utf8')) as Out;
    lens = JSON.parse(fs.readFileSync(path.join(tmp, 'lens.json'), 'utf8')) as Out;
  }, 120_000);

  it('the patching family is the reference grid [layers, positions, 1], with the loop variables as index names', () => {
    const f = patch.$families.paris!;
    expect(f.indexNames).toEqual(['l', 'p']);
    expect(f.shape).toEqual([4, 8, 1]);
    const grid = refCase('patch_block_outputs').expect as number[][][];
    for (let l = 0; l < 4; l++) for (let p = 0; p < 8; p++) expect(Math.abs(f.data[l * 8 + p]! - grid[l]![p]![0]!), `l=${l} p=${p}`).toBeLessThan(1e-4);
    const rome = patch.$families.rome!;
    for (let l = 0; l < 4; l++) for (let p = 0; p < 8; p++) expect(Math.abs(rome.data[l * 8 + p]! - grid[l]![p]![1]!)).toBeLessThan(1e-4);
  });

  it('records the prompts with their token strings and row counts', () => {
    expect(patch.$prompts.map((p) => [p.text, p.rows])).toEqual([['The Trevi Fountain is in the city of', 1], ['The Eiffel Tower is in the city of', 32]]);
    const c = refCase('clean_logits');
    expect(patch.$prompts[1]!.tokens).toEqual(c.input_ids);
    expect(patch.$prompts[1]!.tokenStrings!.join('')).toBe('The Eiffel Tower is in the city of');
  });

  it('the logit-lens family carries the top tokens of the reference', () => {
    const f = lens.$families.lens!;
    expect(f.shape).toEqual([4, 1, 874]);
    const ref = refCase('logit_lens').expect as Record<string, { top1: number; p_top1: number }>;
    for (let l = 0; l < 4; l++) {
      const top = f.topTokens![l]![0]!;
      expect(top.id).toBe(ref[String(l)]!.top1);
      expect(top.token.trim()).toBe('Paris');
      expect(Math.abs(top.p - ref[String(l)]!.p_top1)).toBeLessThan(1e-5);
    }
  });

  it('writes a heatmap per 2-D family, labelled with the prompt tokens (SVG, PNG, Vega-Lite)', () => {
    const files = fs.readdirSync(path.join(tmp, 'plots')).sort();
    expect(files).toEqual(['paris.heatmap.png', 'paris.heatmap.svg', 'paris.heatmap.vl.json', 'rome.heatmap.png', 'rome.heatmap.svg', 'rome.heatmap.vl.json']);
    const svg = fs.readFileSync(path.join(tmp, 'plots', 'paris.heatmap.svg'), 'utf8');
    for (const label of ['0 The', '1 Eiffel', '2 Tower', '7 of']) expect(svg).toContain(label);
    expect(svg.match(/<path[^>]*aria-roledescription="rect mark"/g)?.length ?? (svg.match(/role-mark/g)?.length ?? 0)).toBeGreaterThan(0);
    const png = fs.readFileSync(path.join(tmp, 'plots', 'paris.heatmap.png'));
    expect(png.subarray(1, 4).toString()).toBe('PNG');
  });

  it('the HTML report links the graph files the run used (here the instrumented model of the fast path), which exist', () => {
    const page = fs.readFileSync(html, 'utf8');
    const links = [...page.matchAll(/<ul class="graphs">[\s\S]*?<\/ul>/g)].flatMap((m) => [...m[0].matchAll(/href="(file:[^"]+)"/g)].map((x) => x[1]!));
    expect(links.length).toBeGreaterThanOrEqual(1);
    expect(page).toContain('the instrumented model');
    for (const l of links) expect(fs.existsSync(new URL(l.replace(/&amp;/g, '&'))), l).toBe(true);
  });

  it('nns plot reads --out JSON back and makes the logit-lens table', async () => {
    const r = await nns(['plot', path.join(tmp, 'lens.json'), '--plot', path.join(tmp, 'lens-plots')]);
    expect(r.code, r.err).toBe(0);
    const svg = fs.readFileSync(path.join(tmp, 'lens-plots', 'lens.logit-lens.svg'), 'utf8');
    expect(svg).toContain('Paris 0.99');
    expect(svg).toContain('Paris 0.28');
    const bad = await nns(['plot', path.join(ROOT, 'README.md')]);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('error[bad-results]');
  });

  it('the HTML report renders in headless Chromium with every plot (screenshot: docs/report.png)', (ctx) => {
    const chromium = ['chromium', 'chromium-browser'].find((c) => spawnSync(c, ['--version'], { encoding: 'utf8' }).status === 0);
    if (!chromium) {
      ctx.skip();
      return;
    }
    const page = fs.readFileSync(html, 'utf8');
    expect(page.match(/<figure /g)?.length).toBe(2);
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', `--user-data-dir=${path.join(tmp, 'chrome')}`];
    const dom = spawnSync(chromium, [...flags, '--dump-dom', `file://${html}`], { encoding: 'utf8', timeout: 90_000 });
    expect(dom.status, dom.stderr).toBe(0);
    // What Chromium parsed: both figures with their SVGs, the token chips, the values table, the script.
    expect(dom.stdout.match(/<figure id="(paris|rome)\.heatmap"/g)?.length).toBe(2);
    expect(dom.stdout.match(/<svg/g)?.length).toBeGreaterThanOrEqual(2);
    expect(dom.stdout).toContain('1:  Eiffel');
    expect(dom.stdout).toContain('rome_clean');
    expect(dom.stdout).toContain('model.transformer.h[l].output[:, p, :] = src[p]');
    const shot = path.join(tmp, 'report.png');
    const r = spawnSync(chromium, [...flags, `--screenshot=${shot}`, '--window-size=1200,1400', '--hide-scrollbars', `file://${html}`], { encoding: 'utf8', timeout: 90_000 });
    expect(r.status, r.stderr).toBe(0);
    const png = fs.readFileSync(shot);
    expect(png.subarray(1, 4).toString()).toBe('PNG');
    expect(png.length).toBeGreaterThan(20_000); // a drawn page, not a blank one
    if (process.env.NNS_UPDATE_SCREENSHOT === '1') fs.copyFileSync(shot, path.join(ROOT, 'docs', 'report.png'));
  }, 180_000);
});

describe('TraceResult.families and prompts (TypeScript)', () => {
  it('a logit lens in a loop comes back as one [4, 1, 874] family matching the reference', async () => {
    const { LanguageModel } = await import('../../src/index.js');
    const { MODEL_DIR } = await import('../helpers/reference.js');
    const model = await LanguageModel.load(MODEL_DIR);
    try {
      const r = await model.trace('The Eiffel Tower is in the city of', (m) => {
        for (let l = 0; l < 4; l++) m.lm_head(m.transformer.ln_f(m.transformer.h[l]!.output.at(':', -1, ':'))).softmax(-1).save(`lens.${l}`);
      });
      expect(r.families.map((f) => [f.name, f.shape, f.indexNames])).toEqual([['lens', [4, 1, 874], ['i0']]]);
      const ref = refCase('logit_lens').expect as Record<string, { top1: number; p_top1: number }>;
      const f = r.families[0]!;
      for (let l = 0; l < 4; l++) expect(Math.abs(f.data[l * 874 + ref[String(l)]!.top1]! - ref[String(l)]!.p_top1)).toBeLessThan(1e-5);
      expect(r.prompts).toEqual([{ text: 'The Eiffel Tower is in the city of', tokens: refCase('clean_logits').input_ids, tokenStrings: ['The', ' Eiffel', ' Tower', ' is', ' in', ' the', ' city', ' of'], rows: 1 }]);
    } finally {
      await model.dispose();
    }
  }, 60_000);
});

describe('loop index names', () => {
  it('come from the loops around a binding', async () => {
    const { parseScript } = await import('../../grammar/parse.js');
    const ast = parseScript(fs.readFileSync(path.join(ROOT, 'examples', 'patching.nns'), 'utf8'), 'patching.nns').ast!;
    const names = loopIndexNames(ast);
    expect(names.get('paris')).toEqual(['l', 'p']);
    expect(names.get('src')).toEqual(['l']);
    expect(names.has('rome_clean')).toBe(false);
  });
});
