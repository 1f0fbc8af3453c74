import type { FastifyReply } from 'fastify';
import { RbeeError } from '../../shared/errors.js';
import type { JobEvent, JobRequest } from '../../shared/wire.js';
import type { JobManager } from '../jobs/index.js';
import { releaseWhenDone } from './key-limits.js';

/** A job's events, from its first to its end, for a reader that goes at its own pace. */
export interface JobFollower extends AsyncIterable<JobEvent> {
  /** Unsubscribes and ends the iteration (the reader went away). */
  stop(): void;
  /** Whether the job's last event (`done` or `error`) has been read. */
  readonly ended: boolean;
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
  let ended = false;
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
    get ended() {
      return ended;
    },
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
          if (event.type === 'done' || event.type === 'error') ended = true;
          yield event;
          if (ended) return;
        }
      } finally {
        stop();
      }
    },
  };
}

/**
 * A job an API route runs for its client: submitted under the client's name, its slot of the key's
 * limits (`release`) given back when the job ends, and followed. A client that goes away (or is
 * dropped) before the job's end cancels it, as Ctrl-C does for `rbee infer`; `leave` does the same
 * for a route that stops reading. A submit that throws gives the slot back and rethrows.
 */
export function submitFollowed(
  jobs: JobManager,
  job: JobRequest,
  owner: string | undefined,
  reply: FastifyReply,
  release: () => void,
): { id: string; events: JobFollower; leave: () => void } {
  let id: string;
  try {
    ({ id } = jobs.submit(job, { owner }));
  } catch (error) {
    release();
    throw error;
  }
  releaseWhenDone(jobs, id, release);
  const events = followJob(jobs, id);
  let left = false;
  const leave = (): void => {
    events.stop();
    if (events.ended || left) return;
    left = true;
    jobs.cancel(id);
  };
  reply.raw.once('close', leave);
  return { id, events, leave };
}

/**
 * Embeds texts as a job of the client's (queued and placed like any other, in the jobs table and
 * /metrics, cancelled when the client leaves): its vectors and prompt tokens, or its error thrown.
 */
export async function embedAsJob(
  jobs: JobManager,
  request: { model: string; texts: string[]; keepAlive?: number | string | undefined },
  owner: string | undefined,
  reply: FastifyReply,
  release: () => void,
): Promise<{ embeddings: number[][]; promptTokens: number; loadMs: number }> {
  const job: JobRequest = {
    model: request.model,
    embed: request.texts,
    ...(request.keepAlive === undefined ? {} : { keepAlive: request.keepAlive }),
  };
  const { events } = submitFollowed(jobs, job, owner, reply, release);
  for await (const event of events) {
    if (event.type === 'error') throw RbeeError.fromJSON(event.error);
    if (event.type === 'done') {
      return {
        embeddings: event.embeddings ?? [],
        promptTokens: event.usage.promptTokens,
        loadMs: event.timings.loadMs ?? 0,
      };
    }
  }
  throw new RbeeError('JOB_CANCELLED', 'the client left before the embeddings were ready');
}

/**
 * Ranks documents for a query as a job of the client's, as embedAsJob embeds: each document's
 * score (in the documents' order) and the prompt tokens of all pairs, or its error thrown.
 */
export async function rankAsJob(
  jobs: JobManager,
  request: { model: string; query: string; documents: string[]; keepAlive?: number | string | undefined },
  owner: string | undefined,
  reply: FastifyReply,
  release: () => void,
): Promise<{ scores: number[]; promptTokens: number }> {
  const job: JobRequest = {
    model: request.model,
    rank: { query: request.query, documents: request.documents },
    ...(request.keepAlive === undefined ? {} : { keepAlive: request.keepAlive }),
  };
  const { events } = submitFollowed(jobs, job, owner, reply, release);
  for await (const event of events) {
    if (event.type === 'error') throw RbeeError.fromJSON(event.error);
    if (event.type === 'done') return { scores: event.scores ?? [], promptTokens: event.usage.promptTokens };
  }
  throw new RbeeError('JOB_CANCELLED', 'the client left before the scores were ready');
}
