/**
 * A **generation job**: a `generate` as data, so that a server runs it with the same decode
 * loop as a local run (src/generate/decode.ts) without ever receiving code.
 *
 * A step's IR depends on three things: the step index (which `step` blocks apply), the
 * tokens the step's pass covers (known only while decoding), and — for a model without a
 * key/value cache — the window of positions the step's statements see. Only the first is
 * known before decoding starts. So the client lowers each step's statements with the ordinary
 * front end (the `.nns` lowering or the TypeScript callback) into a plain builder, with
 * placeholder tokens: a **template**. Templates are the IR's versioned JSON form (ir/json.ts)
 * without the invokes' tokens; steps with the same template share it. The server's decode
 * loop then builds each step by re-emitting the step's template through its own step
 * builder ({@link emitTemplate}) with that step's rows: module references, sets, and every
 * other node go through the same builder calls the front end makes locally, so the window of a
 * cache-less model, the set versions after the loop's replays, and the rows are exactly those
 * of a local run — the same IR, hence the same numbers, bit for bit.
 *
 * Wire form ({@link GenerationJobJSON}): `{ format: "onnsight-generate", version: 1, prompts,
 * options, templates: [{ ir, host }], steps }` — prompts as token ids, `steps[s]` the template
 * of step s, `host` mapping each template's host value names to tensors of the request.
 * @module
 */
import { Graph, type Value } from '../../ir/ir.js';
import { graphFromJSON, graphToJSON, IRFormatError, type GraphJSON } from '../../ir/json.js';
import type { GenerateSettings } from '../../grammar/generate-options.js';
import { NnsError, type Span } from '../errors.js';
import type { ModuleTree } from '../model/types.js';
import type { Tensor } from '../tensor.js';
import type { BuildStep, GenerateOptions, StepBody } from './decode.js';
import { StepBuilder } from './step-builder.js';

/** Prefix of the decode loop's own save and host names; templates may not use it. */
export const INTERNAL_PREFIX = '#gen.';

/** One step template on the wire. */
export interface StepTemplateJSON {
  /** The step's statements as the IR's JSON form; invoke scopes carry no tokens. */
  ir: GraphJSON;
  /** Host value name in `ir` → tensor name in the request. */
  host: Record<string, string>;
}

/**
 * The options of a generation on the wire: a `generate` statement's checked settings
 * (defaults made explicit), the same fields local runs use.
 */
export type GenerationOptionsJSON = GenerateSettings;

/** A generation job on the wire (see the module comment). */
export interface GenerationJobJSON {
  format: 'onnsight-generate';
  version: 1;
  /** Token ids of each prompt (one batch row each). */
  prompts: number[][];
  options: GenerationOptionsJSON;
  /** Distinct step templates. */
  templates: StepTemplateJSON[];
  /** Template index of each step 0..maxNewTokens-1. */
  steps: number[];
  /** The script's file name as the client gave it (spans of the loop's own nodes). */
  file?: string;
}

/** A generation job lowered on the client: its JSON and the tensors it names. */
export interface LoweredGenerationJob {
  job: GenerationJobJSON;
  /** Tensors by request name (each distinct tensor once). */
  tensors: Map<string, Tensor>;
}

/** The options as they travel (defaults made explicit). */
export function optionsJSON(o: GenerateOptions): GenerationOptionsJSON {
  return {
    maxNewTokens: o.maxNewTokens,
    stopAtEos: o.stopAtEos ?? true,
    doSample: o.doSample ?? false,
    ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
    ...(o.topK !== undefined ? { topK: o.topK } : {}),
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
  };
}

/**
 * Lowers every step of a generation to templates (client side): `build` runs once per step
 * into a plain step builder (no window) with placeholder rows, exactly as the decode loop
 * would call it; equal templates with the same host tensors are sent once.
 * @throws whatever `build` throws (the front end's errors, located)
 */
export function lowerGenerationJob(req: { prompts: number[][]; options: GenerateOptions; build: BuildStep; tree: ModuleTree; file?: string }): LoweredGenerationJob {
  const n = req.options.maxNewTokens;
  const templates: StepTemplateJSON[] = [];
  const byText = new Map<string, number>();
  const steps: number[] = [];
  const tensors = new Map<string, Tensor>();
  const tensorName = new Map<Tensor, string>();
  for (let s = 0; s < n; s++) {
    const b = new StepBuilder({ file: req.file, tree: req.tree });
    const rows = s === 0 ? req.prompts.map((p) => [...p]) : req.prompts.map(() => [0]);
    const body: StepBody = req.build(b, s, rows);
    const ir = graphToJSON(b.graph);
    ir.dimValues = {};
    for (const sc of ir.scopes) delete sc.tokens;
    const host: Record<string, string> = {};
    for (const node of b.graph.nodes) {
      if (!node.is('host')) continue;
      const t = body.host?.get(node.attrs.name);
      if (!t) continue;
      let name = tensorName.get(t);
      if (name === undefined) {
        name = `h${tensors.size}`;
        tensorName.set(t, name);
        tensors.set(name, t);
      }
      host[node.attrs.name] = name;
    }
    const key = JSON.stringify([ir, host]);
    let at = byText.get(key);
    if (at === undefined) {
      at = templates.length;
      templates.push({ ir, host });
      byText.set(key, at);
    }
    steps.push(at);
  }
  return {
    job: { format: 'onnsight-generate', version: 1, prompts: req.prompts.map((p) => [...p]), options: optionsJSON(req.options), templates, steps, ...(req.file !== undefined ? { file: req.file } : {}) },
    tensors,
  };
}

/** A checked generation job (server side). */
export interface GenerationJob {
  prompts: number[][];
  options: GenerateOptions;
  templates: { graph: Graph; host: Map<string, string> }[];
  steps: number[];
  file?: string;
  /** IR nodes of all templates. */
  nodes: number;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

function need(cond: boolean, where: string, what: string): asserts cond {
  if (!cond) throw new IRFormatError(`${where}: ${what}`);
}

/**
 * Reads and checks a generation job's JSON (structure only: token ids against the model's
 * vocabulary and lengths against its positions are the caller's, which knows the model).
 * @param tensors the request's tensors (every host name a template maps must be one of them)
 * @throws IRFormatError naming the JSON path of what is malformed
 */
export function readGenerationJob(json: unknown, tensors: ReadonlyMap<string, Tensor>): GenerationJob {
  const at = '$.generate';
  need(isObj(json), at, 'expected an object');
  need(json.format === 'onnsight-generate', `${at}.format`, `expected "onnsight-generate", got ${JSON.stringify(json.format)?.slice(0, 40)}`);
  need(json.version === 1, `${at}.version`, `unsupported version ${JSON.stringify(json.version)?.slice(0, 20)} (this reader knows 1)`);
  need(Array.isArray(json.prompts) && json.prompts.length > 0, `${at}.prompts`, 'expected a non-empty list of prompts');
  const prompts = json.prompts.map((p, i) => {
    need(Array.isArray(p) && p.length > 0 && p.every((t) => isInt(t) && t >= 0), `${at}.prompts[${i}]`, 'expected a non-empty list of token ids (integers >= 0)');
    return [...(p as number[])];
  });
  const o = json.options;
  need(isObj(o), `${at}.options`, 'expected an object');
  need(isInt(o.maxNewTokens) && o.maxNewTokens >= 1, `${at}.options.maxNewTokens`, 'expected an integer >= 1');
  need(typeof o.stopAtEos === 'boolean', `${at}.options.stopAtEos`, 'expected true or false');
  need(typeof o.doSample === 'boolean', `${at}.options.doSample`, 'expected true or false');
  need(o.temperature === undefined || (typeof o.temperature === 'number' && Number.isFinite(o.temperature) && o.temperature > 0), `${at}.options.temperature`, 'expected a number > 0');
  need(o.topK === undefined || (isInt(o.topK) && o.topK >= 1), `${at}.options.topK`, 'expected an integer >= 1');
  need(o.seed === undefined || (isInt(o.seed) && o.seed >= 0), `${at}.options.seed`, 'expected an integer >= 0');
  const options: GenerateOptions = {
    maxNewTokens: o.maxNewTokens, stopAtEos: o.stopAtEos, doSample: o.doSample,
    ...(o.temperature !== undefined ? { temperature: o.temperature as number } : {}),
    ...(o.topK !== undefined ? { topK: o.topK as number } : {}),
    ...(o.seed !== undefined ? { seed: o.seed as number } : {}),
  };
  need(Array.isArray(json.templates) && json.templates.length > 0, `${at}.templates`, 'expected a non-empty list');
  let nodes = 0;
  const templates = json.templates.map((t, i) => {
    const w = `${at}.templates[${i}]`;
    need(isObj(t), w, 'expected an object');
    need(isObj(t.ir) && Array.isArray(t.ir.nodes), `${w}.ir`, 'expected the IR JSON form');
    nodes += (t.ir.nodes as unknown[]).length;
    let graph: Graph;
    try {
      graph = graphFromJSON(t.ir);
    } catch (e) {
      if (e instanceof IRFormatError) throw new IRFormatError(`${w}.ir: ${e.message.replace(/^invalid onnsight-ir JSON: /, '')}`);
      throw e;
    }
    need(graph.scopes.length - 1 === prompts.length, `${w}.ir.scopes`, `expected one invoke per prompt (${prompts.length}), got ${graph.scopes.length - 1}`);
    graph.scopes.slice(1).forEach((sc, r) => need(sc.rowStart === r && sc.rowEnd === r + 1, `${w}.ir.scopes[${r + 1}]`, `expected row ${r} only`));
    need(isObj(t.host) && Object.values(t.host).every((v) => typeof v === 'string'), `${w}.host`, 'expected an object of tensor names');
    const host = new Map(Object.entries(t.host as Record<string, string>));
    for (const n of graph.nodes) {
      if (n.is('save') || n.is('host')) need(!n.attrs.name.startsWith(INTERNAL_PREFIX), `${w}.ir`, `the name '${n.attrs.name.slice(0, 40)}' is reserved`);
      if (!n.is('host')) continue;
      const name = host.get(n.attrs.name);
      const v = name === undefined ? undefined : tensors.get(name);
      need(v !== undefined, `${w}.host`, `no tensor for the host value '${n.attrs.name.slice(0, 40)}'`);
      need(v.dtype === n.attrs.dtype && v.shape.length === n.attrs.shape.length && v.shape.every((d, k) => d === n.attrs.shape[k]), `${w}.host`, `the tensor for '${n.attrs.name.slice(0, 40)}' is not ${n.attrs.dtype}[${n.attrs.shape.join(', ')}]`);
    }
    return { graph, host };
  });
  need(Array.isArray(json.steps) && json.steps.length === options.maxNewTokens, `${at}.steps`, `expected one template index per step (${options.maxNewTokens})`);
  const steps = json.steps.map((x, s) => {
    need(isInt(x) && x >= 0 && x < templates.length, `${at}.steps[${s}]`, 'expected the index of a template');
    return x;
  });
  need(json.file === undefined || (typeof json.file === 'string' && json.file.length <= 4096), `${at}.file`, 'expected a string');
  return { prompts, options, templates, steps, ...(json.file !== undefined ? { file: json.file as string } : {}), nodes };
}

/**
 * Builds step `s` of a checked job into the decode loop's builder: {@link emitTemplate} with
 * the step's rows; the step's host values from the request's tensors.
 */
export function jobBuilder(job: GenerationJob, tensors: ReadonlyMap<string, Tensor>): BuildStep {
  return (b, s, rows) => {
    const t = job.templates[job.steps[s]!]!;
    emitTemplate(b, t.graph, rows);
    return { host: new Map([...t.host].map(([k, v]) => [k, tensors.get(v)!])) };
  };
}

/**
 * Re-emits a template's nodes into `b` through the builder's own calls (so a windowing step
 * builder windows module references and sets, and set versions count the sets already in
 * `b`), one invoke per row with `rows[i]` as its tokens.
 * @throws IRFormatError when a node's result count disagrees with what the builder makes (a template for another model)
 */
export function emitTemplate(b: StepBuilder, g: Graph, rows: readonly number[][]): void {
  const scopes = new Map<number, number>([[0, 0]]);
  g.scopes.slice(1).forEach((sc, i) => scopes.set(sc.id, b.addInvoke([...rows[i]!], sc.span ?? NO_SPAN, sc.prompt)));
  const vals = new Map<Value, Value>();
  const outer = b.scope;
  try {
    for (const n of g.nodes) {
      b.scope = scopes.get(n.scope)!;
      const ins = n.inputs.map((v) => vals.get(v)!);
      const sp = n.span;
      let res: Value[];
      if (n.is('module.output')) res = [b.moduleOutput(n.attrs.path, n.attrs.index, sp)];
      else if (n.is('module.input')) res = [b.moduleInput(n.attrs.path, n.attrs.index, sp)];
      else if (n.is('model.output')) res = [b.modelOutput(n.attrs.name, sp)];
      else if (n.is('param')) res = [b.param(n.attrs.name, sp)];
      else if (n.is('host')) res = [b.host(n.attrs.name, n.attrs.dtype, [...n.attrs.shape], sp)];
      else if (n.is('topk')) res = b.topk(ins[0]!, n.attrs.k, n.attrs.dim, sp);
      else if (n.is('call_module')) res = b.callModule(n.attrs.path, ins, sp);
      else if (n.is('set')) {
        b.set(n.attrs.path, n.attrs.port, n.attrs.index, n.attrs.items, ins[0]!, sp);
        res = [];
      } else if (n.is('save')) {
        b.save(ins[0]!, n.attrs.name, sp);
        res = [];
      } else {
        if (n.is('grad') && !GRAD_SOURCES.has(ins[1]!.producer.op)) {
          // As the front ends check while lowering: a window (a step of a model without a cache) makes X a slice.
          throw new NnsError('bad-grad', 'grad(Y, X): X must be a module value (MODULE.output, .input, .outputs[i], .inputs[i]), an op value (MODULE.op("TYPE").output), a parameter (model.lm_head.weight) or a host value (a param, an earlier save), or a name bound to one', { span: n.inputs[1]!.producer.span });
        }
        res = b.apply(n.op, ins, JSON.parse(JSON.stringify(n.attrs)) as never, sp);
        if (n.is('const')) res[0]!.type = { dtype: n.attrs.dtype, shape: [...n.attrs.shape] };
      }
      if (res.length !== n.results.length) throw new IRFormatError(`${n.op} has ${n.results.length} results in the template, ${res.length} on this model`);
      n.results.forEach((v, i) => {
        if (v.name !== undefined) res[i]!.name ??= v.name;
        vals.set(v, res[i]!);
      });
    }
  } finally {
    b.scope = outer;
  }
}

/** What `grad(Y, X)` accepts as X (grammar/lower-expr.ts, src/trace.ts). */
const GRAD_SOURCES: ReadonlySet<string> = new Set(['module.output', 'module.input', 'param', 'host']);

const NO_SPAN: Span = { file: '<generate>', line: 1, col: 1, endLine: 1, endCol: 1, offset: 0, endOffset: 0 };
