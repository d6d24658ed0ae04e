/**
 * Giving freed native memory back to the operating system after onnxruntime sessions are
 * released: glibc's `malloc_trim(0)`, called through the optional `koffi` FFI package.
 *
 * Why: onnxruntime allocates prepacked weights, arenas and (without an arena) each run's
 * tensors with `malloc`. glibc raises its mmap threshold dynamically (up to 32 MiB) once a
 * big mapped block is freed, so later blocks of a few MiB come from its heaps, and freeing
 * them keeps the pages in the process: releasing a prepacked session of GPT-2 small left
 * `Pss_Anon` at 516 MB instead of ~250, and an unprepacked session created next mapped the
 * weights file on top of it (bench/README.md, "Memory"). `malloc_trim` returns every free
 * page of every heap (madvise), so the memory of a released session is free for the next
 * one whether that one allocates or maps a file. Node has no binding for it.
 *
 * Measured on GPT-2 small (652 MB of weights): 1–560 ms per call at load 9–17 (a walk over the heaps,
 * most of it for a released prepacked session); called at most once per event-loop turn
 * after releases, never per run.
 *
 * Where glibc or koffi is missing (macOS, musl, an install without optional dependencies) it
 * does nothing; `ONNSIGHT_MALLOC_TRIM=0` turns it off.
 * @module
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';

type Trim = (pad: number) => number;
type Mallopt = (param: number, value: number) => number;
interface Libc { trim: Trim; mallopt: Mallopt }
let libc: Libc | null | undefined;

/** glibc's `malloc_trim` and `mallopt`, or null where there are none (loaded once). */
function libcFunctions(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (process.platform !== 'linux') return libc;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  if (!header?.glibcVersionRuntime) return libc; // musl and others have no malloc_trim
  try {
    const koffi = createRequire(import.meta.url)('koffi') as { load(lib: string): { func(decl: string): Trim & Mallopt } };
    const lib = koffi.load('libc.so.6');
    libc = { trim: lib.func('int malloc_trim(size_t pad)'), mallopt: lib.func('int mallopt(int param, int value)') };
  } catch {
    libc = null; // koffi not installed (optional dependency) or libc not loadable
  }
  return libc;
}

/** `malloc_trim` of the running C library, or null where there is none or `ONNSIGHT_MALLOC_TRIM=0`. */
function trimFunction(): Trim | null {
  if (process.env.ONNSIGHT_MALLOC_TRIM === '0') return null;
  return libcFunctions()?.trim ?? null;
}

/** Whether {@link trimNativeHeap} can give memory back here (tests, benchmarks). */
export function canTrimNativeHeap(): boolean {
  return trimFunction() !== null;
}

let pending = false;
/** Calls made so far (tests, benchmarks). */
export const trimStats = { calls: 0 };

/**
 * Gives the C heap's free pages back to the operating system now; false where it cannot
 * (see the module comment).
 */
export function trimNativeHeap(): boolean {
  const f = trimFunction();
  if (!f) return false;
  trimStats.calls++;
  f(0);
  return true;
}

/**
 * {@link trimNativeHeap} once, after the current event-loop turn: several sessions released
 * together are trimmed for by one call.
 */
export function trimNativeHeapSoon(): void {
  if (pending || !trimFunction()) return;
  pending = true;
  setImmediate(() => {
    pending = false;
    trimNativeHeap();
  }).unref();
}

/** Private resident memory of this process, bytes (`/proc/self/statm`: resident − shared pages), or undefined where unknown. */
export function privateResidentBytes(): number | undefined {
  try {
    const [, resident, shared] = fs.readFileSync('/proc/self/statm', 'utf8').split(' ').map(Number);
    if (!Number.isFinite(resident) || !Number.isFinite(shared)) return undefined;
    return (resident! - shared!) * PAGE;
  } catch {
    return undefined;
  }
}
const PAGE = 4096;

/**
 * Trims inside long work made of many runs (a sweep's batches): {@link trimNativeHeap} when the
 * process's private resident memory grew by more than `slack` bytes since the last trim (or
 * since the first check). Freed run memory that glibc keeps is reused by later runs only in
 * part (a sweep's later batches are bigger; onnxruntime's threads allocate from their own
 * heaps), so without a trim it piles up: a full 12 × 128 patching grid of GPT-2 small grew
 * `Pss_Anon` from 543 to 941 MB over its 81 batches. A check reads `/proc/self/statm` (no page
 * walk); a trim costs milliseconds to tens of ms, so trimming only on growth keeps the
 * cost off the runs.
 */
export class TrimOnGrowth {
  private floor: number | undefined;
  /** Trims made (tests, benchmarks). */
  trims = 0;

  constructor(private readonly slack: number) {}

  /** Call between two runs: trims if memory grew by more than the slack; returns whether it did. */
  check(): boolean {
    if (!trimFunction()) return false;
    const now = privateResidentBytes();
    if (now === undefined) return false;
    if (this.floor === undefined || now < this.floor) {
      this.floor = now;
      return false;
    }
    if (now - this.floor <= this.slack) return false;
    trimNativeHeap();
    this.trims++;
    this.floor = privateResidentBytes() ?? now;
    return true;
  }
}

/** glibc's `M_MMAP_THRESHOLD` parameter of `mallopt`. */
const M_MMAP_THRESHOLD = -3;
/** glibc's largest mmap threshold (64-bit: 32 MiB; `mallopt` refuses more). */
const MMAP_THRESHOLD_MAX = 32 * 2 ** 20;
let fixedThreshold: number | undefined;

/**
 * Fixes glibc's mmap threshold at `bytes` for the rest of the process (`mallopt(M_MMAP_THRESHOLD)`;
 * glibc's dynamic adjustment stops): every block of at least `bytes` is mapped on allocation
 * and unmapped when freed, so a big run's tensors cannot pile up in glibc's heaps.
 *
 * Why: glibc starts at 128 KiB and raises the threshold to the size of each mapped block freed
 * (up to 32 MiB), so after the first run, an unprepacked run's tensors of a few MiB come from
 * its heaps; a run at a long sequence allocates and frees hundreds of them in an order that
 * does not let freed blocks be reused, and the heaps grow far beyond what is live. Measured on
 * the 1.1 B Llama-shaped model at T = 1024 without onnxruntime's arena: one run of the
 * instrumented model peaked 1.8–1.9 GB above the session's own memory, 0.35 GB with the
 * threshold fixed at 4 MiB (plain onnxruntime over the original graph: 0.48 GB).
 * The cost: a mapped block's pages are faulted in again on every allocation.
 *
 * The smallest threshold set wins (a process opening several models keeps the one that
 * protects the biggest); `ONNSIGHT_MMAP_THRESHOLD` (bytes; `0`: leave glibc's dynamic threshold)
 * overrides every call. Returns the threshold in force, or undefined where none was set (not
 * glibc, koffi missing, turned off).
 */
export function fixMmapThreshold(bytes: number): number | undefined {
  const env = process.env.ONNSIGHT_MMAP_THRESHOLD;
  const want = env !== undefined && env !== '' ? Number(env) : bytes;
  if (!Number.isFinite(want) || want <= 0) return fixedThreshold;
  const b = Math.min(Math.round(want), MMAP_THRESHOLD_MAX);
  if (fixedThreshold !== undefined && fixedThreshold <= b) return fixedThreshold;
  const f = libcFunctions();
  if (!f || f.mallopt(M_MMAP_THRESHOLD, b) !== 1) return fixedThreshold;
  fixedThreshold = b;
  return fixedThreshold;
}

/** The mmap threshold {@link fixMmapThreshold} set, or undefined (glibc's dynamic one). */
export function mmapThreshold(): number | undefined {
  return fixedThreshold;
}
