/**
 * Text → AST: lex, parse (with recovery: every syntax error is reported) and build the
 * AST. Later phases run only when this one reports no errors.
 *
 * Hostile input is bounded before Chevrotain sees it (see `limits.ts`): the script's
 * length and token count, and — in one cheap pass over the tokens, because the parser
 * and the AST builder recurse — the nesting of brackets, blocks and unary minus. The
 * same pass matches brackets, so an unclosed `(` is reported where it was opened.
 * Positions are found with a line index built once, never by rescanning the text.
 * @module
 */
import { EOF, type IRecognitionException, type IToken, type TokenType } from 'chevrotain';
import { NnsError, type Span } from '../src/errors.js';
import type * as A from './ast.js';
import { count, DEFAULT_LIMITS, type FrontEndLimits } from './limits.js';
import { LBracket, LCurly, LParen, markLineStarts, Minus, nnsLexer, RBracket, RCurly, RParen, StringLiteral, UnterminatedString } from './lexer.js';
import { nnsParser } from './parser.js';
import { AstBuilder, tokenSpan } from './visitor.js';

/** Result of {@link parseScript}: the AST when the script is syntactically valid, and the errors in source order. */
export interface ParseResult {
  /** Present only when `errors` is empty. */
  ast?: Script;
  errors: NnsError[];
}
type Script = A.Script;

/** Line/column of offsets in one text, from a line index built on first use. */
class Positions {
  private starts: number[] | undefined;
  constructor(private readonly file: string, private readonly text: string) {}

  /** A span of `length` characters at `offset` (one line). */
  span(offset: number, length = 1): Span {
    if (!this.starts) {
      const s = [0];
      for (let i = this.text.indexOf('\n'); i !== -1; i = this.text.indexOf('\n', i + 1)) s.push(i + 1);
      this.starts = s;
    }
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (s[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    const line = lo + 1;
    const col = offset - s[lo]! + 1;
    return { file: this.file, line, col, endLine: line, endCol: col + length, offset, endOffset: offset + length };
  }
}

const CLOSER = new Map<TokenType, TokenType>([[LParen, RParen], [LBracket, RBracket], [LCurly, RCurly]]);
const OPENER = new Map<TokenType, TokenType>([[RParen, LParen], [RBracket, LBracket], [RCurly, LCurly]]);

/** What {@link scanBrackets} finds. */
interface BracketScan {
  /** Openers without a matching closer, in source order. */
  unclosed: IToken[];
  /** Closers without a matching opener. */
  stray: Set<IToken>;
  /** The first token nested deeper than the limit. */
  tooDeep?: IToken;
}

/**
 * One pass over the tokens: matches brackets with a stack (a closer that matches an
 * opener deeper in the stack closes it, leaving the ones above unclosed; one that
 * matches none is stray) and measures nesting, counting a run of unary minus signs as
 * nesting too (the grammar recurses on each).
 */
function scanBrackets(tokens: readonly IToken[], maxNesting: number): BracketScan {
  const stack: IToken[] = [];
  const unclosed: IToken[] = [];
  const stray = new Set<IToken>();
  let minusRun = 0;
  for (const t of tokens) {
    const type = t.tokenType;
    minusRun = type === Minus ? minusRun + 1 : 0;
    if (CLOSER.has(type)) {
      stack.push(t);
    } else if (OPENER.has(type)) {
      const want = OPENER.get(type)!;
      let k = stack.length - 1;
      while (k >= 0 && stack[k]!.tokenType !== want) k--;
      if (k < 0) stray.add(t);
      else {
        for (let j = k + 1; j < stack.length; j++) unclosed.push(stack[j]!);
        stack.length = k;
      }
    }
    if (stack.length + minusRun > maxNesting) return { unclosed, stray, tooDeep: t };
  }
  unclosed.push(...stack);
  unclosed.sort((a, b) => a.startOffset - b.startOffset);
  return { unclosed, stray };
}

function syntaxError(pos: Positions, file: string, text: string, e: IRecognitionException): NnsError {
  const t = e.token;
  const prev = (e as IRecognitionException & { previousToken?: IToken }).previousToken;
  const atEnd = t.tokenType === EOF || Number.isNaN(t.startOffset);
  let span: Span;
  if (prev && !Number.isNaN(prev.startOffset) && (atEnd || (t.startLine ?? 0) > (prev.endLine ?? 0))) {
    // What is missing belongs to the previous line: point just after the last token there.
    span = pos.span((prev.endOffset ?? prev.startOffset) + 1, 1);
  } else if (atEnd) {
    // Chevrotain's virtual EOF token has NaN positions: point past the last character.
    span = pos.span(Math.max(0, text.trimEnd().length), 1);
  } else {
    span = tokenSpan(file, t);
  }
  return new NnsError('syntax-error', e.message, { span });
}

/**
 * Rewrites the parser's errors about brackets: an error at a stray closer says so; an
 * error expecting a closer whose opener is never closed is replaced by one error at the
 * opener (`'(' at 2:40 is never closed`). Every unclosed opener is reported once.
 */
function bracketErrors(file: string, scan: BracketScan, parserErrors: { error: NnsError; token: IToken }[]): NnsError[] {
  const out: NnsError[] = [];
  const where = (t: IToken): string => `${t.startLine}:${t.startColumn}`;
  for (const t of scan.unclosed) {
    const close = tokenLabelOf(CLOSER.get(t.tokenType)!);
    out.push(new NnsError('unclosed-bracket', `'${t.image}' at ${where(t)} is never closed`, { span: tokenSpan(file, t), notes: [`add the matching ${close}`] }));
  }
  for (const { error, token } of parserErrors) {
    if (scan.stray.has(token)) {
      out.push(new NnsError('unmatched-bracket', `'${token.image}' has no matching ${tokenLabelOf(OPENER.get(token.tokenType)!)}`, { span: error.span }));
      continue;
    }
    const m = /^expected '([)\]}])'/.exec(error.message);
    if (m) {
      const want = m[1] === ')' ? LParen : m[1] === ']' ? LBracket : LCurly;
      const at = Number.isNaN(token.startOffset) ? Infinity : token.startOffset;
      if (scan.unclosed.some((o) => o.tokenType === want && o.startOffset < at)) continue; // reported at the opener
    }
    out.push(error);
  }
  return out;
}

function tokenLabelOf(t: TokenType): string {
  return `'${(t.PATTERN as RegExp).source.replace(/\\/g, '')}'`;
}

/**
 * Parses a `.nns` script.
 * @param text the source text
 * @param file the file name used in spans (as the user gave it)
 * @param limits the front end's limits (default {@link DEFAULT_LIMITS})
 */
export function parseScript(text: string, file: string, limits: FrontEndLimits = DEFAULT_LIMITS): ParseResult {
  const pos = new Positions(file, text);
  if (text.length > limits.maxSourceChars) {
    return { errors: [new NnsError('too-large', `the script has ${count(text.length)} characters; the limit is ${count(limits.maxSourceChars)}`, { span: pos.span(limits.maxSourceChars, 1) })] };
  }
  const errors: NnsError[] = [];
  const lexed = nnsLexer.tokenize(text);
  for (const e of lexed.errors) {
    const ch = text.slice(e.offset, e.offset + Math.min(e.length, 20)) + (e.length > 20 ? '…' : '');
    errors.push(new NnsError('unexpected-character', `unexpected character${e.length > 1 ? 's' : ''} '${ch}'`, { span: pos.span(e.offset, e.length) }));
  }
  // An unterminated string is reported once and then parsed as a string, to avoid a cascade.
  const tokens = lexed.tokens.map((t) => {
    if (t.tokenType !== UnterminatedString) return t;
    errors.push(new NnsError('unterminated-string', 'string is not closed before the end of the line', { span: tokenSpan(file, t) }));
    return { ...t, tokenType: StringLiteral, tokenTypeIdx: StringLiteral.tokenTypeIdx! };
  });
  if (tokens.length > limits.maxTokens) {
    const t = tokens[limits.maxTokens]!;
    errors.push(new NnsError('too-large', `the script has ${count(tokens.length)} tokens; the limit is ${count(limits.maxTokens)}`, { span: tokenSpan(file, t) }));
    return { errors: sortErrors(errors) };
  }
  const scan = scanBrackets(tokens, limits.maxNesting);
  if (scan.tooDeep) {
    errors.push(new NnsError('too-deep', `brackets, blocks and unary minus signs are nested more than ${limits.maxNesting} deep here`, { span: tokenSpan(file, scan.tooDeep) }));
    return { errors: sortErrors(errors) };
  }
  nnsParser.lineStarts = markLineStarts(tokens);
  nnsParser.input = tokens;
  const cst = nnsParser.script();
  const parserErrors = nnsParser.errors.map((e) => ({ error: syntaxError(pos, file, text, e), token: e.token }));
  nnsParser.input = [];
  errors.push(...bracketErrors(file, scan, parserErrors));
  if (errors.length > 0) return { errors: sortErrors(errors) };
  const builder = new AstBuilder(file, limits);
  const ast = builder.visit(cst) as Script;
  if (builder.errors.length > 0) return { errors: sortErrors(builder.errors) };
  const deep = tooDeepExpression(ast, limits.maxExprDepth);
  if (deep) return { errors: [deep] };
  return { ast, errors: [] };
}

/** Children of an expression (for the iterative depth check). */
function children(e: A.Expr): A.Expr[] {
  switch (e.kind) {
    case 'List': return e.items;
    case 'Unary': return [e.operand];
    case 'Binary': return [e.left, e.right];
    case 'Member': return [e.object];
    case 'Index': {
      const out = [e.object];
      for (const it of e.items) {
        if (it.kind === 'index') out.push(it.value);
        else if (it.kind === 'slice') for (const x of [it.start, it.stop, it.step]) if (x) out.push(x);
      }
      return out;
    }
    case 'Call': return [e.callee, ...e.args.map((a) => a.value)];
    default: return [];
  }
}

/**
 * The first expression deeper than `max` (an error), found without recursion: later
 * phases walk expressions recursively, so they only ever see trees this shallow.
 */
function tooDeepExpression(ast: Script, max: number): NnsError | undefined {
  const roots: A.Expr[] = [];
  const stmts: A.Statement[] = [];
  for (const s of ast.statements) {
    if (s.kind !== 'Trace') continue;
    if (s.prompt?.kind === 'TokenPrompt') roots.push(...s.prompt.items);
    stmts.push(...s.body);
  }
  while (stmts.length > 0) {
    const s = stmts.pop()!;
    if (s.kind === 'Bind') roots.push(s.value);
    else if (s.kind === 'Set') roots.push(s.target, s.value);
    else if (s.kind === 'ExprStmt') roots.push(s.expr);
    else if (s.kind === 'For') roots.push(s.from, s.to), stmts.push(...s.body);
    else if (s.kind === 'Invoke') {
      if (s.prompt.kind === 'TokenPrompt') roots.push(...s.prompt.items);
      stmts.push(...s.body);
    }
  }
  for (const root of roots) {
    const stack: [A.Expr, number][] = [[root, 1]];
    while (stack.length > 0) {
      const [e, d] = stack.pop()!;
      if (d > max) {
        return new NnsError('too-deep', `this expression is nested more than ${max} deep (an operator chain, a suffix chain or brackets); split it into several statements`, { span: root.span });
      }
      for (const c of children(e)) stack.push([c, d + 1]);
    }
  }
  return undefined;
}

/** Sorts diagnostics by position and drops exact duplicates (same code and place). */
export function sortErrors(errors: NnsError[]): NnsError[] {
  const seen = new Set<string>();
  return [...errors]
    .sort((a, b) => (a.span?.offset ?? -1) - (b.span?.offset ?? -1))
    .filter((e) => {
      const key = `${e.code}@${e.span?.file}:${e.span?.offset}:${e.message}`;
      if (seen.has(key)) return false;
      seen.add(key);
      return true;
    });
}
