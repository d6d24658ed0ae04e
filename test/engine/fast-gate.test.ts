/**
 * The instrumented model's output gate (src/fast/ports.ts `gateOutputs`): onnxruntime keeps
 * every graph output of a run alive until the run ends, so the port values are gated outputs
 * that a run computes only when it fetches them. Checked on both gpt2-facts exports in
 * onnxruntime directly: a fetched port value is bit for bit the value of a run with every
 * output open, an unfetched one is empty; and through the fast path, saves of several ports
 * against PyTorch's reference values. (The served copy, with the gate an all-open initializer,
 * is checked against the reference logits in serving-export.test.ts.)
 */
import { describe, it, expect, beforeAll } from 'vitest';
import ort from 'onnxruntime-node';
import { LanguageModel } from '../../src/index.js';
import { buildFeeds } from '../../src/model/feeds.js';
import type { FastExecutor } from '../../src/fast/index.js';
import { gateFeed } from '../../src/fast/ports.js';
import { toOrtTensor } from '../../backends/ort.js';
import { EXPORTS, refCase, expectClose, mod } from '../helpers/reference.js';

for (const exp of EXPORTS) {
  describe(`output gate on the '${exp.name}' export`, () => {
    let model: LanguageModel;
    let fast: FastExecutor;
    beforeAll(async () => {
      model = await LanguageModel.load(exp.path);
      fast = model.mc.fast as FastExecutor;
    });

    it('gates every port value that is not a model output; a fetched one is the ungated value bit for bit, the others empty', async () => {
      const ported = fast.ported;
      const gate = ported.gate!;
      expect(gate).toBeDefined();
      const own = new Set(model.mc.tree.graphOutputs.map((o) => o.name));
      for (const p of ported.ports) for (const v of [p.pre, p.post]) if (!own.has(v)) expect(gate.index.has(v), v).toBe(true);
      const c = refCase('clean_logits');
      const feeds: Record<string, ort.Tensor> = Object.fromEntries(Object.entries(buildFeeds(model.mc.feedInputs, [c.input_ids as number[]]).feeds).map(([k, t]) => [k, toOrtTensor(t)]));
      for (const p of ported.ports) {
        feeds[p.keep] = new ort.Tensor('float32', Float32Array.of(1), p.shape.map(() => 1));
        feeds[p.add] = new ort.Tensor('float32', Float32Array.of(0), p.shape.map(() => 1));
      }
      const gatedNames = [...gate.index.keys()];
      const [a, b] = [gatedNames[1]!, gatedNames[gatedNames.length - 1]!];
      const session = await ort.InferenceSession.create(ported.graphPath);
      try {
        const ortFeeds = (g: ReturnType<typeof gateFeed>): Record<string, ort.Tensor> => Object.fromEntries(Object.entries(g).map(([k, t]) => [k, toOrtTensor(t)]));
        const open = await session.run({ ...feeds, ...ortFeeds(gateFeed(ported, [a, b])) }, [a, b]);
        const gated = await session.run({ ...feeds, ...ortFeeds(gateFeed(ported, [a])) }, [a, b]);
        expect(gated[a]!.dims).toEqual(open[a]!.dims);
        expect(Buffer.from((gated[a]!.data as Float32Array).buffer).equals(Buffer.from((open[a]!.data as Float32Array).buffer))).toBe(true);
        expect(open[b]!.dims[0]).toBe(1);
        expect(gated[b]!.dims[0]).toBe(0);
        expect(gated[b]!.data.length).toBe(0);
      } finally {
        await session.release();
      }
    });

    it('saves of block outputs through the gated model equal the PyTorch reference', async () => {
      const c = refCase('save_outputs');
      const want = c.expect as Record<string, { shape: number[]; values: number[] }>;
      const paths = Object.keys(want).filter((k) => /\.h\.\d+$/.test(k));
      expect(paths.length).toBeGreaterThan(1);
      const { saves } = await model.trace(c.input_ids as number[], (m) => {
        for (const p of paths) mod(m, p).output.save(p);
      });
      for (const p of paths) expectClose(saves[p]!.data as Float32Array, want[p]!.values, 1e-4, p);
      expect(fast.stats.fallbacks).toBe(0);
    });
  });
}
