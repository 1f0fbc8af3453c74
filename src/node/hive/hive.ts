/**
 * The seam between the job router and the machines that run jobs. A Hive is either this machine
 * (local-hive.ts) or another member of the cluster (cluster/remote-hive.ts); the router drives both
 * the same way and never knows which one it has.
 */
import type { HiveState } from '../../shared/view.js';
import type { JobEventInput, JobRequest, PromptSize, TokenLogprob } from '../../shared/wire.js';

/** What a hive emits while it runs a job; failures are thrown, never emitted as `error` events. */
export type HiveEvent =
  | Exclude<JobEventInput, { type: 'error' | 'token' }>
  /**
   * `tokens`: the generated tokens the text covers (a job continued elsewhere needs them);
   * `logprobs` only when the job asked for them.
   */
  | ({ type: 'token'; text: string; tokens: number[]; logprobs?: TokenLogprob[] } & PromptSize);

export interface HiveJob {
  id: string;
  request: JobRequest;
  /** When the entry node accepted the job: time to first token counts from here, wherever it runs. */
  acceptedAt: number;
  /**
   * The device the queen chose (a GPU of a backend, or the CPU: index -1). Without one the hive
   * picks its own by the scheduler's rule; a worker of the model already loaded is used wherever it is.
   */
  device?: { backend: string; index: number } | undefined;
}

export interface HiveRunOptions {
  /** Cancels the job on the hive (client gone, Ctrl-C, DELETE, the node stopping). */
  signal: AbortSignal;
  /**
   * Narration, tokens and, last, `done`. A returned promise is back-pressure: the hive waits on it
   * before the next token. Whoever supplies `emit` keeps the events in order and owns the promise's
   * failure (a hive may leave a narration's promise unawaited).
   */
  emit: (event: HiveEvent) => void | Promise<void>;
}

export interface Hive {
  /** The hive's id in the cluster (its peer id; the node name while it runs alone). */
  readonly id: string;
  readonly name: string;
  /** Devices, memory, workers, models and downloads, as this hive publishes them. */
  state(): HiveState;
  /**
   * Runs one job to its end: the model on disk, a worker with it loaded, tokens streamed through
   * `emit`, then `done`. Throws an RbeeError (JOB_CANCELLED when `signal` aborted) on failure.
   */
  run(job: HiveJob, options: HiveRunOptions): Promise<void>;
}
