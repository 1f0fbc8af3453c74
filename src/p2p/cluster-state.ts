/**
 * The shared cluster view: every node publishes its own state (opaque JSON) with a version, and holds
 * peerId → { state, version, lastSeen } for every live member. A member's full state is fetched by
 * rpc when it joins (pub/sub keeps nothing for late joiners), later versions are pushed, and the
 * version in every membership heartbeat repairs a lost push. Members that leave leave the view.
 */
import { z } from 'zod';
import { RbeeError } from '../shared/errors.js';
import { DEFAULT_MAX_FRAME_BYTES } from './codec.js';
import { createEmitter, type Emitter } from './emitter.js';
import { defineMethod, type Rpc } from './rpc.js';

export interface ViewEntry {
  id: string;
  state: unknown;
  /** 0 until the member published anything. */
  version: number;
  /** Wall-clock ms of the last sign of life. */
  lastSeen: number;
}

export interface ClusterStateInit {
  self: string;
  /** This process's instance id: versions restart from 1 when a node restarts. */
  instance: string;
  rpc: Rpc;
  liveMembers: () => string[];
  lastSeen: (id: string) => number;
  /** Deadline for fetches and pushes. Defaults to 2 s. */
  rpcTimeoutMs?: number;
}

export interface ClusterState {
  readonly events: Emitter<{ change: string }>;
  start(): void;
  stop(): void;
  /** Replaces this node's state (JSON, under ~1 MiB); returns its new version. */
  publish(state: unknown): number;
  view(): ViewEntry[];
  /** What heartbeats carry. */
  digest(): { instance: string; version: number };
  onJoin(peer: string): void;
  onLeave(peer: string): void;
  onHeartbeat(peer: string, digest: unknown): void;
}

const snapshotSchema = z.object({
  instance: z.string().max(64),
  version: z.number().int().min(0),
  state: z.unknown(),
});
type Snapshot = z.infer<typeof snapshotSchema>;
const getState = defineMethod('state.get', z.object({}), snapshotSchema);
const pushState = defineMethod('state.push', snapshotSchema, z.null());

export function createClusterState(init: ClusterStateInit): ClusterState {
  const { self, rpc, instance } = init;
  const timeoutMs = init.rpcTimeoutMs ?? 2_000;
  // it must fit in one frame with its envelope
  const maxStateBytes = DEFAULT_MAX_FRAME_BYTES - 4096;
  const events = createEmitter<{ change: string }>();
  const entries = new Map<string, Snapshot>();
  const fetching = new Set<string>();
  let own: Snapshot = { instance, version: 0, state: null };
  let stopped = false;

  const accept = (peer: string, snapshot: Snapshot): void => {
    if (stopped || peer === self) return;
    const known = entries.get(peer);
    // a restarted peer has a new instance and counts its versions from 1 again
    if (known !== undefined && known.instance === snapshot.instance && known.version >= snapshot.version)
      return;
    entries.set(peer, snapshot);
    events.emit('change', peer);
  };

  const fetch = (peer: string): void => {
    if (fetching.has(peer) || stopped) return;
    fetching.add(peer);
    rpc
      .call(peer, getState, {}, { timeoutMs, dial: false })
      .then(
        (snapshot) => accept(peer, snapshot),
        () => undefined, // the next heartbeat digest asks again
      )
      .finally(() => fetching.delete(peer));
  };

  const digestSchema = z.object({ instance: z.string(), version: z.number() });

  return {
    events,
    start() {
      rpc.handle(getState, () => own);
      rpc.handle(pushState, (snapshot, { peer }) => {
        accept(peer, snapshot);
        return null;
      });
    },
    stop() {
      stopped = true;
      events.clear();
    },
    publish(state) {
      const bytes = new TextEncoder().encode(JSON.stringify(state) ?? 'null').byteLength;
      if (bytes > maxStateBytes) {
        throw new RbeeError('BAD_REQUEST', `published state of ${bytes} bytes exceeds ${maxStateBytes}`);
      }
      own = { instance, version: own.version + 1, state };
      events.emit('change', self);
      for (const peer of init.liveMembers()) {
        rpc.call(peer, pushState, own, { timeoutMs, dial: false }).catch(() => undefined);
      }
      return own.version;
    },
    view() {
      const live = new Set(init.liveMembers());
      const list: ViewEntry[] = [{ id: self, state: own.state, version: own.version, lastSeen: Date.now() }];
      for (const [id, snapshot] of entries) {
        if (!live.has(id)) continue;
        list.push({ id, state: snapshot.state, version: snapshot.version, lastSeen: init.lastSeen(id) });
      }
      return list;
    },
    digest: () => ({ instance, version: own.version }),
    onJoin(peer) {
      fetch(peer);
    },
    onLeave(peer) {
      if (entries.delete(peer)) events.emit('change', peer);
    },
    onHeartbeat(peer, digest) {
      const parsed = digestSchema.safeParse(digest);
      if (!parsed.success) return;
      const known = entries.get(peer);
      if (
        known === undefined ||
        known.instance !== parsed.data.instance ||
        known.version < parsed.data.version
      ) {
        fetch(peer);
      }
    },
  };
}
