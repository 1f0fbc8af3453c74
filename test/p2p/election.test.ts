import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { ClusterNode } from '../../src/p2p/index.js';
import { generateClusterKey } from '../../src/p2p/keys.js';
import { heartbeatMethod } from '../../src/p2p/election-protocol.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  agreedQueen,
  createScope,
  fullyMeshed,
  partition,
  rejection,
  startCluster,
  startNode,
  watchActingQueens,
} from './helpers.js';

const scope = createScope();
afterEach(() => scope.cleanup());

/** Every queen id any of `nodes` reported from now on (acting or followed). */
function recordQueens(nodes: ClusterNode[]): Set<string> {
  const seen = new Set<string>();
  for (const node of nodes) {
    const q = node.queen();
    if (q !== null) seen.add(q.id);
    node.on('queen', (queen) => {
      if (queen !== null) seen.add(queen.id);
    });
  }
  return seen;
}

async function settled(nodes: ClusterNode[], what = 'one agreed queen') {
  await waitFor(() => fullyMeshed(nodes), { what: 'a full mesh' });
  return waitFor(() => agreedQueen(nodes), { what });
}

describe('election', () => {
  it('a lone node is its own queen as soon as it has started', async () => {
    const node = await startNode(scope, { key: generateClusterKey() });
    expect(node.isQueen()).toBe(true);
    expect(node.queen()).toEqual({ id: node.peerId, term: 1 });
    expect(node.stats().election.preVotesLost).toBe(0);
  });

  it('three nodes agree on one queen, and fencing rejects older terms', async () => {
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    expect(nodes.filter((n) => n.isQueen())).toHaveLength(1);
    for (const node of nodes) {
      node.fence(queen.term);
      expect((await rejection(Promise.resolve().then(() => node.fence(queen.term - 1)))).code).toBe(
        'STALE_TERM',
      );
    }
  });

  it('a heartbeat from an older term, held back by the network, never deposes the queen', async () => {
    // a healed partition delivers what TCP kept: the old queen's heartbeat, with the acks it had then
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    const sender = nodes.find((n) => n.peerId !== queen.id)!;
    const reply = await sender.rpc.call(queen.id, heartbeatMethod, {
      term: queen.term - 1,
      leader: sender.peerId,
      acks: 99,
      leaderForMs: 3_600_000,
    });
    expect(reply).toMatchObject({ ok: false, term: queen.term, leader: queen.id });
    const after = nodes.find((n) => n.peerId === queen.id)!;
    expect(after.isQueen()).toBe(true);
    expect(after.queen()).toEqual(queen);
  });

  // a fresh joiner has a lower term than the cluster; a restarted one may have a much higher one
  it.each([0, 50])(
    'a node joining does not change the queen (joiner persisted term %i)',
    async (joinerTerm) => {
      const nodes = await startCluster(scope, 3);
      const queen = await settled(nodes);
      const seen = recordQueens(nodes);
      const incumbent = nodes.find((n) => n.peerId === queen.id)!;
      const stepDowns = incumbent.stats().election.stepDowns;
      const dir = await scope.dir();
      await writeFile(
        join(dir, 'cluster.json'),
        JSON.stringify({ election: { term: joinerTerm, votedFor: null } }),
      );
      // the newcomer is its own queen at first (it is alone), then meets the cluster
      const joiner = await startNode(scope, { key: nodes[0]!.key, dir, peers: nodes[1]!.addresses() });
      expect(joiner.queen()).toEqual({ id: joiner.peerId, term: joinerTerm + 1 });
      const after = await settled([...nodes, joiner], 'the joiner to follow the queen');
      expect(after.id).toBe(queen.id);
      expect([...seen]).toEqual([queen.id]);
      // it may re-elect itself into a newer term, but it never stepped down
      expect(incumbent.stats().election.stepDowns).toBe(stepDowns);
    },
  );

  it('stopping the queen elects a new one with a higher term', async () => {
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    const old = nodes.find((n) => n.peerId === queen.id)!;
    await old.stop();
    const rest = nodes.filter((n) => n !== old);
    const next = await waitFor(() => agreedQueen(rest), { what: 'a new queen' });
    expect(next.id).not.toBe(queen.id);
    expect(next.term).toBeGreaterThan(queen.term);
  });

  it('a queen that vanishes without a goodbye is replaced, and two queens never act at once', async () => {
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    const old = nodes.find((n) => n.peerId === queen.id)!;
    const rest = nodes.filter((n) => n !== old);
    const watch = watchActingQueens(nodes);
    // like a crash seen from the others: connections close, nothing is said, nothing reconnects
    for (const node of rest) {
      await old.testing.block(node.peerId);
      await node.testing.block(old.peerId);
    }
    const next = await waitFor(() => agreedQueen(rest), { what: 'a new queen' });
    expect(next.term).toBeGreaterThan(queen.term);
    await waitFor(() => !old.isQueen(), { what: 'the old queen to lose its lease' });
    expect(watch.stop()).toBe(1);
  });

  it('a partitioned minority cannot elect; the majority can; after the heal there is exactly one queen', async () => {
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    const loner = nodes.find((n) => n.peerId !== queen.id)!;
    const majority = nodes.filter((n) => n !== loner);
    const lonerQueens = recordQueens([loner]);

    const campaigns = loner.stats().election.campaigns;
    const heal = partition([loner], majority);
    // the loner notices and tries to get elected, twice
    await waitFor(() => loner.stats().election.campaigns >= campaigns + 2, { what: 'the loner to try' });
    expect(loner.isQueen()).toBe(false);
    expect(loner.queen()).toBeNull();
    expect([...lonerQueens].filter((id) => id !== queen.id)).toEqual([]);
    expect(agreedQueen(majority)?.id).toBe(queen.id);
    // pre-vote kept the loner's term where it was
    expect(loner.term()).toBe(queen.term);

    heal();
    const after = await settled(nodes, 'one queen after the heal');
    expect(after.id).toBe(queen.id);
  });

  it('a partitioned queen steps down, the majority elects, and the heal leaves exactly one queen', async () => {
    const nodes = await startCluster(scope, 3);
    const queen = await settled(nodes);
    const old = nodes.find((n) => n.peerId === queen.id)!;
    const majority = nodes.filter((n) => n !== old);

    const watch = watchActingQueens(nodes);
    const heal = partition([old], majority);
    const next = await waitFor(() => agreedQueen(majority), { what: 'the majority to elect' });
    expect(next.term).toBeGreaterThan(queen.term);
    await waitFor(() => !old.isQueen(), { what: 'the old queen to step down' });
    // the old queen's commands are now fenced off by the new term
    for (const node of majority)
      expect((await rejection(Promise.resolve().then(() => node.fence(queen.term)))).code).toBe('STALE_TERM');

    heal();
    const after = await settled(nodes, 'one queen after the heal');
    expect(after.id).toBe(next.id);
    expect(nodes.filter((n) => n.isQueen())).toHaveLength(1);
    expect(watch.stop()).toBe(1);
  });

  it('in a two-node cluster the survivor of a graceful stop becomes queen', async () => {
    const nodes = await startCluster(scope, 2);
    const queen = await settled(nodes);
    const follower = nodes.find((n) => n.peerId !== queen.id)!;
    const old = nodes.find((n) => n.peerId === queen.id)!;
    await old.stop();
    const next = await waitFor(() => agreedQueen([follower]), { what: 'the survivor to be queen' });
    expect(next.id).toBe(follower.peerId);
    expect(next.term).toBeGreaterThan(queen.term);
  });
});
