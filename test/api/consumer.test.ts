/**
 * The package as a consumer gets it: `npm pack` (which builds dist/ through `prepare`) in a
 * copy of the repository, then `npm ci --offline` of the tarball into a fresh project (a
 * lock file made from this repository's, so only npm's cache is used), then:
 * - the tarball holds the build, the bin, the demo model and examples, and no tests,
 *   benchmarks, CI files or TypeScript sources;
 * - the README's TypeScript API example, taken verbatim from README.md, type-checks with
 *   `tsc --strict` (skipLibCheck) as an ES module and as CommonJS, and both compiled
 *   versions run with plain `node`; their numbers match the PyTorch reference
 *   (zero_ablate_mlp layer 3, batched_cross_prompt row 0), and the model they save runs in
 *   onnxruntime-node on its own with the reference's numbers;
 * - `require('onnsight')` and `import('onnsight')` from plain JavaScript;
 * - the installed `nns` bin runs the bundled example (no tsx: it is not installed).
 * One slow test (a build and an install), so it is one `it`.
 */
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, expectClose, refCase } from '../helpers/reference.js';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-consumer-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** Folders of the checkout not copied for packing (node_modules is linked). */
const NOT_COPIED = new Set(['node_modules', 'dist', '.git', '.cache', 'scratch', 'tmp', 'docs/api']);

function copyTree(from: string, to: string, rel = ''): void {
  fs.mkdirSync(to, { recursive: true });
  for (const e of fs.readdirSync(from, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (NOT_COPIED.has(r)) continue;
    if (e.isDirectory()) copyTree(path.join(from, e.name), path.join(to, e.name), r);
    else if (e.isFile()) fs.copyFileSync(path.join(from, e.name), path.join(to, e.name));
  }
}

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  const r = spawnSync(cmd, args, { cwd, env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** The ```ts block of README.md's "The TypeScript API" section. */
function readmeExample(): string {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## The TypeScript API'));
  const m = /```ts\n([\s\S]*?)```/.exec(section);
  if (!m) throw new Error('README.md: no ```ts block in "The TypeScript API"');
  return m[1]!;
}

/** The example with a last line that prints the numbers to check. */
function withReport(body: string): string {
  return `${body}\nconsole.log('RESULT ' + JSON.stringify({ last: Array.from(saves.last.data as Float32Array), patched: Array.from(patched.patched.data as Float32Array) }));\n`;
}

/** The same example as CommonJS: imports stay at the top (tsc turns them into require), the rest in an async function. */
function asCommonJs(body: string): string {
  const lines = body.split('\n');
  const imports = lines.filter((l) => l.startsWith('import '));
  const rest = lines.filter((l) => !l.startsWith('import '));
  return `${imports.join('\n')}\n(async () => {\n${withReport(rest.join('\n'))}})();\n`;
}

const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

describe('the packed package in a fresh project', () => {
  it('packs, installs offline, type-checks and runs the README example as ESM and CommonJS', () => {
    // 1. pack a copy (the build runs in the copy, never under the tests' feet)
    const src = path.join(work, 'src');
    copyTree(ROOT, src);
    fs.symlinkSync(path.join(ROOT, 'node_modules'), path.join(src, 'node_modules'), 'dir');
    const packed = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', work, '--loglevel', 'error'], src)) as { filename: string; files: { path: string }[] }[];
    const tgz = path.join(work, packed[0]!.filename);
    const files = packed[0]!.files.map((f) => f.path);
    expect(files).toContain('dist/src/index.js');
    expect(files).toContain('dist/src/index.d.ts');
    expect(files).toContain('dist/index.cjs');
    expect(files).toContain('bin/nns.mjs');
    expect(files).toContain('models/gpt2-facts/onnx/model.onnx');
    expect(files).toContain('examples/eiffel.nns');
    expect(files.filter((f) => /^(test|bench|\.ci|tools|src|ir|passes|backends|grammar)\//.test(f) || (f.endsWith('.ts') && !f.endsWith('.d.ts')))).toEqual([]);

    // 2. install it into a fresh project, offline, with a lock file built from this repository's
    const proj = path.join(work, 'consumer');
    fs.mkdirSync(proj);
    const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, Record<string, unknown>> };
    const me = lock.packages['']!;
    const spec = `file:${path.relative(proj, tgz)}`;
    const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
    const packages: Record<string, unknown> = {
      '': { name: 'consumer', version: '1.0.0', dependencies: { onnsight: spec } },
      'node_modules/onnsight': { version: me.version, resolved: spec, integrity, license: me.license, dependencies: me.dependencies, bin: me.bin, engines: me.engines },
    };
    for (const [k, v] of Object.entries(lock.packages)) if (k !== '' && !v.dev && !v.devOptional && !k.startsWith('node_modules/onnsight/')) packages[k] = v;
    fs.writeFileSync(path.join(proj, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, dependencies: { onnsight: spec } }, null, 2));
    fs.writeFileSync(path.join(proj, 'package-lock.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', lockfileVersion: 3, requires: true, packages }, null, 2));
    run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--loglevel', 'error'], proj, { ONNXRUNTIME_NODE_INSTALL: 'skip' });
    expect(fs.existsSync(path.join(proj, 'node_modules', 'tsx'))).toBe(false);

    // 3. the README example, type-checked with tsc --strict as ESM and as CommonJS, then run with node
    const example = readmeExample();
    fs.writeFileSync(path.join(proj, 'example.mts'), withReport(example));
    fs.writeFileSync(path.join(proj, 'example.cts'), asCommonJs(example));
    fs.writeFileSync(path.join(proj, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { strict: true, skipLibCheck: true, target: 'es2022', module: 'nodenext', moduleResolution: 'nodenext', outDir: 'out', types: [] },
      files: ['example.mts', 'example.cts'],
    }));
    run(process.execPath, [tsc, '-p', 'tsconfig.json'], proj);
    const zero = (refCase('zero_ablate_mlp').expect as Record<string, { last_logits: number[] }>)['3']!.last_logits;
    const row0 = (refCase('batched_cross_prompt').expect as { row0: number[] }).row0;
    for (const [dir, file] of [['esm', 'example.mjs'], ['cjs', 'example.cjs']] as const) {
      const cwd = path.join(proj, dir);
      fs.mkdirSync(cwd);
      const out = run(process.execPath, [path.join(proj, 'out', file)], cwd);
      const line = out.split('\n').find((l) => l.startsWith('RESULT '));
      expect(line, `${file} printed no RESULT:\n${out}`).toBeDefined();
      const got = JSON.parse(line!.slice('RESULT '.length)) as { last: number[]; patched: number[] };
      expectClose(got.last, zero, 1e-4, `${file}: knock-out logits`);
      expectClose(got.patched, row0, 1e-4, `${file}: patched logits`);
      expect(out).toContain('[ 1, 874 ]');
      // the saved model: graph + weights beside it, runnable by onnxruntime-node alone
      expect(fs.existsSync(path.join(cwd, 'knockout.onnx'))).toBe(true);
    }
    const ids = refCase('zero_ablate_mlp').input_ids as number[];
    const ortCheck = `
      const ort = require('onnxruntime-node');
      (async () => {
        const s = await ort.InferenceSession.create('knockout.onnx');
        const n = ${ids.length}, ids = ${JSON.stringify(ids)};
        const all = { input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, n]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
          position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, n]) };
        const feeds = Object.fromEntries(s.inputNames.map((k) => [k, all[k]]));
        const r = await s.run(feeds);
        const lg = r[s.outputNames[0]];
        const V = lg.dims[2];
        console.log(JSON.stringify(Array.from(lg.data.subarray((n - 1) * V, n * V))));
      })();`;
    const saved = JSON.parse(run(process.execPath, ['-e', ortCheck], path.join(proj, 'esm'))) as number[];
    expectClose(saved, zero, 1e-4, 'knockout.onnx run by onnxruntime-node');

    // 4. plain JavaScript: require and import
    const cjs = run(process.execPath, ['-e', "const o = require('onnsight'); console.log(typeof o.LanguageModel.load, require('node:fs').existsSync(o.demoModelPath()))"], proj);
    expect(cjs.trim()).toBe('function true');
    const esm = run(process.execPath, ['--input-type=module', '-e', "import { LanguageModel, demoModelPath } from 'onnsight'; console.log(typeof LanguageModel.load, demoModelPath().includes('node_modules'))"], proj);
    expect(esm.trim()).toBe('function true');

    // 5. the installed bin, from the built JavaScript
    expect(run(path.join(proj, 'node_modules', '.bin', 'nns'), ['--help'], proj)).toContain('usage: nns');
    const demo = run(path.join(proj, 'node_modules', '.bin', 'nns'), ['run', 'node_modules/onnsight/examples/eiffel.nns'], proj);
    expect(demo).toMatch(/tokens: Paris/);
  }, 300_000);
});
