/**
 * `rbee jobs` while a job waits, as a user runs it: the built CLI against a real node (woken for
 * it) whose one slot a long job holds. `--json` carries the queen's queue (per model, interactive
 * and batch) and the waiting job's place; the plain listing shows them too, and the queue is gone
 * once the job ran.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import { clusterJobsSchema, type ClusterJobs } from '../../src/shared/view.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait-for.js';

let box: Sandbox;
let client: NodeClient;

beforeAll(async () => {
  box = await createSandbox();
  const start = await runCli(['node', 'start', '--json'], { env: box.env });
  expect(start.code, start.stderr).toBe(0);
  client = createNodeClient({ url: box.url });
});
afterAll(async () => {
  await runCli(['node', 'stop', '--json'], { env: box.env });
  await box.cleanup();
});

function follow(id: string): { events: JobEvent[]; done: Promise<void> } {
  const events: JobEvent[] = [];
  const done = (async () => {
    for await (const event of client.jobEvents(id)) events.push(event);
  })();
  return { events, done };
}

async function jobsJson(): Promise<ClusterJobs> {
  const result = await runCli(['jobs', '--json'], { env: box.env });
  expect(result.code, result.stderr).toBe(0);
  return clusterJobsSchema.parse(JSON.parse(result.stdout));
}

describe('rbee jobs with a job in the queue', () => {
  it('shows the queen’s queue and the waiting job’s place, in --json and in the listing', async () => {
    const long = await client.submitJob({ model: 'demo', prompt: 'go on', maxTokens: 100_000 });
    const running = follow(long.id);
    await waitFor(() => running.events.some((e) => e.type === 'token'), {
      what: 'the long job’s first token',
      timeoutMs: 60_000,
    });
    const next = await client.submitJob({
      model: 'demo',
      prompt: 'me next',
      maxTokens: 4,
      priority: 'batch',
    });
    const waiting = follow(next.id);
    await waitFor(
      () => waiting.events.some((e) => e.type === 'narration' && /waits in the queue/.test(e.text)),
      { what: 'the second job to wait' },
    );

    const listed = await jobsJson();
    expect(listed.queue).toEqual([
      { model: expect.stringMatching(/^demo-tiny-/) as unknown, queued: 1, interactive: 0, batch: 1 },
    ]);
    expect(listed.jobs.find((j) => j.id === next.id)).toMatchObject({
      state: 'queued',
      queuePosition: { position: 1, queued: 1 },
    });
    expect(listed.jobs.find((j) => j.id === long.id)).toMatchObject({ state: 'running' });
    expect(listed.jobs.find((j) => j.id === long.id)?.queuePosition).toBeUndefined();

    const plain = await runCli(['jobs'], { env: box.env });
    expect(plain.code, plain.stderr).toBe(0);
    expect(plain.stdout).toMatch(new RegExp(`^${next.id.slice(0, 8)} .* queued 1/1 `, 'm'));
    expect(plain.stdout).toContain('queue: 1 job waits for a slot');
    expect(plain.stdout).toMatch(/^demo-tiny-\S+\s+1\s+0\s+1\s+unknown$/m);

    await client.cancelJob(long.id);
    await Promise.all([running.done, waiting.done]);
    expect(waiting.events.at(-1)).toMatchObject({ type: 'done' });
    const after = await jobsJson();
    expect(after.queue).toEqual([]);
    expect(after.jobs.find((j) => j.id === next.id)).toMatchObject({ state: 'done' });
    expect((await runCli(['jobs'], { env: box.env })).stdout).not.toContain('queue:');
  }, 180_000);
});
