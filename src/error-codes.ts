/**
 * Every error code onnsight reports, in one table: where it arises and what it means.
 * `NnsError` takes an {@link ErrorCode}, so a code missing here does not compile, and
 * docs/language.md's list of codes is generated from this table (`npm run docs:gen`;
 * test/foundation/error-codes.test.ts fails when the docs are out of date).
 * @module
 */

/**
 * Where an error arises.
 * @category Errors
 */
export type ErrorPhase =
  | 'lex' | 'parse' | 'AST' | 'top level' | 'lower' | 'types' | 'compile' | 'model' | 'run' | 'API' | 'CLI' | 'cache' | 'remote' | 'internal';

/**
 * One entry.
 * @category Errors
 */
export interface ErrorCodeInfo {
  phase: ErrorPhase;
  /** What it means (Markdown, one line). */
  meaning: string;
}

/**
 * The table (order: the order of the phases, as docs/language.md lists them).
 * @category Errors
 */
export const ERROR_CODES = {
  'unexpected-character': { phase: 'lex', meaning: 'a character that cannot start a token' },
  'unterminated-string': { phase: 'lex', meaning: 'a string not closed on its line' },
  'syntax-error': { phase: 'parse', meaning: 'the message says what was expected and what was found' },
  'unclosed-bracket': { phase: 'parse', meaning: 'a `(`, `[` or `{` that is never closed (reported where it was opened)' },
  'unmatched-bracket': { phase: 'parse', meaning: 'a `)`, `]` or `}` without a matching opener' },
  'too-deep': { phase: 'parse', meaning: 'nesting or an expression deeper than the limits (see Limits)' },
  'bad-escape': { phase: 'AST', meaning: 'unknown escape in a string' },
  'bad-number': { phase: 'AST', meaning: 'a number too large to represent' },
  'invalid-target': { phase: 'AST', meaning: 'the left of `=` is not a name or a module `.output`/`.input` (possibly sliced); `model.output` cannot be assigned' },
  'duplicate-model': { phase: 'top level', meaning: 'more than one `model "PATH"`' },
  'no-trace': { phase: 'top level', meaning: 'the script has no `trace` or `generate`' },
  'not-yet-supported': { phase: 'top level', meaning: '`skip`, `stop`' },
  'bad-param': { phase: 'top level', meaning: 'a `param NAME: f32[D0, ...]` declaration without type or shape, with an unknown element type, a dimension that is not a whole number >= 0, declared twice, or inside a trace' },
  'no-prompt': { phase: 'lower', meaning: '`trace { }` without invokes' },
  'bad-prompt': { phase: 'lower', meaning: "an empty prompt, or a token id that is not a whole number >= 0 inside the model's vocabulary (`vocab_size` of config.json); the same in the TS API" },
  'invoke-outside-batch': { phase: 'lower', meaning: '`invoke` inside `trace PROMPT { }`' },
  'nested-invoke': { phase: 'lower', meaning: '`invoke` inside `invoke` (also in the TS API)' },
  'undefined-name': { phase: 'lower', meaning: 'a name used before it is bound, or never bound (with a suggestion)' },
  'rebinding': { phase: 'lower', meaning: 'binding a name that is already visible' },
  'duplicate-save': { phase: 'lower', meaning: 'two saves under the same name (also across traces)' },
  'unknown-function': { phase: 'lower', meaning: "not a core function (with the nearest name: `did you mean 'softmax'?`)" },
  'wrong-arity': { phase: 'lower', meaning: 'wrong number of arguments (the message shows the signature)' },
  'unknown-argument': { phase: 'lower', meaning: 'an unknown keyword argument' },
  'bad-argument': { phase: 'lower', meaning: 'a keyword argument given twice, positional after keyword, `k < 1`, a non-list shape, ...' },
  'not-a-value': { phase: 'lower', meaning: 'a function name used as a value' },
  'not-callable': { phase: 'lower', meaning: 'calling something that is neither a function nor a module' },
  'unknown-attribute': { phase: 'lower', meaning: '`.name` on a value (values have `.save()`; topk results `.values`/`.indices`)' },
  'topk-without-field': { phase: 'lower', meaning: 'a `topk(...)` result used without `.values`/`.indices`' },
  'not-constant': { phase: 'lower', meaning: 'an index, dim, shape entry or module index that is not a compile-time integer' },
  'bad-index': { phase: 'lower', meaning: 'a slice step that is not positive; in the TS API, an `at(...)` index it cannot read' },
  'bad-range': { phase: 'lower', meaning: 'loop bounds that are not compile-time integers, or a range over 10 000 iterations' },
  'empty-range': { phase: 'lower', meaning: '`for i in A..B` with `B <= A`' },
  'invalid-module-ref': { phase: 'lower', meaning: '`model` alone, a slice as a module index, `.outputs` without `[i]`, calling the whole model' },
  'unexpected-string': { phase: 'lower', meaning: 'a string used as a tensor' },
  'unexpected-bool': { phase: 'lower', meaning: '`true`/`false` used as a tensor' },
  'ragged-literal': { phase: 'lower', meaning: 'a list literal that is not rectangular' },
  'too-large': { phase: 'lower', meaning: 'a script, literal, unrolled trace or IR over the limits (see Limits); also a computed value over the size budget (types), or a script file over 3 MB (CLI)' },
  'missing-option': { phase: 'lower', meaning: '`generate` without `max_new_tokens=N`' },
  'unknown-option': { phase: 'lower', meaning: "an unknown `generate` option (with the nearest name: `did you mean 'temperature'?`)" },
  'duplicate-option': { phase: 'lower', meaning: 'a `generate` option given twice' },
  'bad-option': { phase: 'lower', meaning: 'a `generate` option of the wrong kind or range (`max_new_tokens` ≥ 1, `temperature` > 0, `top_k` ≥ 1, `seed` ≥ 0, booleans `true`/`false`)' },
  'too-long': { phase: 'lower', meaning: 'the prompt and `max_new_tokens` need more positions than the model has' },
  'bad-step': { phase: 'lower', meaning: 'a `step` outside 0..max_new_tokens, or an empty step range' },
  'nested-step': { phase: 'lower', meaning: 'a `step` block inside another' },
  'step-outside-generate': { phase: 'lower', meaning: 'a `step` block in a `trace`' },
  'invoke-in-step': { phase: 'lower', meaning: 'an `invoke` inside a `step` block (every step runs the same prompts)' },
  'generator-outside-generate': { phase: 'lower', meaning: '`model.generator.output` in a `trace`' },
  'generator-in-step': { phase: 'lower', meaning: '`model.generator.output` saved inside a `step` block (it is not a per-step value)' },
  'generator-outside-invoke': { phase: 'lower', meaning: '`model.generator.output` saved outside the invokes of a batched `generate`' },
  'bad-generator-use': { phase: 'lower', meaning: '`model.generator.output` used other than saved whole (`tokens = model.generator.output.save()`)' },
  'generate-recompute': { phase: 'lower', meaning: 'in a `generate` on a model without a key/value cache, a value without a sequence axis (which positions belong to the step is unknown)' },
  'cache-layout': { phase: 'model', meaning: 'a model whose `past_key_values.*` inputs the "with past" layout cannot explain' },
  'not-compilable': { phase: 'CLI', meaning: '`nns compile` of a script with a `generate` block (a generation runs one graph per step)' },
  'unknown-module': { phase: 'types', meaning: 'no such module in the model (nearest path suggested, index ranges named)' },
  'no-such-output': { phase: 'types', meaning: '`.outputs[i]` / `.inputs[i]` beyond what the module has' },
  'unknown-parameter': { phase: 'types', meaning: 'no such parameter (nearest name suggested)' },
  'unknown-output': { phase: 'types', meaning: '`model.output.NAME` is not a graph output, or the model has none' },
  'shape-mismatch': { phase: 'types', meaning: 'shapes that do not broadcast, multiply or assign (both shapes named)' },
  'bad-grad': { phase: 'types', meaning: '`grad(Y, X)` with Y of more than one element, or X not a module value, an op value, a parameter or a host value (a `param`, an earlier save)' },
  'dtype-mismatch': { phase: 'types', meaning: 'a set or module call with a value of another dtype' },
  'dimension-out-of-range': { phase: 'types', meaning: 'a `dim` beyond the tensor\'s rank' },
  'index-out-of-range': { phase: 'types', meaning: 'an index or `k` beyond the size of its dimension' },
  'bad-call': { phase: 'types', meaning: 'a module applied to more inputs than it takes' },
  'prompt-too-long': { phase: 'types', meaning: 'a prompt with more tokens than the model has positions (`config.json` `n_positions` / `max_position_embeddings` / `n_ctx`, or the position-embedding table in the graph)' },
  'bad-token-id': { phase: 'types', meaning: 'a token id outside the model\'s token-embedding table' },
  'usage': { phase: 'API', meaning: 'TS API misuse, e.g. `trace(prompt, fn)` without a function' },
  'async-callback': { phase: 'API', meaning: 'an `async` trace or invoke callback (callbacks must be synchronous; await `model.trace(...)` itself)' },
  'foreign-value': { phase: 'API', meaning: 'a proxy of an earlier trace or of another model used in this trace' },
  'trace-ended': { phase: 'API', meaning: 'a proxy used after its trace has ended (`.save()`, arithmetic, module reads)' },
  'bad-value': { phase: 'API', meaning: 'not a tensor: a string, function, object, `undefined`, non-numeric or cyclic array, or a malformed Tensor' },
  'not-assignable': { phase: 'API', meaning: 'TS API: `set` on a value that is not a module output/input (or a slice of one)' },
  'not-differentiable': { phase: 'compile', meaning: 'a path from X to Y of `grad(Y, X)` goes through an operation with no derivative (named, with its module)' },
  'order': { phase: 'compile', meaning: 'an intervention needs a value the model computes later in the same forward pass' },
  'missing-param': { phase: 'run', meaning: 'a declared `param` with no value given (`--param NAME=FILE.json`, or `params` in TypeScript); nothing runs' },
  'param-mismatch': { phase: 'run', meaning: 'the value given for a `param` has another dtype or shape than declared (both named); nothing runs' },
  'missing-host-value': { phase: 'run', meaning: 'a host value (an earlier trace\'s save, a TS tensor) was not given' },
  'no-tokenizer': { phase: 'run', meaning: 'a text prompt for a model without tokenizer.json (give token ids)' },
  'feeds-empty': { phase: 'run', meaning: 'no prompt, or an empty one' },
  'feeds-padding': { phase: 'run', meaning: 'prompts of different lengths in one batch for a model without `attention_mask`' },
  'feeds-unknown-input': { phase: 'run', meaning: 'the model needs an input onnsight cannot fill (not input_ids, attention_mask, position_ids, token_type_ids)' },
  'feeds-shape': { phase: 'run', meaning: 'a model input whose rank or fixed sizes do not fit the batch' },
  'feeds-dtype': { phase: 'run', meaning: 'a token input that is neither int64 nor int32' },
  'ort-session': { phase: 'run', meaning: 'onnxruntime cannot load a graph (its reason on one line)' },
  'ort-run': { phase: 'run', meaning: 'onnxruntime failed to run a graph (its reason on one line)' },
  'oip-unreachable': { phase: 'run', meaning: 'the Open Inference Protocol server (`--oip URL`, `oip(url, name)`) cannot be reached, or is not ready' },
  'oip-error': { phase: 'run', meaning: 'the Open Inference Protocol server answered a request with an error (its status and message)' },
  'oip-protocol': { phase: 'run', meaning: 'the Open Inference Protocol server answered something that is not a valid v2 response (what is wrong with it)' },
  'oip-model-mismatch': { phase: 'run', meaning: "the server's model is not this model's instrumented or module model (another export, another model): export it again with `nns export-serving`" },
  'oip-needs-compiler': { phase: 'run', meaning: 'a trace the fast path cannot run, on a model whose fast path runs on an OIP server (which cannot compile): run it locally' },
  'oip-unsupported': { phase: 'API', meaning: 'something a model on an OIP server cannot do (generation, gradients, compiling): use a local model' },
  'ort-dtype': { phase: 'run', meaning: 'a tensor type onnxruntime-node cannot feed or return' },
  'model-not-found': { phase: 'model', meaning: 'no model file or folder at the path' },
  'model-not-a-file': { phase: 'model', meaning: 'a folder, FIFO or device where an `.onnx` file was expected' },
  'model-unreadable': { phase: 'model', meaning: 'the model file cannot be read' },
  'model-too-large': { phase: 'model', meaning: 'a graph file over 2 GB (weights must be external data)' },
  'model-empty': { phase: 'model', meaning: 'an empty model file' },
  'model-not-onnx': { phase: 'model', meaning: 'the file is not an ONNX model (the message says what it looks like)' },
  'model-truncated': { phase: 'model', meaning: 'protobuf decoding failed: a truncated or corrupt file' },
  'model-ir-version': { phase: 'model', meaning: 'an ONNX IR version outside the supported range' },
  'model-opset': { phase: 'model', meaning: 'an opset newer than supported' },
  'invalid-model': { phase: 'model', meaning: 'not a valid ONNX graph, or onnxruntime cannot run it (first problem named)' },
  'external-data-missing': { phase: 'model', meaning: 'external data without a location' },
  'external-data-absolute': { phase: 'model', meaning: 'an absolute external data location' },
  'external-data-escapes': { phase: 'model', meaning: 'an external data location outside the model\'s folder' },
  'external-data-short': { phase: 'model', meaning: 'a weights file shorter than the tensors it should hold' },
  'external-data-bad-location': { phase: 'model', meaning: 'an external data location with a control character (NUL, newline, ...)' },
  'external-data-unreadable': { phase: 'model', meaning: 'a weights file that cannot be read (a symlink loop, a path through a file, no permission)' },
  'tokenizer-invalid': { phase: 'model', meaning: 'tokenizer.json cannot be turned into a tokenizer' },
  'json-invalid': { phase: 'model', meaning: 'a JSON file of the model folder cannot be read (not a regular file, over 256 MiB, not JSON)' },
  'variant-key': { phase: 'cache', meaning: 'an invalid name for a rewritten graph' },
  'variant-write': { phase: 'cache', meaning: 'a rewritten graph cannot be written into the cache (next to the weights)' },
  'cache-unwritable': { phase: 'cache', meaning: 'the cache folder or an entry cannot be written (set `ONNSIGHT_CACHE`), or an entry was damaged right after it was written' },
  'cache-entry-gone': { phase: 'cache', meaning: 'a model\'s cache entry was removed while it was in use (`nns cache clean`, or the size bound): load the model again' },
  'bad-cache-max': { phase: 'cache', meaning: '`ONNSIGHT_CACHE_MAX` is not a size' },
  'export-weights': { phase: 'CLI', meaning: '`nns compile`: the weights cannot be placed next to the output (e.g. a full disk); nothing is left behind' },
  'out-dtype': { phase: 'CLI', meaning: '`--out FILE.safetensors`: a saved value of a dtype safetensors has no code for' },
  'cannot-write': { phase: 'CLI', meaning: 'an output file cannot be written' },
  'serving-exists': { phase: 'CLI', meaning: '`nns export-serving`: a model folder it would write is already in the repository (remove it, or choose another `--name`)' },
  'serving-into-model': { phase: 'CLI', meaning: "`nns export-serving`: the output folder is inside the model's own folder (nothing is ever written there)" },
  'no-model': { phase: 'CLI', meaning: 'no model: neither `model "PATH"` in the script nor `--model PATH`' },
  'no-such-file': { phase: 'CLI', meaning: 'the script file does not exist or cannot be read' },
  'bad-script': { phase: 'CLI', meaning: 'the script path is a folder, a FIFO or a device' },
  'unknown-command': { phase: 'CLI', meaning: 'not an `nns` command' },
  'unknown-param': { phase: 'CLI', meaning: '`--param NAME=FILE` for a name the script does not declare (nearest declared name suggested), or not of the form NAME=FILE' },
  'param-unreadable': { phase: 'CLI', meaning: '`--param NAME=FILE`: the file cannot be read or is not a JSON tensor `{dtype, shape, data}` (or an `--out` file holding NAME)' },
  'unknown-flag': { phase: 'CLI', meaning: 'an option the command does not have' },
  'bad-flag': { phase: 'CLI', meaning: 'a value given to an option that takes none, or a value it does not accept (`--progress=loud`)' },
  'missing-value': { phase: 'CLI', meaning: 'an option without its value' },
  'missing-argument': { phase: 'CLI', meaning: 'a missing positional argument (or `compile` without `-o`)' },
  'extra-argument': { phase: 'CLI', meaning: 'an unexpected positional argument' },
  'unknown-pass': { phase: 'CLI', meaning: '`--passes` / `--print-ir-after` name a pass that does not exist (the passes are listed)' },
  'bad-cache-action': { phase: 'CLI', meaning: '`nns cache` with an action other than list, size, clean' },
  'bad-results': { phase: 'CLI', meaning: '`nns plot` given a file that is not the JSON of `nns run --out`' },
  'no-plotting': { phase: 'CLI', meaning: 'plots need the optional dependencies vega, vega-lite and @resvg/resvg-js, which are not installed' },
  'unknown-model': { phase: 'remote', meaning: '`nns run --remote URL --model NAME`: the server serves no model NAME (the served names are listed)' },
  'unauthorized': { phase: 'remote', meaning: 'a missing or wrong API key (`Authorization: Bearer KEY`; the client reads `NNS_API_KEY`)' },
  'over-limit': { phase: 'remote', meaning: "a request over one of the server's limits: request bytes, IR nodes, saved elements, run time, concurrent jobs per key" },
  'bad-request': { phase: 'remote', meaning: 'a request that is not the wire format: not the binary job container, invalid IR JSON, bad tensors' },
  'remote-unreachable': { phase: 'remote', meaning: 'the server cannot be reached, or what answered is not an `nns serve`' },
  'job-failed': { phase: 'remote', meaning: "a job that ended without a result: its worker process died, it was still queued at shutdown" },
  'job-not-found': { phase: 'remote', meaning: "an unknown job id, another key's job, or a result that expired" },
  'remote-unsupported': { phase: 'remote', meaning: 'an API method that needs the model itself (`compile`, `save`, `proto`, `classes`) on a model from `LanguageModel.remote`' },
  'internal': { phase: 'internal', meaning: 'a bug (exit 3): one line, the stack only with `NNS_DEBUG=1`' },
} as const satisfies Record<string, ErrorCodeInfo>;

/**
 * The table's type, named so that a compile error on an unknown code reads
 * "… not assignable to parameter of type 'keyof ErrorCodeTable'": add the code to
 * {@link ERROR_CODES} (src/error-codes.ts) and run `npm run docs:gen`.
 * @category Errors
 */
export interface ErrorCodeTable extends Table {}
type Table = typeof ERROR_CODES;

/**
 * Every error code.
 * @category Errors
 */
export type ErrorCode = keyof ErrorCodeTable;

/** Whether `code` is a known error code (for codes that cross a thread boundary). */
export function isErrorCode(code: string): code is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

/** The Markdown table docs/language.md shows (between its `error-codes` markers). */
export function errorCodeTable(): string {
  const rows = Object.entries(ERROR_CODES).map(([code, e]) => `| \`${code}\` | ${e.phase} | ${e.meaning} |`);
  return ['| code | phase | meaning |', '|---|---|---|', ...rows].join('\n');
}
