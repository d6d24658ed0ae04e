/**
 * Reading a node's attributes (shape inference and the derivative rules read the same ones).
 * @module
 */
import type { AttributeProto, NodeProto } from './proto.js';

/** The attribute `name` of `n`, if it has one. */
export function attrOf(n: NodeProto, name: string): AttributeProto | undefined {
  return (n.attribute ?? []).find((a) => a.name === name);
}

/** An INT attribute as a number, or `dflt` when absent. */
export function intAttr(n: NodeProto, name: string, dflt: number): number {
  const a = attrOf(n, name);
  return a?.i !== undefined && a.i !== null ? Number(a.i) : dflt;
}

/** An INTS attribute as numbers (`[]` for an empty list), or undefined when absent. */
export function intsAttr(n: NodeProto, name: string): number[] | undefined {
  const a = attrOf(n, name);
  return a?.ints && a.ints.length ? a.ints.map(Number) : a && a.type === 7 ? [] : undefined;
}
