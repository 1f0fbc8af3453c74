/**
 * A job is its owner's (the API key that submitted it, or the machine's own user): another key
 * gets JOB_NOT_FOUND, the same answer as for an id that never existed, so ids do not leak; its
 * list and its live view leave the job out. The machine's own user (a client on it without a key)
 * sees every job, as it can read the node's log anyway.
 */
import { RbeeError } from '../../shared/errors.js';
import type { NodeEvent } from '../../shared/view.js';
import type { JobManager, JobSnapshot } from '../jobs/index.js';
import { LOCAL_OWNER, type ApiClient } from './auth.js';

export function seesJob(client: ApiClient, owner: string | undefined): boolean {
  return client.owner === LOCAL_OWNER || client.owner === owner;
}

export interface JobAccess {
  /** The job, or JOB_NOT_FOUND when there is none or it is another client's. */
  get(client: ApiClient, id: string): JobSnapshot;
  list(client: ApiClient): JobSnapshot[];
  /** The live view as this client may see it: other clients' jobs and their narration left out. */
  view(client: ApiClient, event: NodeEvent): NodeEvent | undefined;
}

export function createJobAccess(jobs: JobManager): JobAccess {
  const visible = (client: ApiClient, id: string): boolean => {
    try {
      return seesJob(client, jobs.get(id).owner);
    } catch {
      return client.owner === LOCAL_OWNER; // gone already: only the machine's user saw it anyway
    }
  };
  return {
    get(client, id) {
      const job = jobs.get(id);
      if (!seesJob(client, job.owner)) throw new RbeeError('JOB_NOT_FOUND', `no job with id ${id}`);
      return job;
    },
    list: (client) => jobs.list().filter((job) => seesJob(client, job.owner)),
    view(client, event) {
      if (client.owner === LOCAL_OWNER) return event;
      switch (event.type) {
        case 'snapshot':
          return {
            ...event,
            view: { ...event.view, jobs: event.view.jobs.filter((j) => visible(client, j.id)) },
          };
        case 'jobs':
          return { ...event, jobs: event.jobs.filter((j) => visible(client, j.id)) };
        case 'narration':
          // '-' marks the node's own narration (workers, the cluster), which is not a job's
          return event.jobId === '-' || visible(client, event.jobId) ? event : undefined;
        default:
          return event;
      }
    },
  };
}
