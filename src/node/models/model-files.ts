/** Small filesystem helpers for the models directory. */
import { createHash } from 'node:crypto';
import { createReadStream, statSync } from 'node:fs';
import { readdir, rmdir, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';

/** The size of a regular file, or undefined when there is none. */
export async function fileSize(path: string): Promise<number | undefined> {
  try {
    const stats = await stat(path);
    return stats.isFile() ? stats.size : undefined;
  } catch {
    return undefined;
  }
}

export async function hashFile(
  path: string,
  signal?: AbortSignal,
): Promise<{ bytes: number; sha256: string }> {
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of createReadStream(path, signal === undefined ? {} : { signal })) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** Whether `path` lies strictly inside `root`. */
export function isInside(root: string, path: string): boolean {
  const rel = relative(resolve(root), resolve(path));
  return rel !== '' && rel !== '..' && !rel.startsWith('../') && !isAbsolute(rel);
}

/** Removes `dir` and its parents while they are empty, stopping at (never removing) `root`. */
export async function pruneEmptyDirs(dir: string, root: string): Promise<void> {
  let current = resolve(dir);
  while (isInside(root, current)) {
    try {
      await rmdir(current);
    } catch {
      return;
    }
    current = dirname(current);
  }
}

/** Every non-directory entry under `dir`, recursively; nothing when it does not exist. */
export async function listFiles(dir: string): Promise<string[]> {
  let entries;
  try {
    entries = await readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const files: string[] = [];
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...(await listFiles(path)));
    else files.push(path);
  }
  return files;
}

/** llama.cpp's split naming: `<name>-00001-of-00003.gguf`. */
const SPLIT_PART = /^(.*-)(\d{5})(-of-(\d{5})\.gguf)$/i;

/**
 * The names of every part when `name` (a file name or path) is the first part of a split GGUF,
 * in order, spelled like `name`; undefined for any other name (including later parts).
 */
export function splitPartNames(name: string): string[] | undefined {
  const match = SPLIT_PART.exec(name);
  if (match === null || Number(match[2]) !== 1) return undefined;
  const [, prefix = '', , suffix = '', countText = ''] = match;
  const count = Number(countText);
  if (!(count >= 1)) return undefined;
  return Array.from({ length: count }, (_, i) => `${prefix}${String(i + 1).padStart(5, '0')}${suffix}`);
}

/** A split part's number and count (`x-00002-of-00003.gguf` → 2, 3); undefined when not a part. */
export function splitPartIndex(name: string): { index: number; count: number } | undefined {
  const match = SPLIT_PART.exec(name);
  if (match === null) return undefined;
  const index = Number(match[2]);
  const count = Number(match[4]);
  return index >= 1 && index <= count ? { index, count } : undefined;
}

/** Every file a model at `path` is made of: all parts for a split GGUF's first part, else `path`. */
export function modelFilePaths(path: string): string[] {
  return splitPartNames(path) ?? [path];
}

/**
 * The bytes of every file of the model at `path`; undefined when any of them is missing. Every job
 * asks this on its way to the first token (a model deleted behind the catalog's back is fetched
 * again): the stat is synchronous, ~5 µs for a local file against ~50 µs of CPU and a thread-pool
 * round trip for the asynchronous one.
 */
export function modelBytesOnDisk(path: string): number | undefined {
  let total = 0;
  for (const part of modelFilePaths(path)) {
    const stats = statSync(part, { throwIfNoEntry: false });
    if (stats?.isFile() !== true) return undefined;
    total += stats.size;
  }
  return total;
}
