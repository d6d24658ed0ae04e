// Worker-thread entry of backends/worker.ts: registers tsx's TypeScript loader in this
// thread (no build step; same mechanism as bin/nns.mjs), then runs the TypeScript body.
import { register } from 'tsx/esm/api';

register();
await import('./ort-worker.ts');
