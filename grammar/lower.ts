/**
 * AST → IR: lowers one `trace` to an intervention {@link Graph} through the
 * {@link Builder}, checking names, arities, saves, loops and invokes on the way.
 *
 * Scopes: every prompt is an invoke. A single-prompt `trace PROMPT { ... }` gets one
 * invoke (scope 1, batch row 0) and its body is lowered in that scope; `scopes[0]` is the
 * whole batch. In a multi-invoke `trace { ... }`, each `invoke` adds a row and its body is
 * lowered in its scope; statements outside any invoke are lowered in scope 0 (every row
 * of the batch), in program order. `graph.dimValues.sequence` is the longest prompt.
 *
 * Loops are unrolled: each iteration has its own name environment; a save bound to NAME
 * inside loops is named `NAME.I` (`NAME.I.J` nested, outer index first).
 * @module
 */
import { Builder } from '../ir/builder.js';
import type { Graph, Value } from '../ir/ir.js';
import { NnsError, type Span } from '../src/errors.js';
import type { ModuleTree } from '../src/model/types.js';
import type * as A from './ast.js';
import { constInt, constNumber } from './consteval.js';
import { ExprLowerer, type HostValueInfo } from './lower-expr.js';
import { setTarget } from './modref.js';
import { Env, Poisoned } from './scope.js';
import { count, limitsWith, type FrontEndLimits } from './limits.js';
import { badTokenId } from '../src/model/token-ids.js';

export type { HostValueInfo };

/** Options of {@link lowerTrace}. */
export interface LowerOptions {
  /** File name for spans and messages. */
  file: string;
  /** Tokenizes a text prompt (the model's tokenizer). May throw an NnsError. */
  tokenize: (text: string) => number[];
  /** Names saved by earlier traces of the script, with their types: they arrive as host values. */
  host?: ReadonlyMap<string, HostValueInfo>;
  /** The module tree, when known: module calls then get one result per module output. */
  tree?: ModuleTree;
  /** Limits of the front end (defaults: `DEFAULT_LIMITS`). */
  limits?: Partial<FrontEndLimits>;
  /** The model's vocabulary size, when known: token ids must be below it. */
  vocabSize?: number;
  /** Build into this builder (generation steps use a windowing one) instead of a new one. */
  builder?: Builder;
}

/** How one step of a `generate` is lowered. */
export interface GenerateStepOptions extends LowerOptions {
  /** The step (statements in `step` blocks run only at their steps). */
  step: number;
  /** `max_new_tokens`: `step` blocks must lie in 0..max_new_tokens. */
  maxNewTokens: number;
  /** Tokens of each row's pass at this step, replacing the prompts' (in invoke order). */
  rows?: number[][];
}

/** A `tokens = model.generator.output.save()` of a generate. */
export interface GeneratorSave {
  /** The save name. */
  name: string;
  /** The batch row whose sequence it is. */
  row: number;
  span: Span;
}

/** Result of {@link lowerGenerateStep}. */
export interface LoweredGenerateStep extends LoweredTrace {
  /** Saves of `model.generator.output` (not IR saves: the decode loop fills them). */
  generatorSaves: GeneratorSave[];
  /** The prompts' tokens, one row per invoke (before `rows` replaced them). */
  prompts: number[][];
}

/** Result of {@link lowerTrace}. */
export interface LoweredTrace {
  /** The IR (meaningful only when `errors` is empty). */
  graph: Graph;
  /** Save names in program order. */
  saves: string[];
  /** Every error found, in source order. */
  errors: NnsError[];
  /** Work spent and IR size built (both bounded by the limits; for tests and tools). */
  stats: { work: number; irSize: number };
}

type Mode = 'single' | 'batch' | 'invoke';

interface Where {
  mode: Mode;
  /** Loop indices of the enclosing loops, outer first. */
  loop: number[];
  /** Inside a `step` block. */
  inStep?: boolean;
}

/** Whether `e` is `model.generator.output.save()` (or without the save, `model.generator.output`). */
function generatorChain(e: A.Expr): { saved: boolean } | undefined {
  let x = e;
  let saved = false;
  if (x.kind === 'Call' && x.args.length === 0 && x.callee.kind === 'Member' && x.callee.name === 'save') {
    saved = true;
    x = x.callee.object;
  }
  if (x.kind === 'Member' && x.name === 'output' && x.object.kind === 'Member' && x.object.name === 'generator' && x.object.object.kind === 'Model') return { saved };
  return undefined;
}

class TraceLowerer {
  readonly b: Builder;
  readonly errors: NnsError[] = [];
  readonly saves: string[] = [];
  private readonly saveSet = new Set<string>();
  private readonly expr: ExprLowerer;
  private readonly host: ReadonlyMap<string, HostValueInfo>;
  /** Unrolled work so far: statements and loop iterations. */
  work = 0;
  /** Set once a limit is hit: the trace is abandoned after that one error. */
  private overLimit = false;
  private maxTokens = 0;
  private readonly limits: FrontEndLimits;

  /** Set when lowering a step of a generate. */
  private readonly gen: GenerateStepOptions | undefined;
  readonly generatorSaves: GeneratorSave[] = [];
  readonly prompts: number[][] = [];

  constructor(private readonly opts: LowerOptions | GenerateStepOptions) {
    this.limits = limitsWith(opts.limits);
    this.b = opts.builder ?? new Builder({ file: opts.file, tree: opts.tree });
    this.host = opts.host ?? new Map();
    this.gen = 'step' in opts ? opts : undefined;
    const generator = opts.tree?.modules.has('generator') ? undefined : this.gen ? 'generate' as const : 'trace' as const;
    this.expr = new ExprLowerer({
      generator,
      b: this.b,
      host: this.host,
      save: (v, n, s) => this.save(v, n, s),
      bindingSite: (n) => this.sites.get(n),
      tree: opts.tree,
      // Suggestions compare a name with every name in scope: only for the errors that are shown.
      maySuggest: () => this.errors.length < 50,
    });
  }

  /** IR size so far: nodes, plus the elements of literals and token prompts. */
  irSize = 0;
  private irCounted = 0;

  /**
   * Counts `units` of unrolled work and the IR built since the last call; past either
   * budget, reports it at `span` and abandons the trace. Work and IR size are thereby
   * bounded up front, whatever the loops multiply.
   */
  private spend(units: number, span: Span, what: string): void {
    this.work += units;
    const nodes = this.b.graph.nodes;
    for (; this.irCounted < nodes.length; this.irCounted++) {
      const n = nodes[this.irCounted]!;
      this.irSize += 1 + (n.is('const') ? n.attrs.data.length : 0);
    }
    const l = this.limits;
    if (this.work > l.maxUnrolledWork) this.stop(new NnsError('too-large', `the unrolled trace does more than ${count(l.maxUnrolledWork)} steps of work (statements by size, and loop iterations); ${what} goes past the limit`, { span }));
    if (this.irSize > l.maxIrSize) this.stop(new NnsError('too-large', `the trace lowers to more than ${count(l.maxIrSize)} IR nodes and literal elements; ${what} goes past the limit`, { span }));
  }

  /** Size of each statement (its expressions' AST nodes, not nested bodies), computed once. */
  private readonly sizes = new WeakMap<A.Statement, number>();

  private sizeOf(s: A.Statement): number {
    let n = this.sizes.get(s);
    if (n === undefined) {
      const roots: A.Expr[] = s.kind === 'Bind' ? [s.value] : s.kind === 'Set' ? [s.target, s.value] : s.kind === 'ExprStmt' ? [s.expr]
        : s.kind === 'For' ? [s.from, s.to] : s.kind === 'Invoke' && s.prompt.kind === 'TokenPrompt' ? s.prompt.items : [];
      n = 1 + exprSize(roots);
      this.sizes.set(s, n);
    }
    return n;
  }

  private stop(e: NnsError): never {
    this.overLimit = true;
    this.errors.push(e);
    throw new Poisoned();
  }

  /** First binding site of every name in the trace. */
  private readonly sites = new Map<string, Span>();

  private collectSites(stmts: A.Statement[]): void {
    for (const s of stmts) {
      if (s.kind === 'Bind' && !this.sites.has(s.name)) this.sites.set(s.name, s.nameSpan);
      if (s.kind === 'For' || s.kind === 'Invoke' || s.kind === 'Step') this.collectSites(s.body);
    }
  }

  run(trace: A.TraceStmt | A.GenerateStmt): void {
    this.collectSites(trace.body);
    const env = new Env();
    if (trace.prompt) {
      const scope = this.invoke(trace.prompt, trace.headerSpan);
      if (scope === undefined) return;
      this.b.scope = scope;
      this.block(trace.body, env, { mode: 'single', loop: [] });
    } else {
      this.block(trace.body, env, { mode: 'batch', loop: [] });
      if (this.b.graph.scopes.length === 1 && this.errors.length === 0) {
        const kw = trace.kind === 'Generate' ? 'generate' : 'trace';
        this.errors.push(new NnsError('no-prompt', `this ${kw} has no prompt: write ${kw} "PROMPT"${kw === 'generate' ? ' max_new_tokens=N' : ''} { ... } or add invoke "PROMPT" { ... } blocks`, { span: trace.headerSpan }));
      }
    }
    this.b.graph.dimValues.sequence = this.maxTokens;
  }

  private save(value: Value, name: string, span: Span): void {
    if (this.saveSet.has(name) || this.host.has(name)) {
      throw new NnsError('duplicate-save', `a value is already saved as '${name}'`, { span, notes: ['give each saved value its own name: NAME = EXPR.save()'] });
    }
    this.saveSet.add(name);
    this.saves.push(name);
    this.b.save(value, name, span);
  }

  /** Adds an invoke for a prompt; undefined (and an error) when the prompt is bad. */
  private invoke(p: A.Prompt, span: Span, env = new Env()): number | undefined {
    let tokens: number[];
    try {
      tokens = p.kind === 'TextPrompt' ? this.opts.tokenize(p.text) : p.items.map((e) => {
        const v = constInt(e, env, 'a token id');
        const why = badTokenId(v, this.opts.vocabSize);
        if (why) throw new NnsError('bad-prompt', why, { span: e.span });
        return v;
      });
    } catch (e) {
      if (e instanceof Poisoned) return undefined;
      if (!(e instanceof NnsError)) throw e;
      this.errors.push(e.span ? e : new NnsError(e.code, e.message, { kind: e.kind, span: p.span, notes: e.notes }));
      return undefined;
    }
    if (tokens.length === 0) {
      this.errors.push(new NnsError('bad-prompt', 'the prompt is empty (it has no tokens)', { span: p.span }));
      return undefined;
    }
    this.prompts.push(tokens);
    const given = this.gen?.rows?.[this.prompts.length - 1];
    if (given) tokens = given;
    this.maxTokens = Math.max(this.maxTokens, tokens.length);
    this.irSize += tokens.length;
    this.spend(0, span, 'this prompt');
    return this.b.addInvoke(tokens, span, p.kind === 'TextPrompt' ? p.text : undefined);
  }

  private block(stmts: A.Statement[], env: Env, where: Where): void {
    for (const s of stmts) {
      this.spend(this.sizeOf(s), s.kind === 'For' || s.kind === 'Invoke' ? s.headerSpan : s.span, 'this statement');
      const g = this.b.graph;
      const leaf = s.kind !== 'For' && s.kind !== 'Invoke' && s.kind !== 'Step';
      const first = g.nodes.length;
      try {
        this.statement(s, env, where);
        if (leaf && g.nodes.length > first) {
          const run = g.statements.length;
          g.statements.push(s.span);
          for (let i = first; i < g.nodes.length; i++) g.statementOf.set(g.nodes[i]!, run);
        }
        this.spend(0, s.kind === 'For' || s.kind === 'Invoke' ? s.headerSpan : s.span, 'this statement');
      } catch (e) {
        if (this.overLimit) throw e;
        if (e instanceof NnsError) this.errors.push(e);
        else if (!(e instanceof Poisoned)) throw e;
        if (s.kind === 'Bind' && !env.lookup(s.name)) env.bind(s.name, { kind: 'poison', span: s.nameSpan });
      }
    }
  }

  private checkFree(name: string, span: Span, env: Env): void {
    const prev = env.lookup(name);
    if (prev && prev.kind !== 'poison') {
      const l = prev.span;
      throw new NnsError('rebinding', `'${name}' is already bound (names are immutable)`, { span, notes: [`'${name}' was bound at ${l.file}:${l.line}:${l.col}`] });
    }
    if (this.host.has(name)) throw new NnsError('rebinding', `'${name}' is already a param or a value saved by an earlier trace`, { span });
  }

  private statement(s: A.Statement, env: Env, where: Where): void {
    switch (s.kind) {
      case 'Bind': {
        this.checkFree(s.name, s.nameSpan, env);
        if (this.gen && generatorChain(s.value)) return this.generatorSave(s.value, s.name, where, env, s.nameSpan);
        const saveName = [s.name, ...where.loop].join('.');
        const l = this.expr.lower(s.value, env, saveName);
        if (l.kind === 'topk') env.bind(s.name, { kind: 'topk', values: l.values, indices: l.indices, span: s.nameSpan });
        else {
          l.value.name ??= s.name;
          env.bind(s.name, { kind: 'value', value: l.value, span: s.nameSpan });
        }
        return;
      }
      case 'Set': {
        const t = setTarget(s.target, env, this.expr.walkOptions);
        const items = t.items ? this.expr.items(t.items, env) : null;
        const v = this.expr.value(s.value, env);
        this.b.set(t.path, t.port, t.index, items, v, s.target.span);
        return;
      }
      case 'ExprStmt':
        if (this.gen && generatorChain(s.expr)) return this.generatorSave(s.expr, 'model.generator.output', where, env, s.span);
        this.expr.lower(s.expr, env);
        return;
      case 'Step':
        return this.stepBlock(s, env, where);
      case 'For':
        return this.loop(s, env, where);
      case 'Invoke': {
        if (where.mode !== 'batch') {
          const msg = where.mode === 'invoke' ? 'an invoke cannot contain another invoke'
            : 'invoke is only allowed in a multi-prompt trace: trace { invoke "A" { ... } invoke "B" { ... } }';
          throw new NnsError(where.mode === 'invoke' ? 'nested-invoke' : 'invoke-outside-batch', msg, { span: s.headerSpan });
        }
        if (where.inStep) throw new NnsError('invoke-in-step', 'an invoke cannot be inside a step block: every step runs the same prompts', { span: s.headerSpan });
        const scope = this.invoke(s.prompt, s.headerSpan, env);
        if (scope === undefined) return;
        const outer = this.b.scope;
        this.b.scope = scope;
        try {
          this.block(s.body, env, { ...where, mode: 'invoke' });
        } finally {
          this.b.scope = outer;
        }
        return;
      }
      case 'Reserved':
        if (s.keyword === 'param') throw new NnsError('bad-param', "a param is declared at the top of the script, outside traces: param NAME: f32[D0, D1, ...]", { span: s.keywordSpan });
        throw new NnsError('not-yet-supported', `'${s.keyword}' is not supported yet`, { span: s.keywordSpan });
    }
  }

  /** `tokens = model.generator.output.save()`: recorded for the decode loop, nothing in the IR. */
  private generatorSave(e: A.Expr, name: string, where: Where, env: Env, span: Span): void {
    const g = generatorChain(e)!;
    if (!g.saved) throw new NnsError('bad-generator-use', 'model.generator.output is the finished token sequence: it can only be saved, as tokens = model.generator.output.save()', { span: e.span });
    if (where.inStep) throw new NnsError('generator-in-step', 'model.generator.output is not a per-step value: save it outside step blocks', { span: e.span });
    if (where.mode === 'batch') throw new NnsError('generator-outside-invoke', 'model.generator.output is one prompt\'s sequence: save it inside an invoke', { span: e.span });
    const full = [name, ...where.loop].join('.');
    if (this.saveSet.has(full) || this.host.has(full)) throw new NnsError('duplicate-save', `a value is already saved as '${full}'`, { span });
    this.saveSet.add(full);
    const row = this.b.graph.scopes[this.b.scope]!.rowStart;
    if (this.gen!.step === 0) this.generatorSaves.push({ name: full, row, span });
    // The name is not bound: the sequence exists only after the generation (a use is an undefined-name error).
  }

  /** `step S { ... }` / `step A..B { ... }`: lowered only when the step being built is in range. */
  private stepBlock(s: A.StepStmt, env: Env, where: Where): void {
    if (!this.gen) throw new NnsError('step-outside-generate', 'step blocks belong in a generate block', { span: s.headerSpan });
    if (where.inStep) throw new NnsError('nested-step', 'a step block cannot contain another step block', { span: s.headerSpan });
    const n = this.gen.maxNewTokens;
    const from = constInt(s.from, env, 'a step');
    const to = s.to ? constInt(s.to, env, 'a step') : from + 1;
    const range = s.to ? `${from}..${to}` : `${from}`;
    if (from < 0 || to > n || (s.to && from >= to)) {
      const what = from >= to ? `the step range ${range} is empty (A..B runs from A up to B-1)` : `step ${range} is outside 0..${n} (max_new_tokens=${n}: the steps are 0 to ${n - 1})`;
      throw new NnsError('bad-step', what, { span: s.headerSpan });
    }
    if (this.gen.step < from || this.gen.step >= to) return;
    this.block(s.body, env, { ...where, inStep: true });
  }

  private loop(s: A.ForStmt, env: Env, where: Where): void {
    this.checkFree(s.name, s.nameSpan, env);
    const bound = (e: A.Expr): number => {
      const v = constNumber(e, env);
      if (v === undefined || !Number.isSafeInteger(v)) throw new NnsError('bad-range', 'loop bounds must be integers known at compile time', { span: e.span });
      return v;
    };
    const from = bound(s.from);
    const to = bound(s.to);
    const range = { ...s.from.span, endLine: s.to.span.endLine, endCol: s.to.span.endCol, endOffset: s.to.span.endOffset };
    if (to <= from) throw new NnsError('empty-range', `the range ${from}..${to} is empty (A..B runs from A up to B-1)`, { span: range });
    const max = this.limits.maxLoopIterations;
    if (to - from > max) throw new NnsError('bad-range', `the range ${from}..${to} has more than ${count(max)} iterations`, { span: range });
    for (let i = from; i < to; i++) {
      this.spend(1, s.headerSpan, 'this loop');
      const inner = new Env(env);
      inner.bind(s.name, { kind: 'int', value: i, span: s.nameSpan });
      this.block(s.body, inner, { ...where, loop: [...where.loop, i] });
    }
  }
}

/** Number of AST nodes under `roots` (iterative: expressions may be deep). */
export function exprSize(roots: readonly A.Expr[]): number {
  const stack = [...roots];
  let n = 0;
  while (stack.length > 0) {
    const e = stack.pop()!;
    n++;
    switch (e.kind) {
      case 'List': stack.push(...e.items); break;
      case 'Unary': stack.push(e.operand); break;
      case 'Binary': stack.push(e.left, e.right); break;
      case 'Member': stack.push(e.object); break;
      case 'Index':
        stack.push(e.object);
        for (const it of e.items) {
          if (it.kind === 'index') stack.push(it.value);
          else if (it.kind === 'slice') for (const x of [it.start, it.stop, it.step]) if (x) stack.push(x);
        }
        break;
      case 'Call': stack.push(e.callee, ...e.args.map((a) => a.value)); break;
      default: break;
    }
  }
  return n;
}

/**
 * Lowers step `opts.step` of a generate to IR: the body's statements plus the `step` blocks
 * that include the step; `rows` replace the prompts' tokens (what the step's pass covers).
 * Saves keep their plain names (the decode loop adds `.S`); `model.generator.output` saves
 * are returned apart. Errors as for {@link lowerTrace}.
 */
export function lowerGenerateStep(gen: A.GenerateStmt, opts: GenerateStepOptions): LoweredGenerateStep {
  const t = new TraceLowerer(opts);
  try {
    t.run(gen);
  } catch (e) {
    if (e instanceof NnsError) t.errors.push(e);
    else if (!(e instanceof Poisoned)) throw e;
  }
  const errors = [...t.errors].sort((a, b) => (a.span?.offset ?? 0) - (b.span?.offset ?? 0));
  return { graph: t.b.graph, saves: t.saves, errors, stats: { work: t.work, irSize: t.irSize }, generatorSaves: t.generatorSaves, prompts: t.prompts };
}

/**
 * Lowers one trace to IR.
 * @returns the graph, the save names in order, and the errors (sorted by position).
 *   Throws only for internal failures (never for a problem in the script).
 */
export function lowerTrace(trace: A.TraceStmt, opts: LowerOptions): LoweredTrace {
  const t = new TraceLowerer(opts);
  try {
    t.run(trace);
  } catch (e) {
    if (e instanceof NnsError) t.errors.push(e);
    else if (!(e instanceof Poisoned)) throw e;
  }
  const errors = [...t.errors].sort((a, b) => (a.span?.offset ?? 0) - (b.span?.offset ?? 0));
  return { graph: t.b.graph, saves: t.saves, errors, stats: { work: t.work, irSize: t.irSize } };
}
