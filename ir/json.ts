/**
 * The JSON form of the IR: the wire format for remote execution. Round-trips exactly
 * (types, names, spans, scopes, dim values). Reading validates strictly: every problem
 * throws an {@link IRFormatError} naming the JSON path of the offending field.
 * Non-finite constants and negative zero are written as the strings `"NaN"`, `"Infinity"`,
 * `"-Infinity"`, `"-0"`.
 * @module
 */
import type { Span } from '../src/errors.js';
import { OP_SCHEMA } from './ops.js';
import { DTYPES, Graph, Node, type Dim, type DType, type OpName, type Scope, type TensorType, type Value } from './ir.js';
import { numberValues } from './printer.js';
import { checkAttrs, verify } from './verifier.js';

/** One serialized result value. */
export interface ValueJSON {
  type: { dtype: DType; shape: Dim[] | null } | null;
  name?: string;
}

/** One serialized node; `inputs` are value numbers in order of appearance. */
export interface NodeJSON {
  op: OpName;
  scope: number;
  inputs: number[];
  attrs: Record<string, unknown>;
  results: ValueJSON[];
  span: Span;
}

/** The serialized graph. */
export interface GraphJSON {
  format: 'onnsight-ir';
  version: 1;
  scopes: Scope[];
  dimValues: Record<string, number>;
  nodes: NodeJSON[];
}

/** Malformed IR JSON. */
export class IRFormatError extends Error {
  constructor(message: string) {
    super(`invalid onnsight-ir JSON: ${message}`);
    this.name = 'IRFormatError';
  }
}

const encNum = (x: number): number | string => (Object.is(x, -0) ? '-0' : Number.isFinite(x) ? x : String(x));

/** Serialize a graph (plain JSON-compatible data). */
export function graphToJSON(graph: Graph): GraphJSON {
  const ids = numberValues(graph);
  return {
    format: 'onnsight-ir',
    version: 1,
    scopes: graph.scopes.map((s) => JSON.parse(JSON.stringify(s)) as Scope),
    dimValues: { ...graph.dimValues },
    nodes: graph.nodes.map((n) => {
      const attrs = JSON.parse(JSON.stringify(n.attrs)) as Record<string, unknown>;
      if (n.op === 'const') attrs.data = (n.attrs as { data: number[] }).data.map(encNum);
      return {
        op: n.op,
        scope: n.scope,
        inputs: n.inputs.map((v) => ids.get(v)!),
        attrs,
        results: n.results.map((v) => ({
          type: v.type ? { dtype: v.type.dtype, shape: v.type.shape ? [...v.type.shape] : null } : null,
          ...(v.name !== undefined ? { name: v.name } : {}),
        })),
        span: { ...n.span },
      };
    }),
  };
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

function need(cond: boolean, where: string, what: string): asserts cond {
  if (!cond) throw new IRFormatError(`${where}: ${what}`);
}

/** Parse and validate a serialized graph (an object or JSON text); the result also passes {@link verify}. */
export function graphFromJSON(json: unknown): Graph {
  if (typeof json === 'string') {
    try { json = JSON.parse(json) as unknown; } catch (e) { throw new IRFormatError(`not JSON (${(e as Error).message})`); }
  }
  need(isObj(json), '$', 'expected an object');
  need(json.format === 'onnsight-ir', '$.format', `expected "onnsight-ir", got ${JSON.stringify(json.format)}`);
  need(json.version === 1, '$.version', `unsupported version ${JSON.stringify(json.version)} (this reader knows 1)`);
  const g = new Graph();
  need(Array.isArray(json.scopes) && json.scopes.length > 0, '$.scopes', 'expected a non-empty array');
  g.scopes = json.scopes.map((s, i) => readScope(s, `$.scopes[${i}]`));
  need(isObj(json.dimValues), '$.dimValues', 'expected an object');
  for (const [k, v] of Object.entries(json.dimValues)) need(isInt(v), `$.dimValues.${k}`, 'expected an integer');
  g.dimValues = { ...(json.dimValues as Record<string, number>) };
  need(Array.isArray(json.nodes), '$.nodes', 'expected an array');
  const values: Value[] = [];
  json.nodes.forEach((raw, i) => g.nodes.push(readNode(raw, `$.nodes[${i}]`, values, g.scopes.length)));
  const problems = verify(g);
  need(problems.length === 0, '$', problems.join('; '));
  return g;
}

function readScope(s: unknown, at: string): Scope {
  need(isObj(s), at, 'expected an object');
  for (const k of ['id', 'rowStart', 'rowEnd']) need(isInt(s[k]), `${at}.${k}`, 'expected an integer');
  const out: Scope = { id: s.id as number, rowStart: s.rowStart as number, rowEnd: s.rowEnd as number };
  if (s.tokens !== undefined) {
    need(Array.isArray(s.tokens) && s.tokens.every(isInt), `${at}.tokens`, 'expected an array of integers');
    out.tokens = [...(s.tokens as number[])];
  }
  if (s.prompt !== undefined) { need(typeof s.prompt === 'string', `${at}.prompt`, 'expected a string'); out.prompt = s.prompt; }
  if (s.span !== undefined) out.span = readSpan(s.span, `${at}.span`);
  return out;
}

function readSpan(s: unknown, at: string): Span {
  need(isObj(s), at, 'expected a span object');
  need(typeof s.file === 'string', `${at}.file`, 'expected a string');
  for (const k of ['line', 'col', 'endLine', 'endCol', 'offset', 'endOffset']) need(isInt(s[k]), `${at}.${k}`, 'expected an integer');
  const { file, line, col, endLine, endCol, offset, endOffset } = s as unknown as Span;
  return { file, line, col, endLine, endCol, offset, endOffset };
}

function readType(t: unknown, at: string): TensorType | null {
  if (t === null) return null;
  need(isObj(t), at, 'expected a type object or null');
  need(typeof t.dtype === 'string' && DTYPES.has(t.dtype as DType), `${at}.dtype`, `unknown dtype ${JSON.stringify(t.dtype)}`);
  const shape = t.shape;
  need(shape === null || (Array.isArray(shape) && shape.every((d) => isInt(d) || typeof d === 'string')), `${at}.shape`, 'expected null or an array of integers and symbols');
  return { dtype: t.dtype as DType, shape: shape === null ? null : [...(shape as Dim[])] };
}

function readNode(raw: unknown, at: string, values: Value[], nScopes: number): Node {
  need(isObj(raw), at, 'expected an object');
  const op = raw.op;
  need(typeof op === 'string' && Object.prototype.hasOwnProperty.call(OP_SCHEMA, op), `${at}.op`, `unknown op ${JSON.stringify(op)}`);
  const schema = OP_SCHEMA[op as OpName];
  need(isInt(raw.scope) && raw.scope >= 0 && raw.scope < nScopes, `${at}.scope`, 'expected the index of a scope');
  need(Array.isArray(raw.inputs) && raw.inputs.every(isInt), `${at}.inputs`, 'expected an array of value numbers');
  const inputs = raw.inputs.map((k, j) => {
    need(k >= 0 && k < values.length, `${at}.inputs[${j}]`, `value %${k} is not defined before this node`);
    return values[k]!;
  });
  need(Array.isArray(raw.results), `${at}.results`, 'expected an array');
  const nRes = raw.results.length;
  need(schema.results === 'variadic' ? nRes >= 1 : nRes === schema.results, `${at}.results`, `${op} has ${String(schema.results)} results, got ${nRes}`);
  need(isObj(raw.attrs), `${at}.attrs`, 'expected an object');
  const attrs = JSON.parse(JSON.stringify(raw.attrs)) as Obj;
  if (op === 'const' && Array.isArray(attrs.data)) {
    attrs.data = attrs.data.map((x) => (x === 'NaN' || x === 'Infinity' || x === '-Infinity' || x === '-0' ? Number(x) : x));
  }
  const span = readSpan(raw.span, `${at}.span`);
  const node = new Node(op as OpName, inputs, attrs as never, nRes, raw.scope, span);
  const bad = checkAttrs(node);
  need(bad.length === 0, `${at}.attrs`, bad.join('; '));
  need(schema.inputs === 'variadic' ? inputs.length >= 1 : inputs.length === schema.inputs, `${at}.inputs`, `${op} takes ${String(schema.inputs)} inputs, got ${inputs.length}`);
  raw.results.forEach((r, j) => {
    need(isObj(r), `${at}.results[${j}]`, 'expected an object');
    const v = node.results[j]!;
    v.type = readType(r.type ?? null, `${at}.results[${j}].type`);
    if (r.name !== undefined) { need(typeof r.name === 'string', `${at}.results[${j}].name`, 'expected a string'); v.name = r.name; }
    values.push(v);
  });
  return node;
}
