/**
 * The repository stands alone (issue 8 item 11): no documentation page refers to a file
 * outside the repository (an absolute path on the author's machine, `../shared/...`), and
 * every relative Markdown link resolves to a file inside the repository.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/reference.js';

function markdownFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...markdownFiles(p));
    else if (e.name.endsWith('.md')) out.push(p);
  }
  return out;
}

const FILES = markdownFiles(ROOT);

describe('documentation stands alone', () => {
  it('finds the documentation', () => {
    expect(FILES.map((f) => path.relative(ROOT, f))).toEqual(expect.arrayContaining(['README.md', path.join('docs', 'language.md')]));
  });

  it.each(FILES.map((f) => [path.relative(ROOT, f), f]))('%s refers to nothing outside the repository', (_rel, file) => {
    const text = fs.readFileSync(file, 'utf8');
    const lines = text.split('\n');
    const outside = lines.flatMap((l, i) => (/(^|[\s(`'"])\/(work|home|Users|root|mnt)\/|\.\.\/shared\b/.test(l) ? [`${i + 1}: ${l.trim()}`] : []));
    expect(outside).toEqual([]);
    const broken: string[] = [];
    for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
      const target = m[1]!.split('#')[0]!;
      if (!target || /^[a-z]+:/i.test(target)) continue; // anchors, https:, mailto:
      const abs = path.resolve(path.dirname(file), decodeURIComponent(target));
      if (!abs.startsWith(ROOT + path.sep) || !fs.existsSync(abs)) broken.push(m[1]!);
    }
    expect(broken).toEqual([]);
  });
});

describe('no unresolved merge', () => {
  it('no tracked text file holds conflict markers', () => {
    const tracked = execFileSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).split('\0').filter((f) => /\.(ts|mts|mjs|js|md|json|nns|yaml|yml|sh|proto)$/.test(f) || f === '.ci/run');
    expect(tracked.length).toBeGreaterThan(100);
    const marked = tracked.filter((f) => fs.existsSync(path.join(ROOT, f)) && /^(<{7}|>{7}) |^={7}$/m.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
    expect(marked).toEqual([]);
  });
});
