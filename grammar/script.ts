/**
 * Whole-script front end: parse, check the top-level statements, and lower every trace in
 * order (for `nns check` and tests; `nns run` lowers each trace after running the earlier
 * ones, so later traces get the real types of earlier saves).
 * @module
 */
import type { DType } from '../src/model/types.js';
import { NnsError } from '../src/errors.js';
import { suggest } from '../src/suggest.js';
import type { Tensor } from '../src/tensor.js';
import type { GenerateStmt, ParamStmt, Script, Span, TraceStmt } from './ast.js';
import { constInt } from './consteval.js';
import { Env } from './scope.js';
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

/** A checked `param NAME: TYPE[D0, ...]` declaration. */
export interface ParamDecl {
  name: string;
  dtype: DType;
  shape: number[];
  /** The declaration (for errors about the value given for it). */
  span: Span;
}

/** Element types a `param` may declare (short and long names). */
export const PARAM_DTYPES: ReadonlyMap<string, DType> = new Map<string, DType>([
  ['f32', 'float32'], ['f64', 'float64'], ['f16', 'float16'], ['i64', 'int64'], ['i32', 'int32'],
  ['float32', 'float32'], ['float64', 'float64'], ['float16', 'float16'], ['int64', 'int64'], ['int32', 'int32'],
]);

/** The short name of a dtype as a `param` declaration writes it (`float32` → `f32`). */
export function paramTypeText(d: DType): string {
  return [...PARAM_DTYPES].find(([, v]) => v === d)?.[0] ?? d;
}

/**
 * The `param` declarations of a script, checked: a known element type, dimensions that are
 * whole numbers >= 0, each name declared once. Errors are located at the declaration.
 */
export function paramDecls(script: Script): { decls: ParamDecl[]; errors: NnsError[] } {
  const decls: ParamDecl[] = [];
  const errors: NnsError[] = [];
  const seen = new Map<string, ParamStmt>();
  for (const s of script.statements) {
    if (s.kind !== 'Param') continue;
    const first = seen.get(s.name);
    if (first) {
      errors.push(new NnsError('bad-param', `'${s.name}' is already declared as a param`, { span: s.nameSpan, notes: [`first declared at ${first.nameSpan.file}:${first.nameSpan.line}:${first.nameSpan.col}`] }));
      continue;
    }
    seen.set(s.name, s);
    if (!s.type || !s.dims) {
      errors.push(new NnsError('bad-param', `param '${s.name}' needs a type and a shape: param ${s.name}: f32[D0, D1, ...]`, { span: s.span }));
      continue;
    }
    const dtype = PARAM_DTYPES.get(s.type.name);
    if (!dtype) {
      errors.push(new NnsError('bad-param', `unknown element type '${s.type.name}' (use f32, f64, f16, i64 or i32)`, { span: s.type.span }));
      continue;
    }
    const shape: number[] = [];
    let ok = true;
    for (const d of s.dims.items) {
      try {
        const n = constInt(d, new Env(), 'a param dimension');
        if (n < 0) throw new NnsError('bad-param', `a param dimension must be >= 0, not ${n}`, { span: d.span });
        shape.push(n);
      } catch (e) {
        if (!(e instanceof NnsError)) throw e;
        errors.push(e.code === 'bad-param' ? e : new NnsError('bad-param', `a param dimension must be a whole number >= 0`, { span: d.span }));
        ok = false;
      }
    }
    if (ok) decls.push({ name: s.name, dtype, shape, span: s.span });
  }
  return { decls, errors };
}

/**
 * Checks the values given for a script's params against their declarations: every declared
 * param has a value of its dtype and shape, and every value is for a declared param.
 * `how(name)` says where a value came from, for messages (`--param v=v.json`). Errors are
 * usage errors (exit code 2), located at the declaration where there is one.
 */
export function bindParams(decls: readonly ParamDecl[], given: ReadonlyMap<string, Tensor>, how: (name: string) => string): { values: Map<string, Tensor>; errors: NnsError[] } {
  const values = new Map<string, Tensor>();
  const errors: NnsError[] = [];
  const declared = new Map(decls.map((d) => [d.name, d]));
  for (const name of given.keys()) {
    if (declared.has(name)) continue;
    const near = suggest(name, declared.keys());
    errors.push(new NnsError('unknown-param', `${how(name)}: the script declares no param '${name}'${near ? `; did you mean '${near}'?` : decls.length ? ` (it declares ${decls.map((d) => d.name).join(', ')})` : ' (it declares none)'}`, { kind: 'usage' }));
  }
  for (const d of decls) {
    const t = given.get(d.name);
    const want = `${paramTypeText(d.dtype)}[${d.shape.join(', ')}]`;
    if (!t) {
      errors.push(new NnsError('missing-param', `no value for param '${d.name}: ${want}' (give it with --param ${d.name}=FILE.json)`, { kind: 'usage', span: d.span }));
      continue;
    }
    const got = `${paramTypeText(t.dtype)}[${t.shape.join(', ')}]`;
    if (t.dtype !== d.dtype || t.shape.length !== d.shape.length || t.shape.some((x, i) => x !== d.shape[i])) {
      errors.push(new NnsError('param-mismatch', `param '${d.name}' is declared ${want} but ${how(d.name)} is ${got}`, { kind: 'usage', span: d.span }));
      continue;
    }
    values.set(d.name, t);
  }
  return { values, errors: sortErrors(errors) };
}

/** Host value types of the declared params (the first host values of every trace). */
export function paramHost(script: Script): Map<string, HostValueInfo> {
  return new Map(paramDecls(script).decls.map((d) => [d.name, { dtype: d.dtype, shape: [...d.shape] }]));
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
 * Checks the top level: at most one `model` statement, no reserved statements, valid
 * `param` declarations, at least one trace or generate.
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
  errors.push(...paramDecls(script).errors);
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
  const host = paramHost(parsed.ast);
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
