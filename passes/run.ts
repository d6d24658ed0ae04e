/**
 * The pipeline runner: runs passes in order over one compile state, optionally verifying
 * the IR after each (an invalid IR is an internal error naming the pass and showing the
 * printed IR), reporting each pass's output to `ctx.printAfterEach`, and stopping after
 * the first pass that added user errors (later phases are skipped).
 * @module
 */
import { printIR } from '../ir/printer.js';
import { verify } from '../ir/verifier.js';
import { printModelChanges } from './print-model.js';
import type { CompileState, Pass, PassContext } from './pass.js';

/** Runner options. */
export interface RunOptions {
  /** Run the IR verifier after every pass (always on in tests). */
  verifyEach?: boolean;
}

/** Run `passes` in order; `ok` is false when a pass reported user errors. */
export function runPasses(passes: Pass[], state: CompileState, ctx: PassContext, opts: RunOptions = {}): { ok: boolean } {
  for (const pass of passes) {
    const before = ctx.errors.length;
    pass.run(state, ctx);
    if (opts.verifyEach) {
      const problems = verify(state.ir);
      if (problems.length > 0) {
        throw new Error(`internal: IR invalid after pass '${pass.name}':\n  ${problems.join('\n  ')}\n${printIR(state.ir)}`);
      }
    }
    if (ctx.printAfterEach) ctx.printAfterEach(pass.name, printState(pass, state));
    if (ctx.errors.length > before) return { ok: false };
  }
  return { ok: true };
}

/** What `--print-ir-after-all` shows after `pass`. */
export function printState(pass: Pass, state: CompileState): string {
  if (typeof pass.prints === 'function') return pass.prints(state);
  return pass.prints === 'model' ? printModelChanges(state.model) : printIR(state.ir);
}
