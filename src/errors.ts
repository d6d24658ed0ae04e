/**
 * User-facing errors. Every problem a user can cause — a malformed script, an unknown
 * module, a shape mismatch, a bad model file — is an {@link NnsError} with a code, a
 * message and (for scripts) a source span. Internal invariant failures are plain `Error`s.
 * Codes are the {@link ErrorCode}s of src/error-codes.ts (one table, documented).
 * @module
 */
import type { ErrorCode } from './error-codes.js';

export type { ErrorCode } from './error-codes.js';

/**
 * A range of source text: 1-based line and column, 0-based offsets; `end*` is exclusive.
 * @category Errors
 */
export interface Span {
  /** File name as the user gave it (or `<script>` / `<api>`). */
  file: string;
  line: number;
  col: number;
  endLine: number;
  endCol: number;
  offset: number;
  endOffset: number;
}

/**
 * What kind of input caused the error, which decides the exit code of the `nns` command:
 * `script` → 1, `usage` and `model` → 2.
 * @category Errors
 */
export type ErrorKind = 'script' | 'usage' | 'model';

/**
 * A diagnostic for the user: a code such as `unknown-module`, a message, an optional location.
 *
 * ```ts
 * try {
 *   await model.trace('Hi', (m) => { m.transformer.h[99].output.save(); });
 * } catch (e) {
 *   if (e instanceof NnsError) console.log(e.code, e.message); // 'unknown-module' ...
 * }
 * ```
 * @category Errors
 */
export class NnsError extends Error {
  /** Short machine-readable code, e.g. `unknown-module`, `shape-mismatch`, `truncated-model`. */
  readonly code: ErrorCode;
  /** Which input was wrong. */
  readonly kind: ErrorKind;
  /** Where in the script (absent for model and usage errors). */
  readonly span?: Span;
  /** Extra lines shown after the message (`note: ...`). */
  readonly notes: string[];

  constructor(code: ErrorCode, message: string, opts: { kind?: ErrorKind; span?: Span; notes?: string[] } = {}) {
    super(message);
    this.name = 'NnsError';
    this.code = code;
    this.kind = opts.kind ?? 'script';
    this.span = opts.span;
    this.notes = opts.notes ?? [];
  }
}

/**
 * Several diagnostics from one phase (e.g. all syntax errors of a script).
 *
 * ```ts
 * try {
 *   // ... a trace
 * } catch (e) {
 *   if (e instanceof NnsErrors) for (const err of e.errors) console.log(err.code);
 * }
 * ```
 * @category Errors
 */
export class NnsErrors extends Error {
  /** The individual diagnostics, in source order. */
  readonly errors: NnsError[];
  constructor(errors: NnsError[]) {
    super(errors.map((e) => e.message).join('\n'));
    this.name = 'NnsErrors';
    this.errors = errors;
  }
}

/** Shorthand for a model-file error (exit code 2). */
export function modelError(code: ErrorCode, message: string, notes: string[] = []): NnsError {
  return new NnsError(code, message, { kind: 'model', notes });
}

/** Shorthand for a command-line usage error (exit code 2). */
export function usageError(code: ErrorCode, message: string, notes: string[] = []): NnsError {
  return new NnsError(code, message, { kind: 'usage', notes });
}
