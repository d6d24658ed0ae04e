/**
 * FileCheck-style goldens (as MLIR's FileCheck and xDSL's `tests/filecheck`): a `.nns` test
 * file carries its `RUN:` line and its `CHECK` lines in comments; adding a test is adding a
 * file under test/filecheck/.
 *
 * ```
 * # RUN: nns check %s --passes=resolve-modules,infer-types
 * # CHECK: %0 = module.output #1 {path: "transformer.h.2"
 * # CHECK-NEXT: save #1 %0 {name: "h"}
 * # CHECK-NOT: index
 * ```
 *
 * RUN is `nns check %s` with the CLI's `--passes=a,b` (the passes to run, in order) and
 * `--print-ir-after=NAME,...` / `--print-ir-after-all`; what is checked is what the CLI
 * prints: the state after the last pass, or `// ----- after NAME -----` sections. Test-only
 * options: `--max-rows=N` (split-batch's row budget), `--grad-rows` (split-batch may run a
 * gradient's rows apart, as the compiled run path lets it), `--run-variant` (compile as a run
 * variant: the model's own outputs are not kept, as the compiled run path does).
 *
 * Directives: `CHECK: p` (a later line contains p), `CHECK-NEXT: p` (the next line does),
 * `CHECK-SAME: p` (the matched line does, further on), `CHECK-NOT: p` (no line between the
 * previous match and the next one does), `CHECK-EMPTY:` (the next line is empty). In `p`,
 * `{{re}}` is a regular expression; everything else is literal.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseScript } from '../../grammar/parse.js';
import { lowerTrace, type HostValueInfo } from '../../grammar/lower.js';
import { traces } from '../../grammar/script.js';
import { selectPasses } from '../../passes/pipeline.js';
import { printState } from '../../passes/run.js';
import { compileGraph, openModel, type ModelContext } from '../../src/engine.js';
import { NnsErrors } from '../../src/errors.js';

/** One directive. */
export interface Directive {
  kind: 'CHECK' | 'CHECK-NEXT' | 'CHECK-SAME' | 'CHECK-NOT' | 'CHECK-EMPTY';
  pattern: string;
  /** 1-based line in the test file. */
  line: number;
}

/** A parsed test file. */
export interface CheckFile {
  run: string[];
  directives: Directive[];
}

/** Reads the RUN and CHECK lines of a test file. */
export function parseCheckFile(text: string): CheckFile {
  const run: string[] = [];
  const directives: Directive[] = [];
  text.split('\n').forEach((l, i) => {
    const m = /^\s*#\s*(RUN|CHECK(?:-NEXT|-SAME|-NOT|-EMPTY)?):\s?(.*)$/.exec(l);
    if (!m) return;
    if (m[1] === 'RUN') run.push(...m[2]!.trim().split(/\s+/));
    else directives.push({ kind: m[1] as Directive['kind'], pattern: m[2]!.trimEnd(), line: i + 1 });
  });
  return { run, directives };
}

function matcher(pattern: string): RegExp {
  const parts = pattern.split(/(\{\{.*?\}\})/).map((p) => (p.startsWith('{{') ? `(?:${p.slice(2, -2)})` : p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
  return new RegExp(parts.join(''));
}

/** Checks `output` against `directives`; returns the first failure as a message, or null. */
export function fileCheck(output: string, directives: readonly Directive[]): string | null {
  const lines = output.split('\n');
  let cur = -1; // line of the last match
  let col = 0; // where on it the match ended (CHECK-SAME)
  let nots: Directive[] = [];
  const near = (from: number): string => lines.slice(Math.max(0, from), from + 3).map((l) => `    ${l}`).join('\n');
  const checkNots = (from: number, to: number): string | null => {
    for (const d of nots) {
      const re = matcher(d.pattern);
      for (let i = from; i < to; i++) if (re.test(lines[i]!)) return `line ${d.line}: CHECK-NOT '${d.pattern}' found on output line ${i + 1}: ${lines[i]}`;
    }
    nots = [];
    return null;
  };
  for (const d of directives) {
    if (d.kind === 'CHECK-NOT') { nots.push(d); continue; }
    const re = matcher(d.pattern);
    let at = -1;
    if (d.kind === 'CHECK') {
      for (let i = cur + 1; i < lines.length && at < 0; i++) if (re.test(lines[i]!)) at = i;
      if (at < 0) return `line ${d.line}: CHECK '${d.pattern}' not found after output line ${cur + 1}:\n${near(cur + 1)}`;
    } else if (d.kind === 'CHECK-NEXT' || d.kind === 'CHECK-EMPTY') {
      at = cur + 1;
      const ok = d.kind === 'CHECK-EMPTY' ? lines[at] === '' : at < lines.length && re.test(lines[at]!);
      if (!ok) return `line ${d.line}: ${d.kind} '${d.pattern}' does not match output line ${at + 1}: ${lines[at] ?? '<end>'}`;
    } else {
      const rest = (lines[cur] ?? '').slice(col);
      const m = re.exec(rest);
      if (cur < 0 || !m) return `line ${d.line}: CHECK-SAME '${d.pattern}' not on output line ${cur + 1}: ${lines[cur] ?? '<none>'}`;
      col += m.index + m[0].length;
      continue;
    }
    const bad = checkNots(cur + 1, at);
    if (bad) return bad;
    const m = re.exec(lines[at]!);
    col = m ? m.index + m[0].length : 0;
    cur = at;
  }
  return checkNots(cur + 1, lines.length);
}

const models = new Map<string, Promise<ModelContext>>();

/** Runs a test file's RUN line and returns what `nns check` would print. */
export async function runCheckFile(file: string): Promise<{ output: string; directives: Directive[] }> {
  const text = fs.readFileSync(file, 'utf8');
  const { run, directives } = parseCheckFile(text);
  if (run[0] !== 'nns' || run[1] !== 'check' || run[2] !== '%s') throw new Error(`${file}: RUN must start with 'nns check %s'`);
  const opt = (name: string): string | undefined => run.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
  const names = (name: string): string[] | undefined => opt(name)?.split(',');
  const passes = selectPasses(names('passes') ?? []);
  const printAfter = new Set(names('print-ir-after') ?? []);
  const all = run.includes('--print-ir-after-all');
  const { ast, errors } = parseScript(text, path.basename(file));
  if (errors.length || !ast) throw new NnsErrors(errors);
  const modelPath = path.resolve(path.dirname(file), ast.models[0]!.path);
  if (!models.has(modelPath)) models.set(modelPath, openModel(modelPath));
  const mc = await models.get(modelPath)!;
  const out: string[] = [];
  const host = new Map<string, HostValueInfo>();
  for (const t of traces(ast)) {
    const lowered = lowerTrace(t, { file: path.basename(file), tokenize: (s) => mc.loaded.tokenizer!.encode(s), host: new Map(host), tree: mc.tree });
    if (lowered.errors.length) throw new NnsErrors(lowered.errors);
    const maxRows = opt('max-rows');
    const gradRows = run.includes('--grad-rows');
    const pipeline = passes.map((p) => (p.name === 'split-batch' && (maxRows || gradRows) ? { ...p, run: (s: Parameters<typeof p.run>[0], c: Parameters<typeof p.run>[1]) => { if (maxRows) s.maxRows = Number(maxRows); s.gradRows = gradRows; return p.run(s, c); } } : p));
    const state = compileGraph(lowered.graph, mc, {
      pipeline, keepModelOutputs: !run.includes('--run-variant'),
      // What nns check / nns compile do (a run variant lowers for every size and stays flat).
      ...(run.includes('--run-variant') ? {} : { specialize: true, functions: !run.includes('--flat'), sourceText: text }),
      printAfterEach: (name, t2) => { if (all || printAfter.has(name)) out.push(`// ----- after ${name} -----\n${t2}`); },
    });
    if (!all && printAfter.size === 0) out.push(printState(passes[passes.length - 1]!, state));
    for (const n of lowered.graph.nodes) if (n.is('save')) host.set(n.attrs.name, { dtype: n.inputs[0]!.type?.dtype ?? 'float32', shape: [] });
  }
  return { output: out.join('\n'), directives };
}
