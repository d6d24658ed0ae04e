/**
 * The `.nns` parser: an action-free Chevrotain grammar (rules as class properties) with
 * error recovery, so one run reports every syntax error. The CST is turned into the
 * typed AST by the visitor in `visitor.ts`.
 *
 * Statements need no separators; an expression does not continue onto a new line except
 * inside `(...)`/`[...]` (see {@link markLineStarts}), so a line starting with `-` or `[`
 * begins a new statement.
 * @module
 */
import { CstParser, EOF, type IToken, type TokenType, type IParserErrorMessageProvider } from 'chevrotain';
import * as T from './lexer.js';

const LABELS = new Map<TokenType, string>([
  [T.StringLiteral, 'a string'], [T.UnterminatedString, 'a string'], [T.NumberLiteral, 'a number'],
  [T.Identifier, 'a name'], [T.AnyName, 'a name'], [EOF, 'end of input'],
]);

/** How a token type is named in messages: `'}'`, `a name`, `end of input`. */
export function tokenLabel(t: TokenType): string {
  const label = LABELS.get(t);
  if (label) return label;
  const pattern = t.PATTERN;
  if (pattern instanceof RegExp) return `'${pattern.source.replace(/\\b$/, '').replace(/\\/g, '')}'`;
  return t.name;
}

function found(actual: IToken): string {
  if (actual.tokenType === EOF) return 'end of input';
  return `'${actual.image}'`;
}

const RULE_WANTS: Record<string, string> = {
  script: "'model' or 'trace'",
  statement: 'a statement',
  primary: 'an expression',
  unary: 'an expression',
  prompt: 'a prompt (a string or a list of token ids)',
  indexItem: 'an index or a slice',
  argument: 'an argument',
};

/** Short, human error messages instead of Chevrotain's token-path listings. */
const messages: IParserErrorMessageProvider = {
  buildMismatchTokenMessage({ expected, actual }) {
    return `expected ${tokenLabel(expected)} but found ${found(actual)}`;
  },
  buildNotAllInputParsedMessage({ firstRedundant }) {
    return `unexpected ${found(firstRedundant)}`;
  },
  buildNoViableAltMessage({ actual, ruleName }) {
    const first = actual[0]!;
    return `expected ${RULE_WANTS[ruleName] ?? 'something else'} but found ${found(first)}`;
  },
  buildEarlyExitMessage({ actual, ruleName }) {
    const first = actual[0]!;
    return `expected ${RULE_WANTS[ruleName] ?? 'more input'} but found ${found(first)}`;
  },
};

/** The grammar. One instance is reused; set `input` (and `lineStarts`) before each parse. */
export class NnsParser extends CstParser {
  /** Tokens that start a line outside brackets (computed by the caller with markLineStarts). */
  lineStarts: WeakSet<IToken> = new WeakSet();

  constructor() {
    super(T.allTokens, { recoveryEnabled: true, maxLookahead: 3, nodeLocationTracking: 'full', errorMessageProvider: messages });
    this.performSelfAnalysis();
  }

  private sameLine = (): boolean => !this.lineStarts.has(this.LA(1));

  script = this.RULE('script', () => {
    this.MANY(() => {
      this.OR([
        { ALT: () => this.SUBRULE(this.modelStmt) },
        { ALT: () => this.SUBRULE(this.traceStmt) },
        { ALT: () => this.SUBRULE(this.generateStmt) },
        { ALT: () => this.SUBRULE(this.paramStmt) },
      ]);
    });
  });

  modelStmt = this.RULE('modelStmt', () => {
    this.CONSUME(T.Model);
    this.CONSUME(T.StringLiteral);
  });

  traceStmt = this.RULE('traceStmt', () => {
    this.CONSUME(T.Trace);
    this.OPTION(() => this.SUBRULE(this.prompt));
    this.SUBRULE(this.block);
  });

  /** `generate PROMPT NAME=VALUE ... { ... }` or `generate NAME=VALUE ... { invoke ... }`. */
  generateStmt = this.RULE('generateStmt', () => {
    this.CONSUME(T.Generate);
    this.OPTION(() => this.SUBRULE(this.prompt));
    this.MANY(() => this.SUBRULE(this.namedArg));
    this.SUBRULE(this.block);
  });

  prompt = this.RULE('prompt', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.StringLiteral) },
      { ALT: () => this.SUBRULE(this.listLiteral) },
    ]);
  });

  block = this.RULE('block', () => {
    this.CONSUME(T.LCurly);
    this.MANY(() => this.SUBRULE(this.statement));
    this.CONSUME(T.RCurly);
  });

  statement = this.RULE('statement', () => {
    this.OR([
      { ALT: () => this.SUBRULE(this.forStmt) },
      { ALT: () => this.SUBRULE(this.invokeStmt) },
      { ALT: () => this.SUBRULE(this.paramStmt) },
      { ALT: () => this.SUBRULE(this.skipStmt) },
      { ALT: () => this.SUBRULE(this.stopStmt) },
      { GATE: this.atStep, ALT: () => this.SUBRULE(this.stepStmt) },
      { ALT: () => this.SUBRULE(this.simpleStmt) },
    ]);
  });

  /**
   * `step` is a word, not a keyword: it starts a step block only when followed on the same
   * line by a number or a name (`step 0 {`, `step 2..4 {`, `step i {`), so `step = 3` stays a binding.
   */
  private atStep = (): boolean => {
    const t = this.LA(1);
    const next = this.LA(2);
    return t.tokenType === T.Identifier && t.image === 'step' && !this.lineStarts.has(next)
      && (next.tokenType === T.NumberLiteral || next.tokenType === T.Identifier);
  };

  /** `step S { ... }` or `step A..B { ... }` inside a generate block. */
  stepStmt = this.RULE('stepStmt', () => {
    this.CONSUME(T.Identifier);
    this.SUBRULE(this.additive, { LABEL: 'from' });
    this.OPTION(() => {
      this.CONSUME(T.DotDot);
      this.SUBRULE2(this.additive, { LABEL: 'to' });
    });
    this.SUBRULE(this.block);
  });

  forStmt = this.RULE('forStmt', () => {
    this.CONSUME(T.For);
    this.CONSUME(T.Identifier);
    this.CONSUME(T.In);
    this.SUBRULE(this.additive, { LABEL: 'from' });
    this.CONSUME(T.DotDot);
    this.SUBRULE2(this.additive, { LABEL: 'to' });
    this.SUBRULE(this.block);
  });

  invokeStmt = this.RULE('invokeStmt', () => {
    this.CONSUME(T.Invoke);
    this.SUBRULE(this.prompt);
    this.SUBRULE(this.block);
  });

  /** `param NAME: f32[D0, D1, ...]`: a host parameter (at the top of a script; inside a block an error). */
  paramStmt = this.RULE('paramStmt', () => {
    this.CONSUME(T.Param);
    this.CONSUME(T.Identifier);
    this.OPTION(() => {
      this.CONSUME(T.Colon);
      this.CONSUME2(T.Identifier);
      this.OPTION2(() => this.SUBRULE(this.listLiteral));
    });
  });

  /** Reserved: `skip MODULEREF`. */
  skipStmt = this.RULE('skipStmt', () => {
    this.CONSUME(T.Skip);
    this.SUBRULE(this.expression);
  });

  /** Reserved: `stop`. */
  stopStmt = this.RULE('stopStmt', () => {
    this.CONSUME(T.Stop);
  });

  /** `EXPR`, `NAME = EXPR` or `TARGET = EXPR`. */
  simpleStmt = this.RULE('simpleStmt', () => {
    this.SUBRULE(this.expression, { LABEL: 'lhs' });
    this.OPTION(() => {
      this.CONSUME(T.Equals);
      this.SUBRULE2(this.expression, { LABEL: 'rhs' });
    });
  });

  expression = this.RULE('expression', () => {
    this.SUBRULE(this.additive);
  });

  additive = this.RULE('additive', () => {
    this.SUBRULE(this.multiplicative, { LABEL: 'operands' });
    this.MANY({
      GATE: this.sameLine,
      DEF: () => {
        this.OR([{ ALT: () => this.CONSUME(T.Plus, { LABEL: 'ops' }) }, { ALT: () => this.CONSUME(T.Minus, { LABEL: 'ops' }) }]);
        this.SUBRULE2(this.multiplicative, { LABEL: 'operands' });
      },
    });
  });

  multiplicative = this.RULE('multiplicative', () => {
    this.SUBRULE(this.unary, { LABEL: 'operands' });
    this.MANY({
      GATE: this.sameLine,
      DEF: () => {
        this.OR([
          { ALT: () => this.CONSUME(T.Star, { LABEL: 'ops' }) },
          { ALT: () => this.CONSUME(T.Slash, { LABEL: 'ops' }) },
          { ALT: () => this.CONSUME(T.At, { LABEL: 'ops' }) },
        ]);
        this.SUBRULE2(this.unary, { LABEL: 'operands' });
      },
    });
  });

  unary = this.RULE('unary', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Minus);
          this.SUBRULE(this.unary);
        },
      },
      { ALT: () => this.SUBRULE(this.postfix) },
    ]);
  });

  postfix = this.RULE('postfix', () => {
    this.SUBRULE(this.primary);
    this.MANY({ GATE: this.sameLine, DEF: () => this.SUBRULE(this.suffix) });
  });

  /** `.name`, `[index]` or `(args)` after a primary. */
  suffix = this.RULE('suffix', () => {
    this.OR([
      {
        ALT: () => {
          this.CONSUME(T.Dot);
          this.CONSUME(T.AnyName);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.LBracket);
          this.AT_LEAST_ONE_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.indexItem) });
          this.CONSUME(T.RBracket);
        },
      },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.MANY_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.argument) });
          this.CONSUME(T.RParen);
        },
      },
    ]);
  });

  primary = this.RULE('primary', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.NumberLiteral) },
      { ALT: () => this.CONSUME(T.StringLiteral) },
      { ALT: () => this.CONSUME(T.Identifier) },
      { ALT: () => this.CONSUME(T.Model) },
      { ALT: () => this.CONSUME(T.True) },
      { ALT: () => this.CONSUME(T.False) },
      { ALT: () => this.CONSUME(T.Grad) },
      {
        ALT: () => {
          this.CONSUME(T.LParen);
          this.SUBRULE(this.expression);
          this.CONSUME(T.RParen);
        },
      },
      { ALT: () => this.SUBRULE(this.listLiteral) },
    ]);
  });

  listLiteral = this.RULE('listLiteral', () => {
    this.CONSUME(T.LBracket);
    this.MANY_SEP({ SEP: T.Comma, DEF: () => this.SUBRULE(this.expression) });
    this.CONSUME(T.RBracket);
  });

  indexItem = this.RULE('indexItem', () => {
    this.OR([
      { ALT: () => this.CONSUME(T.Ellipsis) },
      {
        ALT: () => {
          this.CONSUME(T.Colon);
          this.SUBRULE(this.sliceRest);
        },
      },
      {
        ALT: () => {
          this.SUBRULE(this.expression, { LABEL: 'start' });
          this.OPTION(() => {
            this.CONSUME2(T.Colon);
            this.SUBRULE2(this.sliceRest);
          });
        },
      },
    ]);
  });

  /** What follows the first `:` of a slice: `[stop] [: [step]]`. */
  sliceRest = this.RULE('sliceRest', () => {
    this.OPTION(() => this.SUBRULE(this.expression, { LABEL: 'stop' }));
    this.OPTION2(() => {
      this.CONSUME(T.Colon);
      this.OPTION3(() => this.SUBRULE2(this.expression, { LABEL: 'step' }));
    });
  });

  argument = this.RULE('argument', () => {
    this.OR([
      { GATE: () => this.LA(2).tokenType === T.Equals, ALT: () => this.SUBRULE(this.namedArg) },
      { ALT: () => this.SUBRULE(this.expression) },
    ]);
  });

  /** `name=EXPR` (keyword argument). */
  namedArg = this.RULE('namedArg', () => {
    this.CONSUME(T.Identifier);
    this.CONSUME(T.Equals);
    this.SUBRULE(this.expression);
  });
}

/** The shared parser instance (Chevrotain parsers are meant to be reused). */
export const nnsParser = new NnsParser();
