/**
 * Three real `rbee node` processes, each in its own network namespace on a private bridge, finding
 * each other by mDNS: one queen, failover after `kill -9`, a partition and its healing, a stranger
 * with another key, and identities that survive restarts. Skips (saying why) where this machine does
 * not allow network namespaces.
 */
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClusterLab, type ClusterLab, type LabNode } from '../helpers/cluster-lab.js';
import { netnsSupport } from '../helpers/netns.js';
import { waitFor } from '../helpers/wait-for.js';

const support = netnsSupport();
const title = support.ok
  ? 'three nodes on a private LAN (network namespaces, mDNS)'
  : `three nodes on a private LAN: SKIPPED, ${support.reason}`;

describe.skipIf(!support.ok)(title, () => {
  let lab: ClusterLab;
  let nodes: LabNode[];
  const agree = (group: LabNode[], what: string): Promise<string> =>
    waitFor(() => lab.agreedQueen(group), { what, timeoutMs: 30_000, intervalMs: 100 });

  beforeAll(async () => {
    lab = await createClusterLab(3);
    nodes = [...lab.nodes]; // the stranger added later is not one of them
  });
  afterAll(async () => {
    await lab?.destroy();
  });

  it('find each other by mDNS alone and agree on one queen', async () => {
    await Promise.all(nodes.map((n) => lab.start(n)));
    const queen = await agree(nodes, 'three nodes to agree on a queen');
    const statuses = await Promise.all(nodes.map((n) => lab.status(n)));
    for (const status of statuses) {
      expect(status.mdns).toBe(true);
      expect(status.staticPeers).toEqual([]);
      expect(status.hives).toHaveLength(3);
      expect(status.hives.filter((h) => h.queen).map((h) => h.id)).toEqual([queen]);
    }
    expect(statuses.filter((s) => s.isQueen)).toHaveLength(1);
  });

  it('elect a new queen after `kill -9` of the queen; the restarted node keeps its id and the new queen', async () => {
    const queenId = await agree(nodes, 'a queen');
    const queen = nodes.find((n) => n.peerId === queenId);
    expect(queen).toBeDefined();
    const rest = nodes.filter((n) => n !== queen);
    await lab.kill(queen!);
    const successor = await agree(rest, 'the two survivors to elect a new queen');
    expect(successor).not.toBe(queenId);

    await lab.start(queen!);
    expect(queen!.peerId).toBe(queenId);
    // joining does not depose the incumbent
    expect(await agree(nodes, 'the restarted node to rejoin')).toBe(successor);
  });

  it('heal a partition of the queen to exactly one queen', async () => {
    const queenId = await agree(nodes, 'a queen');
    const queen = nodes.find((n) => n.peerId === queenId)!;
    const rest = nodes.filter((n) => n !== queen);
    await lab.net.partition(queen.host);
    const majorityQueen = await agree(rest, 'the majority side to elect a queen');
    expect(majorityQueen).not.toBe(queenId);
    // the cut-off queen loses its lease: it no longer claims to be queen
    await waitFor(async () => !(await lab.status(queen)).isQueen, {
      what: 'the isolated queen to step down',
      timeoutMs: 15_000,
    });

    await lab.net.heal(queen.host);
    const healed = await agree(nodes, 'one queen after the partition heals');
    expect(healed).toBe(majorityQueen);
    const statuses = await Promise.all(nodes.map((n) => lab.status(n)));
    expect(statuses.filter((s) => s.isQueen)).toHaveLength(1);
  });

  it('keep a node with another cluster key out, though mDNS shows it to them', async () => {
    const stranger = await lab.addNode({ key: 'own' });
    await lab.start(stranger);
    // with the right key, nodes on this LAN join in well under a second
    await sleep(5_000);
    const strangerStatus = await lab.status(stranger);
    expect(strangerStatus.members.filter((m) => m.live)).toEqual([]);
    expect(strangerStatus.queen?.id).toBe(stranger.peerId);
    for (const node of nodes) {
      const status = await lab.status(node);
      expect(status.members.map((m) => m.id)).not.toContain(stranger.peerId);
    }
    expect(await lab.agreedQueen(nodes)).toBeDefined();
  });

  it('refuse API clients on other machines without an API key when bound beyond loopback', async () => {
    const [server, client] = [nodes[1]!, nodes[2]!];
    await lab.kill(server);
    await lab.start(server, { RBEE_HOST: '0.0.0.0' });
    const remote = `http://${server.host.ip}:7833`;
    const statusFrom = (extra: string[], path: string): Promise<string> =>
      lab.net.exec(client.host, [
        'curl',
        '-s',
        '-o',
        '/dev/null',
        '-w',
        '%{http_code}',
        ...extra,
        `${remote}${path}`,
      ]);
    expect(await statusFrom([], '/health')).toBe('200');
    expect(await statusFrom([], '/v1/models')).toBe('401');
    // keys are made on the node's own machine, and only there
    expect(
      await statusFrom(['-X', 'POST', '-H', 'content-type: application/json', '-d', '{}'], '/v1/keys'),
    ).toBe('401');
    const created = await lab.net.exec(server.host, [
      'curl',
      '-sf',
      '-X',
      'POST',
      '-H',
      'content-type: application/json',
      '-d',
      '{"name":"lan"}',
      'http://127.0.0.1:7833/v1/keys',
    ]);
    const { key } = JSON.parse(created) as { key: string };
    expect(await statusFrom(['-H', `authorization: Bearer ${key}`], '/v1/models')).toBe('200');
    expect(await statusFrom(['-H', `x-api-key: ${key}`], '/v1/cluster')).toBe('200');
    expect(await statusFrom(['-H', 'authorization: Bearer rbee_not-a-key'], '/v1/models')).toBe('401');
    // a valid key does not open key management to another machine, however the path is spelt
    for (const path of ['/v1/keys', '/v1/%6Beys', '/v1/%6beys', '/v1/keys?x=1']) {
      expect(await statusFrom(['-H', `authorization: Bearer ${key}`], path), path).toBe('401');
    }
    expect(
      await statusFrom(
        ['-X', 'DELETE', '-H', 'x-rbee-client: 1', '-H', `authorization: Bearer ${key}`],
        '/v1/%6Beys/abc',
      ),
    ).toBe('401');
  });

  it('report two live nodes with one peer id (a copied data directory)', async () => {
    const original = nodes[0]!;
    const copy = await lab.addNode();
    copyFileSync(join(original.home, 'peer.key'), join(copy.home, 'peer.key'));
    await lab.start(copy);
    expect(copy.peerId).toBe(original.peerId);
    await waitFor(
      async () => {
        const statuses = await Promise.all([...nodes, copy].map((n) => lab.status(n).catch(() => undefined)));
        return statuses.some((s) => s?.duplicates.includes(original.peerId!));
      },
      { what: 'the duplicate to be reported', timeoutMs: 30_000 },
    );
  });
});
