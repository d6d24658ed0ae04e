/**
 * Peak physical memory of the benchmark process as PSS (proportional set size), sampled by a
 * separate process.
 *
 * RSS counts a file page once per mapping: every onnxruntime session that maps the external
 * weights file adds the whole file to RSS although the pages exist once. PSS divides each
 * page by the number of processes mapping it and counts it once per process however often
 * this process maps it, so PSS of one process = its private memory + its share of files.
 *
 * Method: a child process (node, spawned once, IPC channel) reads `/proc/<pid>/smaps_rollup`
 * of the benchmark process every `intervalMs` (default 200 ms) and keeps the peak `Pss`
 * (with the `Pss_Anon` / `Pss_File` split of that sample). A child, not a timer or a worker
 * of the benchmark process: onnxruntime's session creation blocks the JS thread for seconds,
 * and the sampler's CPU time (the kernel walks the page tables on every read) must not count
 * in the process CPU times the benchmark reports. Besides the timer, the harness asks for
 * a sample right before and right after every measurement ({@link PssSampler.mark}), so no
 * measurement's end state is missed between ticks. A peak that lasts less than one
 * interval between two marks can be missed; allocations of weights and arenas last for the
 * whole session, so peaks of interest last seconds.
 *
 * Each sample also counts toward the peak of the current *side* ({@link PssSampler.side}):
 * the harness switches to `baseline` while a plain onnxruntime session of its own is alive
 * (created, run, released and trimmed) and back to `onnsight` after, so the report can tell
 * the baseline's own peak from onnsight's ({@link PssSampler.sidePeaks}).
 *
 * Linux only: elsewhere {@link PssSampler.start} returns undefined and no PSS is reported.
 * @module
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/** One PSS reading, MB (10⁶ bytes, like `weights_mb`). */
export interface PssReading {
  /** Total PSS. */
  pss: number;
  /** Private memory share (`Pss_Anon`: heaps, arenas, prepacked weights). */
  anon: number;
  /** Mapped files share (`Pss_File`: the weights file when memory-mapped, code). */
  file: number;
}

/** What {@link PssSampler.mark} answers. */
export interface PssMark {
  /** The reading taken now. */
  now: PssReading;
  /** The highest PSS since the last reset (timer samples and marks), with its split. */
  peak: PssReading;
  /** Samples taken since the sampler started. */
  samples: number;
}

/** Parses `smaps_rollup` text into a reading (MB), or undefined when a field is missing. */
export function parseSmapsRollup(text: string): PssReading | undefined {
  const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)\\s+kB`, 'm').exec(text)?.[1] ?? NaN);
  const r = { pss: kb('Pss'), anon: kb('Pss_Anon'), file: kb('Pss_File') };
  if (!Object.values(r).every(Number.isFinite)) return undefined;
  return { pss: (r.pss * 1024) / 1e6, anon: (r.anon * 1024) / 1e6, file: (r.file * 1024) / 1e6 };
}

// The child: plain JavaScript run by `node -e` (no TypeScript loader: starts in ~40 ms).
const CHILD = `
const fs = require('fs');
const [pid, interval] = process.argv.slice(1).map(Number);
const file = '/proc/' + pid + '/smaps_rollup';
const kb = (t, k) => Number((new RegExp('^' + k + ':\\\\s+(\\\\d+)', 'm').exec(t) || [])[1]);
let peak = null, samples = 0, side = 'onnsight';
const sides = {};
function read() {
  let t;
  try { t = fs.readFileSync(file, 'utf8'); } catch { process.exit(0); }
  const r = { pss: kb(t, 'Pss'), anon: kb(t, 'Pss_Anon'), file: kb(t, 'Pss_File') };
  samples++;
  if (!peak || r.pss > peak.pss) peak = r;
  if (!sides[side] || r.pss > sides[side].pss) sides[side] = r;
  return r;
}
read();
const timer = setInterval(read, interval);
process.on('message', (m) => {
  if (m.op === 'reset') { peak = null; const now = read(); process.send({ id: m.id, now, peak, samples }); }
  else if (m.op === 'mark') { const now = read(); process.send({ id: m.id, now, peak, samples }); }
  else if (m.op === 'side') { read(); side = m.side; const now = read(); process.send({ id: m.id, now, peak, samples, sides }); }
  else if (m.op === 'stop') { clearInterval(timer); process.disconnect(); }
});
process.on('disconnect', () => process.exit(0));
`;

type Kb = { pss: number; anon: number; file: number };
type Raw = { id: number; now: Kb; peak: Kb; samples: number; sides?: Record<string, Kb> };
const mb = (r: Kb): PssReading => ({ pss: (r.pss * 1024) / 1e6, anon: (r.anon * 1024) / 1e6, file: (r.file * 1024) / 1e6 });

/** A running PSS sampler of this process (see the module comment). */
export class PssSampler {
  private next = 0;
  private readonly waiting = new Map<number, (r: Raw) => void>();

  private constructor(private readonly child: ChildProcess) {
    child.on('message', (m: Raw) => {
      const w = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      w?.(m);
    });
  }

  /** Starts sampling this process every `intervalMs`; undefined where `/proc/self/smaps_rollup` does not exist. */
  static async start(intervalMs = 200): Promise<PssSampler | undefined> {
    if (!fs.existsSync('/proc/self/smaps_rollup')) return undefined;
    const child = spawn(process.execPath, ['-e', CHILD, String(process.pid), String(intervalMs)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    const s = new PssSampler(child);
    await s.mark(); // the child is up
    return s;
  }

  private ask(op: 'mark' | 'reset' | 'side', side?: string): Promise<PssMark & { sides?: Record<string, PssReading> }> {
    const id = this.next++;
    return new Promise((resolve, reject) => {
      const fail = (): void => reject(new Error('PSS sampler exited'));
      this.child.once('exit', fail);
      this.waiting.set(id, (r) => {
        this.child.off('exit', fail);
        resolve({
          now: mb(r.now), peak: mb(r.peak), samples: r.samples,
          ...(r.sides ? { sides: Object.fromEntries(Object.entries(r.sides).map(([k, v]) => [k, mb(v)])) } : {}),
        });
      });
      this.child.send({ op, id, side });
    });
  }

  /**
   * From now on, samples count toward `side`'s peak too (the sample taken now, after the
   * switch, included; one taken right before it closes the previous side). Sides start as
   * `onnsight`.
   */
  async side(side: string): Promise<PssMark> {
    const r = await this.ask('side', side);
    this.lastSides = r.sides ?? {};
    return r;
  }

  private lastSides: Record<string, PssReading> = {};

  /** The peak of every side so far, as of the last {@link side} call (call `side` once more at the end). */
  sidePeaks(): Record<string, PssReading> {
    return { ...this.lastSides };
  }

  /** Takes a sample now; returns it and the peak since the last reset. */
  mark(): Promise<PssMark> {
    return this.ask('mark');
  }

  /** Starts a new peak (from a sample taken now); returns that sample. */
  reset(): Promise<PssMark> {
    return this.ask('reset');
  }

  /** Stops the child. */
  stop(): void {
    if (this.child.connected) this.child.send({ op: 'stop', id: -1 });
    this.child.unref();
  }
}
