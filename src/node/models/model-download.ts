/**
 * A model downloaded into the models directory: one file, or every part of a split GGUF. Each file
 * is written as a `.partial` (see partial-file.ts for when one is kept), the set is validated, and
 * only then renamed into place: later parts first, the first part last, so a first part on disk
 * always means a whole model.
 */
import { mkdir, open, rename, rm } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { readModelInfo, type ModelInfo } from '../../engine/index.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { PieceList } from '../store/index.js';
import { ensureDiskSpace } from './disk-space.js';
import { failureKind, writeError } from './download.js';
import { fileSize, pruneEmptyDirs } from './model-files.js';
import { discardPartial, partialPathOf, readSidecar, sidecarPathOf } from './partial-file.js';
import { fetchFile } from './resumable-download.js';
import type { ProvisionProgress } from './shared-tasks.js';

export interface ModelFile {
  url: string;
  finalPath: string;
  /** From the repository listing, when it gives them. */
  bytes?: number;
  sha256?: string;
}

export interface DownloadModelInit {
  /** The model's files; the first is the one a worker loads (and the catalog records). */
  files: readonly ModelFile[];
  modelsDir: string;
  fetch: typeof fetch;
  headers?: Record<string, string>;
  stallTimeoutMs: number;
  retries: number;
  retryDelayMs: number;
  /** Bytes that must stay free on the disk after the download. */
  reserveBytes: number;
  /** Partials being written: added while this runs, so that a sweep leaves them alone. */
  busy: Set<string>;
  /** Piece size of the piece list hashed along with a model of one file (see content-hash.ts). */
  pieceBytes?: number;
  emit: (progress: ProvisionProgress) => void;
  signal: AbortSignal;
}

export interface DownloadedModel {
  /** All files together. */
  bytes: number;
  /** sha256 of the first file. */
  sha256: string;
  /** The piece list of a model of one file, when a piece size was asked for. */
  pieces?: PieceList;
  info: ModelInfo;
}

export async function downloadModel(init: DownloadModelInit): Promise<DownloadedModel> {
  const { files, signal, emit } = init;
  const partials = files.map((f) => partialPathOf(f.finalPath));
  for (const partial of partials) init.busy.add(partial);
  const placed: string[] = [];
  try {
    for (const file of files) await mkdir(dirname(file.finalPath), { recursive: true });
    const sizes = files.map((f) => f.bytes);
    const total = sizes.every((b) => b !== undefined) ? sizes.reduce((a, b) => a + b, 0) : undefined;
    const stillToWrite = async (from: number): Promise<number> => {
      let sum = 0;
      for (let i = from; i < files.length; i++) {
        sum += Math.max(0, (files[i]?.bytes ?? 0) - ((await fileSize(partials[i] ?? '')) ?? 0));
      }
      return sum;
    };
    const dir = dirname(partials[0] ?? init.modelsDir);
    // Refuse before the first request when the listing says how much is coming.
    if (total !== undefined) {
      await ensureDiskSpace({ dir, needBytes: await stillToWrite(0), reserveBytes: init.reserveBytes });
    }

    let done = 0;
    const hashes: string[] = [];
    let pieces: PieceList | undefined;
    for (const [i, file] of files.entries()) {
      const partialPath = partials[i] ?? '';
      const name = basename(file.finalPath);
      const later = await stillToWrite(i + 1);
      const result = await fetchFile({
        url: file.url,
        partialPath,
        fetch: init.fetch,
        ...(init.headers === undefined ? {} : { headers: init.headers }),
        stallTimeoutMs: init.stallTimeoutMs,
        expected: {
          ...(file.bytes === undefined ? {} : { bytes: file.bytes }),
          ...(file.sha256 === undefined ? {} : { sha256: file.sha256 }),
        },
        retries: init.retries,
        retryDelayMs: init.retryDelayMs,
        // a split model is not shared between hives: no piece list for its parts
        ...(init.pieceBytes === undefined || files.length > 1 ? {} : { pieceBytes: init.pieceBytes }),
        beforeWrite: (rest) =>
          ensureDiskSpace({
            dir,
            needBytes: rest === undefined ? undefined : rest + later,
            reserveBytes: init.reserveBytes,
          }),
        onProgress: (p) => {
          const bytes = done + p.bytes;
          const whole = total ?? (files.length === 1 ? p.totalBytes : undefined);
          emit({
            phase: 'downloading',
            bytes,
            ...(whole === undefined ? {} : { totalBytes: whole }),
            ...(p.bytesPerSecond === undefined ? {} : { bytesPerSecond: p.bytesPerSecond }),
            ...(p.bytesPerSecond !== undefined && whole !== undefined
              ? { etaSeconds: Math.max(0, (whole - bytes) / p.bytesPerSecond) }
              : {}),
            file: name,
          });
        },
        onRetry: (r) =>
          emit({
            phase: 'retrying',
            bytes: done,
            ...(total === undefined ? {} : { totalBytes: total }),
            file: name,
            message:
              `download of ${name} interrupted (${r.error.message}); ` +
              `attempt ${r.attempt} of ${r.attempts} in ${(r.delayMs / 1000).toFixed(1)} s`,
          }),
        signal,
      });
      done += result.bytes;
      hashes.push(result.sha256);
      pieces ??= result.pieces;
    }

    emit({ phase: 'verifying', bytes: done, totalBytes: done, file: basename(files[0]?.finalPath ?? '') });
    // Part 1 holds the metadata and is checked in full (header, tensors fit the file); later parts
    // were checked against the listing's sizes and sha256 where given, and must at least be GGUF.
    const info = await readModelInfo(partials[0] ?? '', { signal });
    for (const partial of partials.slice(1)) await expectGgufMagic(partial);
    signal.throwIfAborted();
    for (let i = files.length - 1; i >= 0; i--) {
      const finalPath = files[i]?.finalPath ?? '';
      await rename(partials[i] ?? '', finalPath);
      placed.push(finalPath);
      await rm(sidecarPathOf(partials[i] ?? ''), { force: true });
    }
    return { bytes: done, sha256: hashes[0] ?? '', ...(pieces === undefined ? {} : { pieces }), info };
  } catch (error) {
    // Resumable bytes are kept only after a transient failure; anything else leaves nothing.
    const keep = !signal.aborted && failureKind(error) === 'transient' && placed.length === 0;
    for (const partial of partials) {
      if (keep && (await readSidecar(partial)) !== undefined) continue;
      await discardPartial(partial);
    }
    for (const path of placed) await rm(path, { force: true });
    for (const file of files) await pruneEmptyDirs(dirname(file.finalPath), init.modelsDir);
    if (signal.aborted) throw toRbeeError(signal.reason);
    if (error instanceof RbeeError) throw error;
    throw writeError(partials[0] ?? '', error);
  } finally {
    for (const partial of partials) init.busy.delete(partial);
  }
}

async function expectGgufMagic(path: string): Promise<void> {
  const file = await open(path, 'r');
  try {
    const { bytesRead, buffer } = await file.read(Buffer.alloc(4), 0, 4, 0);
    if (bytesRead === 4 && buffer.toString('latin1') === 'GGUF') return;
  } finally {
    await file.close();
  }
  throw new RbeeError('MODEL_INVALID', `${path} is not a GGUF file (a split part without the GGUF magic)`, {
    details: { path },
  });
}
