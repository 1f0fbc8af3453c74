/**
 * Polls the cluster's jobs and the queen's queue (`GET /v1/cluster/jobs`, which asks every node)
 * while the dashboard is live: once on entering the Jobs view, then every `intervalMs` while it is
 * shown, and every `idleIntervalMs` otherwise (the header counts the cluster's running and queued
 * jobs). The live view pushes this node's jobs; other nodes' jobs are only listed, so a poll is
 * the way to see them. A failed poll keeps the last list and says why.
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
  /** True on a live connection. */
  enabled: boolean;
  /** True while the Jobs view is shown: polls every `intervalMs` instead of every `idleIntervalMs`. */
  shown: boolean;
  dispatch: (action: DashboardAction) => void;
  /** Defaults to 2000 ms. */
  intervalMs?: number;
  /** Defaults to 10 000 ms. */
  idleIntervalMs?: number;
  /** Defaults to Date.now. */
  now?: () => number;
}

export function useClusterJobs({
  client,
  enabled,
  shown,
  dispatch,
  intervalMs,
  idleIntervalMs,
  now,
}: UseClusterJobsInit): void {
  useEffect(() => {
    if (!enabled) return undefined;
    const controller = new AbortController();
    const { signal } = controller;
    const clock = now ?? Date.now;
    void (async () => {
      while (!signal.aborted) {
        try {
          const { jobs, unanswered, queue } = await client.clusterJobs({ limit: JOBS_LISTED, signal });
          if (!signal.aborted) {
            dispatch({ type: 'cluster-jobs', at: clock(), jobs, unanswered, queue: queue ?? [] });
          }
        } catch (error) {
          if (signal.aborted) return;
          const e = toRbeeError(error);
          dispatch({ type: 'cluster-jobs', at: clock(), error: `${e.code}: ${e.message}` });
        }
        try {
          await sleep(shown ? (intervalMs ?? 2_000) : (idleIntervalMs ?? 10_000), undefined, { signal });
        } catch {
          return;
        }
      }
    })();
    return () => controller.abort();
  }, [client, enabled, shown, dispatch, intervalMs, idleIntervalMs, now]);
}
