/**
 * This node's place in the cluster: starts the p2p layer (src/p2p) with the node's keys and config,
 * publishes this hive's state whenever it changes, turns the members' published states into the
 * live view's remote hives, and reports what happens (members, queen, duplicates) in the log and
 * the narration. Loaded after the API is up, so libp2p's module load never delays a wake.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createClusterNode,
  loadOrCreateClusterKey,
  type ClusterNode,
  type FrameStats,
  type QueenInfo,
} from '../../p2p/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { ClusterStatus } from '../../shared/view.js';
import type { ClusterConfig } from '../config.js';
import type { Hive } from '../hive/index.js';
import type { ClusterSource } from '../view/index.js';
import { createMemberStates, type RemoteHiveState } from './member-states.js';
import type { PlacementQueue, QueuePosition, QueueRequest, Ticket } from '../queen/index.js';
import { createRemoteHive } from './remote-hive.js';
import { createTokenRelay, type RelayFrame } from './token-relay.js';
import { assertQueenCommand } from './queen-command.js';
import {
  hiveRun,
  hiveShutdown,
  hiveStopWorker,
  queenPlace,
  queenShutdown,
  type ClusterShutdown,
} from './protocol.js';
import type { Logger } from '../logger.js';
import type { DataPaths } from '../../shared/paths.js';
import { createSqliteClusterStore, type ApiKeyStore, type Database, type PieceList } from '../store/index.js';
import type { LocalJobs, MemberJobs } from '../jobs/index.js';
import { createMemberJobs, serveJobs } from './jobs.js';
import { startKeySync, type KeyReplication } from './key-sync.js';
import { startModelShare } from './models.js';
import type { PeerNetwork } from '../models/index.js';

export interface ClusterLinkInit {
  config: ClusterConfig;
  paths: DataPaths;
  db: Database;
  log: Logger;
  nodeName: string;
  /** This node's hive, whose state the link publishes. */
  local: Hive;
  /** Remote hives, the queen or the members changed: the live view recomputes its hive sections. */
  onViewChange: () => void;
  narrate: (text: string) => void;
  /** The queen told this hive to stop (a fenced command of the current term). */
  onShutdown: (reason: string) => void;
  /** Another node asks this hive to stop one of its workers (a user acting from that node). */
  stopWorker: (id: string, reason: string) => Promise<{ forced: boolean }>;
  /** This node's placement queue: the cluster's while this node is queen. */
  queue: PlacementQueue;
  /** This node's API keys: replicated through the queen to every node (key-sync.ts). */
  keys: ApiKeyStore;
  /** This node's jobs table, which other members ask about (`node.jobs`, `node.cancelJob`). */
  jobs: LocalJobs;
  /** The files of this hive's catalog by sha256, which other hives fetch models from (`model.read`). */
  readModel: (
    sha256: string,
    options: { offset: number; length?: number; signal: AbortSignal },
  ) => AsyncIterable<Uint8Array>;
  /** The piece list of a file of this hive's catalog by sha256, which other hives check pieces against. */
  modelPieces?: (sha256: string, options: { signal: AbortSignal }) => Promise<PieceList>;
  /** Model reads served to other hives at once. */
  maxModelReads: number;
  /** Bytes per second all model reads served to other hives may send together; unlimited when absent. */
  modelServeBytesPerSecond?: number;
}

export interface ClusterLink extends ClusterSource {
  status(): ClusterStatus;
  /** This hive changed: publish soon (coalesced). */
  localChanged(): void;
  /**
   * `rbee shutdown --cluster`: the queen tells every other hive to stop, under its term; from a
   * follower the request goes to the queen. The caller stops this node itself once it has answered.
   */
  shutdownCluster(): Promise<ClusterShutdown>;
  /** Stops a worker that runs on another hive; NOT_FOUND when no member runs it. */
  stopRemoteWorker(id: string): Promise<{ forced: boolean; hive: string }>;
  /**
   * Where a job should run: a ticket from the queen's queue (its scheduler over every hive's state),
   * asked over the cluster (a local call on the queen), after a wait in its queue if nothing has
   * room. A queen that goes away is asked again once another is elected; NO_QUEEN when none is in
   * time. Release the ticket when the job ends there.
   */
  place(
    request: QueueRequest,
    options?: { signal?: AbortSignal; onQueued?: (position: QueuePosition, queen: string) => void },
  ): Promise<Ticket>;
  /** The hive with this id: this node's own, or a live member's (undefined when it is gone). */
  hive(id: string): Hive | undefined;
  /** Leaves the cluster gracefully (a queen hands over at once). Bounded by `timeoutMs`. */
  stop(timeoutMs?: number): Promise<void>;
  /** Frames this node's p2p host passed and refused, since it started (the node's metrics). */
  frameStats(): FrameStats;
  /** A key was created or revoked on this node: to the queen, which gives it to every hive. */
  keysChanged(): Promise<KeyReplication>;
  /** The jobs of the other live members: asked of them all at once; cancelled by their entry node. */
  memberJobs: MemberJobs;
  /** The live hives that hold a model, and its bytes from one of them (for the provisioner). */
  peers: PeerNetwork;
}

/** How long placement waits for a queen (an election takes about a lease, 1.5 s). */
const PLACE_WAIT_MS = 4_000;

/** Shortest time between two publishes of this hive's state. */
const PUBLISH_COALESCE_MS = 100;
/** Free memory changes without an event: publish at least this often. */
const PUBLISH_REFRESH_MS = 5_000;

export async function startClusterLink(init: ClusterLinkInit): Promise<ClusterLink> {
  const { log, config } = init;
  const { key, created } = await loadOrCreateClusterKey(init.paths.clusterKey);
  if (created) {
    init.narrate('created a new cluster key; `rbee cluster code` prints the code other machines join with');
  }
  const node: ClusterNode = await createClusterNode({
    peerKeyPath: init.paths.peerKey,
    clusterKey: key,
    listen: config.listen,
    mdns: config.mdns,
    peers: config.peers,
    store: createSqliteClusterStore(init.db),
    log: (event, details) => log.debug({ ...details, event }, `election: ${event}`),
  });
  const self = node.peerId;
  const duplicates = new Set<string>();
  const states = createMemberStates({
    self,
    onInvalid: (peer, version) =>
      log.warn({ peer, version }, 'a member published a state that does not parse; left out of the view'),
  });
  const remotes = (): RemoteHiveState[] => states.parse(node.view());

  const nameOf = (id: string): string | undefined =>
    id === self ? init.nodeName : remotes().find((r) => r.id === id)?.state.hive.name;

  let lastQueen: QueenInfo | null = null;
  let liveCount = 1;
  node.on('change', (change) => {
    if (change.kind === 'queen') {
      const queen = change.queen;
      if (queen?.id !== lastQueen?.id || queen?.term !== lastQueen?.term) {
        log.info({ queen: queen?.id ?? null, term: queen?.term ?? null, self }, 'queen changed');
        if (queen === null) init.narrate('no queen: the cluster is electing one');
        else if (queen.id !== lastQueen?.id) {
          init.narrate(
            queen.id === self
              ? `this node is queen (term ${queen.term})`
              : `queen is ${nameOf(queen.id) ?? queen.id} (term ${queen.term})`,
          );
        }
      }
      lastQueen = queen;
      // jobs waiting here for a place ask the new queen (their order travels with them)
      if (queen?.id !== self) {
        init.queue.rejectAll(new RbeeError('NOT_QUEEN', 'this node is not the queen any more'));
      }
    } else if (change.kind === 'members') {
      const live = node.members().filter((m) => m.live).length + 1;
      if (live !== liveCount) {
        log.info(
          { live, members: node.members().map((m) => ({ id: m.id, live: m.live })) },
          'members changed',
        );
        liveCount = live;
      }
    } else if (change.kind === 'duplicate') {
      if (!duplicates.has(change.id)) {
        duplicates.add(change.id);
        log.error(
          { peer: change.id },
          'two live nodes share one peer id: a data directory was copied; stop one and delete its peer.key',
        );
        init.narrate(
          `two live nodes answer for ${change.id}: a copied data directory? stop one and delete its peer.key`,
        );
      }
    }
    if (change.kind === 'view' && change.id === self) return;
    init.onViewChange();
    // a hive published (or a member came or went): jobs waiting for room are tried again
    if (node.isQueen()) init.queue.changed();
  });

  let publishTimer: NodeJS.Timeout | undefined;
  const publish = (): void => {
    publishTimer = undefined;
    try {
      const state = init.local.state();
      // the queen's queue is part of what it publishes: every node shows the cluster's waiting jobs
      node.publish(node.isQueen() ? { ...state, queue: init.queue.depth() } : state);
    } catch (error) {
      log.warn({ err: error }, 'publishing the hive state failed');
    }
  };
  const refresh = setInterval(publish, PUBLISH_REFRESH_MS);
  refresh.unref();
  publish();

  log.info(
    { peerId: self, addresses: node.addresses(), mdns: config.mdns, peers: config.peers },
    'cluster node listening',
  );

  /** As queen: tells every live member but `except` to stop, under this term. */
  const commandShutdown = async (except: string | undefined, by: string): Promise<ClusterShutdown> => {
    const term = node.term();
    if (!node.isQueen()) throw new RbeeError('NOT_QUEEN', 'this node is not the queen (any more)');
    const targets = node
      .members()
      .filter((m) => m.live && m.id !== except)
      .map((m) => m.id);
    log.info({ term, targets, by }, 'queen: stopping the cluster');
    init.narrate(`stopping the cluster (term ${term}): ${targets.length + 1} hive(s)`);
    const told = await Promise.all(
      targets.map((peer) =>
        node.rpc.call(peer, hiveShutdown, { term, reason: `the queen stops the cluster (${by})` }).then(
          () => peer,
          (error: unknown) => {
            log.warn({ peer, err: toRbeeError(error) }, 'a hive did not take the stop command');
            return undefined;
          },
        ),
      ),
    );
    return { queen: self, term, hives: told.filter((id): id is string => id !== undefined) };
  };

  node.rpc.handle(hiveShutdown, ({ term, reason }, { peer }) => {
    assertQueenCommand(node, peer, term, (id) => nameOf(id) ?? id);
    log.info({ term, from: peer }, 'the queen asked this hive to stop');
    // answer first: the reply must leave before the node closes its connections
    setTimeout(() => init.onShutdown(reason), 50);
    return { stopping: true as const };
  });
  node.rpc.handle(hiveStopWorker, ({ id }, { peer }) =>
    init.stopWorker(id, `asked from ${nameOf(peer) ?? peer}`),
  );
  /** As queen: a ticket from this node's queue, which then places over every live hive. */
  const placeHere = (
    request: QueueRequest,
    options: { signal?: AbortSignal; onQueued?: (position: QueuePosition) => void },
  ): Promise<Ticket> => {
    if (!node.isQueen()) throw new RbeeError('NOT_QUEEN', 'this node is not the queen (any more)');
    return init.queue.acquire(request, options);
  };
  node.streams.handle(queenPlace, async ({ params, channel, signal }) => {
    const ticket = await placeHere(withoutUndefined(params), {
      signal,
      onQueued: (position) =>
        void channel
          .write({ type: 'queued', ...withoutUndefined(position) }, { signal })
          .catch(() => undefined),
    });
    try {
      await channel.write(
        { type: 'placed', placement: { ...ticket.placement, queen: ticket.queen } },
        { signal },
      );
      // the job holds its slot until the entry node closes the stream (or its node goes away)
      await channel.read({ signal }).catch(() => undefined);
    } finally {
      ticket.release();
    }
  });
  // a job the queen placed here: run it on this hive, its events streamed back to the entry node
  node.streams.handle(hiveRun, async ({ params, channel, signal, peer }) => {
    log.debug({ job: params.job.id, from: peer }, 'running a job for another node');
    const write = (frame: RelayFrame): Promise<void> => channel.write(frame, { signal });
    // an entry node that reads no token runs gets a frame per token (intervalMs 0)
    const relay = createTokenRelay({ write, ...(params.tokenRuns === true ? {} : { intervalMs: 0 }) });
    await init.local
      .run(
        { id: params.job.id, request: params.job.request, acceptedAt: Date.now(), device: params.job.device },
        { signal, emit: (event) => relay.emit(event) },
      )
      .catch(async (error: unknown) => {
        // the tokens generated before a failure reach the entry node ahead of the error
        await relay.flush().catch(() => undefined);
        throw error;
      });
    await relay.flush();
  });

  serveJobs(node, init.jobs);
  const peers = startModelShare({
    node,
    log,
    read: init.readModel,
    ...(init.modelPieces === undefined ? {} : { pieces: init.modelPieces }),
    maxReads: init.maxModelReads,
    ...(init.modelServeBytesPerSecond === undefined ? {} : { bytesPerSecond: init.modelServeBytesPerSecond }),
    remotes,
    nameOf,
  });

  node.rpc.handle(queenShutdown, async (_params, { peer }) => {
    const result = await commandShutdown(peer, `asked by ${nameOf(peer) ?? peer}`);
    setTimeout(() => init.onShutdown('the queen stops the cluster'), 50);
    // seen from the asking node, the queen is one of the other hives that stop
    return { ...result, hives: [...result.hives, self] };
  });

  const keySync = startKeySync({ node, keys: init.keys, log, nameOf });

  const remoteHives = new Map<string, Hive>();
  const hive = (id: string): Hive | undefined => {
    if (id === self) return init.local;
    const remote = remotes().find((r) => r.id === id);
    if (remote === undefined) return undefined;
    let known = remoteHives.get(id);
    if (known === undefined || known.name !== remote.state.hive.name) {
      known = createRemoteHive({
        node,
        id,
        name: remote.state.hive.name,
        state: () => remotes().find((r) => r.id === id)?.state ?? remote.state,
      });
      remoteHives.set(id, known);
    }
    return known;
  };

  /** Asks the queen on another node; the stream stays open (the slot held) until released. */
  async function placeOnQueen(
    queen: string,
    request: QueueRequest,
    options: { signal?: AbortSignal; onQueued: (position: QueuePosition) => void },
  ): Promise<Ticket> {
    const channel = await node.streams.open(queen, queenPlace, request, {
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
    try {
      for (;;) {
        const frame = await channel.read(options.signal === undefined ? {} : { signal: options.signal });
        if (frame === undefined) {
          throw new RbeeError('NODE_UNREACHABLE', 'the queen ended the placement without an answer');
        }
        if (frame.type === 'queued') {
          options.onQueued(withoutUndefined(frame));
          continue;
        }
        const { queen: queenName, ...placement } = frame.placement;
        return {
          placement: withoutUndefined(placement),
          queen: queenName,
          release: () => void channel.close().catch(() => channel.abort(new Error('released'))),
        };
      }
    } catch (error) {
      channel.abort(error instanceof Error ? error : new Error(String(error)));
      throw toRbeeError(error, 'NODE_UNREACHABLE');
    }
  }

  let stopping: Promise<void> | undefined;
  return {
    hive,
    frameStats: () => node.stats().frames,
    keysChanged: () => keySync.changed(),
    memberJobs: createMemberJobs(node, nameOf),
    peers,
    async place(request, options = {}) {
      const { signal } = options;
      // counted from the last word of a queen: a job may wait in a queue for long before one dies
      let deadline = Date.now() + PLACE_WAIT_MS;
      for (;;) {
        signal?.throwIfAborted();
        const queen = node.queen();
        try {
          if (queen?.id === self) {
            return await placeHere(request, {
              ...(signal === undefined ? {} : { signal }),
              onQueued: (position) => options.onQueued?.(position, init.nodeName),
            });
          }
          if (queen !== null) {
            return await placeOnQueen(queen.id, request, {
              ...(signal === undefined ? {} : { signal }),
              onQueued: (position) => {
                deadline = Date.now() + PLACE_WAIT_MS;
                options.onQueued?.(position, nameOf(queen.id) ?? queen.id);
              },
            });
          }
        } catch (error) {
          const rbee = toRbeeError(error);
          // a queen that just stepped down or died: ask again once a new one is known
          if (
            signal?.aborted === true ||
            !['NOT_QUEEN', 'NODE_UNREACHABLE', 'TIMEOUT'].includes(rbee.code) ||
            Date.now() > deadline
          ) {
            throw rbee;
          }
          log.info({ queen: queen?.id, err: rbee }, 'placement: the queen did not answer; asking again');
        }
        if (Date.now() > deadline) {
          throw new RbeeError(
            'NO_QUEEN',
            'the cluster has no queen to place the job (an election is under way)',
          );
        }
        await sleep(100, undefined, signal === undefined ? {} : { signal });
      }
    },
    selfId: () => self,
    queen: () => node.queen(),
    remotes,
    async shutdownCluster() {
      const queen = node.queen();
      if (queen === null) {
        throw new RbeeError(
          'NO_QUEEN',
          'the cluster has no queen right now (an election is under way); try again',
        );
      }
      if (queen.id === self) return commandShutdown(undefined, 'asked on this node');
      return node.rpc.call(queen.id, queenShutdown, {});
    },
    async stopRemoteWorker(id) {
      const owner = remotes().find((r) => r.state.workers.some((w) => w.id === id));
      if (owner === undefined) throw new RbeeError('NOT_FOUND', `no worker ${id} on any hive of the cluster`);
      const { forced } = await node.rpc.call(owner.id, hiveStopWorker, { id }, { timeoutMs: 20_000 });
      return { forced, hive: owner.id };
    },
    localChanged() {
      publishTimer ??= setTimeout(publish, PUBLISH_COALESCE_MS);
    },
    status: () => {
      const queen = node.queen();
      return {
        enabled: true,
        state: 'running',
        self: { id: self, name: init.nodeName },
        queen: queen === null ? null : { ...queen, ...optionalName(nameOf(queen.id)) },
        isQueen: node.isQueen(),
        term: node.term(),
        mdns: config.mdns,
        listen: node.addresses(),
        staticPeers: config.peers,
        members: node.members().map((m) => ({ ...m, ...optionalName(nameOf(m.id)) })),
        hives: [],
        duplicates: [...duplicates],
      };
    },
    stop(timeoutMs = 2_000) {
      stopping ??= (async () => {
        clearInterval(refresh);
        clearTimeout(publishTimer);
        keySync.stop();
        await node.stop({ signal: AbortSignal.timeout(timeoutMs) }).catch((error: unknown) => {
          log.warn({ err: toRbeeError(error) }, 'leaving the cluster did not finish in time');
        });
      })();
      return stopping;
    },
  };
}

function optionalName(name: string | undefined): { name?: string } {
  return name === undefined ? {} : { name };
}

/** zod leaves absent optional fields as undefined keys; the scheduler's types say "absent". */
function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
