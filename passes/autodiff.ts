/**
 * The backward pass: reverse-mode differentiation of the rewritten ONNX graph (the model's
 * nodes and the spliced ones alike), emitted into the same graph, so one run returns values
 * and gradients. Lowering leaves one `Grad` placeholder (domain `ai.onnsight`, inputs
 * `[Y, X]`) per `grad(Y, X)`; this pass groups them by Y (one backward sweep per Y, however
 * many X), differentiates only the nodes on a path from some X to Y (values reachable from
 * an X that Y depends on; shape bookkeeping — `Shape`, comparisons, integer casts — cuts the
 * path), and turns each placeholder into an `Identity` of dY/dX (zeros when Y does not
 * depend on X). The derivative of each ONNX op type is one entry of {@link DERIVATIVES}
 * (passes/derivatives.ts); a path through an op without one is the user error
 * `not-differentiable`, naming the op and its module, at the `grad` call.
 * @module
 */
import { NnsError } from '../src/errors.js';
import { scriptPath } from '../ir/ir.js';
import { defaultOpset, type ModelProto, type NodeProto } from '../src/onnx/proto.js';
import type { TensorSig } from '../src/model/types.js';
import { ModuleMap } from '../src/model/modules.js';
import type { Pass } from './pass.js';
import { Emitter, nodeProvenance, nodeSpans, type Provenance } from './onnx-emit.js';
import { DERIVATIVES, NO_GRADIENT, GradBuilder, NotDifferentiable } from './derivatives.js';

/** Module of a node, for messages: onnsight's own tag, dynamo's name scopes, or a TorchScript scope name. */
function moduleOf(n: NodeProto): string {
  const meta = new Map((n.metadata_props ?? []).map((p) => [p.key ?? '', p.value ?? '']));
  if (meta.has('onnsight.op')) return meta.get('onnsight.module') ?? '';
  const scopes = meta.get('pkg.torch.onnx.name_scopes');
  if (scopes) {
    const m = /'([^']*)'\s*,?\s*\]\s*$/.exec(scopes.replace(/,\s*'[^']*'\]$/, ']'));
    if (m?.[1]) return m[1];
  }
  const name = n.name ?? '';
  if (name.startsWith('/')) {
    const segs = name.split('/').filter(Boolean);
    segs.pop();
    return segs.join('.');
  }
  return '';
}

/** The block a module belongs to: the path through its first numbered segment (`transformer.h.3.mlp` → `transformer.h.3`), else the path. */
function blockOf(path: string): string {
  const m = /^(.*?\.\d+)(\.|$)/.exec(path);
  return m ? m[1]! : path;
}

/** The autodiff pass. */
export const autodiffPass: Pass = {
  name: 'autodiff',
  prints: 'model',
  run(state, ctx) {
    const reqs = state.grads ?? [];
    if (!reqs.length) return { changed: false };
    const g = state.model.graph!;
    const em = new Emitter(g);
    const opset = defaultOpset(state.model) ?? 0;
    const sigs = ctx.tree.modules instanceof ModuleMap ? ctx.tree.modules.sigs : new Map();
    const gb = new GradBuilder(em, opset, g, sigs);

    const byY = new Map<string, typeof reqs>();
    for (const r of reqs) {
      const y = r.placeholder.input![0]!;
      byY.set(y, [...(byY.get(y) ?? []), r]);
    }
    const placeholders = new Set(reqs.map((r) => r.placeholder));
    for (const [y, group] of byY) {
      // The sweep is shared by every grad(Y, ·) call: one group of its own (one nns_grad
      // function), located at the first call, its description listing them all; the
      // placeholders (now Identity nodes handing out dY/dX) join it as its outputs.
      const from = nodeProvenance.get(group[0]!.placeholder);
      const at = from?.stmt ?? from?.span ?? group[0]!.span;
      const calls = [...new Set(group.map((r) => { const s = nodeProvenance.get(r.placeholder)?.span ?? r.span; return s ? `${s.line}:${s.col}` : '?'; }))];
      const doc = `backward sweep of one grad target, shared by ${group.length} grad call${group.length === 1 ? '' : 's'} (line:col ${calls.join(', ')})`;
      // Scoped by the module Y comes from (where the sweep starts: lm_head for a logit difference).
      const yNode = g.node!.find((n) => (n.output ?? []).includes(y));
      const yProv = yNode ? nodeProvenance.get(yNode) : undefined;
      const module = yProv ? yProv.stmtModule ?? yProv.module : yNode ? moduleOf(yNode) : from?.stmtModule ?? from?.module ?? '';
      // One function per block the sweep goes back through (`/transformer/h.3/nns.backward`):
      // each reads its own block's forward values and hands out the gradients taken there.
      const part = (b: string): Provenance => {
        const text = `${doc}: the part through ${b || 'the model'}`;
        return { module: b, irOp: 'backward', kind: 'backward', ...(at ? { span: at, stmt: at } : {}), group: `grad:${y}:${b}`, doc: text, sourceText: text };
      };
      const base = part(blockOf(module));
      em.prov = base;
      const through = (n: NodeProto): void => { em.prov = part(blockOf(moduleOf(n)) || base.module); };
      try {
        const xs = [...new Set(group.map((r) => r.placeholder.input![1]!))];
        const grads = sweep(g.node!.filter((n) => !placeholders.has(n)), y, xs, gb, through, !state.functions);
        const producer = new Map<string, NodeProto>();
        for (const n of g.node!) for (const o of n.output ?? []) producer.set(o, n);
        for (const r of group) {
          const x = r.placeholder.input![1]!;
          em.prov = base;
          const d = grads.get(x) ?? gb.zerosLike(x);
          const p = r.placeholder;
          // The placeholder hands out dY/dX from the part of the sweep that computed it.
          const from = producer.get(d);
          nodeProvenance.set(p, { ...(from && nodeProvenance.get(from)) || base });
          p.op_type = 'Identity';
          delete p.domain;
          p.input = [d];
        }
      } catch (e) {
        if (e instanceof NotDifferentiable) {
          // The script's own nodes carry a module scope too: only copies of a module's nodes name it.
          const pv = nodeProvenance.get(e.node);
          const where = pv ? pv.copyOf ?? '' : moduleOf(e.node);
          ctx.errors.push(new NnsError('not-differentiable',
            `cannot differentiate through ${e.node.op_type} node '${e.node.name ?? '?'}' ${where ? `in module ${scriptPath(where)}` : "of the script's own computation"}: ${e.reason}`,
            { span: group[0]!.span ?? nodeSpans.get(group[0]!.placeholder) }));
        } else throw e;
      }
    }
    state.grads = [];
    return { changed: true };
  },
};

/**
 * Emits into `model`'s graph the gradients of the one-element value `y` with respect to the
 * values `xs` (a name absent from the result: y does not depend on it). What the pass does
 * per Y; exported for the derivative tests.
 * @throws NotDifferentiable for a path through an op without a rule
 */
export function emitGradients(model: ModelProto, y: string, xs: string[], sigs: ReadonlyMap<string, TensorSig> = new Map()): Map<string, string> {
  const g = model.graph!;
  const em = new Emitter(g);
  const gb = new GradBuilder(em, defaultOpset(model) ?? 0, g, sigs);
  return sweep([...g.node!], y, xs, gb);
}

/**
 * One backward sweep over `nodes` (the graph without placeholders): dY/dX for every X that
 * Y depends on (absent: Y does not depend on it); `recomputing`: see {@link recompute}.
 */
function sweep(nodes: NodeProto[], y: string, xs: string[], gb: GradBuilder, through?: (n: NodeProto) => void, recomputing = true): Map<string, string> {
  const producer = new Map<string, NodeProto>();
  const consumers = new Map<string, NodeProto[]>();
  for (const n of nodes) {
    for (const o of n.output ?? []) if (o) producer.set(o, n);
    for (const i of new Set(n.input ?? [])) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  }
  // Values Y depends on.
  const toY = new Set<string>([y]);
  const stack = [y];
  while (stack.length) {
    const v = stack.pop()!;
    const p = producer.get(v);
    if (!p) continue;
    for (const i of p.input ?? []) if (i && !toY.has(i)) { toY.add(i); stack.push(i); }
  }
  // Values reachable from some X along differentiable edges, restricted to those Y depends on.
  const active = new Set<string>();
  const work = xs.filter((x) => toY.has(x));
  for (const x of work) active.add(x);
  while (work.length) {
    const v = work.pop()!;
    for (const c of consumers.get(v) ?? []) {
      if (NO_GRADIENT.has(c.op_type ?? '') || gb.cutsGradient(c)) continue;
      for (const o of c.output ?? []) if (o && toY.has(o) && !active.has(o)) { active.add(o); work.push(o); }
    }
  }
  const result = new Map<string, string>();
  if (!active.has(y)) return result;
  // Active nodes in topological order (Kahn over active values).
  const activeNodes = nodes.filter((n) => (n.output ?? []).some((o) => active.has(o)) && (n.input ?? []).some((i) => active.has(i)));
  const set = new Set(activeNodes);
  const indeg = new Map<NodeProto, number>();
  const next = new Map<NodeProto, NodeProto[]>();
  for (const n of activeNodes) {
    const deps = new Set<NodeProto>();
    for (const i of n.input ?? []) {
      const p = producer.get(i);
      if (p && set.has(p) && active.has(i)) deps.add(p);
    }
    indeg.set(n, deps.size);
    for (const d of deps) next.set(d, [...(next.get(d) ?? []), n]);
  }
  const order: NodeProto[] = [];
  const ready = activeNodes.filter((n) => indeg.get(n) === 0);
  while (ready.length) {
    const n = ready.shift()!;
    order.push(n);
    for (const m of next.get(n) ?? []) {
      const k = indeg.get(m)! - 1;
      indeg.set(m, k);
      if (k === 0) ready.push(m);
    }
  }
  if (order.length !== activeNodes.length) throw new Error('internal: autodiff over a cyclic graph');

  const firstBackward = gb.em.graph.node!.length;
  const acc = new Map<string, string>();
  acc.set(y, gb.onesLike(y));
  const add = (v: string, d: string): void => {
    const cur = acc.get(v);
    acc.set(v, cur === undefined ? d : gb.op('Add', [cur, d]));
  };
  for (let k = order.length - 1; k >= 0; k--) {
    const n = order[k]!;
    const gOut = (n.output ?? []).map((o) => acc.get(o) ?? null);
    if (gOut.every((x) => x === null)) continue;
    const rule = DERIVATIVES[n.op_type ?? ''];
    if (!rule || (n.domain && n.domain !== 'ai.onnx')) throw new NotDifferentiable(n, `no derivative rule for ${n.domain ? `${n.domain}.` : ''}${n.op_type}`);
    const wants = (n.input ?? []).map((i) => !!i && active.has(i));
    through?.(n);
    const gIn = rule(gb, n, gOut, wants);
    (n.input ?? []).forEach((i, j) => {
      const d = gIn[j];
      if (wants[j] && d) add(i, d);
    });
  }
  for (const x of xs) {
    const d = acc.get(x);
    if (d !== undefined) result.set(x, d);
  }
  // Not when statements become functions (`nns compile`'s default): a copy listed among the
  // forward nodes would leave its block's backward function unfoldable.
  if (recomputing) recompute(nodes, gb.em.graph.node!.slice(firstBackward), gb, through);
  return result;
}

/**
 * Forward values the backward reads that are one `Add`/`Mul` of another value it reads and a
 * one-element constant (GPT-2's GELU: `1 + tanh(…)` beside `tanh(…)`) are computed again in
 * the backward instead of kept from the forward pass: one value kept per layer instead of two.
 * The copy swaps the operands (exactly the same sum or product; onnxruntime's common
 * subexpression elimination would otherwise merge it back into the original) and is placed
 * right after the original in the node list: onnxruntime orders nodes by a depth-first walk
 * from the outputs that visits a node's later-listed inputs first, so a copy listed early runs
 * last among its consumer's inputs — when the backward reaches it — while one listed late
 * would run with the forward pass and be kept as long as the original was.
 */
function recompute(forward: NodeProto[], backward: NodeProto[], gb: GradBuilder, through?: (n: NodeProto) => void): void {
  const producer = new Map<string, NodeProto>();
  for (const n of forward) for (const o of n.output ?? []) if (o) producer.set(o, n);
  const readers = new Map<string, NodeProto[]>();
  for (const b of backward) for (const i of new Set(b.input ?? [])) if (i && producer.has(i)) readers.set(i, [...(readers.get(i) ?? []), b]);
  const scalar = (v: string): boolean => gb.constValue(v)?.length === 1;
  const list = gb.em.graph.node!;
  for (const [v, rs] of readers) {
    const p = producer.get(v)!;
    if ((p.op_type !== 'Add' && p.op_type !== 'Mul') || (p.domain && p.domain !== 'ai.onnx') || (p.input ?? []).length !== 2) continue;
    const [a, b] = p.input as [string, string];
    const kept = readers.has(a) && scalar(b) ? a : readers.has(b) && scalar(a) ? b : undefined;
    if (kept === undefined) continue;
    through?.(p);
    const copy = gb.op(p.op_type, kept === a ? [b, a] : [a, b]);
    const node = list.pop()!; // the copy, just emitted: moved next to the original
    list.splice(list.indexOf(p) + 1, 0, node);
    for (const r of rs) r.input = r.input!.map((i) => (i === v ? copy : i));
  }
}
