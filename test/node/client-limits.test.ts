/**
 * What one slow or greedy client may cost a real node: an event stream that is never read is
 * dropped once its queue passes the limit, and connections past the cap are answered 503.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

let node: TestNode | undefined;
const sockets: Socket[] = [];
afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  await node?.stop();
  node = undefined;
});

/** A raw connection to the node that sends `head` and then reads nothing until told. */
async function rawClient(url: string, head?: string): Promise<Socket> {
  const { hostname, port } = new URL(url);
  const socket = connect(Number(port), hostname);
  sockets.push(socket);
  socket.on('error', () => undefined); // a reset is one of the outcomes under test
  socket.pause();
  await once(socket, 'connect');
  if (head !== undefined) socket.write(head);
  return socket;
}

/** One request on a connection of its own (fetch would keep pooled connections open). */
function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function metric(text: string, line: string): number {
  const found = text.split('\n').find((l) => l.startsWith(`${line} `));
  return found === undefined ? 0 : Number(found.split(' ').at(-1));
}

async function submitFailingJobs(url: string, count: number): Promise<void> {
  await Promise.all(
    Array.from({ length: count }, () =>
      fetch(`${url}/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        // accepted (a path is a ref), then fails at once (no such file); the view lists it with its
        // 2 KB ref twice (model, error)
        body: JSON.stringify({ model: `/nonexistent/${'x/'.repeat(1000)}model.gguf`, prompt: 'hi' }),
      }).then((r) => r.arrayBuffer()),
    ),
  );
}

/** The node's log line for a dropped event-stream client, if it is there yet. */
function droppedLog(file: string): { route: string; bufferedBytes: number } | undefined {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.includes('dropped an event-stream client'));
  return line === undefined ? undefined : (JSON.parse(line) as { route: string; bufferedBytes: number });
}

const MiB = 2 ** 20;
/** The stated bound on how much the node's process may grow while one client reads nothing. */
const RSS_GROWTH_BOUND = 96 * MiB;

describe('a client that never reads its event stream', () => {
  it('is dropped once 4 MiB wait for it, and the node does not grow without bound', async () => {
    node = await startTestNode('rbee-limits-');
    const url = node.url;
    const socket = await rawClient(url, `GET /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n`);
    let closed = false;
    socket.once('close', () => (closed = true));
    const rssBefore = process.memoryUsage().rss;
    let rssPeak = rssBefore;
    let submitted = 0;

    // Every finished job changes the view's jobs section, which goes whole (up to 1000 jobs) to
    // every /v1/events client: with these jobs the unread stream grows by megabytes a second.
    await waitFor(
      async () => {
        await submitFailingJobs(url, 20);
        submitted += 20;
        rssPeak = Math.max(rssPeak, process.memoryUsage().rss);
        const text = (await get(`${url}/metrics`)).body;
        return metric(text, 'rbee_sse_clients_dropped_total{route="/v1/events"}') === 1;
      },
      { what: 'the node to drop the client', intervalMs: 0 },
    );

    // Read what reached this side: the stream ends there, and the connection closes.
    let received = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (received += chunk));
    socket.resume();
    await waitFor(() => closed, { what: 'the dropped connection to close' });
    expect(received).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(received).toContain('event: snapshot');

    // What waited in the node when it let go: just over the limit, never the whole stream.
    const drop = await waitFor(() => droppedLog(node!.config.paths.nodeLog), { what: 'the drop in the log' });
    expect(drop).toMatchObject({ route: '/v1/events' });
    expect(drop.bufferedBytes).toBeGreaterThan(4 * MiB);
    // the limit plus the one event that crossed it (the jobs section of a few hundred jobs)
    expect(drop.bufferedBytes).toBeLessThan(8 * MiB);

    const growth = rssPeak - rssBefore;
    const told = received.includes('"code":"CLIENT_TOO_SLOW"') ? 'with' : 'without';
    console.info(
      `sse drop: after ${submitted} jobs, ${(drop.bufferedBytes / MiB).toFixed(1)} MiB waited in the node, ` +
        `${(received.length / MiB).toFixed(1)} MiB reached the client (${told} the last error event), ` +
        `RSS grew ${(growth / MiB).toFixed(1)} MiB at most (bound ${RSS_GROWTH_BOUND / MiB} MiB)`,
    );
    expect(growth).toBeLessThan(RSS_GROWTH_BOUND);
    // the node is fine and serves the next client
    expect((await get(`${url}/health`)).status).toBe(200);
  });
});

describe('connections past maxConnections', () => {
  it('are answered 503 TOO_MANY_CONNECTIONS and closed, and served again once one leaves', async () => {
    node = await startTestNode('rbee-limits-', {}, { maxConnections: 3 });
    const url = node.url;
    const idle = [await rawClient(url), await rawClient(url), await rawClient(url)];

    // the node accepts in order: these three hold every place
    const refused = await get(`${url}/health`);
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'TOO_MANY_CONNECTIONS' } });

    idle[0]!.destroy();
    const served = await waitFor(
      async () => {
        const answer = await get(`${url}/metrics`);
        return answer.status === 200 ? answer.body : undefined;
      },
      { what: 'a place to free up' },
    );
    expect(metric(served, 'rbee_http_connections_refused_total')).toBeGreaterThanOrEqual(1);
  });
});
