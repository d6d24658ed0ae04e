/**
 * docs/language.md's list of error codes, generated from src/error-codes.ts: `npm run
 * docs:errors` rewrites the part between the `error-codes` markers; test/error-codes.test.ts
 * fails when it is out of date.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorCodeTable } from '../../src/error-codes.js';

/** Path of docs/language.md. */
export const LANGUAGE_MD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'language.md');

const BEGIN = /<!-- error-codes:begin[^>]*-->\n/;
const END = '<!-- error-codes:end -->';

/** `text` with the generated table between the markers. */
export function withErrorTable(text: string): string {
  const b = BEGIN.exec(text);
  const e = text.indexOf(END);
  if (!b || e < 0) throw new Error('docs/language.md: error-codes markers not found');
  return text.slice(0, b.index + b[0].length) + errorCodeTable() + '\n' + text.slice(e);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(LANGUAGE_MD, withErrorTable(fs.readFileSync(LANGUAGE_MD, 'utf8')));
  console.log(`updated ${LANGUAGE_MD}`);
}
