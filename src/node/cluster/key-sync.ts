/**
 * API keys that work on every node of the cluster. The queen holds the cluster's key set (hashes,
 * limits and revocation tombstones, never keys), versioned under its term:
 *
 * - a key created or revoked on any node is stored there at once, then sent to the queen
 *   (`queen.keys`), which merges it, makes a new version and pushes it to every live hive
 *   (`hive.keys`) before it answers, so a revocation made anywhere is refused everywhere as soon as
 *   the command returns;
 * - a hive takes a pushed set only from the queen it follows, for exactly that term: an older term
 *   is STALE_TERM, anyone else NOT_QUEEN (as `hive.shutdown` is fenced); what it takes goes to its
 *   SQLite, so a restarted node keeps every key;
 * - sets merge as a union in which revocations win. A node that meets a new queen (it joined, or the
 *   queen changed) sends it its whole set: keys made while it was alone, or while the cluster had
 *   no queen, are adopted, and a revocation made on either side holds on both;
 * - every few seconds a follower compares digests with the queen, which repairs a lost push.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterNode } from '../../p2p/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { Logger } from '../logger.js';
import { keySetDigest, type ApiKeyStore, type KeyRecord } from '../store/index.js';
import { hiveKeys, queenKeys } from './protocol.js';
import { assertQueenCommand } from './queen-command.js';

/** Where a key created or revoked on this node stands in the cluster once the call returns. */
export type KeyReplication =
  | { queen: string; term: number; version: number; hives: number }
  /** Held on this node only for now: the queen adopts it as soon as there is one to reach. */
  | { pending: string };

export interface KeySync {
  /** This node's key set changed (a key created or revoked here): to the queen, and every hive. */
  changed(): Promise<KeyReplication>;
  stop(): void;
}

export interface KeySyncInit {
  node: ClusterNode;
  keys: ApiKeyStore;
  log: Logger;
  nameOf: (id: string) => string | undefined;
  /** How often a follower compares its set with the queen's. Defaults to 5 s. */
  repairIntervalMs?: number;
}

/** Each hive has this long to take a pushed set before the queen answers without it. */
const PUSH_TIMEOUT_MS = 1_000;
const SYNC_TIMEOUT_MS = 3_000;
/** How long a change waits for a queen (an election takes about a lease, 1.5 s). */
const QUEEN_WAIT_MS = 4_000;

/** zod leaves absent optional fields as undefined keys; records are stored and hashed without them. */
function clean(records: readonly KeyRecord[]): KeyRecord[] {
  return records.map(
    (r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as KeyRecord,
  );
}

export function startKeySync(init: KeySyncInit): KeySync {
  const { node, keys, log } = init;
  const self = node.peerId;
  /** The digest this node and its queen last agreed on; anything else here is news for the queen. */
  let agreed: string | undefined;
  /** `queen@term` this node last sent its whole set to. */
  let sentTo: string | undefined;
  /** The highest version any hive reported: a new queen's versions go on from there. */
  let highest = 0;
  let stopped = false;
  // one sync or publish at a time, in order
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(task: () => Promise<T>): Promise<T> => {
    const next = chain.then(task, task);
    chain = next.catch(() => undefined);
    return next;
  };

  const named = (peer: string): string => init.nameOf(peer) ?? peer;

  /** As queen: a new version of the set, pushed to every live hive; how many hold it now. */
  const publish = async (except?: string): Promise<{ term: number; version: number; hives: number }> => {
    const term = node.term();
    const version = Math.max(keys.version().version, highest) + 1;
    keys.setVersion({ version, term, queen: self });
    const records = keys.records();
    const targets = node
      .members()
      .filter((m) => m.live && m.id !== except)
      .map((m) => m.id);
    const results = await Promise.all(
      targets.map((peer) =>
        node.rpc.call(peer, hiveKeys, { term, version, records }, { timeoutMs: PUSH_TIMEOUT_MS }).then(
          () => true,
          (error: unknown) => {
            log.warn({ peer, err: toRbeeError(error) }, 'a hive did not take the API key set');
            return false;
          },
        ),
      ),
    );
    const hives = 1 + (except === undefined ? 0 : 1) + results.filter(Boolean).length;
    log.info({ version, term, keys: keys.count(), hives }, 'API key set published to the cluster');
    return { term, version, hives };
  };

  node.rpc.handle(hiveKeys, ({ term, version, records }, { peer }) => {
    assertQueenCommand(node, peer, term, named);
    const theirs = clean(records);
    if (keys.merge(theirs)) log.info({ version, term, keys: keys.count() }, 'API keys from the queen');
    if (version > keys.version().version || keys.version().term !== term) {
      keys.setVersion({ version, term, queen: peer });
    }
    const digest = keys.digest();
    agreed = keySetDigest(theirs);
    // this hive holds keys the queen lacks (made while it had no queen): send them
    if (digest !== agreed) void serial(() => syncWithQueen(true)).catch(() => undefined);
    return { digest };
  });

  node.rpc.handle(queenKeys, ({ version: theirs, digest, records }, { peer }) =>
    serial(async () => {
      if (!node.isQueen()) throw new RbeeError('NOT_QUEEN', 'this node is not the queen (any more)');
      highest = Math.max(highest, theirs);
      const term = node.term();
      const changed = records !== undefined && keys.merge(clean(records));
      let hives = 0;
      if (changed) {
        log.info({ from: named(peer), keys: keys.count() }, 'API keys merged in from a hive');
        hives = (await publish(peer)).hives;
      }
      const mine = keys.digest();
      const version = keys.version().version;
      return {
        term,
        version,
        digest: mine,
        hives,
        ...(mine === digest && !changed ? {} : { records: keys.records() }),
      };
    }),
  );

  /** As follower: tells the queen this node's digest (and its records when `full`); takes its set. */
  const syncWithQueen = async (full: boolean): Promise<KeyReplication> => {
    const queen = node.queen();
    if (queen === null) return { pending: 'the cluster has no queen now' };
    if (queen.id === self) {
      if (!full) return { queen: self, term: queen.term, version: keys.version().version, hives: 0 };
      return { queen: self, ...(await publish()) };
    }
    const at = `${queen.id}@${queen.term}`;
    const sendAll = full || sentTo !== at || keys.digest() !== agreed;
    const answer = await node.rpc.call(
      queen.id,
      queenKeys,
      {
        version: keys.version().version,
        digest: keys.digest(),
        ...(sendAll ? { records: keys.records() } : {}),
      },
      { timeoutMs: SYNC_TIMEOUT_MS },
    );
    // the answer counts only from the queen this node still follows, of that term
    const now = node.queen();
    if (now?.id !== queen.id || now.term !== answer.term) {
      throw new RbeeError('NOT_QUEEN', `${named(queen.id)} is no longer the queen`);
    }
    if (sendAll) sentTo = at;
    if (answer.records !== undefined && keys.merge(clean(answer.records))) {
      log.info({ version: answer.version, term: answer.term, keys: keys.count() }, 'API keys from the queen');
    }
    keys.setVersion({ version: answer.version, term: answer.term, queen: queen.id });
    agreed = answer.digest;
    return { queen: queen.id, term: answer.term, version: answer.version, hives: answer.hives };
  };

  const repair = (): void => {
    if (stopped || node.isQueen() || node.queen() === null) return;
    void serial(() => syncWithQueen(false)).catch((error: unknown) =>
      log.debug({ err: toRbeeError(error) }, 'comparing API keys with the queen failed; trying again later'),
    );
  };
  const timer = setInterval(repair, init.repairIntervalMs ?? 5_000);
  timer.unref();
  // a new queen (or the first one this node meets) gets this node's whole set
  const offQueen = node.on('queen', (queen) => {
    if (queen !== null && queen.id !== self) repair();
  });
  repair();

  return {
    async changed() {
      const deadline = Date.now() + QUEEN_WAIT_MS;
      for (;;) {
        try {
          if (node.queen() !== null) return await serial(() => syncWithQueen(true));
        } catch (error) {
          const rbee = toRbeeError(error);
          if (!['NOT_QUEEN', 'NODE_UNREACHABLE', 'TIMEOUT', 'STALE_TERM'].includes(rbee.code)) throw rbee;
          log.info({ err: rbee }, 'the queen did not take the API key change; asking again');
        }
        if (stopped || Date.now() > deadline) {
          return {
            pending:
              node.queen() === null
                ? 'the cluster has no queen now; it adopts this change once one is elected'
                : 'the queen did not answer; it gets this change on the next sync',
          };
        }
        await sleep(100);
      }
    },
    stop() {
      stopped = true;
      clearInterval(timer);
      offQueen();
    },
  };
}
