/**
 * The structural compile cache: the compiled half of a trace (ONNX pipeline, encoding,
 * variant file) keyed by the *structure* of its IR after the IR pipeline, with literals
 * lifted to host inputs (passes/lift-constants.ts) and token ids left out (they are feeds).
 *
 * What the key holds: every node's op, scope, inputs (by order of appearance), attributes
 * in catalogue order, result types (symbolic dims such as `sequence` stay symbolic), and
 * every scope's batch rows, and the variant settings (`keepModelOutputs`: run variants drop
 * the model outputs no save needs, so they never share an entry with full variants). What it leaves out: tokens, prompts, spans, bound names and
 * `dimValues` (the prompt length) — so another prompt of another length reuses the graph.
 * Range checks that depend on the prompt length ran in the IR pipeline already.
 *
 * The in-memory cache is per model and LRU-bounded; rewritten graphs on disk are keyed by
 * their content (`nns-<sha256>.onnx` next to the weights) and are shared across processes.
 * @module
 */
import crypto from 'node:crypto';
import type { Graph, Value } from '../ir/ir.js';
import { OP_SCHEMA } from '../ir/ops.js';
import { numbersKey, stableStringify } from '../ir/key.js';

/** What a compiled structure needs to run: its graph file and its input/output names. */
export interface CompiledEntry {
  /** The structural key. */
  readonly key: string;
  /** Rewritten graph file (next to the model's weights). */
  readonly graphPath: string;
  /** Save name → graph output name. */
  readonly saved: ReadonlyMap<string, string>;
  /** Host value name → graph input name. */
  readonly hostInputs: ReadonlyMap<string, string>;
  /** Times this entry was used (1 after the compile that made it). */
  uses: number;
}

/** JSON with `-0`, NaN and ±Infinity kept distinct. */
const stable = stableStringify;

/** Compile settings that change the variant a structure compiles to (part of the key). */
export interface VariantSettings {
  /** `CompileState.keepModelOutputs` (default true); run variants drop unsaved model outputs. */
  keepModelOutputs?: boolean;
}

/** The canonical text the structural key hashes (exported for tests and debugging). */
export function structuralText(ir: Graph, settings: VariantSettings = {}): string {
  const ids = new Map<Value, number>();
  const id = (v: Value): number => {
    let n = ids.get(v);
    if (n === undefined) ids.set(v, (n = ids.size));
    return n;
  };
  const lines = [`scopes ${stable(ir.scopes.map((s) => [s.rowStart, s.rowEnd]))}`];
  if (settings.keepModelOutputs === false) lines.unshift('variant saves-only');
  for (const n of ir.nodes) {
    const attrs = n.attrs as unknown as Record<string, unknown>;
    const a = OP_SCHEMA[n.op].attrs.map(([k]) => (k === 'data' && n.op === 'const' ? dataKey(attrs[k] as number[]) : attrs[k] ?? null));
    const ins = n.inputs.map(id);
    const outs = n.results.map((r) => [id(r), r.type ? [r.type.dtype, r.type.shape] : null]);
    lines.push(stable([n.op, n.scope, ins, a, outs]));
  }
  return lines.join('\n');
}

/**
 * The key of a literal's data: its JSON when every number is finite and not −0 (what
 * JSON keeps exactly, and fast), else its bytes — as lossless as {@link stableStringify}.
 */
function dataKey(data: readonly number[] | undefined): string | null {
  if (!data) return null;
  for (const x of data) if (!Number.isFinite(x) || Object.is(x, -0)) return `#bytes:${numbersKey(data)}`;
  return JSON.stringify(data);
}

/** sha256 (hex, 32 chars) of {@link structuralText}. */
export function structuralKey(ir: Graph, settings: VariantSettings = {}): string {
  return crypto.createHash('sha256').update(structuralText(ir, settings)).digest('hex').slice(0, 32);
}

/** Options of a {@link CompileCache}. */
export interface CompileCacheOptions {
  /** Most entries kept (least recently used dropped beyond). Default 64. */
  maxEntries?: number;
}

/** An LRU map from structural key to {@link CompiledEntry}, with hit/miss counters. */
export class CompileCache {
  private readonly max: number;
  private readonly entries = new Map<string, CompiledEntry>();
  /** Lookups that found an entry. */
  hits = 0;
  /** Lookups that did not. */
  misses = 0;

  constructor(opts: CompileCacheOptions = {}) {
    this.max = Math.max(1, opts.maxEntries ?? 64);
  }

  /** Number of entries. */
  get size(): number {
    return this.entries.size;
  }

  /** Whether `key` has an entry (no hit or miss counted, recency unchanged). */
  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The entry for `key` (marked most recently used), counting a hit or a miss. */
  get(key: string): CompiledEntry | undefined {
    const e = this.entries.get(key);
    if (!e) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e;
  }

  /** Stores an entry, dropping the least recently used beyond the bound. */
  set(e: CompiledEntry): void {
    this.entries.delete(e.key);
    this.entries.set(e.key, e);
    for (const k of this.entries.keys()) {
      if (this.entries.size <= this.max) break;
      this.entries.delete(k);
    }
  }

  /** The graph files of the entries, least recently used first. */
  graphPaths(): string[] {
    return [...this.entries.values()].map((e) => e.graphPath);
  }

  /** Forgets every entry (files on disk stay). */
  clear(): void {
    this.entries.clear();
  }
}

const caches = new WeakMap<object, CompileCache>();

/** The compile cache of one model context (created on first use). */
export function compileCacheOf(owner: object, opts?: CompileCacheOptions): CompileCache {
  let c = caches.get(owner);
  if (!c) caches.set(owner, (c = new CompileCache(opts)));
  return c;
}
