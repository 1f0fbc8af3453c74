/**
 * Published hive states for the queen's unit tests (scheduler, queue): one line per hive says what
 * differs from a ready 64 GiB, 8-core hive with 32 GiB free, no GPU, no models and no workers.
 */
import type { HiveCandidate } from '../../src/node/queen/index.js';
import type { HiveState, WorkerView } from '../../src/shared/view.js';

export const GiB = 2 ** 30;
export const MODEL = 'demo-small-1a2b3c4d';
export const MODEL_BYTES = 2 * GiB;

export interface HiveSpec {
  id: string;
  ramFree?: number;
  load?: number;
  gpus?: { backend: string; free: number }[];
  models?: string[];
  workers?: Partial<WorkerView>[];
  health?: 'ready' | 'degraded';
  /** The backends the hive allows (its `backend` setting); defaults to every backend it has. */
  backends?: string[];
}

export function hive(spec: HiveSpec): HiveCandidate {
  const state: HiveState = {
    hive: {
      name: spec.id,
      health: spec.health ?? 'ready',
      cpu: { model: 'cpu', physicalCores: 8, logicalCores: 8 },
      ramTotalBytes: 64 * GiB,
      ramFreeBytes: spec.ramFree ?? 32 * GiB,
      loadAverage: spec.load ?? 0,
      gpus: (spec.gpus ?? []).map((g, index) => ({
        index,
        name: `gpu${index}`,
        backend: g.backend,
        vramTotalBytes: 24 * GiB,
        vramFreeBytes: g.free,
      })),
      backends: spec.backends ?? ['cpu', ...(spec.gpus ?? []).map((g) => g.backend)],
    },
    workers: (spec.workers ?? []).map((w, i) => ({
      id: `${spec.id}-w${i}`,
      hive: spec.id,
      pid: 100 + i,
      model: MODEL,
      backend: 'cpu',
      device: -1,
      state: 'idle',
      slots: 1,
      slotsBusy: 0,
      tokensPerSecond: 10,
      memoryBytes: GiB,
      startedAt: 0,
      lastUsedAt: 0,
      ...w,
    })),
    models: (spec.models ?? []).map((id) => ({
      id,
      hive: spec.id,
      name: id,
      ref: `demo:${id}`,
      bytes: MODEL_BYTES,
      quantization: 'Q8_0',
      architecture: 'llama',
      contextLength: 2048,
      source: 'demo',
      lastUsedAt: null,
    })),
    downloads: [],
  };
  return { id: spec.id, state };
}
