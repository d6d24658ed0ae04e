/**
 * Text rendering of a module tree for `nns modules`.
 * @module
 */
import type { BoundaryValue, ModuleTree, TensorSig } from './types.js';

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
 * (`-` when the export did not record it) and output types, in aligned columns:
 * `transformer.h.0.mlp  GPT2MLP  float32[batch, sequence, 128]`.
 */
export function formatModuleTree(tree: ModuleTree, opts: { ops?: boolean } = {}): string[] {
  const rows = [...tree.modules.values()].map((m) => [m.path === '' ? '(root)' : m.path, m.className ?? '-', formatValues(m.outputs)]);
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
