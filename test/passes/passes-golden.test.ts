/** Golden printed IR: builder output and the IR after each pass, verified after every pass. */
import { describe, expect, it } from 'vitest';
import { Builder } from '../../ir/builder.js';
import { printIR } from '../../ir/printer.js';
import { verify } from '../../ir/verifier.js';
import { inferTypesPass } from '../../passes/infer-types.js';
import { resolveModulesPass } from '../../passes/resolve-modules.js';
import { foldConstantsPass } from '../../passes/fold-constants.js';
import { csePass } from '../../passes/cse.js';
import { dcePass } from '../../passes/dce.js';
import { runPasses } from '../../passes/run.js';
import { golden, setup, sp, writeGolden } from '../golden/fixture.js';
import type { Graph } from '../../ir/ir.js';

/** The Eiffel Tower script, built as the lowering would. */
export function eiffel(): Graph {
  const b = new Builder({ file: 'eiffel.nns' });
  const f = 'eiffel.nns';
  b.scope = b.addInvoke([464, 412, 733], sp(3, 7, f), 'The Eiffel Tower');
  const h2 = b.moduleOutput('transformer.h.2', 0, sp(4, 8, f));
  h2.name = 'h2';
  b.save(h2, 'h2', sp(4, 8, f));
  b.set('transformer.h.3.mlp', 'output', 0, null, b.constant(0, sp(5, 35, f)), sp(5, 3, f));
  const logits = b.index(b.modelOutput('logits', sp(6, 12, f)), [{ kind: 'slice' }, { kind: 'index', index: -1 }, { kind: 'slice' }], sp(6, 12, f));
  logits.name = 'logits';
  b.save(logits, 'logits', sp(6, 12, f));
  const probs = b.op('softmax', [logits], { dim: -1 }, sp(7, 11, f));
  probs.name = 'probs';
  b.save(probs, 'probs', sp(7, 11, f));
  b.save(b.moduleOutput('transformer.h.3.mlp', 0, sp(8, 9, f)), 'after', sp(8, 9, f));
  return b.graph;
}

/** A program exercising folding, CSE across scopes and sets, and DCE. */
export function opt(): Graph {
  const b = new Builder();
  const s1 = b.addInvoke([1, 2, 3], sp(1, 1));
  const s2 = b.addInvoke([4, 5, 6], sp(2, 1));
  b.graph.dimValues.sequence = 3;
  b.scope = s1;
  const a = b.moduleOutput('transformer.h.0', 0, sp(3, 1));
  const a2 = b.moduleOutput('transformer.h.0', 0, sp(4, 1));
  const s = b.op('add', [b.constant(2, sp(5, 1)), b.constant(3, sp(5, 5))], {}, sp(5, 3));
  const m = b.op('mul', [a, s], {}, sp(6, 1));
  const m2 = b.op('mul', [a2, s], {}, sp(7, 1));
  b.op('exp', [a], {}, sp(8, 1));
  b.save(m, 'm', sp(9, 1));
  b.save(m2, 'm2', sp(10, 1));
  b.set('transformer.h.0', 'output', 0, null, m, sp(11, 1));
  const c = b.moduleOutput('transformer.h.0', 0, sp(12, 1));
  b.save(b.op('add', [c, b.constant(0, sp(13, 5))], {}, sp(13, 1)), 'z', sp(13, 1));
  b.scope = s2;
  const d = b.moduleOutput('transformer.h.0', 0, sp(14, 1));
  const t = b.op('transpose', [b.constant([[1, 2], [3, 4]], sp(15, 1))], { dim0: 0, dim1: 1 }, sp(15, 2));
  const r = b.op('reshape', [b.index(t, [{ kind: 'index', index: 0 }], sp(16, 1))], { shape: [1, 2] }, sp(17, 1));
  b.save(r, 'r', sp(18, 1));
  b.save(d, 'd', sp(19, 1));
  return b.graph;
}

function check(name: string, text: string): void {
  const want = golden(name);
  if (want === null) writeGolden(name, text);
  expect(text).toBe(want ?? text);
}

describe('golden IR', () => {
  it('eiffel: builder output and inferred types', () => {
    const g = eiffel();
    expect(verify(g)).toEqual([]);
    check('eiffel.builder', printIR(g));
    g.dimValues.sequence = 3;
    const { state, ctx } = setup(g);
    const texts: Record<string, string> = {};
    const r = runPasses([resolveModulesPass, inferTypesPass], state, { ...ctx, printAfterEach: (n, t) => (texts[n] = t) }, { verifyEach: true });
    expect(ctx.errors.map((e) => e.message)).toEqual([]);
    expect(r.ok).toBe(true);
    check('eiffel.infer-types', texts['infer-types']!);
  });

  it('opt: after each of infer-types, fold-constants, cse, dce', () => {
    const g = opt();
    expect(verify(g)).toEqual([]);
    check('opt.builder', printIR(g, { spans: false }));
    const { state, ctx } = setup(g);
    const passes = [resolveModulesPass, inferTypesPass, foldConstantsPass, csePass, dcePass];
    const seen: string[] = [];
    ctx.printAfterEach = (name) => {
      seen.push(name);
      if (name !== 'resolve-modules') check(`opt.${name}`, printIR(state.ir, { spans: false }));
    };
    expect(runPasses(passes, state, ctx, { verifyEach: true })).toEqual({ ok: true });
    expect(seen).toEqual(passes.map((p) => p.name));
  });
});
