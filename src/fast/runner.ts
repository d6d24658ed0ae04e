/**
 * Where the fast path's graphs run. The fast path's planner turns a trace into feeds and
 * fetches of two kinds of static models: the instrumented model (ports at module
 * boundaries, src/fast/ports.ts) and the standalone module models (src/fast/module-model.ts).
 * A {@link FastRunner} runs them: locally on onnxruntime sessions ({@link localRunner}, the
 * default), or on any server that serves those same models (src/fast/oip-runner.ts: the
 * Open Inference Protocol v2, as NVIDIA Triton, KServe and `nns serve` speak it).
 * @module
 */
import type { ModelContext } from '../compile.js';
import type { Tensor } from '../tensor.js';
import type { FastExecutor } from './execute.js';
import { gateFeed, type TailRange } from './ports.js';

/** Runs the fast path's models: feeds in, the named fetches out. */
export interface FastRunner {
  /**
   * Runs the instrumented model. `tailRange`: the positions its in-model tail computes
   * (src/fast/tail.ts `SelectedTail`; local runs only, the executor never asks a server).
   */
  runPorted(feeds: Readonly<Record<string, Tensor>>, fetch: readonly string[], tailRange?: TailRange, opts?: PortedRunOptions): Promise<Record<string, Tensor>>;
  /** Runs the standalone model of module `path` (a closed module). */
  runModule(path: string, feeds: Readonly<Record<string, Tensor>>, fetch: readonly string[]): Promise<Record<string, Tensor>>;
  /**
   * Set when the models run somewhere the compiled path cannot follow (a remote server):
   * the description of that place (`OIP server http://host:8000, model gpt2`). Traces the
   * fast path cannot run then fail instead of being compiled and run locally.
   */
  readonly exclusive?: string;
}

/** Options of one run of the instrumented model. */
export interface PortedRunOptions {
  /**
   * On a backend that keeps one copy of the weights, run without prepacking unless the
   * prepacked session is open (a gradient's forward rows: the gradient's session releases a
   * prepacked one right after, so one built for them would serve one run).
   */
  spare?: boolean;
}

/** Makes the runner of an executor (called once, in the executor's constructor). */
export type RunnerFactory = (exec: FastExecutor, mc: ModelContext) => FastRunner;

/**
 * The default: one prepacked, pinned onnxruntime session per graph, in this process. Runs of
 * the instrumented model open its output gate for the fetched outputs only (src/fast/ports.ts
 * `gateOutputs`); a server (oip-runner) computes every output, as its model declares no gate.
 */
export const localRunner: RunnerFactory = (exec, mc) => ({
  async runPorted(feeds, fetch, tailRange, opts) {
    return mc.backend.run(await (opts?.spare ? exec.spareSession() : exec.session()), { ...feeds, ...gateFeed(exec.ported, fetch, tailRange) }, fetch);
  },
  async runModule(path, feeds, fetch) {
    return mc.backend.run(await exec.modules.session(path), feeds, fetch);
  },
});
