/**
 * The client of `nns serve`: fetches a served model's info (module tree, config, tokenizer:
 * what lowering a script needs), submits a trace as its IR's JSON form plus the host values
 * it reads, follows the job's status stream, and reads the saves back bit for bit.
 *
 * Errors: what the server refuses (unknown model, missing or wrong key, limits, malformed
 * requests) is one {@link NnsError} of kind `usage` with the server's code; errors of the
 * script found by the server's checks come back with their spans, as local runs report them.
 * @module
 */
import crypto from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { Graph } from '../../ir/ir.js';
import { graphToJSON } from '../../ir/json.js';
import { NnsError, NnsErrors, type ErrorCode } from '../errors.js';
import { isErrorCode } from '../error-codes.js';
import type { ProgressCallback } from '../progress.js';
import type { Tensor } from '../tensor.js';
import { clientModel, type ClientModel, type ModelInfoJSON } from '../serve/model-info.js';
import { CONTAINER_TYPE, decodeContainer, encodeContainer, WireError, type Container, type DiagnosticJSON, type GenerationResultJSON, type JobEvent } from '../serve/protocol.js';
import type { LoweredGenerationJob } from '../generate/job.js';

/** Options of a remote connection. */
export interface RemoteOptions {
  /** The API key (`Authorization: Bearer KEY`); `nns run --remote` reads `NNS_API_KEY`. */
  apiKey?: string;
}

const codeOf = (c: unknown, fallback: ErrorCode): ErrorCode => (typeof c === 'string' && isErrorCode(c) ? c : fallback);

/**
 * Keep-alive agents shared by every client of the process: a trace's request reuses an open
 * connection (no TCP handshake per trace; Nagle off — Node's agents set `noDelay`). Idle
 * sockets do not keep the process alive.
 */
const AGENTS = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

/**
 * Model descriptions already rebuilt in this process, by the digest of the server's answer:
 * clients of the same description (several `LanguageModel.remote` handles of one served
 * model) share its module tree and tokenizer (read only once built) instead of each holding
 * a copy. Held weakly: a description no client uses any more is collected.
 */
const SHARED = new Map<string, WeakRef<ClientModel>>();

/** The job id of a `?wait=1` answer (its `x-nns-job` header). */
const jobId = (a: Answer): string => (typeof a.headers['x-nns-job'] === 'string' ? a.headers['x-nns-job'] : '?');

/** A whole answer read by {@link RemoteClient} (status, headers, body). */
interface Answer {
  status: number;
  statusText: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** A connection to one server. */
export class RemoteClient {
  private readonly base: string;
  private readonly infos = new Map<string, Promise<ClientModel>>();

  constructor(url: string, private readonly opts: RemoteOptions = {}) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new NnsError('remote-unreachable', `'${url}' is not a URL (expected http://HOST:PORT)`, { kind: 'usage' });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new NnsError('remote-unreachable', `'${url}' is not an http(s) URL`, { kind: 'usage' });
    this.base = u.href.replace(/\/+$/, '');
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {}), ...extra };
  }

  /**
   * A request on a keep-alive connection (node:http, lighter per request than fetch), its
   * answer read whole; a refusal by the server becomes one NnsError with its code. A request
   * that meets a connection the server has just closed as idle is sent again on a new one
   * (it never reached the server).
   */
  private call(path: string, method: 'GET' | 'POST', body?: Buffer, headers: Record<string, string> = {}): Promise<Answer> {
    const url = new URL(`${this.base}${path}`);
    const mod = url.protocol === 'https:' ? https : http;
    const agent = url.protocol === 'https:' ? AGENTS.https : AGENTS.http;
    const attempt = (retry: boolean): Promise<Answer> => new Promise<Answer>((resolve, reject) => {
      const req = mod.request(url, { method, agent, headers: this.headers({ ...headers, ...(body ? { 'content-length': String(body.length) } : {}) }) }, (res) => {
        // A body of known length is read into one buffer of that size as it comes (its own
        // memory: decoded results are views into it), else its chunks are joined at the end.
        const size = Number(res.headers['content-length']);
        const whole = Number.isSafeInteger(size) && size > 0 ? Buffer.allocUnsafeSlow(size) : undefined;
        let filled = 0;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => {
          if (whole && chunks.length === 0 && filled + c.length <= whole.length) {
            whole.set(c, filled);
            filled += c.length;
          } else chunks.push(c);
        });
        const body = (): Buffer => {
          if (!whole) return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
          return filled === whole.length && chunks.length === 0 ? whole : Buffer.concat([whole.subarray(0, filled), ...chunks]);
        };
        res.on('end', () => resolve({ status: res.statusCode ?? 0, statusText: res.statusMessage ?? '', headers: res.headers, body: body() }));
        res.on('error', reject);
      });
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (retry && req.reusedSocket && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) attempt(false).then(resolve, reject);
        else reject(new NnsError('remote-unreachable', `cannot reach ${this.base}: ${e.code ?? e.message}`, { kind: 'usage' }));
      });
      req.end(body);
    });
    return attempt(true).then((a) => {
      if (a.status >= 200 && a.status < 300) return a;
      let json: { error?: { code?: unknown; message?: unknown }; errors?: DiagnosticJSON[] } | undefined;
      try {
        json = JSON.parse(a.body.toString('utf8')) as typeof json;
      } catch {
        json = undefined;
      }
      throw this.refusal(a.status, a.statusText, json);
    });
  }

  /** The error for a refusal (non-2xx answer) with its JSON body. */
  private refusal(status: number, statusText: string, body: { error?: { code?: unknown; message?: unknown }; errors?: DiagnosticJSON[] } | undefined): Error {
    if (body?.errors?.length) return remoteErrors(body.errors);
    const code = codeOf(body?.error?.code, status === 401 ? 'unauthorized' : 'remote-unreachable');
    const message = typeof body?.error?.message === 'string' ? body.error.message : `${this.base} answered ${status} ${statusText} (is it an nns serve?)`;
    return new NnsError(code, message, { kind: 'usage' });
  }

  /** A request; a refusal by the server becomes one NnsError with its code. */
  private async request(path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.base}${path}`, { ...init, headers: this.headers(init.headers as Record<string, string> | undefined) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (e as Error).message;
      throw new NnsError('remote-unreachable', `cannot reach ${this.base}: ${why}`, { kind: 'usage' });
    }
    if (res.ok) return res;
    let body: { error?: { code?: unknown; message?: unknown }; errors?: DiagnosticJSON[] } | undefined;
    try {
      body = (await res.json()) as typeof body;
    } catch {
      body = undefined;
    }
    throw this.refusal(res.status, res.statusText, body);
  }

  /** The model's tree, config and tokenizer (cached per client). */
  model(name: string): Promise<ClientModel> {
    let p = this.infos.get(name);
    if (!p) {
      p = (async () => {
        const res = await this.call(`/models/${encodeURIComponent(name)}`, 'GET');
        const key = crypto.createHash('sha256').update(res.body).digest('hex');
        const known = SHARED.get(key)?.deref();
        if (known) return known;
        let info: ModelInfoJSON;
        try {
          info = JSON.parse(res.body.toString('utf8')) as ModelInfoJSON;
        } catch {
          throw new NnsError('remote-unreachable', `${this.base} did not answer with a model description (is it an nns serve?)`, { kind: 'usage' });
        }
        const m = clientModel(info);
        SHARED.set(key, new WeakRef(m));
        return m;
      })();
      this.infos.set(name, p);
      p.catch(() => this.infos.delete(name));
    }
    return p;
  }

  /** Submits a trace; resolves with the job id. Only the host values the IR reads are sent. */
  async submit(model: string, graph: Graph, host: ReadonlyMap<string, Tensor>): Promise<string> {
    const res = await this.request('/jobs', { method: 'POST', body: this.body(model, graph, host) as unknown as BodyInit, headers: { 'content-type': CONTAINER_TYPE } });
    const { id } = (await res.json()) as { id: string };
    return id;
  }

  /**
   * Follows the job's status stream until it ends; a failed job throws its diagnostics.
   * `onToken` gets every token a generation chooses, in order (late listeners get them replayed).
   */
  async wait(id: string, onProgress?: ProgressCallback, onToken?: (t: { step: number; row: number; token: number }) => void): Promise<JobEvent> {
    const res = await this.request(`/jobs/${id}/events`);
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let at: number;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
        if (!data) continue;
        const e = JSON.parse(data) as JobEvent;
        if (e.status === 'token' && e.token && onToken) onToken(e.token);
        if (e.status === 'progress' && e.progress && onProgress) {
          const ph = e.progress.phase;
          onProgress({ phase: ph === 'compile' || ph === 'load' ? ph : 'run', done: e.progress.done, total: e.progress.total, rowsDone: 0, rows: 0 });
        }
        if (e.status === 'error') {
          await reader.cancel().catch(() => undefined);
          throw remoteErrors(e.errors ?? []);
        }
        if (e.status === 'completed') {
          await reader.cancel().catch(() => undefined);
          return e;
        }
      }
    }
    throw new NnsError('remote-unreachable', `${this.base} closed the status stream of job ${id} before it ended`, { kind: 'usage' });
  }

  /** A job request: the IR's JSON form and the host values it reads (only those). */
  private body(model: string, graph: Graph, host: ReadonlyMap<string, Tensor>): Buffer {
    const needed = new Map<string, Tensor>();
    for (const n of graph.nodes) if (n.is('host') && host.has(n.attrs.name)) needed.set(n.attrs.name, host.get(n.attrs.name)!);
    return encodeContainer({ model, ir: graphToJSON(graph) }, 'host', needed);
  }

  /** The saves of a completed job, in save order. */
  async result(id: string): Promise<Map<string, Tensor>> {
    return this.decodeBody((await this.call(`/jobs/${id}/result?wait=1`, 'GET')).body, id).tensors;
  }

  /** A result body this client read (its tensors are views into it where aligned: no copy). */
  private decodeBody(body: Buffer, id: string): Container {
    try {
      return decodeContainer(body, 'saves', { view: true });
    } catch (e) {
      if (e instanceof WireError) throw new NnsError('remote-unreachable', `the result of job ${id} is unreadable: ${e.message}`, { kind: 'usage' });
      throw e;
    }
  }


  /**
   * Runs a trace on the server. With `onProgress`: submit, follow the status stream, read the
   * result; without: one request that answers with the result (`POST /jobs?wait=1`).
   */
  async run(model: string, graph: Graph, host: ReadonlyMap<string, Tensor>, onProgress?: ProgressCallback): Promise<Map<string, Tensor>> {
    if (onProgress) {
      const id = await this.submit(model, graph, host);
      await this.wait(id, onProgress);
      return this.result(id);
    }
    const res = await this.call('/jobs?wait=1', 'POST', this.body(model, graph, host), { 'content-type': CONTAINER_TYPE });
    return this.decodeBody(res.body, jobId(res)).tensors;
  }

  /**
   * Runs a generation job (src/generate/job.ts) on the server. With `onToken` (or
   * `onProgress`): submit, follow the status stream — every token as the server chooses it —
   * then read the result; without: one request answered with the result.
   * @returns the per-step saves (`NAME.S`, in step order) and the sequences
   */
  async generate(model: string, lowered: LoweredGenerationJob, onToken?: (t: { step: number; row: number; token: number }) => void, onProgress?: ProgressCallback): Promise<{ saves: Map<string, Tensor>; result: GenerationResultJSON }> {
    const body = encodeContainer({ model, generate: lowered.job }, 'host', lowered.tensors);
    const type = { 'content-type': CONTAINER_TYPE };
    let c: Container;
    let id: string;
    if (onToken || onProgress) {
      const res = await this.call('/jobs', 'POST', body, type);
      id = (JSON.parse(res.body.toString('utf8')) as { id: string }).id;
      await this.wait(id, onProgress, onToken);
      c = this.decodeBody((await this.call(`/jobs/${id}/result?wait=1`, 'GET')).body, id);
    } else {
      const res = await this.call('/jobs?wait=1', 'POST', body, type);
      id = jobId(res);
      c = this.decodeBody(res.body, id);
    }
    const g = c.json.generate as GenerationResultJSON | undefined;
    const ok = g && Array.isArray(g.ids) && g.ids.length === lowered.job.prompts.length && g.ids.every((r) => Array.isArray(r) && r.every((t) => Number.isSafeInteger(t)))
      && Number.isSafeInteger(g.steps) && (g.mode === 'cache' || g.mode === 'recompute');
    if (!ok) throw new NnsError('remote-unreachable', `the result of job ${id} is not a generation's (is the server an nns serve of this version?)`, { kind: 'usage' });
    return { saves: c.tensors, result: g };
  }
}

/** Diagnostics of the server as the errors a local run would throw. */
export function remoteErrors(list: readonly DiagnosticJSON[]): NnsErrors {
  if (list.length === 0) return new NnsErrors([new NnsError('job-failed', 'the job failed without a diagnostic', { kind: 'usage' })]);
  return new NnsErrors(list.map((d) => new NnsError(codeOf(d.code, 'internal'), String(d.message), {
    kind: d.kind === 'script' || d.kind === 'model' ? d.kind : 'usage', ...(d.span ? { span: d.span } : {}), notes: Array.isArray(d.notes) ? d.notes.map(String) : [],
  })));
}
