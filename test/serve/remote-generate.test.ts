/**
 * Generation on `nns serve` (generation jobs: per-step IR templates run by the server's copy
 * of the local decode loop). Compared:
 * - `nns run SCRIPT --remote` against the local run of the same script (stdout with the
 *   streamed text, stderr, exit code, and the `--out` file byte for byte), for every case of
 *   models/gpt2-facts/reference-generate.json (test/scripts/generate/) on the with-past export
 *   — and the saved values against PyTorch (tokens exact, per-step logits and block outputs
 *   within 1e-4, the tolerances of test/api/generate-nns.test.ts); the same scripts on the
 *   TorchScript export, which has no cache (the server recomputes each step: windows and
 *   replays built on its side);
 * - `LanguageModel.remote(...).generate` / `.stream` against `LanguageModel.load(...)`: saves
 *   bit for bit, tokens in order as they stream, seeded sampling;
 * - limits (run time, jobs per key, saved elements, IR nodes) and errors located as locally.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runMain, type MainResult } from '../helpers/cli.js';
import { startServer, type NnsServer } from '../../src/serve/server.js';
import { LanguageModel, type GenerateResult, type ModelRef, type Tensor } from '../../src/index.js';
import { expectGenerateReference, GEN_EXPORTS, genCase as gcase, MODEL_DIR, refCase, type SavedJSON } from '../helpers/reference.js';
import { lowerGenerationJob, type GenerationJobJSON } from '../../src/generate/job.js';
import { encodeContainer } from '../../src/serve/protocol.js';
import { RemoteClient } from '../../src/remote/client.js';
import { Builder } from '../../ir/builder.js';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-remote-gen-'));
const WITH_PAST = GEN_EXPORTS['with-past'];
const MODELS = [{ name: 'with-past', path: WITH_PAST }, { name: 'torchscript', path: MODEL_DIR }];
let server: NnsServer;

beforeAll(async () => {
  server = await startServer({ models: MODELS, port: 0, host: '127.0.0.1' });
}, 120_000);
afterAll(async () => {
  await server?.close();
  fs.rmSync(TMP, { recursive: true, force: true });
});


const cli = (args: string[], env: Record<string, string> = {}): Promise<MainResult> => runMain(args, { env });


/** Runs `script` locally and remotely; asserts identical output and `--out` bytes; returns the local run and its results. */
async function same(script: string, model: (typeof MODELS)[number]): Promise<{ code: number; out: string; err: string; results: Record<string, SavedJSON> }> {
  const tag = `${path.basename(script, '.nns')}.${model.name}`;
  const lo = path.join(TMP, `${tag}.local.json`);
  const ro = path.join(TMP, `${tag}.remote.json`);
  const local = await cli(['run', script, '--model', model.path, '--out', lo]);
  const remote = await cli(['run', script, '--remote', server.url, '--model', model.name, '--out', ro]);
  // A model without a cache: the note names the model as each run knows it (a path locally, the served name remotely).
  const note = (t: string): string => t.replace(/^note: \S+ has no key\/value cache/gm, 'note: MODEL has no key/value cache');
  expect(note(remote.err), `${tag}: stderr`).toBe(note(local.err));
  if (remote.err.includes('has no key/value cache')) expect(remote.err).toContain(`note: ${model.name} has no key/value cache`);
  expect(remote.code, `${tag}: exit code (${remote.err})`).toBe(local.code);
  expect(remote.out, `${tag}: stdout`).toBe(local.out);
  expect(fs.existsSync(ro), `${tag}: --out written`).toBe(fs.existsSync(lo));
  if (fs.existsSync(lo)) expect(fs.readFileSync(ro).equals(fs.readFileSync(lo)), `${tag}: --out bytes`).toBe(true);
  return { ...local, results: fs.existsSync(lo) ? JSON.parse(fs.readFileSync(lo, 'utf8')) as Record<string, SavedJSON> : {} };
}

const SCRIPTS = path.join('test', 'scripts', 'generate');

describe('nns run --remote with generate blocks equals the local run', () => {
  it('every reference-generate.json case on the with-past export (and PyTorch)', async () => {
    const r = await same(path.join(SCRIPTS, 'reference_generate.nns'), MODELS[0]);
    expect(r.code, r.err).toBe(0);
    expectGenerateReference(r.results);
    expect(r.out).toContain('generate: The capital of France is Paris.<|endoftext|>The capital city\n');
    const b = await same(path.join(SCRIPTS, 'batched.nns'), MODELS[0]);
    expect(b.code, b.err).toBe(0);
    const want = gcase('batched').expect.ids as number[][];
    expect(b.results.row0!.data).toEqual(want[0]);
    expect(b.results.row1!.data).toEqual(want[1]);
  }, 240_000);

  it('a model without a cache (every step recomputed on the server)', async () => {
    const r = await same(path.join(SCRIPTS, 'reference_generate.nns'), MODELS[1]);
    expect(r.code, r.err).toBe(0);
    expectGenerateReference(r.results);
    expect(r.err).toContain('has no key/value cache: each step recomputed the whole sequence');
  }, 240_000);

  it('errors in a generate block are located as locally', async () => {
    const file = path.join(TMP, 'bad-gen.nns');
    fs.writeFileSync(file, 'generate "The capital of France is" max_new_token=4 {\n  step 4 { }\n  model.transformer.h[7].output.save()\n}\n');
    const r = await same(file, MODELS[0]);
    expect(r.code).toBe(1);
    expect(r.err).toContain("bad-gen.nns:1:37: error[unknown-option]: generate has no option 'max_new_token'; did you mean 'max_new_tokens'?");
    // An error the server finds (a shape mismatch, found compiling step 0) comes back with its span.
    fs.writeFileSync(file, 'generate "The capital of France is" max_new_tokens=3 {\n  model.transformer.h[1].output = model.transformer.h[1].output + model.output.logits\n}\n');
    const s = await same(file, MODELS[0]);
    expect(s.code).toBe(1);
    expect(s.err).toMatch(/bad-gen\.nns:2:\d+: error\[/);
    // Found while building step 1 of a model without a cache (X is confined to the step's position): after step 0 ran.
    fs.writeFileSync(file, 'generate "The capital of France is" max_new_tokens=3 stop_at_eos=false {\n  g = grad(model.output.logits[0, -1, 3], model.transformer.h[1].output).save()\n}\n');
    const t = await same(file, MODELS[1]);
    expect(t.code).toBe(1);
    expect(t.err).toContain('bad-gen.nns:2:43: error[bad-grad]');
  }, 120_000);
});

/** Bytes of a tensor's data. */
const bytes = (t: Tensor): Buffer => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);

function sameResult(a: GenerateResult, b: GenerateResult): void {
  expect(b.ids).toEqual(a.ids);
  expect(b.newIds).toEqual(a.newIds);
  expect(b.text).toEqual(a.text);
  expect(b.steps).toBe(a.steps);
  expect(b.mode).toBe(a.mode);
  expect(Object.keys(b.saves)).toEqual(Object.keys(a.saves));
  for (const k of Object.keys(a.saves)) {
    expect(b.saves[k]!.dtype, k).toBe(a.saves[k]!.dtype);
    expect(b.saves[k]!.shape, k).toEqual(a.saves[k]!.shape);
    expect(bytes(b.saves[k]!).equals(bytes(a.saves[k]!)), k).toBe(true);
  }
}

describe('LanguageModel.remote: generate and stream', () => {
  let local: LanguageModel;
  let remote: LanguageModel;
  beforeAll(async () => {
    local = await LanguageModel.load(WITH_PAST);
    remote = await LanguageModel.remote(server.url, 'with-past');
  }, 120_000);
  afterAll(async () => {
    await local?.dispose();
  });

  const c = refCase('generate') as { vector?: number[]; alpha?: number };
  const vec = Float32Array.from(c.vector!, (x) => x * 4);
  const body = (m: ModelRef, g: { at(s: number, f: () => void): void; generator: { output: { save(n: string): void } } }): void => {
    m.transformer.h[2].output = m.transformer.h[2].output.add(vec);
    g.at(0, () => m.transformer.h[1].output.save('h1'));
    m.output.logits.at(':', -1, ':').save('logits');
    g.generator.output.save('tokens');
  };

  it('generate (steered every step, a step block, per-step saves) equals the loaded model bit for bit, and PyTorch', async () => {
    const opts = { maxNewTokens: 6, stopAtEos: false };
    const a = await local.generate('The capital of France is', opts, body);
    const b = await remote.generate('The capital of France is', opts, body);
    sameResult(a, b);
    expect(b.ids[0]).toEqual((refCase('generate').expect as { steered: number[] }).steered);
    expect(Object.keys(b.saves)).toContain('logits.5');
  }, 120_000);

  it('batched invokes equal the loaded model; stream yields every token in order as the local one', async () => {
    const batch = (tr: { invoke(p: string, f: (m: ModelRef) => void): void }, g: { generator: { output: { save(n: string): void } } }): void => {
      tr.invoke('The capital of France is', (m) => { m.output.logits.at(':', -1, ':').save('a'); g.generator.output.save('row0'); });
      tr.invoke('The Eiffel Tower is in the city of', () => { g.generator.output.save('row1'); });
    };
    const a = await local.generate({ maxNewTokens: 4, stopAtEos: false }, batch);
    const b = await remote.generate({ maxNewTokens: 4, stopAtEos: false }, batch);
    sameResult(a, b);
    expect(b.ids).toEqual(gcase('batched').expect.ids);
    const opts = { maxNewTokens: 10 }; // stops at end-of-text
    const want: string[] = [];
    for await (const t of local.stream('The capital of France is', opts)) want.push(`${t.step}:${t.row}:${t.token}:${t.text}`);
    const got: string[] = [];
    const s = remote.stream('The capital of France is', opts);
    for await (const t of s) got.push(`${t.step}:${t.row}:${t.token}:${t.text}`);
    expect(got).toEqual(want);
    expect((await s.result).ids[0]).toEqual(gcase('stop_at_eos').expect.ids);
  }, 120_000);

  it('steps that need the compiled path (an operation inside a module) equal the loaded model bit for bit', async () => {
    const opts = { maxNewTokens: 3, stopAtEos: false };
    const fn = (m: ModelRef): void => {
      m.transformer.h[1].attn.op('Softmax').output.save('attn');
      m.transformer.h[0].mlp.output = m.transformer.h[0].mlp.output.mul(0.5);
    };
    const a = await local.generate('The Eiffel Tower is in the city of', opts, fn);
    const b = await remote.generate('The Eiffel Tower is in the city of', opts, fn);
    sameResult(a, b);
    expect(b.saves['attn.0']!.shape).toEqual([1, 4, 8, 8]);
    expect(b.saves['attn.2']!.shape).toEqual([1, 4, 1, 10]);
  }, 120_000);

  it('seeded sampling equals the local sample', async () => {
    const opts = { maxNewTokens: 8, stopAtEos: false, doSample: true, temperature: 1.5, topK: 20, seed: 1234 };
    const a = await local.generate('The Eiffel Tower is in the city of', opts);
    const b = await remote.generate('The Eiffel Tower is in the city of', opts);
    sameResult(a, b);
    const other = await remote.generate('The Eiffel Tower is in the city of', { ...opts, seed: 99 });
    expect(other.ids).toEqual((await local.generate('The Eiffel Tower is in the city of', { ...opts, seed: 99 })).ids);
  }, 120_000);
});

describe('generation jobs and the server limits', () => {
  it('a generation counts against the saved elements and IR nodes', async () => {
    const small = await startServer({ models: [MODELS[0]], port: 0, host: '127.0.0.1', limits: { maxSavedElements: 2000, maxIrNodes: 40 } });
    try {
      const m = await LanguageModel.remote(small.url, 'with-past');
      // Saved elements: 874 logits per step pass 2,000 at step 2 (counted after every step).
      await expect(m.generate('The', { maxNewTokens: 4 }, (mm) => { mm.output.logits.at(':', -1, ':').save('l'); })).rejects.toMatchObject({ errors: [{ code: 'over-limit', message: 'the generation saves 2,622 elements; this server allows 2,000 per job' }] });
      // IR nodes: the step templates count together.
      await expect(m.generate('The', { maxNewTokens: 3 }, (mm, g) => {
        for (let i = 0; i < 15; i++) mm.transformer.h[0].output.at(0, 0, i).save(`x${i}.${g.step}`);
      })).rejects.toMatchObject({ code: 'over-limit', message: expect.stringContaining('IR nodes') });
      // nns run --remote: one line, exit 2, nothing written.
      const file = path.join(TMP, 'many-saves.nns');
      const out = path.join(TMP, 'many-saves.json');
      fs.writeFileSync(file, 'generate "The" max_new_tokens=4 {\n  l = model.output.logits[:, -1, :].save()\n}\n');
      const r = await cli(['run', file, '--remote', small.url, '--model', 'with-past', '--out', out]);
      expect(r.code).toBe(2);
      expect(r.err).toBe('nns: error[over-limit]: the generation saves 2,622 elements; this server allows 2,000 per job\n');
      expect(fs.existsSync(out)).toBe(false);
    } finally {
      await small.close();
    }
  }, 120_000);

  it('a generation counts against the run time and the jobs per key', async () => {
    const keys = path.join(TMP, 'keys');
    fs.writeFileSync(keys, 'k1\n');
    const { KeySet } = await import('../../src/serve/limits.js');
    const small = await startServer({
      models: [MODELS[0]], port: 0, host: '127.0.0.1', keys: KeySet.fromFile(keys),
      limits: { maxRunMs: 2000, maxJobsPerKey: 1 }, workerEnv: { NNS_SERVE_TEST_STALL: '1' },
    });
    try {
      const m = await LanguageModel.remote(small.url, 'with-past', { apiKey: 'k1' });
      // A generation that never finishes (the worker's test hook) is stopped at the run time;
      // while it is queued or running, the key's second job is refused.
      const stalled = m.generate('The', { maxNewTokens: 2 }, (mm) => { mm.output.logits.save('__stall__'); });
      stalled.catch(() => undefined);
      while (small.jobs.stats.accepted < 1) await new Promise((r) => setTimeout(r, 50));
      await expect(m.generate('The', { maxNewTokens: 1 })).rejects.toMatchObject({ code: 'over-limit', message: expect.stringContaining('jobs queued or running') });
      await expect(stalled).rejects.toMatchObject({ errors: [{ code: 'over-limit', message: expect.stringContaining('ran longer than this server allows (2 s)') }] });
      expect(small.jobs.stats).toMatchObject({ accepted: 1, failed: 1 });
      expect((await fetch(`${small.url}/health`)).status).toBe(200);
    } finally {
      await small.close();
    }
  }, 120_000);
});

describe('malformed generation jobs', () => {
  /** A valid job (one step template saving the last logits), to break in one place each. */
  const valid = async (): Promise<GenerationJobJSON> => {
    const m = await new RemoteClient(server.url).model('with-past');
    const sp = { file: 'x.nns', line: 1, col: 1, endLine: 1, endCol: 2, offset: 0, endOffset: 1 };
    return lowerGenerationJob({
      prompts: [[264, 298]], options: { maxNewTokens: 2 }, tree: m.tree, file: 'x.nns',
      build: (b: Builder) => { b.addInvoke([0], sp); b.save(b.modelOutput('logits', sp), 'l', sp); return {}; },
    }).job;
  };
  const post = async (json: Record<string, unknown>): Promise<{ status: number; body: { error: { code: string; message: string }; errors?: { code: string; message: string }[] } }> => {
    const r = await fetch(`${server.url}/jobs?wait=1`, { method: 'POST', body: encodeContainer({ model: 'with-past', ...json }, 'host', []) as unknown as BodyInit });
    const text = Buffer.from(await r.arrayBuffer());
    return { status: r.status, body: (r.headers.get('content-type')?.includes('json') ? JSON.parse(text.toString('utf8')) : {}) as { error: { code: string; message: string } } };
  };

  it('each is refused with one clear line (bad-request), or fails as a job (bad tokens, too long)', async () => {
    const base = await valid();
    expect(base.templates.length).toBe(1);
    expect(base.steps).toEqual([0, 0]);
    const ok = await post({ generate: base });
    expect(ok.status).toBe(200);
    const cases: [(j: GenerationJobJSON) => unknown, string][] = [
      [(j) => ({ ...j, format: 'python' }), 'expected "onnsight-generate"'],
      [(j) => ({ ...j, version: 2 }), 'unsupported version 2'],
      [(j) => ({ ...j, prompts: [] }), '$.generate.prompts: expected a non-empty list'],
      [(j) => ({ ...j, prompts: [[1, -2]] }), '$.generate.prompts[0]'],
      [(j) => ({ ...j, options: { ...j.options, maxNewTokens: 0 } }), 'maxNewTokens'],
      [(j) => ({ ...j, options: { ...j.options, temperature: -1 } }), 'temperature'],
      [(j) => ({ ...j, steps: [0] }), 'one template index per step (2)'],
      [(j) => ({ ...j, steps: [0, 1] }), '$.generate.steps[1]: expected the index of a template'],
      [(j) => ({ ...j, prompts: [[1], [2]] }), 'one invoke per prompt (2)'],
      [(j) => ({ ...j, templates: [{ ...j.templates[0]!, ir: { ...j.templates[0]!.ir, nodes: [{ op: 'eval', scope: 0, inputs: [], attrs: {}, results: [], span: {} }] } }] }), 'unknown op'],
      [(j) => ({ ...j, templates: [{ ...j.templates[0]!, ir: { ...j.templates[0]!.ir, nodes: j.templates[0]!.ir.nodes.map((n) => (n.op === 'save' ? { ...n, attrs: { name: '#gen.next' } } : n)) } }] }), "the name '#gen.next' is reserved"],
    ];
    for (const [edit, want] of cases) {
      const r = await post({ generate: edit(base) });
      expect(r.status, want).toBe(400);
      expect(r.body.error.code, want).toBe('bad-request');
      expect(r.body.error.message, want).toContain(want);
    }
    const both = await post({ generate: base, ir: base.templates[0]!.ir });
    expect(both.body.error.message).toContain("both 'ir' (a trace) and 'generate'");
    // Checked against the model on the server: a token outside the vocabulary, more positions than it has.
    const tok = await post({ generate: { ...base, prompts: [[100000]] } });
    expect(tok.status).toBe(422);
    expect(tok.body.errors?.[0]).toMatchObject({ code: 'bad-prompt', message: "prompt 0 of the generation: token id 100000 is outside the model's vocabulary (0..873)" });
    const long = await post({ generate: { ...base, options: { ...base.options, maxNewTokens: 70 }, steps: Array(70).fill(0) } });
    expect(long.body.errors?.[0]).toMatchObject({ code: 'too-long', message: 'the prompt (2 tokens) and max_new_tokens=70 need 71 positions, but the model has 64' });
  }, 60_000);
});
