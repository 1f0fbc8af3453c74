import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { createP2pHost, type P2pHost, type P2pHostInit } from '../../src/p2p/host.js';
import { generateClusterKey } from '../../src/p2p/keys.js';
import {
  createClusterNode,
  createJsonFileStore,
  type ClusterNode,
  type ClusterTiming,
  type QueenInfo,
} from '../../src/p2p/index.js';

/** Temporary directories and things to stop, cleaned in reverse order by `cleanup()`. */
export function createScope() {
  const dirs: string[] = [];
  const stops: Array<() => Promise<void>> = [];
  return {
    async dir(): Promise<string> {
      const dir = await mkdtemp(join(tmpdir(), 'rbee-p2p-'));
      dirs.push(dir);
      return dir;
    },
    defer(stop: () => Promise<void>): void {
      stops.push(stop);
    },
    async cleanup(): Promise<void> {
      for (const stop of stops.splice(0).reverse()) await stop().catch(() => undefined);
      for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
    },
  };
}
export type Scope = ReturnType<typeof createScope>;

export function memoryListen(): string {
  return `/memory/rbee-${randomUUID()}`;
}

export async function memoryHost(
  scope: Scope,
  clusterKey: Uint8Array,
  init: Partial<P2pHostInit> = {},
): Promise<P2pHost> {
  const dir = await scope.dir();
  const host = await createP2pHost({
    peerKeyPath: join(dir, 'peer.key'),
    clusterKey,
    listen: [memoryListen()],
    transport: 'memory',
    ...init,
  });
  scope.defer(() => host.stop());
  return host;
}

export async function hostPair(scope: Scope): Promise<[P2pHost, P2pHost]> {
  const key = generateClusterKey();
  const a = await memoryHost(scope, key);
  const b = await memoryHost(scope, key);
  await a.libp2p.dial(b.libp2p.getMultiaddrs()[0]!);
  return [a, b];
}

export { rejection } from '../helpers/rejection.js';

/**
 * Timings for tests: fast enough to keep the suite short, and generous against a loaded 2-core
 * machine (all nodes share one event loop here, so a stall hits every node at once).
 */
export const TEST_TIMING: ClusterTiming = {
  membership: { heartbeatMs: 250, expireMs: 2_000, forgetAfterMs: 120_000 },
  election: {
    heartbeatMs: 200,
    electionTimeoutMinMs: 2_000,
    electionTimeoutMaxMs: 3_500,
    leaseMs: 1_500,
    rpcTimeoutMs: 1_500,
  },
  redial: { initialMs: 100, maxMs: 1_000, graceMs: 300 },
};

export interface TestNodeOptions {
  key: Uint8Array;
  dir?: string;
  peers?: string[];
  transport?: 'tcp' | 'memory';
  timing?: ClusterTiming;
  log?: (event: string, details: Record<string, unknown>) => void;
}

/** A cluster node in its own temporary directory (peer key + JSON store), stopped by the scope. */
export type TestNode = ClusterNode & { dir: string; key: Uint8Array };

export async function startNode(scope: Scope, options: TestNodeOptions): Promise<TestNode> {
  const dir = options.dir ?? (await scope.dir());
  const transport = options.transport ?? 'memory';
  const node = await createClusterNode({
    peerKeyPath: join(dir, 'peer.key'),
    clusterKey: options.key,
    listen: [transport === 'memory' ? memoryListen() : '/ip4/127.0.0.1/tcp/0'],
    transport,
    peers: options.peers,
    store: createJsonFileStore(join(dir, 'cluster.json')),
    timing: options.timing ?? TEST_TIMING,
    log: options.log,
  });
  scope.defer(() => node.stop());
  return Object.assign(node, { dir, key: options.key });
}

/** `count` nodes that each know the first one as a static peer (gossip completes the mesh). */
export async function startCluster(
  scope: Scope,
  count: number,
  options: Partial<TestNodeOptions> = {},
): Promise<TestNode[]> {
  const key = options.key ?? generateClusterKey();
  const first = await startNode(scope, { ...options, key });
  const rest = await Promise.all(
    Array.from({ length: count - 1 }, () => startNode(scope, { ...options, key, peers: first.addresses() })),
  );
  return [first, ...rest];
}

export function fullyMeshed(nodes: ClusterNode[]): boolean {
  return nodes.every((node) => {
    const live = new Set(
      node
        .members()
        .filter((m) => m.live)
        .map((m) => m.id),
    );
    return nodes.every((other) => other === node || live.has(other.peerId));
  });
}

/** The queen every node agrees on, or undefined while they disagree or exactly one queen is not acting. */
export function agreedQueen(nodes: ClusterNode[]): QueenInfo | undefined {
  const first = nodes[0]?.queen();
  if (first === null || first === undefined) return undefined;
  const agree = nodes.every((n) => {
    const q = n.queen();
    return q !== null && q.id === first.id && q.term === first.term;
  });
  const acting = nodes.filter((n) => n.isQueen());
  return agree && acting.length === 1 && acting[0]!.peerId === first.id ? first : undefined;
}

/** Silently drops traffic both ways between the two groups (connections stay open). */
export function partition(a: ClusterNode[], b: ClusterNode[]): () => void {
  for (const x of a) {
    for (const y of b) {
      x.testing.drop(y.peerId);
      y.testing.drop(x.peerId);
    }
  }
  return () => {
    for (const x of a) {
      for (const y of b) {
        x.testing.undrop(y.peerId);
        y.testing.undrop(x.peerId);
      }
    }
  };
}

/** Samples how many nodes act as queen at once (every 10 ms); `stop()` returns the maximum seen. */
export function watchActingQueens(nodes: ClusterNode[]): { stop: () => number } {
  let max = 0;
  const timer = setInterval(() => {
    max = Math.max(max, nodes.filter((n) => n.isQueen()).length);
  }, 10);
  return {
    stop() {
      clearInterval(timer);
      return max;
    },
  };
}
