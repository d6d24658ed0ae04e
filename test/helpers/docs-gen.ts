/**
 * The generated parts of docs/language.md: the list of error codes (from src/error-codes.ts)
 * and the table of functions (from the op catalogue, ir/ops.ts). `npm run docs:gen` rewrites
 * the parts between their markers; test/foundation/error-codes.test.ts fails when they are out of date.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorCodeTable } from '../../src/error-codes.js';
import { FUNCTION_OPS, OPS } from '../../ir/ops.js';

/** Path of docs/language.md. */
export const LANGUAGE_MD = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'docs', 'language.md');

/** The functions table: each catalogue op with a function surface, its signature, TS method and doc. */
export function functionTable(): string {
  const rows = [...FUNCTION_OPS].map(([op, fn]) => {
    const ps = fn.params.map(([p, kind, d]) => (p === 'shape' && kind === 'ints' ? '[d0, d1, ...]' : d === undefined ? p : d === null ? `${p}?` : `${p}=${String(d)}`));
    const camel = op.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());
    return `| \`${op}(${['x', ...ps].join(', ')})\` | \`x.${camel}(${fn.params.map(([p]) => p).join(', ')})\` | ${OPS[op].doc} |`;
  });
  return ['| function | TS API | notes |', '|---|---|---|', ...rows].join('\n');
}

function replaceBetween(text: string, name: string, body: string): string {
  const b = new RegExp(`<!-- ${name}:begin[^>]*-->\\n`).exec(text);
  const end = `<!-- ${name}:end -->`;
  const e = text.indexOf(end);
  if (!b || e < 0) throw new Error(`docs/language.md: ${name} markers not found`);
  return text.slice(0, b.index + b[0].length) + body + '\n' + text.slice(e);
}

/** `text` with the generated tables between their markers. */
export function withGeneratedTables(text: string): string {
  return replaceBetween(replaceBetween(text, 'error-codes', errorCodeTable()), 'functions', functionTable());
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  fs.writeFileSync(LANGUAGE_MD, withGeneratedTables(fs.readFileSync(LANGUAGE_MD, 'utf8')));
  console.log(`updated ${LANGUAGE_MD}`);
}
