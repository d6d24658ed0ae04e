/**
 * Limits of the `.nns` front end. Scripts may come from strangers (remote execution), so
 * every resource the front end spends grows at most linearly with the script, and every
 * dimension that could make it grow faster is bounded up front with a located error
 * (code `too-large` or `too-deep`). The defaults are documented in docs/language.md.
 * @module
 */

/** The limits; see {@link DEFAULT_LIMITS} for the defaults. */
export interface FrontEndLimits {
  /** Longest script, in characters. */
  maxSourceChars: number;
  /** Most tokens in a script (after comments and whitespace are dropped). */
  maxTokens: number;
  /** Deepest nesting of `(`, `[`, `{` and consecutive unary minus signs. */
  maxNesting: number;
  /** Deepest expression tree: operands of one `+`/`*` chain, `.a.b.c` and `[i][j]` suffixes, and nesting all count. */
  maxExprDepth: number;
  /** Most numbers in one list literal (all levels together). */
  maxLiteralElements: number;
  /** Most iterations of one `for` loop. */
  maxLoopIterations: number;
  /**
   * Most unrolled work per trace: every lowered statement counts one plus the number of
   * AST nodes in its expressions, and every loop iteration (also of an empty body) one.
   */
  maxUnrolledWork: number;
  /** Most IR one trace may lower to: nodes, plus the elements of literals and of token prompts. */
  maxIrSize: number;
}

/** The default limits. */
export const DEFAULT_LIMITS: Readonly<FrontEndLimits> = Object.freeze({
  maxSourceChars: 1_000_000,
  maxTokens: 200_000,
  maxNesting: 100,
  maxExprDepth: 500,
  maxLiteralElements: 50_000,
  maxLoopIterations: 10_000,
  maxUnrolledWork: 2_000_000,
  maxIrSize: 1_000_000,
});

/** `DEFAULT_LIMITS` with some entries replaced. */
export function limitsWith(over?: Partial<FrontEndLimits>): FrontEndLimits {
  return { ...DEFAULT_LIMITS, ...over };
}

/** `1000000` → `1,000,000`. */
export function count(n: number): string {
  return n.toLocaleString('en-US');
}
