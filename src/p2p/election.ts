/**
 * Queen election: Raft's leader election without the log. Terms and votes are persisted, one vote
 * per term, randomised election timeouts, a pre-vote round (a node cut off from the majority cannot
 * inflate its term and later depose a healthy queen), leader heartbeats, and a lease.
 *
 * The rule, for every cluster size: a queen needs votes, then heartbeat acks, from a MAJORITY OF THE
 * VOTERS this node knows: itself plus every member heard in this run that did not leave gracefully
 * and has not been silent for `forgetAfterMs` (membership.ts). Consequences:
 * - one node: it is its own queen at once (a majority of one);
 * - 3 nodes, one dies or is cut off: the other two (2 of 3) elect; the lone one cannot;
 * - 2 nodes, one leaves gracefully (`stop()`): the other is alone, so queen at once; one crashes or
 *   is cut off: neither side has 2 of 2, so there is no queen until `forgetAfterMs` drops the silent
 *   one from the voters. This is the price of never having two queens in a partition; a longer
 *   partition than `forgetAfterMs` gives each side its own queen, and the merge below resolves it.
 *
 * Stickiness: a node that hears from a live queen refuses votes and heartbeats from anyone else, so
 * a joining node never deposes the incumbent. When two queens meet (a partition healed after
 * `forgetAfterMs`, or a node that was its own queen joins), the one with more acks wins, then the one
 * queen for longer, then the higher term, then the lower id; the winner re-elects itself in a fresh
 * term so that fencing tells its commands apart from the loser's.
 *
 * Lease: a queen acts only while a majority acked a heartbeat sent within `leaseMs`. Voters refuse
 * other candidates for `electionTimeoutMinMs` after hearing the queen, and `leaseMs` is smaller, so
 * the old queen's lease has run out before anyone else can win. When a queen's connection drops
 * (crash) voters may vote at once, and the new queen waits out what may remain of the old lease
 * before acting. A queen that stops gracefully gives up its lease, so failover needs no waiting.
 * A queen whose lease lapses stops acting at once but abdicates only `electionTimeoutMinMs` later,
 * and a follower that finds its own process was frozen gives the queen a full timeout again, so a
 * stall (GC, a busy event loop, a suspended laptop) does not by itself change the queen.
 */
import { RbeeError } from '../shared/errors.js';
import { createEmitter } from './emitter.js';
import {
  DEFAULT_ELECTION_TIMING,
  createLeaseTracker,
  type Election,
  type ElectionInit,
  type ElectionStats,
  type ElectionTiming,
  type QueenInfo,
  askVotes,
  beats,
  heartbeatMethod,
  persistedSchema,
  voteMethod,
  type LeaderClaim,
} from './election-protocol.js';

export {
  DEFAULT_ELECTION_TIMING,
  beats,
  type Election,
  type ElectionInit,
  type ElectionStats,
  type ElectionTiming,
  type QueenInfo,
};

export function createElection(init: ElectionInit): Election {
  const { self, rpc, store } = init;
  const timing = { ...DEFAULT_ELECTION_TIMING, ...init.timing };
  if (
    timing.leaseMs >= timing.electionTimeoutMinMs ||
    timing.electionTimeoutMaxMs < timing.electionTimeoutMinMs
  ) {
    throw new RbeeError(
      'CONFIG_INVALID',
      'election timing needs leaseMs < electionTimeoutMinMs <= electionTimeoutMaxMs',
    );
  }
  const now = init.now ?? (() => performance.now());
  const events = createEmitter<{ queen: QueenInfo | null }>();
  const log = init.log ?? (() => undefined);
  const stats: ElectionStats = {
    campaigns: 0,
    preVotesLost: 0,
    votesLost: 0,
    won: 0,
    reelections: 0,
    stepDowns: 0,
  };

  let term = 0;
  let votedFor: string | null = null;
  let role: 'follower' | 'candidate' | 'leader' = 'follower';
  let leader: string | null = null;
  let heardAt = -Infinity; // last heartbeat from a queen; kept after a crash, cleared after a goodbye
  let leaderTerm = 0; // the term of that heartbeat: a vote for a newer term is not yet a queen in it
  let claim = { acks: 0, leaderForMs: 0 }; // what our queen told us about itself
  let leaderSince = 0;
  let graceUntil = -Infinity; // a new queen gets one lease period to collect its first acks
  let leaseUntil = -Infinity;
  let activeAt = 0;
  let activeTimer: NodeJS.Timeout | undefined;
  const lease = createLeaseTracker(self, timing.leaseMs, now);
  const inFlight = new Set<string>();
  let electionDeadline = 0;
  let campaigning = false;
  let stopped = true;
  let timer: NodeJS.Timeout | undefined;
  let lastTick = 0;
  let reported: QueenInfo | null = null;

  const randomTimeout = (): number =>
    timing.electionTimeoutMinMs + Math.random() * (timing.electionTimeoutMaxMs - timing.electionTimeoutMinMs);
  const resetElectionTimer = (): void => {
    electionDeadline = now() + randomTimeout();
  };
  const voters = (): string[] => {
    const list = init.voters();
    return list.includes(self) ? list : [self, ...list];
  };
  const quorum = (count: number): number => Math.floor(count / 2) + 1;
  const persist = (): Promise<void> => store.write('election', { term, votedFor });

  const liveLeader = (): string | null => {
    const t = now();
    if (role === 'leader') return t < Math.max(leaseUntil, graceUntil) ? self : null;
    if (leader !== null && init.isLive(leader) && t - heardAt < timing.electionTimeoutMinMs) return leader;
    return null;
  };
  const ownClaim = (): LeaderClaim => ({
    id: self,
    term,
    acks: lease.recentAcks(),
    leaderForMs: now() - leaderSince,
  });

  const report = (): void => {
    const current = election.queen();
    if (current?.id === reported?.id && current?.term === reported?.term) return;
    reported = current;
    events.emit('queen', current);
  };

  /** Adopts a newer term (Raft: any message with a higher term makes us a follower in it). */
  const adoptTerm = async (newTerm: number): Promise<void> => {
    if (newTerm <= term) return;
    term = newTerm;
    votedFor = null;
    if (role !== 'follower') stepDown('saw a newer term');
    await persist();
  };

  const stepDown = (reason = 'lost the lease'): void => {
    if (role === 'leader') {
      stats.stepDowns += 1;
      log('step-down', { term, reason });
    }
    role = 'follower';
    if (leader === self) leader = null;
    leaseUntil = -Infinity;
    resetElectionTimer();
    report();
  };

  const becomeLeader = (waitMs: number, incumbent: boolean): void => {
    const t = now();
    role = 'leader';
    leader = self;
    // an incumbent that re-elected itself keeps its age: it is the same queen in a newer term
    if (!incumbent) leaderSince = t;
    graceUntil = t + timing.leaseMs;
    activeAt = t + Math.max(0, waitMs);
    lease.reset();
    leaseUntil = -Infinity;
    stats.won += 1;
    log('won', { term, incumbent, waitMs: Math.max(0, waitMs) });
    renewLease();
    leaderTick();
    report();
    // the queen starts acting at activeAt, between two ticks: say so at that instant
    if (waitMs > 0) {
      clearTimeout(activeTimer);
      activeTimer = setTimeout(() => {
        if (!stopped) report();
      }, waitMs + 1);
    }
  };

  const renewLease = (): void => {
    leaseUntil = Math.max(leaseUntil, lease.until(voters(), quorum));
  };

  const campaign = async (incumbentTerm?: number): Promise<void> => {
    if (campaigning || stopped) return;
    campaigning = true;
    stats.campaigns += 1;
    try {
      const all = voters();
      const peers = all.filter((p) => p !== self);
      const needed = quorum(all.length) - 1;
      if (incumbentTerm === undefined && needed > 0) {
        // pre-vote: would we win? If not, our term stays put and cannot disrupt anyone later
        const pre = await askVotes(
          rpc,
          peers,
          { term: term + 1, candidate: self, pre: true },
          needed,
          askOptions,
        );
        if (pre.granted < needed) {
          log('pre-vote-lost', { term: term + 1, granted: pre.granted, needed });
          stats.preVotesLost += 1;
          // a lost pre-vote changed nothing anywhere, so trying again sooner is harmless
          electionDeadline = now() + (0.5 + Math.random() / 2) * timing.electionTimeoutMinMs;
          return;
        }
      }
      if (incumbentTerm !== undefined) stats.reelections += 1;
      term = Math.max(term + 1, incumbentTerm ?? 0);
      votedFor = self;
      role = 'candidate';
      leader = null;
      leaseUntil = -Infinity;
      const campaignTerm = term;
      log('campaign', { term, incumbent: incumbentTerm !== undefined, voters: all.length });
      report();
      await persist();
      const selfSince = now() - heardAt;
      const votes = await askVotes(rpc, peers, { term, candidate: self, pre: false }, needed, askOptions);
      if (role !== 'candidate' || term !== campaignTerm || stopped) return;
      if (votes.granted >= needed) {
        // wait out what may remain of the previous queen's lease, unless that queen was us
        const minSince = Math.min(selfSince, ...votes.since);
        const incumbent = incumbentTerm !== undefined;
        becomeLeader(incumbent || !Number.isFinite(minSince) ? 0 : timing.leaseMs - minSince, incumbent);
      } else {
        log('vote-lost', { term, granted: votes.granted, needed });
        stats.votesLost += 1;
        role = 'follower';
        resetElectionTimer();
      }
    } finally {
      campaigning = false;
      report();
    }
  };

  const askOptions = {
    timeoutMs: timing.rpcTimeoutMs,
    onTerm: (seen: number) => {
      if (seen > term) void adoptTerm(seen);
    },
  };

  const onConflict = (reply: { term: number; leader: string | null }): void => {
    if (reply.leader === null) {
      // a node ahead of our term without a queen, or a queen that just yielded to us: take a term
      // above everyone's so that no one can confuse our commands with the old ones
      void campaign(Math.max(term, reply.term) + 1);
    } else if (reply.leader !== self) {
      // the peer follows a queen that beats us
      if (reply.term > term) void adoptTerm(reply.term);
      else stepDown('a peer follows a stronger queen');
    }
  };

  const hbTimeoutMs = Math.min(timing.rpcTimeoutMs, Math.max(timing.heartbeatMs * 2, timing.leaseMs / 2));
  const leaderTick = (): void => {
    const sentTerm = term;
    for (const peer of voters()) {
      if (peer === self || inFlight.has(peer)) continue;
      inFlight.add(peer);
      const sentAt = now();
      const { acks, leaderForMs } = ownClaim();
      rpc
        .call(
          peer,
          heartbeatMethod,
          { term, leader: self, acks, leaderForMs },
          // an ack later than half a lease is of little use, and a pending call blocks the next one
          { timeoutMs: hbTimeoutMs, dial: false },
        )
        .then(
          (reply) => {
            if (role !== 'leader' || term !== sentTerm) return;
            if (reply.ok) {
              lease.ack(peer, sentAt);
              renewLease();
              report();
            } else {
              onConflict(reply);
            }
          },
          () => undefined,
        )
        .finally(() => inFlight.delete(peer));
    }
    renewLease();
    // without a lease a queen does not act (queen() is null), but it abdicates only once others may
    // have elected someone: a lapse after a stall is repaired by the next round of acks
    if (now() >= Math.max(leaseUntil, graceUntil) + timing.electionTimeoutMinMs) stepDown();
  };

  const tick = (): void => {
    if (stopped) return;
    const t = now();
    const gap = t - lastTick;
    const frozen = gap > timing.heartbeatMs * 4;
    lastTick = t;
    if (frozen) heardAt += gap - timing.heartbeatMs;
    if (role === 'leader') {
      leaderTick();
    } else if (frozen) {
      // the process was stalled (GC, a busy loop, a suspended laptop): the queen's heartbeats may be
      // waiting in our socket, so give it a full timeout before calling an election
      resetElectionTimer();
    } else if (!campaigning && (t >= electionDeadline || voters().length === 1)) {
      void campaign();
    }
    report();
  };

  const election: Election = {
    events,
    timing,
    async start() {
      const saved = persistedSchema.safeParse(await store.read('election'));
      if (saved.success) ({ term, votedFor } = saved.data);
      stopped = false;
      resetElectionTimer();
      rpc.handle(voteMethod, async (request) => {
        const sinceLeaderMs = Number.isFinite(heardAt) ? now() - heardAt : null;
        const deny = { term, granted: false, sinceLeaderMs };
        if (stopped) throw new RbeeError('NODE_SHUTTING_DOWN', 'not taking part in elections');
        if (request.term < term) return deny;
        const sticky = liveLeader();
        if (sticky !== null && sticky !== request.candidate) return deny;
        if (request.pre) {
          const granted =
            request.term > term ||
            (request.term === term && (votedFor === null || votedFor === request.candidate));
          return { ...deny, granted };
        }
        if (request.term > term) {
          term = request.term;
          votedFor = null;
          if (role !== 'follower') stepDown('voted in a newer term');
        }
        if (votedFor !== null && votedFor !== request.candidate) return { ...deny, term };
        votedFor = request.candidate; // set before awaiting: a concurrent request sees it
        resetElectionTimer();
        await persist();
        return { term, granted: true, sinceLeaderMs };
      });
      rpc.handle(heartbeatMethod, async (request) => {
        if (stopped) throw new RbeeError('NODE_SHUTTING_DOWN', 'not taking part in elections');
        const t = now();
        const sticky = liveLeader();
        const stickyClaim = (): LeaderClaim | null =>
          sticky === null
            ? null
            : sticky === self
              ? ownClaim()
              : { id: sticky, term, acks: claim.acks, leaderForMs: claim.leaderForMs + (t - heardAt) };
        if (request.term < term) {
          // From an older term while we follow (or are) a queen that a majority acks: a queen that
          // lost, or a heartbeat the network held back (a healed partition delivers what TCP kept,
          // with the acks it had then). It never deposes a majority's queen; the reply names her.
          // A lone queen with a newer term (a restarted node joining) has no majority: the merge
          // rule below decides, so that joining never changes the cluster's queen.
          const mine = stickyClaim();
          // (a lone queen's own ack never counts: her voters may not have caught up with a joiner)
          if (mine !== null && mine.acks >= Math.max(2, quorum(voters().length))) {
            return { ok: false, term, leader: sticky, acks: mine.acks, leaderForMs: mine.leaderForMs };
          }
        }
        let abandoned = false;
        if (sticky !== null && sticky !== request.leader) {
          const mine = stickyClaim()!;
          if (beats(mine, { ...request, id: request.leader })) {
            return { ok: false, term, leader: sticky, acks: mine.acks, leaderForMs: mine.leaderForMs };
          }
          abandoned = true;
          if (role === 'leader') stepDown('met a stronger queen');
          leader = null;
        }
        const refuse = { ok: false, term, leader: null, acks: 0, leaderForMs: 0 };
        // one queen per term: if we voted for someone else in this term (ourselves, as a lone queen
        // before a merge), two queens had it, and the winner must move to a fresh term
        const otherVote = request.term === term && votedFor !== null && votedFor !== request.leader;
        if (request.term < term || otherVote || (abandoned && request.term === term)) {
          if (role === 'leader') stepDown('met a stronger queen');
          report();
          return refuse;
        }
        if (request.term > term) await adoptTerm(request.term);
        if (votedFor === null) {
          // following this queen is a vote for it: no other candidate gets one in this term
          votedFor = request.leader;
          void persist().catch(() => undefined);
        }
        if (role !== 'follower') stepDown('heard the queen of this term');
        leader = request.leader;
        leaderTerm = request.term;
        heardAt = t;
        claim = { acks: request.acks, leaderForMs: request.leaderForMs };
        resetElectionTimer();
        report();
        return {
          ok: true,
          term,
          leader: request.leader,
          acks: request.acks,
          leaderForMs: request.leaderForMs,
        };
      });
      lastTick = now();
      timer = setInterval(tick, timing.heartbeatMs);
      // a lone node is its own queen before start() returns
      if (voters().length === 1) await campaign();
      tick();
    },
    stop() {
      if (role === 'leader') stepDown('stopping');
      stopped = true;
      clearInterval(timer);
      clearTimeout(activeTimer);
      report();
      events.clear();
    },
    queen() {
      const t = now();
      if (role === 'leader') return t < leaseUntil && t >= activeAt ? { id: self, term } : null;
      const live = liveLeader();
      return live === null || leaderTerm !== term ? null : { id: live, term };
    },
    isQueen: () => election.queen()?.id === self,
    term: () => term,
    fence(commandTerm) {
      if (commandTerm < term) {
        throw new RbeeError(
          'STALE_TERM',
          `a command from queen term ${commandTerm}; the current term is ${term}`,
          {
            details: { term: commandTerm, currentTerm: term },
          },
        );
      }
      if (commandTerm > term) void adoptTerm(commandTerm);
    },
    memberLeft(peer, graceful) {
      if (peer !== leader || role === 'leader') {
        election.membersChanged();
        return;
      }
      leader = null;
      if (graceful) heardAt = -Infinity; // it gave up its lease: nothing to wait out
      // do not wait a full election timeout, but spread the candidates a little
      electionDeadline = Math.min(electionDeadline, now() + Math.random() * timing.heartbeatMs * 2);
      report();
    },
    membersChanged() {
      if (!stopped && role !== 'leader' && !campaigning && voters().length === 1) void campaign();
    },
    stats: () => ({ ...stats }),
  };
  return election;
}
