/**
 * The queen places jobs across the cluster: three real `rbee node` processes on loopback (static
 * peers), each a hive. A job submitted on one node runs where the queen puts it, and its tokens
 * stream back to the node that received it; cancel there reaches the remote worker.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeClient } from '../../src/node/client/index.js';
import type { ClusterJobs, JobRecord } from '../../src/shared/view.js';
import { messagePrefixHashes } from '../../src/shared/prefix.js';
import type { ChatMessage, JobEvent, JobRequest } from '../../src/shared/wire.js';
import { readFile } from 'node:fs/promises';
import { runCli, type Sandbox } from '../helpers/cli.js';
import { tinyModelPath } from '../helpers/tiny-model.js';
import { serveGated, startServer } from './gguf-http-server.js';
import { startNamedCluster, type NamedNode } from '../helpers/cluster-nodes.js';
import { collect, waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];
const nodes: Record<'alpha' | 'beta' | 'gamma', NamedNode> = {} as never;

beforeAll(async () => {
  const [alpha, beta, gamma] = await startNamedCluster(['alpha', 'beta', 'gamma'], sandboxes);
  Object.assign(nodes, { alpha, beta, gamma });
  // gamma is the only hive with the model warm
  await nodes.gamma.client.spawnWorker('demo');
  await waitFor(
    async () => {
      const workers = await nodes.alpha.client.clusterWorkers();
      return workers.some((w) => w.hive === nodes.gamma.id && w.state === 'idle');
    },
    { what: "gamma's worker to show on alpha" },
  );
});

afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
});

const JOB: JobRequest = {
  model: 'demo',
  prompt: 'Hello from the queen',
  maxTokens: 24,
  temperature: 0,
  seed: 7,
};

async function run(client: NodeClient, request: JobRequest): Promise<JobEvent[]> {
  const { id } = await client.submitJob(request);
  return collect(client.jobEvents(id));
}

const text = (events: JobEvent[]): string =>
  events.flatMap((e) => (e.type === 'token' ? [e.text] : [])).join('');

const localWorkers = async (client: NodeClient): Promise<unknown[]> => client.workers();

describe('a job submitted on one node', () => {
  it('runs on the only hive with the model warm and streams back; the entry node starts no worker', async () => {
    const events = await run(nodes.alpha.client, JOB);
    const done = events.at(-1);
    expect(done, JSON.stringify(events)).toMatchObject({ type: 'done', usage: { completionTokens: 24 } });
    const narration = events.flatMap((e) => (e.type === 'narration' ? [e] : []));
    // the queen's decision, with its reason, then the remote hive's and worker's own narration
    expect(narration[0]).toMatchObject({
      source: 'queen',
      text: expect.stringMatching(/on hive gamma: model warm/) as unknown,
    });
    expect(narration.some((n) => n.source === 'worker' && n.node === 'gamma')).toBe(true);
    expect(narration.some((n) => n.node === 'alpha' && /tokens stream from hive gamma/.test(n.text))).toBe(
      true,
    );
    expect(await localWorkers(nodes.alpha.client)).toEqual([]);

    // the relay changes nothing: the same seeded greedy job run on gamma itself gives the same text
    const direct = await run(nodes.gamma.client, JOB);
    console.log(
      'DBG',
      JSON.stringify(
        direct
          .filter((e) => e.type === 'narration')
          .map((e) => e.type === 'narration' && `[${e.source} ${e.node}] ${e.text}`),
      ),
    );
    expect(text(events)).toBe(text(direct));
    expect(text(events).length).toBeGreaterThan(0);
  });

  it('runs on a pinned hive, which fetches the model first', async () => {
    const events = await run(nodes.beta.client, { ...JOB, hive: 'alpha' });
    expect(events.at(-1), JSON.stringify(events.slice(-3))).toMatchObject({ type: 'done' });
    expect(events.find((e) => e.type === 'narration')).toMatchObject({
      source: 'queen',
      text: expect.stringMatching(/hive alpha: model not on disk, fetched there first/) as unknown,
    });
    expect(await localWorkers(nodes.beta.client)).toEqual([]);
    expect(await localWorkers(nodes.alpha.client)).toHaveLength(1);
  });

  it('`rbee infer --on NAME` pins the hive from the command line', async () => {
    const result = await runCli(
      ['infer', '-m', 'demo', 'Hi', '--max-tokens', '4', '--on', 'gamma', '--json'],
      {
        env: nodes.beta.node.sandbox.env,
      },
    );
    expect(result.code, result.stderr).toBe(0);
    const events = result.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as JobEvent);
    expect(events.find((e) => e.type === 'narration' && e.source === 'queen')).toMatchObject({
      text: expect.stringMatching(/on hive gamma/) as unknown,
    });
    expect(events.at(-1)).toMatchObject({ type: 'done' });
  });

  it('relays the download progress of the hive that fetches the model to the entry node’s client', async () => {
    const tiny = await readFile(await tinyModelPath());
    const server = await startServer();
    let open!: () => void;
    server.route('/relay/tiny.gguf', serveGated(tiny, tiny.length >> 1, new Promise((r) => (open = r))));
    try {
      const client = nodes.beta.client;
      const { id } = await client.submitJob({
        ...JOB,
        model: `${server.origin}/relay/tiny.gguf`,
        hive: 'gamma',
        maxTokens: 4,
      });
      const events: JobEvent[] = [];
      const streamed = (async () => {
        for await (const event of client.jobEvents(id)) events.push(event);
      })();
      // half the file is in, the rest held back: gamma's progress reaches beta's client meanwhile
      await waitFor(
        () =>
          events.some(
            (e) =>
              e.type === 'narration' &&
              e.node === 'gamma' &&
              e.progress !== undefined &&
              e.progress.bytes >= tiny.length >> 1 &&
              e.progress.totalBytes === tiny.length,
          ),
        { what: "gamma's download progress on beta" },
      );
      open();
      await streamed;
      expect(events.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 4 } });
      expect(await localWorkers(nodes.beta.client)).toEqual([]);
    } finally {
      open();
      await server.close();
    }
  });

  it('completes on another hive when its worker dies before the first token', async () => {
    // every tiny worker of the cluster frozen: the job gets no token until its worker is killed
    const workers = await nodes.beta.client.clusterWorkers();
    const frozen = workers.filter((w) => w.model.startsWith('demo-tiny'));
    expect(frozen.length).toBeGreaterThanOrEqual(2);
    for (const w of frozen) process.kill(w.pid, 'SIGSTOP');
    const client = nodes.beta.client;
    const events: JobEvent[] = [];
    let streamed: Promise<void> = Promise.resolve();
    try {
      const { id } = await client.submitJob(JOB);
      streamed = (async () => {
        for await (const event of client.jobEvents(id)) events.push(event);
      })();
      await waitFor(() => events.some((e) => e.type === 'narration' && /generating on worker/.test(e.text)), {
        what: 'the job to reach a frozen worker',
      });
      expect(events.some((e) => e.type === 'token')).toBe(false);
      const victim = frozen.find((w) =>
        events.some((e) => e.type === 'narration' && e.text.includes(`generating on worker ${w.id}`)),
      )!;
      process.kill(victim.pid, 'SIGKILL');
    } finally {
      for (const w of frozen) {
        try {
          process.kill(w.pid, 'SIGCONT');
        } catch {
          // the one killed is gone
        }
      }
    }
    await streamed;
    const said = events.flatMap((e) => (e.type === 'narration' ? [e.text] : []));
    expect(events.at(-1), said.join('\n')).toMatchObject({ type: 'done', usage: { completionTokens: 24 } });
    expect(
      said.some((t) =>
        /hive \w+ failed \(WORKER_CRASHED: .*\) before the first token; placing the job again/.test(t),
      ),
      said.join('\n'),
    ).toBe(true);
    // placed on another hive, with the same text as an uninterrupted run of the same seeded job
    const placements = said.filter((t) => / on hive \w+: /.test(t) || /^hive \w+: /.test(t));
    expect(new Set(placements.map((t) => / hive (\w+)/.exec(t)?.[1])).size).toBe(2);
    expect(text(events)).toBe(text(await run(nodes.gamma.client, { ...JOB, hive: 'gamma' })));
  });

  it('sends a chat’s next turn to the worker that keeps its last turn cached', async () => {
    const client = nodes.beta.client;
    const chat: JobRequest = { model: 'demo', maxTokens: 16, temperature: 0, seed: 5, messages: [] };
    const turn1: ChatMessage[] = [
      { role: 'system', content: `You answer at length. ${'Some context. '.repeat(40)}` },
      { role: 'user', content: 'Tell me about bees.' },
    ];
    const first = await run(client, { ...chat, messages: turn1 });
    expect(first.at(-1)).toMatchObject({ type: 'done' });
    const placedOn = (events: JobEvent[]): string | undefined =>
      events.flatMap((e) =>
        e.type === 'narration' && e.source === 'queen' ? [/on hive (\w+)/.exec(e.text)?.[1]] : [],
      )[0];
    const hive = placedOn(first);
    const answered: ChatMessage[] = [...turn1, { role: 'assistant', content: text(first) }];
    // the worker publishes what its slot keeps (with its next heartbeat)
    const key = messagePrefixHashes(answered).at(-1);
    await waitFor(
      async () => (await client.clusterWorkers()).some((w) => w.prefixes?.some((p) => p.hash === key)),
      {
        what: 'the answered chat among the published prefix keys',
      },
    );

    const second = await run(client, {
      ...chat,
      messages: [...answered, { role: 'user', content: 'And wasps?' }],
    });
    const reason = second.find((e) => e.type === 'narration' && e.source === 'queen');
    expect(reason).toMatchObject({
      text: expect.stringMatching(
        new RegExp(`on hive ${hive}: model warm.*\\d+ tokens of the prompt cached there`),
      ) as unknown,
    });
    const done = second.at(-1);
    expect(done).toMatchObject({ type: 'done' });
    expect(done?.type === 'done' && (done.usage.cachedPromptTokens ?? 0)).toBeGreaterThan(100);
  });

  it('ends with NOT_FOUND, naming the hives, when pinned to a hive that does not exist', async () => {
    const events = await run(nodes.beta.client, { ...JOB, hive: 'zeta' });
    expect(events.at(-1)).toMatchObject({
      type: 'error',
      error: { code: 'NOT_FOUND', message: expect.stringMatching(/no hive named zeta/) as unknown },
    });
  });

  it('is cancelled on the remote hive when cancelled on the entry node, freeing the slot', async () => {
    const client = nodes.beta.client;
    const { id } = await client.submitJob({ ...JOB, hive: 'gamma', maxTokens: 100_000 });
    const events: JobEvent[] = [];
    const streamed = (async () => {
      for await (const event of client.jobEvents(id)) events.push(event);
    })();
    await waitFor(() => events.some((e) => e.type === 'token'), { what: 'the first token' });
    const busy = async (): Promise<number> => {
      const workers = await nodes.gamma.client.workers();
      return workers.reduce((sum, w) => sum + w.slotsBusy, 0);
    };
    // the worker reports its busy slots with its heartbeat
    await waitFor(async () => (await busy()) === 1, { what: "gamma's worker to report the job's slot busy" });
    await client.cancelJob(id);
    await streamed;
    expect(events.at(-1)).toMatchObject({ type: 'error', error: { code: 'JOB_CANCELLED' } });
    await waitFor(async () => (await busy()) === 0, { what: "gamma's slot to be freed" });
  });

  it('goes on from another worker when its worker is killed mid-stream, where the stream broke', async () => {
    const long: JobRequest = { ...JOB, prompt: 'A long answer, please', maxTokens: 1500 };
    const reference = await run(nodes.alpha.client, long);
    expect(reference.at(-1)).toMatchObject({ type: 'done', usage: { completionTokens: 1500 } });

    const client = nodes.alpha.client;
    const { id } = await client.submitJob(long);
    const events: JobEvent[] = [];
    let killed = false;
    for await (const event of client.jobEvents(id)) {
      events.push(event);
      // a few dozen tokens in: the seam falls inside the answer, not at its start
      if (!killed && events.filter((e) => e.type === 'token').length === 40) {
        killed = true;
        const workerId = events
          .flatMap((e) => (e.type === 'narration' ? [/generating on worker (\S+)/.exec(e.text)?.[1]] : []))
          .find((w) => w !== undefined)!;
        const workers = await client.clusterWorkers();
        process.kill(workers.find((w) => w.id === workerId)!.pid, 'SIGKILL');
      }
    }
    const done = events.at(-1);
    expect(done, JSON.stringify(events.filter((e) => e.type !== 'token'))).toMatchObject({
      type: 'done',
      usage: { completionTokens: 1500 },
    });
    const said = events.flatMap((e) => (e.type === 'narration' ? [e.text] : []));
    expect(
      said.some((t) =>
        /failed \(WORKER_CRASHED: .*\) after \d+ tokens; continuing the stream on hive/.test(t),
      ),
      said.join('\n'),
    ).toBe(true);
    // where the stream broke it goes on as the uninterrupted run did: nothing repeated or lost
    const seam = events.findIndex((e) => e.type === 'narration' && /continuing the stream/.test(e.text));
    const sent = text(events.slice(0, seam));
    expect(sent.length).toBeGreaterThan(0);
    const continued = text(events);
    const uninterrupted = text(reference);
    expect(uninterrupted.startsWith(sent)).toBe(true);
    // The next tokens are the uninterrupted run's: a token repeated or lost at the seam shows right
    // there. Not the whole answer: the new worker evaluates the sent tokens in one batch, the first
    // one by one, and on CPUs whose kernels sum a batch differently from a single token (llama.cpp's
    // AVX-512 variants) the last bits of the logits differ, which the random test model's near-ties
    // turn into another token further on (seen at fixed places of this answer, 444 and 685
    // characters in, wherever the seam fell; on an AVX2 machine the whole answers were equal).
    const next = 4;
    expect(continued.slice(sent.length, sent.length + next)).toBe(
      uninterrupted.slice(sent.length, sent.length + next),
    );
  });

  it('leaves every job in the entry nodes’ jobs tables in a final state, with where it ran', async () => {
    const listed = await runCli(['jobs', 'ls', '--here', '--json', '--limit', '100'], {
      env: nodes.alpha.node.sandbox.env,
    });
    expect(listed.code, listed.stderr).toBe(0);
    const alphaJobs: JobRecord[] = (JSON.parse(listed.stdout) as ClusterJobs).jobs;
    // the first job of this file: accepted on alpha, run on gamma, placed for a warm worker
    expect(alphaJobs.at(-1)).toMatchObject({
      state: 'done',
      hiveName: 'gamma',
      hive: nodes.gamma.id,
      reason: expect.stringMatching(/model warm/) as unknown,
      completionTokens: 24,
    });
    const betaJobs = await nodes.beta.client.jobHistory({ limit: 100 });
    expect(betaJobs.map((j) => j.state)).toContain('cancelled');
    expect(betaJobs.find((j) => j.errorCode === 'NOT_FOUND')).toMatchObject({ state: 'failed' });
    for (const job of [...alphaJobs, ...betaJobs]) {
      expect(['done', 'failed', 'cancelled'], JSON.stringify(job)).toContain(job.state);
    }
  });
});
