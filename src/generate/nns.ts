/**
 * Running a `.nns` `generate` block: check its options and every step's lowering, then
 * decode, lowering the block again for each step into that step's builder.
 * @module
 */
import type { GenerateStmt } from '../../grammar/ast.js';
import { lowerGenerateStep, type HostValueInfo } from '../../grammar/lower.js';
import { checkGenerate } from '../../grammar/script.js';
import { NnsErrors } from '../errors.js';
import type { ModelContext, RunOptions } from '../engine.js';
import type { Tensor } from '../tensor.js';
import { decode, maxPositions, type DecodeResult, type TokenEvent } from './decode.js';

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
 * Runs one generate block of a script.
 * @throws NnsErrors with every error of the options and the steps' lowering (nothing is
 *   run then); errors found while compiling a step come from that step.
 */
export async function runGenerate(gen: GenerateStmt, mc: ModelContext, opts: RunGenerateOptions): Promise<GenerateOutput> {
  const hostInfo = new Map<string, HostValueInfo>([...opts.host].map(([k, v]) => [k, { dtype: v.dtype, shape: [...v.shape] }]));
  const base = { file: opts.file, tokenize: opts.tokenize, host: hostInfo, tree: mc.tree };
  const checked = checkGenerate(gen, { ...base, maxPositions: maxPositions(mc) });
  if (checked.errors.length || !checked.settings) throw new NnsErrors(checked.errors);
  const settings = checked.settings;
  const result = await decode(mc, {
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
