/**
 * Progress reporters (src/progress.ts) on a fake clock and a fake stream: how many lines a
 * long sweep prints in plain mode, the bar's ETA and erasing, mode selection; and the events
 * the engine sends while opening a model. No wall-clock timing is asserted.
 */
import { describe, expect, it } from 'vitest';
import { openModel } from '../../src/engine.js';
import { envProgressMode, estimateRemaining, formatDuration, formatPlain, progressReporter, type ProgressEvent } from '../../src/progress.js';
import { main, type CliIO } from '../../src/cli/main.js';
import { MODEL_DIR } from '../helpers/reference.js';

function fakeStream(isTTY: boolean): { write(t: string): void; isTTY: boolean; text: string[] } {
  const text: string[] = [];
  return { isTTY, text, write: (t: string) => { text.push(t); } };
}

/** A sweep of `rows` rows in `chunks` chunks (compile + run events each), spread over `seconds` of fake time. */
function sweep(rows: number, chunks: number, seconds: number): { events: ProgressEvent[]; times: number[] } {
  const events: ProgressEvent[] = [];
  const times: number[] = [];
  const per = rows / chunks;
  for (let c = 0; c < chunks; c++) {
    events.push({ phase: 'compile', done: 2 * c + 1, total: 2 * chunks, rowsDone: Math.round(c * per), rows });
    events.push({ phase: 'run', done: 2 * c + 2, total: 2 * chunks, rowsDone: Math.round((c + 1) * per), rows });
  }
  events.forEach((_, i) => times.push(((i + 1) / events.length) * seconds * 1000));
  return { events, times };
}

function replay(mode: 'bar' | 'plain', isTTY: boolean, events: ProgressEvent[], times: number[]): string[] {
  let now = 0;
  const stream = fakeStream(isTTY);
  const cb = progressReporter({ mode, stream, now: () => now })!;
  events.forEach((e, i) => {
    now = times[i]!;
    cb(e);
  });
  return stream.text;
}

describe('progress', () => {
  it('a 1,538-row sweep over a minute prints a handful of plain lines, not one per row', () => {
    const { events, times } = sweep(1538, 1538, 60);
    expect(events.length).toBe(3076);
    const lines = replay('plain', false, events, times).join('').split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThanOrEqual(5);
    expect(lines.length).toBeLessThanOrEqual(60 / 10 + 1);
    expect(lines[0]).toMatch(/^nns: (compile|run) rows \d+\/1538, \d+%, 10\.0s elapsed, about \d+\.\ds left$/);
    expect(lines.at(-1)).toMatch(/rows 1538\/1538, 100%, 1m00s elapsed \(done\)$/);
    // halfway through, the estimate is the time so far
    const mid = lines.find((l) => / 50%/.test(l));
    if (mid) expect(mid).toMatch(/30\.0s elapsed, about 30\.0s left/);
  });

  it('a short run prints nothing', () => {
    const { events, times } = sweep(10, 2, 0.4); // under the bar's half-second delay and the plain interval
    expect(replay('plain', false, events, times)).toEqual([]);
    expect(replay('bar', true, events, times)).toEqual([]);
  });

  it('the bar redraws in place with an ETA and erases itself at the end', () => {
    const { events, times } = sweep(100, 50, 20);
    const out = replay('bar', true, events, times);
    expect(out.length).toBeGreaterThan(10);
    expect(out.length).toBeLessThanOrEqual(20 / 0.1 + 2); // at most one draw per 100 ms
    expect(out.every((t) => t.startsWith('\r\x1b[2K'))).toBe(true);
    expect(out[0]).toMatch(/^\r\x1b\[2Knns \[#*-*\] \d+% (compile|run) rows \d+\/100 \d+\.\ds ETA \d+\.\ds$/);
    expect(out.at(-1)).toBe('\r\x1b[2K');
  });

  it('chooses the mode: explicit, ONNSIGHT_PROGRESS, else bar on a TTY and plain otherwise', () => {
    expect(progressReporter({ mode: 'none', stream: fakeStream(true) })).toBeUndefined();
    expect(envProgressMode({ ONNSIGHT_PROGRESS: '0' })).toBe('none');
    expect(envProgressMode({ ONNSIGHT_PROGRESS: '1' })).toBe('bar');
    expect(envProgressMode({ ONNSIGHT_PROGRESS: 'plain' })).toBe('plain');
    expect(envProgressMode({})).toBeUndefined();
    const e: ProgressEvent = { phase: 'run', done: 1, total: 4, rowsDone: 1, rows: 4 };
    for (const isTTY of [true, false]) {
      let now = 0;
      const s = fakeStream(isTTY);
      const cb = progressReporter({ mode: 'auto', stream: s, now: () => now })!;
      now = 20_000;
      cb(e);
      expect(s.text[0]!.startsWith('\r'), `isTTY ${isTTY}`).toBe(isTTY);
    }
  });

  it('estimates the time left from the pace so far', () => {
    expect(estimateRemaining({ phase: 'run', done: 1, total: 4, rowsDone: 0, rows: 0 }, 3000)).toBe(9000);
    expect(estimateRemaining({ phase: 'run', done: 0, total: 4, rowsDone: 0, rows: 0 }, 3000)).toBeUndefined();
    expect(formatDuration(65_000)).toBe('1m05s');
    expect(formatDuration(2 * 3600_000 + 3 * 60_000)).toBe('2h03m');
    expect(formatPlain({ phase: 'load', done: 3, total: 4, rowsDone: 0, rows: 0, what: 'inferring shapes' }, 'nns', 12_000, 4000))
      .toBe('nns: load (inferring shapes), 75%, 12.0s elapsed, about 4.0s left');
  });

  it('opening a model reports its loading steps in order', async () => {
    const events: ProgressEvent[] = [];
    await openModel(MODEL_DIR, { onProgress: (e) => events.push(e), fast: false });
    expect(events.map((e) => [e.phase, e.done, e.total])).toEqual([0, 1, 2, 3, 4].map((d) => ['load', d, 4]));
    expect(events[3]!.what).toBe('inferring shapes');
  }, 60_000);

  it('nns rejects an unknown --progress mode (exit 2)', async () => {
    const err: string[] = [];
    const io: CliIO = { out: () => undefined, err: (t) => { err.push(t); }, cwd: process.cwd(), env: {} };
    expect(await main(['run', 'examples/eiffel.nns', '--progress=loud'], io)).toBe(2);
    expect(err.join('\n')).toContain("error[bad-flag]: --progress must be bar, plain or none, not 'loud'");
  });
});
