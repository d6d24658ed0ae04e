/**
 * Lossless structural keys. `JSON.stringify` writes NaN, +Infinity and −Infinity all as
 * `null` and −0 as `0`, so keys built with it merge constants that differ (a `-1/0` and a
 * `1/0` in one script would become one value). Every place that keys or hashes IR
 * structure uses these helpers instead: numbers that JSON cannot hold are tagged, and the
 * data of a `const` is keyed by its bytes (float64, so every JS number is distinct).
 * @module
 */

/** A `JSON.stringify` replacer that keeps NaN, ±Infinity and −0 distinct (as tagged strings). */
export function losslessReplacer(_key: string, x: unknown): unknown {
  if (typeof x === 'number' && (!Number.isFinite(x) || Object.is(x, -0))) return `#${Object.is(x, -0) ? '-0' : String(x)}`;
  if (typeof x === 'bigint') return `#${x}n`;
  if (x instanceof Uint8Array) return Array.from(x);
  return x;
}

/** `JSON.stringify` with {@link losslessReplacer}: equal texts mean equal values. */
export function stableStringify(v: unknown): string {
  return JSON.stringify(v, losslessReplacer) ?? 'undefined';
}

/** The bytes of `data` as float64 (hex): distinct for NaN, +Infinity, −Infinity, 0 and −0. */
export function numbersKey(data: readonly number[]): string {
  return Buffer.from(Float64Array.from(data).buffer).toString('hex');
}

/** The key of a node's attributes: `const` data by bytes, everything else by {@link stableStringify}. */
export function attrsKey(op: string, attrs: unknown): string {
  if (op === 'const') {
    const { dtype, shape, data } = attrs as { dtype: string; shape: number[]; data: number[] };
    return stableStringify([dtype, shape, numbersKey(data)]);
  }
  return stableStringify(attrs);
}
