/**
 * Real `rbee node` processes forming a cluster over loopback with static peers (mDNS is off here:
 * the namespace harness in test/cluster covers discovery). What a user sees through the CLI and the
 * HTTP API: one queen, every hive on every node, state that follows changes, keys that keep strangers
 * out, and identities that survive restarts.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createNodeClient } from '../../src/node/client/index.js';
import type { ClusterStatus, ClusterView, NodeEvent } from '../../src/shared/view.js';
import { createSandbox, runCli, type Sandbox } from '../helpers/cli.js';
import { agreed, joinCode, startClusterNode, type ClusterNodeProcess } from '../helpers/cluster-nodes.js';
import { createClusterNode, createMemoryStore, loadClusterKey } from '../../src/p2p/index.js';
import { hiveShutdown } from '../../src/node/cluster/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { waitFor } from '../helpers/wait-for.js';

const sandboxes: Sandbox[] = [];
afterAll(async () => {
  await Promise.all(sandboxes.map((s) => s.cleanup()));
});

async function newSandbox(): Promise<Sandbox> {
  const sandbox = await createSandbox();
  sandboxes.push(sandbox);
  return sandbox;
}

describe('a cluster of real nodes on loopback', () => {
  let a: ClusterNodeProcess;
  let b: ClusterNodeProcess;
  let bSandbox: Sandbox;

  it('joins a second machine with the first one’s code and agrees on one queen', async () => {
    const aSandbox = await newSandbox();
    a = await startClusterNode(aSandbox);
    const code = await joinCode(aSandbox);

    bSandbox = await newSandbox();
    const joined = await runCli(['join', code, '--json'], { env: bSandbox.env });
    expect(joined.code, joined.stderr).toBe(0);
    expect(JSON.parse(joined.stdout)).toMatchObject({ joined: true, changed: true, restartNeeded: false });
    b = await startClusterNode(bSandbox, { peers: [a.addr] });

    const [sa, sb] = (await waitFor(() => agreed([a, b]), { what: 'one queen for both' })) as ClusterStatus[];
    expect(sa?.queen?.id).toBe(sb?.queen?.id);
    // exactly one of them believes it is queen
    expect([sa?.isQueen, sb?.isQueen].filter(Boolean)).toHaveLength(1);

    // `rbee hives ls --json` on either node lists both hives, one of them the queen
    const listed = await runCli(['hives', 'ls', '--json'], { env: bSandbox.env });
    expect(listed.code, listed.stderr).toBe(0);
    const hives = JSON.parse(listed.stdout) as { id: string; local: boolean; queen: boolean }[];
    expect(hives.map((h) => h.id).sort()).toEqual([sa?.self.id, sb?.self.id].sort());
    expect(hives.filter((h) => h.queen).map((h) => h.id)).toEqual([sa?.queen?.id]);
    expect(hives.find((h) => h.local)?.id).toBe(sb?.self.id);
  });

  it('shows a model added on one node in the other node’s live view', async () => {
    const idA = (await a.status()).self.id;
    const controller = new AbortController();
    const seen = (async () => {
      const events = createNodeClient({ url: bSandbox.url }).nodeEvents({ signal: controller.signal });
      for await (const event of events) {
        const models =
          event.type === 'snapshot'
            ? event.view.models
            : (event as Extract<NodeEvent, { type: 'models' }>).models;
        if (models?.some((m) => m.hive === idA && m.name.length > 0)) return models;
      }
      return undefined;
    })();
    const added = await runCli(['models', 'add', 'demo', '--json'], { env: a.sandbox.env });
    expect(added.code, added.stderr).toBe(0);
    const models = await Promise.race([
      seen,
      sleep(30_000).then(() => {
        throw new Error('the model never reached the other node');
      }),
    ]);
    controller.abort();
    expect(models?.filter((m) => m.hive === idA)).toHaveLength(1);
  });

  it('stops a worker that runs on the other hive, from this node', async () => {
    const idA = (await a.status()).self.id;
    const spawned = await runCli(['workers', 'spawn', 'demo', '--json'], { env: a.sandbox.env });
    expect(spawned.code, spawned.stderr).toBe(0);
    const worker = JSON.parse(spawned.stdout) as { id: string };
    // b's live view shows a's worker, under a's hive
    const snapshotOfB = async (): Promise<ClusterView> => {
      const controller = new AbortController();
      const events = createNodeClient({ url: bSandbox.url }).nodeEvents({ signal: controller.signal });
      const first = await events[Symbol.asyncIterator]().next();
      controller.abort();
      if (first.done === true || first.value.type !== 'snapshot') throw new Error('no snapshot');
      return first.value.view;
    };
    await waitFor(
      async () => (await snapshotOfB()).workers.some((w) => w.id === worker.id && w.hive === idA),
      {
        what: "a's worker in b's view",
      },
    );
    // `rbee workers ls` on b lists it too, under a's hive name
    const nameOfA = (await a.status()).self.name;
    const listed = await runCli(['workers', 'ls', '--json'], { env: bSandbox.env });
    expect(listed.code, listed.stderr).toBe(0);
    expect(JSON.parse(listed.stdout)).toContainEqual(
      expect.objectContaining({ id: worker.id, hive: idA, hiveName: nameOfA, local: false }) as unknown,
    );
    const plainList = await runCli(['workers', 'ls'], { env: bSandbox.env });
    expect(plainList.stdout).toContain(`${worker.id}\t${nameOfA}\t`);
    const stopped = await runCli(['workers', 'stop', worker.id, '--json'], { env: bSandbox.env });
    expect(stopped.code, stopped.stderr).toBe(0);
    const onA = await createNodeClient({ url: a.sandbox.url }).workers();
    expect(onA.map((w) => w.id)).not.toContain(worker.id);
    // a worker no hive runs is NOT_FOUND (exit 3), not a hang
    const missing = await runCli(['workers', 'stop', 'no-such-worker', '--json'], { env: bSandbox.env });
    expect(missing.code).toBe(3);
  });

  it('keeps its queen when the other node leaves, and a restarted node keeps its id', async () => {
    const before = await a.status();
    const idB = (await b.status()).self.id;
    const queen = before.queen?.id;
    await b.stop();
    await waitFor(async () => (await a.status()).members.every((m) => !m.live), { what: 'b to leave' });
    // longer than a lease and an election timeout: a graceful leave must not cost the queen
    await sleep(4_000);
    const after = await a.status();
    if (queen === before.self.id) expect(after.queen?.id).toBe(queen);
    else expect(after.queen?.id).toBe(after.self.id); // b was queen and handed over
    expect(after.isQueen).toBe(true);

    b = await startClusterNode(bSandbox, { peers: [a.addr] });
    expect((await b.status()).self.id).toBe(idB);
    await waitFor(() => agreed([a, b]), { what: 'the restarted node to rejoin' });
  });

  it('keeps a node with another cluster key out', async () => {
    const stranger = await startClusterNode(await newSandbox(), { peers: [a.addr] });
    // joining takes well under a second when the key matches
    await sleep(3_000);
    const [sa, ss] = await Promise.all([a.status(), stranger.status()]);
    expect(sa.members.map((m) => m.id)).not.toContain(ss.self.id);
    expect(ss.members.filter((m) => m.live)).toEqual([]);
    // alone, it is its own queen
    expect(ss.queen?.id).toBe(ss.self.id);
    await stranger.stop();
    await b.stop();
    await a.stop();
  });
});

describe('joining and discovery settings', () => {
  it('refuses a damaged join code and stores nothing', async () => {
    const sandbox = await newSandbox();
    const result = await runCli(['join', 'rbee-not-a-real-code', '--json'], { env: sandbox.env });
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout)).toMatchObject({ type: 'error', error: { code: 'CONFIG_INVALID' } });
    expect(existsSync(join(sandbox.home, 'cluster.key'))).toBe(false);
  });

  it('refuses mDNS outside a network namespace while the test guard is set', async () => {
    const sandbox = await newSandbox();
    expect(sandbox.env.RBEE_MDNS_REQUIRE_NETNS).toBe('1');
    const result = await runCli(['node'], { env: { ...sandbox.env, RBEE_MDNS: '1' } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/mDNS refused/);
  });

  it('runs a hive alone as its own queen when clustering is off', async () => {
    const sandbox = await newSandbox();
    const result = await runCli(['cluster', '--json'], { env: { ...sandbox.env, RBEE_CLUSTER: '0' } });
    expect(result.code, result.stderr).toBe(0);
    const status = JSON.parse(result.stdout) as ClusterStatus;
    expect(status).toMatchObject({ enabled: false, state: 'disabled', isQueen: true, members: [] });
    expect(status.hives).toHaveLength(1);
    expect(status.hives[0]).toMatchObject({ local: true, queen: true });
  });
});

describe('queen commands', () => {
  it('refuse a stop command from an older term (fencing) or from a node that is not the queen', async () => {
    const aSandbox = await newSandbox();
    const a = await startClusterNode(aSandbox);
    const bSandbox = await newSandbox();
    expect((await runCli(['join', await joinCode(aSandbox), '--json'], { env: bSandbox.env })).code).toBe(0);
    const b = await startClusterNode(bSandbox, { peers: [a.addr] });
    await waitFor(() => agreed([a, b]), { what: 'a queen' });

    // a third member holding the key, in this process: it can speak the cluster's protocols
    const key = await loadClusterKey(join(aSandbox.home, 'cluster.key'));
    const probe = await createClusterNode({
      peerKeyPath: join(bSandbox.home, 'probe.key'),
      clusterKey: key!,
      listen: ['/ip4/127.0.0.1/tcp/0'],
      peers: [a.addr],
      store: createMemoryStore(),
    });
    try {
      // the term must be settled everywhere: a queen that re-elects itself after a merge starts a
      // newer term, and the probe would otherwise test the fence with a term already past
      const queen = await waitFor(
        async () => {
          const seen = probe.members().filter((m) => m.live).length === 2 ? probe.queen() : null;
          if (seen === null) return null;
          const [sa, sb] = [await a.status(), await b.status()];
          const settled = [sa, sb].every((s) => s.term === seen.term && s.queen?.id === seen.id);
          return settled ? seen : null;
        },
        { what: 'the probe to join and see the queen of the term both nodes are in' },
      );
      const follower = [(await a.status()).self.id, (await b.status()).self.id].find(
        (id) => id !== queen.id,
      )!;
      const refusal = async (term: number): Promise<string> => {
        const error = await probe.rpc.call(follower, hiveShutdown, { term, reason: 'test' }).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(RbeeError);
        return (error as RbeeError).code;
      };
      expect(await refusal(queen.term - 1)).toBe('STALE_TERM');
      expect(await refusal(queen.term)).toBe('NOT_QUEEN');
      // a forged newer term is no way around it, and does not move the hive's term
      expect(await refusal(queen.term + 1)).toBe('NOT_QUEEN');
      expect(await refusal(queen.term + 50)).toBe('NOT_QUEEN');
      expect((await b.status()).term).toBe(queen.term);
      expect((await a.status()).term).toBe(queen.term);
      // both nodes still run
      await sleep(500);
      expect((await a.status()).state).toBe('running');
      expect((await b.status()).state).toBe('running');
    } finally {
      await probe.stop();
    }

    // `rbee shutdown --cluster` on the follower: the queen stops every hive, then itself
    const followerNode = (await a.status()).isQueen ? b : a;
    const queenId = (await (followerNode === a ? b : a).status()).self.id;
    const result = await runCli(['shutdown', '--cluster', '--json'], { env: followerNode.sandbox.env });
    expect(result.code, result.stderr).toBe(0);
    const stopped = JSON.parse(result.stdout) as {
      stopped: boolean;
      cluster: { hives: string[]; term: number };
    };
    expect(stopped.stopped).toBe(true);
    // seen from the follower: one other hive stops, the queen
    expect(stopped.cluster.hives).toEqual([queenId]);
    const [ea, eb] = await Promise.all([a.exited, b.exited]);
    expect(ea.code).toBe(0);
    expect(eb.code).toBe(0);
  });
});
