/**
 * The intervention IR: a list of {@link Node}s in program order, each producing zero or
 * more {@link Value}s, grouped into batch-row {@link Scope}s (one per `invoke`, plus one
 * for the whole batch). Identity is by object; names matter only when printing or
 * serializing. Every node carries the {@link Span} of the script text (or TS call site)
 * it came from, so errors raised deep in a pass point at the user's source.
 *
 * Semantics follow NNsight: module references read the module's value during the one
 * forward pass; `set` replaces it for everything downstream; values flow freely between
 * scopes (a value from one invoke may be used in another).
 * @module
 */
import type { Span } from '../src/errors.js';
import type { Dim, DType } from '../src/model/types.js';
import type { OpAttrs, OpName } from './ops.js';

export type { Dim, DType, Span };

/** dtype plus symbolic shape; `shape === null` when the rank is unknown (before inference). */
export interface TensorType {
  dtype: DType;
  shape: Dim[] | null;
}

/** One item of an index expression, numpy/PyTorch style. */
export type IndexItem =
  | { kind: 'index'; index: number }
  | { kind: 'slice'; start?: number; stop?: number; step?: number }
  | { kind: 'ellipsis' }
  | { kind: 'newaxis' };

export type { OpAttrs, OpName } from './ops.js';

/** A batch-row range: one per `invoke`, and one covering the whole batch. */
export interface Scope {
  /** Index of this scope in `Graph.scopes`. */
  id: number;
  /** First batch row (inclusive). */
  rowStart: number;
  /** Last batch row (exclusive). */
  rowEnd: number;
  /** Token ids of this invoke's prompt (before padding); absent for the whole-batch scope. */
  tokens?: number[];
  /** The prompt text, when it was given as text. */
  prompt?: string;
  /** Span of the `invoke`/`trace` header. */
  span?: Span;
}

let nextId = 1;

/** An SSA value: produced by exactly one node, used by any number. */
export class Value {
  /** Unique id (stable within a process; used by the printer only as a fallback). */
  readonly id = nextId++;
  /** Producer. */
  readonly producer: Node;
  /** Which result of the producer. */
  readonly resultIndex: number;
  /** Inferred type (set by the type-inference pass, or by the builder when obvious). */
  type: TensorType | null = null;
  /** A user-facing name, if the script bound one (`h2`). */
  name?: string;
  /** Nodes using this value (kept in sync by Node). */
  readonly uses = new Set<Node>();

  constructor(producer: Node, resultIndex: number) {
    this.producer = producer;
    this.resultIndex = resultIndex;
  }

  /** Rewire every use of this value to `other`, except in the nodes of `except`. */
  replaceAllUsesWith(other: Value, except: ReadonlySet<Node> = new Set()): void {
    for (const user of [...this.uses]) {
      if (except.has(user)) continue;
      user.inputs = user.inputs.map((v) => (v === this ? other : v));
    }
  }
}

/** One operation. */
export class Node<K extends OpName = OpName> {
  readonly id = nextId++;
  readonly op: K;
  attrs: OpAttrs[K];
  /** Scope (batch rows) this node belongs to. */
  scope: number;
  span: Span;
  readonly results: Value[];
  private _inputs: Value[] = [];

  constructor(op: K, inputs: Value[], attrs: OpAttrs[K], nResults: number, scope: number, span: Span) {
    this.op = op;
    this.attrs = attrs;
    this.scope = scope;
    this.span = span;
    this.inputs = inputs;
    this.results = Array.from({ length: nResults }, (_, i) => new Value(this as Node, i));
  }

  get inputs(): Value[] {
    return this._inputs;
  }

  set inputs(vs: Value[]) {
    for (const v of this._inputs) v.uses.delete(this as Node);
    this._inputs = [...vs];
    for (const v of this._inputs) v.uses.add(this as Node);
  }

  /** The single result (throws when the node has none or several). */
  get result(): Value {
    if (this.results.length !== 1) throw new Error(`internal: ${this.op} has ${this.results.length} results`);
    return this.results[0]!;
  }

  /** Narrow to a specific op. */
  is<Q extends OpName>(op: Q): this is Node<Q> {
    return (this.op as OpName) === op;
  }

  /** Detach from inputs (before removal from the graph). */
  drop(): void {
    this.inputs = [];
  }
}

/** The whole intervention program for one trace. */
export class Graph {
  /** Nodes in program order (a valid topological order of the IR). */
  nodes: Node[] = [];
  /** Scopes; `scopes[0]` is the whole batch. */
  scopes: Scope[] = [];
  /** Values of symbolic dims known for this trace (`{ sequence: 8 }`), for range checks. */
  dimValues: Record<string, number> = {};
  /**
   * Every run of a script statement, in program order (a statement in a loop runs once per
   * iteration): its span. The unit rewritten models group, name and document inserted nodes by.
   */
  statements: Span[] = [];
  /** The statement run (index into {@link statements}) each node was built by, where known. */
  statementOf = new Map<Node, number>();

  /** Append a node. */
  add<K extends OpName>(node: Node<K>): Node<K> {
    this.nodes.push(node as Node);
    return node;
  }

  /** Remove nodes (they must have no remaining uses). */
  remove(dead: ReadonlySet<Node>): void {
    for (const n of dead) n.drop();
    this.nodes = this.nodes.filter((n) => !dead.has(n));
  }

  /** Total batch rows. */
  get batch(): number {
    return this.scopes[0]?.rowEnd ?? 1;
  }
}

/** Operations whose value depends on the node's scope (they read that scope's batch rows). */
export const ROW_OPS: ReadonlySet<OpName> = new Set<OpName>(['module.output', 'module.input', 'model.output']);

/**
 * Single-result computational operations, built with `Builder.op`: everything except
 * sources, effects and multi-result operations (`topk`, `call_module`).
 */
export type PureOp = Exclude<
  OpName,
  'module.output' | 'module.input' | 'model.output' | 'param' | 'host' | 'const' | 'topk' | 'call_module' | 'set' | 'save'
>;

/** A literal: nested arrays of numbers (rectangular). */
export type NestedNumbers = ReadonlyArray<number | NestedNumbers>;

/** Every dtype name, for validation. */
export const DTYPES: ReadonlySet<DType> = new Set<DType>([
  'float32', 'float16', 'bfloat16', 'float64',
  'int64', 'int32', 'int16', 'int8', 'uint8', 'uint16', 'uint32', 'uint64', 'bool',
]);

/** A module path in the script's form: `transformer.h.3.mlp` → `transformer.h[3].mlp`. */
export function scriptPath(path: string): string {
  return path === '' ? 'model' : path.replace(/\.(-?\d+)(?=\.|$)/g, '[$1]');
}
