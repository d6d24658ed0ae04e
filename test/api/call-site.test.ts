/**
 * The TS API's call-site spans (src/trace.ts `callSite`): under Node's own stack formatter
 * (tsx: source-mapped), a stack is read as raw call sites and its span remembered; the spans
 * must be exactly those the stack text gives (another formatter forces that way), and point
 * at the lines of the fixture's source that made the calls.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'call-site.ts');

describe('callSite spans', () => {
  it('are the same read as raw call sites (remembered) or from the stack text, at the calling lines', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', FIXTURE], { cwd: ROOT, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { formatter: string | null; fast: unknown[][]; slow: unknown[] };
    // The fast way only applies under Node's own formatter (Node 20.19+ exposes it as Error.prepareStackTrace).
    expect(out.formatter).toBe('ErrorPrepareStackTrace');
    const lines = fs.readFileSync(FIXTURE, 'utf8').split('\n');
    const lineOf = (marker: string): number => lines.findIndex((l) => l.includes(`// ${marker}`)) + 1;
    const want = ['SITE-A', 'SITE-B', 'SITE-B', 'SITE-C', 'SITE-D'].map(lineOf);
    expect(out.slow.map((s) => (s as { line: number }).line)).toEqual(want);
    for (const s of out.slow) expect((s as { file: string }).file).toBe(path.join('test', 'fixtures', 'call-site.ts'));
    expect(out.fast[0]).toEqual(out.slow);
    expect(out.fast[1]).toEqual(out.slow);
  });
});
