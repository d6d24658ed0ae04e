import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { canTrimNativeHeap, fixMmapThreshold, mmapThreshold, privateResidentBytes, TrimOnGrowth, trimStats } from '../../backends/malloc-trim.js';
import { fromOrtTensor, OrtBackend, ortSessionOptions, setIntraOpSpinning, toOrtTensor } from '../../backends/ort.js';
import { NnsError } from '../../src/errors.js';
import { buildFeeds, graphFeedInputs } from '../../src/model/feeds.js';
import { loadModel, writeVariant, type LoadedModel } from '../../src/model/load.js';
import type { ModelProto } from '../../src/onnx/proto.js';
import { encodeModel } from '../../src/onnx/serde.js';
import type { Tensor } from '../../src/tensor.js';

const ROOT = path.resolve(__dirname, '../../models/gpt2-facts');
interface Case { id: string; input_ids: number[]; expect: { last_logits: number[]; top5: number[] } }
const REF = JSON.parse(fs.readFileSync(path.join(ROOT, 'reference.json'), 'utf8')) as { cases: Case[] };
const CLEAN = REF.cases.find((c) => c.id === 'clean_logits')!;

let tmp: string;
let cacheDir: string;
const backend = new OrtBackend();
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-ort-'));
  cacheDir = path.join(tmp, 'cache');
});
afterAll(async () => {
  await backend.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function lastRow(logits: Tensor, row = 0): Float32Array {
  const [, seq, vocab] = logits.shape as number[];
  const start = (row * seq! + seq! - 1) * vocab!;
  return (logits.data as Float32Array).subarray(start, start + vocab!);
}

function top(values: Float32Array, k: number): number[] {
  return Array.from(values.keys()).sort((a, b) => values[b]! - values[a]!).slice(0, k);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function forward(m: LoadedModel, rows: number[][], graphPath = m.graphPath): Promise<Tensor> {
  const session = await backend.session(graphPath, { externalDataDir: m.externalDataDir });
  const { feeds } = buildFeeds(graphFeedInputs(m.proto), rows, { padId: m.tokenizer?.padId });
  const out = await backend.run(session, feeds, ['logits']);
  expect(Object.keys(out)).toEqual(['logits']);
  return out.logits!;
}

describe('plain forward pass matches PyTorch (reference.json clean_logits)', () => {
  for (const file of ['onnx/model.onnx', 'onnx/model.dynamo.onnx']) {
    it(`${file}, externalized into a temp cache`, async () => {
      const m = await loadModel(path.join(ROOT, file), { cacheDir });
      expect(fs.statSync(m.graphPath).size).toBeLessThan(500_000);
      expect(fs.existsSync(path.join(m.dir, 'model.onnx.data'))).toBe(true);
      const logits = await forward(m, [CLEAN.input_ids]);
      expect(logits.dtype).toBe('float32');
      expect(logits.shape).toEqual([1, 8, 874]);
      const last = lastRow(logits);
      expect(maxAbsDiff(last, CLEAN.expect.last_logits)).toBeLessThan(1e-4);
      expect(top(last, 5)).toEqual(CLEAN.expect.top5);
    });
  }

  it('a left-padded batch row gives the same last logits as the row alone (TorchScript export)', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const short = CLEAN.input_ids.slice(2);
    const alone = lastRow(await forward(m, [short]));
    const batch = await forward(m, [CLEAN.input_ids, short]);
    expect(maxAbsDiff(lastRow(batch, 0), CLEAN.expect.last_logits)).toBeLessThan(1e-4);
    expect(maxAbsDiff(lastRow(batch, 1), alone)).toBeLessThan(1e-4);
  });

  it('a rewritten graph written by writeVariant opens next to the shared weights', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const variant: ModelProto = { ...m.proto, doc_string: 'variant' };
    const p = writeVariant(m, variant, 'doc-variant');
    expect(path.dirname(p)).toBe(m.dir);
    expect(maxAbsDiff(lastRow(await forward(m, [CLEAN.input_ids], p)), CLEAN.expect.last_logits)).toBeLessThan(1e-4);
  });

  it('without spinning threads (nns serve\'s worker): the option reaches onnxruntime and the logits still match', async () => {
    expect(ortSessionOptions({}).extra).toEqual({ session: { disable_prepacking: '1' } });
    const m = await loadModel(ROOT, { cacheDir });
    const own = new OrtBackend();
    setIntraOpSpinning(false);
    try {
      expect(ortSessionOptions({}).extra).toEqual({ session: { disable_prepacking: '1', 'intra_op.allow_spinning': '0' } });
      const s = await own.session(m.graphPath, { externalDataDir: m.externalDataDir });
      const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
      const { logits } = await own.run(s, feeds, ['logits']);
      expect(maxAbsDiff(lastRow(logits!), CLEAN.expect.last_logits)).toBeLessThan(1e-4);
    } finally {
      setIntraOpSpinning(true);
      await own.release();
    }
    expect(ortSessionOptions({}).extra).toEqual({ session: { disable_prepacking: '1' } });
  });

  it('sessions from bytes resolve weights in externalDataDir (read-only / cross-device fallback)', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const elsewhere = path.join(tmp, 'graphs-only');
    fs.mkdirSync(elsewhere, { recursive: true });
    const graph = path.join(elsewhere, 'g.onnx');
    fs.copyFileSync(m.graphPath, graph);
    await expect(backend.session(graph)).rejects.toThrow(/model\.onnx\.data/);
    const s = await backend.session(graph, { externalDataDir: m.dir });
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const { logits } = await backend.run(s, feeds, ['logits']);
    expect(top(lastRow(logits!), 5)).toEqual(CLEAN.expect.top5);
  });

  it('weights symlinked from outside the folder (Hugging Face hub layout) are hard-linked into the cache and run', async () => {
    const src = await loadModel(ROOT, { cacheDir });
    const blobs = path.join(tmp, 'hub', 'blobs');
    const snap = path.join(tmp, 'hub', 'snapshots', 'rev');
    fs.mkdirSync(blobs, { recursive: true });
    fs.mkdirSync(snap, { recursive: true });
    fs.copyFileSync(path.join(src.dir, 'model.onnx.data'), path.join(blobs, 'abc'));
    fs.symlinkSync(path.join(blobs, 'abc'), path.join(snap, 'model.onnx.data'));
    fs.copyFileSync(src.graphPath, path.join(snap, 'model.onnx'));
    const m = await loadModel(snap, { cacheDir });
    expect(m.dir).not.toBe(snap);
    expect(fs.statSync(path.join(m.dir, 'model.onnx.data')).ino).toBe(fs.statSync(path.join(blobs, 'abc')).ino);
    expect(maxAbsDiff(lastRow(await forward(m, [CLEAN.input_ids])), CLEAN.expect.last_logits)).toBeLessThan(1e-4);
  });

  it('when hard links fail (another file system), graphs go to the cache and sessions use externalDataDir', async () => {
    const src = await loadModel(ROOT, { cacheDir });
    const dir = path.join(tmp, 'xdev');
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(path.join(src.dir, 'model.onnx.data'), path.join(dir, 'model.onnx.data'));
    fs.copyFileSync(src.graphPath, path.join(dir, 'model.onnx'));
    const spy = vi.spyOn(fs, 'linkSync').mockImplementation(() => {
      throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' });
    });
    let m: LoadedModel;
    try {
      m = await loadModel(dir, { cacheDir: path.join(tmp, 'xdev-cache') });
    } finally {
      spy.mockRestore();
    }
    expect(m.externalDataDir).toBe(dir);
    expect(m.dir.startsWith(path.join(tmp, 'xdev-cache'))).toBe(true);
    expect(fs.existsSync(path.join(m.dir, 'model.onnx.data'))).toBe(false);
    const v = writeVariant(m, { ...m.proto, doc_string: 'v' }, 'xdev');
    expect(maxAbsDiff(lastRow(await forward(m, [CLEAN.input_ids], v)), CLEAN.expect.last_logits)).toBeLessThan(1e-4);
    const again = await loadModel(dir, { cacheDir: path.join(tmp, 'xdev-cache') });
    expect(again.cached).toBe(true);
    expect(again.externalDataDir).toBe(dir);
  });

  it('runs inside a worker thread', async () => {
    // The .mjs entry registers tsx's loader inside the worker, then imports the TypeScript fixture.
    const worker = new Worker(new URL('../fixtures/ort-worker.mjs', import.meta.url), { workerData: { source: ROOT, cacheDir, ids: CLEAN.input_ids } });
    const msg = await new Promise<{ top1: number }>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    await worker.terminate();
    expect(msg.top1).toBe(383);
  });
});

describe('OrtBackend session cache', () => {
  it('reuses a session per path and options, and evicts the least recently used', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const small = new OrtBackend({ maxSessions: 2 });
    const a = await small.session(m.graphPath);
    expect(await small.session(m.graphPath)).toBe(a);
    const b = await small.session(m.graphPath, { prepack: true });
    expect(b).not.toBe(a);
    await small.session(m.graphPath); // a is now most recent
    const c = await small.session(m.graphPath, { optimization: 'disabled' }); // evicts b
    expect(small.size).toBe(2);
    expect(await small.session(m.graphPath)).toBe(a);
    expect(await small.session(m.graphPath, { prepack: true })).not.toBe(b); // recreated
    expect(small.size).toBe(2);
    // The evicted session was released (after this turn); running it recreates it transparently.
    await new Promise((r) => setImmediate(r));
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const out = await small.run(b, feeds, ['logits']);
    expect(top(lastRow(out.logits!), 1)).toEqual([383]);
    void c;
    await small.release();
    expect(small.size).toBe(0);
  });

  it('many concurrent traces over more graphs than the bound all run', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const one = new OrtBackend({ maxSessions: 1 });
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const levels = ['all', 'basic', 'extended', 'disabled'] as const;
    const tops = await Promise.all(levels.map(async (optimization) => {
      const s = await one.session(m.graphPath, { optimization });
      return top(lastRow((await one.run(s, feeds, ['logits'])).logits!), 1)[0];
    }));
    expect(tops).toEqual([383, 383, 383, 383]);
    await one.release();
  });

  it('an evicted session that is running is released only after its run', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const one = new OrtBackend({ maxSessions: 1 });
    const a = await one.session(m.graphPath);
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const running = one.run(a, feeds, ['logits']);
    await one.session(m.graphPath, { optimization: 'basic' }); // evicts a while it runs
    const out = await running;
    expect(top(lastRow(out.logits!), 1)).toEqual([383]);
    await one.release();
  });

  it('exclusive: one copy of a group\'s weights — a prepacked session and unprepacked ones never coexist idle; other groups untouched', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const ex = new OrtBackend({ exclusive: true });
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const pre = await ex.session(m.graphPath, { prepack: true, pinned: true });
    const mod = await ex.session(m.graphPath, { prepack: true, optimization: 'basic', group: 'module:x' });
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 0]);
    const a = await ex.session(m.graphPath); // unprepacked: the pinned prepacked one of its group goes
    const b = await ex.session(m.graphPath, { optimization: 'disabled' }); // two unprepacked ones share the mapping
    expect([ex.size, ex.exclusiveReleases]).toEqual([3, 1]);
    // The released prepacked one, asked for again: an unprepacked stand-in (here `a`, the same
    // graph and options without prepacking), not a rebuild.
    expect(await ex.session(m.graphPath, { prepack: true, pinned: true })).toBe(a);
    expect([ex.size, ex.exclusiveReleases, ex.created.standIns]).toEqual([3, 1, 0]);
    // A running session is never released; the released one is recreated when run.
    const running = ex.run(a, feeds, ['logits']);
    const pre2 = await ex.session(m.graphPath, { prepack: true, optimization: 'extended' }); // another prepacked graph: a new session
    expect(pre2).not.toBe(pre);
    expect(top(lastRow((await running).logits!), 1)).toEqual([383]);
    expect(ex.exclusiveReleases).toBe(2); // b (idle) went, a (running) stayed
    for (const s of [pre, mod, a, b, pre2]) expect(top(lastRow((await ex.run(s, feeds, ['logits'])).logits!), 1)).toEqual([383]);
    await ex.release();
  });

  it('exclusive: a whole-model session overlaps every group — it releases an idle prepacked module session, and a new prepacked module session releases it', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const ex = new OrtBackend({ exclusive: true });
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const mod = await ex.session(m.graphPath, { prepack: true, pinned: true, optimization: 'basic', group: 'module:x' });
    const part = await ex.session(m.graphPath, { optimization: 'extended' }); // unprepacked, not whole: the module stays
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 0]);
    const whole = await ex.session(m.graphPath, { whole: true }); // a compiled variant: the module's weights too
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 1]);
    expect(ex.liveSessions().some((s) => s.prepack)).toBe(false);
    // The module asked for again: a stand-in (its group's run of requests started anew at the release).
    const standIn = await ex.session(m.graphPath, { prepack: true, pinned: true, optimization: 'basic', group: 'module:x' });
    expect(standIn).not.toBe(mod);
    expect([ex.created.standIns, ex.exclusiveReleases]).toEqual([1, 1]);
    // Another prepacked module session (never released: built at once) releases the idle whole one, not `part`.
    const mod2 = await ex.session(m.graphPath, { prepack: true, optimization: 'disabled', group: 'module:y' });
    expect(ex.exclusiveReleases).toBe(2);
    expect(ex.liveSessions().filter((s) => s.whole)).toEqual([]);
    for (const s of [part, whole, standIn, mod2]) expect(top(lastRow((await ex.run(s, feeds, ['logits'])).logits!), 1)).toEqual([383]);
    await ex.release();
  });

  it('exclusive with the arena off by default (big models): sessions that turn it on (gradient graphs) are kept one at a time; others stay; makeRoom releases them ahead', async () => {
    const m = await loadModel(ROOT, { cacheDir });
    const ex = new OrtBackend({ exclusive: true, defaults: { arena: false } });
    const { feeds } = buildFeeds(graphFeedInputs(m.proto), [CLEAN.input_ids]);
    const plain = await ex.session(m.graphPath, { whole: true }); // no arena
    const g1 = await ex.session(m.graphPath, { whole: true, arena: true, memPattern: false });
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 0]);
    expect(top(lastRow((await ex.run(g1, feeds, ['logits'])).logits!), 1)).toEqual([383]);
    // A second arena session: the idle first one goes (its arena kept its run's buffers); the arena-less one stays.
    const g2 = await ex.session(m.graphPath, { whole: true, arena: true, memPattern: false, optimization: 'basic' });
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 1]);
    expect(ex.liveSessions().map((s) => s.arena).sort()).toEqual([false, true]);
    // Another arena-less session releases nothing.
    const other = await ex.session(m.graphPath, { whole: true, optimization: 'extended' });
    expect([ex.size, ex.exclusiveReleases]).toEqual([3, 1]);
    // The released one is recreated when run (releasing g2, idle), with the same results.
    for (const s of [plain, g1, g2, other]) expect(top(lastRow((await ex.run(s, feeds, ['logits'])).logits!), 1)).toEqual([383]);
    expect(ex.exclusiveReleases).toBe(3);
    // makeRoom: what a new arena session would release (g2, recreated and idle), now; the arena-less ones stay.
    await ex.makeRoom({ whole: true, arena: true });
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 4]);
    expect(ex.liveSessions().every((s) => !s.arena)).toBe(true);
    await ex.makeRoom({ whole: true }); // an unprepacked arena-less session conflicts with none of them
    expect([ex.size, ex.exclusiveReleases]).toEqual([2, 4]);
    await ex.release();
    // Not exclusive: nothing to make room for.
    const shared = new OrtBackend({ defaults: { arena: false } });
    await shared.session(m.graphPath, { whole: true, arena: true });
    await shared.makeRoom({ whole: true, arena: true, prepack: true });
    expect(shared.size).toBe(1);
    await shared.release();
  });

  it('released sessions give their memory back (glibc malloc_trim, once per event-loop turn)', async () => {
    if (!canTrimNativeHeap()) return; // no glibc or no koffi here: the trim is a no-op
    const m = await loadModel(ROOT, { cacheDir });
    const be = new OrtBackend();
    await be.session(m.graphPath, { optimization: 'basic' });
    await be.session(m.graphPath, { optimization: 'extended' });
    const before = trimStats.calls;
    await be.release();
    await new Promise((r) => setImmediate(r));
    expect(trimStats.calls).toBe(before + 1);
  });

  it('fixMmapThreshold: glibc takes it (mallopt), the smallest threshold set wins, ONNSIGHT_MMAP_THRESHOLD overrides', () => {
    if (!canTrimNativeHeap()) return; // no glibc or no koffi here: nothing is set
    const before = mmapThreshold();
    const env = process.env.ONNSIGHT_MMAP_THRESHOLD;
    try {
      process.env.ONNSIGHT_MMAP_THRESHOLD = '0'; // the user's switch: leave glibc's dynamic threshold
      expect(fixMmapThreshold(1 << 20)).toBe(before);
      expect(mmapThreshold()).toBe(before);
      delete process.env.ONNSIGHT_MMAP_THRESHOLD;
      const big = 24 << 20, small = 6 << 20;
      if (before !== undefined && before <= small) return; // already lower in this worker: nothing to see
      expect(fixMmapThreshold(big)).toBe(big);
      expect(fixMmapThreshold(big + (1 << 20))).toBe(big); // a bigger one does not undo a smaller
      expect(fixMmapThreshold(small)).toBe(small);
      expect(fixMmapThreshold(64 << 20)).toBe(small); // above glibc's 32 MiB maximum: clamped, and bigger anyway
      process.env.ONNSIGHT_MMAP_THRESHOLD = String(5 << 20);
      expect(fixMmapThreshold(big)).toBe(5 << 20); // the environment wins over the caller's value
    } finally {
      if (env === undefined) delete process.env.ONNSIGHT_MMAP_THRESHOLD;
      else process.env.ONNSIGHT_MMAP_THRESHOLD = env;
    }
  });

  it('TrimOnGrowth trims only once private memory grew by more than its slack', () => {
    if (!canTrimNativeHeap() || privateResidentBytes() === undefined) return; // no glibc, koffi or /proc here
    const t = new TrimOnGrowth(50e6);
    const before = trimStats.calls;
    expect(t.check()).toBe(false); // the first check sets the floor
    let big: Buffer | undefined = Buffer.alloc(100e6, 1); // touched: 100 MB private and resident
    expect(t.check()).toBe(true);
    expect([t.trims, trimStats.calls - before]).toEqual([1, 1]);
    expect(t.check()).toBe(false); // nothing grew since
    expect(big.length).toBe(100e6);
    big = undefined;
  });
});

describe('errors and conversions', () => {
  const vi = (name: string, elem: number, dims: (number | string)[]) => ({
    name, type: { tensor_type: { elem_type: elem, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })) } } },
  });

  it('an invalid graph is a one-line NnsError', async () => {
    const bad: ModelProto = {
      ir_version: 8, opset_import: [{ domain: '', version: 17 }],
      graph: { name: 'g', node: [{ op_type: 'NoSuchOp', input: ['x'], output: ['y'], name: 'n' }], input: [vi('x', 1, [2])], output: [vi('y', 1, [2])] },
    };
    const p = path.join(tmp, 'bad.onnx');
    fs.writeFileSync(p, encodeModel(bad));
    const err = await backend.session(p).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(NnsError);
    const e = err as NnsError;
    expect(e.code).toBe('ort-session');
    expect(e.kind).toBe('model');
    expect(e.message).not.toContain('\n');
    expect(e.message).toContain(p);
    expect(e.message).toContain('NoSuchOp');
    const missing = await backend.session(path.join(tmp, 'none.onnx')).then(() => undefined, (x: unknown) => x);
    expect((missing as NnsError).code).toBe('model-not-found');
  });

  it('a bad feed is a one-line NnsError; int64 outputs come back as BigInt64Array', async () => {
    const model: ModelProto = {
      ir_version: 8, opset_import: [{ domain: '', version: 17 }],
      graph: {
        name: 'g',
        node: [
          { op_type: 'Shape', input: ['x'], output: ['s'], name: 'shape' },
          { op_type: 'ArgMax', input: ['x'], output: ['am'], name: 'argmax', attribute: [{ name: 'axis', type: 2, i: 1 }, { name: 'keepdims', type: 2, i: 0 }] },
        ],
        input: [vi('x', 1, ['b', 3])], output: [vi('s', 7, [2]), vi('am', 7, ['b'])],
      },
    };
    const p = path.join(tmp, 'shape.onnx');
    fs.writeFileSync(p, encodeModel(model));
    const s = await backend.session(p);
    const x: Tensor = { dtype: 'float32', shape: [2, 3], data: Float32Array.from([1, 5, 2, 9, 0, 1]) };
    const out = await backend.run(s, { x }, ['am']);
    expect(Object.keys(out)).toEqual(['am']);
    expect(out.am!.dtype).toBe('int64');
    expect(out.am!.data).toBeInstanceOf(BigInt64Array);
    expect(Array.from(out.am!.data as BigInt64Array)).toEqual([1n, 0n]);
    const all = await backend.run(s, { x });
    expect(Array.from(all.s!.data as BigInt64Array)).toEqual([2n, 3n]);
    const wrong: Tensor = { dtype: 'float32', shape: [2, 2], data: new Float32Array(4) };
    const err = await backend.run(s, { x: wrong }, ['am']).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(NnsError);
    expect((err as NnsError).code).toBe('ort-run');
    expect((err as NnsError).message).not.toContain('\n');
    expect(fromOrtTensor(toOrtTensor(wrong)).shape).toEqual([2, 2]);
  });
});

describe('biggestWeightsFirst (prepacked sessions pack the biggest weights first)', () => {
  it('moves the readers of the biggest weights to the front, biggest first; onnxruntime runs the reordered graph to the same bits', async () => {
    const { biggestWeightsFirst, PACK_FIRST_BYTES } = await import('../../backends/ort.js');
    const { decodeModel } = await import('../../src/onnx/serde.js');
    const bytes = fs.readFileSync(path.join(ROOT, 'onnx', 'model.onnx'));
    expect(biggestWeightsFirst(bytes)).toBeNull(); // gpt2-facts' weights are all below 16 MiB: nothing moves
    expect(PACK_FIRST_BYTES).toBe(2 ** 24);
    const reordered = biggestWeightsFirst(bytes, 64 * 1024)!;
    const before = decodeModel(bytes).graph!;
    const after = decodeModel(reordered).graph!;
    const sizes = new Map(before.initializer!.map((t) => [t.name!, (t.dims ?? []).reduce<number>((a, d) => a * Number(d), 1) * 4]));
    const w = (n: { op_type?: string; input?: string[] }): number => (n.op_type === 'MatMul' || n.op_type === 'Gemm' ? Math.max(0, ...(n.input ?? []).map((x) => sizes.get(x) ?? 0)) : 0);
    const moved = after.node!.filter((n) => w(n) >= 64 * 1024);
    expect(moved.length).toBeGreaterThan(1);
    expect(after.node!.slice(0, moved.length)).toEqual(moved); // all at the front
    for (let i = 1; i < moved.length; i++) expect(w(moved[i - 1]!)).toBeGreaterThanOrEqual(w(moved[i]!));
    expect(moved[0]!.name).toBe('/lm_head/MatMul'); // the unembedding: the biggest weight
    expect(after.node!.map((n) => n.name).sort()).toEqual(before.node!.map((n) => n.name).sort()); // the same nodes
    // Both prepacked, the original graph's order and the reordered one: the same logits, bit for bit, and PyTorch's.
    const ort = (await import('onnxruntime-node')).default;
    const opts = ortSessionOptions({ prepack: true });
    const a = await ort.InferenceSession.create(bytes, opts);
    const b = await ort.InferenceSession.create(reordered, opts);
    try {
      const { feeds: host } = buildFeeds(graphFeedInputs(decodeModel(bytes)), [CLEAN.input_ids]);
      const feeds = Object.fromEntries(Object.entries(host).map(([k, t]) => [k, toOrtTensor(t)]));
      const x = (await a.run(feeds, ['logits'])).logits!.data as Float32Array;
      const y = (await b.run(feeds, ['logits'])).logits!.data as Float32Array;
      expect(Buffer.from(y.buffer, y.byteOffset, y.byteLength).equals(Buffer.from(x.buffer, x.byteOffset, x.byteLength))).toBe(true);
      const V = CLEAN.expect.last_logits.length;
      const last = y.subarray(y.length - V);
      expect(Math.max(...CLEAN.expect.last_logits.map((v, i) => Math.abs(v - last[i]!)))).toBeLessThanOrEqual(1e-4);
    } finally {
      await a.release();
      await b.release();
    }
  });
});
