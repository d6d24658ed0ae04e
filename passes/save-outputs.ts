/**
 * Saved values become graph outputs named by their save names (`h2`, `lens.3`); a name
 * already taken in the graph (e.g. saving `logits` in a model whose output is `logits`)
 * gets a numeric suffix (`logits_1`). `state.saved` maps each save name to its output.
 * @module
 */
import type { Pass } from './pass.js';
import type { DType } from '../src/model/types.js';
import { Emitter, valueInfo } from './onnx-emit.js';

/** The save-outputs pass. */
export const saveOutputsPass: Pass = {
  name: 'save-outputs',
  prints: 'model',
  run(state) {
    const names = state.valueNames;
    const g = state.model.graph!;
    const em = new Emitter(g);
    let changed = false;
    for (const n of state.ir.nodes) {
      if (!n.is('save')) continue;
      const v = n.inputs[0]!;
      const src = names?.get(v);
      if (src === undefined) throw new Error(`internal: saved value '${n.attrs.name}' was not lowered`);
      em.prov = { module: (v.producer.attrs as { path?: string }).path ?? '', irOp: 'save', span: n.span };
      const out = em.unique(n.attrs.name);
      em.node('Identity', [src], {}, 1);
      g.node![g.node!.length - 1]!.output = [out];
      g.output!.push(valueInfo(out, (v.type?.dtype ?? 'float32') as DType, v.type?.shape ?? null));
      state.saved.set(n.attrs.name, out);
      changed = true;
    }
    return { changed };
  },
};
