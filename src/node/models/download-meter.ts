/** Timing helpers of one download: the stall timer and the throttled progress meter. */
import type { DownloadProgress } from './download.js';

export interface StallTimer {
  signal: AbortSignal;
  reset(): void;
  clear(): void;
}

export function createStallTimer(ms: number): StallTimer {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const reset = (): void => {
    clearTimeout(timer);
    timer = setTimeout(() => controller.abort(new Error(`stalled for ${ms} ms`)), ms);
  };
  reset();
  return { signal: controller.signal, reset, clear: () => clearTimeout(timer) };
}

/**
 * Throttles progress to one call per interval. A call that falls inside the interval is not lost:
 * the latest figures go out when the interval ends, so a download that pauses still shows its last bytes.
 * The rate counts only bytes that arrived, so a resumed download does not claim the old ones.
 */
export function createProgressMeter(
  init: { progressIntervalMs?: number; onProgress?: (progress: DownloadProgress) => void },
  startBytes: number,
  totalBytes: number | undefined,
) {
  const interval = init.progressIntervalMs ?? 250;
  let lastAt = performance.now();
  let lastBytes = startBytes;
  let latest = startBytes;
  let rate: number | undefined;
  let trailing: NodeJS.Timeout | undefined;

  const emit = (bytes: number): void => {
    clearTimeout(trailing);
    trailing = undefined;
    const now = performance.now();
    const elapsed = (now - lastAt) / 1000;
    if (elapsed > 0 && bytes > lastBytes) {
      const instant = (bytes - lastBytes) / elapsed;
      // Smoothed, so that MB/s and ETA do not jump with every chunk.
      rate = rate === undefined ? instant : rate * 0.7 + instant * 0.3;
    }
    lastAt = now;
    lastBytes = bytes;
    const progress: DownloadProgress = { bytes };
    if (totalBytes !== undefined) progress.totalBytes = totalBytes;
    if (rate !== undefined && rate > 0) {
      progress.bytesPerSecond = Math.round(rate);
      if (totalBytes !== undefined) progress.etaSeconds = Math.max(0, (totalBytes - bytes) / rate);
    }
    init.onProgress?.(progress);
  };

  return {
    report(bytes: number, force: boolean): void {
      if (init.onProgress === undefined) return;
      latest = bytes;
      const wait = interval - (performance.now() - lastAt);
      if (force || wait <= 0) emit(bytes);
      else trailing ??= setTimeout(() => emit(latest), wait);
    },
    stop(): void {
      clearTimeout(trailing);
      trailing = undefined;
    },
  };
}
