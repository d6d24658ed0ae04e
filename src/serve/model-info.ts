/**
 * What a client needs of a served model to lower scripts itself (`GET /models/NAME`): the
 * module tree (modules, boundary types, the graph's node list for operation paths
 * `PATH.op("TYPE",N)`), `config.json`, the tokenizer files, and the model's position and
 * vocabulary bounds. Never a path or a weight. {@link modelInfo} writes it on the server;
 * {@link clientModel} rebuilds the tree and tokenizer on the client.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import type { ModelContext } from '../compile.js';
import { locate } from '../model/load.js';
import { ModuleMap } from '../model/modules.js';
import { makeTokenizer, readJson, type TextTokenizer } from '../model/tokenizer.js';
import type { BoundaryValue, ModuleInfo, ModuleTree, ParamInfo, TensorSig } from '../model/types.js';
import type { NodeProto } from '../onnx/proto.js';

/** One module on the wire (params by state-dict name). */
export interface ModuleInfoJSON extends Omit<ModuleInfo, 'params'> {
  params: string[];
}

/** The module tree on the wire. */
export interface TreeJSON {
  modules: ModuleInfoJSON[];
  /** Every graph node: op type, inputs, outputs (names only). */
  nodes: [string, string[], string[]][];
  /** Symbolic types of values. */
  sigs: [string, TensorSig][];
  graphInputs: BoundaryValue[];
  graphOutputs: BoundaryValue[];
  params: ParamInfo[];
}

/** `GET /models/NAME`. */
export interface ModelInfoJSON {
  name: string;
  tree: TreeJSON;
  config: Record<string, unknown> | null;
  tokenizer: { json: Record<string, unknown>; config: Record<string, unknown> } | null;
  maxPositions: number | null;
  vocabRows: number | null;
}

/** A JSON value with every string that holds an absolute path (`/...`, `C:\\...`) replaced by `<path>`. */
function withoutPaths(v: unknown): unknown {
  if (typeof v === 'string') return /^(\/|[A-Za-z]:[\\/]|~\/)/.test(v) || /(^|[\s'"(])\/(?:[\w.@+-]+\/)+/.test(v) ? '<path>' : v;
  if (Array.isArray(v)) return v.map(withoutPaths);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, withoutPaths(x)]));
  return v;
}

/** The info of an opened model (server side). Strings of `config.json` that are paths (`_name_or_path`) are not sent. */
export function modelInfo(name: string, mc: ModelContext): ModelInfoJSON {
  const tree = mc.tree;
  const map = tree.modules as ModuleMap;
  const nodes = (mc.loaded.proto.graph?.node ?? []).map((n): [string, string[], string[]] => [n.op_type ?? '', [...(n.input ?? [])], [...(n.output ?? [])]]);
  let tokenizer: ModelInfoJSON['tokenizer'] = null;
  if (mc.loaded.tokenizer) {
    const { metaDir } = locate(mc.loaded.source);
    const cfg = path.join(metaDir, 'tokenizer_config.json');
    tokenizer = { json: readJson(path.join(metaDir, 'tokenizer.json')), config: fs.existsSync(cfg) ? readJson(cfg) : {} };
  }
  return {
    name,
    tree: {
      modules: [...tree.modules.values()].map((m) => ({ ...m, params: m.params.map((p) => p.name) })),
      nodes,
      sigs: map.sigs instanceof Map ? [...map.sigs] : [],
      graphInputs: tree.graphInputs,
      graphOutputs: tree.graphOutputs,
      params: [...tree.params.values()],
    },
    config: mc.loaded.config ? (withoutPaths(mc.loaded.config) as Record<string, unknown>) : null,
    tokenizer,
    maxPositions: mc.maxPositions ?? null,
    vocabRows: mc.vocabRows ?? null,
  };
}

/** A served model as a client sees it. */
export interface ClientModel {
  name: string;
  tree: ModuleTree;
  config?: Record<string, unknown>;
  tokenizer?: TextTokenizer;
}

/** Rebuilds the tree and tokenizer of a model from its info (client side). */
export function clientModel(info: ModelInfoJSON): ClientModel {
  const t = info.tree;
  const graphNodes: NodeProto[] = t.nodes.map(([op, input, output]) => ({ op_type: op, input, output }));
  const modules = new ModuleMap(graphNodes);
  for (const [k, v] of t.sigs) modules.sigs.set(k, v);
  const params = new Map(t.params.map((p) => [p.name, p]));
  for (const m of t.modules) modules.set(m.path, { ...m, params: m.params.map((n) => params.get(n)!).filter(Boolean) });
  const tree: ModuleTree = { modules, graphInputs: t.graphInputs, graphOutputs: t.graphOutputs, params, ops: (p) => modules.ops(p) };
  return {
    name: info.name,
    tree,
    ...(info.config ? { config: info.config } : {}),
    ...(info.tokenizer ? { tokenizer: makeTokenizer(info.tokenizer.json, info.tokenizer.config, `${info.name}/tokenizer.json`) } : {}),
  };
}
