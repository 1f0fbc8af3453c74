/**
 * The per-key limiter on a test clock: requests per minute over a sliding minute, with the wait it
 * announces; jobs at once until each releases its slot; defaults for keys without their own limits;
 * no limits at all for clients without a key.
 */
import { describe, expect, it } from 'vitest';
import { createKeyLimiter } from '../../src/node/api/key-limits.js';
import type { ApiClient } from '../../src/node/api/auth.js';
import { RbeeError } from '../../src/shared/errors.js';

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 5_000_000;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

const keyed = (id: string, limits: { maxConcurrent?: number; rpm?: number } = {}): ApiClient => ({
  owner: `key:${id}`,
  local: false,
  key: { id, ...limits },
});

function refusal(fn: () => unknown): RbeeError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(RbeeError);
    return error as RbeeError;
  }
  throw new Error('expected a refusal');
}

describe('per-key limits', () => {
  it('allows rpm requests in any minute and says how long until the oldest leaves it', () => {
    const c = clock();
    const limiter = createKeyLimiter({ now: c.now });
    const client = keyed('a', { rpm: 3 });
    for (let i = 0; i < 3; i++) {
      limiter.admit(client)();
      c.advance(10_000);
    }
    // 30 s after the first: it leaves the window in 30 s
    const refused = refusal(() => limiter.admit(client));
    expect(refused.code).toBe('RATE_LIMITED');
    expect(refused.httpStatus).toBe(429);
    expect(refused.exitCode).toBe(7);
    expect(refused.details).toMatchObject({ limit: 'rpm', max: 3, retryAfterS: 30 });
    // a refused request counts for nothing: once the first leaves the window, one more passes
    c.advance(30_000);
    limiter.admit(client)();
    expect(refusal(() => limiter.admit(client)).details).toMatchObject({ retryAfterS: 10 });
  });

  it('holds a slot per job until it is released, once', () => {
    const limiter = createKeyLimiter({ now: clock().now });
    const client = keyed('b', { maxConcurrent: 2 });
    const first = limiter.admit(client);
    limiter.admit(client);
    expect(refusal(() => limiter.admit(client)).details).toMatchObject({
      limit: 'maxConcurrent',
      max: 2,
      retryAfterS: 1,
    });
    first();
    first(); // idempotent: frees one slot, not two
    limiter.admit(client);
    expect(refusal(() => limiter.admit(client)).code).toBe('RATE_LIMITED');
  });

  it('applies the node defaults to keys without their own, and counts each key apart', () => {
    const limiter = createKeyLimiter({ now: clock().now, defaults: { rpm: 1 } });
    limiter.admit(keyed('c'))();
    expect(refusal(() => limiter.admit(keyed('c'))).details).toMatchObject({ limit: 'rpm', max: 1 });
    limiter.admit(keyed('d'))();
    // a key's own value wins over the default
    const own = keyed('e', { rpm: 2 });
    limiter.admit(own)();
    limiter.admit(own)();
    expect(refusal(() => limiter.admit(own)).code).toBe('RATE_LIMITED');
  });

  it('never limits a client without a key, and forgets keys with nothing counted', () => {
    const c = clock();
    const limiter = createKeyLimiter({ now: c.now, defaults: { rpm: 1, maxConcurrent: 1 } });
    const local: ApiClient = { owner: 'local', local: true };
    for (let i = 0; i < 100; i++) limiter.admit(local);
    const release = limiter.admit(keyed('f'));
    expect(limiter.tracked()).toBe(1);
    c.advance(61_000);
    release();
    expect(limiter.tracked()).toBe(0);
  });
});
