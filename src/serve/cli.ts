/**
 * `nns serve`: parses the flags, starts the server (src/serve/server.ts), prints where it
 * listens, and shuts down gracefully on SIGTERM or SIGINT (running jobs finish, queued jobs
 * fail, then exit code 0).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { usageError } from '../errors.js';
import { DEFAULT_LIMITS, KeySet, type Limits } from './limits.js';
import { startServer } from './server.js';

/** The parsed flags of `nns serve` (the CLI's `ParsedArgs`). */
export interface ServeArgs {
  flags: ReadonlyMap<string, string | true>;
  lists: ReadonlyMap<string, string[]>;
}

/** What `nns serve` writes to and reads from (the CLI's IO). */
export interface ServeIO {
  out(text: string): void;
  err(text: string): void;
  cwd: string;
}

function int(a: ServeArgs, name: string, min: number): number | undefined {
  const v = a.flags.get(name);
  if (typeof v !== 'string') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw usageError('bad-flag', `--${name} must be a whole number >= ${min}, not '${v}'`);
  return n;
}

/** The limits the flags ask for. */
export function limitsOf(a: ServeArgs): Limits {
  const sec = (name: string): number | undefined => { const s = int(a, name, 1); return s === undefined ? undefined : s * 1000; };
  return {
    maxRequestBytes: int(a, 'max-request-bytes', 1024) ?? DEFAULT_LIMITS.maxRequestBytes,
    maxIrNodes: int(a, 'max-ir-nodes', 1) ?? DEFAULT_LIMITS.maxIrNodes,
    maxSavedElements: int(a, 'max-saved-elements', 1) ?? DEFAULT_LIMITS.maxSavedElements,
    maxRunMs: sec('max-run-seconds') ?? DEFAULT_LIMITS.maxRunMs,
    maxJobsPerKey: int(a, 'max-jobs-per-key', 1) ?? DEFAULT_LIMITS.maxJobsPerKey,
    maxQueued: DEFAULT_LIMITS.maxQueued,
    resultTtlMs: sec('result-ttl-seconds') ?? DEFAULT_LIMITS.resultTtlMs,
    maxBatch: int(a, 'max-batch', 1) ?? DEFAULT_LIMITS.maxBatch,
    batchWaitMs: int(a, 'batch-wait-ms', 0) ?? DEFAULT_LIMITS.batchWaitMs,
    maxStoredResultBytes: DEFAULT_LIMITS.maxStoredResultBytes,
  };
}

/** Runs `nns serve` until SIGTERM/SIGINT; returns the exit code. */
export async function serveCommand(a: ServeArgs, io: ServeIO): Promise<number> {
  const specs = a.lists.get('model') ?? [];
  if (specs.length === 0) throw usageError('missing-argument', "'nns serve' needs --model NAME=PATH (repeatable)");
  const models: { name: string; path: string }[] = [];
  for (const s of specs) {
    const eq = s.indexOf('=');
    const name = eq > 0 ? s.slice(0, eq) : '';
    const p = eq > 0 ? s.slice(eq + 1) : '';
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name) || !p) throw usageError('bad-flag', `--model takes NAME=PATH (NAME of letters, digits, '.', '_', '-'), not '${s}'`);
    if (models.some((m) => m.name === name)) throw usageError('bad-flag', `two models named '${name}'`);
    const abs = path.resolve(io.cwd, p);
    if (!fs.existsSync(abs)) throw usageError('no-such-file', `no model at '${p}' (for --model ${name}=...)`);
    models.push({ name, path: abs });
  }
  const port = int(a, 'port', 0) ?? 8000;
  if (port > 65535) throw usageError('bad-flag', `--port must be 0..65535, not ${port}`);
  const host = (a.flags.get('host') as string | undefined) ?? '127.0.0.1';
  const keysFile = a.flags.get('keys');
  const keys = typeof keysFile === 'string' ? KeySet.fromFile(path.resolve(io.cwd, keysFile), keysFile) : undefined;
  const limits = limitsOf(a);
  io.err(`nns serve: opening ${models.map((m) => m.name).join(', ')}`);
  let server;
  try {
    server = await startServer({ models, port, host, ...(keys ? { keys } : {}), limits });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') throw usageError('bad-flag', `cannot listen on ${host}:${port}: ${code}`);
    throw e;
  }
  io.out(`nns serve: serving ${models.map((m) => m.name).join(', ')} at ${server.url}${keys ? ' (API keys required)' : ''}`);
  await new Promise<void>((resolve) => {
    const stop = (sig: string): void => {
      io.err(`nns serve: ${sig}: finishing running jobs, failing queued ones`);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      void server.close().then(resolve);
    };
    const onTerm = (): void => stop('SIGTERM');
    const onInt = (): void => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  io.err('nns serve: stopped');
  return 0;
}
