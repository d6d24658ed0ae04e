/**
 * Writing a rewritten model somewhere the user chose (`nns compile -o OUT.onnx`,
 * `LanguageModel.compile(...).write`): the graph goes to OUT.onnx atomically and the
 * weights it references appear next to it without copying — a hard link to the model's
 * one weights file (a copy-on-write clone, or as a last resort a copy, when the folders
 * are on different file systems). ONNX external data must sit beside the graph under a
 * relative name, so this is what makes OUT.onnx openable in Netron and runnable in ORT.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../onnx/serde.js';
import type { ModelProto, TensorProto, GraphProto } from '../onnx/proto.js';
import { modelError } from '../errors.js';
import type { LoadedModel } from './load.js';

/** What {@link exportModel} wrote. */
export interface ExportResult {
  /** The graph file. */
  graphPath: string;
  /** Weights files made available next to it (linked, cloned or copied), by location. */
  weights: { location: string; how: 'same-folder' | 'linked' | 'cloned' }[];
}

function externalTensors(g: GraphProto | undefined, out: TensorProto[]): TensorProto[] {
  if (!g) return out;
  for (const t of g.initializer ?? []) if (t.data_location === 1) out.push(t);
  for (const n of g.node ?? []) for (const a of n.attribute ?? []) {
    externalTensors(a.g, out);
    for (const sg of a.graphs ?? []) externalTensors(sg, out);
  }
  return out;
}

function same(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    return sa.ino === sb.ino && sa.dev === sb.dev;
  } catch {
    return false;
  }
}

/** Writes `proto` to `outPath` with its weights available beside it. Atomic for the graph file. */
export function exportModel(model: LoadedModel, proto: ModelProto, outPath: string): ExportResult {
  const outDir = path.dirname(path.resolve(outPath));
  const weightsDir = model.externalDataDir ?? model.dir;
  const locations = [...new Set(externalTensors(proto.graph, []).map((t) => t.external_data?.find((e) => e.key === 'location')?.value).filter((x): x is string => !!x))];
  const weights: ExportResult['weights'] = [];
  for (const loc of locations) {
    const src = path.join(weightsDir, loc);
    const dst = path.join(outDir, loc);
    if (path.resolve(weightsDir) === outDir || same(src, dst)) {
      weights.push({ location: loc, how: 'same-folder' });
      continue;
    }
    if (fs.existsSync(dst)) throw modelError('export-conflict', `cannot write the weights next to ${outPath}: '${dst}' exists and is a different file`);
    try {
      fs.linkSync(src, dst);
      weights.push({ location: loc, how: 'linked' });
    } catch {
      try {
        fs.copyFileSync(src, dst, fs.constants.COPYFILE_FICLONE);
        weights.push({ location: loc, how: 'cloned' });
      } catch (e) {
        throw modelError('export-weights', `cannot place the weights '${loc}' next to ${outPath}: ${(e as Error).message}`);
      }
    }
  }
  const tmp = path.join(outDir, `.${path.basename(outPath)}.tmp-${process.pid}`);
  try {
    fs.writeFileSync(tmp, encodeModel(proto));
    fs.renameSync(tmp, path.resolve(outPath));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw modelError('cannot-write', `cannot write '${outPath}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return { graphPath: path.resolve(outPath), weights };
}
