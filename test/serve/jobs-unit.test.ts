/**
 * The job store without a model: fair queueing (round robin over keys, so a key with many
 * jobs queued does not hold back another), batches of one model only, results expiring
 * after their TTL, and the tensor container carrying every dtype bit for bit (NaN payloads
 * and -0 included).
 */
import { describe, expect, it } from 'vitest';
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
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8, resultTtlMs: 1000 });
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

describe('stored results', () => {
  it('past the byte limit, the oldest finished results expire first', async () => {
    const jobs = new Jobs({ ...DEFAULT_LIMITS, maxBatch: 8, maxStoredResultBytes: 2500 });
    const { worker } = fakeWorker();
    jobs.attach(worker);
    const t = (): [string, Tensor][] => [['x', { dtype: 'float32', shape: [250], data: new Float32Array(250) }]];
    const ids = [1, 2, 3].map(() => jobs.submit('A', 'm', { ir: IR, host: [] }).id);
    await flush();
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
