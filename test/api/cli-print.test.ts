/** Printing of saved values (`nns run`). */
import { describe, expect, it } from 'vitest';
import { fmt, formatResults, rowProbabilities, topTokens } from '../../src/cli/print.js';
import type { Tensor } from '../../src/tensor.js';

const decoder = { vocabSize: 4, tokenToString: (id: number) => [' Paris', ' Rome', '\n', ' of'][id]! };

describe('formatResults', () => {
  it('prints dtype, shape and a summary', () => {
    const t: Tensor = { dtype: 'float32', shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, 6]) };
    expect(formatResults(new Map([['h', t]]))).toBe('h: float32 [2, 3]\n  min 1  max 6  mean 3.5  [1, 2, 3, 4, 5, 6]');
  });

  it('shows the top tokens of the last row of logits (softmax) and of probabilities (as is)', () => {
    const logits: Tensor = { dtype: 'float32', shape: [2, 4], data: new Float32Array([9, 0, 0, 0, 0, 5, 0, 1]) };
    const probs: Tensor = { dtype: 'float32', shape: [1, 4], data: new Float32Array([0.7, 0.2, 0.05, 0.05]) };
    const out = formatResults(new Map([['logits', logits], ['probs', probs]]), decoder).split('\n');
    expect(out).toContain('  top 5 tokens (last row):');
    expect(out[out.indexOf('  top 5 tokens (last row):') + 1]).toMatch(/^ {2}Rome 0\.969$/);
    const i = out.indexOf('  top 5 tokens:');
    expect(out.slice(i + 1, i + 5)).toEqual(['  Paris 0.700', '  Rome 0.200', '  "\\n" 0.050', '  of 0.050']);
  });

  it('decodes small integer results as tokens', () => {
    const ids: Tensor = { dtype: 'int64', shape: [2], data: new BigInt64Array([1n, 0n]) };
    expect(formatResults(new Map([['ids', ids]]), decoder)).toBe('ids: int64 [2]\n  min 0  max 1  mean 0.5  [1, 0]\n  tokens: Rome Paris');
  });
});

describe('helpers', () => {
  it('formats numbers with 4 significant digits', () => {
    expect(fmt(0.123456)).toBe('0.1235');
    expect(fmt(1e-8)).toBe('1.000e-8');
    expect(fmt(0)).toBe('0');
  });

  it('keeps probabilities, softmaxes scores, ranks tokens', () => {
    expect(rowProbabilities([0.5, 0.5])).toEqual([0.5, 0.5]);
    expect(rowProbabilities([0, 0])).toEqual([0.5, 0.5]);
    expect(topTokens([1, 3, 2], 2).map(([id]) => id)).toEqual([1, 2]);
  });
});
