/**
 * The bound on model reads a hive serves at once: the reads beyond it wait their turn in order, and
 * one that gives up while waiting takes no turn from the others.
 */
import { describe, expect, it } from 'vitest';
import { createTurns } from '../../src/node/cluster/models.js';

const settled = async (promise: Promise<unknown>): Promise<boolean> => {
  let done = false;
  void promise.then(
    () => (done = true),
    () => (done = true),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
};

describe('model read turns', () => {
  it('serves at most `max` at once; the next waits for a release, in order', async () => {
    const turns = createTurns(2);
    const never = new AbortController().signal;
    const first = await turns.take(never);
    await turns.take(never);
    const third = turns.take(never);
    const fourth = turns.take(never);
    expect(await settled(third)).toBe(false);
    first();
    first(); // a second release of the same turn frees nothing more
    expect(await settled(third)).toBe(true);
    expect(await settled(fourth)).toBe(false);
  });

  it('a read that gives up while waiting takes no turn', async () => {
    const turns = createTurns(1);
    const release = await turns.take(new AbortController().signal);
    const leaving = new AbortController();
    const gone = turns.take(leaving.signal);
    const next = turns.take(new AbortController().signal);
    leaving.abort(new Error('the reader left'));
    await expect(gone).rejects.toThrow('the reader left');
    release();
    expect(await settled(next)).toBe(true);
  });
});
