/**
 * The node's HTTP API on 127.0.0.1 with every part real: SQLite in a temp dir, the demo model
 * generated on first use, a real worker process.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { createNodeClient, isAlive } from '../../src/node/client/index.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { pidsWithEnv } from '../helpers/processes.js';
import { REPO as REPO_ROOT } from '../helpers/cli.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { waitFor } from '../helpers/wait-for.js';

let home: string;
let node: RunningNode;
let url: string;

beforeAll(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-api-'));
  node = await startNode(testNodeConfig(home));
  url = node.url;
});
afterAll(async () => {
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

async function collect(id: string): Promise<JobEvent[]> {
  const events: JobEvent[] = [];
  for await (const event of createNodeClient({ url }).jobEvents(id)) events.push(event);
  return events;
}

describe('errors carry stable codes', () => {
  it('malformed JSON is BAD_REQUEST', async () => {
    const response = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"model": "demo", ',
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: 'BAD_REQUEST' } });
  });

  it('a job without a prompt is BAD_REQUEST', async () => {
    const response = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo' }),
    });
    expect(response.status).toBe(400);
    expect(await response.json()).toMatchObject({ error: { code: 'BAD_REQUEST' } });
  });

  it('an unknown job id is JOB_NOT_FOUND for events and cancel', async () => {
    for (const method of ['GET', 'DELETE']) {
      const path = method === 'GET' ? '/v1/jobs/nope/events' : '/v1/jobs/nope';
      // a bodyless DELETE says it is no web page, as rbee's client does (src/node/api/origin.ts)
      const response = await fetch(`${url}${path}`, { method, headers: { 'x-rbee-client': '1' } });
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ error: { code: 'JOB_NOT_FOUND' } });
    }
  });

  it('an unknown route is NOT_FOUND', async () => {
    const response = await fetch(`${url}/v2/nothing`);
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
  });

  it('refuses a bad model ref (MODEL_REF_INVALID) and a name of no model (MODEL_NOT_FOUND) at once', async () => {
    const client = createNodeClient({ url });
    await expect(client.submitJob({ model: 'gopher://x', prompt: 'hi' })).rejects.toMatchObject({
      code: 'MODEL_REF_INVALID',
    });
    await expect(client.submitJob({ model: 'gpt-4o', prompt: 'hi' })).rejects.toMatchObject({
      code: 'MODEL_NOT_FOUND',
    });
  });
});

describe('jobs', () => {
  it('report health', async () => {
    const health = await createNodeClient({ url }).health();
    expect(health).toMatchObject({ state: 'ready', pid: process.pid });
  });

  it('stream narration from the hive and its worker, then tokens, then done', async () => {
    const client = createNodeClient({ url });
    const { id, events: path } = await client.submitJob({
      model: 'demo',
      prompt: 'Hello',
      maxTokens: 8,
      temperature: 0,
      seed: 1,
    });
    expect(path).toBe(`/v1/jobs/${id}/events`);
    const events = await collect(id);
    const sources = new Set(events.flatMap((e) => (e.type === 'narration' ? [e.source] : [])));
    expect(sources).toEqual(new Set(['queen', 'hive', 'worker']));
    // the queen (this node, alone) says where the job runs and why, before the hive narrates
    const first = events.find((e) => e.type === 'narration');
    expect(first).toMatchObject({
      source: 'queen',
      text: expect.stringMatching(/^hive .*: model/) as unknown,
    });
    expect(events.filter((e) => e.type === 'token').length).toBeGreaterThan(0);
    const done = events.at(-1);
    expect(done).toMatchObject({ type: 'done', finishReason: 'length', usage: { completionTokens: 8 } });

    // A subscriber that arrives after the end sees the same history.
    const replay = await collect(id);
    expect(replay).toEqual(events);
  });

  it('cancel ends a running job with JOB_CANCELLED and frees the worker for the next job', async () => {
    const client = createNodeClient({ url });
    const { id } = await client.submitJob({
      model: 'demo',
      prompt: 'Go',
      maxTokens: 100_000,
      temperature: 0,
    });
    const events: JobEvent[] = [];
    for await (const event of client.jobEvents(id)) {
      events.push(event);
      if (event.type === 'token' && events.filter((e) => e.type === 'token').length === 3) {
        await client.cancelJob(id);
      }
    }
    expect(events.at(-1)).toMatchObject({ type: 'error', error: { code: 'JOB_CANCELLED' } });
    const next = await client.submitJob({ model: 'demo', prompt: 'Again', maxTokens: 2 });
    expect((await collect(next.id)).at(-1)).toMatchObject({ type: 'done' });
  });

  it('lists the demo model in the catalog and its worker in the registry', async () => {
    const client = createNodeClient({ url });
    const models = await client.models();
    expect(models.map((m) => m.source)).toContain('demo');
    const workers = await client.workers();
    expect(workers).toHaveLength(1);
    expect(isAlive(workers[0]!.pid)).toBe(true);
  });
});

describe('metrics', () => {
  it('count jobs, tokens and workers in Prometheus text', async () => {
    const response = await fetch(`${url}/metrics`);
    expect(response.headers.get('content-type')).toContain('text/plain');
    const text = await response.text();
    const value = (line: string): number =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(line))
          ?.split(' ')
          .at(-1),
      );
    expect(value('rbee_jobs_total{outcome="done"}')).toBeGreaterThanOrEqual(2);
    expect(value('rbee_jobs_total{outcome="cancelled"}')).toBe(1);
    expect(value('rbee_tokens_generated_total')).toBeGreaterThanOrEqual(10);
    expect(value('rbee_workers{state="idle"}')).toBe(1);
    expect(value('rbee_models_on_disk')).toBe(1);
    expect(value('rbee_time_to_first_token_seconds_count')).toBeGreaterThanOrEqual(2);
    // a gap between each two streamed tokens of a job (the 8-token job alone has 7)
    expect(value('rbee_inter_token_latency_seconds_count')).toBeGreaterThanOrEqual(7);
  });
});

describe('the worker catalog', () => {
  it('records the backends this machine can run, with the binary in use, in SQLite', async () => {
    const client = createNodeClient({ url });
    interface Backend {
      name: string;
      available: boolean;
      binary?: { package: string; version: string };
      build: { engineVersion: string };
    }
    const backends = await waitFor(
      async () => {
        const rows: Backend[] = await client.backends();
        return rows.length > 0 ? rows : undefined;
      },
      { what: 'device detection' },
    );
    const cpu = backends.find((b) => b.name === 'cpu');
    expect(cpu).toMatchObject({ name: 'cpu', available: true });
    const manifest = join(REPO_ROOT, 'node_modules', 'node-llama-cpp', 'package.json');
    const installed = (JSON.parse(readFileSync(manifest, 'utf8')) as { version: string }).version;
    expect(cpu?.build.engineVersion).toBe(installed);
    expect(cpu?.binary?.version).toBe(installed);
  });
});

describe('pulling a model over HTTP', () => {
  it('streams progress, records the model, and counts the bytes in /metrics', async () => {
    const file = await tinyModelPath();
    const body = readFileSync(file);
    const server = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': body.length, 'content-type': 'application/octet-stream' });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const phases: string[] = [];
      const done = await createNodeClient({ url }).pullModel(`http://127.0.0.1:${port}/models/pulled.gguf`, {
        onProgress: (p) => phases.push(p.phase),
      });
      expect(done).toMatchObject({ cached: false, model: { bytes: body.length } });
      expect(phases).toContain('downloading');
      const metrics = await (await fetch(`${url}/metrics`)).text();
      expect(metrics).toContain(`rbee_download_bytes_total ${body.length}`);
      expect(metrics).toMatch(/rbee_download_seconds_total\{outcome="done"\} [\d.]+/);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('keep-alive', () => {
  it('a job with keepAlive 0 unloads its worker right after, and says why', async () => {
    const client = createNodeClient({ url });
    const narration: string[] = [];
    const controller = new AbortController();
    const watching = (async () => {
      for await (const event of client.nodeEvents({ signal: controller.signal })) {
        if (event.type === 'narration') narration.push(event.text);
      }
    })().catch(() => undefined);
    const { id } = await client.submitJob({ model: 'demo', prompt: 'bye', maxTokens: 2, keepAlive: 0 });
    expect((await collect(id)).at(-1)).toMatchObject({ type: 'done' });
    await waitFor(async () => (await client.workers()).length === 0, {
      what: 'the worker to unload',
    });
    await waitFor(() => narration.some((t) => t.includes('keep-alive is 0')), {
      what: 'the unload narration',
    });
    controller.abort();
    await watching;
  });

  it('refuses a malformed keepAlive', async () => {
    const client = createNodeClient({ url });
    const { id } = await client.submitJob({ model: 'demo', prompt: 'x', keepAlive: 'forever' });
    expect((await collect(id)).at(-1)).toMatchObject({ type: 'error', error: { code: 'BAD_REQUEST' } });
  });
});

describe('shutdown', () => {
  it('stops workers and closes the API', async () => {
    const client = createNodeClient({ url });
    const workers = await client.workers();
    await client.shutdown();
    await node.closed;
    await expect(client.health()).rejects.toMatchObject({ code: 'NODE_UNREACHABLE' });
    for (const worker of workers)
      await waitFor(() => !isAlive(worker.pid), { what: `worker ${worker.pid} to exit` });
    expect(pidsWithEnv('RBEE_HOME', home)).toEqual([]);
  });
});
