/**
 * Rendering of {@link NnsError}s for people, in the style of MLIR and rustc:
 *
 * ```
 * eiffel.nns:3:21: error[unknown-module]: no module 'transformer.h[7]' (the model has h[0]..h[3])
 *   3 |   x = model.transformer.h[7].output.save()
 *     |                     ^~~~~
 *     = note: ...
 * ```
 *
 * Errors without a span (model and usage errors) render as `nns: error[CODE]: MESSAGE`.
 * @module
 */
import { NnsError, NnsErrors, type Span } from './errors.js';

/** Source texts by file name (as in `Span.file`), for the quoted source lines. */
export type Sources = ReadonlyMap<string, string>;

/** The 1-based line `n` of `text` (without its line break), or undefined. */
function lineOf(text: string, n: number): string | undefined {
  const lines = text.split(/\r?\n/);
  return n >= 1 && n <= lines.length ? lines[n - 1] : undefined;
}

/** The caret line for a span on `line`: `^` at the start, `~` under the rest of the span on that line. */
function underline(line: string, span: Span): string {
  const start = Math.max(0, Math.min(span.col - 1, line.length));
  const end = span.endLine === span.line ? Math.max(start + 1, Math.min(span.endCol - 1, line.length)) : Math.max(start + 1, line.length);
  // Keep tabs so the caret lines up with the quoted line.
  const pad = line.slice(0, start).replace(/[^\t]/g, ' ');
  return pad + '^' + '~'.repeat(Math.max(0, end - start - 1));
}

/** Renders one error (several lines, no trailing newline). */
export function renderError(err: NnsError, sources: Sources = new Map()): string {
  const head = `error[${err.code}]: ${err.message}`;
  const span = err.span;
  if (!span) return [`nns: ${head}`, ...err.notes.map((n) => `  = note: ${n}`)].join('\n');
  const out = [`${span.file}:${span.line}:${span.col}: ${head}`];
  const text = sources.get(span.file);
  const line = text === undefined ? undefined : lineOf(text, span.line);
  const width = String(span.line).length;
  const gutter = ' '.repeat(width);
  if (line !== undefined) {
    out.push(`  ${span.line} | ${line}`);
    out.push(`  ${gutter} | ${underline(line, span)}`);
  }
  for (const n of err.notes) out.push(`  ${gutter} = note: ${n}`);
  return out.join('\n');
}

/** Renders several errors, sorted by file and position, separated by blank lines. */
export function renderErrors(errors: readonly NnsError[], sources: Sources = new Map()): string {
  const sorted = [...errors].sort((a, b) => {
    const fa = a.span?.file ?? '';
    const fb = b.span?.file ?? '';
    if (fa !== fb) return fa < fb ? -1 : 1;
    return (a.span?.offset ?? -1) - (b.span?.offset ?? -1);
  });
  return sorted.map((e) => renderError(e, sources).trimEnd()).join('\n');
}

/** The individual errors inside a thrown NnsError or NnsErrors, or undefined for anything else. */
export function userErrors(thrown: unknown): NnsError[] | undefined {
  if (thrown instanceof NnsErrors) return thrown.errors;
  if (thrown instanceof NnsError) return [thrown];
  return undefined;
}

/**
 * Exit code of the `nns` command for a set of errors: 2 when any is a usage or model
 * error, else 1 (script errors).
 */
export function exitCodeFor(errors: readonly NnsError[]): 1 | 2 {
  return errors.some((e) => e.kind === 'usage' || e.kind === 'model') ? 2 : 1;
}
