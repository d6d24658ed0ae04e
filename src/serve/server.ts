/**
 * `nns serve`: an HTTP server (Node's `http`) holding loaded models and running traces sent
 * as data — the IR's JSON form plus host values, never code or a file path. Routes:
 *
 * - `GET /health` — `{"status":"ok"}` (no key needed).
 * - `GET /models`, `GET /models/NAME` — the served names; a model's module tree, config and
 *   tokenizer (what a client needs to lower scripts itself).
 * - `POST /jobs` — a tensor container (src/serve/protocol.ts) `{model, ir, host}` (a trace)
 *   or `{model, generate, host}` (a generation job, src/generate/job.ts) → `202 {"id"}`; with `?wait=1` the answer is the result itself once the job ends (one round
 *   trip; the id in the `x-nns-job` header).
 * - `GET /jobs/ID` — the job's latest status; `GET /jobs/ID/events` — its status stream
 *   (server-sent events `queued`, `running`, `progress`, `completed`, `error` with the
 *   diagnostics and their spans); `GET /jobs/ID/result[?wait=1]` — the saves as a tensor
 *   container (binary tensors with a JSON index).
 * - Mounted route modules (`ServeOptions.routes`, e.g. the Open Inference Protocol under `/v2/`).
 *
 * Every answer other than 2xx is one JSON line `{"error":{"code","message"}}`, never a stack
 * trace or a server path. With keys (`--keys FILE`) every route but the health checks needs
 * `Authorization: Bearer KEY`; a job is visible to its key only.
 * @module
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { graphFromJSON, IRFormatError, type GraphJSON } from '../../ir/json.js';
import { modelError } from '../errors.js';
import { DEFAULT_LIMITS, KeySet, type Limits } from './limits.js';
import { JobFailure, Jobs } from './jobs.js';
import type { WorkerJob } from './worker-main.js';
import type { Tensor } from '../tensor.js';
import { makeRegistry, type ModelRegistry } from './registry.js';
import { CONTAINER_TYPE, decodeContainer, WireError, type HttpErrorJSON, type JobEvent } from './protocol.js';
import { JobWorker, WorkerInitError } from './worker.js';
import { oipRoute, type ServedMeta } from './oip.js';
import { readGenerationJob, type GenerationJobJSON } from '../generate/job.js';

/** Context a mounted route gets. */
export interface RouteContext {
  /** The served models. */
  registry: ModelRegistry;
  /** The server's limits. */
  limits: Readonly<Limits>;
  /** The caller's key id (already checked); `''` when the server needs no keys. */
  key: string;
  /** Reads the request body, at most `maxBytes` (default the request limit); over it, throws {@link HttpError} 413. */
  readBody(maxBytes?: number): Promise<Buffer>;
  /** Answers with `{"error":{"code","message"}}`. */
  sendError(status: number, code: string, message: string): void;
  /**
   * Runs work as a job of the worker under the job limits (run time, jobs per key, the queue;
   * in fair order with the other jobs) and resolves with its result tensors once it ends; the
   * job is forgotten then. Refusals throw {@link HttpError} (429, 503); a failed job rejects
   * with a {@link JobFailure}.
   */
  runJob(model: string, request: Omit<WorkerJob, 'id'>): Promise<Map<string, Tensor>>;
  /** What the worker serves over the Open Inference Protocol for the `--model` name `base` (cached). */
  served(base: string): Promise<ServedMeta[]>;
}

/** A route module: answers and returns true, or returns false to let the server answer 404. */
export type RouteHandler = (req: http.IncomingMessage, res: http.ServerResponse, ctx: RouteContext) => Promise<boolean>;

/** A route module mounted under a path prefix (`/v2/`). */
export interface RouteMount {
  prefix: string;
  handler: RouteHandler;
  /** Paths under the prefix that need no key (health checks). */
  open?: (path: string) => boolean;
}

/** The route modules mounted by default: the Open Inference Protocol v2 under `/v2/` (src/serve/oip.ts). */
export const DEFAULT_ROUTES: readonly RouteMount[] = [oipRoute];

/** Options of {@link startServer}. */
export interface ServeOptions {
  /** The models: NAME and PATH of each `--model NAME=PATH`. */
  models: { name: string; path: string }[];
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Host (default 127.0.0.1). */
  host?: string;
  /** API keys (none: every request is let in). */
  keys?: KeySet;
  /** Limits (defaults: {@link DEFAULT_LIMITS}). */
  limits?: Partial<Limits>;
  /** Route modules (default {@link DEFAULT_ROUTES}). */
  routes?: readonly RouteMount[];
  /** Extra environment of the worker process (tests). @internal */
  workerEnv?: Readonly<Record<string, string>>;
  /** Opens a model in the server process for `ServedModel.context()` (default: `openModel`). */
  open?: (path: string) => Promise<import('../compile.js').ModelContext>;
}

/** A running server. */
export interface NnsServer {
  /** `http://HOST:PORT`. */
  readonly url: string;
  readonly port: number;
  readonly registry: ModelRegistry;
  /** The job store (counters). */
  readonly jobs: Jobs;
  /** The job worker (tests kill it). */
  readonly worker: JobWorker;
  /** Graceful shutdown: refuse new requests, fail queued jobs, let running ones finish, stop. */
  close(): Promise<void>;
}

/** An HTTP error with a code (answered as JSON). */
export class HttpError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
    this.name = 'HttpError';
  }
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendError(res: http.ServerResponse, status: number, code: string, message: string): void {
  const body: HttpErrorJSON = { error: { code, message } };
  sendJson(res, status, body);
}

/** Reads a body of at most `max` bytes. */
function readBody(req: http.IncomingMessage, max: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  const over = (): HttpError => new HttpError(413, 'over-limit', `the request is larger than this server allows (${max.toLocaleString('en-US')} bytes)`);
  if (Number.isFinite(declared) && declared > max) return Promise.reject(over());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    let done = false;
    req.on('data', (c: Buffer) => {
      if (done) return;
      n += c.length;
      if (n > max) {
        done = true;
        reject(over());
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => { if (!done) { done = true; resolve(Buffer.concat(chunks)); } });
    req.on('error', (e) => { if (!done) { done = true; reject(e); } });
  });
}

const terminal = (e: JobEvent): boolean => e.status === 'completed' || e.status === 'error';

/**
 * Starts a server: the worker opens the models (a model that cannot be opened is a model
 * error, exit 2), then the server listens.
 */
export async function startServer(opts: ServeOptions): Promise<NnsServer> {
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const keys = opts.keys ?? new KeySet([]);
  const jobs = new Jobs(limits);
  const worker = new JobWorker(opts.models.map((m) => ({ name: m.name, path: m.path })), limits.maxSavedElements, {
    onMessage: (m) => jobs.onMessage(m),
    onExit: (ids, why) => jobs.onWorkerExit(ids, why),
    onIdle: () => jobs.schedule(),
    onFatal: (why) => jobs.fatal(why),
  }, opts.workerEnv);
  jobs.attach(worker);
  let infos;
  try {
    infos = await worker.start();
  } catch (e) {
    jobs.close();
    await worker.stop();
    if (e instanceof WorkerInitError) {
      const first = e.errors[0];
      throw modelError('invalid-model', `cannot serve the models: ${first?.message ?? e.message}`, e.errors.slice(1).map((x) => x.message));
    }
    throw e;
  }
  const open = opts.open ?? (async (p: string) => (await import('../engine.js')).openModel(p));
  const registry = makeRegistry(opts.models.map((m, i) => ({ ...m, info: infos[i]! })), open);
  const infoText = new Map(infos.map((i) => [i.name, `${JSON.stringify(i)}\n`]));
  const routes = opts.routes ?? DEFAULT_ROUTES;
  let closing = false;

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    const method = req.method ?? 'GET';
    if (p === '/health' && method === 'GET') return sendJson(res, 200, { status: closing ? 'shutting-down' : 'ok' });
    const mount = routes.find((r) => p.startsWith(r.prefix));
    let key = '';
    if (keys.required && !(mount?.open?.(p))) {
      const auth = req.headers.authorization;
      const m = typeof auth === 'string' ? /^Bearer\s+(\S+)\s*$/i.exec(auth) : null;
      if (!m) throw new HttpError(401, 'unauthorized', 'this server needs an API key: send Authorization: Bearer KEY (nns run --remote reads it from NNS_API_KEY)');
      const id = keys.check(m[1]!);
      if (!id) throw new HttpError(401, 'unauthorized', 'the API key is not valid for this server');
      key = id;
    }
    if (mount) {
      const ctx: RouteContext = {
        registry, limits, key,
        readBody: (max = limits.maxRequestBytes) => readBody(req, max),
        sendError: (status, code, message) => sendError(res, status, code, message),
        runJob: (model, request) => runJob(key, model, request),
        served,
      };
      if (await mount.handler(req, res, ctx)) return;
    }
    if (p === '/models' && method === 'GET') return sendJson(res, 200, { models: registry.names() });
    const mm = /^\/models\/([^/]+)$/.exec(p);
    if (mm && method === 'GET') {
      const name = decodeURIComponent(mm[1]!);
      const text = infoText.get(name);
      if (!text) throw unknownModel(name);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
      return;
    }
    if (p === '/jobs' && method === 'POST') {
      jobs.noteArrival();
      return submit(req, res, key);
    }
    const jm = /^\/jobs\/([0-9a-f]{32})(\/events|\/result)?$/.exec(p);
    if (jm && method === 'GET') {
      const job = jobs.get(jm[1]!, key);
      if (!job) throw new HttpError(404, 'job-not-found', `no job ${jm[1]} for this key (unknown, or its result expired)`);
      if (!jm[2]) return sendJson(res, 200, [...job.history].reverse().find((e) => e.status !== 'token') ?? job.history[0]);
      if (jm[2] === '/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        const off = jobs.listen(job, (e) => {
          res.write(`event: ${e.status}\ndata: ${JSON.stringify(e)}\n\n`);
          if (terminal(e)) res.end();
        });
        res.on('close', off);
        return;
      }
      const answer = (): void => answerResult(job, res);
      if (job.state === 'queued' || job.state === 'running') {
        if (url.searchParams.get('wait') === '1') {
          const off = jobs.listen(job, (e) => { if (terminal(e)) { off(); answer(); } });
          res.on('close', off);
          return;
        }
      }
      return answer();
    }
    throw new HttpError(404, 'bad-request', `no route ${method} ${p.slice(0, 100)}`);
  };

  // What each model serves over the Open Inference Protocol, asked of the worker once (again after a failure).
  const servedCache = new Map<string, Promise<ServedMeta[]>>();
  const served = (base: string): Promise<ServedMeta[]> => {
    let p = servedCache.get(base);
    if (!p) {
      p = worker.served(base).catch((e: unknown) => {
        servedCache.delete(base);
        throw new HttpError(503, 'job-failed', `the server cannot describe model '${base}' now (${(e as Error).message}); try again`);
      });
      servedCache.set(base, p);
    }
    return p;
  };

  /** Refuses a new job of `key` when the server is closing, the key has its most jobs, or the queue is full. */
  const admit = (key: string): void => {
    if (closing || jobs.isClosing) throw new HttpError(503, 'job-failed', closing ? 'the server is shutting down' : 'the server cannot run jobs: its worker process cannot be restarted');
    if (jobs.activeOf(key) >= limits.maxJobsPerKey) throw new HttpError(429, 'over-limit', `this key already has ${limits.maxJobsPerKey} jobs queued or running (the server's limit); wait for one to finish`);
    if (jobs.queued >= limits.maxQueued) throw new HttpError(503, 'over-limit', `the server has ${limits.maxQueued} jobs queued (its limit); try again later`);
  };

  const runJob = (key: string, model: string, request: Omit<WorkerJob, 'id'>): Promise<Map<string, Tensor>> => {
    admit(key);
    const job = jobs.submit(key, model, request);
    return new Promise((resolve, reject) => {
      let off: (() => void) | undefined;
      let ended = false;
      const done = (e: JobEvent): void => {
        if (!terminal(e) || ended) return;
        ended = true;
        off?.();
        const raw = job.raw;
        jobs.forget(job.id);
        if (e.status === 'completed' && raw) resolve(raw);
        else reject(new JobFailure(e.errors ?? []));
      };
      off = jobs.listen(job, done);
      if (ended) off();
    });
  };

  const unknownModel = (name: string): HttpError => new HttpError(404, 'unknown-model', `this server has no model '${name.slice(0, 100)}' (it serves: ${registry.names().join(', ')})`);

  const submit = async (req: http.IncomingMessage, res: http.ServerResponse, key: string): Promise<void> => {
    if (closing || jobs.isClosing) throw new HttpError(503, 'job-failed', closing ? 'the server is shutting down' : 'the server cannot run jobs: its worker process cannot be restarted');
    const body = await readBody(req, limits.maxRequestBytes);
    let c;
    try {
      c = decodeContainer(body, 'host');
    } catch (e) {
      if (e instanceof WireError) throw new HttpError(400, 'bad-request', `the request is not a job: ${e.message}`);
      throw e;
    }
    const model = c.json.model;
    if (typeof model !== 'string') throw new HttpError(400, 'bad-request', "the request is not a job: 'model' is not a string");
    if (!registry.get(model)) throw unknownModel(model);
    const gen = c.json.generate;
    const ir = c.json.ir as { nodes?: unknown } | undefined;
    if (gen !== undefined && ir !== undefined) throw new HttpError(400, 'bad-request', "the request is not a job: it has both 'ir' (a trace) and 'generate' (a generation)");
    const overNodes = (n: number, what: string): HttpError => new HttpError(413, 'over-limit', `the ${what} has ${n.toLocaleString('en-US')} IR nodes; this server allows ${limits.maxIrNodes.toLocaleString('en-US')} per job`);
    if (gen !== undefined) {
      // A generation: its step templates count together against the IR limit.
      const templates = (gen as { templates?: unknown }).templates;
      const total = Array.isArray(templates) ? templates.reduce((a: number, t: unknown) => a + ((t as { ir?: { nodes?: unknown } })?.ir?.nodes instanceof Array ? ((t as { ir: { nodes: unknown[] } }).ir.nodes.length) : 0), 0) : 0;
      if (total > limits.maxIrNodes) throw overNodes(total, 'generation');
      try {
        readGenerationJob(gen, c.tensors);
      } catch (e) {
        if (e instanceof IRFormatError) throw new HttpError(400, 'bad-request', e.message.slice(0, 300));
        throw e;
      }
    } else {
      const nodes = ir && typeof ir === 'object' && Array.isArray(ir.nodes) ? ir.nodes.length : -1;
      if (nodes > limits.maxIrNodes) throw overNodes(nodes, 'trace');
      try {
        graphFromJSON(ir);
      } catch (e) {
        if (e instanceof IRFormatError) throw new HttpError(400, 'bad-request', e.message.slice(0, 300));
        throw e;
      }
    }
    admit(key);
    const wait = new URL(req.url ?? '/', 'http://localhost').searchParams.get('wait') === '1';
    const quiet = wait ? { progress: false } : {};
    const job = jobs.submit(key, model, gen !== undefined ? { generate: gen as GenerationJobJSON, host: [...c.tensors], ...quiet } : { ir: ir as GraphJSON, host: [...c.tensors], ...quiet });
    if (!wait) {
      sendJson(res, 202, { id: job.id, status: 'queued' });
      return;
    }
    // One round trip: the answer is the result (or the job's errors); the id is in a header,
    // so a client that loses the connection can still fetch the result.
    res.setHeader('x-nns-job', job.id);
    const off = jobs.listen(job, (e) => { if (terminal(e)) { off(); answerResult(job, res); } });
    res.on('close', off);
  };

  const answerResult = (job: import('./jobs.js').Job, res: http.ServerResponse): void => {
    if (job.state === 'completed') {
      res.writeHead(200, { 'content-type': CONTAINER_TYPE, 'content-length': job.result!.length });
      res.end(job.result);
    } else if (job.state === 'error') {
      const e = job.history[job.history.length - 1]!;
      const first = e.errors?.[0];
      sendJson(res, 422, { error: { code: first?.code ?? 'job-failed', message: first?.message ?? 'the job failed' }, errors: e.errors ?? [] });
    } else sendError(res, 409, 'job-not-found', `job ${job.id} has not finished (${job.state}); wait for its completed event or add ?wait=1`);
  };

  const server = http.createServer((req, res) => {
    if (closing && !req.url?.startsWith('/jobs/')) {
      sendError(res, 503, 'job-failed', 'the server is shutting down');
      return;
    }
    handle(req, res).catch((e: unknown) => {
      if (e instanceof HttpError) {
        if (e.status === 413) res.setHeader('connection', 'close');
        sendError(res, e.status, e.code, e.message);
        return;
      }
      process.stderr.write(`nns serve: internal error: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
      sendError(res, 500, 'internal', 'internal error in the server (its log has the details)');
    });
  });
  // Idle connections are kept 30 s (Node's default is 5 s): a client tracing every few seconds
  // keeps its connection, and clients that come back together send over open connections, so
  // their requests arrive together and share a batch.
  server.keepAliveTimeout = 30_000;
  // A new connection likely brings a job: the scheduler looks again before forming a batch for an idle worker.
  server.on('connection', () => jobs.noteArrival());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8000, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const host = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  let closed: Promise<void> | undefined;
  return {
    url: `http://${host}:${addr.port}`,
    port: addr.port,
    registry,
    jobs,
    worker,
    close: () => (closed ??= (async () => {
      closing = true;
      await jobs.drain();
      jobs.close();
      await worker.stop();
      await new Promise<void>((r) => { server.close(() => r()); server.closeIdleConnections(); setTimeout(() => server.closeAllConnections(), 1000).unref(); });
    })()),
  };
}
