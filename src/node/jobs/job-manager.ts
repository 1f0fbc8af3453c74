/**
 * Jobs in flight and recently finished: each keeps its whole event history, so a client that
 * subscribes late (or reconnects) sees every event from the first, then live ones.
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
  listeners: Set<(event: JobEvent) => void>;
  controller: AbortController;
  finished: Promise<void>;
}

export interface JobManager {
  submit(request: JobRequest, options?: SubmitOptions): { id: string };
  /** Replays the job's events so far, then calls `listener` with each new one. Returns an unsubscribe. */
  subscribe(id: string, listener: (event: JobEvent) => void): () => void;
  cancel(id: string): void;
  get(id: string): JobSnapshot;
  list(): JobSnapshot[];
  /** Cancels every running job and waits until each has ended. */
  close(): Promise<void>;
}

export function createJobManager(init: JobManagerInit): JobManager {
  const now = init.now ?? Date.now;
  const retainMs = init.retainMs ?? 10 * 60_000;
  const jobs = new Map<string, Job>();
  let closed = false;

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
    if (event.type === 'done' || event.type === 'error') {
      job.finishedAt = event.ts;
      job.state =
        event.type === 'done' ? 'done' : event.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed';
      setTimeout(() => {
        jobs.delete(job.id);
        init.onChange?.();
      }, retainMs).unref();
    }
    for (const listener of job.listeners) listener(event);
    init.onEvent?.(event);
    if (job.finishedAt !== undefined) {
      job.listeners.clear();
      init.onChange?.();
    }
  }

  return {
    submit(request, options = {}) {
      if (closed) throw new RbeeError('NODE_SHUTTING_DOWN', 'the node is shutting down');
      const id = randomUUID();
      const controller = new AbortController();
      const job: Job = {
        id,
        owner: options.owner,
        request,
        acceptedAt: now(),
        finishedAt: undefined,
        state: 'running',
        events: [],
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
        emit: (event) => emitTo(job, event),
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
          },
        );
      return { id };
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
    },
  };
}
