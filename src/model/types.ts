/**
 * What the compiler knows about a model: its module tree, the symbolic type of every
 * module boundary value, its parameters and its graph inputs and outputs. Produced from
 * the ONNX graph by `buildModuleTree` (src/model/modules.ts); consumed by the resolver,
 * the type checker, the splice passes and `nns modules`.
 * @module
 */

import type { DType } from '../tensor.js';

export type { DType } from '../tensor.js';

/**
 * One dimension of a shape: a fixed size, or a symbol. The model's symbolic input
 * dimensions are normalized to `batch` and `sequence`; other symbols keep their names.
 * @category Model
 */
export type Dim = number | string;

/**
 * dtype plus symbolic shape. `shape` is `null` when the rank is unknown.
 * @category Model
 */
export interface TensorSig {
  dtype: DType;
  shape: Dim[] | null;
}

/**
 * An ONNX value at a module boundary (or a graph input/output).
 * @category Model
 */
export interface BoundaryValue {
  /** Name of the value in the ONNX graph. */
  name: string;
  /** Its type, when known. */
  sig?: TensorSig;
}

/**
 * A parameter (weight) of a module.
 * @category Model
 */
export interface ParamInfo {
  /** State-dict name, e.g. `transformer.h.0.mlp.c_fc.weight`. */
  name: string;
  /** Name of the ONNX initializer that holds it. */
  initializer: string;
  /** When the exporter stored the weight transposed (e.g. tied `lm_head.weight`), the permutation to apply. */
  perm?: number[];
  sig?: TensorSig;
}

/**
 * One module, as in PyTorch's `named_modules()`.
 * @category Model
 */
export interface ModuleInfo {
  /** Dotted path, `transformer.h.0.mlp`; `''` for the root model. */
  path: string;
  /** PyTorch class name when the export recorded it (`GPT2MLP`). */
  className?: string;
  /** Values produced inside and consumed outside (or graph outputs), first output first. */
  outputs: BoundaryValue[];
  /** Values consumed inside, produced outside, not weights or constants; ordered by first use. */
  inputs: BoundaryValue[];
  /** Direct and nested parameters by state-dict name. */
  params: ParamInfo[];
  /** Indices into `graph.node` of every ONNX node in this module's subtree, in graph order. */
  nodes: number[];
  /** Paths of direct children. */
  children: string[];
  /** Path of the parent (`undefined` for the root). */
  parent?: string;
  /** How many times the module was called in the export (2+ for reused modules; `outputs` are of the first call). */
  calls: number;
}

/**
 * The module tree of one model.
 * @category Model
 */
export interface ModuleTree {
  /**
   * Every module by path, including the root `''`. Iteration order is graph order.
   * `get`/`has` also answer *operation paths* `PATH.op("TYPE",N)` (the N-th ONNX node of op
   * type TYPE in the module's subtree, graph order; see `opPath` in src/model/modules.ts):
   * a one-node pseudo-module whose outputs and inputs are the node's. Iteration never lists them.
   */
  modules: ReadonlyMap<string, ModuleInfo>;
  /** The operations of a module's subtree, in graph order (`nns modules --ops`); empty for unknown paths. */
  ops?(path: string): OpInfo[];
  /** Graph inputs, with normalized symbolic dims. */
  graphInputs: BoundaryValue[];
  /** Graph outputs (`logits`, ...). */
  graphOutputs: BoundaryValue[];
  /** All parameters by state-dict name. */
  params: ReadonlyMap<string, ParamInfo>;
}

/** One ONNX node of a module's subtree, as `MODULE.op("TYPE", N)` names it. */
export interface OpInfo {
  /** ONNX op type (`Softmax`). */
  opType: string;
  /** Index among the subtree's nodes of that type, graph order. */
  n: number;
  /** Path of the pseudo-module (`transformer.h.1.attn.op("Softmax",0)`). */
  path: string;
  /** Its outputs with types. */
  outputs: BoundaryValue[];
}
