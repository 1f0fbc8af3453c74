import { afterEach, describe, expect, it } from 'vitest';
import { RbeeError } from '../../src/shared/errors.js';
import type { NodeEvent } from '../../src/shared/view.js';
import { createBatcher } from '../../src/tui/dashboard/batcher.js';
import type { ConnectionState } from '../../src/tui/dashboard/state.js';
import { followNodeEvents } from '../../src/tui/dashboard/use-node-events.js';
import { waitFor } from '../helpers/wait-for.js';
import { oneHive, threeHives } from '../fixtures/cluster-views.js';
import { createFakeNodeClient } from './helpers.js';

describe('createBatcher', () => {
  it('delivers many pushes as one batch, in order', async () => {
    const batches: number[][] = [];
    const batcher = createBatcher<number>({ deliver: (items) => batches.push(items), intervalMs: 20 });
    for (let i = 0; i < 100; i += 1) batcher.push(i);
    expect(batches).toEqual([]);
    await waitFor(() => batches.length === 1);
    expect(batches[0]).toEqual(Array.from({ length: 100 }, (_, i) => i));
    batcher.push(100);
    batcher.dispose();
    expect(batches).toEqual([expect.any(Array), [100]]);
    batcher.push(101);
    batcher.flush();
    expect(batches).toHaveLength(2);
  });
});

describe('followNodeEvents', () => {
  const controller = new AbortController();
  afterEach(() => controller.abort());

  it('goes live on each snapshot, and reconnects with backoff after a drop', async () => {
    const client = createFakeNodeClient();
    const delivered: NodeEvent[] = [];
    const connections: ConnectionState[] = [];
    const done = followNodeEvents({
      client,
      signal: controller.signal,
      onEvent: (event) => delivered.push(event),
      onConnection: (c) => connections.push(c),
      backoff: { initialMs: 10, maxMs: 40 },
    });
    await waitFor(() => client.streams.length === 1);
    client.streams[0]!.push({ type: 'snapshot', view: oneHive });
    client.streams[0]!.push({ type: 'workers', workers: [] });
    client.streams[0]!.push({ type: 'jobs', jobs: [] });
    await waitFor(() => delivered.length === 3);
    expect(delivered.map((e) => e.type)).toEqual(['snapshot', 'workers', 'jobs']);
    expect(connections.map((c) => c.status)).toEqual(['connecting', 'live']);

    client.streams[0]!.fail(new RbeeError('NODE_UNREACHABLE', 'connection reset'));
    await waitFor(() => client.streams.length === 2);
    client.streams[1]!.end();
    await waitFor(() => client.streams.length === 3);
    const retries = connections.filter((c) => c.status === 'reconnecting');
    expect(retries.map((c) => c.status === 'reconnecting' && [c.attempt, c.retryInMs])).toEqual([
      [1, 10],
      [2, 20],
    ]);
    expect(retries[0]?.status === 'reconnecting' && retries[0].error).toBe('connection reset');

    client.streams[2]!.push({ type: 'snapshot', view: threeHives });
    await waitFor(() => connections.at(-1)?.status === 'live');
    // Backoff starts again from the beginning after a good connection.
    client.streams[2]!.end();
    await waitFor(() => client.streams.length === 4);
    const last = connections.filter((c) => c.status === 'reconnecting').at(-1);
    expect(last?.status === 'reconnecting' && [last.attempt, last.retryInMs]).toEqual([1, 10]);
    controller.abort();
    await done;
    expect(client.streams[3]!.closed).toBe(true);
  });
});
