/**
 * Who is in the cluster right now. Every node heartbeats every connected peer (rpc `member.hb`);
 * hearing from a peer, in either direction, keeps it live; a connection close or `expireMs` of
 * silence makes it leave. A partition keeps TCP connections open, so only the silence shows it.
 *
 * Heartbeats also gossip the live members' addresses (so a static peer leads to a full mesh), carry
 * a small digest for cluster-state anti-entropy, and a per-process instance id: two instances
 * answering for one peer id at once means a copied data directory, which is reported.
 *
 * Members are persisted (addresses, last seen) so that a restarted node re-dials them.
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { createEmitter, type Emitter } from './emitter.js';
import type { P2pHost } from './host.js';
import { defineMethod, type Rpc } from './rpc.js';
import type { ClusterStore } from './store.js';

export interface MembershipTiming {
  /** Defaults to 500 ms. */
  heartbeatMs: number;
  /** Silence after which a member leaves. Defaults to 2 s (4 missed heartbeats). */
  expireMs: number;
  /** How long a silent member still counts as a voter (see election.ts). Defaults to 30 s. */
  forgetAfterMs: number;
}

export const DEFAULT_MEMBERSHIP_TIMING: MembershipTiming = {
  heartbeatMs: 500,
  expireMs: 2_000,
  forgetAfterMs: 30_000,
};

export type LeaveReason = 'expired' | 'disconnected' | 'left';

export interface MemberInfo {
  id: string;
  addrs: string[];
  live: boolean;
  /** Wall-clock ms of the last heartbeat; 0 when never heard in this run. */
  lastSeen: number;
}

export interface MembershipEvents extends Record<string, unknown> {
  join: string;
  leave: { id: string; reason: LeaveReason };
  heartbeat: { id: string; digest: unknown };
  /** Another process answers for `id` at the same time: a copied data directory. */
  duplicate: { id: string };
}

export interface MembershipInit {
  host: P2pHost;
  rpc: Rpc;
  store: ClusterStore;
  timing?: Partial<MembershipTiming>;
  /** Sent with every heartbeat (cluster-state uses it for its version). */
  digest?: () => unknown;
  now?: () => number;
}

export interface Membership {
  readonly events: Emitter<MembershipEvents>;
  readonly instance: string;
  readonly timing: MembershipTiming;
  start(): Promise<void>;
  /** Tells live members we leave, then stops heartbeating. */
  stop(): Promise<void>;
  members(): MemberInfo[];
  isLive(id: string): boolean;
  liveMembers(): string[];
  /** This node plus every member heard in this run that did not leave and is not long silent. */
  voters(): string[];
}

interface Member {
  id: string;
  addrs: Set<string>;
  live: boolean;
  left: boolean;
  /** The instance that said goodbye: its late heartbeats must not bring it back. */
  leftInstance: string | undefined;
  lastHeard: number;
  lastSeenWall: number;
  instances: Map<string, number>;
  inFlight: boolean;
}

const addrsSchema = z.array(z.string().max(512)).max(32);
const heartbeat = defineMethod(
  'member.hb',
  z.object({
    instance: z.string().max(64),
    addrs: addrsSchema,
    members: z.array(z.object({ id: z.string().max(128), addrs: addrsSchema })).max(256),
    digest: z.unknown(),
  }),
  z.object({ instance: z.string().max(64), addrs: addrsSchema, duplicate: z.boolean() }),
);
const leave = defineMethod('member.leave', z.object({ instance: z.string().max(64) }), z.null());
const persistedSchema = z.array(
  z.object({ id: z.string(), addrs: z.array(z.string()), lastSeen: z.number() }),
);

export function createMembership(init: MembershipInit): Membership {
  const { host, rpc, store } = init;
  const timing = { ...DEFAULT_MEMBERSHIP_TIMING, ...init.timing };
  const now = init.now ?? (() => performance.now());
  const instance = randomUUID();
  const events = createEmitter<MembershipEvents>();
  const members = new Map<string, Member>();
  const unsubscribe: Array<() => void> = [];
  let timer: NodeJS.Timeout | undefined;
  let persistTimer: NodeJS.Timeout | undefined;
  let stopped = false;
  let duplicateReported = false;

  const member = (id: string): Member => {
    let m = members.get(id);
    if (m === undefined) {
      m = {
        id,
        addrs: new Set(),
        live: false,
        left: false,
        leftInstance: undefined,
        lastHeard: -Infinity,
        lastSeenWall: 0,
        instances: new Map(),
        inFlight: false,
      };
      members.set(id, m);
    }
    return m;
  };

  const persistSoon = (): void => {
    if (persistTimer !== undefined || stopped) return;
    persistTimer = setTimeout(() => {
      persistTimer = undefined;
      void persist();
    }, 250);
  };
  const persist = async (): Promise<void> => {
    const list = [...members.values()]
      .map((m) => ({
        id: m.id,
        addrs: m.addrs.size > 0 ? [...m.addrs] : host.knownAddresses(m.id),
        lastSeen: m.lastSeenWall,
      }))
      .filter((m) => m.addrs.length > 0);
    await store.write('members', list).catch(() => undefined);
  };

  const reportDuplicate = (id: string): void => {
    if (id === host.peerId) {
      if (duplicateReported) return;
      duplicateReported = true;
    }
    events.emit('duplicate', { id });
  };

  /** Evidence that `id` is alive; returns true when two instances of it are alive at once. */
  const heard = (id: string, from: string, addrs?: string[]): boolean => {
    if (stopped || id === host.peerId) return false;
    const m = member(id);
    if (m.leftInstance === from) return false;
    const t = now();
    const duplicate = [...m.instances].some(([other, at]) => other !== from && t - at < timing.expireMs);
    m.instances.set(from, t);
    m.lastHeard = t;
    m.lastSeenWall = Date.now();
    m.left = false;
    let changed = false;
    if (addrs !== undefined && addrs.length > 0) {
      // what a peer says about itself replaces what we knew: ephemeral ports change on restart
      const current = new Set(addrs.map(withoutPeerId));
      if (current.size !== m.addrs.size || [...current].some((a) => !m.addrs.has(a))) {
        m.addrs = current;
        changed = true;
        host.remember(id, [...current]);
      }
    }
    if (!m.live) {
      m.live = true;
      changed = true;
      events.emit('join', id);
    }
    if (changed) persistSoon();
    if (duplicate) reportDuplicate(id);
    return duplicate;
  };

  const drop = (m: Member, reason: LeaveReason): void => {
    if (reason === 'left') m.left = true;
    if (reason !== 'expired') m.instances.clear();
    if (!m.live) return;
    m.live = false;
    events.emit('leave', { id: m.id, reason });
    persistSoon();
  };

  const gossip = (): Array<{ id: string; addrs: string[] }> =>
    [...members.values()]
      .filter((m) => m.live && m.addrs.size > 0)
      .slice(0, 256)
      .map((m) => ({ id: m.id, addrs: [...m.addrs].slice(0, 32) }));

  const beat = (peer: string): void => {
    const m = member(peer);
    if (m.inFlight || stopped) return;
    m.inFlight = true;
    const params = {
      instance,
      addrs: host.addresses().slice(0, 32),
      members: gossip(),
      digest: init.digest?.() ?? null,
    };
    rpc
      .call(peer, heartbeat, params, {
        timeoutMs: Math.min(timing.expireMs, timing.heartbeatMs * 4),
        dial: false,
      })
      .then(
        (reply) => {
          heard(peer, reply.instance, reply.addrs);
          if (reply.duplicate) reportDuplicate(host.peerId);
        },
        () => undefined, // silence is what expiry is for
      )
      .finally(() => {
        m.inFlight = false;
      });
  };

  let lastTick = now();
  const tick = (): void => {
    const t = now();
    const gap = t - lastTick;
    lastTick = t;
    for (const m of members.values()) {
      // time this process spent frozen (GC, a suspended laptop) is not the peers' silence
      if (gap > timing.heartbeatMs * 4) m.lastHeard += gap - timing.heartbeatMs;
      if (m.live && t - m.lastHeard > timing.expireMs) {
        drop(m, 'expired');
        // a partition keeps the TCP connection open but useless: start over on a fresh one
        host.recycle(m.id);
      }
    }
    for (const peer of host.connectedPeers()) beat(peer);
  };

  return {
    events,
    instance,
    timing,
    async start() {
      const saved = persistedSchema.safeParse(await store.read('members'));
      if (saved.success) {
        for (const entry of saved.data) {
          if (entry.id === host.peerId) continue;
          const m = member(entry.id);
          for (const addr of entry.addrs) m.addrs.add(addr);
          m.lastSeenWall = entry.lastSeen;
          host.remember(entry.id, entry.addrs);
        }
      }
      rpc.handle(heartbeat, (params, { peer }) => {
        const duplicate = heard(peer, params.instance, params.addrs);
        for (const other of params.members) {
          if (other.id !== host.peerId && members.get(other.id)?.live !== true)
            host.remember(other.id, other.addrs);
        }
        events.emit('heartbeat', { id: peer, digest: params.digest });
        return { instance, addrs: host.addresses().slice(0, 32), duplicate };
      });
      rpc.handle(leave, (params, { peer }) => {
        const m = member(peer);
        m.leftInstance = params.instance;
        drop(m, 'left');
        host.forget(peer);
        return null;
      });
      unsubscribe.push(
        host.events.on('connect', (peer) => beat(peer)),
        host.events.on('disconnect', (peer) => {
          const m = members.get(peer);
          if (m !== undefined) drop(m, 'disconnected');
        }),
      );
      lastTick = now();
      timer = setInterval(tick, timing.heartbeatMs);
      for (const peer of host.connectedPeers()) beat(peer);
    },
    async stop() {
      if (stopped) return;
      clearInterval(timer);
      const live = [...members.values()].filter((m) => m.live).map((m) => m.id);
      await Promise.allSettled(
        live.map((peer) => rpc.call(peer, leave, { instance }, { timeoutMs: 500, dial: false })),
      );
      stopped = true;
      clearInterval(timer);
      clearTimeout(persistTimer);
      for (const off of unsubscribe.splice(0)) off();
      await persist();
      events.clear();
    },
    members: () =>
      [...members.values()].map((m) => ({
        id: m.id,
        addrs: [...m.addrs],
        live: m.live,
        lastSeen: m.lastSeenWall,
      })),
    isLive: (id) => id === host.peerId || members.get(id)?.live === true,
    liveMembers: () => [...members.values()].filter((m) => m.live).map((m) => m.id),
    voters() {
      const t = now();
      const others = [...members.values()].filter(
        (m) => !m.left && (m.live || t - m.lastHeard < timing.forgetAfterMs),
      );
      return [host.peerId, ...others.map((m) => m.id)].sort();
    },
  };
}

function withoutPeerId(addr: string): string {
  return addr.replace(/\/p2p\/[^/]+$/, '');
}
