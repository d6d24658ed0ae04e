/**
 * Runs the `nns` command line as a user would (bin/nns.mjs, spawned: {@link nns}) or in this
 * process ({@link runMain}): the runners every CLI test uses.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { main, type CliIO } from '../../src/cli/main.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
/** The `nns` launcher of this checkout. */
export const NNS_BIN = path.join(ROOT, 'bin', 'nns.mjs');

/** Where and how `nns` runs. */
export interface NnsOptions {
  /** Working directory (default: the repository root). */
  cwd?: string;
  /** Variables added to (or overriding) the test's environment. */
  env?: Record<string, string>;
  /** Kill the process after this many ms and report `killed` (a hang guard, not a timing check). */
  killAfterMs?: number;
}

/** What one `nns` run did. */
export interface NnsResult {
  /** Exit code (-1 when killed by a signal). */
  code: number;
  out: string;
  err: string;
  /** True when the hang guard killed it. */
  killed: boolean;
}

/** Spawns `nns ARGS`; resolves with its exit code, stdout and stderr. */
export function nns(args: string[], opts: NnsOptions = {}): Promise<NnsResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [NNS_BIN, ...args], {
      cwd: opts.cwd ?? ROOT,
      env: { ...process.env, ...(opts.env ?? {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let killed = false;
    const guard =
      opts.killAfterMs === undefined
        ? undefined
        : setTimeout(() => {
            killed = true;
            p.kill('SIGKILL');
          }, opts.killAfterMs);
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (guard) clearTimeout(guard);
      resolve({ code: code ?? -1, out, err, killed });
    });
  });
}

/** What {@link runMain} returns: the exit code and what the run printed. */
export interface MainResult {
  code: number;
  /** stdout as the `nns` binary would write it (lines and raw generated text). */
  out: string;
  /** stderr as the binary would write it. */
  err: string;
}

/**
 * Runs the command line in this process (`main` of src/cli/main.ts, no spawn): the output is
 * collected the way the binary writes it (a newline added to lines without one, generated text
 * raw). `env` is the environment the command sees (default: this process's).
 */
export async function runMain(args: string[], opts: { cwd?: string; env?: Readonly<Record<string, string | undefined>> } = {}): Promise<MainResult> {
  let out = '';
  let err = '';
  const line = (t: string): string => (t.endsWith('\n') ? t : `${t}\n`);
  const io: CliIO = { out: (t) => void (out += line(t)), err: (t) => void (err += line(t)), write: (t) => void (out += t), cwd: opts.cwd ?? ROOT, env: opts.env ?? process.env };
  const code = await main(args, io);
  return { code, out, err };
}
