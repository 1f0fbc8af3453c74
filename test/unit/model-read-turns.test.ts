/**
 * The bound on model reads a hive serves at once: the reads beyond it wait their turn in order, and
 * one that gives up while waiting takes no turn from the others. The bandwidth limit all of them
 * share holds its rate however the bytes are split among reads, and is set by config.json or
 * RBEE_MODEL_SERVE_BPS.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createByteRate, createTurns } from '../../src/node/cluster/models.js';
import { loadNodeConfig } from '../../src/node/config.js';

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

  it('the shared bandwidth limit lets 3 MiB through at 1 MiB/s in no less than about 2.75 s', async () => {
    const rate = createByteRate(1024 * 1024);
    const signal = new AbortController().signal;
    const started = performance.now();
    // three reads at once, 128 KiB chunks each, 1 MiB each
    await Promise.all(
      [0, 1, 2].map(async () => {
        for (let i = 0; i < 8; i++) await rate.take(128 * 1024, signal);
      }),
    );
    // the first quarter second's worth may go at once; the rest waits for the rate
    expect(performance.now() - started).toBeGreaterThanOrEqual(2_700);
  });
});

describe('the serving bandwidth setting', () => {
  it('is unlimited by default, else config.json’s, else RBEE_MODEL_SERVE_BPS’s; 0 is refused', () => {
    const home = mkdtempSync(join(tmpdir(), 'rbee-config-'));
    try {
      const load = (env: NodeJS.ProcessEnv = {}) =>
        loadNodeConfig({ dataDir: home }, { RBEE_CLUSTER: '0', ...env }).modelServeBytesPerSecond;
      expect(load()).toBeUndefined();
      writeFileSync(join(home, 'config.json'), JSON.stringify({ modelServeBytesPerSecond: 1_000_000 }));
      expect(load()).toBe(1_000_000);
      expect(load({ RBEE_MODEL_SERVE_BPS: '2000000' })).toBe(2_000_000);
      expect(() => load({ RBEE_MODEL_SERVE_BPS: '0' })).toThrow(/RBEE_MODEL_SERVE_BPS must be 1 or more/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
