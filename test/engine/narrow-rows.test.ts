/**
 * Whole-batch statements that pick one row are narrowed to that row's invoke: the patching
 * example (a whole-batch `output[0]` source read) then runs on the fast path, and its grid
 * matches PyTorch's patch_block_outputs; the same script compiled agrees.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, it, expect, beforeAll } from 'vitest';
import { parseScript, traces, lowerTrace } from '../../grammar/index.js';
import { openModel, runGraph, type ModelContext } from '../../src/engine.js';
import type { FastExecutor } from '../../src/fast/index.js';
import { MODEL_DIR, ROOT, refCase } from '../helpers/reference.js';

async function runExample(mc: ModelContext, fast: boolean): Promise<Map<string, { data: ArrayLike<number> }>> {
  const file = path.join(ROOT, 'examples', 'patching.nns');
  const { ast, errors } = parseScript(fs.readFileSync(file, 'utf8'), file);
  expect(errors).toEqual([]);
  const [trace] = traces(ast!);
  const lowered = lowerTrace(trace!, { file, tokenize: (t) => mc.loaded.tokenizer!.encode(t), tree: mc.tree });
  expect(lowered.errors).toEqual([]);
  return runGraph(lowered.graph, mc, { fast }) as Promise<Map<string, { data: ArrayLike<number> }>>;
}

describe('narrow-rows', () => {
  let mc: ModelContext;
  beforeAll(async () => { mc = await openModel(MODEL_DIR); });

  it('runs examples/patching.nns on the fast path with PyTorch\'s numbers', async () => {
    const stats = (mc.fast as FastExecutor).stats;
    const before = stats.fastRuns;
    const res = await runExample(mc, true);
    expect(stats.fastRuns, stats.lastReject).toBe(before + 1);
    const c = refCase('patch_block_outputs');
    const grid = c.expect as number[][][];
    for (let l = 0; l < 4; l++) {
      for (let p = 0; p < 8; p++) {
        expect(Math.abs(Number(res.get(`paris.${l}.${p}`)!.data[0]) - grid[l]![p]![0]!), `paris ${l} ${p}`).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(Number(res.get(`rome.${l}.${p}`)!.data[0]) - grid[l]![p]![1]!), `rome ${l} ${p}`).toBeLessThanOrEqual(1e-5);
      }
    }
    const compiled = await runExample(mc, false);
    for (const [k, v] of compiled) expect(Math.abs(Number(v.data[0]) - Number(res.get(k)!.data[0])), k).toBeLessThanOrEqual(1e-6);
  });
});
