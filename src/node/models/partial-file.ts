/**
 * Partial downloads and their sidecars. A download writes `<file>.partial`; when the server can
 * resume (byte ranges plus an ETag or Last-Modified), a sidecar `<file>.partial.json` records the
 * URL, the validator, the whole size and how many bytes are known to be on stable storage. A
 * partial is only ever resumed through its sidecar, and is never renamed into place before it is
 * whole and verified, so no half-written file is used or catalogued.
 *
 * When a partial is kept (see model-download.ts): after a transient failure (cut, stall, 5xx,
 * unreachable) once the retries are spent, and when the process dies mid-download, provided the
 * server can resume. It is deleted on cancel, a checksum or size mismatch, an invalid file, a full
 * disk, a refusal (4xx), by `sweepPartials` when it has no valid sidecar or is older than the
 * maximum age, and whenever a resume turns out impossible.
 */
import { createReadStream } from 'node:fs';
import { readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { z } from 'zod';
import { toRbeeError } from '../../shared/errors.js';
import { createContentHash, type ContentHash } from './content-hash.js';
import { fileSize, listFiles, pruneEmptyDirs } from './model-files.js';

export const PARTIAL_SUFFIX = '.partial';
export const SIDECAR_SUFFIX = '.partial.json';

export const partialPathOf = (finalPath: string): string => `${finalPath}${PARTIAL_SUFFIX}`;
export const sidecarPathOf = (partialPath: string): string => `${partialPath}.json`;

const sidecarSchema = z.object({
  version: z.literal(1),
  url: z.string(),
  /** The whole file's size, when the server said. */
  totalBytes: z.number().int().nonnegative().optional(),
  etag: z.string().optional(),
  lastModified: z.string().optional(),
  /**
   * Bytes of the partial known to be synced to disk. After a power loss the file may hold more
   * (unsynced, possibly garbage) bytes; a resume drops everything past this point.
   */
  durableBytes: z.number().int().nonnegative(),
  updatedAt: z.number(),
  /**
   * A model fetched from several hives at once in pieces (peer-pieces.ts): the piece size and the
   * pieces past `durableBytes` that are whole, checked and synced too, by index.
   */
  pieceBytes: z.number().int().positive().optional(),
  pieces: z.array(z.number().int().nonnegative()).optional(),
});

export type PartialSidecar = z.infer<typeof sidecarSchema>;

export async function readSidecar(partialPath: string): Promise<PartialSidecar | undefined> {
  try {
    const parsed = sidecarSchema.safeParse(JSON.parse(await readFile(sidecarPathOf(partialPath), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export async function writeSidecar(partialPath: string, sidecar: PartialSidecar): Promise<void> {
  // A torn write (power loss) leaves JSON that does not parse, which discards the partial: safe.
  await writeFile(sidecarPathOf(partialPath), `${JSON.stringify(sidecar)}\n`);
}

export async function discardPartial(partialPath: string): Promise<void> {
  await rm(partialPath, { force: true });
  await rm(sidecarPathOf(partialPath), { force: true });
}

export interface ResumePoint {
  /** Good bytes at the start of the partial; the file has been truncated to exactly this. */
  bytes: number;
  /** sha256 state (and piece hashes) over those bytes, so that the final hash still covers the whole file. */
  hash: ContentHash;
  sidecar: PartialSidecar;
}

/**
 * Where a download of `url` into `partialPath` can continue, re-hashing the kept prefix. For a
 * partial that cannot be resumed (no sidecar, another URL, no validator, longer than the whole
 * file) the answer is undefined: start from zero.
 */
export async function loadResumePoint(
  partialPath: string,
  url: string,
  signal?: AbortSignal,
  /** Piece size of the piece list to hash along with the prefix (see content-hash.ts). */
  pieceBytes?: number,
): Promise<ResumePoint | undefined> {
  const sidecar = await readSidecar(partialPath);
  const size = await fileSize(partialPath);
  const usable =
    sidecar !== undefined &&
    size !== undefined &&
    sidecar.url === url &&
    (sidecar.etag !== undefined || sidecar.lastModified !== undefined) &&
    (sidecar.totalBytes === undefined || Math.min(size, sidecar.durableBytes) <= sidecar.totalBytes);
  if (!usable) {
    // The download starts from zero and truncates the partial when it opens it; should it fail
    // before that, the caller's cleanup removes the partial (it has no sidecar).
    await rm(sidecarPathOf(partialPath), { force: true });
    return undefined;
  }
  const bytes = Math.min(size, sidecar.durableBytes);
  // Nothing good to keep: a plain request is simpler than a range from zero.
  if (bytes === 0) return undefined;
  if (size > bytes) await truncate(partialPath, bytes);
  const hash = createContentHash(pieceBytes);
  try {
    const stream = createReadStream(partialPath, {
      end: bytes - 1,
      ...(signal === undefined ? {} : { signal }),
    });
    for await (const chunk of stream) hash.update(chunk as Buffer);
  } catch {
    if (signal?.aborted === true) throw toRbeeError(signal.reason);
    await discardPartial(partialPath);
    return undefined;
  }
  return { bytes, hash, sidecar };
}

export interface SweepOptions {
  /** Partials being written now, by path: never touched. */
  busy: (partialPath: string) => boolean;
  /** A kept partial older than this (by modification time) is deleted. */
  maxAgeMs: number;
  now: number;
  signal?: AbortSignal;
}

export interface SweepReport {
  /** Partials (and sidecars without a partial) deleted. */
  removed: string[];
  /** Resumable partials left for a later download. */
  kept: string[];
}

/** Run at startup: clears partials nobody can resume and those too old to be worth it. */
export async function sweepPartials(modelsDir: string, options: SweepOptions): Promise<SweepReport> {
  const removed: string[] = [];
  const kept: string[] = [];
  const files = await listFiles(modelsDir);
  const present = new Set(files);
  for (const path of files) {
    options.signal?.throwIfAborted();
    if (path.endsWith(SIDECAR_SUFFIX)) {
      const partial = path.slice(0, -'.json'.length);
      if (present.has(partial) || options.busy(partial)) continue;
      await rm(path, { force: true });
      removed.push(path);
    } else if (path.endsWith(PARTIAL_SUFFIX)) {
      if (options.busy(path) || options.busy(path.slice(0, -PARTIAL_SUFFIX.length))) continue;
      if (await resumable(path, options)) {
        kept.push(path);
        continue;
      }
      await discardPartial(path);
      removed.push(path);
    } else {
      continue;
    }
    await pruneEmptyDirs(dirname(path), modelsDir);
  }
  return { removed, kept };
}

async function resumable(partialPath: string, options: SweepOptions): Promise<boolean> {
  const sidecar = await readSidecar(partialPath);
  if (sidecar === undefined) return false;
  try {
    return options.now - (await stat(partialPath)).mtimeMs <= options.maxAgeMs;
  } catch {
    return false;
  }
}
