/**
 * A GPT-2 (HF `GPT2LMHeadModel`) ONNX model generator, built with the graph builder.
 *
 * The graph mirrors, node for node, what PyTorch's TorchScript exporter emits for GPT-2 as
 * Optimum exports decoders without cache (models/gpt2-facts/onnx/model.onnx is the reference;
 * test/api/bench-model.test.ts checks the node list against it): scope-path node names
 * (`/transformer/h.0/attn/c_attn/Gemm`), `_N`-numbered repeats, unscoped `Constant_N` nodes
 * feeding `Unsqueeze`s, Conv1D as Shape/Slice/Reshape + Gemm + Reshape, the causal mask as a
 * bool `[1,1,positions,positions]` constant sliced to the sequence length, the attention mask as
 * `(1 - mask) * float_min`, gelu_new as separate Mul/Pow/Add/Tanh ops, the lm_head as a MatMul
 * with a transposed copy of the tied `wte`. Inputs `input_ids`, `attention_mask`,
 * `position_ids` (int64 `[batch_size, sequence_length]`), output `logits`.
 *
 * Weights are seeded pseudo-random (HF's init: N(0, 0.02), residual projections
 * N(0, 0.02/√(2·layers)), LayerNorm weight 1 / bias 0; biases N(0, 0.02)), or taken from a
 * `Map`. They are generated and written tensor by tensor, streaming, into ONE external data
 * file `model.onnx.data` (64-byte aligned offsets) next to `model.onnx`. A second graph,
 * `model.with-past.onnx`, shares that file: the same model with a key/value cache (see
 * {@link writeWithPast}).
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { decodeModel, encodeModel } from '../src/onnx/serde.js';
import {
  DataType, ExternalDataWriter, GraphBuilder, attr, externalTensor, floatTensor, int64Tensor, littleEndianBytes,
  scalarFloat, scalarInt64, tensor, type ExternalRef,
} from '../src/onnx/graph-builder.js';
import type { TensorProto } from '../src/onnx/proto.js';

/** GPT-2 hyper-parameters (HF config names in comments). */
export interface Gpt2Config {
  /** `n_layer`. */
  layers: number;
  /** `n_embd`. */
  width: number;
  /** `n_head`. */
  heads: number;
  /** `vocab_size`. */
  vocab: number;
  /** `n_positions` (longest supported sequence). */
  positions: number;
  /** `layer_norm_epsilon` (default 1e-5). */
  layerNormEpsilon?: number;
}

/** GPT-2 small: 12 layers, width 768, 12 heads, vocabulary 50257, 1024 positions (124 M parameters). */
export const GPT2_SMALL: Readonly<Gpt2Config> = { layers: 12, width: 768, heads: 12, vocab: 50257, positions: 1024 };

/** Options of {@link buildGpt2Model}. */
export interface BuildGpt2Options extends Gpt2Config {
  /** PRNG seed of the weights (ignored for tensors given in `weights`). */
  seed: number;
  /** Output folder; receives `model.onnx`, `model.onnx.data`, `manifest.json`. */
  dir: string;
  /** Node naming: only the TorchScript exporter's scope paths for now. */
  scopeStyle?: 'torchscript';
  /**
   * Weights by state-dict name (`transformer.h.0.attn.c_attn.weight`, HF Conv1D layout
   * `[in, out]`) instead of the PRNG; every tensor must be present. The model is then always
   * rebuilt (no cache reuse).
   */
  weights?: ReadonlyMap<string, Float32Array>;
}

/** What {@link buildGpt2Model} produced (or found). */
export interface Gpt2Model {
  /** The model folder. */
  dir: string;
  /** `<dir>/model.onnx` (graph only, weights external). */
  graphPath: string;
  /** `<dir>/model.onnx.data`. */
  weightsPath: string;
  /** Parameter count (tied embedding counted once, as HF does). */
  params: number;
  /** Size of the weights file (includes the lm_head's transposed copy of wte). */
  weightsBytes: number;
  /** True when a complete cached build was reused. */
  reused: boolean;
}

/** How a state-dict tensor is initialized by the PRNG. */
export type Gpt2Init = 'normal' | 'proj' | 'ones' | 'zeros' | 'bias';

/** One state-dict tensor. */
export interface Gpt2Param {
  name: string;
  dims: number[];
  init: Gpt2Init;
}

/** The state dict of `GPT2LMHeadModel` (without the tied `lm_head.weight`), in PyTorch order. */
export function gpt2StateDict(cfg: Gpt2Config): Gpt2Param[] {
  const { layers, width: w, vocab, positions } = cfg;
  const out: Gpt2Param[] = [
    { name: 'transformer.wte.weight', dims: [vocab, w], init: 'normal' },
    { name: 'transformer.wpe.weight', dims: [positions, w], init: 'normal' },
  ];
  for (let i = 0; i < layers; i++) {
    const p = `transformer.h.${i}.`;
    out.push(
      { name: `${p}ln_1.weight`, dims: [w], init: 'ones' },
      { name: `${p}ln_1.bias`, dims: [w], init: 'zeros' },
      { name: `${p}attn.c_attn.weight`, dims: [w, 3 * w], init: 'normal' },
      { name: `${p}attn.c_attn.bias`, dims: [3 * w], init: 'bias' },
      { name: `${p}attn.c_proj.weight`, dims: [w, w], init: 'proj' },
      { name: `${p}attn.c_proj.bias`, dims: [w], init: 'bias' },
      { name: `${p}ln_2.weight`, dims: [w], init: 'ones' },
      { name: `${p}ln_2.bias`, dims: [w], init: 'zeros' },
      { name: `${p}mlp.c_fc.weight`, dims: [w, 4 * w], init: 'normal' },
      { name: `${p}mlp.c_fc.bias`, dims: [4 * w], init: 'bias' },
      { name: `${p}mlp.c_proj.weight`, dims: [4 * w, w], init: 'proj' },
      { name: `${p}mlp.c_proj.bias`, dims: [w], init: 'bias' },
    );
  }
  out.push({ name: 'transformer.ln_f.weight', dims: [w], init: 'ones' }, { name: 'transformer.ln_f.bias', dims: [w], init: 'zeros' });
  return out;
}

/** Parameter count of a config (tied embedding counted once): 124,439,808 for GPT-2 small. */
export function gpt2ParamCount(cfg: Gpt2Config): number {
  return gpt2StateDict(cfg).reduce((s, p) => s + p.dims.reduce((a, b) => a * b, 1), 0);
}

// ───────────────────────────── PRNG ─────────────────────────────

/** 32-bit FNV-1a of a string, mixed with a seed. */
function hashSeed(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** sfc32: a small, fast, well-distributed 32-bit PRNG; returns floats in (0, 1). */
function sfc32(seed: number): () => number {
  let a = 0x9e3779b9, b = 0x243f6a88, c = 0xb7e15162, d = seed >>> 0;
  const next = (): number => {
    a >>>= 0; b >>>= 0; c >>>= 0; d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return ((t >>> 0) + 0.5) / 4294967296;
  };
  for (let i = 0; i < 12; i++) next();
  return next;
}

const CHUNK = 1 << 20; // floats per generated chunk (4 MiB)

/** Yields a tensor's PRNG values in chunks (each chunk buffer is reused: consume before the next). */
export function* prngChunks(seed: number, p: Gpt2Param, layers: number): Generator<Float32Array> {
  const n = p.dims.reduce((a, b) => a * b, 1);
  const buf = new Float32Array(Math.min(n, CHUNK));
  if (p.init === 'ones' || p.init === 'zeros') {
    buf.fill(p.init === 'ones' ? 1 : 0);
    for (let done = 0; done < n; done += buf.length) yield buf.subarray(0, Math.min(buf.length, n - done));
    return;
  }
  const std = p.init === 'proj' ? 0.02 / Math.sqrt(2 * layers) : 0.02;
  const rand = sfc32(hashSeed(seed, p.name));
  for (let done = 0; done < n; done += buf.length) {
    const m = Math.min(buf.length, n - done);
    for (let i = 0; i < m; i += 2) {
      // Box–Muller: two normals per pair of uniforms.
      const r = std * Math.sqrt(-2 * Math.log(rand()));
      const th = 2 * Math.PI * rand();
      buf[i] = r * Math.cos(th);
      if (i + 1 < m) buf[i + 1] = r * Math.sin(th);
    }
    yield buf.subarray(0, m);
  }
}

function bytesOf(chunks: Iterable<Float32Array>): Iterable<Uint8Array> {
  return (function* () {
    for (const c of chunks) yield littleEndianBytes(c);
  })();
}

// ───────────────────────────── files and cache ─────────────────────────────

const MANIFEST_FORMAT = 1;

interface Manifest {
  format: number;
  generator: 'onnsight/bench/gpt2-model';
  config: Required<Gpt2Config>;
  seed: number;
  weights: 'prng' | 'map';
  params: number;
  weightsBytes: number;
  graphBytes: number;
}

function fullConfig(c: Gpt2Config): Required<Gpt2Config> {
  return { layers: c.layers, width: c.width, heads: c.heads, vocab: c.vocab, positions: c.positions, layerNormEpsilon: c.layerNormEpsilon ?? 1e-5 };
}

/** Reads `<dir>/manifest.json` and checks the files it describes are complete; `undefined` if not. */
function completeBuild(dir: string): Manifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    if (m.format !== MANIFEST_FORMAT) return undefined;
    if (fs.statSync(path.join(dir, 'model.onnx')).size !== m.graphBytes) return undefined;
    if (fs.statSync(path.join(dir, 'model.onnx.data')).size !== m.weightsBytes) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function sameConfig(a: Required<Gpt2Config>, b: Required<Gpt2Config>): boolean {
  return (Object.keys(a) as (keyof Gpt2Config)[]).every((k) => a[k] === b[k]);
}

function result(dir: string, m: Manifest, reused: boolean): Gpt2Model {
  return {
    dir, graphPath: path.join(dir, 'model.onnx'), weightsPath: path.join(dir, 'model.onnx.data'),
    params: m.params, weightsBytes: m.weightsBytes, reused,
  };
}

/**
 * Builds (or reuses) a GPT-2 model folder. With PRNG weights, a complete previous build of the
 * same config and seed in `dir` is reused. Builds go to a temporary sibling folder that is
 * renamed into place when complete, so an interrupted build never looks complete.
 */
export async function buildGpt2Model(opts: BuildGpt2Options): Promise<Gpt2Model> {
  const cfg = fullConfig(opts);
  if (cfg.width % cfg.heads !== 0) throw new Error(`internal: width ${cfg.width} is not divisible by heads ${cfg.heads}`);
  const dir = path.resolve(opts.dir);
  const source: 'prng' | 'map' = opts.weights ? 'map' : 'prng';
  const existing = completeBuild(dir);
  if (existing && source === 'prng' && existing.weights === 'prng' && existing.seed === opts.seed && sameConfig(existing.config, cfg)) {
    // Builds made before the with-past variant existed: add it (graph only; the weights are shared).
    if (!fs.existsSync(path.join(dir, 'model.with-past.onnx'))) {
      writeWithPast(dir, cfg, decodeModel(fs.readFileSync(path.join(dir, 'model.onnx'))).graph?.initializer ?? []);
    }
    return result(dir, existing, true);
  }
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const { params } = writeGpt2(tmp, cfg, opts.seed, opts.weights);
    const manifest: Manifest = {
      format: MANIFEST_FORMAT, generator: 'onnsight/bench/gpt2-model', config: cfg, seed: opts.seed, weights: source, params,
      weightsBytes: fs.statSync(path.join(tmp, 'model.onnx.data')).size,
      graphBytes: fs.statSync(path.join(tmp, 'model.onnx')).size,
    };
    fs.writeFileSync(path.join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    fs.rmSync(dir, { recursive: true, force: true });
    try {
      fs.renameSync(tmp, dir);
    } catch (e) {
      // Another process finished the same build first: use it if it is complete.
      const other = completeBuild(dir);
      if (other && source === 'prng' && other.seed === opts.seed && sameConfig(other.config, cfg)) {
        fs.rmSync(tmp, { recursive: true, force: true });
        return result(dir, other, true);
      }
      throw e;
    }
    return result(dir, manifest, false);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Default cache folder of the benchmark's GPT-2 small: `<root>/gpt2-small-<seed>`. */
export function gpt2SmallDir(seed: number, root = path.join(process.cwd(), '.cache', 'bench')): string {
  return path.join(root, `gpt2-small-${seed}`);
}

/** Builds or reuses the benchmark's GPT-2 small (≈124 M parameters, ≈650 MB of weights). */
export function ensureGpt2Small(seed = 0, root?: string): Promise<Gpt2Model> {
  return buildGpt2Model({ ...GPT2_SMALL, seed, dir: gpt2SmallDir(seed, root) });
}

// ───────────────────────────── the graph ─────────────────────────────

const INT64_MAX = 9223372036854775807n;
const FLOAT_MIN = -3.4028234663852886e38;

/** Writes `model.onnx.data` (streaming) and `model.onnx` into `dir`. */
function writeGpt2(dir: string, cfg: Required<Gpt2Config>, seed: number, weights?: ReadonlyMap<string, Float32Array>): { params: number } {
  const { layers, width: w, vocab } = cfg;
  const b = new GraphBuilder({ opset: 17 });
  const writer = new ExternalDataWriter(path.join(dir, 'model.onnx.data'));
  let params = 0;
  const lmHeadName = `onnx::MatMul_${layers * 250 + 5}`;
  let lmHead: TensorProto | undefined;
  try {
    // Inputs first (graph input order as exported).
    const inputDims = ['batch_size', 'sequence_length'];
    b.input('input_ids', DataType.INT64, inputDims);
    b.input('attention_mask', DataType.INT64, inputDims);
    b.input('position_ids', DataType.INT64, inputDims);

    for (const p of gpt2StateDict(cfg)) {
      const n = p.dims.reduce((a, c) => a * c, 1);
      params += n;
      let ref: ExternalRef;
      let whole: Float32Array | undefined;
      if (weights) {
        const data = weights.get(p.name);
        if (!data) throw new Error(`internal: weights map lacks ${p.name}`);
        if (data.length !== n) throw new Error(`internal: ${p.name}: expected ${n} values, got ${data.length}`);
        whole = data;
        ref = writer.writeArray(data);
      } else if (p.name === 'transformer.wte.weight') {
        whole = new Float32Array(n);
        let off = 0;
        for (const c of prngChunks(seed, p, layers)) { whole.set(c, off); off += c.length; }
        ref = writer.writeArray(whole);
      } else {
        ref = writer.write(bytesOf(prngChunks(seed, p, layers)));
      }
      b.addTensor(externalTensor(p.name, DataType.FLOAT, p.dims, ref));
      if (p.name === 'transformer.wte.weight') {
        // The exporter stores lm_head's weight (tied to wte) as its own transposed initializer.
        // Write it now, while wte is in memory, in blocks of rows.
        const src = whole!;
        const rows = Math.max(1, Math.floor(CHUNK / vocab));
        const block = new Float32Array(rows * vocab);
        const headRef = writer.write((function* () {
          for (let j0 = 0; j0 < w; j0 += rows) {
            const jn = Math.min(rows, w - j0);
            for (let j = 0; j < jn; j++) {
              const base = j * vocab, col = j0 + j;
              for (let v = 0; v < vocab; v++) block[base + v] = src[v * w + col]!;
            }
            yield littleEndianBytes(block.subarray(0, jn * vocab));
          }
        })());
        lmHead = externalTensor(lmHeadName, DataType.FLOAT, [w, vocab], headRef);
      }
    }
  } finally {
    writer.close();
  }
  b.addTensor(lmHead!);
  gpt2Body(b, cfg, lmHeadName, false);
  const model = b.build({ irVersion: 8, producerName: 'pytorch', producerVersion: '1.13.0' });
  fs.writeFileSync(path.join(dir, 'model.onnx'), encodeModel(model));
  writeWithPast(dir, cfg, model.graph!.initializer ?? []);
  return { params };
}

/**
 * Writes `model.with-past.onnx` next to `model.onnx`, sharing its weights file: the same
 * model in the Optimum / Transformers.js "with past" layout (inputs `past_key_values.{i}.key|value`
 * `[batch, heads, past_sequence_length, head_dim]`, outputs `present.{i}.key|value`, the
 * attention mask over past + new positions, the causal mask on absolute positions), as
 * models/gpt2-facts/onnx/model.with-past.onnx is laid out.
 */
export function writeWithPast(dir: string, cfg: Required<Gpt2Config>, initializers: readonly TensorProto[]): void {
  const b = new GraphBuilder({ opset: 17 });
  const inputDims = ['batch_size', 'sequence_length'];
  b.input('input_ids', DataType.INT64, inputDims);
  b.input('attention_mask', DataType.INT64, ['batch_size', 'past_sequence_length + sequence_length']);
  b.input('position_ids', DataType.INT64, inputDims);
  const hd = cfg.width / cfg.heads;
  for (let i = 0; i < cfg.layers; i++) {
    for (const kv of ['key', 'value']) b.input(`past_key_values.${i}.${kv}`, DataType.FLOAT, ['batch_size', cfg.heads, 'past_sequence_length', hd]);
  }
  for (const t of initializers) b.addTensor(t);
  gpt2Body(b, cfg, `onnx::MatMul_${cfg.layers * 250 + 5}`, true);
  const model = b.build({ irVersion: 8, producerName: 'pytorch', producerVersion: '1.13.0' });
  fs.writeFileSync(path.join(dir, 'model.with-past.onnx'), encodeModel(model));
}

/** The graph body, in the exporter's node order; `withPast` adds the key/value cache. */
function gpt2Body(b: GraphBuilder, cfg: Required<Gpt2Config>, lmHeadName: string, withPast: boolean): void {
  const { layers, width: w, heads, vocab, positions } = cfg;
  const hd = w / heads;
  let anonCounter = 30;
  /** An unscoped `Constant_N` feeding `consumer` (the exporter's `onnx::Unsqueeze_90` values). */
  const anon = (t: TensorProto, consumer: string): string => {
    const k = anonCounter;
    anonCounter += 2;
    return b.constant(t, { name: `Constant_${k}`, outputs: [`onnx::${consumer}_${k * 3}`] });
  };
  const one0 = (): TensorProto => int64Tensor([0]);
  const node = (scope: string, op: string, inputs: string[], attrs: Parameters<GraphBuilder['op']>[2] = {}): string =>
    b.op(op, inputs, attrs, { name: `${scope}/${op}` });
  const konst = (scope: string, t: TensorProto): string => b.constant(t, { name: `${scope}/Constant` });
  const unsq = (scope: string, x: string): string => node(scope, 'Unsqueeze', [x, anon(one0(), 'Unsqueeze')]);

  /** `x.size(-1)` as a 1-element shape piece: Shape → Slice[-1:] → Squeeze → (later) Unsqueeze. */
  const lastDim = (scope: string, x: string): string => {
    const shp = node(scope, 'Shape', [x]);
    const axes = konst(scope, one0());
    const starts = konst(scope, int64Tensor([-1]));
    const ends = konst(scope, int64Tensor([INT64_MAX]));
    const sl = node(scope, 'Slice', [shp, starts, ends, axes]);
    return node(scope, 'Squeeze', [sl, konst(scope, one0())]);
  };

  /** `x.size(k)` as a scalar: Shape → Gather(k). */
  const sizeAt = (scope: string, x: string, k: number): string => {
    const shp = node(scope, 'Shape', [x]);
    return b.op('Gather', [shp, konst(scope, scalarInt64(k))], { axis: attr.int(0) }, { name: `${scope}/Gather` });
  };

  /**
   * HF Conv1D: `x.view(-1, x.size(-1)) @ W + b` as Gemm, reshaped to `x.size()[:-1] + (nf,)`.
   * `sizes` = scalars [batch, seq] to reuse (c_attn reuses its parent's); else computed here.
   */
  const conv1d = (scope: string, x: string, nf: number, param: string, sizes?: [string, string]): string => {
    const [bs, sq] = sizes ?? [sizeAt(scope, x, 0), sizeAt(scope, x, 1)];
    const last = lastDim(scope, x);
    const neg1 = konst(scope, int64Tensor([-1]));
    const cat = b.op('Concat', [neg1, unsq(scope, last)], { axis: attr.int(0) }, { name: `${scope}/Concat` });
    const rs = b.op('Reshape', [x, cat], { allowzero: attr.int(0) }, { name: `${scope}/Reshape` });
    const gemm = b.op('Gemm', [rs, `${param}.weight`, `${param}.bias`], { alpha: attr.float(1), beta: attr.float(1) }, { name: `${scope}/Gemm` });
    const u1 = unsq(scope, bs);
    const u2 = unsq(scope, sq);
    const cat1 = b.op('Concat', [u1, u2, konst(scope, int64Tensor([nf]))], { axis: attr.int(0) }, { name: `${scope}/Concat` });
    return b.op('Reshape', [gemm, cat1], { allowzero: attr.int(0) }, { name: `${scope}/Reshape` });
  };

  const layerNorm = (scope: string, x: string, param: string): string =>
    b.op('LayerNormalization', [x, `${param}.weight`, `${param}.bias`], { axis: attr.int(-1), epsilon: attr.float(cfg.layerNormEpsilon) }, { name: `${scope}/LayerNormalization` });

  // embeddings and the extended attention mask
  const T = '/transformer';
  const tok = node(`${T}/wte`, 'Gather', ['transformer.wte.weight', 'input_ids']);
  const pos = node(`${T}/wpe`, 'Gather', ['transformer.wpe.weight', 'position_ids']);
  let h = node(T, 'Add', [tok, pos]);
  const m1 = node(T, 'Unsqueeze', ['attention_mask', konst(T, int64Tensor([1]))]);
  const m2 = node(T, 'Unsqueeze', [m1, konst(T, int64Tensor([2]))]);
  const mf = b.op('Cast', [m2], { to: attr.int(DataType.FLOAT) }, { name: `${T}/Cast` });
  const inv = node(T, 'Sub', [konst(T, scalarFloat(1)), mf]);
  const maskAdd = node(T, 'Mul', [inv, konst(T, scalarFloat(FLOAT_MIN))]);

  let causal: string | undefined;
  let whereMin: string | undefined;
  for (let i = 0; i < layers; i++) {
    const H = `${T}/h.${i}`;
    const P = `transformer.h.${i}`;
    const A = `${H}/attn`;
    const ln1 = layerNorm(`${H}/ln_1`, h, `${P}.ln_1`);
    const bs = sizeAt(A, ln1, 0);
    const sq = sizeAt(A, ln1, 1);
    const wd = sizeAt(A, ln1, 2);
    const qkv = conv1d(`${A}/c_attn`, ln1, 3 * w, `${P}.attn.c_attn`, [bs, sq]);
    const [q, k, v] = b.node('Split', [qkv, konst(A, int64Tensor([w, w, w]))], { axis: attr.int(2) }, { name: `${A}/Split`, outputs: 3 }) as [string, string, string];
    const headShape = (): string => {
      const u0 = unsq(A, bs);
      const u1 = unsq(A, sq);
      return b.op('Concat', [u0, u1, konst(A, int64Tensor([heads])), konst(A, int64Tensor([hd]))], { axis: attr.int(0) }, { name: `${A}/Concat` });
    };
    const sQ = headShape(), sK = headShape(), sV = headShape();
    const reshape = (x: string, s: string): string => b.op('Reshape', [x, s], { allowzero: attr.int(0) }, { name: `${A}/Reshape` });
    const transpose = (x: string, perm: number[]): string => b.op('Transpose', [x], { perm: attr.ints(perm) }, { name: `${A}/Transpose` });
    const qh = transpose(reshape(q, sQ), [0, 2, 1, 3]);
    const kr = reshape(k, sK);
    let vh = transpose(reshape(v, sV), [0, 2, 1, 3]);
    let kt: string;
    let keyLen: string | undefined;
    if (withPast) {
      // present = cat(past, new) along the sequence axis (keys not transposed), as transformers' legacy cache.
      const kh = transpose(kr, [0, 2, 1, 3]);
      const pk = b.op('Concat', [`past_key_values.${i}.key`, kh], { axis: attr.int(2) }, { name: `${A}/Concat_3`, outputs: [`present.${i}.key`] });
      vh = b.op('Concat', [`past_key_values.${i}.value`, vh], { axis: attr.int(2) }, { name: `${A}/Concat_4`, outputs: [`present.${i}.value`] });
      kt = transpose(pk, [0, 1, 3, 2]);
      keyLen = sizeAt(A, pk, 2);
    } else {
      kt = transpose(kr, [0, 2, 3, 1]);
    }
    const scores = node(A, 'MatMul', [qh, kt]);
    // scale: / v.size(-1) ** 0.5, computed from shapes like the exporter
    const dh = lastDim(A, vh);
    const dhf = b.op('Cast', [dh], { to: attr.int(DataType.FLOAT) }, { name: `${A}/Cast` });
    const sqrt = node(A, 'Pow', [dhf, konst(A, scalarFloat(0.5))]);
    const zero = b.op('ConstantOfShape', [konst(A, int64Tensor([], [0]))], { value: attr.tensor(floatTensor([0])) }, { name: `${A}/ConstantOfShape` });
    const scale = node(A, 'Add', [zero, sqrt]);
    const scaled = node(A, 'Div', [scores, scale]);
    // causal mask: bias[:, :, :T, :T] (HF: key_length - query_length = 0 without cache)
    if (!causal) {
      const tri = new Uint8Array(positions * positions);
      for (let r = 0; r < positions; r++) for (let c = 0; c <= r; c++) tri[r * positions + c] = 1;
      causal = anon(tensor(tri, [1, 1, positions, positions], { dataType: DataType.BOOL }), 'Slice');
    }
    let s1: string;
    let s2: string;
    if (keyLen) {
      // bias[:, :, kl - T : kl, :kl]: queries sit at absolute positions past .. past + T - 1.
      const kl = node(A, 'Unsqueeze', [keyLen, konst(A, one0())]);
      const start = node(A, 'Sub', [kl, node(A, 'Unsqueeze', [sq, konst(A, one0())])]);
      s1 = node(A, 'Slice', [causal, start, kl, konst(A, int64Tensor([2])), konst(A, int64Tensor([1]))]);
      s2 = node(A, 'Slice', [s1, konst(A, one0()), kl, konst(A, int64Tensor([3])), konst(A, int64Tensor([1]))]);
    } else {
      s1 = node(A, 'Slice', [causal, konst(A, one0()), node(A, 'Unsqueeze', [sq, konst(A, one0())]), konst(A, int64Tensor([2])), konst(A, int64Tensor([1]))]);
      s2 = node(A, 'Slice', [s1, konst(A, one0()), node(A, 'Unsqueeze', [sq, konst(A, one0())]), konst(A, int64Tensor([3])), konst(A, int64Tensor([1]))]);
    }
    whereMin ??= anon(scalarFloat(FLOAT_MIN), 'Where');
    const masked = node(A, 'Where', [s2, scaled, whereMin]);
    const withMask = node(A, 'Add', [masked, maskAdd]);
    const probs = b.op('Softmax', [withMask], { axis: attr.int(-1) }, { name: `${A}/Softmax` });
    const ctx = node(A, 'MatMul', [probs, vh]);
    const merged = transpose(ctx, [0, 2, 1, 3]);
    const mShape = b.op('Concat', [unsq(A, bs), unsq(A, sq), unsq(A, wd)], { axis: attr.int(0) }, { name: `${A}/Concat` });
    const attnIn = reshape(merged, mShape);
    const attnOut = conv1d(`${A}/c_proj`, attnIn, w, `${P}.attn.c_proj`);
    const res1 = node(H, 'Add', [h, attnOut]);
    // MLP
    const ln2 = layerNorm(`${H}/ln_2`, res1, `${P}.ln_2`);
    const M = `${H}/mlp`;
    const fc = conv1d(`${M}/c_fc`, ln2, 4 * w, `${P}.mlp.c_fc`);
    const act = `${M}/act`;
    const half = node(act, 'Mul', [fc, konst(act, scalarFloat(0.5))]);
    const cube = node(act, 'Pow', [fc, konst(act, scalarFloat(3))]);
    const cubeS = node(act, 'Mul', [cube, konst(act, scalarFloat(0.044715))]);
    const inner = node(act, 'Add', [fc, cubeS]);
    const innerS = node(act, 'Mul', [inner, konst(act, scalarFloat(Math.sqrt(2 / Math.PI)))]);
    const th = node(act, 'Tanh', [innerS]);
    const th1 = node(act, 'Add', [th, konst(act, scalarFloat(1))]);
    const gelu = node(act, 'Mul', [half, th1]);
    const mlpOut = conv1d(`${M}/c_proj`, gelu, w, `${P}.mlp.c_proj`);
    h = node(H, 'Add', [res1, mlpOut]);
  }
  const lnf = layerNorm(`${T}/ln_f`, h, 'transformer.ln_f');
  b.op('MatMul', [lnf, lmHeadName], {}, { name: '/lm_head/MatMul', outputs: ['logits'] });
  b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', vocab]);
  if (withPast) {
    for (let i = 0; i < layers; i++) {
      for (const kv of ['key', 'value']) b.output(`present.${i}.${kv}`, DataType.FLOAT, ['batch_size', heads, 'past_sequence_length + sequence_length', hd]);
    }
  }
}
