/**
 * The job limits of `nns serve` apply to Open Inference Protocol requests
 * (`POST /v2/models/{m}/infer`): they run as jobs of the worker process (and the metadata
 * comes from the worker too: the HTTP process never opens a model), so an inference over
 * the run time is stopped (503 in the protocol's form; the server keeps serving), and a key's
 * inferences count with its jobs against the jobs-per-key limit (429). One server with keys,
 * tiny limits (run time 2 s, one job per key) and the worker's stall hook (an inference whose
 * request id is `__stall__` never finishes), so nothing here depends on timing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KeySet } from '../../src/serve/limits.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { expectClose, MODEL_DIR, refCase } from '../helpers/reference.js';
import { Builder } from '../../ir/builder.js';
import { graphToJSON } from '../../ir/json.js';
import { encodeContainer } from '../../src/serve/protocol.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-oip-limits-'));
let server: NnsServer;
let opened = 0;

beforeAll(async () => {
  const keys = path.join(TMP, 'keys');
  fs.writeFileSync(keys, 'key-a\nkey-b\n');
  server = await startServer({
    models: [{ name: 'gpt2', path: MODEL_DIR }], port: 0, host: '127.0.0.1', keys: KeySet.fromFile(keys),
    limits: { maxRunMs: 2000, maxJobsPerKey: 1 }, workerEnv: { NNS_SERVE_TEST_STALL: '1' },
    // The HTTP process never opens a model: metadata and inference come from the worker.
    open: async () => {
      opened++;
      throw new Error('the HTTP process opened a model');
    },
  });
}, 120_000);
afterAll(async () => {
  await server?.close();
  fs.rmSync(TMP, { recursive: true, force: true });
});

const c = refCase('clean_logits');
const ids = c.input_ids as number[];
const data: Record<string, number[]> = { input_ids: ids, attention_mask: ids.map(() => 1), position_ids: ids.map((_, i) => i) };

async function infer(key: string, id: string): Promise<{ status: number; body: { error?: string; outputs?: { shape: number[]; data: number[] }[] } }> {
  const meta = await (await fetch(`${server.url}/v2/models/gpt2`, { headers: { authorization: `Bearer ${key}` } })).json() as { inputs: { name: string }[] };
  const inputs = meta.inputs.map((i) => ({ name: i.name, datatype: 'INT64', shape: [1, ids.length], data: data[i.name]! }));
  const r = await fetch(`${server.url}/v2/models/gpt2/infer`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify({ id, inputs, outputs: [{ name: 'logits' }] }) });
  return { status: r.status, body: await r.json() as { error?: string } };
}

describe('/v2 infer under the job limits', () => {
  it('runs as a job of the worker (counted; the local numbers)', async () => {
    const before = server.jobs.stats.completed;
    const r = await infer('key-a', 'q1');
    expect(r.status).toBe(200);
    const V = r.body.outputs![0]!.shape[2]!;
    expectClose(r.body.outputs![0]!.data.slice((ids.length - 1) * V), (c.expect as { last_logits: number[] }).last_logits, 1e-4, 'logits');
    expect(server.jobs.stats.completed).toBe(before + 1);
  }, 60_000);

  it('an inference over the run time is stopped (503); while it runs, the key\'s next inference and job are refused (429); the server keeps serving', async () => {
    const accepted = server.jobs.stats.accepted;
    const stalled = infer('key-a', '__stall__');
    while (server.jobs.stats.accepted < accepted + 1) await new Promise((r) => setTimeout(r, 50));
    // The same key: a second inference, and a trace job, are over its limit of one.
    const second = await infer('key-a', 'q2');
    expect(second).toEqual({ status: 429, body: { error: "this key already has 1 jobs queued or running (the server's limit); wait for one to finish" } });
    const b = new Builder();
    const sp = { file: 't.nns', line: 1, col: 1, endLine: 1, endCol: 2, offset: 0, endOffset: 1 };
    b.addInvoke(ids, sp);
    b.save(b.modelOutput('logits', sp), 'l', sp);
    const job = await fetch(`${server.url}/jobs`, { method: 'POST', headers: { authorization: 'Bearer key-a' }, body: encodeContainer({ model: 'gpt2', ir: graphToJSON(b.graph) }, 'host', []) as unknown as BodyInit });
    expect(job.status).toBe(429);
    // Another key is not held back by key-a's limit (it waits for the worker, then runs).
    const other = infer('key-b', 'q3');
    const s = await stalled;
    expect(s.status).toBe(503);
    expect(s.body.error).toMatch(/^the job ran longer than this server allows \(2 s\) and was stopped$/);
    expect((await other).status).toBe(200);
    expect((await infer('key-a', 'q4')).status).toBe(200);
    expect(opened).toBe(0);
  }, 120_000);
});
