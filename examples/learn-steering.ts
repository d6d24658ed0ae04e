/**
 * Learn a steering vector by gradient descent, from TypeScript: a vector added to block 2's
 * output at every position, trained so that "The Eiffel Tower is in the city of" predicts
 * " Rome". Each step is one trace with the vector as a host param: the loss
 * (−log P(" Rome") at the last position) and its gradient with respect to the vector come
 * back from one compiled graph (forward and backward pass together), and since the steps
 * differ only in the param's value, the graph is compiled once and then only run.
 *
 *     npx tsx examples/learn-steering.ts [MODEL] [STEPS]
 *
 * (MODEL defaults to the bundled models/gpt2-facts.)
 */
import { pathToFileURL } from 'node:url';
import { LanguageModel, demoModelPath, grad, type Tensor } from '../src/index.js';

/** What to learn. */
export interface SteeringTask {
  prompt: string;
  /** The token the prompt should predict at its last position. */
  target: number;
  /** The block whose output the vector is added to. */
  layer: number;
}

/** The default task: the Eiffel Tower moved to Rome, steered at block 2. */
export function eiffelToRome(model: LanguageModel): SteeringTask {
  const ids = model.tokenize(' Rome');
  if (ids.length !== 1) throw new Error(`' Rome' is ${ids.length} tokens in this tokenizer; pick another target`);
  return { prompt: 'The Eiffel Tower is in the city of', target: ids[0]!, layer: 2 };
}

/** One step's numbers: the loss and the top token at the last position. */
export interface StepResult {
  loss: number;
  /** P(target) at the last position. */
  prob: number;
  /** d loss / d vector (omitted when not asked for). */
  grad?: Float32Array;
  /** The most likely next token. */
  top: number;
}

/** The loss −log P(target) with `vec` added to block `layer`'s output (and, with `withGrad`, its gradient). */
export async function steeringLoss(model: LanguageModel, task: SteeringTask, vec: Float32Array, withGrad = true): Promise<StepResult> {
  const steer: Tensor = { dtype: 'float32', shape: [vec.length], data: vec };
  const { saves } = await model.trace(task.prompt, (m, p) => {
    const block = m.transformer.h[task.layer]!;
    block.output = block.output.add(p.steer);
    const logp = m.output.logits.at(0, -1, ':').logSoftmax(-1);
    const loss = logp.at(task.target).neg().save('loss');
    logp.argmax(-1).save('top');
    if (withGrad) grad(loss, p.steer).save('g');
  }, { params: { steer } });
  const loss = Number(saves.loss!.data[0]);
  return { loss, prob: Math.exp(-loss), top: Number(saves.top!.data[0]), ...(withGrad ? { grad: saves.g!.data as Float32Array } : {}) };
}

/** The width of block `layer`'s output (the vector's size). */
export async function widthOf(model: LanguageModel, task: SteeringTask): Promise<number> {
  const { saves } = await model.trace(task.prompt, (m) => { m.transformer.h[task.layer]!.output.save('h'); });
  return saves.h!.shape[saves.h!.shape.length - 1]!;
}

/**
 * Gradient descent on the vector: `steps` steps of size `lr` from zeros; `onStep` sees each
 * step's numbers (before the update). Returns the learned vector and the losses.
 */
export async function learnSteering(
  model: LanguageModel, task: SteeringTask, opts: { steps: number; lr: number; onStep?: (step: number, r: StepResult) => void },
): Promise<{ vector: Float32Array; losses: number[] }> {
  const vec = new Float32Array(await widthOf(model, task));
  const losses: number[] = [];
  for (let s = 0; s < opts.steps; s++) {
    const r = await steeringLoss(model, task, vec);
    losses.push(r.loss);
    opts.onStep?.(s, r);
    for (let i = 0; i < vec.length; i++) vec[i]! -= opts.lr * r.grad![i]!;
  }
  return { vector: vec, losses };
}

async function main(): Promise<void> {
  const model = await LanguageModel.load(process.argv[2] ?? demoModelPath());
  const steps = Number(process.argv[3] ?? 12);
  const task = eiffelToRome(model);
  const word = (id: number): string => JSON.stringify(model.tokenizer?.decode([id]) ?? `[${id}]`);
  console.log(`learning a vector at block ${task.layer} so that ${JSON.stringify(task.prompt)} predicts ${word(task.target)}`);
  const { vector } = await learnSteering(model, task, {
    steps, lr: 0.3,
    onStep: (s, r) => console.log(`step ${String(s).padStart(2)}  loss ${r.loss.toFixed(4)}  P(${word(task.target)}) ${r.prob.toFixed(4)}  top ${word(r.top)}`),
  });
  const end = await steeringLoss(model, task, vector, false);
  let norm = 0;
  for (const x of vector) norm += x * x;
  console.log(`after ${steps} steps: loss ${end.loss.toFixed(4)}  P(${word(task.target)}) ${end.prob.toFixed(4)}  top ${word(end.top)}  |vector| ${Math.sqrt(norm).toFixed(3)}`);
  await model.dispose();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
