/** Lowering tests: AST → IR through the builder (scopes, loops, saves, module chains). */
import { describe, expect, it } from 'vitest';
import type { Node } from '../../ir/ir.js';
import { lowerScript } from '../../grammar/script.js';
import { lowerTrace } from '../../grammar/lower.js';
import { parseScript } from '../../grammar/parse.js';
import type { TraceStmt } from '../../grammar/ast.js';
import { NnsError } from '../../src/errors.js';

const tokenize = (t: string): number[] => t.split(/\s+/).filter(Boolean).map((_, i) => 100 + i);

function lower(text: string) {
  const r = lowerScript(text, { file: 't.nns', tokenize });
  expect(r.errors.map((e) => `${e.span?.line}:${e.span?.col} [${e.code}] ${e.message}`)).toEqual([]);
  return r.traces;
}

function ops(nodes: Node[]): string[] {
  return nodes.map((n) => `${n.op}@${n.scope}`);
}

describe('lowering', () => {
  it('makes one invoke for a single-prompt trace and lowers its body in scope 1', () => {
    const [t] = lower('trace "The Eiffel Tower is" {\n h2 = model.transformer.h[2].output.save()\n model.transformer.h[3].mlp.output = 0 }');
    const g = t!.graph;
    expect(g.scopes).toHaveLength(2);
    expect(g.scopes[1]).toMatchObject({ rowStart: 0, rowEnd: 1, tokens: [100, 101, 102, 103], prompt: 'The Eiffel Tower is' });
    expect(g.dimValues.sequence).toBe(4);
    expect(ops(g.nodes)).toEqual(['module.output@1', 'save@1', 'const@1', 'set@1']);
    expect(g.nodes[0]!.attrs).toEqual({ path: 'transformer.h.2', index: 0, version: 0 });
    expect(g.nodes[3]!.attrs).toEqual({ path: 'transformer.h.3.mlp', port: 'output', index: 0, items: null });
    expect(g.nodes[0]!.span).toMatchObject({ line: 2, col: 7 });
    expect(t!.saves).toEqual(['h2']);
  });

  it('lowers multi-invoke traces; statements outside invokes are whole-batch', () => {
    const [t] = lower('trace { invoke "A a" { } invoke "B b b" { hb = model.transformer.h[3].output[:, -1, :] } model.transformer.h[3].output[0, -1, :] = hb[0] }');
    const g = t!.graph;
    expect(g.scopes.map((s) => [s.rowStart, s.rowEnd])).toEqual([[0, 2], [0, 1], [1, 2]]);
    expect(g.dimValues.sequence).toBe(3);
    expect(ops(g.nodes)).toEqual(['module.output@2', 'index@2', 'index@0', 'set@0']);
    expect(g.nodes[3]!.attrs).toMatchObject({ items: [{ kind: 'index', index: 0 }, { kind: 'index', index: -1 }, { kind: 'slice' }] });
  });

  it('unrolls loops, names saves NAME.I.J and auto-names with loop values', () => {
    const [t] = lower('trace { for l in 0..2 { for p in 1..3 { invoke [1, 2, 3] {\n x = model.transformer.h[l].output[:, p].save()\n model.transformer.h[l].mlp.output[:, p].save() } } } }');
    expect(t!.graph.scopes).toHaveLength(5);
    expect(t!.saves).toEqual(['x.0.1', 'transformer.h.0.mlp.output[:,1]', 'x.0.2', 'transformer.h.0.mlp.output[:,2]', 'x.1.1', 'transformer.h.1.mlp.output[:,1]', 'x.1.2', 'transformer.h.1.mlp.output[:,2]']);
  });

  it('reads module chains: outputs[i], inputs, parameters, graph outputs and module calls', () => {
    const [t] = lower([
      'trace "p" {',
      ' a = model.transformer.h[0].attn.outputs[1]',
      ' b = model.transformer.h[1].inputs[0][:, 0]',
      ' c = model.lm_head.weight[0]',
      ' d = model.output',
      ' e = model.output.logits',
      ' f = model.lm_head(model.transformer.ln_f(a))',
      ' g = topk(e, 5).values',
      ' model.input.save()',
      '}',
    ].join('\n'));
    const n = t!.graph.nodes;
    expect(n.map((x) => x.op)).toEqual(['module.output', 'module.input', 'index', 'param', 'index', 'model.output', 'model.output', 'call_module', 'call_module', 'topk', 'module.input', 'save']);
    expect(n[0]!.attrs).toMatchObject({ path: 'transformer.h.0.attn', index: 1 });
    expect(n[3]!.attrs).toEqual({ name: 'lm_head.weight' });
    expect(n[5]!.attrs).toEqual({ name: null });
    expect(n[6]!.attrs).toEqual({ name: 'logits' });
    expect(n[7]!.attrs).toEqual({ path: 'transformer.ln_f' });
    expect(n[8]!.attrs).toEqual({ path: 'lm_head' });
    expect(t!.saves).toEqual(['input']);
  });

  it('folds compile-time integers in indices and module paths', () => {
    const [t] = lower('trace "p" { for i in 0..1 { x = model.transformer.h[i + 1].output[:, 2 * i - 1] } }');
    expect(t!.graph.nodes[0]!.attrs).toMatchObject({ path: 'transformer.h.1' });
    expect(t!.graph.nodes[1]!.attrs).toEqual({ items: [{ kind: 'slice' }, { kind: 'index', index: -1 }] });
  });

  it('lowers functions with positional and keyword arguments', () => {
    const [t] = lower('trace "p" { x = model.output\n a = softmax(x, dim=-1)\n b = sum(x)\n c = mean(x, 1, keepdim=true)\n d = reshape(x, [1, -1])\n e = transpose(x, 0, 1) @ x\n f = -x / 2 }');
    const attrs = t!.graph.nodes.filter((n) => ['softmax', 'sum', 'mean', 'reshape', 'transpose'].includes(n.op)).map((n) => n.attrs);
    expect(attrs).toEqual([{ dim: -1 }, { dim: null, keepdim: false }, { dim: 1, keepdim: true }, { shape: [1, -1] }, { dim0: 0, dim1: 1 }]);
    expect(t!.graph.nodes.map((n) => n.op)).toContain('matmul');
    expect(t!.graph.nodes.map((n) => n.op)).toContain('neg');
  });

  it('passes saves of earlier traces as host values', () => {
    const [, t2] = lower('trace "p" { v = model.output.save() }\ntrace "q" { w = (v * 2).save() }');
    expect(t2!.graph.nodes[0]).toMatchObject({ op: 'host', attrs: { name: 'v', dtype: 'float32', shape: [] } });
  });

  it('uses the host types given by the caller', () => {
    const ast = parseScript('trace [5] { y = (v + 1).save() }', 't.nns').ast!;
    const r = lowerTrace(ast.statements[0] as TraceStmt, { file: 't.nns', tokenize, host: new Map([['v', { dtype: 'float32', shape: [1, 128] }]]) });
    expect(r.errors).toEqual([]);
    expect(r.graph.nodes[0]!.attrs).toEqual({ name: 'v', dtype: 'float32', shape: [1, 128] });
  });

  it('reports a tokenizer failure at the prompt', () => {
    const ast = parseScript('trace "p" { }', 't.nns').ast!;
    const r = lowerTrace(ast.statements[0] as TraceStmt, {
      file: 't.nns',
      tokenize: () => {
        throw new NnsError('no-tokenizer', 'the model has no tokenizer', { kind: 'model' });
      },
    });
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatchObject({ code: 'no-tokenizer', span: { line: 1, col: 7 } });
  });
});
