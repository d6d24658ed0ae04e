/**
 * `nns run SCRIPT --remote URL --model NAME`: the script is checked and lowered here, with
 * the served model's module tree and tokenizer, exactly as a local run lowers it; each
 * trace goes to the server as its IR's JSON form plus the saves of earlier traces it reads;
 * each generate block as a generation job (its steps' IR templates, src/generate/job.ts),
 * whose tokens stream back as the server chooses them; the saves come back bit for bit. What is printed and written is then what a local run
 * prints and writes. Errors the server's checks find carry their spans and are shown
 * against the local script text.
 * @module
 */
import type { Script } from '../../grammar/ast.js';
import { lowerTrace, type HostValueInfo } from '../../grammar/lower.js';
import { bindParams, checkTopLevel, paramDecls, runnables } from '../../grammar/script.js';
import { NnsErrors } from '../errors.js';
import { vocabSizeOf } from '../model/token-ids.js';
import { tokenizeWith } from '../model/tokenizer.js';
import type { ProgressCallback } from '../progress.js';
import { promptsOf, type PromptInfo } from '../report/families.js';
import type { Tensor } from '../tensor.js';
import { RemoteClient, type RemoteOptions } from './client.js';
import { runGenerateWithText, type GenerateTextOutput } from '../generate/nns.js';
import { remoteTarget } from './generate.js';

/** A script to run remotely. */
export interface RemoteScriptJob {
  /** The script's file name as the user gave it (used in spans). */
  file: string;
  ast: Script;
  /** Progress of each trace on the server. */
  onProgress?: ProgressCallback;
  /** Values of the script's `param`s (`--param NAME=FILE`). */
  params?: ReadonlyMap<string, Tensor>;
  /** Where a param's value came from, for messages (default `--param NAME`). */
  paramSource?: (name: string) => string;
  /** Where generate blocks stream their text and notes (as a local run: stdout and stderr). */
  text?: GenerateTextOutput;
}

/** What {@link runScriptRemote} returns (the fields of a local run's output that printing and `--out` use). */
export interface RemoteRunOutput {
  results: Map<string, Tensor>;
  decoder?: { vocabSize: number; tokenToString(id: number): string };
  prompts: PromptInfo[];
}

/** Runs every trace of the script on the server, in order (saves of earlier traces are host values of later ones). */
export async function runScriptRemote(job: RemoteScriptJob, url: string, model: string, opts: RemoteOptions = {}): Promise<RemoteRunOutput> {
  const top = checkTopLevel(job.ast);
  if (top.length) throw new NnsErrors(top);
  const bound = bindParams(paramDecls(job.ast).decls, job.params ?? new Map(), job.paramSource ?? ((n) => `--param ${n}`));
  if (bound.errors.length) throw new NnsErrors(bound.errors);
  const params = bound.values;
  const client = new RemoteClient(url, opts);
  const m = await client.model(model);
  const results = new Map<string, Tensor>();
  const prompts: PromptInfo[] = [];
  const tok = m.tokenizer;
  // Params are host values of every trace (never printed or written: they are not saves).
  const hostValues = (): Map<string, Tensor> => new Map([...params, ...results]);
  for (const t of runnables(job.ast)) {
    if (t.kind === 'Generate') {
      // The same front end and text output as a local run; the decode loop runs on the server.
      const target = remoteTarget(client, model, m, { ...(job.onProgress ? { onProgress: job.onProgress } : {}) });
      const out = await runGenerateWithText(t, target, { file: job.file, tokenize: tokenizeWith(m.tokenizer), host: hostValues() }, job.text ?? { write: () => undefined, log: () => undefined });
      for (const [k, v] of out) results.set(k, v);
      continue;
    }
    const host = new Map<string, HostValueInfo>([...hostValues()].map(([k, v]) => [k, { dtype: v.dtype, shape: [...v.shape] }]));
    const lowered = lowerTrace(t, { file: job.file, tokenize: tokenizeWith(m.tokenizer), host, tree: m.tree, vocabSize: vocabSizeOf(m.config) });
    if (lowered.errors.length) throw new NnsErrors(lowered.errors);
    prompts.push(...promptsOf(lowered.graph, tok));
    const out = await client.run(model, lowered.graph, hostValues(), job.onProgress);
    for (const [k, v] of out) results.set(k, v);
  }
  const vocab = Number(m.config?.vocab_size);
  const decoder = tok && Number.isInteger(vocab) ? { vocabSize: vocab, tokenToString: (id: number) => tok.tokenToString(id) } : undefined;
  return { results, decoder, prompts };
}
