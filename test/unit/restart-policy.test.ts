import { describe, expect, it } from 'vitest';
import { createRestartPolicy } from '../../src/node/hive/restart-policy.js';

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

describe('restart policy', () => {
  it('backs off exponentially within the window, with bounded jitter', () => {
    const c = clock();
    const policy = createRestartPolicy({ baseDelayMs: 100, failures: 5, now: c.now, random: () => 0.5 });
    const delays = [1, 2, 3, 4].map(() => {
      const d = policy.recordFailure('m', 'crash');
      c.advance(10);
      return d.action === 'restart' ? d.delayMs : -1;
    });
    expect(delays).toEqual([100, 200, 400, 800]);

    const jittery = createRestartPolicy({ baseDelayMs: 1000, jitter: 0.2, random: () => 0 });
    const first = jittery.recordFailure('m', 'crash');
    expect(first).toMatchObject({ action: 'restart', delayMs: 800 });
  });

  it('opens the breaker after N failures in the window, with the reason, and closes after the cool-down', () => {
    const c = clock();
    const policy = createRestartPolicy({ failures: 3, windowMs: 60_000, cooldownMs: 30_000, now: c.now });
    expect(policy.recordFailure('m', 'crash').action).toBe('restart');
    expect(policy.recordFailure('m', 'crash').action).toBe('restart');
    const third = policy.recordFailure('m', 'killed by SIGKILL');
    expect(third).toMatchObject({ action: 'open', failures: 3 });
    expect(policy.openBreaker('m')).toMatchObject({ reason: 'killed by SIGKILL', failures: 3 });
    expect(policy.openBreaker('other')).toBeUndefined();
    c.advance(29_999);
    expect(policy.openBreakers()).toHaveLength(1);
    c.advance(1);
    expect(policy.openBreaker('m')).toBeUndefined();
    // Counting starts afresh after the breaker closes.
    expect(policy.recordFailure('m', 'crash')).toMatchObject({ action: 'restart', failure: 1 });
  });

  it('forgets failures older than the window', () => {
    const c = clock();
    const policy = createRestartPolicy({ failures: 2, windowMs: 1_000, now: c.now });
    expect(policy.recordFailure('m', 'x').action).toBe('restart');
    c.advance(1_000);
    expect(policy.recordFailure('m', 'x')).toMatchObject({ action: 'restart', failure: 1 });
  });
});
