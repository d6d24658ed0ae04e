/**
 * The `.nns` lexer (Chevrotain). Keywords are tokens of their own but also belong to the
 * `AnyName` category, so they may still be used as member names after a dot
 * (`model.model.layers[0]`, `x.in`). Whitespace, newlines and `#` comments are skipped;
 * statement boundaries are recovered from newlines by {@link markLineStarts}.
 * @module
 */
import { createToken, Lexer, type IToken, type TokenType } from 'chevrotain';

/** Category of every token that can be used as a name after `.`. */
export const AnyName = createToken({ name: 'AnyName', pattern: Lexer.NA });

/** Identifiers: `[A-Za-z_][A-Za-z0-9_]*`. */
export const Identifier = createToken({ name: 'Identifier', pattern: /[A-Za-z_][A-Za-z0-9_]*/, categories: [AnyName] });

function keyword(word: string): TokenType {
  return createToken({
    name: word[0]!.toUpperCase() + word.slice(1),
    pattern: new RegExp(`${word}\\b`),
    longer_alt: Identifier,
    categories: [AnyName],
  });
}

export const Model = keyword('model');
export const Trace = keyword('trace');
export const Invoke = keyword('invoke');
export const For = keyword('for');
export const In = keyword('in');
export const True = keyword('true');
export const False = keyword('false');
/** Reserved for later versions of the language. */
export const Generate = keyword('generate');
export const Grad = keyword('grad');
export const Param = keyword('param');
export const Skip = keyword('skip');
export const Stop = keyword('stop');

/** Keywords reserved for constructs that are not implemented yet. */
export const RESERVED_KEYWORDS: readonly TokenType[] = [Generate, Grad, Param, Skip, Stop];

/** A complete string literal with escapes. */
export const StringLiteral = createToken({ name: 'StringLiteral', pattern: /"(?:[^"\\\r\n]|\\.)*"/ });
/** A string literal that reaches the end of the line without a closing quote (reported as an error). */
export const UnterminatedString = createToken({ name: 'UnterminatedString', pattern: /"(?:[^"\\\r\n]|\\.)*\\?/ });
/** `3`, `0.5`, `1e-3` (a leading `-` is the unary operator). */
export const NumberLiteral = createToken({ name: 'NumberLiteral', pattern: /\d+(?:\.\d+)?(?:[eE][+-]?\d+)?/ });

export const DotDot = createToken({ name: 'DotDot', pattern: /\.\./ });
export const Ellipsis = createToken({ name: 'Ellipsis', pattern: /\.\.\./ });
export const Dot = createToken({ name: 'Dot', pattern: /\./ });
export const LParen = createToken({ name: 'LParen', pattern: /\(/ });
export const RParen = createToken({ name: 'RParen', pattern: /\)/ });
export const LBracket = createToken({ name: 'LBracket', pattern: /\[/ });
export const RBracket = createToken({ name: 'RBracket', pattern: /]/ });
export const LCurly = createToken({ name: 'LCurly', pattern: /{/ });
export const RCurly = createToken({ name: 'RCurly', pattern: /}/ });
export const Comma = createToken({ name: 'Comma', pattern: /,/ });
export const Colon = createToken({ name: 'Colon', pattern: /:/ });
export const Equals = createToken({ name: 'Equals', pattern: /=/ });
export const Plus = createToken({ name: 'Plus', pattern: /\+/ });
export const Minus = createToken({ name: 'Minus', pattern: /-/ });
export const Star = createToken({ name: 'Star', pattern: /\*/ });
export const Slash = createToken({ name: 'Slash', pattern: /\// });
export const At = createToken({ name: 'At', pattern: /@/ });

export const Comment = createToken({ name: 'Comment', pattern: /#[^\r\n]*/, group: Lexer.SKIPPED });
export const WhiteSpace = createToken({ name: 'WhiteSpace', pattern: /[ \t\r\n\f\v]+/, group: Lexer.SKIPPED, line_breaks: true });

/** Every token type, in matching order. */
export const allTokens: TokenType[] = [
  WhiteSpace, Comment,
  StringLiteral, UnterminatedString, NumberLiteral,
  Ellipsis, DotDot, Dot,
  LParen, RParen, LBracket, RBracket, LCurly, RCurly, Comma, Colon, Equals,
  Plus, Minus, Star, Slash, At,
  Model, Trace, Invoke, For, In, True, False, Generate, Grad, Param, Skip, Stop,
  Identifier, AnyName,
];

/** The shared lexer instance. */
export const nnsLexer = new Lexer(allTokens, { positionTracking: 'full', ensureOptimizations: false });

/**
 * Tokens that begin a new line outside any `(...)` or `[...]`. An expression never
 * continues across such a line break, so `a = b` / `-c.save()` on two lines are two
 * statements. Computed once per token vector.
 */
export function markLineStarts(tokens: readonly IToken[]): WeakSet<IToken> {
  const starts = new WeakSet<IToken>();
  let depth = 0;
  let prevLine = 0;
  for (const t of tokens) {
    const line = t.startLine ?? 0;
    if (depth === 0 && line > prevLine) starts.add(t);
    const type = t.tokenType;
    if (type === LParen || type === LBracket) depth++;
    else if ((type === RParen || type === RBracket) && depth > 0) depth--;
    else if (type === LCurly || type === RCurly) depth = 0;
    prevLine = t.endLine ?? line;
  }
  return starts;
}
