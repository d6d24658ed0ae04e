/**
 * One-way layers (docs/internals.md): no import cycle, no upward import, onnxruntime only in
 * backends/, every source file in a layer. The check itself is tested on small synthetic trees.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkLayers, layerOf, LAYERS } from './layers.js';

const ROOT = path.join(import.meta.dirname, '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-layers-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function tree(name: string, files: Record<string, string>): string {
  const dir = path.join(tmp, name);
  for (const [f, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
    fs.writeFileSync(path.join(dir, f), text);
  }
  return dir;
}

describe('layers', () => {
  it('the repository has no import cycle, no upward import and no onnxruntime import outside backends/', () => {
    const { problems, files } = checkLayers(ROOT);
    expect(problems).toEqual([]);
    expect(files).toBeGreaterThan(50);
  });

  it('the layers run foundation → IR → front end/passes → backends → engine → API/CLI', () => {
    const order = ['src/errors.ts', 'src/model/load.ts', 'ir/ir.ts', 'passes/prune.ts', 'grammar/parse.ts', 'backends/ort.ts', 'src/engine.ts', 'src/fast/plan.ts', 'src/index.ts', 'src/cli/main.ts'];
    const ranks = order.map((f) => layerOf(f));
    expect(ranks).toEqual([...ranks].sort((a, b) => a - b));
    expect(ranks.every((r) => r >= 0)).toBe(true);
    expect(LAYERS.map(([name]) => name)).toEqual(['foundation', 'ir', 'front end and passes', 'backends', 'engine', 'api and cli']);
  });

  it('reports an upward import, also a type-only one', () => {
    const dir = tree('upward', {
      'ir/ir.ts': "import { x } from '../passes/p.js';\nexport const y = x;\n",
      'passes/p.ts': "export const x = 1;\n",
      'src/errors.ts': "import type { Y } from '../ir/ir.js';\nexport type Z = Y;\n",
    });
    const { problems } = checkLayers(dir);
    expect(problems).toContain('upward import: ir/ir.ts (ir) imports passes/p.ts (front end and passes)');
    expect(problems).toContain('upward import: src/errors.ts (foundation) imports ir/ir.ts (ir)');
  });

  it('reports file and area cycles within one layer, onnxruntime outside backends/, and unclaimed files', () => {
    const dir = tree('cycle', {
      'src/engine.ts': "import { b } from './fast/x.js';\nexport const a = b;\n",
      'src/fast/x.ts': "import { a } from '../engine.js';\nimport ort from 'onnxruntime-node';\nexport const b = a + ort;\n",
      'src/stray.ts': 'export const s = 1;\n',
    });
    const { problems } = checkLayers(dir);
    expect(problems).toContain('file cycle: src/engine.ts, src/fast/x.ts');
    expect(problems).toContain('area cycle: src/engine, src/fast');
    expect(problems).toContain('onnxruntime imported outside backends/: src/fast/x.ts');
    expect(problems).toContain('no layer claims src/stray.ts (add it to LAYERS in test/layers.ts)');
  });
});
