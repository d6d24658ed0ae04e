/**
 * The options of a `generate` statement (`max_new_tokens=6 stop_at_eos=false ...`): checked
 * and turned into {@link GenerateSettings}, with located errors (unknown options get a
 * suggestion).
 * @module
 */
import { NnsError, type Span } from '../src/errors.js';
import { suggest } from '../src/suggest.js';
import type * as A from './ast.js';
import { constNumber } from './consteval.js';
import { Env } from './scope.js';

/** The checked options of a generate (names as in the language). */
export interface GenerateSettings {
  /** `max_new_tokens` (required, ≥ 1). */
  maxNewTokens: number;
  /** `stop_at_eos` (default true). */
  stopAtEos: boolean;
  /** `do_sample` (default false: greedy). */
  doSample: boolean;
  /** `temperature` (> 0). */
  temperature?: number;
  /** `top_k` (≥ 1). */
  topK?: number;
  /** `seed` (integer ≥ 0). */
  seed?: number;
}

/** The option names a generate takes. */
export const GENERATE_OPTIONS = ['max_new_tokens', 'stop_at_eos', 'do_sample', 'temperature', 'top_k', 'seed'] as const;

/**
 * Checks the options of `gen`. `maxPositions` (the model's positions, when known) and
 * `promptLength` (the longest prompt) bound max_new_tokens: the passes cover at most
 * `promptLength + max_new_tokens - 1` positions.
 * @returns the settings (undefined when an error was found) and every error.
 */
export function generateSettings(gen: A.GenerateStmt, maxPositions?: number, promptLength?: number): { settings?: GenerateSettings; errors: NnsError[] } {
  const errors: NnsError[] = [];
  const env = new Env();
  const seen = new Map<string, Span>();
  const got: Partial<GenerateSettings> = {};
  const bool = (o: A.GenerateOption): boolean | undefined => {
    if (o.value.kind === 'Bool') return o.value.value;
    errors.push(new NnsError('bad-option', `${o.name} is true or false`, { span: o.value.span }));
    return undefined;
  };
  const num = (o: A.GenerateOption, int: boolean, ok: (v: number) => boolean, want: string): number | undefined => {
    let v: number | undefined;
    try {
      v = constNumber(o.value, env);
    } catch {
      v = undefined;
    }
    if (v === undefined || !Number.isFinite(v) || (int && !Number.isSafeInteger(v)) || !ok(v)) {
      errors.push(new NnsError('bad-option', `${o.name} must be ${want}`, { span: o.value.span }));
      return undefined;
    }
    return v;
  };
  for (const o of gen.options) {
    const prev = seen.get(o.name);
    if (prev) {
      errors.push(new NnsError('duplicate-option', `the option ${o.name} is given twice`, { span: o.nameSpan, notes: [`first given at ${prev.file}:${prev.line}:${prev.col}`] }));
      continue;
    }
    seen.set(o.name, o.nameSpan);
    switch (o.name) {
      case 'max_new_tokens': {
        const v = num(o, true, (x) => x >= 1, 'an integer >= 1 (the number of new tokens)');
        if (v === undefined) break;
        if (maxPositions !== undefined && promptLength !== undefined && promptLength + v - 1 > maxPositions) {
          errors.push(new NnsError('too-long', `the prompt (${promptLength} tokens) and max_new_tokens=${v} need ${promptLength + v - 1} positions, but the model has ${maxPositions}`, { span: o.value.span, notes: [`use max_new_tokens=${Math.max(1, maxPositions - promptLength + 1)} or less`] }));
          break;
        }
        got.maxNewTokens = v;
        break;
      }
      case 'stop_at_eos': got.stopAtEos = bool(o); break;
      case 'do_sample': got.doSample = bool(o); break;
      case 'temperature': got.temperature = num(o, false, (x) => x > 0, 'a number > 0'); break;
      case 'top_k': got.topK = num(o, true, (x) => x >= 1, 'an integer >= 1'); break;
      case 'seed': got.seed = num(o, true, (x) => x >= 0, 'an integer >= 0'); break;
      default: {
        const near = suggest(o.name, GENERATE_OPTIONS);
        errors.push(new NnsError('unknown-option', `generate has no option '${o.name}'${near ? `; did you mean '${near}'?` : ''}`, { span: o.nameSpan, notes: [`the options are ${GENERATE_OPTIONS.join(', ')}`] }));
      }
    }
  }
  if (!seen.has('max_new_tokens')) {
    errors.push(new NnsError('missing-option', 'generate needs max_new_tokens=N (how many tokens to generate)', { span: gen.headerSpan }));
  }
  if (errors.length) return { errors };
  return { settings: { maxNewTokens: got.maxNewTokens!, stopAtEos: got.stopAtEos ?? true, doSample: got.doSample ?? false, temperature: got.temperature, topK: got.topK, seed: got.seed }, errors };
}
