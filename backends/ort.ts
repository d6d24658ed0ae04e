/**
 * Local execution with onnxruntime-node: sessions created from a graph file next to its
 * weights, cached by path and options under an LRU bound, and runs that fetch only the
 * outputs asked for.
 *
 * Defaults, chosen from measurements on this 2-core machine (numbers on
 * {@link OrtSessionOptions}): prepacking off, `graphOptimizationLevel: 'all'`, intra-op
 * threads = ORT's default (one per physical core), sequential execution, warnings silenced.
 *
 * Works in worker threads: the only state is per {@link OrtBackend} instance, and
 * onnxruntime-node's addon can be loaded in several threads of one process.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { decodeModel, encodeModel } from '../src/onnx/serde.js';
import { tensorDataBytes } from '../src/onnx/proto.js';
import { modelError, NnsError } from '../src/errors.js';
import { trimNativeHeap, trimNativeHeapSoon } from './malloc-trim.js';
import type { DType } from '../src/model/types.js';
import type { Tensor, TensorData } from '../src/tensor.js';

/**
 * Options of one session.
 *
 * Measured with onnxruntime-node 1.30 on this 2-core AMD EPYC VM while other jobs kept the
 * load average at 3–5 (so medians are noisy; minimums in parentheses). Sessions created from
 * a graph file next to an external weights file; create = `InferenceSession.create`, run =
 * one forward pass fetching `logits`.
 *
 * | model | options | create (median) | run median (min) |
 * |---|---|---|---|
 * | gpt2-facts (0.6 M params), T=8 | defaults | 84 ms | 0.9 ms (0.5) |
 * | gpt2-facts | `prepack: true` | 98 ms | 0.9 ms (0.5) |
 * | gpt2-facts | `optimization: 'disabled'` | 42 ms | 1.1 ms (0.6) |
 * | GPT-2-small shape (124 M, bench/gpt2-model.ts), T=128 | defaults | 170 ms | 275 ms (222) |
 * | GPT-2-small | `prepack: true` | 0.6 s (2–3 s when uncached, onnx-notes.md) | 221 ms (190) |
 * | GPT-2-small | `threads: 1` | 106 ms | 390 ms (381) |
 * | GPT-2-small | `optimization: 'disabled'` | 89 ms | 314 ms (202) |
 * | GPT-2-small | `optimization: 'basic'` | 186 ms | 250 ms (240) |
 * | GPT-2-small | `optimization: 'extended'` | 129 ms | 249 ms (216) |
 *
 * So: two intra-op threads (ORT's default here) run 1.4–1.7× faster than one; prepacking buys
 * ~1.2–1.45× run speed for up to seconds of creation per session (and a private copy of the
 * packed weights per session), so it is off by default — interventions create a session per
 * rewritten graph and often run it a few times only; turn it on for long runs over one graph
 * (generation, big batches). Optimization levels differ by less than the noise on GPT-2;
 * `'all'` is kept (fusions of attention/GELU/LayerNorm on exported transformers).
 */
export interface OrtSessionOptions {
  /** Let ORT prepack weights (faster runs on big models, slow creation). Default false. */
  prepack?: boolean;
  /**
   * onnxruntime's CPU memory arena (default true). The arena keeps every buffer a run
   * allocated for the session's next runs and never gives memory back while the session
   * lives; off, each run allocates and frees its own (src/fast/segments.ts: segment sessions).
   */
  arena?: boolean;
  /**
   * onnxruntime's memory patterns (default true): after a run, the session plans one block
   * for all of a run's intermediate values at those input shapes and allocates it whole in
   * the next runs. With the arena on, that block comes on top of the first run's buffers,
   * which the arena keeps.
   */
  memPattern?: boolean;
  /**
   * Whether the intra-op threads spin between parallel sections (default: the process-wide
   * setting, {@link setIntraOpSpinning}). Off for sessions that run many short runs back to
   * back beside other sessions (src/fast/segments.ts): a spinning thread burns a core while
   * the other does the serial parts, which on 2 cores cost the sweep's segment chain up to
   * 2× the CPU time of its work.
   */
  spinning?: boolean;
  /** Graph optimization level. Default `'all'`. */
  optimization?: 'all' | 'disabled' | 'basic' | 'extended';
  /** Intra-op threads; 0 or undefined = ORT's default (one per physical core). */
  threads?: number;
  /**
   * Create the session from the graph's bytes with external data resolved against this
   * folder (`LoadedModel.externalDataDir`), instead of against the graph file's folder.
   */
  externalDataDir?: string;
  /**
   * Keep this session out of LRU eviction (the instrumented model's one session, which every
   * fast-path trace uses); it is released only by {@link OrtBackend.release}, or by a
   * conflicting session of its weights group when the backend is exclusive. Not part of the cache key.
   */
  pinned?: boolean;
  /**
   * The weights group of the session (default `'model'`: graphs over the model's whole
   * weights file). With {@link OrtBackendOptions.exclusive}, sessions of one group never
   * hold two copies of the weights: see there. Module models over a disjoint subset of the
   * weights (the tail, src/fast/tail.ts) have groups of their own. Not part of the cache key.
   */
  group?: string;
  /**
   * The graph reads the whole model's weights, those of every other group included (a
   * compiled variant: a spliced copy of the model graph holds the tail's `lm_head` that a
   * module model's group holds too). With {@link OrtBackendOptions.exclusive} it then
   * conflicts with every group, not only its own (see there). Not part of the cache key.
   */
  whole?: boolean;
}

/** Options of an {@link OrtBackend}. */
export interface OrtBackendOptions {
  /** Most sessions kept open; the least recently used one is released beyond it. Default 8. */
  maxSessions?: number;
  /** Defaults for every session of this backend. */
  defaults?: OrtSessionOptions;
  /**
   * One copy of the weights per group (default false). A prepacked session holds a private
   * packed copy of the weights, and onnxruntime releases its mapping of the weights file; an
   * unprepacked session maps the file, and all of them share its pages. So a new prepacked
   * session releases every idle session of its group, and a new unprepacked one releases
   * the group's idle prepacked session (pinned or not: it is recreated when asked for
   * again), and physical memory stays at about one copy of the weights
   * (bench/README.md, `peak_pss_mb`). Sessions running are never released.
   *
   * A prepacked session released that way is not rebuilt at its next request: alternating
   * graphs (fast-path and compiled traces, clean and steered generation steps, a sweep's
   * segments) would rebuild it at every switch (seconds each on a big model). Until its graph
   * has been asked for {@link OrtBackendOptions.reprepackAfter} times in a row (no other graph
   * of its group in between), an unprepacked *stand-in* session over the same graph serves it,
   * sharing the weights file's pages with the group's other unprepacked sessions; then the
   * prepacked one is rebuilt (releasing the idle others). The count doubles with each
   * release of that graph's prepacked session (8, 16, 32, … by default), so a strict
   * alternation costs at most one stand-in per graph and a handful of rebuilds in all.
   *
   * Groups overlap when they are the same or one side is {@link OrtSessionOptions.whole}: an
   * unprepacked whole-model session (a compiled variant) maps the tail's weights too, so it
   * releases the idle prepacked module sessions (the tail's 154 MB on GPT-2 small, anon,
   * would otherwise sit beside the same weights mapped from the file), and a new prepacked
   * module session releases the idle whole-model unprepacked ones.
   *
   * When the backend's defaults turn onnxruntime's arena off (big models, src/engine.ts), two
   * sessions that turn it on (gradient graphs) conflict too: an idle arena holds its largest
   * run's buffers, so a new such session releases the idle ones of an overlapping group
   * (recreated when asked for again: alternating two gradient graphs creates a session at every
   * switch).
   */
  exclusive?: boolean;
  /**
   * With {@link OrtBackendOptions.exclusive}: uses in a row after which a released prepacked
   * session is rebuilt (doubling with each release of it). Default 8 (prepacking pays for
   * itself after ~5–9 runs on GPT-2 small, bench/README.md).
   */
  reprepackAfter?: number;
}

/**
 * A session handed out by {@link OrtBackend.session}: callers above backends/ hold it and
 * pass it back to {@link OrtBackend.run}; only backends/ looks inside.
 */
export type OrtSession = ort.InferenceSession;

interface Entry {
  key: string;
  pinned: boolean;
  group: string;
  prepack: boolean;
  whole: boolean;
  memPattern: boolean;
  arena: boolean;
  promise: Promise<ort.InferenceSession>;
  session?: ort.InferenceSession;
  busy: number;
  evicted: boolean;
}

/**
 * A local runner: a session cache plus `run`. One per thread.
 *
 * Eviction is safe for callers holding a session: an evicted session is released only when
 * no run is using it and not before the current turn of the event loop ends (so
 * `await session(); await run()` never sees it vanish), and `run` on a session that was
 * released meanwhile transparently recreates it from its graph path and options.
 */
export class OrtBackend {
  private readonly max: number;
  private readonly defaults: OrtSessionOptions;
  private readonly exclusive: boolean;
  /** Sessions released to keep one copy of a group's weights (tests, benchmarks). */
  exclusiveReleases = 0;
  /** Sessions created (all kinds) and, of them, prepacked ones (tests, benchmarks). */
  readonly created = { sessions: 0, prepacked: 0, standIns: 0 };
  private readonly reprepackAfter: number;
  /** Prepacked sessions released to keep one copy: times released, by cache key. */
  private readonly released = new Map<string, number>();
  /** Per group: the last graph asked for (its cache key as asked) and how many times in a row. */
  private readonly streak = new Map<string, { key: string; n: number }>();
  /** Insertion order = recency order (re-inserted on use). */
  private readonly entries = new Map<string, Entry>();
  private readonly bySession = new Map<ort.InferenceSession, Entry>();
  /** How each session handed out was made, to recreate it after eviction. */
  private readonly origin = new WeakMap<ort.InferenceSession, { graphPath: string; opts: OrtSessionOptions }>();

  constructor(opts: OrtBackendOptions = {}) {
    this.max = Math.max(1, opts.maxSessions ?? 8);
    this.defaults = opts.defaults ?? {};
    this.exclusive = !!opts.exclusive;
    this.reprepackAfter = Math.max(1, opts.reprepackAfter ?? 8);
  }

  /** Number of sessions open or being created. */
  get size(): number {
    return this.entries.size;
  }

  /** The sessions open or being created: graph file, weights group, prepacked or not, whole or not, arena and memory patterns or not (tests, benchmarks). */
  liveSessions(): { graphPath: string; group: string; prepack: boolean; whole: boolean; arena: boolean; memPattern: boolean }[] {
    return [...this.entries.values()].map((e) => ({ graphPath: (JSON.parse(e.key) as string[])[0]!, group: e.group, prepack: e.prepack, whole: e.whole, arena: e.arena, memPattern: e.memPattern }));
  }

  /**
   * A session for a graph file, created once per path and options and reused.
   * @throws NnsError `ort-session` (kind `model`) with ORT's reason on one line.
   */
  session(graphPath: string, opts: OrtSessionOptions = {}): Promise<OrtSession> {
    let o = { ...this.defaults, ...opts };
    const keyOf = (x: OrtSessionOptions): string => sessionKey(graphPath, x);
    let key = keyOf(o);
    const group = o.group ?? 'model';
    if (this.exclusive) {
      const run = this.streak.get(group);
      const n = run?.key === key ? run.n + 1 : 1;
      this.streak.set(group, { key, n });
      // A whole-model graph uses every group's weights: it ends every other group's run of requests too.
      if (o.whole) for (const g of [...this.streak.keys()]) if (g !== group) this.streak.delete(g);
      // A prepacked session released to keep one copy: an unprepacked stand-in until asked for enough times in a row.
      const times = o.prepack && !this.entries.has(key) ? this.released.get(key) ?? 0 : 0;
      if (times > 0 && n < this.reprepackAfter * 2 ** (times - 1)) {
        o = { ...o, prepack: false };
        key = keyOf(o);
        if (!this.entries.has(key)) this.created.standIns++;
      }
    }
    const hit = this.entries.get(key);
    if (hit) {
      hit.pinned ||= !!o.pinned;
      this.entries.delete(key);
      this.entries.set(key, hit);
      return hit.promise;
    }
    // The released sessions' memory goes back before the new session allocates its own.
    const gone = this.exclusive ? this.releaseConflicts(group, !!o.prepack, !!o.whole, o.arena ?? true) : [];
    const made = o;
    const promise = gone.length ? Promise.all(gone).then(() => createSession(graphPath, made)) : createSession(graphPath, made);
    this.created.sessions++;
    if (o.prepack) this.created.prepacked++;
    const entry: Entry = { key, pinned: !!o.pinned, group, prepack: !!o.prepack, whole: !!o.whole, memPattern: o.memPattern ?? true, arena: o.arena ?? true, busy: 0, evicted: false, promise };
    entry.promise.then(
      (s) => {
        entry.session = s;
        this.bySession.set(s, entry);
        this.origin.set(s, { graphPath, opts });
        if (entry.evicted) this.disposeLater(entry);
      },
      () => {
        if (this.entries.get(key) === entry) this.entries.delete(key);
      },
    );
    this.entries.set(key, entry);
    this.evict();
    return entry.promise;
  }

  /**
   * Whether a session over `graphPath` with options `opts` (this backend's defaults applied)
   * is open or being created. Asks only: no request is counted, nothing is created.
   */
  isOpen(graphPath: string, opts: OrtSessionOptions = {}): boolean {
    return this.entries.has(sessionKey(graphPath, { ...this.defaults, ...opts }));
  }

  /** Whether the backend keeps one copy of each weights group ({@link OrtBackendOptions.exclusive}). */
  get exclusiveGroups(): boolean {
    return this.exclusive;
  }

  /**
   * Runs a session, fetching only `fetchNames` (all outputs when omitted), and converts the
   * results to host {@link Tensor}s (int64 as `BigInt64Array`).
   * @throws NnsError `ort-run` (kind `model`) with ORT's reason on one line.
   */
  async run(session: OrtSession, feeds: Readonly<Record<string, Tensor>>, fetchNames?: readonly string[]): Promise<Record<string, Tensor>> {
    if (fetchNames && fetchNames.length === 0) return {}; // nothing wanted: nothing to run (ORT rejects empty fetches)
    if (!this.bySession.has(session)) {
      const from = this.origin.get(session);
      if (from) session = await this.session(from.graphPath, from.opts);
    }
    const entry = this.bySession.get(session);
    if (entry) entry.busy++;
    try {
      const ortFeeds: Record<string, ort.Tensor> = {};
      for (const [k, t] of Object.entries(feeds)) ortFeeds[k] = toOrtTensor(t);
      let out: ort.InferenceSession.ReturnType;
      try {
        out = fetchNames ? await session.run(ortFeeds, [...fetchNames], { logSeverityLevel: ORT_QUIET }) : await session.run(ortFeeds, { logSeverityLevel: ORT_QUIET });
      } catch (e) {
        throw modelError('ort-run', `onnxruntime failed to run the model: ${oneLine(e)}`);
      }
      const result: Record<string, Tensor> = {};
      for (const [name, t] of Object.entries(out)) result[name] = fromOrtTensor(t);
      return result;
    } finally {
      if (entry) {
        entry.busy--;
        if (entry.evicted && entry.busy === 0) this.disposeLater(entry);
      }
    }
  }

  /**
   * With {@link OrtBackendOptions.exclusive}: releases now the idle sessions that a new session
   * with `opts` would release when created, and gives their memory back; a no-op otherwise. For
   * a caller about to allocate much before it asks for that session: compiling a gradient graph
   * (~130 MB of JS garbage on GPT-2 small) beside an idle prepacked session (a copy of the weights)
   * peaked at both (src/compiled-run.ts).
   */
  async makeRoom(opts: OrtSessionOptions = {}): Promise<void> {
    if (!this.exclusive) return;
    const o = { ...this.defaults, ...opts };
    const gone = this.releaseConflicts(o.group ?? 'model', !!o.prepack, !!o.whole, o.arena ?? true);
    if (gone.length === 0) return;
    await Promise.all(gone);
    trimNativeHeap();
  }

  /** Releases every session (or those of one graph file). Sessions running finish first. */
  async release(graphPath?: string): Promise<void> {
    const doomed = [...this.entries.values()].filter((e) => graphPath === undefined || (JSON.parse(e.key) as unknown[])[0] === graphPath);
    await Promise.all(doomed.map((e) => {
      this.entries.delete(e.key);
      e.evicted = true;
      return e.promise.then(() => this.dispose(e), () => undefined);
    }));
  }

  /**
   * Releases the idle sessions that would hold a second copy of some weights next to a new
   * session of `group`: those of an overlapping group (the same, or either side whole) when
   * either of the two is prepacked; and, when the backend's defaults turn onnxruntime's arena
   * off and both turn it on (gradient graphs, src/compiled-run.ts), the idle one, whose arena
   * keeps its largest run's buffers until it is released (GPT-2 small's gradient graph: ~90 MB
   * after its run, measured by PSS).
   */
  private releaseConflicts(group: string, prepack: boolean, whole: boolean, arena: boolean): Promise<void>[] {
    const gone: Promise<void>[] = [];
    for (const [key, e] of this.entries) {
      const overlaps = e.group === group || whole || e.whole;
            // Arenas the backend's defaults turn off, turned on by both (gradient graphs): one at a time.
      const arenas = arena && e.arena && this.defaults.arena === false;
      if (!overlaps || !(prepack || e.prepack || arenas) || !e.session || e.busy > 0) continue;
      this.entries.delete(key);
      e.evicted = true;
      this.exclusiveReleases++;
      if (e.prepack) this.released.set(key, (this.released.get(key) ?? 0) + 1);
      // Another group's run of requests ends here: its released graph starts a new count (else the
      // one graph of a module group, asked for at every trace, would be rebuilt at its next request).
      if (e.group !== group) this.streak.delete(e.group);
      gone.push(this.dispose(e).catch(() => undefined));
    }
    return gone;
  }

  private evict(): void {
    const unpinned = (): number => [...this.entries.values()].filter((e) => !e.pinned).length;
    for (const [key, e] of this.entries) {
      if (unpinned() <= this.max) break;
      if (e.pinned) continue;
      this.entries.delete(key);
      e.evicted = true;
      if (e.session) this.disposeLater(e);
    }
  }

  private disposeLater(e: Entry): void {
    setImmediate(() => void this.dispose(e).catch(() => undefined));
  }

  private async dispose(e: Entry): Promise<void> {
    if (!e.session || e.busy > 0) return;
    const s = e.session;
    e.session = undefined;
    this.bySession.delete(s);
    await s.release();
    // glibc keeps the freed pages of the session's weights and buffers: give them back (backends/malloc-trim.ts).
    trimNativeHeapSoon();
  }
}

/**
 * onnxruntime's log level for every session and run: fatal only. Its own error lines would
 * otherwise reach stderr before (and besides) the clean error onnsight reports for the same
 * failure, and its warnings (e.g. about initializers listed as graph inputs) are not the user's concern.
 */
export const ORT_QUIET = 4;
ort.env.logLevel = 'fatal';

let spinning = true;

/** The session cache's key of a graph file and options (those that make a different session). */
function sessionKey(graphPath: string, x: OrtSessionOptions): string {
  return JSON.stringify([graphPath, !!x.prepack, x.optimization ?? 'all', x.threads ?? 0, x.externalDataDir ?? '', x.arena ?? true, x.spinning ?? spinning, x.memPattern ?? true]);
}

/**
 * Process-wide, for sessions created from now on: whether onnxruntime's intra-op threads
 * spin while they wait for work (onnxruntime's default, kept for local runs: lowest latency
 * when runs follow each other). `nns serve`'s job worker turns it off: between two jobs its
 * threads would spin for milliseconds, burning cores the server's HTTP process and the
 * other jobs need (measured on gpt2-facts: ~6 ms of CPU per trace in two spinning threads,
 * more than the trace itself).
 */
export function setIntraOpSpinning(on: boolean): void {
  spinning = on;
}

/** ORT session options for onnsight options. */
export function ortSessionOptions(o: OrtSessionOptions): ort.InferenceSession.SessionOptions {
  const session: Record<string, string> = {};
  if (!o.prepack) session.disable_prepacking = '1';
  if (!(o.spinning ?? spinning)) session['intra_op.allow_spinning'] = '0';
  if (o.externalDataDir) session.model_external_initializers_file_folder_path = o.externalDataDir;
  return {
    graphOptimizationLevel: o.optimization ?? 'all',
    executionMode: 'sequential',
    logSeverityLevel: ORT_QUIET,
    ...(o.threads ? { intraOpNumThreads: o.threads } : {}),
    ...(o.arena === false ? { enableCpuMemArena: false } : {}),
    ...(o.memPattern === false ? { enableMemPattern: false } : {}),
    extra: { session },
  };
}

/** Graph files up to this size (weights external) are reordered by {@link biggestWeightsFirst} before a prepacked session: 64 MiB. */
export const PACK_FIRST_GRAPH_BYTES = 2 ** 26;

/** Weights from which {@link biggestWeightsFirst} moves their readers to the front: 16 MiB. */
export const PACK_FIRST_BYTES = 2 ** 24;

/**
 * The graph with the `MatMul`/`Gemm` nodes that read the biggest constant weights (at least
 * `minBytes`, default {@link PACK_FIRST_BYTES}) moved to the front of its node list, biggest
 * first; null when it has none (nothing to gain). For onnxruntime only, never written to a file: the ONNX format
 * wants nodes in topological order, onnxruntime sorts them itself for execution (results bit
 * for bit the same) but prepacks weights in node-list order.
 *
 * Why: while a prepacked session is created, each weight's pages are read from the weights
 * file (mapped) into its packed copy, and the mapping goes when the packing is done. The
 * unembedding comes last in a transformer, so it was packed when every other weight already
 * had its packed copy: the creation peaked at all the packed weights *plus* the unembedding's
 * mapped pages (154 MB on GPT-2 small). Packed first, its pages come and go beside nothing
 * else; the peak is the packed weights plus the next-biggest weight's pages. Measured on GPT-2
 * small's with-past model (onnxruntime alone, one creation each, sampled every 20 ms): 657 /
 * 658 MB in graph order, 513 / 520 MB biggest first.
 */
export function biggestWeightsFirst(bytes: Uint8Array, minBytes = PACK_FIRST_BYTES): Uint8Array | null {
  const model = decodeModel(bytes);
  const g = model.graph;
  if (!g?.node?.length) return null;
  const size = new Map((g.initializer ?? []).map((t) => [t.name!, tensorDataBytes(t)]));
  const weight = (n: { op_type?: string; domain?: string; input?: string[] }): number =>
    (n.op_type === 'MatMul' || n.op_type === 'Gemm') && !n.domain ? Math.max(0, ...(n.input ?? []).map((x) => size.get(x) ?? 0)) : 0;
  const first = g.node.filter((n) => weight(n) >= minBytes).sort((a, b) => weight(b) - weight(a));
  if (!first.length) return null;
  const moved = new Set(first);
  g.node = [...first, ...g.node.filter((n) => !moved.has(n))];
  return encodeModel(model);
}

async function createSession(graphPath: string, o: OrtSessionOptions): Promise<ort.InferenceSession> {
  if (!fs.existsSync(graphPath)) throw modelError('model-not-found', `model file not found: ${graphPath}`);
  try {
    // Prepacked: the biggest weights packed first (see biggestWeightsFirst), from the graph's bytes.
    let packFirst: Uint8Array | null = null;
    try {
      // Only for graphs whose weights are external (a small file): decoding and encoding a
      // graph with its weights inline would hold them twice more in this process.
      packFirst = o.prepack && fs.statSync(graphPath).size <= PACK_FIRST_GRAPH_BYTES ? biggestWeightsFirst(fs.readFileSync(graphPath)) : null;
    } catch {
      packFirst = null; // not a graph this reader takes: onnxruntime says why below
    }
    if (packFirst) return await ort.InferenceSession.create(packFirst, ortSessionOptions({ ...o, externalDataDir: o.externalDataDir ?? path.dirname(path.resolve(graphPath)) }));
    if (o.externalDataDir) return await ort.InferenceSession.create(fs.readFileSync(graphPath), ortSessionOptions(o));
    return await ort.InferenceSession.create(graphPath, ortSessionOptions(o));
  } catch (e) {
    if (e instanceof NnsError) throw e;
    throw modelError('ort-session', `onnxruntime cannot load ${graphPath}: ${oneLine(e)}`);
  }
}

/** ORT's message on one line, without its `[ONNXRuntimeError] : 1 : FAIL :` prefix and source locations. */
export function oneLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  return msg
    .replace(/\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*/g, '')
    .replace(/\b[\w/.-]+\.(cc|h|cpp):\d+\s+(\w+(::\w+)*(\([^()]*\))?\s+)?/g, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
}

const DTYPES: Record<string, DType> = {
  float32: 'float32', float16: 'float16', float64: 'float64', int64: 'int64', int32: 'int32', int16: 'int16',
  int8: 'int8', uint8: 'uint8', uint16: 'uint16', uint32: 'uint32', uint64: 'uint64', bool: 'bool',
};

/** Converts an ORT CPU tensor to a host tensor (the data array is shared, not copied). */
export function fromOrtTensor(t: ort.Tensor): Tensor {
  const dtype = DTYPES[t.type];
  if (!dtype) throw modelError('ort-dtype', `model output of type ${t.type} is not supported`);
  return { dtype, shape: [...t.dims], data: t.data as TensorData };
}

/** Converts a host tensor to an ORT tensor (the data array is shared, not copied). */
export function toOrtTensor(t: Tensor): ort.Tensor {
  const type = t.dtype === 'bfloat16' ? undefined : t.dtype;
  if (!type) throw modelError('ort-dtype', `cannot feed a ${t.dtype} tensor to onnxruntime-node`);
  return new ort.Tensor(type, t.data as ort.Tensor.DataTypeMap[typeof type], [...t.shape]);
}
