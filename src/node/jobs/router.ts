/**
 * Runs each job the entry node accepted on a Hive and relays what the hive emits to the job's
 * subscribers. Placement across the cluster's hives (the queen's scheduler) comes next; until then
 * every job runs on this node's own hive.
 */
import type { Hive } from '../hive/index.js';
import type { JobContext } from './job-manager.js';

export interface RouterInit {
  /** This node's hive. */
  local: Hive;
}

export function createRouter(init: RouterInit): (job: JobContext) => Promise<void> {
  return async function route(job) {
    const hive = init.local;
    job.emit({
      type: 'narration',
      source: 'hive',
      node: hive.name,
      text: `running the job on this hive (${hive.name}), which received it`,
    });
    await hive.run(
      { id: job.id, request: job.request, acceptedAt: job.acceptedAt },
      { signal: job.signal, emit: (event) => job.emit(event) },
    );
  };
}
