/**
 * Module application: replaces each `CallModule` placeholder left by lowering with a clone
 * of the module's nodes on the call's arguments. Clones get fresh scope-style names
 * (`/transformer/ln_f/nns.call/LayerNormalization`), keep the original op, domain and
 * attributes, and produce the placeholder's output names, so the rest of the graph is
 * untouched. Values the module reads from outside (masks, positions) stay shared.
 * @module
 */
import type { Pass } from './pass.js';
import type { GraphProto } from '../src/onnx/proto.js';
import { Emitter, nodeProvenance, nodeSpans, scopePrefix } from './onnx-emit.js';

/** Renames the outer values a subgraph's nodes read. */
function renameReads(g: GraphProto, r: (x: string) => string): void {
  for (const n of g.node ?? []) {
    n.input = (n.input ?? []).map(r);
    for (const a of n.attribute ?? []) for (const sg of [a.g, ...(a.graphs ?? [])]) if (sg) renameReads(sg, r);
  }
  for (const o of g.output ?? []) if (o.name) o.name = r(o.name);
}

/** The apply-modules pass. */
export const applyModulesPass: Pass = {
  name: 'apply-modules',
  prints: 'model',
  run(state) {
    const calls = state.moduleCalls ?? [];
    if (!calls.length) return { changed: false };
    const g = state.model.graph!;
    const em = new Emitter(g);
    const placeholders = new Set(calls.map((c) => c.placeholder));
    // The placeholder's output names (`.../CallModule_output_0`) are replaced by the clones' own.
    const results = new Map<string, string>();
    for (const call of calls) {
      const from = nodeProvenance.get(call.placeholder);
      const sub = scopePrefix(call.path).slice(1);
      em.prov = from ? { ...from, irOp: 'call', sub, copyOf: call.path } : { module: call.path, irOp: 'call', span: nodeSpans.get(call.placeholder), copyOf: call.path };
      const rename = new Map<string, string>();
      for (const { node, inputs, outputs } of call.nodes) {
        const fresh = em.node(node.op_type!, inputs.map((x) => rename.get(x) ?? results.get(x) ?? x), {}, node.output!.length);
        const clone = g.node![g.node!.length - 1]!;
        clone.attribute = node.attribute;
        if (node.domain !== undefined) clone.domain = node.domain;
        clone.output = fresh;
        fresh.forEach((f, i) => { if (outputs[i]) results.set(outputs[i]!, f); });
        node.output!.forEach((o, i) => { if (o) rename.set(o, clone.output![i]!); });
      }
    }
    g.node = g.node!.filter((n) => !placeholders.has(n));
    if (results.size) {
      const r = (x: string): string => results.get(x) ?? x;
      for (const n of g.node) {
        n.input = (n.input ?? []).map(r);
        for (const a of n.attribute ?? []) for (const sg of [a.g, ...(a.graphs ?? [])]) if (sg) renameReads(sg, r);
      }
      for (const o of g.output ?? []) if (o.name) o.name = r(o.name);
      if (state.valueNames) for (const [v, x] of state.valueNames) state.valueNames.set(v, r(x));
      for (const q of state.grads ?? []) q.placeholder.input = (q.placeholder.input ?? []).map(r);
    }
    state.moduleCalls = [];
    return { changed: true };
  },
};
