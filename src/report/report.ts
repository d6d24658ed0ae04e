/**
 * From a run's results to report data, plot files and the HTML report (`nns run --plot`,
 * `--html`, `nns plot`).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Tensor } from '../tensor.js';
import { tensorToJSON, type TensorJSON } from '../tensor.js';
import { familyToJSON, familyTopTokens, groupFamilies, type FamilyJSON, type PromptInfo } from './families.js';
import { htmlReport, plotSpecs, renderPng, renderSvg, type PlotSpec, type ReportData } from './plots.js';

/** Token decoding for top-token tables. */
export interface ReportDecoder {
  vocabSize: number;
  tokenToString(id: number): string;
}

/** The report data of a run: saves, families (with index names and top tokens) and prompts. */
export function buildReport(results: ReadonlyMap<string, Tensor>, prompts: readonly PromptInfo[], indexNames: ReadonlyMap<string, string[]>, decoder?: ReportDecoder): ReportData {
  const saves: Record<string, TensorJSON> = {};
  for (const [k, v] of results) saves[k] = tensorToJSON(v);
  const families: Record<string, FamilyJSON> = {};
  for (const f of groupFamilies(results, indexNames)) {
    families[f.name] = familyToJSON(f, decoder ? familyTopTokens(f, decoder.vocabSize, (id) => decoder.tokenToString(id)) : undefined);
  }
  return { saves, families, prompts: [...prompts] };
}

/** `--out` JSON: the saves by name, plus `$families` and `$prompts`. */
export function reportToJSON(r: ReportData): string {
  return `${JSON.stringify({ ...r.saves, $families: r.families, $prompts: r.prompts })}\n`;
}

/** Reads `--out` JSON back (saves; `$families`/`$prompts` when present, else families regrouped without top tokens). */
export function reportFromJSON(text: string): ReportData {
  const j = JSON.parse(text) as Record<string, unknown>;
  const saves: Record<string, TensorJSON> = {};
  for (const [k, v] of Object.entries(j)) if (!k.startsWith('$')) saves[k] = v as TensorJSON;
  let families = j.$families as Record<string, FamilyJSON> | undefined;
  if (!families) {
    const tensors = new Map<string, Tensor>(Object.entries(saves).map(([k, t]) => [k, { dtype: 'float32', shape: t.shape, data: Float32Array.from(t.data as number[], Number) } as Tensor]));
    families = Object.fromEntries(groupFamilies(tensors).map((f) => [f.name, familyToJSON(f)]));
  }
  return { saves, families, prompts: (j.$prompts as PromptInfo[] | undefined) ?? [] };
}

/** Renders every plot of a report to SVG. */
export async function renderPlots(r: ReportData): Promise<{ spec: PlotSpec; svg: string }[]> {
  const out: { spec: PlotSpec; svg: string }[] = [];
  for (const spec of plotSpecs(r)) out.push({ spec, svg: await renderSvg(spec.spec) });
  return out;
}

function writeAtomic(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Writes NAME.svg, NAME.png and NAME.vl.json for every plot into `dir` (created if missing); returns the files. */
export async function writePlots(plots: readonly { spec: PlotSpec; svg: string }[], dir: string): Promise<string[]> {
  fs.mkdirSync(dir, { recursive: true });
  const files: string[] = [];
  for (const p of plots) {
    const base = path.join(dir, p.spec.name.replace(/[^\w.-]/g, '_'));
    writeAtomic(`${base}.svg`, p.svg);
    writeAtomic(`${base}.png`, await renderPng(p.svg));
    writeAtomic(`${base}.vl.json`, `${JSON.stringify(p.spec.spec, null, 1)}\n`);
    files.push(`${base}.svg`, `${base}.png`, `${base}.vl.json`);
  }
  return files;
}

/** Writes the self-contained HTML report. */
export function writeHtml(r: ReportData, plots: readonly { spec: PlotSpec; svg: string }[], file: string, opts: Parameters<typeof htmlReport>[2] = {}): void {
  writeAtomic(file, htmlReport(r, plots, opts));
}
