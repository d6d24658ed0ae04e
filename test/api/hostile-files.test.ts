/**
 * Hostile files and environments (issue 9, items 5 and 9): special files where a model,
 * `config.json`, `tokenizer.json` or a script is expected; external-data locations with a NUL
 * or a symlink loop; a cache folder that cannot be written; onnxruntime's own log lines; a
 * prompt longer than the model's positions or with a token id outside its vocabulary.
 * Every case ends with one clean error (exit 1 or 2), no stack trace, no onnxruntime log line.
 *
 * CLI cases run `nns` in a child process that is killed if it has not ended after a minute:
 * a guard against the hangs these cases used to cause, never a measurement.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { nns as runNns } from '../helpers/cli.js';
import { NnsError } from '../../src/errors.js';
import { loadModel } from '../../src/model/load.js';
import { maxPositions, positionTableSize, vocabTableSize } from '../../src/model/positions.js';
import type { ModelProto } from '../../src/onnx/proto.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';

const root = path.join(import.meta.dirname, '..', '..');
const FACTS = path.join(root, 'models', 'gpt2-facts');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-hostile-'));
const cache = path.join(tmp, 'cache');
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

interface Result { code: number | null; out: string; err: string; killed: boolean }

/** Runs `nns args` with a private cache; kills it after 60 s (a hang guard, not a timing check). */
const nns = (args: string[], env: Record<string, string> = {}): Promise<Result> => runNns(args, { cwd: tmp, env: { ONNSIGHT_CACHE: cache, ...env }, killAfterMs: 60_000 });

/** One clean error: the exit code, the error code, no stack trace, no onnxruntime log line. */
function expectClean(r: Result, exit: number, code: string): void {
  expect(r.killed, 'nns did not end').toBe(false);
  expect(r.err).toContain(`error[${code}]`);
  expect(r.code, r.err).toBe(exit);
  expect(r.err).not.toMatch(/^\s+at .*:\d+:\d+\)?$/m);
  expect(r.err).not.toMatch(/internal error|onnxruntime:|\[[EWI]:onnxruntime/);
  expect(r.err.split('\n').filter((l) => / error\[/.test(l))).toHaveLength(1);
}

function mkfifo(file: string): void {
  execFileSync('mkfifo', [file]);
}

/** A folder with gpt2-facts' graph (a symlink), config and tokenizer, each replaceable. */
function modelFolder(name: string, replace: Record<string, (file: string) => void> = {}): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
  const files: Record<string, string> = {
    'onnx/model.onnx': path.join(FACTS, 'onnx/model.onnx'),
    'config.json': path.join(FACTS, 'config.json'),
    'tokenizer.json': path.join(FACTS, 'tokenizer.json'),
    'tokenizer_config.json': path.join(FACTS, 'tokenizer_config.json'),
  };
  for (const [rel, src] of Object.entries(files)) {
    const f = path.join(dir, rel);
    if (replace[rel]) replace[rel]!(f);
    else fs.symlinkSync(src, f);
  }
  return dir;
}

const script = path.join(tmp, 'eiffel.nns');
fs.writeFileSync(script, 'trace "The Eiffel Tower is in the city of" {\n  logits = model.output[:, -1, :].save()\n}\n');

describe('special files are refused, never read forever (issue 9.5)', () => {
  it.concurrent('a model file that is /dev/zero', async () => {
    const dir = modelFolder('zero-model', { 'onnx/model.onnx': (f) => fs.symlinkSync('/dev/zero', f) });
    const r = await nns(['run', script, '--model', dir]);
    expectClean(r, 2, 'model-not-a-file');
    expect(r.err).toContain('character device');
  });

  it.concurrent('--model naming a FIFO', async () => {
    const fifo = path.join(tmp, 'model-fifo.onnx');
    mkfifo(fifo);
    const r = await nns(['run', script, '--model', fifo]);
    expectClean(r, 2, 'model-not-a-file');
    expect(r.err).toContain('FIFO');
  });

  it.concurrent('config.json that is /dev/zero', async () => {
    const dir = modelFolder('zero-config', { 'config.json': (f) => fs.symlinkSync('/dev/zero', f) });
    const r = await nns(['run', script, '--model', dir]);
    expectClean(r, 2, 'json-invalid');
    expect(r.err).toContain('config.json');
  });

  it.concurrent('tokenizer.json that is a FIFO', async () => {
    const dir = modelFolder('fifo-tokenizer', { 'tokenizer.json': mkfifo });
    const r = await nns(['run', script, '--model', dir]);
    expectClean(r, 2, 'json-invalid');
    expect(r.err).toContain('tokenizer.json');
  });

  it.concurrent('tokenizer.json larger than the JSON limit (a sparse 300 MB file)', async () => {
    const dir = modelFolder('huge-tokenizer', { 'tokenizer.json': (f) => fs.truncateSync((fs.writeFileSync(f, '{'), f), 300 * 2 ** 20) });
    const r = await nns(['run', script, '--model', dir]);
    expectClean(r, 2, 'json-invalid');
    expect(r.err).toContain('larger than 256 MiB');
  });

  it.concurrent('a script that is a FIFO', async () => {
    const fifo = path.join(tmp, 'script-fifo.nns');
    mkfifo(fifo);
    const r = await nns(['run', fifo, '--model', FACTS]);
    expectClean(r, 2, 'bad-script');
  });
});

/** A one-node model `y = x + w` with `w` in external data at `location`. */
function externalModel(location: string): ModelProto {
  const t = (name: string) => ({ name, type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_value: 4 }] } } } });
  return {
    ir_version: 8, opset_import: [{ domain: '', version: 18 }],
    graph: {
      name: 'g', input: [t('x')], output: [t('y')],
      node: [{ op_type: 'Add', input: ['x', 'w'], output: ['y'], name: 'add' }],
      initializer: [{
        name: 'w', data_type: 1, dims: [4], data_location: 1,
        external_data: [{ key: 'location', value: location }, { key: 'offset', value: '0' }, { key: 'length', value: '16' }],
      }],
    },
  };
}

async function loadError(source: string, opts: Parameters<typeof loadModel>[1] = {}): Promise<NnsError> {
  const e = await loadModel(source, { cacheDir: cache, ...opts }).then(() => undefined, (x: unknown) => x);
  expect(e).toBeInstanceOf(NnsError);
  expect((e as NnsError).kind).toBe('model');
  return e as NnsError;
}

describe('other internal errors become clean errors (issue 9.9)', () => {
  afterEach(() => {
    vi.restoreAllMocks();
  });

  it('an external-data location with a NUL character', async () => {
    const dir = path.join(tmp, 'nul-location');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(externalModel('w\0.bin')));
    const e = await loadError(path.join(dir, 'model.onnx'));
    expect(e.code).toBe('external-data-bad-location');
    expect(e.message).toContain('"w\\u0000.bin"');
  });

  it('an external-data location that is a symlink loop (ELOOP)', async () => {
    const dir = path.join(tmp, 'loop-location');
    fs.mkdirSync(dir);
    fs.symlinkSync('a.bin', path.join(dir, 'b.bin'));
    fs.symlinkSync('b.bin', path.join(dir, 'a.bin'));
    fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(externalModel('a.bin')));
    const e = await loadError(path.join(dir, 'model.onnx'));
    expect(e.code).toBe('external-data-unreadable');
    expect(e.message).toContain('symlink loop');
  });

  it('an existing cache folder on a read-only file system (EROFS creating the entry)', async () => {
    fs.mkdirSync(path.join(tmp, 'ro-cache'), { recursive: true });
    const mkdir = fs.mkdirSync;
    // The folder exists (creating it recursively succeeds); nothing can be created inside.
    vi.spyOn(fs, 'mkdirSync').mockImplementation(((p: fs.PathLike, o?: fs.MakeDirectoryOptions) => {
      if (String(p).startsWith(path.join(tmp, 'ro-cache'))) {
        if (o?.recursive && fs.existsSync(p)) return undefined;
        throw Object.assign(new Error(`EROFS: read-only file system, mkdir '${String(p)}'`), { code: 'EROFS' });
      }
      return mkdir(p, o);
    }) as typeof fs.mkdirSync);
    vi.spyOn(fs, 'mkdtempSync').mockImplementation(() => {
      throw Object.assign(new Error("EROFS: read-only file system, mkdtemp '.tmp-XXXXXX'"), { code: 'EROFS' });
    });
    const e = await loadError(FACTS, { cacheDir: path.join(tmp, 'ro-cache') });
    expect(e.code).toBe('cache-unwritable');
    expect(e.message).toContain('EROFS');
    expect(e.notes.join(' ')).toContain('ONNSIGHT_CACHE');
  });

  it.concurrent('onnxruntime prints no log line of its own (a warning at load, an error at run)', async () => {
    // `w` is both an initializer and a graph input (onnxruntime warns at session creation);
    // `y` has no declared type, so opening the model runs it, and the Reshape fails at run time.
    const model: ModelProto = {
      ir_version: 8, opset_import: [{ domain: '', version: 18 }],
      graph: {
        name: 'g',
        input: [
          { name: 'x', type: { tensor_type: { elem_type: 1, shape: { dim: [{ dim_param: 'batch' }, { dim_value: 3 }] } } } },
          { name: 'w', type: { tensor_type: { elem_type: 7, shape: { dim: [{ dim_value: 2 }] } } } },
        ],
        output: [{ name: 'y' }],
        node: [{ op_type: 'Reshape', input: ['x', 'w'], output: ['y'], name: 'reshape' }],
        initializer: [{ name: 'w', data_type: 7, dims: [2], int64_data: [2, 2] }],
      },
    };
    const file = path.join(tmp, 'fails-at-run.onnx');
    fs.writeFileSync(file, encodeModel(model));
    const empty = path.join(tmp, 'empty.nns');
    fs.writeFileSync(empty, '');
    const r = await nns(['compile', empty, '--model', file, '-o', path.join(tmp, 'out-fails.onnx')]);
    expectClean(r, 2, 'invalid-model');
    expect(r.err).toContain('Reshape');
    expect(fs.existsSync(path.join(tmp, 'out-fails.onnx'))).toBe(false);
  });

  it.concurrent('a prompt longer than the model\'s positions (config.json n_positions)', async () => {
    const f = path.join(tmp, 'long.nns');
    fs.writeFileSync(f, `trace "${Array(70).fill('the').join(' ')}" {\n  l = model.output.save()\n}\n`);
    const r = await nns(['run', f, '--model', FACTS]);
    expectClean(r, 1, 'prompt-too-long');
    expect(r.err).toContain(`${f}:1:1: error[prompt-too-long]: the prompt has 70 tokens; the model takes at most 64 positions`);
    expect(r.err).not.toContain('Gather');
  });

  it.concurrent('a prompt longer than the positions of a bare .onnx (the limit read from the graph)', async () => {
    const dir = path.join(tmp, 'bare');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(FACTS, 'onnx/model.dynamo.onnx'), path.join(dir, 'model.onnx'));
    const f = path.join(tmp, 'long-ids.nns');
    fs.writeFileSync(f, `trace {\n  invoke [${Array(64).fill(5).join(', ')}] { a = model.output.save() }\n  invoke [${Array(65).fill(5).join(', ')}] { b = model.output.save() }\n}\n`);
    const r = await nns(['run', f, '--model', path.join(dir, 'model.onnx')]);
    expectClean(r, 1, 'prompt-too-long');
    expect(r.err).toContain(`${f}:3:3: error[prompt-too-long]: the prompt has 65 tokens; the model takes at most 64 positions`);
  });

  it.concurrent('a token id outside the vocabulary (config.json vocab_size, or the graph\'s embedding table)', async () => {
    const f = path.join(tmp, 'vocab.nns');
    fs.writeFileSync(f, 'trace [464, 874] {\n  l = model.output.save()\n}\n');
    const r = await nns(['run', f, '--model', FACTS]);
    expectClean(r, 1, 'bad-prompt');
    expect(r.err).toContain("token id 874 is outside the model's vocabulary (0..873)");
    // Without config.json the limit comes from the token-embedding table in the graph.
    const dir = path.join(tmp, 'bare-vocab');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(FACTS, 'onnx/model.dynamo.onnx'), path.join(dir, 'model.onnx'));
    const bare = await nns(['run', f, '--model', path.join(dir, 'model.onnx')]);
    expectClean(bare, 1, 'bad-token-id');
    expect(bare.err).toContain(`${f}:1:1: error[bad-token-id]: token id 874 is outside the model's vocabulary (0..873: the rows of its token-embedding table)`);
  });

  it('the position and vocabulary limits of both exports, from the config and from the graph alone', () => {
    const config = JSON.parse(fs.readFileSync(path.join(FACTS, 'config.json'), 'utf8')) as Record<string, unknown>;
    for (const file of ['model.onnx', 'model.dynamo.onnx']) {
      const m = decodeModel(fs.readFileSync(path.join(FACTS, 'onnx', file)));
      expect(positionTableSize(m), file).toBe(config.n_positions);
      expect(vocabTableSize(m), file).toBe(config.vocab_size);
      expect(maxPositions(m, config)).toBe(64);
      expect(maxPositions(m, { max_position_embeddings: 32 })).toBe(32);
    }
  });
});
