/** One table of error codes (src/error-codes.ts): every code used is in it, and docs/language.md lists exactly it. */
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../../src/error-codes.js';
import { LANGUAGE_MD, withGeneratedTables } from '../helpers/docs-gen.js';

const ROOT = path.join(import.meta.dirname, '..', '..');

describe('error codes', () => {
  it('docs/language.md lists the table and the catalogue\'s functions (regenerate with npm run docs:gen)', () => {
    const text = fs.readFileSync(LANGUAGE_MD, 'utf8');
    expect(text).toBe(withGeneratedTables(text));
    for (const code of Object.keys(ERROR_CODES)) expect(text).toContain(`| \`${code}\` |`);
  });

  it('every code in the table is raised somewhere in the sources', () => {
    const src = ['src', 'ir', 'passes', 'grammar', 'backends'].flatMap((d) =>
      fs.readdirSync(path.join(ROOT, d), { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && !f.endsWith('error-codes.ts')).map((f) => fs.readFileSync(path.join(ROOT, d, f), 'utf8'))).join('\n');
    const unused = Object.keys(ERROR_CODES).filter((c) => !src.includes(`'${c}'`));
    expect(unused).toEqual([]);
  });
});
