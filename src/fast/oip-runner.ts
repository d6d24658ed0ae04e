/**
 * The fast path on an Open Inference Protocol v2 server: the planner's feeds and fetches of
 * the instrumented model and of module models go over HTTP to the models `nns
 * export-serving` writes (src/fast/triton.ts) or `nns serve` serves (src/serve/oip.ts),
 * instead of to local sessions. The model is still opened locally (the planner needs its
 * module tree and the instrumented model's port layout); nothing is computed locally but
 * the host-side arithmetic around the runs.
 *
 * Before its first run on a served model, the runner reads the model's metadata and checks
 * that every input it will feed and every output it will fetch is there with the same data
 * type: a server holding another model's export fails clearly (`oip-model-mismatch`)
 * instead of returning other numbers. When the server reports onnsight's `model_id`
 * (nns serve does), it must be this model's.
 * @module
 */
import { NnsError } from '../errors.js';
import type { ModelContext } from '../compile.js';
import type { Tensor } from '../tensor.js';
import { OipClient } from '../oip/client.js';
import { dtypeOfOip } from '../oip/protocol.js';
import type { FastExecutor } from './execute.js';
import type { FastRunner, RunnerFactory } from './runner.js';
import { moduleModelNames, portsModelName, servedModels, type ServedTensor } from './serving.js';

/** Where a model's fast path runs remotely. */
export interface OipTarget {
  /** The server. */
  client: OipClient;
  /** The models' base name on the server (`nns export-serving --name`, `nns serve --model NAME=...`). */
  name: string;
  /** Send tensors as JSON instead of binary (default false). */
  json?: boolean;
}

/** The runner factory for {@link FastExecutor}'s `runner` option. */
export function oipRunner(target: OipTarget): RunnerFactory {
  return (exec: FastExecutor, mc: ModelContext): FastRunner => {
    const checked = new Map<string, Promise<void>>();
    let names: ReadonlyMap<string, string> | undefined;
    const where = `the OIP server ${target.client.url} (model ${target.name})`;
    const expected = (model: string, modulePath?: string): { inputs: ServedTensor[]; outputs: ServedTensor[] } => {
      const all = servedModels(exec, mc, target.name, { modules: modulePath === undefined ? 'none' : [modulePath] });
      const m = modulePath === undefined ? all[0]! : all.find((x) => x.module === modulePath)!;
      if (m.name !== model) throw new Error(`internal: served name ${m.name} is not ${model}`);
      return m;
    };
    const check = (model: string, modulePath?: string): Promise<void> => {
      let p = checked.get(model);
      if (!p) {
        p = (async () => {
          const meta = await target.client.modelMetadata(model);
          const want = expected(model, modulePath);
          const mismatch = (what: string): NnsError => new NnsError('oip-model-mismatch', `model '${model}' on ${target.client.url} is not ${modulePath === undefined ? 'the instrumented model' : `the module model of ${modulePath}`} of this model: ${what}`, {
            kind: 'model', notes: ['write the repository from the same model file: nns export-serving MODEL -o DIR --name NAME'],
          });
          const id = meta.parameters?.['onnsight.model_id'];
          if (typeof id === 'string' && id !== mc.loaded.id) throw mismatch('the server loaded another model file (its content hash differs)');
          for (const [list, have, kind] of [[want.inputs, meta.inputs, 'input'], [want.outputs, meta.outputs, 'output']] as const) {
            const byName = new Map(have.map((t) => [t.name, t]));
            for (const t of list) {
              const h = byName.get(t.name);
              if (!h) throw mismatch(`it has no ${kind} '${t.name}'`);
              if (dtypeOfOip(h.datatype) !== t.dtype) throw mismatch(`its ${kind} '${t.name}' is ${h.datatype}, not ${t.dtype}`);
              if (h.shape.length !== t.dims.length) throw mismatch(`its ${kind} '${t.name}' has rank ${h.shape.length}, not ${t.dims.length}`);
            }
          }
        })();
        checked.set(model, p);
        p.catch(() => checked.delete(model));
      }
      return p;
    };
    const run = async (model: string, modulePath: string | undefined, feeds: Readonly<Record<string, Tensor>>, fetch: readonly string[]): Promise<Record<string, Tensor>> => {
      if (!fetch.length) return {};
      await check(model, modulePath);
      return target.client.infer(model, feeds, fetch, { binary: !target.json });
    };
    return {
      exclusive: where,
      runPorted: (feeds, fetch) => run(portsModelName(target.name), undefined, feeds, fetch),
      runModule: (path, feeds, fetch) => {
        names ??= moduleModelNames(mc, target.name);
        return run(names.get(path)!, path, feeds, fetch);
      },
    };
  };
}
