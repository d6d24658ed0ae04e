/**
 * An onnxruntime backend in a worker thread: session creation and runs happen off the JS
 * thread, so the main thread keeps running (other sessions included) while a slow session
 * — a prepacked one — is being built. One worker per {@link WorkerBackend}; the worker owns
 * its sessions (an `OrtBackend` with its own LRU bound) and runs them. Feeds are
 * copied to the worker (they are small: token ids, host values); results come back with
 * their buffers transferred.
 *
 * The worker entry is the built `ort-worker.js` beside this file; when running from the
 * TypeScript sources (tests, development) it is `ort-worker.mjs`, which registers tsx and
 * imports `ort-worker.ts`.
 * @module
 */
import { Worker } from 'node:worker_threads';
import { NnsError, type ErrorKind } from '../src/errors.js';
import { isErrorCode } from '../src/error-codes.js';
import type { DType } from '../src/model/types.js';
import type { Tensor, TensorData } from '../src/tensor.js';
import type { OrtSessionOptions } from './ort.js';

/** The worker's entry: built JavaScript, or a tsx shim when this file runs as TypeScript. */
const WORKER_ENTRY = import.meta.url.endsWith('.ts') ? './ort-worker.mjs' : './ort-worker.js';

/** A tensor on the wire between threads. */
export interface WireTensor {
  /** Feed or output name. */
  name: string;
  /** Element type. */
  dtype: DType;
  /** Dimensions. */
  shape: number[];
  /** Row-major elements. */
  data: TensorData;
}

/** A request to the worker. */
export type WorkerRequest =
  | { id: number; op: 'open'; graphPath: string; opts: OrtSessionOptions }
  | { id: number; op: 'run'; graphPath: string; opts: OrtSessionOptions; feeds: WireTensor[]; fetch: string[] }
  | { id: number; op: 'release'; graphPath: string }
  | { id: number; op: 'size' };

/** The worker's answer. */
export interface WorkerReply {
  /** The request's id. */
  id: number;
  /** False when the request failed (`error` says why). */
  ok: boolean;
  /** `open`: milliseconds the session took to create (inside the worker). */
  createMs?: number;
  /** `size`: sessions open in the worker. */
  size?: number;
  /** `run`: milliseconds of `session.run` inside the worker. */
  runMs?: number;
  /** `run`: fetched outputs. */
  outputs?: WireTensor[];
  /** Failure: the NnsError's fields. */
  error?: { code: string; message: string; kind: ErrorKind };
}

/** Options of a {@link WorkerBackend}. */
export interface WorkerBackendOptions {
  /** Sessions the worker keeps open (its own LRU bound). Default 4. */
  maxSessions?: number;
}

type Pending = { resolve: (r: WorkerReply) => void; reject: (e: Error) => void };

/** Sessions created and run in one worker thread. */
export class WorkerBackend {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly opts: WorkerBackendOptions;
  /** Inside-worker milliseconds of the last run (to measure the transfer overhead). */
  lastRunMs = 0;

  constructor(opts: WorkerBackendOptions = {}) {
    this.opts = opts;
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL(WORKER_ENTRY, import.meta.url), { workerData: { maxSessions: this.opts.maxSessions ?? 4 } });
    w.unref();
    w.on('message', (r: WorkerReply) => {
      const p = this.pending.get(r.id);
      if (!p) return;
      this.pending.delete(r.id);
      if (r.ok) p.resolve(r);
      else p.reject(new NnsError(isErrorCode(r.error!.code) ? r.error!.code : 'internal', r.error!.message, { kind: r.error!.kind }));
    });
    w.on('error', (e) => this.failAll(e));
    w.on('exit', (code) => {
      if (this.worker === w) this.worker = undefined;
      this.failAll(new Error(`internal: ORT worker exited with code ${code}`));
    });
    this.worker = w;
    return w;
  }

  private failAll(e: Error): void {
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }

  private request(req: WorkerRequest): Promise<WorkerReply> {
    const w = this.start();
    // Keep the process alive only while requests are in flight.
    w.ref();
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending.set(req.id, { resolve, reject });
      w.postMessage(req);
    }).finally(() => {
      if (this.pending.size === 0) this.worker?.unref();
    });
  }

  /** Creates (or finds) a session in the worker; resolves with its creation time in ms. */
  async open(graphPath: string, opts: OrtSessionOptions = {}): Promise<number> {
    const r = await this.request({ id: this.nextId++, op: 'open', graphPath, opts });
    return r.createMs ?? 0;
  }

  /** Runs a session in the worker (creating it when needed); returns the fetched outputs. */
  async run(graphPath: string, opts: OrtSessionOptions, feeds: Readonly<Record<string, Tensor>>, fetch: readonly string[]): Promise<Record<string, Tensor>> {
    const wire = Object.entries(feeds).map(([name, t]) => ({ name, dtype: t.dtype, shape: [...t.shape], data: t.data }));
    const r = await this.request({ id: this.nextId++, op: 'run', graphPath, opts, feeds: wire, fetch: [...fetch] });
    this.lastRunMs = r.runMs ?? 0;
    const out: Record<string, Tensor> = {};
    for (const o of r.outputs ?? []) out[o.name] = { dtype: o.dtype, shape: o.shape, data: o.data };
    return out;
  }

  /** Releases the worker's sessions of one graph file. */
  async release(graphPath: string): Promise<void> {
    if (!this.worker) return;
    await this.request({ id: this.nextId++, op: 'release', graphPath });
  }

  /** Number of sessions open (or being created) in the worker; 0 when it is not running. */
  async sessions(): Promise<number> {
    if (!this.worker) return 0;
    return (await this.request({ id: this.nextId++, op: 'size' })).size ?? 0;
  }

  /** Stops the worker (its sessions are released with it). */
  async terminate(): Promise<void> {
    const w = this.worker;
    this.worker = undefined;
    if (w) await w.terminate();
  }
}
