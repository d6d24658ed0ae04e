/**
 * Lowering of expressions to IR through the {@link Builder}. Compile-time integers
 * (literals, loop variables and arithmetic on them) are folded here, because indices,
 * dims, loop bounds and module list indices must be known at compile time. A `model.…`
 * chain is read left to right: names and list indices form the module path until a port
 * (`.output`, `.input`, `.outputs[i]`, `.inputs[i]`), a call (module call), or the end of
 * the chain (a parameter, `model.lm_head.weight`).
 * @module
 */
import type { Builder } from '../ir/builder.js';
import type { IndexItem, Value } from '../ir/ir.js';
import { NnsError, type ErrorCode, type Span } from '../src/errors.js';
import type { DType, ModuleTree } from '../src/model/types.js';
import { suggest } from '../src/suggest.js';
import type * as A from './ast.js';
import { exprText } from './exprtext.js';
import { FUNCTIONS, RESERVED_FUNCTIONS, signature, unknownFunction, type FnArgs, type FnResult } from './functions.js';
import { chainSegments, walkModulePath, type WalkOptions } from './modref.js';
import { Poisoned, type Env } from './scope.js';
import { constInt, constNumber } from './consteval.js';

/** Shape and dtype of a value saved by an earlier trace (it arrives as a host value). */
export interface HostValueInfo {
  dtype: DType;
  shape: number[];
}

/** What expression lowering needs from the statement lowering. */
export interface ExprContext {
  b: Builder;
  /** Values saved by earlier traces. */
  host: ReadonlyMap<string, HostValueInfo>;
  /** Registers a save under a final name (checks duplicates). */
  save(value: Value, name: string, span: Span): void;
  /** Where a name is bound anywhere in the trace (for "used before its definition" notes). */
  bindingSite?(name: string): Span | undefined;
  /** Whether a "did you mean" may still be computed (each costs a pass over the names in scope). */
  maySuggest?(): boolean;
  /**
   * What `model.generator` means: in a `trace` an error, in a `generate` only
   * `tokens = model.generator.output.save()` (handled by the statement lowering); undefined
   * when the model really has a module called `generator`.
   */
  generator?: 'trace' | 'generate';
  /** The model's module tree, when known (resolves negative module-list indices). */
  tree?: ModuleTree;
}

/** A lowered expression: a tensor, or a pending `topk` pair. */
export type Lowered = FnResult;

const err = (code: ErrorCode, message: string, span: Span, notes: string[] = []): NnsError => new NnsError(code, message, { span, notes });

/** Lowers expressions of one trace. */
export class ExprLowerer {
  /** The resolved value of each module-list index last lowered (`h[-1]` → 11), for save names. */
  private readonly moduleIndices = new Map<A.IndexExpr, number>();

  constructor(private readonly ctx: ExprContext) {}

  /** How module paths are walked: against the tree, recording resolved indices. */
  get walkOptions(): WalkOptions {
    return { tree: this.ctx.tree, indices: this.moduleIndices };
  }

  private get b(): Builder {
    return this.ctx.b;
  }

  /** Lowers `e` to a tensor value (`topk` pairs are an error here). */
  value(e: A.Expr, env: Env): Value {
    return this.asValue(this.lower(e, env), e.span);
  }

  /** A tensor from a lowered expression. */
  asValue(l: Lowered, span: Span): Value {
    if (l.kind === 'topk') throw err('topk-without-field', 'topk(...) has two results: use .values or .indices', span);
    return l.value;
  }

  /**
   * Lowers `e`. When `saveName` is given and `e` is `X.save()`, the save gets that name
   * (`h = X.save()`); other saves get their automatic name.
   */
  lower(e: A.Expr, env: Env, saveName?: string): Lowered {
    const c = constNumber(e, env);
    if (c !== undefined) return { kind: 'value', value: this.b.constant(c, e.span) };
    switch (e.kind) {
      case 'String':
        throw err('unexpected-string', 'a string is not a value (strings are prompts and model paths)', e.span);
      case 'Bool':
        throw err('unexpected-bool', `'${e.value}' is only allowed as a keepdim argument`, e.span);
      case 'Name':
        return this.name(e, env);
      case 'Model':
        throw err('invalid-module-ref', "'model' alone is not a value: use model.output or model.MODULE.output", e.span);
      case 'List':
        return { kind: 'value', value: this.b.constant(this.nested(e, env), e.span) };
      case 'Unary':
        return { kind: 'value', value: this.b.op('neg', [this.value(e.operand, env)], {}, e.span) };
      case 'Binary': {
        const ops = { '+': 'add', '-': 'sub', '*': 'mul', '/': 'div', '@': 'matmul' } as const;
        return { kind: 'value', value: this.b.op(ops[e.op], [this.value(e.left, env), this.value(e.right, env)], {}, e.span) };
      }
      default:
        return this.chain(e, env, saveName);
    }
  }

  private name(e: A.NameExpr, env: Env): Lowered {
    const bound = env.lookup(e.name);
    if (bound) {
      if (bound.kind === 'poison') throw new Poisoned();
      if (bound.kind === 'topk') return { kind: 'topk', values: bound.values, indices: bound.indices };
      if (bound.kind === 'value') return { kind: 'value', value: bound.value };
    }
    const h = this.ctx.host.get(e.name);
    if (h) return { kind: 'value', value: this.b.host(e.name, h.dtype, h.shape, e.span) };
    if (RESERVED_FUNCTIONS.has(e.name)) throw err('not-yet-supported', `'${e.name}' is not supported yet`, e.span);
    if (FUNCTIONS.has(e.name)) throw err('not-a-value', `'${e.name}' is a function; call it: ${signature(e.name, FUNCTIONS.get(e.name)!)}`, e.span);
    if (this.hasFamily(e.name)) {
      throw err('undefined-name', `'${e.name}' was saved inside a loop; read one iteration: ${e.name}[${this.familyIndices(e.name)[0]}]`, e.span);
    }
    const near = this.ctx.maySuggest?.() === false ? undefined : suggest(e.name, [...env.names(), ...[...this.ctx.host.keys()].map((k) => k.replace(/\.(\d+)/g, '[$1]'))]);
    const site = this.ctx.bindingSite?.(e.name);
    if (site && site.offset > e.span.offset) {
      throw err('undefined-name', `'${e.name}' is used before its definition`, e.span, [`'${e.name}' is bound at ${site.file}:${site.line}:${site.col}`]);
    }
    throw err('undefined-name', `'${e.name}' is not defined${near ? `; did you mean '${near}'?` : ''}`, e.span);
  }

  private families: Set<string> | undefined;

  /** Whether earlier traces saved `name.I...` values (a name saved inside a loop). */
  private hasFamily(name: string): boolean {
    if (!this.families) {
      // Every proper prefix of every host name, built once (`a.0.1` → `a`, `a.0`).
      this.families = new Set();
      for (const k of this.ctx.host.keys()) for (let i = k.indexOf('.'); i !== -1; i = k.indexOf('.', i + 1)) this.families.add(k.slice(0, i));
    }
    return this.families.has(name);
  }

  /** The iteration indices saved under `name.` (`hb.0`, `hb.1` → 0, 1). */
  private familyIndices(name: string): string[] {
    const out = new Set<string>();
    for (const k of this.ctx.host.keys()) if (k.startsWith(`${name}.`)) out.add(k.slice(name.length + 1).split('.')[0]!);
    return [...out];
  }

  private nested(e: A.ListExpr, env: Env): number[] | number[][] {
    return e.items.map((item) => {
      if (item.kind === 'List') return this.nested(item, env);
      const v = constNumber(item, env);
      if (v === undefined) throw err('not-constant', 'a list literal may contain only numbers', item.span);
      return v;
    }) as number[] | number[][];
  }

  /** Index items, with every bound a compile-time integer. */
  items(items: A.IndexItemAst[], env: Env): IndexItem[] {
    return items.map((it): IndexItem => {
      if (it.kind === 'ellipsis') return { kind: 'ellipsis' };
      if (it.kind === 'index') return { kind: 'index', index: constInt(it.value, env, 'an index') };
      const out: IndexItem = { kind: 'slice' };
      if (it.start) out.start = constInt(it.start, env, 'a slice bound');
      if (it.stop) out.stop = constInt(it.stop, env, 'a slice bound');
      if (it.step) {
        out.step = constInt(it.step, env, 'a slice step');
        if (out.step <= 0) throw err('bad-index', 'a slice step must be positive', it.step.span);
      }
      return out;
    });
  }

  private chain(e: A.Expr, env: Env, saveName?: string): Lowered {
    const { root, segs } = chainSegments(e);
    let cur: Lowered;
    let i = 0;
    if (root.kind === 'Name' && segs[0]?.kind === 'call' && !env.lookup(root.name) && !this.ctx.host.has(root.name)) {
      cur = this.call(root, segs[0].node, env);
      i = 1;
    } else if (root.kind === 'Model') {
      const first = segs[0];
      if (this.ctx.generator && first?.kind === 'member' && first.name === 'generator') {
        throw this.ctx.generator === 'trace'
          ? err('generator-outside-generate', 'model.generator.output exists only inside a generate block', first.node.span)
          : err('bad-generator-use', 'model.generator.output is the finished token sequence: it can only be saved, as tokens = model.generator.output.save()', first.node.span);
      }
      const walked = walkModulePath(segs, env, 'value', this.walkOptions);
      i = walked.next;
      const p = walked.path.join('.');
      const t = walked.end;
      if (t.kind === 'port') {
        const v = t.port === 'output' ? this.b.moduleOutput(p, t.index, t.span) : this.b.moduleInput(p, t.index, t.span);
        cur = { kind: 'value', value: v };
      } else if (t.kind === 'graphOutput') {
        cur = { kind: 'value', value: this.b.modelOutput(t.name, t.span) };
      } else if (t.kind === 'call') {
        const args = t.node.args.map((a) => {
          if (a.name) throw err('bad-argument', 'module calls take positional arguments only', a.span);
          return this.value(a.value, env);
        });
        cur = { kind: 'value', value: this.b.callModule(p, args, t.node.span)[0]! };
      } else {
        cur = { kind: 'value', value: this.b.param(p, t.span) };
      }
    } else if (root.kind === 'Name' && !env.lookup(root.name) && !this.ctx.host.has(root.name) && this.hasFamily(root.name)) {
      // A name saved inside a loop of an earlier trace (`hb.0`, `hb.1`, ...) reads as a list: `hb[l]`.
      let key = root.name;
      for (; i < segs.length && !this.ctx.host.has(key); i++) {
        const s = segs[i]!;
        const item = s.kind === 'index' && s.node.items.length === 1 ? s.node.items[0]! : undefined;
        if (!item || item.kind !== 'index') throw err('bad-index', `'${key}' was saved in a loop: pick one iteration with a constant index, e.g. ${key}[0]`, s.kind === 'member' ? s.node.span : s.node.span);
        const at = constInt(item.value, env, 'an iteration index');
        if (!this.hasFamily(`${key}.${at}`) && !this.ctx.host.has(`${key}.${at}`)) {
          throw err('index-out-of-range', `'${key}' has no iteration ${at} (saved: ${this.familyIndices(key).join(', ')})`, s.node.span);
        }
        key = `${key}.${at}`;
      }
      if (!this.ctx.host.has(key)) throw err('bad-index', `'${key}' was saved in a nested loop: give one index per loop`, root.span);
      const h = this.ctx.host.get(key)!;
      cur = { kind: 'value', value: this.b.host(key, h.dtype, h.shape, root.span) };
    } else {
      cur = this.lower(root, env);
    }
    for (; i < segs.length; i++) {
      const s = segs[i]!;
      if (s.kind === 'index') {
        cur = { kind: 'value', value: this.b.index(this.asValue(cur, s.node.object.span), this.items(s.node.items, env), s.node.span) };
      } else if (s.kind === 'call') {
        throw err('not-callable', `'${exprText(s.node.callee, () => undefined)}' is not a function or a module`, s.node.callee.span);
      } else if (s.name === 'save') {
        const call = segs[i + 1];
        if (call?.kind !== 'call') throw err('unknown-attribute', "use .save() to save a value", s.node.nameSpan);
        if (call.node.args.length > 0) throw err('wrong-arity', 'save() takes no arguments', call.node.span);
        const v = this.asValue(cur, s.node.object.span);
        const name = call.node === e && saveName !== undefined ? saveName : this.autoName(s.node.object, env);
        this.ctx.save(v, name, call.node.span);
        cur = { kind: 'value', value: v };
        i++;
      } else if (s.name === 'values' || s.name === 'indices') {
        if (cur.kind !== 'topk') throw err('unknown-attribute', `only topk(...) results have .${s.name}`, s.node.nameSpan);
        cur = { kind: 'value', value: s.name === 'values' ? cur.values : cur.indices };
      } else {
        const near = suggest(s.name, cur.kind === 'topk' ? ['values', 'indices'] : ['save']);
        const what = cur.kind === 'topk' ? 'topk(...) results have .values and .indices' : 'values have only .save()';
        throw err('unknown-attribute', `no attribute '${s.name}': ${what}${near ? `; did you mean '${near}'?` : ''}`, s.node.nameSpan);
      }
    }
    return cur;
  }

  private autoName(e: A.Expr, env: Env): string {
    return exprText(e, (n) => {
      const b = env.lookup(n);
      return b?.kind === 'int' ? b.value : undefined;
    }, (x) => this.moduleIndices.get(x));
  }

  private call(callee: A.NameExpr, node: A.CallExpr, env: Env): Lowered {
    const name = callee.name;
    if (name === 'grad') return this.grad(node, env);
    if (RESERVED_FUNCTIONS.has(name)) throw err('not-yet-supported', `'${name}(...)' is not supported yet`, callee.span);
    const spec = FUNCTIONS.get(name);
    if (!spec) throw unknownFunction(name, callee.span);
    const params = ['x', ...spec.params.map(([p]) => p)];
    const given = new Map<string, A.Arg>();
    const arity = (): NnsError => {
      const range = spec.required === params.length ? `${params.length}` : `${spec.required} to ${params.length}`;
      return err('wrong-arity', `${name} takes ${range} argument${params.length === 1 ? '' : 's'}, ${signature(name, spec)}, but got ${node.args.length}`, node.span);
    };
    let named = false;
    node.args.forEach((a, k) => {
      if (!a.name) {
        if (named) throw err('bad-argument', 'a positional argument cannot follow a keyword argument', a.span);
        if (k >= params.length) throw arity();
        given.set(params[k]!, a);
        return;
      }
      named = true;
      if (!params.includes(a.name) || a.name === 'x') {
        const near = suggest(a.name, params.slice(1));
        throw err('unknown-argument', `${name} has no argument '${a.name}'${near ? `; did you mean '${near}'?` : ''}`, a.span, [`signature: ${signature(name, spec)}`]);
      }
      if (given.has(a.name)) throw err('bad-argument', `argument '${a.name}' given twice`, a.span);
      given.set(a.name, a);
    });
    for (let k = 0; k < spec.required; k++) if (!given.has(params[k]!)) throw arity();
    const args: FnArgs = { x: this.value(given.get('x')!.value, env), ints: new Map(), lists: new Map(), bools: new Map() };
    for (const [p, kind] of spec.params) {
      const a = given.get(p);
      if (!a) continue;
      if (kind === 'int') args.ints.set(p, constInt(a.value, env, `'${p}'`));
      else if (kind === 'bool') args.bools.set(p, this.bool(a.value, env));
      else args.lists.set(p, this.intList(a.value, env));
    }
    return spec.lower(this.b, args, node.span);
  }

  /** `grad(Y, X)`: X must be a module value, an op value, a parameter or a host value (or a name bound to one). */
  private grad(node: A.CallExpr, env: Env): Lowered {
    if (node.args.length !== 2 || node.args.some((a) => a.name !== undefined)) {
      throw err('wrong-arity', `grad takes 2 positional arguments, grad(Y, X), but got ${node.args.length}`, node.span);
    }
    const y = this.value(node.args[0]!.value, env);
    const x = this.value(node.args[1]!.value, env);
    if (!['module.output', 'module.input', 'param', 'host'].includes(x.producer.op)) {
      throw err('bad-grad', 'grad(Y, X): X must be a module value (MODULE.output, .input, .outputs[i], .inputs[i]), an op value (MODULE.op("TYPE").output), a parameter (model.lm_head.weight) or a host value (a param, an earlier save), or a name bound to one', node.args[1]!.span);
    }
    return { kind: 'value', value: this.b.op('grad', [y, x], {}, node.span) };
  }

  private bool(e: A.Expr, env: Env): boolean {
    if (e.kind === 'Bool') return e.value;
    const v = constNumber(e, env);
    if (v === 0 || v === 1) return v === 1;
    throw err('bad-argument', 'expected true or false', e.span);
  }

  private intList(e: A.Expr, env: Env): number[] {
    if (e.kind !== 'List') throw err('bad-argument', 'expected a list of integers, e.g. [1, -1, 128]', e.span);
    return e.items.map((x) => constInt(x, env, 'a shape entry'));
  }
}

