/**
 * Progress of long runs: events from the engine, and a one-line bar on stderr.
 *
 * The bar draws only when its stream is a TTY (or when forced: option `force`, or
 * `ONNSIGHT_PROGRESS=1`; `ONNSIGHT_PROGRESS=0` turns it off), waits `delayMs` before the
 * first draw so short runs never flicker, redraws at most every 100 ms, and erases itself
 * when the work is done.
 * @module
 */

/** One step of a run. */
export interface ProgressEvent {
  /** What is happening: compiling a chunk's graph, or running it. */
  phase: 'compile' | 'run';
  /** Steps finished (0 ≤ done ≤ total). */
  done: number;
  /** All steps (chunks × 2: one compile or cache hit, one run). */
  total: number;
  /** Batch rows finished. */
  rowsDone: number;
  /** All batch rows. */
  rows: number;
}

/** A progress callback (`TraceOptions.onProgress`). */
export type ProgressCallback = (e: ProgressEvent) => void;

/** Options of {@link progressBar}. */
export interface ProgressBarOptions {
  /** Where to draw (default `process.stderr`). */
  stream?: NodeJS.WriteStream;
  /** Draw even when the stream is not a TTY. */
  force?: boolean;
  /** Milliseconds before the first draw (default 500). */
  delayMs?: number;
  /** Bar width in characters (default 30). */
  width?: number;
  /** Label in front of the bar (default `nns`). */
  label?: string;
}

/** The text of a bar (exported for tests). */
export function formatBar(e: ProgressEvent, width = 30, label = 'nns', elapsedMs = 0): string {
  const frac = e.total > 0 ? Math.min(1, e.done / e.total) : 0;
  const full = Math.round(frac * width);
  const secs = (elapsedMs / 1000).toFixed(1);
  return `${label} [${'#'.repeat(full)}${'-'.repeat(width - full)}] ${Math.round(frac * 100)}% ${e.phase} rows ${e.rowsDone}/${e.rows} ${secs}s`;
}

/**
 * A callback that draws a bar on stderr, or `undefined` when stderr is not a TTY and
 * drawing is not forced.
 */
export function progressBar(opts: ProgressBarOptions = {}): ProgressCallback | undefined {
  const stream = opts.stream ?? process.stderr;
  const env = process.env.ONNSIGHT_PROGRESS;
  if (env === '0') return undefined;
  if (!(opts.force || env === '1' || stream.isTTY)) return undefined;
  const start = Date.now();
  const delay = opts.delayMs ?? 500;
  let last = 0;
  let drawn = false;
  return (e) => {
    const now = Date.now();
    const finished = e.done >= e.total;
    if (finished) {
      if (drawn) stream.write('\r\x1b[2K');
      drawn = false;
      return;
    }
    if (now - start < delay || now - last < 100) return;
    last = now;
    drawn = true;
    stream.write(`\r\x1b[2K${formatBar(e, opts.width, opts.label, now - start)}`);
  };
}
