/**
 * Sorts the rewritten graph topologically (ONNX requires it), keeping the original order
 * wherever dependencies allow, so untouched parts of the model read as they did. A cycle
 * means an intervention needs a value the model computes only later (e.g. setting block
 * 1's output from block 3's): that is the user's error, reported at the intervention.
 * @module
 */
import type { Pass } from './pass.js';
import { NnsError } from '../src/errors.js';
import { topoOrder } from '../src/onnx/view.js';
import { nodeSpans } from './onnx-emit.js';

/** The toposort pass. */
export const toposortPass: Pass = {
  name: 'toposort',
  prints: 'model',
  run(state, ctx) {
    const g = state.model.graph!;
    const nodes = g.node ?? [];
    const { order, cyclic } = topoOrder(g);
    if (cyclic.length) {
      const culprit = cyclic.find((n) => nodeSpans.has(n));
      ctx.errors.push(new NnsError('order', 'this intervention needs a value the model computes later in the same pass (a module\'s value cannot depend on a module that runs after it)', {
        span: culprit ? nodeSpans.get(culprit) : undefined,
        notes: ['NNsight has the same rule: interventions must follow the order in which modules run'],
      }));
      return { changed: false };
    }
    const changed = order.some((n, i) => n !== nodes[i]);
    g.node = order;
    return { changed };
  },
};
