/**
 * The default compilation pipeline: one ordered array, one comment per entry.
 * @module
 */
import type { Pass } from './pass.js';
import { resolveModulesPass } from './resolve-modules.js';
import { inferTypesPass } from './infer-types.js';
import { checkSizesPass } from './check-sizes.js';
import { narrowRowsPass } from './narrow-rows.js';
import { foldConstantsPass } from './fold-constants.js';
import { csePass } from './cse.js';
import { dcePass } from './dce.js';
import { lowerOnnxPass } from './lower-onnx.js';
import { applyModulesPass } from './apply-modules.js';
import { saveOutputsPass } from './save-outputs.js';
import { fetchSavesPass } from './fetch-saves.js';
import { sinkSlicesPass } from './sink-slices.js';
import { prunePass } from './prune.js';
import { toposortPass } from './toposort.js';
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
  foldConstantsPass, //  evaluate operations on literals
  csePass, //            merge identical pure operations (never across a set of the same module value)
  dcePass, //            drop pure operations nothing uses (saves and sets stay)
];

/** IR → rewritten ONNX model (after {@link irPipeline}). */
export const onnxPipeline: readonly Pass[] = [
  lowerOnnxPass, //      splice into the ONNX graph: reads, sets (whole, slice, per invoke) rewire consumers, host values → inputs
  applyModulesPass, //   module application: clone each called module's nodes onto the new inputs, fresh names
  saveOutputsPass, //    saved values become graph outputs named by their save names
  fetchSavesPass, //     run variants (keepModelOutputs false): drop the model's own outputs no save needs
  sinkSlicesPass, //     Gather/Slice on a non-last axis moved above position-wise nodes (lm_head on the saved positions only)
  prunePass, //          drop nodes no graph output needs
  toposortPass, //       ONNX order; a cycle is an intervention that needs a later module's value
  checkModelPass, //     unique names, SSA, every input defined, opset and IR version present
];

/** The whole pipeline, IR to rewritten ONNX model. */
export const defaultPipeline: readonly Pass[] = [...irPipeline, ...onnxPipeline];
