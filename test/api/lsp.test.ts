/**
 * `nns lsp` driven by a scripted Language Server Protocol client over stdio (JSON-RPC with
 * Content-Length framing, as editors speak it): initialize, open a script with an error,
 * read the published diagnostics (code and place), fix it by an edit and see them clear,
 * complete module paths and functions, hover a module for its class and shape, shut down.
 * Also checks the TextMate grammar in editors/.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/reference.js';

interface Message { id?: number; method?: string; params?: unknown; result?: unknown; error?: unknown }

class Client {
  private buf = Buffer.alloc(0);
  private nextId = 1;
  private waiters: { test: (m: Message) => boolean; resolve: (m: Message) => void }[] = [];
  readonly seen: Message[] = [];
  constructor(readonly p: ChildProcessWithoutNullStreams) {
    p.stdout.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      for (;;) {
        const head = this.buf.indexOf('\r\n\r\n');
        if (head < 0) return;
        const len = Number(/Content-Length: (\d+)/i.exec(this.buf.subarray(0, head).toString())?.[1]);
        if (this.buf.length < head + 4 + len) return;
        const msg = JSON.parse(this.buf.subarray(head + 4, head + 4 + len).toString()) as Message;
        this.buf = this.buf.subarray(head + 4 + len);
        this.seen.push(msg);
        this.waiters = this.waiters.filter((w) => (w.test(msg) ? (w.resolve(msg), false) : true));
      }
    });
  }
  send(m: Message): void {
    const body = JSON.stringify({ jsonrpc: '2.0', ...m });
    this.p.stdin.write(`Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }
  wait(test: (m: Message) => boolean): Promise<Message> {
    const old = this.seen.find(test);
    if (old) {
      this.seen.splice(this.seen.indexOf(old), 1);
      return Promise.resolve(old);
    }
    return new Promise((resolve) => this.waiters.push({ test, resolve }));
  }
  async request(method: string, params: unknown): Promise<unknown> {
    const id = this.nextId++;
    this.send({ id, method, params });
    const r = await this.wait((m) => m.id === id && m.method === undefined);
    if (r.error) throw new Error(JSON.stringify(r.error));
    return r.result;
  }
  notify(method: string, params: unknown): void {
    this.send({ method, params });
  }
}

interface Diag { range: { start: { line: number; character: number }; end: { line: number; character: number } }; code: string; message: string }
interface Item { label: string; detail?: string }

const file = path.join(ROOT, 'examples', 'lsp-test.nns'); // beside the examples, so model "../models/gpt2-facts" resolves; never written
const uri = pathToFileURL(file).href;
const TEXT = [
  'model "../models/gpt2-facts"',
  'trace "The Eiffel Tower is in the city of" {',
  '  h = model.transformer.h[2].mlp.output.save()',
  '  p = softmx(model.output.logits, -1).save()',
  '}',
  '',
].join('\n');

describe('nns lsp (a scripted LSP client)', { timeout: 60_000 }, () => {
  let c: Client;
  beforeAll(async () => {
    const p = spawn(process.execPath, [path.join(ROOT, 'bin', 'nns.mjs'), 'lsp'], { cwd: ROOT });
    c = new Client(p);
    const init = (await c.request('initialize', { processId: process.pid, rootUri: pathToFileURL(ROOT).href, capabilities: {} })) as { capabilities: { completionProvider?: unknown; hoverProvider?: boolean } };
    expect(init.capabilities.hoverProvider).toBe(true);
    expect(init.capabilities.completionProvider).toBeDefined();
    c.notify('initialized', {});
  }, 60_000);
  afterAll(async () => {
    await c.request('shutdown', null);
    c.notify('exit', null);
    await new Promise<void>((resolve) => c.p.on('close', () => resolve()));
  });

  const diagnostics = async (version: number): Promise<Diag[]> => {
    const m = await c.wait((x) => x.method === 'textDocument/publishDiagnostics' && (x.params as { uri: string; version?: number }).uri === uri && (x.params as { version?: number }).version === version);
    return (m.params as { diagnostics: Diag[] }).diagnostics;
  };

  it('reports an unknown function where it is, as nns check does, and clears it after an edit', async () => {
    c.notify('textDocument/didOpen', { textDocument: { uri, languageId: 'nns', version: 1, text: TEXT } });
    const d = await diagnostics(1);
    expect(d.map((x) => x.code)).toEqual(['unknown-function']);
    expect(d[0]!.message).toContain("did you mean 'softmax'");
    expect(d[0]!.range.start).toEqual({ line: 3, character: 6 });
    // fix: softmx -> softmax (an incremental edit)
    c.notify('textDocument/didChange', { textDocument: { uri, version: 2 }, contentChanges: [{ range: { start: { line: 3, character: 6 }, end: { line: 3, character: 12 } }, text: 'softmax' }] });
    expect(await diagnostics(2)).toEqual([]);
    // a module the model does not have: checked against the model's tree
    c.notify('textDocument/didChange', { textDocument: { uri, version: 3 }, contentChanges: [{ range: { start: { line: 2, character: 26 }, end: { line: 2, character: 27 } }, text: '9' }] });
    const d3 = await diagnostics(3);
    expect(d3.map((x) => x.code)).toEqual(['unknown-module']);
    expect(d3[0]!.range.start.line).toBe(2);
    c.notify('textDocument/didChange', { textDocument: { uri, version: 4 }, contentChanges: [{ range: { start: { line: 2, character: 26 }, end: { line: 2, character: 27 } }, text: '2' }] });
    expect(await diagnostics(4)).toEqual([]);
  });

  it('completes module paths from the model, with classes and shapes, and functions', async () => {
    // line 2 is '  h = model.transformer.h[2].mlp.output.save()'; complete after 'model.transformer.h[2].'
    const at = (character: number) => c.request('textDocument/completion', { textDocument: { uri }, position: { line: 2, character } }) as Promise<Item[]>;
    const items = await at('  h = model.transformer.h[2].'.length);
    const labels = items.map((i) => i.label);
    for (const l of ['ln_1', 'attn', 'ln_2', 'mlp', 'output', 'input']) expect(labels).toContain(l);
    expect(items.find((i) => i.label === 'mlp')!.detail).toBe('~MLP → float32[batch, sequence, 128]');
    const top = (await at('  h = model.'.length)).map((i) => i.label);
    expect(top).toContain('transformer');
    expect(top).toContain('lm_head');
    const list = (await at('  h = model.transformer.'.length)).find((i) => i.label === 'h');
    expect(list?.detail).toBe('list of 4 modules');
    const fns = (await c.request('textDocument/completion', { textDocument: { uri }, position: { line: 3, character: 6 } })) as Item[];
    expect(fns.find((i) => i.label === 'softmax')?.detail).toBe('softmax(x, dim)');
  });

  it('hovers a module reference with its class and output shape, and a function with its signature', async () => {
    const hover = async (line: number, character: number) => ((await c.request('textDocument/hover', { textDocument: { uri }, position: { line, character } })) as { contents: { value: string } } | null)?.contents.value;
    const mlp = await hover(2, '  h = model.transformer.h[2].ml'.length);
    expect(mlp).toContain('**transformer.h.2.mlp**');
    expect(mlp).toContain('`MLP`');
    expect(mlp).toContain('`float32[batch, sequence, 128]`');
    const block = await hover(2, '  h = model.transformer.h['.length);
    expect(block).toContain('**transformer.h.2**');
    expect(await hover(3, '  p = softm'.length)).toBe('`softmax(x, dim)`');
  });
});

describe('TextMate grammar', () => {
  it('is valid JSON whose patterns compile and cover keywords, strings, numbers, comments and functions', () => {
    const g = JSON.parse(fs.readFileSync(path.join(ROOT, 'editors', 'nns.tmLanguage.json'), 'utf8')) as { scopeName: string; fileTypes: string[]; repository: Record<string, { match?: string; begin?: string; end?: string; patterns?: { match?: string }[] }> };
    expect(g.scopeName).toBe('source.nns');
    expect(g.fileTypes).toEqual(['nns']);
    const regexes: RegExp[] = [];
    const collect = (r: { match?: string; begin?: string; end?: string; patterns?: unknown[] }): void => {
      for (const k of ['match', 'begin', 'end'] as const) if (r[k]) regexes.push(new RegExp(r[k]!.replace(/\(\?x\)/g, '')));
      for (const p of (r.patterns ?? []) as { match?: string }[]) collect(p);
    };
    Object.values(g.repository).forEach(collect);
    const match = (text: string) => regexes.some((re) => re.test(text));
    expect(match('trace')).toBe(true);
    expect(match('# a comment')).toBe(true);
    expect(match('1e-3')).toBe(true);
    const fn = g.repository.functions!.match!;
    expect(new RegExp(fn).test('softmax(')).toBe(true);
    expect(new RegExp(g.repository.keywords!.match!).test('invoke')).toBe(true);
  });
});
