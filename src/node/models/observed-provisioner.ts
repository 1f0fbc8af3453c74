/**
 * A provisioner that reports what it fetches: bytes as they arrive and each fetch's outcome (for
 * metrics), and every change of its downloads and catalog (for the live view).
 */
import type { Provisioner } from './provisioner.js';

export interface ProvisionObserver {
  /** Bytes that arrived since the previous progress report of one fetch. */
  bytes(delta: number): void;
  /** A fetch (download or generation) ended, and how long it took. */
  finished(outcome: 'done' | 'failed', seconds: number): void;
  /** Downloads or the catalog may have changed. */
  changed(section: 'downloads' | 'models'): void;
}

export function observeProvisioner(
  base: Provisioner,
  observer: () => ProvisionObserver | undefined,
): Provisioner {
  return {
    ...base,
    ensure: async (ref, options = {}) => {
      const started = Date.now();
      let lastBytes = 0;
      let fetched = false;
      const seconds = (): number => (Date.now() - started) / 1000;
      try {
        const result = await base.ensure(ref, {
          ...options,
          onProgress: (p) => {
            options.onProgress?.(p);
            if (p.phase === 'downloading') {
              fetched = true;
              // A resumed or retried download may report fewer bytes than before: count only growth.
              observer()?.bytes(Math.max(0, p.bytes - lastBytes));
              lastBytes = Math.max(lastBytes, p.bytes);
            }
            observer()?.changed('downloads');
          },
        });
        if (fetched) observer()?.finished('done', seconds());
        return result;
      } catch (error) {
        if (fetched) observer()?.finished('failed', seconds());
        throw error;
      } finally {
        observer()?.changed('downloads');
        observer()?.changed('models');
      }
    },
  };
}
