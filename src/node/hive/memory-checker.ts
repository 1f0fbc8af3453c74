/**
 * "Does model M with context C × S slots fit on this machine now?" — answered with numbers.
 * The need is the memory a previous worker of the same model and shape was seen to use, when
 * there is one, else the GGUF estimate plus a worker's own baseline; what is free is the
 * machine's available RAM less a configurable reserve. (GPU devices: CPU-only machines here;
 * the VRAM side uses the same arithmetic with the estimate's vramBytes once devices report it.)
 */
import { freemem, totalmem } from 'node:os';
import type { MemoryObservations, ModelRow } from '../store/index.js';

/** A worker process with node-llama-cpp loaded and no model: measured 166–174 MiB. */
export const WORKER_BASELINE_BYTES = 170 * 2 ** 20;

export interface Fit {
  fits: boolean;
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
}

export interface MemoryChecker {
  check(model: ModelRow, shape: { contextSize?: number; slots: number }): Promise<Fit>;
  /** Records what a ready worker uses, so the next check for this model uses it. */
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
    async check(model, shape) {
      const seen = init.observations.get(model.id, shape.contextSize ?? 0, shape.slots);
      const neededBytes = seen?.observedBytes ?? (await estimated(model, shape));
      const freeBytes = free();
      return {
        fits: neededBytes + reserveBytes <= freeBytes,
        neededBytes,
        basis: seen === undefined ? 'estimate' : 'observed',
        freeBytes,
        totalBytes: total(),
        reserveBytes,
      };
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
