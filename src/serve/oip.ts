/**
 * The Open Inference Protocol v2 endpoints of `nns serve` (mounted under `/v2/`): the same
 * models `nns export-serving` writes for Triton — `NAME.ports` (the instrumented model),
 * `NAME.module.PATH` (closed modules) and `NAME` (the unmodified model) for every
 * `--model NAME=PATH` — so a client that runs fast-path traces on Triton or KServe runs them
 * here unchanged (src/fast/oip-runner.ts), and that is how it is tested.
 *
 * - `GET /v2`: server metadata (`extensions: ["binary_tensor_data"]`).
 * - `GET /v2/health/live`, `GET /v2/health/ready`: 200, empty body.
 * - `GET /v2/models/{m}[/versions/1]`: model metadata (inputs, outputs; `-1` = any size).
 * - `GET /v2/models/{m}[/versions/1]/ready`: 200 when the model can be served.
 * - `POST /v2/models/{m}[/versions/1]/infer`: JSON or the binary tensor extension.
 *
 * Errors are the protocol's: a status (404 for an unknown model or version, 400 for a bad
 * request, 429 when the key has as many jobs as the server allows, 503 when the inference
 * passed the run time and was stopped) and `{"error": "message"}`. Inference runs as a job of
 * the server's worker process (`OipRouteContext.runJob`), on the model's own fast-path
 * sessions (prepacked, as a local trace runs them), so numbers are the local run's, bit for
 * bit, and the job limits apply: run time (the worker is stopped), jobs per key, the queue,
 * fair order among keys, saved (returned) elements.
 * @module
 */
import type http from 'node:http';
import type { ModelContext } from '../compile.js';
import { NnsError } from '../errors.js';
import { FastExecutor } from '../fast/execute.js';
import { checkServingName, servedModels, type ServedModel } from '../fast/serving.js';
import type { Tensor } from '../tensor.js';
import { JobFailure } from './jobs.js';
import type { WorkerJob } from './worker-main.js';
import { encodeBody, HEADER_LENGTH, OIP_DATATYPE, OipFormatError, readTensors, splitBody, type OipModelMetadata } from '../oip/protocol.js';

/** What the OIP endpoints need of the server: its models, a bounded body reader, and its job worker. */
export interface OipRouteContext {
  registry: { names(): string[]; get(name: string): { readonly name: string; context(): Promise<ModelContext> } | undefined };
  /** Reads the request body, bounded by the server's request limit (over it, throws an error with `status` 413). */
  readBody(maxBytes?: number): Promise<Buffer>;
  /**
   * Runs an inference as a job of the server's worker, under the job limits (run time, jobs
   * per key, queue) — `nns serve` gives it; without it, inference runs in this process.
   * Refusals throw an error with a `status`; a failed job rejects with {@link JobFailure}.
   */
  runJob?(model: string, request: Omit<WorkerJob, 'id'>): Promise<Map<string, Tensor>>;
  /**
   * What the worker serves for the `--model` name `base` ({@link servedMeta} computed where the
   * model is open) — `nns serve` gives it, so the HTTP process never opens a model; without it,
   * the model is opened here.
   */
  served?(base: string): Promise<ServedMeta[]>;
}

/** What the endpoints need to know of one served model (no graph): names, kinds, inputs and outputs, the model id. */
export interface ServedMeta {
  name: string;
  kind: ServedModel['kind'];
  module?: string;
  inputs: ServedModel['inputs'];
  outputs: ServedModel['outputs'];
  /** The loaded model's id (`onnsight.model_id` in the metadata). */
  modelId: string;
}

/** The {@link ServedMeta} of every model served for an opened model (`NAME`, `NAME.ports`, `NAME.module.PATH`). */
export function servedMeta(mc: ModelContext, base: string): ServedMeta[] {
  return [...servedOf(mc, executorOf(mc), base).values()].map((m) => ({
    name: m.name, kind: m.kind, ...(m.module ? { module: m.module } : {}), inputs: m.inputs, outputs: m.outputs, modelId: mc.loaded.id,
  }));
}

class OipHttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

function send(res: http.ServerResponse, status: number, body?: unknown, extra: Record<string, string> = {}): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  if (body === undefined) {
    res.writeHead(status, { 'content-length': '0', ...extra });
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(text)), ...extra });
  res.end(text);
}

interface Resolved {
  model: ServedMeta;
  /** The served model's `--model` name (`NAME` of `NAME.ports`). */
  base: string;
  /** Opened in this process (a context without `served`/`runJob`). */
  local?: { model: ServedModel; exec: FastExecutor; mc: ModelContext };
}

const executors = new WeakMap<ModelContext, FastExecutor>();
const served = new WeakMap<ModelContext, Map<string, ServedModel>>();

/** The fast-path executor of an opened model (its own, or one made for serving when the fast path is off). */
function executorOf(mc: ModelContext): FastExecutor {
  if (mc.fast instanceof FastExecutor && !mc.fast.exclusive) return mc.fast;
  let e = executors.get(mc);
  if (!e) executors.set(mc, (e = new FastExecutor(mc)));
  return e;
}

/** The models served for an opened model, by name (`NAME`, `NAME.ports`, `NAME.module.PATH`). */
function servedOf(mc: ModelContext, exec: FastExecutor, base: string): Map<string, ServedModel> {
  let byName = served.get(mc);
  if (!byName) served.set(mc, (byName = new Map(servedModels(exec, mc, base, { plain: true }).map((m) => [m.name, m]))));
  return byName;
}

/**
 * Runs the served model `name` of the opened model `mc` (served as `base`): what the job
 * worker of `nns serve` does for an inference request.
 * @throws NnsError `unknown-model` for a name it does not serve
 */
export async function runServed(mc: ModelContext, base: string, name: string, feeds: Record<string, Tensor>, fetch: string[]): Promise<Record<string, Tensor>> {
  const exec = executorOf(mc);
  const model = servedOf(mc, exec, base).get(name);
  if (!model) throw new NnsError('unknown-model', `no model '${name}' in this worker`, { kind: 'usage' });
  return runModel({ model, exec, mc }, feeds, fetch);
}

/** The served model `name`, or a 404. */
async function resolve(ctx: OipRouteContext, name: string): Promise<Resolved> {
  for (const base of ctx.registry.names()) {
    if (name !== base && !name.startsWith(`${base}.`)) continue;
    try {
      checkServingName(base);
    } catch {
      continue;
    }
    const entry = ctx.registry.get(base);
    if (!entry) continue;
    if (ctx.served) {
      const model = (await ctx.served(base)).find((m) => m.name === name);
      if (model) return { model, base };
      continue;
    }
    const mc = await entry.context();
    const exec = executorOf(mc);
    const local = servedOf(mc, exec, base).get(name);
    if (local) return { model: servedMeta(mc, base).find((m) => m.name === name)!, base, local: { model: local, exec, mc } };
  }
  throw new OipHttpError(404, `unknown model '${name}'${ctx.registry.names().length ? ` (models: ${ctx.registry.names().map((n) => `${n}, ${n}.ports, ${n}.module.PATH`).join('; ')})` : ''}`);
}

function metadata(m: ServedMeta): OipModelMetadata {
  const t = (x: ServedModel['inputs'][number]): { name: string; datatype: string; shape: number[] } => ({ name: x.name, datatype: OIP_DATATYPE[x.dtype], shape: x.dims });
  return {
    name: m.name, versions: ['1'], platform: 'onnxruntime_onnx', inputs: m.inputs.map(t), outputs: m.outputs.map(t),
    parameters: { 'onnsight.kind': m.kind, ...(m.module ? { 'onnsight.module': m.module } : {}), 'onnsight.model_id': m.modelId },
  };
}

/** Checks the request's tensors against the model's inputs (names, types, ranks, fixed dims). */
function checkInputs(m: ServedMeta, inputs: ReadonlyMap<string, Tensor>): void {
  const want = new Map(m.inputs.map((t) => [t.name, t]));
  for (const [name, t] of inputs) {
    const w = want.get(name);
    if (!w) throw new OipHttpError(400, `model '${m.name}' has no input '${name}' (inputs: ${m.inputs.map((x) => x.name).slice(0, 8).join(', ')}${m.inputs.length > 8 ? ', ...' : ''})`);
    if (t.dtype !== w.dtype) throw new OipHttpError(400, `input '${name}' of model '${m.name}' is ${OIP_DATATYPE[w.dtype]}, not ${OIP_DATATYPE[t.dtype]}`);
    if (t.shape.length !== w.dims.length || w.dims.some((d, i) => d !== -1 && d !== t.shape[i])) {
      throw new OipHttpError(400, `input '${name}' of model '${m.name}' has shape [${w.dims.join(', ')}], not [${t.shape.join(', ')}]`);
    }
  }
  const missing = m.inputs.filter((t) => !inputs.has(t.name)).map((t) => t.name);
  if (missing.length) throw new OipHttpError(400, `model '${m.name}' needs input${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).map((x) => `'${x}'`).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
}

async function runModel(r: { model: ServedModel; exec: FastExecutor; mc: ModelContext }, feeds: Record<string, Tensor>, fetch: string[]): Promise<Record<string, Tensor>> {
  const { model, exec, mc } = r;
  if (model.kind === 'ports') return exec.runner.runPorted(feeds, fetch);
  if (model.kind === 'module') return exec.runner.runModule(model.module!, feeds, fetch);
  const externalDataDir = mc.loaded.externalDataDir;
  const session = await mc.backend.session(mc.loaded.graphPath, { prepack: true, pinned: true, ...(externalDataDir ? { externalDataDir } : {}) });
  return mc.backend.run(session, feeds, fetch);
}

async function infer(req: http.IncomingMessage, res: http.ServerResponse, ctx: OipRouteContext, name: string): Promise<void> {
  const r = await resolve(ctx, name);
  const body = await ctx.readBody();
  let json: Record<string, unknown>;
  let inputs: Map<string, Tensor>;
  try {
    const header = req.headers[HEADER_LENGTH];
    const split = splitBody(body, Array.isArray(header) ? header[0] : header);
    json = split.json as Record<string, unknown>;
    inputs = readTensors(json.inputs, split.rest, 'inputs');
  } catch (e) {
    if (e instanceof OipFormatError) throw new OipHttpError(400, e.message);
    throw e;
  }
  checkInputs(r.model, inputs);
  const outs = json.outputs;
  if (outs !== undefined && (!Array.isArray(outs) || !outs.every((o: { name?: unknown }) => o && typeof o.name === 'string'))) throw new OipHttpError(400, '"outputs" must be a list of {name, parameters}');
  type Wanted = { name: string; parameters?: Record<string, unknown> };
  const requested: Wanted[] = (outs as Wanted[] | undefined) ?? r.model.outputs.map((o) => ({ name: o.name }));
  const known = new Set(r.model.outputs.map((o) => o.name));
  for (const o of requested) if (!known.has(o.name)) throw new OipHttpError(400, `model '${r.model.name}' has no output '${o.name}'`);
  const allBinary = (json.parameters as Record<string, unknown> | undefined)?.binary_data_output === true;
  const feeds = Object.fromEntries(inputs);
  const fetch = requested.map((o) => o.name);
  let result: Record<string, Tensor>;
  try {
    // In nns serve: a job of the worker (run time, jobs per key and the queue apply).
    result = r.local
      ? await runModel(r.local, feeds, fetch)
      : Object.fromEntries(await ctx.runJob!(r.base, { oip: { name: r.model.name, fetch, ...(typeof json.id === 'string' ? { tag: json.id.slice(0, 100) } : {}) }, host: [...inputs], progress: false }));
  } catch (e) {
    if (e instanceof NnsError) throw new OipHttpError(400, e.message);
    if (e instanceof JobFailure) {
      const first = e.errors[0];
      // Stopped at the run time, or its worker died: the server's side (503); anything else: the request's (400).
      throw new OipHttpError(first?.code === 'over-limit' || first?.code === 'job-failed' ? 503 : first?.code === 'internal' ? 500 : 400, first?.message ?? 'the inference failed');
    }
    throw e;
  }
  let enc;
  try {
    enc = encodeBody({ model_name: r.model.name, model_version: '1', ...(typeof json.id === 'string' ? { id: json.id } : {}) }, 'outputs',
      requested.map((o) => ({ name: o.name, tensor: result[o.name]!, binary: allBinary || o.parameters?.binary_data === true })));
  } catch (e) {
    if (e instanceof OipFormatError) throw new OipHttpError(400, `${e.message} (ask for it with "parameters": {"binary_data": true})`);
    throw e;
  }
  if (res.headersSent) return;
  res.writeHead(200, {
    'content-type': enc.headerLength !== undefined ? 'application/octet-stream' : 'application/json',
    'content-length': String(enc.body.byteLength),
    ...(enc.headerLength !== undefined ? { [HEADER_LENGTH]: String(enc.headerLength) } : {}),
  });
  res.end(enc.body);
}

const MODEL = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?\/?$/;

/**
 * Answers every request under `/v2/` (true: answered). Mount it with {@link oipRoute}.
 */
export async function oipHandler(req: http.IncomingMessage, res: http.ServerResponse, ctx: OipRouteContext): Promise<boolean> {
  const p = new URL(req.url ?? '/', 'http://x').pathname;
  const method = req.method ?? 'GET';
  try {
    if (p === '/v2' || p === '/v2/') {
      if (method !== 'GET') throw new OipHttpError(405, `${method} ${p}: use GET`);
      send(res, 200, { name: 'onnsight', version: '0.1.0', extensions: ['binary_tensor_data'] });
      return true;
    }
    if (p === '/v2/health/live' || p === '/v2/health/ready') {
      if (method !== 'GET') throw new OipHttpError(405, `${method} ${p}: use GET`);
      send(res, 200);
      return true;
    }
    const m = MODEL.exec(p);
    if (!m) throw new OipHttpError(404, `no such endpoint: ${method} ${p}`);
    let name: string;
    try {
      name = decodeURIComponent(m[1]!);
    } catch {
      throw new OipHttpError(400, 'the model name in the path is not valid percent-encoding');
    }
    const version = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
    const r = await resolve(ctx, name);
    if (version !== undefined && version !== '1') throw new OipHttpError(404, `model '${name}' has no version '${version}' (versions: 1)`);
    if (m[3] === '/infer') {
      if (method !== 'POST') throw new OipHttpError(405, `${method} ${p}: use POST`);
      await infer(req, res, ctx, name);
    } else {
      if (method !== 'GET') throw new OipHttpError(405, `${method} ${p}: use GET`);
      if (m[3] === '/ready') send(res, 200);
      else send(res, 200, metadata(r.model));
    }
    return true;
  } catch (e) {
    const status = e instanceof OipHttpError ? e.status : typeof (e as { status?: unknown }).status === 'number' ? (e as { status: number }).status : 0;
    if (!status) throw e; // the server answers 500 (no stack, no path)
    // Drain what the client is still sending, so it reads the answer instead of a reset.
    req.resume();
    send(res, status, { error: (e as Error).message });
    return true;
  }
}

/** The mount for `nns serve` (`ServeOptions.routes`): everything under `/v2/`; the health checks need no key. */
export const oipRoute = {
  prefix: '/v2/',
  handler: oipHandler,
  open: (p: string): boolean => p === '/v2/health/live' || p === '/v2/health/ready',
};
