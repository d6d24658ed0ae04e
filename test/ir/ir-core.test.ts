/** Builder, verifier and JSON form. */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import { Node } from '../../ir/ir.js';
import { graphFromJSON, graphToJSON, IRFormatError } from '../../ir/json.js';
import { printIR } from '../../ir/printer.js';
import { verify } from '../../ir/verifier.js';
import { NnsError } from '../../src/errors.js';
import { inferTypesPass } from '../../passes/infer-types.js';
import { eiffel, opt } from '../passes/passes-golden.test.js';
import { gpt2Tree, runOne, sp } from '../golden/fixture.js';

describe('builder', () => {
  it('assigns rows in invoke order and keeps the current scope', () => {
    const b = new Builder();
    expect(b.graph.scopes).toEqual([{ id: 0, rowStart: 0, rowEnd: 0 }]);
    expect(b.addInvoke([1], sp(1, 1))).toBe(1);
    expect(b.addInvoke([2, 3], sp(2, 1), 'hi')).toBe(2);
    expect(b.scope).toBe(0);
    expect(b.graph.scopes.map((s) => [s.rowStart, s.rowEnd])).toEqual([[0, 2], [0, 1], [1, 2]]);
    expect(b.graph.scopes[2]!.prompt).toBe('hi');
  });

  it('versions module refs by earlier sets on the same (path, port, index), in any scope', () => {
    const b = new Builder();
    const s1 = b.addInvoke([1], sp(1, 1));
    const s2 = b.addInvoke([2], sp(1, 1));
    b.scope = s1;
    const v = (x: { producer: Node }): number => (x.producer.attrs as { version: number }).version;
    const r0 = b.moduleOutput('transformer.h.1', 0, sp(1, 1));
    b.set('transformer.h.1', 'output', 0, null, r0, sp(2, 1));
    b.scope = s2;
    const r1 = b.moduleOutput('transformer.h.1', 0, sp(3, 1));
    const other = b.moduleInput('transformer.h.1', 0, sp(3, 1));
    const otherIdx = b.moduleOutput('transformer.h.1', 1, sp(3, 1));
    b.set('transformer.h.1', 'output', 0, [{ kind: 'index', index: 0 }], r1, sp(4, 1));
    const r2 = b.moduleOutput('transformer.h.1', 0, sp(5, 1));
    expect([v(r0), v(r1), v(other), v(otherIdx), v(r2)]).toEqual([0, 1, 0, 0, 2]);
    expect(r1.producer.scope).toBe(s2);
  });

  it('builds literals, rejects ragged ones with a spanned user error', () => {
    const b = new Builder();
    const c = b.constant([[1, 2, 3], [4, 5, 6]], sp(1, 1), 'int64');
    expect(c.producer.attrs).toEqual({ dtype: 'int64', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] });
    expect(c.type).toEqual({ dtype: 'int64', shape: [2, 3] });
    expect(b.constant(1.5, sp(1, 1)).type).toEqual({ dtype: 'float32', shape: [] });
    let err: unknown;
    try { b.constant([[1, 2], [3]], sp(7, 3)); } catch (e) { err = e; }
    expect(err).toBeInstanceOf(NnsError);
    expect((err as NnsError).code).toBe('ragged-literal');
    expect((err as NnsError).span?.line).toBe(7);
    expect(() => b.constant([1, [2]], sp(1, 1))).toThrow(NnsError);
  });

  it('topk gives two results; callModule one per module output when the tree is known', () => {
    const tree = gpt2Tree();
    const b = new Builder({ tree });
    const x = b.host('x', 'float32', [1, 128], sp(1, 1));
    const [vals, idx] = b.topk(x, 5, -1, sp(1, 1));
    expect(vals.producer).toBe(idx.producer);
    expect(b.callModule('lm_head', [x], sp(2, 1))).toHaveLength(1);
    expect(verify(b.graph)).toEqual([]);
    const b2 = new Builder();
    expect(b2.callModule('lm_head', [b2.host('y', 'float32', [128], sp(1, 1))], sp(2, 1))).toHaveLength(1);
    // a value from another graph is caught by the verifier
    b2.callModule('lm_head', [x], sp(3, 1));
    expect(verify(b.graph).join('\n')).toMatch(/not in the graph/);
  });
});

describe('verifier', () => {
  it('accepts builder output', () => {
    expect(verify(eiffel())).toEqual([]);
    expect(verify(opt())).toEqual([]);
  });

  it('reports use-before-def, arity, attrs, scopes and broken use lists', () => {
    const g = opt();
    const add = g.nodes.findIndex((n) => n.op === 'add');
    g.nodes.unshift(...g.nodes.splice(add, 1));
    expect(verify(g).join('\n')).toMatch(/not defined before use/);

    const b = new Builder();
    const x = b.constant(1, sp(1, 1));
    b.graph.add(new Node('add', [x], {}, 1, 0, sp(1, 1)));
    b.graph.add(new Node('save', [x], { name: 3 } as never, 0, 0, sp(1, 1)));
    b.graph.add(new Node('softmax', [x], { dim: 0, extra: 1 } as never, 1, 5, sp(1, 1)));
    b.graph.add(new Node('const', [], { dtype: 'float32', shape: [2], data: [1] }, 1, 0, sp(1, 1)));
    const msgs = verify(b.graph).join('\n');
    expect(msgs).toMatch(/has 1 inputs, expected 2/);
    expect(msgs).toMatch(/attribute 'name' is not a valid string/);
    expect(msgs).toMatch(/unexpected attribute 'extra'/);
    expect(msgs).toMatch(/invalid scope #5/);
    expect(msgs).toMatch(/const has 1 elements for shape \[2\]/);

    const g2 = eiffel();
    g2.scopes.push({ id: 2, rowStart: 3, rowEnd: 4 });
    expect(verify(g2).join('\n')).toMatch(/rows must be contiguous/);

    const g3 = opt();
    g3.nodes.splice(g3.nodes.findIndex((n) => n.op === 'exp'), 1); // removed without drop()
    expect(verify(g3).join('\n')).toMatch(/not in the graph/);
  });
});

describe('JSON form', () => {
  it('round-trips exactly, spans, types and names included', () => {
    for (const make of [eiffel, opt]) {
      const g = make();
      g.dimValues.sequence = 3;
      runOne(inferTypesPass, g);
      const json = graphToJSON(g);
      expect(json.format).toBe('onnsight-ir');
      expect(json.version).toBe(1);
      const text = JSON.stringify(json);
      const back = graphFromJSON(JSON.parse(text));
      expect(verify(back)).toEqual([]);
      expect(printIR(back)).toBe(printIR(g));
      expect(JSON.stringify(graphToJSON(back))).toBe(text);
      expect(graphFromJSON(text).nodes.map((n) => n.span)).toEqual(g.nodes.map((n) => n.span));
    }
  });

  it('keeps non-finite constants', () => {
    const b = new Builder();
    b.save(b.constant([NaN, Infinity, -Infinity, -0], sp(1, 1)), 'x', sp(1, 1));
    const back = graphFromJSON(JSON.parse(JSON.stringify(graphToJSON(b.graph))));
    expect((back.nodes[0]!.attrs as { data: number[] }).data).toEqual([NaN, Infinity, -Infinity, -0]);
  });

  it('rejects malformed input with clear errors', () => {
    const good = graphToJSON(eiffel());
    const bad = (f: (j: Record<string, unknown> & { nodes: Record<string, unknown>[] }) => void): unknown => {
      const j = JSON.parse(JSON.stringify(good));
      f(j);
      return j;
    };
    expect(() => graphFromJSON('{oops')).toThrow(/not JSON/);
    expect(() => graphFromJSON(bad((j) => (j.format = 'x')))).toThrow(/\$\.format/);
    expect(() => graphFromJSON(bad((j) => (j.version = 2)))).toThrow(/unsupported version 2/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[0]!.op = 'frobnicate')))).toThrow(/\$\.nodes\[0\]\.op: unknown op "frobnicate"/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[1]!.inputs = [9])))).toThrow(/value %9 is not defined before this node/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[0]!.attrs = { path: 1, index: 0, version: 0 })))).toThrow(/attribute 'path'/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[0]!.scope = 7)))).toThrow(/\$\.nodes\[0\]\.scope/);
    expect(() => graphFromJSON(bad((j) => delete j.nodes[0]!.span))).toThrow(/\$\.nodes\[0\]\.span/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[1]!.inputs = [])))).toThrow(/save takes 1 inputs, got 0/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[0]!.results = [])))).toThrow(/results/);
    expect(() => graphFromJSON(bad((j) => ((j.nodes[0]!.results as unknown[])[0] = { type: { dtype: 'f99', shape: [] } })))).toThrow(/unknown dtype "f99"/);
    expect(() => graphFromJSON(bad((j) => (j.nodes[0]!.op = 'index')))).toThrow(IRFormatError);
    expect(() => graphFromJSON(bad((j) => ((j.scopes as { rowStart: number }[])[1]!.rowStart = 1)))).toThrow(/rows must be contiguous/);
  });
});
