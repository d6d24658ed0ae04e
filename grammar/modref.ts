/**
 * Reading `model.…` chains: which part is the module path, and what follows it.
 * `model.transformer.h[3].mlp.output[:, -1]` → path `transformer.h.3.mlp`, port output 0,
 * then the tensor index `[:, -1]`. A list index belongs to the path when a `.name` or a
 * call follows it; otherwise it indexes a parameter (`model.lm_head.weight[0]`).
 * A negative list index counts from the end of the list (`h[-1]`), as in Python.
 * @module
 */
import { NnsError, type Span } from '../src/errors.js';
import type * as A from './ast.js';
import { joinSpans } from './visitor.js';
import { constInt } from './consteval.js';
import type { Env } from './scope.js';
import type { ModuleTree } from '../src/model/types.js';
import { moduleListLength } from '../src/model/modules.js';

/** What {@link walkModulePath} may know about the model. */
export interface WalkOptions {
  /** The module tree: negative list indices (`h[-1]`) are resolved against it. */
  tree?: ModuleTree;
  /** Receives the resolved index of every module-list index of the chain (for save names). */
  indices?: Map<A.IndexExpr, number>;
}

/** One suffix of a chain, with the AST node it ends. */
export type Seg =
  | { kind: 'member'; name: string; node: A.MemberExpr }
  | { kind: 'index'; node: A.IndexExpr }
  | { kind: 'call'; node: A.CallExpr };

/** Splits `a.b[1](x).c` into its root and suffixes (innermost first). */
export function chainSegments(e: A.Expr): { root: A.Expr; segs: Seg[] } {
  const segs: Seg[] = [];
  for (;;) {
    if (e.kind === 'Member') segs.push({ kind: 'member', name: e.name, node: e }), (e = e.object);
    else if (e.kind === 'Index') segs.push({ kind: 'index', node: e }), (e = e.object);
    else if (e.kind === 'Call') segs.push({ kind: 'call', node: e }), (e = e.callee);
    else break;
  }
  return { root: e, segs: segs.reverse() };
}

/** What ends the module path of a chain. */
export type PathEnd =
  | { kind: 'port'; port: 'output' | 'input'; index: number; span: Span }
  | { kind: 'graphOutput'; name: string | null; span: Span }
  | { kind: 'call'; node: A.CallExpr }
  | { kind: 'param'; span: Span };

/** Result of {@link walkModulePath}. */
export interface WalkedPath {
  /** Path segments (`['transformer', 'h', '3', 'mlp']`). */
  path: string[];
  end: PathEnd;
  /** Index of the first suffix after the path and its end. */
  next: number;
}

const METHODS = new Set(['save', 'values', 'indices']);

/**
 * Reads the module path at the start of `segs` (a chain rooted at `model`).
 * @param mode `'value'` for reads; `'target'` for the left side of an assignment
 *   (`model.output.NAME` is then not a graph output, and a path with no port is an error).
 */
export function walkModulePath(segs: Seg[], env: Env, mode: 'value' | 'target', opts: WalkOptions = {}): WalkedPath {
  const path: string[] = [];
  let lastSpan: Span | undefined;
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i]!;
    const next = segs[i + 1];
    if (s.kind === 'member') {
      if (METHODS.has(s.name) && next?.kind === 'call') return param(path, lastSpan, s, i, mode);
      if (s.name === 'values' || s.name === 'indices') return param(path, lastSpan, s, i, mode);
      if (path.length === 0 && s.name === 'output' && mode === 'value') {
        const after = segs[i + 2];
        if (next?.kind === 'member' && !METHODS.has(next.name) && after?.kind !== 'call') {
          return { path, end: { kind: 'graphOutput', name: next.name, span: next.node.span }, next: i + 2 };
        }
        return { path, end: { kind: 'graphOutput', name: null, span: s.node.span }, next: i + 1 };
      }
      if (s.name === 'op' && next?.kind === 'call' && path.length > 0 && next.node.args[0]?.value.kind === 'String') {
        path.push(opSegment(next.node, env));
        lastSpan = next.node.span;
        i++;
        continue;
      }
      if (s.name === 'output' || s.name === 'input') return { path, end: { kind: 'port', port: s.name, index: 0, span: s.node.span }, next: i + 1 };
      if (s.name === 'outputs' || s.name === 'inputs') {
        const port = s.name === 'outputs' ? 'output' : 'input';
        if (next?.kind !== 'index' || next.node.items.length !== 1 || next.node.items[0]!.kind !== 'index') {
          throw new NnsError('invalid-module-ref', `'.${s.name}' needs one index: .${s.name}[0]`, { span: s.node.nameSpan });
        }
        const item = next.node.items[0] as { kind: 'index'; value: A.Expr };
        const index = constInt(item.value, env, `the ${port} index`);
        if (index < 0) throw new NnsError('invalid-module-ref', `the ${port} index must be >= 0`, { span: item.value.span });
        return { path, end: { kind: 'port', port, index, span: next.node.span }, next: i + 2 };
      }
      path.push(s.name);
      lastSpan = s.node.span;
    } else if (s.kind === 'index') {
      const continues = next?.kind === 'call' || (next?.kind === 'member' && !(METHODS.has(next.name) && segs[i + 2]?.kind === 'call'));
      if (path.length === 0 || !continues) return param(path, lastSpan, s, i, mode);
      const items = s.node.items;
      if (items.length !== 1 || items[0]!.kind !== 'index') {
        throw new NnsError('invalid-module-ref', 'a module list index is one integer, as in model.transformer.h[3]', { span: s.node.span });
      }
      let k = constInt(items[0].value, env, 'a module index');
      if (k < 0 && opts.tree) {
        // Python's rule: h[-1] is the last element. Out of range stays negative; the module check reports it with the list's range.
        const n = moduleListLength(opts.tree, path.join('.'));
        if (n !== undefined && k + n >= 0) k += n;
      }
      opts.indices?.set(s.node, k);
      path.push(String(k));
      lastSpan = s.node.span;
    } else {
      if (path.length === 0) throw new NnsError('invalid-module-ref', 'calling the whole model is not supported; call one of its modules', { span: s.node.span });
      if (mode === 'target') break;
      return { path, end: { kind: 'call', node: s.node }, next: i + 1 };
    }
  }
  return param(path, lastSpan, segs[segs.length - 1], segs.length, mode);
}

/** `op("TYPE")` / `op("TYPE", N)` → the path segment `op("TYPE",N)` (see src/model/modules.ts `opPath`). */
function opSegment(call: A.CallExpr, env: Env): string {
  const [t, k, ...more] = call.args;
  const bad = (msg: string, span: Span): NnsError => new NnsError('invalid-module-ref', msg, { span });
  if (more.length || t!.name !== undefined || (k && k.name !== undefined)) throw bad('op takes an op type and an optional index: op("Softmax", 0)', call.span);
  const type = (t!.value as A.StringExpr).value;
  if (!/^[A-Za-z][A-Za-z0-9_]*$/.test(type)) throw bad(`'${type}' is not an ONNX op type`, t!.value.span);
  const n = k ? constInt(k.value, env, 'the op index') : 0;
  if (n < 0) throw bad('the op index must be >= 0', k!.value.span);
  return `op("${type}",${n})`;
}

function param(path: string[], lastSpan: Span | undefined, s: Seg | undefined, next: number, mode: 'value' | 'target'): WalkedPath {
  const span = lastSpan ?? (s ? s.node.span : undefined);
  if (mode === 'target' || path.length === 0 || !span) {
    const where = s ? s.node.span : span;
    if (mode === 'target') {
      throw new NnsError('invalid-target', "can only assign to a module's .output or .input (optionally sliced)", { span: where });
    }
    throw new NnsError('invalid-module-ref', "'model' alone is not a value: use model.output or model.MODULE.output", { span: where });
  }
  return { path, end: { kind: 'param', span }, next };
}

/** A set target: `model.PATH.output[SLICES]`. */
export interface SetTarget {
  path: string;
  port: 'output' | 'input';
  index: number;
  /** The slice, when the target is indexed. */
  items: A.IndexItemAst[] | null;
  span: Span;
}

/** Reads the left side of `TARGET = EXPR`. */
export function setTarget(target: A.Expr, env: Env, opts: WalkOptions = {}): SetTarget {
  const { root, segs } = chainSegments(target);
  const bad = (): NnsError => new NnsError('invalid-target', "can only assign to a module's .output or .input (optionally sliced)", { span: target.span });
  if (root.kind !== 'Model') throw bad();
  if (segs[0]?.kind === 'member' && segs[0].name === 'output' && (segs.length === 1 || segs[1]?.kind !== 'call')) {
    throw new NnsError('invalid-target', "cannot assign to the model's output; assign to a module's .output", { span: target.span });
  }
  const w = walkModulePath(segs, env, 'target', opts);
  if (w.end.kind !== 'port') throw bad();
  const rest = segs.slice(w.next);
  if (rest.length > 1 || (rest.length === 1 && rest[0]!.kind !== 'index')) throw bad();
  const items = rest.length === 1 ? (rest[0]!.node as A.IndexExpr).items : null;
  const first = segs[0]!.node.span;
  return { path: w.path.join('.'), port: w.end.port, index: w.end.index, items, span: joinSpans(first, target.span) };
}
