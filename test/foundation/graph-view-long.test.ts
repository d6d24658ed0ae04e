/**
 * The ONNX graph view on graphs as long as a script can make them (issue 9 item 3): a chain
 * of 50,000 nodes is walked without recursion (reachability and the cycle check used to
 * overflow the stack inside graphlib).
 */
import { describe, expect, it } from 'vitest';
import type { GraphProto } from '../../src/onnx/proto.js';
import { OnnxGraphView } from '../../src/onnx/view.js';

function chain(n: number, cycle = false): GraphProto {
  const node = Array.from({ length: n }, (_, i) => ({ name: `n${i}`, op_type: 'Neg', input: [i === 0 ? (cycle ? `v${n - 1}` : 'x') : `v${i - 1}`], output: [`v${i}`] }));
  return { node, input: [{ name: 'x' }], output: [{ name: `v${n - 1}` }] };
}

describe('graph view on long chains', () => {
  it('finds every live node of a 50,000-node chain', () => {
    expect(new OnnxGraphView(chain(50_000)).live().size).toBe(50_000);
  });

  it('finds no cycle in a long acyclic chain, and the cycle when the chain is closed', () => {
    expect(new OnnxGraphView(chain(50_000)).cyclic()).toEqual([]);
    expect(new OnnxGraphView(chain(5)).cyclic()).toEqual([]);
    expect(new OnnxGraphView(chain(5, true)).cyclic().map((n) => n.name)).toEqual(['n0', 'n1', 'n2', 'n3', 'n4']);
  });
});
