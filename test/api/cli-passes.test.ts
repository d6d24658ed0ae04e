/**
 * The pipeline from the command line: `--print-ir-after-all` shows every stage of a run in
 * pipeline order (the fast path's stages on examples/patching.nns, all of them with the fast
 * path off), `--print-ir-after=NAME` only the named one, `--passes=a,b` runs a chosen subset
 * and prints its result; an unknown pass name is a usage error listing the passes.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { executorStages, irPipeline, PASS_NAMES } from '../../passes/pipeline.js';

const root = path.join(import.meta.dirname, '..', '..');

function nns(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [path.join(root, 'bin', 'nns.mjs'), ...args], { cwd: root, env: { ...process.env, ...env } });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('close', (code) => resolve({ code: code ?? -1, out, err }));
  });
}

const stages = (text: string): string[] => [...text.matchAll(/^\/\/ ----- after ([a-z-]+) -----$/gm)].map((m) => m[1]!);

describe.concurrent('nns and the pipeline', { timeout: 120_000 }, () => {
  it('--print-ir-after-all on examples/patching.nns: every stage up to the executor choice (fast path), all of them with the fast path off, same results', async () => {
    const [fast, compiled] = await Promise.all([
      nns(['run', 'examples/patching.nns', '--print-ir-after-all']),
      nns(['run', 'examples/patching.nns', '--print-ir-after-all'], { ONNSIGHT_FAST: '0' }),
    ]);
    expect(fast.code, fast.err).toBe(0);
    expect(compiled.code, compiled.err).toBe(0);
    expect(stages(fast.err)).toEqual([...irPipeline, ...executorStages].map((p) => p.name));
    expect(fast.err).toMatch(/\/\/ executor: fast/);
    expect(fast.err).toMatch(/-> feed port\.\d+\.keep, port\.\d+\.add \(replace with %\d+\)/);
    expect(stages(compiled.err)).toEqual(PASS_NAMES);
    expect(compiled.err).toMatch(/\/\/ executor: compiled/);
    expect(compiled.out).toBe(fast.out);
  });

  it('--print-ir-after=NAME prints after that stage only', async () => {
    const r = await nns(['run', 'examples/patching.nns', '--print-ir-after=plan-fast-path']);
    expect(r.code, r.err).toBe(0);
    expect(stages(r.err)).toEqual(['plan-fast-path']);
  });

  it('--passes runs the named passes and prints the state after the last to stdout', async () => {
    const r = await nns(['check', 'examples/eiffel.nns', '--passes=resolve-modules,infer-types']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^scope #0 rows 0\.\.1$/m);
    expect(r.out).toMatch(/= module\.input #1 \{path: "transformer\.h\.2".*: float32\[1, sequence, 128\]/);
    expect(r.out.trimEnd().endsWith('examples/eiffel.nns: ok')).toBe(true);
  });

  it('an unknown pass is a usage error naming the passes', async () => {
    const r = await nns(['check', 'examples/eiffel.nns', '--passes=resolve-modules,infer-type']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("nns: error[unknown-pass]: no pass 'infer-type'; did you mean 'infer-types'?");
    expect(r.err).toContain('the passes are resolve-modules, narrow-rows, infer-types');
  });
});
