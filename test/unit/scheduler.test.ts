/**
 * The queen's scheduler, table-driven: which hive (and worker, and device) a job goes to, and why.
 */
import { describe, expect, it } from 'vitest';
import { neededBytes, place, schedule, strongestDeviceWithRoom } from '../../src/node/queen/index.js';
import { RbeeError } from '../../src/shared/errors.js';
import { GiB, hive, MODEL, MODEL_BYTES, type HiveSpec } from '../helpers/hive-state.js';

const request = (over: Partial<Parameters<typeof place>[0]> = {}) => ({
  modelId: MODEL,
  entry: 'a',
  provisionable: 'any' as const,
  ...over,
});

describe('the scheduler picks', () => {
  const cases: {
    name: string;
    hives: HiveSpec[];
    req?: Partial<Parameters<typeof place>[0]>;
    hive: string;
    kind: string;
    worker?: string;
    backend?: string;
    evicts?: string[];
    why: RegExp;
  }[] = [
    {
      name: 'the only hive with the model warm, over hives with more room',
      hives: [
        { id: 'a', ramFree: 60 * GiB },
        { id: 'b', gpus: [{ backend: 'cuda', free: 20 * GiB }] },
        { id: 'c', models: [MODEL], workers: [{}] },
      ],
      hive: 'c',
      kind: 'warm',
      worker: 'c-w0',
      why: /worker c-w0 on hive c: model warm, 1 of 1 slots free/,
    },
    {
      name: 'the warm worker with more free slots',
      hives: [
        { id: 'a', models: [MODEL], workers: [{ slots: 4, slotsBusy: 3 }] },
        { id: 'b', models: [MODEL], workers: [{ slots: 4, slotsBusy: 1 }] },
      ],
      hive: 'b',
      kind: 'warm',
      why: /3 of 4 slots free/,
    },
    {
      name: 'the lighter-loaded hive among equal warm workers',
      hives: [
        { id: 'a', load: 8, models: [MODEL], workers: [{}] },
        { id: 'b', load: 1, models: [MODEL], workers: [{}] },
      ],
      hive: 'b',
      kind: 'warm',
      why: /model warm/,
    },
    {
      name: 'the faster worker among equal loads',
      hives: [
        { id: 'a', models: [MODEL], workers: [{ tokensPerSecond: 20 }] },
        { id: 'b', models: [MODEL], workers: [{ tokensPerSecond: 90 }] },
      ],
      hive: 'b',
      kind: 'warm',
      why: /model warm/,
    },
    {
      name: 'the entry hive among otherwise equal warm workers',
      hives: [
        { id: 'b', models: [MODEL], workers: [{}] },
        { id: 'a', models: [MODEL], workers: [{}] },
      ],
      hive: 'a',
      kind: 'warm',
      why: /model warm/,
    },
    {
      name: 'a hive with the model on disk over an empty one with more room',
      hives: [
        { id: 'a', ramFree: 60 * GiB, models: [] },
        { id: 'b', ramFree: 8 * GiB, models: [MODEL] },
      ],
      hive: 'b',
      kind: 'on-disk',
      backend: 'cpu',
      why: /model on disk, room on CPU/,
    },
    {
      name: 'a GPU with room over the CPU of the same hive',
      hives: [{ id: 'a', models: [MODEL], gpus: [{ backend: 'vulkan', free: 8 * GiB }] }],
      hive: 'a',
      kind: 'on-disk',
      backend: 'vulkan',
      why: /room on GPU0 \(vulkan\)/,
    },
    {
      name: 'CUDA over Vulkan over the CPU',
      hives: [
        { id: 'a', models: [MODEL], gpus: [{ backend: 'vulkan', free: 20 * GiB }] },
        { id: 'b', models: [MODEL], gpus: [{ backend: 'cuda', free: 8 * GiB }] },
      ],
      hive: 'b',
      kind: 'on-disk',
      backend: 'cuda',
      why: /GPU0 \(cuda\)/,
    },
    {
      name: 'the CPU when the GPU is too small for the model',
      hives: [{ id: 'a', models: [MODEL], gpus: [{ backend: 'cuda', free: 1 * GiB }] }],
      hive: 'a',
      kind: 'on-disk',
      backend: 'cpu',
      why: /room on CPU/,
    },
    {
      name: 'the CPU of a hive set to the CPU, though its GPU has room',
      hives: [{ id: 'a', models: [MODEL], gpus: [{ backend: 'cuda', free: 20 * GiB }], backends: ['cpu'] }],
      hive: 'a',
      kind: 'on-disk',
      backend: 'cpu',
      why: /room on CPU/,
    },
    {
      name: 'a GPU its hive allows over a stronger one whose hive does not',
      hives: [
        { id: 'a', models: [MODEL], gpus: [{ backend: 'cuda', free: 20 * GiB }], backends: ['cpu'] },
        { id: 'b', models: [MODEL], gpus: [{ backend: 'vulkan', free: 8 * GiB }] },
      ],
      hive: 'b',
      kind: 'on-disk',
      backend: 'vulkan',
      why: /GPU0 \(vulkan\)/,
    },
    {
      name: 'only the allowed backend among a hive’s GPUs',
      hives: [
        {
          id: 'a',
          models: [MODEL],
          gpus: [
            { backend: 'cuda', free: 20 * GiB },
            { backend: 'vulkan', free: 8 * GiB },
          ],
          backends: ['cpu', 'vulkan'],
        },
      ],
      hive: 'a',
      kind: 'on-disk',
      backend: 'vulkan',
      why: /GPU1 \(vulkan\)/,
    },
    {
      name: 'the strongest device when no hive has the model (fetched there)',
      hives: [
        { id: 'a', ramFree: 16 * GiB },
        { id: 'b', gpus: [{ backend: 'cuda', free: 20 * GiB }] },
      ],
      req: { modelId: 'unknown-model' },
      hive: 'b',
      kind: 'provision',
      backend: 'cuda',
      why: /not on disk, fetched there first/,
    },
    {
      name: 'the entry hive for a model that is a local path',
      hives: [
        { id: 'a', ramFree: 4 * GiB },
        { id: 'b', gpus: [{ backend: 'cuda', free: 20 * GiB }] },
      ],
      req: { modelId: 'unknown-model', provisionable: 'entry' },
      hive: 'a',
      kind: 'provision',
      why: /room on CPU/,
    },
    {
      name: 'a busy warm worker to wait for when nothing else has room',
      hives: [{ id: 'a', ramFree: 1 * GiB, models: [MODEL], workers: [{ state: 'busy', slotsBusy: 1 }] }],
      hive: 'a',
      kind: 'wait',
      why: /all 1 slots busy/,
    },
    {
      name: 'the warm worker that keeps the prompt’s start cached, over a lighter-loaded one',
      hives: [
        { id: 'a', load: 1, models: [MODEL], workers: [{ id: 'light' }] },
        { id: 'b', load: 7, models: [MODEL], workers: [{ id: 'cached' }] },
      ],
      req: { affinity: [{ worker: 'cached', tokens: 900 }] },
      hive: 'b',
      kind: 'warm',
      worker: 'cached',
      why: /model warm, 1 of 1 slots free, 900 tokens of the prompt cached there/,
    },
    {
      name: 'a worker still loading the model, over starting another elsewhere',
      hives: [
        { id: 'a', models: [MODEL], workers: [{ state: 'loading', slots: 2, slotsBusy: 1 }] },
        { id: 'b', models: [MODEL] },
      ],
      hive: 'a',
      kind: 'warm',
      why: /1 of 2 slots free/,
    },
    {
      name: 'another hive with the model on disk over a busy worker (one worker per model per hive)',
      hives: [
        { id: 'a', models: [MODEL], workers: [{ state: 'busy', slotsBusy: 1 }] },
        { id: 'b', models: [MODEL] },
      ],
      hive: 'b',
      kind: 'on-disk',
      why: /hive b: model on disk/,
    },
    {
      name: 'a warm worker with at least the context the job asks for',
      hives: [{ id: 'a', models: [MODEL], workers: [{ contextSize: 8192 }] }],
      req: { contextSize: 4096 },
      hive: 'a',
      kind: 'warm',
      why: /model warm/,
    },
    {
      name: 'a warm worker of a hive that does not say its context (an older version)',
      hives: [{ id: 'a', models: [MODEL], workers: [{}] }],
      req: { contextSize: 4096 },
      hive: 'a',
      kind: 'warm',
      why: /model warm/,
    },
    {
      name: 'the reload of an idle worker with too little context, its memory counted as free',
      hives: [
        {
          id: 'a',
          ramFree: 2 * GiB,
          models: [MODEL],
          workers: [{ id: 'short', contextSize: 2048, memoryBytes: 3 * GiB }],
        },
      ],
      req: { contextSize: 8192 },
      hive: 'a',
      kind: 'on-disk',
      evicts: ['short'],
      why: /after unloading idle worker short \(2048 tokens of context, reloaded with 8192\)/,
    },
    {
      name: 'a busy worker with too little context to wait for: it is reloaded once its jobs are done',
      hives: [
        {
          id: 'a',
          ramFree: 1 * GiB,
          models: [MODEL],
          workers: [{ state: 'busy', slots: 2, slotsBusy: 1, contextSize: 2048 }],
        },
      ],
      req: { contextSize: 8192 },
      hive: 'a',
      kind: 'wait',
      why: /has 2048 tokens of context and the job asks for 8192: it is reloaded once its running jobs are done/,
    },
    {
      name: 'another hive with the model on disk over a worker with too little context',
      hives: [
        { id: 'a', models: [MODEL], workers: [{ contextSize: 2048, state: 'busy', slotsBusy: 1, slots: 4 }] },
        { id: 'b', models: [MODEL] },
      ],
      req: { contextSize: 8192 },
      hive: 'b',
      kind: 'on-disk',
      why: /hive b: model on disk/,
    },
    {
      name: 'room made by unloading the least recently used idle worker of another model',
      hives: [
        {
          id: 'a',
          ramFree: 2 * GiB,
          models: [MODEL],
          workers: [
            { id: 'recent', model: 'other', lastUsedAt: 2_000, memoryBytes: 3 * GiB },
            { id: 'oldest', model: 'other2', lastUsedAt: 1_000, memoryBytes: 3 * GiB },
            { id: 'busy', model: 'other3', state: 'busy', slotsBusy: 1, memoryBytes: 30 * GiB },
          ],
        },
      ],
      hive: 'a',
      kind: 'on-disk',
      evicts: ['oldest'],
      why: /room on CPU after unloading idle worker oldest \(other2, idle \d+ min\)/,
    },
    {
      name: 'the pinned hive, by name, even when another is warm',
      hives: [{ id: 'a', models: [MODEL], workers: [{}] }, { id: 'b' }],
      req: { pin: 'b' },
      hive: 'b',
      kind: 'provision',
      why: /hive b/,
    },
    {
      name: 'another hive than the ones that failed this job',
      hives: [{ id: 'a', models: [MODEL], workers: [{}] }, { id: 'b' }],
      req: { exclude: ['a'] },
      hive: 'b',
      kind: 'provision',
      why: /hive b/,
    },
    {
      name: 'never a degraded hive',
      hives: [{ id: 'a', health: 'degraded', models: [MODEL], workers: [{}] }, { id: 'b' }],
      hive: 'b',
      kind: 'provision',
      why: /hive b/,
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const placement = place(request(c.req), c.hives.map(hive));
      expect(placement.hive).toBe(c.hive);
      expect(placement.kind).toBe(c.kind);
      if (c.worker !== undefined) expect(placement.worker).toBe(c.worker);
      if (c.backend !== undefined) expect(placement.device?.backend).toBe(c.backend);
      if (c.evicts !== undefined) expect(placement.evicts).toEqual(c.evicts);
      expect(placement.reason).toMatch(c.why);
    });
  }
});

describe('the scheduler refuses', () => {
  it('a job that fits nowhere, with each hive’s numbers', () => {
    const error = catchError(() =>
      place(request(), [
        hive({ id: 'a', ramFree: 1 * GiB, models: [MODEL] }),
        hive({ id: 'b', ramFree: 2 * GiB }),
      ]),
    );
    expect(error.code).toBe('INSUFFICIENT_MEMORY');
    expect(error.message).toMatch(/a: needs 2628 MiB/);
    expect(error.message).toMatch(/b: needs 2628 MiB/);
  });

  it('a job that fits only if a busy worker were unloaded (a busy worker is never evicted)', () => {
    const busy = { id: 'busy', model: 'other', state: 'busy' as const, slotsBusy: 1, memoryBytes: 30 * GiB };
    const error = catchError(() =>
      place(request(), [hive({ id: 'a', ramFree: 1 * GiB, models: [MODEL], workers: [busy] })]),
    );
    expect(error.code).toBe('INSUFFICIENT_MEMORY');
  });

  it('a job that fits only in the memory the hive keeps in reserve', () => {
    const a = hive({ id: 'a', ramFree: 4 * GiB, models: [MODEL] });
    expect(place(request(), [a]).kind).toBe('on-disk');
    a.state.hive.reserveBytes = 2 * GiB;
    expect(catchError(() => place(request(), [a])).code).toBe('INSUFFICIENT_MEMORY');
  });

  it('a pin to a hive that does not exist, listing the hives', () => {
    const error = catchError(() => place(request({ pin: 'zeta' }), [hive({ id: 'a' }), hive({ id: 'b' })]));
    expect(error.code).toBe('NOT_FOUND');
    expect(error.message).toMatch(/no hive named zeta.*a, b/);
  });

  it('a pin to a hive that cannot fetch a local path', () => {
    const error = catchError(() =>
      place(request({ pin: 'b', provisionable: 'entry', modelId: 'x' }), [
        hive({ id: 'a' }),
        hive({ id: 'b' }),
      ]),
    );
    expect(error.code).toBe('INSUFFICIENT_MEMORY');
    expect(error.message).toMatch(/hive b cannot run x.*path on another machine/);
  });
});

describe('the placement table', () => {
  it('lists every hive, best first, with whether the model fits and why', () => {
    const { options } = schedule(request(), [
      hive({ id: 'a', ramFree: 1 * GiB }),
      hive({ id: 'b', models: [MODEL] }),
      hive({ id: 'c', models: [MODEL], workers: [{ tokensPerSecond: 42 }] }),
    ]);
    expect(options.map((o) => [o.hive, o.kind])).toEqual([
      ['c', 'warm'],
      ['b', 'on-disk'],
      ['a', 'no-room'],
    ]);
    expect(options[0]?.tokensPerSecond).toBe(42);
    expect(options[1]?.neededBytes).toBe(neededBytes(MODEL_BYTES));
  });
});

describe('a hive’s own choice of device (a job that came without one)', () => {
  const state = (spec: HiveSpec) => hive(spec).state;
  it('is the scheduler’s: CUDA over Vulkan, the CPU when no GPU has room', () => {
    const gpus = [
      { backend: 'vulkan', free: 20 * GiB },
      { backend: 'cuda', free: 8 * GiB },
    ];
    expect(
      strongestDeviceWithRoom(state({ id: 'a', gpus }), neededBytes(MODEL_BYTES), MODEL)?.device,
    ).toMatchObject({
      backend: 'cuda',
      index: 1,
    });
    expect(
      strongestDeviceWithRoom(state({ id: 'a', gpus }), neededBytes(10 * GiB), MODEL)?.device,
    ).toMatchObject({
      backend: 'vulkan',
      index: 0,
    });
    expect(
      strongestDeviceWithRoom(state({ id: 'a', gpus }), neededBytes(20 * GiB), MODEL)?.device,
    ).toMatchObject({
      backend: 'cpu',
      index: -1,
    });
  });

  it('never a GPU of a backend the hive does not allow', () => {
    const forcedCpu = state({ id: 'a', gpus: [{ backend: 'cuda', free: 20 * GiB }], backends: ['cpu'] });
    expect(strongestDeviceWithRoom(forcedCpu, neededBytes(MODEL_BYTES), MODEL)?.device.backend).toBe('cpu');
    // and nothing at all when the CPU has no room either
    const small = state({
      id: 'a',
      ramFree: 1 * GiB,
      gpus: [{ backend: 'cuda', free: 20 * GiB }],
      backends: ['cpu'],
    });
    expect(strongestDeviceWithRoom(small, neededBytes(MODEL_BYTES), MODEL)).toBeUndefined();
  });

  it('leaves a disallowed GPU out of the most-free figure of a refusal', () => {
    const { options } = schedule(request(), [
      hive({
        id: 'a',
        ramFree: 1 * GiB,
        models: [MODEL],
        gpus: [{ backend: 'cuda', free: 20 * GiB }],
        backends: ['cpu'],
      }),
    ]);
    expect(options[0]?.kind).toBe('no-room');
    expect(options[0]?.why).toMatch(/most free: 512 MiB/);
  });
});

function catchError(fn: () => unknown): RbeeError {
  try {
    fn();
  } catch (error) {
    if (error instanceof RbeeError) return error;
    throw error;
  }
  throw new Error('expected an error');
}
