/**
 * The one way IR is created, by the `.nns` lowering and by the TypeScript API alike.
 * The builder appends nodes in program order to its {@link Graph}, tags each with the
 * current {@link Builder.scope}, and numbers module references by how many `set`s on
 * the same boundary value (under any of its names: `ln_2.output` is `mlp.input`) came
 * before them (`version`), so no pass can merge a read before a write with a read after it.
 * @module
 */
import { NnsError, type Span } from '../src/errors.js';
import type { ModuleTree } from '../src/model/types.js';
import { OP_SCHEMA } from './ops.js';
import {
  Graph, Node, type DType, type IndexItem, type NestedNumbers, type OpAttrs, type OpName, type PureOp, type Value,
} from './ir.js';

/** Options of a {@link Builder}. */
export interface BuilderOptions {
  /** Source file name, kept for reference (spans carry their own file). */
  file?: string;
  /** The model's module tree: when given, `callModule` returns one value per module output. */
  tree?: ModuleTree;
}

/** Appends IR nodes to a graph. */
export class Builder {
  /** The graph being built; `scopes[0]` is the whole batch. */
  readonly graph: Graph;
  /** Current scope for every node created (0 = whole batch). `addInvoke` does not change it. */
  scope = 0;
  /** Source file name from the options. */
  readonly file: string | undefined;
  private readonly tree: ModuleTree | undefined;
  private readonly sets = new Map<string, number>();

  /** A builder with an empty graph holding only the whole-batch scope (rows 0..0 until invokes are added). */
  constructor(opts: BuilderOptions = {}) {
    this.graph = new Graph();
    this.graph.scopes.push({ id: 0, rowStart: 0, rowEnd: 0 });
    this.file = opts.file;
    this.tree = opts.tree;
  }

  /** Add an invoke: one prompt = one batch row, assigned in creation order. Returns the new scope id (the current scope is unchanged). */
  addInvoke(tokens: number[], span: Span, prompt?: string): number {
    const whole = this.graph.scopes[0]!;
    const id = this.graph.scopes.length;
    const row = whole.rowEnd;
    this.graph.scopes.push({ id, rowStart: row, rowEnd: row + 1, tokens: [...tokens], ...(prompt !== undefined ? { prompt } : {}), span });
    whole.rowEnd = row + 1;
    return id;
  }

  /** A module's output `index` (path in `named_modules` form; `''` is the root). */
  moduleOutput(path: string, index: number, span: Span): Value {
    return this.emit('module.output', [], { path, index, version: this.version(path, 'output', index) }, 1, span)[0]!;
  }

  /** A module's input `index`. */
  moduleInput(path: string, index: number, span: Span): Value {
    return this.emit('module.input', [], { path, index, version: this.version(path, 'input', index) }, 1, span)[0]!;
  }

  /** A graph output by name (`null` = the first). */
  modelOutput(name: string | null, span: Span): Value {
    return this.emit('model.output', [], { name }, 1, span)[0]!;
  }

  /** A parameter by state-dict name (`lm_head.weight`). */
  param(name: string, span: Span): Value {
    return this.emit('param', [], { name }, 1, span)[0]!;
  }

  /** A literal (scalar or rectangular nested arrays); dtype defaults to float32. */
  constant(value: number | NestedNumbers, span: Span, dtype: DType = 'float32'): Value {
    const shape: number[] = [];
    const data: number[] = [];
    flatten(value, 0, shape, data, span);
    const v = this.emit('const', [], { dtype, shape, data }, 1, span)[0]!;
    v.type = { dtype, shape: [...shape] };
    return v;
  }

  /** A value supplied by the host at run time. */
  host(name: string, dtype: DType, shape: number[], span: Span): Value {
    const v = this.emit('host', [], { name, dtype, shape: [...shape] }, 1, span)[0]!;
    v.type = { dtype, shape: [...shape] };
    return v;
  }

  /** A single-result computational op (`add`, `softmax`, `index`, ...). */
  op<K extends PureOp>(op: K, inputs: Value[], attrs: OpAttrs[K], span: Span): Value {
    return this.emit(op, inputs, attrs, 1, span)[0]!;
  }

  /** Any op by name (results as the schema says; one for variadic): the language's function table calls it. */
  apply<K extends OpName>(op: K, inputs: Value[], attrs: OpAttrs[K], span: Span): Value[] {
    const n = OP_SCHEMA[op].results;
    return this.emit(op, inputs, attrs, n === 'variadic' ? 1 : n, span);
  }

  /** Indexing and slicing. */
  index(x: Value, items: IndexItem[], span: Span): Value {
    return this.op('index', [x], { items: items.map((i) => ({ ...i })) }, span);
  }

  /** Top-k along `dim`: [values, indices]. */
  topk(x: Value, k: number, dim: number, span: Span): [Value, Value] {
    const [values, indices] = this.emit('topk', [x], { k, dim }, 2, span);
    return [values!, indices!];
  }

  /** Apply a module to new inputs; one result per module output (one when the tree is unknown). */
  callModule(path: string, args: Value[], span: Span): Value[] {
    const n = Math.max(1, this.tree?.modules.get(path)?.outputs.length ?? 1);
    return this.emit('call_module', args, { path }, n, span);
  }

  /** Replace a module boundary value (or its slice `items`) with `value`, broadcast. */
  set(path: string, port: 'output' | 'input', index: number, items: IndexItem[] | null, value: Value, span: Span): void {
    this.emit('set', [value], { path, port, index, items: items === null ? null : items.map((i) => ({ ...i })) }, 0, span);
    const key = this.valueKey(path, port, index);
    this.sets.set(key, (this.sets.get(key) ?? 0) + 1);
  }

  /** Send `value` back to the user under `name`. */
  save(value: Value, name: string, span: Span): void {
    this.emit('save', [value], { name }, 0, span);
  }

  private version(path: string, port: 'output' | 'input', index: number): number {
    return this.sets.get(this.valueKey(path, port, index)) ?? 0;
  }

  /**
   * What sets are counted by: the model value behind the boundary when the tree knows it, so
   * a set under one name (`ln_2.output`) also versions reads under another (`mlp.input`).
   */
  private valueKey(path: string, port: 'output' | 'input', index: number): string {
    const m = this.tree?.modules.get(path);
    const bv = (port === 'output' ? m?.outputs : m?.inputs)?.[index];
    return bv ? `value\u0000${bv.name}` : refKey(path, port, index);
  }

  private emit<K extends OpName>(op: K, inputs: Value[], attrs: OpAttrs[K], n: number, span: Span): Value[] {
    return this.graph.add(new Node(op, inputs, attrs, n, this.scope, span)).results;
  }
}

function refKey(path: string, port: string, index: number): string {
  return `${path}\u0000${port}\u0000${index}`;
}

function flatten(v: number | NestedNumbers, depth: number, shape: number[], data: number[], span: Span): void {
  if (typeof v === 'number') {
    if (depth !== shape.length) throw ragged(span);
    data.push(v);
    return;
  }
  if (depth === shape.length) {
    if (data.length > 0) throw ragged(span);
    shape.push(v.length);
  } else if (shape[depth] !== v.length) {
    throw ragged(span);
  }
  for (const x of v) flatten(x, depth + 1, shape, data, span);
}

function ragged(span: Span): NnsError {
  return new NnsError('ragged-literal', 'a tensor literal must be rectangular (every row the same length)', { span });
}
