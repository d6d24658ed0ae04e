/**
 * Hostile scripts through the `nns` command (issue 9 items 1–4): each ends with exit 1 or
 * 2 and one clean error (or a bounded list), no stack trace, no `internal error`, and no
 * output file. Spawns `node bin/nns.mjs` as a user would.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';

const root = path.join(import.meta.dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-hostile-'));
const MODEL = `model "${path.join(root, 'models', 'gpt2-facts')}"\n`;

const nns = (args: string[]) => runNns(args, { cwd: tmp, env: { NNS_DEBUG: '' } });

const trace = (body: string): string => `${MODEL}trace "The Eiffel Tower is in the city of" {\n${body}\n}\n`;

const CASES: { name: string; text: string; code: string; errors?: number }[] = [
  { name: 'a 20 KB line of "$ "', text: trace('$ '.repeat(10_000)), code: 'unexpected-character' },
  { name: 'a valid 10 MB one-line expression', text: trace(`  x = ${Array(5_000_000).fill('1').join('+')}`), code: 'too-large', errors: 1 },
  { name: 'three nested empty 0..10000 loops', text: trace('  for i in 0..10000 { for j in 0..10000 { for k in 0..10000 { } } }'), code: 'too-large', errors: 1 },
  { name: '10k parentheses', text: trace(`  x = ${'('.repeat(10_000)}1${')'.repeat(10_000)}`), code: 'too-deep', errors: 1 },
  { name: '1,000 nested for', text: trace(Array.from({ length: 1000 }, (_, d) => `for i${d} in 0..1 {`).join('') + '}'.repeat(1000)), code: 'too-deep', errors: 1 },
  { name: '100k unary minus', text: trace(`  x = ${'-'.repeat(100_000)}1`), code: 'too-deep', errors: 1 },
  {
    name: 'a broadcast of 12.5 billion elements',
    text: trace('  w = model.lm_head.weight\n  x = sum(reshape(w, [-1, 1]) * reshape(w, [1, -1])).save()'),
    code: 'too-large',
    errors: 1,
  },
  { name: 'a token id outside the vocabulary', text: `${MODEL}trace [464, 100000] {\n  model.output.save()\n}\n`, code: 'bad-prompt', errors: 1 },
];

describe.concurrent('hostile scripts through nns run', { timeout: 180_000 }, () => {
  it.each(CASES)('$name', async ({ name, text, code, errors }) => {
    const file = path.join(tmp, `${name.replace(/\W+/g, '_')}.nns`);
    const out = path.join(tmp, `${name.replace(/\W+/g, '_')}.json`);
    fs.writeFileSync(file, text);
    const r = await nns(['run', file, '--out', out]);
    expect([1, 2]).toContain(r.code);
    expect(r.err).toContain(`error[${code}]`);
    expect(r.err).not.toMatch(/internal error|^\s+at .*:\d+:\d+\)?$/m);
    expect(Buffer.byteLength(r.err)).toBeLessThan(64 * 1024);
    if (errors !== undefined) expect(r.err.match(/error\[/g)).toHaveLength(errors);
    expect(r.out).toBe('');
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.endsWith('.json') || f.includes('.tmp-'))).toEqual([]);
  });
});

describe('an endless script file', { timeout: 120_000 }, () => {
  it.skipIf(!fs.existsSync('/dev/zero'))('nns check /dev/zero is refused before it is read (not a regular file)', async () => {
    const r = await nns(['check', '/dev/zero']);
    expect(r.code).toBe(2);
    expect(r.err).toContain("'/dev/zero' is not a regular file");
    expect(r.err.match(/error\[/g)).toHaveLength(1);
  });
});
