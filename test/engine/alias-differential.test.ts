/**
 * Differential property test of sets and reads on every module boundary (issue 8, items 1
 * and 2): both gpt2-facts exports and the Llama-like synthetic model, every module's first
 * output and first input (float), patterns
 *   read-before-set, set-then-read (softmax of the read), set from the module's own value,
 *   slice sets (a steering add at the last position and a constant at positions 1:3),
 *   every name of one value (a module's output that is another's input, a block's input that
 *   is the previous block's output, a graph output that is a module's output) set in its own
 *   invoke, all of them in data order in one invoke, and in reverse order in another,
 * on the fast path (default: instrumented model with ports where the trace allows, else the
 * compiler) and the compiled path (`fast: false`). Every row is one experiment; rows are
 * independent through the model, so one trace carries many.
 *
 * Expected values come from test/helpers/cut-oracle.ts: plain onnxruntime on the unmodified
 * model with the value exposed, host arithmetic, and a cut copy of the model whose consumers
 * of the value read what PyTorch's hooks would give them. Nothing of the compiler is used.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { LanguageModel, encodeModel, decodeModel, type ModelRef, type TensorProxy } from '../../src/index.js';
import type { FastExecutor } from '../../src/fast/index.js';
import { portKey } from '../../src/fast/index.js';
import type { ModelProto } from '../../src/onnx/proto.js';
import { llamaLike, V as LLAMA_V } from '../fixtures/modules/synthetic.js';
import { EXPORTS, mod } from '../helpers/reference.js';
import { CutOracle, select, softmaxLast, type Item, type RowState, type ViewRef } from '../helpers/cut-oracle.js';

type ValueSpec = { const: number } | { mul: number; add: number };
type Step =
  | { op: 'read'; view: ViewRef; items: Item[] | null; softmax?: boolean }
  | { op: 'set'; view: ViewRef; items: Item[] | null; value: ValueSpec }
  | { op: 'logits' };

/** One experiment: one invoke (batch row) on one model value. */
interface Case {
  pattern: string;
  value: string;
  steps: Step[];
  /** Every name the case touches has a port (the fast path can run it if the pattern allows). */
  ported: boolean;
}

const FULL: Item = [undefined, undefined];
const T = 6;

/** Deterministic token ids (fixed seed). */
function rng(seed: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    return s / 2147483648;
  };
}

function spec(it: Item): number | string {
  return typeof it === 'number' ? it : `${it[0] ?? ''}:${it[1] ?? ''}`;
}

function boundary(m: ModelRef, v: ViewRef): TensorProxy {
  const r = v.path ? mod(m, v.path) : m;
  if (v.index === 0 && v.path !== '') return v.port === 'output' ? r.output : r.input;
  return (v.port === 'output' ? r.outputs : r.inputs)[v.index]!;
}

const at = (x: TensorProxy, items: Item[] | null): TensorProxy => (items ? x.at(...items.map(spec)) : x);

/** Plays a case's steps through the API inside its invoke. */
function play(m: ModelRef, c: Case, tag: string): void {
  c.steps.forEach((s, j) => {
    const name = `${tag}.${j}`;
    if (s.op === 'logits') { m.output.save(name); return; }
    if (s.op === 'read') {
      const r = at(boundary(m, s.view), s.items);
      (s.softmax ? r.softmax(-1) : r).save(name);
      return;
    }
    let value: number | TensorProxy;
    if ('const' in s.value) value = s.value.const;
    else {
      value = at(boundary(m, s.view), s.items);
      if (s.value.mul !== 1) value = value.mul(s.value.mul);
      if (s.value.add !== 0) value = value.add(s.value.add);
    }
    at(boundary(m, s.view), s.items).set(value);
  });
}

/** What the oracle expects for each read of a case (by step index); the state then holds the case's sets. */
function expectedReads(c: Case, st: RowState): Map<number, ArrayLike<number>> {
  const out = new Map<number, ArrayLike<number>>();
  const shape = st.clean.shape;
  c.steps.forEach((s, j) => {
    if (s.op === 'logits') return;
    const cur = st.read(s.view);
    const sel = select(shape, s.items);
    const picked = sel.idx.map((i) => cur[i]!);
    if (s.op === 'read') {
      out.set(j, s.softmax ? softmaxLast(picked, shape[shape.length - 1]!) : picked);
      return;
    }
    if ('const' in s.value) st.set(s.view, s.items, s.value.const);
    else {
      const { mul, add } = s.value;
      st.set(s.view, s.items, Float32Array.from(picked, (x) => Math.fround(Math.fround(x * mul) + add)));
    }
  });
  return out;
}

interface Subject {
  name: string;
  model: LanguageModel;
  oracle: CutOracle;
  vocab: number;
  tmp?: string;
}

/** Tallies for the report: distinct model · module · pattern · path combinations, and which ran on the fast path. */
const tally = { combos: new Set<string>(), fastCombos: new Set<string>(), traces: 0, fastTraces: 0, rows: 0 };
const perModel: string[] = [];

async function openSubject(name: string): Promise<Subject> {
  if (name === 'llama') {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-alias-'));
    const file = path.join(tmp, 'llama.onnx');
    const proto = llamaLike();
    fs.writeFileSync(file, encodeModel(proto));
    const model = await LanguageModel.load(file, { cacheDir: path.join(tmp, 'cache') });
    return { name, model, oracle: new CutOracle(decodeModel(fs.readFileSync(file)), model.modules), vocab: LLAMA_V, tmp };
  }
  const exp = EXPORTS.find((e) => e.name === name)!;
  const file = exp.path.endsWith('.onnx') ? exp.path : path.join(exp.path, 'onnx', 'model.onnx');
  const model = await LanguageModel.load(exp.path);
  const proto: ModelProto = decodeModel(fs.readFileSync(file));
  return { name, model, oracle: new CutOracle(proto, model.modules), vocab: 874 };
}

/**
 * Every module's first output and first input that is a float tensor with the batch first
 * (`shared`: with a leading 1 instead, one tensor for every row, e.g. dynamo's position
 * embeddings `[1, sequence, 128]`: a set in one invoke changes that row only).
 */
function subjects(sub: Subject): { view: ViewRef; value: string; rank: number; shared: boolean }[] {
  const out: { view: ViewRef; value: string; rank: number; shared: boolean }[] = [];
  for (const m of sub.model.modules.modules.values()) {
    for (const port of ['output', 'input'] as const) {
      const b = (port === 'output' ? m.outputs : m.inputs)[0];
      const shape = b?.sig?.shape;
      if (!b || b.sig?.dtype !== 'float32' || !shape || (shape[0] !== 'batch' && shape[0] !== 1)) continue;
      out.push({ view: { path: m.path, port, index: 0 }, value: b.name, rank: shape.length, shared: shape[0] === 1 });
    }
  }
  return out;
}

/** Every name (any index) of a value: float, batch first. */
function namesOf(sub: Subject, value: string): ViewRef[] {
  const out: ViewRef[] = [];
  for (const m of sub.model.modules.modules.values()) {
    for (const port of ['output', 'input'] as const) {
      (port === 'output' ? m.outputs : m.inputs).forEach((b, index) => {
        if (b.name === value && b.sig?.dtype === 'float32' && b.sig.shape?.[0] === 'batch') out.push({ path: m.path, port, index });
      });
    }
  }
  return out;
}

function patterns(v: ViewRef, value: string, rank: number, ported: boolean): Case[] {
  const last: Item[] = rank >= 3 ? [FULL, -1, [0, 4]] : [FULL, -1];
  return [
    { pattern: 'read-before-set', value, ported, steps: [{ op: 'read', view: v, items: rank >= 2 ? [FULL, -1] : null }, { op: 'set', view: v, items: [FULL], value: { const: 0 } }, { op: 'logits' }] },
    { pattern: 'set-then-read', value, ported, steps: [{ op: 'set', view: v, items: null, value: { const: 0.25 } }, { op: 'read', view: v, items: null, softmax: true }, { op: 'logits' }] },
    { pattern: 'own-value', value, ported: false, steps: [{ op: 'set', view: v, items: null, value: { mul: 0.5, add: 0 } }, { op: 'read', view: v, items: null }, { op: 'logits' }] },
    ...(rank >= 2 ? [{
      pattern: 'slice-sets', value, ported, steps: [
        { op: 'set', view: v, items: last, value: { mul: 1, add: 1 } },
        { op: 'set', view: v, items: [FULL, [1, 3]], value: { const: -1 } },
        { op: 'read', view: v, items: [FULL, [0, 4]] },
        { op: 'logits' },
      ],
    } satisfies Case] : []),
  ];
}

/** Cases over every name of one value: each name in its own invoke, all in data order, all in reverse order. */
function aliasCases(sub: Subject, value: string, names: ViewRef[], ported: boolean, tag: string): Case[] {
  const byChain = [...names].sort((a, b) => sub.oracle.chainTo(value, a).length - sub.oracle.chainTo(value, b).length);
  const readAll: Step[] = byChain.map((n) => ({ op: 'read', view: n, items: null }));
  return [
    ...byChain.map((n, i): Case => ({ pattern: `alias-invokes${tag}`, value, ported, steps: [{ op: 'set', view: n, items: null, value: { mul: 1, add: i + 1 } }, ...readAll, { op: 'logits' }] })),
    { pattern: `alias-data-order${tag}`, value, ported, steps: [...byChain.map((n, i): Step => ({ op: 'set', view: n, items: null, value: { mul: 1, add: (i + 1) * 0.5 } })), ...readAll, { op: 'logits' }] },
    { pattern: `alias-reverse-order${tag}`, value, ported, steps: [...[...byChain].reverse().map((n, i): Step => ({ op: 'set', view: n, items: [FULL, -1], value: { const: i + 2 } })), ...readAll, { op: 'logits' }] },
    ...(ported ? [] : [<Case>{ pattern: `alias-own-value${tag}`, value, ported, steps: [...byChain.map((n): Step => ({ op: 'set', view: n, items: null, value: { mul: 0.5, add: 0 } })), ...readAll, { op: 'logits' }] }]),
  ];
}

/** Most rows in one trace (session creation grows faster than linearly with the graph). */
const CHUNK = 40;

/** Runs `cases` (one invoke each, {@link CHUNK} per trace) on a path; checks every save against the oracle. */
async function check(sub: Subject, all: Case[], fast: boolean, seed: number): Promise<void> {
  for (let i = 0; i < all.length; i += CHUNK) await checkTrace(sub, all.slice(i, i + CHUNK), fast, seed + i);
}

async function checkTrace(sub: Subject, cases: Case[], fast: boolean, seed: number): Promise<void> {
  if (!cases.length) return;
  const next = rng(seed);
  const ids = cases.map(() => Array.from({ length: T }, () => Math.floor(next() * sub.vocab)));
  const stats = (sub.model.mc.fast as FastExecutor | undefined)?.stats;
  const before = stats?.fastRuns ?? 0;
  const { saves } = await sub.model.trace((tr) => {
    cases.forEach((c, r) => tr.invoke(ids[r]!, (m) => play(m, c, `r${r}`)));
  }, { fast, tiered: false });
  const ranFast = fast && (stats?.fastRuns ?? 0) > before;
  const clean = await sub.oracle.clean(ids);
  const states = cases.map((c, r) => sub.oracle.state(c.value, CutOracle.row(clean.get(c.value)!, r)));
  const wants = cases.map((c, r) => expectedReads(c, states[r]!));
  const logits = await sub.oracle.downstream(ids, states);
  const problems: string[] = [];
  for (let r = 0; r < cases.length; r++) {
    const c = cases[r]!;
    const want = wants[r]!;
    c.steps.forEach((s, j) => { if (s.op === 'logits') want.set(j, logits[r]!.data); });
    for (const [j, w] of want) {
      const got = saves[`r${r}.${j}`];
      if (!got) { problems.push(`row ${r} ${c.pattern} ${c.value}: save ${j} missing`); continue; }
      const g = got.data as Float32Array;
      let worst = g.length === w.length ? 0 : Infinity;
      for (let i = 0; i < w.length && worst < Infinity; i++) worst = Math.max(worst, Math.abs(g[i]! - w[i]!) || (Number.isNaN(g[i]) ? Infinity : 0));
      if (!(worst <= 1e-4)) {
        const step = c.steps[j]!;
        const what = step.op === 'logits' ? 'logits' : `${step.op} ${step.view.path || '(root)'}.${step.view.port}[${step.view.index}]`;
        problems.push(`${sub.name} ${fast ? (ranFast ? 'fast' : 'fast→compiled') : 'compiled'} row ${r} ${c.pattern} on ${c.value}: ${what} off by ${worst}`);
      }
    }
  }
  tally.traces++;
  if (ranFast) tally.fastTraces++;
  tally.rows += cases.length;
  for (const c of cases) {
    for (const s of c.steps) {
      if (s.op === 'logits') continue;
      const k = `${sub.name}|${s.view.path}|${c.pattern.replace(' (ports)', '')}|${ranFast ? 'fast' : 'compiled'}`;
      tally.combos.add(k);
      if (ranFast) tally.fastCombos.add(k);
    }
  }
  expect(problems.slice(0, 20), `${problems.length} wrong values`).toEqual([]);
}

const SUBJECTS = ['llama', ...EXPORTS.map((e) => e.name)];

describe.each(SUBJECTS)('sets and reads on every boundary of %s agree with an independent evaluation', (name) => {
  let sub: Subject;
  let single: Case[] = [];
  let multi: { ported: Case[]; other: Case[] } = { ported: [], other: [] };
  let alias: { ported: Case[]; other: Case[] } = { ported: [], other: [] };
  beforeAll(async () => {
    sub = await openSubject(name);
    // The oracle's node indices are the module tree's.
    expect(sub.oracle.proto.graph!.node!.map((n) => n.name)).toEqual(sub.model.proto.graph!.node!.map((n) => n.name));
    const fastEx = sub.model.mc.fast as FastExecutor;
    const isPorted = (v: ViewRef): boolean => v.index === 0 && fastEx.ported.byKey.has(portKey(v.path, v.port));
    const everything = subjects(sub);
    const subs = everything;
    // A per-invoke read or set of a value every row shares is left to the compiler (the fast path refuses it).
    const all = subs.flatMap((s) => patterns(s.view, s.value, s.rank, isPorted(s.view) && !s.shared));
    multi = { ported: all.filter((c) => c.ported), other: all.filter((c) => !c.ported) };
    const values = [...new Set(subs.map((s) => s.value))];
    const aliasAll: Case[] = [];
    for (const v of values) {
      const names = namesOf(sub, v);
      if (names.length >= 2) aliasAll.push(...aliasCases(sub, v, names, false, ''));
      const ported = names.filter(isPorted);
      if (ported.length >= 2) aliasAll.push(...aliasCases(sub, v, ported, true, ' (ports)'));
    }
    alias = { ported: aliasAll.filter((c) => c.ported), other: aliasAll.filter((c) => !c.ported) };
    sub.oracle.prepare(everything.map((s) => s.value));
    // Single-invoke traces (whole-batch sets): the graph outputs' modules (item 1's cases) and values shared by every row.
    const outputs = new Set(sub.model.modules.graphOutputs.map((o) => o.name));
    single = everything.filter((s) => s.shared || outputs.has(s.value)).flatMap((s) => patterns(s.view, s.value, s.rank, isPorted(s.view)));
    perModel.push(`${name}: ${everything.length} boundaries of ${new Set(everything.map((s) => s.view.path)).size}/${sub.model.modules.modules.size} modules, ${values.length} values, ${aliasAll.length} alias cases, ${single.length} single-invoke cases`);
  }, 120_000);
  afterAll(async () => {
    await sub?.model.dispose();
    if (sub?.tmp) fs.rmSync(sub.tmp, { recursive: true, force: true });
    if (name === SUBJECTS[SUBJECTS.length - 1]) {
      console.log(`alias differential: ${perModel.join('; ')}\n  ${tally.combos.size} model · module · pattern · path combinations in ${tally.rows} rows of ${tally.traces} traces; ${tally.fastCombos.size} of them on the fast path (${tally.fastTraces} traces)`);
    }
  });

  for (const fast of [true, false]) {
    const path = fast ? 'fast path' : 'compiled path';
    // On the fast path only the traces whose every name has a port: the others fall back to the compiled path, checked below.
    it(`every module's output and input, four patterns, one invoke each (${path})`, async () => {
      await check(sub, multi.ported, fast, 1);
      if (!fast) await check(sub, multi.other, fast, 2);
    }, 300_000);
    it(`every name of a shared value, set in different invokes and in one (${path})`, async () => {
      await check(sub, alias.ported, fast, 3);
      if (!fast) await check(sub, alias.other, fast, 4);
    }, 300_000);
    it(`modules whose output is a graph output, one invoke per trace (${path})`, async () => {
      for (const [i, c] of single.entries()) await check(sub, [c], fast, 10 + i);
    }, 300_000);
  }

  it('port-only traces that the fast path can run do run on it', () => {
    expect([...tally.fastCombos].filter((k) => k.startsWith(`${name}|`)).length).toBeGreaterThan(0);
  });
});
