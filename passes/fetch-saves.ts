/**
 * Run variants compute only what the saves need: when `state.keepModelOutputs` is false
 * (the compiled run path, src/compiled-run.ts, which fetches the saves only), the model's
 * own graph outputs that are not save outputs are dropped, so `prune` then removes what
 * only they needed (e.g. the full logits when only `logits[:, -1, :]` is saved).
 * `nns compile` and `LanguageModel.compile` leave the flag unset and keep every output.
 *
 * Kept as they are: a trace without saves (nothing is fetched; its variant stays the model),
 * and a graph with a cycle — an intervention that needs a later module's value is the user's
 * `order` error (toposort reports it) even when no save depends on it, as before.
 * @module
 */
import type { Pass } from './pass.js';
import { OnnxGraphView } from '../src/onnx/view.js';

/** The fetch-saves pass. */
export const fetchSavesPass: Pass = {
  name: 'fetch-saves',
  prints: 'model',
  run(state) {
    if (state.keepModelOutputs !== false) return { changed: false };
    const g = state.model.graph!;
    const keep = new Set(state.saved.values());
    if (keep.size === 0 || new OnnxGraphView(g).cyclic().length) return { changed: false };
    const before = g.output?.length ?? 0;
    g.output = (g.output ?? []).filter((o) => keep.has(o.name!));
    return { changed: g.output.length !== before };
  },
};
