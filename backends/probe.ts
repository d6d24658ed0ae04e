/**
 * The default probe of boundary-type inference (src/model/shapes.ts): runs a model once on
 * onnxruntime-node, one session per call (nothing is cached).
 * @module
 */
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import type { DType } from '../src/model/types.js';
import type { ProbeData, ProbeRunner, ProbeTensor } from '../src/model/shapes.js';
import { encodeModel } from '../src/onnx/serde.js';
import { trimNativeHeap } from './malloc-trim.js';
import { ORT_QUIET } from './ort.js';

/**
 * The default probe: onnxruntime-node, one session per call (nothing is cached).
 * @param modelDir folder holding the model's external weights file, when it has one
 */
export function createOrtProbe(modelDir?: string): ProbeRunner {
  return async (model, feeds, fetch) => {
    const bytes = model instanceof Uint8Array ? model : encodeModel(model);
    // One-shot: no prepacking (it would cost seconds and ~weights-size memory for a big model).
    const extra: Record<string, string> = { disable_prepacking: '1' };
    if (modelDir) extra.model_external_initializers_file_folder_path = path.resolve(modelDir);
    const options: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'disabled', logSeverityLevel: ORT_QUIET, extra: { session: extra } };
    const session = await ort.InferenceSession.create(bytes, options);
    try {
      const inputs: Record<string, ort.Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) {
        if (t.dtype === 'bfloat16') throw new Error(`probe: cannot feed bfloat16 input '${name}' to onnxruntime-node`);
        inputs[name] = new ort.Tensor(t.dtype, t.data, [...t.dims]);
      }
      const res = await session.run(inputs, [...fetch], { logSeverityLevel: ORT_QUIET });
      const out: Record<string, ProbeTensor> = {};
      for (const [name, t] of Object.entries(res)) out[name] = { dtype: t.type as DType, dims: [...t.dims], data: t.data as ProbeData };
      return out;
    } finally {
      await session.release();
      // The probe ran the whole model: its tensors' pages go back before the model's own sessions allocate.
      trimNativeHeap();
    }
  };
}

