/**
 * Tiered sessions: a graph first runs on a session that is fast to create (no weight
 * prepacking, on the JS thread, from the model's {@link OrtBackend}); once the same graph
 * has been used `promoteAfter` times, a prepacked session — slow to create, faster to run —
 * is built in a worker thread ({@link WorkerBackend}), starting after that run, while runs
 * continue on the fast session; it is swapped in when ready and the fast session released.
 *
 * Every session, in either tier, is created from the same graph file next to the model's
 * one external weights file, so weights are never duplicated on disk and share the page
 * cache; prepacked sessions hold a private packed copy, so they are LRU-bounded
 * (`maxPrepacked`), and an evicted one is released inside the worker and its graph goes
 * back to the fast tier.
 *
 * Measured on this 2-core VM, GPT-2-small shape (bench/gpt2-model.ts), T=128, fetching
 * the full logits (25.7 MB), while other jobs kept the load average at 6–8 (medians, mins):
 * fast session create 0.22 s, run 870 ms (504); prepacked create 0.7 s on the JS thread
 * with a warm page cache, 1.3–3.9 s in the worker; prepacked run 468 ms (418) on the JS
 * thread, 555 ms (442) through the worker, of which 11 ms (1) is the worker round trip
 * with the result transferred. Prepacked results differ from fast ones by ≤ 2e-9 on
 * gpt2-facts probabilities (not bit-identical). Memory (PSS, /proc/self/smaps_rollup):
 * weights are memory-mapped and shared by every session (file pages counted once), a fast
 * session adds ~130–230 MB of arena at batch 4, a prepacked one ~490 MB of packed weights
 * at creation. So the tier pays off for graphs run many times, from the third use on, at
 * ~0.5 GB per prepacked session; `tiered: false` or `ONNSIGHT_TIERED=0` turns it off.
 * @module
 */
import type { Tensor } from '../src/tensor.js';
import { OrtBackend, type OrtSessionOptions } from './ort.js';
import { WorkerBackend } from './worker.js';

/** Which session a graph runs on. */
export type Tier = 'fast' | 'building' | 'prepacked';

/** Options of the tiered sessions (first runs on a quickly created session, later ones on a prepacked one). */
export interface TieredOptions {
  /** Uses of one graph before its prepacked session is built; 0 disables promotion. Default 2. */
  promoteAfter?: number;
  /** Prepacked sessions kept open (LRU). Default 1: each holds a private packed copy of the weights (~490 MB on GPT-2-small). */
  maxPrepacked?: number;
}

interface GraphState {
  uses: number;
  tier: Tier;
  ready?: Promise<void>;
  opts: OrtSessionOptions;
}

/** Which tier served a run, and how long the run took in the thread that ran it. */
export interface TieredRun {
  /** Fetched outputs. */
  outputs: Record<string, Tensor>;
  /** The tier that ran it. */
  tier: Tier;
}

/** Session tiers over one model's graphs. */
export class TieredSessions {
  private readonly graphs = new Map<string, GraphState>();
  /** Prepacked graphs in recency order. */
  private readonly prepacked = new Set<string>();
  private readonly promoteAfter: number;
  private readonly maxPrepacked: number;
  private workerBackend: WorkerBackend | undefined;
  /** Worker-side creation times of prepacked sessions, ms (measurements). */
  readonly createTimes: number[] = [];
  /** The tier of the last run. */
  lastTier: Tier = 'fast';

  constructor(readonly fast: OrtBackend, opts: TieredOptions = {}) {
    this.promoteAfter = opts.promoteAfter ?? 2;
    this.maxPrepacked = Math.max(1, opts.maxPrepacked ?? 1);
  }

  /** The worker (started on first promotion). */
  get worker(): WorkerBackend {
    return (this.workerBackend ??= new WorkerBackend({ maxSessions: this.maxPrepacked + 1 }));
  }

  /** Graph files seen so far, in first-use order. */
  known(): string[] {
    return [...this.graphs.keys()];
  }

  /** The current tier of a graph. */
  tierOf(graphPath: string): Tier {
    return this.graphs.get(graphPath)?.tier ?? 'fast';
  }

  /** Resolves when the graph's promotion (if started) has finished or failed. */
  async whenReady(graphPath: string): Promise<void> {
    await this.graphs.get(graphPath)?.ready;
  }

  /** Runs a graph on its best ready session, counting the use (and maybe starting a promotion). */
  async run(graphPath: string, opts: OrtSessionOptions, feeds: Readonly<Record<string, Tensor>>, fetch: readonly string[]): Promise<TieredRun> {
    let g = this.graphs.get(graphPath);
    if (!g) this.graphs.set(graphPath, (g = { uses: 0, tier: 'fast', opts: { ...opts, prepack: false } }));
    g.uses++;
    const promote = this.promoteAfter > 0 && g.tier === 'fast' && g.uses >= this.promoteAfter;
    if (g.tier === 'prepacked') {
      this.prepacked.delete(graphPath);
      this.prepacked.add(graphPath);
      this.lastTier = 'prepacked';
      return { outputs: await this.worker.run(graphPath, { ...g.opts, prepack: true }, feeds, fetch), tier: 'prepacked' };
    }
    const session = await this.fast.session(graphPath, g.opts);
    this.lastTier = g.tier;
    try {
      return { outputs: await this.fast.run(session, feeds, fetch), tier: g.tier };
    } finally {
      // Start the build after this run: on few cores a concurrent build would slow the run down.
      if (promote) this.promote(graphPath, g);
    }
  }

  private promote(graphPath: string, g: GraphState): void {
    g.tier = 'building';
    g.ready = this.worker.open(graphPath, { ...g.opts, prepack: true }).then(
      (ms) => {
        this.createTimes.push(ms);
        g.tier = 'prepacked';
        this.prepacked.add(graphPath);
        this.fast.release(graphPath).catch(() => undefined);
        this.evict();
      },
      () => {
        g.tier = 'fast'; // stay on the fast session; never retry this graph
        g.uses = -Infinity;
      },
    );
  }

  private evict(): void {
    for (const p of this.prepacked) {
      if (this.prepacked.size <= this.maxPrepacked) break;
      this.prepacked.delete(p);
      const g = this.graphs.get(p);
      if (g) {
        g.tier = 'fast';
        g.uses = 0;
      }
      // Best effort: the worker may be stopping (its sessions go with it).
      this.worker.release(p).catch(() => undefined);
    }
  }

  /** Releases every session of both tiers and stops the worker. */
  async release(): Promise<void> {
    await Promise.all([...this.graphs.values()].map((g) => g.ready));
    this.graphs.clear();
    this.prepacked.clear();
    await this.workerBackend?.terminate();
    this.workerBackend = undefined;
  }
}
