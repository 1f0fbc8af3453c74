/**
 * The election's wire protocol (vote and queen-heartbeat rpc methods), what it persists, and the
 * rule that decides which queen wins when two meet. See election.ts for how they are used.
 */
import { z } from 'zod';
import type { Emitter } from './emitter.js';
import { defineMethod, type Rpc } from './rpc.js';
import type { ClusterStore } from './store.js';

export interface ElectionTiming {
  /** Queen heartbeat interval. Defaults to 250 ms. */
  heartbeatMs: number;
  /** Randomised election timeout. Defaults to 2–4 s. */
  electionTimeoutMinMs: number;
  electionTimeoutMaxMs: number;
  /** Must stay below electionTimeoutMinMs. Defaults to 1.5 s. */
  leaseMs: number;
  /** Deadline of one vote call (heartbeats use at most half a lease). Defaults to 1.5 s. */
  rpcTimeoutMs: number;
}

export const DEFAULT_ELECTION_TIMING: ElectionTiming = {
  heartbeatMs: 250,
  electionTimeoutMinMs: 2_000,
  electionTimeoutMaxMs: 4_000,
  leaseMs: 1_500,
  rpcTimeoutMs: 1_500,
};

export interface QueenInfo {
  id: string;
  term: number;
}

export interface ElectionStats {
  campaigns: number;
  preVotesLost: number;
  votesLost: number;
  won: number;
  reelections: number;
  stepDowns: number;
}

export interface ElectionInit {
  self: string;
  rpc: Rpc;
  store: ClusterStore;
  /** This node and the peers that count for a majority (sorted or not). */
  voters: () => string[];
  isLive: (peer: string) => boolean;
  timing?: Partial<ElectionTiming>;
  now?: () => number;
  /** Told about every campaign, win and step-down, for the node's log and narration. */
  log?: (event: string, details: Record<string, unknown>) => void;
}

export interface Election {
  readonly events: Emitter<{ queen: QueenInfo | null }>;
  readonly timing: ElectionTiming;
  start(): Promise<void>;
  /** Gives up leadership (a graceful stop) and stops taking part. */
  stop(): void;
  queen(): QueenInfo | null;
  isQueen(): boolean;
  term(): number;
  /** Throws STALE_TERM for a command from an older term; a newer term is adopted. */
  fence(term: number): void;
  /** Membership hook: `peer` stopped being live (`graceful` when it said goodbye). */
  memberLeft(peer: string, graceful: boolean): void;
  /** Membership hook: the set of voters may have changed. */
  membersChanged(): void;
  stats(): ElectionStats;
}

const termSchema = z.number().int().min(0);
export const voteMethod = defineMethod(
  'election.vote',
  z.object({ term: termSchema, candidate: z.string().max(128), pre: z.boolean() }),
  z.object({ term: termSchema, granted: z.boolean(), sinceLeaderMs: z.number().nullable() }),
);
const leaderInfo = { acks: z.number().int().min(0), leaderForMs: z.number().min(0) };
export const heartbeatMethod = defineMethod(
  'election.hb',
  z.object({ term: termSchema, leader: z.string().max(128), ...leaderInfo }),
  z.object({ ok: z.boolean(), term: termSchema, leader: z.string().nullable(), ...leaderInfo }),
);
export const persistedSchema = z.object({ term: termSchema, votedFor: z.string().nullable() });

export interface LeaderClaim {
  id: string;
  term: number;
  acks: number;
  leaderForMs: number;
}

/** Who wins when two queens meet: more acks, then queen for longer, then higher term, then lower id. */
export function beats(a: LeaderClaim, b: LeaderClaim): boolean {
  if (a.acks !== b.acks) return a.acks > b.acks;
  // leadership ages are measured on different machines: only a clear difference counts
  if (Math.abs(a.leaderForMs - b.leaderForMs) > 1_000) return a.leaderForMs > b.leaderForMs;
  if (a.term !== b.term) return a.term > b.term;
  return a.id < b.id;
}

/** Asks `peers` for (pre-)votes; settles once `needed` granted, so a dead voter costs no time. */
export function askVotes(
  rpc: Rpc,
  peers: string[],
  request: { term: number; candidate: string; pre: boolean },
  needed: number,
  options: { timeoutMs: number; onTerm: (term: number) => void },
): Promise<{ granted: number; since: number[] }> {
  return new Promise((resolve) => {
    let granted = 0;
    let pending = peers.length;
    const since: number[] = [];
    const settle = (): void => {
      if (granted >= needed || pending === 0) resolve({ granted, since: [...since] });
    };
    settle();
    for (const peer of peers) {
      rpc
        .call(peer, voteMethod, request, { timeoutMs: options.timeoutMs, dial: false })
        .then(
          (reply) => {
            options.onTerm(reply.term);
            if (reply.granted) {
              granted += 1;
              since.push(reply.sinceLeaderMs ?? Infinity);
            }
          },
          () => undefined,
        )
        .finally(() => {
          pending -= 1;
          settle();
        });
    }
  });
}

/** The acks a queen collected: its lease lasts `leaseMs` from the send time of a majority's latest. */
export function createLeaseTracker(self: string, leaseMs: number, now: () => number) {
  let lastAck = new Map<string, number>();
  return {
    reset(): void {
      lastAck = new Map();
    },
    ack(peer: string, sentAt: number): void {
      lastAck.set(peer, Math.max(lastAck.get(peer) ?? -Infinity, sentAt));
    },
    /** Acks (ourselves included) recent enough to count for a lease. */
    recentAcks(): number {
      const t = now();
      return 1 + [...lastAck.values()].filter((at) => t - at < leaseMs).length;
    },
    /** Until when a majority of `voters` backs us. */
    until(voters: string[], quorum: (count: number) => number): number {
      const needed = quorum(voters.length) - 1; // we ack ourselves
      if (needed <= 0) return now() + leaseMs;
      const acks = voters
        .filter((p) => p !== self)
        .map((p) => lastAck.get(p) ?? -Infinity)
        .sort((a, b) => b - a);
      return (acks[needed - 1] ?? -Infinity) + leaseMs;
    },
  };
}
