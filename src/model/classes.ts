/**
 * A class for every module. Exports with module metadata (dynamo's
 * `pkg.torch.onnx.class_hierarchy`) record PyTorch's class names; TorchScript-style exports
 * record none, so the class is inferred from the module's structure: its own operators (the
 * nodes not inside a child), its parameters and its children's classes. Inferred names are
 * generic (`Linear`, `LayerNorm`, `Attention`, `MLP`, `Block`, ...), never a guess at the
 * library's own name (`GPT2MLP`).
 * @module
 */
import type { GraphProto, ModelProto } from '../onnx/proto.js';
import type { ModuleInfo, ModuleTree } from './types.js';

/**
 * A module's class and where it comes from.
 * @category Model
 */
export interface ModuleClass {
  /** The class name: the export's (`GPT2MLP`) or an inferred one (`MLP`). */
  name: string;
  /** `true` when inferred from the structure (the export recorded no class). */
  inferred: boolean;
}

/** Operators that only move shapes and indices around (ignored when classifying). */
const BOOKKEEPING = new Set([
  'Shape', 'Constant', 'ConstantOfShape', 'Unsqueeze', 'Squeeze', 'Concat', 'Reshape', 'Slice', 'Cast', 'Transpose',
  'Split', 'Expand', 'Range', 'Identity', 'Flatten', 'Size', 'Equal', 'Less', 'Greater', 'Not', 'And', 'Or', 'Where',
  'CastLike', 'Gather', 'ScatterND', 'Tile', 'Trilu',
]);
const ACTIVATIONS: [string, (ops: Set<string>) => boolean][] = [
  ['GELU', (o) => o.has('Gelu') || o.has('FastGelu') || o.has('BiasGelu') || o.has('Erf') || (o.has('Tanh') && o.has('Pow'))],
  ['SiLU', (o) => (o.has('Sigmoid') && o.has('Mul')) || o.has('Swish')],
  ['ReLU', (o) => o.has('Relu')],
  ['Tanh', (o) => o.has('Tanh')],
  ['Sigmoid', (o) => o.has('Sigmoid')],
  ['Softmax', (o) => o.has('Softmax')],
  ['Dropout', (o) => o.has('Dropout')],
];
const ATTENTION_OPS = ['Attention', 'MultiHeadAttention', 'GroupQueryAttention', 'PackedAttention'];
const ACTIVATION_NAMES = new Set(ACTIVATIONS.map(([n]) => n));

interface Ctx {
  graph: GraphProto;
  tree: ModuleTree;
  /** Initializer ranks by name. */
  initializers: Map<string, number>;
  /** The node producing each value. */
  producers: Map<string, number>;
  memo: Map<string, string>;
}

function ownOps(ctx: Ctx, m: ModuleInfo): { ops: string[]; nodes: number[] } {
  const inChild = new Set(m.children.flatMap((c) => ctx.tree.modules.get(c)?.nodes ?? []));
  const nodes = m.nodes.filter((i) => !inChild.has(i));
  return { ops: nodes.map((i) => ctx.graph.node?.[i]?.op_type ?? ''), nodes };
}

/** Operators a weight may pass through before it is used (a tied, transposed or quantized weight). */
const WEIGHT_VIEWS = new Set(['Transpose', 'Cast', 'Reshape', 'Identity', 'DequantizeLinear', 'Squeeze', 'Unsqueeze']);

/** The rank of the initializer `name` is, or is a view of; -1 when it is computed from inputs. */
function weightRank(ctx: Ctx, name: string, depth = 0): number {
  const r = ctx.initializers.get(name);
  if (r !== undefined) return r;
  const p = ctx.producers.get(name);
  const n = p === undefined ? undefined : ctx.graph.node?.[p];
  if (!n || depth > 4 || !WEIGHT_VIEWS.has(n.op_type ?? '') || !n.input?.[0]) return -1;
  return weightRank(ctx, n.input[0], depth + 1);
}

/** Whether a node reads a weight: an initializer (or a view of one) of rank ≥ `minRank` (shape constants are rank 0 or 1). */
function readsWeight(ctx: Ctx, idx: number, minRank = 2): boolean {
  const n = ctx.graph.node?.[idx];
  return !!n?.input?.some((x) => weightRank(ctx, x) >= minRank);
}

function subtreeOps(ctx: Ctx, m: ModuleInfo): Set<string> {
  return new Set(m.nodes.map((i) => ctx.graph.node?.[i]?.op_type ?? ''));
}

function classify(ctx: Ctx, m: ModuleInfo): string {
  const { ops, nodes } = ownOps(ctx, m);
  const own = new Set(ops);
  const all = subtreeOps(ctx, m);
  const kids = m.children.map((c) => infer(ctx, c));
  const count = (name: string): number => kids.filter((k) => k === name).length;
  const weighted = nodes.filter((i) => readsWeight(ctx, i)).map((i) => ctx.graph.node![i]!.op_type ?? '');

  if (m.children.length === 0) {
    if (weighted.includes('Gather')) return 'Embedding';
    if (own.has('LayerNormalization')) return 'LayerNorm';
    if (own.has('SimplifiedLayerNormalization') || own.has('RMSNormalization') || own.has('SkipSimplifiedLayerNormalization')) return 'RMSNorm';
    if (own.has('ReduceMean') && (own.has('Sqrt') || own.has('Reciprocal') || own.has('Div') || own.has('Pow'))) return own.has('Sub') ? 'LayerNorm' : 'RMSNorm';
    if (own.has('GroupNormalization') || own.has('InstanceNormalization')) return 'GroupNorm';
    if (own.has('BatchNormalization')) return 'BatchNorm';
    if (weighted.includes('Conv') || own.has('Conv')) return 'Conv';
    if (weighted.some((o) => o === 'Gemm' || o === 'MatMul' || o === 'MatMulNBits' || o === 'MatMulInteger')) return 'Linear';
    if (nodes.some((i) => ctx.graph.node![i]!.op_type === 'Mul' && readsWeight(ctx, i, 1)) && ops.filter((o) => !BOOKKEEPING.has(o)).length <= 2) return 'Scale';
    const significant = new Set(ops.filter((o) => !BOOKKEEPING.has(o)));
    for (const [name, test] of ACTIVATIONS) if (test(significant)) return name;
    return 'Module';
  }
  if (ATTENTION_OPS.some((o) => own.has(o)) || (own.has('Softmax') && (count('Linear') >= 1 || own.has('MatMul')))) return 'Attention';
  const hasAttention = kids.includes('Attention');
  const hasMlp = kids.includes('MLP');
  if (hasAttention && (hasMlp || count('Linear') >= 1)) return 'Block';
  if (!all.has('Softmax') && count('Linear') >= 2 && (kids.some((k) => ACTIVATION_NAMES.has(k)) || [...own].some((o) => ACTIVATIONS.some(([, t]) => t(new Set([o]))))) ) return 'MLP';
  if (!all.has('Softmax') && count('Linear') >= 2 && (own.has('Relu') || own.has('Sigmoid') || own.has('Tanh') || own.has('Gelu'))) return 'MLP';
  const descendants = [...ctx.tree.modules.values()].filter((d) => d.path.startsWith(`${m.path === '' ? '' : `${m.path}.`}`) && d.path !== m.path).map((d) => infer(ctx, d.path));
  if (kids.includes('Model') && count('Linear') >= 1) return 'CausalLM';
  if (descendants.includes('Block') && descendants.includes('Embedding')) return 'Model';
  if (kids.length > 0 && kids.every((k) => k === 'Block')) return 'ModuleList';
  if (kids.length > 0 && kids.every((k) => k === 'Linear') && !own.has('Softmax')) return 'Sequential';
  return 'Module';
}

function infer(ctx: Ctx, path: string): string {
  let c = ctx.memo.get(path);
  if (c === undefined) {
    const m = ctx.tree.modules.get(path);
    c = m ? classify(ctx, m) : 'Module';
    ctx.memo.set(path, c);
  }
  return c;
}

/**
 * The class of every module, by path: the export's class name when it recorded one, else
 * inferred from the structure. Works for any export; the inferred names are
 * `Embedding`, `LayerNorm`, `RMSNorm`, `Linear`, `Conv`, activations (`GELU`, `SiLU`,
 * `ReLU`, ...), `Attention`, `MLP`, `Block`, `Model` (embeddings and blocks), `CausalLM`
 * (a model and a head), `ModuleList`, `Sequential`, else `Module`.
 *
 * ```ts
 * const classes = moduleClasses(model.proto, model.modules);
 * classes.get('transformer.h.0.attn'); // { name: 'GPT2Attention', inferred: false } or { name: 'Attention', inferred: true }
 * ```
 * @category Model
 */
export function moduleClasses(proto: ModelProto, tree: ModuleTree): Map<string, ModuleClass> {
  const graph = proto.graph ?? {};
  const initializers = new Map((graph.initializer ?? []).map((t) => [t.name ?? '', t.dims?.length ?? 0] as const));
  const producers = new Map<string, number>();
  (graph.node ?? []).forEach((n, i) => { for (const o of n.output ?? []) producers.set(o, i); });
  const ctx: Ctx = { graph, tree, initializers, producers, memo: new Map() };
  const out = new Map<string, ModuleClass>();
  for (const [path, m] of tree.modules) {
    out.set(path, m.className ? { name: m.className, inferred: false } : { name: infer(ctx, path), inferred: true });
  }
  return out;
}
