/**
 * Jobs in flight and recently finished: each keeps its whole event history, so a client that
 * subscribes late (or reconnects) sees every event from the first, then live ones.
 *
 * Finished jobs are kept for `retainMs`, but never more than `maxFinishedJobs` of them nor more
 * than `maxRetainedBytes` of history in all: a burst of jobs (or one client submitting in a loop)
 * must not grow the node without bound. The oldest finished job goes first; running jobs stay.
 */
import { randomUUID } from 'node:crypto';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { JobEvent, JobEventInput, JobRequest } from '../../shared/wire.js';

export type JobState = 'running' | 'done' | 'failed' | 'cancelled';

export interface JobContext {
  id: string;
  request: JobRequest;
  acceptedAt: number;
  signal: AbortSignal;
  emit(event: JobEventInput): void;
  /** The job has its place (or its turn in the queen's queue): see `submit`'s `admitted`. */
  admit(): void;
}

export interface JobSnapshot {
  id: string;
  /** Who submitted it (the API's client: an API key, or the machine's own user); see SubmitOptions. */
  owner: string | undefined;
  model: string;
  state: JobState;
  acceptedAt: number;
  finishedAt: number | undefined;
  events: number;
  timeToFirstTokenMs: number | undefined;
  tokensPerSecond: number | undefined;
  completionTokens: number | undefined;
  /** `CODE: message` of a failed or cancelled job. */
  error: string | undefined;
}

export interface JobManagerInit {
  /** Runs one job to its end; emits its events. A throw becomes the job's `error` event. */
  run: (job: JobContext) => Promise<void>;
  /** How long a finished job stays readable. Defaults to 10 minutes. */
  retainMs?: number;
  /** Finished jobs kept at most (the oldest go first). Defaults to 1000. */
  maxFinishedJobs?: number;
  /**
   * Bytes of event history kept over all jobs (see `eventBytes`); finished jobs are dropped, oldest
   * first, to stay under it. Defaults to 64 MiB.
   */
  maxRetainedBytes?: number;
  now?: () => number;
  /** Called when a job starts or ends. */
  onChange?: () => void;
  /** Called once for each job accepted, before any of its events (the jobs table records it). */
  onAccepted?: (job: {
    id: string;
    request: JobRequest;
    acceptedAt: number;
    owner: string | undefined;
  }) => void;
  /** Every event of every job, after the job's own subscribers. */
  onEvent?: (event: JobEvent) => void;
}

export interface SubmitOptions {
  /** Who may see and cancel the job; the API decides what the string means. */
  owner?: string;
}

interface Job {
  id: string;
  owner: string | undefined;
  request: JobRequest;
  acceptedAt: number;
  finishedAt: number | undefined;
  state: JobState;
  events: JobEvent[];
  /** `eventBytes` of every event in `events`. */
  bytes: number;
  listeners: Set<(event: JobEvent) => void>;
  controller: AbortController;
  finished: Promise<void>;
}

export interface Submitted {
  id: string;
  /**
   * Settles once the job is admitted (placed, or waiting in the queen's queue) with undefined, or
   * with the error that ended it before then (a full queue, an impossible model): what an API that
   * answers after admission reports as its status. Never rejects.
   */
  admitted: Promise<RbeeError | undefined>;
}

export interface JobManager {
  submit(request: JobRequest, options?: SubmitOptions): Submitted;
  /** Replays the job's events so far, then calls `listener` with each new one. Returns an unsubscribe. */
  subscribe(id: string, listener: (event: JobEvent) => void): () => void;
  cancel(id: string): void;
  get(id: string): JobSnapshot;
  list(): JobSnapshot[];
  /** Cancels every running job and waits until each has ended. */
  close(): Promise<void>;
  /** What the manager holds now. */
  retained(): { running: number; finished: number; bytes: number };
}

export const DEFAULT_MAX_FINISHED_JOBS = 1000;
export const DEFAULT_MAX_RETAINED_BYTES = 64 * 2 ** 20;

/** A V8 object with these fields, its number and its id reference, before any text. */
const EVENT_OVERHEAD_BYTES = 128;

/**
 * What an event costs in memory, near enough to bound it: a fixed overhead plus two bytes per
 * character of its text. Tokens are nearly every event and are counted without serialising them
 * (but for the log probabilities of a job that asked for them); the rare others (narration, done,
 * error) by their JSON.
 */
export function eventBytes(event: JobEvent): number {
  if (event.type !== 'token') return EVENT_OVERHEAD_BYTES + 2 * JSON.stringify(event).length;
  const logprobs = event.logprobs === undefined ? 0 : 2 * JSON.stringify(event.logprobs).length;
  return EVENT_OVERHEAD_BYTES + 2 * event.text.length + logprobs;
}

export function createJobManager(init: JobManagerInit): JobManager {
  const now = init.now ?? Date.now;
  const retainMs = init.retainMs ?? 10 * 60_000;
  const maxFinished = init.maxFinishedJobs ?? DEFAULT_MAX_FINISHED_JOBS;
  const maxBytes = init.maxRetainedBytes ?? DEFAULT_MAX_RETAINED_BYTES;
  const jobs = new Map<string, Job>();
  // In the order they finished, so the head is the oldest and the first to expire; a moving head
  // makes dropping it O(1), and the array is compacted once most of it is dropped slots.
  const finished: Array<Job | undefined> = [];
  let head = 0;
  let retainedBytes = 0;
  let expiry: NodeJS.Timeout | undefined;
  let closed = false;

  /** Drops finished jobs that expired or that the count and byte bounds have no room for. */
  const sweep = (): void => {
    let dropped = false;
    for (let job = finished[head]; job !== undefined; job = finished[head]) {
      const expired = (job.finishedAt ?? 0) + retainMs <= now();
      if (!expired && finished.length - head <= maxFinished && retainedBytes <= maxBytes) break;
      finished[head++] = undefined;
      jobs.delete(job.id);
      retainedBytes -= job.bytes;
      dropped = true;
    }
    if (head > 1024 && head * 2 > finished.length) {
      finished.splice(0, head);
      head = 0;
    }
    if (dropped) init.onChange?.();
    armExpiry();
  };

  /** One timer for the oldest finished job: jobs finish in order, so they expire in order too. */
  const armExpiry = (): void => {
    if (expiry !== undefined) return;
    const oldest = finished[head];
    if (oldest === undefined) return;
    const delay = Math.max(0, (oldest.finishedAt ?? 0) + retainMs - now());
    expiry = setTimeout(() => {
      expiry = undefined;
      sweep();
    }, delay).unref();
  };

  const find = (id: string): Job => {
    const job = jobs.get(id);
    if (job === undefined) throw new RbeeError('JOB_NOT_FOUND', `no job with id ${id}`);
    return job;
  };

  const snapshot = (job: Job): JobSnapshot => {
    const last = job.finishedAt === undefined ? undefined : job.events.at(-1);
    return {
      id: job.id,
      owner: job.owner,
      model: job.request.model,
      state: job.state,
      acceptedAt: job.acceptedAt,
      finishedAt: job.finishedAt,
      events: job.events.length,
      timeToFirstTokenMs: last?.type === 'done' ? last.timings.timeToFirstTokenMs : undefined,
      tokensPerSecond: last?.type === 'done' ? last.timings.tokensPerSecond : undefined,
      completionTokens: last?.type === 'done' ? last.usage.completionTokens : undefined,
      error: last?.type === 'error' ? `${last.error.code}: ${last.error.message}` : undefined,
    };
  };

  function emitTo(job: Job, input: JobEventInput): void {
    if (job.finishedAt !== undefined) return;
    const event: JobEvent = { ...input, ts: now(), jobId: job.id };
    job.events.push(event);
    const bytes = eventBytes(event);
    job.bytes += bytes;
    retainedBytes += bytes;
    if (event.type === 'done' || event.type === 'error') {
      job.finishedAt = event.ts;
      job.state =
        event.type === 'done' ? 'done' : event.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
    }
    for (const listener of job.listeners) listener(event);
    init.onEvent?.(event);
    if (job.finishedAt !== undefined) {
      job.listeners.clear();
      finished.push(job);
      init.onChange?.();
      // after the listeners: a job dropped at once (larger than the bound) still reached them
      sweep();
    }
  }

  return {
    submit(request, options = {}) {
      if (closed) throw new RbeeError('NODE_SHUTTING_DOWN', 'the node is shutting down');
      const id = randomUUID();
      const controller = new AbortController();
      let admit!: (error: RbeeError | undefined) => void;
      const admitted = new Promise<RbeeError | undefined>((resolve) => (admit = resolve));
      const job: Job = {
        id,
        owner: options.owner,
        request,
        acceptedAt: now(),
        finishedAt: undefined,
        state: 'running',
        events: [],
        bytes: 0,
        listeners: new Set(),
        controller,
        finished: Promise.resolve(),
      };
      jobs.set(id, job);
      init.onAccepted?.({ id, request, acceptedAt: job.acceptedAt, owner: options.owner });
      init.onChange?.();
      const context: JobContext = {
        id,
        request,
        acceptedAt: job.acceptedAt,
        signal: controller.signal,
        emit: (event) => {
          emitTo(job, event);
          // a job that ended settles its admission (a promise settles once: later calls do nothing)
          if (event.type === 'error') admit(RbeeError.fromJSON(event.error));
          else if (event.type === 'done') admit(undefined);
        },
        admit: () => admit(undefined),
      };
      // Start on the next tick so the caller can answer with the id before the first event.
      job.finished = new Promise<void>((resolve) => setImmediate(resolve))
        .then(() => {
          // Cancelled (or shut down) before it started: never start it.
          controller.signal.throwIfAborted();
          return init.run(context);
        })
        .then(
          () => {
            if (job.finishedAt === undefined) {
              emitTo(job, {
                type: 'error',
                error: { code: 'INTERNAL', message: 'job ended without a result' },
              });
            }
          },
          (error: unknown) => {
            // An aborted job ends with the abort's reason (cancelled, or the node shutting down).
            const rbee = toRbeeError(controller.signal.aborted ? controller.signal.reason : error);
            emitTo(job, { type: 'error', error: rbee.toJSON() });
            admit(rbee);
          },
        )
        .finally(() => admit(undefined));
      return { id, admitted };
    },
    subscribe(id, listener) {
      const job = find(id);
      for (const event of job.events) listener(event);
      if (job.finishedAt !== undefined) return () => undefined;
      job.listeners.add(listener);
      return () => job.listeners.delete(listener);
    },
    cancel(id) {
      const job = find(id);
      if (job.finishedAt === undefined) job.controller.abort(new RbeeError('JOB_CANCELLED', 'cancelled'));
    },
    get: (id) => snapshot(find(id)),
    list: () => [...jobs.values()].map(snapshot),
    async close() {
      closed = true;
      for (const job of jobs.values()) {
        if (job.finishedAt === undefined)
          job.controller.abort(new RbeeError('NODE_SHUTTING_DOWN', 'shutting down'));
      }
      await Promise.all([...jobs.values()].map((j) => j.finished));
      clearTimeout(expiry);
      expiry = undefined;
    },
    retained: () => {
      const kept = finished.length - head;
      return { running: jobs.size - kept, finished: kept, bytes: retainedBytes };
    },
  };
}
