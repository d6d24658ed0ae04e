/**
 * Sorts the rewritten graph topologically (ONNX requires it), keeping the original order
 * wherever dependencies allow, so untouched parts of the model read as they did. A cycle
 * means an intervention needs a value the model computes only later (e.g. setting block
 * 1's output from block 3's): that is the user's error, reported at the intervention.
 * @module
 */
import type { Pass } from './pass.js';
import type { NodeProto } from '../src/onnx/proto.js';
import { NnsError } from '../src/errors.js';
import { nodeReads } from './prune.js';
import { nodeSpans } from './onnx-emit.js';

/** The toposort pass. */
export const toposortPass: Pass = {
  name: 'toposort',
  prints: 'model',
  run(state, ctx) {
    const g = state.model.graph!;
    const nodes = g.node ?? [];
    const producer = new Map<string, number>();
    nodes.forEach((n, i) => n.output?.forEach((o) => o && producer.set(o, i)));
    const deps = nodes.map((n) => [...new Set(nodeReads(n).map((r) => producer.get(r)).filter((p): p is number => p !== undefined))]);
    const users: number[][] = nodes.map(() => []);
    const pending = deps.map((d) => d.length);
    deps.forEach((d, i) => d.forEach((p) => users[p]!.push(i)));
    // Smallest original index first: a min-heap keeps the original order where possible.
    const heap: number[] = [];
    const push = (x: number): void => {
      heap.push(x);
      for (let i = heap.length - 1; i > 0; ) {
        const p = (i - 1) >> 1;
        if (heap[p]! <= heap[i]!) break;
        [heap[p], heap[i]] = [heap[i]!, heap[p]!];
        i = p;
      }
    };
    const pop = (): number => {
      const top = heap[0]!;
      const last = heap.pop()!;
      if (heap.length) {
        heap[0] = last;
        for (let i = 0; ; ) {
          const l = 2 * i + 1, r = l + 1;
          let m = i;
          if (l < heap.length && heap[l]! < heap[m]!) m = l;
          if (r < heap.length && heap[r]! < heap[m]!) m = r;
          if (m === i) break;
          [heap[m], heap[i]] = [heap[i]!, heap[m]!];
          i = m;
        }
      }
      return top;
    };
    pending.forEach((c, i) => c === 0 && push(i));
    const order: NodeProto[] = [];
    while (heap.length) {
      const i = pop();
      order.push(nodes[i]!);
      for (const u of users[i]!) if (--pending[u]! === 0) push(u);
    }
    if (order.length !== nodes.length) {
      // Nodes on a cycle: the stuck ones, minus those that only hang below a cycle (peel off sinks).
      const onCycle = new Set(nodes.map((_, i) => i).filter((i) => pending[i]! > 0));
      for (let changed = true; changed; ) {
        changed = false;
        for (const i of onCycle) {
          if (!users[i]!.some((u) => onCycle.has(u))) {
            onCycle.delete(i);
            changed = true;
          }
        }
      }
      const culprit = [...onCycle].map((i) => nodes[i]!).find((n) => nodeSpans.has(n));
      const span = culprit ? nodeSpans.get(culprit) : undefined;
      ctx.errors.push(new NnsError('order', 'this intervention needs a value the model computes later in the same pass (a module\'s value cannot depend on a module that runs after it)', {
        span,
        notes: ['NNsight has the same rule: interventions must follow the order in which modules run'],
      }));
      return { changed: false };
    }
    const changed = order.some((n, i) => n !== nodes[i]);
    g.node = order;
    return { changed };
  },
};
