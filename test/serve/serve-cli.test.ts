/**
 * `nns serve` as a user runs it (bin/nns.mjs in a child process): bad flags are one usage
 * line and exit 2; a server on port 0 prints where it listens, serves a remote run, and on
 * SIGTERM finishes and exits 0.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { nns } from '../helpers/cli.js';
import { ROOT } from '../helpers/reference.js';

describe('nns serve (command line)', () => {
  it('refuses bad flags in one line (exit 2)', async () => {
    const cases = [
      [['serve'], "nns: error[missing-argument]: 'nns serve' needs --model NAME=PATH (repeatable)"],
      [['serve', '--model', 'models/gpt2-facts'], "nns: error[bad-flag]: --model takes NAME=PATH (NAME of letters, digits, '.', '_', '-'), not 'models/gpt2-facts'"],
      [['serve', '--model', 'a=models/gpt2-facts', '--model', 'a=models/gpt2-facts'], "nns: error[bad-flag]: two models named 'a'"],
      [['serve', '--model', 'a=no/such/folder'], "nns: error[no-such-file]: no model at 'no/such/folder' (for --model a=...)"],
      [['serve', '--model', 'a=models/gpt2-facts', '--max-batch', '0'], "nns: error[bad-flag]: --max-batch must be a whole number >= 1, not '0'"],
      [['serve', '--model', 'a=models/gpt2-facts', '--keys', 'no-such-keys.txt'], "nns: error[no-such-file]: cannot read the key file 'no-such-keys.txt': ENOENT"],
      [['run', 'examples/eiffel.nns', '--remote', 'http://127.0.0.1:9'], "nns: error[missing-argument]: 'nns run --remote URL' needs --model NAME (the served model's name)"],
      [['run', 'examples/eiffel.nns', '--remote', 'not a url', '--model', 'x'], "nns: error[remote-unreachable]: 'not a url' is not a URL (expected http://HOST:PORT)"],
    ] as [string[], string][];
    // Two at a time (each is a whole nns process).
    const results: { code: number; out: string; err: string }[] = [];
    for (let i = 0; i < cases.length; i += 2) results.push(...await Promise.all(cases.slice(i, i + 2).map(([args]) => nns(args))));
    cases.forEach(([args, want], i) => {
      const r = results[i]!;
      expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err.trimEnd().split('\n')[0]).toBe(want);
      expect(r.out).toBe('');
    });
  });

  it('serves on port 0, runs a remote script, stops gracefully on SIGTERM', async () => {
    const p = spawn(process.execPath, [path.join(ROOT, 'bin', 'nns.mjs'), 'serve', '--model', 'gpt2=models/gpt2-facts', '--port', '0', '--max-run-seconds', '30'], { cwd: ROOT });
    let out = '';
    let err = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number>((r) => p.on('close', (c) => r(c ?? -1)));
    try {
      while (!/at (http:\/\/\S+)/.test(out)) {
        if (p.exitCode !== null) throw new Error(`nns serve exited: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const url = /at (http:\/\/\S+)/.exec(out)![1]!;
      expect(out).toBe(`nns serve: serving gpt2 at ${url}\n`);
      const r = await nns(['run', 'examples/eiffel.nns', '--remote', url, '--model', 'gpt2']);
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain('Paris 0.974');
      p.kill('SIGTERM');
      expect(await exited).toBe(0);
      expect(err).toContain('nns serve: SIGTERM: finishing running jobs, failing queued ones');
      expect(err).toContain('nns serve: stopped');
    } finally {
      if (p.exitCode === null) p.kill('SIGKILL');
    }
  });
});
