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

/** Longest quoted source line; longer lines are clipped around the caret (`…` marks the cuts). */
export const MAX_QUOTED_LINE = 120;

/** Most errors rendered in full; the rest are counted in one closing line. */
export const MAX_RENDERED_ERRORS = 50;

/**
 * Offsets where each line of a text starts, computed once per text (so rendering many
 * errors of one file is linear, not one rescan per error).
 */
const lineStartCache = new WeakMap<Sources, Map<string, { text: string; starts: Uint32Array }>>();

/** The line-start offsets of `text` (one pass). */
export function lineStarts(text: string): Uint32Array {
  const starts: number[] = [0];
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) starts.push(i + 1);
  return Uint32Array.from(starts);
}

function startsFor(sources: Sources, file: string, text: string): Uint32Array {
  let files = lineStartCache.get(sources);
  if (!files) lineStartCache.set(sources, (files = new Map()));
  let entry = files.get(file);
  if (!entry || entry.text !== text) files.set(file, (entry = { text, starts: lineStarts(text) }));
  return entry.starts;
}

/** The 1-based line `n` of `text` (without its line break), or undefined. */
function lineOf(text: string, starts: Uint32Array, n: number): string | undefined {
  if (n < 1 || n > starts.length) return undefined;
  const from = starts[n - 1]!;
  let to = n < starts.length ? starts[n]! - 1 : text.length;
  if (to > from && text.charCodeAt(to - 1) === 13) to--;
  // Only the part that can be shown is sliced (a line may be megabytes long).
  return text.slice(from, to);
}

/**
 * The quoted line and the caret line for a span on `line`: `^` at the start, `~` under
 * the rest of the span on that line. Lines longer than {@link MAX_QUOTED_LINE} are clipped
 * to a window around the caret.
 */
function quote(line: string, span: Span): [string, string] {
  let start = Math.max(0, Math.min(span.col - 1, line.length));
  let end = span.endLine === span.line ? Math.max(start + 1, Math.min(span.endCol - 1, line.length)) : Math.max(start + 1, line.length);
  let text = line;
  if (line.length > MAX_QUOTED_LINE) {
    const half = Math.floor(MAX_QUOTED_LINE / 2);
    const from = Math.max(0, Math.min(start - half, line.length - MAX_QUOTED_LINE));
    const to = Math.min(line.length, from + MAX_QUOTED_LINE);
    const pre = from > 0 ? '…' : '';
    text = pre + line.slice(from, to) + (to < line.length ? '…' : '');
    start = start - from + pre.length;
    end = Math.min(end - from, to - from) + pre.length;
  }
  // Keep tabs so the caret lines up with the quoted line.
  const pad = text.slice(0, start).replace(/[^\t]/g, ' ');
  return [text, pad + '^' + '~'.repeat(Math.max(0, end - start - 1))];
}

/** Longest message or note shown (they may quote the script's text). */
export const MAX_MESSAGE = 400;

function clip(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text;
}

/** Renders one error (several lines, no trailing newline). */
export function renderError(err: NnsError, sources: Sources = new Map()): string {
  const head = `error[${err.code}]: ${clip(err.message)}`;
  const span = err.span;
  if (!span) return [`nns: ${head}`, ...err.notes.map((n) => `  = note: ${clip(n)}`)].join('\n');
  const out = [`${clip(span.file)}:${span.line}:${span.col}: ${head}`];
  const text = sources.get(span.file);
  const line = text === undefined ? undefined : lineOf(text, startsFor(sources, span.file, text), span.line);
  const width = String(span.line).length;
  const gutter = ' '.repeat(width);
  if (line !== undefined) {
    const [shown, caret] = quote(line, span);
    out.push(`  ${span.line} | ${shown}`);
    out.push(`  ${gutter} | ${caret}`);
  }
  for (const n of err.notes.slice(0, 10)) out.push(`  ${gutter} = note: ${clip(n)}`);
  return out.join('\n');
}

/**
 * Renders several errors, sorted by file and position, one after the other. At most
 * `max` (default {@link MAX_RENDERED_ERRORS}) are shown; a last line counts the rest.
 */
export function renderErrors(errors: readonly NnsError[], sources: Sources = new Map(), max = MAX_RENDERED_ERRORS): string {
  const sorted = [...errors].sort((a, b) => {
    const fa = a.span?.file ?? '';
    const fb = b.span?.file ?? '';
    if (fa !== fb) return fa < fb ? -1 : 1;
    return (a.span?.offset ?? -1) - (b.span?.offset ?? -1);
  });
  const shown = sorted.slice(0, max).map((e) => renderError(e, sources).trimEnd());
  const rest = sorted.length - shown.length;
  if (rest > 0) shown.push(`nns: ${rest} more error${rest === 1 ? '' : 's'} not shown (the first ${shown.length} are above)`);
  return shown.join('\n');
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
