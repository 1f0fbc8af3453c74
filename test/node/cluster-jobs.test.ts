/**
 * The jobs of the whole cluster, on two real nodes in one cluster on loopback (static peers): the
 * jobs table of each node is asked over the cluster, so `rbee jobs ls | show | cancel` on one node
 * see and cancel a job that entered through the other, while a client with an API key still sees
 * only its own jobs. Clients on other machines are requests through the node's real routes
 * (`inject` with a LAN address), so no packet leaves this machine.
 */
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { InjectOptions, LightMyRequestResponse } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNodeClient, type NodeClient } from '../../src/node/client/index.js';
import { startNode } from '../../src/node/daemon.js';
import type { ClusterJobCancel, ClusterJobRecord, ClusterJobs } from '../../src/shared/view.js';
import type { JobEvent } from '../../src/shared/wire.js';
import { loneNodeEnv, runCli } from '../helpers/cli.js';
import { startTestNode, testNodeConfig, type TestNode } from '../helpers/test-node.js';
import { waitFor } from '../helpers/wait-for.js';

const LAN = '10.0.0.5';
const CONFIG = { nodeName: 'alpha', threads: 1 };

let alpha: TestNode;
let beta: TestNode;
let clientA: NodeClient;
let clientB: NodeClient;
let betaId: string;

/** Starts beta in the cluster alpha made: alpha's cluster key, alpha as its static peer. */
async function startBeta(): Promise<TestNode> {
  const home = mkdtempSync(join(tmpdir(), 'rbee-jobs-beta-'));
  copyFileSync(alpha.config.paths.clusterKey, join(home, 'cluster.key'));
  writeFileSync(join(home, 'config.json'), JSON.stringify({ ...CONFIG, nodeName: 'beta' }));
  const status = await clientA.cluster();
  const config = testNodeConfig(home, { peers: status.listen.filter((a) => a.includes('127.0.0.1')) });
  const node = await startNode(config);
  return {
    node,
    home,
    url: node.url,
    config,
    async stop() {
      await node.close('test done');
      rmSync(home, { recursive: true, force: true });
    },
  };
}

beforeAll(async () => {
  alpha = await startTestNode('rbee-jobs-alpha-', {}, CONFIG);
  clientA = createNodeClient({ url: alpha.url });
  await waitFor(async () => (await clientA.cluster()).state === 'running', { what: 'alpha in its cluster' });
  beta = await startBeta();
  clientB = createNodeClient({ url: beta.url });
  await waitFor(
    async () => {
      const [a, b] = await Promise.all([clientA.cluster(), clientB.cluster()]);
      const live = a.members.some((m) => m.live) && b.members.some((m) => m.live);
      return live && a.queen !== null && a.queen.id === b.queen?.id;
    },
    { what: 'alpha and beta to agree on a queen' },
  );
  betaId = (await clientB.cluster()).self.id;
}, 60_000);

afterAll(async () => {
  await beta?.stop();
  await alpha?.stop();
});

function request(node: TestNode, options: InjectOptions, key?: string): Promise<LightMyRequestResponse> {
  const host = new URL(node.url).host;
  return node.node.inject({
    ...options,
    ...(key === undefined ? {} : { remoteAddress: LAN }),
    headers: {
      host,
      'x-rbee-client': '1',
      ...(key === undefined ? {} : { authorization: `Bearer ${key}` }),
      ...options.headers,
    },
  });
}

async function createKey(node: TestNode, name: string): Promise<string> {
  return (await request(node, { method: 'POST', url: '/v1/keys', payload: { name } })).json<{ key: string }>()
    .key;
}

/** Submits a job as `key` (a client on another machine) or as the machine's own user; waits for its end. */
async function finishedJob(node: TestNode, key: string | undefined, hive: string): Promise<string> {
  const submitted = await request(
    node,
    { method: 'POST', url: '/v1/jobs', payload: { model: 'demo', prompt: 'Hi', maxTokens: 4, hive } },
    key,
  );
  expect(submitted.statusCode, submitted.body).toBe(202);
  const { id } = submitted.json<{ id: string }>();
  const client = createNodeClient({ url: node.url });
  for await (const event of client.jobEvents(id))
    if (event.type === 'error') throw new Error(event.error.message);
  return id;
}

/** `rbee jobs ARGS --json` against `node`, as its machine's user. */
const cli = (node: TestNode, ...args: string[]): ReturnType<typeof runCli> =>
  runCli(['jobs', ...args, '--json'], { env: loneNodeEnv(node.home, Number(new URL(node.url).port)) });

describe('jobs of the whole cluster', () => {
  let running: string;
  const events: JobEvent[] = [];
  let streamed: Promise<void>;

  it('`rbee jobs ls` on one node lists a job that entered through the other, with where it runs', async () => {
    ({ id: running } = await clientB.submitJob({
      model: 'demo',
      prompt: 'A long story',
      maxTokens: 100_000,
      hive: 'beta',
    }));
    streamed = (async () => {
      for await (const event of clientB.jobEvents(running)) events.push(event);
    })();
    await waitFor(() => events.some((e) => e.type === 'token'), { what: 'the first token on beta' });

    const listed = await cli(alpha, 'ls');
    expect(listed.code, listed.stderr).toBe(0);
    const answer = JSON.parse(listed.stdout) as ClusterJobs;
    expect(answer.unanswered).toEqual([]);
    expect(answer.jobs.find((j) => j.id === running)).toMatchObject({
      entry: { id: betaId, name: 'beta' },
      hive: betaId,
      hiveName: 'beta',
      state: 'running',
      model: 'demo',
    });
    // --here leaves the other node out
    const here = JSON.parse((await cli(alpha, 'ls', '--here')).stdout) as ClusterJobs;
    expect(here.jobs.map((j) => j.id)).not.toContain(running);
  }, 120_000);

  it('`rbee jobs show` finds it on the other node by a prefix of its id', async () => {
    const shown = await cli(alpha, 'show', running.slice(0, 8));
    expect(shown.code, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout) as ClusterJobRecord).toMatchObject({
      id: running,
      entry: { name: 'beta' },
      state: 'running',
    });
    // on its own node it is one row of the table, found by prefix without reading the others
    expect(await clientB.jobRecord(running.slice(0, 8))).toMatchObject({ id: running, state: 'running' });
    await expect(clientA.jobRecord(running.slice(0, 8))).rejects.toMatchObject({ code: 'JOB_NOT_FOUND' });
  });

  it('`rbee jobs cancel` on one node cancels the job where it entered, which stops its worker', async () => {
    const cancelled = await cli(alpha, 'cancel', running);
    expect(cancelled.code, cancelled.stderr).toBe(0);
    expect(JSON.parse(cancelled.stdout) as ClusterJobCancel).toMatchObject({
      id: running,
      entry: { id: betaId, name: 'beta' },
      cancelling: true,
    });
    await streamed;
    expect(events.at(-1)).toMatchObject({ type: 'error', error: { code: 'JOB_CANCELLED' } });
    expect(await clientB.jobRecord(running)).toMatchObject({ state: 'cancelled' });
    // a second cancel finds it ended, and says how
    const again = await cli(alpha, 'cancel', running);
    expect(JSON.parse(again.stdout)).toMatchObject({ cancelling: false, state: 'cancelled' });
  });

  it('answers a job id no node holds with JOB_NOT_FOUND, as a code', async () => {
    const shown = await cli(alpha, 'show', 'ffffffff-0000');
    expect(shown.code).toBe(3);
    expect(JSON.parse(shown.stdout)).toMatchObject({ type: 'error', error: { code: 'JOB_NOT_FOUND' } });
  });
});

describe('who sees which jobs of the cluster', () => {
  let keyA: string;
  let keyB: string;
  let mineOnA: string;
  let mineOnB: string;
  let othersOnB: string;
  let localOnB: string;

  beforeAll(async () => {
    keyA = await createKey(alpha, 'a');
    keyB = await createKey(beta, 'b');
    mineOnA = await finishedJob(alpha, keyA, 'beta');
    // a key is the cluster's: the one made on alpha works on beta too
    mineOnB = await finishedJob(beta, keyA, 'alpha');
    othersOnB = await finishedJob(beta, keyB, 'beta');
    localOnB = await finishedJob(beta, undefined, 'beta');
  }, 120_000);

  it('a key sees its own jobs on every node, and none of another key’s or of the machine’s user', async () => {
    const listed = await request(alpha, { method: 'GET', url: '/v1/cluster/jobs?limit=100' }, keyA);
    expect(listed.statusCode, listed.body).toBe(200);
    const ids = listed.json<ClusterJobs>().jobs.map((j) => j.id);
    expect(ids).toContain(mineOnA);
    expect(ids).toContain(mineOnB);
    const shownMine = await request(alpha, { method: 'GET', url: `/v1/cluster/jobs/${mineOnB}` }, keyA);
    expect(shownMine.json<ClusterJobRecord>()).toMatchObject({ id: mineOnB, entry: { name: 'beta' } });
    expect(ids).not.toContain(othersOnB);
    expect(ids).not.toContain(localOnB);
    for (const id of [othersOnB, localOnB]) {
      const shown = await request(alpha, { method: 'GET', url: `/v1/cluster/jobs/${id}` }, keyA);
      expect(shown.json<{ error: { code: string } }>().error.code).toBe('JOB_NOT_FOUND');
      const cancelled = await request(alpha, { method: 'DELETE', url: `/v1/cluster/jobs/${id}` }, keyA);
      expect(cancelled.statusCode).toBe(404);
    }
    // the other key, asked through either node, sees its one job and none of the first key's
    for (const node of [alpha, beta]) {
      const other = await request(node, { method: 'GET', url: '/v1/cluster/jobs?limit=100' }, keyB);
      expect(other.json<ClusterJobs>().jobs.map((j) => j.id)).toEqual([othersOnB]);
    }
  });

  it('the machine’s own user sees every job of every node, keys’ jobs included', async () => {
    const { jobs } = await clientA.clusterJobs({ limit: 100 });
    const ids = jobs.map((j) => j.id);
    expect(ids).toEqual(expect.arrayContaining([mineOnA, mineOnB, othersOnB, localOnB]));
    // newest first across both nodes
    const accepted = jobs.map((j) => j.acceptedAt);
    expect(accepted).toEqual([...accepted].sort((a, b) => b - a));
    expect(jobs.find((j) => j.id === mineOnA)?.entry.name).toBe('alpha');
    expect(jobs.find((j) => j.id === othersOnB)?.entry.name).toBe('beta');
  });
});
