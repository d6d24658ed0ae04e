/**
 * Loading a model: a Hugging Face-style folder or a bare `.onnx` file, placed in a cache
 * entry (src/model/cache.ts) whose graph references one set of weights by relative path;
 * every rewritten graph of the model is written into that entry. Nothing is ever written
 * into the model's own folder.
 *
 * - **Inline weights** (the usual small export) are moved once into the entry's
 *   `model.onnx.data`.
 * - **External-data models**: the entry holds a copy of the (small) graph and *hard links*
 *   to the weights (same inode: no copy, shared page cache). Measured with onnxruntime-node
 *   1.30, for a graph in the cache and weights in the model's folder: a relative location
 *   through `..`, an absolute location and a symlink in the cache are all refused ("External
 *   data path escapes model directory", "Absolute path not allowed"); a hard link, and
 *   `model_external_initializers_file_folder_path` with the graph given as bytes or as a
 *   path, work. When hard links are
 *   impossible (another file system), the entry holds graphs only and
 *   {@link LoadedModel.externalDataDir} tells the backend to resolve the weights against
 *   the model's folder (`session.model_external_initializers_file_folder_path`).
 *
 * Entries are built in a temporary folder and renamed into place, so a crash never leaves a
 * half-written entry; each open checks the entry (src/model/cache.ts `verifyEntry`) and a
 * damaged one is removed and built again.
 *
 * Content hashes: sha256 of the file bytes. To avoid rehashing large files on every run, a
 * fast key sha256(realpath, size, mtime, inode) maps to the content hash in
 * `<cache>/index/`; a file rewritten with the same size and mtime would fool it, as it
 * fools make and rsync.
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { modelError, NnsError } from '../errors.js';
import { checkExternalData, externalizeWeights, hasLargeInlineTensors, INLINE_THRESHOLD, usesExternalData } from '../onnx/external.js';
import { decodeModelFile, readModelFile } from '../onnx/file.js';
import type { ModelProto } from '../onnx/proto.js';
import { encodeModel } from '../onnx/serde.js';
import { defaultCacheDir, markOpen, MANIFEST, noteWrite, recordFile, removeCached, sha256, sha256File, sweepStale, tempName, verifyEntry, verifyVariant, writeAtomic, writeSynced, writeVariantFile, type EntryManifest, type FileRecord } from './cache.js';
import { loadTokenizer, readJson, type TextTokenizer } from './tokenizer.js';

export { defaultCacheDir } from './cache.js';

/** A model ready to be rewritten and run. */
export interface LoadedModel {
  /** What the user gave: a folder or an `.onnx` file path, as given. */
  source: string;
  /** The model's cache entry (absolute): its graph, its weights or links to them; rewritten graphs are written here. */
  dir: string;
  /** Absolute path of the graph file, which references its weights by relative path. */
  graphPath: string;
  /** The decoded graph, weights external (small); raw data of small inline tensors are views. */
  proto: ModelProto;
  /** `config.json` of the model folder, when there is one. */
  config?: Record<string, unknown>;
  /** The tokenizer of the model folder (`tokenizer.json`), when there is one. */
  tokenizer?: TextTokenizer;
  /** Content hash (sha256 hex) of the model: its file bytes, or graph plus weights files. */
  id: string;
  /**
   * Set only when the weights could not be placed next to the graphs (read-only model
   * folder on another file system): the folder ORT must resolve external data against.
   * Sessions must then be created from the graph's bytes with
   * `extra.session.model_external_initializers_file_folder_path` set to this folder.
   */
  externalDataDir?: string;
  /** True when this load wrote nothing: its cache entry existed and checked out. */
  cached?: boolean;
}

/**
 * Options of `LanguageModel.load` (`loadModel`).
 * @category Model
 */
export interface LoadOptions {
  /** Cache folder; default: `$ONNSIGHT_CACHE`, else `$XDG_CACHE_HOME/onnsight`, else `~/.cache/onnsight`. */
  cacheDir?: string;
  /** Tensors smaller than this stay inline when externalizing (default `INLINE_THRESHOLD`). */
  inlineThreshold?: number;
}

/** Name of the graph file and of its weights file inside a cache entry. */
const GRAPH_FILE = 'model.onnx';
const DATA_FILE = 'model.onnx.data';

/**
 * Loads a model folder or `.onnx` file (see the module comment for where weights go).
 * @throws NnsError (kind `model`) for a missing path, a folder without a model, a bad ONNX
 *   file, bad external data, an unreadable config or tokenizer.
 */
export async function loadModel(source: string, opts: LoadOptions = {}): Promise<LoadedModel> {
  const { graphFile, metaDir } = locate(source);
  const cacheDir = path.resolve(opts.cacheDir ?? defaultCacheDir());
  sweepStale(cacheDir);
  const configPath = path.join(metaDir, 'config.json');
  const config = fs.existsSync(configPath) ? readJson(configPath) : undefined;
  const tokenizer = loadTokenizer(metaDir);
  const placed = placeModel(graphFile, cacheDir, opts);
  return { source, config, tokenizer, ...placed };
}

/**
 * Finds the graph file of a source (a folder or an `.onnx` file) and the folder holding
 * `config.json` / `tokenizer.json`.
 * @throws NnsError `model-not-found`
 */
export function locate(source: string): { graphFile: string; metaDir: string } {
  const abs = path.resolve(source);
  let st: fs.Stats;
  try {
    st = fs.statSync(abs);
  } catch {
    throw modelError('model-not-found', `model not found: ${source}`);
  }
  if (st.isDirectory()) {
    for (const rel of ['onnx/model.onnx', 'model.onnx']) {
      const p = path.join(abs, rel);
      if (fs.existsSync(p)) return { graphFile: p, metaDir: abs };
    }
    const found = ['onnx', '.'].flatMap((d) => {
      try {
        return fs.readdirSync(path.join(abs, d)).filter((f) => f.endsWith('.onnx')).map((f) => path.join(d, f));
      } catch {
        return [];
      }
    });
    throw modelError('model-not-found', `no onnx/model.onnx or model.onnx in ${source}`, found.length ? [`found: ${found.join(', ')} — pass one of them as the model path`] : []);
  }
  // A file in `<folder>/onnx/` takes config and tokenizer from `<folder>`.
  const fileDir = path.dirname(abs);
  const metaDir = path.basename(fileDir) === 'onnx' && !fs.existsSync(path.join(fileDir, 'config.json')) ? path.dirname(fileDir) : fileDir;
  return { graphFile: abs, metaDir };
}

type Placed = Pick<LoadedModel, 'dir' | 'graphPath' | 'proto' | 'id' | 'externalDataDir' | 'cached'>;

function placeModel(graphFile: string, cacheDir: string, opts: LoadOptions): Placed {
  // Fast path: a known source file whose cache entry checks out is never read or hashed again.
  const known = lookupIndex(cacheDir, graphFile);
  if (known) {
    const hit = openEntry(path.join(cacheDir, known), known, true);
    if (hit) return hit;
  }
  const { proto, bytes } = readModelFile(graphFile);
  const modelDir = path.dirname(graphFile);
  if (usesExternalData(proto)) return placeExternal(graphFile, modelDir, proto, bytes, cacheDir);

  const id = sha256(bytes);
  remember(cacheDir, graphFile, id);
  const entry = path.join(cacheDir, id);
  const hit = openEntry(entry, id, true);
  if (hit) return hit;
  const threshold = opts.inlineThreshold ?? INLINE_THRESHOLD;
  buildEntry(cacheDir, entry, (tmp) => {
    const weights: FileRecord[] = [];
    if (hasLargeInlineTensors(proto, threshold)) {
      const r = externalizeWeights(proto, path.join(tmp, DATA_FILE), DATA_FILE, threshold);
      weights.push(recordFile(tmp, DATA_FILE, r.sha256));
    }
    const graph = encodeModel(proto);
    writeSynced(path.join(tmp, GRAPH_FILE), graph);
    return { format: 1, source: graphFile, created: new Date().toISOString(), graph: recordFile(tmp, GRAPH_FILE, sha256(graph)), weights };
  });
  return openBuilt(entry, id);
}

/**
 * Opens a cache entry after checking it (src/model/cache.ts `verifyEntry`); `undefined`
 * when there is none, or when it was damaged (it is then removed, to be built again).
 */
function openEntry(entry: string, id: string, cached: boolean): Placed | undefined {
  if (!fs.existsSync(entry)) return undefined;
  const check = verifyEntry(entry);
  if (!check.ok) {
    removeCached(entry);
    return undefined;
  }
  const graphPath = path.join(entry, GRAPH_FILE);
  const proto = decodeModelFile(check.graphBytes, graphPath);
  const externalDataDir = check.manifest.externalDataDir;
  checkExternalData(proto, externalDataDir ?? entry, graphPath);
  markOpen(entry);
  return { dir: entry, graphPath, proto, id, externalDataDir, cached };
}

function openBuilt(entry: string, id: string): Placed {
  const placed = openEntry(entry, id, false);
  if (!placed) throw modelError('cache-unwritable', `the cache entry ${entry} was damaged right after it was written`, ['set ONNSIGHT_CACHE to a folder on a healthy disk']);
  return placed;
}

function placeExternal(graphFile: string, modelDir: string, proto: ModelProto, bytes: Uint8Array, cacheDir: string): Placed {
  const locations = checkExternalData(proto, modelDir, graphFile);
  const dataFiles = locations.map((loc) => {
    const real = fs.realpathSync(path.join(modelDir, loc));
    return { loc, real, sha: hashFile(cacheDir, real) };
  });
  const hash = crypto.createHash('sha256').update(bytes);
  for (const f of dataFiles) hash.update(`\0${f.loc}\0${f.sha}`);
  const id = hash.digest('hex');
  const entry = path.join(cacheDir, id);
  const hit = openEntry(entry, id, true);
  if (hit) return hit;
  buildEntry(cacheDir, entry, (tmp) => {
    const weights: FileRecord[] = [];
    for (const f of dataFiles) {
      const target = path.join(tmp, f.loc);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      try {
        fs.linkSync(f.real, target);
        weights.push(recordFile(tmp, f.loc, f.sha));
      } catch {
        break;
      }
    }
    const linked = weights.length === dataFiles.length;
    if (!linked) for (const w of weights) fs.rmSync(path.join(tmp, w.file), { force: true });
    writeSynced(path.join(tmp, GRAPH_FILE), bytes);
    const manifest: EntryManifest = { format: 1, source: graphFile, created: new Date().toISOString(), graph: recordFile(tmp, GRAPH_FILE, sha256(bytes)), weights: linked ? weights : [] };
    if (!linked) manifest.externalDataDir = weightsFolder(modelDir, dataFiles);
    return manifest;
  });
  return openBuilt(entry, id);
}

/**
 * The folder ORT resolves unlinked weights against: the one folder the data files really lie
 * in under their locations (a Hugging Face snapshot's files link into `blobs/`, and ORT
 * rejects symlinks leading out of the folder), else the model's folder.
 */
function weightsFolder(modelDir: string, dataFiles: { loc: string; real: string }[]): string {
  const dirs = new Set(dataFiles.map((f) => {
    const up = f.loc.split(/[\\/]/).filter((x) => x && x !== '.').length;
    let d = f.real;
    for (let i = 0; i < up; i++) d = path.dirname(d);
    return path.join(d, f.loc) === f.real ? d : '';
  }));
  const [only] = dirs;
  return dirs.size === 1 && only ? only : path.resolve(modelDir);
}

/**
 * Writes a rewritten graph into the model's cache entry ({@link LoadedModel.dir}, as
 * `nns-<key>.onnx` with a checksum file: ORT resolves external data relative to the graph
 * file's folder and rejects `..` and symlinks out of it, so variants cannot live in a
 * subfolder) and returns its path. `proto` may be given already encoded. A file that already
 * exists for `key` with exactly these bytes (checked against its checksum file) is reused; a
 * damaged one, or one holding another graph (written by another onnsight version under the
 * same key), is written again. Written atomically.
 * @throws NnsError `variant-key` for a key with characters other than `[A-Za-z0-9._-]`;
 *   `variant-write` when the file cannot be written; `cache-entry-gone` when the entry was removed meanwhile.
 */
export function writeVariant(model: LoadedModel, proto: ModelProto | Uint8Array, key: string): string {
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(key)) throw modelError('variant-key', `invalid variant key "${key}": use letters, digits, '.', '_' or '-'`);
  const file = path.join(model.dir, `nns-${key}.onnx`);
  // Reused only when its bytes are the ones asked for: a key whose rewrite changed between
  // onnsight versions (or checkouts) must not pick up the older graph.
  const bytes = proto instanceof Uint8Array ? proto : encodeModel(proto);
  if (verifyVariant(file, sha256(bytes))) return file;
  try {
    writeVariantFile(file, bytes);
  } catch (e) {
    if (!fs.existsSync(model.dir)) throw modelError('cache-entry-gone', `the cache entry of ${model.source} (${model.dir}) was removed meanwhile (nns cache clean, or the cache's size bound)`, ['load the model again']);
    throw modelError('variant-write', `cannot write rewritten graph ${file}: ${(e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder with enough space']);
  }
  noteWrite(path.dirname(model.dir), bytes.length);
  return file;
}

/** Builds a cache entry in a temporary sibling folder, then renames it into place. */
function buildEntry(cacheDir: string, entry: string, fill: (tmp: string) => EntryManifest): void {
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
  } catch (e) {
    throw modelError('cache-unwritable', `cannot create cache folder ${cacheDir}: ${(e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder']);
  }
  const tmp = path.join(cacheDir, tempName());
  let written = 0;
  try {
    fs.mkdirSync(tmp);
    const manifest = fill(tmp);
    written = manifest.graph.size + manifest.weights.reduce((a, w) => a + (fs.statSync(path.join(tmp, w.file)).nlink > 1 ? 0 : w.size), 0);
    writeSynced(path.join(tmp, MANIFEST), Buffer.from(JSON.stringify(manifest, null, 2)));
    try {
      fs.renameSync(tmp, entry);
    } catch (e) {
      // Another process finished the same entry first: keep theirs.
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && verifyEntry(entry).ok) return;
      throw e;
    }
  } catch (e) {
    if (e instanceof NnsError) throw e;
    throw modelError('cache-unwritable', `cannot write cache entry ${entry}: ${(e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder with enough space']);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  markOpen(entry);
  noteWrite(cacheDir, written);
}

/** Content hash of a (possibly huge) file, memoized in the index. */
function hashFile(cacheDir: string, file: string): string {
  const known = lookupIndex(cacheDir, file);
  if (known) return known;
  const id = sha256File(file);
  remember(cacheDir, file, id);
  return id;
}

/** Fast key of a file: where it is and its size, mtime and inode, never its contents. */
function fastKey(file: string): string | undefined {
  try {
    const real = fs.realpathSync(file);
    const st = fs.statSync(real);
    return crypto.createHash('sha256').update(`${real}\0${st.size}\0${st.mtimeMs}\0${st.ino}\0${st.dev}`).digest('hex');
  } catch {
    return undefined;
  }
}

function lookupIndex(cacheDir: string, file: string): string | undefined {
  const key = fastKey(file);
  if (!key) return undefined;
  try {
    const v = fs.readFileSync(path.join(cacheDir, 'index', key), 'utf8').trim();
    return /^[0-9a-f]{64}$/.test(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/** Records fast key → content hash; failures are ignored (the index is only an optimisation). */
function remember(cacheDir: string, file: string, id: string): void {
  const key = fastKey(file);
  if (!key) return;
  try {
    const dir = path.join(cacheDir, 'index');
    fs.mkdirSync(dir, { recursive: true });
    writeAtomic(path.join(dir, key), Buffer.from(id));
  } catch {
    // read-only cache: hash again next time
  }
}
