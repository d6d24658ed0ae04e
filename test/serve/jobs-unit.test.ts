/**
 * The job store without a model: fair queueing (round robin over keys, so a key with many
 * jobs queued does not hold back another), batches of one model only, results expiring
 * after their TTL, and the tensor container carrying every dtype bit for bit (NaN payloads
 * and -0 included).
 */
import { describe, expect, it, vi } from 'vitest';
import { Jobs } from '../../src/serve/jobs.js';
import { DEFAULT_LIMITS, KeySet } from '../../src/serve/limits.js';
import { decodeContainer, encodeContainer } from '../../src/serve/protocol.js';
import type { JobWorker } from '../../src/serve/worker.js';
import type { WorkerJob } from '../../src/serve/worker-main.js';
import type { Tensor } from '../../src/tensor.js';
import { modelInfo } from '../../src/serve/model-info.js';
import { ModuleMap } from '../../src/model/modules.js';
import type { ModelContext } from '../../src/compile.js';

/** A worker that records the batches it gets and finishes each when told. */
function fakeWorker(): { worker: JobWorker; batches: { model: string; ids: string[] }[] } {
  const batches: { model: string; ids: string[] }[] = [];
  const w = {
    ready: true,
    busy: false,
    run(model: string, jobs: WorkerJob[]) {
      this.busy = true;
      batches.push({ model, ids: jobs.map((j) => j.id) });
    },
  };
  return { worker: w as unknown as JobWorker, batches };
}

const IR = { format: 'onnsight-ir', version: 1, scopes: [], dimValues: {}, nodes: [] } as never;

async function flush(): Promise<void> {
  await new Promise((r) => setTimeout(r, 0));
  await new Promise((r) => setImmediate(r));
}

describe('Jobs', () => {
  it('queues fairly by key and batches jobs of one model', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 1 });
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    jobs.hold();
    const a = [1, 2, 3].map(() => jobs.submit('A', 'm', { ir: IR, host: [] }).id);
    const b = jobs.submit('B', 'm', { ir: IR, host: [] }).id;
    const c = jobs.submit('C', 'm', { ir: IR, host: [] }).id;
    jobs.release();
    const order: string[] = [];
    for (let i = 0; i < 5; i++) {
      await flush();
      const last = batches[batches.length - 1]!;
      order.push(...last.ids);
      (worker as unknown as { busy: boolean }).busy = false;
      jobs.onMessage({ type: 'done', id: last.ids[0]!, ok: true, saves: [], batched: 1 });
      jobs.onMessage({ type: 'batch-done' });
      jobs.schedule();
    }
    expect(order).toEqual([a[0], b, c, a[1], a[2]]);
    for (const id of [...a, b, c]) expect(jobs.get(id, id === b ? 'B' : id === c ? 'C' : 'A')!.state).toBe('completed');
    expect(jobs.get(b, 'A'), 'another key does not see the job').toBeUndefined();
    jobs.close();
  });

  it('a batch holds one model, in fair order; a finished result expires after its TTL', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8, resultTtlMs: 1000, batchWaitMs: 0 });
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    jobs.hold();
    const x1 = jobs.submit('A', 'x', { ir: IR, host: [] }).id;
    const y1 = jobs.submit('B', 'y', { ir: IR, host: [] }).id;
    const x2 = jobs.submit('B', 'x', { ir: IR, host: [] }).id;
    const x3 = jobs.submit('A', 'x', { ir: IR, host: [] }).id;
    jobs.release();
    await flush();
    expect(batches).toEqual([{ model: 'x', ids: [x1, x2, x3] }]);
    for (const id of [x1, x2, x3]) jobs.onMessage({ type: 'done', id, ok: true, saves: [], batched: 3 });
    (worker as unknown as { busy: boolean }).busy = false;
    jobs.onMessage({ type: 'batch-done' });
    jobs.schedule();
    await flush();
    expect(batches[1]).toEqual({ model: 'y', ids: [y1] });
    expect(jobs.stats.merged).toBe(3);
    const done = jobs.get(x1, 'A')!;
    jobs.sweep(done.finished! + 500);
    expect(jobs.get(x1, 'A')).toBeDefined();
    jobs.sweep(done.finished! + 1001);
    expect(jobs.get(x1, 'A')).toBeUndefined();
    expect(jobs.get(y1, 'B'), 'a running job never expires').toBeDefined();
    jobs.close();
  });
});

/**
 * Runs `body` on a scheduler (`maxBatch` 8) with a fake worker under vitest's fake clock;
 * closes the scheduler and restores the real clock after, whatever happens.
 */
function onFakeClock(body: (jobs: Jobs, worker: JobWorker, batches: { model: string; ids: string[] }[]) => void): void {
  vi.useFakeTimers();
  const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8 });
  try {
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    body(jobs, worker, batches);
  } finally {
    jobs.close();
    vi.useRealTimers();
  }
}

describe('batch wait', () => {
  /**
   * A few turns of the event loop (the scheduler looks again one turn after jobs arrived).
   * The fake clock runs an immediate set by another only when time moves: 1 ms per turn.
   */
  const turns = (): void => {
    for (let i = 0; i < 2; i++) vi.advanceTimersByTime(1);
  };

  /** Ends the running batch as the worker does: every job done, then the worker is free. */
  function finishBatch(jobs: Jobs, worker: JobWorker, ids: string[]): void {
    for (const id of ids) jobs.onMessage({ type: 'done', id, ok: true, saves: [], batched: ids.length });
    (worker as unknown as { busy: boolean }).busy = false;
    jobs.onMessage({ type: 'batch-done' });
    jobs.schedule();
  }

  it('after a batch of several jobs, the next waits for their clients (at most a quarter of its run time); a lone client never waits', () => {
    onFakeClock((jobs, worker, batches) => {
      // Three clients submit together: one batch (the scheduler looks after the I/O phase).
      const first = ['A', 'B', 'C'].map((k) => jobs.submit(k, 'm', { ir: IR, host: [] }).id);
      turns();
      expect(batches.map((b) => b.ids)).toEqual([first]);
      vi.advanceTimersByTime(400); // the batch runs 400 ms
      finishBatch(jobs, worker, first);
      // Two of them come back at once, the third 30 ms later: one batch of three.
      const a2 = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
      const b2 = jobs.submit('B', 'm', { ir: IR, host: [] }).id;
      vi.advanceTimersByTime(30);
      expect(batches).toHaveLength(1);
      const c2 = jobs.submit('C', 'm', { ir: IR, host: [] }).id;
      turns();
      expect(batches[1]!.ids).toEqual([a2, b2, c2]);
      vi.advanceTimersByTime(400);
      finishBatch(jobs, worker, [a2, b2, c2]);
      // Only one comes back: it waits a quarter of the last run (100 ms), then runs alone.
      const a3 = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
      vi.advanceTimersByTime(99);
      expect(batches).toHaveLength(2);
      vi.advanceTimersByTime(1);
      expect(batches[2]!.ids).toEqual([a3]);
      vi.advanceTimersByTime(400);
      finishBatch(jobs, worker, [a3]);
      // After a batch of one, the next job goes at once.
      const a4 = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
      turns();
      expect(batches[3]!.ids).toEqual([a4]);
    });
  });

  it('a client left out of a batch is waited for with the batch\'s clients: the next batch is whole again', () => {
    onFakeClock((jobs, worker, batches) => {
      const first = ['A', 'B', 'C'].map((k) => jobs.submit(k, 'm', { ir: IR, host: [] }).id);
      turns();
      // D comes while the batch of three runs: it waits for the next batch.
      const d = jobs.submit('D', 'm', { ir: IR, host: [] }).id;
      vi.advanceTimersByTime(400);
      expect(batches).toHaveLength(1);
      finishBatch(jobs, worker, first);
      // A, B and C come back one by one: with D that is four; three (the last batch's size) do not start it.
      const back = ['A', 'B', 'C'].map((k) => {
        const id = jobs.submit(k, 'm', { ir: IR, host: [] }).id;
        vi.advanceTimersByTime(10);
        return id;
      });
      turns();
      expect(batches).toHaveLength(2);
      expect([...batches[1]!.ids].sort()).toEqual([d, ...back].sort());
    });
  });

  it('an idle worker gets a batch once requests stop arriving (new connections, request bodies), a few loop turns at most', () => {
    onFakeClock((jobs, worker, batches) => {
      // A's job, then a connection opens (B's), then B's job: one batch.
      const a = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
      vi.advanceTimersByTime(0);
      jobs.noteArrival();
      vi.advanceTimersByTime(1);
      const b = jobs.submit('B', 'm', { ir: IR, host: [] }).id;
      expect(batches).toHaveLength(0);
      turns();
      expect(batches.map((x) => x.ids)).toEqual([[a, b]]);
      (worker as unknown as { busy: boolean }).busy = false;
      jobs.onMessage({ type: 'done', id: a, ok: true, saves: [], batched: 2 });
      jobs.onMessage({ type: 'done', id: b, ok: true, saves: [], batched: 2 });
      jobs.onMessage({ type: 'batch-done' });
      vi.advanceTimersByTime(1000); // past the wait for the batch's clients
      // Connections that keep opening do not hold a job back for long: at most 5 ms.
      const c = jobs.submit('C', 'm', { ir: IR, host: [] }).id;
      for (let t = 0; t < 20 && batches.length < 2; t++) {
        jobs.noteArrival();
        vi.advanceTimersByTime(1);
      }
      expect(batches.map((x) => x.ids)).toEqual([[a, b], [c]]);
    });
  });

  it('batchWaitMs bounds the wait; 0 never waits', () => {
    vi.useFakeTimers();
    try {
      for (const [wait, after] of [[20, 20], [0, 0]] as const) {
        const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8, batchWaitMs: wait });
        const { worker, batches } = fakeWorker();
        jobs.attach(worker);
        const first = ['A', 'B'].map((k) => jobs.submit(k, 'm', { ir: IR, host: [] }).id);
        turns();
        vi.advanceTimersByTime(10_000);
        finishBatch(jobs, worker, first);
        jobs.submit('A', 'm', { ir: IR, host: [] });
        turns();
        if (after > 0) {
          expect(batches, `wait ${wait}`).toHaveLength(1);
          vi.advanceTimersByTime(after);
        }
        expect(batches, `wait ${wait}`).toHaveLength(2);
        jobs.close();
      }
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('generations and inferences', () => {
  it('run in batches of their own; tokens are kept and replayed; an inference result is not stored', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8 });
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    jobs.hold();
    const gen = { format: 'onnsight-generate', version: 1, prompts: [[1]], options: { maxNewTokens: 1, stopAtEos: true, doSample: false }, templates: [], steps: [0] } as never;
    const t1 = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
    const g = jobs.submit('A', 'm', { generate: gen, host: [] }).id;
    const o = jobs.submit('B', 'm', { oip: { name: 'm.ports', fetch: ['y'] }, host: [] }).id;
    const t2 = jobs.submit('B', 'm', { ir: IR, host: [] }).id;
    jobs.release();
    const finish = async (ids: string[], saves: [string, Tensor][] = []): Promise<void> => {
      for (const id of ids) jobs.onMessage({ type: 'done', id, ok: true, saves, batched: ids.length });
      (worker as unknown as { busy: boolean }).busy = false;
      jobs.onMessage({ type: 'batch-done' });
      jobs.schedule();
      await flush();
    };
    await flush();
    expect(batches[0]!.ids).toEqual([t1, t2]); // the traces share a batch; the others are left out
    await finish([t1, t2]);
    expect(batches[1]!.ids).toEqual([g]);
    for (const token of [5, 6]) jobs.onMessage({ type: 'token', id: g, step: token - 5, row: 0, token });
    const seen: string[] = [];
    jobs.listen(jobs.get(g, 'A')!, (e) => seen.push(e.status === 'token' ? `token ${e.token!.token}` : e.status));
    expect(seen).toEqual(['queued', 'running', 'token 5', 'token 6']);
    await finish([g]);
    expect(batches[2]!.ids).toEqual([o]);
    const y: Tensor = { dtype: 'float32', shape: [1], data: Float32Array.of(2) };
    await finish([o], [['y', y]]);
    const job = jobs.get(o, 'B')!;
    expect(job.raw?.get('y')).toBe(y);
    expect(job.result).toBeUndefined();
    jobs.forget(o);
    expect(jobs.get(o, 'B')).toBeUndefined();
    jobs.close();
  });
});

describe('stored results', () => {
  it('a worker message about a job that is not running is ignored (a queued job keeps its request)', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8 });
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    jobs.hold();
    const id = jobs.submit('A', 'm', { ir: IR, host: [] }).id;
    jobs.onMessage({ type: 'done', id, ok: true, saves: [], batched: 1 });
    expect(jobs.get(id, 'A')!.state).toBe('queued');
    jobs.release();
    for (let i = 0; i < 200 && !batches.length; i++) await flush();
    expect(batches.map((b) => b.ids)).toEqual([[id]]);
    jobs.onMessage({ type: 'done', id, ok: true, saves: [], batched: 1 });
    expect(jobs.get(id, 'A')!.state).toBe('completed');
    jobs.close();
  });

  it('past the byte limit, the oldest finished results expire first', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8, maxStoredResultBytes: 2500 });
    const { worker, batches } = fakeWorker();
    jobs.attach(worker);
    const t = (): [string, Tensor][] => [['x', { dtype: 'float32', shape: [250], data: new Float32Array(250) }]];
    const ids = [1, 2, 3].map(() => jobs.submit('A', 'm', { ir: IR, host: [] }).id);
    // The batch is handed out after the scheduler's settling turns (more on a busy machine).
    for (let i = 0; i < 200 && !batches.length; i++) await flush();
    expect(batches.map((b) => b.ids)).toEqual([ids]);
    for (const id of ids) {
      jobs.onMessage({ type: 'done', id, ok: true, saves: t(), batched: 1 });
      await new Promise((r) => setTimeout(r, 5));
    }
    // Each result is ~1.1 kB: the first expires when the third arrives.
    expect(jobs.get(ids[0]!, 'A')).toBeUndefined();
    expect(jobs.get(ids[1]!, 'A')?.state).toBe('completed');
    expect(jobs.get(ids[2]!, 'A')?.state).toBe('completed');
    jobs.close();
  });
});

describe('keys and the tensor container', () => {
  it('keys: only listed ones pass; the id never contains the key', () => {
    const k = new KeySet(['alpha-key', 'beta-key']);
    expect(k.required).toBe(true);
    expect(k.check('alpha-key')).toMatch(/^key-[0-9a-f]{12}$/);
    expect(k.check('alpha-key')).not.toBe(k.check('beta-key'));
    expect(k.check('alpha-kez')).toBeUndefined();
    expect(k.check('')).toBeUndefined();
    expect(k.check('alpha-key')).not.toContain('alpha');
    expect(new KeySet([]).required).toBe(false);
  });

  it('the model description sends no path from config.json', () => {
    const mc = {
      tree: { modules: new ModuleMap([]), graphInputs: [], graphOutputs: [], params: new Map() },
      loaded: { proto: { graph: { node: [] } }, config: { _name_or_path: '/home/alice/models/gpt2', vocab_size: 874, nested: { where: 'C:\\models\\x', act: 'gelu_new', list: ['~/x', 'ok'] } }, source: '/srv/models/gpt2' },
      maxPositions: 64, vocabRows: 874,
    } as unknown as ModelContext;
    const info = modelInfo('gpt2', mc);
    expect(info.config).toEqual({ _name_or_path: '<path>', vocab_size: 874, nested: { where: '<path>', act: 'gelu_new', list: ['<path>', 'ok'] } });
    expect(JSON.stringify(info)).not.toMatch(/alice|srv/);
  });

  it('carries every dtype bit for bit', () => {
    const f32 = new Float32Array([1.5, -0, NaN, Infinity, -Infinity, 3e-45]);
    new Uint32Array(f32.buffer)[2] = 0x7fc00123; // a NaN with a payload
    const tensors = new Map<string, Tensor>([
      ['f32', { dtype: 'float32', shape: [2, 3], data: f32 }],
      ['f64', { dtype: 'float64', shape: [2], data: new Float64Array([Math.PI, -0]) }],
      ['i64', { dtype: 'int64', shape: [3], data: new BigInt64Array([-(2n ** 63n), 0n, 2n ** 63n - 1n]) }],
      ['u8', { dtype: 'uint8', shape: [3], data: new Uint8Array([0, 7, 255]) }],
      ['bool', { dtype: 'bool', shape: [1], data: new Uint8Array([1]) }],
      ['f16', { dtype: 'float16', shape: [1], data: new Uint16Array([0x3c00]) }],
      ['empty', { dtype: 'int32', shape: [0, 4], data: new Int32Array(0) }],
    ]);
    const buf = encodeContainer({ id: 'x' }, 'saves', tensors);
    // Copies (the server's reading of requests), views into the buffer (the client's reading of
    // its own answer), and views of a buffer at an odd offset (unaligned: copied instead).
    const odd = new Uint8Array(buf.length + 1);
    odd.set(buf, 1);
    for (const [how, back] of [['copy', decodeContainer(buf, 'saves')], ['view', decodeContainer(buf, 'saves', { view: true })], ['odd view', decodeContainer(odd.subarray(1), 'saves', { view: true })]] as const) {
      expect(back.json.id).toBe('x');
      expect([...back.tensors.keys()]).toEqual([...tensors.keys()]);
      for (const [k, t] of tensors) {
        const u = back.tensors.get(k)!;
        expect(u.dtype).toBe(t.dtype);
        expect(u.shape).toEqual(t.shape);
        expect(Buffer.from(u.data.buffer, u.data.byteOffset, u.data.byteLength).equals(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)), `${how} ${k}`).toBe(true);
        if (how === 'copy') expect(u.data.buffer, k).not.toBe(buf.buffer);
        if (how === 'view') expect(u.data.buffer, k).toBe(buf.buffer);
      }
    }
  });
});
