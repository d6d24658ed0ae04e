/**
 * The body of the job worker of `nns serve`: a child process that opens the served models
 * and runs batches of jobs the server sends it over IPC (src/serve/worker.ts is the other
 * end). A job is a trace's IR (JSON form) plus host values; it is checked and compiled with
 * the same pipeline as a local run (`compileGraph` with the IR pipeline, then the executor
 * stages, then the fast path or the compiled path, exactly as `runGraph` does).
 *
 * Jobs of one batch that the fast path runs and that {@link mergeable} accepts, with the same
 * padded length, share one forward pass (src/serve/merge.ts); any problem with the merged
 * run falls back to running them one by one.
 * @module
 */
import os from 'node:os';
import path from 'node:path';
import { graphFromJSON, IRFormatError, type GraphJSON } from '../../ir/json.js';
import type { Graph } from '../../ir/ir.js';
import { NnsError, NnsErrors } from '../errors.js';
import { compileGraph, continueCompile, workingCopy, type ModelContext } from '../compile.js';
import { openModel } from '../engine.js';
import { setIntraOpSpinning } from '../../backends/ort.js';
import { runCompiled } from '../compiled-run.js';
import { executorStages, irPipeline } from '../../passes/pipeline.js';
import { runPasses } from '../../passes/run.js';
import type { CompileState, PassContext } from '../../passes/pass.js';
import { defaultCacheDir } from '../model/load.js';
import { numel, type Tensor } from '../tensor.js';
import { modelInfo, type ModelInfoJSON } from './model-info.js';
import { mergeable, mergeGraphs, mergeKey, SEP, splitResults } from './merge.js';
import { diagnosticOf, encodeContainer, type DiagnosticJSON, type GenerationResultJSON } from './protocol.js';
import { decode, configMaxPositions, type TokenEvent } from '../generate/decode.js';
import { jobBuilder, readGenerationJob, type GenerationJobJSON } from '../generate/job.js';
import { badTokenId, vocabSizeOf } from '../model/token-ids.js';
import { runServed, servedMeta, type ServedMeta } from './oip.js';

/** A job as the server hands it to the worker: a trace (`ir`), a generation (`generate`) or an OIP inference (`oip`: `host` holds its inputs). */
export interface WorkerJob {
  id: string;
  ir?: GraphJSON;
  generate?: GenerationJobJSON;
  oip?: { name: string; fetch: string[]; tag?: string };
  host: [string, Tensor][];
  /** Send `progress` messages (default true). Off for a job whose answer is awaited whole (`?wait=1`): no message the server would drop. */
  progress?: boolean;
}

/** Messages server → worker. */
export type ToWorker =
  | { type: 'init'; models: { name: string; path: string }[]; maxSavedElements: number }
  | { type: 'run'; model: string; jobs: WorkerJob[] }
  | { type: 'meta'; req: number; model: string };

/** Messages worker → server. */
export type FromWorker =
  | { type: 'ready'; infos: ModelInfoJSON[] }
  | { type: 'init-error'; errors: DiagnosticJSON[] }
  | { type: 'started'; id: string }
  | { type: 'progress'; id: string; phase: string; done: number; total: number }
  | { type: 'token'; id: string; step: number; row: number; token: number }
  /**
   * A job's saves: as tensors (`saves`), or already encoded as the job's result container
   * (`result`, with `count` saves; `saves` is empty then) — encoded here, where a batch's
   * results are ready one by one, rather than in the server's process, which answers them.
   */
  | { type: 'done'; id: string; ok: true; saves: [string, Tensor][]; batched: number; generate?: GenerationResultJSON; last?: boolean; result?: Uint8Array; count?: number }
  | { type: 'done'; id: string; ok: false; errors: DiagnosticJSON[]; last?: boolean }
  | { type: 'batch-done' }
  | { type: 'meta'; req: number; served: ServedMeta[] }
  | { type: 'meta'; req: number; error: string };

const models = new Map<string, ModelContext>();
let maxSaved = Infinity;
/** Strings never to show a client: the model paths and the server's folders. */
const secrets: [string, string][] = [];

function send(m: FromWorker): void {
  process.send?.(m);
}

/**
 * Jobs of the running batch not yet reported. The last job's `done` carries `last` and
 * stands for `batch-done`: one message back per job, none extra (each message wakes the server).
 */
let unreported = new Set<string>();

function done(m: Extract<FromWorker, { type: 'done' }>): void {
  unreported.delete(m.id);
  send(unreported.size === 0 ? { ...m, last: true } : m);
}

/** A message without the server's paths. */
export function scrub(text: string, known: readonly (readonly [string, string])[] = secrets): string {
  let t = text;
  for (const [s, by] of known) if (s.length > 1) t = t.split(s).join(by);
  return t.replace(/(^|[\s'"(=:])\/(?:[\w.@+-]+\/)+[\w.@+-]*/g, '$1<path>');
}

function diagnostics(e: unknown): DiagnosticJSON[] {
  const errs = e instanceof NnsErrors ? e.errors : e instanceof NnsError ? [e] : undefined;
  if (errs) return errs.map((x) => ({ ...diagnosticOf(x), message: scrub(x.message), notes: x.notes.map((n) => scrub(n)) }));
  if (e instanceof IRFormatError) return [{ code: 'bad-request', message: scrub(e.message), kind: 'usage', notes: [] }];
  process.stderr.write(`nns serve worker: internal error: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  return [{ code: 'internal', message: 'internal error in the server (its log has the details)', kind: 'usage', notes: [] }];
}

/** Elements the saves of a checked IR will have (unknown sizes count 0). */
function savedElements(g: Graph, prefix?: string): number {
  let total = 0;
  for (const n of g.nodes) {
    if (!n.is('save') || (prefix !== undefined && !n.attrs.name.startsWith(prefix))) continue;
    const shape = n.inputs[0]?.type?.shape;
    if (!shape) continue;
    total += numel(shape.map((d) => (typeof d === 'number' ? d : d === 'batch' ? g.scopes[n.scope]!.rowEnd - g.scopes[n.scope]!.rowStart || g.batch : g.dimValues[d] ?? 1)));
  }
  return total;
}

function checkSaved(total: number, what = 'trace'): void {
  if (total > maxSaved) throw new NnsError('over-limit', `the ${what} saves ${total.toLocaleString('en-US')} elements; this server allows ${maxSaved.toLocaleString('en-US')} per job`, { kind: 'usage' });
}

/** A job through the IR pipeline and the executor stages (as `runGraph`). */
interface Prepared {
  job: WorkerJob;
  state: CompileState;
  host: Map<string, Tensor>;
}

function prepare(job: WorkerJob, mc: ModelContext): Prepared {
  const ir = graphFromJSON(job.ir);
  const state = compileGraph(ir, mc, { pipeline: irPipeline });
  checkSaved(savedElements(state.ir));
  const ctx: PassContext = { tree: mc.tree, errors: [], ...(mc.fast ? { fast: mc.fast } : {}) };
  runPasses([...executorStages], state, ctx, {});
  return { job, state, host: new Map(job.host) };
}

const isFast = (p: Prepared): boolean => p.state.executor?.kind === 'fast' && !!p.state.fastPlan && 'plan' in p.state.fastPlan;

/** Runs one prepared job alone (the tail of `runGraph`). */
async function runAlone(p: Prepared, mc: ModelContext): Promise<Map<string, Tensor>> {
  const progress = (e: { phase: string; done: number; total: number }): void => {
    if (p.job.progress !== false) send({ type: 'progress', id: p.job.id, phase: e.phase, done: e.done, total: e.total });
  };
  if (mc.fast && isFast(p)) {
    progress({ phase: 'run', done: 0, total: 1 });
    const out = await mc.fast.run(p.state.ir, (p.state.fastPlan as { plan: unknown }).plan, p.host);
    if (out) return out;
  }
  return runCompiled(p.state, mc, p.host, { onProgress: progress }, (g, settings) => continueCompile({ ir: g, model: workingCopy(mc.loaded.proto), saved: new Map(), ...settings }, mc, {}));
}

/** Reports a trace's or a generation's saves, encoded as its result container (the server stores and answers it as it is). */
function finish(id: string, saves: Map<string, Tensor>, batched: number, generate?: GenerationResultJSON): void {
  let total = 0;
  for (const t of saves.values()) total += numel(t.shape);
  if (total > maxSaved) {
    done({ type: 'done', id, ok: false, errors: diagnostics(new NnsError('over-limit', `the trace saved ${total.toLocaleString('en-US')} elements; this server allows ${maxSaved.toLocaleString('en-US')} per job`, { kind: 'usage' })) });
    return;
  }
  const result = encodeContainer({ id, ...(generate ? { generate } : {}) }, 'saves', saves);
  done({ type: 'done', id, ok: true, saves: [], result, count: saves.size, batched, ...(generate ? { generate } : {}) });
}

/**
 * Runs a generation job with the decode loop of a local run (src/generate/decode.ts): each
 * step is its template re-emitted with that step's rows. Tokens are reported as they are
 * chosen; the saved elements are counted after every step against the server's limit.
 */
async function runGeneration(job: WorkerJob, mc: ModelContext): Promise<void> {
  const tensors = new Map(job.host);
  const g = readGenerationJob(job.generate, tensors);
  const vocab = mc.vocabRows ?? vocabSizeOf(mc.loaded.config ?? undefined);
  g.prompts.forEach((p, r) => {
    for (const t of p) {
      const why = badTokenId(t, vocab);
      if (why) throw new NnsError('bad-prompt', `prompt ${r} of the generation: ${why}`, { kind: 'usage' });
    }
  });
  const P = Math.max(...g.prompts.map((p) => p.length));
  const limit = configMaxPositions(mc.loaded.config) ?? mc.maxPositions;
  const N = g.options.maxNewTokens;
  if (limit !== undefined && P + N - 1 > limit) throw new NnsError('too-long', `the prompt (${P} tokens) and max_new_tokens=${N} need ${P + N - 1} positions, but the model has ${limit}`, { kind: 'usage' });
  let saved = 0;
  const result = await decode(mc, {
    prompts: g.prompts, options: g.options, file: g.file ?? '<generate>', build: jobBuilder(g, tensors),
    // A job awaited whole (`?wait=1`) reports neither tokens nor progress: nobody listens.
    ...(job.progress !== false ? { onToken: (e: TokenEvent) => send({ type: 'token', id: job.id, step: e.step, row: e.row, token: e.token }) } : {}),
    onStep: (s, saves) => {
      for (const t of saves.values()) saved += numel(t.shape);
      checkSaved(saved, 'generation');
      if (job.progress !== false) send({ type: 'progress', id: job.id, phase: 'generate', done: s + 1, total: N });
    },
  });
  finish(job.id, result.saves, 1, { ids: result.ids, steps: result.steps, mode: result.mode });
}

/** Runs fast-path jobs of one merge key together; null when the merged run cannot be used. */
async function runMerged(group: Prepared[], mc: ModelContext): Promise<Map<string, Tensor>[] | null> {
  if (!mc.fast) return null;
  const merged = mergeGraphs(group.map((p) => graphFromJSON(p.job.ir!)));
  const host = new Map<string, Tensor>();
  group.forEach((p, j) => { for (const [k, v] of p.host) host.set(`${j}\u241f${k}`, v); });
  let state: CompileState;
  try {
    state = compileGraph(merged, mc, { pipeline: irPipeline });
    const ctx: PassContext = { tree: mc.tree, errors: [], fast: mc.fast };
    runPasses([...executorStages], state, ctx, {});
  } catch {
    return null;
  }
  if (!(state.executor?.kind === 'fast' && state.fastPlan && 'plan' in state.fastPlan)) return null;
  const out = await mc.fast.run(state.ir, state.fastPlan.plan, host);
  if (!out) return null;
  const parts = splitResults(out, group.length);
  // Each job gets its saves in the order its own run gives them.
  return parts.map((m, j) => {
    const order = group[j]!.state.fastPlan as { plan: { saves: { name: string }[] } };
    const names = order.plan.saves.map((s) => s.name);
    return names.every((n) => m.has(n)) && names.length === m.size ? new Map(names.map((n) => [n, m.get(n)!])) : m;
  });
}

/**
 * Several traces merged straight away: each parsed once and compiled only as part of the
 * merged graph (compiling each alone first, to see that it takes the fast path, would double
 * the work of a batch). Returns each job's saves, or null when the group cannot run merged
 * (a job's check fails, the merged trace is not a fast-path plan, a job saves more than the
 * limit): then its jobs take the one-by-one way, which reports each job's own errors.
 */
async function runMergedDirect(group: { job: WorkerJob; g: Graph }[], mc: ModelContext): Promise<Map<string, Tensor>[] | null> {
  if (!mc.fast) return null;
  const merged = mergeGraphs(group.map((p) => p.g));
  const host = new Map<string, Tensor>();
  group.forEach((p, j) => { for (const [k, v] of p.job.host) host.set(`${j}${SEP}${k}`, v); });
  let state: CompileState;
  try {
    state = compileGraph(merged, mc, { pipeline: irPipeline });
    if (group.some((_, j) => savedElements(state.ir, `${j}${SEP}`) > maxSaved)) return null;
    runPasses([...executorStages], state, { tree: mc.tree, errors: [], fast: mc.fast }, {});
  } catch {
    return null;
  }
  if (!(state.executor?.kind === 'fast' && state.fastPlan && 'plan' in state.fastPlan)) return null;
  const out = await mc.fast.run(state.ir, state.fastPlan.plan, host);
  return out ? splitResults(out, group.length) : null;
}

/** Test hook (`NNS_SERVE_TEST_STALL=1` in the worker's environment): a job saving `__stall__` hangs, so tests can kill a worker mid-job or pass the run time. */
const STALL = process.env.NNS_SERVE_TEST_STALL === '1';

/** Whether a job saves `__stall__` (the stall test hook). */
function stalls(j: WorkerJob): boolean {
  if (j.oip?.tag === '__stall__') return true;
  const irs = j.ir ? [j.ir] : (j.generate?.templates ?? []).map((t) => t.ir);
  return irs.some((ir) => ir.nodes.some((n) => n.op === 'save' && (n.attrs as { name?: unknown }).name === '__stall__'));
}

async function runBatch(modelName: string, jobs: WorkerJob[]): Promise<void> {
  if (STALL && jobs.some(stalls)) {
    for (const j of jobs) send({ type: 'started', id: j.id });
    await new Promise((r) => setTimeout(r, 600_000));
  }
  const mc = models.get(modelName);
  if (!mc) {
    for (const j of jobs) done({ type: 'done', id: j.id, ok: false, errors: [{ code: 'unknown-model', message: `no model '${modelName}' in this worker`, kind: 'usage', notes: [] }] });
    return;
  }
  // Several traces: first those that can share a pass, merged straight away.
  const traces = jobs.filter((j) => j.ir && !j.generate && !j.oip);
  if (traces.length > 1 && mc.fast) {
    const direct = new Map<string, { job: WorkerJob; g: Graph }[]>();
    for (const job of traces) {
      let g: Graph;
      try {
        g = graphFromJSON(job.ir);
      } catch {
        continue; // reported by the one-by-one way
      }
      if (mergeable(g)) {
        const key = mergeKey(g);
        (direct.get(key) ?? direct.set(key, []).get(key)!).push({ job, g });
      }
    }
    for (const group of direct.values()) {
      if (group.length < 2) continue;
      let parts: Map<string, Tensor>[] | null = null;
      try {
        parts = await runMergedDirect(group, mc);
      } catch {
        parts = null;
      }
      // Else (a job's error, a plan off the fast path): the one-by-one way below, which still merges the jobs it can.
      if (parts) group.forEach((p, j) => finish(p.job.id, parts![j]!, group.length));
    }
    jobs = jobs.filter((j) => unreported.has(j.id));
  }
  const ready: Prepared[] = [];
  for (const job of jobs) {
    if (job.generate || job.oip) {
      // A generation or an inference runs alone (the scheduler never batches it with other jobs).
      try {
        if (job.generate) await runGeneration(job, mc);
        else {
          const out = await runServed(mc, modelName, job.oip!.name, Object.fromEntries(job.host), job.oip!.fetch);
          // Not counted against the saved elements: the outputs are the served model's own.
          done({ type: 'done', id: job.id, ok: true, saves: job.oip!.fetch.map((n) => [n, out[n]!]), batched: 1 });
        }
      } catch (e) {
        done({ type: 'done', id: job.id, ok: false, errors: diagnostics(e) });
      }
      continue;
    }
    try {
      ready.push(prepare(job, mc));
    } catch (e) {
      done({ type: 'done', id: job.id, ok: false, errors: diagnostics(e) });
    }
  }
  const groups = new Map<string, Prepared[]>();
  const alone: Prepared[] = [];
  for (const p of ready) {
    if (ready.length > 1 && isFast(p) && mergeable(graphFromJSON(p.job.ir!))) {
      const key = mergeKey(p.state.ir);
      (groups.get(key) ?? groups.set(key, []).get(key)!).push(p);
    } else alone.push(p);
  }
  for (const group of groups.values()) {
    if (group.length < 2) { alone.push(...group); continue; }
    let parts: Map<string, Tensor>[] | null = null;
    try {
      parts = await runMerged(group, mc);
    } catch {
      parts = null;
    }
    if (parts) group.forEach((p, j) => finish(p.job.id, parts![j]!, group.length));
    else alone.push(...group);
  }
  for (const p of alone) {
    try {
      finish(p.job.id, await runAlone(p, mc), 1);
    } catch (e) {
      done({ type: 'done', id: p.job.id, ok: false, errors: diagnostics(e) });
    }
  }
}

async function init(list: { name: string; path: string }[]): Promise<void> {
  // onnxruntime's threads must not spin between jobs: the server's process and the next
  // job's compile need the cores (see setIntraOpSpinning).
  setIntraOpSpinning(false);
  const infos: ModelInfoJSON[] = [];
  try {
    for (const m of list) {
      const mc = await openModel(m.path);
      models.set(m.name, mc);
      infos.push(modelInfo(m.name, mc));
      secrets.push([path.resolve(m.path), `<model ${m.name}>`], [m.path, `<model ${m.name}>`], [mc.loaded.dir, `<model ${m.name}>`]);
    }
  } catch (e) {
    send({ type: 'init-error', errors: diagnostics(e) });
    return;
  }
  secrets.push([defaultCacheDir(), '<cache>'], [process.cwd(), '<server>'], [os.homedir(), '<home>'], [os.tmpdir(), '<tmp>']);
  secrets.sort((a, b) => b[0].length - a[0].length);
  send({ type: 'ready', infos });
}

let chain: Promise<void> = Promise.resolve();
process.on('message', (raw: ToWorker) => {
  if (raw.type === 'init') {
    maxSaved = raw.maxSavedElements;
    chain = chain.then(() => init(raw.models));
  } else if (raw.type === 'meta') {
    // Answered at once, between a running job's awaits: the endpoints' metadata never waits for a job.
    const mc = models.get(raw.model);
    try {
      if (!mc) throw new Error(`no model '${raw.model}' in this worker`);
      send({ type: 'meta', req: raw.req, served: servedMeta(mc, raw.model) });
    } catch (e) {
      send({ type: 'meta', req: raw.req, error: diagnostics(e)[0]!.message });
    }
  } else if (raw.type === 'run') {
    chain = chain.then(() => {
      unreported = new Set(raw.jobs.map((j) => j.id));
      return runBatch(raw.model, raw.jobs);
    }).catch((e: unknown) => {
      for (const j of raw.jobs) if (unreported.has(j.id)) done({ type: 'done', id: j.id, ok: false, errors: diagnostics(e) });
    }).then(() => {
      // Normally the last job's `done` said it; a batch that reported nothing says it here.
      if (unreported.size > 0 || raw.jobs.length === 0) send({ type: 'batch-done' });
      unreported = new Set();
    });
  }
});
process.on('disconnect', () => process.exit(0));
