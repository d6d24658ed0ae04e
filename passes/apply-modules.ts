/**
 * Module application: replaces each `CallModule` placeholder left by lowering with a clone
 * of the module's nodes on the call's arguments. Clones get fresh scope-style names
 * (`/transformer/ln_f/nns.call/LayerNormalization`), keep the original op, domain and
 * attributes, and produce the placeholder's output names, so the rest of the graph is
 * untouched. Values the module reads from outside (masks, positions) stay shared.
 * @module
 */
import type { Pass } from './pass.js';
import { Emitter, nodeSpans } from './onnx-emit.js';

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
    for (const call of calls) {
      em.prov = { module: call.path, irOp: 'call', span: nodeSpans.get(call.placeholder) };
      const rename = new Map<string, string>();
      for (const { node, inputs, outputs } of call.nodes) {
        const fresh = em.node(node.op_type!, inputs.map((x) => rename.get(x) ?? x), {}, node.output!.length);
        const clone = g.node![g.node!.length - 1]!;
        clone.attribute = node.attribute;
        if (node.domain !== undefined) clone.domain = node.domain;
        clone.output = fresh.map((f, i) => outputs[i] || f);
        node.output!.forEach((o, i) => { if (o) rename.set(o, clone.output![i]!); });
      }
    }
    g.node = g.node!.filter((n) => !placeholders.has(n));
    state.moduleCalls = [];
    return { changed: true };
  },
};
