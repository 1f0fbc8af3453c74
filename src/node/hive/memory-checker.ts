/**
 * "Does model M with context C × S slots fit on this device now?" — answered with numbers, the same
 * way for the CPU and a GPU. On the CPU the need is the memory a previous worker of the same model
 * and shape was seen to use, when there is one, else the GGUF estimate plus a worker's own
 * baseline; what is free is the machine's available RAM less a configurable reserve. On a GPU the
 * need is the GGUF estimate (weights and KV cache, all offloaded; a worker's resident memory says
 * nothing about its VRAM), and what is free is the device's free VRAM as probed, less what this
 * hive's own workers on it hold since.
 */
import { freemem, totalmem } from 'node:os';
import type { MemoryObservations, ModelRow } from '../store/index.js';

/** A worker process with node-llama-cpp loaded and no model: measured 166–174 MiB. */
export const WORKER_BASELINE_BYTES = 170 * 2 ** 20;

export interface Fit {
  fits: boolean;
  /** What the figures are of: the machine's RAM or a GPU's VRAM. */
  memory: 'RAM' | 'VRAM';
  neededBytes: number;
  /** Where `neededBytes` comes from. */
  basis: 'observed' | 'estimate';
  freeBytes: number;
  totalBytes: number;
  reserveBytes: number;
}

export interface MemoryCheckerInit {
  estimate: (
    modelPath: string,
    shape: { contextSize?: number; slots: number },
  ) => Promise<{ totalBytes: number }>;
  observations: MemoryObservations;
  /** RAM kept free for the OS and everything else. Defaults to 512 MiB. */
  reserveBytes?: number;
  freeBytes?: () => number;
  totalBytes?: () => number;
  /** A GPU's VRAM as last probed; undefined when unknown (then nothing is admitted there). */
  vram?: (gpu: { backend: string; index: number }) => { freeBytes: number; totalBytes: number } | undefined;
}

/** A GPU to check, with the bytes this hive's own workers hold on it (the probe predates them). */
export interface GpuTarget {
  backend: string;
  index: number;
  heldBytes: number;
}

export interface MemoryChecker {
  /** On the CPU (RAM) unless `gpu` names a GPU. */
  check(model: ModelRow, shape: { contextSize?: number; slots: number }, gpu?: GpuTarget): Promise<Fit>;
  /** Records what a ready CPU worker uses, so the next check for this model uses it. */
  observe(
    model: ModelRow,
    shape: { contextSize?: number; slots: number },
    observedBytes: number,
  ): Promise<void>;
}

export function createMemoryChecker(init: MemoryCheckerInit): MemoryChecker {
  const reserveBytes = init.reserveBytes ?? 512 * 2 ** 20;
  const free = init.freeBytes ?? freemem;
  const total = init.totalBytes ?? totalmem;
  const estimated = async (
    model: ModelRow,
    shape: { contextSize?: number; slots: number },
  ): Promise<number> => (await init.estimate(model.path, shape)).totalBytes + WORKER_BASELINE_BYTES;

  return {
    async check(model, shape, gpu) {
      if (gpu !== undefined) {
        const vram = init.vram?.(gpu);
        return fit('VRAM', {
          neededBytes: (await init.estimate(model.path, shape)).totalBytes,
          basis: 'estimate',
          freeBytes: vram === undefined ? 0 : Math.max(0, vram.freeBytes - gpu.heldBytes),
          totalBytes: vram?.totalBytes ?? 0,
          reserveBytes: 0,
        });
      }
      const seen = init.observations.get(model.id, shape.contextSize ?? 0, shape.slots);
      return fit('RAM', {
        neededBytes: seen?.observedBytes ?? (await estimated(model, shape)),
        basis: seen === undefined ? 'estimate' : 'observed',
        freeBytes: free(),
        totalBytes: total(),
        reserveBytes,
      });
    },
    async observe(model, shape, observedBytes) {
      init.observations.record({
        modelId: model.id,
        contextSize: shape.contextSize ?? 0,
        slots: shape.slots,
        observedBytes,
        estimatedBytes: await estimated(model, shape),
        observedAt: Date.now(),
      });
    },
  };
}

/** The one comparison: the need and the reserve within what is free. */
function fit(memory: Fit['memory'], figures: Omit<Fit, 'fits' | 'memory'>): Fit {
  return {
    fits: figures.neededBytes + figures.reserveBytes <= figures.freeBytes,
    memory,
    ...figures,
  };
}
