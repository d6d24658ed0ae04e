/**
 * Running a `.nns` `generate` block: check its options and every step's lowering, then
 * decode, lowering the block again for each step into that step's builder.
 * @module
 */
import type { GenerateStmt } from '../../grammar/ast.js';
import { lowerGenerateStep, type HostValueInfo } from '../../grammar/lower.js';
import { checkGenerate } from '../../grammar/script.js';
import { NnsErrors } from '../errors.js';
import type { RunOptions } from '../engine.js';
import type { Tensor } from '../tensor.js';
import type { DecodeResult, GenerationTarget, TokenEvent } from './decode.js';

/** Options of {@link runGenerate}. */
export interface RunGenerateOptions {
  /** Script file name (spans). */
  file: string;
  /** Tokenizes text prompts. */
  tokenize: (text: string) => number[];
  /** Values saved by earlier traces of the script. */
  host: ReadonlyMap<string, Tensor>;
  /** Called with each token as it is chosen. */
  onToken?: (e: TokenEvent) => void;
  /** Engine options of every step. */
  run?: RunOptions;
}

/** What a generate block produced. */
export interface GenerateOutput {
  /** Its saves: per-step ones as `NAME.S`, `model.generator.output` ones by name. */
  saves: Map<string, Tensor>;
  /** The decode result (ids per row, steps, mode). */
  result: DecodeResult;
}

/** The sequence of one row as an int64 `[1, n]` tensor. */
export function idsTensor(ids: readonly number[]): Tensor {
  return { dtype: 'int64', shape: [1, ids.length], data: BigInt64Array.from(ids, (x) => BigInt(x)) };
}

/**
 * Runs one generate block of a script on `target` (an opened model: `localTarget(mc)`, or a
 * server: the same decode loop runs there).
 * @throws NnsErrors with every error of the options and the steps' lowering (nothing is
 *   run then); errors found while compiling a step come from that step.
 */
export async function runGenerate(gen: GenerateStmt, target: GenerationTarget, opts: RunGenerateOptions): Promise<GenerateOutput> {
  const hostInfo = new Map<string, HostValueInfo>([...opts.host].map(([k, v]) => [k, { dtype: v.dtype, shape: [...v.shape] }]));
  const base = { file: opts.file, tokenize: opts.tokenize, host: hostInfo, tree: target.tree };
  const checked = checkGenerate(gen, { ...base, maxPositions: target.maxPositions });
  if (checked.errors.length || !checked.settings) throw new NnsErrors(checked.errors);
  const settings = checked.settings;
  const result = await target.decode({
    prompts: checked.prompts,
    options: settings,
    file: opts.file,
    onToken: opts.onToken,
    run: opts.run,
    build: (b, step, rows) => {
      const l = lowerGenerateStep(gen, { ...base, builder: b, step, maxNewTokens: settings.maxNewTokens, rows });
      if (l.errors.length) throw new NnsErrors(l.errors);
      return { host: opts.host };
    },
  });
  const saves = new Map(result.saves);
  for (const g of checked.generatorSaves) saves.set(g.name, idsTensor(result.ids[g.row]!));
  return { saves, result };
}

/** Where {@link runGenerateWithText} writes. */
export interface GenerateTextOutput {
  /** Raw text (no newline added): the generated text as it comes. */
  write(text: string): void;
  /** One-line notes (stderr). */
  log(text: string): void;
}

/**
 * Runs a generate block as `nns run` shows it — locally or on a server alike: the text of a
 * single-prompt generate is written as it is produced, each row's text after a batched one,
 * and a note when the model recomputed every step (no key/value cache).
 */
export async function runGenerateWithText(gen: GenerateStmt, target: GenerationTarget, opts: RunGenerateOptions, out: GenerateTextOutput): Promise<Map<string, Tensor>> {
  const tok = target.tokenizer;
  const write = (t: string): void => out.write(t);
  const newIds: number[][] = [];
  const shown: string[] = [];
  const text = (row: number): string => (tok ? tok.decode(newIds[row] ?? []) : (newIds[row] ?? []).map((i) => `[${i}]`).join(''));
  const { saves, result } = await runGenerate(gen, target, {
    ...opts,
    onToken: (e) => {
      opts.onToken?.(e);
      (newIds[e.row] ??= []).push(e.token);
      if (gen.prompt === undefined) return;
      if (e.step === 0) write(`generate: ${gen.prompt.kind === 'TextPrompt' ? gen.prompt.text : ''}`);
      // A token may end inside a multi-byte character: print only what decodes stably.
      const t = text(0);
      const prev = shown[0] ?? '';
      if (t.startsWith(prev) && !t.endsWith('\uFFFD')) {
        write(t.slice(prev.length));
        shown[0] = t;
      }
    },
  });
  if (gen.prompt !== undefined) write(`${text(0).slice((shown[0] ?? '').length)}\n`);
  else for (let r = 0; r < result.ids.length; r++) write(`generate[${r}]: ${tok ? tok.decode(result.ids[r]!) : result.ids[r]!.join(' ')}\n`);
  if (result.mode === 'recompute') out.log(`note: ${target.source} has no key/value cache: each step recomputed the whole sequence`);
  return saves;
}
