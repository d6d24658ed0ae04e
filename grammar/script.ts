/**
 * Whole-script front end: parse, check the top-level statements, and lower every trace in
 * order (for `nns check` and tests; `nns run` lowers each trace after running the earlier
 * ones, so later traces get the real types of earlier saves).
 * @module
 */
import type { DType } from '../src/model/types.js';
import { NnsError } from '../src/errors.js';
import type { GenerateStmt, Script, TraceStmt } from './ast.js';
import { lowerGenerateStep, lowerTrace, type GeneratorSave, type HostValueInfo, type LoweredTrace, type LowerOptions } from './lower.js';
import { generateSettings, type GenerateSettings } from './generate-options.js';
import { parseScript, sortErrors } from './parse.js';
import { limitsWith } from './limits.js';

/** The traces of a script, in order. */
export function traces(script: Script): TraceStmt[] {
  return script.statements.filter((s): s is TraceStmt => s.kind === 'Trace');
}

/** The traces and generates of a script, in order (what `nns run` runs). */
export function runnables(script: Script): (TraceStmt | GenerateStmt)[] {
  return script.statements.filter((s): s is TraceStmt | GenerateStmt => s.kind === 'Trace' || s.kind === 'Generate');
}

/** Result of {@link checkGenerate}. */
export interface CheckedGenerate {
  /** The options (absent after errors). */
  settings?: GenerateSettings;
  /** The prompts' tokens, one row per invoke. */
  prompts: number[][];
  /** `model.generator.output` saves. */
  generatorSaves: GeneratorSave[];
  /** Save names of every step, in order (without the `.S` suffix). */
  saves: string[];
  /** Every error of the options and of every step's lowering, in source order. */
  errors: NnsError[];
}

/**
 * Checks a generate without running it: its options, then the lowering of every step
 * (with one-token rows after step 0, as with a cache), so a bad `step` block or statement is
 * reported before anything runs. `maxPositions` bounds max_new_tokens.
 */
export function checkGenerate(gen: GenerateStmt, opts: LowerOptions & { maxPositions?: number }): CheckedGenerate {
  const first = lowerGenerateStep(gen, { ...opts, builder: undefined, step: 0, maxNewTokens: Number.MAX_SAFE_INTEGER });
  const prompts = first.prompts;
  const longest = prompts.length ? Math.max(...prompts.map((p) => p.length)) : undefined;
  const { settings, errors } = generateSettings(gen, opts.maxPositions, longest);
  const all = [...errors];
  const saves: string[] = [];
  if (settings) {
    for (let s = 0; s < settings.maxNewTokens; s++) {
      const l = lowerGenerateStep(gen, { ...opts, builder: undefined, step: s, maxNewTokens: settings.maxNewTokens, rows: s === 0 ? undefined : prompts.map(() => [0]) });
      all.push(...l.errors);
      for (const n of l.saves) if (!saves.includes(n)) saves.push(n);
    }
  } else all.push(...first.errors.filter((e) => e.code !== 'bad-step'));
  // Every step reports the same error again (with suggestions from its own names): keep the first per place.
  const seen = new Set<string>();
  const once = all.filter((e) => {
    const k = `${e.code}@${e.span?.offset ?? -1}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return { settings, prompts, generatorSaves: first.generatorSaves, saves, errors: sortErrors(once) };
}

/**
 * Checks the top level: at most one `model` statement, no reserved statements, at least
 * one trace or generate.
 */
export function checkTopLevel(script: Script): NnsError[] {
  const errors: NnsError[] = [];
  script.models.slice(1).forEach((m) => {
    const first = script.models[0]!.span;
    errors.push(new NnsError('duplicate-model', 'a script names its model once', { span: m.span, notes: [`the model was named at ${first.file}:${first.line}:${first.col}`] }));
  });
  for (const s of script.statements) {
    if (s.kind === 'Reserved') errors.push(new NnsError('not-yet-supported', `'${s.keyword}' is not supported yet`, { span: s.keywordSpan }));
  }
  if (runnables(script).length === 0 && errors.length === 0) {
    errors.push(new NnsError('no-trace', 'the script has no trace or generate block', { span: { ...script.span, endCol: script.span.col + 1, endLine: script.span.line, endOffset: script.span.offset + 1 } }));
  }
  return errors;
}

/** Result of {@link lowerScript}. */
export interface LoweredScript {
  /** The AST (absent after syntax errors). */
  ast?: Script;
  /** One lowered trace per `trace` block (empty after syntax errors); generate blocks are checked, not listed. */
  traces: LoweredTrace[];
  /** All errors of the first failing phase, in source order. */
  errors: NnsError[];
}

/**
 * Parses and lowers a whole script without running it. Values saved by a trace are passed
 * to later traces as host values with `hostType(name)` (default: float32 of unknown shape `[]`).
 */
export function lowerScript(
  text: string,
  opts: Omit<LowerOptions, 'host'> & { hostType?: (name: string, trace: LoweredTrace) => HostValueInfo },
): LoweredScript {
  const parsed = parseScript(text, opts.file, limitsWith(opts.limits));
  if (!parsed.ast) return { traces: [], errors: parsed.errors };
  const top = checkTopLevel(parsed.ast);
  if (top.length > 0) return { ast: parsed.ast, traces: [], errors: top };
  const host = new Map<string, HostValueInfo>();
  const out: LoweredTrace[] = [];
  const errors: NnsError[] = [];
  for (const t of runnables(parsed.ast)) {
    if (t.kind === 'Generate') {
      const g = checkGenerate(t, { ...opts, host: new Map(host) });
      errors.push(...g.errors);
      for (const n of g.saves) for (let s = 0; s < (g.settings?.maxNewTokens ?? 0); s++) host.set(`${n}.${s}`, { dtype: 'float32' as DType, shape: [] });
      for (const n of g.generatorSaves) host.set(n.name, { dtype: 'int64' as DType, shape: [] });
      continue;
    }
    const lowered = lowerTrace(t, { ...opts, host });
    out.push(lowered);
    errors.push(...lowered.errors);
    for (const name of lowered.saves) host.set(name, opts.hostType?.(name, lowered) ?? { dtype: 'float32' as DType, shape: [] });
  }
  return { ast: parsed.ast, traces: out, errors: sortErrors(errors) };
}
