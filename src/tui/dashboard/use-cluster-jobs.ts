/**
 * Polls the cluster's jobs (`GET /v1/cluster/jobs`, which asks every node) while the Jobs view is
 * shown: once on entering it, then every `intervalMs`. The live view pushes this node's jobs; other
 * nodes' jobs are only listed, so a poll is the way to see them. A failed poll keeps the last list
 * and says why.
 */
import { useEffect } from 'react';
import { setTimeout as sleep } from 'node:timers/promises';
import { toRbeeError } from '../../shared/errors.js';
import type { NodeClient } from '../../node/client/index.js';
import type { DashboardAction } from './state.js';

/** Jobs the view lists at most. */
export const JOBS_LISTED = 200;

export interface UseClusterJobsInit {
  client: NodeClient;
  /** True while the Jobs view is shown on a live connection. */
  enabled: boolean;
  dispatch: (action: DashboardAction) => void;
  /** Defaults to 2000 ms. */
  intervalMs?: number;
  /** Defaults to Date.now. */
  now?: () => number;
}

export function useClusterJobs({ client, enabled, dispatch, intervalMs, now }: UseClusterJobsInit): void {
  useEffect(() => {
    if (!enabled) return undefined;
    const controller = new AbortController();
    const { signal } = controller;
    const clock = now ?? Date.now;
    void (async () => {
      while (!signal.aborted) {
        try {
          const { jobs, unanswered } = await client.clusterJobs({ limit: JOBS_LISTED, signal });
          if (!signal.aborted) dispatch({ type: 'cluster-jobs', at: clock(), jobs, unanswered });
        } catch (error) {
          if (signal.aborted) return;
          const e = toRbeeError(error);
          dispatch({ type: 'cluster-jobs', at: clock(), error: `${e.code}: ${e.message}` });
        }
        try {
          await sleep(intervalMs ?? 2_000, undefined, { signal });
        } catch {
          return;
        }
      }
    })();
    return () => controller.abort();
  }, [client, enabled, dispatch, intervalMs, now]);
}
