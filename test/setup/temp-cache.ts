/**
 * Vitest global setup: every test run uses a fresh temporary cache (`ONNSIGHT_CACHE`), never
 * the user's platform cache, and removes it afterwards.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export default function setup(): () => void {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nns-test-cache-'));
  process.env.ONNSIGHT_CACHE = dir;
  return () => fs.rmSync(dir, { recursive: true, force: true });
}
