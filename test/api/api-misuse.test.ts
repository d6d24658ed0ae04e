/**
 * TypeScript API misuse (issue 9 item 10): every misuse is a clear NnsError (a rejected
 * promise for `trace`), never a crash, an unhandled rejection, a stack overflow or an
 * `internal:` error; and token ids are checked as the CLI checks them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LanguageModel, NnsError, type ModelRef, type TensorLike, type TensorProxy } from '../../src/index.js';
import { MODEL_DIR } from '../helpers/reference.js';

let model: LanguageModel;
let other: LanguageModel;
beforeAll(async () => {
  model = await LanguageModel.load(MODEL_DIR);
  other = await LanguageModel.load(MODEL_DIR);
}, 120_000);
afterAll(async () => {
  await model?.dispose();
  await other?.dispose();
});

const PROMPT = 'The Eiffel Tower is in the city of';

/** The NnsError a promise rejects with (fails when it resolves or rejects with anything else). */
async function rejection(p: Promise<unknown>): Promise<NnsError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(NnsError);
    expect((e as Error).message).not.toMatch(/^internal/);
    return e as NnsError;
  }
  throw new Error('expected a rejection');
}

describe('API misuse', { timeout: 60_000 }, () => {
  it('an async callback is refused, and an error it throws later is no unhandled rejection', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown): void => void unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const e = await rejection(model.trace(PROMPT, (async (m: ModelRef) => {
        await Promise.resolve();
        m.transformer.h[0]!.output.save('late');
        throw new Error('boom');
      }) as unknown as (m: ModelRef) => void));
      expect(e.code).toBe('async-callback');
      await new Promise((r) => setTimeout(r, 50));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('an error thrown inside the callback rejects the trace', async () => {
    await expect(model.trace(PROMPT, () => { throw new Error('mine'); })).rejects.toThrow('mine');
  });

  it('a proxy from an earlier trace is refused clearly', async () => {
    let kept: TensorProxy | undefined;
    await model.trace(PROMPT, (m) => { kept = m.transformer.h[0]!.output.save('h0'); });
    expect(kept!.value).toBeDefined();
    const e = await rejection(model.trace(PROMPT, (m) => { m.transformer.h[1]!.output = kept!; }));
    expect(e.code).toBe('foreign-value');
    expect(e.message).toContain('earlier trace');
    const e2 = await rejection(model.trace(PROMPT, (m) => { m.transformer.h[1]!.output.add(kept!).save(); }));
    expect(e2.code).toBe('foreign-value');
  });

  it('a proxy of another model is refused clearly', async () => {
    let e: unknown;
    await model.trace(PROMPT, (m) => {
      const mine = m.transformer.h[0]!.output;
      try {
        other.build(PROMPT, (o) => { o.transformer.h[0]!.output = mine; });
      } catch (x) {
        e = x;
      }
    });
    expect(e).toBeInstanceOf(NnsError);
    expect((e as NnsError).code).toBe('foreign-value');
  });

  it('.save() and module reads after the trace are refused', async () => {
    let h: TensorProxy | undefined;
    let mm: ModelRef | undefined;
    await model.trace(PROMPT, (m) => { mm = m; h = m.transformer.h[0]!.output.add(1); });
    for (const f of [() => h!.save('late'), () => h!.softmax(-1), () => mm!.transformer.h[0]!.output]) {
      let e: unknown;
      try { f(); } catch (x) { e = x; }
      expect(e).toBeInstanceOf(NnsError);
      expect((e as NnsError).code).toBe('trace-ended');
    }
  });

  it.each([
    ['a string', 'hello'],
    ['a function', () => 1],
    ['an object', { a: 1 }],
    ['undefined', undefined],
    ['an array of strings', ['a']],
    ['a malformed Tensor', { dtype: 'float32', shape: [2], data: new Float32Array(3) }],
  ])('%s as a tensor is a bad-value error', async (_what, v) => {
    const e = await rejection(model.trace(PROMPT, (m) => { m.transformer.h[0]!.output = v as unknown as TensorLike; }));
    expect(e.code).toBe('bad-value');
    const e2 = await rejection(model.trace(PROMPT, (m) => { m.transformer.h[0]!.output.mul(v as unknown as TensorLike).save(); }));
    expect(e2.code).toBe('bad-value');
  });

  it('a cyclic array is a bad-value error, not a stack overflow', async () => {
    const a: unknown[] = [1];
    a.push(a);
    const e = await rejection(model.trace(PROMPT, (m) => { m.transformer.h[0]!.output = a as unknown as TensorLike; }));
    expect(e.code).toBe('bad-value');
  });

  it.each([[[464, Number.NaN]], [[464, 1.5]], [[464, -5]], [[464, 874]], [[]], [['464']]])('token ids %j are refused', async (ids) => {
    const e = await rejection(model.trace(ids as number[], (m) => { m.output.save('o'); }));
    expect(e.code).toBe('bad-prompt');
  });

  it('a nested invoke, a trace without invokes, and a missing callback are clear errors', async () => {
    const nested = await rejection(model.trace((tr) => {
      tr.invoke(PROMPT, () => { tr.invoke(PROMPT, () => undefined); });
    }));
    expect(nested.code).toBe('nested-invoke');
    const empty = await rejection(model.trace(() => undefined));
    expect(empty.code).toBe('no-prompt');
    const noFn = await rejection(model.trace(PROMPT, undefined as unknown as (m: ModelRef) => void));
    expect(noFn.code).toBe('bad-argument');
  });

  it('valid token ids still run', async () => {
    const { saves } = await model.trace([464, 873], (m) => { m.output.logits.at(':', -1, ':').save('last'); });
    expect(saves.last!.shape).toEqual([1, 874]);
  });
});
