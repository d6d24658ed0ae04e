/**
 * docs/errors.md lists every error code the sources raise: codes are collected from the
 * sources (the first string argument of NnsError / usageError / modelError / err / fail ...
 * calls, and `code: '...'` fields) and each must appear in the table as `code`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/reference.js';

const NOT_SOURCES = new Set(['node_modules', 'dist', 'test', 'bench', 'docs', 'examples', 'models', 'scratch', 'tools']);
const CALL = /\b\w*(?:[Ee]rror|fail|diag|report|Errors?|err)\(\s*(?:[\w.!\[\]]+,\s*)?'([a-z][a-z0-9]*(?:-[a-z0-9]+)*)'/g;
const FIELD = /code: '([a-z][a-z0-9-]*)'/g;

function sourceCodes(): Set<string> {
  const codes = new Set<string>();
  (function walk(dir: string, top: boolean): void {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      if (e.name.startsWith('.') || (top && NOT_SOURCES.has(e.name))) continue;
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p, false);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
        const s = fs.readFileSync(p, 'utf8');
        for (const m of s.matchAll(CALL)) codes.add(m[1]!);
        for (const m of s.matchAll(FIELD)) codes.add(m[1]!);
      }
    }
  })(ROOT, true);
  return codes;
}

describe('error codes', () => {
  it('every code raised in the sources is documented in docs/errors.md', () => {
    const codes = sourceCodes();
    expect(codes.size).toBeGreaterThan(60);
    const doc = fs.readFileSync(path.join(ROOT, 'docs', 'errors.md'), 'utf8');
    expect([...codes].filter((c) => !doc.includes(`\`${c}\``)).sort()).toEqual([]);
  });
});
