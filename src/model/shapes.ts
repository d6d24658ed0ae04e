/**
 * Symbolic types (dtype + shape with `batch` / `sequence` dims) of a module tree's boundary
 * values, graph inputs/outputs and parameters.
 *
 * Sources, in order: graph input/output types, `value_info`, initializers; for values still
 * untyped (TorchScript exports carry no `value_info`), a *probe*: the values are added as
 * graph outputs and the model is run at two input sizes (batch 1 × sequence 3 and batch 2 ×
 * sequence 5); a dimension following the batch size is `batch`, one following the sequence
 * length is `sequence`, one equal in both runs is fixed.
 * @module
 */
import type { ModelProto, TypeProto, ValueInfoProto } from '../onnx/proto.js';
import { encodeModel } from '../onnx/serde.js';
import type { DType, Dim, ModuleTree, TensorSig } from './types.js';
import { ModuleMap } from './modules.js';

/** Element storage of a probe tensor. */
export type ProbeData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | BigInt64Array
  | Uint8Array | Uint16Array | Uint32Array | BigUint64Array;

/** A tensor fed to or fetched from a probe run. */
export interface ProbeTensor {
  dtype: DType;
  dims: readonly number[];
  data: ProbeData;
}

/**
 * Runs a model once: `model` (encoded bytes or a proto), `feeds` by graph input name,
 * `fetch` = names of graph outputs to return. Swappable (tests, other backends).
 */
export type ProbeRunner = (
  model: Uint8Array | ModelProto,
  feeds: Readonly<Record<string, ProbeTensor>>,
  fetch: readonly string[],
) => Promise<Record<string, ProbeTensor>>;

/** ONNX `TensorProto.DataType` → {@link DType}. */
const DTYPES: Record<number, DType> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 16: 'bfloat16',
};

/** The DType of an ONNX element type, or undefined for types the IR does not model. */
export function dtypeOf(elemType: number | undefined): DType | undefined {
  return elemType === undefined ? undefined : DTYPES[elemType];
}

/** A copy of `model` whose graph also outputs `names` (the input model is not changed). */
export function withExtraOutputs(model: ModelProto, names: readonly string[]): ModelProto {
  const graph = model.graph ?? {};
  const have = new Set((graph.output ?? []).map((o) => o.name));
  const extra: ValueInfoProto[] = names.filter((n) => !have.has(n)).map((name) => ({ name }));
  return { ...model, graph: { ...graph, output: [...(graph.output ?? []), ...extra] } };
}

/** Real graph inputs (not initializers listed as inputs). */
function realInputs(model: ModelProto): ValueInfoProto[] {
  const inits = new Set((model.graph?.initializer ?? []).map((t) => t.name));
  return (model.graph?.input ?? []).filter((i) => i.name && !inits.has(i.name));
}

/**
 * How the exporter named the symbolic input dims → `batch` / `sequence`. The token-id input
 * (`input_ids`, else the first rank-2 integer input) gives dim 0 = batch and dim 1 = sequence;
 * without one, dim 0 of the first input is batch.
 */
export function symbolMap(model: ModelProto): Map<string, string> {
  const inputs = realInputs(model);
  const dims = (i: ValueInfoProto) => i.type?.tensor_type?.shape?.dim ?? [];
  const tok = inputs.find((i) => i.name === 'input_ids')
    ?? inputs.find((i) => [6, 7].includes(i.type?.tensor_type?.elem_type ?? 0) && dims(i).length === 2);
  const map = new Map<string, string>();
  const d = tok ? dims(tok) : inputs[0] ? dims(inputs[0]) : [];
  if (d[0]?.dim_param) map.set(d[0].dim_param, 'batch');
  if (tok && d[1]?.dim_param) map.set(d[1].dim_param, 'sequence');
  return map;
}

/** The symbolic type of an ONNX type, dims renamed through `symbols`; undefined if not a known tensor type. */
export function sigOfType(type: TypeProto | undefined, symbols: ReadonlyMap<string, string>): TensorSig | undefined {
  const tt = type?.tensor_type;
  const dtype = dtypeOf(tt?.elem_type);
  if (!tt || !dtype) return undefined;
  if (!tt.shape) return { dtype, shape: null };
  const shape: Dim[] = [];
  for (const d of tt.shape.dim ?? []) {
    if (d.dim_value !== undefined) shape.push(Number(d.dim_value));
    else if (d.dim_param) shape.push(symbols.get(d.dim_param) ?? d.dim_param);
    else return { dtype, shape: null };
  }
  return { dtype, shape };
}

function complete(sig: TensorSig | undefined): boolean {
  return sig !== undefined && sig.shape !== null;
}

/**
 * True when a declared type is something the probe can never type: a sequence, map,
 * optional or sparse tensor, or a tensor of an element type the IR does not model (string, ...).
 * An undeclared type (`undefined`) may still be a plain tensor.
 */
function untypable(type: TypeProto | undefined): boolean {
  if (!type) return false;
  return !type.tensor_type || dtypeOf(type.tensor_type.elem_type) === undefined;
}

/**
 * True when the probe can feed every real graph input: each is a tensor of a modelled
 * element type with a known rank. Models with sequence, optional or string inputs are valid
 * ONNX but cannot be probed; their untyped values stay untyped.
 */
export function probeable(model: ModelProto): boolean {
  const symbols = symbolMap(model);
  return realInputs(model).every((i) => {
    const sig = sigOfType(i.type, symbols);
    return sig !== undefined && sig.shape !== null && sig.dtype !== 'bfloat16';
  });
}

/** Feeds for a probe run: token ids 0, attention mask 1, position ids 0..seq-1, other inputs 0. */
export function probeFeeds(model: ModelProto, batch: number, seq: number): Record<string, ProbeTensor> {
  const symbols = symbolMap(model);
  const feeds: Record<string, ProbeTensor> = {};
  for (const input of realInputs(model)) {
    const sig = sigOfType(input.type, symbols);
    if (!sig || !sig.shape) throw new Error(`probe: graph input '${input.name}' has no tensor shape`);
    const dims = sig.shape.map((d) => (d === 'batch' ? batch : d === 'sequence' ? seq : typeof d === 'number' ? d : 1));
    const size = dims.reduce((a, b) => a * b, 1);
    const name = input.name!;
    const fill = (i: number): number => {
      if (/mask/i.test(name)) return 1;
      if (/position/i.test(name)) return i % dims[dims.length - 1];
      return 0;
    };
    feeds[name] = { dtype: sig.dtype, dims, data: makeData(sig.dtype, size, fill) };
  }
  return feeds;
}

function makeData(dtype: DType, size: number, fill: (i: number) => number): ProbeData {
  const num = Array.from({ length: size }, (_, i) => fill(i));
  switch (dtype) {
    case 'int64': return BigInt64Array.from(num.map(BigInt));
    case 'uint64': return BigUint64Array.from(num.map(BigInt));
    case 'int32': return Int32Array.from(num);
    case 'int16': return Int16Array.from(num);
    case 'int8': return Int8Array.from(num);
    case 'uint32': return Uint32Array.from(num);
    case 'uint16': case 'float16': case 'bfloat16': return Uint16Array.from(num.map((v) => (v ? 0x3c00 : 0)));
    case 'uint8': case 'bool': return Uint8Array.from(num);
    case 'float64': return Float64Array.from(num);
    default: return Float32Array.from(num);
  }
}

/** Probe sizes: run A and run B. */
const RUNS = [{ batch: 1, seq: 3 }, { batch: 2, seq: 5 }] as const;

/** Names one dimension from its sizes in the two probe runs. */
function dimFrom(a: number, b: number): Dim {
  const [r0, r1] = RUNS;
  if (a === b) return a;
  if (a === r0.seq && b === r1.seq) return 'sequence';
  if (a === r0.batch && b === r1.batch) return 'batch';
  if (a === r0.batch * r0.seq && b === r1.batch * r1.seq) return 'batch*sequence';
  const k = a - r0.seq;
  if (b - r1.seq === k) return k > 0 ? `sequence+${k}` : `sequence-${-k}`;
  return '?';
}

/**
 * Runs the probe on `names` and returns their symbolic types.
 * @returns a sig for every name the runs returned
 */
export async function probeTypes(model: ModelProto, names: readonly string[], probe: ProbeRunner): Promise<Map<string, TensorSig>> {
  const out = new Map<string, TensorSig>();
  if (names.length === 0 || !probeable(model)) return out;
  const bytes = encodeModel(withExtraOutputs(model, names));
  const ra = await probe(bytes, probeFeeds(model, RUNS[0].batch, RUNS[0].seq), names);
  const rb = await probe(bytes, probeFeeds(model, RUNS[1].batch, RUNS[1].seq), names);
  for (const n of names) {
    const a = ra[n];
    const b = rb[n];
    if (!a || !b) continue;
    const shape = a.dims.length === b.dims.length ? a.dims.map((d, i) => dimFrom(d, b.dims[i])) : null;
    out.set(n, { dtype: a.dtype, shape });
  }
  return out;
}

/**
 * Fills `sig` on every boundary value of `tree`, its graph inputs/outputs and its params.
 * @param probe how to run the model for values without static type info (the engine passes
 *   backends/probe.ts `createOrtProbe(modelDir)`, which runs it on onnxruntime-node)
 */
export async function inferBoundaryTypes(model: ModelProto, tree: ModuleTree, probe: ProbeRunner): Promise<void> {
  const graph = model.graph ?? {};
  const symbols = symbolMap(model);
  const known = new Map<string, TensorSig>();
  // Values declared as something other than a modelled tensor (sequences, optionals,
  // strings): never probed (onnxruntime-node cannot even fetch sequences), never typed.
  const never = new Set<string>();
  for (const vi of [...(graph.value_info ?? []), ...(graph.input ?? []), ...(graph.output ?? [])]) {
    if (vi.name && untypable(vi.type)) never.add(vi.name);
    const sig = vi.name ? sigOfType(vi.type, symbols) : undefined;
    if (sig && (complete(sig) || !known.has(vi.name!))) known.set(vi.name!, sig);
  }
  const inits = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t]));
  for (const [name, t] of inits) {
    const dtype = dtypeOf(t.data_type);
    if (dtype) known.set(name, { dtype, shape: (t.dims ?? []).map(Number) });
  }

  const boundary = [...tree.graphInputs, ...tree.graphOutputs];
  for (const m of tree.modules.values()) boundary.push(...m.inputs, ...m.outputs);
  // Operation pseudo-modules (`MODULE.op("TYPE", N)`) can name any node output: type them all.
  const opSigs = tree.modules instanceof ModuleMap ? tree.modules.sigs : undefined;
  const extra = opSigs ? (tree.modules as ModuleMap).nodeOutputs() : [];
  const untyped = (names: readonly string[]): string[] => [...new Set(names.filter((n) => !complete(known.get(n)) && !never.has(n)))];
  const boundaryMissing = untyped(boundary.map((v) => v.name));
  const allMissing = untyped([...boundaryMissing, ...extra]);
  // Operation values are typed best-effort: one probe for everything; when a node output
  // onnxruntime cannot fetch (an undeclared sequence) or run at probe sizes makes it fail, the
  // probe runs again for the module boundaries alone (whose failure is the model's error) and
  // the operation values stay untyped.
  let probed: Map<string, TensorSig>;
  try {
    probed = await probeTypes(model, allMissing, probe);
  } catch (e) {
    if (allMissing.length === boundaryMissing.length) throw e;
    probed = await probeTypes(model, boundaryMissing, probe);
  }
  for (const [n, sig] of probed) known.set(n, sig);
  if (opSigs) for (const [n, sig] of known) opSigs.set(n, sig);
  for (const v of boundary) {
    const sig = known.get(v.name);
    if (sig) v.sig = sig;
  }

  const paramSeen = new Set<object>();
  const params = [...tree.params.values()];
  for (const m of tree.modules.values()) params.push(...m.params);
  for (const p of params) {
    if (paramSeen.has(p)) continue;
    paramSeen.add(p);
    const sig = known.get(p.initializer);
    if (!sig) continue;
    p.sig = p.perm && sig.shape ? { dtype: sig.dtype, shape: p.perm.map((i) => sig.shape![i]) } : sig;
  }
}
