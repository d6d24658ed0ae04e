/**
 * The run stages that pick an executor: `plan-fast-path` asks the fast path (when the run
 * may use it: `ctx.fast`) to plan the trace as a partition of the IR — port feeds, fetches
 * of the instrumented model, host work — and `choose-executor` picks the fast path when
 * there is a plan, else the compiled path (lift-constants, split-batch, then the ONNX
 * pipeline per chunk). The IR is unchanged; both print what they decided.
 * @module
 */
import type { Pass } from './pass.js';

/** Plans the fast path (`state.fastPlan`); prints the partition or the reason there is none. */
export const planFastPathPass: Pass = {
  name: 'plan-fast-path',
  run(state, ctx) {
    state.fastPlan = ctx.fast ? ctx.fast.plan(state.ir) : { reject: 'the fast path is off for this run' };
    return { changed: false };
  },
  prints: (state) => {
    const p = state.fastPlan;
    if (!p) return '// not planned\n';
    return 'reject' in p ? `// no fast-path plan: ${p.reject}\n` : p.text;
  },
};

/** Picks the executor (`state.executor`): the fast path when planned, else the compiled path. */
export const chooseExecutorPass: Pass = {
  name: 'choose-executor',
  run(state) {
    const p = state.fastPlan;
    state.executor = p && 'plan' in p
      ? { kind: 'fast', reason: 'runs on the instrumented model (port feeds and fetches): no graph is compiled' }
      : { kind: 'compiled', reason: p && 'reject' in p ? p.reject : 'the fast path was not planned' };
    return { changed: false };
  },
  prints: (state) => `// executor: ${state.executor?.kind ?? '?'} (${state.executor?.reason ?? ''})\n`,
};
