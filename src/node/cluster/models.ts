/**
 * Models across the cluster, on the wire: this hive serves the files of its catalog to other hives
 * (`model.read`, a bounded number at once, the others waiting their turn, all of them together
 * within a bandwidth limit when one is set; `model.pieces`, the sha256 of each piece of a file), and
 * offers the provisioner the live hives that hold a model, a byte stream from one of them and their
 * piece lists.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ClusterNode } from '../../p2p/index.js';
import { raceSignal } from '../../shared/abort.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { Logger } from '../logger.js';
import type { PeerNetwork } from '../models/index.js';
import type { PieceList } from '../store/index.js';
import type { RemoteHiveState } from './member-states.js';
import { modelPieces, modelRead } from './protocol.js';

export interface ModelShareInit {
  node: ClusterNode;
  log: Logger;
  /** This hive's catalog files by sha256 (the provisioner's `readModel`). */
  read: (
    sha256: string,
    options: { offset: number; length?: number; signal: AbortSignal },
  ) => AsyncIterable<Uint8Array>;
  /** This hive's piece list of a catalog file (the provisioner's `modelPieces`). */
  pieces?: (sha256: string, options: { signal: AbortSignal }) => Promise<PieceList>;
  /** Reads served at once. */
  maxReads: number;
  /** Bytes per second all reads served together may send; unlimited when absent. */
  bytesPerSecond?: number;
  remotes: () => RemoteHiveState[];
  nameOf: (id: string) => string | undefined;
}

/** Reads that may wait for a turn; one more is refused at once (the asking hive tries another). */
const MAX_WAITING = 256;
/**
 * How long a hive waits for another's piece list: the first ask of a file reads all of it there
 * (about a second per GB on a fast disk), later ones are answered from its database.
 */
const PIECES_TIMEOUT_MS = 10 * 60_000;

/**
 * Test hook: a pause after each chunk served, so that a test can cut a transfer mid-way. Read from
 * the node's environment; never set outside tests.
 */
const chunkDelayMs = (): number => Number(process.env.RBEE_TEST_MODEL_READ_DELAY_MS ?? 0) || 0;

export function startModelShare(init: ModelShareInit): PeerNetwork {
  const { node, log } = init;
  const turns = createTurns(init.maxReads);
  const rate = init.bytesPerSecond === undefined ? undefined : createByteRate(init.bytesPerSecond);

  const pieces = init.pieces;
  if (pieces !== undefined) {
    node.rpc.handle(modelPieces, async ({ sha256 }, { signal }) => ({
      ...(await pieces(sha256, { signal })),
      serving: turns.active(),
    }));
  }

  node.streams.handle(modelRead, async ({ params, channel, signal, peer }) => {
    const release = await turns.take(signal);
    const started = Date.now();
    let sent = 0;
    try {
      const delay = chunkDelayMs();
      for await (const chunk of init.read(params.sha256, { ...withoutUndefined(params), signal })) {
        await rate?.take(chunk.byteLength, signal);
        await channel.write(chunk, { signal });
        sent += chunk.byteLength;
        if (delay > 0) await sleep(delay, undefined, { signal });
      }
      log.info(
        { peer, sha256: params.sha256, offset: params.offset, bytes: sent, ms: Date.now() - started },
        `sent a model to ${init.nameOf(peer) ?? peer}`,
      );
    } catch (error) {
      log.info(
        { peer, sha256: params.sha256, bytes: sent, err: toRbeeError(error) },
        'a model read for another hive ended early',
      );
      throw error;
    } finally {
      release();
    }
  });

  return {
    holders({ ref, sha256, refPrefix }) {
      return init.remotes().flatMap(({ id, state }) =>
        state.models
          .filter(
            (m) =>
              typeof m.sha256 === 'string' &&
              ((ref !== undefined && m.ref === ref) ||
                (sha256 !== undefined && m.sha256 === sha256) ||
                (refPrefix !== undefined && m.ref.startsWith(refPrefix))),
          )
          .map((m) => ({
            id,
            name: state.hive.name,
            ref: m.ref,
            sha256: m.sha256 as string,
            bytes: m.bytes,
          })),
      );
    },
    async pieces(peer, sha256, { signal }) {
      return node.rpc.call(peer, modelPieces, { sha256 }, { signal, timeoutMs: PIECES_TIMEOUT_MS });
    },
    async *read(peer, params, { signal }) {
      const channel = await node.streams.open(peer, modelRead, withoutUndefined(params), { signal });
      let ended = false;
      try {
        for (;;) {
          const chunk = await channel.read({ signal });
          if (chunk === undefined) {
            ended = true;
            await channel.close().catch(() => undefined);
            return;
          }
          yield chunk;
        }
      } finally {
        // a reader that stops early (a cancel, a full disk) resets the stream: the hive stops sending
        if (!ended) channel.abort(new RbeeError('JOB_CANCELLED', 'the reader stopped'));
      }
    },
  };
}

/**
 * A token bucket shared by every read a hive serves: `bytesPerSecond` on average, with at most a
 * quarter of a second's worth sent ahead. A chunk larger than what is in the bucket waits until the
 * bucket would have refilled to it, so the rate holds for any chunk size.
 */
export function createByteRate(bytesPerSecond: number): {
  take(bytes: number, signal: AbortSignal): Promise<void>;
} {
  const burst = bytesPerSecond / 4;
  let tokens = burst;
  let at = performance.now();
  /** The reads waiting, served in order. */
  let queue = Promise.resolve();
  const refill = (): void => {
    const now = performance.now();
    tokens = Math.min(burst, tokens + ((now - at) / 1000) * bytesPerSecond);
    at = now;
  };
  return {
    take(bytes, signal) {
      const turn = queue.then(async () => {
        refill();
        tokens -= bytes;
        // in debt: this chunk waits until the bucket would have held it
        if (tokens < 0) await sleep((-tokens / bytesPerSecond) * 1000, undefined, { signal });
      });
      queue = turn.catch(() => undefined);
      return turn;
    },
  };
}

/** At most `max` holders of a turn at once; the others wait in order. */
export function createTurns(max: number): {
  take(signal: AbortSignal): Promise<() => void>;
  /** Turns held now. */
  active(): number;
} {
  let active = 0;
  const waiting: (() => void)[] = [];
  const release = (): void => {
    const next = waiting.shift();
    if (next !== undefined) next();
    else active--;
  };
  return {
    active: () => active,
    async take(signal) {
      if (active < max) {
        active++;
        return once(release);
      }
      if (waiting.length >= MAX_WAITING) {
        throw new RbeeError('WORKER_BUSY', 'this hive serves as many model reads as it may; try another');
      }
      let granted!: () => void;
      const turn = new Promise<void>((resolve) => (granted = resolve));
      waiting.push(granted);
      try {
        await raceSignal(turn, signal, toRbeeError);
      } catch (error) {
        const at = waiting.indexOf(granted);
        // gone before its turn: it takes none; gone as its turn came: it gives it on
        if (at !== -1) waiting.splice(at, 1);
        else release();
        throw error;
      }
      return once(release);
    },
  };
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}

function withoutUndefined<T extends object>(value: T): T {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as T;
}
