#!/usr/bin/env node
// The `nns` command. Runs the TypeScript sources directly through tsx (no build step).
import { register } from 'tsx/esm/api';

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

try {
  register();
  const { main } = await import(new URL('../src/cli/main.ts', import.meta.url).href);
  process.exitCode = await main(process.argv.slice(2));
} catch (e) {
  internal(e);
}
