/**
 * examples/learn-steering.ts: a few steps of gradient descent on a steering vector at block 2
 * lower the loss −log P(" Rome") of "The Eiffel Tower is in the city of" at every step, and
 * the gradient each step uses agrees with central finite differences of the same loss,
 * evaluated without any gradient (forward runs only) at shifted vectors.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel } from '../../src/index.js';
import { eiffelToRome, learnSteering, steeringLoss, type SteeringTask } from '../../examples/learn-steering.js';
import { MODEL_DIR } from '../helpers/reference.js';

describe('examples/learn-steering.ts', () => {
  let model: LanguageModel;
  let task: SteeringTask;
  beforeAll(async () => {
    model = await LanguageModel.load(MODEL_DIR);
    task = eiffelToRome(model);
  }, 60_000);
  afterAll(async () => model?.dispose());

  it('the loss falls at every step, and the learned vector flips the answer to Rome', async () => {
    const { vector, losses } = await learnSteering(model, task, { steps: 4, lr: 0.3 });
    expect(losses).toHaveLength(4);
    for (let s = 1; s < losses.length; s++) expect(losses[s]!, `step ${s}: ${losses.join(', ')}`).toBeLessThan(losses[s - 1]!);
    const end = await steeringLoss(model, task, vector, false);
    expect(end.loss).toBeLessThan(losses[3]!);
    expect(end.top).toBe(task.target);
  }, 120_000);

  it('the gradient matches central finite differences of the loss (forward runs only)', async () => {
    const { vector } = await learnSteering(model, task, { steps: 1, lr: 0.3 }); // a non-zero point
    const at = await steeringLoss(model, task, vector);
    const h = 0.01;
    for (const k of [0, 1]) {
      const u = Float32Array.from(vector, (_, i) => Math.cos(0.7 * i + k));
      const shifted = (sign: number): Float32Array => Float32Array.from(vector, (x, i) => x + sign * h * u[i]!);
      const fd = ((await steeringLoss(model, task, shifted(1), false)).loss - (await steeringLoss(model, task, shifted(-1), false)).loss) / (2 * h);
      let an = 0;
      for (let i = 0; i < u.length; i++) an += at.grad![i]! * u[i]!;
      expect(Math.abs(an - fd), `direction ${k}: analytic ${an}, finite differences ${fd}`).toBeLessThanOrEqual(2e-3 * Math.max(1, Math.abs(fd)));
    }
  }, 120_000);
});
