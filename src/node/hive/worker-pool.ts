/**
 * The worker registry (RAM, live) and the lifecycle around it: one worker per model, spawned on
 * first use, shared by concurrent jobs, unloaded after its keep-alive. Every spawn and unload is
 * narrated with its reason; nothing reloads silently.
 */
import { join } from 'node:path';
import type {
  GenerateChunk,
  GenerateRequest,
  WorkerHandle,
  WorkerInit,
  WorkerState,
} from '../../engine/types.js';
import { RbeeError } from '../../shared/errors.js';
import type { Logger } from '../logger.js';
import type { ModelRow } from '../store/model-catalog.js';

export interface WorkerSnapshot {
  id: string;
  pid: number;
  model: string;
  modelPath: string;
  backend: string;
  device: number;
  state: WorkerState;
  slots: number;
  slotsBusy: number;
  tokensPerSecond: number;
  activeJobs: number;
  threads: number;
  contextSize: number;
  memoryBytes: number;
  startedAt: number;
  lastUsedAt: number;
}

export interface WorkerPoolInit {
  spawn: (init: WorkerInit) => Promise<WorkerHandle>;
  log: Logger;
  logsDir: string;
  threads: number | undefined;
  slots: number;
  contextSize: number | undefined;
  /** Seconds an idle worker stays loaded; -1 never unloads, 0 unloads right after its last job. */
  keepAliveS: number;
  /** Narration that is not tied to a job (unloads, crashes). */
  onNarration?: (text: string) => void;
  /** Called whenever what `list()` returns may have changed (spawn, heartbeat, use, exit). */
  onChange?: () => void;
}

export interface Lease {
  worker: WorkerSnapshot;
  generate(request: GenerateRequest, options?: { signal?: AbortSignal }): AsyncIterable<GenerateChunk>;
  /** Ends this use; `keepAliveS` (from the request) replaces the worker's keep-alive, as in Ollama. */
  release(options?: { keepAliveS?: number }): void;
}

interface Entry {
  handle: WorkerHandle;
  model: ModelRow;
  activeJobs: number;
  startedAt: number;
  lastUsedAt: number;
  stopping: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /** Set by the last request that asked for one; else the node's default. */
  keepAliveS: number | undefined;
}

export interface WorkerPool {
  acquire(
    model: ModelRow,
    options?: { signal?: AbortSignal; narrate?: (text: string) => void },
  ): Promise<Lease>;
  list(): WorkerSnapshot[];
  /** Workers using this model file (a model in use must not be deleted). */
  usersOf(modelId: string): WorkerSnapshot[];
  stop(id: string, reason: string): Promise<void>;
  stopAll(options?: { timeoutMs?: number }): Promise<void>;
}

export function createWorkerPool(init: WorkerPoolInit): WorkerPool {
  const entries = new Map<string, Entry>();
  const spawning = new Map<string, Promise<Entry>>();
  let closed = false;
  const changed = (): void => init.onChange?.();

  const snapshot = (e: Entry): WorkerSnapshot => ({
    id: e.handle.info.id,
    pid: e.handle.info.pid,
    model: e.model.id,
    modelPath: e.model.path,
    backend: e.handle.info.backend,
    device: e.handle.info.device,
    state: e.stopping ? 'stopping' : e.handle.info.state,
    slots: e.handle.info.slots,
    slotsBusy: e.handle.lastHeartbeat?.slotsBusy ?? 0,
    tokensPerSecond: e.handle.lastHeartbeat?.tokensPerSecond ?? 0,
    activeJobs: e.activeJobs,
    threads: e.handle.info.threads,
    contextSize: e.handle.info.contextSize,
    memoryBytes: e.handle.lastHeartbeat?.memoryBytes ?? e.handle.info.memoryBytes,
    startedAt: e.startedAt,
    lastUsedAt: e.lastUsedAt,
  });

  const findFor = (modelId: string): Entry | undefined =>
    [...entries.values()].find((e) => e.model.id === modelId && !e.stopping);

  async function spawnFor(
    model: ModelRow,
    narrate: (text: string) => void,
    signal?: AbortSignal,
  ): Promise<Entry> {
    narrate(
      `no worker has ${model.id} loaded; starting one (${init.slots} slot${init.slots === 1 ? '' : 's'}, ` +
        `${init.threads === undefined ? 'default threads' : `${init.threads} threads`})`,
    );
    const handle = await init.spawn({
      modelPath: model.path,
      slots: init.slots,
      ...(init.threads === undefined ? {} : { threads: init.threads }),
      ...(init.contextSize === undefined ? {} : { contextSize: init.contextSize }),
      logFile: join(init.logsDir, `worker-${model.id.replace(/[^A-Za-z0-9._-]/g, '_')}.log`),
      onHeartbeat: () => changed(),
      ...(signal === undefined ? {} : { signal }),
    });
    const now = Date.now();
    const entry: Entry = {
      handle,
      model,
      activeJobs: 0,
      startedAt: now,
      lastUsedAt: now,
      stopping: false,
      idleTimer: undefined,
      keepAliveS: undefined,
    };
    const { info } = handle;
    entries.set(info.id, entry);
    changed();
    narrate(
      `worker ${info.id} ready in ${Math.round(info.loadMs)} ms (pid ${info.pid}, ${info.threads} threads, ` +
        `${Math.round(info.memoryBytes / 2 ** 20)} MiB)`,
    );
    init.log.info({ worker: info }, 'worker ready');
    void handle.exited.then(({ code, signal: sig }) => {
      if (entries.get(info.id) !== entry) return;
      entries.delete(info.id);
      clearTimeout(entry.idleTimer);
      changed();
      if (!entry.stopping) {
        const text = `worker ${info.id} (${model.id}) exited unexpectedly (code ${code ?? '-'}, signal ${sig ?? '-'})`;
        init.log.warn({ worker: info.id, code, signal: sig }, 'worker exited unexpectedly');
        init.onNarration?.(text);
      }
    });
    return entry;
  }

  function scheduleIdle(entry: Entry): void {
    clearTimeout(entry.idleTimer);
    const keepAliveS = entry.keepAliveS ?? init.keepAliveS;
    if (entry.activeJobs > 0 || keepAliveS < 0 || closed) return;
    const reason = keepAliveS === 0 ? 'keep-alive is 0' : `idle for ${keepAliveS} s (its keep-alive)`;
    entry.idleTimer = setTimeout(() => void stopEntry(entry, reason), keepAliveS * 1000);
    entry.idleTimer.unref();
  }

  async function stopEntry(entry: Entry, reason: string, timeoutMs?: number): Promise<void> {
    if (entry.stopping) return entry.handle.exited.then(() => undefined);
    entry.stopping = true;
    clearTimeout(entry.idleTimer);
    const text = `unloading worker ${entry.handle.info.id} (${entry.model.id}): ${reason}`;
    init.log.info({ worker: entry.handle.info.id, reason }, 'unloading worker');
    init.onNarration?.(text);
    changed();
    await entry.handle.stop(timeoutMs === undefined ? {} : { timeoutMs });
    entries.delete(entry.handle.info.id);
    changed();
  }

  return {
    async acquire(model, options = {}) {
      if (closed) throw new RbeeError('NODE_SHUTTING_DOWN', 'the node is shutting down');
      const narrate = options.narrate ?? (() => undefined);
      let entry = findFor(model.id);
      if (entry !== undefined) {
        narrate(`worker ${entry.handle.info.id} already has ${model.id} loaded`);
      } else {
        let pending = spawning.get(model.id);
        if (pending === undefined) {
          pending = spawnFor(model, narrate, options.signal).finally(() => spawning.delete(model.id));
          spawning.set(model.id, pending);
        } else {
          narrate(`waiting for the worker already loading ${model.id}`);
        }
        entry = await pending;
      }
      const leased = entry;
      leased.activeJobs += 1;
      clearTimeout(leased.idleTimer);
      changed();
      let released = false;
      return {
        worker: snapshot(leased),
        generate: (request, opts) => leased.handle.generate(request, opts),
        release(options = {}) {
          if (released) return;
          released = true;
          if (options.keepAliveS !== undefined) leased.keepAliveS = options.keepAliveS;
          leased.activeJobs -= 1;
          leased.lastUsedAt = Date.now();
          if (entries.get(leased.handle.info.id) === leased) scheduleIdle(leased);
          changed();
        },
      };
    },
    list: () => [...entries.values()].map(snapshot),
    usersOf: (modelId) => [...entries.values()].filter((e) => e.model.id === modelId).map(snapshot),
    async stop(id, reason) {
      const entry = entries.get(id);
      if (entry === undefined) throw new RbeeError('NOT_FOUND', `no worker ${id}`);
      await stopEntry(entry, reason);
    },
    async stopAll(options = {}) {
      closed = true;
      await Promise.allSettled([...spawning.values()]);
      await Promise.all(
        [...entries.values()].map((e) => stopEntry(e, 'the node is shutting down', options.timeoutMs)),
      );
    },
  };
}
