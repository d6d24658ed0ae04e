/**
 * Deterministic text form of the IR, for golden tests and `--print-ir-after-all`:
 * ```
 * scope #0 rows 0..1
 * scope #1 rows 0..1 tokens [264, 758, 334]
 * %0 = module.output #1 {path: "transformer.h.2", index: 0, version: 0} : float32[1, sequence, 128]  # eiffel.nns:4:8
 * save #1 %0 {name: "h2"}
 * ```
 * Values are numbered by order of appearance (not by global id), so equal graphs print
 * equally. Attributes print in the op catalogue's order ({@link OP_SCHEMA}). A bound
 * name prints in the trailing comment (`# h2 @ eiffel.nns:4:8`); the ` : type` part is
 * omitted while no result has a type (before inference), `?` marks one unknown type.
 * @module
 */
import type { Graph, IndexItem, Node, Scope, Value } from './ir.js';
import { OP_SCHEMA } from './ops.js';
import { formatItems, formatType } from './shape.js';

/** Printing options. */
export interface PrintOptions {
  /** Print each node's source location (default true). */
  spans?: boolean;
}

/** Number values by order of first appearance, as an input or a result (the printer's and JSON form's `%N`). */
export function numberValues(graph: Graph): Map<Value, number> {
  const ids = new Map<Value, number>();
  for (const n of graph.nodes) {
    for (const v of n.inputs) if (!ids.has(v)) ids.set(v, ids.size);
    for (const v of n.results) if (!ids.has(v)) ids.set(v, ids.size);
  }
  return ids;
}

/** The text of a whole graph (one line per scope, dim value and node, newline-terminated). */
export function printIR(graph: Graph, opts: PrintOptions = {}): string {
  const ids = numberValues(graph);
  const lines = graph.scopes.map(printScope);
  const dims = Object.keys(graph.dimValues).sort();
  if (dims.length > 0) lines.push(`dims {${dims.map((k) => `${k}: ${graph.dimValues[k]}`).join(', ')}}`);
  for (const n of graph.nodes) lines.push(printNode(n, ids, opts));
  return lines.join('\n') + '\n';
}

/** One scope header line. */
export function printScope(s: Scope): string {
  let line = `scope #${s.id} rows ${s.rowStart}..${s.rowEnd}`;
  if (s.tokens) line += ` tokens [${s.tokens.join(', ')}]`;
  if (s.prompt !== undefined) line += ` prompt ${JSON.stringify(s.prompt)}`;
  return line;
}

/** One node line. */
export function printNode(n: Node, ids: Map<Value, number>, opts: PrintOptions = {}): string {
  const ref = (v: Value): string => `%${ids.get(v) ?? `?${v.id}`}`;
  let line = n.results.length > 0 ? `${n.results.map(ref).join(', ')} = ` : '';
  line += `${n.op} #${n.scope}`;
  if (n.inputs.length > 0) line += ' ' + n.inputs.map(ref).join(', ');
  const attrs = printAttrs(n);
  if (attrs) line += ` {${attrs}}`;
  if (n.results.some((v) => v.type !== null)) line += ' : ' + n.results.map((v) => formatType(v.type)).join(', ');
  const notes: string[] = [];
  const names = n.results.filter((v) => v.name !== undefined).map((v) => v.name!);
  if (names.length > 0) notes.push(names.join(', '));
  if (opts.spans !== false) notes.push(`${n.span.file}:${n.span.line}:${n.span.col}`);
  if (notes.length > 0) line += `  # ${notes.join(' @ ')}`;
  return line;
}

function printAttrs(n: Node): string {
  const attrs = n.attrs as unknown as Record<string, unknown>;
  return OP_SCHEMA[n.op].attrs
    .map(([key, kind]) => {
      const v = attrs[key];
      if (kind === 'items' || kind === 'items?') return `${key}: ${v === null || v === undefined ? 'null' : `[${formatItems(v as IndexItem[])}]`}`;
      return `${key}: ${formatValue(v)}`;
    })
    .join(', ');
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(formatValue).join(', ')}]`;
  if (typeof v === 'number' && Object.is(v, -0)) return '-0';
  return String(v);
}
