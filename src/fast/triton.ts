/**
 * `nns export-serving MODEL -o DIR`: the fast path's models as an NVIDIA Triton Inference
 * Server model repository (also what KServe's Triton runtime serves):
 *
 * ```
 * DIR/
 *   NAME.ports/                  the instrumented model (ports at module boundaries)
 *     config.pbtxt               platform onnxruntime_onnx, max_batch_size 0, inputs/outputs
 *     1/model.onnx               the graph (weights external)
 *     1/weights-<sha256:16>.data the weights: a hard link, one file on disk for every folder
 *   NAME.module.transformer.ln_f/  one per closed module (module applications)
 *   ...
 *   NAME/                        the unmodified model (with --plain)
 * ```
 *
 * Each graph references its weights by a plain file name in its own version folder:
 * onnxruntime refuses external data outside the graph's folder (`../../weights.data`:
 * "External data path escapes model directory") and absolute locations, so every version
 * folder holds a hard link to one weights file (placed once in the repository: a hard link
 * to the model's cached weights, else one copy). One physical copy on disk, N names.
 * A repository copied to object storage (S3, GCS) holds N copies there: hard links do not
 * survive such copies.
 *
 * The output is atomic: everything is written into a temporary folder beside DIR and
 * renamed into place when complete (each model folder, when DIR is an existing repository);
 * on an error nothing stays. Nothing is ever written into the model's own folder.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ModelContext } from '../compile.js';
import { modelError, NnsError, usageError } from '../errors.js';
import { externalRef, allTensors } from '../onnx/external.js';
import { encodeRelocated, exportWeightsName, placeWeights } from '../model/export.js';
import { isStaleTemp, readManifest, sha256File, tempName } from '../model/cache.js';
import { locate } from '../model/load.js';
import type { DType } from '../tensor.js';
import type { FastExecutor } from './execute.js';
import { servedModels, type ServedModel, type ServedModules, type ServedTensor } from './serving.js';

/** Triton's `DataType` enum names (model_config.proto) by element type. */
export const TRITON_DATATYPE: Readonly<Record<DType, string>> = {
  bool: 'TYPE_BOOL', uint8: 'TYPE_UINT8', uint16: 'TYPE_UINT16', uint32: 'TYPE_UINT32', uint64: 'TYPE_UINT64',
  int8: 'TYPE_INT8', int16: 'TYPE_INT16', int32: 'TYPE_INT32', int64: 'TYPE_INT64',
  float16: 'TYPE_FP16', float32: 'TYPE_FP32', float64: 'TYPE_FP64', bfloat16: 'TYPE_BF16',
};

/** A string in protobuf text format (double quotes; `\\`, `"`, control characters escaped). */
function pbString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    if (ch === '"' || ch === '\\') out += `\\${ch}`;
    else if (ch === '\n') out += '\\n';
    else if (c < 0x20 || c === 0x7f) out += `\\${c.toString(8).padStart(3, '0')}`;
    else out += ch;
  }
  return `${out}"`;
}

function tensorBlock(t: ServedTensor, indent: string): string[] {
  const lines = [`${indent}{`, `${indent}  name: ${pbString(t.name)}`, `${indent}  data_type: ${TRITON_DATATYPE[t.dtype]}`];
  // Triton needs at least one dim: a scalar is dims [1] reshaped to [].
  if (t.dims.length === 0) lines.push(`${indent}  dims: [ 1 ]`, `${indent}  reshape: { shape: [ ] }`);
  else lines.push(`${indent}  dims: [ ${t.dims.join(', ')} ]`);
  lines.push(`${indent}}`);
  return lines;
}

/**
 * The config.pbtxt of a served model (protobuf text format of Triton's `ModelConfig`):
 * platform `onnxruntime_onnx`, `max_batch_size: 0` (the batch is part of each tensor's
 * dims; the fast path sends whole batches), every input and output with its data type and
 * dims (`-1` where the graph's dim is symbolic), and onnsight's description in `parameters`.
 */
export function tritonConfig(m: ServedModel, about: { modelId: string; source: string }): string {
  const list = (field: string, ts: readonly ServedTensor[]): string[] => {
    if (!ts.length) return [];
    const blocks = ts.map((t) => tensorBlock(t, '  '));
    blocks.forEach((b, i) => { if (i < blocks.length - 1) b[b.length - 1] += ','; });
    return [`${field} [`, ...blocks.flat(), ']'];
  };
  const params: [string, string][] = [
    ['onnsight.kind', m.kind], ...(m.module ? [['onnsight.module', m.module] as [string, string]] : []),
    // The instrumented model stops before the tail (lm_head): which output feeds its module model.
    ...(m.tail ? [['onnsight.tail_module', m.tail.module], ['onnsight.tail_input', m.tail.from]] as [string, string][] : []),
    ['onnsight.model_id', about.modelId],
  ];
  const what = m.kind === 'ports' ? 'the instrumented model (ports at module boundaries)' : m.kind === 'module' ? `the standalone model of module ${m.module}` : 'the unmodified model';
  return [
    `# Written by nns export-serving (onnsight): ${what} of ${path.basename(about.source)}.`,
    `name: ${pbString(m.name)}`,
    'platform: "onnxruntime_onnx"',
    'max_batch_size: 0',
    ...list('input', m.inputs),
    ...list('output', m.outputs),
    ...params.map(([k, v]) => `parameters { key: ${pbString(k)} value { string_value: ${pbString(v)} } }`),
    '',
  ].join('\n');
}

/** Options of {@link exportServing}. */
export interface ServingExportOptions {
  /** The models' base name (default: {@link defaultServingName} of the source). */
  name: string;
  /** Which module models (default all closed modules). */
  modules?: ServedModules;
  /** Also the unmodified model, named `NAME`. */
  plain?: boolean;
}

/**
 * What `LanguageModel.exportServing` (`nns export-serving`) wrote.
 * @category Serving
 */
export interface ServingExportResult {
  /** The repository folder. */
  dir: string;
  /** The model folders written, in order. */
  models: { name: string; kind: ServedModel['kind']; module?: string }[];
  /** The weights files: name, size, and how the one physical copy was placed (`linked` to the cache's file, or `copied`). */
  weights: { file: string; bytes: number; how: 'linked' | 'copied' }[];
  /** Version folders that got a hard link to a weights file (copies, when links failed: `copies`). */
  links: number;
  /** Extra copies made because the file system refused hard links (0 normally). */
  copies: number;
}

function inside(child: string, parent: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function sweepStages(parent: string, base: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(parent);
  } catch {
    return;
  }
  const prefix = `.${base}.`;
  for (const n of names) {
    if (!n.startsWith(prefix)) continue;
    const tmp = n.slice(prefix.length);
    try {
      if (/^\.tmp-/.test(tmp) && isStaleTemp(tmp, fs.lstatSync(path.join(parent, n)).mtimeMs)) fs.rmSync(path.join(parent, n), { recursive: true, force: true });
    } catch {
      // gone meanwhile
    }
  }
}

function ioError(e: unknown, what: string): NnsError {
  if (e instanceof NnsError) return e;
  const code = (e as NodeJS.ErrnoException).code;
  return usageError('cannot-write', `cannot write ${what}: ${code === 'ENOSPC' ? 'the disk is full' : code ?? (e as Error).message}`);
}

/** Writes the Triton model repository (see the module comment). */
export function exportServing(exec: FastExecutor, mc: ModelContext, outDir: string, opts: ServingExportOptions): ServingExportResult {
  const dir = path.resolve(outDir);
  const { graphFile, metaDir } = locate(mc.loaded.source);
  for (const own of new Set([metaDir, path.dirname(graphFile)])) {
    if (inside(dir, own)) throw usageError('serving-into-model', `'${outDir}' is inside the model's folder ${own}; write the repository somewhere else (nothing is ever written into a model's folder)`);
  }
  if (inside(dir, mc.loaded.dir)) throw usageError('serving-into-model', `'${outDir}' is inside onnsight's cache; write the repository somewhere else`);
  const parent = path.dirname(dir);
  if (!fs.existsSync(parent) || !fs.statSync(parent).isDirectory()) throw usageError('cannot-write', `cannot write '${outDir}': folder '${path.dirname(outDir)}' does not exist`);
  const exists = fs.existsSync(dir);
  if (exists && !fs.statSync(dir).isDirectory()) throw usageError('cannot-write', `cannot write '${outDir}': it is a file, not a folder`);

  const models = servedModels(exec, mc, opts.name, { ...(opts.modules ? { modules: opts.modules } : {}), ...(opts.plain ? { plain: true } : {}) });
  if (exists) {
    const clash = models.filter((m) => fs.existsSync(path.join(dir, m.name))).map((m) => m.name);
    if (clash.length) throw usageError('serving-exists', `'${outDir}' already has ${clash.length === 1 ? 'a model folder' : 'model folders'} ${clash.slice(0, 3).join(', ')}${clash.length > 3 ? `, ... (${clash.length})` : ''}`, ['remove them, or choose another name with --name']);
  }

  // Weights: every external location of the served graphs, named by content.
  const weightsDir = mc.loaded.externalDataDir ?? mc.loaded.dir;
  const known = new Map((readManifest(mc.loaded.dir)?.weights ?? []).map((w) => [w.file, w.sha256]));
  const locations = new Map<string, string>(); // location → weights file name
  const shas = new Map<string, string>();
  const used = new Map<ServedModel, string[]>();
  for (const m of models) {
    const locs = [...new Set(allTensors(m.proto).map((s) => externalRef(s.tensor)?.location).filter((l): l is string => !!l))];
    used.set(m, locs);
    for (const l of locs) {
      if (locations.has(l)) continue;
      const sha = known.get(l) ?? sha256File(path.join(weightsDir, l));
      shas.set(l, sha);
      locations.set(l, exportWeightsName(sha));
    }
  }

  sweepStages(parent, path.basename(dir));
  const stage = path.join(parent, `.${path.basename(dir)}.${tempName()}`);
  const result: ServingExportResult = { dir, models: [], weights: [], links: 0, copies: 0 };
  const moved: string[] = [];
  try {
    fs.mkdirSync(stage);
    const master = path.join(stage, '.weights');
    fs.mkdirSync(master);
    for (const [loc, name] of locations) {
      const src = path.join(weightsDir, loc);
      const how = placeWeights(src, path.join(master, name), shas.get(loc)!);
      result.weights.push({ file: name, bytes: fs.statSync(src).size, how: how === 'linked' ? 'linked' : 'copied' });
    }
    for (const m of models) {
      const version = path.join(stage, m.name, '1');
      fs.mkdirSync(version, { recursive: true });
      for (const loc of used.get(m)!) {
        const name = locations.get(loc)!;
        try {
          fs.linkSync(path.join(master, name), path.join(version, name));
          result.links++;
        } catch {
          fs.copyFileSync(path.join(master, name), path.join(version, name), fs.constants.COPYFILE_FICLONE);
          result.copies++;
        }
      }
      fs.writeFileSync(path.join(version, 'model.onnx'), encodeRelocated(m.proto, locations));
      fs.writeFileSync(path.join(stage, m.name, 'config.pbtxt'), tritonConfig(m, { modelId: mc.loaded.id, source: mc.loaded.source }));
      result.models.push({ name: m.name, kind: m.kind, ...(m.module ? { module: m.module } : {}) });
    }
    fs.rmSync(master, { recursive: true, force: true });
    if (!exists) {
      fs.renameSync(stage, dir);
    } else {
      for (const m of models) {
        fs.renameSync(path.join(stage, m.name), path.join(dir, m.name));
        moved.push(path.join(dir, m.name));
      }
      fs.rmSync(stage, { recursive: true, force: true });
    }
  } catch (e) {
    for (const p of moved) fs.rmSync(p, { recursive: true, force: true });
    fs.rmSync(stage, { recursive: true, force: true });
    if (e instanceof NnsError && e.code === 'export-weights') throw modelError('export-weights', e.message.replace(/next to .*?:/, `into '${outDir}':`), e.notes);
    throw ioError(e, `the model repository '${outDir}'`);
  }
  return result;
}
