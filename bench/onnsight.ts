/**
 * The onnsight side of the benchmark: one {@link LanguageModel} per benchmark context, the
 * model's block list found generically from its module tree, and the `.nns` scripts the
 * measurements trace (written as text, parsed and lowered through grammar/ like `nns run`).
 *
 * Nothing here caches across what the issue calls "new": every script that must be new
 * gets a fresh text *and* a fresh structure (a position or layer that no earlier script
 * of the run used), so neither the structural compile cache nor a session can hit.
 * @module
 */
import { parseScript } from '../grammar/parse.js';
import { lowerTrace } from '../grammar/lower.js';
import { checkTopLevel, traces } from '../grammar/script.js';
import type { Graph } from '../ir/ir.js';
import { LanguageModel } from '../src/index.js';
import { NnsErrors } from '../src/errors.js';
import type { FastExecutor } from '../src/fast/execute.js';
import type { ModuleInfo, ModuleTree } from '../src/model/types.js';
import type { BenchContext } from './measure.js';
import { mulberry32 } from './setup.js';
import { blockList } from '../src/fast/segments.js';

/** The model's block list and the modules the logit lens needs, found from the module tree. */
export interface Blocks {
  /** Block module paths in order (`transformer.h.0`, ...). */
  paths: string[];
  /** The final norm applied to the last block's output (`transformer.ln_f`), if found. */
  finalNorm?: string;
  /** The module producing the first graph output, the unembedding (`lm_head`), if found. */
  unembed?: string;
  /** Name of the first graph output (`logits`). */
  output: string;
}

const isIndex = (seg: string | undefined): boolean => seg !== undefined && /^\d+$/.test(seg);

/**
 * The block list: modules whose last path segment is an integer and that sit in no other
 * such module (`transformer.h.N`, `model.layers.N`); the longest such list when there are
 * several. Then data flow, never the order of modules or nodes: the unembedding is the
 * deepest module whose first output is the first graph output; the final norm is the
 * deepest module, outside the blocks, whose first output is the unembedding's first input
 * and has the blocks' output shape (`transformer.ln_f`: norm → head).
 */
export function findBlocks(tree: ModuleTree): Blocks {
  const paths = blockList(tree);
  if (!paths.length) throw new Error('benchmark: the model has no block list (modules named like `transformer.h.0`)');
  const output = tree.graphOutputs[0]?.name ?? 'logits';
  const depth = (p: string): number => p.split('.').length;
  const deepest = (ms: ModuleInfo[]): string | undefined => ms.sort((a, b) => depth(b.path) - depth(a.path) || (a.path < b.path ? -1 : 1))[0]?.path;
  const all = [...tree.modules.values()].filter((m) => m.path !== '');
  const unembed = deepest(all.filter((m) => m.outputs[0]?.name === output));
  const blockSig = JSON.stringify(tree.modules.get(paths[0]!)?.outputs[0]?.sig?.shape);
  const headIn = unembed ? tree.modules.get(unembed)?.inputs[0]?.name : undefined;
  // Neither a block, nor inside one, nor a module holding the blocks (`transformer` returns ln_f's output too).
  const inBlock = (p: string): boolean => paths.some((b) => p === b || p.startsWith(`${b}.`) || b.startsWith(`${p}.`));
  const finalNorm = headIn === undefined ? undefined : deepest(all.filter((m) =>
    m.outputs[0]?.name === headIn && !inBlock(m.path) && JSON.stringify(m.outputs[0]?.sig?.shape) === blockSig));
  return { paths, finalNorm, unembed, output };
}

/** A module path as an `.nns` reference: `transformer.h.3` → `model.transformer.h[3]`. */
export function nnsRef(path: string): string {
  return 'model' + path.split('.').map((s) => (isIndex(s) ? `[${s}]` : `.${s}`)).join('');
}

/** A token-id prompt as `.nns` text. */
export const idsText = (ids: readonly number[]): string => `[${ids.join(', ')}]`;

/** Everything the onnsight measurements share. */
export interface OnnsightState {
  model: LanguageModel;
  blocks: Blocks;
  /** The fast-path executor (stats: which path a trace took). */
  fast: FastExecutor;
  /** Token ids: `prompts[0]` = the context's feeds; more are seeded random ids of the same length. */
  prompt(i: number): number[];
  /** A number never handed out before in this process (fresh positions/constants). */
  fresh(): number;
}

const states = new WeakMap<BenchContext, OnnsightState>();

/** Loads the model through onnsight (first call only), timing it into `ctx.extra.model_open_ms`. */
export async function onnsight(ctx: BenchContext): Promise<OnnsightState> {
  let st = states.get(ctx);
  if (st) return st;
  const t0 = performance.now();
  const model = await LanguageModel.load(ctx.model.graphPath);
  ctx.extra.model_open_ms = performance.now() - t0;
  st = stateOf(ctx, model);
  states.set(ctx, st);
  return st;
}

/**
 * Opens another graph of the same model (`model.with-past.onnx` beside it) with the same
 * prompts; the caller disposes `st.model`. Not cached and not timed into `model_open_ms`.
 */
export async function onnsightOther(ctx: BenchContext, graphPath: string): Promise<OnnsightState> {
  return stateOf(ctx, await LanguageModel.load(graphPath));
}

export function stateOf(ctx: BenchContext, model: LanguageModel): OnnsightState {
  const fast = model.mc.fast as FastExecutor | undefined;
  if (!fast) throw new Error('benchmark: the fast path is off (ONNSIGHT_FAST=0?); the benchmark measures onnsight with its defaults');
  const base = ctx.feeds.input_ids ? Array.from(ctx.feeds.input_ids.data as BigInt64Array, Number) : undefined;
  if (!base) throw new Error('benchmark: the model has no input_ids input');
  const vocab = ctx.model.vocab ?? 100;
  const prompts = new Map<number, number[]>([[0, base]]);
  let counter = 0;
  return {
    model, blocks: findBlocks(model.modules), fast,
    prompt(i) {
      let p = prompts.get(i);
      if (!p) {
        const r = mulberry32(1000 + i);
        prompts.set(i, (p = Array.from({ length: base.length }, () => Math.floor(r() * vocab))));
      }
      return p;
    },
    fresh: () => counter++,
  };
}

/** Releases the onnsight model of a context (sessions, tiers, worker). */
export async function disposeOnnsight(ctx: BenchContext): Promise<void> {
  const st = states.get(ctx);
  states.delete(ctx);
  await st?.model.dispose();
}

/** Parses `text` and lowers its one trace against the model (`nns run`'s front half). */
export function lowerScript(st: OnnsightState, text: string, file = '<bench>'): Graph {
  const parsed = parseScript(text, file);
  if (!parsed.ast) throw new NnsErrors(parsed.errors);
  const top = checkTopLevel(parsed.ast);
  if (top.length) throw new NnsErrors(top);
  const [t] = traces(parsed.ast);
  const lowered = lowerTrace(t!, {
    file, tree: st.model.modules, host: new Map(),
    tokenize: () => { throw new Error('benchmark scripts use token ids'); },
  });
  if (lowered.errors.length) throw new NnsErrors(lowered.errors);
  return lowered.graph;
}

/**
 * Saves and one slice set (fast-path material): the middle block's output at position
 * `pos` set to the constant `value`, block `save`'s output and the last logits saved.
 */
export function savesAndSetScript(st: OnnsightState, ids: readonly number[], pos: number, value: number, save: number): string {
  const b = st.blocks.paths;
  const mid = b[b.length >> 1]!;
  return [
    `trace ${idsText(ids)} {`,
    `  ${nnsRef(mid)}.output[:, ${pos}, :] = ${value}`,
    `  h = ${nnsRef(b[save % b.length]!)}.output.save()`,
    `  logits = model.output.${st.blocks.output}[:, -1, :].save()`,
    `}`,
  ].join('\n');
}

/**
 * The logit lens at every layer (needs splicing: module application): each block's output
 * at position `pos` through the final norm and the unembedding, softmaxed and saved.
 */
export function logitLensScript(st: OnnsightState, ids: readonly number[], pos: number): string {
  const { paths, finalNorm, unembed } = st.blocks;
  if (!unembed) throw new Error('benchmark: no unembedding module (the module producing the first graph output) for the logit lens');
  const list = paths[0]!.split('.').slice(0, -1).join('.');
  const lens = finalNorm ? `${nnsRef(unembed)}(${nnsRef(finalNorm)}(h))` : `${nnsRef(unembed)}(h)`;
  return [
    `trace ${idsText(ids)} {`,
    `  for l in 0..${paths.length} {`,
    `    h = ${nnsRef(list)}[l].output[:, ${pos}, :]`,
    `    lens = softmax(${lens}, -1).save()`,
    `  }`,
    `}`,
  ].join('\n');
}

/**
 * Activation patching, NNsight style, batched in one trace: per block, an invoke of the
 * source prompt reading that block's output (identical read-only invokes: the engine's dedup
 * merges them into one batch row), then one invoke per position with the target prompt's
 * block output at that position replaced by the source's, saving the last logits
 * (`out_P.L`). `scope0Source` writes it like examples/patching.nns instead: the source invoke
 * once, its value read outside the invokes as row 0 of the whole batch. `diff = [a, b]` saves
 * the logit difference of tokens a and b at the last position instead (one number per variant,
 * the usual patching metric).
 */
export function patchingSweepScript(st: OnnsightState, source: readonly number[], target: readonly number[], positions: readonly number[], scope0Source = false, diff?: readonly [number, number]): string {
  const list = nnsRef(st.blocks.paths[0]!.split('.').slice(0, -1).join('.'));
  const L = st.blocks.paths.length;
  const lines = [`trace {`];
  if (scope0Source) lines.push(`  invoke ${idsText(source)} { }`);
  lines.push(`  for l in 0..${L} {`);
  if (scope0Source) lines.push(`    src = ${list}[l].output[0]`);
  else lines.push(`    invoke ${idsText(source)} {`, `      src = ${list}[l].output[0]`, `    }`);
  positions.forEach((p) => {
    lines.push(
      `    invoke ${idsText(target)} {`,
      `      ${list}[l].output[:, ${p}, :] = src[${p}]`,
      diff
        ? `      out_${p} = (model.output.${st.blocks.output}[:, -1, ${diff[0]}] - model.output.${st.blocks.output}[:, -1, ${diff[1]}]).save()`
        : `      out_${p} = model.output.${st.blocks.output}[:, -1, :].save()`,
      `    }`,
    );
  });
  lines.push(`  }`, `}`);
  return lines.join('\n');
}

/** One variant of the sweep as its own trace: its own source invoke, one patched invoke. */
export function patchingVariantScript(st: OnnsightState, source: readonly number[], target: readonly number[], layer: number, pos: number): string {
  const block = nnsRef(st.blocks.paths[layer]!);
  return [
    `trace {`,
    `  invoke ${idsText(source)} {`,
    `    src = ${block}.output[0]`,
    `  }`,
    `  invoke ${idsText(target)} {`,
    `    ${block}.output[:, ${pos}, :] = src[${pos}]`,
    `    out = model.output.${st.blocks.output}[:, -1, :].save()`,
    `  }`,
    `}`,
  ].join('\n');
}

/** `n` positions spread evenly over `[0, seqLen)`. */
export function spreadPositions(seqLen: number, n: number): number[] {
  return Array.from({ length: Math.min(n, seqLen) }, (_, i) => Math.floor((i * seqLen) / Math.min(n, seqLen)));
}
