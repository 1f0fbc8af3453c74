/**
 * Work keyed by a string that concurrent callers share: the first caller starts it, later callers
 * follow it (and see its latest progress at once). Each caller may leave with its own signal; the
 * work itself is aborted only when every caller has left. Work for a key whose last run was
 * abandoned waits for that run to finish cleaning up before it starts again.
 */
import { raceSignal } from '../../shared/abort.js';
import { toRbeeError } from '../../shared/errors.js';

/**
 * `retrying`: a download was cut and waits before its next attempt (the message says why and when);
 * `downloading` follows again, resuming where the bytes stopped when the server allows it.
 */
export type ProvisionPhase = 'resolving' | 'downloading' | 'retrying' | 'verifying' | 'done';

export interface ProvisionProgress {
  phase: ProvisionPhase;
  bytes: number;
  totalBytes?: number;
  bytesPerSecond?: number;
  etaSeconds?: number;
  /** The file being fetched or written (for a split model, the part being fetched). */
  file?: string;
  /** A line for narration, e.g. which file was picked and why. */
  message?: string;
  /** Where the bytes come from when not the model's own source: `hive beta over the LAN`. */
  from?: string;
}

export interface FollowOptions {
  signal?: AbortSignal;
  onProgress?: (progress: ProvisionProgress) => void;
}

export type Work<T> = (signal: AbortSignal, emit: (progress: ProvisionProgress) => void) => Promise<T>;

interface Task<T> {
  promise: Promise<T>;
  controller: AbortController;
  listeners: Set<(progress: ProvisionProgress) => void>;
  last: ProvisionProgress | undefined;
  followers: number;
}

export interface SharedTasks<T> {
  run(key: string, work: Work<T>, options?: FollowOptions): Promise<T>;
  active(): { key: string; last: ProvisionProgress | undefined }[];
}

export function createSharedTasks<T>(): SharedTasks<T> {
  const tasks = new Map<string, Task<T>>();

  function start(key: string, work: Work<T>, after: Promise<unknown> | undefined): Task<T> {
    const controller = new AbortController();
    const task: Task<T> = {
      controller,
      listeners: new Set(),
      last: undefined,
      followers: 0,
      promise: undefined as unknown as Promise<T>,
    };
    const emit = (progress: ProvisionProgress): void => {
      task.last = progress;
      for (const listener of task.listeners) {
        try {
          listener(progress);
        } catch {
          // A failing progress display must not fail the download that others wait for.
        }
      }
    };
    const begin = async (): Promise<T> => {
      await after?.catch(() => undefined);
      controller.signal.throwIfAborted();
      return work(controller.signal, emit);
    };
    task.promise = begin().finally(() => {
      if (tasks.get(key) === task) tasks.delete(key);
    });
    // Every follower may have left; the outcome is then nobody's to handle.
    task.promise.catch(() => undefined);
    tasks.set(key, task);
    return task;
  }

  async function follow(task: Task<T>, options: FollowOptions): Promise<T> {
    const { signal, onProgress } = options;
    task.followers++;
    if (onProgress !== undefined) {
      task.listeners.add(onProgress);
      if (task.last !== undefined) onProgress(task.last);
    }
    try {
      return await raceSignal(task.promise, signal, toRbeeError);
    } finally {
      if (onProgress !== undefined) task.listeners.delete(onProgress);
      task.followers--;
      if (task.followers === 0 && signal?.aborted === true) task.controller.abort(signal.reason);
    }
  }

  return {
    run(key, work, options = {}) {
      if (options.signal?.aborted === true) return Promise.reject(toRbeeError(options.signal.reason));
      let task = tasks.get(key);
      if (task === undefined || task.controller.signal.aborted) {
        task = start(key, work, task?.promise);
      }
      return follow(task, options);
    },
    active() {
      return [...tasks].map(([key, task]) => ({ key, last: task.last }));
    },
  };
}
