// Child-process entry of src/serve/worker.ts when running from the TypeScript sources:
// registers tsx's loader (same mechanism as bin/nns.mjs), then runs the TypeScript body.
// The built package starts dist/src/serve/worker-main.js directly.
import { register } from 'tsx/esm/api';

register();
await import('./worker-main.ts');
