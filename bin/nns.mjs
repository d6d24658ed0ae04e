#!/usr/bin/env node
// The `nns` command: runs the built JavaScript in dist/ (`npm run build`; `npm ci` and
// `npm pack` build it). In a checkout whose TypeScript sources are newer than the build, or
// with no build, or with NNS_FROM_SOURCE=1, it runs the sources through tsx instead.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

function internal(e) {
  process.stderr.write(`nns: internal error: ${e && e.message ? String(e.message).split('\n')[0] : String(e)}\n`);
  if (process.env.NNS_DEBUG === '1' && e && e.stack) process.stderr.write(`${e.stack}\n`);
  else process.stderr.write('nns: this is a bug in onnsight; please report it (rerun with NNS_DEBUG=1 to see the stack trace)\n');
  process.exit(3);
}
// A closed pipe (`nns run x.nns | head`) is not an error.
process.stdout.on('error', (e) => (e && e.code === 'EPIPE' ? process.exit(0) : internal(e)));
process.on('uncaughtException', internal);
process.on('unhandledRejection', internal);

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const built = path.join(root, 'dist', 'src', 'cli', 'main.js');
// Folders of a checkout that hold no library sources.
const NOT_SOURCES = new Set(['node_modules', 'dist', 'test', 'bench', 'docs', 'examples', 'models', 'bin', 'tools', 'scratch', 'tmp']);

/** Newest modification time of the .ts sources (0 in an installed package: it ships none). */
function newestSource(dir, top) {
  let newest = 0;
  let entries;
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return 0;
  }
  for (const e of entries) {
    if (e.name.startsWith('.') || (top && NOT_SOURCES.has(e.name))) continue;
    const p = path.join(dir, e.name);
    if (e.isDirectory()) newest = Math.max(newest, newestSource(p, false));
    else if (e.name.endsWith('.ts') && !top) newest = Math.max(newest, fs.statSync(p).mtimeMs);
  }
  return newest;
}

function useSources() {
  if (process.env.NNS_FROM_SOURCE === '1') return true;
  let stamp;
  try {
    stamp = fs.statSync(path.join(root, 'dist', '.build-stamp')).mtimeMs;
  } catch {
    return fs.existsSync(path.join(root, 'src', 'cli', 'main.ts'));
  }
  return newestSource(root, true) > stamp;
}

try {
  let entry = built;
  if (useSources()) {
    const { register } = await import('tsx/esm/api');
    register();
    entry = path.join(root, 'src', 'cli', 'main.ts');
  }
  const { main } = await import(pathToFileURL(entry).href);
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  internal(e);
}
