/**
 * Test runner settings. No test checks how long something takes: the timeouts below only
 * stop a hung test, and are generous so that a loaded machine (2 cores shared by several
 * suites) never fails a correct test. Property tests are sized by run count, not by time.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // A fresh temporary ONNSIGHT_CACHE for every run (test/setup/temp-cache.ts).
    globalSetup: ['test/setup/temp-cache.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    teardownTimeout: 60_000,
    // No progress lines on the stderr of spawned nns processes (tests that want progress ask for it).
    env: { ONNSIGHT_PROGRESS: 'none' },
  },
});
