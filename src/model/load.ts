/**
 * Loading a model: a Hugging Face-style folder or a bare `.onnx` file, with its weights in
 * one external data file that every rewritten graph references by a relative path.
 *
 * - **Inline weights** (the usual small export) are moved once into a cache entry
 *   `<cache>/<sha256>/{model.onnx, model.onnx.data}`; the entry is built in a temporary
 *   folder and renamed into place, so a crash never leaves a half-written entry.
 * - **External-data models** are used in place when their folder is writable and every
 *   weights file really lies inside it (ORT resolves symlinks and rejects weights outside the
 *   graph's folder, e.g. Hugging Face hub snapshots whose files link into `blobs/`).
 *   Otherwise a cache entry holds a copy of the (small) graph and *hard links* to the weights
 *   (same inode: no copy, shared page cache). When hard links are impossible (another file
 *   system), the entry holds graphs only and {@link LoadedModel.externalDataDir} tells the
 *   backend to create sessions from bytes with
 *   `session.model_external_initializers_file_folder_path`.
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
import { loadTokenizer, readJson, type TextTokenizer } from './tokenizer.js';

/** A model ready to be rewritten and run. */
export interface LoadedModel {
  /** What the user gave: a folder or an `.onnx` file path, as given. */
  source: string;
  /** Absolute folder holding the graph file(s); rewritten graphs are written here. */
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
  /** True when this load wrote nothing: an existing cache entry, or an external-data model used in place. */
  cached?: boolean;
}

/** Options of {@link loadModel}. */
export interface LoadOptions {
  /** Cache folder; default `$ONNSIGHT_CACHE`, else `<project root or cwd>/.cache/onnsight`. */
  cacheDir?: string;
  /** Tensors smaller than this stay inline when externalizing (default {@link INLINE_THRESHOLD}). */
  inlineThreshold?: number;
  /**
   * Allow writing rewritten graphs into an external-data model's own folder (default true).
   * With false, such models get a cache entry (hard links or `externalDataDir`).
   */
  inPlace?: boolean;
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
  // Fast path: a known source file whose cache entry exists is never read or hashed again.
  const known = lookupIndex(cacheDir, graphFile);
  if (known) {
    const entry = path.join(cacheDir, known);
    const entryGraph = path.join(entry, GRAPH_FILE);
    if (fs.existsSync(entryGraph)) return openEntry(entry, known, true);
  }
  const { proto, bytes } = readModelFile(graphFile);
  const modelDir = path.dirname(graphFile);
  if (usesExternalData(proto)) return placeExternal(graphFile, modelDir, proto, bytes, cacheDir, opts);

  const id = sha256(bytes);
  remember(cacheDir, graphFile, id);
  const entry = path.join(cacheDir, id);
  if (fs.existsSync(path.join(entry, GRAPH_FILE))) return openEntry(entry, id, true);
  buildEntry(cacheDir, entry, (tmp) => {
    if (hasLargeInlineTensors(proto, opts.inlineThreshold ?? INLINE_THRESHOLD)) {
      externalizeWeights(proto, path.join(tmp, DATA_FILE), DATA_FILE, opts.inlineThreshold ?? INLINE_THRESHOLD);
    }
    writeSynced(path.join(tmp, GRAPH_FILE), encodeModel(proto));
    writeSynced(path.join(tmp, 'source.json'), Buffer.from(JSON.stringify({ source: graphFile, created: new Date().toISOString() }, null, 2)));
  });
  return openEntry(entry, id, false);
}

/** Reads a finished cache entry's graph. */
function openEntry(entry: string, id: string, cached: boolean): Placed {
  const graphPath = path.join(entry, GRAPH_FILE);
  const proto = decodeModelFile(fs.readFileSync(graphPath), graphPath);
  let externalDataDir: string | undefined;
  const linkInfo = path.join(entry, 'external-data-dir');
  if (fs.existsSync(linkInfo)) externalDataDir = fs.readFileSync(linkInfo, 'utf8');
  checkExternalData(proto, externalDataDir ?? entry, graphPath);
  return { dir: entry, graphPath, proto, id, externalDataDir, cached };
}

function placeExternal(graphFile: string, modelDir: string, proto: ModelProto, bytes: Uint8Array, cacheDir: string, opts: LoadOptions): Placed {
  const locations = checkExternalData(proto, modelDir, graphFile);
  const realDir = fs.realpathSync(modelDir);
  const dataFiles = locations.map((loc) => ({ loc, real: fs.realpathSync(path.join(modelDir, loc)) }));
  const hash = crypto.createHash('sha256').update(bytes);
  for (const f of dataFiles) hash.update(`\0${f.loc}\0${hashFile(cacheDir, f.real)}`);
  const id = hash.digest('hex');
  const inside = dataFiles.every((f) => !path.relative(realDir, f.real).startsWith('..'));
  if (opts.inPlace !== false && inside && isWritable(modelDir)) {
    return { dir: path.resolve(modelDir), graphPath: path.resolve(graphFile), proto, id, cached: true };
  }
  const entry = path.join(cacheDir, id);
  if (fs.existsSync(path.join(entry, GRAPH_FILE))) return openEntry(entry, id, true);
  buildEntry(cacheDir, entry, (tmp) => {
    let linked = true;
    for (const f of dataFiles) {
      const target = path.join(tmp, f.loc);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      try {
        fs.linkSync(f.real, target);
      } catch {
        linked = false;
        break;
      }
    }
    if (!linked) writeSynced(path.join(tmp, 'external-data-dir'), Buffer.from(path.resolve(modelDir)));
    writeSynced(path.join(tmp, GRAPH_FILE), bytes);
    writeSynced(path.join(tmp, 'source.json'), Buffer.from(JSON.stringify({ source: graphFile, created: new Date().toISOString() }, null, 2)));
  });
  return openEntry(entry, id, false);
}

/**
 * Writes a rewritten graph next to the weights it references (in {@link LoadedModel.dir},
 * as `nns-<key>.onnx`: ORT resolves external data relative to the graph file's folder and
 * rejects `..` and symlinks out of it, so variants cannot live in a subfolder) and returns
 * its path. `proto` may be given already encoded. A file that already exists for `key` is reused without encoding `proto`, so the
 * key must identify the rewrite (e.g. a hash of the intervention plan). Written atomically.
 * @throws NnsError `variant-key` for a key with characters other than `[A-Za-z0-9._-]`.
 */
export function writeVariant(model: LoadedModel, proto: ModelProto | Uint8Array, key: string): string {
  if (!/^[A-Za-z0-9._-]{1,200}$/.test(key)) throw modelError('variant-key', `invalid variant key "${key}": use letters, digits, '.', '_' or '-'`);
  const file = path.join(model.dir, `nns-${key}.onnx`);
  if (fs.existsSync(file)) return file;
  const tmp = `${file}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
  try {
    writeSynced(tmp, proto instanceof Uint8Array ? proto : encodeModel(proto));
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw modelError('variant-write', `cannot write rewritten graph ${file}: ${(e as Error).message}`);
  }
  return file;
}

/**
 * The default cache folder: `$ONNSIGHT_CACHE`, else `.cache/onnsight` in the nearest
 * ancestor of the working directory that holds a `package.json`, else in the working directory.
 */
export function defaultCacheDir(): string {
  const env = process.env.ONNSIGHT_CACHE;
  if (env) return path.resolve(env);
  let dir = process.cwd();
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return path.join(dir, '.cache', 'onnsight');
    const up = path.dirname(dir);
    if (up === dir) return path.join(process.cwd(), '.cache', 'onnsight');
    dir = up;
  }
}

/** Builds a cache entry in a temporary sibling folder, then renames it into place. */
function buildEntry(cacheDir: string, entry: string, fill: (tmp: string) => void): void {
  try {
    fs.mkdirSync(cacheDir, { recursive: true });
  } catch (e) {
    throw modelError('cache-unwritable', `cannot create cache folder ${cacheDir}: ${(e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder']);
  }
  let tmp: string;
  try {
    tmp = fs.mkdtempSync(path.join(cacheDir, '.tmp-'));
  } catch (e) {
    throw modelError('cache-unwritable', `cannot write in cache folder ${cacheDir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder']);
  }
  try {
    fill(tmp);
    try {
      fs.renameSync(tmp, entry);
    } catch (e) {
      // Another process finished the same entry first: keep theirs.
      const code = (e as NodeJS.ErrnoException).code;
      if ((code === 'ENOTEMPTY' || code === 'EEXIST') && fs.existsSync(path.join(entry, GRAPH_FILE))) return;
      throw e;
    }
  } catch (e) {
    if (e instanceof NnsError) throw e;
    throw modelError('cache-unwritable', `cannot write cache entry ${entry}: ${(e as Error).message}`, ['set ONNSIGHT_CACHE to a writable folder with enough space']);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function writeSynced(file: string, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'w');
  try {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function sha256(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/** Content hash of a (possibly huge) file, read in 4 MB chunks and memoized in the index. */
function hashFile(cacheDir: string, file: string): string {
  const known = lookupIndex(cacheDir, file);
  if (known) return known;
  const hash = crypto.createHash('sha256');
  const buf = Buffer.allocUnsafe(4 << 20);
  const fd = fs.openSync(file, 'r');
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      hash.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  const id = hash.digest('hex');
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
    const tmp = path.join(dir, `.${key}.${process.pid}.${crypto.randomBytes(4).toString('hex')}`);
    fs.writeFileSync(tmp, id);
    fs.renameSync(tmp, path.join(dir, key));
  } catch {
    // read-only cache: hash again next time
  }
}

/** True when files can be created in `dir` (probed by creating one; root ignores mode bits). */
function isWritable(dir: string): boolean {
  const probe = path.join(dir, `.nns-probe-${process.pid}-${crypto.randomBytes(4).toString('hex')}`);
  try {
    fs.writeFileSync(probe, '');
    fs.rmSync(probe);
    return true;
  } catch {
    return false;
  }
}
