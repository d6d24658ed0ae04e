/**
 * Limits of `nns serve` (each configurable by a flag) and API keys: the key file, and the
 * constant-time check (SHA-256 of the offered key against each stored hash with
 * `crypto.timingSafeEqual`; equal lengths by construction, every stored key compared).
 * @module
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { usageError } from '../errors.js';

/** What one server accepts. */
export interface Limits {
  /** Bytes of one request body (default 16 MiB). */
  maxRequestBytes: number;
  /** IR nodes of one job (default 20,000). */
  maxIrNodes: number;
  /** Elements saved by one job (default 64 M). */
  maxSavedElements: number;
  /** Run time of one job, ms (default 60 s). Past it, its worker is stopped and the job fails. */
  maxRunMs: number;
  /** Jobs one key may have queued or running (default 32). */
  maxJobsPerKey: number;
  /** Jobs the server holds queued in all (default 1024). */
  maxQueued: number;
  /** How long a finished job's result can be fetched, ms (default 10 min). */
  resultTtlMs: number;
  /** Most jobs run together in one forward pass (default 16; 1 turns cross-request batching off). */
  maxBatch: number;
  /**
   * Longest wait, ms, for the clients of a batch that just finished to send their next jobs
   * before the next batch starts (default 100; 0 = never wait). The wait is only made after a
   * batch of several jobs, is at most a quarter of that batch's run time, and ends as soon as
   * as many jobs as that batch had, plus those already queued when it ended, are queued (at
   * most {@link Limits.maxBatch}) — a lone client never waits.
   */
  batchWaitMs: number;
  /** Bytes of finished results kept in all (default 1 GiB); past it the oldest expire early. */
  maxStoredResultBytes: number;
}

/** The defaults (docs/remote.md lists them). */
export const DEFAULT_LIMITS: Readonly<Limits> = {
  maxRequestBytes: 16 * 2 ** 20,
  maxIrNodes: 20_000,
  maxSavedElements: 64 * 2 ** 20,
  maxRunMs: 60_000,
  maxJobsPerKey: 32,
  maxQueued: 1024,
  resultTtlMs: 10 * 60_000,
  maxBatch: 16,
  batchWaitMs: 100,
  maxStoredResultBytes: 2 ** 30,
};

const sha = (s: string): Buffer => crypto.createHash('sha256').update(s, 'utf8').digest();

/** A set of API keys, stored as hashes. */
export class KeySet {
  private readonly hashes: Buffer[];

  /** @param keys the keys (empty: every request is let in, as key id `''`) */
  constructor(keys: readonly string[]) {
    this.hashes = keys.map(sha);
  }

  /** Whether keys are required. */
  get required(): boolean {
    return this.hashes.length > 0;
  }

  /**
   * The id of a key (a short hash prefix, never the key) when it is one of ours, else undefined.
   * Compares against every stored hash in constant time.
   */
  check(offered: string): string | undefined {
    const h = sha(offered);
    let hit = -1;
    for (let i = 0; i < this.hashes.length; i++) if (crypto.timingSafeEqual(h, this.hashes[i]!) && hit < 0) hit = i;
    return hit < 0 ? undefined : `key-${this.hashes[hit]!.toString('hex').slice(0, 12)}`;
  }

  /**
   * Reads a key file: one key per line; blank lines and lines starting with `#` are skipped.
   * @param shown the name messages use (the path as the user gave it)
   * @throws NnsError (usage) when the file cannot be read or holds no key
   */
  static fromFile(file: string, shown = file): KeySet {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (e) {
      throw usageError('no-such-file', `cannot read the key file '${shown}': ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const keys = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    if (keys.length === 0) throw usageError('bad-flag', `the key file '${shown}' holds no key (one key per line)`);
    return new KeySet(keys);
  }
}
