/**
 * Recovers the PyTorch module tree (`named_modules()`) of an exported ONNX graph, with each
 * module's boundary values, parameters and nodes. Works from what the exporters record (see
 * src/model/scopes.ts) and never from model-specific names.
 *
 * Boundaries (first call of a module; `M` = the nodes of that call, nested modules included):
 * - inputs: values used by `M`, produced outside `M`, that carry data (not initializers,
 *   `Constant` outputs, values computed from constants only, nor shape bookkeeping computed
 *   from `Shape`/`Size`; see {@link ValueKind}); ordered by first use.
 * - outputs: data values produced in `M` and used outside it, or graph outputs.
 *
 * **Output order** (first output = the module's first returned tensor). Candidates are split
 * into *flowing* outputs (used by a node outside `M`) and *exported-only* outputs (only graph
 * outputs: a returned key/value cache `present.*`, attention weights). Flowing outputs come
 * first, and among them the one produced last comes first (a module computes what it returns
 * last: attention builds k/v before the output projection, a block adds its residual at the
 * end), the rest in production order; exported-only outputs follow in graph-output order.
 * When no output flows (the last module before the graph's end, e.g. `lm_head`), the first by
 * graph-output order leads (`logits`, `last_hidden_state` precede `present.*` in every exporter).
 *
 * **Calls.** TorchScript marks a second call in the same parent call with `_N` (`relu_1`);
 * dynamo records the same path again (or `path@N`), and a new call is detected when a node of
 * another module computing data ran between two runs of the module's nodes. `calls` counts
 * them; boundaries are those of the first call, `nodes` covers all calls.
 *
 * **Known differences between exports of one model** (gpt2-facts; the tests pin them):
 * - Inputs of the root and of the module that consumes graph inputs follow the graph inputs:
 *   the dynamo export takes `input_ids` only and computes the attention mask and positions
 *   inside `transformer`, the TorchScript one takes `attention_mask` and `position_ids`.
 * - `transformer.wpe` returns `[1, sequence, 128]` in the dynamo export (positions are
 *   `arange(sequence).unsqueeze(0)`, as in PyTorch without `position_ids`) and
 *   `[batch, sequence, 128]` in the TorchScript one (it gathers the `position_ids` input).
 * - Class names exist only in dynamo exports.
 * - Dynamo's optimizer adds nodes without metadata (`Split` of c_attn): they are placed by
 *   their neighbours (see src/model/scopes.ts) and land where TorchScript puts them.
 * Limits: a module registered in one place and called from another (shared activation) is
 * named by its call site in TorchScript exports; modules folded away by the exporter
 * (BatchNorm into Conv) do not appear; nodes inside `If`/`Loop` bodies are not assigned to
 * modules (the `If` node is, by its own name).
 * @module
 */
import type { ModelProto } from '../onnx/proto.js';
import type { NodeProto } from '../onnx/proto.js';
import type { BoundaryValue, ModuleInfo, ModuleTree, OpInfo, ParamInfo, TensorSig } from './types.js';
import { indexGraph, type GraphIndex } from './graph-index.js';
import { recoverScopes, type NodeScope } from './scopes.js';
import { scanParams } from './params.js';

export type { ValueKind } from './graph-index.js';

interface Draft {
  path: string;
  className?: string;
  /** Subtree nodes (all calls), ascending. */
  nodes: number[];
  /** Call key per subtree node (same order as `nodes`). */
  keys: string[];
}

/** Nearest existing ancestor of a dotted path (`transformer.h.0` → `transformer` when `transformer.h` is not a module). */
function parentPath(path: string, exists: (p: string) => boolean): string {
  let p = path;
  for (;;) {
    const k = p.lastIndexOf('.');
    if (k < 0) return '';
    p = p.slice(0, k);
    if (exists(p)) return p;
  }
}

/**
 * Call keys: explicit call indices of every level up to the module (`relu_1`, `relu@1`) and,
 * for dynamo graphs (execution-ordered, no explicit marker for a second call), the index of
 * the run of consecutive subtree nodes — a new run starts when a node of another module that
 * computes data ran in between.
 */
function callKeys(d: Draft, depth: Map<number, number>, scopes: NodeScope[], breaks: number[], dynamo: boolean): void {
  let run = 0;
  d.keys = d.nodes.map((n, j) => {
    if (dynamo && j > 0 && breaks[n] - breaks[d.nodes[j - 1] + 1] > 0) run++;
    const lv = scopes[n].levels.slice(0, (depth.get(n) ?? 0) + 1).map((l) => l.call).join(',');
    return dynamo ? `${lv}#${run}` : lv;
  });
}

/** Orders output candidates by the rule in the module documentation. */
function orderOutputs(cands: string[], inCall: Set<number>, ix: GraphIndex): string[] {
  const outIdx = new Map(ix.graphOutputs.map((n, i) => [n, i]));
  const flows = (v: string): boolean => (ix.consumers.get(v) ?? []).some((c) => {
    if (inCall.has(c)) return false;
    const n = ix.nodes[c];
    // An Identity that only renames into a graph output is not a use.
    if (n.op_type === 'Identity') return (n.output ?? []).some((o) => !outIdx.has(o) || flows(o));
    return true;
  });
  const flowing = cands.filter(flows).sort((a, b) => ix.producer.get(a)! - ix.producer.get(b)!);
  const exported = cands.filter((v) => !flowing.includes(v)).sort((a, b) => (outIdx.get(a) ?? 1e9) - (outIdx.get(b) ?? 1e9));
  if (flowing.length > 1) flowing.unshift(flowing.pop()!);
  return [...flowing, ...exported];
}

function boundaries(nodes: number[], ix: GraphIndex): { inputs: string[]; outputs: string[] } {
  const inCall = new Set(nodes);
  const produced = new Set<string>();
  for (const n of nodes) for (const v of ix.nodes[n].output ?? []) if (v) produced.add(v);
  const graphOut = new Set(ix.graphOutputs);
  const inputs: string[] = [];
  const seen = new Set<string>();
  for (const n of nodes) {
    for (const v of ix.uses[n]) {
      if (produced.has(v) || seen.has(v) || ix.kind.get(v) !== 'data') continue;
      seen.add(v);
      inputs.push(v);
    }
  }
  const cands: string[] = [];
  for (const n of nodes) {
    for (const v of ix.nodes[n].output ?? []) {
      if (!v) continue;
      const external = graphOut.has(v) || (ix.consumers.get(v) ?? []).some((c) => !inCall.has(c));
      if (external && (graphOut.has(v) || ix.kind.get(v) === 'data')) cands.push(v);
    }
  }
  return { inputs, outputs: orderOutputs(cands, inCall, ix) };
}

const bv = (name: string): BoundaryValue => ({ name });

/**
 * The modules in PyTorch's `named_modules()` order: parents before children, siblings in
 * forward (call) order. A sibling's place is where its call *ends*: the node producing its
 * first output. Whatever order an exporter or optimizer writes nodes in, that node comes
 * after everything the output depends on, so a module that consumes another's result always
 * follows it (`h.0` before `h.1`, `ln_f` after the blocks, `lm_head` after `transformer`);
 * nodes hoisted to the front of the graph (the `Identity` nodes of deduplicated weights,
 * constants) do not move a module. Siblings without outputs follow by their first node
 * that computes data, then by their first node.
 */
function forwardOrder(modules: Map<string, ModuleInfo>, ix: GraphIndex): ModuleInfo[] {
  const producesData = (n: number): boolean => (ix.nodes[n]!.output ?? []).some((v) => v && ix.kind.get(v) === 'data');
  const key = (m: ModuleInfo): [number, number, number] => {
    const out = m.outputs.map((o) => ix.producer.get(o.name)).find((p) => p !== undefined);
    const firstData = m.nodes.find(producesData);
    return [out ?? Infinity, firstData ?? Infinity, m.nodes[0] ?? Infinity];
  };
  const keys = new Map([...modules.values()].map((m) => [m.path, key(m)]));
  const cmp = (a: string, b: string): number => {
    const ka = keys.get(a)!;
    const kb = keys.get(b)!;
    for (let i = 0; i < 3; i++) if (ka[i] !== kb[i]) return ka[i]! < kb[i]! ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  };
  const kids = new Map<string, string[]>();
  for (const m of modules.values()) {
    if (m.parent === undefined) continue;
    const list = kids.get(m.parent) ?? [];
    list.push(m.path);
    kids.set(m.parent, list);
  }
  const out: ModuleInfo[] = [];
  const stack = [...modules.values()].filter((m) => m.parent === undefined || !modules.has(m.parent)).map((m) => m.path).sort(cmp).reverse();
  while (stack.length) {
    const p = stack.pop()!;
    out.push(modules.get(p)!);
    stack.push(...(kids.get(p) ?? []).sort(cmp).reverse());
  }
  return out;
}

/**
 * Builds the module tree of an exported model (TorchScript scope names or dynamo metadata).
 * Symbolic types are not filled here; see `inferBoundaryTypes` (src/model/shapes.ts).
 */
export function buildModuleTree(model: ModelProto): ModuleTree {
  const ix = indexGraph(model.graph ?? {});
  const { scopes, rootClass, dynamo } = recoverScopes(ix);

  const drafts = new Map<string, Draft>();
  const root: Draft = { path: '', nodes: [], keys: [] };
  if (rootClass) root.className = rootClass;
  drafts.set('', root);
  /** Per module: node → depth of the module in that node's stack. */
  const depthOf = new Map<string, Map<number, number>>();
  scopes.forEach((s, i) => {
    root.nodes.push(i);
    s.levels.forEach((l, k) => {
      let d = drafts.get(l.path);
      if (!d) drafts.set(l.path, (d = { path: l.path, nodes: [], keys: [] }));
      if (l.className && !d.className) d.className = l.className;
      if (d.nodes[d.nodes.length - 1] !== i) d.nodes.push(i);
      let dm = depthOf.get(l.path);
      if (!dm) depthOf.set(l.path, (dm = new Map()));
      if (!dm.has(i)) dm.set(i, k);
    });
  });

  // Parameters; modules that only hold parameters (no node) are added.
  const ownModule = scopes.map((s) => (s.levels.length ? s.levels[s.levels.length - 1].path : ''));
  const { params, owner } = scanParams(ix, ownModule);
  for (const own of owner.values()) if (!drafts.has(own)) drafts.set(own, { path: own, nodes: [], keys: [] });

  // Prefix count of nodes that break a run of a module's nodes (dynamo call detection).
  const breaks = [0];
  scopes.forEach((s, i) => {
    const isBreak = s.source !== 'torchscript' && (ix.nodes[i].output ?? []).some((v) => ix.kind.get(v) === 'data');
    breaks.push(breaks[i] + (isBreak ? 1 : 0));
  });

  const order = [...drafts.values()].sort((a, b) => (a.nodes[0] ?? Infinity) - (b.nodes[0] ?? Infinity));
  const modules = new ModuleMap(ix.nodes);
  for (const d of order) {
    const info: ModuleInfo = { path: d.path, outputs: [], inputs: [], params: [], nodes: d.nodes, children: [], calls: d.nodes.length ? 1 : 0 };
    if (d.className) info.className = d.className;
    if (d.path === '') {
      info.inputs = ix.graphInputs.map(bv);
      info.outputs = ix.graphOutputs.map(bv);
    } else {
      info.parent = parentPath(d.path, (p) => drafts.has(p));
      if (d.nodes.length) {
        callKeys(d, depthOf.get(d.path) ?? new Map(), scopes, breaks, dynamo);
        info.calls = new Set(d.keys).size;
        const first = d.nodes.filter((_, j) => d.keys[j] === d.keys[0]);
        const b = boundaries(first, ix);
        info.inputs = b.inputs.map(bv);
        info.outputs = b.outputs.map(bv);
      }
    }
    modules.set(d.path, info);
  }
  const ordered = forwardOrder(modules, ix);
  modules.clear();
  for (const m of ordered) modules.set(m.path, m);
  for (const m of modules.values()) if (m.parent !== undefined) modules.get(m.parent)?.children.push(m.path);

  const all = new Map<string, ParamInfo>();
  for (const [name, p] of params) {
    all.set(name, p);
    const own = owner.get(name) ?? '';
    for (let q: string | undefined = own; q !== undefined; q = modules.get(q)?.parent) modules.get(q)?.params.push(p);
  }
  return { modules, graphInputs: ix.graphInputs.map(bv), graphOutputs: ix.graphOutputs.map(bv), params: all, ops: (p) => modules.ops(p) };
}

/** The path of `MODULE.op("TYPE", N)`: `transformer.h.1.attn.op("Softmax",0)`. */
export function opPath(module: string, opType: string, n: number): string {
  const seg = `op("${opType}",${n})`;
  return module === '' ? seg : `${module}.${seg}`;
}

const OP_PATH = /^(?:(.*)\.)?op\("([^"]*)",(\d+)\)$/;

/** Splits an operation path into its module, op type and index; null for module paths. */
export function parseOpPath(path: string): { module: string; opType: string; n: number } | null {
  const m = OP_PATH.exec(path);
  return m ? { module: m[1] ?? '', opType: m[2]!, n: Number(m[3]) } : null;
}

/**
 * The module map of a tree: the modules (iteration, `size`) plus the operation
 * pseudo-modules `PATH.op("TYPE",N)` that `get`/`has` build on demand (one node; outputs =
 * the node's outputs, inputs = its inputs, in ONNX order; types from {@link ModuleMap.sigs}).
 */
export class ModuleMap extends Map<string, ModuleInfo> {
  /** Symbolic types of values (filled by `inferBoundaryTypes`), used for operation outputs and inputs. */
  readonly sigs = new Map<string, TensorSig>();
  private readonly opCache = new Map<string, ModuleInfo | null>();

  constructor(private readonly graphNodes: readonly NodeProto[]) {
    super();
  }

  override get(key: string): ModuleInfo | undefined {
    return super.get(key) ?? this.op(key);
  }

  override has(key: string): boolean {
    return super.has(key) || this.op(key) !== undefined;
  }

  private value(name: string): BoundaryValue {
    const sig = this.sigs.get(name);
    return sig ? { name, sig } : { name };
  }

  private op(key: string): ModuleInfo | undefined {
    if (!key.endsWith(')')) return undefined;
    const hit = this.opCache.get(key);
    if (hit !== undefined) return hit ?? undefined;
    const p = parseOpPath(key);
    const parent = p ? super.get(p.module) : undefined;
    let info: ModuleInfo | null = null;
    if (p && parent) {
      const idx = parent.nodes.filter((i) => this.graphNodes[i]?.op_type === p.opType)[p.n];
      if (idx !== undefined) {
        const node = this.graphNodes[idx]!;
        info = {
          path: key, outputs: (node.output ?? []).filter((v) => v).map((v) => this.value(v)),
          inputs: (node.input ?? []).filter((v) => v).map((v) => this.value(v)),
          params: [], nodes: [idx], children: [], parent: p.module, calls: 1, className: node.op_type ?? '',
        };
      }
    }
    this.opCache.set(key, info);
    return info ?? undefined;
  }

  /** The operations of a module's subtree in graph order, each as `op("TYPE", N)`. */
  ops(path: string): OpInfo[] {
    const m = super.get(path);
    if (!m) return [];
    const count = new Map<string, number>();
    return m.nodes.map((i) => {
      const t = this.graphNodes[i]?.op_type ?? '';
      const n = count.get(t) ?? 0;
      count.set(t, n + 1);
      const full = opPath(path, t, n);
      return { opType: t, n, path: full, outputs: this.get(full)!.outputs };
    });
  }

  /** All data values produced by nodes (what `inferBoundaryTypes` types for operations). */
  nodeOutputs(): string[] {
    return this.graphNodes.flatMap((n) => (n.output ?? []).filter((v) => v));
  }
}

/**
 * Number of elements of the module list at `listPath` (`transformer.h` → 12): one more than
 * the largest `listPath.N` in the tree, or undefined when `listPath` has no numbered children.
 */
export function moduleListLength(tree: ModuleTree, listPath: string): number | undefined {
  const prefix = listPath === '' ? '' : `${listPath}.`;
  let max = -1;
  for (const p of tree.modules.keys()) {
    if (!p.startsWith(prefix)) continue;
    const seg = p.slice(prefix.length).split('.', 1)[0]!;
    if (/^\d+$/.test(seg)) max = Math.max(max, Number(seg));
  }
  return max < 0 ? undefined : max + 1;
}

/**
 * Resolves negative list indices in a module path as Python does: `transformer.h.-1` →
 * `transformer.h.11` on a 12-block model. Segments that stay out of range (or whose list
 * is unknown) are kept as written, so the module check reports them with the list's range.
 */
export function resolveModulePath(tree: ModuleTree, path: string): string {
  if (!/(^|\.)-\d+(\.|$)/.test(path)) return path;
  const segs = path.split('.');
  for (let i = 0; i < segs.length; i++) {
    if (!/^-\d+$/.test(segs[i]!)) continue;
    const n = moduleListLength(tree, segs.slice(0, i).join('.'));
    const k = Number(segs[i]);
    if (n !== undefined && k + n >= 0) segs[i] = String(k + n);
  }
  return segs.join('.');
}
