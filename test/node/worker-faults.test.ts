/**
 * Workers that die, with real processes: kill -9 mid-stream, restarts by policy, the circuit
 * breaker opening after repeated crashes, and draining a busy worker before stopping it.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { testNodeConfig } from '../helpers/test-node.js';
import { startNode, type RunningNode } from '../../src/node/daemon.js';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import type { JobEvent, JobRequest } from '../../src/shared/wire.js';
import { collect, waitFor } from '../helpers/wait-for.js';

let home: string;
let node: RunningNode;
let client: NodeClient;
let narration: string[];
let watch: AbortController;

const workersSchema = z.object({
  workers: z.array(z.object({ id: z.string(), pid: z.number(), state: z.string(), restarts: z.number() })),
  breakers: z.array(z.object({ key: z.string(), failures: z.number(), reason: z.string() })),
});
const workers = (): Promise<z.infer<typeof workersSchema>> => client.get('/v1/workers', workersSchema);

beforeEach(async () => {
  home = mkdtempSync(join(tmpdir(), 'rbee-faults-'));
  writeFileSync(
    join(home, 'config.json'),
    JSON.stringify({
      threads: 1,
      keepAliveS: -1,
      restart: { failures: 3, windowS: 120, cooldownS: 120, baseDelayMs: 50 },
    }),
  );
  node = await startNode(testNodeConfig(home));
  client = createNodeClient({ url: node.url });
  narration = [];
  watch = new AbortController();
  void (async () => {
    for await (const e of client.nodeEvents({ signal: watch.signal }))
      if (e.type === 'narration') narration.push(e.text);
  })().catch(() => undefined);
});
afterEach(async () => {
  watch.abort();
  await node.close('test done');
  rmSync(home, { recursive: true, force: true });
});

/** Starts a job and resolves once it streams, with its worker's pid. */
async function streamingJob(
  request: JobRequest,
): Promise<{ id: string; events: Promise<JobEvent[]>; pid: number }> {
  const { id } = await client.submitJob(request);
  let firstToken!: () => void;
  const streaming = new Promise<void>((resolve) => (firstToken = resolve));
  const events = (async () => {
    const seen: JobEvent[] = [];
    for await (const e of client.jobEvents(id)) {
      seen.push(e);
      if (e.type === 'token') firstToken();
    }
    return seen;
  })();
  await streaming;
  const { workers: list } = await workers();
  return { id, events, pid: list[0]!.pid };
}

describe('a worker killed mid-stream', () => {
  it('goes on with the job on a new worker, is restarted by policy, and the node stays healthy', async () => {
    const job = await streamingJob({ model: 'demo', prompt: 'go', maxTokens: 600 });
    process.kill(job.pid, 'SIGKILL');
    const events = await job.events;
    // the stream does not end with the worker: the job continues where it broke and completes
    expect(events.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 600 } });
    expect(
      events.some((e) => e.type === 'narration' && /WORKER_CRASHED.*continuing the stream/.test(e.text)),
    ).toBe(true);
    await waitFor(() => narration.some((t) => t.includes('restarting in')), { what: 'restart narration' });
    const restarted = await waitFor(
      async () => (await workers()).workers.find((w) => w.pid !== job.pid && w.state === 'idle'),
      { what: 'a restarted worker', timeoutMs: 60_000 },
    );
    // one worker for the model again: the continuation's and the policy's restart are not two
    expect(restarted).toBeDefined();
    await waitFor(async () => (await workers()).workers.every((w) => w.state === 'idle'), {
      what: 'every worker idle',
    });
    expect((await workers()).workers).toHaveLength(1);
    expect((await client.health()).state).toBe('ready');
    // The restarted worker serves the next job.
    const next = await client.submitJob({ model: 'demo', prompt: 'again', maxTokens: 3 });
    const last = (await collect(client.jobEvents(next.id))).at(-1);
    expect(last?.type === 'error' ? last.error : last).toMatchObject({ type: 'done' });
  }, 180_000);

  it.each([
    ['tools', { tools: [{ name: 'noop', parameters: { type: 'object', properties: {} } }] }],
    // a new worker would start the JSON value afresh: the client would get invalid output
    ['a JSON schema', { jsonSchema: { type: 'array', items: { type: 'integer' }, minItems: 100 } }],
  ])(
    'fails a job with %s instead of continuing it mid-answer',
    async (_what, constraint) => {
      const job = await streamingJob({
        model: 'demo',
        messages: [{ role: 'user', content: 'go' }],
        ...constraint,
        maxTokens: 100_000,
      });
      process.kill(job.pid, 'SIGKILL');
      const seen = await job.events;
      // a call cut in two cannot go on under its grammar elsewhere: the client sees the failure
      expect(seen.at(-1)).toMatchObject({ type: 'error', error: { code: 'WORKER_CRASHED' } });
      expect(seen.some((e) => e.type === 'narration' && /continuing the stream/.test(e.text))).toBe(false);
    },
    120_000,
  );

  it('opens the circuit breaker after repeated crashes, visibly, and refuses new loads fast', async () => {
    for (let crash = 1; crash <= 3; crash++) {
      const before = await waitFor(async () => (await workers()).workers.find((w) => w.state === 'idle'), {
        what: `worker before crash ${crash}`,
        timeoutMs: 60_000,
      }).catch(async () => {
        // The first time there is no worker yet: load one.
        await client.spawnWorker('demo');
        return (await workers()).workers[0]!;
      });
      process.kill(before.pid, 'SIGKILL');
      await waitFor(async () => !(await workers()).workers.some((w) => w.pid === before.pid), {
        what: 'the exit',
      });
    }
    await waitFor(() => narration.some((t) => t.includes('circuit open')), { what: 'breaker narration' });
    const state = await workers();
    expect(state.workers).toEqual([]);
    expect(state.breakers).toEqual([expect.objectContaining({ failures: 3 })]);
    const { id } = await client.submitJob({ model: 'demo', prompt: 'x', maxTokens: 2 });
    const last = (await collect(client.jobEvents(id))).at(-1);
    expect(last).toMatchObject({ type: 'error', error: { code: 'WORKER_START_FAILED' } });
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    expect(metrics).toContain('rbee_worker_events_total{kind="breaker_open"} 1');
  }, 180_000);
});

describe('stopping a busy worker', () => {
  it('lets its job finish first (drain), then stops it gracefully', async () => {
    await client.spawnWorker('demo');
    const { workers: list } = await workers();
    // long enough that the stop asked for at the first token comes while it streams: the native
    // token loop generates 40 demo tokens in about 10 ms, which a stop request could arrive after
    const { id } = await client.submitJob({ model: 'demo', prompt: 'drain me', maxTokens: 1000 });
    let stopping: Promise<void> | undefined;
    const events: JobEvent[] = [];
    for await (const event of client.jobEvents(id)) {
      events.push(event);
      // Ask for the stop while the job is streaming.
      if (event.type === 'token') stopping ??= client.stopWorker(list[0]!.id);
    }
    await stopping;
    expect(events.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 1000 } });
    expect((await workers()).workers).toEqual([]);
    expect(narration.some((t) => t.includes('waiting up to'))).toBe(true);
    const metrics = await (await fetch(`${node.url}/metrics`)).text();
    expect(metrics).toContain('rbee_worker_events_total{kind="graceful_stop"} 1');
  });
});
