/**
 * Jobs of `nns serve`: the store (by id, owned by the key that submitted them), the status
 * history every listener replays, fair queueing (round robin over keys: a key with many jobs
 * queued does not hold back another's), and the scheduler that hands the worker a batch —
 * the next job in fair order plus, in the same order, further queued jobs of the same model
 * (cross-request batching; the worker decides which of them share a forward pass).
 *
 * Every accepted job ends `completed` or `error`: a worker that dies fails the jobs it was
 * running (`job-failed`), one over the run time is stopped (`over-limit`), and at shutdown
 * queued jobs fail while running ones finish.
 * @module
 */
import crypto from 'node:crypto';
import type { Tensor } from '../tensor.js';
import type { Limits } from './limits.js';
import { encodeContainer, type DiagnosticJSON, type JobEvent, type JobState } from './protocol.js';
import type { FromWorker, WorkerJob } from './worker-main.js';
import type { JobWorker } from './worker.js';

/** Most event-loop turns the scheduler waits for requests still arriving before it forms a batch for an idle worker. */
const SETTLE_TURNS = 8;
/** Longest time, ms, it waits so. */
const SETTLE_MS = 5;

/** One job. */
export interface Job {
  id: string;
  /** Key id of the submitter (only it may see the job). */
  key: string;
  model: string;
  state: JobState;
  /** Status events so far (replayed to each new listener). */
  history: JobEvent[];
  listeners: Set<(e: JobEvent) => void>;
  /** The encoded result (completed). */
  result?: Buffer;
  /** What the worker gets (dropped once sent). */
  request?: WorkerJob;
  accepted: number;
  finished?: number;
  /** Was in a batch that passed the run time: runs alone from now on (and fails alone if it is the slow one). */
  suspect?: boolean;
  /** A generation or an inference request: runs in a batch of its own (never merged). */
  alone?: boolean;
  /** An inference request (`/v2/.../infer`): its result is kept as tensors for the one waiting answer, not stored. */
  raw?: Map<string, Tensor>;
  keepRaw?: boolean;
}

/** A job that ended with an error: its diagnostics. */
export class JobFailure extends Error {
  constructor(readonly errors: DiagnosticJSON[]) {
    super(errors[0]?.message ?? 'the job failed');
    this.name = 'JobFailure';
  }
}

/** Counters (tests and benchmarks). */
export interface JobStats {
  accepted: number;
  completed: number;
  failed: number;
  /** Batches sent to the worker. */
  batches: number;
  /** Jobs that shared a forward pass with another. */
  merged: number;
  /** Batches handed to the worker, by size: `sizes[n]` = batches of n jobs. */
  sizes: Record<number, number>;
}

/** The job store and scheduler. */
export class Jobs {
  private readonly jobs = new Map<string, Job>();
  /** Queued jobs per key, and the keys in round-robin order. */
  private readonly queues = new Map<string, Job[]>();
  private rr: string[] = [];
  private running: Job[] = [];
  private watchdog: NodeJS.Timeout | undefined;
  private timedOut = false;
  private closing = false;
  private readonly sweeper: NodeJS.Timeout;
  readonly stats: JobStats = { accepted: 0, completed: 0, failed: 0, batches: 0, merged: 0, sizes: {} };
  /** Resolves when nothing is running (shutdown waits on it). */
  private idleWaiters: (() => void)[] = [];

  constructor(private readonly limits: Limits, private worker?: JobWorker) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(30_000, Math.max(1000, limits.resultTtlMs / 4)));
    this.sweeper.unref();
  }

  /** Attaches the worker (after construction: the worker's events call back into this). */
  attach(worker: JobWorker): void {
    this.worker = worker;
  }

  /** Jobs a key has queued or running. */
  activeOf(key: string): number {
    let n = this.queues.get(key)?.length ?? 0;
    for (const j of this.running) if (j.key === key) n++;
    return n;
  }

  /** Jobs queued in all. */
  get queued(): number {
    let n = 0;
    for (const q of this.queues.values()) n += q.length;
    return n;
  }

  /** Accepts a job; it is queued and scheduled. */
  submit(key: string, model: string, request: Omit<WorkerJob, 'id'>): Job {
    // 122 random bits as 32 hex digits (randomUUID draws from a buffered pool: cheaper per job than randomBytes).
    const id = crypto.randomUUID().replaceAll('-', '');
    const job: Job = { id, key, model, state: 'queued', history: [], listeners: new Set(), request: { id, ...request }, accepted: Date.now(), ...(request.generate || request.oip ? { alone: true } : {}), ...(request.oip ? { keepRaw: true } : {}) };
    this.jobs.set(id, job);
    let q = this.queues.get(key);
    if (!q) {
      this.queues.set(key, (q = []));
      this.rr.push(key);
    }
    q.push(job);
    this.stats.accepted++;
    this.emit(job, { id, status: 'queued', position: this.queued - 1 + this.running.length });
    this.arrivals++;
    // After the current I/O phase: requests that arrived together are all queued before a batch is formed.
    this.soon();
    return job;
  }

  /** A job by id, when `key` owns it. */
  get(id: string, key: string): Job | undefined {
    const j = this.jobs.get(id);
    return j && j.key === key ? j : undefined;
  }

  /** Subscribes to a job's events (replays its history first); returns the unsubscriber. */
  listen(job: Job, fn: (e: JobEvent) => void): () => void {
    for (const e of job.history) fn(e);
    if (job.state === 'completed' || job.state === 'error') return () => undefined;
    job.listeners.add(fn);
    return () => job.listeners.delete(fn);
  }

  private emit(job: Job, e: JobEvent): void {
    if (e.status !== 'progress') job.history.push(e);
    else {
      // Keep only the latest progress event in the history.
      const last = job.history[job.history.length - 1];
      if (last?.status === 'progress') job.history[job.history.length - 1] = e;
      else job.history.push(e);
    }
    for (const l of [...job.listeners]) l(e);
  }

  private end(job: Job, e: JobEvent): void {
    if (job.state === 'completed' || job.state === 'error') return;
    job.state = e.status as JobState;
    job.finished = Date.now();
    job.request = undefined;
    if (job.state === 'completed') this.stats.completed++;
    else this.stats.failed++;
    this.emit(job, e);
    job.listeners.clear();
  }

  /** Fails a job with one diagnostic. */
  fail(job: Job, code: string, message: string): void {
    this.end(job, { id: job.id, status: 'error', errors: [{ code, message, kind: 'usage', notes: [] }] });
  }

  /** The next queued job in fair (round-robin by key) order, optionally of one model and never a suspect one. */
  private take(model?: string): Job | undefined {
    for (let i = 0; i < this.rr.length; i++) {
      const key = this.rr[i]!;
      const q = this.queues.get(key)!;
      const at = model === undefined ? 0 : q.findIndex((j) => j.model === model && !j.suspect && !j.alone);
      if (at < 0) continue;
      const [job] = q.splice(at, 1);
      // This key goes to the back of the round.
      this.rr.splice(i, 1);
      if (q.length) this.rr.push(key);
      else this.queues.delete(key);
      return job;
    }
    return undefined;
  }

  private held = false;

  /** Stops handing out batches (jobs keep queueing) until {@link Jobs.release}: tests make batching deterministic with it. */
  hold(): void {
    this.held = true;
  }

  /** Hands out batches again. */
  release(): void {
    this.held = false;
    this.schedule();
  }

  private immediate: NodeJS.Immediate | undefined;
  /** Jobs queued, connections opened and job requests begun since the scheduler last looked (see {@link Jobs.soon}). */
  private arrivals = 0;

  /**
   * Something that may bring a job soon: a connection opened, a job request whose body is
   * being read (the server calls this). While they keep coming, a batch for an idle worker
   * is formed a loop turn later (see {@link Jobs.soon}).
   */
  noteArrival(): void {
    this.arrivals++;
  }

  /**
   * Schedules after the current I/O phase: requests that arrived together are all queued
   * before a batch is formed. When the worker is idle and more is arriving (jobs, new
   * connections, request bodies), it looks again after the next turn of the event loop — at
   * most {@link SETTLE_TURNS} turns and {@link SETTLE_MS} ms — so that clients arriving
   * together over fresh connections share a batch instead of the first one running alone.
   * A lone client's job goes one loop turn later.
   */
  private soon(): void {
    if (this.immediate) return;
    const started = Date.now();
    let turns = 0;
    const look = (): void => {
      this.immediate = undefined;
      const w = this.worker;
      const idle = !!w && w.ready && !w.busy && this.running.length === 0;
      if (this.arrivals > 0 && idle && this.limits.maxBatch > 1 && this.queued < this.limits.maxBatch && turns < SETTLE_TURNS && Date.now() - started < SETTLE_MS) {
        this.arrivals = 0;
        turns++;
        this.immediate = setImmediate(look);
        return;
      }
      this.arrivals = 0;
      this.schedule();
    };
    this.immediate = setImmediate(look);
  }

  /**
   * The clients of the last batch, expected back: after a batch of several jobs, the next one
   * waits (until `until`, at most {@link Limits.batchWaitMs}) for `jobs` of the model to be
   * queued (at most a whole batch): the last batch's size plus the jobs that were queued when it ended.
   */
  private returning: { model: string; jobs: number; until: number } | undefined;
  private lastBatch: { model: string; jobs: number } | undefined;
  private waitTimer: NodeJS.Timeout | undefined;
  /** When the running batch started (ms), for the wait after it. */
  private startedAt = 0;

  /** Batchable jobs of `model` queued. */
  private queuedOf(model: string): number {
    let n = 0;
    for (const q of this.queues.values()) for (const j of q) if (j.model === model && !j.suspect && !j.alone) n++;
    return n;
  }

  /** Whether the next batch should wait for the last batch's clients (and a timer is set to look again). */
  private waiting(): boolean {
    const r = this.returning;
    if (!r || this.closing) return false;
    // Only a batchable job of that model, next in fair order, waits (a generation or another model's job goes at once).
    const key = this.rr[0];
    const head = key === undefined ? undefined : this.queues.get(key)?.[0];
    if (head && (head.model !== r.model || head.suspect || head.alone)) return false;
    const left = r.until - Date.now();
    if (left <= 0 || this.queuedOf(r.model) >= Math.min(r.jobs, this.limits.maxBatch)) {
      this.returning = undefined;
      return false;
    }
    clearTimeout(this.waitTimer);
    this.waitTimer = setTimeout(() => this.schedule(), left);
    this.waitTimer.unref();
    return true;
  }

  /** Hands the worker the next batch when it is free. */
  schedule(): void {
    const w = this.worker;
    if (!w || !w.ready || w.busy || this.running.length || (this.held && !this.closing)) {
      if (!this.running.length) this.resolveIdle();
      return;
    }
    if (this.waiting()) return;
    clearTimeout(this.waitTimer);
    const first = this.take();
    if (!first) {
      this.resolveIdle();
      return;
    }
    const batch = [first];
    while (!first.suspect && !first.alone && batch.length < this.limits.maxBatch) {
      const next = this.take(first.model);
      if (!next) break;
      batch.push(next);
    }
    this.running = batch;
    this.startedAt = Date.now();
    this.stats.batches++;
    this.stats.sizes[batch.length] = (this.stats.sizes[batch.length] ?? 0) + 1;
    for (const j of batch) {
      j.state = 'running';
      this.emit(j, { id: j.id, status: 'running' });
    }
    this.timedOut = false;
    this.arm();
    this.lastBatch = { model: first.model, jobs: batch.length };
    w.run(first.model, batch.map((j) => j.request!));
  }

  /** (Re)starts the run-time watchdog: a batch that finishes no job within the limit is stopped. */
  private arm(): void {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => {
      this.timedOut = true;
      this.worker?.kill();
    }, this.limits.maxRunMs);
    this.watchdog.unref();
  }

  /** A message from the worker. */
  onMessage(m: FromWorker): void {
    if (m.type === 'batch-done') {
      clearTimeout(this.watchdog);
      for (const j of this.running) this.fail(j, 'internal', 'the job ended without a result');
      this.running = [];
      const b = this.lastBatch;
      if (b && b.jobs > 1 && this.limits.batchWaitMs > 0) {
        const ran = Date.now() - this.startedAt;
        // Expected: the batch's clients back, besides the jobs of that model that queued while it ran
        // (clients left out of it: with them, the next batch is whole again instead of one short for ever).
        this.returning = { model: b.model, jobs: b.jobs + this.queuedOf(b.model), until: Date.now() + Math.min(this.limits.batchWaitMs, ran / 4) };
      } else this.returning = undefined;
      return;
    }
    if (m.type !== 'started' && m.type !== 'progress' && m.type !== 'token' && m.type !== 'done') return;
    const job = this.jobs.get(m.id);
    // Only a job of the running batch hears from the worker (a message about any other, e.g.
    // one still queued, would complete it while its request waits to be handed out).
    if (!job || !this.running.includes(job)) return;
    if (m.type === 'token') {
      this.emit(job, { id: job.id, status: 'token', token: { step: m.step, row: m.row, token: m.token } });
      return;
    }
    if (m.type === 'progress') {
      this.emit(job, { id: job.id, status: 'progress', progress: { phase: m.phase, done: m.done, total: m.total } });
      return;
    }
    if (m.type === 'started') return;
    this.running = this.running.filter((j) => j !== job);
    this.arm();
    if (m.ok && job.keepRaw) {
      job.raw = new Map(m.saves);
      this.end(job, { id: job.id, status: 'completed', saves: m.saves.length, ms: Date.now() - job.accepted, batched: 1 });
    } else if (m.ok) {
      // Encoded by the worker (a view into the message: no copy), or here.
      job.result = m.result ? Buffer.from(m.result.buffer, m.result.byteOffset, m.result.byteLength) : encodeContainer({ id: job.id, ...(m.generate ? { generate: m.generate } : {}) }, 'saves', m.saves as [string, Tensor][]);
      this.stored += job.result.length;
      if (m.batched > 1) this.stats.merged++;
      this.end(job, { id: job.id, status: 'completed', saves: m.result ? m.count ?? 0 : m.saves.length, ms: Date.now() - job.accepted, batched: m.batched });
      if (this.stored > this.limits.maxStoredResultBytes) this.sweep();
    } else this.end(job, { id: job.id, status: 'error', errors: m.errors as DiagnosticJSON[] });
  }

  /** The worker died while running `ids`. */
  onWorkerExit(ids: string[], why: string): void {
    clearTimeout(this.watchdog);
    const timed = this.timedOut;
    this.timedOut = false;
    const live = ids.map((id) => this.jobs.get(id)).filter((j): j is Job => !!j && j.state !== 'completed' && j.state !== 'error');
    for (const job of live) {
      if (timed && live.length > 1 && !this.closing) {
        // Which job of the batch was slow is unknown: each runs again alone, first in its key's queue.
        job.suspect = true;
        job.state = 'queued';
        let q = this.queues.get(job.key);
        if (!q) {
          this.queues.set(job.key, (q = []));
          this.rr.unshift(job.key);
        }
        q.unshift(job);
        this.emit(job, { id: job.id, status: 'queued', position: 0 });
      } else if (timed) this.fail(job, 'over-limit', `the job ran longer than this server allows (${this.limits.maxRunMs / 1000} s) and was stopped`);
      else this.fail(job, 'job-failed', `the worker process running the job ended unexpectedly (${why}); the server restarted it — submit the job again`);
    }
    this.running = this.running.filter((j) => !j.suspect || j.state !== 'queued');
    for (const j of this.running) if (j.state === 'running') this.fail(j, 'job-failed', `the worker process running the job ended unexpectedly (${why})`);
    this.running = [];
    this.resolveIdle();
  }

  private resolveIdle(): void {
    if (this.running.length) return;
    const w = this.idleWaiters;
    this.idleWaiters = [];
    for (const f of w) f();
  }

  /**
   * Shutdown: queued jobs fail, running ones finish (bounded by the run-time limit);
   * resolves when nothing runs.
   */
  async drain(): Promise<void> {
    this.closing = true;
    for (const q of this.queues.values()) for (const j of q) this.fail(j, 'job-failed', 'the server shut down before the job ran; submit it again');
    this.queues.clear();
    this.rr = [];
    if (!this.running.length) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  /** Whether the store is shutting down or cannot run jobs any more (new jobs are refused). */
  get isClosing(): boolean {
    return this.closing;
  }

  /** The worker is gone for good: queued jobs fail, new ones are refused. */
  fatal(why: string): void {
    this.closing = true;
    for (const q of this.queues.values()) for (const j of q) this.fail(j, 'job-failed', `${why}; the job did not run`);
    this.queues.clear();
    this.rr = [];
    this.resolveIdle();
  }

  /** Bytes of results held. */
  private stored = 0;

  private drop(id: string, j: Job): void {
    this.stored -= j.result?.length ?? 0;
    this.jobs.delete(id);
  }

  /** Drops finished jobs older than the result TTL, then the oldest while results hold more than their byte limit. */
  sweep(now = Date.now()): void {
    for (const [id, j] of this.jobs) if (j.finished !== undefined && now - j.finished > this.limits.resultTtlMs) this.drop(id, j);
    if (this.stored <= this.limits.maxStoredResultBytes) return;
    const done = [...this.jobs].filter(([, j]) => j.finished !== undefined).sort(([, a], [, b]) => a.finished! - b.finished!);
    for (const [id, j] of done) {
      if (this.stored <= this.limits.maxStoredResultBytes) break;
      this.drop(id, j);
    }
  }

  /** Forgets a finished job at once (an inference request, once answered). */
  forget(id: string): void {
    const j = this.jobs.get(id);
    if (j && j.finished !== undefined) this.drop(id, j);
  }

  /** Stops the timers. */
  close(): void {
    clearInterval(this.sweeper);
    clearTimeout(this.watchdog);
    clearTimeout(this.waitTimer);
    if (this.immediate) clearImmediate(this.immediate);
  }
}
