/**
 * The instrumented model of a generation step: the model with ports only at the boundaries
 * the step reads or sets (an empty set is the model itself). Every port costs nodes in each
 * decoding step and can stop onnxruntime from fusing the ops around it (a residual Add into
 * the next LayerNorm), which matters at one token per step; so a generation does not run on
 * the all-ports model that traces use. One executor (and session) per port set and model,
 * kept for later steps and generations.
 * @module
 */
import type { Graph } from '../../ir/ir.js';
import type { ModelContext } from '../compile.js';
import { FastExecutor } from '../fast/execute.js';
import { choosePorts, type PortSpec } from '../fast/ports.js';

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

/** The fast-path executor for a step's IR (after the IR pipeline). */
export function stepExecutor(mc: ModelContext, ir: Graph): FastExecutor {
  const ports = stepPorts(mc, ir);
  const key = JSON.stringify(ports);
  let m = executors.get(mc);
  if (!m) executors.set(mc, (m = new Map()));
  let ex = m.get(key);
  if (!ex) m.set(key, (ex = new FastExecutor(mc, { ports, pinned: false })));
  return ex;
}
