/**
 * The canonical text of an expression, used as the automatic name of a `.save()` that is
 * not bound to a name. Rule: the expression as written, without spaces; `model.` dropped
 * from module references; module list indices written as path segments (`h[0]` → `h.0`);
 * loop variables replaced by their values. So, inside `for l in 0..4`,
 * `model.transformer.h[l].output[:, -1, :].save()` is saved as
 * `transformer.h.2.output[:,-1,:]` in iteration 2.
 * @module
 */
import type * as A from './ast.js';

const PREC: Record<A.BinaryExpr['op'], number> = { '+': 1, '-': 1, '*': 2, '/': 2, '@': 2 };

/**
 * Canonical text of `e`; `loopValue` gives the value of a loop variable (undefined for other
 * names); `moduleIndex` the resolved value of a module-list index (`h[-1]` → 11, `h[l - 4]`
 * → 2), written instead of the index expression when known.
 */
export function exprText(e: A.Expr, loopValue: (name: string) => number | undefined, moduleIndex: (e: A.IndexExpr) => number | undefined = () => undefined): string {
  const t = (x: A.Expr): string => exprText(x, loopValue, moduleIndex);
  const listItem = (x: A.IndexExpr): string => { const k = moduleIndex(x); return k === undefined ? itemText(x.items[0]!, t) : String(k); };
  switch (e.kind) {
    case 'Number':
      return e.text;
    case 'String':
      return JSON.stringify(e.value);
    case 'Bool':
      return String(e.value);
    case 'Name': {
      const v = loopValue(e.name);
      return v === undefined ? e.name : String(v);
    }
    case 'Model':
      return 'model';
    case 'List':
      return `[${e.items.map(t).join(',')}]`;
    case 'Unary':
      return `-${e.operand.kind === 'Binary' ? `(${t(e.operand)})` : t(e.operand)}`;
    case 'Binary': {
      const side = (x: A.Expr, right: boolean): string => {
        if (x.kind !== 'Binary') return t(x);
        const p = PREC[x.op];
        const need = p < PREC[e.op] || (right && p === PREC[e.op]);
        return need ? `(${t(x)})` : t(x);
      };
      return `${side(e.left, false)}${e.op}${side(e.right, true)}`;
    }
    case 'Member': {
      if (e.object.kind === 'Model') return e.name;
      if (e.object.kind === 'Index' && isModulePathIndex(e.object)) return `${t(e.object.object)}.${listItem(e.object)}.${e.name}`;
      return `${t(e.object)}.${e.name}`;
    }
    case 'Index':
      return `${t(e.object)}[${e.items.map((i) => itemText(i, t)).join(',')}]`;
    case 'Call': {
      let callee = t(e.callee);
      if (e.callee.kind === 'Index' && isModulePathIndex(e.callee)) callee = `${t(e.callee.object)}.${listItem(e.callee)}`;
      return `${callee}(${e.args.map((a) => (a.name ? `${a.name}=${t(a.value)}` : t(a.value))).join(',')})`;
    }
  }
}

function itemText(i: A.IndexItemAst, t: (x: A.Expr) => string): string {
  if (i.kind === 'ellipsis') return '...';
  if (i.kind === 'index') return t(i.value);
  const step = i.step ? `:${t(i.step)}` : '';
  return `${i.start ? t(i.start) : ''}:${i.stop ? t(i.stop) : ''}${step}`;
}

/** True for `model.a.h[3]`-style indexing: a single plain index on a member chain rooted at `model`. */
function isModulePathIndex(e: A.IndexExpr): boolean {
  if (e.items.length !== 1 || e.items[0]!.kind !== 'index') return false;
  let o: A.Expr = e.object;
  while (o.kind === 'Member' || o.kind === 'Index') o = o.object;
  return o.kind === 'Model' && e.object.kind === 'Member';
}
