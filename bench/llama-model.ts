/**
 * A Llama-shaped decoder (Hugging Face `LlamaForCausalLM`) as ONNX, for the benchmark at real
 * scale (`npm run bench -- --scale`): by default TinyLlama-1.1B's shape — 22 layers, width
 * 2048, 32 query heads sharing 4 key/value heads (grouped-query attention), SwiGLU MLP of
 * 5632, RMSNorm, rotary positions, vocabulary 32000, untied `lm_head` — 1,100,048,384
 * parameters, 4.4 GB of float32 weights.
 *
 * The graph follows what PyTorch's TorchScript exporter emits for such a model (scope-path
 * node names `/model/layers.3/self_attn/q_proj/MatMul`, bias-free linears as `MatMul` by a
 * transposed weight stored as `onnx::MatMul_N`, RMSNorm as Pow/ReduceMean/Add/Sqrt/Div/Mul,
 * SiLU as Sigmoid·x), inputs `input_ids`, `attention_mask`, `position_ids`, output
 * `logits`. Rotary tables are `Gather`ed by `position_ids` (`/model/rotary_emb`); the
 * additive mask is built once from `position_ids` (causal: key position ≤ query position) and
 * `attention_mask` (padding), so the same body serves the with-past graph,
 * `model.with-past.onnx` (inputs `past_key_values.{i}.key|value` `[batch, kv_heads, past, head_dim]`,
 * outputs `present.{i}.key|value`, keys cached after rotation, before the head repeat, as
 * transformers' cache does), which shares the weights file.
 *
 * Weights: seeded N(0, 0.02) for every linear and embedding, RMSNorm weights 1 (HF's init),
 * from the same per-tensor PRNG as bench/gpt2-model.ts (sfc32 seeded from seed and tensor
 * name, Box–Muller), generated and written one 4 MiB chunk at a time into one external file
 * `model.onnx.data` (tensors at 4096-byte offsets): no tensor is ever held whole. The folder
 * is built under a temporary name, `manifest.json` written last, then renamed; a folder whose
 * manifest matches the config and seed is reused.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { encodeModel } from '../src/onnx/serde.js';
import {
  DataType, ExternalDataWriter, GraphBuilder, attr, externalTensor, int64Tensor, littleEndianBytes,
  scalarFloat, type ExternalRef,
} from '../src/onnx/graph-builder.js';
import type { TensorProto } from '../src/onnx/proto.js';
import { prngChunks } from './gpt2-model.js';

/** Llama hyper-parameters (HF config names in comments). */
export interface LlamaConfig {
  /** `num_hidden_layers`. */
  layers: number;
  /** `hidden_size`. */
  width: number;
  /** `num_attention_heads`. */
  heads: number;
  /** `num_key_value_heads` (divides `heads`). */
  kvHeads: number;
  /** `intermediate_size`. */
  intermediate: number;
  /** `vocab_size`. */
  vocab: number;
  /** `max_position_embeddings`. */
  positions: number;
  /** `rms_norm_eps` (default 1e-5). */
  rmsEps?: number;
  /** `rope_theta` (default 10000). */
  ropeTheta?: number;
}

/** TinyLlama-1.1B's shape: 1,100,048,384 parameters. */
export const LLAMA_1B: Readonly<LlamaConfig> = { layers: 22, width: 2048, heads: 32, kvHeads: 4, intermediate: 5632, vocab: 32000, positions: 2048 };

/** One weight as stored: name, stored dims, init. */
interface Param { name: string; dims: number[]; init: 'normal' | 'ones'; state: string }

/** The weights in graph order (linears stored transposed, `[in, out]`, named as the exporter names them). */
export function llamaParams(cfg: LlamaConfig): Param[] {
  const { layers, width: D, heads, kvHeads, intermediate: F, vocab: V } = cfg;
  const hd = D / heads;
  let n = 100;
  const lin = (state: string, inDim: number, outDim: number): Param => ({ name: `onnx::MatMul_${n++}`, dims: [inDim, outDim], init: 'normal', state });
  const out: Param[] = [{ name: 'model.embed_tokens.weight', dims: [V, D], init: 'normal', state: 'model.embed_tokens.weight' }];
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}.`;
    out.push(
      { name: `${p}input_layernorm.weight`, dims: [D], init: 'ones', state: `${p}input_layernorm.weight` },
      lin(`${p}self_attn.q_proj.weight`, D, heads * hd),
      lin(`${p}self_attn.k_proj.weight`, D, kvHeads * hd),
      lin(`${p}self_attn.v_proj.weight`, D, kvHeads * hd),
      lin(`${p}self_attn.o_proj.weight`, heads * hd, D),
      { name: `${p}post_attention_layernorm.weight`, dims: [D], init: 'ones', state: `${p}post_attention_layernorm.weight` },
      lin(`${p}mlp.gate_proj.weight`, D, F),
      lin(`${p}mlp.up_proj.weight`, D, F),
      lin(`${p}mlp.down_proj.weight`, F, D),
    );
  }
  out.push({ name: 'model.norm.weight', dims: [D], init: 'ones', state: 'model.norm.weight' }, lin('lm_head.weight', D, V));
  return out;
}

/** Parameter count of a config (as HF counts: every weight once; the rotary tables are buffers). */
export function llamaParamCount(cfg: LlamaConfig): number {
  return llamaParams(cfg).reduce((s, p) => s + p.dims.reduce((a, b) => a * b, 1), 0);
}

const MANIFEST_FORMAT = 1;
interface Manifest { format: number; generator: 'onnsight/bench/llama-model'; config: Required<LlamaConfig>; seed: number; params: number; weightsBytes: number; graphBytes: number }

/** What {@link buildLlamaModel} produced or found. */
export interface LlamaModel {
  dir: string;
  graphPath: string;
  withPastPath: string;
  weightsPath: string;
  params: number;
  weightsBytes: number;
  reused: boolean;
}

function full(c: LlamaConfig): Required<LlamaConfig> {
  return { ...c, rmsEps: c.rmsEps ?? 1e-5, ropeTheta: c.ropeTheta ?? 10000 };
}

function complete(dir: string, cfg: Required<LlamaConfig>, seed: number): Manifest | undefined {
  try {
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
    if (m.format !== MANIFEST_FORMAT || m.seed !== seed || JSON.stringify(m.config) !== JSON.stringify(cfg)) return undefined;
    if (fs.statSync(path.join(dir, 'model.onnx')).size !== m.graphBytes) return undefined;
    if (fs.statSync(path.join(dir, 'model.onnx.data')).size !== m.weightsBytes) return undefined;
    if (!fs.existsSync(path.join(dir, 'model.with-past.onnx'))) return undefined;
    return m;
  } catch {
    return undefined;
  }
}

function result(dir: string, m: Manifest, reused: boolean): LlamaModel {
  return {
    dir, graphPath: path.join(dir, 'model.onnx'), withPastPath: path.join(dir, 'model.with-past.onnx'), weightsPath: path.join(dir, 'model.onnx.data'),
    params: m.params, weightsBytes: m.weightsBytes, reused,
  };
}

/** Builds (or reuses) a Llama model folder `dir` (see the module comment). */
export function buildLlamaModel(opts: LlamaConfig & { seed: number; dir: string; log?: (msg: string) => void }): LlamaModel {
  const cfg = full(opts);
  if (cfg.width % cfg.heads !== 0 || cfg.heads % cfg.kvHeads !== 0 || (cfg.width / cfg.heads) % 2 !== 0) throw new Error('internal: width/heads/kvHeads do not divide');
  const dir = path.resolve(opts.dir);
  const have = complete(dir, cfg, opts.seed);
  if (have) return result(dir, have, true);
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp);
  try {
    const params = writeLlama(tmp, cfg, opts.seed, opts.log);
    const m: Manifest = {
      format: MANIFEST_FORMAT, generator: 'onnsight/bench/llama-model', config: cfg, seed: opts.seed, params,
      weightsBytes: fs.statSync(path.join(tmp, 'model.onnx.data')).size, graphBytes: fs.statSync(path.join(tmp, 'model.onnx')).size,
    };
    fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({
      architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: cfg.width, intermediate_size: cfg.intermediate,
      num_hidden_layers: cfg.layers, num_attention_heads: cfg.heads, num_key_value_heads: cfg.kvHeads, vocab_size: cfg.vocab,
      max_position_embeddings: cfg.positions, rms_norm_eps: cfg.rmsEps, rope_theta: cfg.ropeTheta, tie_word_embeddings: false,
    }, null, 2) + '\n');
    fs.writeFileSync(path.join(tmp, 'manifest.json'), JSON.stringify(m, null, 2) + '\n');
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(tmp, dir);
    return result(dir, m, false);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** The benchmark's 1.1 B model folder under `root` (default `.cache/bench`). */
export function llama1bDir(seed: number, root = path.join(process.cwd(), '.cache', 'bench')): string {
  return path.join(root, `llama-1b-${seed}`);
}

function writeLlama(dir: string, cfg: Required<LlamaConfig>, seed: number, log?: (msg: string) => void): number {
  const writer = new ExternalDataWriter(path.join(dir, 'model.onnx.data'), { align: 4096 });
  const inits: TensorProto[] = [];
  let params = 0;
  const names = new Map<string, string>(); // state-dict name → initializer
  try {
    const all = llamaParams(cfg);
    for (const [i, p] of all.entries()) {
      params += p.dims.reduce((a, b) => a * b, 1);
      const ref: ExternalRef = writer.write((function* () {
        for (const c of prngChunks(seed, { name: p.state, dims: p.dims, init: p.init }, cfg.layers)) yield littleEndianBytes(c);
      })());
      inits.push(externalTensor(p.name, DataType.FLOAT, p.dims, ref));
      names.set(p.state, p.name);
      if (log && i % 20 === 0) log(`llama weights: ${i}/${all.length} tensors, ${(writer.size / 1e9).toFixed(2)} GB`);
    }
    // Rotary tables (buffers, not parameters): cos/sin of position × inverse frequency, halves repeated.
    const hd = cfg.width / cfg.heads;
    const cos = new Float32Array(cfg.positions * hd), sin = new Float32Array(cfg.positions * hd);
    for (let pos = 0; pos < cfg.positions; pos++) {
      for (let j = 0; j < hd / 2; j++) {
        const a = pos * Math.pow(cfg.ropeTheta, -(2 * j) / hd);
        cos[pos * hd + j] = cos[pos * hd + j + hd / 2] = Math.cos(a);
        sin[pos * hd + j] = sin[pos * hd + j + hd / 2] = Math.sin(a);
      }
    }
    inits.push(externalTensor('model.rotary_emb.cos_cached', DataType.FLOAT, [cfg.positions, hd], writer.write(littleEndianBytes(cos))));
    inits.push(externalTensor('model.rotary_emb.sin_cached', DataType.FLOAT, [cfg.positions, hd], writer.write(littleEndianBytes(sin))));
  } finally {
    writer.close();
  }
  for (const withPast of [false, true]) {
    const b = new GraphBuilder({ opset: 17 });
    const model = llamaGraph(b, cfg, inits, names, withPast);
    fs.writeFileSync(path.join(dir, withPast ? 'model.with-past.onnx' : 'model.onnx'), encodeModel(model));
  }
  return params;
}

const FLOAT_MIN = -3.4028234663852886e38;

function llamaGraph(b: GraphBuilder, cfg: Required<LlamaConfig>, inits: readonly TensorProto[], w: ReadonlyMap<string, string>, withPast: boolean): ReturnType<GraphBuilder['build']> {
  const { layers, width: D, heads: H, kvHeads: KV, vocab: V } = cfg;
  const hd = D / H;
  const rep = H / KV;
  b.input('input_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  b.input('attention_mask', DataType.INT64, ['batch_size', withPast ? 'past_sequence_length + sequence_length' : 'sequence_length']);
  b.input('position_ids', DataType.INT64, ['batch_size', 'sequence_length']);
  if (withPast) for (let i = 0; i < layers; i++) for (const kv of ['key', 'value']) b.input(`past_key_values.${i}.${kv}`, DataType.FLOAT, ['batch_size', KV, 'past_sequence_length', hd]);
  for (const t of inits) b.addTensor(t);
  const op = (scope: string, type: string, ins: string[], attrs: Parameters<GraphBuilder['op']>[2] = {}, outputs?: readonly [string]): string =>
    b.op(type, ins, attrs, { name: `${scope}/${type}`, ...(outputs ? { outputs } : {}) });
  const k = (scope: string, t: TensorProto): string => b.constant(t, { name: `${scope}/Constant` });
  const ints = (scope: string, v: number[]): string => k(scope, int64Tensor(v));
  const rms = (scope: string, x: string, weight: string): string => {
    const sq = op(scope, 'Pow', [x, k(scope, scalarFloat(2))]);
    const mean = op(scope, 'ReduceMean', [sq], { axes: attr.ints([-1]), keepdims: attr.int(1) });
    const eps = op(scope, 'Add', [mean, k(scope, scalarFloat(cfg.rmsEps))]);
    const r = op(scope, 'Sqrt', [eps]);
    const inv = op(scope, 'Div', [k(scope, scalarFloat(1)), r]);
    const xn = op(scope, 'Mul', [x, inv]);
    return op(scope, 'Mul', [weight, xn]);
  };
  const M = '/model';
  const h0 = op(`${M}/embed_tokens`, 'Gather', ['model.embed_tokens.weight', 'input_ids']);
  // Rotary: [B, T, hd] → [B, 1, T, hd].
  const R = `${M}/rotary_emb`;
  const cos = op(R, 'Unsqueeze', [op(R, 'Gather', ['model.rotary_emb.cos_cached', 'position_ids']), ints(R, [1])]);
  const sin = op(R, 'Unsqueeze', [op(R, 'Gather', ['model.rotary_emb.sin_cached', 'position_ids']), ints(R, [1])]);
  // Additive mask [B, 1, T, S]: key position ≤ query position, and not padding.
  const S = op(M, 'Gather', [op(M, 'Shape', ['attention_mask']), k(M, int64Tensor([1], []))], { axis: attr.int(0) });
  const keyPos = op(M, 'Range', [k(M, int64Tensor([0], [])), S, k(M, int64Tensor([1], []))]);
  const causal = op(M, 'LessOrEqual', [keyPos, op(M, 'Unsqueeze', ['position_ids', ints(M, [2])])]);
  const keep = op(M, 'And', [causal, op(M, 'Unsqueeze', [op(M, 'Cast', ['attention_mask'], { to: attr.int(DataType.BOOL) }), ints(M, [1])])]);
  const mask = op(M, 'Where', [op(M, 'Unsqueeze', [keep, ints(M, [1])]), k(M, scalarFloat(0)), k(M, scalarFloat(FLOAT_MIN))]);
  const rope = (scope: string, x: string): string => {
    const x1 = op(scope, 'Slice', [x, ints(scope, [0]), ints(scope, [hd / 2]), ints(scope, [-1])]);
    const x2 = op(scope, 'Slice', [x, ints(scope, [hd / 2]), ints(scope, [hd]), ints(scope, [-1])]);
    const rot = op(scope, 'Concat', [op(scope, 'Neg', [x2]), x1], { axis: attr.int(-1) });
    return op(scope, 'Add', [op(scope, 'Mul', [x, cos]), op(scope, 'Mul', [rot, sin])]);
  };
  let h = h0;
  for (let i = 0; i < layers; i++) {
    const L = `${M}/layers.${i}`;
    const P = `model.layers.${i}`;
    const A = `${L}/self_attn`;
    const x = rms(`${L}/input_layernorm`, h, `${P}.input_layernorm.weight`);
    const proj = (name: string, input: string, param: string): string => op(`${A}/${name}`, 'MatMul', [input, w.get(param)!]);
    const heads = (t: string, n: number): string => op(A, 'Transpose', [op(A, 'Reshape', [t, ints(A, [0, 0, n, hd])], { allowzero: attr.int(0) })], { perm: attr.ints([0, 2, 1, 3]) });
    const q = rope(A, heads(proj('q_proj', x, `${P}.self_attn.q_proj.weight`), H));
    let kk = rope(A, heads(proj('k_proj', x, `${P}.self_attn.k_proj.weight`), KV));
    let vv = heads(proj('v_proj', x, `${P}.self_attn.v_proj.weight`), KV);
    if (withPast) {
      kk = op(A, 'Concat', [`past_key_values.${i}.key`, kk], { axis: attr.int(2) }, [`present.${i}.key`]);
      vv = op(A, 'Concat', [`past_key_values.${i}.value`, vv], { axis: attr.int(2) }, [`present.${i}.value`]);
    }
    // Grouped-query attention: each key/value head serves `rep` query heads.
    const repeat = (t: string): string => {
      if (rep === 1) return t;
      const u = op(A, 'Unsqueeze', [t, ints(A, [2])]);
      const c = op(A, 'Concat', Array<string>(rep).fill(u), { axis: attr.int(2) });
      return op(A, 'Reshape', [c, ints(A, [0, H, -1, hd])], { allowzero: attr.int(0) });
    };
    const kt = op(A, 'Transpose', [repeat(kk)], { perm: attr.ints([0, 1, 3, 2]) });
    const scores = op(A, 'Div', [op(A, 'MatMul', [q, kt]), k(A, scalarFloat(Math.sqrt(hd)))]);
    const probs = op(A, 'Softmax', [op(A, 'Add', [scores, mask])], { axis: attr.int(-1) });
    const ctx = op(A, 'Transpose', [op(A, 'MatMul', [probs, repeat(vv)])], { perm: attr.ints([0, 2, 1, 3]) });
    const merged = op(A, 'Reshape', [ctx, ints(A, [0, 0, D])], { allowzero: attr.int(0) });
    const attnOut = proj('o_proj', merged, `${P}.self_attn.o_proj.weight`);
    const r1 = op(L, 'Add', [h, attnOut]);
    const y = rms(`${L}/post_attention_layernorm`, r1, `${P}.post_attention_layernorm.weight`);
    const Mm = `${L}/mlp`;
    const gate = op(`${Mm}/gate_proj`, 'MatMul', [y, w.get(`${P}.mlp.gate_proj.weight`)!]);
    const act = op(`${Mm}/act_fn`, 'Mul', [gate, op(`${Mm}/act_fn`, 'Sigmoid', [gate])]);
    const up = op(`${Mm}/up_proj`, 'MatMul', [y, w.get(`${P}.mlp.up_proj.weight`)!]);
    const down = op(`${Mm}/down_proj`, 'MatMul', [op(Mm, 'Mul', [act, up]), w.get(`${P}.mlp.down_proj.weight`)!]);
    h = op(L, 'Add', [r1, down]);
  }
  const hn = rms(`${M}/norm`, h, 'model.norm.weight');
  b.op('MatMul', [hn, w.get('lm_head.weight')!], {}, { name: '/lm_head/MatMul', outputs: ['logits'] });
  b.output('logits', DataType.FLOAT, ['batch_size', 'sequence_length', V]);
  if (withPast) for (let i = 0; i < layers; i++) for (const kv of ['key', 'value']) b.output(`present.${i}.${kv}`, DataType.FLOAT, ['batch_size', KV, 'past_sequence_length + sequence_length', hd]);
  return b.build({ irVersion: 8, producerName: 'pytorch', producerVersion: '2.1.0' });
}
