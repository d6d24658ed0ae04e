/**
 * The models a server holds: name, path (never sent to a client), the info clients lower
 * scripts with, and — for a route module that needs the model in the server process — the
 * opened model, on first use. `nns serve`'s own routes never open one there: jobs, Open
 * Inference Protocol requests and their metadata all go to the worker process.
 * @module
 */
import type { ModelContext } from '../compile.js';
import type { ModelInfoJSON } from './model-info.js';

/** One served model. */
export interface ServedModel {
  /** NAME of `--model NAME=PATH`. */
  readonly name: string;
  /** Absolute model folder or `.onnx` file (never sent to clients). */
  readonly path: string;
  /** Module tree, config and tokenizer, as `GET /models/NAME` sends them. */
  readonly info: ModelInfoJSON;
  /** The model opened in the server process (first call opens it; cached). Jobs, and the OIP endpoints, use the worker's instead. */
  context(): Promise<ModelContext>;
}

/** The served models by name. */
export interface ModelRegistry {
  /** Names in `--model` order. */
  names(): string[];
  /** A model by name. */
  get(name: string): ServedModel | undefined;
}

/** A registry over a fixed list; `open` opens a model in this process on first use. */
export function makeRegistry(models: readonly { name: string; path: string; info: ModelInfoJSON }[], open: (path: string) => Promise<ModelContext>): ModelRegistry {
  const byName = new Map<string, ServedModel>();
  for (const m of models) {
    let ctx: Promise<ModelContext> | undefined;
    byName.set(m.name, { name: m.name, path: m.path, info: m.info, context: () => (ctx ??= open(m.path)) });
  }
  return { names: () => [...byName.keys()], get: (n) => byName.get(n) };
}
