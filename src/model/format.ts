/**
 * Text rendering of a module tree for `nns modules`.
 * @module
 */
import type { BoundaryValue, ModuleInfo, ModuleTree, TensorSig } from './types.js';
import type { ModuleClass } from './classes.js';

/** `float32[batch, sequence, 128]`; `float32[?]` for an unknown rank, `?` for an unknown type. */
export function formatSig(sig: TensorSig | undefined): string {
  if (!sig) return '?';
  return sig.shape === null ? `${sig.dtype}[?]` : `${sig.dtype}[${sig.shape.join(', ')}]`;
}

function formatValues(values: readonly BoundaryValue[]): string {
  return values.length ? values.map((v) => formatSig(v.sig)).join(', ') : '-';
}

/**
 * One line per module, in the tree's order: path (`(root)` for the model itself), class name
 * and output types, in aligned columns: `transformer.h.0.mlp  GPT2MLP  float32[batch, sequence, 128]`.
 * With `classes` ({@link moduleClasses}), an inferred class is marked `~` (`~MLP`); without,
 * a module whose export recorded no class shows `-`.
 */
export function formatModuleTree(tree: ModuleTree, classes?: ReadonlyMap<string, ModuleClass>, opts: { ops?: boolean } = {}): string[] {
  const cls = (m: ModuleInfo): string => {
    const c = classes?.get(m.path);
    return c ? `${c.inferred ? '~' : ''}${c.name}` : m.className ?? '-';
  };
  const rows = [...tree.modules.values()].map((m) => [m.path === '' ? '(root)' : m.path, cls(m), formatValues(m.outputs)]);
  const w0 = Math.max(0, ...rows.map((r) => r[0].length));
  const w1 = Math.max(0, ...rows.map((r) => r[1].length));
  const lines: string[] = [];
  [...tree.modules.values()].forEach((m, i) => {
    const [p, c, o] = rows[i]!;
    lines.push(`${p!.padEnd(w0)}  ${c!.padEnd(w1)}  ${o}`);
    // With ops: the module's own operations (those of no child module), indented, as a script names them.
    if (!opts.ops || !tree.ops) return;
    const inChild = new Set<string>();
    for (const ch of m.children) for (const op of tree.ops(ch)) inChild.add(op.outputs.map((v) => v.name).join(','));
    for (const op of tree.ops(m.path)) {
      if (op.opType === 'Constant' || inChild.has(op.outputs.map((v) => v.name).join(','))) continue;
      lines.push(`    op("${op.opType}", ${op.n})  ${formatValues(op.outputs)}`);
    }
  });
  return lines;
}

/**
 * A value in `nns modules --json`.
 * @category Model
 */
export interface ValueJSON {
  /** The ONNX value name. */
  name: string;
  /** Element type, when known. */
  dtype: string | null;
  /** Dimensions (numbers or symbolic names), `null` for an unknown rank or type. */
  shape: (number | string)[] | null;
}

/**
 * A module in `nns modules --json`.
 * @category Model
 */
export interface ModuleJSON {
  /** Dotted path (`''` for the root). */
  path: string;
  /** Class name (the export's, or inferred). */
  class: string;
  /** Whether the class was inferred from the structure. */
  classInferred: boolean;
  /** Parent path (`null` for the root). */
  parent: string | null;
  /** Direct children's paths, in the model's order. */
  children: string[];
  /** How many times the export called it. */
  calls: number;
  /** Inputs and outputs (first call). */
  inputs: ValueJSON[];
  outputs: ValueJSON[];
  /** Parameters (state-dict names) with their shapes. */
  params: { name: string; dtype: string | null; shape: (number | string)[] | null }[];
}

/**
 * The whole tree in `nns modules --json`: the model's inputs and outputs and every module in the model's order.
 * @category Model
 */
export interface ModuleTreeJSON {
  inputs: ValueJSON[];
  outputs: ValueJSON[];
  modules: ModuleJSON[];
}

function valueJson(v: BoundaryValue): ValueJSON {
  return { name: v.name, dtype: v.sig?.dtype ?? null, shape: v.sig?.shape ? [...v.sig.shape] : null };
}

/** The tree as JSON (`nns modules --json`), modules in the tree's (the model's) order. */
export function moduleTreeJson(tree: ModuleTree, classes: ReadonlyMap<string, ModuleClass>): ModuleTreeJSON {
  return {
    inputs: tree.graphInputs.map(valueJson),
    outputs: tree.graphOutputs.map(valueJson),
    modules: [...tree.modules.values()].map((m) => {
      const c = classes.get(m.path);
      return {
        path: m.path,
        class: c?.name ?? m.className ?? 'Module',
        classInferred: c ? c.inferred : !m.className,
        parent: m.parent ?? null,
        children: [...m.children],
        calls: m.calls,
        inputs: m.inputs.map(valueJson),
        outputs: m.outputs.map(valueJson),
        params: m.params.map((p) => ({ name: p.name, dtype: p.sig?.dtype ?? null, shape: p.sig?.shape ? [...p.sig.shape] : null })),
      };
    }),
  };
}
