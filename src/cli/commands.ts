/**
 * The commands of `nns` and their help texts.
 * @module
 */
import type { CommandSpec, FlagSpec } from './args.js';

const help: FlagSpec = { name: 'help', short: 'h', value: false, help: 'show this help' };
const model: FlagSpec = { name: 'model', value: true, placeholder: 'PATH', help: 'model folder or .onnx file (wins over the script\'s model "PATH")' };
const progress: FlagSpec = { name: 'progress', value: true, placeholder: 'MODE', help: 'bar (a TTY), plain (a line every 10 s), none; default: bar on a TTY, else plain' };
const plot: FlagSpec = { name: 'plot', value: true, placeholder: 'DIR', help: 'write plots of the saved families to DIR (SVG, PNG, Vega-Lite JSON)' };
const html: FlagSpec = { name: 'html', value: true, placeholder: 'FILE', help: 'write one self-contained HTML report (plots, values, the script)' };
const printIr: FlagSpec = { name: 'print-ir-after-all', value: false, help: 'print the IR (or the stage\'s summary) after every pass and run stage (to stderr)' };
const printAfter: FlagSpec = { name: 'print-ir-after', value: true, placeholder: 'NAME[,NAME]', help: 'print after the named passes only' };
const oipFlag: FlagSpec = { name: 'oip', value: true, placeholder: 'URL', help: 'run the forward passes on an Open Inference Protocol v2 server (see nns export-serving)' };
const oipModel: FlagSpec = { name: 'oip-model', value: true, placeholder: 'NAME', help: 'the models\' base name on that server (default: the model folder\'s name)' };
const passes: FlagSpec = { name: 'passes', value: true, placeholder: 'NAME[,NAME]', help: 'run only these passes, in this order, and print the result (to stdout)' };

/** Every command by name. */
export const COMMANDS: ReadonlyMap<string, CommandSpec> = new Map<string, CommandSpec>([
  ['run', {
    name: 'run',
    positionals: ['SCRIPT'],
    flags: [model, { name: 'out', short: 'o', value: true, placeholder: 'FILE', help: 'also write the saved values: FILE.json as {NAME: {dtype, shape, data}, $families, $prompts}, FILE.safetensors as safetensors (the saves; any size, streamed)' },
      { name: 'param', value: true, repeat: true, placeholder: 'NAME=FILE.json', help: "the value of the script's `param NAME: ...` (repeat per param): a JSON tensor {dtype, shape, data}, or an --out file holding NAME" },
      plot, html, { name: 'remote', value: true, placeholder: 'URL', help: 'run on an nns serve at URL; --model NAME is then the served model\'s name (API key: NNS_API_KEY)' }, printIr, printAfter, progress, oipFlag, oipModel, help],
    summary: 'Run a .nns script with the model and print the saved values.',
    details: [
      'The model is --model PATH, else the script\'s model "PATH" (relative to the script\'s',
      'folder, then to the current folder).',
      'With --remote URL --model NAME the traces run on that server (nns serve); the output is',
      'what a local run prints and writes. The API key comes from the environment variable NNS_API_KEY.',
      'With --oip URL, every forward pass runs on an Open Inference Protocol v2 server (Triton,',
      'KServe, nns serve) that serves the models nns export-serving wrote for this model;',
      'the model is still read locally to plan. NNS_API_KEY, when set, is sent as a bearer token.',
    ],
  }],
  ['export-serving', {
    name: 'export-serving',
    positionals: ['MODEL'],
    flags: [{ name: 'out', short: 'o', value: true, placeholder: 'DIR', help: 'the model repository to write (a new folder, or an existing repository to add to; required)' },
      { name: 'name', value: true, placeholder: 'NAME', help: 'base name of the models (default: the model folder\'s name)' },
      { name: 'modules', value: true, placeholder: 'all|none|P,Q', help: 'which module models to include (default all closed modules)' },
      { name: 'plain', value: false, help: 'also write the unmodified model, as NAME' }, progress, help],
    summary: 'Write a Triton model repository of the fast path\'s models (for Triton, KServe, nns run --oip).',
    details: [
      'NAME.ports is the instrumented model (ports at module boundaries), NAME.module.PATH the',
      'standalone model of each closed module; each has a config.pbtxt (platform onnxruntime_onnx)',
      'and a version folder 1/ with model.onnx and a hard link to the one weights file.',
      'Written atomically: on an error nothing is left. See docs/serving.md.',
    ],
  }],
  ['compile', {
    name: 'compile',
    positionals: ['SCRIPT'],
    flags: [model, { name: 'out', short: 'o', value: true, placeholder: 'OUT.onnx', help: 'where to write the rewritten model (required)' }, { name: 'flat', value: false, help: 'every inserted node in the main graph (default: one ONNX local function call per statement)' }, printIr, printAfter, passes, progress, help],
    summary: 'Compile a script into rewritten ONNX models (openable in Netron), one per trace.',
    details: [
      'The first trace goes to OUT.onnx, the next to OUT.2.onnx, OUT.3.onnx, ...; each written file is listed.',
      'Saves are graph outputs under their own names; a save named like one of the model\'s inputs or outputs',
      'gets a suffix (logits_1), and a note says so. Saves of earlier traces are graph inputs host.NAME of later ones.',
      'Each statement is one call of an ONNX local function (domain ai.onnsight: nns_set, nns_save, nns_call, ...),',
      'named by the module it touches and documented with its source line; --flat splices the nodes themselves.',
      'The model is stamped: producer onnsight, a doc string and metadata (script, its sha256, base model, trace).',
    ],
  }],
  ['plot', {
    name: 'plot',
    positionals: ['RESULTS.json'],
    flags: [plot, html, help],
    summary: 'Plot the results of nns run --out: heatmaps, logit-lens tables, line plots (default: RESULTS-plots/).',
    details: [
      'A heatmap for every 2-D family of saves (NAME.I.J; positions labelled with the prompt\'s',
      'tokens), a logit-lens table for every family of vocabulary-sized values, a line plot',
      'for every 1-D family of numbers. Rendered with Vega-Lite in Node; PNG through resvg.',
    ],
  }],
  ['lsp', {
    name: 'lsp',
    positionals: [],
    flags: [help],
    summary: 'Run the language server for .nns files (Language Server Protocol over stdin/stdout).',
    details: [
      'Diagnostics as you type (the checks of nns check, against the script\'s model), completion',
      'of module paths, ports and functions, hover with module classes and shapes. Point your',
      'editor\'s LSP client at the command `nns lsp` for files ending in .nns; editors/ has a',
      'TextMate grammar for highlighting.',
    ],
  }],
  ['modules', {
    name: 'modules',
    positionals: ['PATH'],
    flags: [{ name: 'json', value: false, help: 'print the tree as JSON (every module: path, class, inputs, outputs, parameters)' }, { name: 'ops', value: false, help: 'also list, under each module, its operations as op("TYPE", N) with output shapes' }, progress, help],
    summary: 'Print the module tree of a model folder or .onnx file, with each module\'s class and output shapes.',
    details: [
      'Modules are listed in the model\'s order. A module\'s class is the exporter\'s (torch',
      'class names in dynamo metadata) or, when the export has none, inferred from its',
      'operators (Linear, Conv1D, LayerNorm, Attention, MLP, Block, ...; marked with ~).',
      'With --ops, each module is followed by its own ONNX nodes (graph order; Constant nodes left out),',
      'written as MODULE.op("TYPE", N) names them in a script: model.transformer.h[1].attn.op("Softmax").output.',
    ],
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
  ['serve', {
    name: 'serve',
    positionals: [],
    flags: [
      { name: 'model', value: true, repeat: true, placeholder: 'NAME=PATH', help: 'serve the model folder or .onnx file PATH as NAME (repeatable)' },
      { name: 'port', value: true, placeholder: 'N', help: 'port to listen on (default 8000; 0 picks a free one)' },
      { name: 'host', value: true, placeholder: 'H', help: 'address to listen on (default 127.0.0.1)' },
      { name: 'keys', value: true, placeholder: 'FILE', help: 'API keys, one per line; every request then needs Authorization: Bearer KEY' },
      { name: 'max-request-bytes', value: true, placeholder: 'N', help: 'largest request body (default 16777216 = 16 MiB)' },
      { name: 'max-ir-nodes', value: true, placeholder: 'N', help: 'most IR nodes of one trace (default 20000)' },
      { name: 'max-saved-elements', value: true, placeholder: 'N', help: 'most elements one trace saves (default 67108864 = 64 M)' },
      { name: 'max-run-seconds', value: true, placeholder: 'S', help: 'longest run of one job (default 60)' },
      { name: 'max-jobs-per-key', value: true, placeholder: 'N', help: 'jobs one key may have queued or running (default 32)' },
      { name: 'max-batch', value: true, placeholder: 'N', help: 'most jobs sharing one forward pass (default 16; 1 turns cross-request batching off)' },
      { name: 'batch-wait-ms', value: true, placeholder: 'MS', help: 'longest wait for the clients of a finished batch to send their next jobs (default 100; 0 = never)' },
      { name: 'result-ttl-seconds', value: true, placeholder: 'S', help: 'how long a result can be fetched after its job ended (default 600)' },
      help,
    ],
    summary: 'Serve models over HTTP: clients run scripts with nns run --remote URL --model NAME.',
    details: [
      'Scripts travel as data (the IR\'s JSON form), never as code; the server checks each',
      'trace against its model and compiles it with the same pipeline as a local run. Jobs run in',
      'a worker process; concurrent traces of one model share a forward pass when they can.',
      'SIGTERM or SIGINT: running jobs finish, queued ones fail, then the server exits.',
      'It also speaks the Open Inference Protocol v2 under /v2/ (what Triton and KServe speak): the',
      'models NAME.ports, NAME.module.PATH and NAME, for nns run --oip URL (docs/serving.md).',
    ],
  }],
  ['check', {
    name: 'check',
    positionals: ['SCRIPT'],
    flags: [model, printIr, printAfter, passes, progress, help],
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
  '  run SCRIPT [--model PATH] [--out FILE.json|.safetensors] [--plot DIR] [--html FILE] [--progress MODE]',
  '                      run a script and print (or write) the saved values',
  '  compile SCRIPT [--model PATH] -o OUT.onnx',
  '                      write the rewritten model',
  '  plot RESULTS.json [--plot DIR] [--html FILE]',
  '                      plot the results of run --out (run takes --plot and --html too)',
  '  lsp                 the language server for .nns files (LSP over stdio)',
  '  modules PATH [--json]',
  '                      print a model\'s module tree: classes and output shapes',
  '  check SCRIPT [--model PATH] [--passes=NAME,...]',
  '                      validate a script without running it (or run chosen passes and print)',
  '  export-serving MODEL -o DIR [--name NAME]',
  '                      write a Triton model repository of the fast path\'s models (run --oip URL uses it)',
  '  serve --model NAME=PATH [--port N] [--host H] [--keys FILE]',
  '                      serve models over HTTP (run scripts there with run --remote URL --model NAME)',
  '  cache [list|size|clean]',
  '                      show or clean the cache ($ONNSIGHT_CACHE, else ~/.cache/onnsight)',
  '',
  'debugging: --print-ir-after-all, --print-ir-after=NAME,... (run, compile, check)',
  'progress: --progress=bar|plain|none (run, compile, check, modules): how loading, compiling',
  'and long runs report on stderr (default: a bar on a terminal, else a plain line every',
  '10 s; ONNSIGHT_PROGRESS sets the default).',
  '',
  'nns <command> --help shows the options of a command.',
  'exit codes: 0 ok, 1 errors in the script, 2 usage or model errors, 3 internal error.',
].join('\n');
