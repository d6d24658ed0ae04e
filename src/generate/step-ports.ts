/**
 * The instrumented model of a generation step: the model with ports only at the boundaries
 * the step reads or sets (an empty set is the model itself). Every port costs nodes in each
 * decoding step and can stop onnxruntime from fusing the ops around it (a residual Add into
 * the next LayerNorm), which matters at one token per step; so a generation does not run on
 * the all-ports model that traces use. One executor (and session) per port set and model,
 * kept for later steps and generations. Graph outputs a step reads at their last position
 * only (the logits that pick the next token) are computed there only.
 * @module
 */
import type { Graph } from '../../ir/ir.js';
import type { ModelContext } from '../compile.js';
import { FastExecutor } from '../fast/execute.js';
import { choosePorts, type PortSpec } from '../fast/ports.js';
import { readsLastPositionOnly } from '../fast/plan.js';

const executors = new WeakMap<ModelContext, Map<string, FastExecutor>>();

/** The boundaries a step's IR reads or sets that the default port set covers, in its order. */
export function stepPorts(mc: ModelContext, ir: Graph): PortSpec[] {
  const used = new Set<string>();
  for (const n of ir.nodes) {
    if (n.is('module.output') || n.is('module.input')) {
      const a = n.attrs as { path: string; index: number };
      if (a.index === 0) used.add(`${a.path}#${n.op === 'module.output' ? 'output' : 'input'}`);
    } else if (n.is('set')) {
      const a = n.attrs as { path: string; port: 'output' | 'input'; index: number };
      if (a.index === 0) used.add(`${a.path}#${a.port}`);
    }
  }
  return choosePorts(mc.tree).filter((p) => used.has(`${p.path}#${p.kind}`));
}

/**
 * Graph outputs the step reads at their last position only (`logits[:, -1]`, what picks the
 * next token): the step's model computes them there only (the lm_head on one position
 * instead of the whole prompt at step 0, and a fetch of one row instead of all).
 */
export function lastPositionOutputs(mc: ModelContext, ir: Graph): string[] {
  const out = new Set<string>();
  const reject = new Set<string>();
  for (const n of ir.nodes) {
    if (!n.is('model.output')) continue;
    const name = n.attrs.name ?? mc.tree.graphOutputs[0]?.name;
    if (!name) continue;
    const axis = mc.tree.graphOutputs.find((o) => o.name === name)?.sig?.shape?.indexOf('sequence') ?? -1;
    if (readsLastPositionOnly(ir, n.result, axis)) out.add(name);
    else reject.add(name);
  }
  return [...out].filter((x) => !reject.has(x)).sort();
}

/** The step executors made so far for a model (tests, benchmarks). */
export function stepExecutors(mc: ModelContext): FastExecutor[] {
  return [...(executors.get(mc)?.values() ?? [])];
}

/**
 * The fast-path executor for a step's IR (after the IR pipeline). `appendOf`: the model's
 * key/value cache as (input, output) pairs, whose outputs the step's model also gives as
 * their new positions (src/fast/ports.ts `exposeAppendedParts`), so a step fetches those
 * and the decode loop puts each cache output together in buffers of its own.
 */
export function stepExecutor(mc: ModelContext, ir: Graph, appendOf?: readonly { input: string; output: string }[]): FastExecutor {
  const ports = stepPorts(mc, ir);
  const lastPosition = lastPositionOutputs(mc, ir);
  const key = JSON.stringify([ports, lastPosition, appendOf ?? []]);
  let m = executors.get(mc);
  if (!m) executors.set(mc, (m = new Map()));
  let ex = m.get(key);
  if (!ex) m.set(key, (ex = new FastExecutor(mc, { ports, pinned: false, lastPosition, ...(appendOf?.length ? { appendOf } : {}) })));
  return ex;
}
