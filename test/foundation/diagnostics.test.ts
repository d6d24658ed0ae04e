/**
 * Diagnostic tests: every script under test/scripts/errors/ carries its expected errors as
 * comments, `# expect-error@+1 [code]` (error on the next line), `@0` (same line) or
 * `@-N`. The front end (parse, top-level checks, lowering) must report exactly those
 * codes on exactly those lines — no more, no fewer.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { lowerScript } from '../../grammar/script.js';
import { NnsError } from '../../src/errors.js';
import { renderError, renderErrors } from '../../src/diagnostics.js';

const dir = path.join(import.meta.dirname, '..', 'scripts', 'errors');
const files = fs.readdirSync(dir).filter((f) => f.endsWith('.nns')).sort();

/** Expected `line [code]` entries of a script. */
export function expectations(text: string): string[] {
  const out: string[] = [];
  text.split('\n').forEach((line, i) => {
    for (const m of line.matchAll(/#.*?expect-error@([+-]?\d+)\s*\[([\w-]+)\]/g)) {
      out.push(`${i + 1 + Number(m[1])} [${m[2]}]`);
    }
  });
  return out.sort();
}

/** A stand-in tokenizer: one token per word. */
const tokenize = (t: string): number[] => t.split(/\s+/).filter(Boolean).map((_, i) => i + 1);

describe('diagnostic scripts', () => {
  it('finds the scripts', () => {
    expect(files.length).toBeGreaterThanOrEqual(8);
  });
  for (const f of files) {
    it(f, () => {
      const text = fs.readFileSync(path.join(dir, f), 'utf8');
      const r = lowerScript(text, { file: f, tokenize });
      for (const e of r.errors) expect(e.span, `${e.code} has a span`).toBeDefined();
      const got = r.errors.map((e) => `${e.span!.line} [${e.code}]`).sort();
      expect(got, renderErrors(r.errors, new Map([[f, text]]))).toEqual(expectations(text));
      // Every error renders in the documented format.
      for (const e of r.errors) expect(renderError(e, new Map([[f, text]]))).toMatch(new RegExp(`^${f.replace('.', '\\.')}:\\d+:\\d+: error\\[${e.code}\\]: `));
    });
  }
});

describe('rendering', () => {
  const text = 'trace "x" {\n  x = model.transformer.h[7].output.save()\n}\n';
  const span = { file: 'eiffel.nns', line: 2, col: 21, endLine: 2, endCol: 26, offset: 32, endOffset: 37 };

  it('prints location, code, source line and a caret underline', () => {
    const e = new NnsError('unknown-module', "no module 'transformer.h[7]' (the model has h[0]..h[3])", { span });
    expect(renderError(e, new Map([['eiffel.nns', text]]))).toBe([
      "eiffel.nns:2:21: error[unknown-module]: no module 'transformer.h[7]' (the model has h[0]..h[3])",
      '  2 |   x = model.transformer.h[7].output.save()',
      '    |                     ^~~~~',
    ].join('\n'));
  });

  it('prints notes after the source', () => {
    const e = new NnsError('rebinding', "'x' is already bound", { span, notes: ['first bound at eiffel.nns:1:1'] });
    const lines = renderError(e, new Map([['eiffel.nns', text]])).split('\n');
    expect(lines[3]).toBe('    = note: first bound at eiffel.nns:1:1');
  });

  it('prints errors without a span as nns: error[CODE]', () => {
    const e = new NnsError('model-truncated', 'the model file is truncated', { kind: 'model' });
    expect(renderError(e)).toBe('nns: error[model-truncated]: the model file is truncated');
  });

  it('underlines at least one column, and only to the end of the first line of a multi-line span', () => {
    const e1 = new NnsError('syntax-error', 'm', { span: { ...span, endCol: 21 } });
    expect(renderError(e1, new Map([['eiffel.nns', text]])).split('\n')[2]).toBe('    |                     ^');
    const e2 = new NnsError('syntax-error', 'm', { span: { ...span, col: 37, endLine: 3, endCol: 2 } });
    expect(renderError(e2, new Map([['eiffel.nns', text]])).split('\n')[2]).toBe(`    | ${' '.repeat(36)}^~~~~~`);
  });

  it('sorts several errors by position', () => {
    const a = new NnsError('syntax-error', 'first', { span: { ...span, line: 1, col: 1, offset: 0 } });
    const b = new NnsError('rebinding', 'second', { span });
    const out = renderErrors([b, a], new Map([['eiffel.nns', text]]));
    expect(out.indexOf('error[syntax-error]')).toBeLessThan(out.indexOf('error[rebinding]'));
    expect(out.indexOf('error[syntax-error]')).toBeGreaterThanOrEqual(0);
  });
});
