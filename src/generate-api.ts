/**
 * Generation from TypeScript: `model.generate(prompt, { maxNewTokens }, (m, g) => { ... })`.
 * The callback describes one step; it runs once per step (and once more before the first,
 * to collect the prompts), so it must only build interventions. Statements in it run at
 * every step; `g.at(S, () => ...)` / `g.range(A, B, () => ...)` only at those steps; saves
 * come back per step as `NAME.S`; `g.generator.output.save(NAME)` saves a row's finished
 * token sequence. With a key/value cache, module values at step s ≥ 1 cover the new position
 * only (NNsight's semantics); without one, the same is emulated while recomputing.
 * @module
 */
import { NnsError } from './errors.js';
import type { RunOptions } from './engine.js';
import type { DecodeResult, GenerateOptions, GenerationTarget, TokenEvent } from './generate/decode.js';
import { idsTensor } from './generate/nns.js';
import { StepBuilder } from './generate/step-builder.js';
import type { Tensor } from './tensor.js';
import { callSite, moduleProxy, type ModelRef, type TraceContext } from './trace.js';

const STEP_SPAN = { file: '<api>', line: 1, col: 1, endLine: 1, endCol: 2, offset: 0, endOffset: 0 };

/** A prompt: text (tokenized with the model's tokenizer) or token ids. */
export type GeneratePrompt = string | readonly number[];

/** A token as it is generated, with its text. */
export interface GeneratedToken extends TokenEvent {
  /** The token's text (empty without a tokenizer). */
  text: string;
}

/** Options of {@link generateWith}. */
export interface GenerateCallOptions extends GenerateOptions {
  /** Called with every token as soon as it is chosen. */
  onToken?: (t: GeneratedToken) => void;
  /** Engine options of every step (`fast: false` forces compiled graphs, ...). */
  run?: RunOptions;
}

/** The handle of the step being built. */
export interface GenerationStep {
  /** The step being built (0 = the pass over the prompt). */
  readonly step: number;
  /** Runs `fn` (interventions) only at step `s` (0 ≤ s < maxNewTokens). */
  at(s: number, fn: () => void): void;
  /** Runs `fn` only at steps `from` ≤ s < `to`. */
  range(from: number, to: number, fn: () => void): void;
  /** `model.generator.output`: the finished token sequence of the current prompt's row. */
  readonly generator: { readonly output: { save(name: string): void } };
}

/** Adds invokes in a batched generate. */
export interface GenerateTracer {
  /** One prompt = one batch row; inside `fn`, module references mean this row. */
  invoke(prompt: GeneratePrompt, fn: (m: ModelRef) => void): void;
  /** The whole batch. */
  readonly model: ModelRef;
}

/** What a generation returns. */
export interface GenerateResult {
  /** Per row: prompt ids followed by the generated ids. */
  ids: number[][];
  /** Per row: the generated ids. */
  newIds: number[][];
  /** Per row: the generated text (empty strings without a tokenizer). */
  text: string[];
  /** Saves: per step as `NAME.S`; generator saves by name (int64 `[1, n]`). */
  saves: Record<string, Tensor>;
  /** Steps run (fewer than maxNewTokens when every row stopped at end-of-text). */
  steps: number;
  /** `cache` (the model's key/value cache) or `recompute` (the whole sequence each step). */
  mode: 'cache' | 'recompute';
}

/** A single-prompt step callback. */
export type StepFn = (m: ModelRef, g: GenerationStep) => void;
/** A batched step callback. */
export type BatchStepFn = (tr: GenerateTracer, g: GenerationStep) => void;

/**
 * Runs a generation on `target` (the implementation of `LanguageModel.generate`): an opened
 * model (`localTarget(mc)`) or a server, which runs the same decode loop.
 * @param tokenize turns a prompt into ids
 */
export async function generateWith(
  target: GenerationTarget, tokenize: (p: GeneratePrompt) => number[], prompt: GeneratePrompt | null,
  opts: GenerateCallOptions, fn: StepFn | BatchStepFn,
): Promise<GenerateResult> {
  const n = opts.maxNewTokens;
  if (!Number.isSafeInteger(n) || n < 1) throw new NnsError('bad-option', `maxNewTokens must be an integer >= 1, got ${n}`, { kind: 'usage', span: callSite() });
  const generatorSaves: { name: string; row: number }[] = [];
  const build = (b: StepBuilder, step: number, rows: number[][] | undefined, record: boolean): Map<string, Tensor> => {
    const ctx: TraceContext = { builder: b, tree: target.tree, saved: new Map(), host: new Map() };
    let inStep = false;
    let invokes = 0;
    let inInvoke = prompt !== null;
    const check = (from: number, to: number): void => {
      if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to > n || from >= to) {
        throw new NnsError('bad-step', `steps ${from}..${to} are outside 0..${n} (maxNewTokens=${n}: the steps are 0 to ${n - 1})`, { kind: 'usage', span: callSite() });
      }
      if (inStep) throw new NnsError('nested-step', 'a step block cannot contain another step block', { kind: 'usage', span: callSite() });
    };
    const within = (from: number, to: number, f: () => void): void => {
      check(from, to);
      if (step < from || step >= to) return;
      inStep = true;
      try {
        f();
      } finally {
        inStep = false;
      }
    };
    const g: GenerationStep = {
      step,
      at: (s, f) => within(s, s + 1, f),
      range: (a, z, f) => within(a, z, f),
      generator: {
        output: {
          save: (name: string) => {
            if (inStep) throw new NnsError('generator-in-step', 'generator.output is not a per-step value: save it outside step blocks', { kind: 'usage', span: callSite() });
            if (!inInvoke) throw new NnsError('generator-outside-invoke', "generator.output is one prompt's sequence: save it inside an invoke", { kind: 'usage', span: callSite() });
            if (record) generatorSaves.push({ name, row: b.graph.scopes[b.scope]!.rowStart });
          },
        },
      },
    };
    const invoke = (p: GeneratePrompt, f: (m: ModelRef) => void): void => {
      if (inStep) throw new NnsError('invoke-in-step', 'an invoke cannot be inside a step block: every step runs the same prompts', { kind: 'usage', span: callSite() });
      const tokens = rows?.[invokes] ?? tokenize(p);
      invokes++;
      const scope = b.addInvoke(tokens, rows ? STEP_SPAN : callSite(), typeof p === 'string' ? p : undefined);
      const outer = b.scope;
      b.scope = scope;
      const wasIn = inInvoke;
      inInvoke = true;
      try {
        f(moduleProxy(ctx, ''));
      } finally {
        b.scope = outer;
        inInvoke = wasIn;
      }
    };
    if (prompt !== null) invoke(prompt, (m) => (fn as StepFn)(m, g));
    else (fn as BatchStepFn)({ invoke, get model() { return moduleProxy(ctx, ''); } }, g);
    return ctx.host;
  };
  // A first build collects the prompts (and reports misuse before anything runs).
  const dry = new StepBuilder({ file: '<api>', tree: target.tree });
  build(dry, 0, undefined, true);
  const prompts = dry.graph.scopes.slice(1).map((s) => s.tokens ?? []);
  if (prompts.length === 0) throw new NnsError('no-prompt', 'this generate has no prompt: call tr.invoke(prompt, fn)', { kind: 'usage', span: callSite() });
  const tok = target.tokenizer;
  const result: DecodeResult = await target.decode({
    prompts,
    options: opts,
    file: '<api>',
    run: opts.run,
    onToken: opts.onToken ? (e) => opts.onToken!({ ...e, text: tok ? tok.tokenToString(e.token) : '' }) : undefined,
    build: (b, step, rows) => ({ host: build(b, step, rows, false) }),
  });
  const saves: Record<string, Tensor> = Object.fromEntries(result.saves);
  for (const s of generatorSaves) saves[s.name] = idsTensor(result.ids[s.row]!);
  return {
    ids: result.ids, newIds: result.newIds, text: result.newIds.map((ids) => (tok ? tok.decode(ids) : '')),
    saves, steps: result.steps, mode: result.mode,
  };
}

/**
 * Streams a generation's tokens as an async iterator; `result` resolves to the whole
 * {@link GenerateResult} once the iterator is done (it rejects with the generation's error).
 */
export function streamWith(run: (onToken: (t: GeneratedToken) => void) => Promise<GenerateResult>): AsyncIterable<GeneratedToken> & { result: Promise<GenerateResult> } {
  const queue: GeneratedToken[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: unknown;
  const result = run((t) => {
    queue.push(t);
    wake?.();
  });
  result.then(() => { finished = true; wake?.(); }, (e: unknown) => { finished = true; failure = e; wake?.(); });
  result.catch(() => undefined); // surfaced through the iterator and `result`
  return {
    result,
    async *[Symbol.asyncIterator](): AsyncGenerator<GeneratedToken> {
      for (;;) {
        if (queue.length) {
          yield queue.shift()!;
          continue;
        }
        if (finished) {
          if (failure !== undefined) throw failure;
          return;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
  };
}
