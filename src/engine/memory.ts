/**
 * How much memory a worker will need, from the GGUF header alone: what a hive checks before it
 * spawns one. The figures are node-llama-cpp's (GgufInsights), which follow llama.cpp's own
 * allocation rules for weights and the KV cache and guess the compute buffers; on this project's
 * machines they overstated the observed use (385 MiB estimated, 155 MiB observed for 4 × 1024), so
 * callers should prefer a worker's observed memoryBytes once it has one.
 */
import type { Stats } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { GgufInsights } from 'node-llama-cpp';
import { RbeeError, toRbeeError } from '../shared/errors.js';
import type { MemoryEstimate } from './types.js';

/** A worker's context per slot when none is asked for: the trained length, capped (the KV cache grows with it). */
export const DEFAULT_CONTEXT_CAP = 4096;

export function defaultContextSize(trainContextSize: number | undefined): number {
  return Math.min(trainContextSize ?? DEFAULT_CONTEXT_CAP, DEFAULT_CONTEXT_CAP);
}

export interface EstimateWorkerMemoryOptions {
  /** Context per slot, in tokens. Defaults to what a worker uses: min(trained context, 4096). */
  contextSize?: number;
  /** Slots (context sequences). Defaults to 1. */
  slots?: number;
  /** Layers offloaded to a GPU. Defaults to 0 (CPU), as a 'cpu' worker loads. */
  gpuLayers?: number;
  signal?: AbortSignal;
}

export interface InsightsEstimateOptions {
  contextSize: number;
  slots: number;
  gpuLayers: number;
  flashAttention?: boolean;
}

/**
 * Estimates a worker's memory for a model file without loading it. Reads only the header (no
 * weights); the first call in a process also loads node-llama-cpp's native addon without
 * initialising a backend. MODEL_NOT_FOUND for a missing file, MODEL_INVALID for one that is no GGUF.
 */
export async function estimateWorkerMemory(
  modelPath: string,
  options: EstimateWorkerMemoryOptions = {},
): Promise<MemoryEstimate> {
  const { signal } = options;
  if (signal?.aborted === true) throw toRbeeError(signal.reason, 'JOB_CANCELLED');
  const slots = options.slots ?? 1;
  if (!Number.isInteger(slots) || slots < 1)
    throw new RbeeError('CONFIG_INVALID', `slots must be ≥ 1, got ${slots}`);
  if (
    options.contextSize !== undefined &&
    !(Number.isInteger(options.contextSize) && options.contextSize > 0)
  ) {
    throw new RbeeError(
      'CONFIG_INVALID',
      `contextSize must be a positive integer, got ${options.contextSize}`,
    );
  }
  let file: Stats;
  try {
    file = await stat(modelPath);
    if (!file.isFile()) {
      throw new RbeeError('MODEL_INVALID', `${modelPath} is not a regular file`);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new RbeeError('MODEL_NOT_FOUND', `model file not found: ${modelPath}`, { cause: error });
    }
    throw toRbeeError(error, 'MODEL_INVALID');
  }
  const version = `${modelPath}\0${file.size}\0${file.mtimeMs}`;
  const insights = insightsSeen.get(version) ?? (await readInsights(modelPath, signal));
  insightsSeen.delete(version); // re-inserted: the map's order is least recently used first
  insightsSeen.set(version, insights);
  if (insightsSeen.size > INSIGHTS_KEPT) insightsSeen.delete(insightsSeen.keys().next().value as string);
  return estimateFromInsights(insights, {
    contextSize: options.contextSize ?? defaultContextSize(insights.trainContextSize),
    slots,
    gpuLayers: options.gpuLayers ?? 0,
  });
}

/**
 * Headers already read, by path, size and modification time: every job's admission asks for an
 * estimate, and reading a header (with node-llama-cpp's checks around it) cost ~8 ms of each job's
 * time to first token. A file that changes is read again.
 */
const insightsSeen = new Map<string, GgufInsights>();
const INSIGHTS_KEPT = 64;

async function readInsights(modelPath: string, signal: AbortSignal | undefined): Promise<GgufInsights> {
  // loaded on first use: importing node-llama-cpp takes ~1 s that the node's start need not wait for
  const llamaCpp = await import('node-llama-cpp');
  try {
    const info = await llamaCpp.readGgufFileInfo(modelPath, {
      sourceType: 'filesystem',
      logWarnings: false,
      signal,
    });
    return await llamaCpp.GgufInsights.from(info);
  } catch (error) {
    if (isAborted(signal)) throw toRbeeError(signal?.reason, 'JOB_CANCELLED');
    throw new RbeeError('MODEL_INVALID', `${modelPath}: not a readable GGUF file (${messageOf(error)})`, {
      cause: error,
    });
  }
}

/**
 * The estimate itself, for callers that already hold insights (the worker uses its model's after
 * loading, with the layers and context it really got). Batch size follows node-llama-cpp's default
 * for a context, min(contextSize × slots, 512), which is what the worker creates.
 */
export function estimateFromInsights(
  insights: GgufInsights,
  options: InsightsEstimateOptions,
): MemoryEstimate {
  // The non-V2 estimators are pure arithmetic over the header; the V2 ones simulate a load through
  // the native backend, which a hive that only wants a number should not need.
  const weights = insights.estimateModelResourceRequirements({ gpuLayers: options.gpuLayers });
  const context = insights.estimateContextResourceRequirements({
    contextSize: options.contextSize,
    sequences: options.slots,
    modelGpuLayers: options.gpuLayers,
    flashAttention: options.flashAttention ?? false,
  });
  const weightsBytes = Math.ceil(weights.cpuRam + weights.gpuVram);
  const kvCacheBytes = Math.ceil(context.cpuRam + context.gpuVram);
  return {
    weightsBytes,
    kvCacheBytes,
    totalBytes: weightsBytes + kvCacheBytes,
    vramBytes: Math.ceil(weights.gpuVram + context.gpuVram),
  };
}

function messageOf(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/[\u0000-\u001f\u007f]/g, '?');
}

/** A function, so that TypeScript does not keep the narrowing from the check before the awaits. */
function isAborted(signal: AbortSignal | undefined): boolean {
  return signal?.aborted === true;
}
