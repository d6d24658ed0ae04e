/**
 * Which PyTorch module each ONNX node came from, recovered from what the exporters record:
 *
 * - Dynamo (`torch.onnx.export(dynamo=True)`): node `metadata_props`
 *   `pkg.torch.onnx.name_scopes` (cumulative module paths, last entry the FX node) and
 *   `pkg.torch.onnx.class_hierarchy` (module classes, parallel list).
 * - TorchScript (`dynamo=False`): the node name is a scope path,
 *   `/transformer/h.0/attn/c_attn/Gemm` (last segment = the op).
 * - Nodes with neither (optimizer-created nodes, `Constant_12`): the deepest module shared by
 *   the nodes that produce their inputs and consume their outputs.
 * @module
 */
import type { NodeProto } from '../onnx/proto.js';
import type { GraphIndex } from './graph-index.js';

/** One module on a node's module stack. */
export interface ScopeLevel {
  /** Dotted module path (`transformer.h.0.attn`). */
  path: string;
  /** 0 for the module's first call in its parent's call, N for the (N+1)-th (`relu_1`, `relu@1`). */
  call: number;
  /** Class name, without its Python package (`GPT2Attention`), when recorded. */
  className?: string;
}

/** The module stack of one node, outermost first; `[]` for nodes outside every module. */
export interface NodeScope {
  levels: ScopeLevel[];
  /** Where the stack came from. */
  source: 'dynamo' | 'torchscript' | 'inferred';
}

/** What the scope recovery found for the root module and the whole graph. */
export interface ScopeResult {
  scopes: NodeScope[];
  /** Class of the root module when recorded (dynamo). */
  rootClass?: string;
  /** True when any node carried dynamo metadata. */
  dynamo: boolean;
}

const NAME_SCOPES = 'pkg.torch.onnx.name_scopes';
const CLASS_HIERARCHY = 'pkg.torch.onnx.class_hierarchy';
const EMPTY_STACK = '_empty_nn_module_stack_from_metadata_hook';

/** Parses a Python `repr` of a list of strings (`['', 'transformer', "it's"]`). */
export function parsePyStringList(text: string): string[] | null {
  const s = text.trim();
  if (!s.startsWith('[') || !s.endsWith(']')) return null;
  const out: string[] = [];
  let i = 1;
  const end = s.length - 1;
  while (i < end) {
    const c = s[i];
    if (c === ' ' || c === ',') { i++; continue; }
    if (c !== "'" && c !== '"') return null;
    let v = '';
    i++;
    while (i < end && s[i] !== c) {
      if (s[i] === '\\' && i + 1 < end) {
        const e = s[i + 1];
        v += e === 'n' ? '\n' : e === 't' ? '\t' : e;
        i += 2;
      } else v += s[i++];
    }
    if (s[i] !== c) return null;
    i++;
    out.push(v);
  }
  return out;
}

/** `transformers.models.gpt2.modeling_gpt2.GPT2MLP` → `GPT2MLP`. */
function shortClass(qualified: string | undefined): string | undefined {
  if (!qualified) return undefined;
  const last = qualified.split('.').pop();
  return last || undefined;
}

/** Strips torch.export call suffixes (`layer@1`) and `L['self'].` prefixes from a path. */
function normalizeDynamoPath(p: string): { path: string; call: number } {
  const m = /@(\d+)$/.exec(p);
  const path = p.replace(/^L\['self'\]\./, '').replace(/@\d+/g, '');
  return { path, call: m ? Number(m[1]) : 0 };
}

function meta(node: NodeProto, key: string): string | undefined {
  for (const p of node.metadata_props ?? []) if (p.key === key) return p.value;
  return undefined;
}

function dynamoScope(node: NodeProto): { levels: ScopeLevel[]; rootClass?: string } | null {
  const raw = meta(node, NAME_SCOPES);
  if (raw === undefined) return null;
  const names = parsePyStringList(raw);
  if (!names || names.length === 0 || names[0] === EMPTY_STACK) return { levels: [] };
  const classes = parsePyStringList(meta(node, CLASS_HIERARCHY) ?? '') ?? [];
  const levels: ScopeLevel[] = [];
  let rootClass: string | undefined;
  // Last entry is the FX node, not a module.
  for (let i = 0; i < names.length - 1; i++) {
    const { path, call } = normalizeDynamoPath(names[i]);
    if (path === '') { rootClass = shortClass(classes[i]); continue; }
    const level: ScopeLevel = { path, call };
    const cls = shortClass(classes[i]);
    if (cls) level.className = cls;
    levels.push(level);
  }
  return { levels, rootClass };
}

/** Module segments of a TorchScript node name (`/a/b.0/Op_3` → `['a', 'b.0']`), or null. */
export function torchScriptSegments(name: string): string[] | null {
  if (!name.startsWith('/')) return null;
  const parts = name.split('/').slice(1);
  parts.pop(); // the op itself: `Gemm`, `MatMul_1`, `Constant_12`
  return parts.filter((p) => p.length > 0);
}

const REPEAT = /^(.+)_(\d+)$/;

/**
 * Turns TorchScript scope segments into module levels, handling the exporter's quirks:
 * Sequential children repeat their parent (`layer1/layer1.0` → `layer1.0`), and a module
 * called again in the same parent call gets `_N` (`relu_1` → `relu`, call 1) when a sibling
 * segment `relu` exists and no weight is named `….relu_1.*`.
 */
function torchScriptLevels(segs: string[], siblings: Map<string, Set<string>>, hasParamPrefix: (p: string) => boolean): ScopeLevel[] {
  const levels: ScopeLevel[] = [];
  let path = '';
  let prevBase = '';
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    const rawParent = segs.slice(0, i).join('/');
    let base = seg;
    let call = 0;
    const m = REPEAT.exec(seg);
    if (m && siblings.get(rawParent)?.has(m[1])) {
      const literal = joinPath(path, prevBase, seg);
      if (!hasParamPrefix(literal)) { base = m[1]; call = Number(m[2]); }
    }
    path = joinPath(path, prevBase, base);
    prevBase = base;
    levels.push({ path, call });
  }
  return levels;
}

/** Appends a scope segment to a path; a segment repeating the previous one (`layer1.0` after `layer1`) extends it. */
function joinPath(path: string, prevSeg: string, seg: string): string {
  if (prevSeg && seg.startsWith(prevSeg + '.')) return path + seg.slice(prevSeg.length);
  return path ? `${path}.${seg}` : seg;
}

/** Recovers the module stack of every node of an indexed graph. */
export function recoverScopes(ix: GraphIndex): ScopeResult {
  const { nodes } = ix;
  const stateDictPrefixes = new Set<string>();
  for (const name of ix.inits.keys()) {
    const parts = name.split('.');
    for (let k = 1; k < parts.length; k++) stateDictPrefixes.add(parts.slice(0, k).join('.'));
  }
  const segsOf = nodes.map((n) => torchScriptSegments(n.name ?? ''));
  const siblings = new Map<string, Set<string>>();
  for (const segs of segsOf) {
    if (!segs) continue;
    for (let i = 0; i < segs.length; i++) {
      const key = segs.slice(0, i).join('/');
      let set = siblings.get(key);
      if (!set) siblings.set(key, (set = new Set()));
      set.add(segs[i]);
    }
  }

  let rootClass: string | undefined;
  let dynamo = false;
  const scopes: (NodeScope | null)[] = nodes.map((node, i) => {
    const d = dynamoScope(node);
    if (d) {
      dynamo = true;
      rootClass ??= d.rootClass;
      return { levels: d.levels, source: 'dynamo' };
    }
    const segs = segsOf[i];
    if (segs) return { levels: torchScriptLevels(segs, siblings, (p) => stateDictPrefixes.has(p)), source: 'torchscript' };
    if (node.op_type === 'Constant') return { levels: [], source: 'inferred' };
    return null;
  });

  // Nodes with no scope information: deepest module shared by their data neighbours.
  nodes.forEach((node, i) => {
    if (scopes[i]) return;
    const chains: ScopeLevel[][] = [];
    for (const v of ix.uses[i]) {
      const p = ix.producer.get(v);
      if (p !== undefined && scopes[p] && ix.kind.get(v) === 'data') chains.push(scopes[p]!.levels);
    }
    for (const v of node.output ?? []) {
      for (const c of ix.consumers.get(v) ?? []) if (scopes[c]) chains.push(scopes[c]!.levels);
    }
    scopes[i] = { levels: commonPrefix(chains), source: 'inferred' };
  });
  return { scopes: scopes as NodeScope[], rootClass, dynamo };
}

function commonPrefix(chains: ScopeLevel[][]): ScopeLevel[] {
  if (chains.length === 0) return [];
  const out: ScopeLevel[] = [];
  for (let k = 0; ; k++) {
    const first = chains[0][k];
    if (!first) return out;
    if (!chains.every((c) => c[k] && c[k].path === first.path && c[k].call === first.call)) return out;
    out.push(first);
  }
}
