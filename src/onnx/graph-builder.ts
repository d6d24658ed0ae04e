/**
 * A small, typed builder for ONNX graphs.
 *
 * Used by the compiler's lowering pass (which splices new nodes into an existing graph, see
 * {@link GraphBuilder.wrap} / {@link GraphBuilder.wrapModel}), by tests (synthetic models) and
 * by the benchmark model generator (bench/gpt2-model.ts).
 *
 * Naming rules:
 * - Graph inputs, outputs, initializers and explicitly named node outputs keep the name you
 *   give; a collision with any existing value or node name throws.
 * - Node names (`opts.name`, or `namePrefix + opType` by default) are *bases*: the first use
 *   is kept as is, later ones get `_1`, `_2`, ... — exactly how the TorchScript exporter numbers
 *   repeated ops in a scope (`/transformer/h.0/mlp/act/Mul_1`).
 * - Generated node outputs are `<node name>_output_<i>`, as the TorchScript exporter names them.
 * - {@link GraphBuilder.uniqueName} checks against every value and node name in the graph,
 *   including those inside subgraphs (`If`/`Loop` bodies).
 * @module
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type {
  AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
  TensorProto, ValueInfoProto,
} from './proto.js';
import { AttributeType, DataType, dataTypeBits, defaultOpset } from './proto.js';
import { definedValues, topoOrder } from './view.js';

// ───────────────────────────── tensors ─────────────────────────────

/** Typed arrays a tensor can be built from. */
export type TypedArrayData =
  | Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Int8Array
  | Uint16Array | Int16Array | Uint32Array | BigUint64Array;

/** The natural ONNX element type of a typed array (`Uint8Array` → UINT8; pass `dataType` for BOOL, FLOAT16, ...). */
export function dataTypeOf(data: TypedArrayData): number {
  if (data instanceof Float32Array) return DataType.FLOAT;
  if (data instanceof Float64Array) return DataType.DOUBLE;
  if (data instanceof Int32Array) return DataType.INT32;
  if (data instanceof BigInt64Array) return DataType.INT64;
  if (data instanceof Uint8Array) return DataType.UINT8;
  if (data instanceof Int8Array) return DataType.INT8;
  if (data instanceof Uint16Array) return DataType.UINT16;
  if (data instanceof Int16Array) return DataType.INT16;
  if (data instanceof Uint32Array) return DataType.UINT32;
  if (data instanceof BigUint64Array) return DataType.UINT64;
  throw new Error('internal: unsupported typed array');
}

const LITTLE_ENDIAN = os.endianness() === 'LE';

/**
 * The little-endian bytes of a typed array (ONNX `raw_data` and external data layout).
 * On little-endian hosts this is a view of `data` (no copy) unless `copy` is set.
 */
export function littleEndianBytes(data: TypedArrayData, copy = false): Uint8Array {
  const view = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (LITTLE_ENDIAN) return copy ? view.slice() : view;
  const out = view.slice();
  const w = data.BYTES_PER_ELEMENT;
  for (let i = 0; i < out.length; i += w) out.subarray(i, i + w).reverse();
  return out;
}

function checkDims(dims: readonly number[], count: number, what: string): void {
  let n = 1;
  for (const d of dims) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`internal: ${what}: bad dimension ${d}`);
    n *= d;
  }
  if (n !== count) throw new Error(`internal: ${what}: dims [${dims.join(',')}] hold ${n} elements, data has ${count}`);
}

/** Options of {@link tensor}. */
export interface TensorOptions {
  /** Tensor name (initializers need one; Constant values do not). */
  name?: string;
  /** Element type when it differs from the array's natural one (BOOL over Uint8Array, FLOAT16 over Uint16Array). */
  dataType?: number;
  /** `doc_string`. */
  docString?: string;
}

/** An inline `TensorProto` from a typed array: `raw_data` little-endian (copied). `dims` `[]` = scalar. */
export function tensor(data: TypedArrayData, dims: readonly number[], opts: TensorOptions = {}): TensorProto {
  checkDims(dims, data.length, `tensor ${opts.name ?? ''}`);
  const t: TensorProto = { dims: [...dims], data_type: opts.dataType ?? dataTypeOf(data) };
  if (opts.name !== undefined) t.name = opts.name;
  if (opts.docString !== undefined) t.doc_string = opts.docString;
  t.raw_data = littleEndianBytes(data, true);
  return t;
}

/** A 1-D int64 tensor (or of shape `dims`) from plain numbers or bigints: the common shape/axes constant. */
export function int64Tensor(values: readonly (number | bigint)[], dims: readonly number[] = [values.length], opts: TensorOptions = {}): TensorProto {
  return tensor(BigInt64Array.from(values, (v) => BigInt(v)), dims, opts);
}

/** A scalar (rank-0) int64 tensor. */
export function scalarInt64(value: number | bigint, opts: TensorOptions = {}): TensorProto {
  return int64Tensor([value], [], opts);
}

/** A float32 tensor from plain numbers; 1-D unless `dims` is given. */
export function floatTensor(values: ArrayLike<number>, dims: readonly number[] = [values.length], opts: TensorOptions = {}): TensorProto {
  return tensor(Float32Array.from(values), dims, opts);
}

/** A scalar (rank-0) float32 tensor. */
export function scalarFloat(value: number, opts: TensorOptions = {}): TensorProto {
  return floatTensor([value], [], opts);
}

/** Where a tensor's bytes live in an external data file. */
export interface ExternalRef {
  /** Path of the data file relative to the model file (ORT rejects absolute or escaping paths). */
  location: string;
  /** Byte offset in the data file. */
  offset: number;
  /** Byte length. */
  length: number;
}

/** A `TensorProto` whose data lives in an external file (`data_location = EXTERNAL`). */
export function externalTensor(name: string, dataType: number, dims: readonly number[], ref: ExternalRef): TensorProto {
  const bits = dataTypeBits(dataType);
  let n = 1;
  for (const d of dims) n *= d;
  if (bits > 0 && Math.ceil((n * bits) / 8) !== ref.length) {
    throw new Error(`internal: external tensor ${name}: dims [${dims.join(',')}] need ${Math.ceil((n * bits) / 8)} bytes, ref has ${ref.length}`);
  }
  return {
    dims: [...dims],
    data_type: dataType,
    name,
    external_data: [
      { key: 'location', value: ref.location },
      { key: 'offset', value: String(ref.offset) },
      { key: 'length', value: String(ref.length) },
    ],
    data_location: 1,
  };
}

/** Reads a tensor's `external_data` entries (`undefined` for inline tensors). */
export function externalRefOf(t: TensorProto): ExternalRef | undefined {
  if (t.data_location !== 1 || !t.external_data) return undefined;
  const get = (k: string): string | undefined => t.external_data!.find((e) => e.key === k)?.value;
  const location = get('location');
  if (location === undefined) return undefined;
  return { location, offset: Number(get('offset') ?? 0), length: Number(get('length') ?? -1) };
}

/**
 * A tensor's elements as a fresh typed array (FLOAT → Float32Array, INT64 → BigInt64Array, ...;
 * BOOL/UINT8 → Uint8Array, FLOAT16/BFLOAT16 → Uint16Array). Reads `raw_data`, the typed
 * `*_data` fields, or — when `baseDir` is given — external data relative to it.
 */
export function tensorData(t: TensorProto, baseDir?: string): TypedArrayData {
  const dt = t.data_type ?? 0;
  let n = 1;
  for (const d of t.dims ?? []) n *= Number(d);
  const make = (buf: ArrayBuffer | null): TypedArrayData => {
    switch (dt) {
      case DataType.FLOAT: return buf ? new Float32Array(buf) : new Float32Array(n);
      case DataType.DOUBLE: return buf ? new Float64Array(buf) : new Float64Array(n);
      case DataType.INT32: return buf ? new Int32Array(buf) : new Int32Array(n);
      case DataType.INT64: return buf ? new BigInt64Array(buf) : new BigInt64Array(n);
      case DataType.UINT64: return buf ? new BigUint64Array(buf) : new BigUint64Array(n);
      case DataType.UINT32: return buf ? new Uint32Array(buf) : new Uint32Array(n);
      case DataType.INT16: return buf ? new Int16Array(buf) : new Int16Array(n);
      case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16: return buf ? new Uint16Array(buf) : new Uint16Array(n);
      case DataType.INT8: return buf ? new Int8Array(buf) : new Int8Array(n);
      case DataType.UINT8: case DataType.BOOL: return buf ? new Uint8Array(buf) : new Uint8Array(n);
      default: throw new Error(`internal: tensorData: unsupported data type ${dt}`);
    }
  };
  const fromBytes = (bytes: Uint8Array): TypedArrayData => {
    const copy = new Uint8Array(bytes); // own, aligned buffer
    if (!LITTLE_ENDIAN) {
      const w = Math.max(1, dataTypeBits(dt) / 8);
      for (let i = 0; i < copy.length; i += w) copy.subarray(i, i + w).reverse();
    }
    return make(copy.buffer);
  };
  const ext = externalRefOf(t);
  if (ext) {
    if (baseDir === undefined) throw new Error(`internal: tensor ${t.name} has external data; pass baseDir`);
    const length = ext.length >= 0 ? ext.length : Math.ceil((n * dataTypeBits(dt)) / 8);
    const fd = fs.openSync(path.join(baseDir, ext.location), 'r');
    try {
      const buf = Buffer.alloc(length);
      fs.readSync(fd, buf, 0, length, ext.offset);
      return fromBytes(buf);
    } finally {
      fs.closeSync(fd);
    }
  }
  if (t.raw_data && t.raw_data.length > 0) return fromBytes(t.raw_data);
  const out = make(null);
  const src: readonly (number | bigint)[] | undefined =
    dt === DataType.FLOAT || dt === DataType.FLOAT16 || dt === DataType.BFLOAT16 ? t.float_data
      : dt === DataType.DOUBLE ? t.double_data
        : dt === DataType.INT64 ? t.int64_data
          : dt === DataType.UINT64 || dt === DataType.UINT32 ? t.uint64_data
            : t.int32_data;
  if (src) {
    for (let i = 0; i < n && i < src.length; i++) {
      if (out instanceof BigInt64Array || out instanceof BigUint64Array) out[i] = BigInt(src[i]!);
      else out[i] = Number(src[i]!);
    }
  }
  return out;
}

// ───────────────────────────── external data ─────────────────────────────

/**
 * Writes tensors one after another into ONE external data file, each at an aligned offset
 * (64 bytes by default), synchronously and without holding more than the caller's chunk in
 * memory. Pair the returned {@link ExternalRef}s with {@link externalTensor} (or pass the writer
 * as `external` to {@link GraphBuilder.initializer}).
 */
export class ExternalDataWriter {
  /** The `location` written into tensors: the file name relative to the model file. */
  readonly location: string;
  /** Alignment of each tensor's offset, in bytes. */
  readonly align: number;
  private fd: number | undefined;
  private pos = 0;

  /**
   * @param filePath where to write the data file (truncated).
   * @param opts `location` defaults to the file's base name; `align` to 64.
   */
  constructor(filePath: string, opts: { location?: string; align?: number } = {}) {
    this.location = opts.location ?? path.basename(filePath);
    this.align = opts.align ?? 64;
    this.fd = fs.openSync(filePath, 'w');
  }

  /** Bytes written so far (end of the last tensor). */
  get size(): number {
    return this.pos;
  }

  /** Writes one tensor given as one or more consecutive chunks of bytes; returns where it went. */
  write(chunks: Uint8Array | Iterable<Uint8Array>): ExternalRef {
    if (this.fd === undefined) throw new Error('internal: ExternalDataWriter is closed');
    const pad = (this.align - (this.pos % this.align)) % this.align;
    if (pad) {
      fs.writeSync(this.fd, new Uint8Array(pad), 0, pad, this.pos);
      this.pos += pad;
    }
    const offset = this.pos;
    const list = chunks instanceof Uint8Array ? [chunks] : chunks;
    for (const c of list) {
      let done = 0;
      while (done < c.length) done += fs.writeSync(this.fd, c, done, c.length - done, this.pos + done);
      this.pos += c.length;
    }
    return { location: this.location, offset, length: this.pos - offset };
  }

  /** Writes a typed array's little-endian bytes. */
  writeArray(data: TypedArrayData): ExternalRef {
    return this.write(littleEndianBytes(data));
  }

  /** Flushes to disk (fsync) and closes the file. */
  close(): void {
    if (this.fd === undefined) return;
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    this.fd = undefined;
  }
}

// ───────────────────────────── attributes and value infos ─────────────────────────────

/** An attribute value without its name, as made by the {@link attr} helpers (the right `type` set). */
export type AttrValue = Omit<AttributeProto, 'name'> & { type: number };

/** Typed attribute constructors; each sets `AttributeProto.type` correctly. */
export const attr = {
  /** INT. */
  int: (v: number | bigint): AttrValue => ({ type: AttributeType.INT, i: v }),
  /** INTS. */
  ints: (v: readonly (number | bigint)[]): AttrValue => ({ type: AttributeType.INTS, ints: [...v] }),
  /** FLOAT (stored as float32). */
  float: (v: number): AttrValue => ({ type: AttributeType.FLOAT, f: v }),
  /** FLOATS. */
  floats: (v: readonly number[]): AttrValue => ({ type: AttributeType.FLOATS, floats: [...v] }),
  /** STRING (UTF-8). */
  string: (v: string): AttrValue => ({ type: AttributeType.STRING, s: new TextEncoder().encode(v) }),
  /** STRINGS (UTF-8). */
  strings: (v: readonly string[]): AttrValue => ({ type: AttributeType.STRINGS, strings: v.map((s) => new TextEncoder().encode(s)) }),
  /** TENSOR. */
  tensor: (t: TensorProto): AttrValue => ({ type: AttributeType.TENSOR, t }),
  /** GRAPH (a subgraph, e.g. an `If` branch). */
  graph: (g: GraphProto): AttrValue => ({ type: AttributeType.GRAPH, g }),
} as const;

/** A dimension: a fixed size, or a symbolic name (`'batch_size'`). */
export type Dim = number | string;

/** A tensor `ValueInfoProto`; `dims` `undefined` = unknown rank. */
export function valueInfo(name: string, elemType: number, dims?: readonly Dim[]): ValueInfoProto {
  const tensor_type: { elem_type: number; shape?: { dim: { dim_value?: number; dim_param?: string }[] } } = { elem_type: elemType };
  if (dims) tensor_type.shape = { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) };
  return { name, type: { tensor_type } };
}

// ───────────────────────────── graph walking ─────────────────────────────

/** Every value name and node name in a graph and its subgraphs. */
export function collectNames(graph: GraphProto, into: Set<string> = new Set()): Set<string> {
  for (const v of graph.input ?? []) if (v.name) into.add(v.name);
  for (const v of graph.output ?? []) if (v.name) into.add(v.name);
  for (const v of graph.value_info ?? []) if (v.name) into.add(v.name);
  for (const t of graph.initializer ?? []) if (t.name) into.add(t.name);
  for (const s of graph.sparse_initializer ?? []) if (s.values?.name) into.add(s.values.name);
  for (const n of graph.node ?? []) {
    if (n.name) into.add(n.name);
    for (const o of n.output ?? []) if (o) into.add(o);
    for (const i of n.input ?? []) if (i) into.add(i);
    for (const a of n.attribute ?? []) {
      if (a.g) collectNames(a.g, into);
      for (const g of a.graphs ?? []) collectNames(g, into);
    }
  }
  return into;
}

export { nodeReads, topoOrder, type TopoOrder } from './view.js';

/**
 * Sorts `graph.node` topologically in place (stable: keeps the existing order where it is
 * already valid). Throws on a cycle.
 */
export function topoSort(graph: GraphProto): void {
  const { order, cyclic } = topoOrder(graph);
  if (cyclic.length) throw new Error('internal: topoSort: the graph has a cycle');
  graph.node = order;
}

// ───────────────────────────── the builder ─────────────────────────────

/** Options of a {@link GraphBuilder}. */
export interface GraphBuilderOptions {
  /** Prefix of default node names (`namePrefix + opType`), e.g. `/transformer/h.3/mlp/nns.set/`. */
  namePrefix?: string;
  /** Default-domain opset version of {@link GraphBuilder.build} (default 17). */
  opset?: number;
  /** Versions of other operator domains used by nodes (`{ 'com.microsoft': 1 }`); unlisted ones get 1. */
  opsets?: Record<string, number>;
  /** Graph name (new graphs only; default `main_graph`, as the TorchScript exporter writes). */
  graphName?: string;
  /** Names visible from an enclosing graph (when wrapping a subgraph); accepted as node inputs. */
  outerScope?: Iterable<string>;
}

/** Options of {@link GraphBuilder.node}. */
export interface NodeOptions {
  /** Node name base, made unique with `_1`, `_2`, ... (default `namePrefix + opType`). */
  name?: string;
  /** Number of outputs (named `<node name>_output_<i>`), or their exact names. Default 1. */
  outputs?: number | readonly string[];
  /** Operator domain (default `''`, the ONNX domain). */
  domain?: string;
  /** `doc_string` (Netron shows it; the compiler puts the script line here). */
  docString?: string;
  /** `metadata_props` (IR ≥ 10; {@link GraphBuilder.build} raises the IR version when used). */
  metadata?: Record<string, string>;
}

/** Options of {@link GraphBuilder.initializer}. */
export interface InitializerOptions {
  /** Element type when it differs from the array's natural one. */
  dataType?: number;
  /** Store the data externally: through a writer (appends now) or at an already written place. */
  external?: ExternalDataWriter | ExternalRef;
}

/** Options of {@link GraphBuilder.build}. */
export interface BuildOptions {
  /** Default 8, raised to 10 when nodes carry `metadata_props`. */
  irVersion?: number;
  /** Default `onnsight`. */
  producerName?: string;
  /** Default `0.1.0`. */
  producerVersion?: string;
  /** Model-level `metadata_props`. */
  metadata?: Record<string, string>;
}

function metadataEntries(m: Record<string, string>): StringStringEntryProto[] {
  return Object.entries(m).map(([key, value]) => ({ key, value }));
}

/**
 * Builds a new ONNX graph, or adds nodes to an existing one without name collisions.
 *
 * @example
 * const b = new GraphBuilder();
 * const x = b.input('x', DataType.FLOAT, ['batch', 3]);
 * const w = b.initializer('w', new Float32Array(6), [3, 2]);
 * const [y] = b.node('MatMul', [x, w]);
 * b.output(b.op('Relu', [y], {}, { outputs: ['y'] }), DataType.FLOAT, ['batch', 2]);
 * const model = b.build();
 */
export class GraphBuilder {
  /** The graph being built or extended (mutated in place). */
  readonly graph: GraphProto;
  /** Default prefix of node names. */
  namePrefix: string;
  private readonly model: ModelProto | undefined;
  private readonly opset: number;
  private readonly opsets: Record<string, number>;
  private readonly taken: Set<string>;
  private readonly values: Set<string>;
  private readonly nextSuffix = new Map<string, number>();
  private readonly domains = new Set<string>();
  private usesNodeMetadata = false;
  /** Index in `graph.node` where the next node goes; `undefined` = append. */
  private cursor: number | undefined;

  /**
   * Extends an existing graph in place (e.g. a decoded model's graph, or an `If` branch — pass
   * the enclosing graph's names as `opts.outerScope`). New nodes are appended unless an
   * insertion point is set ({@link GraphBuilder.insertBefore}).
   */
  static wrap(graph: GraphProto, opts: GraphBuilderOptions = {}): GraphBuilder {
    return new GraphBuilder(opts, graph);
  }

  /** Extends a model's main graph in place; {@link GraphBuilder.build} returns the same model with opset imports completed. */
  static wrapModel(model: ModelProto, opts: Omit<GraphBuilderOptions, 'opset'> = {}): GraphBuilder {
    if (!model.graph) model.graph = { node: [] };
    return new GraphBuilder({ ...opts, opset: defaultOpset(model) ?? 17 }, model.graph, model);
  }

  /** Starts an empty graph. */
  constructor(opts?: GraphBuilderOptions);
  /** @internal use {@link GraphBuilder.wrap} / {@link GraphBuilder.wrapModel}. */
  constructor(opts: GraphBuilderOptions, graph: GraphProto, model?: ModelProto);
  constructor(opts: GraphBuilderOptions = {}, graph?: GraphProto, model?: ModelProto) {
    this.namePrefix = opts.namePrefix ?? '';
    this.opset = opts.opset ?? 17;
    this.opsets = { ...(opts.opsets ?? {}) };
    this.model = model;
    if (graph) {
      this.graph = graph;
      graph.node ??= [];
      this.taken = collectNames(graph);
      this.values = definedValues(graph);
    } else {
      this.graph = { node: [], name: opts.graphName ?? 'main_graph', initializer: [], input: [], output: [] };
      this.taken = new Set();
      this.values = new Set();
    }
    for (const v of opts.outerScope ?? []) {
      this.values.add(v);
      this.taken.add(v);
    }
  }

  /** True if `name` is already used by a value or node. */
  has(name: string): boolean {
    return this.taken.has(name);
  }

  /** True if `name` is a value a new node can read (input, initializer, node output, outer scope). */
  isValue(name: string): boolean {
    return this.values.has(name);
  }

  /** Marks `name` as used; throws if it already is. */
  reserve(name: string): string {
    if (!name) throw new Error('internal: empty name');
    if (this.taken.has(name)) throw new Error(`internal: name collision: ${JSON.stringify(name)} is already used in the graph`);
    this.taken.add(name);
    return name;
  }

  /** Returns `base` if unused, else `base_1`, `base_2`, ... (first free); the result is reserved. */
  uniqueName(base: string): string {
    if (!this.taken.has(base)) {
      this.taken.add(base);
      return base;
    }
    let k = this.nextSuffix.get(base) ?? 1;
    while (this.taken.has(`${base}_${k}`)) k++;
    this.nextSuffix.set(base, k + 1);
    const name = `${base}_${k}`;
    this.taken.add(name);
    return name;
  }

  /** Adds a graph input (exact name). Returns the name. */
  input(name: string, elemType: number, dims?: readonly Dim[]): string {
    this.reserve(name);
    (this.graph.input ??= []).push(valueInfo(name, elemType, dims));
    this.values.add(name);
    return name;
  }

  /** Declares an existing value (input, initializer or node output) a graph output. */
  output(name: string, elemType: number, dims?: readonly Dim[]): string {
    if (!this.values.has(name)) throw new Error(`internal: output ${JSON.stringify(name)} is not a value of the graph`);
    (this.graph.output ??= []).push(valueInfo(name, elemType, dims));
    return name;
  }

  /** Records type/shape information of an intermediate value (`graph.value_info`). */
  valueInfo(name: string, elemType: number, dims?: readonly Dim[]): void {
    (this.graph.value_info ??= []).push(valueInfo(name, elemType, dims));
  }

  /**
   * Adds an initializer (exact name) from a typed array — inline (`raw_data`), or external
   * through `opts.external`. Returns the name.
   */
  initializer(name: string, data: TypedArrayData, dims: readonly number[], opts: InitializerOptions = {}): string {
    let t: TensorProto;
    if (opts.external) {
      checkDims(dims, data.length, `initializer ${name}`);
      const ref = opts.external instanceof ExternalDataWriter ? opts.external.writeArray(data) : opts.external;
      t = externalTensor(name, opts.dataType ?? dataTypeOf(data), dims, ref);
    } else {
      t = tensor(data, dims, { name, dataType: opts.dataType });
    }
    return this.addTensor(t);
  }

  /** Adds a ready-made `TensorProto` as an initializer (its `name` is used exactly). */
  addTensor(t: TensorProto): string {
    if (!t.name) throw new Error('internal: initializer without a name');
    this.reserve(t.name);
    (this.graph.initializer ??= []).push(t);
    this.values.add(t.name);
    return t.name;
  }

  /** Where the next nodes go: before `node` (or before index `index`); later nodes follow in order. */
  insertBefore(node: NodeProto | number): void {
    const nodes = this.graph.node!;
    const i = typeof node === 'number' ? node : nodes.indexOf(node);
    if (i < 0 || i > nodes.length) throw new Error('internal: insertBefore: node not in graph');
    this.cursor = i;
  }

  /** New nodes are appended at the end again (the default). */
  insertAtEnd(): void {
    this.cursor = undefined;
  }

  /**
   * Adds a node. Inputs must be existing values (`''` = omitted optional input). Returns the
   * output names.
   */
  node(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, opts: NodeOptions = {}): string[] {
    for (const i of inputs) {
      if (i && !this.values.has(i)) throw new Error(`internal: ${opType} reads ${JSON.stringify(i)}, which is not a value of the graph`);
    }
    const name = this.uniqueName(opts.name ?? `${this.namePrefix}${opType}`);
    const outSpec = opts.outputs ?? 1;
    const outputs = typeof outSpec === 'number'
      ? Array.from({ length: outSpec }, (_, k) => this.uniqueName(`${name}_output_${k}`))
      : outSpec.map((o) => this.reserve(o));
    const n: NodeProto = { input: [...inputs], output: outputs, name, op_type: opType };
    if (opts.domain) {
      n.domain = opts.domain;
      this.domains.add(opts.domain);
    }
    const attribute = Object.entries(attrs).map(([k, v]): AttributeProto => ({ name: k, ...v }));
    if (attribute.length) n.attribute = attribute;
    if (opts.docString !== undefined) n.doc_string = opts.docString;
    if (opts.metadata && Object.keys(opts.metadata).length) {
      n.metadata_props = metadataEntries(opts.metadata);
      this.usesNodeMetadata = true;
    }
    const nodes = this.graph.node!;
    if (this.cursor === undefined) nodes.push(n);
    else nodes.splice(this.cursor++, 0, n);
    for (const o of outputs) this.values.add(o);
    return outputs;
  }

  /** {@link GraphBuilder.node} for single-output ops: returns the one output name. */
  op(opType: string, inputs: readonly string[], attrs: Record<string, AttrValue> = {}, opts: Omit<NodeOptions, 'outputs'> & { outputs?: readonly [string] } = {}): string {
    return this.node(opType, inputs, attrs, opts)[0]!;
  }

  /** Adds a `Constant` node holding `t` (its `name` is ignored). Returns the output name. */
  constant(t: TensorProto, opts: Omit<NodeOptions, 'outputs'> & { outputs?: readonly [string] } = {}): string {
    const value: TensorProto = { ...t };
    delete value.name;
    return this.op('Constant', [], { value: attr.tensor(value) }, opts);
  }

  /** A `Constant` 1-D int64 tensor (shape, axes, starts, ...). */
  constInt64(values: readonly (number | bigint)[], opts: Omit<NodeOptions, 'outputs'> = {}): string {
    return this.constant(int64Tensor(values), opts);
  }

  /** A `Constant` float32 scalar. */
  constFloat(value: number, opts: Omit<NodeOptions, 'outputs'> = {}): string {
    return this.constant(scalarFloat(value), opts);
  }

  /**
   * The model: for a new graph, a fresh `ModelProto`; for {@link GraphBuilder.wrapModel}, the
   * wrapped model with opset imports of newly used domains added (and IR raised to 10 if new
   * nodes carry metadata). Does not copy the graph.
   */
  build(opts: BuildOptions = {}): ModelProto {
    const needIr = this.usesNodeMetadata ? 10 : 8;
    if (this.model) {
      const imports = (this.model.opset_import ??= []);
      for (const d of this.domains) {
        if (!imports.some((o) => (o.domain ?? '') === d)) imports.push({ domain: d, version: this.opsets[d] ?? 1 });
      }
      if (Number(this.model.ir_version ?? 0) < needIr) this.model.ir_version = needIr;
      return this.model;
    }
    const opset_import: OperatorSetIdProto[] = [{ domain: '', version: this.opset }];
    for (const d of this.domains) opset_import.push({ domain: d, version: this.opsets[d] ?? 1 });
    const model: ModelProto = {
      ir_version: Math.max(opts.irVersion ?? 8, needIr),
      opset_import,
      producer_name: opts.producerName ?? 'onnsight',
      producer_version: opts.producerVersion ?? '0.1.0',
      graph: this.graph,
    };
    if (opts.metadata) model.metadata_props = metadataEntries(opts.metadata);
    return model;
  }
}

/** Re-exported for convenience: element type codes (`DataType.FLOAT`, `DataType.INT64`, ...). */
export { DataType } from './proto.js';
