/**
 * Hostile scripts through the front end (issue 9 items 1–4, issue 8 item 7): every input
 * ends in clean, located errors with output bounded by the input's size, and the work the
 * front end does is bounded by counts (limits), never measured by the clock.
 */
import { describe, expect, it } from 'vitest';
import { lowerScript } from '../../grammar/script.js';
import { parseScript } from '../../grammar/parse.js';
import { DEFAULT_LIMITS } from '../../grammar/limits.js';
import { NnsError } from '../../src/errors.js';
import { MAX_QUOTED_LINE, MAX_RENDERED_ERRORS, renderErrors } from '../../src/diagnostics.js';
import { HostEvalError, tensorOf } from '../../ir/eval.js';
import { evalOp } from '../../ir/ops.js';
import { explainUnknownModule } from '../../passes/resolve-modules.js';
import { buildModuleTree } from '../../src/model/modules.js';
import { llamaLike } from '../fixtures/modules/synthetic.js';

const tokenize = (t: string): number[] => t.split(/\s+/).filter(Boolean).map((_, i) => i + 1);

/** Front end plus rendering, as `nns check` does it without a model. */
function frontEnd(text: string, limits = {}): { errors: NnsError[]; rendered: string; work: number; irSize: number } {
  const r = lowerScript(text, { file: 'h.nns', tokenize, limits });
  for (const e of r.errors) expect(e).toBeInstanceOf(NnsError);
  const rendered = renderErrors(r.errors, new Map([['h.nns', text]]));
  const work = r.traces.reduce((s, t) => s + t.stats.work, 0);
  const irSize = r.traces.reduce((s, t) => s + t.stats.irSize, 0);
  return { errors: r.errors, rendered, work, irSize };
}

const trace = (body: string): string => `trace "The Eiffel Tower" {\n${body}\n}\n`;

// Sizes are chosen so that each case takes well under a second unloaded; the generous
// timeouts only keep a loaded 2-core machine from failing them (nothing here measures time).
describe('9.1 output that grows faster than input', { timeout: 60_000 }, () => {
  it('a 20 KB line of "$ " gives at most 50 errors, clipped lines, and a count of the rest', () => {
    const text = trace('$ '.repeat(10_000));
    const { errors, rendered } = frontEnd(text);
    expect(errors.length).toBe(10_000);
    expect(rendered).toContain(`nns: ${10_000 - MAX_RENDERED_ERRORS} more errors not shown`);
    expect(rendered.split('\n').filter((l) => /error\[/.test(l))).toHaveLength(MAX_RENDERED_ERRORS);
    for (const line of rendered.split('\n')) expect(line.length).toBeLessThanOrEqual(MAX_QUOTED_LINE + 20 + 400);
    expect(rendered.length).toBeLessThan(64 * 1024); // was 300 MB
  });

  it('the caret stays under the reported column in a clipped line', () => {
    const text = trace(`  x = ${'1 + '.repeat(2000)}1 $`);
    const { errors, rendered } = frontEnd(text);
    expect(errors).toHaveLength(1);
    const lines = rendered.split('\n');
    const quoted = lines[1]!.slice(lines[1]!.indexOf('| ') + 2);
    const caret = lines[2]!.slice(lines[2]!.indexOf('| ') + 2);
    expect(quoted[caret.indexOf('^')]).toBe('$');
    expect(quoted.startsWith('…')).toBe(true);
  });

  it('100 KB of garbage ends in bounded output', () => {
    let seed = 7;
    const rnd = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const chars = '()[]{}$%^&,.;:=+-*/abcx0123 \n"';
    const text = Array.from({ length: 100_000 }, () => chars[Math.floor(rnd() * chars.length)]).join('');
    const { errors, rendered } = frontEnd(text);
    expect(errors.length).toBeGreaterThan(0);
    expect(rendered.length).toBeLessThan(64 * 1024);
  });

  it('a valid 10 MB one-line expression is refused by size, at once, in one short error', () => {
    const text = trace(`  x = ${Array(5_000_000).fill('1').join('+')}`);
    const { errors, rendered } = frontEnd(text);
    expect(errors.map((e) => e.code)).toEqual(['too-large']);
    expect(errors[0]!.message).toContain(`the limit is ${DEFAULT_LIMITS.maxSourceChars.toLocaleString('en-US')}`);
    expect(rendered.length).toBeLessThan(1024);
  });

  it('5,000 undefined names: every one reported, rendering bounded', () => {
    const text = trace(Array.from({ length: 5000 }, (_, i) => `  x${i} = y${i}`).join('\n'));
    const { errors, rendered } = frontEnd(text);
    expect(errors).toHaveLength(5000);
    expect(errors.every((e) => e.code === 'undefined-name')).toBe(true);
    expect(rendered.length).toBeLessThan(64 * 1024);
  });
});

describe('9.2 work that grows without bound', { timeout: 60_000 }, () => {
  it('three nested empty loops stop at the work budget, at the loop header', () => {
    const limits = { maxUnrolledWork: 5000 };
    const text = trace('  for i in 0..100 { for j in 0..100 { for k in 0..100 { } } }');
    const { errors, work } = frontEnd(text, limits);
    expect(errors.map((e) => e.code)).toEqual(['too-large']);
    expect(errors[0]!.span!.line).toBe(2);
    expect(work).toBeLessThanOrEqual(5000 + 10); // one statement or iteration past the budget
  });

  it('the default budget stops three nested empty 0..10000 loops (10^12 iterations) after at most the budget of 2,000,000 steps', () => {
    const { errors, work } = frontEnd(trace('  for i in 0..10000 { for j in 0..10000 { for k in 0..10000 { } } }'));
    expect(errors.map((e) => e.code)).toEqual(['too-large']);
    expect(work).toBeLessThanOrEqual(DEFAULT_LIMITS.maxUnrolledWork + 10);
  });

  it('a list literal over the element limit is a located error', () => {
    const text = trace(`  x = [${Array(60).fill('1').join(', ')}]\n  y = [[1, 2], [3, 4]]`);
    const { errors } = frontEnd(text, { maxLiteralElements: 50 });
    expect(errors.map((e) => [e.code, e.span!.line])).toEqual([['too-large', 2]]);
    expect(frontEnd(trace(`  x = [${Array(60_000).fill('1').join(',')}]`)).errors[0]!.message).toContain('60,000 elements');
  });

  it('IR size is bounded: literals repeated by a loop count their elements', () => {
    const text = trace(`  for i in 0..1000 { x = [${Array(100).fill('1').join(',')}] }`);
    const { errors, irSize } = frontEnd(text, { maxIrSize: 10_000 });
    expect(errors.map((e) => e.code)).toEqual(['too-large']);
    expect(irSize).toBeLessThanOrEqual(10_000 + 101);
  });

  it('lowering is linear: work and IR size grow in proportion to the statements', () => {
    const size = (n: number): { work: number; irSize: number } => frontEnd(trace(Array.from({ length: n }, (_, i) => `  a${i} = ${i} * 2`).join('\n')));
    const [a, b, c] = [size(1000), size(2000), size(8000)];
    expect(c.work - a.work).toBe(7 * (b.work - a.work));
    expect(c.irSize - a.irSize).toBe(7 * (b.irSize - a.irSize));
  });

  it('5,000 nested scopes are refused by the nesting limit', () => {
    const text = trace(`${'for i in 0..1 {'.repeat(5000)} x = 1 ${'}'.repeat(5000)}`);
    const { errors } = frontEnd(text);
    expect(errors.map((e) => e.code)).toEqual(['too-deep']);
  });
});

describe('9.3 recursion limits are located errors', { timeout: 60_000 }, () => {
  const cases: [string, string][] = [
    ['10k parentheses', `  x = ${'('.repeat(10_000)}1${')'.repeat(10_000)}`],
    ['10k brackets', `  x = ${'['.repeat(10_000)}1${']'.repeat(10_000)}`],
    ['1,000 nested for', `${Array.from({ length: 1000 }, (_, d) => `for i${d} in 0..1 {`).join('')}${'}'.repeat(1000)}`],
    ['100k unary minus', `  x = ${'-'.repeat(100_000)}1`],
    ['a 10k-term sum', `  x = ${Array(10_000).fill('model.transformer.h[0].output').join(' + ')}`],
    ['a 10k-suffix chain', `  x = model${'.a'.repeat(10_000)}.output`],
    ['a 100k-term sum', `  x = ${Array(100_000).fill('1').join('+')}`],
  ];
  it.each(cases)('%s', (_name, body) => {
    const { errors } = frontEnd(trace(body));
    expect(errors).toHaveLength(1);
    expect(['too-deep', 'too-large']).toContain(errors[0]!.code);
    expect(errors[0]!.span!.line).toBeGreaterThanOrEqual(2);
  });

  it('just under the limits lowers without error', () => {
    const depth = DEFAULT_LIMITS.maxNesting - 2; // the trace block is one level
    expect(frontEnd(trace(`  x = ${'('.repeat(depth)}1${')'.repeat(depth)}`)).errors).toEqual([]);
    const terms = `  h = model.transformer.h[0].output\n  x = ${Array(DEFAULT_LIMITS.maxExprDepth - 1).fill('h').join(' + ')}`;
    expect(frontEnd(trace(terms)).errors).toEqual([]);
  });
});

describe('9.4 huge values in JavaScript', () => {
  it('the host evaluator refuses a result over its budget before allocating', () => {
    const a = tensorOf('float32', [100_000, 1], new Float32Array(100_000));
    const b = tensorOf('float32', [1, 100_000], new Float32Array(100_000));
    expect(() => evalOp('mul', {}, [a, b], 'float32')).toThrow(HostEvalError);
    expect(() => evalOp('matmul', {}, [a, b], 'float32')).toThrow(HostEvalError);
  });
});

describe('8.7 diagnostics', () => {
  it("an unclosed '(' is reported where it was opened, and later lines are still checked", () => {
    const text = trace('  x = softmax(model.transformer.h[0].output, -1\n  y = 2\n  z = = 1');
    const r = parseScript(text, 'h.nns');
    expect(r.errors.map((e) => [e.code, e.span!.line, e.span!.col, e.message])).toEqual([
      ['unclosed-bracket', 2, 14, "'(' at 2:14 is never closed"],
      ['syntax-error', 4, 7, "expected an expression but found '='"],
    ]);
  });

  it("an unclosed '[' and '{' likewise", () => {
    expect(parseScript(trace('  x = [1, 2\n  y = 3'), 'h.nns').errors.map((e) => e.message)).toEqual(["'[' at 2:7 is never closed"]);
    expect(parseScript('trace "a" {\n  x = 1\n', 'h.nns').errors.map((e) => e.message)).toEqual(["'{' at 1:11 is never closed"]);
  });

  it('did you mean suggests a full existing path, as the script writes it', () => {
    const tree = buildModuleTree(llamaLike());
    const msg = explainUnknownModule(tree, 'layers.0')!;
    expect(msg).toBe("no module 'model.layers[0]'; did you mean 'model.model.layers[0]'?");
    const m = /did you mean '([^']+)'/.exec(explainUnknownModule(tree, 'model.layer.1.mlp')!)!;
    expect(tree.modules.has(m[1]!.replace(/^model\./, '').replace(/\[(\d+)\]/g, '.$1'))).toBe(true);
  });
});
