import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // A fresh temporary ONNSIGHT_CACHE for every run (test/setup/temp-cache.ts).
    globalSetup: ['test/setup/temp-cache.ts'],
    // No progress lines on the stderr of spawned nns processes (tests that want progress ask for it).
    env: { ONNSIGHT_PROGRESS: 'none' },
  },
});
