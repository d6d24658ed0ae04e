/**
 * A minimal HTTP server around the OIP route module (src/serve/oip.ts), for tests that
 * exercise it without `nns serve`'s job machinery: models by name, opened in this process.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { openModel } from '../../src/engine.js';
import type { ModelContext } from '../../src/compile.js';
import { oipRoute } from '../../src/serve/oip.js';

export interface TestOipServer {
  url: string;
  /** Opened models by name (the same ModelContext the handler runs). */
  context(name: string): Promise<ModelContext>;
  close(): Promise<void>;
}

/** Serves `models` (NAME → model path) on 127.0.0.1, a free port. */
export async function startTestOipServer(models: Readonly<Record<string, string>>): Promise<TestOipServer> {
  const opened = new Map<string, Promise<ModelContext>>();
  const context = (name: string): Promise<ModelContext> => {
    let p = opened.get(name);
    if (!p) opened.set(name, (p = openModel(models[name]!)));
    return p;
  };
  const registry = {
    names: () => Object.keys(models),
    get: (name: string) => (name in models ? { name, context: () => context(name) } : undefined),
  };
  const readBody = (req: http.IncomingMessage, max: number): Promise<Buffer> => new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on('data', (c: Buffer) => {
      n += c.length;
      if (n > max) reject(Object.assign(new Error('too large'), { status: 413 }));
      else chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
  const server = http.createServer((req, res) => {
    const p = new URL(req.url ?? '/', 'http://x').pathname;
    if (!p.startsWith(oipRoute.prefix)) {
      res.writeHead(404).end();
      return;
    }
    oipRoute.handler(req, res, { registry, readBody: (max = 2 ** 30) => readBody(req, max) }).then((done) => {
      if (!done && !res.headersSent) res.writeHead(404).end();
    }, () => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":"internal error"}');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    context,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await Promise.all([...opened.values()].map(async (p) => (await p).backend.release()));
    },
  };
}
