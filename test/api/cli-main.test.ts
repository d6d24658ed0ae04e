/**
 * CLI tests: spawn `node bin/nns.mjs ...` as a user would, and check help, usage errors
 * (exit 2), script errors (exit 1, `FILE:LINE:COL: error[...]`, no stack trace, no output
 * file), and a real run of the Eiffel example.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';

const root = path.join(import.meta.dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-cli-'));

const nns = (args: string[], env: Record<string, string> = {}) => runNns(args, { cwd: root, env });

function noStack(text: string): void {
  expect(text).not.toMatch(/^\s+at .*\(.*:\d+:\d+\)$/m);
  expect(text).not.toMatch(/TypeError|ReferenceError|node:internal/);
}

describe.concurrent('nns help and usage', () => {
  it('nns --help lists the commands', async () => {
    const r = await nns(['--help']);
    expect(r.code).toBe(0);
    for (const c of ['run', 'compile', 'modules', 'check']) expect(r.out).toContain(c);
  });

  it.each(['run', 'compile', 'modules', 'check'])('nns %s --help', async (c) => {
    const r = await nns([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(new RegExp(`^usage: nns ${c} `));
  });

  it.each([
    [['frobnicate'], 'unknown-command'],
    [['--frob'], 'unknown-command'],
    [['run'], 'missing-argument'],
    [['run', 'examples/eiffel.nns', '--bogus'], 'unknown-flag'],
    [['run', 'examples/eiffel.nns', '--model'], 'missing-value'],
    [['run', 'a.nns', 'b.nns'], 'extra-argument'],
    [['compile', 'examples/eiffel.nns'], 'missing-argument'],
    [['run', 'does/not/exist.nns'], 'no-such-file'],
  ])('nns %j is a usage error (exit 2)', async (args, code) => {
    const r = await nns(args as string[]);
    expect(r.code).toBe(2);
    expect(r.err).toContain(`nns: error[${code}]`);
    noStack(r.err);
  });

  it('nns with no arguments prints usage and exits 2', async () => {
    const r = await nns([]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('usage: nns');
  });
});

describe.concurrent('script errors', () => {
  const bad = path.join(tmp, 'bad.nns');
  fs.writeFileSync(bad, 'trace "The Eiffel Tower is in the city of" {\n  a = = 3\n  b = softmax(model.output, -1\n}\n');

  it('reports every syntax error as FILE:LINE:COL: error[CODE], exits 1, writes no output', async () => {
    const out = path.join(tmp, 'out.json');
    const r = await nns(['run', bad, '--model', 'models/gpt2-facts', '--out', out]);
    expect(r.code).toBe(1);
    const heads = r.err.split('\n').filter((l) => l.includes(': error['));
    expect(heads.length).toBe(2);
    expect(heads[0]).toBe(`${bad}:2:7: error[syntax-error]: expected an expression but found '='`);
    expect(r.err).toContain('  2 |   a = = 3');
    expect(r.err).toContain('    |       ^');
    noStack(r.err);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('out.json'))).toEqual([]);
  });

  it('reports semantic errors with nns check', async () => {
    const f = path.join(tmp, 'sem.nns');
    fs.writeFileSync(f, 'trace "p" {\n  a = softmx(model.output, -1)\n}\n');
    const r = await nns(['check', f]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${f}:2:7: error[unknown-function]: unknown function 'softmx'; did you mean 'softmax'?`);
  });

  it('reports a missing model as a usage error', async () => {
    const f = path.join(tmp, 'nomodel.nns');
    fs.writeFileSync(f, 'trace "p" { model.output.save() }\n');
    const r = await nns(['run', f]);
    expect(r.code).toBe(2);
    expect(r.err).toContain('error[no-model]');
  });

  it('never prints a stack trace for garbage input', async () => {
    const f = path.join(tmp, 'garbage.nns');
    fs.writeFileSync(f, '\u0000\u00ff}{)(]["\\');
    const r = await nns(['check', f]);
    expect(r.code).toBe(1);
    noStack(r.err);
  });
});

describe.concurrent('nns run with the bundled model', () => {
  it('runs the Eiffel example, prints Paris, and writes JSON results', async () => {
    const out = path.join(tmp, 'eiffel.json');
    const r = await nns(['run', 'examples/eiffel.nns', '--out', out]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}Paris 0\.9\d\d$/m);
    const json = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { dtype: string; shape: number[]; data: number[] }>;
    expect(Object.keys(json).filter((k) => !k.startsWith('$'))).toEqual(['h2', 'logits', 'probs', 'best']); // plus $families and $prompts
    expect(json.h2!.shape).toEqual([1, 8, 128]);
    expect(json.best).toEqual({ dtype: 'int64', shape: [1], data: [383] });
  });
});
