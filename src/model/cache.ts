/**
 * The on-disk cache: where it is, how its entries are checked, how leftovers are swept and
 * how its size stays bounded.
 *
 * **Where**: `$ONNSIGHT_CACHE`, else `$XDG_CACHE_HOME/onnsight` (an absolute
 * `XDG_CACHE_HOME` only, as the XDG spec says), else `~/.cache/onnsight`. Nothing is ever
 * written into a model's own folder.
 *
 * **Layout**: one folder per model, named by its content hash:
 * `<cache>/<sha256>/{entry.json, model.onnx, weights...}` plus the rewritten graphs of that
 * model, `nns-<key>.onnx`, each with a checksum file `nns-<key>.onnx.sum`. Rewritten graphs
 * sit beside the weights because onnxruntime resolves external data relative to the graph
 * file's folder and rejects `..`, absolute locations and symlinks leading out of it
 * (measured with onnxruntime-node 1.30); the weights are hard links to the model's own files
 * (no copy), or for inline-weights models a file written once. `<cache>/index/` maps a
 * file's (path, size, mtime, inode) to its content hash, so big files are hashed once.
 *
 * **Integrity** ({@link verifyEntry}): `entry.json` records size and sha256 of the graph and
 * of every weights file. The graph is hashed at every open (it is small; it is read anyway);
 * a weights file is hashed again only when its mtime differs from the recorded one. A damaged
 * entry is removed and rebuilt by the loader; a damaged rewritten graph is rewritten.
 *
 * **Leftovers** ({@link sweepStale}): temporary files and folders are named
 * `.tmp-<host>-<pid>-<random>`. Once per process the cache removes those whose process is
 * gone (same host), those older than a day (another host, or a reused pid), and the unnamed
 * `.tmp-*` of older versions after an hour.
 *
 * **Size bound** ({@link enforceBound}): at most {@link DEFAULT_CACHE_MAX} bytes (10 GiB;
 * `ONNSIGHT_CACHE_MAX`, e.g. `2G`, `500M` or plain bytes, overrides). Sizes count the bytes
 * removing a file would free: a hard link to a model's own weights counts nothing. When a
 * write takes the cache over the bound, the least recently used units go first — a rewritten
 * graph, or a whole model entry with its rewritten graphs (an entry's last use is the latest
 * use of its graph or any of its rewritten graphs) — except units used in the last
 * {@link EVICT_GRACE_MS} ms and the entries this process has open.
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { usageError } from '../errors.js';

/** Default size bound of the cache, bytes (10 GiB). */
export const DEFAULT_CACHE_MAX = 10 * 2 ** 30;
/** Units used this recently (ms) are never evicted (another process may be using them). */
export const EVICT_GRACE_MS = 10 * 60 * 1000;
/** Name of an entry's manifest. */
export const MANIFEST = 'entry.json';

const HOUR = 3600 * 1000;
const DAY = 24 * HOUR;
const HOST = os.hostname().replace(/[^A-Za-z0-9.]/g, '_') || 'host';
const ENTRY_NAME = /^[0-9a-f]{64}$/;

/**
 * The cache folder: `$ONNSIGHT_CACHE`, else `$XDG_CACHE_HOME/onnsight` (when absolute),
 * else `~/.cache/onnsight`.
 */
export function defaultCacheDir(env: Readonly<Record<string, string | undefined>> = process.env): string {
  if (env.ONNSIGHT_CACHE) return path.resolve(env.ONNSIGHT_CACHE);
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && path.isAbsolute(xdg)) return path.join(xdg, 'onnsight');
  return path.join(os.homedir(), '.cache', 'onnsight');
}

/**
 * The cache's size bound in bytes: `ONNSIGHT_CACHE_MAX` (`10G`, `500M`, `64K`, `1.5GB`,
 * `123456`; powers of 1024), else {@link DEFAULT_CACHE_MAX}.
 * @throws NnsError `bad-cache-max` (usage) for a value that is not a size.
 */
export function cacheMaxBytes(env: Readonly<Record<string, string | undefined>> = process.env): number {
  const v = env.ONNSIGHT_CACHE_MAX?.trim();
  if (!v) return DEFAULT_CACHE_MAX;
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt])?(?:i?b)?$/i.exec(v);
  if (!m) throw usageError('bad-cache-max', `ONNSIGHT_CACHE_MAX="${v}" is not a size`, ['use bytes or a number with K, M, G or T, e.g. ONNSIGHT_CACHE_MAX=5G']);
  const unit = { '': 0, k: 1, m: 2, g: 3, t: 4 }[(m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't'];
  return Math.floor(Number(m[1]) * 1024 ** unit);
}

/** A fresh temporary name `.tmp-<host>-<pid>-<random>` (see {@link sweepStale}). */
export function tempName(): string {
  return `.tmp-${HOST}-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** True when a cache file or folder named `name` with mtime `mtimeMs` is a leftover of a dead write. */
export function isStaleTemp(name: string, mtimeMs: number, now = Date.now()): boolean {
  const age = now - mtimeMs;
  const m = /^\.tmp-(.+)-(\d+)-[0-9a-f]{8}$/.exec(name);
  if (m) return (m[1] === HOST && !alive(Number(m[2]))) || age > DAY;
  // Names of older versions: `.tmp-XXXXXX` folders, `nns-*.onnx.tmp-<pid>-<hex>`, index `.<key>.<pid>.<hex>`.
  if (name.startsWith('.tmp-') || /\.tmp-\d+-[0-9a-f]+$/.test(name) || /^\.[0-9a-f]{64}\.\d+\.[0-9a-f]+$/.test(name)) return age > HOUR;
  return false;
}

const swept = new Set<string>();

/**
 * Removes leftovers of killed writes (see {@link isStaleTemp}) from the cache folder, its
 * index and its entries. Runs once per process and cache folder unless `force`; never throws.
 * @returns the paths removed.
 */
export function sweepStale(cacheDir: string, force = false): string[] {
  const root = path.resolve(cacheDir);
  if (swept.has(root) && !force) return [];
  swept.add(root);
  const removed: string[] = [];
  const now = Date.now();
  const sweepDir = (dir: string): string[] => {
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return [];
    }
    for (const name of names) {
      const p = path.join(dir, name);
      try {
        const st = fs.lstatSync(p);
        if (isStaleTemp(name, st.mtimeMs, now)) {
          fs.rmSync(p, { recursive: true, force: true });
          removed.push(p);
        }
      } catch {
        // gone meanwhile, or not ours to remove
      }
    }
    return names;
  };
  for (const name of sweepDir(root)) if (ENTRY_NAME.test(name) || name === 'index') sweepDir(path.join(root, name));
  return removed;
}

/** Size, hash and mtime of one file of an entry. */
export interface FileRecord {
  /** Path relative to the entry folder (a weights file: its external-data location). */
  file: string;
  /** Bytes. */
  size: number;
  /** sha256, hex. */
  sha256: string;
  /** mtime when the hash was last checked. */
  mtimeMs: number;
}

/** `entry.json`: what a model entry holds and how to check it. */
export interface EntryManifest {
  /** Manifest format (1). */
  format: 1;
  /** The model file this entry was made from. */
  source: string;
  /** ISO time of creation. */
  created: string;
  /** The graph file. */
  graph: FileRecord;
  /** Weights files inside the entry (written or hard-linked). */
  weights: FileRecord[];
  /** Set when the weights could not be linked: the folder onnxruntime resolves them against. */
  externalDataDir?: string;
}

/** sha256 (hex) of bytes. */
export function sha256(bytes: Uint8Array): string {
  return crypto.createHash('sha256').update(bytes).digest('hex');
}

/** sha256 (hex) of a file, read in 4 MB chunks. */
export function sha256File(file: string): string {
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
  return hash.digest('hex');
}

/** A {@link FileRecord} for a file (hashing it unless `sha` is given). */
export function recordFile(entryDir: string, rel: string, sha?: string): FileRecord {
  const p = path.join(entryDir, rel);
  const st = fs.statSync(p);
  return { file: rel, size: st.size, sha256: sha ?? sha256File(p), mtimeMs: st.mtimeMs };
}

/** Writes `bytes` to `file` and fsyncs it. */
export function writeSynced(file: string, bytes: Uint8Array): void {
  const fd = fs.openSync(file, 'w');
  try {
    let done = 0;
    while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes `bytes` to `file` atomically (a temporary sibling, then a rename). */
export function writeAtomic(file: string, bytes: Uint8Array): void {
  const tmp = path.join(path.dirname(file), tempName());
  try {
    writeSynced(tmp, bytes);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Reads an entry's manifest; `undefined` when it is missing or not a manifest. */
export function readManifest(entryDir: string): EntryManifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(entryDir, MANIFEST), 'utf8')) as EntryManifest;
    return m && m.format === 1 && m.graph && Array.isArray(m.weights) ? m : undefined;
  } catch {
    return undefined;
  }
}

/** What {@link verifyEntry} found. */
export type EntryCheck =
  | { ok: true; manifest: EntryManifest; graphBytes: Buffer }
  | { ok: false; reason: string };

/**
 * Checks a model entry against its manifest: the graph's size and hash always, each weights
 * file's size always and its hash when its mtime changed since the last check (the new mtime
 * is then recorded). Marks the entry used (its manifest's mtime is the entry's last use).
 */
export function verifyEntry(entryDir: string): EntryCheck {
  const m = readManifest(entryDir);
  if (!m) return { ok: false, reason: `no valid ${MANIFEST}` };
  let graphBytes: Buffer;
  try {
    graphBytes = fs.readFileSync(path.join(entryDir, m.graph.file));
  } catch (e) {
    return { ok: false, reason: `graph unreadable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` };
  }
  if (graphBytes.length !== m.graph.size || sha256(graphBytes) !== m.graph.sha256) return { ok: false, reason: 'graph file changed' };
  let changed = false;
  for (const w of m.weights) {
    let st: fs.Stats;
    try {
      st = fs.statSync(path.join(entryDir, w.file));
    } catch {
      return { ok: false, reason: `weights file ${w.file} missing` };
    }
    if (st.size !== w.size) return { ok: false, reason: `weights file ${w.file} is ${st.size} bytes, not ${w.size}` };
    if (st.mtimeMs !== w.mtimeMs) {
      if (sha256File(path.join(entryDir, w.file)) !== w.sha256) return { ok: false, reason: `weights file ${w.file} changed` };
      w.mtimeMs = st.mtimeMs;
      changed = true;
    }
  }
  try {
    if (changed) writeAtomic(path.join(entryDir, MANIFEST), Buffer.from(JSON.stringify(m, null, 2)));
    else touch(path.join(entryDir, MANIFEST));
  } catch {
    // read-only cache: checked again next time
  }
  return { ok: true, manifest: m, graphBytes };
}

function touch(file: string): void {
  const now = new Date();
  fs.utimesSync(file, now, now);
}

/** Moves an entry (or file) out of the way and removes it; never throws. */
export function removeCached(p: string): void {
  const doomed = path.join(path.dirname(p), tempName());
  try {
    fs.renameSync(p, doomed);
  } catch {
    fs.rmSync(p, { recursive: true, force: true });
    return;
  }
  fs.rmSync(doomed, { recursive: true, force: true });
}

/** Checksum file of a rewritten graph. */
function sumFile(graphFile: string): string {
  return `${graphFile}.sum`;
}

/**
 * True when a rewritten graph exists and matches its checksum file (size and sha256) and, when
 * `expectSha` is given, holds exactly those bytes; marks it used. A graph without a checksum
 * file, or with another size or hash, is not valid.
 */
export function verifyVariant(graphFile: string, expectSha?: string): boolean {
  try {
    const [size, sha] = fs.readFileSync(sumFile(graphFile), 'utf8').trim().split(' ');
    if (expectSha !== undefined && sha !== expectSha) return false;
    const st = fs.statSync(graphFile);
    if (st.size !== Number(size) || sha256(fs.readFileSync(graphFile)) !== sha) return false;
  } catch {
    return false;
  }
  try {
    touch(graphFile);
  } catch {
    // read-only cache
  }
  return true;
}

/** Writes a rewritten graph and its checksum file, each atomically. */
export function writeVariantFile(graphFile: string, bytes: Uint8Array): void {
  writeAtomic(graphFile, bytes);
  writeAtomic(sumFile(graphFile), Buffer.from(`${bytes.length} ${sha256(bytes)}\n`));
}

/** One evictable unit: a model entry's own files, or one rewritten graph with its checksum. */
export interface CacheUnit {
  /** `model`: the entry's graph, weights and manifest; `variant`: one rewritten graph. */
  kind: 'model' | 'variant';
  /** The entry folder (its content hash is the folder name). */
  entry: string;
  /** The unit's files. */
  files: string[];
  /** Bytes removing the unit would free (files with one link only). */
  bytes: number;
  /** Bytes of hard links to files outside the cache (model weights): removing them frees nothing. */
  linkedBytes: number;
  /** Last use, ms since the epoch. */
  lastUsed: number;
}

/** One model entry as `nns cache list` shows it. */
export interface CacheEntryInfo {
  /** The entry folder. */
  dir: string;
  /** The model file it was made from (from its manifest; `?` when unknown). */
  source: string;
  /** Bytes the entry frees when removed (with its rewritten graphs). */
  bytes: number;
  /** Bytes shared with the model's own files through hard links. */
  linkedBytes: number;
  /** Number of rewritten graphs. */
  variants: number;
  /** Last use of anything in the entry, ms since the epoch. */
  lastUsed: number;
}

/** Every evictable unit of the cache (model entries and rewritten graphs). */
export function cacheUnits(cacheDir: string): CacheUnit[] {
  const units: CacheUnit[] = [];
  let names: string[];
  try {
    names = fs.readdirSync(cacheDir);
  } catch {
    return [];
  }
  for (const name of names) {
    if (!ENTRY_NAME.test(name)) continue;
    const entry = path.join(cacheDir, name);
    let files: string[];
    try {
      files = fs.readdirSync(entry, { recursive: true }).map(String);
    } catch {
      continue;
    }
    const model: CacheUnit = { kind: 'model', entry, files: [], bytes: 0, linkedBytes: 0, lastUsed: 0 };
    const variants = new Map<string, CacheUnit>();
    for (const rel of files) {
      const p = path.join(entry, rel);
      let st: fs.Stats;
      try {
        st = fs.lstatSync(p);
      } catch {
        continue;
      }
      if (!st.isFile()) continue;
      const base = /^(nns-.*\.onnx)(\.sum)?$/.exec(rel);
      let u = model;
      if (base && !rel.includes(path.sep)) {
        u = variants.get(base[1]!) ?? { kind: 'variant', entry, files: [], bytes: 0, linkedBytes: 0, lastUsed: 0 };
        variants.set(base[1]!, u);
      }
      u.files.push(p);
      if (st.nlink > 1) u.linkedBytes += st.size;
      else u.bytes += st.size;
      if (u === model ? rel === MANIFEST : true) u.lastUsed = Math.max(u.lastUsed, st.mtimeMs);
    }
    if (model.lastUsed === 0) model.lastUsed = fs.statSync(entry).mtimeMs;
    // A rewritten graph in use keeps its model in use (it reads the model's weights).
    for (const v of variants.values()) model.lastUsed = Math.max(model.lastUsed, v.lastUsed);
    units.push(model, ...variants.values());
  }
  return units;
}

/** The model entries of the cache with their sizes and last use, most recently used first. */
export function listCache(cacheDir: string): CacheEntryInfo[] {
  const byEntry = new Map<string, CacheEntryInfo>();
  for (const u of cacheUnits(cacheDir)) {
    let e = byEntry.get(u.entry);
    if (!e) byEntry.set(u.entry, (e = { dir: u.entry, source: readManifest(u.entry)?.source ?? '?', bytes: 0, linkedBytes: 0, variants: 0, lastUsed: 0 }));
    e.bytes += u.bytes;
    e.linkedBytes += u.linkedBytes;
    if (u.kind === 'variant') e.variants++;
    e.lastUsed = Math.max(e.lastUsed, u.lastUsed);
  }
  return [...byEntry.values()].sort((a, b) => b.lastUsed - a.lastUsed);
}

/** Bytes the whole cache would free when cleaned (entries, index, leftovers). */
export function cacheSize(cacheDir: string): { bytes: number; linkedBytes: number } {
  let bytes = 0;
  let linkedBytes = 0;
  let files: string[];
  try {
    files = fs.readdirSync(cacheDir, { recursive: true }).map(String);
  } catch {
    return { bytes, linkedBytes };
  }
  for (const rel of files) {
    try {
      const st = fs.lstatSync(path.join(cacheDir, rel));
      if (!st.isFile()) continue;
      if (st.nlink > 1) linkedBytes += st.size;
      else bytes += st.size;
    } catch {
      // gone meanwhile
    }
  }
  return { bytes, linkedBytes };
}

/** Removes everything in the cache folder (not the folder itself). Returns the bytes freed. */
export function cleanCache(cacheDir: string): number {
  const { bytes } = cacheSize(cacheDir);
  let names: string[];
  try {
    names = fs.readdirSync(cacheDir);
  } catch {
    return 0;
  }
  for (const name of names) removeCached(path.join(cacheDir, name));
  return bytes;
}

/** Entry folders this process has open: never evicted by it. */
const openEntries = new Set<string>();

/** Marks an entry folder as in use by this process (see {@link enforceBound}). */
export function markOpen(entryDir: string): void {
  openEntries.add(path.resolve(entryDir));
}

/**
 * Evicts least recently used units until the cache is within `max` bytes (see the module
 * comment for what is spared). Never throws.
 * @returns the bytes the cache holds afterwards.
 */
export function enforceBound(cacheDir: string, max = cacheMaxBytes(), now = Date.now()): number {
  const units = cacheUnits(cacheDir);
  let total = units.reduce((a, u) => a + u.bytes, 0);
  if (total <= max) return total;
  const gone = new Set<CacheUnit>();
  for (const u of [...units].sort((a, b) => a.lastUsed - b.lastUsed)) {
    if (total <= max) break;
    if (gone.has(u) || now - u.lastUsed < EVICT_GRACE_MS) continue;
    if (u.kind === 'model' && openEntries.has(path.resolve(u.entry))) continue;
    // A model entry goes with its rewritten graphs (they reference its weights).
    const doomed = u.kind === 'model' ? units.filter((v) => v.entry === u.entry && !gone.has(v)) : [u];
    if (u.kind === 'model') removeCached(u.entry);
    else for (const f of u.files) fs.rmSync(f, { force: true });
    for (const v of doomed) {
      gone.add(v);
      total -= v.bytes;
    }
  }
  return total;
}

const estimates = new Map<string, number>();

/**
 * Accounts for `bytes` just written into the cache; when the running estimate goes over the
 * bound, evicts (see {@link enforceBound}). The first call of a process measures the cache.
 */
export function noteWrite(cacheDir: string, bytes: number): void {
  const root = path.resolve(cacheDir);
  let max: number;
  try {
    max = cacheMaxBytes();
  } catch {
    max = DEFAULT_CACHE_MAX;
  }
  const known = estimates.get(root);
  const estimate = known === undefined ? cacheUnits(root).reduce((a, u) => a + u.bytes, 0) : known + bytes;
  estimates.set(root, estimate > max ? enforceBound(root, max) : estimate);
}
