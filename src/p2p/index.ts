/**
 * The cluster layer's public API: `createClusterNode` starts a host and composes membership, the
 * queen election and the shared view; the node daemon reads `view()` and `queen()`, publishes its
 * hive state, subscribes to changes, and registers its own rpc methods and stream kinds.
 */
import type { AbortOptions, ComponentLogger } from '@libp2p/interface';
import { RbeeError } from '../shared/errors.js';
import { createClusterState, type ViewEntry } from './cluster-state.js';
import type { FrameStats } from './codec.js';
import { createElection, type ElectionStats, type ElectionTiming, type QueenInfo } from './election.js';
import { createEmitter, type Listener } from './emitter.js';
import { createP2pHost, type P2pHost, type PartitionHooks, type RedialOptions } from './host.js';
import { createMembership, type MemberInfo, type MembershipTiming } from './membership.js';
import { createRpc, type Rpc, type RpcStats } from './rpc.js';
import type { ClusterStore } from './store.js';
import { createStreams, type Streams } from './stream.js';

export * from './keys.js';
export { createJsonFileStore, createMemoryStore, type ClusterStore } from './store.js';
export { defineMethod, type Rpc, type RpcMethod, type RpcContext, type RpcCallOptions } from './rpc.js';
export { defineStream, type Streams, type StreamKind, type StreamContext } from './stream.js';
export type { FrameChannel, FrameStats } from './codec.js';
export {
  DEFAULT_ELECTION_TIMING,
  type QueenInfo,
  type ElectionTiming,
  type ElectionStats,
} from './election.js';
export { DEFAULT_MEMBERSHIP_TIMING, type MemberInfo, type MembershipTiming } from './membership.js';
export type { ViewEntry } from './cluster-state.js';
export type { PartitionHooks, RedialOptions } from './host.js';

export interface ClusterTiming {
  membership?: Partial<MembershipTiming>;
  election?: Partial<ElectionTiming>;
  redial?: RedialOptions;
  /** Default deadline of rpc calls. Defaults to 5 s. */
  rpcTimeoutMs?: number;
}

export interface ClusterNodeInit {
  /** Created (mode 0600) on first start; the peer id stays the same as long as this file does. */
  peerKeyPath: string;
  /** The raw 32-byte cluster key (see `loadOrCreateClusterKey`, `decodeJoinCode`). */
  clusterKey: Uint8Array;
  /** e.g. `['/ip4/0.0.0.0/tcp/7834']`, or `['/memory/x']` with the memory transport. */
  listen: string[];
  /** Defaults to false. */
  mdns?: boolean;
  /** Static peers' multiaddrs. */
  peers?: string[];
  /** Defaults to 'tcp'. */
  transport?: 'tcp' | 'memory';
  /** Where the term, vote and known members survive restarts. */
  store: ClusterStore;
  timing?: ClusterTiming;
  /** Where libp2p's own debug logs go. */
  libp2pLogger?: ComponentLogger;
  /** Election events (campaigns, wins, step-downs), for the node's log. */
  log?: (event: string, details: Record<string, unknown>) => void;
  signal?: AbortSignal;
}

export type ClusterChange =
  | { kind: 'members' }
  | { kind: 'queen'; queen: QueenInfo | null }
  | { kind: 'view'; id: string }
  | { kind: 'duplicate'; id: string };

export interface ClusterNodeEvents extends Record<string, unknown> {
  /** Any of the others. */
  change: ClusterChange;
  members: MemberInfo[];
  queen: QueenInfo | null;
  view: string;
  /** Two live processes with this peer id: a copied data directory. Stop one of them. */
  duplicate: string;
}

export interface ClusterStats {
  frames: FrameStats;
  rpc: RpcStats;
  election: ElectionStats;
}

export interface ClusterNode {
  readonly peerId: string;
  readonly rpc: Rpc;
  readonly streams: Streams;
  /** Test hooks: cut links without touching the machine's network. */
  readonly testing: PartitionHooks;
  addresses(): string[];
  members(): MemberInfo[];
  /** Live members (and this node) with their published state. */
  view(): ViewEntry[];
  queen(): QueenInfo | null;
  isQueen(): boolean;
  term(): number;
  /** For hives receiving queen commands: throws STALE_TERM when `term` is older than ours. */
  fence(term: number): void;
  /** Publishes this node's state; returns its version. */
  publish(state: unknown): number;
  on<K extends keyof ClusterNodeEvents>(type: K, listener: Listener<ClusterNodeEvents[K]>): () => void;
  stats(): ClusterStats;
  /** Leaves gracefully (a queen gives up its lease, members are told) and stops the host. */
  stop(options?: AbortOptions): Promise<void>;
}

export async function createClusterNode(init: ClusterNodeInit): Promise<ClusterNode> {
  const host = await createP2pHost({
    peerKeyPath: init.peerKeyPath,
    clusterKey: init.clusterKey,
    listen: init.listen,
    mdns: init.mdns,
    peers: init.peers,
    transport: init.transport,
    redial: init.timing?.redial,
    logger: init.libp2pLogger,
    signal: init.signal,
  });
  try {
    return await startOn(host, init);
  } catch (error) {
    await host.stop().catch(() => undefined);
    if (error instanceof RbeeError) throw error;
    throw new RbeeError('NODE_START_FAILED', `cannot start the cluster node: ${(error as Error).message}`, {
      cause: error,
    });
  }
}

async function startOn(host: P2pHost, init: ClusterNodeInit): Promise<ClusterNode> {
  const events = createEmitter<ClusterNodeEvents>();
  const rpc = createRpc({ host, defaultTimeoutMs: init.timing?.rpcTimeoutMs });
  const streams = createStreams({ host });
  const membership = createMembership({
    host,
    rpc,
    store: init.store,
    timing: init.timing?.membership,
    digest: () => state.digest(),
  });
  const election = createElection({
    self: host.peerId,
    rpc,
    store: init.store,
    voters: () => membership.voters(),
    isLive: (peer) => membership.isLive(peer),
    timing: init.timing?.election,
    log: init.log,
  });
  const state = createClusterState({
    self: host.peerId,
    instance: membership.instance,
    rpc,
    liveMembers: () => membership.liveMembers(),
    lastSeen: (id) => membership.members().find((m) => m.id === id)?.lastSeen ?? 0,
  });

  const emit = (change: ClusterChange): void => {
    if (change.kind === 'members') events.emit('members', membership.members());
    else if (change.kind === 'queen') events.emit('queen', change.queen);
    else if (change.kind === 'view') events.emit('view', change.id);
    else events.emit('duplicate', change.id);
    events.emit('change', change);
  };

  membership.events.on('join', (peer) => {
    state.onJoin(peer);
    election.membersChanged();
    emit({ kind: 'members' });
  });
  membership.events.on('leave', ({ id, reason }) => {
    state.onLeave(id);
    election.memberLeft(id, reason === 'left');
    emit({ kind: 'members' });
  });
  membership.events.on('heartbeat', ({ id, digest }) => state.onHeartbeat(id, digest));
  membership.events.on('duplicate', ({ id }) => emit({ kind: 'duplicate', id }));
  election.events.on('queen', (queen) => emit({ kind: 'queen', queen }));
  state.events.on('change', (id) => emit({ kind: 'view', id }));

  let stopped = false;
  const stop = async (options?: AbortOptions): Promise<void> => {
    if (stopped) return;
    stopped = true;
    election.stop();
    await membership.stop();
    state.stop();
    streams.stop();
    rpc.stop();
    events.clear();
    await host.stop(options);
  };

  try {
    await rpc.start();
    await streams.start();
    state.start();
    await election.start();
    await membership.start();
    init.signal?.throwIfAborted();
  } catch (error) {
    await stop().catch(() => undefined);
    throw error;
  }

  return {
    peerId: host.peerId,
    rpc,
    streams,
    testing: host.partition,
    addresses: () => host.addresses(),
    members: () => membership.members(),
    view: () => state.view(),
    queen: () => election.queen(),
    isQueen: () => election.isQueen(),
    term: () => election.term(),
    fence: (term) => election.fence(term),
    publish: (value) => state.publish(value),
    on: (type, listener) => events.on(type, listener),
    stats: () => ({ frames: { ...host.frameStats }, rpc: { ...rpc.stats }, election: election.stats() }),
    stop,
  };
}
