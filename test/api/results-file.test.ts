/**
 * Issue 9.6: `nns run --out` writes results of any size. The JSON is streamed (byte-identical
 * to `JSON.stringify` for small results; a result longer than V8's string limit — 46 M
 * ten-digit values, 552 MB of text — is written whole), and `.safetensors` is checked by an
 * independent reader (Python + NumPy) against reference.json `clean_logits`.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main, type CliIO } from '../../src/cli/main.js';
import { writeResultsFile } from '../../src/cli/results-file.js';
import { tensorToJSON, type Tensor } from '../../src/tensor.js';
import { ROOT, refCase } from '../helpers/reference.js';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-results-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const small = new Map<string, Tensor>([
  ['a "quoted" name', { dtype: 'float32', shape: [2, 3], data: Float32Array.from([0.1, -0, NaN, Infinity, -1e-30, 3]) }],
  ['ids', { dtype: 'int64', shape: [3], data: BigInt64Array.from([464n, -5n, 9007199254740993n]) }],
  ['mask', { dtype: 'bool', shape: [2], data: Uint8Array.from([1, 0]) }],
  ['empty', { dtype: 'float32', shape: [0, 4], data: new Float32Array(0) }],
  ['x.1.2', { dtype: 'float64', shape: [], data: Float64Array.from([Math.PI]) }],
]);

describe('--out FILE.json', () => {
  it('is byte-identical to JSON.stringify for small results', () => {
    const file = path.join(tmp, 'small.json');
    writeResultsFile(file, small);
    const json: Record<string, unknown> = {};
    for (const [k, v] of small) json[k] = tensorToJSON(v);
    expect(fs.readFileSync(file, 'utf8')).toBe(`${JSON.stringify(json)}\n`);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('with $families and $prompts: byte-identical to reportToJSON (what nns plot reads back)', async () => {
    const { buildReport, reportToJSON } = await import('../../src/report/report.js');
    const grid = new Map<string, Tensor>();
    for (let l = 0; l < 3; l++) for (let p = 0; p < 2; p++) grid.set(`paris.${l}.${p}`, { dtype: 'float32', shape: [1], data: Float32Array.from([l + p / 10]) });
    grid.set('odd', { dtype: 'float32', shape: [2], data: Float32Array.from([NaN, -Infinity]) });
    const report = buildReport(grid, [{ text: 'a prompt', ids: [1, 2], tokens: ['a', ' prompt'] }] as never, new Map([['paris', ['l', 'p']]]));
    const file = path.join(tmp, 'report.json');
    writeResultsFile(file, grid, { $families: report.families, $prompts: report.prompts });
    expect(fs.readFileSync(file, 'utf8')).toBe(reportToJSON(report));
  });

  it('writes a result longer than V8\'s string limit (46 M int32 values, 552 MB of text)', { timeout: 600_000 }, async () => {
    // Ten-digit integers format ~3x faster than floats, which keeps this test to seconds.
    const n = 46_000_000;
    const data = new Int32Array(n);
    for (let i = 0; i < n; i++) data[i] = -1_000_000_000 - ((i * 7919) % 73_000_003);
    const file = path.join(tmp, 'big.json');
    writeResultsFile(file, new Map([['big', { dtype: 'int32', shape: [n], data }]]));
    const size = fs.statSync(file).size;
    expect(size).toBeGreaterThan(2 ** 29); // one string of this many characters cannot exist in V8
    // Read it back: the head, then count the elements (commas) and check every 999 983rd one.
    const text = fs.readFileSync(file); // a Buffer: no string this long is ever made
    const head = '{"big":{"dtype":"int32","shape":[46000000],"data":[';
    expect(text.toString('latin1', 0, head.length)).toBe(head);
    let start = head.length;
    let index = 0;
    let checked = 0;
    for (;;) {
      const comma = text.indexOf(0x2c, start);
      const end = comma < 0 ? text.indexOf(0x5d, start) : comma;
      if (index % 999_983 === 0 || comma < 0) {
        expect(Number(text.toString('latin1', start, end))).toBe(data[index]);
        checked++;
      }
      index++;
      if (comma < 0) break;
      start = comma + 1;
    }
    expect(text.toString('latin1', text.length - 4)).toBe(']}}\n');
    expect(index).toBe(n);
    expect(checked).toBeGreaterThan(40);
  });
});

describe('--out FILE.safetensors', () => {
  const py = (file: string): Record<string, { dtype: string; shape: number[]; values: number[] }> => {
    const code = [
      'import json, struct, sys, numpy as np',
      'raw = open(sys.argv[1], "rb").read()',
      'n = struct.unpack("<Q", raw[:8])[0]',
      'h = json.loads(raw[8:8 + n])',
      'h.pop("__metadata__", None)',
      'T = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "BOOL": np.bool_}',
      'out = {}',
      'for k, v in h.items():',
      '    b, e = v["data_offsets"]',
      '    a = np.frombuffer(raw[8 + n + b:8 + n + e], dtype=T[v["dtype"]]).reshape(v["shape"])',
      '    out[k] = {"dtype": v["dtype"], "shape": list(a.shape), "values": [None if not np.isfinite(x) else float(x) for x in a.astype(np.float64).ravel()]}',
      'print(json.dumps(out))',
    ].join('\n');
    const r = spawnSync('python3', ['-c', code, file], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    return JSON.parse(r.stdout) as Record<string, { dtype: string; shape: number[]; values: number[] }>;
  };

  it('an independent reader (Python, NumPy) gets the same values', () => {
    const file = path.join(tmp, 'small.safetensors');
    writeResultsFile(file, small);
    const got = py(file);
    expect(got['a "quoted" name']).toEqual({ dtype: 'F32', shape: [2, 3], values: [Math.fround(0.1), -0, null, null, Math.fround(-1e-30), 3] });
    expect(got.ids).toEqual({ dtype: 'I64', shape: [3], values: [464, -5, 9007199254740992] });
    expect(got.mask).toEqual({ dtype: 'BOOL', shape: [2], values: [1, 0] });
    expect(got.empty).toEqual({ dtype: 'F32', shape: [0, 4], values: [] });
    expect(got['x.1.2']).toEqual({ dtype: 'F64', shape: [], values: [Math.PI] });
  });

  it('nns run --out FILE.safetensors: the clean logits match the PyTorch reference', async () => {
    const file = path.join(tmp, 'clean.safetensors');
    let err = '';
    const io: CliIO = { out: () => undefined, err: (t) => void (err += t), cwd: ROOT, env: process.env };
    expect(await main(['run', 'test/scripts/reference/clean_logits.nns', '--out', file], io)).toBe(0);
    expect(err).toBe('');
    const got = py(file);
    const want = refCase('clean_logits').expect as { last_logits: number[]; top5: number[] };
    expect(got.last!.shape).toEqual([1, 874]);
    let worst = 0;
    got.last!.values.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - want.last_logits[i]!))));
    expect(worst).toBeLessThan(1e-4);
    expect(got.top5!.values).toEqual(want.top5);
  });
});
