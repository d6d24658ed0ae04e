/**
 * Types every value the rewrite inserted (`value_info`: element type and shape), so Netron
 * shows shapes on the new edges as it does on the model's own. Seeds are what is known for
 * the trace's batch — the model's inputs, module boundaries, the IR's types of lowered
 * values, initializers — and shape inference (src/onnx/shapes.ts) carries them through the
 * whole rewritten graph, the model's own nodes included (a gradient sweep reads internal
 * values a TorchScript export has no shapes for). Runs for `nns compile` only
 * (`state.specialize`). Dims are in the model's own symbols (`batch_size`,
 * `sequence_length`), sizes the model does not derive from its inputs are numbers.
 * @module
 */
import type { Pass } from './pass.js';
import type { Dim } from '../src/model/types.js';
import { defaultOpset, type ValueInfoProto } from '../src/onnx/proto.js';
import { inferShapes, infoOfType, typeOfInfo, type SymDim, type TypeShape } from '../src/onnx/shapes.js';
import { symbolMap } from '../src/model/shapes.js';
import { nodeProvenance, onnxElemType } from './onnx-emit.js';
import type { DType } from '../src/model/types.js';

/** The type-inserted pass. */
export const typeInsertedPass: Pass = {
  name: 'type-inserted',
  prints: (state) => {
    const g = state.model.graph!;
    const info = new Map((g.value_info ?? []).map((v) => [v.name!, v]));
    const lines: string[] = [];
    for (const n of g.node ?? []) {
      if (!nodeProvenance.has(n)) continue;
      for (const o of n.output ?? []) {
        const t = info.get(o)?.type?.tensor_type ?? (g.output ?? []).find((v) => v.name === o)?.type?.tensor_type;
        const dims = t?.shape ? `[${(t.shape.dim ?? []).map((d) => d.dim_value ?? d.dim_param ?? '?').join(', ')}]` : '(shape unknown)';
        lines.push(`${o}: ${t ? `elem ${t.elem_type} ${dims}` : 'untyped'}`);
      }
    }
    return lines.join('\n');
  },
  run(state, ctx) {
    if (!state.specialize) return { changed: false };
    const g = state.model.graph!;
    // Dims are written in the model's own symbols (`batch_size`, `sequence_length`), as its
    // inputs are: the sizes are the trace's (onnsight.rows, onnsight.positions), and static
    // sizes on values the model computes from its inputs let onnxruntime's graph optimizer
    // rewrite shape arithmetic it then fails to load (a Reshape fusion citing a folded Shape).
    const symbols = symbolMap(state.model);
    const toModel = new Map([...symbols].map(([k, v]) => [v, k]));
    // The trace's sizes of those symbols decide comparisons and clamps (the model is compiled for them).
    const bind: Record<string, number> = {};
    for (const [k, v] of symbols) { const size = v === 'batch' ? state.ir.batch : state.ir.dimValues[v]; if (size !== undefined) bind[k] = size; }
    const symDim = (d: Dim): SymDim => (typeof d === 'number' ? d : toModel.get(d) ?? d);
    // Fallbacks for values inference cannot type (an operator it does not know): the IR's
    // types of lowered values, module boundaries, the model's inputs and outputs.
    const fallback = new Map<string, TypeShape>();
    const fromSig = (name: string, dtype: DType | undefined, shape: readonly Dim[] | null | undefined): void => {
      if (dtype && !fallback.has(name)) fallback.set(name, { elem: onnxElemType(dtype), shape: shape ? shape.map(symDim) : null });
    };
    for (const [v, name] of state.valueNames ?? []) fromSig(name, v.type?.dtype, v.type?.shape);
    for (const m of ctx.tree.modules.values()) for (const b of [...m.inputs, ...m.outputs]) fromSig(b.name, b.sig?.dtype, b.sig?.shape);
    for (const b of [...ctx.tree.graphInputs, ...ctx.tree.graphOutputs]) fromSig(b.name, b.sig?.dtype, b.sig?.shape);
    // Shapes through the whole graph, the model's own nodes too (a gradient sweep reads
    // internal values a TorchScript export has no shapes for), from its inputs, initializers
    // and own value_info.
    const seed = new Map<string, TypeShape>();
    for (const v of g.value_info ?? []) { const t = typeOfInfo(v); if (t?.shape && v.name) seed.set(v.name, t); }
    const opset = defaultOpset(state.model) ?? 0;
    const { types } = inferShapes(g, opset, { seed, fallback, bind, valueInfo: false });
    const typed = new Map<string, TypeShape>();
    for (const n of g.node ?? []) {
      if (!nodeProvenance.has(n)) continue;
      for (const o of n.output ?? []) {
        const t = o ? types.get(o) : undefined;
        if (t) typed.set(o, t);
      }
    }
    const outputs = new Set((g.output ?? []).map((o) => o.name!));
    const existing = new Set((g.value_info ?? []).map((v) => v.name!));
    const added: ValueInfoProto[] = [];
    for (const [name, t] of typed) {
      if (existing.has(name)) continue;
      if (outputs.has(name)) continue; // a save: typed by save-outputs (symbolic dims)
      added.push(infoOfType(name, t));
    }
    g.value_info = [...(g.value_info ?? []), ...added];
    return { changed: added.length > 0 };
  },
};
