/**
 * State-dict names of a model's weights, recovered from its initializers.
 *
 * 1. An initializer with a dotted state-dict name (`transformer.h.0.mlp.c_fc.weight`) is that
 *    parameter (or buffer) of the module its name leads to. A name without dots is a
 *    parameter of the root only when a root-level node uses it (dynamo's folded constants
 *    `val_8`, `clone` are used inside modules and are not parameters).
 * 2. A module whose own nodes use a weight it has no state-dict entry for — an exporter-named
 *    copy (`onnx::MatMul_1005`, any name that is not a plain dotted identifier) or another
 *    module's parameter (tied embeddings) — gets
 *    `<module>.weight` / `<module>.bias` from the slot the tensor fills (MatMul B, Gemm B/C,
 *    Gather data, Conv W/B, normalization scale/bias). A `MatMul` B used without a `Transpose`
 *    (or a `Gemm` B with `transB = 0`) is stored `[in, out]` while PyTorch's `Linear.weight`
 *    is `[out, in]`: `perm = [1, 0]`.
 * @module
 */
import type { NodeProto, TensorProto } from '../onnx/proto.js';
import type { ParamInfo } from './types.js';
import type { GraphIndex } from './graph-index.js';

const STATE_DICT_NAME = /^[A-Za-z_][\w]*(\.[\w]+)*$/;
const FLOAT_TYPES = new Set([1, 10, 11, 16]);

/** Parameters found, and which module directly owns each. */
export interface ParamScan {
  /** Parameter by state-dict name, in discovery order. */
  params: Map<string, ParamInfo>;
  /** State-dict name → owning module path. */
  owner: Map<string, string>;
}

function intAttr(node: NodeProto, name: string, dflt: number): number {
  const a = (node.attribute ?? []).find((x) => x.name === name);
  return a?.i === undefined ? dflt : Number(a.i);
}

function ownerOf(name: string): string {
  const k = name.lastIndexOf('.');
  return k < 0 ? '' : name.slice(0, k);
}

/**
 * Finds the parameters of a model.
 * @param ownModule the path of the innermost module of each node (index-aligned with `ix.nodes`)
 */
export function scanParams(ix: GraphIndex, ownModule: readonly string[]): ParamScan {
  const params = new Map<string, ParamInfo>();
  const owner = new Map<string, string>();
  const usedByRoot = new Set<string>();
  ix.nodes.forEach((n, i) => { if (ownModule[i] === '') for (const v of ix.uses[i]) usedByRoot.add(v); });
  const isFloat = (t: TensorProto | undefined) => t !== undefined && FLOAT_TYPES.has(t.data_type ?? 0);

  // 1. Initializers carrying state-dict names.
  for (const [name, t] of ix.inits) {
    if (!STATE_DICT_NAME.test(name)) continue;
    const own = ownerOf(name);
    if (own === '' && !(usedByRoot.has(name) && isFloat(t))) continue;
    params.set(name, { name, initializer: name });
    owner.set(name, own);
  }

  // 2. Weights used by a module under another name.
  const claimed = new Map<string, Map<'weight' | 'bias', { init: string; perm?: number[] }[]>>();
  const claim = (mod: string, slot: 'weight' | 'bias', init: string, perm?: number[]) => {
    let m = claimed.get(mod);
    if (!m) claimed.set(mod, (m = new Map()));
    const list = m.get(slot) ?? [];
    if (!list.some((c) => c.init === init)) list.push(perm ? { init, perm } : { init });
    m.set(slot, list);
  };
  /** The initializer behind a value: itself, or through one Transpose / Cast. */
  const source = (v: string): { init: string; transposed: boolean } | null => {
    if (ix.inits.has(v)) return { init: v, transposed: false };
    const p = ix.producer.get(v);
    if (p === undefined) return null;
    const n = ix.nodes[p];
    const inp = n.input?.[0];
    if (!inp || !ix.inits.has(inp)) return null;
    if (n.op_type === 'Transpose') return { init: inp, transposed: true };
    if (n.op_type === 'Cast') return { init: inp, transposed: false };
    return null;
  };
  ix.nodes.forEach((n, i) => {
    const mod = ownModule[i];
    if (mod === '') return;
    const ins = n.input ?? [];
    const slot = (k: number, s: 'weight' | 'bias', permIfDirect?: boolean) => {
      const src = ins[k] ? source(ins[k]) : null;
      if (!src || !isFloat(ix.inits.get(src.init))) return;
      // Another module's parameter (tied) or an exporter-named copy (`onnx::MatMul_1005`);
      // never a folded constant with a plain name (dynamo's `val_12`).
      if (!params.has(src.init) && STATE_DICT_NAME.test(src.init)) return;
      const rank = ix.inits.get(src.init)?.dims?.length ?? 0;
      if (s === 'weight' && rank < 1) return;
      claim(mod, s, src.init, permIfDirect && !src.transposed && rank === 2 ? [1, 0] : undefined);
    };
    switch (n.op_type) {
      case 'MatMul': slot(1, 'weight', true); break;
      case 'Gemm': slot(1, 'weight', intAttr(n, 'transB', 0) === 0); slot(2, 'bias'); break;
      case 'Gather': slot(0, 'weight'); break;
      case 'Conv': case 'ConvTranspose': slot(1, 'weight'); slot(2, 'bias'); break;
      case 'LayerNormalization': case 'BatchNormalization': case 'InstanceNormalization':
      case 'SimplifiedLayerNormalization': slot(1, 'weight'); slot(2, 'bias'); break;
      case 'Add': {
        const k = ins.findIndex((v) => ix.inits.has(v) && (ix.inits.get(v)?.dims?.length ?? 0) === 1);
        if (k >= 0) slot(k, 'bias');
        break;
      }
    }
  });
  for (const [mod, slots] of claimed) {
    const hasWeight = params.has(`${mod}.weight`) || [...params.values()].some((p) => owner.get(p.name) === mod);
    if (hasWeight) continue;
    const w = slots.get('weight') ?? [];
    if (w.length !== 1) continue;
    const name = `${mod}.weight`;
    params.set(name, { name, initializer: w[0].init, ...(w[0].perm ? { perm: w[0].perm } : {}) });
    owner.set(name, mod);
    const b = slots.get('bias') ?? [];
    if (b.length === 1) {
      params.set(`${mod}.bias`, { name: `${mod}.bias`, initializer: b[0].init });
      owner.set(`${mod}.bias`, mod);
    }
  }
  return { params, owner };
}
