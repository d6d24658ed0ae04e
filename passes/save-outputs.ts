/**
 * Saved values become graph outputs named by their save names (`h2`, `lens.3`). A save
 * keeps its name: an internal value of the model that happens to have it (a dynamo export's
 * `where`, `layer_norm_7`) is renamed instead, since internal names are not part of the
 * model's interface. A save of exactly a model output under that output's name
 * (`logits = model.output.logits.save()`) is that output. Only a name the model's interface
 * already uses for something else (saving `logits[:, -1, :]` as `logits` in a model whose
 * output is `logits`, or a name of a graph input) gets a numeric suffix (`logits_1`);
 * `state.saved` maps each save name to its output, and `nns compile` reports such renames.
 * @module
 */
import type { Pass } from './pass.js';
import type { DType } from '../src/model/types.js';
import type { GraphProto, NodeProto } from '../src/onnx/proto.js';
import { Emitter, nodeProvenance, spanText, valueInfo } from './onnx-emit.js';
import { symbolMap } from '../src/model/shapes.js';

/** Renames value `from` to `to` in `g` and the subgraphs of its nodes (node inputs and outputs, initializers, value_info). */
function renameValue(g: GraphProto, from: string, to: string): void {
  const r = (x: string): string => (x === from ? to : x);
  for (const n of g.node ?? []) {
    n.input = (n.input ?? []).map(r);
    n.output = (n.output ?? []).map(r);
    for (const a of n.attribute ?? []) for (const sg of [a.g, ...(a.graphs ?? [])]) if (sg) renameValue(sg, from, to);
  }
  for (const t of g.initializer ?? []) if (t.name === from) t.name = to;
  for (const v of g.value_info ?? []) if (v.name === from) v.name = to;
}

/** The save-outputs pass. */
export const saveOutputsPass: Pass = {
  name: 'save-outputs',
  prints: 'model',
  run(state) {
    const names = state.valueNames;
    const g = state.model.graph!;
    const saves = state.ir.nodes.filter((n) => n.is('save'));
    if (saves.length === 0) return { changed: false };
    // Free the save names that only internal values use.
    const iface = new Set([...(g.input ?? []), ...(g.output ?? [])].map((v) => v.name!));
    const internal = new Set([...(g.node ?? []).flatMap((n) => n.output ?? []), ...(g.initializer ?? []).map((t) => t.name!)]);
    const probe = new Emitter(g);
    for (const n of saves) {
      const name = (n.attrs as { name: string }).name;
      if (iface.has(name) || !internal.has(name)) continue;
      const fresh = probe.unique(`${name}/nns.internal`);
      renameValue(g, name, fresh);
      internal.delete(name);
      if (names) for (const [v, x] of names) if (x === name) names.set(v, fresh);
    }
    const em = new Emitter(g);
    const outputs = new Set((g.output ?? []).map((o) => o.name!));
    const inputs = new Set((g.input ?? []).map((o) => o.name!));
    // Inserted values (an index, a softmax) are named by their save instead of being copied by an Identity.
    const producer = new Map<string, NodeProto>();
    for (const x of g.node ?? []) for (const o of x.output ?? []) producer.set(o, x);
    const named = new Set<string>();
    const toModel = new Map([...symbolMap(state.model)].map(([k, v]) => [v, k]));
    for (const n of saves) {
      const name = (n.attrs as { name: string }).name;
      const v = n.inputs[0]!;
      const src = names?.get(v);
      if (src === undefined) throw new Error(`internal: saved value '${name}' was not lowered`);
      if (src === name && outputs.has(name)) { // the model's own output, saved under its name
        state.saved.set(name, name);
        continue;
      }
      const prov = state.provenance?.get(n);
      em.prov = { ...(prov ?? { module: (v.producer.attrs as { path?: string }).path ?? '' }), irOp: 'save', span: n.span };
      const out = em.unique(name);
      const p = producer.get(src);
      // (`nns compile`: in the model's own symbols, batch_size and sequence_length, like the inserted values' value_info)
      const shape = v.type?.shape ? v.type.shape.map((d) => (typeof d === 'string' && state.specialize ? toModel.get(d) ?? d : d)) : null;
      const info = valueInfo(out, (v.type?.dtype ?? 'float32') as DType, shape);
      info.doc_string = `save '${name}'${prov?.stmt ? ` at ${spanText(prov.stmt)}` : ''}`;
      if (p && nodeProvenance.has(p) && !outputs.has(src) && !inputs.has(src) && !named.has(src)) {
        renameValue(g, src, out);
        if (names) for (const [x, y] of names) if (y === src) names.set(x, out);
        producer.set(out, p);
        named.add(out);
      } else {
        em.node('Identity', [src], {}, 1);
        g.node![g.node!.length - 1]!.output = [out];
      }
      outputs.add(out);
      g.output!.push(info);
      state.saved.set(name, out);
    }
    return { changed: true };
  },
};
