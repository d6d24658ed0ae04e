/**
 * The server's end of the job worker: a child process (src/serve/worker-main.ts) that holds
 * the opened models and runs batches of jobs. A worker that exits unexpectedly — killed,
 * crashed, out of memory — is reported through `onExit` with the jobs it was running, and
 * started again; the server keeps serving.
 * @module
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { FromWorker, ToWorker, WorkerJob } from './worker-main.js';
import type { ModelInfoJSON } from './model-info.js';
import type { DiagnosticJSON } from './protocol.js';
import type { ServedMeta } from './oip.js';

/** The child's entry: the built JavaScript, or a tsx shim when this file runs as TypeScript. */
const ENTRY = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? './worker-entry.mjs' : './worker-main.js', import.meta.url));

/** What the worker reports. */
export interface WorkerEvents {
  /** A message about a job (started, progress, done). */
  onMessage(m: FromWorker): void;
  /** The worker exited unexpectedly while running `jobs` (ids); it is being restarted. */
  onExit(jobs: string[], why: string): void;
  /** A batch finished (the worker is free). */
  onIdle(): void;
  /** The worker could not be started again after it died: no job can run any more. */
  onFatal?(why: string): void;
}

/** A model load failure at start-up. */
export class WorkerInitError extends Error {
  constructor(readonly errors: DiagnosticJSON[]) {
    super(errors.map((e) => e.message).join('; '));
    this.name = 'WorkerInitError';
  }
}

/** One job worker process (restarted when it dies). */
export class JobWorker {
  private child: ChildProcess | undefined;
  private inFlight = new Set<string>();
  private stopping = false;
  private readyP: Promise<ModelInfoJSON[]> | undefined;
  /** Whether a batch is running. */
  busy = false;

  constructor(private readonly models: { name: string; path: string }[], private readonly maxSavedElements: number, private readonly events: WorkerEvents, private readonly env: Readonly<Record<string, string>> = {}) {}

  /** The child's process id (tests kill it). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Whether the worker is up and has its models open. */
  ready = false;

  /** Starts the child and opens the models; resolves with their infos. */
  start(): Promise<ModelInfoJSON[]> {
    this.ready = false;
    const child = fork(ENTRY, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...this.env } });
    this.child = child;
    this.readyP = new Promise<ModelInfoJSON[]>((resolve, reject) => {
      let settled = false;
      child.on('message', (m: FromWorker) => {
        if (m.type === 'ready') {
          settled = true;
          this.ready = true;
          resolve(m.infos);
          this.events.onIdle();
        } else if (m.type === 'init-error') {
          settled = true;
          reject(new WorkerInitError(m.errors));
        } else if (m.type === 'meta') {
          const p = this.metaWaiting.get(m.req);
          this.metaWaiting.delete(m.req);
          if ('served' in m) p?.resolve(m.served);
          else p?.reject(new Error(m.error));
        } else {
          if (m.type === 'done') this.inFlight.delete(m.id);
          if (m.type === 'batch-done' || (m.type === 'done' && m.last)) {
            if (m.type === 'done') this.events.onMessage(m);
            this.busy = false;
            this.inFlight.clear();
            this.events.onMessage({ type: 'batch-done' });
            this.events.onIdle();
            return;
          }
          this.events.onMessage(m);
        }
      });
      child.on('exit', (code, signal) => {
        if (this.child !== child) return;
        this.child = undefined;
        this.ready = false;
        for (const p of this.metaWaiting.values()) p.reject(new Error('the worker process ended while answering'));
        this.metaWaiting.clear();
        const jobs = [...this.inFlight];
        this.inFlight.clear();
        this.busy = false;
        if (!settled) {
          settled = true;
          reject(new WorkerInitError([{ code: 'internal', message: `the worker exited while opening the models (${signal ?? `code ${code}`})`, kind: 'model', notes: [] }]));
          return;
        }
        if (this.stopping) return;
        this.events.onExit(jobs, signal ? `it was killed (${signal})` : `it exited with code ${code}`);
        // Start again; queued jobs wait for it.
        this.start().catch((e: unknown) => {
          process.stderr.write(`nns serve: cannot restart the worker: ${(e as Error).message}\n`);
          this.events.onFatal?.('the server cannot restart its worker process');
        });
      });
    });
    this.send({ type: 'init', models: this.models, maxSavedElements: this.maxSavedElements });
    return this.readyP;
  }

  private send(m: ToWorker): void {
    this.child?.send(m);
  }

  private readonly metaWaiting = new Map<number, { resolve(v: ServedMeta[]): void; reject(e: Error): void }>();
  private metaReq = 0;

  /** What the worker serves over the Open Inference Protocol for the `--model` name `model` (asked of the worker: the HTTP process never opens a model). */
  served(model: string): Promise<ServedMeta[]> {
    if (!this.child || !this.ready) return Promise.reject(new Error('the worker process is not running'));
    const req = ++this.metaReq;
    return new Promise((resolve, reject) => {
      this.metaWaiting.set(req, { resolve, reject });
      this.send({ type: 'meta', req, model });
    });
  }

  /** Sends a batch (the worker must be ready and not busy). */
  run(model: string, jobs: WorkerJob[]): void {
    this.busy = true;
    for (const j of jobs) this.inFlight.add(j.id);
    this.send({ type: 'run', model, jobs });
  }

  /** Kills the child (a job over its run time); it is restarted like after a crash. */
  kill(): void {
    this.child?.kill('SIGKILL');
  }

  /** Stops the child for good. */
  async stop(): Promise<void> {
    this.stopping = true;
    const c = this.child;
    if (!c) return;
    await new Promise<void>((resolve) => {
      c.once('exit', () => resolve());
      c.disconnect();
      setTimeout(() => c.kill('SIGKILL'), 5000).unref();
    });
  }
}
