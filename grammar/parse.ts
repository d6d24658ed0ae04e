/**
 * Text → AST: lex, parse (with recovery: every syntax error is reported) and build the
 * AST. Later phases run only when this one reports no errors.
 * @module
 */
import { EOF, type IRecognitionException, type IToken } from 'chevrotain';
import { NnsError, type Span } from '../src/errors.js';
import type { Script } from './ast.js';
import { markLineStarts, nnsLexer, StringLiteral, UnterminatedString } from './lexer.js';
import { nnsParser } from './parser.js';
import { AstBuilder, tokenSpan } from './visitor.js';

/** Result of {@link parseScript}: the AST when the script is syntactically valid, and the errors in source order. */
export interface ParseResult {
  /** Present only when `errors` is empty. */
  ast?: Script;
  errors: NnsError[];
}

function pointSpan(file: string, text: string, offset: number, length = 1): Span {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < offset && i < text.length; i++) {
    if (text[i] === '\n') {
      line++;
      lineStart = i + 1;
    }
  }
  const col = offset - lineStart + 1;
  return { file, line, col, endLine: line, endCol: col + length, offset, endOffset: offset + length };
}

function syntaxError(file: string, text: string, e: IRecognitionException): NnsError {
  const t = e.token;
  const prev = (e as IRecognitionException & { previousToken?: IToken }).previousToken;
  const atEnd = t.tokenType === EOF || Number.isNaN(t.startOffset);
  let span: Span;
  if (prev && !Number.isNaN(prev.startOffset) && (atEnd || (t.startLine ?? 0) > (prev.endLine ?? 0))) {
    // What is missing belongs to the previous line: point just after the last token there.
    span = pointSpan(file, text, (prev.endOffset ?? prev.startOffset) + 1, 1);
  } else if (atEnd) {
    // Chevrotain's virtual EOF token has NaN positions: point past the last character.
    span = pointSpan(file, text, Math.max(0, text.trimEnd().length), 1);
  } else {
    span = tokenSpan(file, t);
  }
  return new NnsError('syntax-error', e.message, { span });
}

/**
 * Parses a `.nns` script.
 * @param text the source text
 * @param file the file name used in spans (as the user gave it)
 */
export function parseScript(text: string, file: string): ParseResult {
  const errors: NnsError[] = [];
  const lexed = nnsLexer.tokenize(text);
  for (const e of lexed.errors) {
    const ch = text.slice(e.offset, e.offset + e.length);
    errors.push(new NnsError('unexpected-character', `unexpected character${e.length > 1 ? 's' : ''} '${ch}'`, { span: pointSpan(file, text, e.offset, e.length) }));
  }
  // An unterminated string is reported once and then parsed as a string, to avoid a cascade.
  const tokens = lexed.tokens.map((t) => {
    if (t.tokenType !== UnterminatedString) return t;
    errors.push(new NnsError('unterminated-string', 'string is not closed before the end of the line', { span: tokenSpan(file, t) }));
    return { ...t, tokenType: StringLiteral, tokenTypeIdx: StringLiteral.tokenTypeIdx! };
  });
  nnsParser.lineStarts = markLineStarts(tokens);
  nnsParser.input = tokens;
  const cst = nnsParser.script();
  for (const e of nnsParser.errors) errors.push(syntaxError(file, text, e));
  if (errors.length > 0) return { errors: sortErrors(errors) };
  const builder = new AstBuilder(file);
  const ast = builder.visit(cst) as Script;
  if (builder.errors.length > 0) return { errors: sortErrors(builder.errors) };
  return { ast, errors: [] };
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
