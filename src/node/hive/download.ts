/**
 * One HTTP download into one file: streamed, hashed while it streams, with throttled progress and a
 * stall timeout. It leaves the file in place on failure; the provisioner owns cleanup, so there is
 * one place that decides what stays on disk.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';

export interface DownloadProgress {
  bytes: number;
  /** From Content-Length; absent when the server does not say. */
  totalBytes?: number;
  bytesPerSecond?: number;
  etaSeconds?: number;
}

export interface DownloadInit {
  url: string;
  /** Created or truncated; written from the start. */
  path: string;
  fetch: typeof fetch;
  headers?: Record<string, string>;
  /** Fail when no byte arrives for this long (headers included). */
  stallTimeoutMs: number;
  /** Minimum time between progress calls. Defaults to 250 ms (at most ~4 per second). */
  progressIntervalMs?: number;
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
}

export interface DownloadResult {
  bytes: number;
  sha256: string;
}

export async function downloadToFile(init: DownloadInit): Promise<DownloadResult> {
  const { url, signal } = init;
  signal?.throwIfAborted();
  const stall = createStallTimer(init.stallTimeoutMs);
  const requestSignal = signal === undefined ? stall.signal : AbortSignal.any([signal, stall.signal]);
  const fail = (error: unknown, fallback: RbeeError): RbeeError => {
    if (signal?.aborted === true) return toRbeeError(signal.reason);
    if (stall.signal.aborted) {
      return new RbeeError('DOWNLOAD_FAILED', `download stalled: no data for ${init.stallTimeoutMs} ms`, {
        cause: error,
        details: { url },
      });
    }
    return fallback;
  };

  try {
    let response: Response;
    try {
      response = await init.fetch(url, {
        signal: requestSignal,
        redirect: 'follow',
        // Content-Length must count the bytes we store, not a compressed body.
        headers: { 'accept-encoding': 'identity', ...init.headers },
      });
    } catch (error) {
      throw fail(error, networkError(url, error));
    }
    if (!response.ok || response.body === null) {
      await response.body?.cancel().catch(() => undefined);
      throw httpError(url, response.status);
    }
    const totalBytes = contentLength(response);
    stall.reset();
    return await streamBody(init, response.body, totalBytes, stall, fail);
  } finally {
    stall.clear();
  }
}

async function streamBody(
  init: DownloadInit,
  body: ReadableStream<Uint8Array>,
  totalBytes: number | undefined,
  stall: StallTimer,
  fail: (error: unknown, fallback: RbeeError) => RbeeError,
): Promise<DownloadResult> {
  const { url } = init;
  const hash = createHash('sha256');
  const progress = createProgressMeter(init, totalBytes);
  let bytes = 0;
  let file: FileHandle;
  try {
    file = await open(init.path, 'w');
  } catch (error) {
    await body.cancel().catch(() => undefined);
    throw writeError(init.path, error);
  }
  try {
    progress.report(0, true);
    try {
      for await (const chunk of body) {
        stall.reset();
        try {
          await file.write(chunk);
        } catch (error) {
          throw writeError(init.path, error);
        }
        hash.update(chunk);
        bytes += chunk.byteLength;
        progress.report(bytes, false);
      }
    } catch (error) {
      if (error instanceof RbeeError) throw error;
      throw fail(error, cutError(url, bytes, totalBytes, error));
    }
    if (totalBytes !== undefined && bytes < totalBytes) throw cutError(url, bytes, totalBytes);
    if (totalBytes !== undefined && bytes > totalBytes) {
      throw new RbeeError(
        'DOWNLOAD_FAILED',
        `${url} sent ${bytes} bytes, more than the ${totalBytes} announced`,
        {
          details: { url, bytes, totalBytes },
        },
      );
    }
    try {
      // The rename that follows must not publish a file whose last blocks are still in the page cache.
      await file.datasync();
    } catch (error) {
      throw writeError(init.path, error);
    }
    progress.report(bytes, true);
    return { bytes, sha256: hash.digest('hex') };
  } finally {
    progress.stop();
    await file.close().catch(() => undefined);
  }
}

function contentLength(response: Response): number | undefined {
  const encoding = response.headers.get('content-encoding');
  if (encoding !== null && encoding !== 'identity') return undefined;
  const header = response.headers.get('content-length');
  if (header === null || !/^\d+$/.test(header)) return undefined;
  return Number(header);
}

function httpError(url: string, status: number): RbeeError {
  if (status === 404) {
    return new RbeeError('MODEL_NOT_FOUND', `not found: ${url} (HTTP 404)`, { details: { url, status } });
  }
  const hint = status === 401 || status === 403 ? ' (private or gated? set HF_TOKEN)' : '';
  return new RbeeError('DOWNLOAD_FAILED', `download failed: ${url} answered HTTP ${status}${hint}`, {
    details: { url, status },
  });
}

export function networkError(url: string, error: unknown): RbeeError {
  const cause = (error as { cause?: { code?: unknown; message?: unknown } }).cause;
  const why = typeof cause?.code === 'string' ? cause.code : (error as Error).message;
  return new RbeeError('DOWNLOAD_FAILED', `cannot reach ${url}: ${why}`, { cause: error, details: { url } });
}

function cutError(url: string, bytes: number, totalBytes: number | undefined, cause?: unknown): RbeeError {
  if (totalBytes === undefined) {
    return new RbeeError('DOWNLOAD_FAILED', `download of ${url} broke off after ${bytes} bytes`, {
      cause,
      details: { url, bytes },
    });
  }
  return new RbeeError(
    'DOWNLOAD_TRUNCATED',
    `download of ${url} ended after ${bytes} of ${totalBytes} bytes`,
    { cause, details: { url, bytes, totalBytes } },
  );
}

/** Maps a filesystem error while writing a download: a full disk (or quota) is DISK_FULL. */
export function writeError(path: string, error: unknown): RbeeError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new RbeeError('DISK_FULL', `no space left on the device while writing ${path}`, {
      cause: error,
      details: { path },
    });
  }
  return new RbeeError('DOWNLOAD_FAILED', `cannot write ${path}: ${(error as Error).message}`, {
    cause: error,
    details: { path },
  });
}

interface StallTimer {
  signal: AbortSignal;
  reset(): void;
  clear(): void;
}

function createStallTimer(ms: number): StallTimer {
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
 */
function createProgressMeter(init: DownloadInit, totalBytes: number | undefined) {
  const interval = init.progressIntervalMs ?? 250;
  let lastAt = performance.now();
  let lastBytes = 0;
  let latest = 0;
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
