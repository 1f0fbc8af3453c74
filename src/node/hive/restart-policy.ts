/**
 * When a worker dies, should the hive start it again, and when? Exponential backoff with jitter
 * for each failure of a model within a window; a circuit breaker opens after `failures` of them,
 * refusing restarts and new loads of that model until a cool-down has passed, with a reason.
 */
export interface RestartPolicyInit {
  /** First restart delay. Defaults to 500 ms; doubles with each failure in the window. */
  baseDelayMs?: number;
  /** Defaults to 30 s. */
  maxDelayMs?: number;
  /** ± fraction of the delay, so crashing workers do not restart in lockstep. Defaults to 0.2. */
  jitter?: number;
  /** Failures within `windowMs` that open the breaker. Defaults to 3. */
  failures?: number;
  /** Defaults to 60 s. */
  windowMs?: number;
  /** How long an open breaker refuses. Defaults to 60 s. */
  cooldownMs?: number;
  now?: () => number;
  random?: () => number;
}

export type RestartDecision =
  | { action: 'restart'; delayMs: number; failure: number; of: number }
  | { action: 'open'; failures: number; windowMs: number; until: number };

export interface OpenBreaker {
  key: string;
  failures: number;
  openedAt: number;
  until: number;
  reason: string;
}

export interface RestartPolicy {
  /** Records one failure (a crash, a failed start, a hung worker) and decides what follows. */
  recordFailure(key: string, reason: string): RestartDecision;
  /** The open breaker for `key`, if any (an expired one closes here). */
  openBreaker(key: string): OpenBreaker | undefined;
  openBreakers(): OpenBreaker[];
}

export function createRestartPolicy(init: RestartPolicyInit = {}): RestartPolicy {
  const baseDelayMs = init.baseDelayMs ?? 500;
  const maxDelayMs = init.maxDelayMs ?? 30_000;
  const jitter = init.jitter ?? 0.2;
  const limit = init.failures ?? 3;
  const windowMs = init.windowMs ?? 60_000;
  const cooldownMs = init.cooldownMs ?? 60_000;
  const now = init.now ?? Date.now;
  const random = init.random ?? Math.random;
  const history = new Map<string, number[]>();
  const open = new Map<string, OpenBreaker>();

  function openBreaker(key: string): OpenBreaker | undefined {
    const breaker = open.get(key);
    if (breaker !== undefined && breaker.until <= now()) {
      open.delete(key);
      history.delete(key); // a closed breaker starts counting afresh
      return undefined;
    }
    return breaker;
  }

  return {
    recordFailure(key, reason) {
      const t = now();
      const recent = (history.get(key) ?? []).filter((at) => t - at < windowMs);
      recent.push(t);
      history.set(key, recent);
      if (recent.length >= limit) {
        const breaker = { key, failures: recent.length, openedAt: t, until: t + cooldownMs, reason };
        open.set(key, breaker);
        return { action: 'open', failures: recent.length, windowMs, until: breaker.until };
      }
      const exponential = Math.min(maxDelayMs, baseDelayMs * 2 ** (recent.length - 1));
      const delayMs = Math.max(0, Math.round(exponential * (1 + jitter * (2 * random() - 1))));
      return { action: 'restart', delayMs, failure: recent.length, of: limit };
    },
    openBreaker,
    openBreakers: () => [...open.keys()].flatMap((key) => openBreaker(key) ?? []),
  };
}
