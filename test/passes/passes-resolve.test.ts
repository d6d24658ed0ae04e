/** resolve-modules: unknown names become spanned user errors with suggestions. */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import { verify } from '../../ir/verifier.js';
import { resolveModulesPass, explainUnknownModule } from '../../passes/resolve-modules.js';
import { suggest, editDistance } from '../../src/suggest.js';
import { gpt2Tree, runOne, sp } from '../golden/fixture.js';

function errorsOf(build: (b: Builder) => void): { code: string; message: string; line?: number; notes: string[] }[] {
  const b = new Builder();
  b.scope = b.addInvoke([1, 2], sp(1, 1));
  build(b);
  const ctx = runOne(resolveModulesPass, b.graph);
  expect(verify(b.graph)).toEqual([]);
  return ctx.errors.map((e) => ({ code: e.code, message: e.message, line: e.span?.line, notes: e.notes }));
}

describe('suggest', () => {
  it('finds the nearest name within a distance bound', () => {
    expect(editDistance('mpl', 'mlp')).toBe(1);
    expect(suggest('mpl', ['attn', 'mlp', 'ln_1'])).toBe('mlp');
    expect(suggest('LOGITS', ['logits'])).toBe('logits');
    expect(suggest('zzzzzz', ['attn', 'mlp'])).toBeUndefined();
  });
});

describe('resolve-modules', () => {
  it('accepts every valid reference', () => {
    expect(errorsOf((b) => {
      const h = b.moduleOutput('transformer.h.3.mlp', 0, sp(2, 1));
      b.moduleInput('transformer.h.0', 0, sp(2, 1));
      b.moduleOutput('', 0, sp(2, 1));
      b.modelOutput(null, sp(2, 1));
      b.modelOutput('logits', sp(2, 1));
      b.param('lm_head.weight', sp(2, 1));
      b.callModule('lm_head', [h], sp(2, 1));
      b.set('transformer.h.3', 'input', 0, null, h, sp(2, 1));
    })).toEqual([]);
  });

  it('gives the valid range for an out-of-range list index, in script form', () => {
    const errs = errorsOf((b) => {
      b.moduleOutput('transformer.h.7', 0, sp(3, 5));
      b.moduleOutput('transformer.h.9.mlp', 0, sp(4, 5));
    });
    expect(errs).toEqual([
      { code: 'unknown-module', message: "no module 'model.transformer.h[7]' (the model has model.transformer.h[0]..model.transformer.h[3])", line: 3, notes: [] },
      { code: 'unknown-module', message: "no module 'model.transformer.h[9].mlp' (the model has model.transformer.h[0]..model.transformer.h[3])", line: 4, notes: [] },
    ]);
  });

  it('gives the range also when the export kept a module for the list', () => {
    const tree = gpt2Tree({ listContainer: true });
    expect(explainUnknownModule(tree, 'transformer.h.7')).toBe("no module 'model.transformer.h[7]' (the model has model.transformer.h[0]..model.transformer.h[3])");
    expect(explainUnknownModule(tree, 'transformer.hh.2')).toBe("no module 'model.transformer.hh[2]'; did you mean 'model.transformer.h[2]'?");
  });

  it('suggests the nearest existing path', () => {
    const tree = gpt2Tree();
    expect(explainUnknownModule(tree, 'transformer.hh.2')).toBe("no module 'model.transformer.hh[2]'; did you mean 'model.transformer.h[2]'?");
    expect(explainUnknownModule(tree, 'transformer.hh')).toBe("no module 'model.transformer.hh'; did you mean 'model.transformer.h[0]'?");
    expect(explainUnknownModule(tree, 'transformer.h.2.mpl')).toBe("no module 'model.transformer.h[2].mpl'; did you mean 'model.transformer.h[2].mlp'?");
    expect(explainUnknownModule(tree, 'transformer.h.2.mlp.c_fcc')).toBe("no module 'model.transformer.h[2].mlp.c_fcc'; did you mean 'model.transformer.h[2].mlp.c_fc'?");
    expect(explainUnknownModule(tree, 'transfomer.h.1')).toBe("no module 'model.transfomer.h[1]'; did you mean 'model.transformer.h[1]'?");
    expect(explainUnknownModule(tree, 'h.1.attn')).toBe("no module 'model.h[1].attn'; did you mean 'model.transformer.h[1].attn'?");
    expect(explainUnknownModule(tree, 'ln_f')).toBe("no module 'model.ln_f'; did you mean 'model.transformer.ln_f'?");
    expect(explainUnknownModule(tree, 'decoder')).toBe("no module 'model.decoder'");
    expect(explainUnknownModule(tree, 'lm_head')).toBeNull();
  });

  it('checks sets and calls too', () => {
    const errs = errorsOf((b) => {
      const x = b.constant(0, sp(1, 1));
      b.set('transformer.h.4.mlp', 'output', 0, null, x, sp(5, 1));
      b.callModule('lm_haed', [x], sp(6, 1));
    });
    expect(errs.map((e) => [e.code, e.line])).toEqual([['unknown-module', 5], ['unknown-module', 6]]);
    expect(errs[1]!.message).toBe("no module 'model.lm_haed'; did you mean 'model.lm_head'?");
  });

  it('checks output and input indices, naming how many there are', () => {
    const errs = errorsOf((b) => {
      b.moduleOutput('transformer.h.1', 2, sp(2, 1));
      b.set('transformer.h.1.attn', 'input', 1, null, b.constant(0, sp(3, 1)), sp(3, 1));
    });
    expect(errs.map((e) => [e.code, e.message])).toEqual([
      ['no-such-output', 'model.transformer.h[1] has no outputs[2] (it has 1 output)'],
      ['no-such-output', 'model.transformer.h[1].attn has no inputs[1] (it has 1 input)'],
    ]);
  });

  it('checks parameters and graph output names, with suggestions', () => {
    const errs = errorsOf((b) => {
      b.param('lm_head.weigth', sp(2, 1));
      b.param('transformer.h.1.mlp.c_fc.wieght', sp(3, 1));
      b.modelOutput('logit', sp(4, 1));
    });
    expect(errs).toEqual([
      { code: 'unknown-parameter', message: "no parameter 'model.lm_head.weigth'; did you mean 'model.lm_head.weight'?", line: 2, notes: [] },
      { code: 'unknown-parameter', message: "no parameter 'model.transformer.h[1].mlp.c_fc.wieght'; did you mean 'model.transformer.h[1].mlp.c_fc.weight'?", line: 3, notes: [] },
      { code: 'unknown-output', message: "the model has no output 'logit'; did you mean 'logits'?", line: 4, notes: ["the model's outputs are: logits"] },
    ]);
  });
});
