/**
 * A strict parser of the protobuf text format (the format of Triton's config.pbtxt), checked
 * against a schema loaded with protobufjs (which has no text-format parser of its own).
 * Follows the language specification of the text format (protobuf.dev, "Text Format
 * Language Specification"): `#` comments; `name: value` for scalars (the colon required),
 * `name {…}` / `name: {…}` / `name <…>` for messages; `[a, b]` lists for repeated fields
 * only; `,` or `;` optional after a field; enum values by name or number; strings in single
 * or double quotes with C escapes, adjacent strings concatenated; maps as repeated
 * `{ key: … value: … }` entries. Errors (with line:col): an unknown field, a value of the
 * wrong type or out of range, a non-repeated field given twice, two members of one oneof,
 * a list on a non-repeated field, an unknown enum name, extensions and `Any` expansions.
 */
import protobuf from 'protobufjs';

/** A parse error at `line:col` (1-based). */
export class TextFormatError extends Error {
  constructor(message: string, readonly line: number, readonly col: number) {
    super(`${line}:${col}: ${message}`);
  }
}

type Tok = { kind: 'ident' | 'number' | 'string' | 'punct'; text: string; value?: string; line: number; col: number };

function tokenize(src: string): Tok[] {
  const out: Tok[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  const err = (m: string): never => { throw new TextFormatError(m, line, i - lineStart + 1); };
  while (i < src.length) {
    const c = src[i]!;
    if (c === '\n') { i++; line++; lineStart = i; continue; }
    if (/\s/.test(c)) { i++; continue; }
    if (c === '#') { while (i < src.length && src[i] !== '\n') i++; continue; }
    const col = i - lineStart + 1;
    if ('{}<>[]:,;'.includes(c)) { out.push({ kind: 'punct', text: c, line, col }); i++; continue; }
    if (c === '"' || c === "'") {
      let j = i + 1;
      let v = '';
      const bytes: number[] = [];
      const flush = (): void => { if (bytes.length) { v += Buffer.from(bytes).toString('utf8'); bytes.length = 0; } };
      while (true) {
        if (j >= src.length || src[j] === '\n') err('unterminated string');
        const d = src[j]!;
        if (d === c) break;
        if (d === '\\') {
          const e = src[j + 1];
          const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', a: '\x07', b: '\b', f: '\f', v: '\v', '\\': '\\', "'": "'", '"': '"', '?': '?' };
          if (e !== undefined && e in simple) { flush(); v += simple[e]; j += 2; continue; }
          const oct = /^[0-7]{1,3}/.exec(src.slice(j + 1, j + 4));
          if (oct) { bytes.push(parseInt(oct[0], 8) & 0xff); j += 1 + oct[0].length; continue; }
          const hex = /^[xX]([0-9a-fA-F]{1,2})/.exec(src.slice(j + 1, j + 4));
          if (hex) { bytes.push(parseInt(hex[1]!, 16)); j += 1 + hex[0].length; continue; }
          const uni = /^(u[0-9a-fA-F]{4}|U000[0-9a-fA-F]{5}|U0010[0-9a-fA-F]{4})/.exec(src.slice(j + 1, j + 10));
          if (uni) { flush(); v += String.fromCodePoint(parseInt(uni[0].slice(1), 16)); j += 1 + uni[0].length; continue; }
          i = j;
          err(`invalid escape \\${e ?? ''}`);
        }
        flush();
        const cp = src.codePointAt(j)!;
        v += String.fromCodePoint(cp);
        j += cp > 0xffff ? 2 : 1;
      }
      flush();
      out.push({ kind: 'string', text: src.slice(i, j + 1), value: v, line, col });
      i = j + 1;
      continue;
    }
    const num = /^-?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[fF]?)/.exec(src.slice(i));
    if (num && (c !== '-' || /[\d.]/.test(src[i + 1] ?? ''))) {
      const after = src[i + num[0].length];
      if (after !== undefined && /[A-Za-z_]/.test(after)) err(`invalid number '${num[0]}${after}'`);
      out.push({ kind: 'number', text: num[0], line, col });
      i += num[0].length;
      continue;
    }
    if (c === '-' && /[A-Za-z]/.test(src[i + 1] ?? '')) {
      const id = /^-[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i))![0];
      out.push({ kind: 'number', text: id, line, col });
      i += id.length;
      continue;
    }
    const id = /^[A-Za-z_][A-Za-z0-9_]*/.exec(src.slice(i));
    if (id) { out.push({ kind: 'ident', text: id[0], line, col }); i += id[0].length; continue; }
    err(`unexpected character '${c}'`);
  }
  return out;
}

const INT_RANGE: Record<string, [bigint, bigint]> = {
  int32: [-(2n ** 31n), 2n ** 31n - 1n], sint32: [-(2n ** 31n), 2n ** 31n - 1n], sfixed32: [-(2n ** 31n), 2n ** 31n - 1n],
  int64: [-(2n ** 63n), 2n ** 63n - 1n], sint64: [-(2n ** 63n), 2n ** 63n - 1n], sfixed64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint32: [0n, 2n ** 32n - 1n], fixed32: [0n, 2n ** 32n - 1n], uint64: [0n, 2n ** 64n - 1n], fixed64: [0n, 2n ** 64n - 1n],
};

/** Parses `text` as a message of `type`; returns it as a plain object (repeated fields as arrays, maps as objects, int64 as bigint). */
export function parseTextProto(text: string, type: protobuf.Type): Record<string, unknown> {
  const toks = tokenize(text);
  let p = 0;
  const peek = (): Tok | undefined => toks[p];
  const fail = (m: string, t: Tok | undefined = toks[p] ?? toks[toks.length - 1]): never => { throw new TextFormatError(m, t?.line ?? 1, t?.col ?? 1); };
  const take = (punct?: string): Tok => {
    const t = toks[p];
    if (!t) fail(punct ? `expected '${punct}' at the end of the input` : 'unexpected end of the input');
    if (punct && (t!.kind !== 'punct' || t!.text !== punct)) fail(`expected '${punct}', found '${t!.text}'`, t);
    p++;
    return t!;
  };
  const isPunct = (c: string): boolean => peek()?.kind === 'punct' && peek()!.text === c;

  const scalar = (f: protobuf.Field): unknown => {
    const t = take();
    const ty = f.type;
    if (f.resolvedType instanceof protobuf.Enum) {
      const e = f.resolvedType;
      if (t.kind === 'ident') {
        if (!(t.text in e.values)) fail(`'${t.text}' is not a value of enum ${e.name} (field '${f.name}')`, t);
        return t.text;
      }
      if (t.kind === 'number' && /^-?\d+$/.test(t.text)) {
        const n = Number(t.text);
        const name = Object.entries(e.values).find(([, v]) => v === n)?.[0];
        if (name === undefined) fail(`${n} is not a value of enum ${e.name} (field '${f.name}')`, t);
        return name;
      }
      return fail(`field '${f.name}' takes a ${e.name} value, not '${t.text}'`, t);
    }
    if (ty === 'string' || ty === 'bytes') {
      if (t.kind !== 'string') fail(`field '${f.name}' takes a string, not '${t.text}'`, t);
      let v = t.value!;
      while (peek()?.kind === 'string') v += take().value!;
      return v;
    }
    if (ty === 'bool') {
      const v = { true: true, True: true, t: true, '1': true, false: false, False: false, f: false, '0': false }[t.text];
      if (v === undefined || t.kind === 'string') fail(`field '${f.name}' takes true or false, not '${t.text}'`, t);
      return v;
    }
    if (ty === 'float' || ty === 'double') {
      if (t.kind === 'ident' || (t.kind === 'number' && /^-?[A-Za-z]/.test(t.text))) {
        const w = t.text.replace(/^-/, '').toLowerCase();
        if (w === 'inf' || w === 'infinity') return t.text.startsWith('-') ? -Infinity : Infinity;
        if (w === 'nan') return NaN;
        fail(`field '${f.name}' takes a number, not '${t.text}'`, t);
      }
      if (t.kind !== 'number') fail(`field '${f.name}' takes a number, not '${t.text}'`, t);
      const s = t.text.replace(/[fF]$/, '');
      return /^-?0[xX]/.test(s) ? Number(BigInt(s.replace('-', ''))) * (s.startsWith('-') ? -1 : 1) : Number(s);
    }
    const range = INT_RANGE[ty];
    if (!range) return fail(`internal: unsupported field type ${ty}`, t);
    if (t.kind !== 'number' || !/^-?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)$/.test(t.text)) fail(`field '${f.name}' takes an integer (${ty}), not '${t.text}'`, t);
    const neg = t.text.startsWith('-');
    const body = neg ? t.text.slice(1) : t.text;
    const mag = /^0[xX]/.test(body) ? BigInt(body) : /^0[0-7]+$/.test(body) ? BigInt(`0o${body.slice(1)}`) : BigInt(body);
    const v = neg ? -mag : mag;
    if (v < range[0] || v > range[1]) fail(`${t.text} is out of range for field '${f.name}' (${ty})`, t);
    return ty.endsWith('64') ? v : Number(v);
  };

  const mapEntry = (f: protobuf.MapField, close: string): { key?: unknown; value?: unknown } => {
    const keyField = new protobuf.Field('key', 1, f.keyType);
    const entry: { key?: unknown; value?: unknown } = {};
    while (!isPunct(close)) {
      const nt = take();
      if (nt.kind !== 'ident' || (nt.text !== 'key' && nt.text !== 'value')) fail(`a map entry of field '${f.name}' has only 'key' and 'value', not '${nt.text}'`, nt);
      if (nt.text in entry) fail(`'${nt.text}' is given twice in a map entry of field '${f.name}'`, nt);
      if (nt.text === 'key') {
        take(':');
        entry.key = scalar(keyField);
      } else if (f.resolvedType instanceof protobuf.Type) {
        if (isPunct(':')) take(':');
        const open = take();
        if (open.kind !== 'punct' || (open.text !== '{' && open.text !== '<')) fail(`the value of a map entry of field '${f.name}' is a message ({ ... })`, open);
        entry.value = message(f.resolvedType, open.text === '{' ? '}' : '>');
        take(open.text === '{' ? '}' : '>');
      } else {
        take(':');
        entry.value = scalar(f as unknown as protobuf.Field);
      }
      if (isPunct(',') || isPunct(';')) take();
    }
    return entry;
  };

  const message = (ty: protobuf.Type, close: string | null): Record<string, unknown> => {
    const out: Record<string, unknown> = {};
    const setOneof = new Map<string, string>();
    while (true) {
      if (close === null ? peek() === undefined : isPunct(close)) break;
      if (peek() === undefined) fail(`expected '${close}' before the end of the input`);
      if (isPunct('[')) fail('extensions and Any expansions are not accepted here');
      const nameTok = take();
      if (nameTok.kind !== 'ident') fail(`expected a field name, found '${nameTok.text}'`, nameTok);
      const f = ty.fields[nameTok.text];
      if (!f) fail(`message ${ty.fullName.replace(/^\./, '')} has no field '${nameTok.text}'`, nameTok);
      f!.resolve();
      const isMsg = f!.resolvedType instanceof protobuf.Type || f!.map;
      const repeated = f!.repeated || f!.map;
      if (isPunct(':')) take(':');
      else if (!isMsg) fail(`expected ':' after field '${f!.name}'`);
      const values: unknown[] = [];
      const one = (): unknown => {
        if (!isMsg) return scalar(f!);
        const open = peek();
        if (!open || open.kind !== 'punct' || (open.text !== '{' && open.text !== '<')) return fail(`field '${f!.name}' takes a message ({ ... })`, open);
        take();
        if (f!.map) {
          const v = mapEntry(f as unknown as protobuf.MapField, open.text === '{' ? '}' : '>');
          take(open.text === '{' ? '}' : '>');
          return v;
        }
        const v = message(f!.resolvedType as protobuf.Type, open.text === '{' ? '}' : '>');
        take(open.text === '{' ? '}' : '>');
        return v;
      };
      if (isPunct('[')) {
        if (!repeated) fail(`field '${f!.name}' is not repeated: a list [ ... ] is not allowed`);
        take('[');
        if (!isPunct(']')) {
          values.push(one());
          while (isPunct(',')) { take(','); values.push(one()); }
        }
        take(']');
      } else values.push(one());
      if (repeated) {
        if (f!.map) {
          const m = (out[f!.name] as Record<string, unknown> | undefined) ?? {};
          for (const e of values as { key?: unknown; value?: unknown }[]) m[String(e.key ?? '')] = e.value;
          out[f!.name] = m;
        } else out[f!.name] = [...((out[f!.name] as unknown[] | undefined) ?? []), ...values];
      } else {
        if (f!.name in out) fail(`non-repeated field '${f!.name}' is given more than once`, nameTok);
        if (f!.partOf && !f!.partOf.name.startsWith('_')) {
          const other = setOneof.get(f!.partOf.name);
          if (other) fail(`fields '${other}' and '${f!.name}' are both members of oneof '${f!.partOf.name}'`, nameTok);
          setOneof.set(f!.partOf.name, f!.name);
        }
        out[f!.name] = values[0];
      }
      if (isPunct(',') || isPunct(';')) take();
    }
    return out;
  };
  return message(type, null);
}
