/**
 * Pieces of generation on their own: recognizing the "with past" cache layout (and refusing
 * what it cannot explain), set windows of the recompute path, and the documented PRNG.
 */
import { describe, expect, it } from 'vitest';
import { detectCache } from '../../src/generate/cache-layout.js';
import { windowItems } from '../../src/generate/step-builder.js';
import { Mulberry32, chooseToken } from '../../src/generate/sample.js';
import { NnsError } from '../../src/errors.js';
import type { FeedInput } from '../../src/model/feeds.js';
import type { ModuleTree } from '../../src/model/types.js';

const INT64 = 7;
const FLOAT = 1;
const SPAN = { file: 't', line: 1, col: 1, endLine: 1, endCol: 2, offset: 0, endOffset: 1 };

function layout(layers: number, opts: { dropOutput?: string; extraInput?: FeedInput; pastDims?: (number | string)[] } = {}): { inputs: FeedInput[]; tree: ModuleTree } {
  const inputs: FeedInput[] = [
    { name: 'input_ids', elemType: INT64, dims: ['b', 's'] },
    { name: 'attention_mask', elemType: INT64, dims: ['b', 'p + s'] },
  ];
  const outputs: { name: string }[] = [{ name: 'logits' }];
  for (let i = 0; i < layers; i++) {
    for (const kv of ['key', 'value']) {
      inputs.push({ name: `past_key_values.${i}.${kv}`, elemType: FLOAT, dims: opts.pastDims ?? ['b', 2, 'p', 8] });
      if (opts.dropOutput !== `present.${i}.${kv}`) outputs.push({ name: `present.${i}.${kv}` });
    }
  }
  if (opts.extraInput) inputs.push(opts.extraInput);
  return { inputs, tree: { graphOutputs: outputs } as unknown as ModuleTree };
}

function code(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof NnsError) return `${e.code}/${e.kind}`;
    throw e;
  }
  return 'ok';
}

describe('cache layout', () => {
  it('pairs past_key_values.* inputs with present.* outputs; no cache inputs: no layout', () => {
    const { inputs, tree } = layout(3);
    const l = detectCache(inputs, tree)!;
    expect(l.entries.map((e) => [e.input, e.output, e.emptyShape])).toEqual(
      [0, 1, 2].flatMap((i) => ['key', 'value'].map((kv) => [`past_key_values.${i}.${kv}`, `present.${i}.${kv}`, [1, 2, 0, 8]])),
    );
    expect(l).toMatchObject({ hasMask: true, hasPositions: false, idType: 'int64', pastAxis: 2 });
    expect(detectCache([{ name: 'input_ids', elemType: INT64, dims: ['b', 's'] }], { graphOutputs: [{ name: 'logits' }] } as unknown as ModuleTree)).toBeNull();
  });

  it('refuses cache inputs it cannot explain, as model errors', () => {
    expect(code(() => detectCache(...Object.values(layout(2, { dropOutput: 'present.1.value' })) as [FeedInput[], ModuleTree]))).toBe('cache-layout/model');
    expect(code(() => detectCache(...Object.values(layout(1, { extraInput: { name: 'use_cache_branch', elemType: 9, dims: [1] } })) as [FeedInput[], ModuleTree]))).toBe('cache-layout/model');
    expect(code(() => detectCache(...Object.values(layout(1, { pastDims: ['b', 2, 'p'] })) as [FeedInput[], ModuleTree]))).toBe('cache-layout/model');
    expect(code(() => detectCache(...Object.values(layout(1, { pastDims: ['b', 2, 7, 8] })) as [FeedInput[], ModuleTree]))).toBe('cache-layout/model');
    // symbolic heads: config.json gives them
    const sym = layout(1, { pastDims: ['b', 'h', 'p', 'd'] });
    expect(code(() => detectCache(sym.inputs, sym.tree))).toBe('cache-layout/model');
    expect(detectCache(sym.inputs, sym.tree, { n_head: 4, n_embd: 128 })!.entries[0]!.emptyShape).toEqual([1, 4, 0, 32]);
  });
});

describe('set windows (recompute path)', () => {
  const w = { start: 7, stop: 8 };
  it('confines whole-value sets and shifts indices and slices on the sequence axis', () => {
    expect(windowItems(null, 3, 1, w, SPAN)).toEqual([{ kind: 'slice' }, { kind: 'slice', start: 7, stop: 8 }]);
    expect(windowItems([{ kind: 'slice' }, { kind: 'index', index: -1 }, { kind: 'slice' }], 3, 1, w, SPAN)).toEqual([{ kind: 'slice' }, { kind: 'index', index: 7 }, { kind: 'slice' }]);
    expect(windowItems([{ kind: 'index', index: 0 }, { kind: 'index', index: 0 }], 3, 1, w, SPAN)).toEqual([{ kind: 'index', index: 0 }, { kind: 'index', index: 7 }]);
    expect(windowItems([{ kind: 'ellipsis' }, { kind: 'slice', start: 0, stop: 4 }], 3, 1, w, SPAN)).toEqual([{ kind: 'slice' }, { kind: 'slice', start: 7, stop: 8 }, { kind: 'slice', start: 0, stop: 4 }]);
    expect(windowItems([{ kind: 'slice' }, { kind: 'slice', start: 0, stop: 1 }], 3, 1, { start: 0, stop: 5 }, SPAN)).toEqual([{ kind: 'slice' }, { kind: 'slice', start: 0, stop: 1, step: 1 }]);
    expect(code(() => windowItems([{ kind: 'slice' }, { kind: 'index', index: 1 }], 3, 1, w, SPAN))).toBe('index-out-of-range/script');
  });
});

describe('sampling PRNG', () => {
  it('mulberry32 gives the published sequence', () => {
    // First outputs of mulberry32(1), from the reference implementation (bryc/code, PRNGs.md).
    const r = new Mulberry32(1);
    const got = Array.from({ length: 3 }, () => Math.round(r.next() * 4294967296));
    const ref = ((a: number) => () => {
      a |= 0; a = (a + 0x6d2b79f5) | 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (t ^ (t >>> 14)) >>> 0;
    })(1);
    expect(got).toEqual([ref(), ref(), ref()]);
  });

  it('greedy takes the first maximum; top_k = 1 sampling is greedy; a seed repeats a draw', () => {
    const row = Float32Array.of(0.5, 2, 2, -1);
    expect(chooseToken(row, {}, new Mulberry32(0))).toBe(1);
    for (let s = 0; s < 20; s++) expect(chooseToken(row, { doSample: true, topK: 1 }, new Mulberry32(s))).toBe(1);
    const draws = (seed: number): number[] => { const r = new Mulberry32(seed); return Array.from({ length: 50 }, () => chooseToken(row, { doSample: true, temperature: 2 }, r)); };
    expect(draws(9)).toEqual(draws(9));
    expect(new Set(draws(9)).size).toBeGreaterThan(1);
  });
});
