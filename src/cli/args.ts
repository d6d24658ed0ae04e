/**
 * Command-line parsing for `nns`: one command, positional arguments and flags, with a
 * usage error (exit 2) for anything unknown or missing.
 * @module
 */
import { usageError } from '../errors.js';

/** A flag a command accepts. */
export interface FlagSpec {
  /** Long name without dashes (`model`). */
  name: string;
  /** One-letter alias (`o`). */
  short?: string;
  /** Whether the flag takes a value (`--model PATH`). */
  value: boolean;
  /** Value placeholder and description for help. */
  help: string;
  placeholder?: string;
  /** The flag may be given several times (`--param a=A --param b=B`); every value is kept in `ParsedArgs.lists`. */
  repeat?: boolean;
}

/** A command: its positionals, flags and help text. */
export interface CommandSpec {
  name: string;
  /** Positional argument names, in order (all required). */
  positionals: string[];
  /** Optional positional argument names, after the required ones. */
  optional?: string[];
  flags: FlagSpec[];
  /** One-line summary. */
  summary: string;
  /** Extra help paragraphs. */
  details: string[];
}

/** Parsed arguments of one command. */
export interface ParsedArgs {
  positionals: string[];
  /** Flag values by long name (`true` for value-less flags); the last one of a repeated flag. */
  flags: Map<string, string | true>;
  /** Every value of each repeatable flag, in order. */
  lists: Map<string, string[]>;
}

/** The usage line of a command: `nns run SCRIPT [--model PATH] ...`. */
export function usageLine(c: CommandSpec): string {
  const flags = c.flags
    .filter((f) => f.name !== 'help')
    .map((f) => `[${f.short ? `-${f.short}|` : ''}--${f.name}${f.value ? ` ${f.placeholder ?? 'VALUE'}` : ''}]`);
  return ['nns', c.name, ...c.positionals, ...(c.optional ?? []).map((p) => `[${p}]`), ...flags].join(' ');
}

/** Full help text of a command. */
export function commandHelp(c: CommandSpec): string {
  const lines = [`usage: ${usageLine(c)}`, '', c.summary];
  if (c.details.length) lines.push('', ...c.details);
  lines.push('', 'options:');
  for (const f of c.flags) {
    const left = `${f.short ? `-${f.short}, ` : '    '}--${f.name}${f.value ? ` ${f.placeholder ?? 'VALUE'}` : ''}`;
    lines.push(`  ${left.padEnd(30)} ${f.help}`);
  }
  return lines.join('\n');
}

/**
 * Parses `argv` (after the command name) against `spec`.
 * @throws NnsError (usage) for an unknown flag, a missing value, or a wrong number of positionals.
 */
export function parseArgs(spec: CommandSpec, argv: readonly string[]): ParsedArgs {
  const positionals: string[] = [];
  const flags = new Map<string, string | true>();
  const lists = new Map<string, string[]>();
  const usage = [`usage: ${usageLine(spec)}`, `see: nns ${spec.name} --help`];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      positionals.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const key = a.startsWith('--') ? a.slice(2, eq >= 0 ? eq : undefined) : a.slice(1, eq >= 0 ? eq : undefined);
    const f = a.startsWith('--') ? spec.flags.find((x) => x.name === key) : spec.flags.find((x) => x.short === key);
    if (!f) throw usageError('unknown-flag', `unknown option '${a.slice(0, eq >= 0 ? eq : undefined)}' for 'nns ${spec.name}'`, usage);
    if (!f.value) {
      if (eq >= 0) throw usageError('bad-flag', `option '--${f.name}' takes no value`, usage);
      flags.set(f.name, true);
      continue;
    }
    let v: string | undefined;
    if (eq >= 0) v = a.slice(eq + 1);
    else v = argv[++i];
    if (v === undefined || v === '') throw usageError('missing-value', `option '--${f.name}' needs a value (${f.placeholder ?? 'VALUE'})`, usage);
    flags.set(f.name, v);
    if (f.repeat) lists.set(f.name, [...(lists.get(f.name) ?? []), v]);
  }
  if (flags.has('help')) return { positionals, flags, lists };
  if (positionals.length < spec.positionals.length) {
    throw usageError('missing-argument', `'nns ${spec.name}' needs ${spec.positionals.slice(positionals.length).join(' ')}`, usage);
  }
  const most = spec.positionals.length + (spec.optional?.length ?? 0);
  if (positionals.length > most) {
    throw usageError('extra-argument', `unexpected argument '${positionals[most]}' for 'nns ${spec.name}'`, usage);
  }
  return { positionals, flags, lists };
}
