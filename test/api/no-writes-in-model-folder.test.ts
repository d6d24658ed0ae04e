/**
 * Issue 14.2: nothing is ever written into a model's folder. A copy of models/gpt2-facts
 * (inline weights) and an external-data copy of it are hashed — every file's bytes and
 * mtime, every folder's listing and mtime (a probe file created and removed again changes
 * the folder's mtime) — before and after `nns modules`, a patching sweep on the fast path
 * and on the compiled path, and `nns compile`; the sweep's numbers are checked against the
 * PyTorch reference (reference.json `patch_block_outputs`). The cache is a temporary
 * ONNSIGHT_CACHE; its default location is the platform cache folder.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { defaultCacheDir } from '../../src/model/cache.js';
import { externalizeWeights } from '../../src/onnx/external.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';
import { MODEL_DIR, ROOT, refCase } from '../helpers/reference.js';

let tmp: string;
let inline: string;
let external: string;

/** Every file's sha256, size and mtime and every folder's sorted listing and mtime, by relative path. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    const names = fs.readdirSync(d).sort();
    out[path.relative(dir, d) || '.'] = `dir ${fs.statSync(d).mtimeMs} [${names.join(',')}]`;
    for (const n of names) {
      const p = path.join(d, n);
      const st = fs.lstatSync(p);
      if (st.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = `${st.size} ${st.mtimeMs} ${crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex')}`;
    }
  };
  walk(dir);
  return out;
}

async function nns(args: string[], env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  const io: CliIO = { out: (t) => void (out += `${t}\n`), err: (t) => void (err += `${t}\n`), cwd: ROOT, env: process.env };
  try {
    const code = await main(args, io);
    return { code, out, err };
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-nowrite-'));
  inline = path.join(tmp, 'gpt2-facts');
  fs.cpSync(MODEL_DIR, inline, { recursive: true });
  external = path.join(tmp, 'gpt2-facts-ext');
  fs.mkdirSync(path.join(external, 'onnx'), { recursive: true });
  for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(MODEL_DIR, f), path.join(external, f));
  const proto = decodeModel(fs.readFileSync(path.join(MODEL_DIR, 'onnx', 'model.onnx')));
  externalizeWeights(proto, path.join(external, 'onnx', 'model.onnx.data'), 'model.onnx.data');
  fs.writeFileSync(path.join(external, 'onnx', 'model.onnx'), encodeModel(proto));
  // Back-date everything so that any rewrite, even within the same millisecond, shows in mtimes.
  const old = new Date(Date.now() - 3600_000);
  for (const d of [inline, external]) {
    for (const rel of ['', ...fs.readdirSync(d, { recursive: true }).map(String)]) fs.utimesSync(path.join(d, rel), old, old);
  }
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('no writes into model folders', () => {
  it.each([['inline weights', () => inline], ['external data', () => external]])('%s: modules, a patching sweep (fast and compiled), compile leave the folder byte-for-byte unchanged', async (_name, dirOf) => {
    const dir = dirOf();
    const before = snapshot(dir);
    const cache = path.join(tmp, `cache-${path.basename(dir)}`);
    const env = { ONNSIGHT_CACHE: cache };
    expect((await nns(['modules', dir], env)).code).toBe(0);
    const c = refCase('patch_block_outputs');
    const want = c.expect as number[][][];
    for (const fast of ['1', '0']) {
      const outFile = path.join(tmp, `patching-${path.basename(dir)}-${fast}.json`);
      const r = await nns(['run', 'examples/patching.nns', '--model', dir, '--out', outFile], { ...env, ONNSIGHT_FAST: fast });
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      const got = JSON.parse(fs.readFileSync(outFile, 'utf8')) as Record<string, { data: number[] }>;
      for (let l = 0; l < 4; l++) for (let p = 0; p < 8; p++) expect(Math.abs(got[`paris.${l}.${p}`]!.data[0]! - want[l]![p]![0]!)).toBeLessThan(1e-4);
    }
    const compiled = path.join(tmp, `out-${path.basename(dir)}`);
    fs.mkdirSync(compiled);
    expect((await nns(['compile', 'examples/eiffel.nns', '--model', dir, '-o', path.join(compiled, 'eiffel.onnx')], env)).code).toBe(0);
    expect(snapshot(dir)).toEqual(before);
    // The rewritten graphs are in the cache.
    expect(fs.readdirSync(cache, { recursive: true }).map(String).some((f) => /nns-.*\.onnx$/.test(f))).toBe(true);
  });

  it('the default cache is the platform cache folder, never the working directory', () => {
    expect(defaultCacheDir({ ONNSIGHT_CACHE: '/x/y' })).toBe('/x/y');
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/var/cache/me' })).toBe('/var/cache/me/onnsight');
    expect(defaultCacheDir({ XDG_CACHE_HOME: 'relative/ignored' })).toBe(path.join(os.homedir(), '.cache', 'onnsight'));
    expect(defaultCacheDir({})).toBe(path.join(os.homedir(), '.cache', 'onnsight'));
  });
});
