/**
 * CST → AST. A Chevrotain CST visitor (checked with `validateVisitor()`) that builds the
 * typed AST of `ast.ts`, with a {@link Span} on every node. It runs only on a CST without
 * syntax errors; the few errors it finds itself (bad escapes, invalid assignment targets,
 * numbers out of range) are collected, never thrown.
 * @module
 */
import type { CstElement, CstNode, CstNodeLocation, IToken } from 'chevrotain';
import { NnsError, type Span } from '../src/errors.js';
import type * as A from './ast.js';
import { nnsParser } from './parser.js';
import { count, DEFAULT_LIMITS, type FrontEndLimits } from './limits.js';

type Ctx = Record<string, CstElement[] | undefined>;

function isToken(e: CstElement): e is IToken {
  return (e as IToken).image !== undefined;
}

/** The span of a token. */
export function tokenSpan(file: string, t: IToken): Span {
  return {
    file,
    line: t.startLine ?? 1,
    col: t.startColumn ?? 1,
    endLine: t.endLine ?? t.startLine ?? 1,
    endCol: (t.endColumn ?? t.startColumn ?? 0) + 1,
    offset: t.startOffset,
    endOffset: (t.endOffset ?? t.startOffset) + 1,
  };
}

/** The span covering two spans (`a` first). */
export function joinSpans(a: Span, b: Span): Span {
  return { file: a.file, line: a.line, col: a.col, offset: a.offset, endLine: b.endLine, endCol: b.endCol, endOffset: b.endOffset };
}

const BaseVisitor = nnsParser.getBaseCstVisitorConstructor();

/** Builds the AST; create one per script (it holds the file name and collected errors). */
export class AstBuilder extends BaseVisitor {
  /** Problems found while building (bad escapes, invalid targets). */
  readonly errors: NnsError[] = [];

  /** Numbers inside each list literal, all levels together. */
  private readonly listSizes = new WeakMap<A.ListExpr, number>();

  constructor(readonly file: string, private readonly limits: FrontEndLimits = DEFAULT_LIMITS) {
    super();
    this.validateVisitor();
  }

  /** The span of a rule's children (Chevrotain passes visitor methods the children, not the node). */
  private nodeSpan(ctx: Ctx): Span {
    let first: CstNodeLocation | undefined;
    let last: CstNodeLocation | undefined;
    for (const list of Object.values(ctx)) {
      for (const e of list ?? []) {
        const l: CstNodeLocation = isToken(e)
          ? { startOffset: e.startOffset, startLine: e.startLine, startColumn: e.startColumn, endOffset: e.endOffset, endLine: e.endLine, endColumn: e.endColumn }
          : e.location!;
        if (Number.isNaN(l.startOffset)) continue;
        if (!first || l.startOffset < first.startOffset) first = l;
        if (!last || (l.endOffset ?? 0) > (last.endOffset ?? 0)) last = l;
      }
    }
    if (!first || !last) return { file: this.file, line: 1, col: 1, endLine: 1, endCol: 1, offset: 0, endOffset: 0 };
    return {
      file: this.file,
      line: first.startLine ?? 1,
      col: first.startColumn ?? 1,
      endLine: last.endLine ?? 1,
      endCol: (last.endColumn ?? 0) + 1,
      offset: first.startOffset,
      endOffset: (last.endOffset ?? first.startOffset) + 1,
    };
  }

  private tok(ctx: Ctx, name: string, i = 0): IToken | undefined {
    const e = ctx[name]?.[i];
    return e && isToken(e) ? e : undefined;
  }

  private nodes(ctx: Ctx, name: string): CstNode[] {
    return (ctx[name] ?? []).filter((e): e is CstNode => !isToken(e));
  }

  private sub<R>(ctx: Ctx, name: string, i = 0): R {
    return this.visit(this.nodes(ctx, name)[i]!) as R;
  }

  private str(t: IToken): string {
    const raw = t.image.slice(1, -1);
    let out = '';
    for (let i = 0; i < raw.length; i++) {
      const c = raw[i]!;
      if (c !== '\\') {
        out += c;
        continue;
      }
      const e = raw[++i] ?? '';
      const map: Record<string, string> = { '"': '"', '\\': '\\', n: '\n', t: '\t' };
      if (e in map) out += map[e];
      else {
        const s = tokenSpan(this.file, t);
        const at = s.offset + i;
        this.errors.push(new NnsError('bad-escape', `unknown escape '\\${e}' in string (use \\", \\\\, \\n or \\t)`, {
          span: { ...s, col: s.col + i, endCol: s.col + i + 2, endLine: s.line, offset: at, endOffset: at + 2 },
        }));
      }
    }
    return out;
  }

  script(ctx: Ctx): A.Script {
    const statements: A.TopStatement[] = [];
    for (const k of ['modelStmt', 'traceStmt', 'generateStmt', 'paramStmt']) for (const c of this.nodes(ctx, k)) statements.push(this.visit(c) as A.TopStatement);
    statements.sort((a, b) => a.span.offset - b.span.offset);
    const models = statements.filter((s): s is A.ModelStmt => s.kind === 'Model');
    const span = this.nodeSpan(ctx);
    return { kind: 'Script', models, statements, span };
  }

  modelStmt(ctx: Ctx): A.ModelStmt {
    const t = this.tok(ctx, 'StringLiteral')!;
    return { kind: 'Model', path: this.str(t), pathSpan: tokenSpan(this.file, t), span: this.nodeSpan(ctx) };
  }

  traceStmt(ctx: Ctx): A.TraceStmt {
    const kw = tokenSpan(this.file, this.tok(ctx, 'Trace')!);
    const prompt = ctx.prompt ? this.sub<A.Prompt>(ctx, 'prompt') : undefined;
    const body = this.sub<A.Statement[]>(ctx, 'block');
    return { kind: 'Trace', prompt, body, headerSpan: prompt ? joinSpans(kw, prompt.span) : kw, span: this.nodeSpan(ctx) };
  }

  generateStmt(ctx: Ctx): A.GenerateStmt {
    const kw = tokenSpan(this.file, this.tok(ctx, 'Generate')!);
    const prompt = ctx.prompt ? this.sub<A.Prompt>(ctx, 'prompt') : undefined;
    const options = this.nodes(ctx, 'namedArg').map((c) => {
      const a = this.visit(c) as A.Arg & { nameSpan: Span };
      return { name: a.name!, nameSpan: a.nameSpan, value: a.value, span: a.span };
    });
    const body = this.sub<A.Statement[]>(ctx, 'block');
    return { kind: 'Generate', prompt, options, body, headerSpan: prompt ? joinSpans(kw, prompt.span) : kw, span: this.nodeSpan(ctx) };
  }

  stepStmt(ctx: Ctx): A.StepStmt {
    const kw = tokenSpan(this.file, this.tok(ctx, 'Identifier')!);
    const from = this.sub<A.Expr>(ctx, 'from');
    const to = ctx.to ? this.sub<A.Expr>(ctx, 'to') : undefined;
    return { kind: 'Step', from, to, body: this.sub(ctx, 'block'), headerSpan: joinSpans(kw, (to ?? from).span), span: this.nodeSpan(ctx) };
  }

  prompt(ctx: Ctx): A.Prompt {
    const s = this.tok(ctx, 'StringLiteral');
    if (s) return { kind: 'TextPrompt', text: this.str(s), span: this.nodeSpan(ctx) };
    const list = this.sub<A.ListExpr>(ctx, 'listLiteral');
    return { kind: 'TokenPrompt', items: list.items, span: list.span };
  }

  block(ctx: Ctx): A.Statement[] {
    return this.nodes(ctx, 'statement').map((c) => this.visit(c) as A.Statement);
  }

  statement(ctx: Ctx): A.Statement {
    const [child] = Object.values(ctx).flat() as CstNode[];
    const s = this.visit(child!) as A.Statement | A.ParamStmt;
    // A `param` inside a block: lowering reports it (declarations belong at the top).
    if (s.kind === 'Param') return { kind: 'Reserved', keyword: 'param', keywordSpan: s.keywordSpan, span: s.span };
    return s;
  }

  forStmt(ctx: Ctx): A.ForStmt {
    const name = this.tok(ctx, 'Identifier')!;
    const from = this.sub<A.Expr>(ctx, 'from');
    const to = this.sub<A.Expr>(ctx, 'to');
    const headerSpan = joinSpans(tokenSpan(this.file, this.tok(ctx, 'For')!), to.span);
    return { kind: 'For', name: name.image, nameSpan: tokenSpan(this.file, name), from, to, body: this.sub(ctx, 'block'), headerSpan, span: this.nodeSpan(ctx) };
  }

  invokeStmt(ctx: Ctx): A.InvokeStmt {
    const prompt = this.sub<A.Prompt>(ctx, 'prompt');
    const headerSpan = joinSpans(tokenSpan(this.file, this.tok(ctx, 'Invoke')!), prompt.span);
    return { kind: 'Invoke', prompt, body: this.sub(ctx, 'block'), headerSpan, span: this.nodeSpan(ctx) };
  }

  private reserved(ctx: Ctx, tokName: string, keyword: A.ReservedStmt['keyword']): A.ReservedStmt {
    return { kind: 'Reserved', keyword, keywordSpan: tokenSpan(this.file, this.tok(ctx, tokName)!), span: this.nodeSpan(ctx) };
  }

  paramStmt(ctx: Ctx): A.ParamStmt {
    const name = this.tok(ctx, 'Identifier')!;
    const type = this.tok(ctx, 'Identifier', 1);
    const dims = ctx.listLiteral ? this.sub<A.ListExpr>(ctx, 'listLiteral') : undefined;
    return {
      kind: 'Param', name: name.image, nameSpan: tokenSpan(this.file, name), keywordSpan: tokenSpan(this.file, this.tok(ctx, 'Param')!),
      ...(type ? { type: { name: type.image, span: tokenSpan(this.file, type) } } : {}),
      ...(dims ? { dims: { items: dims.items, span: dims.span } } : {}),
      span: this.nodeSpan(ctx),
    };
  }

  skipStmt(ctx: Ctx): A.ReservedStmt {
    return this.reserved(ctx, 'Skip', 'skip');
  }

  stopStmt(ctx: Ctx): A.ReservedStmt {
    return this.reserved(ctx, 'Stop', 'stop');
  }

  simpleStmt(ctx: Ctx): A.Statement {
    const span = this.nodeSpan(ctx);
    const lhs = this.sub<A.Expr>(ctx, 'lhs');
    if (!ctx.rhs) return { kind: 'ExprStmt', expr: lhs, span };
    const value = this.sub<A.Expr>(ctx, 'rhs');
    if (lhs.kind === 'Name') return { kind: 'Bind', name: lhs.name, nameSpan: lhs.span, value, span };
    if (rootOf(lhs).kind === 'Model' && (lhs.kind === 'Member' || lhs.kind === 'Index')) return { kind: 'Set', target: lhs, value, span };
    this.errors.push(new NnsError('invalid-target', 'can only assign to a name or to a module\'s .output/.input (optionally sliced)', { span: lhs.span }));
    return { kind: 'ExprStmt', expr: value, span };
  }

  expression(ctx: Ctx): A.Expr {
    return this.sub(ctx, 'additive');
  }

  private binaryChain(ctx: Ctx): A.Expr {
    const operands = this.nodes(ctx, 'operands').map((c) => this.visit(c) as A.Expr);
    const ops = (ctx.ops ?? []).filter(isToken);
    let left = operands[0]!;
    ops.forEach((op, i) => {
      const right = operands[i + 1]!;
      left = { kind: 'Binary', op: op.image as A.BinaryExpr['op'], left, right, span: joinSpans(left.span, right.span) };
    });
    return left;
  }

  additive(ctx: Ctx): A.Expr {
    return this.binaryChain(ctx);
  }

  multiplicative(ctx: Ctx): A.Expr {
    return this.binaryChain(ctx);
  }

  unary(ctx: Ctx): A.Expr {
    if (ctx.postfix) return this.sub(ctx, 'postfix');
    const operand = this.sub<A.Expr>(ctx, 'unary');
    return { kind: 'Unary', op: '-', operand, span: this.nodeSpan(ctx) };
  }

  postfix(ctx: Ctx): A.Expr {
    let e = this.sub<A.Expr>(ctx, 'primary');
    for (const s of this.nodes(ctx, 'suffix')) e = this.visit(s, e) as A.Expr;
    return e;
  }

  suffix(ctx: Ctx, object: A.Expr): A.Expr {
    const close = this.tok(ctx, 'RBracket') ?? this.tok(ctx, 'RParen');
    const name = this.tok(ctx, 'AnyName');
    if (name) {
      const nameSpan = tokenSpan(this.file, name);
      return { kind: 'Member', object, name: name.image, nameSpan, span: joinSpans(object.span, nameSpan) };
    }
    const span = joinSpans(object.span, tokenSpan(this.file, close!));
    if (ctx.LBracket) return { kind: 'Index', object, items: this.nodes(ctx, 'indexItem').map((c) => this.visit(c) as A.IndexItemAst), span };
    return { kind: 'Call', callee: object, args: this.nodes(ctx, 'argument').map((c) => this.visit(c) as A.Arg), span };
  }

  primary(ctx: Ctx): A.Expr {
    const span = this.nodeSpan(ctx);
    const num = this.tok(ctx, 'NumberLiteral');
    if (num) {
      const value = Number(num.image);
      if (!Number.isFinite(value) || (/^\d+$/.test(num.image) && !Number.isSafeInteger(value))) {
        this.errors.push(new NnsError('bad-number', `number '${num.image}' is out of range`, { span }));
      }
      return { kind: 'Number', value, isInt: /^\d+$/.test(num.image), text: num.image, span };
    }
    const s = this.tok(ctx, 'StringLiteral');
    if (s) return { kind: 'String', value: this.str(s), span };
    if (ctx.Model) return { kind: 'Model', span };
    if (ctx.True || ctx.False) return { kind: 'Bool', value: !!ctx.True, span };
    const id = this.tok(ctx, 'Identifier') ?? this.tok(ctx, 'Grad');
    if (id) return { kind: 'Name', name: id.image, span };
    if (ctx.expression) return this.sub(ctx, 'expression');
    return this.sub(ctx, 'listLiteral');
  }

  listLiteral(ctx: Ctx): A.ListExpr {
    const list: A.ListExpr = { kind: 'List', items: this.nodes(ctx, 'expression').map((c) => this.visit(c) as A.Expr), span: this.nodeSpan(ctx) };
    let n = 0;
    for (const item of list.items) n += item.kind === 'List' ? this.listSizes.get(item) ?? 0 : 1;
    this.listSizes.set(list, n);
    const max = this.limits.maxLiteralElements;
    if (n > max && !list.items.some((i) => i.kind === 'List' && (this.listSizes.get(i) ?? 0) > max)) {
      this.errors.push(new NnsError('too-large', `this list literal has ${count(n)} elements; the limit is ${count(max)}`, { span: list.span }));
    }
    return list;
  }

  indexItem(ctx: Ctx): A.IndexItemAst {
    const span = this.nodeSpan(ctx);
    if (ctx.Ellipsis) return { kind: 'ellipsis', span };
    const start = ctx.start ? this.sub<A.Expr>(ctx, 'start') : undefined;
    if (!ctx.sliceRest) return { kind: 'index', value: start!, span };
    const rest = this.sub<{ stop?: A.Expr; step?: A.Expr }>(ctx, 'sliceRest');
    return { kind: 'slice', start, ...rest, span };
  }

  sliceRest(ctx: Ctx): { stop?: A.Expr; step?: A.Expr } {
    const out: { stop?: A.Expr; step?: A.Expr } = {};
    if (ctx.stop) out.stop = this.sub(ctx, 'stop');
    if (ctx.step) out.step = this.sub(ctx, 'step');
    return out;
  }

  argument(ctx: Ctx): A.Arg {
    if (ctx.namedArg) return this.sub(ctx, 'namedArg');
    return { value: this.sub(ctx, 'expression'), span: this.nodeSpan(ctx) };
  }

  namedArg(ctx: Ctx): A.Arg & { nameSpan: Span } {
    const id = this.tok(ctx, 'Identifier')!;
    return { name: id.image, nameSpan: tokenSpan(this.file, id), value: this.sub(ctx, 'expression'), span: this.nodeSpan(ctx) };
  }
}

/** The innermost object of a member/index/call chain. */
export function rootOf(e: A.Expr): A.Expr {
  while (e.kind === 'Member' || e.kind === 'Index' || e.kind === 'Call') e = e.kind === 'Call' ? e.callee : e.object;
  return e;
}
