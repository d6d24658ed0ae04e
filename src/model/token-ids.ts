/**
 * Token-id prompts, checked the same way for `.nns` scripts and the TypeScript API: every
 * id a whole number in `0 .. vocabulary size - 1` (when the model's `config.json` gives
 * `vocab_size`). An id out of range would otherwise be read by onnxruntime's Gather as
 * another token or fail inside it.
 * @module
 */

/** The model's vocabulary size from its config (`vocab_size`), when known. */
export function vocabSizeOf(config: Record<string, unknown> | undefined): number | undefined {
  const v = Number(config?.vocab_size);
  return Number.isSafeInteger(v) && v > 0 ? v : undefined;
}

/** Why `id` is not a valid token id (a message), or undefined when it is one. */
export function badTokenId(id: unknown, vocabSize: number | undefined): string | undefined {
  if (typeof id !== 'number') return `token ids are numbers, got ${describeValue(id)}`;
  if (!Number.isSafeInteger(id)) return `token ids are whole numbers, got ${id}`;
  if (id < 0) return `token ids are >= 0, got ${id}`;
  if (vocabSize !== undefined && id >= vocabSize) return `token id ${id} is outside the model's vocabulary (0..${vocabSize - 1})`;
  return undefined;
}

/** A short description of a JavaScript value's kind for messages (`a string`, `undefined`, `a function`). */
export function describeValue(x: unknown): string {
  if (x === undefined) return 'undefined';
  if (x === null) return 'null';
  if (typeof x === 'string') return `a string (${JSON.stringify(x.length > 20 ? `${x.slice(0, 20)}…` : x)})`;
  if (typeof x === 'function') return 'a function';
  if (typeof x === 'bigint') return 'a bigint';
  if (typeof x === 'boolean') return `a boolean (${x})`;
  if (typeof x === 'symbol') return 'a symbol';
  if (typeof x === 'number') return `the number ${x}`;
  if (Array.isArray(x)) return 'an array';
  const name = (x as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}
