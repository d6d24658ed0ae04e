/**
 * Property test: random and mutated scripts (the examples and the diagnostic scripts with
 * characters and tokens deleted, inserted, swapped and duplicated) never make the lexer,
 * parser, visitor or lowering throw — every problem comes back as an NnsError with a span
 * inside the text, and every error renders.
 */
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lowerScript } from '../../grammar/script.js';
import { NnsError } from '../../src/errors.js';
import { renderErrors } from '../../src/diagnostics.js';

const root = path.join(import.meta.dirname, '..', '..');
const seeds = [
  ...fs.readdirSync(path.join(root, 'examples')).filter((f) => f.endsWith('.nns')).map((f) => path.join(root, 'examples', f)),
  ...fs.readdirSync(path.join(root, 'test/scripts/errors')).map((f) => path.join(root, 'test/scripts/errors', f)),
].map((f) => fs.readFileSync(f, 'utf8'));

const TOKENS = [
  'model', 'trace', 'invoke', 'for', 'in', '..', '...', '.', '(', ')', '[', ']', '{', '}', ',', ':', '=', '+', '-', '*', '/', '@',
  '"', '"x"', '\\', '#', '\n', ' ', '0', '-1', '1e-3', '0.5', '99999999999999999999', 'save()', '.save()', 'output', 'outputs[1]',
  'softmax', 'topk', 'grad', 'generate', 'param', 'skip', 'stop', 'true', 'x', 'h', 'model.transformer.h[0].output', 'for i in 0..3 {',
  'invoke "A" {', 'trace {', '$', '\t', 'ü', '\r\n',
];

const tokenize = (t: string): number[] => t.split(/\s+/).filter(Boolean).map((_, i) => i + 1);

/** Runs the front end and checks it only ever reports NnsErrors with sane spans. */
function frontEnd(text: string): void {
  let r;
  try {
    r = lowerScript(text, { file: 'fuzz.nns', tokenize });
  } catch (e) {
    throw new Error(`front end threw ${e instanceof Error ? e.stack : String(e)}\n--- script ---\n${text}`);
  }
  for (const e of r.errors) {
    expect(e).toBeInstanceOf(NnsError);
    expect(e.span, `${e.code} without span`).toBeDefined();
    expect(e.span!.offset).toBeGreaterThanOrEqual(0);
    expect(e.span!.offset).toBeLessThanOrEqual(text.length + 1);
    expect(e.span!.line).toBeGreaterThanOrEqual(1);
    expect(e.span!.col).toBeGreaterThanOrEqual(1);
  }
  renderErrors(r.errors, new Map([['fuzz.nns', text]]));
}

type Edit = { kind: 'delete' | 'insert' | 'swap' | 'dup' | 'token'; at: number; len: number; text: string };

const edit = fc.record({
  kind: fc.constantFrom<Edit['kind']>('delete', 'insert', 'swap', 'dup', 'token'),
  at: fc.nat(),
  len: fc.integer({ min: 1, max: 12 }),
  text: fc.oneof(fc.constantFrom(...TOKENS), fc.string({ maxLength: 3 })),
});

function apply(src: string, e: Edit): string {
  const at = src.length === 0 ? 0 : e.at % src.length;
  switch (e.kind) {
    case 'delete':
      return src.slice(0, at) + src.slice(at + e.len);
    case 'insert':
      return src.slice(0, at) + e.text + src.slice(at);
    case 'swap': {
      const b = (at + e.len) % Math.max(1, src.length);
      const [i, j] = at < b ? [at, b] : [b, at];
      return i === j ? src : src.slice(0, i) + src[j] + src.slice(i + 1, j) + src[i] + src.slice(j + 1);
    }
    case 'dup':
      return src.slice(0, at + e.len) + src.slice(at, at + e.len) + src.slice(at + e.len);
    case 'token': {
      // Replace a whitespace-separated word by a token from the vocabulary.
      const words = src.split(/(\s+)/);
      const k = (e.at % Math.max(1, words.length)) & ~1;
      words[k] = e.text;
      return words.join('');
    }
  }
}

describe('front end robustness', () => {
  it('never throws on mutated examples', () => {
    fc.assert(
      fc.property(fc.nat({ max: seeds.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 6 }), (i, edits) => {
        frontEnd(edits.reduce(apply, seeds[i]!));
      }),
      { numRuns: 1500 },
    );
  });

  it('never throws on random token soup', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...TOKENS), { maxLength: 60 }), (toks) => {
        frontEnd(toks.join(' '));
      }),
      { numRuns: 300 },
    );
  });

  it('never throws on arbitrary strings', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => frontEnd(s)), { numRuns: 200 });
  });

  it('accepts every example unchanged', () => {
    for (const f of fs.readdirSync(path.join(root, 'examples')).filter((x) => x.endsWith('.nns'))) {
      const r = lowerScript(fs.readFileSync(path.join(root, 'examples', f), 'utf8'), { file: f, tokenize });
      expect(r.errors, f).toEqual([]);
    }
  });
});
