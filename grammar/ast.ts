/**
 * The typed AST of a `.nns` script. Every node carries the {@link Span} of its source
 * text. Expressions are kept generic (names, members, indexing, calls); the meaning of a
 * `model.…` chain (module output, parameter, module call, graph output) is decided by
 * lowering, which knows loop-variable values.
 * @module
 */
import type { Span } from '../src/errors.js';

export type { Span };

/** A whole script. */
export interface Script {
  kind: 'Script';
  /** `model "PATH"` statements (at most one is valid). */
  models: ModelStmt[];
  /** Top-level statements in source order. */
  statements: TopStatement[];
  span: Span;
}

/** A statement at the top of a script. */
export type TopStatement = ModelStmt | TraceStmt | GenerateStmt | ParamStmt | ReservedStmt;

/** `model "PATH"`. */
export interface ModelStmt {
  kind: 'Model';
  path: string;
  /** Span of the string literal. */
  pathSpan: Span;
  span: Span;
}

/**
 * `param NAME: TYPE[D0, D1, ...]`: a value the host supplies (`--param NAME=FILE.json`, or
 * `params` from TypeScript), usable in every trace like a saved value and differentiable.
 */
export interface ParamStmt {
  kind: 'Param';
  name: string;
  nameSpan: Span;
  /** Span of the `param` keyword. */
  keywordSpan: Span;
  /** The element type as written (`f32`), absent when missing. */
  type?: { name: string; span: Span };
  /** The dimensions as written (compile-time integers), absent when missing. */
  dims?: { items: Expr[]; span: Span };
  span: Span;
}

/** The prompt of a `trace` or an `invoke`. */
export type Prompt =
  | { kind: 'TextPrompt'; text: string; span: Span }
  | { kind: 'TokenPrompt'; items: Expr[]; span: Span };

/** `trace PROMPT { ... }` or `trace { invoke ... }`. */
export interface TraceStmt {
  kind: 'Trace';
  /** Absent for a multi-invoke trace. */
  prompt?: Prompt;
  body: Statement[];
  /** Span of the `trace` keyword (and prompt). */
  headerSpan: Span;
  span: Span;
}

/** One `NAME=VALUE` option of a `generate`. */
export interface GenerateOption {
  name: string;
  nameSpan: Span;
  value: Expr;
  span: Span;
}

/** `generate PROMPT OPTIONS { ... }` or `generate OPTIONS { invoke ... }`. */
export interface GenerateStmt {
  kind: 'Generate';
  /** Absent for the batched form (invokes in the body). */
  prompt?: Prompt;
  options: GenerateOption[];
  body: Statement[];
  /** Span of the `generate` keyword (and prompt). */
  headerSpan: Span;
  span: Span;
}

/** `step S { ... }` or `step A..B { ... }`: statements run only at those generation steps. */
export interface StepStmt {
  kind: 'Step';
  from: Expr;
  /** Exclusive end of a range; absent for a single step. */
  to?: Expr;
  body: Statement[];
  /** Span of `step S` / `step A..B`. */
  headerSpan: Span;
  span: Span;
}

/** A statement inside a block. */
export type Statement = BindStmt | SetStmt | ExprStmt | ForStmt | InvokeStmt | StepStmt | ReservedStmt;

/** `NAME = EXPR`. */
export interface BindStmt {
  kind: 'Bind';
  name: string;
  nameSpan: Span;
  value: Expr;
  span: Span;
}

/** `TARGET = EXPR` where TARGET is a `model.…` chain ending in a port, maybe indexed. */
export interface SetStmt {
  kind: 'Set';
  target: Expr;
  value: Expr;
  span: Span;
}

/** An expression on its own (typically `EXPR.save()`). */
export interface ExprStmt {
  kind: 'ExprStmt';
  expr: Expr;
  span: Span;
}

/** `for NAME in A..B { ... }`. */
export interface ForStmt {
  kind: 'For';
  name: string;
  nameSpan: Span;
  from: Expr;
  to: Expr;
  body: Statement[];
  /** Span of `for NAME in A..B`. */
  headerSpan: Span;
  span: Span;
}

/** `invoke PROMPT { ... }`. */
export interface InvokeStmt {
  kind: 'Invoke';
  prompt: Prompt;
  body: Statement[];
  headerSpan: Span;
  span: Span;
}

/** A construct of a later version of the language (`param`, `skip`, `stop`; `generate` is no longer produced). */
export interface ReservedStmt {
  kind: 'Reserved';
  keyword: 'generate' | 'param' | 'skip' | 'stop';
  /** Span of the keyword. */
  keywordSpan: Span;
  span: Span;
}

/** An expression. */
export type Expr =
  | NumberExpr
  | StringExpr
  | BoolExpr
  | NameExpr
  | ModelExpr
  | ListExpr
  | UnaryExpr
  | BinaryExpr
  | MemberExpr
  | IndexExpr
  | CallExpr;

/** `3`, `0.5`, `1e-3`. */
export interface NumberExpr { kind: 'Number'; value: number; /** Written without `.` or exponent. */ isInt: boolean; text: string; span: Span }
/** A string literal (escapes resolved). */
export interface StringExpr { kind: 'String'; value: string; span: Span }
/** `true` / `false`. */
export interface BoolExpr { kind: 'Bool'; value: boolean; span: Span }
/** A name (bound value, loop variable, function name, or `grad`). */
export interface NameExpr { kind: 'Name'; name: string; span: Span }
/** The keyword `model`: the root of module references. */
export interface ModelExpr { kind: 'Model'; span: Span }
/** `[a, b, c]`. */
export interface ListExpr { kind: 'List'; items: Expr[]; span: Span }
/** `-x`. */
export interface UnaryExpr { kind: 'Unary'; op: '-'; operand: Expr; span: Span }
/** Binary arithmetic; `@` is matrix multiplication. */
export interface BinaryExpr { kind: 'Binary'; op: '+' | '-' | '*' | '/' | '@'; left: Expr; right: Expr; span: Span }
/** `x.name`. */
export interface MemberExpr { kind: 'Member'; object: Expr; name: string; nameSpan: Span; span: Span }
/** `x[items]`. */
export interface IndexExpr { kind: 'Index'; object: Expr; items: IndexItemAst[]; span: Span }
/** `f(args)`, `model.lm_head(h)`, `x.save()`. */
export interface CallExpr { kind: 'Call'; callee: Expr; args: Arg[]; span: Span }

/** One argument of a call; `name` for keyword arguments (`dim=-1`). */
export interface Arg { name?: string; value: Expr; span: Span }

/** One item inside `[...]`. */
export type IndexItemAst =
  | { kind: 'index'; value: Expr; span: Span }
  | { kind: 'slice'; start?: Expr; stop?: Expr; step?: Expr; span: Span }
  | { kind: 'ellipsis'; span: Span };
