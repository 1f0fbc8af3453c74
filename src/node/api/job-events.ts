import type { JobEvent } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';

/** A job's events, from its first to its end, for a reader that goes at its own pace. */
export interface JobFollower extends AsyncIterable<JobEvent> {
  /** Unsubscribes and ends the iteration (the reader went away). */
  stop(): void;
}

/**
 * Subscribes to a job now (an unknown id throws JOB_NOT_FOUND here, before any response starts).
 * Waiting events are references to the job's own history, so a reader that is behind costs an
 * array slot per event, not another copy of it.
 */
export function followJob(jobs: JobManager, id: string): JobFollower {
  // read from `next` on; emptied whenever the reader catches up (no O(n) shift per event)
  const queue: Array<JobEvent | undefined> = [];
  let next = 0;
  let wake: (() => void) | undefined;
  let stopped = false;
  const unsubscribe = jobs.subscribe(id, (event) => {
    queue.push(event);
    wake?.();
  });
  const stop = (): void => {
    stopped = true;
    unsubscribe();
    wake?.();
  };
  return {
    stop,
    async *[Symbol.asyncIterator]() {
      try {
        while (!stopped) {
          if (next === queue.length) {
            queue.length = 0;
            next = 0;
            await new Promise<void>((resolve) => (wake = resolve));
            wake = undefined;
            continue;
          }
          const event = queue[next] as JobEvent;
          queue[next++] = undefined; // let go of what was read
          yield event;
          if (event.type === 'done' || event.type === 'error') return;
        }
      } finally {
        stop();
      }
    },
  };
}
