/**
 * Fast-path traces on an Open Inference Protocol v2 server (issue 13.5), against `nns
 * serve`'s `/v2` endpoints (src/serve/oip.ts; no Triton on this machine):
 * - every reference.json case, on both gpt2-facts exports: where the local fast path runs it, the same trace through
 *   `oip(url, name)` gives the local run's saves bit for bit (and the PyTorch reference);
 *   where the local run needs the compiler (skip_block, gradients) or generates, the remote
 *   model refuses clearly (`oip-needs-compiler`, `oip-unsupported`) instead of running locally;
 * - the endpoints: health, metadata, infer in JSON and with the binary tensor extension
 *   (raw HTTP, checked against reference.json), and the protocol's errors (unknown model or
 *   version → 404, a bad request → 400, both `{"error": "..."}`);
 * - client errors: unknown model, unreachable server, a server holding another model
 *   (`oip-model-mismatch`), a missing API key; `nns run --oip` prints what a local run prints.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { grad, LanguageModel, NnsError, oip, type ModelRef, type OipExecutor, type Tensor, type TraceResult } from '../../src/index.js';
import type { FastExecutor } from '../../src/fast/execute.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { KeySet } from '../../src/serve/limits.js';
import { main, type CliIO } from '../../src/cli/main.js';
import { MODEL_DIR, ROOT, refCase, expectClose, argmax, row, mod } from '../helpers/reference.js';
import type { TensorProxy } from '../../src/trace.js';

const DYNAMO = path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx');
let server: NnsServer;
let local: LanguageModel;
let remote: LanguageModel;
let ex: OipExecutor;

/** Both gpt2-facts exports, served as `gpt2` (TorchScript names) and `dyn` (dynamo): a local model and one planned locally, run on the server. */
const models = new Map<string, { local: LanguageModel; remote: LanguageModel; ex: OipExecutor }>();

beforeAll(async () => {
  server = await startServer({ models: [{ name: 'gpt2', path: MODEL_DIR }, { name: 'dyn', path: DYNAMO }], port: 0 });
  for (const [name, p] of [['gpt2', MODEL_DIR], ['dyn', DYNAMO]] as const) {
    const e = oip(server.url, name);
    models.set(name, { local: await LanguageModel.load(p), ex: e, remote: await LanguageModel.load(p, { executor: e }) });
  }
  ({ local, remote, ex } = models.get('gpt2')!);
}, 120_000);
afterAll(async () => {
  for (const m of models.values()) {
    await m.local.dispose();
    await m.remote.dispose();
  }
  await server?.close();
});

function bytes(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

/** Runs `trace` locally and through the OIP server: the same saves, bit for bit, when the local run took the fast path. */
async function same(label: string, trace: (m: LanguageModel) => Promise<TraceResult>): Promise<{ saves: Record<string, Tensor>; fast: boolean }> {
  const stats = (local.mc.fast as FastExecutor).stats;
  const before = stats.fastRuns;
  const a = await trace(local);
  const fast = stats.fastRuns > before;
  if (!fast) return { saves: a.saves, fast };
  const infers = ex.client.stats.infer;
  const b = await trace(remote);
  expect(ex.client.stats.infer, `${label}: ran on the server`).toBeGreaterThan(infers);
  expect(Object.keys(b.saves).sort(), label).toEqual(Object.keys(a.saves).sort());
  for (const [k, t] of Object.entries(a.saves)) {
    expect([b.saves[k]!.dtype, [...b.saves[k]!.shape]], `${label} ${k}`).toEqual([t.dtype, [...t.shape]]);
    expect(bytes(b.saves[k]!).equals(bytes(t)), `${label} ${k}: bit for bit`).toBe(true);
  }
  return { saves: a.saves, fast };
}

async function refuses(p: Promise<unknown>, code: string): Promise<NnsError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e).toBeInstanceOf(NnsError);
  expect((e as NnsError).code).toBe(code);
  return e as NnsError;
}

describe.each([{ name: 'gpt2', label: 'TorchScript' }, { name: 'dyn', label: 'dynamo' }])('every reference.json case through the OIP client ($label export)', ({ name }) => {
  beforeAll(() => { ({ local, remote, ex } = models.get(name)!); });
  afterAll(() => { ({ local, remote, ex } = models.get('gpt2')!); });

  it('clean_logits', async () => {
    const c = refCase('clean_logits');
    const r = await same('clean_logits', (m) => m.trace(c.input_ids as number[], (x) => { x.output.logits.at(':', -1, ':').save('last'); }));
    expect(r.fast).toBe(true);
    expectClose(r.saves.last!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('save_outputs', async () => {
    const c = refCase('save_outputs');
    const e = c.expect as Record<string, { values: number[] }>;
    const r = await same('save_outputs', (m) => m.trace(c.input_ids as number[], (x) => { for (const p of Object.keys(e)) mod(x, p).output.save(p); }));
    expect(r.fast).toBe(true);
    for (const [p, want] of Object.entries(e)) expectClose(r.saves[p]!.data as Float32Array, want.values, 1e-4, p);
  });

  it('zero_ablate_mlp, every layer', async () => {
    const c = refCase('zero_ablate_mlp');
    for (const k of c.expect as { layer: number; p_answer: number; top1: number; last_logits: number[] }[]) {
      const r = await same(`zero_ablate_mlp ${k.layer}`, (m) => m.trace(c.input_ids as number[], (x) => {
        x.transformer.h[k.layer]!.mlp.output = 0;
        x.output.logits.at(':', -1, ':').save('last');
      }));
      expect(r.fast).toBe(true);
      expectClose(r.saves.last!.data as Float32Array, k.last_logits, 1e-4);
    }
  });

  it('patch_block_outputs, the whole grid (source run, then the patched run)', async () => {
    const c = refCase('patch_block_outputs');
    const grid = c.expect as number[][][];
    for (let k = 0; k < grid.length; k++) {
      for (let p = 0; p < grid[k]!.length; p++) {
        const r = await same(`patch ${k},${p}`, (m) => m.trace((tr) => {
          let hb = undefined as unknown as TensorProxy;
          tr.invoke(c.source_ids!, (x) => { hb = x.transformer.h[k]!.output.at(':', p, ':'); });
          tr.invoke(c.input_ids as number[], (x) => {
            x.transformer.h[k]!.output.at(':', p, ':').set(hb);
            x.output.logits.at(':', -1, ':').softmax(-1).save('probs');
          });
        }));
        expect(r.fast).toBe(true);
        const probs = r.saves.probs!.data as Float32Array;
        expect(Math.abs(probs[c.answer_id!]! - grid[k]![p]![0]!)).toBeLessThanOrEqual(1e-5);
        expect(Math.abs(probs[c.source_answer_id!]! - grid[k]![p]![1]!)).toBeLessThanOrEqual(1e-5);
      }
    }
  }, 120_000);

  it('steer_add', async () => {
    const c = refCase('steer_add');
    const r = await same('steer_add', (m) => m.trace(c.input_ids as number[], (x) => {
      const h = x.transformer.h[c.layer!]!;
      h.output = h.output.add(new Float32Array(c.vector!).map((v) => v * c.alpha!));
      x.output.logits.at(':', -1, ':').save('last');
    }));
    expect(r.fast).toBe(true);
    expectClose(r.saves.last!.data as Float32Array, (c.expect as { last_logits: number[] }).last_logits, 1e-4);
  });

  it('logit_lens (module models on the server)', async () => {
    const c = refCase('logit_lens');
    const e = c.expect as { layer: number; p_answer: number; top1: number; p_top1: number }[];
    const modules = ex.client.stats.infer;
    const r = await same('logit_lens', (m) => m.trace(c.input_ids as number[], (x) => {
      for (const k of e) x.lm_head(x.transformer.ln_f(x.transformer.h[k.layer]!.output.at(':', -1, ':'))).softmax(-1).save(`lens.${k.layer}`);
    }));
    expect(r.fast).toBe(true);
    expect(ex.client.stats.infer - modules).toBeGreaterThanOrEqual(3); // main run + ln_f + lm_head
    for (const k of e) {
      const probs = r.saves[`lens.${k.layer}`]!.data as Float32Array;
      expect(argmax(probs), `layer ${k.layer}`).toBe(k.top1);
      expect(Math.abs(probs[k.top1]! - k.p_top1)).toBeLessThanOrEqual(1e-5);
      expect(Math.abs(probs[c.answer_id!]! - k.p_answer)).toBeLessThanOrEqual(1e-5);
    }
  });

  it('batched_cross_prompt', async () => {
    const c = refCase('batched_cross_prompt');
    const [a, b] = c.input_ids as number[][];
    const e = c.expect as { row0: number[]; row1: number[] };
    const r = await same('batched_cross_prompt', (m) => m.trace((tr) => {
      tr.invoke(a!, () => {});
      let hb = undefined as unknown as TensorProxy;
      tr.invoke(b!, (x) => { hb = x.transformer.h[c.layer!]!.output.at(':', -1, ':'); });
      tr.model.transformer.h[c.layer!]!.output.at(0, -1, ':').set(hb.at(0));
      tr.model.output.logits.at(':', -1, ':').save('last');
    }));
    expect(r.fast).toBe(true);
    expectClose(row(r.saves.last!, 0), e.row0, 1e-4, 'row0');
    expectClose(row(r.saves.last!, 1), e.row1, 1e-4, 'row1');
  });

  it('attention_probs (an operation inside attention): the same path as locally', async () => {
    const c = refCase('attention_probs');
    const trace = (m: LanguageModel): Promise<TraceResult> => m.trace(c.input_ids as number[], (x) => { x.transformer.h[1]!.attn.op('Softmax').output.save('probs'); });
    const r = await same('attention_probs', trace);
    expectClose(r.saves.probs!.data as Float32Array, (c.expect as { values: number[] }).values, 1e-4);
    if (!r.fast) await refuses(trace(remote), 'oip-needs-compiler');
  });

  it('skip_block and gradients need the compiler: refused remotely (oip-needs-compiler), never run locally', async () => {
    const skip = refCase('skip_block');
    const local0 = (local.mc.fast as FastExecutor).stats.fastRuns;
    const r = await same('skip_block', (m) => m.trace(skip.input_ids as number[], (x) => {
      const b = x.transformer.h[skip.layer!]!;
      b.output = b.input;
      x.output.logits.at(':', -1, ':').save('last');
    }));
    expect(r.fast).toBe(false);
    expect((local.mc.fast as FastExecutor).stats.fastRuns).toBe(local0);
    expectClose(r.saves.last!.data as Float32Array, (skip.expect as { last_logits: number[] }).last_logits, 1e-4);
    const e = await refuses(remote.trace(skip.input_ids as number[], (x) => {
      const b = x.transformer.h[skip.layer!]!;
      b.output = b.input;
      x.output.logits.at(':', -1, ':').save('last');
    }), 'oip-needs-compiler');
    expect(e.message).toMatch(new RegExp(`needs the compiled path \\(.*\\), but the model runs on the OIP server http://127\\.0\\.0\\.1:\\d+ \\(model ${name}\\)`));
    const g = refCase('gradients');
    await refuses(remote.trace(g.input_ids as number[], (x) => {
      const y = x.output.logits.at(0, -1, g.answer_id!);
      grad(y, x.transformer.h[1]!.output).save('g');
    }), 'oip-needs-compiler');
  });

  it('generate: refused remotely (oip-unsupported)', async () => {
    const c = refCase('generate');
    await refuses(remote.generate(c.input_ids as number[], { maxNewTokens: 2 }), 'oip-unsupported');
  });

  it('JSON tensors instead of binary: the same bits', async () => {
    const json = oip(server.url, name, { binary: false });
    const m = await LanguageModel.load(name === 'gpt2' ? MODEL_DIR : DYNAMO, { executor: json });
    const c = refCase('steer_add');
    const fn = (x: ModelRef): void => {
      const h = x.transformer.h[c.layer!]!;
      h.output = h.output.add(new Float32Array(c.vector!).map((v) => v * c.alpha!));
      x.output.logits.at(':', -1, ':').save('last');
      x.lm_head(x.transformer.ln_f(x.transformer.h[1]!.output.at(':', -1, ':'))).save('lens');
    };
    const a = await local.trace(c.input_ids as number[], fn);
    const b = await m.trace(c.input_ids as number[], fn);
    for (const k of ['last', 'lens']) expect(bytes(b.saves[k]!).equals(bytes(a.saves[k]!)), k).toBe(true);
    expect(json.client.stats.infer).toBeGreaterThanOrEqual(3);
    expect(json.client.stats.binaryInfer).toBe(0);
    await m.dispose();
  });
});

describe('the OIP endpoints', () => {
  const get = async (p: string): Promise<{ status: number; json: unknown; text: string }> => {
    const r = await fetch(`${server.url}${p}`);
    const text = await r.text();
    let json: unknown;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: r.status, json, text };
  };

  it('health and metadata', async () => {
    expect(await ex.client.ready()).toBe(true);
    expect((await get('/v2/health/live')).status).toBe(200);
    const meta = await ex.client.modelMetadata('gpt2.ports');
    expect(meta.platform).toBe('onnxruntime_onnx');
    expect(meta.inputs[0]).toEqual({ name: 'input_ids', datatype: 'INT64', shape: [-1, -1] });
    expect(meta.inputs.some((i) => /^port\.\d+\.keep$/.test(i.name) && i.datatype === 'FP32')).toBe(true);
    expect(meta.outputs.some((o) => o.name === 'logits')).toBe(false); // the tail (lm_head) is its own model (src/fast/tail.ts)
    const lm = await ex.client.modelMetadata('gpt2.module.lm_head', '1');
    expect(lm.outputs).toEqual([{ name: 'logits', datatype: 'FP32', shape: [-1, -1, -1] }]);
    expect((await get('/v2/models/gpt2/ready')).status).toBe(200);
  });

  it('infer on the plain model, JSON in and out, then binary in and out: reference.json clean_logits', async () => {
    const c = refCase('clean_logits');
    const ids = c.input_ids as number[];
    const meta = await ex.client.modelMetadata('gpt2');
    const data: Record<string, number[]> = { input_ids: ids, attention_mask: ids.map(() => 1), position_ids: ids.map((_, i) => i) };
    const inputs = meta.inputs.map((i) => ({ name: i.name, datatype: 'INT64', shape: [1, ids.length], data: data[i.name]! }));
    // JSON
    const r = await fetch(`${server.url}/v2/models/gpt2/infer`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ id: 'q1', inputs, outputs: [{ name: 'logits' }] }) });
    expect(r.status).toBe(200);
    const j = await r.json() as { model_name: string; id: string; outputs: { name: string; datatype: string; shape: number[]; data: number[] }[] };
    expect([j.model_name, j.id, j.outputs[0]!.name, j.outputs[0]!.datatype]).toEqual(['gpt2', 'q1', 'logits', 'FP32']);
    const V = j.outputs[0]!.shape[2]!;
    const want = (c.expect as { last_logits: number[] }).last_logits;
    expectClose(j.outputs[0]!.data.slice((ids.length - 1) * V), want, 1e-4, 'JSON');
    // binary, written by hand: JSON header, then the raw int64 tensors in order
    const blobs = inputs.map((i) => Buffer.from(BigInt64Array.from(i.data.map(BigInt)).buffer));
    const head = Buffer.from(JSON.stringify({ inputs: inputs.map((i, k) => ({ name: i.name, datatype: i.datatype, shape: i.shape, parameters: { binary_data_size: blobs[k]!.length } })), outputs: [{ name: 'logits', parameters: { binary_data: true } }] }));
    const rb = await fetch(`${server.url}/v2/models/gpt2/infer`, { method: 'POST', headers: { 'inference-header-content-length': String(head.length), 'content-type': 'application/octet-stream' }, body: Buffer.concat([head, ...blobs]) });
    expect(rb.status).toBe(200);
    const body = Buffer.from(await rb.arrayBuffer());
    const n = Number(rb.headers.get('inference-header-content-length'));
    const hj = JSON.parse(body.subarray(0, n).toString()) as { outputs: { parameters: { binary_data_size: number } }[] };
    const size = hj.outputs[0]!.parameters.binary_data_size;
    expect(body.length).toBe(n + size);
    const logits = new Float32Array(body.buffer.slice(body.byteOffset + n, body.byteOffset + n + size));
    expectClose(logits.subarray((ids.length - 1) * V), want, 1e-4, 'binary');
    // and the JSON answer's numbers are the binary answer's
    expect(Float32Array.from(j.outputs[0]!.data)).toEqual(logits);
  });

  it('errors: unknown model and version → 404, bad requests → 400, each {"error": "..."}', async () => {
    const nope = await get('/v2/models/nope');
    expect(nope.status).toBe(404);
    expect(nope.json).toEqual({ error: expect.stringMatching(/^unknown model 'nope'/) });
    const v2 = await get('/v2/models/gpt2.ports/versions/2');
    expect([v2.status, (v2.json as { error: string }).error]).toEqual([404, "model 'gpt2.ports' has no version '2' (versions: 1)"]);
    const post = async (model: string, body: string | Uint8Array<ArrayBuffer>, headers: Record<string, string> = {}): Promise<{ status: number; error: string }> => {
      const r = await fetch(`${server.url}/v2/models/${model}/infer`, { method: 'POST', headers, body });
      return { status: r.status, error: ((await r.json()) as { error: string }).error };
    };
    expect(await post('nope', '{}')).toEqual({ status: 404, error: expect.stringMatching(/^unknown model 'nope'/) });
    expect(await post('gpt2', 'not json')).toEqual({ status: 400, error: expect.stringMatching(/not valid JSON/) });
    expect(await post('gpt2', JSON.stringify({ inputs: [{ name: 'x', datatype: 'INT64', shape: [1], data: [1] }] }))).toEqual({ status: 400, error: "model 'gpt2' has no input 'x' (inputs: input_ids, attention_mask, position_ids)" });
    expect(await post('gpt2', JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'FP32', shape: [1, 1], data: [1] }] }))).toEqual({ status: 400, error: "input 'input_ids' of model 'gpt2' is INT64, not FP32" });
    expect(await post('gpt2', JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 2], data: [1] }] }))).toEqual({ status: 400, error: "input 'input_ids': 1 elements of data, but shape [1, 2] has 2" });
    expect(await post('gpt2', JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 1], data: [1] }] }))).toEqual({ status: 400, error: "model 'gpt2' needs inputs 'attention_mask', 'position_ids'" });
    const lmIn = (await ex.client.modelMetadata('gpt2.module.lm_head')).inputs[0]!.name;
    expect(await post('gpt2.module.lm_head', JSON.stringify({ inputs: [{ name: lmIn, datatype: 'FP32', shape: [1, 1, 1], data: [0] }], outputs: [{ name: 'nope' }] }))).toEqual({ status: 400, error: "model 'gpt2.module.lm_head' has no output 'nope'" });
    expect(await post('gpt2.module.lm_head', JSON.stringify({ inputs: [{ name: lmIn, datatype: 'FP32', shape: [1, 1], data: [0] }] }))).toEqual({ status: 400, error: `input '${lmIn}' of model 'gpt2.module.lm_head' has shape [-1, -1, -1], not [1, 1]` });
    const head = JSON.stringify({ inputs: [{ name: 'input_ids', datatype: 'INT64', shape: [1, 1], parameters: { binary_data_size: 16 } }] });
    expect(await post('gpt2', new Uint8Array(Buffer.concat([Buffer.from(head), Buffer.alloc(8)])), { 'inference-header-content-length': String(head.length) }))
      .toEqual({ status: 400, error: "input 'input_ids': binary_data_size 16 runs past the end of the body" });
    expect(await post('gpt2', new Uint8Array(Buffer.from(head)), { 'inference-header-content-length': '999999' })).toEqual({ status: 400, error: expect.stringMatching(/Inference-Header-Content-Length "999999" is not a length within the body/) });
    const none = await get('/v2/nothing');
    expect([none.status, (none.json as { error: string }).error]).toEqual([404, 'no such endpoint: GET /v2/nothing']);
  });
});

describe('client errors', () => {
  it('an unknown model on the server: oip-error naming it', async () => {
    const m = await LanguageModel.load(MODEL_DIR, { executor: oip(server.url, 'other') });
    const e = await refuses(m.trace([464, 318], (x) => { x.output.logits.save('l'); }), 'oip-error');
    expect(e.message).toMatch(/refused the metadata request for model 'other\.ports' \(HTTP 404\): unknown model 'other\.ports'/);
    await m.dispose();
  });

  it('a server that is not there: oip-unreachable', async () => {
    // a port nothing listens on: taken from the system, then released
    const s = http.createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const { port } = s.address() as AddressInfo;
    await new Promise<void>((r) => s.close(() => r()));
    const m = await LanguageModel.load(MODEL_DIR, { executor: oip(`http://127.0.0.1:${port}`, 'gpt2') });
    const e = await refuses(m.trace([464, 318], (x) => { x.output.logits.save('l'); }), 'oip-unreachable');
    expect(e.message).toBe(`cannot reach the OIP server at http://127.0.0.1:${port} (GET /v2/models/gpt2.ports): ECONNREFUSED`);
    await m.dispose();
  });

  it('another model under that name: oip-model-mismatch, nothing run', async () => {
    const m = await LanguageModel.load(MODEL_DIR, { executor: oip(server.url, 'dyn') });
    const x = m.mc.fast as FastExecutor & { runner: unknown };
    const e = await refuses(m.trace([464, 318], (y) => { y.output.logits.save('l'); }), 'oip-model-mismatch');
    expect(e.message).toMatch(/model 'dyn\.ports' on http:.* is not the instrumented model of this model/);
    expect(x.stats.fastRuns).toBe(0);
    await m.dispose();
  });

  it('a server that answers something else: oip-protocol', async () => {
    const s = http.createServer((req, res) => {
      if (req.url?.endsWith('/infer')) res.writeHead(200, { 'content-type': 'application/json' }).end('{"outputs": [{"name": "logits", "datatype": "FP32", "shape": [2], "data": [1]}]}');
      else res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hello</html>');
    });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    try {
      const m = await LanguageModel.load(MODEL_DIR, { executor: oip(url, 'gpt2') });
      const e = await refuses(m.trace([464, 318], (x) => { x.output.logits.save('l'); }), 'oip-protocol');
      expect(e.message).toBe(`the OIP server at ${url} answered something that is not Open Inference Protocol v2: its metadata of model 'gpt2.ports' is not JSON`);
      await m.dispose();
      const c = oip(url, 'gpt2').client;
      const e2 = await refuses(c.infer('x', { a: { dtype: 'float32', shape: [1], data: Float32Array.of(0) } }, ['logits']), 'oip-protocol');
      expect(e2.message).toMatch(/its answer from model 'x': output 'logits': 1 elements of data, but shape \[2\] has 2$/);
    } finally {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  });

  it('not a URL: a usage error at oip()', () => {
    expect(() => oip('localhost:8000', 'gpt2')).toThrow(/is not an http:\/\/ or https:\/\/ URL/);
    expect(() => oip('http://x', 'a/b')).toThrow(/cannot name a served model/);
  });
});

describe('nns run --oip', () => {
  async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
    let o = '';
    let e = '';
    const io: CliIO = { out: (t) => void (o += `${t}\n`), err: (t) => void (e += `${t}\n`), cwd: ROOT, env: { ...process.env, ...env } };
    return { code: await main(args, io), out: o, err: e };
  }

  it('prints what the local run prints', async () => {
    const a = await cli(['run', 'examples/eiffel.nns', '--progress', 'none']);
    const b = await cli(['run', 'examples/eiffel.nns', '--oip', server.url, '--oip-model', 'gpt2', '--progress', 'none']);
    expect(a.code, a.err).toBe(0);
    expect(b.err).toBe('');
    expect(b.code).toBe(0);
    expect(b.out).toBe(a.out);
    expect(a.out).toMatch(/Paris/);
  });

  it('a script the fast path cannot run, a generate, a missing key: one clear line, exit 2', async () => {
    const withKeys = await startServer({ models: [{ name: 'gpt2', path: MODEL_DIR }], port: 0, keys: new KeySet(['s3cret']), limits: { maxRequestBytes: 256 * 1024 } });
    try {
      const r = await cli(['run', 'examples/eiffel.nns', '--oip', withKeys.url, '--oip-model', 'gpt2', '--progress', 'none']);
      expect([r.code, r.out]).toEqual([2, '']);
      expect(r.err).toMatch(/^nns: error\[oip-error\]: the OIP server at http:.* refused the metadata request for model 'gpt2\.ports' \(HTTP 401\): this server needs an API key/);
      const ok = await cli(['run', 'examples/eiffel.nns', '--oip', withKeys.url, '--oip-model', 'gpt2', '--progress', 'none'], { NNS_API_KEY: 's3cret' });
      expect([ok.code, ok.err]).toEqual([0, '']);
      expect(ok.out).toMatch(/Paris/);
      // the server's request limit bounds /v2 infer bodies: 413 in the protocol's form
      const big = await fetch(`${withKeys.url}/v2/models/gpt2.ports/infer`, { method: 'POST', headers: { authorization: 'Bearer s3cret', 'content-type': 'application/json' }, body: `{"inputs": [], "pad": "${'x'.repeat(300 * 1024)}"}` });
      expect(big.status).toBe(413);
      expect(await big.json()).toEqual({ error: expect.stringMatching(/larger than this server allows \(262,144 bytes\)/) });
      // health needs no key
      expect((await fetch(`${withKeys.url}/v2/health/ready`)).status).toBe(200);
    } finally {
      await withKeys.close();
    }
    const r2 = await cli(['run', 'examples/eiffel.nns', '--oip-model', 'gpt2']);
    expect([r2.code, r2.err]).toEqual([2, expect.stringMatching(/^nns: error\[bad-flag\]: --oip-model needs --oip URL/)]);
  }, 120_000);
});
