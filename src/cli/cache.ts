/**
 * `nns cache [list|size|clean]`: what the cache (src/model/cache.ts) holds, and removing it.
 * @module
 */
import { usageError } from '../errors.js';
import { cacheMaxBytes, cacheSize, cleanCache, defaultCacheDir, listCache } from '../model/cache.js';

/** Where `nns cache` prints and which environment it reads. */
export interface CacheCommandIO {
  out(text: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

/** Bytes as `1.2 GB`, `340 KB` (powers of 1024). */
export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`;
}

function ago(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129_600) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86_400)} days ago`;
}

/**
 * Runs `nns cache ACTION`.
 * @returns the exit code
 * @throws NnsError `bad-cache-action` (usage) for an unknown action.
 */
export function cacheCommand(action: string, io: CacheCommandIO): number {
  const dir = defaultCacheDir(io.env);
  const max = cacheMaxBytes(io.env);
  if (action === 'list') {
    const entries = listCache(dir);
    io.out(`cache: ${dir} (bound ${formatBytes(max)}, ONNSIGHT_CACHE_MAX)`);
    if (entries.length === 0) io.out('empty');
    const now = Date.now();
    for (const e of entries) {
      const linked = e.linkedBytes ? ` + ${formatBytes(e.linkedBytes)} linked` : '';
      io.out(`${e.dir.slice(-64, -48)}  ${formatBytes(e.bytes).padStart(7)}${linked}  ${e.variants} rewritten graph(s)  used ${ago(e.lastUsed, now)}  ${e.source}`);
    }
    return 0;
  }
  if (action === 'size') {
    const { bytes, linkedBytes } = cacheSize(dir);
    io.out(`${formatBytes(bytes)} in ${dir} (bound ${formatBytes(max)})${linkedBytes ? `; plus ${formatBytes(linkedBytes)} of hard links to model weights, which take no extra space` : ''}`);
    return 0;
  }
  if (action === 'clean') {
    const freed = cleanCache(dir);
    io.out(`removed ${dir}/* (${formatBytes(freed)} freed)`);
    return 0;
  }
  throw usageError('bad-cache-action', `unknown 'nns cache' action '${action}'`, ['use: nns cache list, nns cache size or nns cache clean']);
}
