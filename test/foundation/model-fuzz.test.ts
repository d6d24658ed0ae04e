/**
 * Corrupted model files never crash onnsight: each of a set of randomly mutated copies of
 * the bundled model either loads or gives one clear model error (exit 2) — never an
 * internal error or a stack trace.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect } from 'vitest';
import { main } from '../../src/cli/main.js';
import { MODEL_DIR } from '../helpers/reference.js';

describe('mutated model files', () => {
  it('load or fail with one model error line', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-fuzz-'));
    const env = { ONNSIGHT_CACHE: path.join(dir, 'cache') };
    const saved = process.env.ONNSIGHT_CACHE;
    process.env.ONNSIGHT_CACHE = env.ONNSIGHT_CACHE;
    try {
      const orig = fs.readFileSync(path.join(MODEL_DIR, 'onnx', 'model.onnx'));
      let seed = 7;
      const rnd = (): number => {
        seed = (seed * 1103515245 + 12345) % 2147483648;
        return seed / 2147483648;
      };
      const codes = new Map<number, number>();
      for (let i = 0; i < 30; i++) {
        const b = Buffer.from(orig);
        const n = 1 + Math.floor(rnd() * 8);
        for (let k = 0; k < n; k++) b[Math.floor(rnd() * 200_000)] = Math.floor(rnd() * 256); // the graph's structure is near the start
        const file = path.join(dir, `m${i}.onnx`);
        fs.writeFileSync(file, b);
        let err = '';
        const code = await main(['modules', file], { out: () => {}, err: (t) => { err += t; }, cwd: dir, env });
        codes.set(code, (codes.get(code) ?? 0) + 1);
        expect([0, 2], err).toContain(code);
        if (code === 2) {
          expect(err.trim().split('\n')[0]).toMatch(/^nns: error\[[a-z-]+\]: /);
          expect(err).not.toMatch(/\n\s+at /); // no stack trace
        }
      }
      expect(codes.get(2) ?? 0).toBeGreaterThan(5); // the mutations do break files
    } finally {
      if (saved === undefined) delete process.env.ONNSIGHT_CACHE;
      else process.env.ONNSIGHT_CACHE = saved;
    }
  });
});
