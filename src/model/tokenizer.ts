/**
 * Text tokenization through `@huggingface/tokenizers` (a pure-JS port of Hugging Face
 * tokenizers that reads `tokenizer.json` directly).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { modelError, NnsError } from '../errors.js';
import { NOT_REGULAR, readRegularFile, TOO_LARGE } from '../read-file.js';

/**
 * The tokenizer of a model, as the rest of onnsight uses it.
 * @category Model
 */
export interface TextTokenizer {
  /**
   * Token ids of `text`, with the special tokens the tokenizer's post-processor adds (none for GPT-2).
   *
   * ```ts
   * model.tokenizer!.encode('The Eiffel Tower'); // [264, 758, 334]
   * ```
   */
  encode(text: string): number[];
  /**
   * Text of a sequence of token ids (special tokens kept).
   *
   * ```ts
   * model.tokenizer!.decode([264, 758, 334]); // 'The Eiffel Tower'
   * ```
   */
  decode(ids: number[]): string;
  /**
   * Text of one token as it would appear in decoded output, e.g. `383` → `" Paris"` (not the BPE form `ĠParis`).
   *
   * ```ts
   * const best = saves.best.data[0]; // an argmax saved in a trace
   * model.tokenizer!.tokenToString(Number(best)); // ' Paris'
   * ```
   */
  tokenToString(id: number): string;
  /** Id used to pad batch rows: `pad_token`, else `eos_token`, else 0. */
  readonly padId?: number;
}

/**
 * The text → token ids function lowering uses: the model's tokenizer, or a `no-tokenizer`
 * error (raised when a text prompt is met) when the model folder has no `tokenizer.json`.
 */
export function tokenizeWith(tok: TextTokenizer | undefined): (text: string) => number[] {
  return (text) => {
    if (!tok) throw new NnsError('no-tokenizer', 'the model has no tokenizer.json: give the prompt as token ids, e.g. [464, 318]', { kind: 'model' });
    return tok.encode(text);
  };
}

/**
 * Builds a {@link TextTokenizer} from parsed `tokenizer.json` and `tokenizer_config.json`.
 * @throws NnsError `tokenizer-invalid` when the JSON is not a tokenizer the library understands.
 */
export function makeTokenizer(tokenizerJson: Record<string, unknown>, tokenizerConfig: Record<string, unknown> = {}, source = 'tokenizer.json'): TextTokenizer {
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokenizerJson, tokenizerConfig);
  } catch (e) {
    throw modelError('tokenizer-invalid', `cannot build a tokenizer from ${source}: ${(e as Error).message}`);
  }
  const special = (key: string): number | undefined => {
    const v = tokenizerConfig[key];
    const text = typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined;
    return text === undefined ? undefined : tok.token_to_id(text);
  };
  const padId = special('pad_token') ?? special('eos_token') ?? 0;
  return {
    encode: (text) => tok.encode(text).ids,
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
    tokenToString: (id) => tok.decode([id], { skip_special_tokens: false, clean_up_tokenization_spaces: false }),
    padId,
  };
}

/**
 * Loads the tokenizer of a model folder (`tokenizer.json`, optional `tokenizer_config.json`),
 * or returns `undefined` when the folder has no `tokenizer.json`.
 * @throws NnsError `tokenizer-invalid` for unreadable JSON.
 */
export function loadTokenizer(dir: string): TextTokenizer | undefined {
  const tjPath = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(tjPath)) return undefined;
  const tj = readJson(tjPath);
  const cfgPath = path.join(dir, 'tokenizer_config.json');
  const cfg = fs.existsSync(cfgPath) ? readJson(cfgPath) : {};
  return makeTokenizer(tj, cfg, tjPath);
}

/** Largest JSON file a model folder may hold (`config.json`, `tokenizer.json`, ...): 256 MiB. */
export const MAX_JSON_BYTES = 256 * 2 ** 20;

/**
 * Reads a JSON object file: a regular file (never a FIFO or device) of at most {@link MAX_JSON_BYTES}.
 * @throws NnsError `json-invalid` naming the file.
 */
export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readRegularFile(file, MAX_JSON_BYTES).toString('utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === TOO_LARGE ? `it is larger than ${MAX_JSON_BYTES / 2 ** 20} MiB`
      : code === NOT_REGULAR || code === 'EISDIR' ? 'it is not a regular file' : code ?? (e as Error).message;
    throw modelError('json-invalid', `cannot read ${file}: ${why}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw modelError('json-invalid', `cannot read ${file}: ${(e as Error).message}`);
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw modelError('json-invalid', `${file} does not hold a JSON object`);
  return value as Record<string, unknown>;
}
