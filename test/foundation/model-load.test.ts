import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NnsError } from '../../src/errors.js';
import { allTensors, checkExternalData, DATA_ALIGNMENT, externalRef, externalizeWeights, INLINE_THRESHOLD } from '../../src/onnx/external.js';
import { readModelFile } from '../../src/onnx/file.js';
import type { ModelProto } from '../../src/onnx/proto.js';
import { decodeModel, encodeModel } from '../../src/onnx/serde.js';
import { buildFeeds, graphFeedInputs } from '../../src/model/feeds.js';
import { loadModel, writeVariant } from '../../src/model/load.js';
import { loadTokenizer } from '../../src/model/tokenizer.js';

const ROOT = path.resolve(__dirname, '../../models/gpt2-facts');
const TS_MODEL = path.join(ROOT, 'onnx/model.onnx');
const DYNAMO_MODEL = path.join(ROOT, 'onnx/model.dynamo.onnx');
const REF = JSON.parse(fs.readFileSync(path.join(ROOT, 'reference.json'), 'utf8')) as { cases: { id: string; prompt: string; input_ids: number[] }[] };

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-load-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** Runs `fn`, expects an NnsError of kind `model` with `code`, one line, naming `mention`. */
function expectModelError(fn: () => unknown, code: string, mention: string): NnsError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(NnsError);
  const e = err as NnsError;
  expect(e.code).toBe(code);
  expect(e.kind).toBe('model');
  expect(e.message).not.toContain('\n');
  expect(e.message).toContain(mention);
  return e;
}

async function expectModelErrorAsync(p: Promise<unknown>, code: string, mention: string): Promise<NnsError> {
  const e = await p.then(() => undefined, (x: unknown) => x);
  return expectModelError(() => {
    if (e) throw e;
  }, code, mention);
}

/** An external-data copy of the TorchScript export in `dir`, via externalizeWeights. */
function writeExternalModel(dir: string, location = 'model.onnx.data'): ModelProto {
  fs.mkdirSync(dir, { recursive: true });
  const proto = decodeModel(fs.readFileSync(TS_MODEL));
  externalizeWeights(proto, path.join(dir, location), location);
  fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(proto));
  return proto;
}

describe('readModelFile errors: one clear line naming the file', () => {
  it('missing file', () => {
    const p = path.join(tmp, 'nope.onnx');
    expectModelError(() => readModelFile(p), 'model-not-found', p);
  });
  it('truncated file (first half of model.onnx)', () => {
    const bytes = fs.readFileSync(TS_MODEL);
    const p = path.join(tmp, 'half.onnx');
    fs.writeFileSync(p, bytes.subarray(0, bytes.length >> 1));
    const e = expectModelError(() => readModelFile(p), 'model-truncated', p);
    expect(e.message).toMatch(/truncated/);
  });
  it('a text file renamed .onnx', () => {
    const p = path.join(tmp, 'readme.onnx');
    fs.writeFileSync(p, 'This is not a model.\nJust some text.\n');
    const e = expectModelError(() => readModelFile(p), 'model-not-onnx', p);
    expect(e.message).toMatch(/not an ONNX model/);
  });
  it('a JSON file renamed .onnx', () => {
    const p = path.join(tmp, 'config.onnx');
    fs.copyFileSync(path.join(ROOT, 'config.json'), p);
    expectModelError(() => readModelFile(p), 'model-not-onnx', 'JSON');
  });
  it('an empty file', () => {
    const p = path.join(tmp, 'empty.onnx');
    fs.writeFileSync(p, '');
    expectModelError(() => readModelFile(p), 'model-empty', p);
  });
  it('IR version 99 names the version and the supported range', () => {
    const proto = decodeModel(fs.readFileSync(DYNAMO_MODEL));
    proto.ir_version = 99;
    const p = path.join(tmp, 'ir99.onnx');
    fs.writeFileSync(p, encodeModel(proto));
    const e = expectModelError(() => readModelFile(p), 'model-ir-version', p);
    expect(e.message).toContain('99');
    expect(e.message).toContain('3 to 13');
  });
  it('opset 27', () => {
    const proto = decodeModel(fs.readFileSync(DYNAMO_MODEL));
    proto.opset_import = [{ domain: '', version: 27 }];
    const p = path.join(tmp, 'opset27.onnx');
    fs.writeFileSync(p, encodeModel(proto));
    expectModelError(() => readModelFile(p), 'model-opset', '27');
  });
  it('both real exports read fine', () => {
    expect(readModelFile(TS_MODEL).proto.graph!.node!.length).toBeGreaterThan(100);
    expect(Number(readModelFile(DYNAMO_MODEL).proto.ir_version)).toBe(10);
  });
});

describe('loadModel with inline weights: externalized once into the cache', () => {
  it('a model folder becomes a small graph + one aligned weights file, with config and tokenizer', async () => {
    const cacheDir = path.join(tmp, 'cache1');
    const m = await loadModel(ROOT, { cacheDir });
    expect(m.source).toBe(ROOT);
    expect(m.cached).toBe(false);
    expect(m.id).toMatch(/^[0-9a-f]{64}$/);
    expect(m.dir).toBe(path.join(cacheDir, m.id));
    expect(m.graphPath).toBe(path.join(m.dir, 'model.onnx'));
    const graphSize = fs.statSync(m.graphPath).size;
    const dataSize = fs.statSync(path.join(m.dir, 'model.onnx.data')).size;
    expect(graphSize).toBeLessThan(300_000); // 4.2 MB inline → ~140 KB of graph
    expect(dataSize).toBeGreaterThan(3_900_000);
    expect(m.config?.n_layer).toBe(4);
    expect(m.tokenizer?.encode('The Eiffel Tower is in the city of')).toEqual(REF.cases[0]!.input_ids);
    // Every tensor ≥ 1 KB is external, relative, 64-byte aligned; smaller ones stay inline.
    let external = 0;
    for (const { tensor } of allTensors(m.proto)) {
      const ref = externalRef(tensor);
      if (!ref) {
        expect(tensor.raw_data?.length ?? 0).toBeLessThan(INLINE_THRESHOLD);
        continue;
      }
      external++;
      expect(ref.location).toBe('model.onnx.data');
      expect(ref.offset % DATA_ALIGNMENT).toBe(0);
    }
    expect(external).toBeGreaterThan(20);
    // No leftovers from the atomic build.
    expect(fs.readdirSync(cacheDir).filter((f) => f.startsWith('.tmp-'))).toEqual([]);
  });

  it('weights bytes are preserved exactly', async () => {
    const m = await loadModel(TS_MODEL, { cacheDir: path.join(tmp, 'cache1') });
    const orig = decodeModel(fs.readFileSync(TS_MODEL));
    const data = fs.readFileSync(path.join(m.dir, 'model.onnx.data'));
    const byName = new Map(orig.graph!.initializer!.map((t) => [t.name, t]));
    for (const t of m.proto.graph!.initializer!) {
      const ref = externalRef(t);
      if (!ref) continue;
      const want = byName.get(t.name)!.raw_data!;
      expect(Buffer.compare(data.subarray(ref.offset, ref.offset + ref.length!), Buffer.from(want))).toBe(0);
    }
  });

  it('a second load of the same file reuses the cache entry without rewriting it', async () => {
    const cacheDir = path.join(tmp, 'cache2');
    const a = await loadModel(DYNAMO_MODEL, { cacheDir });
    const before = fs.statSync(path.join(a.dir, 'model.onnx.data'));
    const graphBefore = fs.statSync(a.graphPath);
    const b = await loadModel(DYNAMO_MODEL, { cacheDir });
    expect(b.cached).toBe(true);
    expect(b.id).toBe(a.id);
    expect(b.graphPath).toBe(a.graphPath);
    const after = fs.statSync(path.join(a.dir, 'model.onnx.data'));
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.ino).toBe(before.ino);
    expect(fs.statSync(a.graphPath).mtimeMs).toBe(graphBefore.mtimeMs);
    // A copy of the file elsewhere has the same content hash: same entry, no rewrite.
    const copy = path.join(tmp, 'copy-dynamo.onnx');
    fs.copyFileSync(DYNAMO_MODEL, copy);
    const c = await loadModel(copy, { cacheDir });
    expect(c.id).toBe(a.id);
    expect(c.cached).toBe(true);
    // A bare file inside <folder>/onnx/ picks up the folder's config and tokenizer.
    expect(b.config?.model_type).toBe('gpt2');
    expect(b.tokenizer).toBeDefined();
  });

  it('ONNSIGHT_CACHE sets the default cache folder', async () => {
    const prev = process.env.ONNSIGHT_CACHE;
    process.env.ONNSIGHT_CACHE = path.join(tmp, 'envcache');
    try {
      const m = await loadModel(DYNAMO_MODEL);
      expect(m.dir.startsWith(path.join(tmp, 'envcache'))).toBe(true);
    } finally {
      if (prev === undefined) delete process.env.ONNSIGHT_CACHE;
      else process.env.ONNSIGHT_CACHE = prev;
    }
  });

  it('a folder without a model names what it found', async () => {
    const dir = path.join(tmp, 'nomodel');
    fs.mkdirSync(path.join(dir, 'onnx'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'onnx', 'decoder_model.onnx'), '');
    const e = await expectModelErrorAsync(loadModel(dir, { cacheDir: path.join(tmp, 'c') }), 'model-not-found', dir);
    expect(e.notes.join(' ')).toContain('decoder_model.onnx');
    await expectModelErrorAsync(loadModel(path.join(tmp, 'missing-dir')), 'model-not-found', 'missing-dir');
  });
});

describe('loadModel with external data: a cache entry of links, checked', () => {
  it('an external-data model gets a cache entry with hard links to its weights; nothing is written into its folder', async () => {
    const dir = path.join(tmp, 'ext-link');
    writeExternalModel(dir);
    const before = fs.readdirSync(dir).sort();
    const m = await loadModel(path.join(dir, 'model.onnx'), { cacheDir: path.join(tmp, 'cache4') });
    expect(m.dir).toBe(path.join(tmp, 'cache4', m.id));
    expect(m.externalDataDir).toBeUndefined();
    expect(fs.statSync(path.join(m.dir, 'model.onnx.data')).ino).toBe(fs.statSync(path.join(dir, 'model.onnx.data')).ino);
    const v = writeVariant(m, m.proto, 'abc123');
    expect(path.dirname(v)).toBe(m.dir);
    expect(writeVariant(m, m.proto, 'abc123')).toBe(v);
    expect(() => writeVariant(m, m.proto, '../evil')).toThrow(NnsError);
    const again = await loadModel(path.join(dir, 'model.onnx'), { cacheDir: path.join(tmp, 'cache4') });
    expect(again.cached).toBe(true);
    expect(again.dir).toBe(m.dir);
    expect(fs.readdirSync(dir).sort()).toEqual(before);
  });

  it('a missing weights file is a clear error naming it', async () => {
    const dir = path.join(tmp, 'ext-missing');
    writeExternalModel(dir);
    fs.rmSync(path.join(dir, 'model.onnx.data'));
    await expectModelErrorAsync(loadModel(path.join(dir, 'model.onnx'), { cacheDir: path.join(tmp, 'c') }), 'external-data-missing', path.join(dir, 'model.onnx.data'));
  });

  it('a location escaping the folder (../) is a clear error', async () => {
    const dir = path.join(tmp, 'ext-escape', 'sub');
    writeExternalModel(dir, '../weights.bin');
    await expectModelErrorAsync(loadModel(path.join(dir, 'model.onnx'), { cacheDir: path.join(tmp, 'c') }), 'external-data-escapes', '../weights.bin');
  });

  it('an absolute location is a clear error', () => {
    const proto = decodeModel(fs.readFileSync(DYNAMO_MODEL));
    const t = proto.graph!.initializer!.find((x) => (x.raw_data?.length ?? 0) > 1024)!;
    delete t.raw_data;
    t.data_location = 1;
    t.external_data = [{ key: 'location', value: '/etc/passwd' }];
    expectModelError(() => checkExternalData(proto, tmp, 'abs.onnx'), 'external-data-absolute', '/etc/passwd');
  });

  it('a weights file shorter than offset+length is a clear error', async () => {
    const dir = path.join(tmp, 'ext-short');
    writeExternalModel(dir);
    fs.truncateSync(path.join(dir, 'model.onnx.data'), 1000);
    const e = await expectModelErrorAsync(loadModel(path.join(dir, 'model.onnx'), { cacheDir: path.join(tmp, 'c') }), 'external-data-short', 'model.onnx.data');
    expect(e.message).toContain('1000 bytes');
  });
});

describe('tokenizer', () => {
  const tok = loadTokenizer(ROOT)!;
  it('encodes the reference prompt to reference.json input_ids', () => {
    for (const c of REF.cases.filter((x) => x.prompt && x.input_ids)) expect(tok.encode(c.prompt)).toEqual(c.input_ids);
  });
  it('decodes ids and single tokens', () => {
    expect(tok.tokenToString(383)).toBe(' Paris');
    expect(tok.decode([...REF.cases[0]!.input_ids, 383])).toBe('The Eiffel Tower is in the city of Paris');
    expect(tok.padId).toBe(0);
  });
});

describe('buildFeeds', () => {
  const inputs = graphFeedInputs(decodeModel(fs.readFileSync(TS_MODEL)));
  it('takes the TorchScript export inputs from the graph', () => {
    expect(inputs.map((i) => i.name)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
  });
  it('left-pads unequal rows, masks pads, numbers positions from the first token', () => {
    const { feeds, seqLen, padLeft } = buildFeeds(inputs, [[5, 6, 7, 8], [9, 10]], { padId: 3 });
    expect(seqLen).toBe(4);
    expect(padLeft).toEqual([0, 2]);
    expect(Array.from(feeds.input_ids!.data as BigInt64Array, Number)).toEqual([5, 6, 7, 8, 3, 3, 9, 10]);
    expect(Array.from(feeds.attention_mask!.data as BigInt64Array, Number)).toEqual([1, 1, 1, 1, 0, 0, 1, 1]);
    expect(Array.from(feeds.position_ids!.data as BigInt64Array, Number)).toEqual([0, 1, 2, 3, 0, 0, 0, 1]);
    expect(feeds.input_ids!.shape).toEqual([2, 4]);
  });
  it('feeds only what the graph takes (dynamo export: input_ids)', () => {
    const dyn = graphFeedInputs(decodeModel(fs.readFileSync(DYNAMO_MODEL)));
    expect(Object.keys(buildFeeds(dyn, [[1, 2]]).feeds)).toEqual(['input_ids']);
  });
  it('respects int32 inputs', () => {
    const { feeds } = buildFeeds([{ name: 'input_ids', elemType: 6 }, { name: 'attention_mask', elemType: 6 }], [[1, 2]]);
    expect(feeds.input_ids!.dtype).toBe('int32');
    expect(feeds.attention_mask!.data).toBeInstanceOf(Int32Array);
  });
  it('an input it cannot fill is an error naming it', () => {
    expectModelError(() => buildFeeds([...inputs, { name: 'past_key_values.0.key', elemType: 1 }], [[1]]), 'feeds-unknown-input', 'past_key_values.0.key');
  });
  it('a fixed sequence length that does not match is an error', () => {
    expectModelError(() => buildFeeds([{ name: 'input_ids', elemType: 7, dims: [1, 8] }], [[1, 2]]), 'feeds-shape', 'input_ids');
  });
  it('no rows / empty row are errors', () => {
    expectModelError(() => buildFeeds(inputs, []), 'feeds-empty', 'no input rows');
    expectModelError(() => buildFeeds(inputs, [[1], []]), 'feeds-empty', 'row 1');
  });
});

describe('padding without an attention mask', () => {
  it('is refused with a clear error instead of silently changing results', () => {
    const inputs = [{ name: 'input_ids', elemType: 7, dims: ['s72', 's70'] }];
    expect(() => buildFeeds(inputs, [[1, 2, 3], [4, 5]])).toThrow(/different lengths \(3, 2 tokens\).*no attention_mask/);
    expect(buildFeeds(inputs, [[1, 2], [4, 5]]).seqLen).toBe(2);
  });
});
