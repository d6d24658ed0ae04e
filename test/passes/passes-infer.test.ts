/** infer-types on the hand-written GPT-2-like tree: shapes, dtypes and error messages. */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import type { IndexItem, Value } from '../../ir/ir.js';
import { formatType } from '../../ir/shape.js';
import { verify } from '../../ir/verifier.js';
import { inferTypesPass } from '../../passes/infer-types.js';
import { gpt2Tree, runOne, sp } from '../golden/fixture.js';

const S: IndexItem = { kind: 'slice' };
const I = (index: number): IndexItem => ({ kind: 'index', index });

/** Build in one invoke (sequence = 8 unless `seq` is null), infer, return types as text and errors. */
function infer(build: (b: Builder) => Value[], seq: number | null = 8): { types: string[]; errors: string[]; codes: string[]; lines: number[] } {
  const b = new Builder({ tree: gpt2Tree() });
  b.scope = b.addInvoke([1, 2, 3, 4, 5, 6, 7, 8], sp(1, 1));
  if (seq !== null) b.graph.dimValues.sequence = seq;
  const vs = build(b);
  const ctx = runOne(inferTypesPass, b.graph);
  expect(verify(b.graph)).toEqual([]);
  return {
    types: vs.map((v) => formatType(v.type)),
    errors: ctx.errors.map((e) => e.message),
    codes: ctx.errors.map((e) => e.code),
    lines: ctx.errors.map((e) => e.span!.line),
  };
}

const h = (b: Builder, i = 2): Value => b.moduleOutput(`transformer.h.${i}`, 0, sp(1, 1));

describe('infer-types: sources and scopes', () => {
  it('resolves batch per scope, keeps sequence symbolic', () => {
    const b = new Builder();
    const s1 = b.addInvoke([1], sp(1, 1));
    b.addInvoke([2], sp(1, 1));
    const all = b.moduleOutput('transformer.h.0', 0, sp(1, 1));
    const out = b.modelOutput(null, sp(1, 1));
    b.scope = s1;
    const one = b.moduleOutput('transformer.h.0', 0, sp(1, 1));
    const ids = b.moduleInput('transformer.wte', 0, sp(1, 1));
    const w = b.param('lm_head.weight', sp(1, 1));
    const x = b.host('steer', 'float32', [128], sp(1, 1));
    runOne(inferTypesPass, b.graph);
    expect([all, out, one, ids, w, x].map((v) => formatType(v.type))).toEqual([
      'float32[2, sequence, 128]', 'float32[2, sequence, 874]', 'float32[1, sequence, 128]', 'int64[1, sequence]', 'float32[874, 128]', 'float32[128]',
    ]);
  });
});

describe('infer-types: operations', () => {
  it('broadcasts arithmetic and promotes dtypes (scalar literals adopt the tensor dtype)', () => {
    const r = infer((b) => {
      const x = h(b);
      const am = b.op('argmax', [x], { dim: -1, keepdim: false }, sp(1, 1));
      return [
        b.op('add', [x, b.host('v', 'float32', [128], sp(1, 1))], {}, sp(1, 1)),
        b.op('mul', [b.host('c', 'float32', [8, 1], sp(1, 1)), x], {}, sp(1, 1)),
        b.op('add', [am, b.constant(1, sp(1, 1))], {}, sp(1, 1)),
        b.op('mul', [am, b.constant(0.5, sp(1, 1))], {}, sp(1, 1)),
        b.op('div', [am, b.constant(2, sp(1, 1), 'int64')], {}, sp(1, 1)),
        b.op('add', [b.host('d', 'float64', [3], sp(1, 1)), b.host('f', 'float32', [3], sp(1, 1))], {}, sp(1, 1)),
      ];
    });
    expect(r.errors).toEqual([]);
    expect(r.types).toEqual(['float32[1, sequence, 128]', 'float32[1, sequence, 128]', 'int64[1, sequence]', 'float32[1, sequence]', 'float32[1, sequence]', 'float64[3]']);
  });

  it('matmul follows PyTorch (1-D operands, batched broadcasting)', () => {
    const f = (b: Builder, shape: number[]): Value => b.host(`x${shape.join('x')}`, 'float32', shape, sp(1, 1));
    const r = infer((b) => {
      const last = b.index(h(b), [S, I(-1)], sp(1, 1));
      const wt = b.op('transpose', [b.param('lm_head.weight', sp(1, 1))], { dim0: 0, dim1: 1 }, sp(1, 1));
      return [
        b.op('matmul', [last, wt], {}, sp(1, 1)),
        b.op('matmul', [f(b, [128]), f(b, [128])], {}, sp(1, 1)),
        b.op('matmul', [f(b, [128]), f(b, [128, 874])], {}, sp(1, 1)),
        b.op('matmul', [f(b, [874, 128]), f(b, [128])], {}, sp(1, 1)),
        b.op('matmul', [f(b, [2, 1, 3, 4]), f(b, [5, 4, 6])], {}, sp(1, 1)),
        b.op('matmul', [h(b), b.param('lm_head.weight', sp(1, 1))], {}, sp(9, 1)),
      ];
    });
    expect(r.types).toEqual(['float32[1, 874]', 'float32[]', 'float32[874]', 'float32[874]', 'float32[2, 5, 3, 6]', '?']);
    expect(r.errors).toEqual(['cannot matmul float32[1, sequence, 128] and float32[874, 128]: inner dimensions 128 and 874 differ']);
    expect(r.lines).toEqual([9]);
  });

  it('reductions, softmax, argmax, topk, transpose', () => {
    const r = infer((b) => {
      const x = h(b);
      const [vals, idx] = b.topk(b.index(b.modelOutput('logits', sp(1, 1)), [S, I(-1)], sp(1, 1)), 5, -1, sp(1, 1));
      return [
        b.op('sum', [x], { dim: null, keepdim: false }, sp(1, 1)),
        b.op('mean', [x], { dim: -1, keepdim: true }, sp(1, 1)),
        b.op('max', [x], { dim: 1, keepdim: false }, sp(1, 1)),
        b.op('norm', [x], { dim: -1, keepdim: false }, sp(1, 1)),
        b.op('argmax', [x], { dim: -1, keepdim: false }, sp(1, 1)),
        b.op('log_softmax', [x], { dim: 2 }, sp(1, 1)),
        vals, idx,
        b.op('transpose', [x], { dim0: 1, dim1: -1 }, sp(1, 1)),
        b.op('zeros_like', [x], {}, sp(1, 1)),
        b.op('exp', [b.op('argmax', [x], { dim: 0, keepdim: true }, sp(1, 1))], {}, sp(1, 1)),
      ];
    });
    expect(r.errors).toEqual([]);
    expect(r.types).toEqual([
      'float32[]', 'float32[1, sequence, 1]', 'float32[1, 128]', 'float32[1, sequence]', 'int64[1, sequence]', 'float32[1, sequence, 128]',
      'float32[1, 5]', 'int64[1, 5]', 'float32[1, 128, sequence]', 'float32[1, sequence, 128]', 'float32[1, sequence, 128]',
    ]);
  });

  it('indexing: negative indices, ellipsis, newaxis, steps, range checks against dimValues', () => {
    const r = infer((b) => {
      const x = h(b);
      return [
        b.index(x, [S, I(-1), S], sp(1, 1)),
        b.index(x, [{ kind: 'ellipsis' }, { kind: 'slice', start: 3, stop: 5 }], sp(1, 1)),
        b.index(x, [{ kind: 'newaxis' }, I(0)], sp(1, 1)),
        b.index(x, [S, { kind: 'slice', start: 2 }, { kind: 'slice', step: 2 }], sp(1, 1)),
        b.index(x, [S, { kind: 'slice', start: -1 }], sp(1, 1)),
        b.index(x, [S, { kind: 'slice', step: -1 }], sp(1, 1)),
        b.index(x, [S, I(9)], sp(4, 1)),
        b.index(x, [I(0), I(0), I(0), I(0)], sp(5, 1)),
        b.index(x, [{ kind: 'ellipsis' }, { kind: 'ellipsis' }], sp(6, 1)),
      ];
    });
    expect(r.types).toEqual(['float32[1, 128]', 'float32[1, sequence, 2]', 'float32[1, sequence, 128]', 'float32[1, 6, 64]', 'float32[1, 1, 128]', 'float32[1, sequence, 128]', '?', '?', '?']);
    expect(r.errors).toEqual([
      'index 9 is out of range for dimension 1 of size 8 (sequence)',
      'too many indices (4) for a tensor of rank 3',
      'an index can have only one ellipsis (...)',
    ]);
    expect(r.codes).toEqual(['index-out-of-range', 'index-out-of-range', 'bad-index']);
    expect(r.lines).toEqual([4, 5, 6]);
  });

  it('unknown sequence length: partial slices have unknown size, no range error', () => {
    const r = infer((b) => [b.index(h(b), [S, { kind: 'slice', start: 2 }], sp(1, 1)), b.index(h(b), [S, I(50)], sp(1, 1))], null);
    expect(r.types).toEqual(['float32[1, ?, 128]', 'float32[1, 128]']);
    expect(r.errors).toEqual([]);
  });

  it('reshape infers -1 and checks the total size', () => {
    expect(infer((b) => [
      b.op('reshape', [h(b)], { shape: [-1, 128] }, sp(1, 1)),
      b.op('reshape', [h(b)], { shape: [2, 4, 128] }, sp(1, 1)),
      b.op('reshape', [h(b)], { shape: [3, -1] }, sp(2, 1)),
    ])).toMatchObject({
      types: ['float32[8, 128]', 'float32[2, 4, 128]', '?'],
      errors: ['cannot reshape [1, sequence, 128] (1024 elements) to [3, -1]'],
    });
    expect(infer((b) => [b.op('reshape', [h(b)], { shape: [-1, 128] }, sp(1, 1))], null).types).toEqual(['float32[sequence, 128]']);
  });

  it('reports dimension and topk range errors', () => {
    const r = infer((b) => [
      b.op('softmax', [h(b)], { dim: 3 }, sp(2, 1)),
      b.topk(h(b), 10, 1, sp(3, 1))[0],
    ]);
    expect(r.errors).toEqual([
      'dimension 3 is out of range for a tensor of rank 3',
      'topk: k = 10 is out of range for dimension 1 of size 8 (sequence)',
    ]);
    expect(r.codes).toEqual(['dimension-out-of-range', 'index-out-of-range']);
  });
});

describe('infer-types: call_module (shape-polymorphic application)', () => {
  it('binds batch/sequence from the argument; drops or prepends leading dims by rank difference', () => {
    const r = infer((b) => {
      const x = h(b);
      const lens = b.callModule('lm_head', b.callModule('transformer.ln_f', [x], sp(1, 1)), sp(1, 1))[0]!;
      const vec = b.index(x, [I(0), I(-1)], sp(1, 1));
      const row = b.index(x, [S, I(-1)], sp(1, 1));
      return [
        lens,
        b.callModule('lm_head', [row], sp(1, 1))[0]!,
        b.callModule('lm_head', [vec], sp(1, 1))[0]!,
        b.callModule('lm_head', [b.host('x', 'float32', [5, 3, 128], sp(1, 1))], sp(1, 1))[0]!,
        b.callModule('lm_head', [b.host('y', 'float32', [2, 5, 3, 128], sp(1, 1))], sp(1, 1))[0]!,
        b.callModule('transformer.h.1.mlp.c_proj', [b.host('z', 'float32', [4, 512], sp(1, 1))], sp(1, 1))[0]!,
      ];
    });
    expect(r.errors).toEqual([]);
    expect(r.types).toEqual(['float32[1, sequence, 874]', 'float32[1, 874]', 'float32[874]', 'float32[5, 3, 874]', 'float32[2, 5, 3, 874]', 'float32[4, 128]']);
  });

  it('names both shapes (or the dtype) on a mismatch', () => {
    const r = infer((b) => [
      b.callModule('transformer.ln_f', [b.host('x', 'float32', [1, 64], sp(1, 1))], sp(3, 1))[0]!,
      b.callModule('lm_head', [b.host('i', 'int64', [128], sp(1, 1))], sp(4, 1))[0]!,
    ]);
    expect(r.types).toEqual(['?', '?']);
    expect(r.errors).toEqual([
      'cannot apply transformer.ln_f (input float32[batch, sequence, 128]) to a value of shape float32[1, 64]',
      'cannot apply lm_head (input float32[batch, sequence, 128]) to a value of dtype int64',
    ]);
    expect(r.codes).toEqual(['shape-mismatch', 'dtype-mismatch']);
    expect(r.lines).toEqual([3, 4]);
  });
});

describe('infer-types: set', () => {
  it('accepts values that broadcast to the (sliced) target; literals are cast', () => {
    expect(infer((b) => {
      b.set('transformer.h.3.mlp', 'output', 0, null, b.constant(0, sp(1, 1)), sp(1, 1));
      b.set('transformer.h.3.mlp', 'output', 0, null, b.host('v', 'float32', [128], sp(1, 1)), sp(1, 1));
      b.set('transformer.h.3.mlp', 'output', 0, [S, I(-1)], b.host('w', 'float32', [1, 128], sp(1, 1)), sp(1, 1));
      b.set('transformer.h.3', 'input', 0, null, h(b, 1), sp(1, 1));
      b.set('transformer.h.3', 'output', 0, null, b.constant([[7]], sp(1, 1), 'int64'), sp(1, 1));
      return [];
    }).errors).toEqual([]);
  });

  it('names both shapes, collects several errors, points at each span', () => {
    const r = infer((b) => {
      b.set('transformer.h.3.mlp', 'output', 0, null, b.host('v', 'float32', [5], sp(1, 1)), sp(7, 3));
      b.set('transformer.h.3.mlp', 'output', 0, [S, I(-1)], b.host('w', 'float32', [8, 128], sp(1, 1)), sp(8, 3));
      b.set('transformer.h.0', 'output', 0, null, b.host('i', 'int64', [128], sp(1, 1)), sp(9, 3));
      b.set('transformer.h.0', 'output', 0, [S, I(12)], b.constant(0, sp(1, 1)), sp(10, 3));
      return [];
    });
    expect(r.errors).toEqual([
      'cannot set transformer.h[3].mlp.output (float32[1, sequence, 128]) to a value of shape float32[5]',
      'cannot set transformer.h[3].mlp.output[:, -1] (float32[1, 128]) to a value of shape float32[8, 128]',
      'cannot set transformer.h[0].output (float32[1, sequence, 128]) to a value of dtype int64',
      'index 12 is out of range for dimension 1 of size 8 (sequence)',
    ]);
    expect(r.codes).toEqual(['shape-mismatch', 'shape-mismatch', 'dtype-mismatch', 'index-out-of-range']);
    expect(r.lines).toEqual([7, 8, 9, 10]);
  });

  it('does not cascade: values downstream of an error stay untyped without new errors', () => {
    const r = infer((b) => {
      const bad = b.op('add', [h(b), b.host('v', 'float32', [5], sp(1, 1))], {}, sp(2, 1));
      const y = b.op('softmax', [bad], { dim: -1 }, sp(3, 1));
      b.set('transformer.h.3', 'output', 0, null, y, sp(4, 1));
      return [bad, y];
    });
    expect(r.types).toEqual(['?', '?']);
    expect(r.errors).toEqual(['cannot add float32[1, sequence, 128] and float32[5]: shapes do not broadcast']);
  });
});
