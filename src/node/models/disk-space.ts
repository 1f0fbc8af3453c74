/** The free-space check made before a download writes its first byte. */
import { statfs } from 'node:fs/promises';
import { RbeeError } from '../../shared/errors.js';
import { mib } from '../../shared/format.js';

/** Bytes an unprivileged writer may still use on the filesystem holding `dir`; undefined when unknown. */
export async function freeDiskBytes(dir: string): Promise<number | undefined> {
  try {
    const stats = await statfs(dir);
    return stats.bavail * stats.bsize;
  } catch {
    return undefined;
  }
}

export interface DiskSpaceCheck {
  /** A directory on the filesystem that will receive the bytes. */
  dir: string;
  /** Bytes about to be written; undefined when the size is unknown (only the reserve is checked). */
  needBytes: number | undefined;
  /** Bytes that must stay free after the download. */
  reserveBytes: number;
}

/** Throws DISK_FULL when `needBytes` would leave less than `reserveBytes` free. */
export async function ensureDiskSpace(check: DiskSpaceCheck): Promise<void> {
  const free = await freeDiskBytes(check.dir);
  // A filesystem that cannot say (statfs unsupported) is not refused; ENOSPC still maps to DISK_FULL.
  if (free === undefined) return;
  const need = check.needBytes ?? 0;
  if (free - need >= check.reserveBytes) return;
  const what = check.needBytes === undefined ? 'a download of unknown size' : `${mib(need)} more`;
  throw new RbeeError(
    'DISK_FULL',
    `not enough disk space in ${check.dir}: ${mib(free)} free, ${what} needed, and ${mib(check.reserveBytes)} must stay free`,
    {
      details: {
        dir: check.dir,
        freeBytes: free,
        needBytes: check.needBytes,
        reserveBytes: check.reserveBytes,
      },
    },
  );
}
