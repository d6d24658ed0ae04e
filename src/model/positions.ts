/**
 * The longest sequence a model accepts (its number of learned positions), so that a prompt
 * that is too long is refused with a located error before onnxruntime fails inside a
 * `Gather` ("indices element out of data bounds, idx=64").
 *
 * Sources: `config.json` (`n_positions`, `max_position_embeddings`, `n_ctx`) and the graph
 * (the smaller when both tell): a rank-2 initializer read by a `Gather` whose indices come from the
 * position-id input (`position_ids`), or from a `Range` (exports that compute positions
 * inside the graph), through index arithmetic only. Models without either (rotary
 * embeddings and no config) have no known limit.
 * @module
 */
import type { ModelProto } from '../onnx/proto.js';

/** Ops through which a value still carries position indices (shape and index arithmetic). */
const PASS_THROUGH = new Set([
  'Cast', 'Identity', 'Unsqueeze', 'Squeeze', 'Reshape', 'Flatten', 'Expand', 'Add', 'Sub', 'Slice',
  'CumSum', 'Mul', 'Where', 'Clip', 'Max', 'Min', 'Concat', 'Tile',
]);

/** How far from its source a position index may travel before it reaches the table. */
const MAX_HOPS = 12;

/**
 * The model's number of positions, or undefined when neither the config nor the graph tells.
 * @param config the model folder's parsed `config.json`, when there is one
 */
export function maxPositions(model: ModelProto, config?: Record<string, unknown>): number | undefined {
  const table = positionTableSize(model);
  for (const key of ['n_positions', 'max_position_embeddings', 'n_ctx']) {
    const v = config?.[key];
    // A config that promises more positions than the graph's table holds is wrong: the table wins.
    if (typeof v === 'number' && Number.isInteger(v) && v > 0) return table === undefined ? v : Math.min(v, table);
  }
  return table;
}

/** Rows of the position-embedding table found in the graph (see the module comment). */
export function positionTableSize(model: ModelProto): number | undefined {
  const g = model.graph;
  if (!g) return undefined;
  const inits = new Set((g.initializer ?? []).map((t) => t.name ?? ''));
  const sources = (g.input ?? []).filter((i) => i.name && !inits.has(i.name) && /position/i.test(i.name)).map((i) => i.name!);
  if (sources.length === 0) for (const n of g.node ?? []) if (n.op_type === 'Range' && n.output?.[0]) sources.push(n.output[0]);
  return tableRows(model, sources);
}

/**
 * Rows of the token-embedding table (the largest token id + 1 the graph can look up): a
 * rank-2 initializer read by a `Gather` whose indices come from the `input_ids` input.
 * Undefined when the graph has no such input or table.
 */
export function vocabTableSize(model: ModelProto): number | undefined {
  const ids = (model.graph?.input ?? []).find((i) => i.name === 'input_ids');
  return ids ? tableRows(model, ['input_ids']) : undefined;
}

/** Smallest row count of the rank-2 initializers that `Gather` indexes with values derived from `sources`. */
function tableRows(model: ModelProto, sources: string[]): number | undefined {
  const g = model.graph!;
  const inits = new Map((g.initializer ?? []).map((t) => [t.name ?? '', t]));
  const consumers = new Map<string, number[]>();
  const nodes = g.node ?? [];
  nodes.forEach((n, i) => {
    for (const x of n.input ?? []) if (x) (consumers.get(x) ?? consumers.set(x, []).get(x)!).push(i);
  });
  const seen = new Set<string>(sources);
  let frontier = [...sources];
  let best: number | undefined;
  for (let hop = 0; hop < MAX_HOPS && frontier.length; hop++) {
    const next: string[] = [];
    for (const v of frontier) {
      for (const i of consumers.get(v) ?? []) {
        const n = nodes[i]!;
        const domain = n.domain ?? '';
        if (domain !== '' && domain !== 'ai.onnx') continue;
        if (n.op_type === 'Gather' && n.input?.[1] === v) {
          const table = inits.get(n.input[0] ?? '');
          const dims = (table?.dims ?? []).map(Number);
          if (dims.length === 2 && dims[0]! > 0) best = best === undefined ? dims[0] : Math.min(best, dims[0]!);
          continue;
        }
        if (!PASS_THROUGH.has(n.op_type ?? '')) continue;
        for (const o of n.output ?? []) if (o && !seen.has(o)) {
          seen.add(o);
          next.push(o);
        }
      }
    }
    frontier = next;
  }
  return best;
}
