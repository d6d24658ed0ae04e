/**
 * TypeScript shapes of the ONNX protobuf messages (ONNX 1.20, IR ≤ 13), as decoded by
 * `decodeModel` (serde.ts). Field names are the schema's (snake_case). A field that is absent
 * on the wire is `undefined`; a repeated field that is absent is `undefined` or `[]`.
 * 64-bit integers are `number` when they fit exactly and `bigint` otherwise.
 * @module
 */

/**
 * A protobuf int64: a `number` when it is a safe integer, a `bigint` otherwise.
 * @category ONNX
 */
export type Int64 = number | bigint;

/**
 * `StringStringEntryProto`: one key/value pair (metadata, external data locations).
 * @category ONNX
 */
export interface StringStringEntryProto {
  key?: string;
  value?: string;
}

/**
 * `OperatorSetIdProto`: an imported operator set.
 * @category ONNX
 */
export interface OperatorSetIdProto {
  domain?: string;
  version?: Int64;
}

/**
 * `TensorShapeProto.Dimension`: a fixed size or a symbolic name.
 * @category ONNX
 */
export interface DimensionProto {
  dim_value?: Int64;
  dim_param?: string;
  denotation?: string;
}

/**
 * `TensorShapeProto`.
 * @category ONNX
 */
export interface TensorShapeProto {
  dim?: DimensionProto[];
}

/**
 * `TypeProto` (only the tensor case is typed in detail).
 * @category ONNX
 */
export interface TypeProto {
  tensor_type?: { elem_type?: number; shape?: TensorShapeProto };
  sequence_type?: { elem_type?: TypeProto };
  map_type?: { key_type?: number; value_type?: TypeProto };
  optional_type?: { elem_type?: TypeProto };
  sparse_tensor_type?: { elem_type?: number; shape?: TensorShapeProto };
  opaque_type?: { domain?: string; name?: string };
  denotation?: string;
}

/**
 * `ValueInfoProto`: the name and type of a graph input, output or intermediate value.
 * @category ONNX
 */
export interface ValueInfoProto {
  name?: string;
  type?: TypeProto;
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
}

/**
 * `TensorProto`: a constant tensor, inline (`raw_data`, `*_data`) or external (`external_data`).
 * @category ONNX
 */
export interface TensorProto {
  dims?: Int64[];
  data_type?: number;
  segment?: { begin?: Int64; end?: Int64 };
  float_data?: number[];
  int32_data?: number[];
  string_data?: Uint8Array[];
  int64_data?: Int64[];
  name?: string;
  doc_string?: string;
  raw_data?: Uint8Array;
  external_data?: StringStringEntryProto[];
  /** 0 = DEFAULT (inline), 1 = EXTERNAL. */
  data_location?: number;
  double_data?: number[];
  uint64_data?: Int64[];
  metadata_props?: StringStringEntryProto[];
}

/**
 * `SparseTensorProto`.
 * @category ONNX
 */
export interface SparseTensorProto {
  values?: TensorProto;
  indices?: TensorProto;
  dims?: Int64[];
}

/**
 * `AttributeProto`: a named node attribute. `type` is an `AttributeType` value.
 * @category ONNX
 */
export interface AttributeProto {
  name?: string;
  ref_attr_name?: string;
  doc_string?: string;
  type?: number;
  f?: number;
  i?: Int64;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  sparse_tensor?: SparseTensorProto;
  tp?: TypeProto;
  floats?: number[];
  ints?: Int64[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  sparse_tensors?: SparseTensorProto[];
  type_protos?: TypeProto[];
}

/**
 * `NodeProto`: one operator application.
 * @category ONNX
 */
export interface NodeProto {
  input?: string[];
  output?: string[];
  name?: string;
  op_type?: string;
  domain?: string;
  overload?: string;
  attribute?: AttributeProto[];
  doc_string?: string;
  metadata_props?: StringStringEntryProto[];
}

/**
 * `GraphProto`: nodes, initializers, inputs, outputs.
 * @category ONNX
 */
export interface GraphProto {
  node?: NodeProto[];
  name?: string;
  initializer?: TensorProto[];
  sparse_initializer?: SparseTensorProto[];
  doc_string?: string;
  input?: ValueInfoProto[];
  output?: ValueInfoProto[];
  value_info?: ValueInfoProto[];
  quantization_annotation?: { tensor_name?: string; quant_parameter_tensor_names?: StringStringEntryProto[] }[];
  metadata_props?: StringStringEntryProto[];
}

/**
 * `FunctionProto`: a model-local function.
 * @category ONNX
 */
export interface FunctionProto {
  name?: string;
  input?: string[];
  output?: string[];
  attribute?: string[];
  attribute_proto?: AttributeProto[];
  node?: NodeProto[];
  doc_string?: string;
  opset_import?: OperatorSetIdProto[];
  domain?: string;
  overload?: string;
  value_info?: ValueInfoProto[];
  metadata_props?: StringStringEntryProto[];
}

/**
 * `ModelProto`: the file.
 * @category ONNX
 */
export interface ModelProto {
  ir_version?: Int64;
  opset_import?: OperatorSetIdProto[];
  producer_name?: string;
  producer_version?: string;
  domain?: string;
  model_version?: Int64;
  doc_string?: string;
  graph?: GraphProto;
  metadata_props?: StringStringEntryProto[];
  functions?: FunctionProto[];
}

/** `AttributeProto.AttributeType` values. */
export const AttributeType = {
  UNDEFINED: 0, FLOAT: 1, INT: 2, STRING: 3, TENSOR: 4, GRAPH: 5, FLOATS: 6, INTS: 7,
  STRINGS: 8, TENSORS: 9, GRAPHS: 10, SPARSE_TENSOR: 11, SPARSE_TENSORS: 12, TYPE_PROTO: 13, TYPE_PROTOS: 14,
} as const;

/** `TensorProto.DataType` values. */
export const DataType = {
  UNDEFINED: 0, FLOAT: 1, UINT8: 2, INT8: 3, UINT16: 4, INT16: 5, INT32: 6, INT64: 7, STRING: 8,
  BOOL: 9, FLOAT16: 10, DOUBLE: 11, UINT32: 12, UINT64: 13, COMPLEX64: 14, COMPLEX128: 15,
  BFLOAT16: 16, FLOAT8E4M3FN: 17, FLOAT8E4M3FNUZ: 18, FLOAT8E5M2: 19, FLOAT8E5M2FNUZ: 20,
  UINT4: 21, INT4: 22, FLOAT4E2M1: 23, FLOAT8E8M0: 24, UINT2: 25, INT2: 26,
} as const;

/** Bytes a tensor's data takes (its dims' product × its element type's bits / 8). */
export function tensorDataBytes(t: Pick<TensorProto, 'dims' | 'data_type'>): number {
  return ((t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1) * dataTypeBits(t.data_type ?? 0)) / 8;
}

/** Bits per element of each data type (0 for strings and unknown types). */
export function dataTypeBits(dt: number): number {
  switch (dt) {
    case 1: case 6: case 12: return 32;
    case 7: case 11: case 13: case 14: return 64;
    case 15: return 128;
    case 2: case 3: case 9: case 17: case 18: case 19: case 20: case 24: return 8;
    case 4: case 5: case 10: case 16: return 16;
    case 21: case 22: case 23: return 4;
    case 25: case 26: return 2;
    default: return 0;
  }
}

/** The version of the default (`ai.onnx`) operator set a model imports, or undefined when it imports none. */
export function defaultOpset(model: { opset_import?: OperatorSetIdProto[] }): number | undefined {
  const v = model.opset_import?.find((o) => !o.domain || o.domain === 'ai.onnx')?.version;
  return v === undefined ? undefined : Number(v);
}
