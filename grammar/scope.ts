/**
 * Name environments of the lowering: what a name means at one point of a trace. A trace
 * has one environment shared by its invokes (a name bound in an earlier invoke is visible
 * in later ones); each loop iteration opens a child environment, so names bound in a loop
 * body belong to that iteration.
 * @module
 */
import type { Value } from '../ir/ir.js';
import type { Span } from '../src/errors.js';

/** What a name is bound to. */
export type Binding =
  /** A tensor value of the IR. */
  | { kind: 'value'; value: Value; span: Span }
  /** A loop variable: a compile-time integer. */
  | { kind: 'int'; value: number; span: Span }
  /** The two results of `topk` (use `.values` / `.indices`). */
  | { kind: 'topk'; values: Value; indices: Value; span: Span }
  /** A name whose definition failed (already reported); uses are silently skipped. */
  | { kind: 'poison'; span: Span };

/** A chain of scopes mapping names to bindings. */
export class Env {
  private readonly vars = new Map<string, Binding>();

  constructor(readonly parent?: Env) {}

  /** The binding of `name` here or in an enclosing scope. */
  lookup(name: string): Binding | undefined {
    return this.vars.get(name) ?? this.parent?.lookup(name);
  }

  /** Bind `name` in this scope. */
  bind(name: string, b: Binding): void {
    this.vars.set(name, b);
  }

  /** Every visible name (for suggestions). */
  names(): string[] {
    return [...this.vars.keys(), ...(this.parent?.names() ?? [])];
  }
}

/**
 * Thrown inside the lowering of one statement when it uses a poisoned name: the
 * statement is abandoned without a new diagnostic (the cause was already reported).
 */
export class Poisoned extends Error {
  constructor() {
    super('poisoned');
    this.name = 'Poisoned';
  }
}
