/**
 * The placement preview (`rbee place`): the scheduler's table with every device of every hive,
 * whether the model fits, on what figures, and the speed expected from what was observed.
 */
import { describe, expect, it } from 'vitest';
import {
  median,
  neededBytes,
  previewPlacement,
  type HiveCandidate,
  type PastJob,
} from '../../src/node/queen/index.js';
import type { HiveState, WorkerView } from '../../src/shared/view.js';

const GiB = 2 ** 30;
const MODEL = 'demo-small-1a2b3c4d';

function hive(
  id: string,
  spec: {
    gpus?: { backend: string; free: number }[];
    backends?: string[];
    models?: boolean;
    worker?: Partial<WorkerView>;
  } = {},
): HiveCandidate {
  const state: HiveState = {
    hive: {
      name: id,
      health: 'ready',
      cpu: { model: 'cpu', physicalCores: 8, logicalCores: 8 },
      ramTotalBytes: 64 * GiB,
      ramFreeBytes: 16 * GiB,
      loadAverage: 0,
      gpus: (spec.gpus ?? []).map((g, index) => ({
        index,
        name: `gpu${index}`,
        backend: g.backend,
        vramTotalBytes: 24 * GiB,
        vramFreeBytes: g.free,
      })),
      backends: spec.backends ?? ['cpu', ...(spec.gpus ?? []).map((g) => g.backend)],
    },
    workers:
      spec.worker === undefined
        ? []
        : [
            {
              id: `${id}-w`,
              hive: id,
              pid: 1,
              model: MODEL,
              backend: 'cpu',
              device: 0,
              state: 'idle',
              slots: 1,
              slotsBusy: 0,
              tokensPerSecond: 0,
              memoryBytes: 3 * GiB,
              startedAt: 0,
              lastUsedAt: 0,
              ...spec.worker,
            },
          ],
    models:
      spec.models === false
        ? []
        : [
            {
              id: MODEL,
              hive: id,
              name: MODEL,
              ref: 'demo:small',
              bytes: 2 * GiB,
              quantization: 'Q8_0',
              architecture: 'llama',
              contextLength: 2048,
              source: 'demo',
              lastUsedAt: null,
            },
          ],
    downloads: [],
  };
  return { id, state };
}

const preview = (hives: HiveCandidate[], pastJobs: PastJob[] = [], pin?: string) =>
  previewPlacement({
    request: { modelId: MODEL, entry: 'a', provisionable: 'any', ...(pin === undefined ? {} : { pin }) },
    ref: 'demo:small',
    node: 'a',
    hives,
    pastJobs,
  });

const job = (over: Partial<PastJob>): PastJob => ({
  hive: 'a',
  hiveName: 'a',
  modelId: MODEL,
  timeToFirstTokenMs: 100,
  tokensPerSecond: 10,
  ...over,
});

describe('the placement preview', () => {
  it('lists every device of a hive, whether the model fits there, and marks the one chosen', () => {
    const table = preview([hive('a', { gpus: [{ backend: 'cuda', free: 20 * GiB }] })]);
    expect(table.placement).toMatchObject({ hive: 'a', kind: 'on-disk' });
    const [a] = table.options;
    expect(a).toMatchObject({
      kind: 'on-disk',
      device: { backend: 'cuda', index: 0 },
      needed: { bytes: neededBytes(2 * GiB), basis: 'estimated' },
      freeBytes: 20 * GiB,
    });
    expect(a?.devices).toEqual([
      {
        backend: 'cuda',
        index: 0,
        name: 'GPU0 (cuda)',
        freeBytes: 20 * GiB,
        fits: true,
        allowed: true,
        chosen: true,
      },
      {
        backend: 'cpu',
        index: -1,
        name: 'the CPU',
        freeBytes: 15.5 * GiB,
        fits: true,
        allowed: true,
        chosen: false,
      },
    ]);
  });

  it('shows a GPU the hive is set not to use, never chosen, and the CPU chosen instead', () => {
    const [a] = preview([
      hive('a', { gpus: [{ backend: 'cuda', free: 20 * GiB }], backends: ['cpu'] }),
    ]).options;
    expect(a?.device).toEqual({ backend: 'cpu', index: -1 });
    expect(a?.devices.map((d) => [d.name, d.allowed, d.chosen])).toEqual([
      ['the CPU', true, true],
      ['GPU0 (cuda)', false, false],
    ]);
  });

  it('says a device has no room, and a hive where nothing fits is no-room with its most free', () => {
    const [a] = preview([hive('a', { gpus: [{ backend: 'cuda', free: 1 * GiB }] })]).options;
    expect(a?.devices.find((d) => d.backend === 'cuda')).toMatchObject({ fits: false, chosen: false });
    expect(a?.device?.backend).toBe('cpu');
  });

  it('takes a warm worker’s observed memory, and its rate when no past job says more', () => {
    const [a] = preview([hive('a', { worker: { tokensPerSecond: 33 } })]).options;
    expect(a).toMatchObject({
      kind: 'warm',
      device: { backend: 'cpu', index: -1 },
      needed: { bytes: 3 * GiB, basis: 'observed' },
      expected: { tokensPerSecond: { value: 33, basis: 'worker' } },
    });
  });

  it('expects the median of past jobs of the model on that hive, and says when there is no data', () => {
    const past = [
      job({ timeToFirstTokenMs: 100, tokensPerSecond: 10 }),
      job({ timeToFirstTokenMs: 300, tokensPerSecond: 30 }),
      job({ timeToFirstTokenMs: 5000, tokensPerSecond: 20 }),
      job({ hive: 'b', hiveName: 'b', timeToFirstTokenMs: 1, tokensPerSecond: 1000 }),
      job({ modelId: 'other', timeToFirstTokenMs: 1, tokensPerSecond: 1000 }),
    ];
    // whole jobs say more than the warm worker's last second
    const table = preview([hive('a', { worker: { tokensPerSecond: 3 } }), hive('c')], past);
    const a = table.options.find((o) => o.hive === 'a');
    expect(a?.expected).toEqual({
      tokensPerSecond: { value: 20, basis: 'jobs', jobs: 3 },
      timeToFirstTokenMs: { value: 300, basis: 'jobs', jobs: 3 },
    });
    expect(table.options.find((o) => o.hive === 'c')?.expected).toEqual({});
  });

  it('counts a job by the hive’s name too (a node that ran alone before it joined)', () => {
    const [a] = preview([hive('peer-id-a')], [job({ hive: 'a-old-id', hiveName: 'peer-id-a' })]).options;
    expect(a?.expected.timeToFirstTokenMs?.jobs).toBe(1);
  });

  it('lists only the pinned hive', () => {
    const table = preview([hive('a'), hive('b')], [], 'b');
    expect(table.options.map((o) => o.hive)).toEqual(['b']);
  });
});

describe('median', () => {
  it('is the middle value, or the mean of the two middle ones', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
  });
});
