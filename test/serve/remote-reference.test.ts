/**
 * `nns run SCRIPT --remote URL --model NAME` prints and writes exactly what a local run
 * does: every reference.json script (test/scripts/reference/, checked against PyTorch by
 * test/api/nns-reference.test.ts), the examples, a param-and-gradient script and a script
 * with errors the server's checks find, on both gpt2-facts exports served by one
 * `nns serve` (in this process, port 0 on 127.0.0.1). Compared: stdout, stderr, exit code,
 * and the `--out` file byte for byte (so every saved float bit for bit). The CLI runs in
 * process (`main` with captured output) for both runs.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { runMain, type MainResult } from '../helpers/cli.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { grad, LanguageModel, type ModelRef, type TensorProxy, type Tracer } from '../../src/index.js';
import { EXPORTS, ROOT } from '../helpers/reference.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-remote-ref-'));
let server: NnsServer;

beforeAll(async () => {
  server = await startServer({ models: EXPORTS.map((e) => ({ name: e.name, path: e.path })), port: 0, host: '127.0.0.1' });
});
afterAll(async () => {
  await server?.close();
  fs.rmSync(TMP, { recursive: true, force: true });
});

const cli = (args: string[], env: Record<string, string> = {}): Promise<MainResult> => runMain(args, { env });

/** Runs `script` locally and remotely with the same arguments; asserts identical output and files. */
async function same(script: string, exp: (typeof EXPORTS)[number], extra: string[] = []): Promise<{ code: number; out: string; err: string }> {
  const tag = `${path.basename(script, '.nns')}.${exp.name}`;
  const lo = path.join(TMP, `${tag}.local.json`);
  const ro = path.join(TMP, `${tag}.remote.json`);
  // Both at once: the remote run's work is in the server's worker process.
  const [local, remote] = await Promise.all([
    cli(['run', script, '--model', exp.path, '--out', lo, ...extra]),
    cli(['run', script, '--remote', server.url, '--model', exp.name, '--out', ro, ...extra]),
  ]);
  expect(remote.err, `${tag}: stderr`).toBe(local.err);
  expect(remote.code, `${tag}: exit code`).toBe(local.code);
  expect(remote.out, `${tag}: stdout`).toBe(local.out);
  expect(fs.existsSync(ro), `${tag}: --out written`).toBe(fs.existsSync(lo));
  if (fs.existsSync(lo)) expect(fs.readFileSync(ro).equals(fs.readFileSync(lo)), `${tag}: --out bytes`).toBe(true);
  return local;
}

const REFERENCE = fs.readdirSync(path.join(ROOT, 'test', 'scripts', 'reference')).filter((f) => f.endsWith('.nns')).sort();

describe('nns run --remote equals the local run', () => {
  for (const exp of EXPORTS) {
    // Every script on the TorchScript export; on the dynamo export (another graph of the same model), two.
    const scripts = exp.name === 'torchscript' ? REFERENCE : REFERENCE.filter((f) => /^(batched_cross_prompt|patch_block_outputs)\.nns$/.test(f));
    it(`${exp.name === 'torchscript' ? 'every reference.json script' : 'reference scripts'} on the ${exp.name} export`, async () => {
      expect(REFERENCE.length).toBeGreaterThanOrEqual(9);
      expect(scripts.length).toBeGreaterThanOrEqual(2);
      for (const f of scripts) {
        const r = await same(path.join('test', 'scripts', 'reference', f), exp);
        expect(r.code, `${f}: ${r.err}`).toBe(0);
      }
    });
  }

  it('the examples (torchscript export)', async () => {
    // patching.nns and attribution.nns (sweeps, gradients) are left out for time: the param test covers gradients.
    for (const f of ['ablation.nns', 'eiffel.nns', 'logit-lens.nns', 'steering.nns']) {
      const r = await same(path.join('examples', f), EXPORTS[0]);
      expect(r.code, `${f}: ${r.err}`).toBe(0);
    }
  });

  it('with progress shown, the status stream is followed (progress events) and the output is the same', async () => {
    const run = async (args: string[]): Promise<{ code: number; out: string; progress: string }> => {
      let out = '';
      let progress = '';
      const io: CliIO = { out: (t) => (out += `${t}\n`), err: () => undefined, cwd: ROOT, env: {}, progress: { write: (t: string) => { progress += t; } } };
      return { code: await main([...args, '--progress', 'plain'], io), out, progress };
    };
    const script = path.join('test', 'scripts', 'reference', 'logit_lens.nns');
    const lo = path.join(TMP, 'progress.local.json');
    const ro = path.join(TMP, 'progress.remote.json');
    const local = await run(['run', script, '--model', EXPORTS[0].path, '--out', lo]);
    const remote = await run(['run', script, '--remote', server.url, '--model', EXPORTS[0].name, '--out', ro]);
    expect(remote.code).toBe(0);
    expect(remote.out).toBe(local.out);
    expect(fs.readFileSync(ro).equals(fs.readFileSync(lo))).toBe(true);
  });

  it('a param and its gradient (--param FILE)', async () => {
    const file = path.join(TMP, 'steer.json');
    fs.writeFileSync(file, JSON.stringify({ dtype: 'float32', shape: [128], data: Array.from({ length: 128 }, (_, i) => Math.sin(i) / 4) }));
    const r = await same(path.join('test', 'scripts', 'params', 'steer.nns'), EXPORTS[0], ['--param', `steer=${file}`]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('g: float32 [128]');
  });

  it('script errors found by the server are shown with FILE:LINE:COL as locally (exit 1)', async () => {
    const file = path.join(TMP, 'bad.nns');
    fs.writeFileSync(file, 'trace "The Eiffel Tower is in" {\n  model.transformer.h[9].output.save()\n  x = model.transformer.h[1].output + model.transformer.h[2].output[:, :, :3]\n}\n');
    const r = await same(file, EXPORTS[0]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/bad\.nns:2:3: error\[unknown-module\]/);
    expect(r.err).toContain('  2 |   model.transformer.h[9].output.save()');
  });
});

describe('LanguageModel.remote', () => {
  it('traces (one prompt, invokes, grad) equal the loaded model bit for bit', async () => {
    const local = await LanguageModel.load(EXPORTS[0].path);
    const remote = await LanguageModel.remote(server.url, EXPORTS[0].name);
    expect(remote.isRemote).toBe(true);
    expect([...remote.modules.modules.keys()]).toEqual([...local.modules.modules.keys()]);
    expect(remote.tokenize('The Eiffel Tower')).toEqual(local.tokenize('The Eiffel Tower'));
    const one = (m: ModelRef): void => {
      m.transformer.h[1].mlp.output = 0;
      m.transformer.h[2]!.attn.op('Softmax').output.save('attn');
      m.output.logits.at(':', -1, ':').softmax(-1).save('probs');
    };
    const batch = (tr: Tracer): void => {
      let hb: TensorProxy | undefined;
      tr.invoke('The Trevi Fountain is in the city of', (m) => { hb = m.transformer.h[3].output.at(':', -1, ':'); });
      tr.invoke('The Eiffel Tower is in the city of', (m) => {
        m.transformer.h[3].output.at(':', -1, ':').set(hb!);
        const y = m.output.logits.at(0, -1, 383);
        y.save('y');
        grad(y, m.transformer.h[1]!.output).save('g');
      });
    };
    for (const [a, b] of [
      [await local.trace('The Eiffel Tower is in the city of', one), await remote.trace('The Eiffel Tower is in the city of', one)],
      [await local.trace(batch), await remote.trace(batch)],
    ] as const) {
      expect(Object.keys(b.saves)).toEqual(Object.keys(a.saves));
      for (const k of Object.keys(a.saves)) {
        expect(b.saves[k]!.shape, k).toEqual(a.saves[k]!.shape);
        expect(Buffer.from(b.saves[k]!.data.buffer, b.saves[k]!.data.byteOffset, b.saves[k]!.data.byteLength).equals(Buffer.from(a.saves[k]!.data.buffer, a.saves[k]!.data.byteOffset, a.saves[k]!.data.byteLength)), k).toBe(true);
      }
      expect(b.prompts).toEqual(a.prompts);
    }
    expect(() => remote.compile('x', () => undefined)).toThrow(expect.objectContaining({ code: 'remote-unsupported' }));
    await expect(LanguageModel.remote(server.url, 'nope')).rejects.toMatchObject({ code: 'unknown-model' });
    await local.dispose();
  });
});
