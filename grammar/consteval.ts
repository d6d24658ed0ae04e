/**
 * Compile-time integer arithmetic: literals, loop variables, and `+ - * /` on them. Indices,
 * dims, loop bounds and module list indices must fold to integers here.
 * @module
 */
import { NnsError } from '../src/errors.js';
import type * as A from './ast.js';
import { exprText } from './exprtext.js';
import { Poisoned, type Env } from './scope.js';

/** Folds a compile-time number (literals, loop variables, + - * / on them), or undefined. */
export function constNumber(e: A.Expr, env: Env): number | undefined {
  switch (e.kind) {
    case 'Number':
      return e.value;
    case 'Name': {
      const b = env.lookup(e.name);
      if (b?.kind === 'poison') throw new Poisoned();
      return b?.kind === 'int' ? b.value : undefined;
    }
    case 'Unary': {
      const v = constNumber(e.operand, env);
      return v === undefined ? undefined : -v;
    }
    case 'Binary': {
      if (e.op === '@') return undefined;
      const l = constNumber(e.left, env);
      const r = constNumber(e.right, env);
      if (l === undefined || r === undefined) return undefined;
      return e.op === '+' ? l + r : e.op === '-' ? l - r : e.op === '*' ? l * r : l / r;
    }
    default:
      return undefined;
  }
}

/** A compile-time integer, or a `not-constant` error naming `what`. */
export function constInt(e: A.Expr, env: Env, what: string): number {
  const v = constNumber(e, env);
  if (v === undefined || !Number.isSafeInteger(v)) {
    throw new NnsError('not-constant', `${what} must be a compile-time integer (a whole number or a loop variable), not '${exprText(e, () => undefined)}'`, { span: e.span });
  }
  return v;
}

