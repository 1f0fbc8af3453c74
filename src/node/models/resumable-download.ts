/**
 * One file fetched into its `.partial`, surviving interruptions: a cut download is tried again
 * with backoff, continuing where it stopped (Range + If-Range) when the server allows it, and
 * re-hashing the kept prefix so the sha256 still covers the whole file. The result is checked
 * against the expected size and sha256 when a listing gave them.
 */
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import {
  downloadToFile,
  failureKind,
  type DownloadProgress,
  type DownloadResponse,
  type DownloadResult,
} from './download.js';
import {
  discardPartial,
  loadResumePoint,
  sidecarPathOf,
  writeSidecar,
  type PartialSidecar,
} from './partial-file.js';

export interface RetryInfo {
  /** The attempt about to start (2 for the first retry). */
  attempt: number;
  /** Attempts allowed in all. */
  attempts: number;
  delayMs: number;
  error: RbeeError;
}

export interface FetchFileInit {
  url: string;
  /** The `.partial` file; a resumable one (with its sidecar) is continued. */
  partialPath: string;
  fetch: typeof fetch;
  headers?: Record<string, string>;
  stallTimeoutMs: number;
  /** From a trusted listing: the whole size and the content's sha256. */
  expected?: { bytes?: number; sha256?: string };
  /** Attempts after the first, for failures worth another try; reset whenever a resume gets further. */
  retries: number;
  /** The first retry waits about this long; each next one twice as long, at most 30 s. */
  retryDelayMs: number;
  /** Before any byte is written: `bytesToWrite` is undefined when the size is unknown. May throw. */
  beforeWrite?: (bytesToWrite: number | undefined) => Promise<void>;
  onProgress?: (progress: DownloadProgress) => void;
  onRetry?: (info: RetryInfo) => void;
  checkpointBytes?: number;
  /** Piece size of the piece list hashed along with the file (see content-hash.ts). */
  pieceBytes?: number;
  signal: AbortSignal;
}

export async function fetchFile(init: FetchFileInit): Promise<DownloadResult> {
  const { url, partialPath, signal } = init;
  const attempts = init.retries + 1;
  let failures = 0;
  let furthest = 0;
  for (let attempt = 1; ; attempt++) {
    signal.throwIfAborted();
    let result: DownloadResult;
    let reached = 0;
    try {
      const point = await loadResumePoint(partialPath, url, signal, init.pieceBytes);
      const whole = init.expected?.bytes ?? point?.sidecar.totalBytes;
      if (point !== undefined && whole !== undefined && point.bytes === whole) {
        // An earlier run finished this file (a part of a split model whose sibling failed).
        result = { bytes: point.bytes, ...point.hash.digest() };
        if (init.expected?.sha256 !== undefined && result.sha256 !== init.expected.sha256) {
          // Not what the listing says now (the repo changed since, or the bytes rotted): fetch anew.
          await discardPartial(partialPath);
          attempt--;
          continue;
        }
      } else {
        let sidecar: PartialSidecar | undefined;
        result = await downloadToFile({
          url,
          path: partialPath,
          fetch: init.fetch,
          ...(init.headers === undefined ? {} : { headers: init.headers }),
          stallTimeoutMs: init.stallTimeoutMs,
          ...(init.expected?.bytes === undefined ? {} : { expectedBytes: init.expected.bytes }),
          ...(point === undefined
            ? {}
            : {
                resume: {
                  bytes: point.bytes,
                  hash: point.hash,
                  validator: { etag: point.sidecar.etag, lastModified: point.sidecar.lastModified },
                  ...(point.sidecar.totalBytes === undefined ? {} : { totalBytes: point.sidecar.totalBytes }),
                },
              }),
          ...(init.checkpointBytes === undefined ? {} : { checkpointBytes: init.checkpointBytes }),
          ...(init.pieceBytes === undefined ? {} : { pieceBytes: init.pieceBytes }),
          onResponse: async (response) => {
            const rest =
              response.totalBytes === undefined ? undefined : response.totalBytes - response.offset;
            await init.beforeWrite?.(rest);
            sidecar = await recordResponse(partialPath, url, response);
          },
          onDurable: async (bytes) => {
            if (sidecar !== undefined) {
              reached = bytes;
              sidecar = { ...sidecar, durableBytes: bytes, updatedAt: Date.now() };
              await writeSidecar(partialPath, sidecar);
            }
          },
          ...(init.onProgress === undefined ? {} : { onProgress: init.onProgress }),
          signal,
        });
      }
    } catch (error) {
      if (signal.aborted) throw toRbeeError(signal.reason);
      const failure = toRbeeError(error, 'DOWNLOAD_FAILED');
      const kind = failureKind(error);
      if (kind === 'restart') await discardPartial(partialPath);
      if (kind === 'fatal') throw failure;
      // A flaky link that still makes headway may take as many attempts as it needs.
      if (reached > furthest) {
        furthest = reached;
        failures = 0;
      }
      failures++;
      if (failures > init.retries) throw failure;
      const delayMs = backoff(init.retryDelayMs, failures);
      init.onRetry?.({ attempt: attempt + 1, attempts, delayMs, error: failure });
      try {
        await sleep(delayMs, undefined, { signal });
      } catch {
        throw toRbeeError(signal.reason);
      }
      continue;
    }
    verify(url, result, init.expected);
    return result;
  }
}

/** Keeps a sidecar only for a server that can resume, written before the first byte of the body. */
async function recordResponse(
  partialPath: string,
  url: string,
  response: DownloadResponse,
): Promise<PartialSidecar | undefined> {
  if (!response.resumable) {
    await rm(sidecarPathOf(partialPath), { force: true });
    return undefined;
  }
  const sidecar: PartialSidecar = {
    version: 1,
    url,
    ...(response.totalBytes === undefined ? {} : { totalBytes: response.totalBytes }),
    ...(response.validator?.etag === undefined ? {} : { etag: response.validator.etag }),
    ...(response.validator?.lastModified === undefined
      ? {}
      : { lastModified: response.validator.lastModified }),
    durableBytes: response.offset,
    updatedAt: Date.now(),
  };
  await writeSidecar(partialPath, sidecar);
  return sidecar;
}

function verify(url: string, result: DownloadResult, expected: FetchFileInit['expected']): void {
  if (expected?.bytes !== undefined && result.bytes !== expected.bytes) {
    throw new RbeeError(
      'DOWNLOAD_FAILED',
      `${url} gave ${result.bytes} bytes but the repository listing says ${expected.bytes}`,
      { details: { url, bytes: result.bytes, expected: expected.bytes } },
    );
  }
  if (expected?.sha256 !== undefined && result.sha256 !== expected.sha256) {
    throw new RbeeError(
      'CHECKSUM_MISMATCH',
      `${url}: sha256 ${result.sha256} is not the ${expected.sha256} the repository lists`,
      { details: { url, sha256: result.sha256, expected: expected.sha256 } },
    );
  }
}

function backoff(baseMs: number, failures: number): number {
  const exponential = Math.min(30_000, baseMs * 2 ** (failures - 1));
  // Jitter, so that nodes cut off together do not come back in lockstep.
  return Math.round(exponential * (0.8 + Math.random() * 0.4));
}
