/**
 * The queen's queue across a cluster of three real `rbee node` processes (loopback, static peers):
 * twenty jobs at once through all three entry nodes all complete, spread over every hive, none lost;
 * a job waiting in the queen's queue when the queen dies (kill -9) asks the next queen and completes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeClient } from '../../src/node/client/index.js';
import type { JobEvent, JobRequest } from '../../src/shared/wire.js';
import type { Sandbox } from '../helpers/cli.js';
import { agreed, startNamedCluster, type NamedNode } from '../helpers/cluster-nodes.js';
import { collect, waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];
let nodes: NamedNode[] = [];

beforeAll(async () => {
  nodes = await startNamedCluster(['alpha', 'beta', 'gamma'], sandboxes);
});

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
});

const JOB: JobRequest = { model: 'demo', prompt: 'Hello', maxTokens: 16, temperature: 0, seed: 3 };

async function run(client: NodeClient, request: JobRequest): Promise<JobEvent[]> {
  const { id } = await client.submitJob(request);
  return collect(client.jobEvents(id));
}

function follow(client: NodeClient, id: string): { events: JobEvent[]; done: Promise<void> } {
  const events: JobEvent[] = [];
  const done = (async () => {
    for await (const event of client.jobEvents(id)) events.push(event);
  })();
  return { events, done };
}

const said = (events: JobEvent[]): string[] =>
  events.flatMap((e) => (e.type === 'narration' ? [`[${e.source} ${e.node}] ${e.text}`] : []));

describe('the queen’s queue in a cluster', () => {
  it('completes 20 concurrent jobs entered on three nodes, on every hive, losing none', async () => {
    const runs = await Promise.all(
      Array.from({ length: 20 }, (_, i) => run(nodes[i % 3]!.client, { ...JOB, prompt: `job ${i}` })),
    );
    for (const events of runs) {
      expect(events.at(-1), [...said(events), JSON.stringify(events.at(-1))].join('\n')).toMatchObject({
        type: 'done',
        usage: { completionTokens: 16 },
      });
    }
    // more jobs than slots: some waited in the queue, told their place
    expect(
      runs.some((events) => said(events).some((t) => /waits in the queue, position \d+ of \d+/.test(t))),
    ).toBe(true);
    const rows = (await Promise.all(nodes.map((n) => n.client.jobHistory({ limit: 100 })))).flat();
    expect(rows).toHaveLength(20);
    for (const row of rows) expect(row.state, JSON.stringify(row)).toBe('done');
    expect(new Set(rows.map((r) => r.hiveName))).toEqual(new Set(['alpha', 'beta', 'gamma']));
  });

  it('completes a job that waited in the queue of a queen killed meanwhile', async () => {
    const queenId = (await nodes[0]!.node.status()).queen?.id;
    const queen = nodes.find((n) => n.id === queenId)!;
    const entry = nodes.find((n) => n !== queen)!;
    // every hive busy with a long job (one slot each), entered on `entry`
    const long = await Promise.all(
      nodes.map(async (n) => {
        const { id } = await entry.client.submitJob({ ...JOB, maxTokens: 100_000, hive: n.name });
        return { id, ...follow(entry.client, id) };
      }),
    );
    await waitFor(() => long.every((l) => l.events.some((e) => e.type === 'token')), {
      what: 'a long job streaming on every hive',
    });

    const { id } = await entry.client.submitJob({ ...JOB, prompt: 'after the queen' });
    const waiting = follow(entry.client, id);
    await waitFor(
      () =>
        said(waiting.events).some(
          (t) => t.startsWith(`[queen ${queen.name}] `) && /waits in the queue/.test(t),
        ),
      {
        what: `the job to wait in ${queen.name}'s queue`,
      },
    );
    // any node lists the queen's queue as she publishes it, and its own waiting job's place
    const listed = await waitFor(
      async () => {
        const answer = await entry.client.clusterJobs({ here: true });
        return answer.queue?.length === 1 ? answer : undefined;
      },
      { what: `${entry.name} to list ${queen.name}'s queue` },
    );
    expect(listed.queue).toEqual([
      expect.objectContaining({
        model: expect.stringMatching(/^demo-tiny-/) as unknown,
        queued: 1,
        interactive: 1,
      }),
    ]);
    expect(listed.jobs.find((j) => j.id === id)).toMatchObject({
      state: 'queued',
      queuePosition: { position: 1, queued: 1 },
    });

    queen.node.kill();
    await queen.node.exited;
    const survivors = nodes.filter((n) => n !== queen);
    await waitFor(() => agreed(survivors.map((n) => n.node)), { what: 'a new queen' });
    // it asks the next queen, whose queue holds it while the surviving hives are still busy
    await waitFor(
      () =>
        said(waiting.events).some(
          (t) => !t.startsWith(`[queen ${queen.name}] `) && /^\[queen \w+\] .*waits in the queue/.test(t),
        ),
      { what: 'the job to wait in the next queen’s queue' },
    );
    // the long jobs end; their slots go to the waiting job
    for (const l of long) await entry.client.cancelJob(l.id).catch(() => undefined);
    await waiting.done;
    expect(waiting.events.at(-1), said(waiting.events).join('\n')).toMatchObject({
      type: 'done',
      usage: { completionTokens: 16 },
    });
    await Promise.all(long.map((l) => l.done));
    for (const row of await entry.client.jobHistory({ limit: 100 })) {
      expect(['done', 'failed', 'cancelled'], JSON.stringify(row)).toContain(row.state);
    }
  });
});
