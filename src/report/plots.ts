/**
 * Plots of a run's results, as Vega-Lite specifications rendered in Node (vega → SVG,
 * @resvg/resvg-js → PNG), and one self-contained HTML report:
 * - a heatmap for every 2-D family of scalars (e.g. patching: layers × positions, the
 *   positions labelled with the prompt's tokens);
 * - a logit-lens table for every family of vocabulary-sized values (index × top tokens,
 *   coloured by probability; 2-D families: the top token in each cell);
 * - a line plot for every 1-D family of scalars.
 * The plotting libraries are loaded only when plots are made.
 * @module
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import type { TensorJSON } from '../tensor.js';
import type { FamilyJSON, PromptInfo } from './families.js';

/**
 * What plots and reports are made from: `nns run --out` JSON (saves, `$families`, `$prompts`).
 * @category Results
 */
export interface ReportData {
  /** Saved values by name. */
  saves: Record<string, TensorJSON>;
  /** Families of saves. */
  families: Record<string, FamilyJSON>;
  /** The prompts of the run. */
  prompts: PromptInfo[];
}

/**
 * One plot: a file stem, what it shows, and its Vega-Lite specification.
 * @category Results
 */
export interface PlotSpec {
  /** File name without extension (`paris.heatmap`). */
  name: string;
  kind: 'heatmap' | 'line' | 'logit-lens';
  /** The family it shows. */
  family: string;
  title: string;
  /** A Vega-Lite v6 specification (data inline). */
  spec: Record<string, unknown>;
}

const SCHEMA = 'https://vega.github.io/schema/vega-lite/v6.json';
const CONFIG = { font: 'sans-serif', view: { stroke: null }, axis: { labelFontSize: 11, titleFontSize: 12 } };

const numel = (s: readonly number[]): number => s.reduce((a, b) => a * b, 1);

/** The prompt most rows used (the one patched in a sweep). */
function mainPrompt(prompts: readonly PromptInfo[]): PromptInfo | undefined {
  return [...prompts].sort((a, b) => b.rows - a.rows)[0];
}

/** Labels of one index dimension: positions get `3 Tower` when they fit the main prompt. */
function axisLabels(values: readonly number[], indexName: string, prompt: PromptInfo | undefined, positional: boolean): string[] {
  const toks = prompt?.tokenStrings;
  if (positional && toks && values.every((v) => Number.isInteger(v) && v >= 0 && v < toks.length)) {
    return values.map((v) => `${v} ${JSON.stringify(toks[v]!).slice(1, -1).trim() || '␣'}`);
  }
  return values.map((v) => `${indexName}=${v}`);
}

/** Whether an index dimension looks like positions (named so, or the last of two whose values fit the prompt). */
function isPositional(name: string, d: number, rank: number): boolean {
  return /^(p|pos|position|positions|t|tok|token)$/i.test(name) || (rank === 2 && d === 1);
}

/** The plots the results call for, in family order. */
export function plotSpecs(report: ReportData): PlotSpec[] {
  const out: PlotSpec[] = [];
  const prompt = mainPrompt(report.prompts);
  for (const [name, f] of Object.entries(report.families)) {
    const rank = f.indexNames.length;
    const per = numel(f.valueShape);
    const labels = f.indices.map((v, d) => axisLabels(v, f.indexNames[d]!, prompt, isPositional(f.indexNames[d]!, d, rank)));
    if (f.topTokens && rank === 1) {
      const values = f.topTokens.flatMap((top, i) => top.map((t, r) => ({ row: labels[0]![i], rank: r + 1, token: JSON.stringify(t.token).slice(1, -1), p: t.p, label: `${JSON.stringify(t.token).slice(1, -1)} ${t.p.toFixed(2)}` })));
      out.push({
        name: `${name}.logit-lens`, kind: 'logit-lens', family: name, title: `${name}: top tokens by ${f.indexNames[0]}`,
        spec: {
          $schema: SCHEMA, title: `${name}: top tokens by ${f.indexNames[0]}`, config: CONFIG, data: { values },
          encoding: { y: { field: 'row', type: 'ordinal', sort: null, title: f.indexNames[0] }, x: { field: 'rank', type: 'ordinal', title: 'rank' } },
          layer: [
            { mark: 'rect', encoding: { color: { field: 'p', type: 'quantitative', scale: { domain: [0, 1], scheme: 'blues' }, title: 'probability' } } },
            { mark: { type: 'text', fontSize: 11 }, encoding: { text: { field: 'label' }, color: { condition: { test: 'datum.p > 0.5', value: 'white' }, value: 'black' } } },
          ],
          width: { step: 90 }, height: { step: 24 },
        },
      });
      continue;
    }
    if (rank === 2 && (per === 1 || f.topTokens)) {
      const values: Record<string, unknown>[] = [];
      for (let i = 0; i < f.indices[0]!.length; i++) {
        for (let j = 0; j < f.indices[1]!.length; j++) {
          const cell = i * f.indices[1]!.length + j;
          const top = f.topTokens?.[cell]?.[0];
          const v = top ? top.p : f.data[cell * per];
          if (v === null || v === undefined) continue;
          values.push({ y: labels[0]![i], x: labels[1]![j], value: v, ...(top ? { token: JSON.stringify(top.token).slice(1, -1) } : {}) });
        }
      }
      const title = `${name}${f.topTokens ? ' (top token and its probability)' : ''}: ${f.indexNames[0]} × ${f.indexNames[1]}`;
      const layers: Record<string, unknown>[] = [{ mark: 'rect', encoding: { color: { field: 'value', type: 'quantitative', scale: { scheme: 'viridis' }, title: f.topTokens ? 'p(top)' : name } } }];
      if (f.topTokens) layers.push({ mark: { type: 'text', fontSize: 10 }, encoding: { text: { field: 'token' }, color: { value: 'white' } } });
      out.push({
        name: `${name}.heatmap`, kind: 'heatmap', family: name, title,
        spec: {
          $schema: SCHEMA, title, config: CONFIG, data: { values },
          encoding: {
            x: { field: 'x', type: 'ordinal', sort: null, title: f.indexNames[1], axis: { labelAngle: -40 } },
            y: { field: 'y', type: 'ordinal', sort: null, title: f.indexNames[0] },
            tooltip: [{ field: 'y' }, { field: 'x' }, { field: 'value', format: '.4f' }],
          },
          layer: layers, width: { step: 44 }, height: { step: 28 },
        },
      });
      continue;
    }
    if (rank === 1 && per === 1) {
      const values = f.indices[0]!.map((x, i) => ({ x, label: labels[0]![i], value: f.data[i] })).filter((v) => v.value !== null);
      out.push({
        name: `${name}.line`, kind: 'line', family: name, title: `${name} by ${f.indexNames[0]}`,
        spec: {
          $schema: SCHEMA, title: `${name} by ${f.indexNames[0]}`, config: CONFIG, data: { values },
          mark: { type: 'line', point: true },
          encoding: { x: { field: 'x', type: 'quantitative', title: f.indexNames[0], axis: { tickMinStep: 1 } }, y: { field: 'value', type: 'quantitative', title: name } },
          width: 360, height: 200,
        },
      });
    }
  }
  return out;
}

/** Renders a Vega-Lite specification to SVG (vega in Node, no browser). */
export async function renderSvg(spec: Record<string, unknown>): Promise<string> {
  const [vl, vega] = await Promise.all([import('vega-lite'), import('vega')]);
  const compiled = vl.compile(spec as unknown as Parameters<typeof vl.compile>[0]).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders SVG to PNG (2× scale) with resvg. */
export async function renderPng(svg: string): Promise<Uint8Array> {
  const { Resvg } = await import('@resvg/resvg-js');
  return new Resvg(svg, { fitTo: { mode: 'zoom', value: 2 }, background: 'white', font: { loadSystemFonts: true, sansSerifFamily: 'DejaVu Sans', defaultFontFamily: 'DejaVu Sans' } }).render().asPng();
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function summary(t: TensorJSON): string {
  const xs = (t.data as unknown[]).map(Number).filter((x) => Number.isFinite(x));
  if (!xs.length) return '';
  let min = Infinity, max = -Infinity, sum = 0;
  for (const x of xs) { min = Math.min(min, x); max = Math.max(max, x); sum += x; }
  const f = (x: number): string => (Math.abs(x) >= 1e4 || (Math.abs(x) < 1e-3 && x !== 0) ? x.toExponential(3) : String(Number(x.toPrecision(4))));
  return xs.length === 1 ? f(xs[0]!) : `min ${f(min)} · max ${f(max)} · mean ${f(sum / xs.length)}`;
}

/**
 * One self-contained HTML page: every plot (inline SVG), the prompts with their tokens, a
 * summary of every saved value, and the script.
 */
export function htmlReport(report: ReportData, plots: readonly { spec: PlotSpec; svg: string }[], opts: { title?: string; script?: { file: string; text: string }; model?: string; graphs?: readonly { path: string; what: string }[] } = {}): string {
  const title = opts.title ?? 'onnsight report';
  const prompts = report.prompts.map((p) => `<li><q>${esc(p.text ?? p.tokens.join(' '))}</q> — ${p.rows} row${p.rows === 1 ? '' : 's'}${p.tokenStrings ? `<div class="toks">${p.tokenStrings.map((t, i) => `<span title="${p.tokens[i]}">${i}: ${esc(JSON.stringify(t).slice(1, -1))}</span>`).join('')}</div>` : ''}</li>`).join('\n');
  const figures = plots.map((p) => `<figure id="${esc(p.spec.name)}" data-kind="${p.spec.kind}"><figcaption>${esc(p.spec.title)}</figcaption>${p.svg}</figure>`).join('\n');
  const famNames = new Set(Object.values(report.families).flatMap((f) => f.members));
  const rows = Object.entries(report.saves).filter(([k]) => !famNames.has(k)).map(([k, t]) => `<tr><td><code>${esc(k)}</code></td><td>${t.dtype}</td><td>[${t.shape.join(', ')}]</td><td>${esc(summary(t))}</td></tr>`);
  const famRows = Object.entries(report.families).map(([k, f]) => `<tr><td><code>${esc(k)}</code> (${f.members.length} saves)</td><td>${f.dtype}</td><td>[${f.shape.join(', ')}] (${f.indexNames.join(' × ')} × value)</td><td>${esc(summary({ dtype: 'float32', shape: f.shape, data: f.data.filter((x): x is number => x !== null) } as TensorJSON))}</td></tr>`);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em;border-bottom:1px solid #ddd}
figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.4em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #eee;padding:.25em .8em;text-align:left;font-size:.9em}
.toks span{display:inline-block;background:#f1f3f7;border-radius:3px;margin:2px;padding:0 4px;font-family:monospace;font-size:.85em}
pre{background:#f7f7f9;padding:1em;overflow:auto}
</style></head><body>
<h1>${esc(title)}</h1>
${opts.model ? `<p>Model: <code>${esc(opts.model)}</code></p>` : ''}
<h2>Prompts</h2><ul>${prompts}</ul>
<h2>Plots</h2>
${figures || '<p>No family of saves to plot (plots are made for saves in loops: NAME.I or NAME.I.J).</p>'}
<h2>Values</h2>
<table><tr><th>name</th><th>dtype</th><th>shape</th><th>summary</th></tr>${[...famRows, ...rows].join('\n')}</table>
${opts.script ? `<h2>Script <code>${esc(opts.script.file)}</code></h2><pre>${esc(opts.script.text)}</pre>` : ''}
${opts.graphs ? `<h2>Graphs</h2>${opts.graphs.length ? `<ul class="graphs">${opts.graphs.map((g) => `<li><a href="${esc(pathToFileURL(g.path).href)}">${esc(path.basename(g.path))}</a> — ${esc(g.what)}</li>`).join('\n')}</ul>` : '<p>No graph file was needed.</p>'}<p><small>They live in the cache (<code>nns cache list</code>) and open in Netron; <code>nns compile SCRIPT -o OUT.onnx</code> writes a standalone copy.</small></p>` : ''}
<p><small>Made by onnsight.</small></p>
</body></html>
`;
}
