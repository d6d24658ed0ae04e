/**
 * A hand-written GPT-2-like module tree for IR and pass tests: 4 blocks of width 128,
 * vocabulary 874, one graph output `logits`. Plus helpers to build spans and run passes.
 * @module
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Span } from '../../src/errors.js';
import type { BoundaryValue, ModuleInfo, ModuleTree, ParamInfo, TensorSig } from '../../src/model/types.js';
import type { Graph } from '../../ir/ir.js';
import type { CompileState, Pass, PassContext } from '../../passes/pass.js';
import type { ModelProto } from '../../src/onnx/proto.js';

const H: TensorSig = { dtype: 'float32', shape: ['batch', 'sequence', 128] };
const bv = (name: string, sig: TensorSig): BoundaryValue => ({ name, sig });

/**
 * The test tree. Like the real TorchScript export, there is no module for the list
 * `transformer.h` itself unless `listContainer` is set.
 */
export function gpt2Tree(opts: { listContainer?: boolean } = {}): ModuleTree {
  const modules = new Map<string, ModuleInfo>();
  const params = new Map<string, ParamInfo>();
  const add = (path: string, inputs: BoundaryValue[], outputs: BoundaryValue[], children: string[] = []): void => {
    const parent = path === '' ? undefined : path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
    modules.set(path, { path, inputs, outputs, params: [], nodes: [], children, parent, calls: 1 });
  };
  const param = (name: string, shape: number[]): void => {
    params.set(name, { name, initializer: name, sig: { dtype: 'float32', shape } });
  };
  const blocks = [0, 1, 2, 3].map((i) => `transformer.h.${i}`);
  add('', [bv('input_ids', { dtype: 'int64', shape: ['batch', 'sequence'] })], [bv('logits', { dtype: 'float32', shape: ['batch', 'sequence', 874] })], ['transformer', 'lm_head']);
  const mid = opts.listContainer ? ['transformer.h'] : blocks;
  add('transformer', [bv('input_ids', { dtype: 'int64', shape: ['batch', 'sequence'] })], [bv('ln_f_out', H)], ['transformer.wte', ...mid, 'transformer.ln_f']);
  add('transformer.wte', [bv('input_ids', { dtype: 'int64', shape: ['batch', 'sequence'] })], [bv('wte_out', H)]);
  if (opts.listContainer) add('transformer.h', [bv('h_in', H)], [bv('h3_out', H)], blocks);
  for (const b of blocks) {
    add(b, [bv(`${b}_in`, H)], [bv(`${b}_out`, H)], ['ln_1', 'attn', 'ln_2', 'mlp'].map((c) => `${b}.${c}`));
    for (const c of ['ln_1', 'attn', 'ln_2']) add(`${b}.${c}`, [bv(`${b}.${c}_in`, H)], [bv(`${b}.${c}_out`, H)]);
    add(`${b}.mlp`, [bv(`${b}.mlp_in`, H)], [bv(`${b}.mlp_out`, H)], [`${b}.mlp.c_fc`, `${b}.mlp.c_proj`]);
    add(`${b}.mlp.c_fc`, [bv(`${b}.fc_in`, H)], [bv(`${b}.fc_out`, { dtype: 'float32', shape: ['batch', 'sequence', 512] })]);
    add(`${b}.mlp.c_proj`, [bv(`${b}.proj_in`, { dtype: 'float32', shape: ['batch', 'sequence', 512] })], [bv(`${b}.proj_out`, H)]);
    param(`${b}.mlp.c_fc.weight`, [128, 512]);
    param(`${b}.mlp.c_fc.bias`, [512]);
  }
  add('transformer.ln_f', [bv('ln_f_in', H)], [bv('ln_f_out', H)]);
  add('lm_head', [bv('ln_f_out', H)], [bv('logits', { dtype: 'float32', shape: ['batch', 'sequence', 874] })]);
  param('lm_head.weight', [874, 128]);
  param('transformer.wte.weight', [874, 128]);
  return {
    modules,
    params,
    graphInputs: [bv('input_ids', { dtype: 'int64', shape: ['batch', 'sequence'] })],
    graphOutputs: [bv('logits', { dtype: 'float32', shape: ['batch', 'sequence', 874] })],
  };
}

/** A span at `line:col` of `file` (one character wide). */
export function sp(line: number, col: number, file = 'test.nns'): Span {
  return { file, line, col, endLine: line, endCol: col + 1, offset: line * 100 + col, endOffset: line * 100 + col + 1 };
}

/** A compile state and context over `graph` with the test tree. */
export function setup(graph: Graph): { state: CompileState; ctx: PassContext } {
  return {
    state: { ir: graph, model: {} as ModelProto, saved: new Map() },
    ctx: { tree: gpt2Tree(), errors: [] },
  };
}

/** Run one pass (no verification here; callers verify). */
export function runOne(pass: Pass, graph: Graph): PassContext {
  const { state, ctx } = setup(graph);
  pass.run(state, ctx);
  return ctx;
}

/**
 * Compare `actual` with the golden file `test/golden/<name>.ir`. With `UPDATE_GOLDEN=1` a
 * missing file is written (to be reviewed by hand before committing), never overwritten.
 */
export function golden(name: string): string | null {
  const path = fileURLToPath(new URL(`./${name}.ir`, import.meta.url));
  return existsSync(path) ? readFileSync(path, 'utf8') : null;
}

/** Write a golden file that does not exist yet (review before committing). */
export function writeGolden(name: string, text: string): void {
  const path = fileURLToPath(new URL(`./${name}.ir`, import.meta.url));
  if (!existsSync(path)) writeFileSync(path, text);
}
