#!/usr/bin/env node
// `npm run build`: a clean dist/ with every source compiled by tsc (tsconfig.build.json: the
// whole project except test/ and bench/, same layout as the sources), the non-TypeScript
// files the code loads at run time (*.proto), the CommonJS entry, and a build stamp that
// bin/nns.mjs compares with the sources' times in a checkout.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const dist = path.join(root, 'dist');
const SKIP = new Set(['node_modules', 'dist', 'test', 'bench', 'docs', 'examples', 'scratch', 'tmp', 'models', 'bin', 'tools']);

fs.rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { stdio: 'inherit' });
if (r.status !== 0) {
  fs.rmSync(dist, { recursive: true, force: true });
  process.exit(r.status ?? 1);
}

// Run-time assets next to the compiled files that load them (found by walking, so moved files need no edits).
function walk(dir, rel) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || (rel === '' && SKIP.has(e.name))) continue;
    const r2 = path.join(rel, e.name);
    if (e.isDirectory()) walk(path.join(dir, e.name), r2);
    else if (e.name.endsWith('.proto')) {
      fs.mkdirSync(path.join(dist, rel), { recursive: true });
      fs.copyFileSync(path.join(dir, e.name), path.join(dist, r2));
    }
  }
}
walk(root, '');

// chevrotain's own single-file ES bundle (shipped in its package as lib/chevrotain.mjs, the
// same version) instead of its ~600 separate modules (lodash-es): loading those is most of
// `nns run`'s start-up. The package does not export that file, so the build copies it into
// dist/vendor/ and points the compiled imports at it. Types still come from 'chevrotain'.
const require = createRequire(import.meta.url);
const chevrotainDir = path.dirname(path.dirname(path.dirname(require.resolve('chevrotain'))));
const bundle = fs.readFileSync(path.join(chevrotainDir, 'lib', 'chevrotain.mjs'), 'utf8').replace(/\n\/\/# sourceMappingURL=.*\s*$/, '\n');
const version = JSON.parse(fs.readFileSync(path.join(chevrotainDir, 'package.json'), 'utf8')).version;
fs.mkdirSync(path.join(dist, 'vendor'), { recursive: true });
fs.writeFileSync(path.join(dist, 'vendor', 'chevrotain.mjs'), `// chevrotain ${version} (Apache-2.0), its published bundle lib/chevrotain.mjs; see node_modules/chevrotain/LICENSE.txt\n${bundle}`);
function pointAtVendor(dir) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) pointAtVendor(p);
    else if (e.name.endsWith('.js')) {
      const src = fs.readFileSync(p, 'utf8');
      let rel = path.relative(dir, path.join(dist, 'vendor', 'chevrotain.mjs')).split(path.sep).join('/');
      if (!rel.startsWith('.')) rel = `./${rel}`;
      const out = src.replace(/(from\s*|import\s*\(\s*)(['"])chevrotain\2/g, (_m, pre, q) => `${pre}${q}${rel}${q}`);
      if (out !== src) fs.writeFileSync(p, out);
    }
  }
}
pointAtVendor(dist);

// CommonJS: `require('onnsight')` loads the ES module (Node >= 20.19 / 22.12 load ES modules
// from require()); its types are the ES module's.
fs.writeFileSync(path.join(dist, 'index.cjs'), "'use strict';\n// CommonJS entry: the ES module build, loaded with require() (Node >= 20.19).\nmodule.exports = require('./src/index.js');\n");
fs.writeFileSync(path.join(dist, 'index.d.cts'), "export * from './src/index.js';\n");
fs.writeFileSync(path.join(dist, '.build-stamp'), `${new Date().toISOString()}\n`);
