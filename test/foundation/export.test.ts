/**
 * Issue 9.7 (and 15.5's shared folder): `nns compile -o` into a folder where the weights
 * cannot be hard-linked (another file system: `fs.linkSync` fails with EXDEV) copies them
 * atomically; a second compile into that folder reuses the identical file; a full disk
 * (ENOSPC after a partial write) leaves nothing behind; a damaged weights file there and the
 * temporary file of a killed copy are replaced and swept; both gpt2-facts exports compile into
 * one folder. Every written model is run with onnxruntime and compared with the PyTorch
 * reference (reference.json `clean_logits`).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { MODEL_DIR, ROOT, refCase, expectClose } from '../helpers/reference.js';

const DYNAMO = path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx');
let tmp: string;
let script: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-export-'));
  script = path.join(tmp, 'plain.nns');
  // A trace that changes nothing: the export references the model's weights file (a script
  // without any trace writes the model exactly as it is, inline weights inline).
  fs.writeFileSync(script, 'trace [464] { }\n');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => vi.restoreAllMocks());

async function compile(model: string, out: string): Promise<{ code: number; out: string; err: string }> {
  let o = '';
  let e = '';
  const io: CliIO = { out: (t) => void (o += `${t}\n`), err: (t) => void (e += `${t}\n`), cwd: ROOT, env: process.env };
  return { code: await main(['compile', script, '--model', model, '-o', out], io), out: o, err: e };
}

/** Last-position logits of the clean prompt through an exported model file, compared with the reference. */
async function expectRunsClean(file: string): Promise<void> {
  const c = refCase('clean_logits');
  const ids = c.input_ids as number[];
  const s = await ort.InferenceSession.create(file);
  try {
    const feeds: Record<string, ort.Tensor> = {};
    const n = ids.length;
    for (const name of s.inputNames) {
      const data = name.includes('mask') ? new BigInt64Array(n).fill(1n) : name.includes('position') ? BigInt64Array.from(ids.map((_, i) => BigInt(i))) : BigInt64Array.from(ids.map(BigInt));
      feeds[name] = new ort.Tensor('int64', data, [1, n]);
    }
    const out = await s.run(feeds);
    const logits = out[s.outputNames[0]!]!.data as Float32Array;
    const v = logits.length / n;
    expectClose(logits.subarray((n - 1) * v), (c.expect as { last_logits: number[] }).last_logits, 1e-4, file);
  } finally {
    await s.release();
  }
}

const noLinks = (): void => {
  vi.spyOn(fs, 'linkSync').mockImplementation(() => {
    throw Object.assign(new Error('EXDEV: cross-device link not permitted'), { code: 'EXDEV' });
  });
};
const listing = (dir: string): string[] => fs.readdirSync(dir).sort();

describe('nns compile -o into another file system', () => {
  it('copies atomically; a second compile into the folder reuses the identical weights file', async () => {
    const dir = path.join(tmp, 'xdev');
    fs.mkdirSync(dir);
    noLinks();
    const a = await compile(MODEL_DIR, path.join(dir, 'a.onnx'));
    expect(a.err).toBe('');
    expect(a.code).toBe(0);
    expect(a.out).toMatch(/weights: weights-[0-9a-f]{16}\.data, copied/);
    const b = await compile(MODEL_DIR, path.join(dir, 'b.onnx'));
    expect(b.err).toBe('');
    expect(b.code).toBe(0);
    expect(b.out).toMatch(/weights: weights-[0-9a-f]{16}\.data, existing/);
    expect(listing(dir).filter((f) => f.endsWith('.data'))).toHaveLength(1);
    await expectRunsClean(path.join(dir, 'a.onnx'));
    await expectRunsClean(path.join(dir, 'b.onnx'));
  });

  it('a full disk leaves no partial weights file and no graph', async () => {
    const dir = path.join(tmp, 'full');
    fs.mkdirSync(dir);
    noLinks();
    vi.spyOn(fs, 'copyFileSync').mockImplementation((_src, dst) => {
      fs.writeFileSync(dst as string, Buffer.alloc(4 << 10));
      throw Object.assign(new Error('ENOSPC: no space left on device, copyfile'), { code: 'ENOSPC' });
    });
    const r = await compile(MODEL_DIR, path.join(dir, 'a.onnx'));
    expect(r.code).toBe(2);
    expect(r.err).toContain('error[export-weights]');
    expect(r.err).toContain('the disk is full');
    expect(listing(dir)).toEqual([]);
  });

  it('a damaged weights file and a killed copy\'s temporary file are replaced and swept', async () => {
    const dir = path.join(tmp, 'killed');
    fs.mkdirSync(dir);
    noLinks();
    const first = await compile(MODEL_DIR, path.join(dir, 'a.onnx'));
    expect(first.code).toBe(0);
    const data = listing(dir).find((f) => f.endsWith('.data'))!;
    fs.truncateSync(path.join(dir, data), 0); // what a killed copy under the final name looked like
    const leftover = path.join(dir, `.${data}..tmp-otherhost-123-0123abcd`);
    fs.writeFileSync(leftover, Buffer.alloc(1000));
    const t = new Date(Date.now() - 2 * 86_400_000);
    fs.utimesSync(leftover, t, t);
    const again = await compile(MODEL_DIR, path.join(dir, 'a.onnx'));
    expect(again.err).toBe('');
    expect(again.code).toBe(0);
    expect(listing(dir)).toEqual(['a.onnx', data]);
    await expectRunsClean(path.join(dir, 'a.onnx'));
  });
});

describe('two exports share one folder', () => {
  it('the TorchScript and the dynamo export compile into one folder, each with its own weights', async () => {
    const dir = path.join(tmp, 'shared');
    fs.mkdirSync(dir);
    expect((await compile(MODEL_DIR, path.join(dir, 'ts.onnx'))).code).toBe(0);
    const r = await compile(DYNAMO, path.join(dir, 'dynamo.onnx'));
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(listing(dir).filter((f) => f.endsWith('.data'))).toHaveLength(2);
    await expectRunsClean(path.join(dir, 'ts.onnx'));
    await expectRunsClean(path.join(dir, 'dynamo.onnx'));
  });
});
