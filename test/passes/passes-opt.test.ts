/** fold-constants, cse, dce and the pipeline runner. */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import { Node, type Value } from '../../ir/ir.js';
import { printIR } from '../../ir/printer.js';
import { verify } from '../../ir/verifier.js';
import { csePass } from '../../passes/cse.js';
import { dcePass } from '../../passes/dce.js';
import { evaluate, foldConstantsPass, rewriteToFixedPoint, type Rule } from '../../passes/fold-constants.js';
import { inferTypesPass } from '../../passes/infer-types.js';
import { resolveModulesPass } from '../../passes/resolve-modules.js';
import { runPasses } from '../../passes/run.js';
import type { Pass } from '../../passes/pass.js';
import { runOne, setup, sp } from '../golden/fixture.js';

const lit = (v: Value): unknown => v.producer.attrs;
const savedValue = (b: Builder, name: string): Value =>
  b.graph.nodes.find((n) => n.op === 'save' && (n.attrs as { name: string }).name === name)!.inputs[0]!;

function pipeline(b: Builder, passes: Pass[]): void {
  const { state, ctx } = setup(b.graph);
  expect(runPasses([inferTypesPass, ...passes], state, ctx, { verifyEach: true })).toEqual({ ok: true });
}

describe('fold-constants', () => {
  it('evaluates with broadcasting, unary math, reshape, transpose and index', () => {
    const L = (dtype: 'float32' | 'int64', shape: number[], data: number[]) => ({ dtype, shape, data });
    expect(evaluate('add', {}, [L('float32', [2, 1], [1, 2]), L('float32', [3], [10, 20, 30])])).toEqual(L('float32', [2, 3], [11, 21, 31, 12, 22, 32]));
    expect(evaluate('sub', {}, [L('int64', [2], [5, 7]), L('float32', [], [1])])).toEqual(L('int64', [2], [4, 6]));
    expect(evaluate('div', {}, [L('int64', [2], [1, 3]), L('int64', [], [2])])).toEqual(L('float32', [2], [0.5, 1.5]));
    expect(evaluate('relu', {}, [L('float32', [3], [-1, 0, 2])])).toEqual(L('float32', [3], [0, 0, 2]));
    expect(evaluate('sqrt', {}, [L('int64', [1], [4])])).toEqual(L('float32', [1], [2]));
    expect(evaluate('reshape', { shape: [3, -1] }, [L('float32', [6], [1, 2, 3, 4, 5, 6])])).toEqual(L('float32', [3, 2], [1, 2, 3, 4, 5, 6]));
    expect(evaluate('transpose', { dim0: 0, dim1: -1 }, [L('float32', [2, 3], [1, 2, 3, 4, 5, 6])])).toEqual(L('float32', [3, 2], [1, 4, 2, 5, 3, 6]));
    const m = L('float32', [2, 3], [1, 2, 3, 4, 5, 6]);
    expect(evaluate('index', { items: [{ kind: 'index', index: -1 }] }, [m])).toEqual(L('float32', [3], [4, 5, 6]));
    expect(evaluate('index', { items: [{ kind: 'ellipsis' }, { kind: 'slice', step: 2 }] }, [m])).toEqual(L('float32', [2, 2], [1, 3, 4, 6]));
    expect(evaluate('index', { items: [{ kind: 'slice', step: -1 }, { kind: 'newaxis' }, { kind: 'index', index: 1 }] }, [m])).toEqual(L('float32', [2, 1], [5, 2]));
    expect(evaluate('index', { items: [{ kind: 'index', index: 5 }] }, [m])).toBeNull();
    expect(evaluate('softmax', { dim: 0 }, [m])).toBeNull();
  });

  it('folds chains to one const, keeps the span and rounds to float32', () => {
    const b = new Builder();
    const x = b.op('mul', [b.op('div', [b.constant(1, sp(1, 1)), b.constant(3, sp(1, 5))], {}, sp(1, 3)), b.constant([1, 2], sp(2, 1))], {}, sp(2, 7));
    const y = b.op('exp', [b.moduleOutput('transformer.h.0', 0, sp(3, 1))], {}, sp(3, 2));
    b.save(x, 'x', sp(4, 1));
    b.save(y, 'y', sp(4, 1));
    pipeline(b, [foldConstantsPass, dcePass]);
    const v = savedValue(b, 'x');
    expect(v.producer.op).toBe('const');
    expect(lit(v)).toEqual({ dtype: 'float32', shape: [2], data: [Math.fround(1 / 3), Math.fround(Math.fround(1 / 3) * 2)] });
    expect(v.producer.span.line).toBe(2);
    expect(v.producer.span.col).toBe(7);
    expect(savedValue(b, 'y').producer.op).toBe('exp');
    expect(b.graph.nodes.map((n) => n.op)).toEqual(['const', 'module.output', 'exp', 'save', 'save']);
  });

  it('removes identities only when the type is unchanged', () => {
    const b = new Builder();
    b.scope = b.addInvoke([1], sp(1, 1));
    const h = b.moduleOutput('transformer.h.0', 0, sp(1, 1));
    b.save(b.op('mul', [b.constant(1, sp(1, 1)), h], {}, sp(1, 1)), 'same', sp(1, 1));
    b.save(b.op('add', [b.host('v', 'float32', [128], sp(1, 1)), b.constant([[[0]]], sp(1, 1))], {}, sp(1, 1)), 'grown', sp(1, 1));
    b.save(b.op('neg', [b.op('neg', [h], {}, sp(1, 1))], {}, sp(1, 1)), 'negneg', sp(1, 1));
    pipeline(b, [foldConstantsPass, dcePass]);
    expect(savedValue(b, 'same')).toBe(h);
    expect(savedValue(b, 'negneg')).toBe(h);
    expect(savedValue(b, 'grown').producer.op).toBe('add');
  });

  it('stops a rule set that never converges with an internal error', () => {
    const b = new Builder();
    b.save(b.op('neg', [b.constant(1, sp(1, 1))], {}, sp(1, 1)), 'x', sp(1, 1));
    const flip: Rule = { name: 'flip', apply: (n) => (n.op === 'neg' ? { node: new Node('neg', n.inputs, {}, 1, n.scope, n.span) } : null) };
    expect(() => rewriteToFixedPoint(b.graph, [flip], 5)).toThrow(/did not reach a fixed point in 5 rounds/);
  });
});

describe('cse', () => {
  it('never merges a read before a set with a read after it; merges equal reads in one scope', () => {
    const b = new Builder();
    b.scope = b.addInvoke([1], sp(1, 1));
    const r1 = b.moduleOutput('transformer.h.1', 0, sp(1, 1));
    const r2 = b.moduleOutput('transformer.h.1', 0, sp(2, 1));
    b.set('transformer.h.1', 'output', 0, null, b.op('neg', [r1], {}, sp(3, 1)), sp(3, 1));
    const r3 = b.moduleOutput('transformer.h.1', 0, sp(4, 1));
    for (const [v, n] of [[r1, 'a'], [r2, 'b'], [r3, 'c']] as const) b.save(v, n, sp(5, 1));
    runOne(csePass, b.graph);
    expect(verify(b.graph)).toEqual([]);
    expect(savedValue(b, 'b')).toBe(r1);
    expect(savedValue(b, 'c')).toBe(r3);
    expect(b.graph.nodes.filter((n) => n.op === 'module.output')).toHaveLength(2);
  });

  it('keeps module refs of different scopes apart, merges pure ops and multi-result ops, never effects', () => {
    const b = new Builder();
    const s1 = b.addInvoke([1], sp(1, 1));
    const s2 = b.addInvoke([2], sp(1, 1));
    b.scope = s1;
    const a = b.moduleOutput('transformer.h.1', 0, sp(1, 1));
    const c1 = b.constant(2, sp(1, 1));
    b.scope = s2;
    const a2 = b.moduleOutput('transformer.h.1', 0, sp(1, 1));
    const c2 = b.constant(2, sp(1, 1));
    const [v1] = b.topk(a, 3, -1, sp(1, 1));
    const [, i2] = b.topk(a, 3, -1, sp(1, 1));
    b.save(b.op('mul', [a, c1], {}, sp(1, 1)), 'm1', sp(1, 1));
    b.save(b.op('mul', [a, c2], {}, sp(1, 1)), 'm2', sp(1, 1));
    b.save(a2, 'a2', sp(1, 1));
    b.save(a2, 'a2', sp(1, 1));
    b.save(v1, 'v', sp(1, 1));
    b.save(i2, 'i', sp(1, 1));
    runOne(csePass, b.graph);
    expect(verify(b.graph)).toEqual([]);
    expect(savedValue(b, 'a2')).toBe(a2);
    expect(savedValue(b, 'm2')).toBe(savedValue(b, 'm1'));
    expect(savedValue(b, 'i').producer).toBe(v1.producer);
    expect(b.graph.nodes.filter((n) => n.op === 'save')).toHaveLength(6);
    expect(b.graph.nodes.map((n) => n.op).filter((o) => o !== 'save')).toEqual(['module.output', 'const', 'module.output', 'topk', 'mul']);
  });
});

describe('dce', () => {
  it('removes dead chains, keeps sets and saves and what they use', () => {
    const b = new Builder();
    const h = b.moduleOutput('transformer.h.0', 0, sp(1, 1));
    b.op('exp', [b.op('neg', [h], {}, sp(1, 1))], {}, sp(1, 1));
    b.topk(h, 2, -1, sp(1, 1));
    b.set('transformer.h.1', 'output', 0, null, b.op('relu', [h], {}, sp(1, 1)), sp(1, 1));
    b.save(b.param('lm_head.weight', sp(1, 1)), 'w', sp(1, 1));
    runOne(dcePass, b.graph);
    expect(verify(b.graph)).toEqual([]);
    expect(b.graph.nodes.map((n) => n.op)).toEqual(['module.output', 'relu', 'set', 'param', 'save']);
  });
});

describe('runPasses', () => {
  it('stops after the pass that added errors', () => {
    const b = new Builder();
    b.save(b.moduleOutput('transformer.h.9', 0, sp(1, 1)), 'x', sp(1, 1));
    const { state, ctx } = setup(b.graph);
    const seen: string[] = [];
    ctx.printAfterEach = (name) => seen.push(name);
    expect(runPasses([resolveModulesPass, inferTypesPass, dcePass], state, ctx, { verifyEach: true })).toEqual({ ok: false });
    expect(seen).toEqual(['resolve-modules']);
    expect(ctx.errors.map((e) => e.code)).toEqual(['unknown-module']);
  });

  it('verifies after each pass and names the pass that broke the IR', () => {
    const b = new Builder();
    b.save(b.constant(1, sp(1, 1)), 'x', sp(1, 1));
    const broken: Pass = { name: 'broken', run: (s) => { s.ir.nodes.reverse(); return { changed: true }; } };
    const { state, ctx } = setup(b.graph);
    expect(() => runPasses([broken], state, ctx, { verifyEach: true })).toThrow(/IR invalid after pass 'broken'[\s\S]*save #0 %0/);
    expect(printIR(b.graph, { spans: false })).toContain('save #0 %0');
  });
});
