/**
 * FileCheck goldens for every pass and run stage (test/filecheck/<stage>/<pass>.nns; see
 * test/helpers/filecheck.ts): each file's RUN line runs the named passes on gpt2-facts and
 * its CHECK lines must match what `nns check --passes=...` prints. Adding a test is adding a file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PASS_NAMES } from '../../passes/pipeline.js';
import { fileCheck, parseCheckFile, runCheckFile } from '../helpers/filecheck.js';

const DIR = path.join(import.meta.dirname, '..', 'filecheck');
const files = fs.readdirSync(DIR, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.nns')).sort();

describe('filecheck goldens', () => {
  for (const f of files) {
    it(f, async () => {
      const { output, directives } = await runCheckFile(path.join(DIR, f));
      expect(directives.length, 'a golden needs CHECK lines').toBeGreaterThan(0);
      expect(fileCheck(output, directives), output).toBeNull();
    }, 60_000);
  }

  it('every pass and run stage has a golden named after it', () => {
    const named = new Set(files.map((f) => path.basename(f, '.nns')));
    expect(PASS_NAMES.filter((p) => !named.has(p))).toEqual([]);
  });
});

describe('fileCheck', () => {
  const out = 'a = add x\nb = mul a\nc = save b\n';
  const d = (text: string) => parseCheckFile(text).directives;
  it('matches CHECK in order, CHECK-NEXT on the next line, CHECK-SAME on the same line, {{regex}}', () => {
    expect(fileCheck(out, d('# CHECK: add\n# CHECK-SAME: x\n# CHECK-NEXT: b = {{m.l}}\n# CHECK: save'))).toBeNull();
  });
  it('reports a missing line, a wrong next line and a forbidden line with the directive line', () => {
    expect(fileCheck(out, d('# CHECK: save\n# CHECK: add'))).toMatch(/^line 2: CHECK 'add' not found/);
    expect(fileCheck(out, d('# CHECK: add\n# CHECK-NEXT: save'))).toMatch(/^line 2: CHECK-NEXT 'save' does not match output line 2/);
    expect(fileCheck(out, d('# CHECK: add\n# CHECK-NOT: mul\n# CHECK: save'))).toMatch(/^line 2: CHECK-NOT 'mul' found on output line 2/);
    expect(fileCheck(out, d('# CHECK: save\n# CHECK-NOT: add'))).toBeNull();
  });
});
