/**
 * The libp2p host: TCP (or in-memory for tests), the cluster key as a private network
 * (private-network.ts), noise, yamux, identify, ping, and mDNS only when asked. libp2p 3 never dials the peers it discovers and forgets a peer after
 * a long partition, so this module dials them itself: the lower peer id dials first (the higher one
 * after a grace period) to avoid two connections per pair, and known or static peers are re-dialled
 * after a loss with exponential backoff.
 */
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { memory } from '@libp2p/memory';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@libp2p/yamux';
import { installYamuxWindowHysteresis } from './yamux-window.js';
import { identify } from '@libp2p/identify';
import { ping } from '@libp2p/ping';
import { mdns } from '@libp2p/mdns';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr';
import type { AbortOptions, ComponentLogger, Connection, PeerId, Stream } from '@libp2p/interface';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import { createEmitter, type Emitter } from './emitter.js';
import { raceSignal } from '../shared/abort.js';
import { createFrameStats, type FrameStats } from './codec.js';
import { loadOrCreatePeerKey } from './keys.js';
import { privateNetwork } from './private-network.js';
import { assertMdnsAllowed } from '../shared/mdns-guard.js';

export interface RedialOptions {
  /** First retry delay after a loss. Defaults to 250 ms. */
  initialMs?: number;
  /** Backoff ceiling. Defaults to 10 s. */
  maxMs?: number;
  /** Backoff ceiling while a peer was lost recently (a partition that may heal). Defaults to 1 s. */
  recentMaxMs?: number;
  /** How long a loss counts as recent. Defaults to 60 s. */
  recentMs?: number;
  /** How long the higher peer id waits for the lower one to dial. Defaults to 1 s. */
  graceMs?: number;
}

export interface P2pHostInit {
  peerKeyPath: string;
  /** The raw 32-byte cluster key. */
  clusterKey: Uint8Array;
  /** Multiaddrs to listen on, e.g. `/ip4/0.0.0.0/tcp/7834` or `/memory/a`. */
  listen: string[];
  /** Multicast discovery. Defaults to false: never enable it outside a network namespace in tests. */
  mdns?: boolean;
  /** mDNS query interval. Defaults to 5 s (the library's 10 s makes joins slow). */
  mdnsIntervalMs?: number;
  /** Static peers' multiaddrs, for networks where multicast is blocked. */
  peers?: string[];
  /** Defaults to 'tcp'. */
  transport?: 'tcp' | 'memory';
  redial?: RedialOptions;
  /** Where libp2p's own debug logs go (the node routes them into its logger). */
  logger?: ComponentLogger;
  signal?: AbortSignal;
}

export interface HostEvents extends Record<string, unknown> {
  connect: string;
  disconnect: string;
}

export type InboundHandler = (stream: Stream, peer: string) => void | Promise<void>;

export interface OpenStreamOptions extends AbortOptions {
  /** Dial when not connected. Defaults to true; heartbeats pass false so they never start dials. */
  dial?: boolean;
}

/** Test hooks that cut a link without touching the machine's network. */
export interface PartitionHooks {
  /** Silently drop our traffic to `peer`: connections stay open, requests time out (a real partition). */
  drop(peer: string): void;
  undrop(peer: string): void;
  isDropped(peer: string): boolean;
  /** Close connections to `peer` and refuse new ones both ways until unblocked. */
  block(peer: string): Promise<void>;
  unblock(peer: string): void;
}

export interface P2pHost {
  readonly libp2p: Libp2p;
  readonly peerId: string;
  readonly frameStats: FrameStats;
  readonly events: Emitter<HostEvents>;
  readonly partition: PartitionHooks;
  addresses(): string[];
  isConnected(peer: string): boolean;
  connectedPeers(): string[];
  /** Keeps `peer` on the re-dial list with these addresses (merged with what we knew). */
  remember(peer: string, addrs: string[]): void;
  /** Stops re-dialling `peer` (it left the cluster). */
  forget(peer: string): void;
  /**
   * Closes the connections to a peer that went silent and re-dials it on a fresh one: after a
   * partition heals, a new connection is up in milliseconds, while the old one waits out TCP's
   * retransmission backoff (seconds).
   */
  recycle(peer: string): void;
  knownAddresses(peer: string): string[];
  openStream(peer: string, protocol: string, options?: OpenStreamOptions): Promise<Stream>;
  handle(protocol: string, handler: InboundHandler): Promise<void>;
  stop(options?: AbortOptions): Promise<void>;
}

interface Known {
  addrs: Set<string>;
  attempt: number;
  timer: NodeJS.Timeout | undefined;
  /** When the connection was last lost (ms, monotonic); -Infinity when never. */
  lostAt: number;
}

/** One dial on a LAN takes milliseconds; a peer that does not answer in this long is not there. */
const DIAL_TIMEOUT_MS = 2_000;

const STREAM_LIMITS = { maxInboundStreams: 256, maxOutboundStreams: 256 };

export async function createP2pHost(init: P2pHostInit): Promise<P2pHost> {
  init.signal?.throwIfAborted();
  // the last point before a multicast socket opens: refused here whoever built the init
  if (init.mdns === true) assertMdnsAllowed();
  const { privateKey, peerId } = await loadOrCreatePeerKey(init.peerKeyPath);
  const redial = {
    initialMs: 250,
    maxMs: 10_000,
    recentMaxMs: 1_000,
    recentMs: 60_000,
    graceMs: 1_000,
    ...init.redial,
  };
  const blocked = new Set<string>();
  const dropped = new Set<string>();
  const known = new Map<string, Known>();
  const statics = new Map<string, { peer: string | undefined; attempt: number; timer?: NodeJS.Timeout }>();
  const events = createEmitter<HostEvents>();
  const frameStats = createFrameStats();
  let stopped = false;

  // one window update per half window, not per frame (see yamux-window.ts)
  installYamuxWindowHysteresis();
  let libp2p: Libp2p;
  try {
    libp2p = await createLibp2p({
      privateKey,
      addresses: { listen: init.listen },
      transports: [init.transport === 'memory' ? memory() : tcp()],
      connectionEncrypters: [noise()],
      // a 16 MiB window (the default ceiling) lets a paused reader's buffer pass the 4 MiB abort limit;
      // 1 MiB still fills a LAN link and keeps back-pressure tight
      streamMuxers: [yamux({ streamOptions: { maxStreamWindowSize: 1024 * 1024 } })],
      connectionProtector: privateNetwork({ key: init.clusterKey }),
      peerDiscovery: init.mdns === true ? [mdns({ interval: init.mdnsIntervalMs ?? 5_000 })] : [],
      // the default (5 per second per host) refuses quick reconnects after a partition heals
      connectionManager: { inboundConnectionThreshold: 100, maxIncomingPendingConnections: 50 },
      connectionMonitor: { pingInterval: 2_000 },
      connectionGater: {
        denyDialPeer: (peer) => blocked.has(peer.toString()),
        denyInboundEncryptedConnection: (peer) => blocked.has(peer.toString()),
        denyOutboundEncryptedConnection: (peer) => blocked.has(peer.toString()),
      },
      services: { identify: identify(), ping: ping() },
      ...(init.logger === undefined ? {} : { logger: init.logger }),
    });
  } catch (error) {
    throw new RbeeError('NODE_START_FAILED', `cannot start the p2p host: ${(error as Error).message}`, {
      cause: error,
    });
  }

  const isConnected = (peer: string): boolean =>
    libp2p.getConnections(peerIdFromString(peer)).some((c) => c.status === 'open');

  const backoff = (attempt: number, lostAt = -Infinity): number => {
    const recent = performance.now() - lostAt < redial.recentMs;
    const base = Math.min(recent ? redial.recentMaxMs : redial.maxMs, redial.initialMs * 2 ** attempt);
    return base / 2 + Math.random() * (base / 2);
  };

  const dialTargets = (peer: string, addrs: Iterable<string>): Multiaddr[] | PeerId => {
    const list = [...addrs].map((a) => multiaddr(`${a}/p2p/${peer}`));
    return list.length > 0 ? list : peerIdFromString(peer);
  };

  const scheduleRedial = (peer: string, delayMs: number): void => {
    const entry = known.get(peer);
    if (entry === undefined || stopped || entry.timer !== undefined) return;
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (stopped || !known.has(peer) || isConnected(peer) || blocked.has(peer)) return;
      libp2p.dial(dialTargets(peer, entry.addrs), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) }).then(
        () => {
          entry.attempt = 0;
        },
        () => {
          entry.attempt += 1;
          scheduleRedial(peer, backoff(entry.attempt, entry.lostAt));
        },
      );
    }, delayMs);
  };

  /** The lower id dials at once; the higher waits in case the lower one is already dialling. */
  const firstDialDelay = (peer: string): number => (peerId < peer ? 0 : redial.graceMs);

  const dialStatic = (addr: string): void => {
    const entry = statics.get(addr);
    if (entry === undefined || stopped) return;
    if (entry.peer !== undefined && isConnected(entry.peer)) return;
    libp2p.dial(multiaddr(addr), { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) }).then(
      (connection) => {
        entry.attempt = 0;
        entry.peer = connection.remotePeer.toString();
        host.remember(entry.peer, [addr]);
      },
      () => {
        if (stopped) return;
        entry.attempt += 1;
        entry.timer = setTimeout(() => dialStatic(addr), backoff(entry.attempt));
      },
    );
  };

  const onConnect = (event: CustomEvent<PeerId>): void => {
    const peer = event.detail.toString();
    const entry = known.get(peer);
    if (entry !== undefined) entry.attempt = 0;
    events.emit('connect', peer);
  };
  const onDisconnect = (event: CustomEvent<PeerId>): void => {
    const peer = event.detail.toString();
    events.emit('disconnect', peer);
    const entry = known.get(peer);
    if (entry !== undefined) {
      entry.lostAt = performance.now();
      scheduleRedial(peer, firstDialDelay(peer) + backoff(0));
    }
    for (const [addr, entry] of statics) {
      if (entry.peer === peer && entry.timer === undefined) {
        entry.timer = setTimeout(() => {
          entry.timer = undefined;
          dialStatic(addr);
        }, backoff(1));
      }
    }
  };
  const onDiscovery = (event: CustomEvent<{ id: PeerId; multiaddrs: Multiaddr[] }>): void => {
    const peer = event.detail.id.toString();
    host.remember(
      peer,
      event.detail.multiaddrs.map((a) => a.toString()),
    );
  };
  const onIdentify = (event: CustomEvent<{ peerId: PeerId; listenAddrs: Multiaddr[] }>): void => {
    host.remember(
      event.detail.peerId.toString(),
      event.detail.listenAddrs.map((a) => a.toString()),
    );
  };
  libp2p.addEventListener('peer:connect', onConnect);
  libp2p.addEventListener('peer:disconnect', onDisconnect);
  libp2p.addEventListener('peer:discovery', onDiscovery);
  libp2p.addEventListener('peer:identify', onIdentify);

  const host: P2pHost = {
    libp2p,
    peerId,
    frameStats,
    events,
    addresses: () => libp2p.getMultiaddrs().map((a) => a.toString()),
    isConnected,
    connectedPeers: () => libp2p.getPeers().map((p) => p.toString()),
    remember(peer, addrs) {
      // ids and addresses arrive in gossip from peers: anything unparsable is ignored, never thrown
      if (peer === peerId || stopped || !isValidPeerId(peer)) return;
      let entry = known.get(peer);
      if (entry === undefined) {
        entry = { addrs: new Set(), attempt: 0, timer: undefined, lostAt: -Infinity };
        known.set(peer, entry);
      }
      for (const addr of addrs) {
        const bare = addr.replace(/\/p2p\/[^/]+$/, '');
        if (isValidMultiaddr(`${bare}/p2p/${peer}`)) entry.addrs.add(bare);
      }
      if (!isConnected(peer)) scheduleRedial(peer, firstDialDelay(peer));
    },
    forget(peer) {
      const entry = known.get(peer);
      if (entry?.timer !== undefined) clearTimeout(entry.timer);
      known.delete(peer);
    },
    knownAddresses: (peer) => [...(known.get(peer)?.addrs ?? [])],
    recycle(peer) {
      if (stopped || !isValidPeerId(peer)) return;
      // the disconnect event that follows schedules the re-dial
      libp2p.hangUp(peerIdFromString(peer)).catch(() => undefined);
    },
    async openStream(peer, protocol, options = {}) {
      if (dropped.has(peer)) {
        // a black hole: nothing comes back until the caller's deadline
        await raceSignal(new Promise<never>(() => undefined), options.signal);
      }
      try {
        const connection = libp2p
          .getConnections(peerIdFromString(peer))
          .find((c: Connection) => c.status === 'open');
        if (connection !== undefined) return await connection.newStream(protocol, options);
        const addrs = known.get(peer)?.addrs ?? new Set<string>();
        // there is no peer routing here: without an address a dial could only wait for its deadline
        if (options.dial === false || addrs.size === 0) {
          throw new RbeeError('NODE_UNREACHABLE', `not connected to ${peer}`);
        }
        return await libp2p.dialProtocol(dialTargets(peer, addrs), protocol, options);
      } catch (error) {
        if (options.signal?.aborted === true) throw toRbeeError(options.signal.reason);
        if (error instanceof RbeeError) throw error;
        throw new RbeeError('NODE_UNREACHABLE', `cannot open ${protocol} to ${peer}`, { cause: error });
      }
    },
    async handle(protocol, handler) {
      await libp2p.handle(
        protocol,
        async (stream, connection) => {
          const peer = connection.remotePeer.toString();
          if (dropped.has(peer)) {
            stream.abort(new Error('dropped by a test partition'));
            return;
          }
          await handler(stream, peer);
        },
        STREAM_LIMITS,
      );
    },
    partition: {
      drop: (peer) => void dropped.add(peer),
      undrop: (peer) => void dropped.delete(peer),
      isDropped: (peer) => dropped.has(peer),
      async block(peer) {
        blocked.add(peer);
        await libp2p.hangUp(peerIdFromString(peer)).catch(() => undefined);
      },
      unblock(peer) {
        blocked.delete(peer);
        const entry = known.get(peer);
        if (entry !== undefined) {
          entry.attempt = 0;
          if (entry.timer !== undefined) clearTimeout(entry.timer);
          entry.timer = undefined;
          scheduleRedial(peer, firstDialDelay(peer));
        }
      },
    },
    async stop(options) {
      if (stopped) return;
      stopped = true;
      for (const entry of known.values()) if (entry.timer !== undefined) clearTimeout(entry.timer);
      for (const entry of statics.values()) if (entry.timer !== undefined) clearTimeout(entry.timer);
      libp2p.removeEventListener('peer:connect', onConnect);
      libp2p.removeEventListener('peer:disconnect', onDisconnect);
      libp2p.removeEventListener('peer:discovery', onDiscovery);
      libp2p.removeEventListener('peer:identify', onIdentify);
      events.clear();
      await raceSignal(Promise.resolve(libp2p.stop()), options?.signal);
    },
  };

  for (const addr of init.peers ?? []) {
    statics.set(addr, { peer: undefined, attempt: 0 });
    dialStatic(addr);
  }
  return host;
}

function isValidPeerId(peer: string): boolean {
  try {
    peerIdFromString(peer);
    return true;
  } catch {
    return false;
  }
}

function isValidMultiaddr(addr: string): boolean {
  try {
    multiaddr(addr);
    return true;
  } catch {
    return false;
  }
}
