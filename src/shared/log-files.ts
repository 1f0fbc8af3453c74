/**
 * Log files that do not grow without end: a file at or past `maxBytes` becomes `<file>.1` (an older
 * `.1` becomes `.2`, and so on; the one past `keep` is deleted) and writing starts a new one. A node
 * that runs for months keeps its last days of logs, not all of them.
 */
import { existsSync, renameSync, rmSync, statSync } from 'node:fs';

export interface LogRotation {
  /** Defaults to 16 MiB. */
  maxBytes?: number;
  /** Older files kept beside the current one. Defaults to 3. */
  keep?: number;
}

export const LOG_MAX_BYTES = 16 * 1024 * 1024;
export const LOG_KEEP = 3;

/** Rotates `path` when it has reached the limit; true when it did. Never throws: a log is no reason to fail. */
export function rotateIfLarge(path: string, rotation: LogRotation = {}): boolean {
  const maxBytes = rotation.maxBytes ?? LOG_MAX_BYTES;
  const keep = Math.max(1, rotation.keep ?? LOG_KEEP);
  try {
    if (statSync(path).size < maxBytes) return false;
    rmSync(`${path}.${keep}`, { force: true });
    for (let i = keep - 1; i >= 1; i--) {
      if (existsSync(`${path}.${i}`)) renameSync(`${path}.${i}`, `${path}.${i + 1}`);
    }
    renameSync(path, `${path}.1`);
    return true;
  } catch {
    // no file yet, or a directory it may not change: the log goes on as it is
    return false;
  }
}
