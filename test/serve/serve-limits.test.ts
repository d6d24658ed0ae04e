/**
 * `nns serve` refusals, each one clear line `nns: error[CODE]: ...` with exit code 2 from
 * `nns run --remote`: missing, wrong and unknown keys, an unknown model, a request over the
 * byte limit, a trace over the IR-node limit, saves over the element limit, a job over the
 * run time (its worker is stopped; the server keeps serving); malformed requests answered
 * with one JSON error line; another key never sees a job; no server path or stack trace in
 * any answer. One server (port 0, 127.0.0.1) with a key file and small limits.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { KeySet } from '../../src/serve/limits.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { RemoteClient } from '../../src/remote/client.js';
import { encodeContainer, MAGIC } from '../../src/serve/protocol.js';
import { MODEL_DIR, ROOT } from '../helpers/reference.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-serve-limits-'));
const KEYS = path.join(TMP, 'keys.txt');
const KEY = 'k-0123456789abcdef';
const OTHER = 'k-fedcba9876543210';
let server: NnsServer;

beforeAll(async () => {
  fs.writeFileSync(KEYS, `# keys\n${KEY}\n\n${OTHER}\n`);
  server = await startServer({
    models: [{ name: 'gpt2', path: MODEL_DIR }], port: 0, host: '127.0.0.1', keys: KeySet.fromFile(KEYS),
    limits: { maxRequestBytes: 200_000, maxIrNodes: 100, maxSavedElements: 5000, maxRunMs: 3000 },
    workerEnv: { NNS_SERVE_TEST_STALL: '1' },
  });
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(TMP, { recursive: true, force: true });
});

function script(name: string, body: string): string {
  const f = path.join(TMP, name);
  fs.writeFileSync(f, `trace "The Eiffel Tower is in the city of" {\n${body}\n}\n`);
  return f;
}

async function run(file: string, env: Record<string, string>, model = 'gpt2'): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIO = { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`), cwd: ROOT, env };
  const code = await main(['run', file, '--remote', server.url, '--model', model], io);
  return { code, out, err };
}

/** One line `nns: error[CODE]: ...`, exit 2, nothing on stdout. */
function oneLine(r: { code: number; out: string; err: string }, code: string): string {
  expect(r.code, r.err).toBe(2);
  expect(r.out).toBe('');
  const lines = r.err.trimEnd().split('\n');
  expect(lines, r.err).toHaveLength(1);
  expect(lines[0]).toMatch(new RegExp(`^nns: error\\[${code}\\]: \\S`));
  return lines[0]!;
}

/** No server path, no stack trace. */
function clean(text: string): void {
  for (const p of [MODEL_DIR, ROOT, os.tmpdir(), os.homedir()]) expect(text.includes(p), `'${p}' in ${text.slice(0, 200)}`).toBe(false);
  expect(text).not.toMatch(/\n\s+at /);
}

describe('nns serve: keys', () => {
  it('a right key runs; a missing, wrong or unknown key is refused in one line', async () => {
    const ok = script('ok.nns', '  h1 = model.transformer.h[1].output[0, -1, 0:4].save()');
    const r = await run(ok, { NNS_API_KEY: KEY });
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('h1: float32 [4]');
    expect((await run(ok, { NNS_API_KEY: OTHER })).code).toBe(0);
    expect(oneLine(await run(ok, {}), 'unauthorized')).toContain('needs an API key');
    expect(oneLine(await run(ok, { NNS_API_KEY: 'k-0123456789abcdeX' }), 'unauthorized')).toContain('not valid');
    expect(oneLine(await run(ok, { NNS_API_KEY: 'something-else-entirely' }), 'unauthorized')).toContain('not valid');
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    const models = await fetch(`${server.url}/models`, { headers: { authorization: 'Bearer nope' } });
    expect(models.status).toBe(401);
  });

  it('an unknown model is one line naming the served models', async () => {
    const ok = script('ok2.nns', '  model.transformer.h[1].output.save()');
    expect(oneLine(await run(ok, { NNS_API_KEY: KEY }, 'gpt3'), 'unknown-model')).toBe("nns: error[unknown-model]: this server has no model 'gpt3' (it serves: gpt2)");
  });

  it('a job is visible to its own key only; its result can be fetched later by id', async () => {
    const c1 = new RemoteClient(server.url, { apiKey: KEY });
    const c2 = new RemoteClient(server.url, { apiKey: OTHER });
    const m = await c1.model('gpt2');
    const { lowerTrace } = await import('../../grammar/lower.js');
    const { parseScript } = await import('../../grammar/parse.js');
    const ast = parseScript('trace "The Louvre is in" { h0 = model.transformer.h[0].output[0, 0, 0:2].save() }', 'x.nns').ast!;
    const { traces } = await import('../../grammar/script.js');
    const g = lowerTrace(traces(ast)[0]!, { file: 'x.nns', tokenize: (t) => m.tokenizer!.encode(t), tree: m.tree });
    const id = await c1.submit('gpt2', g.graph, new Map());
    // The client "disconnects" (never follows the stream) and fetches the result later.
    const res = await c1.result(id);
    expect([...res.keys()]).toEqual(['h0']);
    await expect(c2.result(id)).rejects.toMatchObject({ code: 'job-not-found' });
    const raw = await fetch(`${server.url}/jobs/${id}/events`, { headers: { authorization: `Bearer ${KEY}` } });
    const text = await raw.text();
    expect(text).toMatch(/event: queued[\s\S]*event: running[\s\S]*event: completed/);
  });
});

describe('nns serve: limits', () => {
  it('a request over the byte limit', async () => {
    const big = Array.from({ length: 20_000 }, (_, i) => Math.sin(i + 0.5)).join(', ');
    const f = script('big.nns', `  x = [${big}]\n  y = (model.transformer.h[0].output[0, 0, 0] + x).save()`);
    const line = oneLine(await run(f, { NNS_API_KEY: KEY }), 'over-limit');
    expect(line).toContain('200,000 bytes');
    const raw = await fetch(`${server.url}/jobs`, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-length': '999999' }, body: Buffer.alloc(999_999) });
    expect(raw.status).toBe(413);
  });

  it('a trace over the IR-node limit', async () => {
    const f = script('many.nns', '  for i in 0..40 {\n    v = (model.transformer.h[0].output[0, 0, 0] + i).save()\n  }');
    expect(oneLine(await run(f, { NNS_API_KEY: KEY }), 'over-limit')).toMatch(/IR nodes; this server allows 100 per job/);
  });

  it('saves over the element limit', async () => {
    const f = script('saves.nns', '  logits = model.output.logits.save()');
    expect(oneLine(await run(f, { NNS_API_KEY: KEY }), 'over-limit')).toBe('nns: error[over-limit]: the trace saves 6,992 elements; this server allows 5,000 per job');
  });

  it('a job over the run time is stopped and fails; the server keeps serving', async () => {
    const f = script('stall.nns', '  __stall__ = model.transformer.h[0].output[0, 0, 0].save()');
    expect(oneLine(await run(f, { NNS_API_KEY: KEY }), 'over-limit')).toContain('ran longer than this server allows (3 s)');
    const ok = script('after.nns', '  h1 = model.transformer.h[1].output[0, -1, 0:4].save()');
    const r = await run(ok, { NNS_API_KEY: KEY });
    expect(r.code, r.err).toBe(0);
  });
});

/** A container with this JSON part and no data. */
function container(json: string): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(Buffer.byteLength(json));
  return Buffer.concat([Buffer.from(MAGIC), len, Buffer.from(json)]);
}

describe('nns serve: a slow job in a shared batch', () => {
  it('passing the run time fails the slow job only: the jobs of its batch run again alone', async () => {
    const c = new RemoteClient(server.url, { apiKey: KEY });
    const c2 = new RemoteClient(server.url, { apiKey: OTHER });
    const m = await c.model('gpt2');
    const { lowerTrace } = await import('../../grammar/lower.js');
    const { parseScript } = await import('../../grammar/parse.js');
    const { traces } = await import('../../grammar/script.js');
    const lower = (src: string) => lowerTrace(traces(parseScript(src, 's.nns').ast!)[0]!, { file: 's.nns', tokenize: (t) => m.tokenizer!.encode(t), tree: m.tree }).graph;
    server.jobs.hold();
    const ok = await c2.submit('gpt2', lower('trace "The Eiffel Tower is in" { h = model.transformer.h[0].output[0, 0, 0:3].save() }'), new Map());
    const slow = await c.submit('gpt2', lower('trace "The Eiffel Tower is in" { __stall__ = model.transformer.h[0].output[0, 0, 0].save() }'), new Map());
    server.jobs.release();
    const okResult = await c2.result(ok);
    expect(okResult.get('h')!.shape).toEqual([3]);
    await expect(c.result(slow)).rejects.toMatchObject({ errors: [expect.objectContaining({ code: 'over-limit' })] });
  });
});

describe('nns serve: malformed requests', () => {
  const post = async (body: Uint8Array | string): Promise<{ status: number; text: string }> => {
    const r = await fetch(`${server.url}/jobs`, { method: 'POST', headers: { authorization: `Bearer ${KEY}` }, body: body as unknown as BodyInit });
    return { status: r.status, text: await r.text() };
  };
  it('each is answered with one JSON error line, no path, no stack', async () => {
    const cases: [Uint8Array | string, string][] = [
      ['hello', 'not a tensor container'],
      [Buffer.concat([Buffer.from(MAGIC), Buffer.from([5, 0, 0, 0]), Buffer.from('{"a":')]), 'not JSON'],
      [encodeContainer({ model: 'gpt2', ir: { format: 'onnsight-ir', version: 9 } }, 'host', []), 'unsupported version'],
      [encodeContainer({ model: 'gpt2', ir: { format: 'onnsight-ir', version: 1, scopes: [{ id: 0, rowStart: 0, rowEnd: 1 }], dimValues: {}, nodes: [{ op: 'rm -rf', scope: 0, inputs: [], attrs: {}, results: [], span: {} }] } }, 'host', []), 'unknown op'],
      [encodeContainer({ model: 7 }, 'host', []), "'model' is not a string"],
      [container('{"model":"gpt2","host":[{"name":"x","dtype":"float32","shape":[1000],"offset":0,"bytes":4000}]}'), 'past the end'],
      [container('{"model":"gpt2","host":[{"name":"x","dtype":"float32","shape":[1000],"offset":0,"bytes":12}]}'), 'do not fit'],
      [Buffer.concat([Buffer.from(MAGIC), Buffer.from([255, 255, 0, 0]), Buffer.from('{}')]), 'cut short'],
    ];
    for (const [body, want] of cases) {
      const r = await post(body);
      expect(r.status, r.text).toBe(400);
      expect(r.text.trimEnd().split('\n')).toHaveLength(1);
      const j = JSON.parse(r.text) as { error: { code: string; message: string } };
      expect(j.error.code).toBe('bad-request');
      expect(j.error.message).toContain(want);
      clean(r.text);
    }
    const nf = await fetch(`${server.url}/nowhere`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(nf.status).toBe(404);
  });

  it('the model description holds no server path', async () => {
    const r = await fetch(`${server.url}/models/gpt2`, { headers: { authorization: `Bearer ${KEY}` } });
    expect(r.status).toBe(200);
    clean(await r.text());
  });
});
