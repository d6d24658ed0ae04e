/**
 * The op catalogue (ir/ops.ts) is the one place an op is defined: the language's function
 * table, the TS API's methods, the host evaluator's op set and the schema all come from it.
 */
import { describe, expect, it } from 'vitest';
import { FUNCTIONS } from '../../grammar/functions.js';
import { FUNCTION_OPS, HOST_OPS, OPS, OP_SCHEMA, evalOp, type OpName } from '../../ir/ops.js';
import { TensorProxy } from '../../src/trace.js';
import { tensorOf } from '../../ir/eval.js';

const camel = (s: string): string => s.replace(/_(\w)/g, (_, c: string) => c.toUpperCase());

describe('op catalogue', () => {
  it('every language function is a catalogue op, and every catalogue function is in the language and the TS API', () => {
    expect([...FUNCTIONS.keys()].sort()).toEqual([...FUNCTION_OPS.keys()].sort());
    for (const op of FUNCTION_OPS.keys()) expect(typeof (TensorProxy.prototype as unknown as Record<string, unknown>)[camel(op)], op).toBe('function');
  });

  it('the host evaluates every pure op but grad (its backward pass is spliced into the graph), and nothing else', () => {
    const pure = (Object.keys(OPS) as OpName[]).filter((k) => OPS[k].kind === 'pure' && k !== 'grad');
    expect([...HOST_OPS].sort()).toEqual(pure.sort());
    expect(Object.keys(OP_SCHEMA)).toEqual(Object.keys(OPS));
  });

  it('sources, effects, calls and grad are spliced; every other pure op has its own lowering', () => {
    for (const k of Object.keys(OPS) as OpName[]) expect(OPS[k].lower === 'splice', k).toBe(OPS[k].kind !== 'pure' || k === 'grad');
  });

  it('the host evaluator computes float32 elementwise ops rounded per op (against hand-computed values)', () => {
    const x = tensorOf('float32', [3], [-1, 0, 2]);
    expect(Array.from(evalOp('relu', {}, [x], 'float32')[0]!.data as Float32Array)).toEqual([0, 0, 2]);
    expect(Array.from(evalOp('exp', {}, [x], 'float32')[0]!.data as Float32Array)).toEqual([Math.fround(Math.exp(-1)), 1, Math.fround(Math.exp(2))]);
    expect(() => evalOp('save', { name: 'x' }, [x], 'float32')).toThrow(/not a host operation/);
  });
});
