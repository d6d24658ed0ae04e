/**
 * The `nns` command line: `run`, `compile`, `modules`, `check`. Exit codes: 0 ok,
 * 1 errors in the script, 2 usage or model errors, 3 internal errors (a bug; the stack is
 * printed only with `NNS_DEBUG=1`). Never a stack trace otherwise, never a partial output
 * file (outputs are written to a temporary file and renamed, after success only).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { NnsError, usageError } from '../errors.js';
import { NOT_REGULAR } from '../read-file.js';
import { VERSION } from '../version.js';
import { DEFAULT_LIMITS } from '../../grammar/limits.js';
import { exitCodeFor, renderErrors, userErrors } from '../diagnostics.js';
import { commandHelp, parseArgs, usageLine, type CommandSpec, type ParsedArgs } from './args.js';
import { COMMANDS, GENERAL_HELP } from './commands.js';
import { formatResults } from './print.js';
import { PROGRESS_MODES, envProgressMode, progressReporter, type ProgressCallback, type ProgressMode, type ProgressStream } from '../progress.js';

/** Where the CLI writes and what it reads from its environment (replaceable in tests). */
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
  /** Raw output without an added newline (generated text as it comes); `out` per line when absent. */
  write?(text: string): void;
  cwd: string;
  env: Readonly<Record<string, string | undefined>>;
  /** Where progress goes (stderr); without it, no progress is shown. */
  progress?: ProgressStream;
}

const defaultIO: CliIO = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  write: (t) => process.stdout.write(t),
  cwd: process.cwd(),
  env: process.env,
  progress: process.stderr,
};

/** Writes `data` to `file` atomically: a temporary file in the same folder, then a rename. */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-${Date.now()}`);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw usageError('cannot-write', `cannot write '${file}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function checkWritable(file: string, cwd: string): string {
  const abs = path.resolve(cwd, file);
  const dir = path.dirname(abs);
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw usageError('cannot-write', `cannot write '${file}': folder '${path.dirname(file)}' does not exist`);
  return abs;
}

interface Loaded {
  file: string;
  text: string;
  ast: import('../../grammar/ast.js').Script;
}

/** Reads and parses the script; syntax errors are thrown as a list (exit 1). */
async function loadScript(file: string, cwd: string, sources: Map<string, string>): Promise<Loaded> {
  let text: string;
  try {
    const abs = path.resolve(cwd, file);
    if (fs.statSync(abs).isDirectory()) throw usageError('bad-script', `'${file}' is a folder, not a script`);
    text = readBounded(abs, file);
  } catch (e) {
    if (e instanceof NnsError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === NOT_REGULAR) throw usageError('bad-script', `'${file}' is not a regular file`);
    throw usageError('no-such-file', code === 'ENOENT' ? `no such script: '${file}'` : `cannot read '${file}': ${code ?? (e as Error).message}`);
  }
  sources.set(file, text);
  // Loaded here, not at the top: `nns --help` and `nns modules` never load the parser.
  const { parseScript } = await import('../../grammar/parse.js');
  const parsed = parseScript(text, file);
  if (!parsed.ast) throw new ScriptErrors(parsed.errors);
  return { file, text, ast: parsed.ast };
}

/**
 * Reads a script, at most 3 bytes per allowed character (UTF-8): a bigger file — or an
 * endless one such as /dev/zero — is refused after that many bytes, never read whole.
 */
function readBounded(abs: string, file: string): string {
  const max = 3 * DEFAULT_LIMITS.maxSourceChars;
  // Non-blocking open and fstat: a FIFO or a device is refused, never waited on or read forever.
  const fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  try {
    if (!fs.fstatSync(fd).isFile()) throw Object.assign(new Error(`${abs} is not a regular file`), { code: NOT_REGULAR });
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(Math.min(1 << 20, max + 1 - total));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      chunks.push(buf.subarray(0, n));
      total += n;
      if (total > max) throw usageError('too-large', `'${file}' is larger than ${(max / 1e6).toFixed(0)} MB; a script may have at most ${DEFAULT_LIMITS.maxSourceChars.toLocaleString('en-US')} characters`);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

class ScriptErrors extends Error {
  constructor(readonly errors: NnsError[]) {
    super('script errors');
  }
}

/**
 * The model to use: `--model` (relative to the cwd) wins; else the script's `model "PATH"`,
 * relative to the script's folder, then to the cwd.
 */
export function resolveModelPath(flag: string | undefined, script: Loaded, cwd: string): string | undefined {
  if (flag) return path.resolve(cwd, flag);
  const m = script.ast.models[0];
  if (!m) return undefined;
  if (path.isAbsolute(m.path)) return m.path;
  const besideScript = path.resolve(cwd, path.dirname(script.file), m.path);
  if (fs.existsSync(besideScript)) return besideScript;
  const fromCwd = path.resolve(cwd, m.path);
  return fs.existsSync(fromCwd) ? fromCwd : besideScript;
}

function flag(a: ParsedArgs, name: string): string | undefined {
  const v = a.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}

/** The progress callback `--progress` (else `ONNSIGHT_PROGRESS`, else auto) asks for. */
function progressOf(a: ParsedArgs, io: CliIO, cmd: CommandSpec): ProgressCallback | undefined {
  const v = flag(a, 'progress');
  if (v !== undefined && !(PROGRESS_MODES as readonly string[]).includes(v)) {
    throw usageError('bad-flag', `--progress must be bar, plain or none, not '${v}'`, [`usage: ${usageLine(cmd)}`]);
  }
  if (!io.progress) return undefined;
  return progressReporter({ mode: (v as ProgressMode | undefined) ?? envProgressMode(io.env) ?? 'auto', stream: io.progress });
}

async function execute(cmd: CommandSpec, a: ParsedArgs, io: CliIO, sources: Map<string, string>): Promise<number> {
  if (cmd.name === 'cache') {
    const { cacheCommand } = await import('./cache.js');
    return cacheCommand(a.positionals[0] ?? 'list', io);
  }
  if (cmd.name === 'lsp') {
    const { startLanguageServer } = await import('./lsp.js');
    return startLanguageServer(io.cwd);
  }
  if (cmd.name === 'plot') {
    const file = path.resolve(io.cwd, a.positionals[0]!);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw usageError('no-such-file', `cannot read '${a.positionals[0]}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const { reportFromJSON } = await import('../report/report.js');
    let report;
    try {
      report = reportFromJSON(text);
    } catch (e) {
      throw usageError('bad-results', `'${a.positionals[0]}' is not a results file of nns run --out: ${(e as Error).message.split('\n')[0]}`);
    }
    const html = flag(a, 'html');
    const dir = flag(a, 'plot') ?? (html ? undefined : file.replace(/\.json$/i, '') + '-plots');
    const plotDir = dir !== undefined ? checkWritable(dir, io.cwd) : undefined;
    const htmlAbs = html !== undefined ? checkWritable(html, io.cwd) : undefined;
    await writeReport(report, plotDir, htmlAbs, io, {});
    return 0;
  }
  if (cmd.name === 'modules') {
    const { openModel } = await import('../engine.js');
    const { formatModuleTree, moduleTreeJson } = await import('../model/format.js');
    const { moduleClasses } = await import('../model/classes.js');
    const mc = await openModel(path.resolve(io.cwd, a.positionals[0]!), { onProgress: progressOf(a, io, cmd) });
    const classes = moduleClasses(mc.loaded.proto, mc.tree);
    io.out(a.flags.has('json') ? JSON.stringify(moduleTreeJson(mc.tree, classes), null, 1) : formatModuleTree(mc.tree, classes, { ops: a.flags.has('ops') }).join('\n'));
    return 0;
  }
  if (cmd.name === 'export-serving') return exportServingCommand(a, io, cmd);
  if (cmd.name === 'serve') {
    const { serveCommand } = await import('../serve/cli.js');
    return serveCommand(a, io);
  }
  const out = flag(a, 'out');
  if (cmd.name === 'compile' && !out) throw usageError('missing-argument', "'nns compile' needs -o OUT.onnx", [`usage: ${usageLine(cmd)}`]);
  const outAbs = out ? checkWritable(out, io.cwd) : undefined;
  const script = await loadScript(a.positionals[0]!, io.cwd, sources);
  const remote = flag(a, 'remote');
  if (remote !== undefined && flag(a, 'oip') !== undefined) throw usageError('bad-flag', '--remote and --oip cannot be combined: --remote runs the whole script on nns serve, --oip only the forward passes on an inference server');
  if (remote !== undefined) return runRemote(a, io, script, remote, outAbs);
  const modelPath = resolveModelPath(flag(a, 'model'), script, io.cwd);
  const run = await import('./run.js');
  const write = rawWriter(io);
  const { selectPasses } = await import('../../passes/pipeline.js');
  const names = (f: string): string[] | undefined => flag(a, f)?.split(',').map((s) => s.trim()).filter(Boolean);
  const printAfter = names('print-ir-after');
  if (printAfter) selectPasses(printAfter); // unknown names are usage errors
  const passes = names('passes');
  if (passes && !modelPath) throw usageError('no-model', '--passes needs a model: add model "PATH" to the script or pass --model PATH');
  const oipUrl = flag(a, 'oip');
  if (flag(a, 'oip-model') !== undefined && oipUrl === undefined) throw usageError('bad-flag', '--oip-model needs --oip URL', [`usage: ${usageLine(cmd)}`]);
  let runner: import('../fast/runner.js').RunnerFactory | undefined;
  if (oipUrl !== undefined) {
    if (!modelPath) throw usageError('no-model', '--oip needs the model too (to plan the traces): add model "PATH" to the script or pass --model PATH');
    const { OipClient } = await import('../oip/client.js');
    const { oipRunner } = await import('../fast/oip-runner.js');
    const { checkServingName, defaultServingName } = await import('../fast/serving.js');
    const key = io.env.NNS_API_KEY;
    runner = oipRunner({ client: new OipClient(oipUrl, key ? { headers: { authorization: `Bearer ${key}` } } : {}), name: checkServingName(flag(a, 'oip-model') ?? defaultServingName(modelPath)) });
  }
  const job = {
    ...script, modelPath, ...(runner ? { runner } : {}), printIrAfterAll: a.flags.has('print-ir-after-all'), log: (t: string) => io.err(t), out: (t: string) => io.out(t), write, onProgress: progressOf(a, io, cmd),
    ...(printAfter ? { printAfter: new Set(printAfter) } : {}), ...(passes ? { passes: selectPasses(passes) } : {}),
    ...(a.flags.has('flat') ? { flat: true } : {}),
  };
  if (cmd.name === 'run') {
    // Read every --param file before the model opens: a bad one stops the run before anything runs.
    const { parseParamFlag, readParamFile } = await import('./params.js');
    const params = new Map<string, import('../tensor.js').Tensor>();
    const files = new Map<string, string>();
    for (const v of a.lists.get('param') ?? []) {
      const { name, file } = parseParamFlag(v);
      if (params.has(name)) throw usageError('unknown-param', `--param ${name} is given twice`);
      params.set(name, readParamFile(name, file, io.cwd));
      files.set(name, file);
    }
    Object.assign(job, { params, paramSource: (n: string) => `--param ${n}=${files.get(n) ?? '?'}` });
  }
  if (cmd.name === 'check') {
    await run.checkScript(job);
    io.out(`${script.file}: ok`);
    return 0;
  }
  if (!modelPath) throw usageError('no-model', 'no model: add model "PATH" to the script or pass --model PATH');
  if (cmd.name === 'compile') {
    const files = await run.compileScript(job, outAbs!);
    const { paramDecls } = await import('../../grammar/script.js');
    const declared = new Set(paramDecls(script.ast).decls.map((d) => d.name));
    for (const [i, f] of files.entries()) {
      const shown = run.compiledPath(out!, i + 1);
      const about = [
        ...(files.length > 1 && f.trace ? [`trace ${f.trace.index} at ${script.file}:${f.trace.line}:${f.trace.col}`] : []),
        ...(f.hostInputs.size ? [`inputs ${[...f.hostInputs].map(([k, v]) => (k === v ? k : `${v} (${declared.has(k) ? 'param' : 'save'} '${k}'${declared.has(k) ? '' : ' of an earlier trace'})`)).join(', ')}`] : []),
        ...(f.weights.length ? [`weights: ${f.weights.map((w) => `${w.location}, ${w.how}`).join('; ')}`] : []),
      ];
      io.out(`wrote ${shown}${about.length ? ` (${about.join('; ')})` : ''}`);
      for (const r of f.renamed) io.out(`  note: save '${r.save}' is graph output '${r.output}' in ${shown}: ${r.reason}`);
      if (f.inserted.length) {
        const total = f.inserted.reduce((s, x) => s + x.nodes, 0);
        io.out(`  inserted ${total} node${total === 1 ? '' : 's'} for ${f.inserted.length} statement${f.inserted.length === 1 ? '' : 's'}:`);
        for (const x of f.inserted) io.out(`    ${x.source}  ${x.kind.padEnd(7)} ${(x.module || '(model)').padEnd(22)} ${String(x.nodes).padStart(4)} node${x.nodes === 1 ? ' ' : 's'}  ${x.name}`);
        io.out(`  in Netron: open ${shown}; Ctrl+F '/nns.' lists them (each ${a.flags.has('flat') ? 'node' : 'ƒ node opens its function on click'}); Model Properties shows the onnsight stamp`);
      }
    }
    return 0;
  }
  const plotDir = flag(a, 'plot') !== undefined ? checkWritable(flag(a, 'plot')!, io.cwd) : undefined; // DIR is created; its parent must exist
  const htmlAbs = flag(a, 'html') !== undefined ? checkWritable(flag(a, 'html')!, io.cwd) : undefined;
  const { results, decoder, prompts, graphs } = await run.runScript(job);
  return emitResults(io, script, { results, decoder, prompts, graphs }, { outAbs, plotDir, htmlAbs }, modelPath ? path.relative(io.cwd, modelPath) || modelPath : undefined);
}

/** `nns export-serving MODEL -o DIR`: a Triton model repository of the fast path's models. */
async function exportServingCommand(a: ParsedArgs, io: CliIO, cmd: CommandSpec): Promise<number> {
  const out = flag(a, 'out');
  if (!out) throw usageError('missing-argument', "'nns export-serving' needs -o DIR", [`usage: ${usageLine(cmd)}`]);
  const source = path.resolve(io.cwd, a.positionals[0]!);
  const { checkServingName, defaultServingName } = await import('../fast/serving.js');
  const name = checkServingName(flag(a, 'name') ?? defaultServingName(source));
  const m = flag(a, 'modules');
  const modules = m === undefined || m === 'all' ? 'all' : m === 'none' ? 'none' : m.split(',').map((s) => s.trim()).filter(Boolean);
  const { openModel } = await import('../engine.js');
  const { FastExecutor } = await import('../fast/execute.js');
  const { exportServing } = await import('../fast/triton.js');
  const mc = await openModel(source, { fast: false, onProgress: progressOf(a, io, cmd) });
  try {
    const r = exportServing(new FastExecutor(mc), mc, path.resolve(io.cwd, out), { name, modules, plain: a.flags.has('plain') });
    io.out(`wrote ${out}: ${r.models.length} model${r.models.length === 1 ? '' : 's'} for Triton (platform onnxruntime_onnx)`);
    for (const x of r.models) io.out(`  ${x.name}  ${x.kind === 'ports' ? 'the instrumented model' : x.kind === 'module' ? `module ${x.module}` : 'the unmodified model'}`);
    for (const w of r.weights) {
      io.out(`weights: ${w.file} (${(w.bytes / 2 ** 20).toFixed(1)} MB), one file on disk (${w.how === 'linked' ? 'a hard link to the cached weights' : 'copied once'}), hard-linked into ${r.links} version folder${r.links === 1 ? '' : 's'}${r.copies ? `; ${r.copies} extra copies where hard links failed` : ''}`);
    }
  } finally {
    await mc.backend.release();
  }
  return 0;
}

/** Raw text output (generated text as it comes): `io.write`, or whole lines to `io.out`. */
function rawWriter(io: CliIO): (t: string) => void {
  if (io.write) return (t) => io.write!(t);
  let line = '';
  return (t) => {
    line += t;
    const parts = line.split('\n');
    line = parts.pop()!;
    for (const p of parts) io.out(p);
  };
}

/** `nns run SCRIPT --remote URL --model NAME`: prints and writes what a local run does. */
async function runRemote(a: ParsedArgs, io: CliIO, script: Loaded, url: string, outAbs: string | undefined): Promise<number> {
  const name = flag(a, 'model');
  if (!name) throw usageError('missing-argument', "'nns run --remote URL' needs --model NAME (the served model's name)");
  for (const f of ['print-ir-after-all', 'print-ir-after']) {
    if (a.flags.has(f)) throw usageError('bad-flag', `--${f} cannot be combined with --remote (the server compiles)`);
  }
  const plotDir = flag(a, 'plot') !== undefined ? checkWritable(flag(a, 'plot')!, io.cwd) : undefined;
  const htmlAbs = flag(a, 'html') !== undefined ? checkWritable(flag(a, 'html')!, io.cwd) : undefined;
  const { parseParamFlag, readParamFile } = await import('./params.js');
  const params = new Map<string, import('../tensor.js').Tensor>();
  const files = new Map<string, string>();
  for (const v of a.lists.get('param') ?? []) {
    const { name: p, file } = parseParamFlag(v);
    if (params.has(p)) throw usageError('unknown-param', `--param ${p} is given twice`);
    params.set(p, readParamFile(p, file, io.cwd));
    files.set(p, file);
  }
  const { runScriptRemote } = await import('../remote/run.js');
  const cmd = COMMANDS.get('run')!;
  const apiKey = io.env.NNS_API_KEY;
  const { results, decoder, prompts } = await runScriptRemote({
    file: script.file, ast: script.ast, onProgress: progressOf(a, io, cmd), params, paramSource: (n: string) => `--param ${n}=${files.get(n) ?? '?'}`,
    text: { write: rawWriter(io), log: (t: string) => io.err(t) },
  }, url, name, apiKey ? { apiKey } : {});
  return emitResults(io, script, { results, decoder, prompts, graphs: [] }, { outAbs, plotDir, htmlAbs }, `${name} on ${url}`);
}

/**
 * What `nns run` does with a run's saves, local or remote: `--out` (streamed: a save-everything
 * run is longer than any one JavaScript string, src/cli/results-file.ts), the printed results,
 * then `--plot` / `--html`. Returns the exit code.
 */
async function emitResults(io: CliIO, script: Loaded, out: import('./run.js').RunOutput, to: { outAbs: string | undefined; plotDir: string | undefined; htmlAbs: string | undefined }, model: string | undefined): Promise<number> {
  const { results, decoder, prompts, graphs } = out;
  const { buildReport } = await import('../report/report.js');
  const { loopIndexNames } = await import('../report/families.js');
  const report = buildReport(results, prompts, loopIndexNames(script.ast), decoder);
  if (to.outAbs) {
    const { writeResultsFile } = await import('./results-file.js');
    writeResultsFile(to.outAbs, results, { $families: report.families, $prompts: report.prompts });
  }
  io.out(formatResults(results, decoder));
  if (to.plotDir || to.htmlAbs) await writeReport(report, to.plotDir, to.htmlAbs, io, { script: { file: script.file, text: script.text }, ...(model !== undefined ? { model } : {}), graphs });
  return 0;
}

/** Plots and/or the HTML report of a run or of a results file. */
async function writeReport(report: import('../report/plots.js').ReportData, plotDir: string | undefined, html: string | undefined, io: CliIO, opts: { script?: { file: string; text: string }; model?: string; graphs?: { path: string; what: string }[] }): Promise<void> {
  const { renderPlots, writePlots, writeHtml } = await import('../report/report.js');
  let plots;
  try {
    plots = await renderPlots(report);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_MODULE_NOT_FOUND') throw usageError('no-plotting', 'plots need the optional dependencies vega, vega-lite and @resvg/resvg-js: npm install vega vega-lite @resvg/resvg-js');
    throw e;
  }
  if (plotDir) {
    const files = await writePlots(plots, plotDir);
    io.err(plots.length ? `wrote ${plots.length} plot${plots.length === 1 ? '' : 's'} (${files.length} files) to ${path.relative(io.cwd, plotDir) || '.'}` : 'no plots: plots are made for families of saves (NAME.I, NAME.I.J from loops)');
  }
  if (html) {
    writeHtml(report, plots, html, { title: opts.script ? `onnsight: ${path.basename(opts.script.file)}` : 'onnsight report', ...opts });
    io.err(`wrote ${path.relative(io.cwd, html) || html}`);
  }
}

/**
 * Runs the `nns` command line with `argv` (without `node` and the script name).
 * @returns the exit code
 */
export async function main(argv: readonly string[], io: CliIO = defaultIO): Promise<number> {
  const sources = new Map<string, string>();
  try {
    const [name, ...rest] = argv;
    if (name === undefined) {
      io.err(GENERAL_HELP);
      return 2;
    }
    if (name === '--help' || name === '-h' || name === 'help') {
      const sub = rest[0] ? COMMANDS.get(rest[0]) : undefined;
      io.out(sub ? commandHelp(sub) : GENERAL_HELP);
      return 0;
    }
    if (name === '--version' || name === '-V') {
      io.out(`nns (onnsight) ${VERSION}`);
      return 0;
    }
    const cmd = COMMANDS.get(name);
    if (!cmd) {
      const what = name.startsWith('-') ? `unknown option '${name}'` : `unknown command '${name}'`;
      throw usageError('unknown-command', what, ['commands: run, compile, export-serving, plot, modules, check, serve, cache, lsp; see nns --help']);
    }
    const args = parseArgs(cmd, rest);
    if (args.flags.has('help')) {
      io.out(commandHelp(cmd));
      return 0;
    }
    return await execute(cmd, args, io, sources);
  } catch (e) {
    const errors = e instanceof ScriptErrors ? e.errors : userErrors(e);
    if (errors) {
      io.err(renderErrors(errors, sources));
      return exitCodeFor(errors);
    }
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    io.err(`nns: internal error: ${msg}`);
    if (io.env.NNS_DEBUG === '1' && e instanceof Error && e.stack) io.err(e.stack);
    else io.err('nns: this is a bug in onnsight; please report it (rerun with NNS_DEBUG=1 to see the stack trace)');
    return 3;
  }
}
