// Architecture check: imports point one way. usage: npm run layers [-- CHECKOUT]
//
// Layers, lowest first (docs/internals.md, "Layers"): a file may import files of its own
// layer or of lower layers only. Reported:
//   1. file-level import cycles (value imports),
//   2. cycles between areas (grammar, ir, passes, backends, and each folder or file of src/;
//      type imports count),
//   3. files outside backends/ that import onnxruntime (value imports),
//   4. upward imports (type imports count) and source files no layer claims.
// test/layers.test.ts runs it on the repository; it is also a script (`npx tsx test/layers.ts`, exit code 1 on any).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The layers, lowest first: [name, path prefixes (a folder ends with '/')]. */
export const LAYERS: readonly (readonly [string, readonly string[]])[] = [
  ['foundation', ['src/errors.ts', 'src/error-codes.ts', 'src/diagnostics.ts', 'src/suggest.ts', 'src/tensor.ts', 'src/progress.ts', 'src/demo.ts', 'src/read-file.ts', 'src/version.ts', 'src/js-heap.ts', 'src/onnx/', 'src/model/', 'src/oip/']],
  ['ir', ['ir/']],
  ['front end and passes', ['grammar/', 'passes/']],
  ['backends', ['backends/']],
  ['engine', ['src/compile.ts', 'src/compile-cache.ts', 'src/compiled-run.ts', 'src/fast/', 'src/engine.ts', 'src/generate/']],
  ['api and cli', ['src/trace.ts', 'src/generate-api.ts', 'src/index.ts', 'src/report/', 'src/cli/', 'src/serve/', 'src/remote/']],
];

const SKIP = new Set(['node_modules', 'test', 'bench', '.git', 'examples', 'docs', 'models', 'dist', '.cache', 'vitest.config.ts']);
const IMPORT = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;

/** The layer index of a repository-relative path (posix separators), or -1. */
export function layerOf(rel: string, layers = LAYERS): number {
  return layers.findIndex(([, prefixes]) => prefixes.some((p) => (p.endsWith('/') ? rel.startsWith(p) : rel === p)));
}

/** Strongly connected components with more than one member (Tarjan). */
function cycles(nodes: string[], adj: (v: string) => string[]): string[][] {
  let idx = 0;
  const st: string[] = [], on = new Set<string>(), ix = new Map<string, number>(), low = new Map<string, number>(), out: string[][] = [];
  const visit = (v: string): void => {
    ix.set(v, idx); low.set(v, idx++); st.push(v); on.add(v);
    for (const w of adj(v)) {
      if (!ix.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); } else if (on.has(w)) low.set(v, Math.min(low.get(v)!, ix.get(w)!));
    }
    if (low.get(v) === ix.get(v)) {
      const c: string[] = []; let w: string;
      do { w = st.pop()!; on.delete(w); c.push(w); } while (w !== v);
      if (c.length > 1) out.push(c.sort());
    }
  };
  for (const v of nodes) if (!ix.has(v)) visit(v);
  return out;
}

/**
 * Checks a checkout; returns the violations as lines (empty = clean) and the file count.
 * @param root checkout folder
 * @param layers layer table
 */
export function checkLayers(root: string, layers = LAYERS): { problems: string[]; files: number } {
  root = path.resolve(root);
  const files: string[] = [];
  (function walk(d: string): void {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (SKIP.has(e.name) || e.name.startsWith('.')) continue;
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|mts|cts)$/.test(e.name) && !e.name.endsWith('.d.ts')) files.push(p);
    }
  })(root);
  const rel = (f: string): string => path.relative(root, f).split(path.sep).join('/');
  const area = (r: string): string => { const s = r.split('/'); return s[0] === 'src' ? `src/${s[1]!.replace(/\.[cm]?ts$/, '')}` : s[0]!; };
  const edges = new Map<string, Set<string>>(), areaEdges = new Map<string, Set<string>>(), ort = new Set<string>(), problems: string[] = [];
  for (const f of files) {
    const from = rel(f);
    const txt = fs.readFileSync(f, 'utf8');
    const lf = layerOf(from, layers);
    if (lf < 0) problems.push(`no layer claims ${from} (add it to LAYERS in test/layers.ts)`);
    for (const m of txt.matchAll(IMPORT)) {
      const spec = (m[3] ?? m[4])!;
      const typeOnly = !!m[2];
      if (/^onnxruntime-(node|common|web)/.test(spec) && area(from) !== 'backends' && !typeOnly) ort.add(from);
      if (!spec.startsWith('.')) continue;
      const t = path.resolve(path.dirname(f), spec).replace(/\.[cm]?js$/, '.ts');
      const cand = [t, t.replace(/\.ts$/, '.mts'), path.join(t, 'index.ts')].find((c) => fs.existsSync(c));
      if (!cand) continue;
      const to = rel(cand);
      if (!typeOnly) { if (!edges.has(from)) edges.set(from, new Set()); edges.get(from)!.add(to); }
      const a = area(from), b = area(to);
      if (a !== b) { if (!areaEdges.has(a)) areaEdges.set(a, new Set()); areaEdges.get(a)!.add(b); }
      const lt = layerOf(to, layers);
      if (lf >= 0 && lt > lf) problems.push(`upward import: ${from} (${layers[lf]![0]}) imports ${to} (${layers[lt]![0]})`);
    }
  }
  const all = files.map(rel);
  for (const c of cycles(all, (v) => [...(edges.get(v) ?? [])])) problems.push(`file cycle: ${c.join(', ')}`);
  for (const c of cycles([...new Set(all.map(area))], (v) => [...(areaEdges.get(v) ?? [])])) problems.push(`area cycle: ${c.join(', ')}`);
  for (const f of ort) problems.push(`onnxruntime imported outside backends/: ${f}`);
  return { problems, files: files.length };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { problems, files } = checkLayers(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
  for (const p of problems) console.log(p);
  console.log(`${problems.length} layering violations in ${files} files`);
  process.exit(problems.length ? 1 : 0);
}
