/**
 * `nns serve` jobs: no job is lost. A load test (8 clients × 4 traces, bounded by count,
 * submitted while the scheduler is held so that batching is deterministic) asserts that
 * every job completes exactly once with its own values — each compared bit for bit with the
 * same trace run on the loaded model in this process — and that jobs shared forward passes.
 * A worker killed mid-job fails that job clearly and the server keeps serving. Graceful
 * shutdown: every accepted job ends `completed` or `error`.
 */
import os from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, type ModelRef, type TraceResult } from '../../src/index.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { RemoteClient } from '../../src/remote/client.js';
import { lowerTrace } from '../../grammar/lower.js';
import { parseScript } from '../../grammar/parse.js';
import { traces } from '../../grammar/script.js';
import type { JobEvent } from '../../src/serve/protocol.js';
import { MODEL_DIR } from '../helpers/reference.js';

let server: NnsServer;
let local: LanguageModel;

beforeAll(async () => {
  server = await startServer({ models: [{ name: 'gpt2', path: MODEL_DIR }], port: 0, host: '127.0.0.1', workerEnv: { NNS_SERVE_TEST_STALL: '1' } });
  local = await LanguageModel.load(MODEL_DIR);
});
afterAll(async () => {
  await server?.close();
  await local?.dispose();
});

const PROMPTS = ['The Eiffel Tower is in the city of', 'The Trevi Fountain is in the city of', 'The Colosseum is in the city of', 'The Louvre is in the city of'];

/** Job k of client c: its own prompt, steering strength and saves (so a mix-up shows). */
function job(c: number, k: number): { prompt: string; fn: (m: ModelRef) => void } {
  const alpha = (c * 4 + k) / 8;
  return {
    prompt: PROMPTS[(c + k) % PROMPTS.length]!,
    fn: (m) => {
      m.transformer.h[1]!.output = m.transformer.h[1]!.output.add(alpha);
      m.transformer.h[2]!.output.at(':', -1, ':').save(`h2_c${c}`);
      m.output.logits.at(':', -1, ':').save('logits');
    },
  };
}

const bytes = (t: { data: ArrayBufferView }): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 20));
}

describe('nns serve: load test', () => {
  it('8 concurrent clients × 4 traces: none lost, duplicated or mixed up; batched into shared forward passes', async () => {
    const CLIENTS = 8;
    const PER = 4;
    const before = { ...server.jobs.stats };
    server.jobs.hold();
    const clients = await Promise.all(Array.from({ length: CLIENTS }, () => LanguageModel.remote(server.url, 'gpt2')));
    const t0 = Date.now();
    const runs: Promise<TraceResult>[][] = clients.map((m, c) => Array.from({ length: PER }, (_, k) => { const j = job(c, k); return m.trace(j.prompt, j.fn); }));
    await until(() => server.jobs.queued === CLIENTS * PER);
    server.jobs.release();
    const got = await Promise.all(runs.map((r) => Promise.all(r)));
    const ms = Date.now() - t0;
    const s = server.jobs.stats;
    expect(s.accepted - before.accepted).toBe(CLIENTS * PER);
    expect(s.completed - before.completed).toBe(CLIENTS * PER);
    expect(s.failed - before.failed).toBe(0);
    expect(s.merged - before.merged, 'jobs that shared a forward pass').toBeGreaterThan(0);
    for (let c = 0; c < CLIENTS; c++) {
      for (let k = 0; k < PER; k++) {
        const j = job(c, k);
        const want = await local.trace(j.prompt, j.fn);
        const r = got[c]![k]!;
        expect(Object.keys(r.saves)).toEqual([`h2_c${c}`, 'logits']);
        for (const name of Object.keys(want.saves)) expect(bytes(r.saves[name]!).equals(bytes(want.saves[name]!)), `client ${c} job ${k} ${name}`).toBe(true);
      }
    }
    console.log(`load test: ${CLIENTS * PER} jobs from ${CLIENTS} clients in ${ms} ms, ${s.batches - before.batches} batches, ${s.merged - before.merged} jobs in shared passes (load average ${os.loadavg()[0]!.toFixed(2)})`);
  });
});

describe('nns serve: no lost jobs', () => {
  const submit = async (src: string): Promise<string> => {
    const c = new RemoteClient(server.url);
    const m = await c.model('gpt2');
    const ast = parseScript(src, 's.nns').ast!;
    const g = lowerTrace(traces(ast)[0]!, { file: 's.nns', tokenize: (t) => m.tokenizer!.encode(t), tree: m.tree });
    return c.submit('gpt2', g.graph, new Map());
  };
  const status = async (id: string): Promise<JobEvent> => (await (await fetch(`${server.url}/jobs/${id}`)).json()) as JobEvent;

  it('a worker killed mid-job fails that job clearly; the server keeps serving', async () => {
    const id = await submit('trace "The Eiffel Tower is in" { __stall__ = model.transformer.h[0].output[0, 0, 0].save() }');
    // The stall hook keeps the job running until the worker is killed.
    for (;;) {
      if ((await status(id)).status === 'running') break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const pid = server.worker.pid!;
    const c = new RemoteClient(server.url);
    // The status stream is open while the job runs: it delivers the error event live.
    const events: string[] = [];
    const waiting = c.wait(id, (e) => events.push(e.phase)).then(() => undefined, (e: unknown) => e as { errors: { code: string; message: string }[] });
    await until(() => server.jobs.get(id, '')!.listeners.size > 0);
    process.kill(pid, 'SIGKILL');
    const err = await waiting;
    expect(err?.errors[0]?.code).toBe('job-failed');
    expect(err?.errors[0]?.message).toContain('ended unexpectedly (it was killed (SIGKILL))');
    const after = await submit('trace "The Eiffel Tower is in" { h = model.transformer.h[0].output[0, 0, 0:3].save() }');
    const res = await c.result(after);
    expect(res.get('h')!.shape).toEqual([3]);
    expect(server.worker.pid).not.toBe(pid);
  });

  it('a batch with a job the server rejects: that job fails with its own error, the others still share a pass', async () => {
    const c = new RemoteClient(server.url);
    const before = { ...server.jobs.stats };
    server.jobs.hold();
    const src = (i: string): string => `trace "The Eiffel Tower is in" { h = model.transformer.h[1].output[0, -1, ${i}].save() }`;
    const ids = [await submit(src('0:3')), await submit(src('0, 0, 0')), await submit(src('3:5'))];
    await until(() => server.jobs.queued === 3);
    server.jobs.release();
    const [a, bad, b] = await Promise.allSettled(ids.map((id) => c.result(id)));
    expect(bad!.status).toBe('rejected');
    expect((bad as PromiseRejectedResult).reason.errors[0].code).toBe('index-out-of-range');
    const want = await local.trace('The Eiffel Tower is in', (m) => { m.transformer.h[1]!.output.at(0, -1, '0:5').save('h'); });
    const row = want.saves.h!.data as Float32Array;
    expect(Array.from((a as PromiseFulfilledResult<Map<string, { data: Float32Array }>>).value.get('h')!.data)).toEqual(Array.from(row.subarray(0, 3)));
    expect(Array.from((b as PromiseFulfilledResult<Map<string, { data: Float32Array }>>).value.get('h')!.data)).toEqual(Array.from(row.subarray(3, 5)));
    expect(server.jobs.stats.merged - before.merged, 'the two good jobs shared a pass').toBe(2);
    expect(server.jobs.stats.failed - before.failed).toBe(1);
  });

  it('graceful shutdown: every accepted job ends completed or error; then the server is gone', async () => {
    const second = await startServer({ models: [{ name: 'gpt2', path: MODEL_DIR }], port: 0, host: '127.0.0.1' });
    const c = new RemoteClient(second.url);
    const m = await c.model('gpt2');
    const ast = parseScript('trace "The Eiffel Tower is in" { h = model.transformer.h[0].output[0, 0, 0:3].save() }', 's.nns').ast!;
    const lower = () => lowerTrace(traces(ast)[0]!, { file: 's.nns', tokenize: (t) => m.tokenizer!.encode(t), tree: m.tree }).graph;
    const first = await c.submit('gpt2', lower(), new Map());
    second.jobs.hold();
    const queued = await Promise.all([1, 2, 3].map(() => c.submit('gpt2', lower(), new Map())));
    await second.close();
    const states = [first, ...queued].map((id) => second.jobs.get(id, '')!);
    expect(states[0]!.state).toMatch(/^(completed|error)$/);
    for (const j of states.slice(1)) {
      expect(j.state).toBe('error');
      expect(j.history[j.history.length - 1]!.errors![0]).toMatchObject({ code: 'job-failed', message: 'the server shut down before the job ran; submit it again' });
    }
    await expect(fetch(`${second.url}/health`)).rejects.toThrow();
  });
});
