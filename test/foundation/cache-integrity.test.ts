/**
 * The on-disk cache repairs itself and stays bounded (issues 9.8 and 14.2):
 * - leftovers of a killed load (a child process SIGKILLed while it holds a temporary entry,
 *   and the unnamed `.tmp-*` folders of older versions) are swept by the next load;
 * - flipped bytes in cached weights, a truncated entry graph and a truncated rewritten graph
 *   are detected and rebuilt: the next run gives the PyTorch reference (reference.json
 *   `clean_logits`) again instead of wrong numbers or an error on every run;
 * - the least recently used entries and rewritten graphs are evicted beyond the bound
 *   (`ONNSIGHT_CACHE_MAX`), recently used ones never;
 * - `nns cache list|size|clean`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel } from '../../src/index.js';
import { main, type CliIO } from '../../src/cli/main.js';
import { cacheUnits, enforceBound, EVICT_GRACE_MS, MANIFEST, sweepStale, writeVariantFile } from '../../src/model/cache.js';
import { loadModel, writeVariant } from '../../src/model/load.js';
import { MODEL_DIR, ROOT, refCase, expectClose } from '../helpers/reference.js';

const DYNAMO = path.join(MODEL_DIR, 'onnx', 'model.dynamo.onnx');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-cache-integrity-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Clean last logits of reference.json `clean_logits` through the model at `source`, with the cache in `cacheDir`. */
async function cleanLogits(source: string, cacheDir: string, fast = true): Promise<Float32Array> {
  const model = await LanguageModel.load(source, { cacheDir, fast });
  try {
    const { saves } = await model.trace(refCase('clean_logits').input_ids as number[], (m) => {
      m.output.logits.at(':', -1, ':').save('last');
    });
    return saves.last!.data as Float32Array;
  } finally {
    await model.dispose();
  }
}
const want = (): number[] => (refCase('clean_logits').expect as { last_logits: number[] }).last_logits;

function ageTo(p: string, msAgo: number): void {
  const t = new Date(Date.now() - msAgo);
  fs.utimesSync(p, t, t);
}

describe('leftovers of killed loads are swept', () => {
  it('a temporary entry of a SIGKILLed process and an old unnamed .tmp- folder are removed by the next load', async () => {
    const cacheDir = path.join(tmp, 'killed');
    fs.mkdirSync(cacheDir, { recursive: true });
    // A child creates a temporary entry the way a load does, writes into it, and is killed.
    const code = `import fs from 'node:fs'; import path from 'node:path'; import { tempName } from ${JSON.stringify(path.join(ROOT, 'src/model/cache.ts'))};
      const dir = path.join(${JSON.stringify(cacheDir)}, tempName()); fs.mkdirSync(dir); fs.writeFileSync(path.join(dir, 'model.onnx.data'), Buffer.alloc(1 << 20));
      process.kill(process.pid, 'SIGKILL');`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: ROOT });
    expect(r.signal).toBe('SIGKILL');
    const leftovers = fs.readdirSync(cacheDir).filter((f) => f.startsWith('.tmp-'));
    expect(leftovers).toHaveLength(1);
    // What older versions left: `.tmp-XXXXXX`, hours old; and one just made (a load in progress elsewhere: kept).
    fs.mkdirSync(path.join(cacheDir, '.tmp-AbC123'));
    fs.writeFileSync(path.join(cacheDir, '.tmp-AbC123', 'model.onnx.data'), 'x');
    ageTo(path.join(cacheDir, '.tmp-AbC123'), 2 * 3600_000);
    fs.mkdirSync(path.join(cacheDir, '.tmp-XyZ789'));
    await loadModel(MODEL_DIR, { cacheDir });
    expect(fs.readdirSync(cacheDir).filter((f) => f.startsWith('.tmp-'))).toEqual(['.tmp-XyZ789']);
  });

  it('a temporary entry of a live process is kept', () => {
    const cacheDir = path.join(tmp, 'live');
    fs.mkdirSync(path.join(cacheDir, `.tmp-${os.hostname().replace(/[^A-Za-z0-9.]/g, '_')}-${process.pid}-0123abcd`), { recursive: true });
    expect(sweepStale(cacheDir, true)).toEqual([]);
  });
});

describe('damaged cache entries are rebuilt', () => {
  it('flipped bytes in the cached weights: the next load rebuilds the entry and the output is right again', async () => {
    const cacheDir = path.join(tmp, 'flip');
    expectClose(await cleanLogits(MODEL_DIR, cacheDir), want(), 1e-4, 'before');
    const entry = fs.readdirSync(cacheDir).find((f) => /^[0-9a-f]{64}$/.test(f))!;
    const data = path.join(cacheDir, entry, 'model.onnx.data');
    const fd = fs.openSync(data, 'r+');
    fs.writeSync(fd, Buffer.alloc(fs.statSync(data).size >> 1, 0x41), 0, undefined, 0);
    fs.closeSync(fd);
    expectClose(await cleanLogits(MODEL_DIR, cacheDir), want(), 1e-4, 'after');
  });

  it('a truncated entry graph is rebuilt', async () => {
    const cacheDir = path.join(tmp, 'trunc-graph');
    const m = await loadModel(DYNAMO, { cacheDir });
    fs.truncateSync(m.graphPath, 1000);
    const again = await loadModel(DYNAMO, { cacheDir });
    expect(again.cached).toBe(false);
    expect(fs.statSync(again.graphPath).size).toBeGreaterThan(1000);
    expectClose(await cleanLogits(DYNAMO, cacheDir), want(), 1e-4);
  });

  it('a truncated or missing-checksum rewritten graph is written again (compiled path)', async () => {
    const cacheDir = path.join(tmp, 'trunc-variant');
    expectClose(await cleanLogits(MODEL_DIR, cacheDir, false), want(), 1e-4, 'first');
    const variants = fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((f) => /nns-[^/]*\.onnx$/.test(f));
    expect(variants.length).toBeGreaterThan(0);
    for (const v of variants) fs.truncateSync(path.join(cacheDir, v), 100);
    expectClose(await cleanLogits(MODEL_DIR, cacheDir, false), want(), 1e-4, 'after truncation');
    for (const v of variants) fs.rmSync(path.join(cacheDir, `${v}.sum`));
    expectClose(await cleanLogits(MODEL_DIR, cacheDir, false), want(), 1e-4, 'after losing the checksums');
  });
});

describe('a rewritten graph of another onnsight version under the same key', () => {
  it('is replaced, not reused: the instrumented model left by an older version (valid checksum, other graph) is rebuilt', async () => {
    const cacheDir = path.join(tmp, 'other-version');
    expectClose(await cleanLogits(MODEL_DIR, cacheDir), want(), 1e-4, 'first');
    const variants = fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((f) => /nns-ports-[^/]*\.onnx$/.test(f));
    expect(variants.length).toBeGreaterThan(0);
    // What an older version could have left: a consistent file (checksum matches) holding
    // another graph — here the plain model, which has none of the port inputs and outputs.
    const plain = fs.readFileSync(path.join(MODEL_DIR, 'onnx', 'model.onnx'));
    for (const v of variants) writeVariantFile(path.join(cacheDir, v), plain);
    expectClose(await cleanLogits(MODEL_DIR, cacheDir), want(), 1e-4, 'after an older version wrote the same key');
    for (const v of variants) expect(fs.readFileSync(path.join(cacheDir, v)).equals(plain)).toBe(false);
  });
});

describe('size bound with least-recently-used eviction', () => {
  /** A cache holding entries of both exports (built elsewhere, so this process does not hold them open). */
  async function populated(name: string): Promise<{ dir: string; ts: string; dyn: string }> {
    const build = path.join(tmp, `${name}-build`);
    const a = await loadModel(MODEL_DIR, { cacheDir: build });
    const b = await loadModel(DYNAMO, { cacheDir: build });
    const dir = path.join(tmp, name);
    fs.mkdirSync(dir);
    fs.cpSync(a.dir, path.join(dir, path.basename(a.dir)), { recursive: true });
    fs.cpSync(b.dir, path.join(dir, path.basename(b.dir)), { recursive: true });
    return { dir, ts: path.join(dir, path.basename(a.dir)), dyn: path.join(dir, path.basename(b.dir)) };
  }

  it('evicts least recently used units first: a model entry with its rewritten graphs, or one rewritten graph', async () => {
    const { dir, ts, dyn } = await populated('lru');
    fs.writeFileSync(path.join(dyn, 'nns-old.onnx'), Buffer.alloc(100_000));
    fs.writeFileSync(path.join(dyn, 'nns-old.onnx.sum'), '');
    fs.writeFileSync(path.join(dyn, 'nns-new.onnx'), Buffer.alloc(100_000));
    ageTo(path.join(ts, MANIFEST), 3 * 3600_000);
    ageTo(path.join(dyn, 'nns-old.onnx'), 2 * 3600_000);
    ageTo(path.join(dyn, 'nns-old.onnx.sum'), 2 * 3600_000);
    ageTo(path.join(dyn, MANIFEST), 1 * 3600_000);
    ageTo(path.join(dyn, 'nns-new.onnx'), 0.5 * 3600_000);
    const dynModel = cacheUnits(dir).find((u) => u.entry === dyn && u.kind === 'model')!.bytes;
    expect(enforceBound(dir, dynModel + 100_000)).toBe(dynModel + 100_000);
    expect(fs.existsSync(ts)).toBe(false);
    expect(fs.existsSync(path.join(dyn, 'nns-old.onnx'))).toBe(false);
    expect(fs.existsSync(path.join(dyn, 'nns-new.onnx'))).toBe(true);
    // Recently used units stay even over the bound, and keep their model entry.
    fs.writeFileSync(path.join(dyn, 'nns-fresh.onnx'), Buffer.alloc(100_000));
    enforceBound(dir, 0);
    expect(fs.existsSync(path.join(dyn, 'nns-fresh.onnx'))).toBe(true);
    expect(fs.existsSync(path.join(dyn, 'nns-new.onnx'))).toBe(false);
    expect(fs.existsSync(path.join(dyn, 'model.onnx'))).toBe(true);
    // Once the grace period is over, everything goes.
    enforceBound(dir, 0, Date.now() + EVICT_GRACE_MS + 1000);
    expect(fs.existsSync(dyn)).toBe(false);
  });

  it('ONNSIGHT_CACHE_MAX bounds the cache on every write; the entry in use is kept', async () => {
    const { dir, ts } = await populated('bound');
    const dyn = fs.readdirSync(dir).find((f) => path.join(dir, f) !== ts)!;
    fs.rmSync(path.join(dir, dyn), { recursive: true });
    ageTo(path.join(ts, MANIFEST), 3600_000);
    process.env.ONNSIGHT_CACHE_MAX = '6M';
    try {
      const m = await loadModel(DYNAMO, { cacheDir: dir });
      expect(fs.existsSync(ts)).toBe(false);
      expect(fs.existsSync(m.graphPath)).toBe(true);
    } finally {
      delete process.env.ONNSIGHT_CACHE_MAX;
    }
  });
});

describe('an entry removed under a running process', () => {
  it('writing a rewritten graph names the removed entry', async () => {
    const cacheDir = path.join(tmp, 'gone');
    const m = await loadModel(DYNAMO, { cacheDir });
    fs.rmSync(m.dir, { recursive: true });
    expect(() => writeVariant(m, m.proto, 'x')).toThrow(/was removed meanwhile/);
  });
});

describe('nns cache', () => {
  async function nns(args: string[], cacheDir: string): Promise<{ code: number; out: string; err: string }> {
    let out = '';
    let err = '';
    const io: CliIO = { out: (t) => void (out += `${t}\n`), err: (t) => void (err += `${t}\n`), cwd: ROOT, env: { ...process.env, ONNSIGHT_CACHE: cacheDir } };
    return { code: await main(args, io), out, err };
  }

  it('list, size and clean', async () => {
    const cacheDir = path.join(tmp, 'cli');
    const m = await loadModel(MODEL_DIR, { cacheDir });
    const list = await nns(['cache'], cacheDir);
    expect(list.code).toBe(0);
    expect(list.out).toContain(cacheDir);
    expect(list.out).toContain(m.id.slice(0, 16));
    expect(list.out).toContain(path.join(MODEL_DIR, 'onnx', 'model.onnx'));
    const size = await nns(['cache', 'size'], cacheDir);
    expect(size.out).toMatch(/^4\.\d MB in /);
    const clean = await nns(['cache', 'clean'], cacheDir);
    expect(clean.code).toBe(0);
    expect(fs.readdirSync(cacheDir)).toEqual([]);
    expect((await nns(['cache', 'size'], cacheDir)).out).toMatch(/^0 B in /);
    const bad = await nns(['cache', 'purge'], cacheDir);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain("unknown 'nns cache' action 'purge'");
  });
});
