/**
 * One HTTP request into one file: streamed, hashed while it streams, with throttled progress and a
 * stall timeout. It can continue a file from a byte offset (Range + If-Range) and says, through
 * `failureKind`, whether a failure is worth another attempt. It leaves the file in place on
 * failure; the caller owns cleanup, so there is one place that decides what stays on disk.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { PieceList } from '../store/index.js';
import { createContentHash, type ContentHash } from './content-hash.js';
import { createProgressMeter, createStallTimer, type StallTimer } from './download-meter.js';

export interface DownloadProgress {
  /** Bytes of the file on disk so far (a resumed download starts above zero). */
  bytes: number;
  /** The whole file's size, when the server or a listing says. */
  totalBytes?: number;
  bytesPerSecond?: number;
  etaSeconds?: number;
}

/** What the response headers said, before any byte of the body is written. */
export interface DownloadResponse {
  /** Where the body lands in the file: 0, or the resume offset when the server answered 206. */
  offset: number;
  /** The whole file's size, when known. */
  totalBytes?: number;
  /** A strong ETag, else Last-Modified: what a later request can send as If-Range. */
  validator?: { etag?: string; lastModified?: string };
  /** The server takes byte ranges (it said `Accept-Ranges: bytes` or answered 206) and gave a validator. */
  resumable: boolean;
}

export interface DownloadResume {
  /** Bytes already in the file, all of them good. */
  bytes: number;
  /** sha256 state (and piece hashes) over exactly those bytes. */
  hash: ContentHash;
  /** Sent as If-Range: a server whose file changed answers 200 with the whole new file. */
  validator: { etag?: string; lastModified?: string };
  /** The whole size the earlier response announced; a 206 that disagrees means another file. */
  totalBytes?: number;
}

export interface DownloadInit {
  url: string;
  /** Written from the start, or from `resume.bytes` when the server agrees to resume. */
  path: string;
  fetch: typeof fetch;
  headers?: Record<string, string>;
  /** Fail when no byte arrives for this long (headers included). */
  stallTimeoutMs: number;
  resume?: DownloadResume;
  /** Piece size of the piece list to hash along (see content-hash.ts); none when absent. */
  pieceBytes?: number;
  /** The whole file's size from a trusted listing: a server announcing another size fails at once. */
  expectedBytes?: number;
  /** Runs once the headers are in and before the file is opened; may throw (e.g. DISK_FULL). */
  onResponse?: (response: DownloadResponse) => Promise<void>;
  /** The file is synced to disk at least every this many bytes, then `onDurable` runs. Defaults to 64 MiB. */
  checkpointBytes?: number;
  /** The first `bytes` of the file are on stable storage; also called after a cut and at the end. */
  onDurable?: (bytes: number) => Promise<void>;
  /** Minimum time between progress calls. Defaults to 250 ms (at most ~4 per second). */
  progressIntervalMs?: number;
  onProgress?: (progress: DownloadProgress) => void;
  signal?: AbortSignal;
}

export interface DownloadResult {
  /** The whole file's size. */
  bytes: number;
  /** sha256 of the whole file, including a resumed prefix. */
  sha256: string;
  /** The file's piece list, hashed in the same pass, when a piece size was asked for. */
  pieces?: PieceList;
}

/**
 * - `transient`: the network or the server hiccuped; the bytes so far are good, try again.
 * - `restart`: the server will not continue this file; drop what is there and try again from zero.
 * - `fatal`: trying again will not help (404, a lying server, a full disk, …).
 */
export type FailureKind = 'transient' | 'restart' | 'fatal';

const kinds = new WeakMap<object, FailureKind>();

function mark<E extends RbeeError>(kind: FailureKind, error: E): E {
  kinds.set(error, kind);
  return error;
}

export function failureKind(error: unknown): FailureKind {
  return (typeof error === 'object' && error !== null ? kinds.get(error) : undefined) ?? 'fatal';
}

export async function downloadToFile(init: DownloadInit): Promise<DownloadResult> {
  const { url, signal, resume } = init;
  signal?.throwIfAborted();
  const stall = createStallTimer(init.stallTimeoutMs);
  const requestSignal = signal === undefined ? stall.signal : AbortSignal.any([signal, stall.signal]);
  const fail = (error: unknown, fallback: RbeeError): RbeeError => {
    if (signal?.aborted === true) return toRbeeError(signal.reason);
    if (stall.signal.aborted) {
      return mark(
        'transient',
        new RbeeError('DOWNLOAD_FAILED', `download stalled: no data for ${init.stallTimeoutMs} ms`, {
          cause: error,
          details: { url },
        }),
      );
    }
    return fallback;
  };

  try {
    // Content-Length must count the bytes we store, not a compressed body.
    const headers: Record<string, string> = { 'accept-encoding': 'identity', ...init.headers };
    const ifRange = resume?.validator.etag ?? resume?.validator.lastModified;
    if (resume !== undefined && ifRange !== undefined) {
      headers.range = `bytes=${resume.bytes}-`;
      headers['if-range'] = ifRange;
    }
    let response: Response;
    try {
      response = await init.fetch(url, { signal: requestSignal, redirect: 'follow', headers });
    } catch (error) {
      throw fail(error, mark('transient', networkError(url, error)));
    }
    let start: DownloadResponse;
    try {
      if (!response.ok || response.body === null) throw httpError(url, response.status, resume !== undefined);
      start = readResponse(url, response, init);
      stall.reset();
      await init.onResponse?.(start);
    } catch (error) {
      await response.body?.cancel().catch(() => undefined);
      throw error;
    }
    return await streamBody(init, response.body, start, stall, fail);
  } finally {
    stall.clear();
  }
}

/** Checks what the server answered against what was asked, and where the body goes. */
function readResponse(url: string, response: Response, init: DownloadInit): DownloadResponse {
  const { resume, expectedBytes } = init;
  const etag = response.headers.get('etag');
  const lastModified = response.headers.get('last-modified');
  const validator = {
    ...(etag !== null && !etag.startsWith('W/') ? { etag } : {}),
    ...(lastModified !== null ? { lastModified } : {}),
  };
  const hasValidator = validator.etag !== undefined || validator.lastModified !== undefined;
  const acceptsRanges = /\bbytes\b/i.test(response.headers.get('accept-ranges') ?? '');
  const length = contentLength(response);

  if (response.status === 206) {
    if (resume === undefined) {
      throw mark('fatal', lie(url, 'answered 206 (partial content) to a request for the whole file'));
    }
    const range = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(response.headers.get('content-range') ?? '');
    const [from, to, total] = range === null ? [] : [Number(range[1]), Number(range[2]), Number(range[3])];
    if (from === undefined || to === undefined || total === undefined) {
      throw mark('restart', lie(url, `sent a partial answer without a usable Content-Range`));
    }
    if (expectedBytes !== undefined && total !== expectedBytes) {
      throw mark('fatal', sizeDisagrees(url, total, expectedBytes));
    }
    const sameFile = resume.totalBytes === undefined || resume.totalBytes === total;
    const asked =
      from === resume.bytes && to === total - 1 && (length === undefined || length === to - from + 1);
    if (!sameFile || !asked) {
      throw mark(
        'restart',
        lie(
          url,
          `answered bytes ${from}-${to}/${total} when asked for ${resume.bytes}- of ${resume.totalBytes ?? '?'}`,
        ),
      );
    }
    const sent = { etag: response.headers.get('etag'), lastModified };
    if (resume.validator.etag !== undefined && sent.etag !== null && sent.etag !== resume.validator.etag) {
      throw mark('restart', lie(url, `resumed a file whose ETag changed`));
    }
    return { offset: from, totalBytes: total, validator, resumable: hasValidator };
  }

  if (expectedBytes !== undefined && length !== undefined && length !== expectedBytes) {
    throw mark('fatal', sizeDisagrees(url, length, expectedBytes));
  }
  const totalBytes = length ?? expectedBytes;
  return {
    offset: 0,
    ...(totalBytes === undefined ? {} : { totalBytes }),
    validator,
    resumable: acceptsRanges && hasValidator,
  };
}

async function streamBody(
  init: DownloadInit,
  body: ReadableStream<Uint8Array>,
  start: DownloadResponse,
  stall: StallTimer,
  fail: (error: unknown, fallback: RbeeError) => RbeeError,
): Promise<DownloadResult> {
  const { url } = init;
  const { offset, totalBytes } = start;
  const resumed = offset > 0 && init.resume !== undefined;
  const hash = resumed && init.resume !== undefined ? init.resume.hash : createContentHash(init.pieceBytes);
  const progress = createProgressMeter(init, offset, totalBytes);
  const checkpointBytes = init.checkpointBytes ?? 64 * 1024 * 1024;
  let position = offset;
  let synced = offset;
  let file: FileHandle;
  try {
    file = await open(init.path, resumed ? 'r+' : 'w');
    if (resumed) await file.truncate(offset);
  } catch (error) {
    await body.cancel().catch(() => undefined);
    throw writeError(init.path, error);
  }
  const sync = async (): Promise<void> => {
    // A busy disk can take long to sync; that is not the server going silent.
    stall.clear();
    try {
      // A rename or a resume must never trust blocks that are still only in the page cache.
      await file.datasync();
    } catch (error) {
      throw writeError(init.path, error);
    } finally {
      stall.reset();
    }
    synced = position;
    try {
      await init.onDurable?.(position);
    } catch (error) {
      throw writeError(init.path, error);
    }
  };
  try {
    progress.report(position, true);
    try {
      for await (const chunk of body) {
        stall.reset();
        try {
          await file.write(chunk, 0, chunk.byteLength, position);
        } catch (error) {
          throw writeError(init.path, error);
        }
        hash.update(chunk);
        position += chunk.byteLength;
        progress.report(position, false);
        if (position - synced >= checkpointBytes) await sync();
      }
    } catch (error) {
      const failure =
        error instanceof RbeeError
          ? error
          : fail(error, mark('transient', cutError(url, position, totalBytes, error)));
      // What arrived before the cut is good: record it so that the next attempt resumes there.
      if (failureKind(failure) === 'transient') await sync().catch(() => undefined);
      throw failure;
    }
    if (totalBytes !== undefined && position < totalBytes) {
      await sync().catch(() => undefined);
      throw mark('transient', cutError(url, position, totalBytes));
    }
    if (totalBytes !== undefined && position > totalBytes) {
      throw mark(
        'fatal',
        new RbeeError(
          'DOWNLOAD_FAILED',
          `${url} sent ${position} bytes, more than the ${totalBytes} announced`,
          {
            details: { url, bytes: position, totalBytes },
          },
        ),
      );
    }
    await sync();
    progress.report(position, true);
    return { bytes: position, ...hash.digest() };
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

function httpError(url: string, status: number, resuming: boolean): RbeeError {
  if (status === 404) {
    return new RbeeError('MODEL_NOT_FOUND', `not found: ${url} (HTTP 404)`, { details: { url, status } });
  }
  if (status === 416 && resuming) {
    return mark(
      'restart',
      new RbeeError('DOWNLOAD_FAILED', `${url} refused to resume (HTTP 416)`, { details: { url, status } }),
    );
  }
  const hint = status === 401 || status === 403 ? ' (private or gated? set HF_TOKEN)' : '';
  const error = new RbeeError('DOWNLOAD_FAILED', `download failed: ${url} answered HTTP ${status}${hint}`, {
    details: { url, status },
  });
  // Overload and server errors pass; a refusal (4xx) will be the same next time.
  return status >= 500 || status === 408 || status === 429 ? mark('transient', error) : error;
}

function lie(url: string, what: string): RbeeError {
  return new RbeeError('DOWNLOAD_FAILED', `${url} ${what}`, { details: { url } });
}

function sizeDisagrees(url: string, announced: number, expected: number): RbeeError {
  return new RbeeError(
    'DOWNLOAD_FAILED',
    `${url} announces ${announced} bytes but the repository listing says ${expected}`,
    { details: { url, announced, expected } },
  );
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
