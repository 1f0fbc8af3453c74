/**
 * The placement preview (`rbee place`): the scheduler's own table for a model, each hive with its
 * devices, whether the model fits on each, on what figures, and what speed to expect there from
 * what was observed (past jobs of the model on that hive, else a warm worker's recent rate). Pure, like
 * the scheduler: nothing loads, nothing is fetched.
 */
import type { PlaceOption, PlacePreview } from '../../shared/view.js';
import {
  fitsOn,
  hiveDevices,
  neededBytes,
  schedule,
  type Device,
  type HiveCandidate,
  type PlacementOption,
  type PlacementRequest,
} from './scheduler.js';

/** A finished job of the entry node's jobs table: where it ran and what it measured. */
export interface PastJob {
  /** The hive's id and name when it ran (a node alone is its own hive under its name). */
  hive: string | undefined;
  hiveName: string | undefined;
  modelId: string;
  timeToFirstTokenMs: number;
  /** Undefined when too few tokens were generated to time. */
  tokensPerSecond: number | undefined;
}

/** Past jobs per hive that the medians are of: recent ones say most about the hive now. */
export const PAST_JOBS_PER_HIVE = 20;

export interface PreviewInput {
  request: PlacementRequest;
  /** What was asked for (a ref, an id). */
  ref: string;
  /** The node that computes the preview. */
  node: string;
  hives: readonly HiveCandidate[];
  /** Newest first. */
  pastJobs: readonly PastJob[];
}

export function previewPlacement(input: PreviewInput): PlacePreview {
  const { request, hives } = input;
  const { placement, options } = schedule(request, hives);
  const modelBytes = hives.flatMap((h) => h.state.models).find((m) => m.id === request.modelId)?.bytes;
  const needed = modelBytes === undefined ? undefined : neededBytes(modelBytes);
  return {
    model: request.modelId,
    ref: input.ref,
    node: input.node,
    placement:
      placement === undefined
        ? null
        : { hive: placement.hive, name: placement.name, kind: placement.kind, reason: placement.reason },
    options: options.map((option) => {
      const hive = hives.find((h) => h.id === option.hive)!;
      return row(option, hive, needed, pastOf(input.pastJobs, request.modelId, option));
    }),
  };
}

function row(
  option: PlacementOption,
  { state }: HiveCandidate,
  needed: number | undefined,
  past: PastJob[],
): PlaceOption {
  const worker = state.workers.find((w) => w.id === option.worker);
  const device =
    option.device ??
    (worker === undefined
      ? undefined
      : { backend: worker.backend, index: worker.backend === 'cpu' ? -1 : worker.device });
  const usable = hiveDevices(state);
  const devices = [
    ...usable.map((d) => ({
      ...describe(d),
      fits: fitsOn(d, needed),
      allowed: true,
      chosen: device !== undefined && same(d, device),
    })),
    // a GPU of a backend the hive is set not to use: shown, never chosen
    ...state.hive.gpus
      .filter((g) => !state.hive.backends.includes(g.backend))
      .map((g) => ({
        ...describe({ backend: g.backend, index: g.index, freeBytes: g.vramFreeBytes }),
        fits: false,
        allowed: false,
        chosen: false,
      })),
  ];
  const chosenFree = devices.find((d) => d.chosen)?.freeBytes;
  const freeBytes = chosenFree ?? Math.max(0, ...usable.map((d) => d.freeBytes));
  const neededFigure =
    worker !== undefined
      ? { bytes: worker.memoryBytes, basis: 'observed' as const }
      : (option.neededBytes ?? needed) === undefined
        ? undefined
        : { bytes: (option.neededBytes ?? needed)!, basis: 'estimated' as const };
  return {
    hive: option.hive,
    name: option.name,
    kind: option.kind,
    why: option.why,
    ...(option.worker === undefined ? {} : { worker: option.worker }),
    ...(device === undefined ? {} : { device: { backend: device.backend, index: device.index } }),
    ...(neededFigure === undefined ? {} : { needed: neededFigure }),
    freeBytes,
    devices,
    expected: expected(worker?.tokensPerSecond, past),
  };
}

/** This hive's past jobs of the model, newest first, at most PAST_JOBS_PER_HIVE. */
function pastOf(jobs: readonly PastJob[], modelId: string, option: PlacementOption): PastJob[] {
  return jobs
    .filter((j) => j.modelId === modelId && (j.hive === option.hive || j.hiveName === option.name))
    .slice(0, PAST_JOBS_PER_HIVE);
}

function expected(workerRate: number | undefined, past: PastJob[]): PlaceOption['expected'] {
  const rates = past.flatMap((j) => (j.tokensPerSecond === undefined ? [] : [j.tokensPerSecond]));
  const ttfts = past.map((j) => j.timeToFirstTokenMs);
  // Whole jobs first: a worker's rate is its tokens of the last heartbeat's second, which a short
  // job fills only in part (and an idle worker not at all).
  const tokensPerSecond =
    rates.length > 0
      ? { value: median(rates), basis: 'jobs' as const, jobs: rates.length }
      : workerRate !== undefined && workerRate > 0
        ? { value: workerRate, basis: 'worker' as const }
        : undefined;
  return {
    ...(tokensPerSecond === undefined ? {} : { tokensPerSecond }),
    ...(ttfts.length === 0
      ? {}
      : { timeToFirstTokenMs: { value: median(ttfts), basis: 'jobs' as const, jobs: ttfts.length } }),
  };
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function describe(device: Device): { backend: string; index: number; name: string; freeBytes: number } {
  return {
    backend: device.backend,
    index: device.index,
    name: device.index < 0 ? 'the CPU' : `GPU${device.index} (${device.backend})`,
    freeBytes: Math.max(0, device.freeBytes),
  };
}

function same(a: { backend: string; index: number }, b: { backend: string; index: number }): boolean {
  return a.backend === b.backend && (a.backend === 'cpu' || a.index === b.index);
}
