/**
 * A client of the Open Inference Protocol v2 over HTTP/REST (KServe v2, NVIDIA Triton,
 * `nns serve`): health, model metadata and inference, with the binary tensor data
 * extension (src/oip/protocol.ts). Uses Node's `fetch`.
 *
 * ```ts
 * const client = new OipClient('http://127.0.0.1:8000');
 * await client.ready();                                   // GET /v2/health/ready
 * const meta = await client.modelMetadata('gpt2.ports');  // GET /v2/models/gpt2.ports
 * const out = await client.infer('gpt2.ports', feeds, ['logits']);
 * ```
 * @module
 */
import { NnsError } from '../errors.js';
import type { Tensor } from '../tensor.js';
import { encodeBody, HEADER_LENGTH, OipFormatError, readTensors, splitBody, type OipModelMetadata, type OipTensorMetadata } from './protocol.js';

/**
 * Options of an {@link OipClient}.
 * @category Serving
 */
export interface OipClientOptions {
  /** Extra headers on every request (e.g. `{ authorization: 'Bearer …' }`). */
  headers?: Readonly<Record<string, string>>;
  /** Send and receive tensors in binary (default true); false uses JSON `data` arrays. */
  binary?: boolean;
  /** Per-request time limit in ms (default 300,000). */
  timeoutMs?: number;
}

/**
 * Counters (tests assert which endpoints a run used).
 * @category Serving
 */
export interface OipClientStats {
  /** Requests by endpoint kind. */
  ready: number;
  metadata: number;
  infer: number;
  /** Infer requests sent with binary tensor data. */
  binaryInfer: number;
}

function oneLine(s: string): string {
  const t = s.replace(/\s+/g, ' ').trim();
  return t.length > 300 ? `${t.slice(0, 300)}…` : t;
}

/**
 * An Open Inference Protocol v2 client: `ready()` (`GET /v2/health/ready`), `modelMetadata(name)`
 * (`GET /v2/models/{name}`), `infer(name, inputs, outputs)` (`POST /v2/models/{name}/infer`, binary
 * tensors by default).
 * @category Serving
 */
export class OipClient {
  /** The server's base URL, without a trailing slash. */
  readonly url: string;
  /** Counters. */
  readonly stats: OipClientStats = { ready: 0, metadata: 0, infer: 0, binaryInfer: 0 };

  constructor(url: string, private readonly opts: OipClientOptions = {}) {
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new NnsError('oip-unreachable', `'${url}' is not a URL (want e.g. http://127.0.0.1:8000)`, { kind: 'usage' });
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new NnsError('oip-unreachable', `'${url}' is not an http:// or https:// URL`, { kind: 'usage' });
    this.url = u.toString().replace(/\/+$/, '');
  }

  private async request(method: 'GET' | 'POST', path: string, body?: { bytes: Buffer; headerLength?: number }): Promise<{ status: number; headers: Headers; bytes: Uint8Array }> {
    const headers: Record<string, string> = { ...this.opts.headers };
    if (body) {
      headers['content-type'] = body.headerLength !== undefined ? 'application/octet-stream' : 'application/json';
      if (body.headerLength !== undefined) headers[HEADER_LENGTH] = String(body.headerLength);
    }
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, { method, headers, ...(body ? { body: body.bytes as Uint8Array<ArrayBuffer> } : {}), signal: AbortSignal.timeout(this.opts.timeoutMs ?? 300_000) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      const why = (e as Error).name === 'TimeoutError' ? `no answer within ${((this.opts.timeoutMs ?? 300_000) / 1000).toFixed(0)} s` : cause?.code ?? cause?.message ?? (e as Error).message;
      throw new NnsError('oip-unreachable', `cannot reach the OIP server at ${this.url} (${method} ${path}): ${why}`, { kind: 'model' });
    }
    return { status: res.status, headers: res.headers, bytes: new Uint8Array(await res.arrayBuffer()) };
  }

  /** The server's error for a non-2xx answer: its `error` field when it sends one (as the protocol says), else the body's start. */
  private fail(status: number, bytes: Uint8Array, what: string): NnsError {
    const text = Buffer.from(bytes).toString('utf8');
    let msg = text;
    try {
      const j = JSON.parse(text) as { error?: unknown };
      if (typeof j.error === 'string') msg = j.error;
      // nns serve's own errors (e.g. a missing API key) are {error: {code, message}}
      else if (j.error && typeof (j.error as { message?: unknown }).message === 'string') msg = (j.error as { message: string }).message;
    } catch {
      // not JSON: the text itself
    }
    return new NnsError('oip-error', `the OIP server at ${this.url} refused ${what} (HTTP ${status}): ${oneLine(msg) || '(no message)'}`, { kind: 'model' });
  }

  /** `GET /v2/health/ready`: true when the server is ready for inference. */
  async ready(): Promise<boolean> {
    this.stats.ready++;
    const r = await this.request('GET', '/v2/health/ready');
    return r.status === 200;
  }

  /** `GET /v2/models/{name}[/versions/{v}]`: the model's inputs and outputs. */
  async modelMetadata(name: string, version?: string): Promise<OipModelMetadata> {
    this.stats.metadata++;
    const path = `/v2/models/${encodeURIComponent(name)}${version ? `/versions/${encodeURIComponent(version)}` : ''}`;
    const r = await this.request('GET', path);
    if (r.status !== 200) throw this.fail(r.status, r.bytes, `the metadata request for model '${name}'`);
    let j: Partial<OipModelMetadata>;
    try {
      j = JSON.parse(Buffer.from(r.bytes).toString('utf8')) as Partial<OipModelMetadata>;
    } catch {
      throw this.protocol(`its metadata of model '${name}' is not JSON`);
    }
    const tensors = (x: unknown, f: string): OipTensorMetadata[] => {
      if (!Array.isArray(x) || !x.every((t: Partial<OipTensorMetadata>) => t && typeof t.name === 'string' && typeof t.datatype === 'string' && Array.isArray(t.shape) && t.shape.every((d) => Number.isInteger(d)))) {
        throw this.protocol(`its metadata of model '${name}' has no valid "${f}" (a list of {name, datatype, shape})`);
      }
      return x as OipTensorMetadata[];
    };
    return { ...j, name: typeof j.name === 'string' ? j.name : name, platform: typeof j.platform === 'string' ? j.platform : '', inputs: tensors(j.inputs, 'inputs'), outputs: tensors(j.outputs, 'outputs') };
  }

  private protocol(what: string): NnsError {
    return new NnsError('oip-protocol', `the OIP server at ${this.url} answered something that is not Open Inference Protocol v2: ${what}`, { kind: 'model' });
  }

  /**
   * `POST /v2/models/{name}/infer`: runs the model on `inputs`, returning the `outputs` asked
   * for (all of the model's outputs when `outputs` is omitted).
   */
  async infer(name: string, inputs: Readonly<Record<string, Tensor>>, outputs?: readonly string[], opts: { binary?: boolean; id?: string } = {}): Promise<Record<string, Tensor>> {
    const binary = opts.binary ?? this.opts.binary ?? true;
    this.stats.infer++;
    if (binary) this.stats.binaryInfer++;
    const head: Record<string, unknown> = {
      ...(opts.id ? { id: opts.id } : {}),
      ...(outputs ? { outputs: outputs.map((o) => ({ name: o, ...(binary ? { parameters: { binary_data: true } } : {}) })) } : {}),
    };
    let enc;
    try {
      enc = encodeBody(head, 'inputs', Object.entries(inputs).map(([n, t]) => ({ name: n, tensor: t, binary })));
    } catch (e) {
      if (e instanceof OipFormatError) throw new NnsError('oip-unsupported', `cannot send this request as JSON: ${e.message}`, { kind: 'usage' });
      throw e;
    }
    const r = await this.request('POST', `/v2/models/${encodeURIComponent(name)}/infer`, { bytes: enc.body, ...(enc.headerLength !== undefined ? { headerLength: enc.headerLength } : {}) });
    if (r.status !== 200) throw this.fail(r.status, r.bytes, `an inference request to model '${name}'`);
    try {
      const { json, rest } = splitBody(r.bytes, r.headers.get(HEADER_LENGTH));
      const got = readTensors((json as { outputs?: unknown }).outputs, rest, 'outputs');
      const result: Record<string, Tensor> = {};
      for (const o of outputs ?? [...got.keys()]) {
        const t = got.get(o);
        if (!t) throw new OipFormatError(`output '${o}' is missing from the response`);
        result[o] = t;
      }
      return result;
    } catch (e) {
      if (e instanceof OipFormatError) throw this.protocol(`its answer from model '${name}': ${e.message}`);
      throw e;
    }
  }
}
