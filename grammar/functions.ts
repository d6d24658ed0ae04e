/**
 * The core functions of the language: their parameters (for arity and keyword-argument
 * checks) and how each lowers to IR.
 * @module
 */
import type { Builder } from '../ir/builder.js';
import type { OpAttrs, OpName, Value } from '../ir/ir.js';
import { FUNCTION_OPS, type FnSurface, type ParamKind } from '../ir/ops.js';
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

export type { ParamKind };

/** Signature and lowering of one function. */
export interface FnSpec {
  /** Parameter names after `x`, with their kinds. */
  params: ReadonlyArray<readonly [string, ParamKind]>;
  /** How many parameters (counting `x`) are required. */
  required: number;
  lower(b: Builder, a: FnArgs, span: Span): FnResult;
}

/**
 * A function from its catalogue surface: arguments become the attributes of the same name
 * (defaults for omitted ones), checked by the surface's `check`.
 */
function fromCatalogue(op: OpName, fn: FnSurface): FnSpec {
  const required = 1 + fn.params.filter((p) => p.length < 3).length;
  return {
    params: fn.params.map(([name, kind]) => [name, kind] as const),
    required,
    lower(b, a, span) {
      const attrs: Record<string, unknown> = {};
      for (const [name, kind, dflt] of fn.params) {
        const given = kind === 'int' ? a.ints.get(name) : kind === 'bool' ? a.bools.get(name) : a.lists.get(name);
        attrs[name] = given ?? dflt;
      }
      const bad = fn.check?.(attrs);
      if (bad) throw new NnsError('bad-argument', bad, { span });
      const rs = b.apply(op, [a.x], attrs as OpAttrs[typeof op], span);
      return rs.length === 2 ? { kind: 'topk', values: rs[0]!, indices: rs[1]! } : { kind: 'value', value: rs[0]! };
    },
  };
}

/** Every core function by name: the ops of the catalogue (ir/ops.ts) that have a function surface. */
export const FUNCTIONS: ReadonlyMap<string, FnSpec> = new Map<string, FnSpec>(
  [...FUNCTION_OPS].map(([op, fn]) => [op, fromCatalogue(op, fn)]),
);

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
