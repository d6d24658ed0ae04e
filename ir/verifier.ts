/**
 * Structural invariants of the IR (internal errors, not user errors): SSA, definition
 * before use in program order, consistent use lists, arity and attributes per the op
 * catalogue, valid scopes with contiguous rows. Run after every pass in tests.
 * @module
 */
import { DTYPES, type DType, type Graph, type IndexItem, type Node, type Value } from './ir.js';
import { OP_SCHEMA, type AttrKind } from './ops.js';

/** Check a graph; returns one message per violation (empty = valid). */
export function verify(graph: Graph): string[] {
  const errs: string[] = [];
  verifyScopes(graph, errs);
  const inGraph = new Set<Node>(graph.nodes);
  const defined = new Set<Value>();
  const seen = new Set<Node>();
  graph.nodes.forEach((n, i) => {
    const where = `node ${i} (${n.op})`;
    if (seen.has(n)) errs.push(`${where}: appears twice in the graph`);
    seen.add(n);
    const schema = OP_SCHEMA[n.op];
    if (!schema) { errs.push(`${where}: unknown op`); return; }
    if (schema.inputs === 'variadic' ? n.inputs.length < 1 : n.inputs.length !== schema.inputs) {
      errs.push(`${where}: has ${n.inputs.length} inputs, expected ${schema.inputs === 'variadic' ? 'at least 1' : schema.inputs}`);
    }
    if (schema.results === 'variadic' ? n.results.length < 1 : n.results.length !== schema.results) {
      errs.push(`${where}: has ${n.results.length} results, expected ${schema.results === 'variadic' ? 'at least 1' : schema.results}`);
    }
    if (!Number.isInteger(n.scope) || n.scope < 0 || n.scope >= graph.scopes.length) errs.push(`${where}: invalid scope #${n.scope}`);
    if (!n.span || typeof n.span.file !== 'string') errs.push(`${where}: missing span`);
    n.inputs.forEach((v, j) => {
      if (!defined.has(v)) errs.push(`${where}: input ${j} is not defined before use`);
      if (!v.uses.has(n)) errs.push(`${where}: input ${j} does not list the node as a use`);
    });
    n.results.forEach((v, j) => {
      if (v.producer !== n || v.resultIndex !== j) errs.push(`${where}: result ${j} has a wrong producer link`);
      if (defined.has(v)) errs.push(`${where}: result ${j} defined twice`);
      defined.add(v);
      if (v.type && !DTYPES.has(v.type.dtype)) errs.push(`${where}: result ${j} has unknown dtype ${String(v.type.dtype)}`);
    });
    errs.push(...checkAttrs(n).map((e) => `${where}: ${e}`));
  });
  for (const n of graph.nodes) {
    for (const v of n.results) {
      for (const u of v.uses) {
        if (!inGraph.has(u)) errs.push(`value of ${n.op} is used by a ${u.op} node that is not in the graph`);
        else if (!u.inputs.includes(v)) errs.push(`value of ${n.op} lists a ${u.op} node as a use but is not its input`);
      }
    }
  }
  return errs;
}

function verifyScopes(graph: Graph, errs: string[]): void {
  const s = graph.scopes;
  if (s.length === 0) { errs.push('graph has no scopes (scope #0 is the whole batch)'); return; }
  s.forEach((sc, i) => {
    if (sc.id !== i) errs.push(`scope at position ${i} has id ${sc.id}`);
    if (!Number.isInteger(sc.rowStart) || !Number.isInteger(sc.rowEnd) || sc.rowStart < 0 || sc.rowEnd < sc.rowStart) {
      errs.push(`scope #${i} has invalid rows ${sc.rowStart}..${sc.rowEnd}`);
    }
    if (i > 0 && sc.rowEnd === sc.rowStart) errs.push(`scope #${i} is empty`);
  });
  if (s[0]!.rowStart !== 0) errs.push('scope #0 must start at row 0');
  if (s.length > 1) {
    let row = 0;
    for (const sc of s.slice(1)) {
      if (sc.rowStart !== row) errs.push(`scope #${sc.id} starts at row ${sc.rowStart}, expected ${row} (rows must be contiguous)`);
      row = sc.rowEnd;
    }
    if (s[0]!.rowEnd !== row) errs.push(`scope #0 covers rows 0..${s[0]!.rowEnd} but the invokes cover 0..${row}`);
  }
}

/** Check one node's attributes against the catalogue; returns problems. */
export function checkAttrs(n: Node): string[] {
  const attrs = n.attrs as unknown as Record<string, unknown>;
  if (typeof attrs !== 'object' || attrs === null) return ['attrs is not an object'];
  const schema = OP_SCHEMA[n.op];
  const errs: string[] = [];
  const keys = new Set(schema.attrs.map(([k]) => k));
  for (const k of Object.keys(attrs)) if (!keys.has(k)) errs.push(`unexpected attribute '${k}'`);
  for (const [k, kind] of schema.attrs) if (!attrOk(attrs[k], kind)) errs.push(`attribute '${k}' is not a valid ${kind}`);
  if (errs.length === 0 && n.op === 'const') {
    const a = attrs as { shape: number[]; data: number[] };
    const size = a.shape.reduce((p, d) => p * d, 1);
    if (a.data.length !== size) errs.push(`const has ${a.data.length} elements for shape [${a.shape.join(', ')}]`);
  }
  return errs;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/** Whether `v` is a well-formed attribute value of the given kind. */
export function attrOk(v: unknown, kind: AttrKind): boolean {
  switch (kind) {
    case 'string': return typeof v === 'string';
    case 'string?': return v === null || typeof v === 'string';
    case 'int': return isInt(v);
    case 'int?': return v === null || isInt(v);
    case 'bool': return typeof v === 'boolean';
    case 'dtype': return typeof v === 'string' && DTYPES.has(v as DType);
    case 'port': return v === 'output' || v === 'input';
    case 'ints': return Array.isArray(v) && v.every(isInt);
    case 'numbers': return Array.isArray(v) && v.every((x) => typeof x === 'number');
    case 'items': return Array.isArray(v) && v.every(itemOk);
    case 'items?': return v === null || (Array.isArray(v) && v.every(itemOk));
  }
}

function itemOk(it: unknown): it is IndexItem {
  if (typeof it !== 'object' || it === null) return false;
  const o = it as Record<string, unknown>;
  const keys = Object.keys(o);
  switch (o.kind) {
    case 'index': return isInt(o.index) && keys.length === 2;
    case 'ellipsis': case 'newaxis': return keys.length === 1;
    case 'slice':
      return keys.every((k) => ['kind', 'start', 'stop', 'step'].includes(k))
        && ['start', 'stop', 'step'].every((k) => o[k] === undefined || isInt(o[k]));
    default: return false;
  }
}
