/**
 * Admission on a node alone (its own queen): with one slot busy, the next job waits in the queue
 * (narrated with its position) and then runs; past the queue's bound a job is refused with
 * QUEUE_FULL, HTTP 429 and Retry-After, on the job API and the OpenAI routes alike.
 */
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { startTestNode, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

let node: TestNode;
let client: NodeClient;

beforeAll(async () => {
  node = await startTestNode('rbee-queue-', {}, { threads: 1, slots: 1, maxQueued: 1 });
  client = createNodeClient({ url: node.url });
  await client.spawnWorker('demo');
});

afterAll(async () => {
  await node?.stop();
});

/** Follows a job's events as they come. */
function follow(id: string): { events: JobEvent[]; done: Promise<void> } {
  const events: JobEvent[] = [];
  const done = (async () => {
    for await (const event of client.jobEvents(id)) events.push(event);
  })();
  return { events, done };
}

describe('the queue of a node alone', () => {
  it('holds a job while the slot is busy, says where it stands, and runs it next', async () => {
    const long = await client.submitJob({ model: 'demo', prompt: 'go on', maxTokens: 100_000 });
    const running = follow(long.id);
    await waitFor(() => running.events.some((e) => e.type === 'token'), { what: 'the first token' });

    const next = await client.submitJob({ model: 'demo', prompt: 'me next', maxTokens: 8 });
    const waiting = follow(next.id);
    await waitFor(
      () =>
        waiting.events.some(
          (e) => e.type === 'narration' && /waits in the queue, position 1 of 1/.test(e.text),
        ),
      { what: 'the queued narration' },
    );
    expect((await client.jobHistory()).find((j) => j.id === next.id)).toMatchObject({ state: 'queued' });
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    expect(metrics).toMatch(/^rbee_queue_jobs\{model="demo-tiny-[0-9a-f]{8}"\} 1$/m);

    await client.cancelJob(long.id);
    await waiting.done;
    expect(waiting.events.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 8 } });
    await running.done;
    expect(running.events.at(-1)).toMatchObject({ type: 'error', error: { code: 'JOB_CANCELLED' } });
  });

  it('refuses a job past the bound with 429 and Retry-After, on the job API and the OpenAI routes', async () => {
    const long = await client.submitJob({ model: 'demo', prompt: 'go on', maxTokens: 100_000 });
    const running = follow(long.id);
    await waitFor(() => running.events.some((e) => e.type === 'token'), { what: 'the first token' });
    const queued = await client.submitJob({ model: 'demo', prompt: 'in line', maxTokens: 4 });
    const inLine = follow(queued.id);

    const refused = await fetch(`${node.url}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'demo', prompt: 'one too many', maxTokens: 4 }),
    });
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(await refused.json()).toMatchObject({ error: { code: 'QUEUE_FULL' } });

    const openai = new OpenAI({ baseURL: `${node.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const error = await openai.chat.completions
      .create({ model: 'demo', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4 })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(error).toBeInstanceOf(OpenAI.APIError);
    expect((error as InstanceType<typeof OpenAI.APIError>).status).toBe(429);
    expect((error as InstanceType<typeof OpenAI.APIError>).headers?.get('retry-after')).toMatch(/^\d+$/);

    await client.cancelJob(long.id);
    await Promise.all([running.done, inLine.done]);
    expect(inLine.events.at(-1)).toMatchObject({ type: 'done' });
    // the refused jobs are rows too, each ended with its reason
    const rows = await client.jobHistory({ limit: 100 });
    expect(rows.filter((r) => r.errorCode === 'QUEUE_FULL')).toHaveLength(2);
    for (const row of rows) expect(['done', 'failed', 'cancelled']).toContain(row.state);
  });
});
