/**
 * The session policy of big models (backends/ort.ts `exclusive`), on gpt2-facts with the
 * big-model backend forced (the model itself is far below the 256 MiB threshold): at most one
 * copy of the weights alive — never a prepacked session of the model's weights group beside
 * another session of that group, idle — and no re-creation at every switch when fast-path
 * and compiled traces alternate. Counts sessions, never times them; every trace's logits are
 * checked against PyTorch's (reference.json `clean_logits`).
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { OrtBackend } from '../../backends/ort.js';
import { lowerTrace, parseScript, traces } from '../../grammar/index.js';
import { openModel, runGraph, type ModelContext } from '../../src/engine.js';
import type { FastExecutor } from '../../src/fast/index.js';
import { expectClose, MODEL_DIR, refCase } from '../helpers/reference.js';

const CLEAN = refCase('clean_logits');
const ids = CLEAN.input_ids as number[];

async function trace(mc: ModelContext, fast: boolean): Promise<void> {
  const text = `trace [${ids.join(', ')}] {\n  l = model.output.logits[:, -1, :].save()\n}`;
  const { ast, errors } = parseScript(text, '<t>');
  expect(errors).toEqual([]);
  const lowered = lowerTrace(traces(ast!)[0]!, { file: '<t>', tokenize: () => [], tree: mc.tree });
  expect(lowered.errors).toEqual([]);
  const out = await runGraph(lowered.graph, mc, { fast, tiered: false });
  expectClose(out.get('l')!.data as Float32Array, (CLEAN.expect as { last_logits: number[] }).last_logits, 1e-4, fast ? 'fast-path logits' : 'compiled logits');
}

/**
 * Never two copies of any weights: a prepacked session has no other session over its weights
 * beside it (its own group, or a whole-model session: a compiled variant holds the tail's
 * weights that the tail's module model holds).
 */
function oneCopy(be: OrtBackend): void {
  const live = be.liveSessions();
  for (const p of live.filter((s) => s.prepack)) {
    const overlapping = live.filter((s) => s !== p && (s.group === p.group || s.whole || p.whole));
    expect(overlapping, JSON.stringify(live)).toEqual([]);
  }
}

describe('exclusive sessions: one copy of the weights without rebuilding at every switch', () => {
  let mc: ModelContext;
  let be: OrtBackend;
  beforeAll(async () => {
    be = new OrtBackend({ exclusive: true, maxSessions: 2 });
    mc = await openModel(MODEL_DIR, { backend: be });
  });

  it('alternating fast-path and compiled traces create their sessions once; runs in a row rebuild the prepacked one, later and later', async () => {
    const fast = mc.fast as FastExecutor;
    await trace(mc, true); // the instrumented model, prepacked (the logits come from its own copy of the tail: no module model)
    oneCopy(be);
    const first = { ...be.created };
    expect(first.prepacked).toBeGreaterThanOrEqual(1);
    await trace(mc, false); // compiled: an unprepacked whole-model session, the idle prepacked one goes
    oneCopy(be);
    expect(be.exclusiveReleases).toBe(1);
    expect(be.liveSessions().filter((s) => s.prepack)).toEqual([]);
    await trace(mc, true); // the instrumented model again: an unprepacked stand-in, not a rebuild
    oneCopy(be);
    expect(be.created.standIns).toBe(1);
    const settled = { ...be.created };
    expect(settled.prepacked).toBe(first.prepacked);
    for (let i = 0; i < 5; i++) {
      await trace(mc, false);
      oneCopy(be);
      await trace(mc, true);
      oneCopy(be);
    }
    // Ten more switches: no session created, none released.
    expect(be.created).toEqual(settled);
    expect(be.exclusiveReleases).toBe(1);
    expect(fast.stats.fastRuns).toBeGreaterThanOrEqual(7);

    // Runs in a row: the 8th consecutive use rebuilds the instrumented model's prepacked session (releasing
    // the stand-in and the compiled one).
    await trace(mc, false);
    let n = 0;
    while (be.created.prepacked === settled.prepacked && n < 20) {
      await trace(mc, true);
      oneCopy(be);
      n++;
    }
    expect(n).toBe(8);
    expect(be.created.prepacked).toBe(settled.prepacked + 1);
    expect(be.liveSessions().filter((s) => s.group === 'model')).toEqual([expect.objectContaining({ prepack: true })]);
    expect(be.liveSessions().every((s) => s.prepack)).toBe(true);
    // Released again by a compiled trace: now it takes 16 in a row.
    await trace(mc, false);
    const again = be.created.prepacked;
    n = 0;
    while (be.created.prepacked === again && n < 40) {
      await trace(mc, true);
      oneCopy(be);
      n++;
    }
    expect(n).toBe(16);
  });
});

describe('exclusive sessions: an incremental sweep opens no prepacked session for its clean run and no tail module session', () => {
  const PATCH = refCase('patch_block_outputs');
  const A = PATCH.input_ids as number[];
  const B = PATCH.source_ids!;
  const grid = PATCH.expect as number[][][];
  const sweep = (k: number): string => {
    const lines = [`trace {`];
    A.forEach((_, p) => {
      lines.push(`  invoke [${B.join(', ')}] {\n    s${p} = model.transformer.h[${k}].output[:, ${p}, :]\n  }`);
      lines.push(`  invoke [${A.join(', ')}] {\n    model.transformer.h[${k}].output[:, ${p}, :] = s${p}\n    p${p} = softmax(model.output.logits[:, -1, :], -1)\n    a${p} = p${p}[:, ${PATCH.answer_id}].save()\n    b${p} = p${p}[:, ${PATCH.source_answer_id}].save()\n  }`);
    });
    return `${lines.join('\n')}\n}`;
  };
  const run = async (mc: ModelContext, k: number): Promise<void> => {
    const { ast, errors } = parseScript(sweep(k), '<sweep>');
    expect(errors).toEqual([]);
    const lowered = lowerTrace(traces(ast!)[0]!, { file: '<sweep>', tokenize: () => [], tree: mc.tree });
    expect(lowered.errors).toEqual([]);
    const out = await runGraph(lowered.graph, mc, { tiered: false });
    A.forEach((_, p) => {
      // PyTorch's patching grid (reference.json patch_block_outputs), 1e-5.
      expect(Math.abs((out.get(`a${p}`)!.data as Float32Array)[0]! - grid[k]![p]![0]!), `a ${k}.${p}`).toBeLessThanOrEqual(1e-5);
      expect(Math.abs((out.get(`b${p}`)!.data as Float32Array)[0]! - grid[k]![p]![1]!), `b ${k}.${p}`).toBeLessThanOrEqual(1e-5);
    });
  };

  it('a fresh model: unprepacked clean run, the whole head segment; with the prepacked session open, the clean run takes it', async () => {
    const be = new OrtBackend({ exclusive: true, maxSessions: 2 });
    const mc = await openModel(MODEL_DIR, { backend: be });
    const fast = mc.fast as FastExecutor;
    fast.incremental = 'force';
    try {
      const models = (): string[] => be.liveSessions().map((s) => s.graphPath);
      const opened: { graphPath: string; prepack: boolean }[] = [];
      const session = be.session.bind(be);
      be.session = (graphPath, opts) => {
        opened.push({ graphPath, prepack: !!opts?.prepack });
        return session(graphPath, opts);
      };
      await run(mc, 1);
      expect(fast.stats.sweepRuns, fast.stats.lastSweepReject).toBe(1);
      expect(be.created.prepacked).toBe(0);
      expect(fast.stats.lastSweep!.tailRuns).toBe(0);
      const tail = fast.ported.tail!.path;
      expect(fast.modules.isOpen(tail)).toBe(false);
      // The clean run asked for the instrumented model without prepacking; no session over the tail's module model.
      expect(opened.filter((o) => o.graphPath === fast.ported.graphPath)).toEqual([{ graphPath: fast.ported.graphPath, prepack: false }]);
      expect(opened.some((o) => o.graphPath === fast.modules.model(tail).graphPath)).toBe(false);
      expect(models()).not.toContain(fast.modules.model(tail).graphPath);
      // The prepacked session open (a fast-path trace builds it), the next sweep's clean run runs on it.
      await trace(mc, true);
      expect(be.created.prepacked).toBe(1);
      opened.length = 0;
      await run(mc, 3);
      expect(fast.stats.sweepRuns).toBe(2);
      expect(opened.filter((o) => o.graphPath === fast.ported.graphPath)).toEqual([{ graphPath: fast.ported.graphPath, prepack: true }]);
      expect(be.created.prepacked).toBe(1);
      oneCopy(be);
    } finally {
      await mc.backend.release();
    }
  });
});

describe('a gradient\'s forward rows on a big-model backend', () => {
  it('run on the instrumented model unprepacked while its prepacked session is not open (none is built for them); attribution = reference.json (1e-4)', async () => {
    const be = new OrtBackend({ exclusive: true, maxSessions: 2, defaults: { arena: false } });
    const mc = await openModel(MODEL_DIR, { backend: be });
    const g = refCase('gradients');
    const e = g.expect as { attribution: number[][] };
    const blocks = [0, 1, 2, 3];
    const text = `trace {
  invoke [${g.source_ids!.join(', ')}] {
${blocks.map((l) => `    s${l} = model.transformer.h[${l}].output`).join('\n')}
  }
  invoke [${(g.input_ids as number[]).join(', ')}] {
    y = model.output.logits[0, -1, ${g.answer_id}]
${blocks.map((l) => `    a${l} = sum((s${l} - model.transformer.h[${l}].output) * grad(y, model.transformer.h[${l}].output), -1).save()`).join('\n')}
  }
}`;
    const { ast, errors } = parseScript(text, '<t>');
    expect(errors).toEqual([]);
    const lowered = lowerTrace(traces(ast!)[0]!, { file: '<t>', tokenize: () => [], tree: mc.tree });
    expect(lowered.errors).toEqual([]);
    for (let run = 0; run < 2; run++) {
      const out = await runGraph(lowered.graph, mc, { tiered: false });
      for (const l of blocks) expectClose(out.get(`a${l}`)!.data as Float32Array, e.attribution[l]!, 1e-4, `attribution h.${l}`);
    }
    expect((mc.fast as FastExecutor).stats.fastRuns).toBe(2); // the source rows, on the fast path both times
    expect(be.created.prepacked).toBe(0);
    await be.release();
  });
});
