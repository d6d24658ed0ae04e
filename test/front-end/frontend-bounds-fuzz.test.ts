/**
 * Property test of the front end's bounds (issue 9): scripts assembled from hostile
 * fragments, each repeated up to hundreds of times (deep brackets, long chains, loops of
 * loops, garbage, long names). For every input, by count and never by the clock:
 * - the front end never throws: every problem is an NnsError with a span in the text;
 * - rendered output is linear in the input: bytes ≤ input + 64 KiB (at most 50 errors are
 *   shown, each with clipped lines and messages);
 * - unrolled work and IR size stay within the limits (plus one statement);
 * - the number of errors is at most linear in the input and the work.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { lowerScript } from '../../grammar/script.js';
import { NnsError } from '../../src/errors.js';
import { renderErrors } from '../../src/diagnostics.js';

const FRAGMENTS = [
  'trace "p" {', 'trace {', 'invoke "a" {', 'invoke [1, 2] {', 'for i in 0..100 {', 'for j in 0..10000 {', '{', '}', '(', ')', '[', ']',
  '-', '+', '*', ' ', '\n', '=', ',', ':', '.', '..', 'x', 'y1', '1', '0.5', '$', '"', '"s"', '#c\n',
  'model.transformer.h[i].output', 'model.transformer.h[0].output[:, -1, :]', '.save()', 'softmax(', ', -1)', 'topk(x, 3).values',
  'x = ', 'y = x + 1\n', 'z = [1, 2, 3]\n', 'a_very_long_name_'.repeat(8),
];

const piece = fc.record({ frag: fc.constantFrom(...FRAGMENTS), times: fc.integer({ min: 1, max: 400 }) });
const script = fc.array(piece, { minLength: 1, maxLength: 12 }).map((ps) => ps.map((p) => p.frag.repeat(p.times)).join(''));

const tokenize = (t: string): number[] => t.split(/\s+/).filter(Boolean).map((_, i) => (i % 800) + 1);
const limits = { maxUnrolledWork: 20_000, maxIrSize: 20_000 };

describe('front end bounds (property)', () => {
  it('output linear in the input, work and IR within the limits, errors only NnsErrors', { timeout: 120_000 }, () => {
    fc.assert(
      fc.property(script, (text) => {
        let r;
        try {
          r = lowerScript(text, { file: 'f.nns', tokenize, limits });
        } catch (e) {
          throw new Error(`front end threw: ${e instanceof Error ? e.stack : String(e)}\n--- script (${text.length} chars) ---\n${text.slice(0, 400)}`);
        }
        for (const e of r.errors) {
          expect(e).toBeInstanceOf(NnsError);
          expect(e.span!.offset).toBeGreaterThanOrEqual(0);
          expect(e.span!.offset).toBeLessThanOrEqual(text.length + 1);
        }
        const rendered = renderErrors(r.errors, new Map([['f.nns', text]]));
        expect(Buffer.byteLength(rendered)).toBeLessThanOrEqual(text.length + 64 * 1024);
        let work = 0;
        for (const t of r.traces) {
          expect(t.stats.work).toBeLessThanOrEqual(limits.maxUnrolledWork + text.length);
          expect(t.stats.irSize).toBeLessThanOrEqual(limits.maxIrSize + text.length);
          work += t.stats.work;
        }
        expect(r.errors.length).toBeLessThanOrEqual(text.length + work + 1);
      }),
      { numRuns: 60, seed: 9001 },
    );
  });
});
