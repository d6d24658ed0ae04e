/**
 * Generation on `nns serve`: a {@link GenerationTarget} whose decode loop runs on the server.
 * The front ends (`.nns` generate blocks, `LanguageModel.generate` / `stream`) lower every
 * step here, against the served model's module tree, into step templates (a generation job,
 * src/generate/job.ts); the server runs the same decode loop as a local run and reports each
 * token as it is chosen, then the per-step saves come back bit for bit.
 * @module
 */
import type { DecodeRequest, DecodeResult, GenerationTarget } from '../generate/decode.js';
import { configMaxPositions } from '../generate/decode.js';
import { lowerGenerationJob } from '../generate/job.js';
import type { ProgressCallback } from '../progress.js';
import type { ClientModel } from '../serve/model-info.js';
import type { RemoteClient } from './client.js';

/**
 * A generation target on a server: `name` served by `client`. Engine options of the request
 * (`run`) stay on this side: the server compiles with its own defaults.
 */
export function remoteTarget(client: RemoteClient, name: string, model: ClientModel, opts: { source?: string; onProgress?: ProgressCallback } = {}): GenerationTarget {
  return {
    tree: model.tree,
    maxPositions: configMaxPositions(model.config),
    ...(model.tokenizer ? { tokenizer: model.tokenizer } : {}),
    source: opts.source ?? name,
    decode: async (req: DecodeRequest): Promise<DecodeResult> => {
      const lowered = lowerGenerationJob({ prompts: req.prompts, options: req.options, build: req.build, tree: model.tree, ...(req.file !== undefined ? { file: req.file } : {}) });
      const { saves, result } = await client.generate(name, lowered, req.onToken, opts.onProgress);
      return {
        ids: result.ids,
        newIds: result.ids.map((r, i) => r.slice(req.prompts[i]!.length)),
        steps: result.steps,
        saves,
        mode: result.mode,
      };
    },
  };
}
