/**
 * `nns lsp`: a Language Server Protocol server for `.nns` scripts over stdio
 * (vscode-languageserver). It offers:
 * - diagnostics as you type: syntax errors, then the script's checks against its model
 *   (`model "PATH"`, resolved like `nns check`: relative to the script's folder, then to the
 *   server's working folder) — the same errors, codes and places as `nns check`;
 * - completion of module paths after `model.` (the model's own tree, list indices included),
 *   of ports (`output`, `input`, ...) and of the core functions;
 * - hover on a module reference (its class and output shapes) and on a function (its signature).
 * The model of each script is opened once and kept while it is in use.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CompletionItemKind, DiagnosticSeverity, MarkupKind, ProposedFeatures, StreamMessageReader, StreamMessageWriter, TextDocumentSyncKind, TextDocuments,
  createConnection, type CompletionItem, type Diagnostic, type Hover, type InitializeResult,
} from 'vscode-languageserver/node';
import { TextDocument } from 'vscode-languageserver-textdocument';
import { parseScript } from '../../grammar/parse.js';
import { FUNCTIONS, signature } from '../../grammar/functions.js';
import { NnsError, NnsErrors, type Span } from '../errors.js';
import { openModel, type ModelContext } from '../engine.js';
import { moduleClasses, type ModuleClass } from '../model/classes.js';
import { formatSig } from '../model/format.js';
import type { ModuleTree } from '../model/types.js';
import { checkScript } from './run.js';

interface OpenModel {
  mc: ModelContext;
  classes: Map<string, ModuleClass>;
}

const PORTS = ['output', 'input', 'outputs', 'inputs'];

/** A diagnostic from an error with a place in this document. */
function toDiagnostic(e: NnsError): Diagnostic {
  const s: Span | undefined = e.span;
  const line = Math.max(0, (s?.line ?? 1) - 1);
  const col = Math.max(0, (s?.col ?? 1) - 1);
  const endLine = Math.max(line, (s?.endLine ?? s?.line ?? 1) - 1);
  let endCol = Math.max(0, (s?.endCol ?? (s?.col ?? 1) + 1) - 1);
  if (endLine === line && endCol <= col) endCol = col + 1;
  const notes = e.notes?.length ? `\n${e.notes.join('\n')}` : '';
  return { range: { start: { line, character: col }, end: { line: endLine, character: endCol } }, severity: DiagnosticSeverity.Error, code: e.code, source: 'nns', message: `${e.message}${notes}` };
}

/** The module path written before the cursor: `model.transformer.h[2].` → `transformer.h.2`, or undefined when not after `model.`. */
export function modulePathBefore(textBefore: string): { path: string; partial: string } | undefined {
  const m = /\bmodel((?:\.[A-Za-z_]\w*|\[\s*\d+\s*\])*)\.([A-Za-z_]\w*)?$/.exec(textBefore);
  if (!m) return undefined;
  const segs = [...m[1]!.matchAll(/\.([A-Za-z_]\w*)|\[\s*(\d+)\s*\]/g)].map((x) => x[1] ?? x[2]!);
  return { path: segs.join('.'), partial: m[2] ?? '' };
}

/** Completions after `model.PATH.`: child names (a list `h` once, as `h`), ports, parameters. */
export function moduleCompletions(tree: ModuleTree, classes: ReadonlyMap<string, ModuleClass>, prefix: string): CompletionItem[] {
  const items = new Map<string, CompletionItem>();
  const base = prefix === '' ? '' : `${prefix}.`;
  for (const [p, m] of tree.modules) {
    if (!p.startsWith(base) || p === prefix) continue;
    const seg = p.slice(base.length).split('.')[0]!;
    if (/^\d+$/.test(seg) || items.has(seg)) continue;
    const exact = tree.modules.get(`${base}${seg}`);
    const isList = !exact && [...tree.modules.keys()].some((q) => q.startsWith(`${base}${seg}.`) && /^\d+$/.test(q.slice(`${base}${seg}.`.length).split('.')[0]!));
    const cls = exact ? classes.get(exact.path) : undefined;
    items.set(seg, {
      label: seg, kind: CompletionItemKind.Module,
      detail: isList ? `list of ${new Set([...tree.modules.keys()].filter((q) => q.startsWith(`${base}${seg}.`)).map((q) => q.slice(`${base}${seg}.`.length).split('.')[0])).size} modules` : cls ? `${cls.inferred ? '~' : ''}${cls.name} → ${exact!.outputs.map((o) => formatSig(o.sig)).join(', ') || '-'}` : undefined,
      ...(isList ? { insertText: `${seg}[0]` } : {}),
    });
    void m;
  }
  const own = tree.modules.get(prefix);
  if (own || prefix === '') {
    for (const port of PORTS) items.set(port, { label: port, kind: CompletionItemKind.Property, detail: port.endsWith('s') ? `${port}[i]` : `the module's first ${port}` });
  }
  if (own) {
    for (const prm of own.params) {
      const rest = prm.name.slice(base.length);
      if (!rest.includes('.')) items.set(rest, { label: rest, kind: CompletionItemKind.Field, detail: `parameter ${formatSig(prm.sig)}` });
    }
  }
  return [...items.values()];
}

/** The module reference (or function name) under the cursor, for hover. */
export function referenceAt(line: string, character: number): { kind: 'module'; path: string; port?: string } | { kind: 'function'; name: string } | undefined {
  const re = /\bmodel((?:\.[A-Za-z_]\w*|\[\s*\d+\s*\])+)|\b([A-Za-z_]\w*)\s*\(/g;
  for (const m of line.matchAll(re)) {
    const start = m.index!;
    const end = start + m[0].length;
    if (character < start || character > end) continue;
    if (m[2]) return FUNCTIONS.has(m[2]) ? { kind: 'function', name: m[2] } : undefined;
    // the part of the chain up to the segment under the cursor
    const segs: { text: string; end: number }[] = [];
    for (const s of m[1]!.matchAll(/\.([A-Za-z_]\w*)|\[\s*(\d+)\s*\]/g)) segs.push({ text: s[1] ?? s[2]!, end: start + 'model'.length + s.index! + s[0].length });
    const upto = segs.filter((s, i) => i === 0 || segs[i - 1]!.end <= character);
    const last = upto.at(-1)?.text;
    if (last && PORTS.includes(last)) return { kind: 'module', path: upto.slice(0, -1).map((s) => s.text).join('.'), port: last };
    return { kind: 'module', path: upto.map((s) => s.text).join('.') };
  }
  return undefined;
}

/** Hover text of a module path. */
export function moduleHover(tree: ModuleTree, classes: ReadonlyMap<string, ModuleClass>, p: string, port?: string): string | undefined {
  const m = tree.modules.get(p);
  if (!m) return undefined;
  const cls = classes.get(p);
  const name = p === '' ? 'model' : p;
  const lines = [`**${name}**${cls ? ` — ${cls.inferred ? 'inferred class ' : ''}\`${cls.name}\`` : ''}`];
  const vals = port === 'input' || port === 'inputs' ? m.inputs : m.outputs;
  const what = port === 'input' || port === 'inputs' ? 'inputs' : 'outputs';
  lines.push('', `${what}: ${vals.map((v) => `\`${formatSig(v.sig)}\``).join(', ') || '-'}`);
  if (!port && m.params.length) lines.push('', `${m.params.length} parameters`);
  return lines.join('\n');
}

/** Starts the server on stdin/stdout; resolves when the client exits. */
export function startLanguageServer(cwd: string): Promise<number> {
  const connection = createConnection(ProposedFeatures.all, new StreamMessageReader(process.stdin), new StreamMessageWriter(process.stdout));
  const documents = new TextDocuments(TextDocument);
  const models = new Map<string, Promise<OpenModel>>();
  const timers = new Map<string, ReturnType<typeof setTimeout>>();

  const docPath = (uri: string): string => (uri.startsWith('file:') ? fileURLToPath(uri) : path.join(cwd, 'untitled.nns'));

  /** The model a script names, opened (once per path). */
  async function modelOf(doc: TextDocument): Promise<{ model?: OpenModel; modelPath?: string; error?: NnsError }> {
    const parsed = parseScript(doc.getText(), path.basename(docPath(doc.uri)));
    const m = parsed.ast?.models[0] ?? undefined;
    if (!m) return {};
    const dir = path.dirname(docPath(doc.uri));
    const beside = path.resolve(dir, m.path);
    const modelPath = path.isAbsolute(m.path) ? m.path : fs.existsSync(beside) ? beside : fs.existsSync(path.resolve(cwd, m.path)) ? path.resolve(cwd, m.path) : beside;
    let p = models.get(modelPath);
    if (!p) {
      p = openModel(modelPath).then((mc) => ({ mc, classes: moduleClasses(mc.loaded.proto, mc.tree) }));
      models.set(modelPath, p);
      p.catch(() => models.delete(modelPath));
    }
    try {
      return { model: await p, modelPath };
    } catch (e) {
      const err = e instanceof NnsError ? e : new NnsError('invalid-model', String((e as Error).message ?? e), { kind: 'model' });
      return { modelPath, error: new NnsError(err.code, err.message, { kind: 'model', span: m.span }) };
    }
  }

  async function validate(doc: TextDocument): Promise<void> {
    const file = path.basename(docPath(doc.uri));
    const text = doc.getText();
    const parsed = parseScript(text, file);
    let errors: NnsError[] = parsed.errors;
    if (parsed.ast && errors.length === 0) {
      const { model, modelPath, error } = await modelOf(doc);
      if (error) errors = [error];
      else {
        try {
          await checkScript({ file, text, ast: parsed.ast, ...(modelPath ? { modelPath } : {}), ...(model ? { mc: model.mc } : {}), log: () => undefined });
        } catch (e) {
          if (e instanceof NnsErrors) errors = e.errors;
          else if (e instanceof NnsError) errors = [e];
          else errors = [new NnsError('internal', (e as Error).message ?? String(e), { kind: 'usage' })];
        }
      }
    }
    if (documents.get(doc.uri)?.version !== doc.version) return; // a newer edit will report
    await connection.sendDiagnostics({ uri: doc.uri, version: doc.version, diagnostics: errors.map(toDiagnostic) });
  }

  documents.onDidChangeContent((ch) => {
    const uri = ch.document.uri;
    clearTimeout(timers.get(uri));
    timers.set(uri, setTimeout(() => { timers.delete(uri); void validate(ch.document).catch((e) => connection.console.error(String(e))); }, 150));
  });
  documents.onDidClose((ev) => void connection.sendDiagnostics({ uri: ev.document.uri, diagnostics: [] }));

  connection.onInitialize((): InitializeResult => ({
    capabilities: {
      textDocumentSync: TextDocumentSyncKind.Incremental,
      completionProvider: { triggerCharacters: ['.', '['] },
      hoverProvider: true,
    },
    serverInfo: { name: 'nns', version: '0.1.0' },
  }));

  connection.onCompletion(async (params): Promise<CompletionItem[]> => {
    const doc = documents.get(params.textDocument.uri);
    if (!doc) return [];
    const before = doc.getText({ start: { line: params.position.line, character: 0 }, end: params.position });
    const ref = modulePathBefore(before);
    if (ref) {
      const { model } = await modelOf(doc);
      return model ? moduleCompletions(model.mc.tree, model.classes, ref.path) : [];
    }
    if (/\.\w*$/.test(before)) return [{ label: 'save', kind: CompletionItemKind.Method, detail: 'save()' }];
    return [...FUNCTIONS].map(([name, spec]) => ({ label: name, kind: CompletionItemKind.Function, detail: signature(name, spec) }));
  });

  connection.onHover(async (params): Promise<Hover | null> => {
    const doc = documents.get(params.textDocument.uri);
    if (!doc) return null;
    const line = doc.getText({ start: { line: params.position.line, character: 0 }, end: { line: params.position.line + 1, character: 0 } }).replace(/\r?\n$/, '');
    const ref = referenceAt(line, params.position.character);
    if (!ref) return null;
    if (ref.kind === 'function') {
      return { contents: { kind: MarkupKind.Markdown, value: `\`${signature(ref.name, FUNCTIONS.get(ref.name)!)}\`` } };
    }
    const { model } = await modelOf(doc);
    const text = model ? moduleHover(model.mc.tree, model.classes, ref.path, ref.port) : undefined;
    return text ? { contents: { kind: MarkupKind.Markdown, value: text } } : null;
  });

  documents.listen(connection);
  return new Promise((resolve) => {
    connection.onExit(() => resolve(0));
    connection.listen();
  });
}
