/**
 * Choosing the next token: greedy (argmax) or sampling with temperature and top-k from a
 * seeded PRNG, specified exactly so a seed reproduces a sample on any machine and in any
 * implementation that follows these steps:
 *
 * - **PRNG**: mulberry32 with a 32-bit state initialised to `seed >>> 0` (seed default 0).
 *   Each draw: `state = (state + 0x6D2B79F5) >>> 0; t = state; t = imul(t ^ (t >>> 15), t | 1);
 *   t ^= t + imul(t ^ (t >>> 7), t | 61); u = ((t ^ (t >>> 14)) >>> 0) / 2^32`, a float in [0, 1).
 *   One generator per `generate` call; at each step the rows that are still generating draw
 *   once each, in row order.
 * - **Candidates**: the row's logits (float32, widened to float64) divided by `temperature`
 *   (default 1), sorted by value descending, ties by the lower token id; with `top_k = K` only
 *   the first K remain.
 * - **Probabilities**: `p_i = exp(l_i - l_max)` (unnormalised, float64), in that order; the
 *   chosen token is the first candidate whose running sum of `p` exceeds `u * sum(p)` (the last
 *   one if rounding leaves none).
 *
 * Greedy decoding takes the largest logit, ties to the lower id (as `torch.argmax`).
 * @module
 */

/** The mulberry32 generator (see the module comment). */
export class Mulberry32 {
  private state: number;

  /** A generator seeded with `seed` (taken modulo 2^32). */
  constructor(seed = 0) {
    this.state = Math.trunc(seed) >>> 0;
  }

  /** The next float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/** Index of the largest element of `row` (ties: the first). */
export function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** How to choose tokens. */
export interface SamplingOptions {
  /** Sample instead of taking the argmax (default false). */
  doSample?: boolean;
  /** Divide the logits by this before sampling (> 0, default 1). */
  temperature?: number;
  /** Sample among the K largest logits only. */
  topK?: number;
}

/** Chooses a token from one row of logits (see the module comment). */
export function chooseToken(row: ArrayLike<number>, opts: SamplingOptions, rng: Mulberry32): number {
  if (!opts.doSample) return argmax(row);
  const temperature = opts.temperature ?? 1;
  const order = Array.from({ length: row.length }, (_, i) => i);
  order.sort((a, b) => (row[b]! - row[a]!) || a - b);
  const k = opts.topK !== undefined ? Math.min(opts.topK, order.length) : order.length;
  const max = row[order[0]!]! / temperature;
  const p = new Float64Array(k);
  let sum = 0;
  for (let i = 0; i < k; i++) sum += p[i] = Math.exp(row[order[i]!]! / temperature - max);
  const target = rng.next() * sum;
  let acc = 0;
  for (let i = 0; i < k; i++) {
    acc += p[i]!;
    if (acc > target) return order[i]!;
  }
  return order[k - 1]!;
}
