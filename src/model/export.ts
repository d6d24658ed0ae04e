/**
 * Writing a rewritten model somewhere the user chose (`nns compile -o OUT.onnx`,
 * `LanguageModel.compile(...).write`): the graph goes to OUT.onnx atomically and the
 * weights it references appear next to it, named after their content
 * (`weights-<sha256:16>.data`), so exports of different models share one folder and exports
 * of the same model share one weights file. ONNX external data must sit beside the graph
 * under a relative name, so this is what makes OUT.onnx openable in Netron and runnable in ORT.
 *
 * The weights are placed without copying when possible — a hard link to the cache's file —
 * else copied (a copy-on-write clone where the file system offers it) into a temporary file
 * that is renamed into place only when complete: a full disk or a killed copy never leaves a
 * partial weights file under the final name, and an identical file already there (same size
 * and hash) is reused. On failure, whatever this export placed is removed again; temporary
 * files of dead exports into the same folder are swept.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../onnx/serde.js';
import { allTensors, externalRef } from '../onnx/external.js';
import type { ModelProto, StringStringEntryProto } from '../onnx/proto.js';
import { modelError, NnsError } from '../errors.js';
import { isStaleTemp, readManifest, sha256File, tempName } from './cache.js';
import type { LoadedModel } from './load.js';

/** How a weights file came to be next to an exported graph. */
export type WeightsPlacement = 'same-folder' | 'linked' | 'copied' | 'existing';

/**
 * What `LanguageModel.save` (`exportModel`) wrote.
 * @category Model
 */
export interface ExportResult {
  /** The graph file. */
  graphPath: string;
  /**
   * Weights files next to it, by location: `linked` (hard link, no copy), `copied`,
   * `existing` (an identical file was already there) or `same-folder` (the graph was
   * written beside the model's own weights).
   */
  weights: { location: string; how: WeightsPlacement }[];
}

function sameFile(a: string, b: string): boolean {
  try {
    const sa = fs.statSync(a);
    const sb = fs.statSync(b);
    return sa.ino === sb.ino && sa.dev === sb.dev;
  } catch {
    return false;
  }
}

/** The weights file name of an export: `weights-<first 16 hex digits of its sha256>.data`. */
export function exportWeightsName(sha256: string): string {
  return `weights-${sha256.slice(0, 16)}.data`;
}

/** Removes temporary graph and weights files of dead exports into `dir` (see cache.ts `isStaleTemp`). */
function sweepExportTemps(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^\.(.+?)\.(\.tmp-.+-\d+-[0-9a-f]{8})$/.exec(name);
    if (!m || !(/^weights-[0-9a-f]{16}\.data$/.test(m[1]!) || m[1]!.endsWith('.onnx'))) continue;
    try {
      if (isStaleTemp(m[2]!, fs.lstatSync(path.join(dir, name)).mtimeMs)) fs.rmSync(path.join(dir, name), { force: true });
    } catch {
      // gone meanwhile
    }
  }
}

/** True when `file` is a regular file of `size` bytes whose sha256 is `sha`. */
function identical(file: string, size: number, sha: string): boolean {
  try {
    const st = fs.statSync(file);
    return st.isFile() && st.size === size && sha256File(file) === sha;
  } catch {
    return false;
  }
}

/**
 * Places `src` at `dst` (hard link, else a copy into a temporary file renamed into place).
 * An identical file at `dst` is kept; another file there is replaced (the name is the content
 * hash, so a file that does not match it is a damaged earlier export).
 */
export function placeWeights(src: string, dst: string, sha: string): WeightsPlacement {
  const size = fs.statSync(src).size;
  if (fs.existsSync(dst)) {
    if (identical(dst, size, sha)) return 'existing';
    fs.rmSync(dst, { force: true });
  }
  try {
    fs.linkSync(src, dst);
    return 'linked';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST' && identical(dst, size, sha)) return 'existing';
  }
  const tmp = path.join(path.dirname(dst), `.${path.basename(dst)}.${tempName()}`);
  try {
    fs.copyFileSync(src, tmp, fs.constants.COPYFILE_FICLONE);
    if (fs.statSync(tmp).size !== size) throw new Error(`copy is ${fs.statSync(tmp).size} bytes, not ${size}`);
    fs.renameSync(tmp, dst);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOSPC' ? 'the disk is full' : code ?? (e as Error).message;
    throw modelError('export-weights', `cannot place the weights next to ${path.dirname(dst)}: ${why} (${formatSize(size)} needed)`, code === 'ENOSPC' ? ['free some space, or write the model to a folder on the same file system as the cache (a hard link takes no space)'] : []);
  }
  return 'copied';
}

function formatSize(n: number): string {
  return n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GB` : `${(n / 2 ** 20).toFixed(1)} MB`;
}

/**
 * Writes `proto` to `outPath` with its weights available beside it (see the module comment).
 * Atomic for the graph and for every weights file; on failure nothing this call placed stays.
 * @throws NnsError `export-weights` when the weights cannot be placed (e.g. a full disk),
 *   `cannot-write` when the graph cannot be written.
 */
export function exportModel(model: LoadedModel, proto: ModelProto, outPath: string): ExportResult {
  const outDir = path.dirname(path.resolve(outPath));
  const weightsDir = model.externalDataDir ?? model.dir;
  const tensors = allTensors(proto).map((s) => s.tensor).filter((t) => externalRef(t));
  const locations = [...new Set(tensors.map((t) => externalRef(t)!.location))];
  const known = new Map((readManifest(model.dir)?.weights ?? []).map((w) => [w.file, w.sha256]));
  const weights: ExportResult['weights'] = [];
  const placed: string[] = [];
  const rename = new Map<string, string>();
  sweepExportTemps(outDir);
  try {
    for (const loc of locations) {
      const src = path.join(weightsDir, loc);
      if (path.resolve(weightsDir) === outDir) {
        weights.push({ location: loc, how: 'same-folder' });
        continue;
      }
      const sha = known.get(loc) ?? sha256File(src);
      const name = exportWeightsName(sha);
      const dst = path.join(outDir, name);
      rename.set(loc, name);
      if (sameFile(src, dst)) {
        weights.push({ location: name, how: 'existing' });
        continue;
      }
      const how = placeWeights(src, dst, sha);
      if (how !== 'existing') placed.push(dst);
      weights.push({ location: name, how });
    }
    writeGraph(proto, rename, outPath);
  } catch (e) {
    for (const p of placed) fs.rmSync(p, { force: true });
    if (e instanceof NnsError) throw e;
    throw modelError('export-weights', `cannot place the weights next to ${outPath}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return { graphPath: path.resolve(outPath), weights };
}

/** Encodes `proto` with external data locations renamed by `rename` (the proto itself is left as it was). */
export function encodeRelocated(proto: ModelProto, rename: ReadonlyMap<string, string>): Uint8Array {
  const tensors = allTensors(proto).map((s) => s.tensor).filter((t) => externalRef(t));
  const saved = new Map<(typeof tensors)[number], StringStringEntryProto[] | undefined>();
  try {
    for (const t of tensors) {
      const loc = externalRef(t)!.location;
      const to = rename.get(loc);
      if (!to) continue;
      saved.set(t, t.external_data);
      t.external_data = (t.external_data ?? []).map((e) => (e.key === 'location' ? { ...e, value: to } : e));
    }
    return encodeModel(proto);
  } finally {
    for (const [t, ed] of saved) t.external_data = ed;
  }
}

/** Encodes `proto` with external locations renamed (restored afterwards) and writes it atomically. */
function writeGraph(proto: ModelProto, rename: ReadonlyMap<string, string>, outPath: string): void {
  const bytes = encodeRelocated(proto, rename);
  const tmp = path.join(path.dirname(path.resolve(outPath)), `.${path.basename(outPath)}.${tempName()}`);
  try {
    fs.writeFileSync(tmp, bytes);
    fs.renameSync(tmp, path.resolve(outPath));
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw modelError('cannot-write', `cannot write '${outPath}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}
