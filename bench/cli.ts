/**
 * The command line's start-up and demo times, as a user sees them: wall time of whole `nns`
 * processes (`node bin/nns.mjs ...`), the built JavaScript (the harness runs `npm run build`
 * first). Independent of `--model`: the demo is examples/eiffel.nns on the bundled model.
 * Goals (issue 14): `nns --help` ≤ 250 ms, `nns run examples/eiffel.nns` ≤ 1000 ms.
 * @module
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, type BenchContext, type Measurement } from './measure.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let built = false;

function ensureBuilt(ctx: BenchContext): void {
  if (built) return;
  ctx.log('building dist/ (npm run build) so the bin runs JavaScript ...');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'tools', 'build.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error('npm run build failed');
  built = true;
}

/** CPU time (user + system) of this process's finished children so far, ms (Linux; else undefined). */
function childrenCpuMs(): number | undefined {
  try {
    const stat = fs.readFileSync('/proc/self/stat', 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields after the name start at 3 (state): cutime is field 16, cstime 17 (1-based), in clock ticks (100 Hz)
    return (Number(f[13]) + Number(f[14])) * 10;
  } catch {
    return undefined;
  }
}

/** Median wall time of `nns ARGS` (one untimed warm-up run: page cache, compile cache). */
function timeNns(ctx: BenchContext, args: string[], key: string): number {
  ensureBuilt(ctx);
  const samples: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < ctx.timing.warmup + ctx.timing.runs; i++) {
    const c0 = childrenCpuMs();
    const t0 = performance.now();
    const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'nns.mjs'), ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NNS_FROM_SOURCE: '0' } });
    const ms = performance.now() - t0;
    if (r.status !== 0) throw new Error(`nns ${args.join(' ')} failed: ${r.stderr}`);
    const c1 = childrenCpuMs();
    if (i >= ctx.timing.warmup) {
      samples.push(ms);
      if (c0 !== undefined && c1 !== undefined) cpu.push(c1 - c0);
    }
  }
  // CPU time is robust to other jobs competing for the cores, unlike wall time.
  if (cpu.length) ctx.extra[`${key.replace(/_ms$/, '')}_cpu_ms`] = median(cpu);
  ctx.extra[`${key.replace(/_ms$/, '')}_min_ms`] = Math.min(...samples);
  return median(samples);
}

/** `cli_help_ms` and `cli_demo_ms`. */
export const CLI_MEASUREMENTS: Measurement[] = [
  {
    name: 'cli_help_ms',
    doc: 'Wall time of a whole `nns --help` process (node start-up, the bin, the CLI module; built JavaScript), median of ≥5 after one warm-up. Goal ≤ 250 ms.',
    run: async (ctx) => timeNns(ctx, ['--help'], 'cli_help_ms'),
  },
  {
    name: 'cli_demo_ms',
    doc: 'Wall time of a whole `nns run examples/eiffel.nns` process on the bundled model (load the model, parse, run, print; compile cache warm after the warm-up run), median of ≥5. Goal ≤ 1000 ms.',
    run: async (ctx) => timeNns(ctx, ['run', 'examples/eiffel.nns'], 'cli_demo_ms'),
  },
];
