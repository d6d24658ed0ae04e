/**
 * The commands of `nns` and their help texts.
 * @module
 */
import type { CommandSpec, FlagSpec } from './args.js';

const help: FlagSpec = { name: 'help', short: 'h', value: false, help: 'show this help' };
const model: FlagSpec = { name: 'model', value: true, placeholder: 'PATH', help: 'model folder or .onnx file (wins over the script\'s model "PATH")' };
const printIr: FlagSpec = { name: 'print-ir-after-all', value: false, help: 'print the IR (or the stage\'s summary) after every pass and run stage (to stderr)' };
const printAfter: FlagSpec = { name: 'print-ir-after', value: true, placeholder: 'NAME[,NAME]', help: 'print after the named passes only' };
const passes: FlagSpec = { name: 'passes', value: true, placeholder: 'NAME[,NAME]', help: 'run only these passes, in this order, and print the result (to stdout)' };

/** Every command by name. */
export const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map<string, CommandSpec>([
  ['run', {
    name: 'run',
    positionals: ['SCRIPT'],
    flags: [model, { name: 'out', short: 'o', value: true, placeholder: 'FILE.json', help: 'also write the saved values as JSON {NAME: {dtype, shape, data}}' }, printIr, printAfter, help],
    summary: 'Run a .nns script with the model and print the saved values.',
    details: [
      'The model is --model PATH, else the script\'s model "PATH" (relative to the script\'s',
      'folder, then to the current folder).',
    ],
  }],
  ['compile', {
    name: 'compile',
    positionals: ['SCRIPT'],
    flags: [model, { name: 'out', short: 'o', value: true, placeholder: 'OUT.onnx', help: 'where to write the rewritten model (required)' }, printIr, printAfter, passes, help],
    summary: 'Compile a script into rewritten ONNX models (openable in Netron), one per trace.',
    details: [
      'The first trace goes to OUT.onnx, the next to OUT.2.onnx, OUT.3.onnx, ...; each written file is listed.',
      'Saves are graph outputs under their own names; a save named like one of the model\'s inputs or outputs',
      'gets a suffix (logits_1), and a note says so. Saves of earlier traces are graph inputs host.NAME of later ones.',
    ],
  }],
  ['modules', {
    name: 'modules',
    positionals: ['PATH'],
    flags: [help],
    summary: 'Print the module tree of a model folder or .onnx file, with each module\'s output shapes.',
    details: [],
  }],
  ['cache', {
    name: 'cache',
    positionals: [],
    optional: ['list|size|clean'],
    flags: [help],
    summary: 'Show or clean the cache of prepared models and rewritten graphs (default: list).',
    details: [
      'list   every cached model: size, rewritten graphs, last use, source file',
      'size   the bytes the cache holds (hard links to your own weights files count nothing)',
      'clean  remove everything in the cache; it is rebuilt on demand',
      '',
      'The cache is $ONNSIGHT_CACHE, else $XDG_CACHE_HOME/onnsight, else ~/.cache/onnsight.',
      'It is kept under ONNSIGHT_CACHE_MAX bytes (default 10G) by removing what was used least',
      'recently. Nothing is ever written into a model\'s own folder.',
    ],
  }],
  ['check', {
    name: 'check',
    positionals: ['SCRIPT'],
    flags: [model, printIr, printAfter, passes, help],
    summary: 'Check a script without running it: syntax, names, and (with a model) modules and shapes.',
    details: [],
  }],
]);

/** `nns --help`. */
export const GENERAL_HELP = [
  'usage: nns <command> [options]',
  '',
  'NNsight-style interventions on ONNX models, from .nns scripts.',
  '',
  'commands:',
  '  run SCRIPT [--model PATH] [--out FILE.json] [--print-ir-after-all]',
  '                      run a script and print (or write) the saved values',
  '  compile SCRIPT [--model PATH] -o OUT.onnx',
  '                      write the rewritten model',
  '  modules PATH        print a model\'s module tree with output shapes',
  '  check SCRIPT [--model PATH] [--passes=NAME,...]',
  '                      validate a script without running it (or run chosen passes and print)',
  '  cache [list|size|clean]',
  '                      show or clean the cache ($ONNSIGHT_CACHE, else ~/.cache/onnsight)',
  '',
  'debugging: --print-ir-after-all, --print-ir-after=NAME,... (run, compile, check)',
  '',
  'nns <command> --help shows the options of a command.',
  'exit codes: 0 ok, 1 errors in the script, 2 usage or model errors, 3 internal error.',
].join('\n');
