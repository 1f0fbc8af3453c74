/**
 * The queen's queue over published hive states: places what has room, holds the rest in turn
 * (interactive before batch), counts the slots it handed out, refuses when full and fails at once
 * what can never run.
 */
import { describe, expect, it } from 'vitest';
import {
  createPlacementQueue,
  type HiveCandidate,
  type QueuePosition,
  type QueueRequest,
  type Ticket,
} from '../../src/node/queen/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { GiB, hive, MODEL, type HiveSpec } from '../helpers/hive-state.js';

let jobs = 0;
const request = (over: Partial<QueueRequest> = {}): QueueRequest => ({
  job: `job-${++jobs}`,
  modelId: MODEL,
  entry: 'a',
  provisionable: 'any',
  priority: 'interactive',
  acceptedAt: jobs,
  ...over,
});

/** A queue over hives whose states the test changes, as hives publishing would. */
function setup(specs: HiveSpec[], maxQueued = 8) {
  let hives: HiveCandidate[] = specs.map(hive);
  let clock = 0;
  const queue = createPlacementQueue({
    name: 'queen',
    hives: () => hives,
    maxQueued,
    now: () => clock,
    retryMs: 60_000,
  });
  return {
    queue,
    publish(next: HiveSpec[]) {
      hives = next.map(hive);
      queue.changed();
    },
    advance(ms: number) {
      clock += ms;
    },
  };
}

/** acquire(), with what it was told while it waited. */
function ask(queue: ReturnType<typeof setup>['queue'], req: QueueRequest, signal?: AbortSignal) {
  const positions: QueuePosition[] = [];
  let ticket: Ticket | undefined;
  let error: RbeeError | undefined;
  const done = queue
    .acquire(req, { ...(signal === undefined ? {} : { signal }), onQueued: (p) => positions.push(p) })
    .then(
      (t) => void (ticket = t),
      (e: unknown) => void (error = e as RbeeError),
    );
  return {
    positions,
    done,
    get ticket() {
      return ticket;
    },
    get error() {
      return error;
    },
  };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('the placement queue', () => {
  it('places at once what has a free slot, and holds the next job until that slot is released', async () => {
    const { queue } = setup([{ id: 'a', models: [MODEL], workers: [{ id: 'w' }] }]);
    const first = ask(queue, request());
    await tick();
    expect(first.ticket?.placement).toMatchObject({ hive: 'a', kind: 'warm', worker: 'w' });
    expect(first.positions).toEqual([]);

    // the published state still says the slot is free: the ticket counts, not the lagging state
    const second = ask(queue, request());
    await tick();
    expect(second.ticket).toBeUndefined();
    expect(second.positions).toEqual([{ position: 1, queued: 1, estimatedWaitS: undefined }]);
    expect(queue.depth()).toEqual([
      { model: MODEL, queued: 1, interactive: 1, batch: 0, estimatedWaitS: undefined },
    ]);

    first.ticket?.release();
    await tick();
    expect(second.ticket?.placement).toMatchObject({ hive: 'a', kind: 'warm' });
    expect(queue.depth()).toEqual([]);
  });

  it('spreads jobs over hives: a worker being loaded for a ticket is full until it frees', async () => {
    const { queue } = setup([
      { id: 'a', models: [MODEL] },
      { id: 'b', models: [MODEL] },
      { id: 'c', models: [MODEL] },
    ]);
    const asked = [
      ask(queue, request()),
      ask(queue, request()),
      ask(queue, request()),
      ask(queue, request()),
    ];
    await tick();
    expect(asked.slice(0, 3).map((a) => a.ticket?.placement.hive)).toEqual(['a', 'b', 'c']);
    expect(asked[3]?.ticket).toBeUndefined();
    expect(asked[3]?.positions.at(-1)?.position).toBe(1);
  });

  it('counts a slot released a moment ago as free, though the hive still publishes it busy', async () => {
    // b could fetch the model: the queen must not send it there while a's worker is free
    const b = hive({ id: 'b', ramFree: 4 * GiB });
    let hives: HiveCandidate[] = [hive({ id: 'a', models: [MODEL], workers: [{ id: 'w' }] }), b];
    let clock = 1;
    const queue = createPlacementQueue({ name: 'q', hives: () => hives, maxQueued: 8, now: () => clock });
    const first = await queue.acquire(request());
    expect(first.placement).toMatchObject({ hive: 'a', kind: 'warm' });
    // a publishes its worker busy; the job then ends before a's next state arrives
    hives = [hive({ id: 'a', models: [MODEL], workers: [{ id: 'w', state: 'busy', slotsBusy: 1 }] }), b];
    clock = 5;
    first.release();
    // not fetched onto b: a's worker is free again
    const second = await queue.acquire(request());
    expect(second.placement).toMatchObject({ hive: 'a', kind: 'warm', worker: 'w' });
    // and taken again, however stale a's state: a third job is fetched onto b
    expect((await queue.acquire(request())).placement).toMatchObject({ hive: 'b', kind: 'provision' });
  });

  it('takes interactive jobs before batch jobs that waited longer', async () => {
    const { queue } = setup([{ id: 'a', models: [MODEL], workers: [{}] }]);
    const running = ask(queue, request());
    await tick();
    const batch = ask(queue, request({ priority: 'batch' }));
    const interactive = ask(queue, request({ priority: 'interactive' }));
    await tick();
    expect(interactive.positions.at(-1)).toMatchObject({ position: 1, queued: 2 });
    expect(batch.positions.at(-1)).toMatchObject({ position: 2, queued: 2 });
    expect(queue.depth()).toMatchObject([{ model: MODEL, queued: 2, interactive: 1, batch: 1 }]);

    running.ticket?.release();
    await tick();
    expect(interactive.ticket).toBeDefined();
    expect(batch.ticket).toBeUndefined();
    interactive.ticket?.release();
    await tick();
    expect(batch.ticket).toBeDefined();
  });

  it('refuses a job when the queue is full, with when to try again', async () => {
    const { queue, advance } = setup([{ id: 'a', models: [MODEL], workers: [{}] }], 1);
    const first = ask(queue, request());
    await tick();
    advance(8_000);
    first.ticket?.release(); // a slot held 8 s: the estimate's basis
    await tick();
    const running = ask(queue, request());
    const waiting = ask(queue, request());
    const refused = ask(queue, request());
    await tick();
    expect(running.ticket).toBeDefined();
    expect(waiting.positions.at(-1)).toEqual({ position: 1, queued: 1, estimatedWaitS: 8 });
    expect(refused.error?.code).toBe('QUEUE_FULL');
    expect(refused.error?.details).toMatchObject({ queued: 1, retryAfterS: 16 });
    expect(queue.depth()).toEqual([{ model: MODEL, queued: 1, interactive: 1, batch: 0, estimatedWaitS: 8 }]);
  });

  it('drops a cancelled job from the line and moves the next one up', async () => {
    const { queue } = setup([{ id: 'a', models: [MODEL], workers: [{}] }]);
    const running = ask(queue, request());
    await tick();
    const controller = new AbortController();
    const cancelled = ask(queue, request(), controller.signal);
    const next = ask(queue, request());
    await tick();
    expect(next.positions.at(-1)?.position).toBe(2);
    controller.abort(new RbeeError('JOB_CANCELLED', 'cancelled'));
    await tick();
    expect(cancelled.error?.code).toBe('JOB_CANCELLED');
    expect(next.positions.at(-1)?.position).toBe(1);
    running.ticket?.release();
    await tick();
    expect(next.ticket).toBeDefined();
  });

  it('fails at once a job that nothing running could ever make room for', async () => {
    const { queue } = setup([{ id: 'a', ramFree: 1 * GiB, models: [MODEL] }]);
    const job = ask(queue, request());
    await tick();
    expect(job.error?.code).toBe('INSUFFICIENT_MEMORY');
    expect(job.error?.message).toMatch(/a: needs \d+ MiB; most free/);
    expect(queue.depth()).toEqual([]);
  });

  it('waits for room while a busy worker runs, then unloads it once it is idle', async () => {
    const busy = { id: 'big', model: 'other', state: 'busy' as const, slotsBusy: 1, memoryBytes: 20 * GiB };
    const { queue, publish } = setup([{ id: 'a', ramFree: 1 * GiB, models: [MODEL], workers: [busy] }]);
    const job = ask(queue, request());
    await tick();
    expect(job.ticket).toBeUndefined();
    expect(job.error).toBeUndefined();
    expect(job.positions).toHaveLength(1);

    publish([
      { id: 'a', ramFree: 1 * GiB, models: [MODEL], workers: [{ ...busy, state: 'idle', slotsBusy: 0 }] },
    ]);
    await tick();
    expect(job.ticket?.placement).toMatchObject({ kind: 'on-disk', evicts: ['big'] });
    expect(job.ticket?.placement.reason).toMatch(/after unloading idle worker big \(other/);
  });

  it('lets no later job start a worker while an earlier one waits for memory', async () => {
    const busy = { id: 'big', model: 'other', state: 'busy' as const, slotsBusy: 1, memoryBytes: 20 * GiB };
    const { queue } = setup([
      { id: 'a', ramFree: 1 * GiB, models: [MODEL], workers: [busy] },
      { id: 'b', ramFree: 8 * GiB, models: ['small'], workers: [{ id: 'warm', model: 'warm-model' }] },
    ]);
    const big = ask(queue, request({ pin: 'a' }));
    const spawn = ask(queue, request({ modelId: 'small' }));
    const warm = ask(queue, request({ modelId: 'warm-model' }));
    await tick();
    expect(big.ticket).toBeUndefined();
    expect(spawn.ticket).toBeUndefined();
    expect(warm.ticket?.placement).toMatchObject({ kind: 'warm', worker: 'warm' });
  });

  it('fails every waiting job when this node stops being queen', async () => {
    const { queue } = setup([{ id: 'a', models: [MODEL], workers: [{}] }]);
    ask(queue, request());
    const waiting = ask(queue, request());
    await tick();
    queue.rejectAll(new RbeeError('NOT_QUEEN', 'not the queen any more'));
    await tick();
    expect(waiting.error?.code).toBe('NOT_QUEEN');
    expect(queue.depth()).toEqual([]);
  });
});
