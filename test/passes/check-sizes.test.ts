/**
 * check-sizes (issue 9 item 4): a computed value over the budget is a located too-large
 * error before anything is allocated; the model's own values are not counted.
 */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import { inferTypesPass } from '../../passes/infer-types.js';
import { checkSizesPass, DEFAULT_MAX_VALUE_BYTES, sizeErrors } from '../../passes/check-sizes.js';
import { gpt2Tree, runOne, sp } from '../golden/fixture.js';

function graph(build: (b: Builder) => void): Builder {
  const b = new Builder({ tree: gpt2Tree() });
  b.scope = b.addInvoke([1, 2, 3], sp(1, 1));
  b.graph.dimValues.sequence = 3;
  build(b);
  expect(runOne(inferTypesPass, b.graph).errors).toEqual([]);
  return b;
}

describe('check-sizes', () => {
  it('refuses a broadcast of 341,825,343,488 elements at its statement', () => {
    const n = 584_659; // n² ≈ 3.4e11
    const b = graph((b) => {
      const x = b.host('x', 'float32', [n, 1], sp(2, 1));
      const y = b.host('y', 'float32', [1, n], sp(3, 1));
      b.save(b.op('mul', [x, y], {}, sp(4, 7)), 'z', sp(4, 1));
    });
    const errs = runOne(checkSizesPass, b.graph).errors;
    expect(errs.map((e) => [e.code, e.span?.line, e.span?.col])).toEqual([['too-large', 4, 7]]);
    expect(errs[0]!.message).toContain(`${(n * n).toLocaleString('en-US')} elements`);
  });

  it('refuses a 1024³ intermediate, counting symbolic dims by their values', () => {
    const b = graph((b) => {
      const h = b.moduleOutput('transformer.h.0', 0, sp(2, 1)); // [1, sequence=3, 128]
      const r = b.op('reshape', [h], { shape: [-1, 1, 1] }, sp(3, 1)); // [384, 1, 1]
      const big = b.op('mul', [b.op('mul', [r, b.op('reshape', [h], { shape: [1, -1, 1] }, sp(4, 1))], {}, sp(5, 1)), b.op('reshape', [h], { shape: [1, 1, -1] }, sp(6, 1))], {}, sp(7, 1));
      b.save(b.op('sum', [big], { dim: null, keepdim: false }, sp(8, 1)), 's', sp(8, 1));
    });
    expect(sizeErrors(b.graph, 384 ** 3 * 4 - 1).map((e) => e.span?.line)).toEqual([7]);
    expect(sizeErrors(b.graph, 384 ** 3 * 4)).toEqual([]);
    expect(sizeErrors(b.graph, DEFAULT_MAX_VALUE_BYTES)).toEqual([]);
  });

  it('does not count the model\'s own values', () => {
    const b = graph((b) => { b.save(b.modelOutput('logits', sp(2, 1)), 'l', sp(2, 1)); });
    expect(sizeErrors(b.graph, 16)).toEqual([]);
  });
});
