/**
 * The core functions of the language: their parameters (for arity and keyword-argument
 * checks) and how each lowers to IR.
 * @module
 */
import type { Builder } from '../ir/builder.js';
import type { Value } from '../ir/ir.js';
import { NnsError, type Span } from '../src/errors.js';
import { suggest } from '../src/suggest.js';

/** A lowered argument: a tensor value, or a compile-time constant. */
export interface FnArgs {
  /** The first argument (`x`), always a tensor. */
  x: Value;
  /** Compile-time integer arguments by parameter name (`dim`, `k`, ...); absent when not given. */
  ints: Map<string, number>;
  /** Compile-time integer lists (`shape` of reshape). */
  lists: Map<string, number[]>;
  /** Boolean arguments (`keepdim`). */
  bools: Map<string, boolean>;
}

/** What a function returns: one value, or the two results of `topk`. */
export type FnResult = { kind: 'value'; value: Value } | { kind: 'topk'; values: Value; indices: Value };

/** How each parameter after `x` is read. */
export type ParamKind = 'int' | 'ints' | 'bool';

/** Signature and lowering of one function. */
export interface FnSpec {
  /** Parameter names after `x`, with their kinds. */
  params: ReadonlyArray<readonly [string, ParamKind]>;
  /** How many parameters (counting `x`) are required. */
  required: number;
  lower(b: Builder, a: FnArgs, span: Span): FnResult;
}

const value = (v: Value): FnResult => ({ kind: 'value', value: v });

function elementwise(op: 'exp' | 'log' | 'sqrt' | 'abs' | 'relu' | 'zeros_like' | 'ones_like'): FnSpec {
  return { params: [], required: 1, lower: (b, a, s) => value(b.op(op, [a.x], {}, s)) };
}

function reduce(op: 'sum' | 'mean' | 'max'): FnSpec {
  return {
    params: [['dim', 'int'], ['keepdim', 'bool']],
    required: 1,
    lower: (b, a, s) => value(b.op(op, [a.x], { dim: a.ints.get('dim') ?? null, keepdim: a.bools.get('keepdim') ?? false }, s)),
  };
}

/** Every core function by name. */
export const FUNCTIONS: ReadonlyMap<string, FnSpec> = new Map<string, FnSpec>([
  ['softmax', { params: [['dim', 'int']], required: 2, lower: (b, a, s) => value(b.op('softmax', [a.x], { dim: a.ints.get('dim')! }, s)) }],
  ['log_softmax', { params: [['dim', 'int']], required: 2, lower: (b, a, s) => value(b.op('log_softmax', [a.x], { dim: a.ints.get('dim')! }, s)) }],
  ['argmax', {
    params: [['dim', 'int'], ['keepdim', 'bool']],
    required: 2,
    lower: (b, a, s) => value(b.op('argmax', [a.x], { dim: a.ints.get('dim')!, keepdim: a.bools.get('keepdim') ?? false }, s)),
  }],
  ['topk', {
    params: [['k', 'int'], ['dim', 'int']],
    required: 2,
    lower: (b, a, s) => {
      const k = a.ints.get('k')!;
      if (k < 1) throw new NnsError('bad-argument', `topk needs k >= 1, got ${k}`, { span: s });
      const [values, indices] = b.topk(a.x, k, a.ints.get('dim') ?? -1, s);
      return { kind: 'topk', values, indices };
    },
  }],
  ['sum', reduce('sum')],
  ['mean', reduce('mean')],
  ['max', reduce('max')],
  ['norm', {
    params: [['dim', 'int'], ['keepdim', 'bool']],
    required: 2,
    lower: (b, a, s) => value(b.op('norm', [a.x], { dim: a.ints.get('dim')!, keepdim: a.bools.get('keepdim') ?? false }, s)),
  }],
  ['reshape', { params: [['shape', 'ints']], required: 2, lower: (b, a, s) => value(b.op('reshape', [a.x], { shape: a.lists.get('shape')! }, s)) }],
  ['transpose', {
    params: [['dim0', 'int'], ['dim1', 'int']],
    required: 3,
    lower: (b, a, s) => value(b.op('transpose', [a.x], { dim0: a.ints.get('dim0')!, dim1: a.ints.get('dim1')! }, s)),
  }],
  ['zeros_like', elementwise('zeros_like')],
  ['ones_like', elementwise('ones_like')],
  ['exp', elementwise('exp')],
  ['log', elementwise('log')],
  ['sqrt', elementwise('sqrt')],
  ['abs', elementwise('abs')],
  ['relu', elementwise('relu')],
]);

/** Functions that are reserved for a later version of the language. */
export const RESERVED_FUNCTIONS: ReadonlySet<string> = new Set(['grad']);

/** `softmax(x, dim)`: a readable signature for messages. */
export function signature(name: string, spec: FnSpec): string {
  const ps = ['x', ...spec.params.map(([p], i) => (i + 1 < spec.required ? p : `${p}?`))];
  return `${name}(${ps.join(', ')})`;
}

/** The error for an unknown function, with the nearest known name. */
export function unknownFunction(name: string, span: Span): NnsError {
  const near = suggest(name, FUNCTIONS.keys());
  const notes = near ? [] : [`the functions are ${[...FUNCTIONS.keys()].join(', ')}`];
  return new NnsError('unknown-function', `unknown function '${name}'${near ? `; did you mean '${near}'?` : ''}`, { span, notes });
}
