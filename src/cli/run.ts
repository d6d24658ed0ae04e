/**
 * What `nns run`, `nns compile` and `nns check` do with a parsed script: open the model,
 * lower each trace through the shared IR builder, and run, compile or only check it.
 * Traces run in order; names saved by an earlier trace are host values of later ones.
 * @module
 */
import type { Script } from '../../grammar/ast.js';
import { lowerTrace, type HostValueInfo } from '../../grammar/lower.js';
import { bindParams, checkGenerate, checkTopLevel, paramDecls, paramHost, runnables, traces } from '../../grammar/script.js';
import { localTarget, maxPositions } from '../generate/decode.js';
import { runGenerateWithText } from '../generate/nns.js';
import type { Graph } from '../../ir/ir.js';
import { NnsError, NnsErrors } from '../errors.js';
import { compileGraph, openModel, runGraph, type ModelContext } from '../engine.js';
import type { RunnerFactory } from '../fast/runner.js';
import { exportModel, type ExportResult } from '../model/export.js';
import { locate } from '../model/load.js';
import { usesExternalData } from '../onnx/external.js';
import { readModelFile } from '../onnx/file.js';
import type { Tensor } from '../tensor.js';
import type { TokenDecoder } from './print.js';
import type { ProgressCallback } from '../progress.js';
import { promptsOf, type PromptInfo } from '../report/families.js';
import { compileCacheOf } from '../compile-cache.js';
import { vocabSizeOf } from '../model/token-ids.js';
import { tokenizeWith } from '../model/tokenizer.js';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { VERSION } from '../version.js';
import type { ModelProto } from '../onnx/proto.js';
import type { CompileState, Pass } from '../../passes/pass.js';
import { printState } from '../../passes/run.js';

/** One script to run, compile or check. */
export interface ScriptJob {
  /** The script's file name as the user gave it (used in spans). */
  file: string;
  /** Its text. */
  text: string;
  /** Its AST (already parsed without errors). */
  ast: Script;
  /** The resolved model path (folder or `.onnx`); absent for `check` without a model. */
  modelPath?: string;
  /** Print the IR after every pass. */
  printIrAfterAll?: boolean;
  /** Print the IR after these passes only (`--print-ir-after`). */
  printAfter?: ReadonlySet<string>;
  /** Run only these passes, in order (`--passes`); the state after the last is printed to `out`. */
  passes?: readonly Pass[];
  /** Where the result of `--passes` goes (stdout). */
  out?: (text: string) => void;
  /** Where diagnostics-free side output (IR dumps) goes (stderr). */
  log: (text: string) => void;
  /** Raw text output (no newline added): generated text is streamed here as it comes. */
  write?: (text: string) => void;
  /** Progress of loading, compiling and running (none when absent). */
  onProgress?: ProgressCallback;
  /** An already opened model for `modelPath` (the language server keeps one per model). */
  mc?: ModelContext;
  /** `nns compile --flat`: every inserted node in the main graph (default: one function call per statement). */
  flat?: boolean;
  /** Where the fast path runs (`--oip URL`: an Open Inference Protocol server); default local. */
  runner?: RunnerFactory;
  /** Values of the script's `param`s by name (`--param NAME=FILE`), checked against the declarations before anything runs. */
  params?: ReadonlyMap<string, Tensor>;
  /** Where a param's value came from, for messages (default `--param NAME`). */
  paramSource?: (name: string) => string;
}

/** What `runScript` returns. */
export interface RunOutput {
  /** Saved values by name, in save order (all traces). */
  results: Map<string, Tensor>;
  /** For printing top tokens. */
  decoder?: TokenDecoder;
  /** The prompts of every trace (one entry per distinct prompt of a trace, with its row count). */
  prompts: PromptInfo[];
  /** The graphs the run used: the instrumented model (fast path) and compiled graphs, in the cache. */
  graphs: { path: string; what: string }[];
}

function throwIfAny(errors: NnsError[]): void {
  if (errors.length > 0) throw new NnsErrors(errors);
}

async function open(job: ScriptJob): Promise<ModelContext> {
  if (job.mc) return job.mc;
  if (!job.modelPath) throw new NnsError('no-model', 'no model: add model "PATH" to the script or pass --model PATH', { kind: 'usage' });
  return openModel(job.modelPath, { ...(job.onProgress ? { onProgress: job.onProgress } : {}), ...(job.runner ? { runner: job.runner } : {}) });
}

function printer(job: ScriptJob): ((pass: string, text: string) => void) | undefined {
  if (!job.printIrAfterAll && !job.printAfter) return undefined;
  return (pass, text) => {
    if (job.printIrAfterAll || job.printAfter?.has(pass)) job.log(`// ----- after ${pass} -----\n${text}`);
  };
}

/** Compiles with the job's pass selection; with `--passes`, prints the state after the last one. */
function compileJob(job: ScriptJob, graph: Graph, mc: ModelContext): CompileState {
  const state = compileGraph(graph, mc, { printAfterEach: printer(job), specialize: true, functions: !job.flat, sourceText: job.text, ...(job.passes ? { pipeline: job.passes } : {}) });
  const last = job.passes?.[job.passes.length - 1];
  if (last) job.out?.(printState(last, state));
  return state;
}

function decoderOf(mc: ModelContext): TokenDecoder | undefined {
  const tok = mc.loaded.tokenizer;
  const vocab = Number(mc.loaded.config?.vocab_size);
  return tok && Number.isInteger(vocab) ? { vocabSize: vocab, tokenToString: (id) => tok.tokenToString(id) } : undefined;
}

/** Runs every trace in order; saves of earlier traces are host values of later ones. */
export async function runScript(job: ScriptJob): Promise<RunOutput> {
  throwIfAny(checkTopLevel(job.ast));
  const bound = bindParams(paramDecls(job.ast).decls, job.params ?? new Map(), job.paramSource ?? ((n) => `--param ${n}`));
  throwIfAny(bound.errors);
  const params = bound.values;
  const mc = await open(job);
  const results = new Map<string, Tensor>();
  // Params are host values of every trace (never printed or written: they are not saves).
  const hostValues = (): Map<string, Tensor> => new Map([...params, ...results]);
  const prompts: PromptInfo[] = [];
  const tok = mc.loaded.tokenizer;
  for (const t of runnables(job.ast)) {
    if (t.kind === 'Generate') {
      if (mc.fast?.exclusive) throw new NnsError('oip-unsupported', `generate does not run on ${mc.fast.exclusive}: run this script without --oip`, { kind: 'usage', span: t.span });
      const out = await generateWithText(job, mc, t, hostValues());
      for (const [k, v] of out) results.set(k, v);
      continue;
    }
    const host = new Map<string, HostValueInfo>([...hostValues()].map(([k, v]) => [k, { dtype: v.dtype, shape: [...v.shape] }]));
    const lowered = lowerTrace(t, { file: job.file, tokenize: tokenizeWith(mc.loaded.tokenizer), host, tree: mc.tree, vocabSize: vocabSizeOf(mc.loaded.config) });
    throwIfAny(lowered.errors);
    prompts.push(...promptsOf(lowered.graph, tok));
    const out = await runGraph(lowered.graph, mc, { host: hostValues(), printAfterEach: printer(job), onProgress: job.onProgress });
    for (const [k, v] of out) results.set(k, v);
  }
  const graphs = [
    ...(mc.fast?.builtGraphPath ? [{ path: mc.fast.builtGraphPath, what: 'the instrumented model (fast path: ports at every block, attention and MLP boundary)' }] : []),
    ...compileCacheOf(mc).graphPaths().map((p) => ({ path: p, what: 'a compiled (spliced) graph' })),
  ];
  return { results, decoder: decoderOf(mc), prompts, graphs };
}

/** A save whose graph output has another name than the save (the name is part of the model's interface). */
export interface RenamedSave {
  /** The save name. */
  save: string;
  /** Its graph output. */
  output: string;
  /** Why: the model's own input or output of that name. */
  reason: string;
}

/** One model written by {@link compileScript}. */
export interface CompiledFile extends ExportResult {
  /** Trace number (1-based) and where it starts in the script; absent for a script without traces. */
  trace?: { index: number; line: number; col: number };
  /** Graph inputs fed with saves of earlier traces: save name → graph input name. */
  hostInputs: Map<string, string>;
  /** Saves whose graph output had to take another name. */
  renamed: RenamedSave[];
  /** What the rewrite inserted into the main graph, one entry per function call (or per statement when flat). */
  inserted: InsertedStatement[];
}

/** One statement's inserted nodes in a compiled model. */
export interface InsertedStatement {
  /** `set`, `save`, `call`, `grad`, `compute`. */
  kind: string;
  /** The module the statement touches ('' for none). */
  module: string;
  /** ONNX nodes it inserted (inside its function, or in the main graph). */
  nodes: number;
  /** Where to find it in Netron: the call node's name (functions), else the common name prefix. */
  name: string;
  /** `file:line:col` of the statement. */
  source: string;
}

/** The inserted statements of a compiled graph (main-graph nodes with onnsight metadata). */
function insertedStatements(proto: ModelProto): { statements: InsertedStatement[]; mainNodes: number } {
  const bySource = new Map<string, InsertedStatement>();
  const out: InsertedStatement[] = [];
  let mainNodes = 0;
  for (const n of proto.graph?.node ?? []) {
    const md = new Map((n.metadata_props ?? []).map((e) => [e.key!, e.value ?? '']));
    if (!md.has('onnsight.op')) continue;
    mainNodes++;
    const source = md.get('onnsight.source') ?? '';
    const count = md.has('onnsight.nodes') ? Number(md.get('onnsight.nodes')) : 1;
    if (md.has('onnsight.nodes')) {
      out.push({ kind: md.get('onnsight.op')!, module: md.get('onnsight.module') ?? '', nodes: count, name: n.name ?? '', source });
      continue;
    }
    const prev = bySource.get(source);
    if (prev) {
      prev.nodes++;
      const name = n.name ?? '';
      let i = 0;
      while (i < prev.name.length && i < name.length && prev.name[i] === name[i]) i++;
      prev.name = prev.name.slice(0, i);
      continue;
    }
    const e: InsertedStatement = { kind: md.get('onnsight.op')!, module: md.get('onnsight.module') ?? '', nodes: 1, name: n.name ?? '', source };
    bySource.set(source, e);
    out.push(e);
  }
  return { statements: out, mainNodes };
}

/**
 * Stamps a rewritten model: producer onnsight, a doc string saying what was done, short
 * metadata (script, its sha256, base model and producer, trace, inserted nodes), doc strings
 * on host inputs. The model's own doc string and metadata are kept.
 */
function stampModel(proto: ModelProto, info: { script: string; text: string; base: string; trace: string; rows: number; positions?: number; hostDocs: Map<string, string>; inserted: { statements: InsertedStatement[]; mainNodes: number } }): void {
  const baseProducer = [proto.producer_name, proto.producer_version].filter(Boolean).join(' ');
  const sha = createHash('sha256').update(info.text).digest('hex');
  const { statements, mainNodes } = info.inserted;
  const total = statements.reduce((s, x) => s + x.nodes, 0);
  const doc = [
    `Rewritten by onnsight ${VERSION} from ${info.base}${baseProducer ? ` (${baseProducer})` : ''} for ${info.trace} of ${info.script}`
      + `, compiled for ${info.rows} batch row${info.rows === 1 ? '' : 's'}${info.positions !== undefined ? ` of ${info.positions} positions` : ''} (rows and positions of its sets are constants).`,
    `${statements.length} statement${statements.length === 1 ? '' : 's'} inserted ${total} node${total === 1 ? '' : 's'}${mainNodes !== total ? ` (${mainNodes} in the main graph: one ai.onnsight function call per statement)` : ''};`,
    'each is named /<module>/nns.<kind> and carries its source line as doc_string and onnsight.* metadata.',
    'Saves are graph outputs under their names; host.* inputs are values fed from outside (see their doc strings).',
  ].join(' ');
  proto.doc_string = proto.doc_string ? `${doc}

${proto.doc_string}` : doc;
  proto.producer_name = 'onnsight';
  proto.producer_version = VERSION;
  const own = (proto.metadata_props ?? []).filter((e) => !e.key?.startsWith('onnsight.'));
  proto.metadata_props = [
    ...own,
    { key: 'onnsight.script', value: info.script },
    { key: 'onnsight.script_sha256', value: sha },
    { key: 'onnsight.base_model', value: info.base },
    ...(baseProducer ? [{ key: 'onnsight.base_producer', value: baseProducer }] : []),
    { key: 'onnsight.trace', value: info.trace },
    { key: 'onnsight.rows', value: String(info.rows) },
    ...(info.positions !== undefined ? [{ key: 'onnsight.positions', value: String(info.positions) }] : []),
    { key: 'onnsight.inserted_nodes', value: String(mainNodes) },
  ];
  for (const v of proto.graph?.input ?? []) {
    const d = v.name ? info.hostDocs.get(v.name) : undefined;
    if (d) v.doc_string = d;
  }
}

/** `out.onnx` for the first trace, `out.2.onnx`, `out.3.onnx`, ... for the next. */
export function compiledPath(outPath: string, index: number): string {
  if (index <= 1) return outPath;
  const p = path.parse(outPath);
  return path.join(p.dir, `${p.name}.${index}${p.ext}`);
}

/**
 * Runs a generate block, streaming the text of a single-prompt generate as it is produced
 * (`job.write`), and printing each row's text after a batched one.
 */
function generateWithText(job: ScriptJob, mc: ModelContext, gen: import('../../grammar/ast.js').GenerateStmt, results: Map<string, Tensor>): Promise<Map<string, Tensor>> {
  return runGenerateWithText(gen, localTarget(mc), { file: job.file, tokenize: tokenizeWith(mc.loaded.tokenizer), host: results, run: { printAfterEach: printer(job) } }, { write: job.write ?? ((t: string) => job.log(t)), log: job.log });
}

/**
 * Compiles a script into rewritten models, one per trace: trace 1 to `outPath`, trace N to
 * {@link compiledPath}(outPath, N) (weights linked beside each). Saves of earlier traces are
 * graph inputs of later ones (`host.NAME`). A script without traces compiles to the
 * unchanged model. Every trace is compiled before any file is written, so an error leaves
 * no partial output.
 */
export async function compileScript(job: ScriptJob, outPath: string): Promise<CompiledFile[]> {
  const top = checkTopLevel(job.ast).filter((e) => e.code !== 'no-trace');
  for (const g of runnables(job.ast)) {
    if (g.kind === 'Generate') top.push(new NnsError('not-compilable', 'nns compile writes the graph of a trace; a generate block runs one graph per step (use nns run)', { span: g.headerSpan }));
  }
  throwIfAny(top);
  const ts = traces(job.ast);
  const mc = await open(job);
  if (ts.length === 0) return [{ ...exportModel(mc.loaded, unchangedModel(mc), outPath), hostInputs: new Map(), renamed: [], inserted: [] }];
  const host = paramHost(job.ast);
  const hostFrom = new Map<string, string>(); // save name → where it was saved
  const paramNames = new Set(host.keys());
  const compiled: { proto: ModelProto; file: Omit<CompiledFile, keyof ExportResult> }[] = [];
  const base = path.relative(process.cwd(), mc.loaded.source) || mc.loaded.source;
  const iface = new Map<string, string>([
    ...(mc.loaded.proto.graph?.input ?? []).map((v) => [v.name!, 'input'] as [string, string]),
    ...(mc.loaded.proto.graph?.output ?? []).map((v) => [v.name!, 'output'] as [string, string]),
  ]);
  for (const [i, t] of ts.entries()) {
    const lowered = lowerTrace(t, { file: job.file, tokenize: tokenizeWith(mc.loaded.tokenizer), host: new Map(host), tree: mc.tree, vocabSize: vocabSizeOf(mc.loaded.config) });
    throwIfAny(lowered.errors);
    job.onProgress?.({ phase: 'compile', done: i, total: ts.length, rowsDone: 0, rows: 0, what: `splicing trace ${i + 1} of ${ts.length}` });
    const state = compileJob(job, lowered.graph, mc);
    job.onProgress?.({ phase: 'compile', done: i + 1, total: ts.length, rowsDone: 0, rows: 0 });
    const renamed: RenamedSave[] = [];
    for (const [save, output] of state.saved) {
      if (save === output) continue;
      const what = iface.get(save);
      renamed.push({ save, output, reason: what ? `the model has an ${what} '${save}'` : `'${save}' is taken in the graph` });
    }
    const hostDocs = new Map<string, string>();
    for (const [k, v] of state.hostInputs ?? []) {
      const from = hostFrom.get(k);
      if (paramNames.has(k)) hostDocs.set(v, `param '${k}' of ${job.file}: nns run feeds it from --param ${k}=FILE`);
      else hostDocs.set(v, from ? `the value saved as '${k}' by ${from}: nns run feeds it; feed it yourself when running this file alone` : `host value '${k}': computed outside the graph and fed at run time`);
    }
    const inserted = insertedStatements(state.model);
    const traceText = `trace ${i + 1} (${job.file}:${t.headerSpan.line}:${t.headerSpan.col})`;
    const positions = lowered.graph.dimValues.sequence;
    stampModel(state.model, { script: job.file, text: job.text, base, trace: traceText, rows: lowered.graph.batch, ...(positions !== undefined ? { positions } : {}), hostDocs, inserted });
    compiled.push({ proto: state.model, file: { trace: { index: i + 1, line: t.headerSpan.line, col: t.headerSpan.col }, hostInputs: new Map(state.hostInputs ?? []), renamed, inserted: inserted.statements } });
    for (const n of lowered.graph.nodes) {
      if (!n.is('save')) continue;
      hostFrom.set(n.attrs.name, `trace ${i + 1} at ${n.span.file}:${n.span.line}:${n.span.col}`);
      const ty = n.inputs[0]?.type;
      host.set(n.attrs.name, { dtype: ty?.dtype ?? 'float32', shape: concreteShape(lowered.graph, ty?.shape) });
    }
  }
  return compiled.map((c, i) => ({ ...exportModel(mc.loaded, c.proto, compiledPath(outPath, i + 1)), ...c.file }));
}

/**
 * The model as the user gave it, for a compile without traces: the loaded proto, except
 * when loading moved inline weights out into a cache entry's data file — then the source
 * file decoded again, so that an empty script compiles a model to itself.
 */
function unchangedModel(mc: ModelContext): ModelProto {
  if (!usesExternalData(mc.loaded.proto)) return mc.loaded.proto;
  const source = readModelFile(locate(mc.loaded.source).graphFile).proto;
  return usesExternalData(source) ? mc.loaded.proto : source;
}

function concreteShape(g: Graph, shape: ReadonlyArray<number | string> | null | undefined): number[] {
  if (!shape) return [];
  return shape.map((d) => (typeof d === 'number' ? d : d === 'batch' ? g.batch : g.dimValues[d] ?? 1));
}

/** Validates without running: parse, lower, and (with a model) the IR passes. */
export async function checkScript(job: ScriptJob): Promise<void> {
  throwIfAny(checkTopLevel(job.ast));
  const mc = job.modelPath ? await open(job) : undefined;
  const host = paramHost(job.ast);
  const errors: NnsError[] = [];
  for (const t of runnables(job.ast)) {
    const tokenize = mc ? tokenizeWith(mc.loaded.tokenizer) : (text: string) => text.split(/\s+/).filter(Boolean).map(() => 0);
    if (t.kind === 'Generate') {
      const g = checkGenerate(t, { file: job.file, tokenize, host: new Map(host), tree: mc?.tree, maxPositions: mc ? maxPositions(mc) : undefined });
      errors.push(...g.errors);
      for (const n of g.saves) for (let s = 0; s < (g.settings?.maxNewTokens ?? 0); s++) host.set(`${n}.${s}`, { dtype: 'float32', shape: [] });
      for (const n of g.generatorSaves) host.set(n.name, { dtype: 'int64', shape: [] });
      continue;
    }
    const lowered = lowerTrace(t, { file: job.file, tokenize, host: new Map(host), tree: mc?.tree, vocabSize: vocabSizeOf(mc?.loaded.config) });
    errors.push(...lowered.errors);
    if (lowered.errors.length > 0) continue;
    if (mc) {
      try {
        compileJob(job, lowered.graph, mc);
      } catch (e) {
        if (e instanceof NnsErrors) errors.push(...e.errors);
        else throw e;
      }
    }
    for (const n of lowered.graph.nodes) {
      if (!n.is('save')) continue;
      const ty = n.inputs[0]?.type;
      host.set(n.attrs.name, { dtype: ty?.dtype ?? 'float32', shape: concreteShape(lowered.graph, ty?.shape) });
    }
  }
  throwIfAny(errors);
}
