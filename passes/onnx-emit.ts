/**
 * Emitting new ONNX nodes into a model being rewritten: unique names, scope-style node
 * names (`/transformer/h.3/mlp/nns.set/Add`), the script location in `doc_string`,
 * provenance in `metadata_props`, and a cache of small constants.
 * @module
 */
import { numbersKey } from '../ir/key.js';
import type { GraphProto, NodeProto, AttributeProto, TensorProto, ValueInfoProto } from '../src/onnx/proto.js';
import { AttributeType, DataType } from '../src/onnx/proto.js';
import type { Span } from '../src/errors.js';
import type { Dim, DType } from '../src/model/types.js';

/** ONNX element type of a dtype. */
export function onnxElemType(dt: DType): number {
  switch (dt) {
    case 'float32': return DataType.FLOAT;
    case 'float16': return DataType.FLOAT16;
    case 'bfloat16': return DataType.BFLOAT16;
    case 'float64': return DataType.DOUBLE;
    case 'int64': return DataType.INT64;
    case 'int32': return DataType.INT32;
    case 'int16': return DataType.INT16;
    case 'int8': return DataType.INT8;
    case 'uint8': return DataType.UINT8;
    case 'uint16': return DataType.UINT16;
    case 'uint32': return DataType.UINT32;
    case 'uint64': return DataType.UINT64;
    case 'bool': return DataType.BOOL;
  }
}

/** dtype of an ONNX element type (undefined for types the IR has no name for). */
export function dtypeOfElemType(t: number): DType | undefined {
  const table: Record<number, DType> = {
    1: 'float32', 10: 'float16', 16: 'bfloat16', 11: 'float64', 7: 'int64', 6: 'int32', 5: 'int16',
    3: 'int8', 2: 'uint8', 4: 'uint16', 12: 'uint32', 13: 'uint64', 9: 'bool',
  };
  return table[t];
}

/** A value for an attribute: number (int), `{ f }` (float), number[] (ints), string, tensor. */
export type AttrValue = number | { f: number } | number[] | { floats: number[] } | string | TensorProto;

/** Makes an AttributeProto. Plain numbers are ints. */
export function attr(name: string, v: AttrValue): AttributeProto {
  if (typeof v === 'number') return { name, i: v, type: AttributeType.INT };
  if (typeof v === 'string') return { name, s: new TextEncoder().encode(v), type: AttributeType.STRING };
  if (Array.isArray(v)) return { name, ints: v, type: AttributeType.INTS };
  if ('f' in v && typeof v.f === 'number') return { name, f: v.f, type: AttributeType.FLOAT };
  if ('floats' in v && Array.isArray(v.floats)) return { name, floats: v.floats, type: AttributeType.FLOATS };
  return { name, t: v as TensorProto, type: AttributeType.TENSOR };
}

/** A small inline tensor (constants the compiler inserts; never weights). */
export function makeTensor(dtype: DType, dims: number[], data: readonly number[]): TensorProto {
  const n = data.length;
  let bytes: Uint8Array;
  switch (dtype) {
    case 'float32': bytes = new Uint8Array(Float32Array.from(data).buffer); break;
    case 'float64': bytes = new Uint8Array(Float64Array.from(data).buffer); break;
    case 'int64': bytes = new Uint8Array(BigInt64Array.from(data, (x) => BigInt(Math.trunc(x))).buffer); break;
    case 'int32': bytes = new Uint8Array(Int32Array.from(data).buffer); break;
    case 'bool': case 'uint8': bytes = Uint8Array.from(data, (x) => (dtype === 'bool' ? (x ? 1 : 0) : x)); break;
    default: throw new Error(`internal: cannot make a ${dtype} constant`);
  }
  if (bytes.length === 0 && n === 0) bytes = new Uint8Array(0);
  return { dims, data_type: onnxElemType(dtype), raw_data: bytes };
}

/** A ValueInfoProto with dtype and (possibly symbolic) shape. */
export function valueInfo(name: string, dtype: DType, shape: Dim[] | null): ValueInfoProto {
  const tensor_type: { elem_type: number; shape?: { dim: { dim_value?: number; dim_param?: string }[] } } = { elem_type: onnxElemType(dtype) };
  if (shape) tensor_type.shape = { dim: shape.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) };
  return { name, type: { tensor_type } };
}

/** Where an emitted node came from. */
export interface Provenance {
  /** Module path the node belongs to (`transformer.h.3.mlp`), or '' for none. */
  module: string;
  /** The IR operation (`set`, `save`, `index`, ...). */
  irOp: string;
  /** Script location. */
  span?: Span;
  /** The source line text (shown in Netron's doc_string). */
  sourceText?: string;
  /**
   * The script statement the node belongs to (the unit inserted nodes are grouped, named and
   * documented by; constants are never shared across statements). Defaults to `span`.
   */
  stmt?: Span;
  /** Which run of the statement (`Graph.statements` index; a statement in a loop runs once per iteration). */
  unit?: number;
  /** What the statement does: `set`, `save`, `call`, `grad` (names its function, `nns_set`). */
  kind?: string;
  /** The module the statement touches, when `module` (the node's own scope) differs: sunk copies of lm_head's nodes. */
  stmtModule?: string;
  /** For a statement lowered once for several invokes: how many, and their batch rows (`1..32`). */
  invokes?: { count: number; rows: string };
  /** The module whose own nodes this node copies (a module call's clones, sunk copies), if any. */
  copyOf?: string;
  /** A name segment after `nns.<irOp>` (a module call's clones: the called module, `transformer/ln_f`). */
  sub?: string;
  /**
   * Groups nodes that belong to several statements at once (the backward sweep one `Y`
   * shares among its `grad` calls): replaces `unit` in {@link unitKey}, so they form one
   * function of their own.
   */
  group?: string;
  /** The description of such a group (its function's doc_string after the location), instead of the statement's text. */
  doc?: string;
}

/** `file:line:col` of a span. */
export function spanText(span: Span): string {
  return `${span.file}:${span.line}:${span.col}`;
}

/** What identifies a statement run in cache keys: nothing an emitter makes is shared across two. */
export function unitKey(p: Provenance): string {
  if (p.group !== undefined) return `@${p.group}`;
  if (p.unit !== undefined) return `#${p.unit}`;
  const st = p.stmt ?? p.span;
  return `${st ? `${st.file}:${st.offset}` : ''}|${p.module}|${p.irOp}`;
}

/** Provenance of every node an {@link Emitter} created (passes after lowering name and group by it). */
export const nodeProvenance = new WeakMap<NodeProto, Provenance>();

/** `transformer.h.3.mlp` → `/transformer/h.3/mlp` (TorchScript scope style). */
export function scopePrefix(path: string): string {
  if (!path) return '';
  const parts: string[] = [];
  for (const seg of path.split('.')) {
    if (/^\d+$/.test(seg) && parts.length) parts[parts.length - 1] += `.${seg}`;
    else parts.push(seg);
  }
  return '/' + parts.join('/');
}

/** Script location of every node an {@link Emitter} created (for errors found after lowering). */
export const nodeSpans = new WeakMap<NodeProto, Span>();

/** Adds nodes to a graph with unique names. */
export class Emitter {
  readonly graph: GraphProto;
  private readonly taken = new Set<string>();
  private readonly constCache = new Map<string, string>();
  /** Nodes this emitter created (the intervention's own nodes). */
  readonly created = new Set<NodeProto>();
  /** Provenance of the node being emitted. */
  prov: Provenance = { module: '', irOp: 'nns' };

  constructor(graph: GraphProto) {
    this.graph = graph;
    graph.node ??= [];
    for (const n of graph.node) {
      if (n.name) this.taken.add(n.name);
      for (const o of n.output ?? []) this.taken.add(o);
    }
    for (const v of graph.input ?? []) if (v.name) this.taken.add(v.name);
    for (const t of graph.initializer ?? []) if (t.name) this.taken.add(t.name);
    for (const v of graph.output ?? []) if (v.name) this.taken.add(v.name);
  }

  /** Next suffix to try per base name (so n names with one base cost O(n), not O(n²)). */
  private readonly nextSuffix = new Map<string, number>();

  /** A name not used by any node or value so far (`base`, `base_1`, ...). */
  unique(base: string): string {
    let name = base;
    let i = this.nextSuffix.get(base) ?? 1;
    if (this.taken.has(name)) for (name = `${base}_${i}`; this.taken.has(name); ) name = `${base}_${++i}`;
    this.nextSuffix.set(base, i);
    this.taken.add(name);
    return name;
  }

  /** Marks a name as used (for names created outside the emitter). */
  reserve(name: string): void {
    this.taken.add(name);
  }

  /** Emits one node; returns its output names. */
  node(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}, nOutputs = 1): string[] {
    const prefix = `${scopePrefix(this.prov.module)}/nns.${this.prov.irOp}${this.prov.sub ? `/${this.prov.sub}` : ''}`;
    const name = this.unique(`${prefix}/${opType}`);
    const outputs = Array.from({ length: nOutputs }, (_, i) => this.unique(`${name}_output_${i}`));
    const node: NodeProto = {
      input: inputs,
      output: outputs,
      name,
      op_type: opType,
      attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
    };
    const span = this.prov.span;
    const where = this.prov.stmt ?? span;
    if (where) node.doc_string = `${spanText(where)}${this.prov.sourceText ? `: ${this.prov.sourceText.trim()}` : ''}`;
    node.metadata_props = [
      { key: 'onnsight.op', value: this.prov.irOp },
      ...(where ? [{ key: 'onnsight.source', value: spanText(where) }] : []),
      ...(this.prov.module ? [{ key: 'onnsight.module', value: this.prov.module }] : []),
    ];
    this.graph.node!.push(node);
    this.created.add(node);
    nodeProvenance.set(node, { ...this.prov });
    if (span) nodeSpans.set(node, span);
    return outputs;
  }

  /** Emits one single-output node and returns the output name. */
  op(opType: string, inputs: string[], attrs: Record<string, AttrValue> = {}): string {
    return this.node(opType, inputs, attrs, 1)[0]!;
  }

  /** A constant tensor (cached by content). */
  constant(dtype: DType, dims: number[], data: readonly number[]): string {
    // By bytes (-0 and 0 stay apart), and per statement: a constant shared by two statements
    // would be an edge across the graph and carry only the first statement's source line.
    const key = `${unitKey(this.prov)}|${dtype}|${dims.join(',')}|${numbersKey(data)}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.op('Constant', [], { value: makeTensor(dtype, dims, data) });
    this.constCache.set(key, name);
    return name;
  }

  /** A 1-D int64 constant. */
  ints(values: readonly number[]): string {
    return this.constant('int64', [values.length], values);
  }

  /** A scalar int64 constant. */
  scalarInt(v: number): string {
    return this.constant('int64', [], [v]);
  }
}
