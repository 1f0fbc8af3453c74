/**
 * The keeper reads every answer of a node through a schema: a body that does not fit (another rbee
 * version, or something else listening on the port) is BAD_RESPONSE, naming the route, never an
 * object with missing fields that fails later somewhere else.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';

let server: Server;
let client: NodeClient;
/** What the fake node answers, by path. */
const answers = new Map<string, string>();

beforeAll(async () => {
  server = createServer((request, response) => {
    const body = answers.get(request.url ?? '') ?? '{}';
    response.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  client = createNodeClient({ url: `http://127.0.0.1:${port}` });
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

describe('a node answer that does not fit its schema', () => {
  it('is BAD_RESPONSE naming the route and the field', async () => {
    answers.set('/v1/models', JSON.stringify({ data: [{ id: 'm1', name: 'x' }] }));
    const error = await client.models().catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'BAD_RESPONSE' });
    expect((error as Error).message).toMatch(/GET \/v1\/models/);
    expect((error as Error).message).toMatch(/model_id/);
  });

  it('is BAD_RESPONSE when the body is not JSON at all', async () => {
    answers.set('/v1/cluster/jobs', '<html>a router page</html>');
    await expect(client.clusterJobs()).rejects.toMatchObject({ code: 'BAD_RESPONSE' });
  });

  it('reads a body that fits, keeping the fields it knows', async () => {
    answers.set(
      '/v1/cluster/workers',
      JSON.stringify({
        workers: [
          {
            id: 'w1',
            hive: 'h1',
            hiveName: 'alpha',
            local: true,
            pid: 10,
            model: 'demo',
            backend: 'cpu',
            device: 0,
            state: 'idle',
            slots: 1,
            slotsBusy: 0,
            tokensPerSecond: 0,
            memoryBytes: 1,
            startedAt: 1,
            lastUsedAt: 1,
          },
        ],
      }),
    );
    expect(await client.clusterWorkers()).toMatchObject([{ id: 'w1', hiveName: 'alpha' }]);
    answers.set('/v1/cluster/workers', JSON.stringify({ workers: [{ id: 'w1' }] }));
    await expect(client.clusterWorkers()).rejects.toMatchObject({ code: 'BAD_RESPONSE' });
  });
});
