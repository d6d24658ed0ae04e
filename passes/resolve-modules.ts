/**
 * Resolve every name the IR mentions against the model: module paths (refs, sets, calls),
 * boundary indices, parameters and graph output names. Unknown names become user errors
 * at the node's span, with the nearest existing name (or, for a list index out of range,
 * the valid range). Negative list indices count from the end (`transformer.h.-1` becomes
 * `transformer.h.3` on a four-block model). Paths print as the script writes them, from
 * `model` (`model.transformer.h[7]`), so a suggestion is always a whole existing path that
 * can be pasted into the script.
 * @module
 */
import { NnsError, type ErrorCode } from '../src/errors.js';
import type { ModuleTree } from '../src/model/types.js';
import { parseOpPath, resolveModulePath } from '../src/model/modules.js';
import { suggest } from '../src/suggest.js';
import { scriptPath, type Node } from '../ir/ir.js';
import type { Pass } from './pass.js';

/** A module or parameter path as a script writes it: `model.transformer.h[3]` (`model` for the root). */
export function fullPath(path: string): string {
  return path === '' ? 'model' : `model.${scriptPath(path)}`;
}

/**
 * Why `path` is not a module of `tree` (a full message), or null when it is one. A list
 * index out of range names the valid range (whether or not the exporter kept a module
 * for the list itself, e.g. `transformer.h`); otherwise the nearest existing path is
 * suggested: first among the children of the longest existing prefix, then any path
 * ending with the given one, then the nearest path overall.
 */
export function explainUnknownModule(tree: ModuleTree, path: string): string | null {
  if (tree.modules.has(path)) return null;
  const op = parseOpPath(path);
  if (op) {
    const inModule = explainUnknownModule(tree, op.module);
    if (inModule !== null) return inModule;
    const where = scriptPath(op.module);
    const ops = tree.ops?.(op.module) ?? [];
    const count = ops.filter((o) => o.opType === op.opType).length;
    if (count > 0) return `${where} has ${count} ${op.opType} node${count === 1 ? '' : 's'} (op("${op.opType}", 0)..op("${op.opType}", ${count - 1})), not op("${op.opType}", ${op.n})`;
    const s = suggest(op.opType, [...new Set(ops.map((o) => o.opType))]);
    return `${where} has no ${op.opType} node${s ? `; did you mean '${s}'?` : ''} (nns modules MODEL --ops lists them)`;
  }
  const segs = path.split('.');
  const join = (a: string, b: string): string => (a === '' ? b : `${a}.${b}`);
  const head = `no module '${fullPath(path)}'`;
  for (let i = 0; i < segs.length; i++) {
    const list = segs.slice(0, i).join('.');
    if (!/^-?\d+$/.test(segs[i]!) || tree.modules.has(join(list, segs[i]!))) continue;
    const nums = [...tree.modules.keys()]
      .filter((p) => p.startsWith(list === '' ? '' : `${list}.`) && /^\d+$/.test(p.slice(list === '' ? 0 : list.length + 1)))
      .map((p) => Number(p.slice(list === '' ? 0 : list.length + 1)));
    if (nums.length === 0) break;
    const [lo, hi] = [Math.min(...nums), Math.max(...nums)];
    const neg = segs[i]!.startsWith('-') ? `; from the end: ${fullPath(join(list, String(-(hi + 1))))}..${fullPath(join(list, '-1'))}` : '';
    return `${head} (the model has ${fullPath(join(list, String(lo)))}..${fullPath(join(list, String(hi)))}${neg})`;
  }
  let k = segs.length - 1;
  while (k > 0 && !tree.modules.has(segs.slice(0, k).join('.'))) k--;
  const prefix = segs.slice(0, k).join('.');
  const bad = segs[k]!;
  const rel = (tree.modules.get(prefix)?.children ?? []).map((c) => (prefix === '' ? c : c.slice(prefix.length + 1)));
  const firsts = [...new Set(rel.map((r) => r.split('.')[0]!))].filter((f) => /^\d+$/.test(f) === /^\d+$/.test(bad));
  let guess: string | undefined;
  const near = suggest(bad, firsts);
  if (near !== undefined) {
    const whole = [join(prefix, near), ...segs.slice(k + 1)].join('.');
    const stem = join(prefix, near);
    guess = tree.modules.has(whole) ? whole : tree.modules.has(stem) ? stem : [...tree.modules.keys()].find((p) => p.startsWith(`${stem}.`));
  }
  if (guess === undefined) {
    const all = [...tree.modules.keys()].filter((p) => p !== '');
    guess = all.find((p) => p.endsWith(`.${path}`)) ?? suggest(path, all, Math.max(3, Math.floor(path.length / 3)));
  }
  return guess === undefined ? head : `${head}; did you mean '${fullPath(guess)}'?`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** The user errors for one node (empty when every name resolves). Negative list indices in its module path are resolved first (`h.-1` → `h.11`). */
export function resolveNode(tree: ModuleTree, n: Node): NnsError[] {
  if (n.is('module.output') || n.is('module.input') || n.is('set') || n.is('call_module')) n.attrs.path = resolveModulePath(tree, n.attrs.path);
  const err = (code: ErrorCode, msg: string, notes: string[] = []): NnsError[] => [new NnsError(code, msg, { span: n.span, notes })];
  const boundary = (path: string, port: 'output' | 'input', index: number): NnsError[] => {
    const why = explainUnknownModule(tree, path);
    if (why !== null) return err('unknown-module', why);
    const m = tree.modules.get(path)!;
    const count = port === 'output' ? m.outputs.length : m.inputs.length;
    if (index >= 0 && index < count) return [];
    return err('no-such-output', `${fullPath(path)} has no ${port}s[${index}] (it has ${plural(count, port)})`);
  };
  if (n.is('module.output') || n.is('module.input')) {
    return boundary(n.attrs.path, n.op === 'module.output' ? 'output' : 'input', n.attrs.index);
  }
  if (n.is('set')) return boundary(n.attrs.path, n.attrs.port, n.attrs.index);
  if (n.is('call_module')) {
    const why = explainUnknownModule(tree, n.attrs.path);
    return why === null ? [] : err('unknown-module', why);
  }
  if (n.is('param')) {
    const name = n.attrs.name;
    if (tree.params.has(name)) return [];
    const s = suggest(name, tree.params.keys(), Math.max(3, Math.floor(name.length / 4)));
    return err('unknown-parameter', `no parameter '${fullPath(name)}'${s ? `; did you mean '${fullPath(s)}'?` : ''}`);
  }
  if (n.is('model.output')) {
    const names = tree.graphOutputs.map((o) => o.name);
    if (n.attrs.name === null) return names.length > 0 ? [] : err('unknown-output', 'the model has no graph outputs');
    if (names.includes(n.attrs.name)) return [];
    const s = suggest(n.attrs.name, names);
    return err('unknown-output', `the model has no output '${n.attrs.name}'${s ? `; did you mean '${s}'?` : ''}`, [
      `the model's outputs are: ${names.join(', ')}`,
    ]);
  }
  return [];
}

/** Checks every module path, boundary index, parameter and output name against `ctx.tree`. */
export const resolveModulesPass: Pass = {
  name: 'resolve-modules',
  run(state, ctx) {
    for (const n of state.ir.nodes) ctx.errors.push(...resolveNode(ctx.tree, n));
    return { changed: false };
  },
};
