/**
 * Names saved inside a loop (`hb.0`, `hb.1`, ...) are readable from later traces as
 * `hb[l]`: patching block 1 at position 3 from the Trevi prompt this way gives PyTorch's
 * patch_block_outputs[1][3].
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect } from 'vitest';
import { MODEL_DIR, ROOT, refCase } from '../helpers/reference.js';

describe('loop-saved names in later traces', () => {
  it('hb[l] reads hb.l and patches like PyTorch', () => {
    const out = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'nns-fam-')), 'out.json');
    execFileSync(process.execPath, [path.join(ROOT, 'bin', 'nns.mjs'), 'run', path.join(ROOT, 'test/scripts/families/patch-from-loop.nns'), '--model', MODEL_DIR, '--out', out], { cwd: ROOT, stdio: 'pipe' });
    const res = JSON.parse(fs.readFileSync(out, 'utf8')) as Record<string, { data: number[] }>;
    const c = refCase('patch_block_outputs');
    const want = (c.expect as number[][][])[1]![3]!;
    expect(Object.keys(res).filter((k) => !k.startsWith('$'))).toEqual(['hb.0', 'hb.1', 'hb.2', 'hb.3', 'probs']);
    expect(Math.abs(res.probs!.data[c.answer_id!]! - want[0]!)).toBeLessThanOrEqual(1e-5);
    expect(Math.abs(res.probs!.data[c.source_answer_id!]! - want[1]!)).toBeLessThanOrEqual(1e-5);
  });
});
