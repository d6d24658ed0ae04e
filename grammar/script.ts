/**
 * Whole-script front end: parse, check the top-level statements, and lower every trace in
 * order (for `nns check` and tests; `nns run` lowers each trace after running the earlier
 * ones, so later traces get the real types of earlier saves).
 * @module
 */
import type { DType } from '../src/model/types.js';
import { NnsError } from '../src/errors.js';
import type { Script, TraceStmt } from './ast.js';
import { lowerTrace, type HostValueInfo, type LoweredTrace, type LowerOptions } from './lower.js';
import { parseScript, sortErrors } from './parse.js';
import { limitsWith } from './limits.js';

/** The traces of a script, in order. */
export function traces(script: Script): TraceStmt[] {
  return script.statements.filter((s): s is TraceStmt => s.kind === 'Trace');
}

/**
 * Checks the top level: at most one `model` statement, no reserved statements
 * (`generate`), at least one trace.
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
  if (traces(script).length === 0 && errors.length === 0) {
    errors.push(new NnsError('no-trace', 'the script has no trace block', { span: { ...script.span, endCol: script.span.col + 1, endLine: script.span.line, endOffset: script.span.offset + 1 } }));
  }
  return errors;
}

/** Result of {@link lowerScript}. */
export interface LoweredScript {
  /** The AST (absent after syntax errors). */
  ast?: Script;
  /** One lowered trace per `trace` block (empty after syntax errors). */
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
  for (const t of traces(parsed.ast)) {
    const lowered = lowerTrace(t, { ...opts, host });
    out.push(lowered);
    errors.push(...lowered.errors);
    for (const name of lowered.saves) host.set(name, opts.hostType?.(name, lowered) ?? { dtype: 'float32' as DType, shape: [] });
  }
  return { ast: parsed.ast, traces: out, errors: sortErrors(errors) };
}
