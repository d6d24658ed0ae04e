/**
 * The IR builder of one generation step. For a model with a cache, a step's pass covers
 * exactly the positions of that step (the prompt at step 0, the one new token after), so it
 * is the ordinary {@link Builder}. For a model without a cache, step s ≥ 1 recomputes the
 * whole sequence; the builder then gives the step's statements a *window*: every module
 * reference and model output reads only the step's positions along its sequence axis, and
 * every `set` writes only there (its own index items are taken relative to the window). So
 * a step's statements see the same shapes and positions as with a cache.
 * @module
 */
import { Builder, type BuilderOptions } from '../../ir/builder.js';
import type { IndexItem, Value } from '../../ir/ir.js';
import { NnsError, type Span } from '../errors.js';
import type { Dim, ModuleTree } from '../model/types.js';

/** The positions a step's statements see: `start <= t < stop` along each value's sequence axis. */
export interface StepWindow {
  start: number;
  stop: number;
}

/** The axis of `shape` holding the symbolic sequence length (the first one), or -1. */
export function sequenceAxis(shape: readonly Dim[] | null | undefined): number {
  return shape ? shape.findIndex((d) => d === 'sequence') : -1;
}

/** A builder that confines module references and sets to a {@link StepWindow} (when given). */
export class StepBuilder extends Builder {
  constructor(opts: BuilderOptions & { tree: ModuleTree }, private readonly window?: StepWindow) {
    super(opts);
    this.treeRef = opts.tree;
  }

  private readonly treeRef: ModuleTree;

  private shapeOf(path: string, port: 'output' | 'input' | 'graph', index: number, name?: string | null): readonly Dim[] | null | undefined {
    if (port === 'graph') {
      const outs = this.treeRef.graphOutputs;
      return (name == null ? outs[0] : outs.find((o) => o.name === name))?.sig?.shape;
    }
    const m = this.treeRef.modules.get(path);
    return (port === 'output' ? m?.outputs : m?.inputs)?.[index]?.sig?.shape;
  }

  private axis(what: string, shape: readonly Dim[] | null | undefined, span: Span): number {
    const ax = sequenceAxis(shape);
    if (ax < 0) {
      throw new NnsError('generate-recompute', `${what} has no sequence axis, so a step of a model without a key/value cache cannot tell which of its positions belong to the step`, { span, notes: ['export the model with a cache (the Optimum "with past" layout) to use this value during generation'] });
    }
    return ax;
  }

  private windowed(v: Value, ax: number, span: Span): Value {
    const items: IndexItem[] = [];
    for (let a = 0; a < ax; a++) items.push({ kind: 'slice' });
    items.push({ kind: 'slice', start: this.window!.start, stop: this.window!.stop });
    return this.index(v, items, span);
  }

  override moduleOutput(path: string, index: number, span: Span): Value {
    const v = super.moduleOutput(path, index, span);
    if (!this.window) return v;
    return this.windowed(v, this.axis(`${path || 'the model'}'s output ${index}`, this.shapeOf(path, 'output', index), span), span);
  }

  override moduleInput(path: string, index: number, span: Span): Value {
    const v = super.moduleInput(path, index, span);
    if (!this.window) return v;
    return this.windowed(v, this.axis(`${path || 'the model'}'s input ${index}`, this.shapeOf(path, 'input', index), span), span);
  }

  override modelOutput(name: string | null, span: Span): Value {
    const v = super.modelOutput(name, span);
    if (!this.window) return v;
    return this.windowed(v, this.axis(`the model output ${name ?? ''}`.trim(), this.shapeOf('', 'graph', 0, name), span), span);
  }

  override set(path: string, port: 'output' | 'input', index: number, items: IndexItem[] | null, value: Value, span: Span): void {
    if (!this.window) return super.set(path, port, index, items, value, span);
    const shape = this.shapeOf(path, port, index);
    const ax = this.axis(`${path}'s ${port} ${index}`, shape, span);
    super.set(path, port, index, windowItems(items, shape!.length, ax, this.window, span), value, span);
  }

  /** A set at absolute positions (no window): replays of earlier steps' values. */
  rawSet(path: string, port: 'output' | 'input', index: number, items: IndexItem[] | null, value: Value, span: Span): void {
    super.set(path, port, index, items, value, span);
  }
}

/** Python's `slice.indices(n)` for a step's slice. */
function sliceIndices(it: { start?: number; stop?: number; step?: number }, n: number): [number, number, number] {
  const step = it.step ?? 1;
  const clamp = (x: number | undefined, dflt: number, lo: number, hi: number): number => {
    if (x === undefined) return dflt;
    const y = x < 0 ? x + n : x;
    return Math.min(Math.max(y, lo), hi);
  };
  return step > 0 ? [clamp(it.start, 0, 0, n), clamp(it.stop, n, 0, n), step] : [clamp(it.start, n - 1, -1, n - 1), clamp(it.stop, -1, -1, n - 1), step];
}

/**
 * Index items of a set inside a window, rewritten to absolute positions: the item on the
 * sequence axis is shifted by the window start (an index is range-checked against the
 * window), a missing one becomes the window itself.
 */
export function windowItems(items: IndexItem[] | null, rank: number, ax: number, w: StepWindow, span: Span): IndexItem[] {
  const n = w.stop - w.start;
  const src = items ?? [];
  const real = src.filter((i) => i.kind === 'index' || i.kind === 'slice').length;
  const out: IndexItem[] = [];
  let axis = 0;
  let done = false;
  const shift = (it: IndexItem): IndexItem => {
    if (it.kind === 'index') {
      if (it.index < -n || it.index >= n) throw new NnsError('index-out-of-range', `index ${it.index} is out of range for the ${n} position(s) of this step`, { span });
      return { kind: 'index', index: w.start + (it.index < 0 ? it.index + n : it.index) };
    }
    if (it.kind !== 'slice') return it;
    const [a, b, c] = sliceIndices(it, n);
    const stop = w.start + b;
    return { kind: 'slice', start: w.start + a, ...(stop >= 0 ? { stop } : {}), step: c };
  };
  for (const it of src) {
    if (it.kind === 'ellipsis') {
      for (let k = 0; k < rank - real; k++, axis++) {
        if (axis === ax) {
          out.push({ kind: 'slice', start: w.start, stop: w.stop });
          done = true;
        } else out.push({ kind: 'slice' });
      }
      continue;
    }
    if (it.kind === 'newaxis') {
      out.push(it);
      continue;
    }
    if (axis === ax) {
      out.push(shift(it));
      done = true;
    } else out.push(it);
    axis++;
  }
  if (!done) {
    for (; axis < ax; axis++) out.push({ kind: 'slice' });
    out.push({ kind: 'slice', start: w.start, stop: w.stop });
  }
  return out;
}
