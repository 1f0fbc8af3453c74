import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { multiaddr } from '@multiformats/multiaddr';
import { defineMethod, type ClusterNode } from '../../src/p2p/index.js';
import { generateClusterKey } from '../../src/p2p/keys.js';
import { RPC_PROTOCOL } from '../../src/p2p/rpc.js';
import { createP2pHost } from '../../src/p2p/host.js';
import { waitFor } from '../helpers/wait-for.js';
import {
  agreedQueen,
  createScope,
  fullyMeshed,
  memoryHost,
  rejection,
  startCluster,
  startNode,
} from './helpers.js';

const scope = createScope();
afterEach(() => scope.cleanup());

const echo = defineMethod('test.echo', z.object({ text: z.string() }), z.object({ text: z.string() }));

function liveIds(node: ClusterNode): string[] {
  return node
    .members()
    .filter((m) => m.live)
    .map((m) => m.id)
    .sort();
}

describe('cluster over TCP on 127.0.0.1', () => {
  it('two nodes with the same key connect; a node with another key cannot', async () => {
    const [a, b] = await startCluster(scope, 2, { transport: 'tcp' });
    await waitFor(() => fullyMeshed([a!, b!]) && agreedQueen([a!, b!]), {
      what: 'two nodes to form a cluster',
    });
    expect(a!.addresses()[0]).toMatch(/^\/ip4\/127\.0\.0\.1\/tcp\/\d+\/p2p\//);

    b!.rpc.handle(echo, ({ text }) => ({ text }));
    expect(await a!.rpc.call(b!.peerId, echo, { text: 'hi' })).toEqual({ text: 'hi' });

    // the private network refuses the handshake itself: not even a connection
    const otherKey = generateClusterKey();
    const stranger = await createP2pHost({
      peerKeyPath: join(await scope.dir(), 'peer.key'),
      clusterKey: otherKey,
      listen: ['/ip4/127.0.0.1/tcp/0'],
    });
    scope.defer(() => stranger.stop());
    // refused at once, or the handshake reads garbage until a deadline
    await expect(
      stranger.libp2p.dial(multiaddr(a!.addresses()[0]), { signal: AbortSignal.timeout(2_000) }),
    ).rejects.toThrow();
    expect(stranger.connectedPeers()).toEqual([]);

    const outsider = await startNode(scope, { key: otherKey, transport: 'tcp', peers: a!.addresses() });
    const error = await rejection(outsider.rpc.call(a!.peerId, echo, { text: 'let me in' }));
    expect(error.code).toBe('NODE_UNREACHABLE');
    expect(liveIds(a!)).toEqual([b!.peerId]);
    expect(liveIds(outsider)).toEqual([]);
    expect(outsider.isQueen()).toBe(true); // alone in its own cluster
  });
});

describe('cluster node', () => {
  it('keeps its id across restarts, persists its term and re-dials the members it knew', async () => {
    const [a, b] = await startCluster(scope, 2);
    await waitFor(() => fullyMeshed([a!, b!]) && agreedQueen([a!, b!]), { what: 'a cluster of two' });
    const { dir, peerId, key } = b!;
    const termBefore = b!.term();
    await b!.stop();
    await waitFor(() => liveIds(a!).length === 0, { what: 'a to see b leave' });

    // no static peers this time: b must find a through the members it persisted
    const again = await startNode(scope, { key, dir });
    expect(again.peerId).toBe(peerId);
    expect(again.term()).toBeGreaterThan(termBefore);
    await waitFor(() => fullyMeshed([a!, again]) && agreedQueen([a!, again]), { what: 'b to rejoin' });
  });

  it('shares published state: snapshot on connect, pushed updates, members that leave leave the view', async () => {
    const key = generateClusterKey();
    const a = await startNode(scope, { key });
    expect(a.publish({ hive: 'a', models: 1 })).toBe(1);
    expect(a.publish({ hive: 'a', models: 2 })).toBe(2);
    const [b, c] = await Promise.all([1, 2].map(() => startNode(scope, { key, peers: a.addresses() })));
    const nodes = [a, b!, c!];
    const stateOf = (node: ClusterNode, id: string) => node.view().find((e) => e.id === id);

    // published before the others joined: they get it by snapshot
    await waitFor(() => nodes.every((n) => stateOf(n, a.peerId)?.version === 2), { what: 'the snapshot' });
    expect(stateOf(b!, a.peerId)?.state).toEqual({ hive: 'a', models: 2 });

    const views: string[] = [];
    c!.on('view', (id) => views.push(id));
    b!.publish({ hive: 'b', load: 0.5 });
    await waitFor(() => nodes.every((n) => stateOf(n, b!.peerId)?.version === 1), { what: 'the push' });
    expect(stateOf(c!, b!.peerId)?.state).toEqual({ hive: 'b', load: 0.5 });
    expect(views).toContain(b!.peerId);
    expect(
      c!
        .view()
        .map((e) => e.id)
        .sort(),
    ).toEqual(nodes.map((n) => n.peerId).sort());

    await b!.stop();
    await waitFor(() => [a, c!].every((n) => stateOf(n, b!.peerId) === undefined), {
      what: 'b to leave the view',
    });
  });

  it('a silent member expires, and a blocked link is re-dialled once it is back', async () => {
    const [a, b, c] = await startCluster(scope, 3);
    await waitFor(() => fullyMeshed([a!, b!, c!]), { what: 'a full mesh' });
    // connections stay open, traffic vanishes: only heartbeats can tell
    a!.testing.drop(c!.peerId);
    c!.testing.drop(a!.peerId);
    await waitFor(() => !liveIds(a!).includes(c!.peerId) && !liveIds(c!).includes(a!.peerId), {
      what: 'the silent member to expire',
    });
    expect(liveIds(a!)).toEqual([b!.peerId]);
    a!.testing.undrop(c!.peerId);
    c!.testing.undrop(a!.peerId);
    await waitFor(() => fullyMeshed([a!, b!, c!]), { what: 'the member to come back' });

    // now close the connections and refuse new ones: re-dial must bring the link back
    await a!.testing.block(b!.peerId);
    await b!.testing.block(a!.peerId);
    await waitFor(() => !liveIds(a!).includes(b!.peerId), { what: 'the disconnect' });
    a!.testing.unblock(b!.peerId);
    b!.testing.unblock(a!.peerId);
    await waitFor(() => fullyMeshed([a!, b!, c!]), { what: 're-dial after the link is back' });
  });

  it('survives garbage on its protocols, refusing and counting it', async () => {
    const [a] = await startCluster(scope, 1);
    const raw = await memoryHost(scope, a!.key);
    await raw.libp2p.dial(multiaddr(a!.addresses()[0]));
    for (const bytes of [
      Uint8Array.from([5, 0, 0x7b, 0x7b, 0x7b, 0x7b]), // JSON kind, broken JSON
      Uint8Array.from([3, 7, 1, 2]), // unknown kind
      Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0x0f]), // a 4 GiB frame
    ]) {
      const stream = await raw.openStream(a!.peerId, RPC_PROTOCOL);
      stream.send(bytes);
      await stream.close().catch(() => undefined);
    }
    await waitFor(
      () => {
        const f = a!.stats().frames;
        return f.malformed >= 1 && f.unknown >= 1 && f.oversized >= 1;
      },
      { what: 'the bad frames to be counted' },
    );
    a!.rpc.handle(echo, ({ text }) => ({ text }));
    const b = await startNode(scope, { key: a!.key, peers: a!.addresses() });
    expect(await b.rpc.call(a!.peerId, echo, { text: 'still fine' })).toEqual({ text: 'still fine' });
  });

  it('reports two live processes with the same peer id (a copied data directory)', async () => {
    const key = generateClusterKey();
    const a = await startNode(scope, { key });
    const original = await startNode(scope, { key, peers: a.addresses() });
    const copyDir = await scope.dir();
    await copyFile(join(original.dir, 'peer.key'), join(copyDir, 'peer.key'));
    const duplicates: string[] = [];
    a.on('duplicate', (id) => duplicates.push(id));
    const copy = await startNode(scope, { key, dir: copyDir, peers: a.addresses() });
    expect(copy.peerId).toBe(original.peerId);
    await waitFor(() => duplicates.length > 0, { what: 'the duplicate to be reported' });
    expect(duplicates[0]).toBe(original.peerId);
  });
});
