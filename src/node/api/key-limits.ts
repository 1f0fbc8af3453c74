/**
 * Per-key limits, enforced on the node a client calls (its entry node): jobs running at once
 * (`maxConcurrent`) and requests that run a model per minute (`rpm`: jobs, chat and text completions,
 * embeddings, reranks, Anthropic messages and token counts), each from the key's own values (`rbee keys
 * create --max-concurrent N --rpm N`) or the node's defaults (`keyLimits` in config.json). A request
 * over a limit is refused with RATE_LIMITED (HTTP 429) and a Retry-After; refused requests count
 * toward nothing. Clients without a key (the machine's own user) are not limited.
 *
 * The counts are this node's: a key used on two nodes at once may run its limit on each.
 */
import { RbeeError } from '../../shared/errors.js';
import { isTerminal } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';
import type { KeyLimits } from '../store/index.js';
import type { ApiClient } from './auth.js';

export interface KeyLimiter {
  /**
   * Counts one request for the client's key and holds one of its concurrent slots until the
   * returned release (idempotent) is called; throws RATE_LIMITED when either limit is reached.
   */
  admit(client: ApiClient): () => void;
  /** Keys with requests counted or slots held now (bounded by the keys that were used lately). */
  tracked(): number;
}

const WINDOW_MS = 60_000;
/** What a client over its concurrent limit is told to wait: a job's end cannot be foreseen. */
const CONCURRENT_RETRY_S = 1;

interface Usage {
  running: number;
  /** When each of the requests admitted in the last minute came, oldest first. */
  times: number[];
}

export function createKeyLimiter(init: { defaults?: KeyLimits; now?: () => number } = {}): KeyLimiter {
  const now = init.now ?? (() => performance.now());
  const defaults = init.defaults ?? {};
  const usage = new Map<string, Usage>();

  const forget = (id: string, use: Usage): void => {
    if (use.running === 0 && use.times.length === 0) usage.delete(id);
  };

  return {
    admit(client) {
      const key = client.key;
      if (key === undefined) return () => undefined;
      const maxConcurrent = key.maxConcurrent ?? defaults.maxConcurrent;
      const rpm = key.rpm ?? defaults.rpm;
      if (maxConcurrent === undefined && rpm === undefined) return () => undefined;
      const at = now();
      const use = usage.get(key.id) ?? { running: 0, times: [] };
      const expired = use.times.findIndex((t) => at - t < WINDOW_MS);
      use.times.splice(0, expired === -1 ? use.times.length : expired);
      if (maxConcurrent !== undefined && use.running >= maxConcurrent) {
        forget(key.id, use);
        throw new RbeeError(
          'RATE_LIMITED',
          `API key ${key.id} has ${use.running} job(s) running, its limit on this node; retry when one ends`,
          { details: { limit: 'maxConcurrent', max: maxConcurrent, retryAfterS: CONCURRENT_RETRY_S } },
        );
      }
      if (rpm !== undefined && use.times.length >= rpm) {
        const retryAfterS = Math.max(1, Math.ceil((use.times[0]! + WINDOW_MS - at) / 1000));
        forget(key.id, use);
        throw new RbeeError(
          'RATE_LIMITED',
          `API key ${key.id} made ${rpm} request(s) in the last minute, its limit on this node; retry in ${retryAfterS} s`,
          { details: { limit: 'rpm', max: rpm, retryAfterS } },
        );
      }
      use.times.push(at);
      use.running += 1;
      usage.set(key.id, use);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        use.running -= 1;
        const stillIn = use.times.findIndex((t) => now() - t < WINDOW_MS);
        use.times.splice(0, stillIn === -1 ? use.times.length : stillIn);
        forget(key.id, use);
      };
    },
    tracked: () => usage.size,
  };
}

/** Calls `release` once job `id` has ended (done, failed or cancelled). */
export function releaseWhenDone(jobs: JobManager, id: string, release: () => void): void {
  let ended = false;
  const unsubscribe = jobs.subscribe(id, (event) => {
    if (ended || !isTerminal(event)) return;
    ended = true;
    release();
    // the history replays inside subscribe(): unsubscribe once it has returned
    queueMicrotask(() => unsubscribe());
  });
}
