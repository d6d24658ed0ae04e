/**
 * Running a built trace on a chosen fast-path executor of a loaded model (tests that compare
 * two executors' results, e.g. the tail in the instrumented model against its module model).
 */
import { expect } from 'vitest';
import type { LanguageModel, Tensor } from '../../src/index.js';
import { runGraph } from '../../src/engine.js';
import type { FastExecutor } from '../../src/fast/index.js';
import type { TraceContext } from '../../src/trace.js';
import type { Graph } from '../../ir/ir.js';

/** A trace built but not run (`model.build`). */
export type Built = { graph: Graph; ctx: TraceContext };

/** Runs `build()`'s trace with `ex` as `model`'s fast path, asserting it took the fast path; the model's own executor is put back after. */
export async function onFastPath(model: LanguageModel, ex: FastExecutor, build: () => Built): Promise<Map<string, Tensor>> {
  const saved = model.mc.fast;
  model.mc.fast = ex;
  try {
    const b = build();
    const n = ex.stats.fastRuns;
    const r = await runGraph(b.graph, model.mc, { host: b.ctx.host });
    expect(ex.stats.fastRuns, ex.stats.lastReject).toBe(n + 1);
    return r;
  } finally {
    model.mc.fast = saved;
  }
}
