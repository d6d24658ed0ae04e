/**
 * Human-readable printing of saved values for `nns run`: dtype, shape and a short summary
 * per value; for values over the vocabulary, the top tokens of the last row, decoded.
 * @module
 */
import type { Tensor } from '../tensor.js';
import { numel } from '../tensor.js';

/** What printing needs from a tokenizer. */
export interface TokenDecoder {
  /** Size of the model's vocabulary: values whose last dim has this size are read as token scores. */
  vocabSize: number;
  /** Text of one token (`383` → `" Paris"`). */
  tokenToString(id: number): string;
}

/** A number with 4 significant digits, without trailing noise. */
export function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1e-4 && a < 1e6) return String(Number(x.toPrecision(4)));
  return x.toExponential(3);
}

function label(token: string): string {
  const t = token.trim();
  return t.length > 0 && !/\s/.test(t) ? t : JSON.stringify(token);
}

/** Probabilities of one row of scores: as given when they already sum to 1, else softmax. */
export function rowProbabilities(row: ArrayLike<number>): number[] {
  const xs = Array.from(row, Number);
  const sum = xs.reduce((s, v) => s + v, 0);
  if (xs.every((v) => v >= 0 && v <= 1) && Math.abs(sum - 1) < 1e-3) return xs;
  const m = Math.max(...xs);
  const e = xs.map((v) => Math.exp(v - m));
  const z = e.reduce((s, v) => s + v, 0);
  return e.map((v) => v / z);
}

/** The `k` best tokens of a row of scores, as `[id, probability]`, best first. */
export function topTokens(row: ArrayLike<number>, k: number): Array<[number, number]> {
  const p = rowProbabilities(row);
  return p.map((v, i): [number, number] => [i, v]).sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, k);
}

function summary(t: Tensor): string[] {
  const n = t.data.length;
  if (n === 0) return ['  (empty)'];
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const v = Number(t.data[i]);
    if (v < min || Number.isNaN(v)) min = v; // NaN propagates, as in torch.min/max
    if (v > max || Number.isNaN(v)) max = v;
    sum += v;
  }
  const first = Array.from({ length: Math.min(n, 6) }, (_, i) => fmt(Number(t.data[i])));
  const values = `[${first.join(', ')}${n > 6 ? ', ...' : ''}]`;
  if (n === 1) return [`  value ${fmt(Number(t.data[0]))}`];
  return [`  min ${fmt(min)}  max ${fmt(max)}  mean ${fmt(sum / n)}  ${values}`];
}

/**
 * Formats saved values, one block per name in insertion order.
 * @param results saved values by name
 * @param tokenizer when given, score rows over the vocabulary show their top 5 tokens,
 *   and small integer results show the tokens they name
 */
export function formatResults(results: ReadonlyMap<string, Tensor>, tokenizer?: TokenDecoder): string {
  const out: string[] = [];
  for (const [name, t] of results) {
    out.push(`${name}: ${t.dtype} [${t.shape.join(', ')}]`);
    out.push(...summary(t));
    const last = t.shape[t.shape.length - 1];
    const isFloat = t.dtype.startsWith('float') || t.dtype === 'bfloat16';
    if (tokenizer && isFloat && last === tokenizer.vocabSize && numel(t.shape) >= last) {
      const start = t.data.length - last;
      const row = Array.from({ length: last }, (_, i) => Number(t.data[start + i]));
      const rows = t.data.length / last;
      out.push(`  top 5 tokens${rows > 1 ? ' (last row)' : ''}:`);
      for (const [id, p] of topTokens(row, 5)) out.push(`  ${label(tokenizer.tokenToString(id))} ${p.toFixed(3)}`);
    } else if (tokenizer && !isFloat && t.dtype !== 'bool' && t.data.length <= 20) {
      const ids = Array.from(t.data, Number);
      if (ids.every((i) => Number.isInteger(i) && i >= 0 && i < tokenizer.vocabSize)) {
        out.push(`  tokens: ${ids.map((i) => label(tokenizer.tokenToString(i))).join(' ')}`);
      }
    }
  }
  return out.join('\n');
}
