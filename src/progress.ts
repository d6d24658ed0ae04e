/**
 * Progress of long runs: events from the engine (loading a model, compiling and running
 * batch chunks), and reporters on stderr:
 *
 * - `bar`: one line redrawn in place (a TTY), with elapsed time and an ETA; erased when done;
 * - `plain`: a line now and then (default every 10 s, the first after 10 s), for logs and
 *   pipes — a 1,538-row sweep of a minute prints about six lines, not one per row;
 * - `none`: nothing.
 *
 * `auto` (the default) is `bar` on a TTY and `plain` otherwise. The environment variable
 * `ONNSIGHT_PROGRESS` (`bar`, `plain`, `none`; `1` = `bar`, `0` = `none`) sets the default;
 * an explicit mode (`nns run --progress=MODE`) wins. Short runs print nothing: the bar waits
 * half a second before its first draw, plain lines wait their interval.
 * @module
 */

/**
 * One step of a run.
 * @category Progress
 */
export interface ProgressEvent {
  /** What is happening: loading the model, compiling a chunk's graph, or running it. */
  phase: 'load' | 'compile' | 'run';
  /** Steps finished (0 ≤ done ≤ total); an event with `what` announces the step now starting. */
  done: number;
  /** All steps of this sequence (loading: its stages; a trace: chunks × 2, one compile or cache hit and one run each). */
  total: number;
  /** Batch rows finished (0 while loading). */
  rowsDone: number;
  /** All batch rows (0 while loading). */
  rows: number;
  /** The step in words (`decoding the graph`), when there is one. */
  what?: string;
}

/**
 * A progress callback (`TraceOptions.onProgress`).
 * @category Progress
 */
export type ProgressCallback = (e: ProgressEvent) => void;

/**
 * How progress is shown.
 * @category Progress
 */
export type ProgressMode = 'bar' | 'plain' | 'none' | 'auto';

/** The modes `--progress` accepts. */
export const PROGRESS_MODES: readonly ProgressMode[] = ['bar', 'plain', 'none', 'auto'];

/**
 * Where a reporter writes: a stream with `write` (and `isTTY` for `auto`).
 * @category Progress
 */
export interface ProgressStream {
  /**
   * Writes text (a bar redraw starts with `\r`).
   *
   * ```ts
   * const lines: string[] = [];
   * progressReporter({ mode: 'plain', stream: { write: (t) => lines.push(t) } });
   * ```
   */
  write(text: string): unknown;
  isTTY?: boolean;
}

/**
 * Options of {@link progressReporter}.
 * @category Progress
 */
export interface ProgressReporterOptions {
  /** `bar`, `plain`, `none` or `auto` (default: `ONNSIGHT_PROGRESS`, else `auto`). */
  mode?: ProgressMode;
  /** Where to write (default `process.stderr`). */
  stream?: ProgressStream;
  /** Bar: milliseconds before the first draw (default 500). */
  delayMs?: number;
  /** Plain: milliseconds between lines, and before the first (default 10 000). */
  intervalMs?: number;
  /** Bar width in characters (default 30). */
  width?: number;
  /** Label in front (default `nns`). */
  label?: string;
  /** The clock, ms (default `Date.now`; tests pass a fake one). */
  now?: () => number;
}

/** Options of {@link progressBar} (the bar reporter). */
export interface ProgressBarOptions extends Omit<ProgressReporterOptions, 'mode' | 'intervalMs'> {
  /** Draw even when the stream is not a TTY. */
  force?: boolean;
}

/** Seconds, short: `4.2s`, `1m05s`, `2h03m`. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(Math.floor(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/**
 * Estimated milliseconds left, from the pace so far (`elapsed × (1 − f) / f`, with `f` the
 * fraction of steps done); `undefined` before there is anything to go by.
 */
export function estimateRemaining(e: ProgressEvent, elapsedMs: number): number | undefined {
  const f = e.total > 0 ? e.done / e.total : 0;
  if (f <= 0 || elapsedMs <= 0) return undefined;
  if (f >= 1) return 0;
  return (elapsedMs * (1 - f)) / f;
}

function subject(e: ProgressEvent): string {
  const rows = e.rows > 0 ? ` rows ${e.rowsDone}/${e.rows}` : '';
  return `${e.phase}${e.what ? ` (${e.what})` : ''}${rows}`;
}

/** The text of a bar: `nns [#####-----] 50% run rows 8/13 1.5s` (and ` ETA 3.0s` when given). */
export function formatBar(e: ProgressEvent, width = 30, label = 'nns', elapsedMs = 0, etaMs?: number): string {
  const frac = e.total > 0 ? Math.min(1, e.done / e.total) : 0;
  const full = Math.round(frac * width);
  const eta = etaMs === undefined ? '' : ` ETA ${formatDuration(etaMs)}`;
  return `${label} [${'#'.repeat(full)}${'-'.repeat(width - full)}] ${Math.round(frac * 100)}% ${subject(e)} ${(elapsedMs / 1000).toFixed(1)}s${eta}`;
}

/** One plain progress line: `nns: run rows 700/1538, 45%, 12.3s elapsed, about 15.0s left`. */
export function formatPlain(e: ProgressEvent, label = 'nns', elapsedMs = 0, etaMs?: number): string {
  const pct = e.total > 0 ? Math.round(Math.min(1, e.done / e.total) * 100) : 0;
  const left = etaMs === undefined ? '' : `, about ${formatDuration(etaMs)} left`;
  return `${label}: ${subject(e)}, ${pct}%, ${formatDuration(elapsedMs)} elapsed${left}`;
}

/** The mode `ONNSIGHT_PROGRESS` asks for, if any. */
export function envProgressMode(env: Readonly<Record<string, string | undefined>> = process.env): ProgressMode | undefined {
  const v = env.ONNSIGHT_PROGRESS?.trim().toLowerCase();
  if (!v) return undefined;
  if (v === '0' || v === 'off' || v === 'false') return 'none';
  if (v === '1' || v === 'on' || v === 'true') return 'bar';
  return (PROGRESS_MODES as readonly string[]).includes(v) ? (v as ProgressMode) : undefined;
}

/**
 * A progress callback writing to stderr in the given mode, or `undefined` for `none`.
 * Sequences of steps (loading, then each trace) are timed separately: a sequence starts
 * at an event with `done ≤ 1` or another `total`.
 *
 * ```ts
 * await model.trace(sweep, { onProgress: progressReporter({ mode: 'plain' }) });
 * ```
 * @category Progress
 */
export function progressReporter(opts: ProgressReporterOptions = {}): ProgressCallback | undefined {
  const stream = opts.stream ?? process.stderr;
  let mode = opts.mode ?? envProgressMode() ?? 'auto';
  if (mode === 'auto') mode = stream.isTTY ? 'bar' : 'plain';
  if (mode === 'none') return undefined;
  const now = opts.now ?? Date.now;
  const label = opts.label ?? 'nns';
  const bar = mode === 'bar';
  const delay = bar ? opts.delayMs ?? 500 : opts.intervalMs ?? 10_000;
  const every = bar ? 100 : opts.intervalMs ?? 10_000;
  const start = now();
  let boundary = start; // when the current sequence began: the end of the previous one
  let seqStart = start;
  let seqTotal = -1;
  let lastDone = 0;
  let seqOver = true;
  let last = -Infinity;
  let printed = false; // plain: a line of this sequence was printed
  let drawn = false; // bar: a bar is on the screen
  let current: ProgressEvent | undefined;
  let ticker: ReturnType<typeof setInterval> | undefined;
  const draw = (e: ProgressEvent, t: number): void => {
    const elapsed = t - seqStart;
    last = t;
    drawn = true;
    stream.write(`\r\x1b[2K${formatBar(e, opts.width, label, elapsed, estimateRemaining(e, elapsed))}`);
  };
  return (e) => {
    const t = now();
    if (seqOver || e.total !== seqTotal || e.done < lastDone) {
      seqStart = boundary;
      seqTotal = e.total;
      printed = false;
    }
    lastDone = e.done;
    const finished = e.done >= e.total;
    seqOver = finished;
    const elapsed = t - seqStart;
    if (finished) boundary = t;
    if (bar) {
      current = finished ? undefined : e;
      if (finished) {
        if (ticker) clearInterval(ticker);
        ticker = undefined;
        if (drawn) stream.write('\r\x1b[2K');
        drawn = false;
        return;
      }
      // keep the elapsed time moving during long steps (never keeps the process alive)
      if (!ticker && !opts.now) {
        ticker = setInterval(() => {
          const c = current;
          const t2 = now();
          if (c && t2 - start >= delay) draw(c, t2);
        }, 250);
        ticker.unref?.();
      }
      if (t - start < delay || t - last < every) return;
      draw(e, t);
      return;
    }
    // plain: a line per interval (the first after one interval), and a closing line for a sequence that printed
    if (finished) {
      if (printed) stream.write(`${formatPlain(e, label, elapsed)} (done)\n`);
      printed = false;
      return;
    }
    if (t - start < delay || t - last < every) return;
    last = t;
    printed = true;
    stream.write(`${formatPlain(e, label, elapsed, estimateRemaining(e, elapsed))}\n`);
  };
}

/**
 * A callback that draws a bar on stderr, or `undefined` when stderr is not a TTY and
 * drawing is not forced (`ONNSIGHT_PROGRESS=0` turns it off, `=1` forces it).
 */
export function progressBar(opts: ProgressBarOptions = {}): ProgressCallback | undefined {
  const stream = opts.stream ?? process.stderr;
  const env = envProgressMode();
  if (env === 'none') return undefined;
  if (!(opts.force || env === 'bar' || stream.isTTY)) return undefined;
  return progressReporter({ ...opts, stream, mode: 'bar' });
}
