/**
 * The pipeline, as lists: every stage of compiling and running a trace, in order, one
 * comment per entry. `--print-ir-after-all` prints the state after each of them (the IR,
 * the rewritten model's changes, or the stage's own summary), `--print-ir-after=NAME`
 * after the named ones, and `--passes=a,b` runs a chosen subset ({@link selectPasses}).
 *
 * A run (src/engine.ts `runGraph`) goes: {@link irPipeline} → {@link executorStages} →
 * either the fast path (src/fast/: port feeds and fetches on the instrumented model, host
 * work) or {@link compiledStages} → {@link onnxPipeline} per chunk. `nns compile` and
 * `LanguageModel.compile` run {@link defaultPipeline}.
 * @module
 */
import { NnsError } from '../src/errors.js';
import { suggest } from '../src/suggest.js';
import type { Pass } from './pass.js';
import { resolveModulesPass } from './resolve-modules.js';
import { inferTypesPass } from './infer-types.js';
import { checkSizesPass } from './check-sizes.js';
import { narrowRowsPass } from './narrow-rows.js';
import { foldConstantsPass } from './fold-constants.js';
import { csePass } from './cse.js';
import { dcePass } from './dce.js';
import { dedupInvokesPass } from './dedup-invokes.js';
import { chooseExecutorPass, planFastPathPass } from './choose-executor.js';
import { liftConstantsPass } from './lift-constants.js';
import { splitBatchPass } from './split-batch.js';
import { lowerOnnxPass } from './lower-onnx.js';
import { applyModulesPass } from './apply-modules.js';
import { autodiffPass } from './autodiff.js';
import { saveOutputsPass } from './save-outputs.js';
import { fetchSavesPass } from './fetch-saves.js';
import { sinkSlicesPass } from './sink-slices.js';
import { prunePass } from './prune.js';
import { toposortPass } from './toposort.js';
import { functionsPass } from './functions.js';
import { typeInsertedPass } from './type-inserted.js';
import { checkModelPass } from './check-model.js';

/** Passes that only read and rewrite the IR (enough for `nns check`). */
export const checkPipeline: readonly Pass[] = [
  resolveModulesPass, // module paths, params and graph outputs → the model's module tree; unknown names suggest the nearest
  narrowRowsPass, //     a whole-batch read or set of one row (`output[0]`) → that row's invoke
  inferTypesPass, //     dtypes and symbolic shapes; shape errors name both shapes and point at the source
  checkSizesPass, //     every computed value within the size budget (ONNSIGHT_MAX_VALUE_MB), before anything is allocated
];

/** Checks plus IR optimizations: the IR the fast path (ports) and the compiler both start from. */
export const irPipeline: readonly Pass[] = [
  ...checkPipeline,
  foldConstantsPass, //  evaluate operations on literals (the op catalogue's host evaluator)
  csePass, //            merge identical pure operations (never across a set of the same module value)
  dcePass, //            drop pure operations nothing uses (saves and sets stay)
];

/** A run, after the IR pipeline: which executor runs the trace. */
export const executorStages: readonly Pass[] = [
  dedupInvokesPass, //   identical read-only invokes share one batch row (off with `dedup: false`)
  planFastPathPass, //   the fast-path plan: a partition of the IR into port feeds, fetches and host work, or why not
  chooseExecutorPass, // the fast path when planned, else the compiled path below
];

/** A run on the compiled path, before lowering. */
export const compiledStages: readonly Pass[] = [
  liftConstantsPass, //  literals → host inputs, so traces differing only in values share one compiled graph
  splitBatchPass, //     an over-budget batch → chunks (each lowered and run by itself)
];

/** IR → rewritten ONNX model (after {@link irPipeline}). */
export const onnxPipeline: readonly Pass[] = [
  lowerOnnxPass, //      splice into the ONNX graph: reads, sets (whole, slice, per invoke) rewire consumers, host values → inputs
  applyModulesPass, //   module application: clone each called module's nodes onto the new inputs, fresh names
  saveOutputsPass, //    saved values become graph outputs named by their save names
  fetchSavesPass, //     run variants (keepModelOutputs false): drop the model's own outputs no save needs
  sinkSlicesPass, //     Gather/Slice on a non-last axis moved above position-wise nodes (lm_head on the saved positions only; also a grad's Y)
  autodiffPass, //       grad(Y, X): reverse-mode sweep over the rewritten graph, one per Y (passes/derivatives.ts: one rule per ONNX op)
  prunePass, //          drop nodes no graph output needs
  toposortPass, //       ONNX order; a cycle is an intervention that needs a later module's value
  typeInsertedPass, //   `nns compile`: value_info (element type and shape) for every inserted value
  functionsPass, //      `nns compile`: each statement's inserted nodes → one call of an ONNX local function (ai.onnsight nns_set, ...)
  checkModelPass, //     unique names, SSA, every input defined, opset and IR version present
];

/** The whole compile pipeline, IR to rewritten ONNX model (`nns compile`). */
export const defaultPipeline: readonly Pass[] = [...irPipeline, ...onnxPipeline];

/** Every stage of a run, in the order a compiled run goes through them. */
export const runPipeline: readonly Pass[] = [...irPipeline, ...executorStages, ...compiledStages, ...onnxPipeline];

/** Names of every pass and stage. */
export const PASS_NAMES: readonly string[] = runPipeline.map((p) => p.name);

/**
 * The passes named in `names`, in that order (`--passes=a,b`).
 * @throws NnsError `unknown-pass` (kind usage) naming the nearest known pass.
 */
export function selectPasses(names: readonly string[]): Pass[] {
  return names.map((name) => {
    const p = runPipeline.find((x) => x.name === name);
    if (p) return p;
    const near = suggest(name, PASS_NAMES);
    throw new NnsError('unknown-pass', `no pass '${name}'${near ? `; did you mean '${near}'?` : ''}`, { kind: 'usage', notes: [`the passes are ${PASS_NAMES.join(', ')}`] });
  });
}
