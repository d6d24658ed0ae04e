/**
 * The fast path's models as an inference server serves them: the instrumented model
 * (`NAME.ports`), one standalone model per closed module (`NAME.module.PATH`) and,
 * optionally, the unmodified model (`NAME`). `nns export-serving` writes them as a Triton
 * model repository (src/fast/triton.ts), `nns serve` serves them over the Open Inference
 * Protocol (src/serve/oip.ts), and the OIP runner (src/fast/oip-runner.ts) sends the fast
 * path's feeds and fetches to them; all three name and describe them here, so they agree.
 * @module
 */
import path from 'node:path';
import type { ModelContext } from '../compile.js';
import { NnsError } from '../errors.js';
import { locate } from '../model/load.js';
import { dtypeOf } from '../model/shapes.js';
import type { DType } from '../tensor.js';
import type { ModelProto, ValueInfoProto } from '../onnx/proto.js';
import type { FastExecutor } from './execute.js';
import { moduleModelProto } from './module-model.js';

/**
 * What a served model is: the instrumented model, a module model, or the unmodified model.
 * @category Serving
 */
export type ServedKind = 'ports' | 'module' | 'plain';

/** A served tensor: name, element type, dims (`-1` = any size). */
export interface ServedTensor {
  name: string;
  dtype: DType;
  dims: number[];
}

/** One served model. */
export interface ServedModel {
  /** Its name on the server (and its folder in a Triton repository). */
  name: string;
  kind: ServedKind;
  /** The module's path (kind `module`). */
  module?: string;
  /**
   * Kind `ports`: the tail module the instrumented model leaves out (src/fast/tail.ts) and the
   * output of this model to feed it (`lm_head` computes `logits` from it).
   */
  tail?: { module: string; from: string };
  /** Inputs the caller feeds (initializers listed as graph inputs are left out). */
  inputs: ServedTensor[];
  outputs: ServedTensor[];
  /** The graph as written for serving (weights external, locations as in the loaded model). */
  proto: ModelProto;
}

/**
 * Which module models to serve: all closed modules, none, or these paths.
 * @category Serving
 */
export type ServedModules = 'all' | 'none' | readonly string[];

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** Checks a serving name (`--name`, `--oip-model`): letters, digits, `_`, `.`, `-`. */
export function checkServingName(name: string): string {
  if (!NAME.test(name) || name.length > 100) {
    throw new NnsError('bad-flag', `'${name}' cannot name a served model: use letters, digits, '_', '.' and '-' (at most 100, starting with a letter or digit)`, { kind: 'usage' });
  }
  return name;
}

/**
 * The default serving name of a model source: its folder's name (`gpt2-facts`), followed by
 * the graph file's name when that is not `model.onnx` (`gpt2-facts-model.dynamo`).
 */
export function defaultServingName(source: string): string {
  const { graphFile, metaDir } = locate(source);
  const stem = path.basename(graphFile).replace(/\.onnx$/i, '');
  const raw = stem === 'model' ? path.basename(metaDir) : `${path.basename(metaDir)}-${stem}`;
  const clean = raw.replace(/[^A-Za-z0-9_.-]/g, '_').replace(/^[^A-Za-z0-9]+/, '');
  return (clean || 'model').slice(0, 100);
}

/** The instrumented model's served name. */
export function portsModelName(base: string): string {
  return `${base}.ports`;
}

/**
 * Served names of every module's standalone model, by module path: `BASE.module.PATH`,
 * characters other than letters, digits, `_`, `.`, `-` as `_` (a clash gets `-2`, `-3`, ...
 * in the tree's order). Depends on the module tree only.
 */
export function moduleModelNames(mc: ModelContext, base: string): ReadonlyMap<string, string> {
  const out = new Map<string, string>();
  const taken = new Set<string>();
  for (const p of mc.tree.modules.keys()) {
    if (p === '') continue;
    const stem = `${base}.module.${p.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
    let name = stem;
    for (let i = 2; taken.has(name); i++) name = `${stem}-${i}`;
    taken.add(name);
    out.set(p, name);
  }
  return out;
}

function tensorsOf(list: readonly ValueInfoProto[] | undefined, skip: ReadonlySet<string>, anyDims: boolean): ServedTensor[] {
  const out: ServedTensor[] = [];
  for (const v of list ?? []) {
    if (skip.has(v.name!)) continue;
    const tt = v.type?.tensor_type;
    const dtype = dtypeOf(tt?.elem_type);
    if (!dtype) throw new NnsError('invalid-model', `graph value '${v.name}' is not a tensor of a supported element type; it cannot be served`, { kind: 'model' });
    const dims = (tt?.shape?.dim ?? []).map((d) => (!anyDims && d.dim_value !== undefined && d.dim_param === undefined ? Number(d.dim_value) : -1));
    out.push({ name: v.name!, dtype, dims });
  }
  return out;
}

/** A module model with its inputs and outputs given the module's rank (dims symbolic): what a server checks requests against. */
function rankedModuleProto(mc: ModelContext, modulePath: string): ModelProto {
  const proto = moduleModelProto(mc, modulePath);
  const m = mc.tree.modules.get(modulePath)!;
  const ranked = (vs: ValueInfoProto[], bs: typeof m.inputs, io: string): ValueInfoProto[] => vs.map((v, i) => ({
    ...v,
    type: { tensor_type: { ...v.type!.tensor_type!, shape: { dim: (bs[i]!.sig!.shape ?? []).map((_, d) => ({ dim_param: `${io}${i}_d${d}` })) } } },
  }));
  const g = proto.graph!;
  return { ...proto, graph: { ...g, input: ranked(g.input ?? [], m.inputs, 'in'), output: ranked(g.output ?? [], m.outputs, 'out') } };
}

/**
 * The models served for one loaded model, instrumented model first. `modules`: which module
 * models (default all closed modules; a named module that is not closed is an error); the
 * model's tail module is always among them, since the instrumented model leaves it out.
 */
export function servedModels(exec: FastExecutor, mc: ModelContext, base: string, opts: { modules?: ServedModules; plain?: boolean } = {}): ServedModel[] {
  checkServingName(base);
  const out: ServedModel[] = [];
  const ported = exec.ported.proto;
  const inits = (p: ModelProto): Set<string> => new Set((p.graph?.initializer ?? []).map((t) => t.name!));
  const t = exec.ported.tail;
  out.push({
    name: portsModelName(base), kind: 'ports', inputs: tensorsOf(ported.graph?.input, inits(ported), false), outputs: tensorsOf(ported.graph?.output, new Set(), false), proto: ported,
    ...(t ? { tail: { module: t.path, from: t.fetch } } : {}),
  });
  const names = moduleModelNames(mc, base);
  const want = opts.modules ?? 'all';
  const chosen = want === 'all' ? [...names.keys()].filter((p) => exec.modules.reason(p) === null) : want === 'none' ? [] : [...want];
  // The tail (lm_head) is not in the instrumented model: its module model always goes along (src/fast/tail.ts).
  const tail = exec.ported.tail?.path;
  const paths = tail !== undefined && !chosen.includes(tail) ? [...chosen, tail] : chosen;
  for (const p of paths) {
    if (!mc.tree.modules.has(p) || p === '') throw new NnsError('unknown-module', `no module '${p}' in this model (nns modules lists them)`, { kind: 'usage' });
    const why = exec.modules.reason(p);
    if (why !== null) throw new NnsError('unknown-module', `module '${p}' cannot be served on its own: ${why}`, { kind: 'usage' });
    const proto = rankedModuleProto(mc, p);
    out.push({ name: names.get(p)!, kind: 'module', module: p, inputs: tensorsOf(proto.graph!.input, new Set(), true), outputs: tensorsOf(proto.graph!.output, new Set(), true), proto });
  }
  if (opts.plain) {
    const plain = mc.loaded.proto;
    out.push({ name: base, kind: 'plain', inputs: tensorsOf(plain.graph?.input, inits(plain), false), outputs: tensorsOf(plain.graph?.output, new Set(), false), proto: plain });
  }
  return out;
}
