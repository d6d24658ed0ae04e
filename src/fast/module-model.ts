/**
 * Module models: a module of the loaded model as a standalone ONNX model, so that the fast
 * path can apply it (`lm_head(ln_f(h))`) on host values after the main run, without splicing
 * a new graph into the whole model.
 *
 * A module model holds the module's nodes (graph order, from the loaded proto), one graph
 * input per module input (name kept, dtype from its sig, **no shape**: any rank is accepted,
 * so `ln_f` runs on `[1, 128]` or on a stack `[12, 1, 128]`), one graph output per module
 * output, the initializers its nodes read (the same `TensorProto` objects: external-data
 * references stay references to the model's one weights file, no weight bytes are copied),
 * and the model's opset imports, IR version and local functions. It is written once next to
 * the weights with `writeVariant` (key: model id, module path, {@link MODULE_MODEL_FORMAT}).
 *
 * Only *closed* modules qualify: every value the module's nodes read is one of its inputs, an
 * initializer, produced inside the module, or the output of an input-less `Constant` node
 * (such nodes outside the module are copied in). A module reading anything else (a mask or
 * a shape computed outside: the attention blocks) is not eligible; the compiled path handles
 * calls of it, sharing those values with the model's own graph.
 * @module
 */
import crypto from 'node:crypto';
import type { OrtSession, OrtSessionOptions } from '../../backends/ort.js';
import type { ModelContext } from '../compile.js';
import { writeVariant } from '../model/load.js';
import type { BoundaryValue, DType } from '../model/types.js';
import { AttributeType, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from '../onnx/proto.js';

/** Bump when the module models' layout changes (invalidates written files). */
export const MODULE_MODEL_FORMAT = 1;

const ELEM: Record<DType, number> = {
  float32: 1, uint8: 2, int8: 3, uint16: 4, int16: 5, int32: 6, int64: 7, bool: 9,
  float16: 10, float64: 11, uint32: 12, uint64: 13, bfloat16: 16,
};

/** A module's nodes and the initializers they read, or why the module is not closed. */
export type ModuleClosure = { nodes: NodeProto[]; initializers: TensorProto[] } | { reject: string };

/** One written module model. */
export interface ModuleModel {
  /** Module path. */
  path: string;
  /** Graph file, next to the weights. */
  graphPath: string;
  /** Graph inputs, in the module's input order (= `call_module` argument order). */
  inputs: BoundaryValue[];
  /** Graph outputs, in the module's output order (= `call_module` result order). */
  outputs: BoundaryValue[];
}

/** The nodes and initializers of module `path`, when it is closed (see the module comment). */
export function moduleClosure(mc: ModelContext, path: string): ModuleClosure {
  const m = mc.tree.modules.get(path);
  if (!m) return { reject: `no module ${path}` };
  if (path === '') return { reject: 'the root module is the model itself' };
  const g = mc.loaded.proto.graph!;
  const all = g.node ?? [];
  if (!m.nodes.length) return { reject: `${path} has no nodes` };
  for (const b of [...m.inputs, ...m.outputs]) if (!b.sig) return { reject: `${path}: the type of ${b.name} is unknown` };
  const inits = new Map((g.initializer ?? []).map((t) => [t.name!, t]));
  const producer = new Map<string, number>();
  all.forEach((n, i) => { for (const o of n.output ?? []) if (o) producer.set(o, i); });
  const take = new Set(m.nodes);
  const inputs = new Set(m.inputs.map((b) => b.name));
  const produced = new Set(m.nodes.flatMap((i) => all[i]!.output ?? []));
  const used = new Map<string, TensorProto>();
  for (const i of m.nodes) {
    const n = all[i]!;
    if ((n.attribute ?? []).some((a) => a.type === AttributeType.GRAPH || a.type === AttributeType.GRAPHS || a.g || a.graphs?.length)) {
      return { reject: `${path} has a node with a subgraph (${n.op_type})` };
    }
    for (const x of n.input ?? []) {
      if (!x || produced.has(x) || inputs.has(x)) continue;
      const t = inits.get(x);
      if (t) { used.set(x, t); continue; }
      const p = producer.get(x);
      const pn = p === undefined ? undefined : all[p]!;
      if (pn && pn.op_type === 'Constant' && !(pn.domain ?? '') && !(pn.input ?? []).some(Boolean)) { take.add(p!); continue; }
      return { reject: `${path} reads ${x} from outside the module` };
    }
  }
  return { nodes: [...take].sort((a, b) => a - b).map((i) => all[i]!), initializers: [...used.values()] };
}

function valueInfo(b: BoundaryValue): ValueInfoProto {
  return { name: b.name, type: { tensor_type: { elem_type: ELEM[b.sig!.dtype] } } };
}

/** The standalone model of a closed module (throws for one that is not: check {@link moduleClosure} first). */
export function moduleModelProto(mc: ModelContext, path: string): ModelProto {
  const c = moduleClosure(mc, path);
  if ('reject' in c) throw new Error(`internal: ${c.reject}`);
  const m = mc.tree.modules.get(path)!;
  const src = mc.loaded.proto;
  return {
    ir_version: src.ir_version,
    opset_import: src.opset_import,
    producer_name: 'onnsight.module',
    ...(src.functions?.length ? { functions: src.functions } : {}),
    graph: {
      name: `module ${path}`,
      node: c.nodes,
      initializer: c.initializers,
      input: m.inputs.map(valueInfo),
      output: m.outputs.map(valueInfo),
    },
  };
}

/**
 * The module models of one model: closedness memoized per path, models written on first
 * use, sessions from the backend's cache (prepacked and pinned: see {@link ModuleModels.session}).
 */
export class ModuleModels {
  private readonly closed = new Map<string, string | null>();
  private readonly models = new Map<string, ModuleModel>();

  constructor(private readonly mc: ModelContext) {}

  /** Why calls of `path` cannot run as a module model, or null when they can. */
  reason(path: string): string | null {
    let r = this.closed.get(path);
    if (r === undefined) {
      const c = moduleClosure(this.mc, path);
      r = 'reject' in c ? c.reject : null;
      this.closed.set(path, r);
    }
    return r;
  }

  /** The written module model of a closed module. */
  model(path: string): ModuleModel {
    let mm = this.models.get(path);
    if (!mm) {
      const m = this.mc.tree.modules.get(path)!;
      const key = crypto.createHash('sha256').update(`${this.mc.loaded.id}|${path}|${MODULE_MODEL_FORMAT}`).digest('hex').slice(0, 24);
      const graphPath = writeVariant(this.mc.loaded, moduleModelProto(this.mc, path), `module-${key}`);
      mm = { path, graphPath, inputs: m.inputs, outputs: m.outputs };
      this.models.set(path, mm);
    }
    return mm;
  }

  /**
   * A session over the module model, prepacked and pinned like the instrumented model's:
   * module calls recur in every trace that applies the module (a logit lens), and the
   * unembedding dominates their cost. Measured on GPT-2 small (lm_head 768×50257, 12 rows
   * stacked, 2 cores): without prepacking, creation ~1 ms and a run 19 ms alone, 35–55 ms
   * right after the main run; prepacked, creation ~150 ms once per model and a run 8 ms
   * alone, ~15 ms after the main run; resident memory about the same either way (ORT holds
   * the weights in the session in both cases).
   *
   * Without spinning intra-op threads: a module run is a handful of operators right after the
   * instrumented model's run, and the next trace's run of that model starts right after it;
   * with spinning, the module session's threads kept a core busy for tens of milliseconds
   * into that run (GPT-2 small, logit lens at 12 layers, traces back to back, idle: the
   * instrumented run 196 ms vs 158 ms, the whole trace 230–235 vs 193 ms; the lm_head run
   * itself 12–15 ms either way).
   */
  session(path: string): Promise<OrtSession> {
    return this.mc.backend.session(this.model(path).graphPath, this.sessionOptions(path));
  }

  /** Whether a session over the module model of `path` is open (prepacked, or an unprepacked stand-in for it). Opens nothing. */
  isOpen(path: string): boolean {
    const mm = this.models.get(path);
    if (!mm) return false;
    const o = this.sessionOptions(path);
    return this.mc.backend.isOpen(mm.graphPath, o) || this.mc.backend.isOpen(mm.graphPath, { ...o, prepack: false });
  }

  private sessionOptions(path: string): OrtSessionOptions {
    const externalDataDir = this.mc.loaded.externalDataDir;
    // Its own weights group: a module's weights are a subset the instrumented model (without its tail) may not hold.
    return { prepack: true, pinned: true, spinning: false, group: `module:${path}`, ...(externalDataDir ? { externalDataDir } : {}) };
  }
}
