/** Parser and AST tests: every construct of the language, with spans. */
import { describe, expect, it } from 'vitest';
import type * as A from '../../grammar/ast.js';
import { parseScript } from '../../grammar/parse.js';

function parse(text: string): A.Script {
  const r = parseScript(text, 't.nns');
  expect(r.errors.map((e) => `${e.span?.line}:${e.span?.col} ${e.message}`)).toEqual([]);
  return r.ast!;
}

/** The body of the first trace. */
function body(text: string): A.Statement[] {
  return (parse(text).statements.find((s) => s.kind === 'Trace') as A.TraceStmt).body;
}

/** The source text a span covers. */
function slice(text: string, s: A.Span): string {
  return text.slice(s.offset, s.endOffset);
}

function expr(src: string): A.Expr {
  const s = body(`trace "p" { x = ${src} }`)[0] as A.BindStmt;
  return s.value;
}

/** Every node with a span, recursively. */
function spans(node: unknown, out: Array<{ kind: string; span: A.Span }> = []): Array<{ kind: string; span: A.Span }> {
  if (Array.isArray(node)) node.forEach((n) => spans(n, out));
  else if (node && typeof node === 'object') {
    const o = node as Record<string, unknown>;
    if (o.span) out.push({ kind: String(o.kind ?? 'arg'), span: o.span as A.Span });
    for (const [k, v] of Object.entries(o)) if (k !== 'span' && !k.endsWith('Span')) spans(v, out);
  }
  return out;
}

describe('statements', () => {
  const eiffel = [
    '# The Eiffel Tower',
    'model "models/gpt2-facts"   # a comment',
    '',
    'trace "The Eiffel Tower is in the city of" {',
    '  h2 = model.transformer.h[2].output.save()',
    '  model.transformer.h[3].mlp.output = 0',
    '  logits = model.output.logits[:, -1, :].save()',
    '  probs = softmax(logits, -1).save()',
    '}',
  ].join('\n');

  it('parses the language.md example with exact spans', () => {
    const s = parse(eiffel);
    expect(s.models.map((m) => m.path)).toEqual(['models/gpt2-facts']);
    expect(s.models[0]!.span).toMatchObject({ line: 2, col: 1, endLine: 2, endCol: 26 });
    const t = s.statements[1] as A.TraceStmt;
    expect(t.kind).toBe('Trace');
    expect(t.prompt).toMatchObject({ kind: 'TextPrompt', text: 'The Eiffel Tower is in the city of' });
    expect(t.span).toMatchObject({ line: 4, col: 1, endLine: 9, endCol: 2 });
    expect(t.body.map((x) => x.kind)).toEqual(['Bind', 'Set', 'Bind', 'Bind']);
    const h2 = t.body[0] as A.BindStmt;
    expect(h2.name).toBe('h2');
    expect(h2.nameSpan).toMatchObject({ line: 5, col: 3, endCol: 5 });
    expect(slice(eiffel, h2.span)).toBe('h2 = model.transformer.h[2].output.save()');
    expect(slice(eiffel, h2.value.span)).toBe('model.transformer.h[2].output.save()');
    const set = t.body[1] as A.SetStmt;
    expect(slice(eiffel, set.target.span)).toBe('model.transformer.h[3].mlp.output');
    expect(set.value).toMatchObject({ kind: 'Number', value: 0, isInt: true });
  });

  it('gives every node a span inside the source', () => {
    const all = spans(parse(eiffel));
    expect(all.length).toBeGreaterThan(40);
    for (const { span } of all) {
      expect(span.file).toBe('t.nns');
      expect(span.offset).toBeGreaterThanOrEqual(0);
      expect(span.endOffset).toBeGreaterThan(span.offset);
      expect(span.endOffset).toBeLessThanOrEqual(eiffel.length);
      const lineStart = eiffel.lastIndexOf('\n', span.offset - 1) + 1;
      expect(span.col).toBe(span.offset - lineStart + 1);
    }
  });

  it('parses token-id prompts, multi-invoke traces and batch statements', () => {
    const text = 'trace [464, 318] { }\ntrace { invoke "A" { } invoke "B" { hb = model.transformer.h[3].output[:, -1, :] } model.transformer.h[3].output[0, -1, :] = hb[0] }';
    const s = parse(text);
    const t1 = s.statements[0] as A.TraceStmt;
    expect(t1.prompt?.kind).toBe('TokenPrompt');
    expect((t1.prompt as { items: A.Expr[] }).items.map((e) => (e as A.NumberExpr).value)).toEqual([464, 318]);
    const t2 = s.statements[1] as A.TraceStmt;
    expect(t2.prompt).toBeUndefined();
    expect(t2.body.map((x) => x.kind)).toEqual(['Invoke', 'Invoke', 'Set']);
    expect(slice(text, (t2.body[1] as A.InvokeStmt).headerSpan)).toBe('invoke "B"');
  });

  it('parses nested loops with invokes', () => {
    const text = 'trace { for l in 0..4 { for p in 1+1..n { invoke [1] { x = l } } } }';
    const f = body(text)[0] as A.ForStmt;
    expect(f).toMatchObject({ kind: 'For', name: 'l', from: { value: 0 }, to: { value: 4 } });
    const inner = f.body[0] as A.ForStmt;
    expect(inner.from).toMatchObject({ kind: 'Binary', op: '+' });
    expect(inner.to).toMatchObject({ kind: 'Name', name: 'n' });
    expect(inner.body[0]!.kind).toBe('Invoke');
    expect(slice(text, f.headerSpan)).toBe('for l in 0..4');
  });

  it('parses a save on its own line as an expression statement', () => {
    const [s] = body('trace "p" {\n  model.transformer.h[0].output.save()\n}');
    expect(s).toMatchObject({ kind: 'ExprStmt', expr: { kind: 'Call', callee: { kind: 'Member', name: 'save' } } });
  });

  it('separates statements by newlines, not by operators', () => {
    const b = body('trace "p" {\n  a = b\n  -c.save()\n  d = (e\n   + f)\n}');
    expect(b.map((s) => s.kind)).toEqual(['Bind', 'ExprStmt', 'Bind']);
    expect((b[2] as A.BindStmt).value).toMatchObject({ kind: 'Binary', op: '+' });
  });

  it('parses generate with options and step blocks; reserves param, skip and stop', () => {
    const s = parse('generate "p" max_new_tokens=6 stop_at_eos=false {\n step 0 { a = 1 }\n step 1..3 { b = 2 }\n step = 4\n}\ntrace "p" { param a: f32[128]\n skip model.h[1]\n stop }');
    expect(s.statements[0]).toMatchObject({ kind: 'Generate', prompt: { kind: 'TextPrompt', text: 'p' }, options: [{ name: 'max_new_tokens' }, { name: 'stop_at_eos' }] });
    const g = (s.statements[0] as A.GenerateStmt).body;
    expect(g.map((x) => x.kind)).toEqual(['Step', 'Step', 'Bind']);
    expect(g[1]).toMatchObject({ kind: 'Step', from: { kind: 'Number', value: 1 }, to: { kind: 'Number', value: 3 } });
    expect(parse('generate max_new_tokens=2 { invoke "a" { } invoke "b" { } }').statements[0]).toMatchObject({ kind: 'Generate', prompt: undefined });
    const b = (s.statements[1] as A.TraceStmt).body;
    expect(b.map((x) => (x as A.ReservedStmt).keyword)).toEqual(['param', 'skip', 'stop']);
  });

  it('parses top-level param declarations', () => {
    const s = parse('param steer: f32[2, 128]\nparam bare\ntrace "p" { }');
    expect(s.statements[0]).toMatchObject({ kind: 'Param', name: 'steer', type: { name: 'f32' }, dims: { items: [{ kind: 'Number', value: 2 }, { kind: 'Number', value: 128 }] } });
    expect(s.statements[1]).toMatchObject({ kind: 'Param', name: 'bare' });
    expect(s.statements[1]).not.toHaveProperty('type');
    expect(s.statements[1]).not.toHaveProperty('dims');
    expect(s.statements[2]).toMatchObject({ kind: 'Trace' });
  });
});

describe('lexical', () => {
  it('reads string escapes', () => {
    expect(expr('"a\\"b\\\\c\\nd\\te"')).toMatchObject({ kind: 'String', value: 'a"b\\c\nd\te' });
  });

  it('reads numbers', () => {
    expect(expr('3')).toMatchObject({ kind: 'Number', value: 3, isInt: true });
    expect(expr('0.5')).toMatchObject({ kind: 'Number', value: 0.5, isInt: false });
    expect(expr('1e-3')).toMatchObject({ kind: 'Number', value: 0.001, isInt: false });
    expect(expr('-1')).toMatchObject({ kind: 'Unary', operand: { kind: 'Number', value: 1 } });
  });

  it('allows keywords as member names', () => {
    expect(expr('model.model.layers[0].in')).toMatchObject({ kind: 'Member', name: 'in' });
  });

  it('keeps identifiers that start with a keyword', () => {
    expect(expr('models + tracer')).toMatchObject({ left: { kind: 'Name', name: 'models' }, right: { kind: 'Name', name: 'tracer' } });
  });
});

describe('expressions', () => {
  it('follows the usual precedence: unary, then * / @, then + -', () => {
    const e = expr('a + -b * c @ d - e') as A.BinaryExpr;
    expect(e.op).toBe('-');
    const l = e.left as A.BinaryExpr;
    expect(l.op).toBe('+');
    expect(l.right).toMatchObject({ kind: 'Binary', op: '@', left: { kind: 'Binary', op: '*', left: { kind: 'Unary' } } });
    expect(expr('(a + b) * c')).toMatchObject({ op: '*', left: { op: '+' } });
  });

  it('parses indexing and slicing', () => {
    const e = expr('x[0, :, -1, ..., 3:5, ::2, 1:, :4:1]') as A.IndexExpr;
    expect(e.items.map((i) => i.kind)).toEqual(['index', 'slice', 'index', 'ellipsis', 'slice', 'slice', 'slice', 'slice']);
    expect(e.items[4]).toMatchObject({ start: { value: 3 }, stop: { value: 5 } });
    expect(e.items[5]).toMatchObject({ step: { value: 2 } });
    expect((e.items[5] as { start?: A.Expr }).start).toBeUndefined();
    expect(e.items[6]).toMatchObject({ start: { value: 1 } });
    expect(e.items[7]).toMatchObject({ stop: { value: 4 }, step: { value: 1 } });
  });

  it('parses calls with keyword arguments, topk fields and module calls', () => {
    expect(expr('softmax(x, dim=-1)')).toMatchObject({ kind: 'Call', callee: { name: 'softmax' }, args: [{ value: { name: 'x' } }, { name: 'dim' }] });
    expect(expr('topk(x, 5).indices')).toMatchObject({ kind: 'Member', name: 'indices', object: { kind: 'Call' } });
    const text = 'model.lm_head(model.transformer.ln_f(h2))';
    const e = expr(text) as A.CallExpr;
    expect(e.callee).toMatchObject({ kind: 'Member', name: 'lm_head', object: { kind: 'Model' } });
    expect(e.args[0]!.value).toMatchObject({ kind: 'Call' });
    expect(e.span.endCol - e.span.col).toBe(text.length);
  });

  it('parses lists, booleans and reshape shapes', () => {
    expect(expr('reshape(x, [1, -1, 128])')).toMatchObject({ args: [{}, { value: { kind: 'List' } }] });
    expect(expr('sum(x, 0, keepdim=true)')).toMatchObject({ args: [{}, {}, { name: 'keepdim', value: { kind: 'Bool', value: true } }] });
  });

  it('parses outputs[i], inputs[i] and parameters', () => {
    expect(expr('model.transformer.h[0].attn.outputs[1]')).toMatchObject({ kind: 'Index', object: { kind: 'Member', name: 'outputs' } });
    expect(expr('model.lm_head.weight')).toMatchObject({ kind: 'Member', name: 'weight' });
  });
});

describe('syntax errors', () => {
  it('reports several errors in one run, in order, with positions', () => {
    const r = parseScript('trace "p" {\n  a = = 1\n  b = 2\n  c = (3 +\n}\ntrace "q" { d = ] }', 't.nns');
    expect(r.ast).toBeUndefined();
    expect(r.errors.length).toBeGreaterThanOrEqual(3);
    expect(r.errors.every((e) => ['syntax-error', 'unclosed-bracket', 'unmatched-bracket'].includes(e.code) && e.span)).toBe(true);
    expect(r.errors[0]!.span).toMatchObject({ line: 2, col: 7 });
    expect(r.errors[0]!.message).toBe("expected an expression but found '='");
    const lines = r.errors.map((e) => e.span!.line);
    expect([...lines].sort((a, b) => a - b)).toEqual(lines);
    expect(lines).toContain(6);
  });

  it('reports an unclosed block where it was opened', () => {
    const r = parseScript('trace "p" {\n  a = 1\n', 't.nns');
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]!.message).toBe("'{' at 1:11 is never closed");
    expect(r.errors[0]!.span).toMatchObject({ line: 1, col: 11 });
  });
});
