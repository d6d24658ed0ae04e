/**
 * Body of the ORT worker thread (started by backends/worker.ts through ort-worker.mjs).
 * Owns an {@link OrtBackend} whose sessions live and run in this thread; answers `open`,
 * `run` and `release` requests. Results are posted back with their buffers transferred
 * (copied only when onnxruntime's buffer cannot be detached).
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { OrtBackend } from './ort.js';
import { NnsError } from '../src/errors.js';
import type { WorkerReply, WorkerRequest, WireTensor } from './worker.js';
import type { Tensor, TensorData } from '../src/tensor.js';

const port = parentPort!;
const backend = new OrtBackend({ maxSessions: (workerData as { maxSessions?: number } | null)?.maxSessions ?? 4 });

function toWire(name: string, t: Tensor): WireTensor {
  return { name, dtype: t.dtype, shape: [...t.shape], data: t.data };
}

async function handle(req: WorkerRequest): Promise<WorkerReply> {
  switch (req.op) {
    case 'open': {
      const t0 = performance.now();
      await backend.session(req.graphPath, req.opts);
      return { id: req.id, ok: true, createMs: performance.now() - t0 };
    }
    case 'run': {
      const session = await backend.session(req.graphPath, req.opts);
      const feeds: Record<string, Tensor> = {};
      for (const f of req.feeds) feeds[f.name] = { dtype: f.dtype, shape: f.shape, data: f.data as TensorData };
      const t0 = performance.now();
      const out = await backend.run(session, feeds, req.fetch);
      const runMs = performance.now() - t0;
      return { id: req.id, ok: true, runMs, outputs: Object.entries(out).map(([k, v]) => toWire(k, v)) };
    }
    case 'size':
      return { id: req.id, ok: true, size: backend.size };
    case 'release':
      await backend.release(req.graphPath);
      return { id: req.id, ok: true };
  }
}

port.on('message', (req: WorkerRequest) => {
  handle(req).then(
    (reply) => {
      const buffers = [...new Set((reply.outputs ?? []).map((o) => o.data.buffer as ArrayBuffer))];
      try {
        port.postMessage(reply, buffers);
      } catch {
        port.postMessage(reply); // not detachable: structured clone copies
      }
    },
    (e: unknown) => {
      const err = e instanceof NnsError ? { code: e.code, message: e.message, kind: e.kind } : { code: 'internal', message: e instanceof Error ? e.message : String(e), kind: 'model' as const };
      port.postMessage({ id: req.id, ok: false, error: err } satisfies WorkerReply);
    },
  );
});
