/**
 * Test doubles for the dashboard: a NodeClient fake (it implements the real interface and lets a
 * test push node events and job events), TTY-like streams for runDashboard, and frame helpers.
 */
import { EventEmitter } from 'node:events';
import { RbeeError } from '../../src/shared/errors.js';
import type { ClusterJobs, NodeEvent, PlacePreview } from '../../src/shared/view.js';
import type { Health, JobEvent, JobRequest } from '../../src/shared/wire.js';
import type { NodeClient } from '../../src/node/client/index.js';

/** An async queue: push items, end or fail it; iterate it once. */
export interface Channel<T> extends AsyncIterable<T> {
  push(item: T): void;
  end(): void;
  fail(error: unknown): void;
  readonly closed: boolean;
}

export function createChannel<T>(signal?: AbortSignal): Channel<T> {
  const items: T[] = [];
  let done = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    wake?.();
    wake = undefined;
  };
  const onAbort = (): void => {
    failure ??= { error: signal?.reason };
    notify();
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  return {
    push(item) {
      items.push(item);
      notify();
    },
    end() {
      done = true;
      notify();
    },
    fail(error) {
      failure = { error };
      notify();
    },
    get closed() {
      return done || failure !== undefined;
    },
    async *[Symbol.asyncIterator]() {
      try {
        for (;;) {
          const item = items.shift();
          if (item !== undefined) {
            yield item;
            continue;
          }
          if (failure !== undefined) throw failure.error;
          if (done) return;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    },
  };
}

export interface Call {
  method: string;
  args: unknown[];
}

export interface FakeNodeClient extends NodeClient {
  readonly calls: Call[];
  /** One channel per nodeEvents() subscription, newest last. */
  readonly streams: Channel<NodeEvent>[];
  /** Job event channels by job id, created by submitJob. */
  readonly jobs: Map<string, Channel<JobEvent>>;
  /** Makes the next call of `method` reject with `error`. */
  failNext(
    method:
      | 'pullModel'
      | 'spawnWorker'
      | 'stopWorker'
      | 'cancelJob'
      | 'submitJob'
      | 'cancelClusterJob'
      | 'clusterJobs',
    error: RbeeError,
  ): void;
  called(method: string): Call[];
  /** What `clusterJobs` answers from now on (no jobs, every node answering, until set). */
  setClusterJobs(answer: ClusterJobs): void;
  /** What `place` answers from now on (an error until set). */
  setPlace(preview: PlacePreview): void;
}

const HEALTH: Health = { state: 'ready', uptimeS: 1, version: '0.1.0', node: 'test', pid: 1 };

export function createFakeNodeClient(): FakeNodeClient {
  const calls: Call[] = [];
  const streams: Channel<NodeEvent>[] = [];
  const jobs = new Map<string, Channel<JobEvent>>();
  const failures = new Map<string, RbeeError>();
  let nextJob = 1;
  let clusterJobs: ClusterJobs = { jobs: [], unanswered: [] };
  let placed: PlacePreview | undefined;

  const record = (method: string, ...args: unknown[]): void => {
    calls.push({ method, args });
    const failure = failures.get(method);
    if (failure !== undefined) {
      failures.delete(method);
      throw failure;
    }
  };

  return {
    url: 'http://127.0.0.1:0',
    calls,
    streams,
    jobs,
    failNext(method, error) {
      failures.set(method, error);
    },
    called(method) {
      return calls.filter((c) => c.method === method);
    },
    setClusterJobs(answer) {
      clusterJobs = answer;
    },
    setPlace(preview) {
      placed = preview;
    },
    health() {
      return Promise.resolve(HEALTH);
    },
    async submitJob(request: JobRequest) {
      await Promise.resolve();
      record('submitJob', request);
      const id = `job-${nextJob++}`;
      jobs.set(id, createChannel<JobEvent>());
      return { id, events: `/v1/jobs/${id}/events` };
    },
    jobEvents(id: string) {
      calls.push({ method: 'jobEvents', args: [id] });
      const channel = jobs.get(id);
      if (channel === undefined) throw new RbeeError('JOB_NOT_FOUND', id);
      return channel;
    },
    async cancelJob(id: string) {
      await Promise.resolve();
      record('cancelJob', id);
    },
    jobHistory() {
      calls.push({ method: 'jobHistory', args: [] });
      return Promise.resolve([]);
    },
    shutdown() {
      return Promise.resolve();
    },
    shutdownCluster() {
      calls.push({ method: 'shutdownCluster', args: [] });
      return Promise.reject(new RbeeError('NO_QUEEN', 'the fake node has no cluster'));
    },
    cluster() {
      calls.push({ method: 'cluster', args: [] });
      return Promise.reject(new RbeeError('INTERNAL', 'the fake node has no cluster'));
    },
    place(model: string) {
      calls.push({ method: 'place', args: [model] });
      return placed === undefined
        ? Promise.reject(new RbeeError('INTERNAL', 'the fake node places nothing'))
        : Promise.resolve(placed);
    },
    doctor() {
      calls.push({ method: 'doctor', args: [] });
      return Promise.reject(new RbeeError('INTERNAL', 'the fake node has no doctor'));
    },
    doctorFix() {
      calls.push({ method: 'doctorFix', args: [] });
      return Promise.reject(new RbeeError('INTERNAL', 'the fake node has no doctor'));
    },
    doctorFixCancel() {
      calls.push({ method: 'doctorFixCancel', args: [] });
      return Promise.reject(new RbeeError('INTERNAL', 'the fake node has no doctor'));
    },
    nodeEvents(options: { signal?: AbortSignal } = {}) {
      calls.push({ method: 'nodeEvents', args: [] });
      const channel = createChannel<NodeEvent>(options.signal);
      streams.push(channel);
      return channel;
    },
    async pullModel(ref: string) {
      await Promise.resolve();
      record('pullModel', ref);
      return {
        type: 'done' as const,
        cached: false,
        model: { id: 'm-new', path: '/tmp/x.gguf', bytes: 1, name: ref },
      };
    },
    async spawnWorker(model: string) {
      await Promise.resolve();
      record('spawnWorker', model);
      return {
        worker: {
          id: 'w-new',
          pid: 7,
          model,
          state: 'idle',
          slots: 1,
          slotsBusy: 0,
          memoryBytes: 1,
          tokensPerSecond: 0,
        },
      };
    },
    async deleteModel(id: string) {
      await Promise.resolve();
      record('deleteModel', id);
      return { removed: id };
    },
    async stopWorker(id: string) {
      await Promise.resolve();
      record('stopWorker', id);
    },
    jobRecord(id: string) {
      calls.push({ method: 'jobRecord', args: [id] });
      return Promise.reject(new RbeeError('JOB_NOT_FOUND', id));
    },
    async clusterJobs(options: { limit?: number; here?: boolean } = {}) {
      await Promise.resolve();
      record('clusterJobs', options);
      return clusterJobs;
    },
    clusterJob(id: string) {
      calls.push({ method: 'clusterJob', args: [id] });
      const job = clusterJobs.jobs.find((j) => j.id === id);
      return job === undefined ? Promise.reject(new RbeeError('JOB_NOT_FOUND', id)) : Promise.resolve(job);
    },
    async cancelClusterJob(id: string) {
      await Promise.resolve();
      record('cancelClusterJob', id);
      const job = clusterJobs.jobs.find((j) => j.id === id);
      if (job === undefined) throw new RbeeError('JOB_NOT_FOUND', id);
      return { id, entry: job.entry, cancelling: true, state: job.state };
    },
    models: () => Promise.resolve([]),
    clusterModels: () => Promise.resolve([]),
    model: (id: string) => Promise.reject(new RbeeError('MODEL_NOT_FOUND', id)),
    workers: () => Promise.resolve([]),
    clusterWorkers: () => Promise.resolve([]),
    workerHistory: () => Promise.resolve([]),
    backends: () => Promise.resolve([]),
    keys: () => Promise.resolve([]),
    createKey: () => Promise.reject(new RbeeError('INTERNAL', 'the fake node makes no keys')),
    removeKey: (id: string) => Promise.reject(new RbeeError('NOT_FOUND', id)),
    aliases: () => Promise.resolve([]),
    setAlias: (name: string, ref: string) => Promise.resolve({ name, ref }),
    removeAlias: (name: string) => Promise.reject(new RbeeError('NOT_FOUND', name)),
    get<T>(): Promise<T> {
      return Promise.reject(new RbeeError('NOT_FOUND', 'not in the fake'));
    },
  };
}

const ANSI = /\x1b\[[0-9;?]*[ -/]*[@-~]/g;

export function plain(frame: string | undefined): string {
  return (frame ?? '').replace(ANSI, '');
}

/** A writable TTY-like stream that records everything written. */
export class FakeTtyOut extends EventEmitter {
  isTTY = true;
  columns: number;
  rows: number;
  written = '';
  constructor(columns = 80, rows = 24) {
    super();
    this.columns = columns;
    this.rows = rows;
  }
  write = (chunk: string | Uint8Array, callback?: unknown): boolean => {
    this.written += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
    if (typeof callback === 'function') (callback as () => void)();
    return true;
  };
}

/** A readable TTY-like stream a test types into, in the shape Ink reads (readable + read()). */
export class FakeTtyIn extends EventEmitter {
  isTTY = true;
  private queue: string[] = [];
  type(data: string): void {
    this.queue.push(data);
    this.emit('readable');
  }
  read = (): string | null => this.queue.shift() ?? null;
  setEncoding(): void {}
  setRawMode(): void {}
  resume(): void {}
  pause(): void {}
  ref(): void {}
  unref(): void {}
}
