/**
 * The worker registry (RAM, live) and the lifecycle around it: one worker per model, spawned on
 * first use, shared by concurrent jobs, unloaded after its keep-alive, watched through its
 * heartbeats, restarted by policy when it dies, and drained before it is stopped. Every spawn,
 * unload, crash and restart is narrated with its reason; nothing reloads silently.
 *
 * A worker starts on the device it is asked for (the queen's choice), or else on the hive's own
 * choice. A GPU start that fails (no room in its VRAM, the backend not available, the load failing)
 * is never silent: it is narrated with its reason and the worker starts on the CPU instead, if the
 * RAM allows.
 */
import { join } from 'node:path';
import { defaultContextSize } from '../../engine/index.js';
import type {
  Backend,
  EmbedResult,
  RankResult,
  GenerateChunk,
  GenerateRequest,
  SlotCache,
  WorkerBinary,
  WorkerHandle,
  WorkerInit,
  WorkerState,
} from '../../engine/types.js';
import type { CpuBinaryChoice } from '../../engine/index.js';
import { raceSignal } from '../../shared/abort.js';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import { mib } from '../../shared/format.js';
import type { Logger } from '../logger.js';
import type { ModelRow } from '../store/index.js';
import type { Fit, MemoryChecker } from './memory-checker.js';
import { createRestartPolicy, type OpenBreaker, type RestartPolicy } from './restart-policy.js';

export interface WorkerSnapshot {
  id: string;
  pid: number;
  model: string;
  modelPath: string;
  backend: string;
  device: number;
  state: WorkerState | 'unhealthy';
  slots: number;
  slotsBusy: number;
  tokensPerSecond: number;
  activeJobs: number;
  threads: number;
  contextSize: number;
  memoryBytes: number;
  startedAt: number;
  lastUsedAt: number;
  /** Seconds it stays loaded once idle (the last request's keep-alive, else the node's); -1: always. */
  keepAliveS: number;
  lastHeartbeatAt: number;
  restarts: number;
  /** The llama.cpp binary it runs and why (absent when the worker did not say). */
  binary?: WorkerBinary;
  /** Whether its context uses flash attention (absent when the worker did not say). */
  flashAttention?: boolean;
  /**
   * What each of the worker's slots keeps in its KV cache, from its last heartbeat (empty before
   * one): a scheduler prefers the worker, and the free slot, whose prefix keys match most of a
   * prompt (shared/prefix.ts `cachedTokensFor`). See SlotCache in the engine's types.
   */
  slotCache: SlotCache[];
}

/** Where a worker runs: a GPU of a backend (its index), or the CPU (backend 'cpu', index -1). */
export interface DeviceChoice {
  backend: Backend;
  index: number;
}

export const CPU_DEVICE: DeviceChoice = { backend: 'cpu', index: -1 };

/** "GPU0 (cuda)" or "the CPU", as narration names a device. */
export function deviceName(device: { backend: string; index: number }): string {
  return device.backend === 'cpu' || device.index < 0 ? 'the CPU' : `GPU${device.index} (${device.backend})`;
}

const sameDevice = (a: DeviceChoice, b: DeviceChoice): boolean =>
  a.backend === b.backend && (a.backend === 'cpu' || a.index === b.index);

export type WorkerEventKind =
  'crash' | 'restart' | 'force_kill' | 'graceful_stop' | 'breaker_open' | 'unhealthy';

export interface WorkerPoolInit {
  spawn: (init: WorkerInit) => Promise<WorkerHandle>;
  log: Logger;
  logsDir: string;
  threads: number | undefined;
  slots: number;
  contextSize: number | undefined;
  /** The llama.cpp binary CPU workers load, asked at each start (it changes with `rbee doctor --fix`). */
  cpuBinary?: () => CpuBinaryChoice;
  /** False: workers evaluate every prompt in full instead of reusing their slots' caches. Default true. */
  prefixReuse?: boolean;
  /** Flash attention on (true) or off (false) on every device; absent: the engine's default per device. */
  flashAttention?: boolean;
  /** Seconds an idle worker stays loaded; -1 never unloads, 0 unloads right after its last job. */
  keepAliveS: number;
  /** Admission: a model that does not fit is refused (after unloading idle workers) before any spawn. */
  memory?: MemoryChecker;
  /** The device for a model when `acquire` names none (the hive's own choice). Defaults to the CPU. */
  pickDevice?: (model: ModelRow) => DeviceChoice;
  /** Defaults to a policy of 3 failures a minute (see restart-policy.ts). */
  restartPolicy?: RestartPolicy;
  /** A worker silent for this long is unhealthy; twice this long, it is killed. Defaults to 5 s. */
  heartbeatTimeoutMs?: number;
  /** How long a stop waits for the worker's jobs to finish. Defaults to 10 s. */
  drainTimeoutMs?: number;
  /** How long a worker gets to exit after being asked, before SIGKILL. Defaults to 5 s. */
  stopTimeoutMs?: number;
  /** Narration that is not tied to a job (unloads, crashes, restarts). */
  onNarration?: (text: string) => void;
  /** Called whenever what `list()` returns may have changed (spawn, heartbeat, use, exit). */
  onChange?: () => void;
  onWorkerEvent?: (kind: WorkerEventKind) => void;
  /** A worker became ready (the worker catalog records it with its binary), and later exited. */
  onWorkerReady?: (worker: WorkerSnapshot) => void;
  onWorkerExit?: (id: string) => void;
}

export interface Lease {
  worker: WorkerSnapshot;
  /** How long this acquire waited for the worker to load (started here or by another job); absent when it was loaded. */
  loadMs?: number;
  generate(request: GenerateRequest, options?: { signal?: AbortSignal }): AsyncIterable<GenerateChunk>;
  embed(texts: string[], options?: { signal?: AbortSignal }): Promise<EmbedResult>;
  rank(query: string, documents: string[], options?: { signal?: AbortSignal }): Promise<RankResult>;
  /** The request's prompt size in tokens, with the model's tokenizer and chat template. */
  countTokens(request: GenerateRequest): Promise<number>;
  /** Ends this use; `keepAliveS` (from the request) replaces the worker's keep-alive, as in Ollama. */
  release(options?: { keepAliveS?: number }): void;
}

interface Entry {
  handle: WorkerHandle;
  model: ModelRow;
  device: DeviceChoice;
  activeJobs: number;
  startedAt: number;
  lastUsedAt: number;
  lastHeartbeatAt: number;
  stopping: boolean;
  unhealthy: boolean;
  idleTimer: NodeJS.Timeout | undefined;
  /** Set by the last request that asked for one; else the node's default. */
  keepAliveS: number | undefined;
  restarts: number;
  /** The context it was started with when a job asked for more than the default; else undefined. */
  contextSize: number | undefined;
  /** Resolved each time the worker has no jobs left (for draining). */
  onIdle: (() => void)[];
}

export interface WorkerPool {
  /**
   * A lease on the model's worker: the one already loaded (on whatever device), or a new one on
   * `device` (default: the hive's own choice). With `contextSize`, the worker must have at least
   * that many tokens of context per slot: a loaded one with less is reloaded with it once its jobs
   * are done (the lease waits for them), as Ollama reloads a model for another `num_ctx`.
   */
  acquire(
    model: ModelRow,
    options?: {
      signal?: AbortSignal;
      narrate?: (text: string) => void;
      device?: DeviceChoice;
      contextSize?: number;
    },
  ): Promise<Lease>;
  list(): WorkerSnapshot[];
  /** Models whose restarts are refused for now, and why. */
  breakers(): OpenBreaker[];
  /** Bytes this hive's workers on a GPU hold there (their estimates); 0 for the CPU. */
  heldOn(device: DeviceChoice): number;
  /** Workers using this model file (a model in use must not be deleted). */
  usersOf(modelId: string): WorkerSnapshot[];
  /** Drains the worker's jobs (up to the drain timeout), then stops it. */
  stop(id: string, reason: string): Promise<{ forced: boolean }>;
  stopAll(): Promise<void>;
}

const HEALTH_CHECK_MS = 1_000;

export function createWorkerPool(init: WorkerPoolInit): WorkerPool {
  const entries = new Map<string, Entry>();
  const spawning = new Map<
    string,
    { entry: Promise<Entry>; device: DeviceChoice; contextSize: number | undefined }
  >();
  const restartTimers = new Set<NodeJS.Timeout>();
  const policy = init.restartPolicy ?? createRestartPolicy();
  const heartbeatTimeoutMs = init.heartbeatTimeoutMs ?? 5_000;
  const drainTimeoutMs = init.drainTimeoutMs ?? 10_000;
  const stopTimeoutMs = init.stopTimeoutMs ?? 5_000;
  let closed = false;
  const changed = (): void => init.onChange?.();
  const event = (kind: WorkerEventKind): void => init.onWorkerEvent?.(kind);
  const narrate = (text: string, fields: Record<string, unknown> = {}): void => {
    init.log.info({ source: 'hive', ...fields }, text);
    init.onNarration?.(text);
  };

  const snapshot = (e: Entry): WorkerSnapshot => ({
    id: e.handle.info.id,
    pid: e.handle.info.pid,
    model: e.model.id,
    modelPath: e.model.path,
    backend: e.handle.info.backend,
    // the scheduler's convention: -1 is the CPU (the engine reports its default GPU index there)
    device: e.device.backend === 'cpu' ? -1 : e.handle.info.device,
    state: e.stopping ? 'stopping' : e.unhealthy ? 'unhealthy' : e.handle.info.state,
    slots: e.handle.info.slots,
    slotsBusy: e.handle.lastHeartbeat?.slotsBusy ?? 0,
    tokensPerSecond: e.handle.lastHeartbeat?.tokensPerSecond ?? 0,
    activeJobs: e.activeJobs,
    threads: e.handle.info.threads,
    contextSize: e.handle.info.contextSize,
    memoryBytes: e.handle.lastHeartbeat?.memoryBytes ?? e.handle.info.memoryBytes,
    startedAt: e.startedAt,
    lastUsedAt: e.lastUsedAt,
    keepAliveS: e.keepAliveS ?? init.keepAliveS,
    lastHeartbeatAt: e.lastHeartbeatAt,
    restarts: e.restarts,
    ...(e.handle.info.binary === undefined ? {} : { binary: e.handle.info.binary }),
    ...(e.handle.info.flashAttention === undefined ? {} : { flashAttention: e.handle.info.flashAttention }),
    slotCache: e.handle.lastHeartbeat?.slotCache ?? [],
  });

  const findFor = (modelId: string): Entry | undefined =>
    [...entries.values()].find((e) => e.model.id === modelId && !e.stopping);

  function refuseIfOpen(model: ModelRow): void {
    const breaker = policy.openBreaker(model.id);
    if (breaker === undefined) return;
    const retryAfterS = Math.ceil((breaker.until - Date.now()) / 1000);
    throw new RbeeError(
      'WORKER_START_FAILED',
      `workers for ${model.id} failed ${breaker.failures} times in a row (last: ${breaker.reason}); ` +
        `not starting another for ${retryAfterS} s`,
      { details: { circuit: 'open', retryAfterS } },
    );
  }

  /** What a worker of `model` gets unless a job asks for more: the node's setting, else the engine's default. */
  const baseContext = (model: ModelRow): number =>
    init.contextSize ?? defaultContextSize(model.contextLength);
  /** The context to start a worker with for a job that wants `wanted` (undefined: the default). */
  const contextFor = (model: ModelRow, wanted: number | undefined): number | undefined =>
    wanted !== undefined && wanted > baseContext(model) ? wanted : init.contextSize;
  /** Whether a worker (loaded, or loading with `contextSize`) has the context a job wants. */
  const hasContext = (
    model: ModelRow,
    contextSize: number | undefined,
    wanted: number | undefined,
  ): boolean => wanted === undefined || (contextSize ?? baseContext(model)) >= wanted;
  const shapeOf = (contextSize: number | undefined): { slots: number; contextSize?: number } => ({
    slots: init.slots,
    ...(contextSize === undefined ? {} : { contextSize }),
  });

  /** What this hive's workers hold on a GPU (their estimate): the probed free VRAM predates them. */
  const heldOn = (device: DeviceChoice): number =>
    [...entries.values()]
      .filter((e) => sameDevice(e.device, device))
      .reduce((sum, e) => sum + e.handle.info.estimatedBytes, 0);

  const check = (
    memory: MemoryChecker,
    model: ModelRow,
    device: DeviceChoice,
    shape: { slots: number; contextSize?: number },
  ): Promise<Fit> =>
    device.backend === 'cpu'
      ? memory.check(model, shape)
      : memory.check(model, shape, { ...device, heldBytes: heldOn(device) });

  /**
   * Makes room for `model` on the device by unloading idle workers (least recently used first; on a
   * GPU, those on that GPU), or refuses it.
   */
  async function admit(
    model: ModelRow,
    memory: MemoryChecker,
    say: (text: string) => void,
    device: DeviceChoice,
    shape: { slots: number; contextSize?: number },
  ): Promise<void> {
    const onGpu = device.backend !== 'cpu';
    let fit = await check(memory, model, device, shape);
    const idle = [...entries.values()]
      .filter((e) => !e.stopping && e.activeJobs === 0 && e.model.id !== model.id)
      .filter((e) => !onGpu || sameDevice(e.device, device))
      .sort((a, b) => a.lastUsedAt - b.lastUsedAt);
    const where = onGpu ? ` on ${deviceName(device)}` : '';
    for (const victim of idle) {
      if (fit.fits || fit.totalBytes === 0) break;
      await stopEntry(
        victim,
        `making room for ${model.id}${where} (needs ${mib(fit.neededBytes, 0)}, ${mib(fit.freeBytes, 0)} free, ` +
          `${mib(fit.reserveBytes, 0)} kept in reserve)`,
      );
      fit = await check(memory, model, device, shape);
    }
    const basis = fit.basis === 'observed' ? 'as observed before' : 'estimated';
    if (!fit.fits) {
      throw new RbeeError(
        'INSUFFICIENT_MEMORY',
        onGpu && fit.totalBytes === 0
          ? `the free VRAM of ${deviceName(device)} is not known, so ${model.id} is not loaded there`
          : onGpu
            ? `${model.id} needs ${mib(fit.neededBytes, 0)} (${basis}) but ${mib(fit.freeBytes, 0)} of ` +
              `${mib(fit.totalBytes, 0)} VRAM is free on ${deviceName(device)}`
            : `${model.id} needs ${mib(fit.neededBytes, 0)} (${basis}) ` +
              `but ${mib(fit.freeBytes, 0)} of ${mib(fit.totalBytes, 0)} RAM is free and ${mib(fit.reserveBytes, 0)} is kept in reserve`,
        { details: { ...fit, device: deviceName(device) } },
      );
    }
    say(
      `${model.id} fits: needs ${mib(fit.neededBytes, 0)} (${fit.basis === 'observed' ? 'observed' : 'estimated'}), ` +
        `${mib(fit.freeBytes, 0)} free${onGpu ? ` on ${deviceName(device)}` : ''}`,
    );
  }

  /**
   * A worker for `model` on `device`; from a GPU that fails, on the CPU instead (said, with why).
   */
  async function spawnFor(
    model: ModelRow,
    say: (text: string) => void,
    restarts: number,
    device: DeviceChoice,
    contextSize: number | undefined,
  ): Promise<Entry> {
    refuseIfOpen(model);
    const opening = `no worker has ${model.id} loaded; `;
    if (device.backend === 'cpu') return spawnOn(model, say, restarts, CPU_DEVICE, opening, contextSize);
    let gpuFailure: RbeeError;
    try {
      return await spawnOn(model, say, restarts, device, opening, contextSize);
    } catch (error) {
      gpuFailure = toRbeeError(error);
      // a file that is not there, or the node stopping, is not the GPU's fault
      if (['MODEL_NOT_FOUND', 'NODE_SHUTTING_DOWN', 'JOB_CANCELLED'].includes(gpuFailure.code)) throw error;
    }
    const failed = `${deviceName(device)} failed: ${gpuFailure.message}`;
    init.log.warn({ model: model.id, device, err: gpuFailure }, 'GPU worker start failed; trying the CPU');
    say(`${failed}; starting on the CPU instead`);
    try {
      return await spawnOn(model, say, restarts, CPU_DEVICE, '', contextSize);
    } catch (error) {
      const rbee = toRbeeError(error);
      throw new RbeeError(rbee.code, `${failed}; and on the CPU: ${rbee.message}`, {
        cause: error,
        ...(rbee.details === undefined ? {} : { details: rbee.details }),
      });
    }
  }

  /** Admission, then the spawn itself; `opening` starts the narration (why a worker starts at all). */
  async function spawnOn(
    model: ModelRow,
    say: (text: string) => void,
    restarts: number,
    device: DeviceChoice,
    opening: string,
    contextSize: number | undefined,
  ): Promise<Entry> {
    const onGpu = device.backend !== 'cpu';
    const shape = shapeOf(contextSize);
    if (init.memory !== undefined) await admit(model, init.memory, say, device, shape);
    const cpuBinary = onGpu ? undefined : init.cpuBinary?.();
    say(
      `${opening}starting a worker on ${deviceName(device)} (${init.slots} slot${init.slots === 1 ? '' : 's'}, ` +
        `${init.threads === undefined ? 'default threads' : `${init.threads} threads`}` +
        `${contextSize === undefined ? '' : `, ${contextSize} tokens of context`}` +
        `${cpuBinary?.binary === 'native' ? ', the native llama.cpp build' : ''})`,
    );
    const beat = { at: Date.now() };
    let handle: WorkerHandle;
    try {
      // Not tied to any job's signal: a load outlives the job that asked for it.
      handle = await init.spawn({
        modelPath: model.path,
        slots: init.slots,
        backend: device.backend,
        ...(onGpu ? { device: device.index } : {}),
        ...(init.threads === undefined ? {} : { threads: init.threads }),
        ...(contextSize === undefined ? {} : { contextSize }),
        ...(init.prefixReuse === false ? { prefixReuse: false } : {}),
        ...(init.flashAttention === undefined ? {} : { flashAttention: init.flashAttention }),
        ...(onGpu || cpuBinary === undefined ? {} : { binary: cpuBinary }),
        logFile: join(init.logsDir, `worker-${model.id.replace(/[^A-Za-z0-9._-]/g, '_')}.log`),
        onHeartbeat: () => {
          beat.at = Date.now();
          changed();
        },
      });
    } catch (error) {
      // A model that cannot be loaded at all is the caller's problem, not a crash to retry; a GPU
      // that fails is the caller's to fall back from.
      if (
        onGpu ||
        (error instanceof RbeeError && (error.code === 'MODEL_INVALID' || error.code === 'MODEL_NOT_FOUND'))
      ) {
        throw error;
      }
      const decision = policy.recordFailure(model.id, error instanceof Error ? error.message : String(error));
      if (decision.action === 'open') {
        event('breaker_open');
        narrate(
          `workers for ${model.id} failed ${decision.failures} times; not starting another for a while`,
        );
      }
      throw error;
    }
    const now = Date.now();
    // Silence is counted from ready: loading can take long and sends no heartbeats.
    beat.at = now;
    const entry: Entry = {
      handle,
      model,
      device,
      activeJobs: 0,
      startedAt: now,
      lastUsedAt: now,
      get lastHeartbeatAt() {
        return beat.at;
      },
      stopping: false,
      unhealthy: false,
      idleTimer: undefined,
      keepAliveS: undefined,
      restarts,
      contextSize,
      onIdle: [],
    };
    const { info } = handle;
    entries.set(info.id, entry);
    changed();
    say(
      `worker ${info.id} ready in ${Math.round(info.loadMs)} ms (pid ${info.pid}, ${info.threads} threads, ` +
        `${Math.round(info.memoryBytes / 2 ** 20)} MiB) on ${deviceName(device)}`,
    );
    init.log.info({ worker: info }, 'worker ready');
    init.onWorkerReady?.(snapshot(entry));
    if (cpuBinary?.binary === 'native' && info.binary !== undefined && info.binary.kind !== 'native') {
      narrate(`worker ${info.id} runs the ${info.binary.label} binary: ${info.binary.why}`, {
        worker: info.id,
      });
    }
    // a GPU worker's resident memory says nothing of what it needs on the CPU
    if (!onGpu) {
      init.memory
        ?.observe(model, shape, info.memoryBytes)
        .catch((error: unknown) => init.log.warn({ err: error }, 'could not record observed memory'));
    }
    void handle.exited.then(({ code, signal }) => onExit(entry, code, signal));
    return entry;
  }

  function onExit(entry: Entry, code: number | null, signal: NodeJS.Signals | null): void {
    const { id } = entry.handle.info;
    if (entries.get(id) === entry) entries.delete(id);
    init.onWorkerExit?.(id);
    clearTimeout(entry.idleTimer);
    for (const resolve of entry.onIdle.splice(0)) resolve();
    changed();
    if (entry.stopping) return;
    event('crash');
    const how = signal === null ? `exit code ${code ?? '-'}` : `signal ${signal}`;
    const decision = policy.recordFailure(entry.model.id, `worker exited with ${how}`);
    if (decision.action === 'open') {
      event('breaker_open');
      narrate(
        `worker ${id} (${entry.model.id}) died (${how}); ${decision.failures} failures within ` +
          `${Math.round(decision.windowMs / 1000)} s, so it is not restarted for ` +
          `${Math.round((decision.until - Date.now()) / 1000)} s (circuit open)`,
        { worker: id, code, signal },
      );
      return;
    }
    if (closed) return;
    narrate(
      `worker ${id} (${entry.model.id}) died (${how}); restarting in ${decision.delayMs} ms ` +
        `(failure ${decision.failure} of ${decision.of} allowed per window)`,
      { worker: id, code, signal },
    );
    const timer = setTimeout(() => {
      restartTimers.delete(timer);
      if (closed || findFor(entry.model.id) !== undefined || spawning.has(entry.model.id)) return;
      event('restart');
      startSpawn(
        entry.model,
        (text) => narrate(text),
        entry.device,
        entry.contextSize,
        entry.restarts + 1,
      ).catch((error: unknown) => init.log.warn({ err: error, model: entry.model.id }, 'restart failed'));
    }, decision.delayMs);
    restartTimers.add(timer);
  }

  function startSpawn(
    model: ModelRow,
    say: (text: string) => void,
    device: DeviceChoice,
    contextSize: number | undefined,
    restarts = 0,
  ): Promise<Entry> {
    const pending = spawning.get(model.id);
    if (pending !== undefined) {
      say(
        `waiting for the worker already loading ${model.id} on ${deviceName(pending.device)}` +
          (sameDevice(pending.device, device)
            ? ''
            : ` (one worker per model; ${deviceName(device)} was chosen)`),
      );
      return pending.entry;
    }
    const entry = spawnFor(model, say, restarts, device, contextSize).finally(() =>
      spawning.delete(model.id),
    );
    spawning.set(model.id, { entry, device, contextSize });
    // Keep a failed background spawn from becoming an unhandled rejection; callers see it anyway.
    entry.catch(() => undefined);
    return entry;
  }

  function scheduleIdle(entry: Entry): void {
    clearTimeout(entry.idleTimer);
    if (entry.activeJobs > 0) return;
    for (const resolve of entry.onIdle.splice(0)) resolve();
    const keepAliveS = entry.keepAliveS ?? init.keepAliveS;
    if (keepAliveS < 0 || closed || entry.stopping) return;
    const reason = keepAliveS === 0 ? 'keep-alive is 0' : `idle for ${keepAliveS} s (its keep-alive)`;
    entry.idleTimer = setTimeout(() => void stopEntry(entry, reason), keepAliveS * 1000);
    entry.idleTimer.unref();
  }

  async function stopEntry(entry: Entry, reason: string): Promise<{ forced: boolean }> {
    const { id } = entry.handle.info;
    if (entry.stopping) {
      const { signal } = await entry.handle.exited;
      return { forced: signal === 'SIGKILL' };
    }
    entry.stopping = true;
    clearTimeout(entry.idleTimer);
    narrate(`unloading worker ${id} (${entry.model.id}): ${reason}`, { worker: id });
    changed();
    if (entry.activeJobs > 0) {
      narrate(`waiting up to ${Math.round(drainTimeoutMs / 1000)} s for ${entry.activeJobs} job(s) on ${id}`);
      const drained = new Promise<void>((resolve) => entry.onIdle.push(resolve));
      const timer = setTimeout(() => entry.onIdle.splice(0).forEach((r) => r()), drainTimeoutMs);
      await drained;
      clearTimeout(timer);
    }
    await entry.handle.stop({ timeoutMs: stopTimeoutMs });
    const { signal } = await entry.handle.exited;
    const forced = signal === 'SIGKILL';
    event(forced ? 'force_kill' : 'graceful_stop');
    if (forced) narrate(`worker ${id} did not exit within ${stopTimeoutMs} ms; killed it`);
    entries.delete(id);
    changed();
    return { forced };
  }

  /**
   * A job wants more context than `entry` has: once its jobs are done (waited for here; jobs keep
   * being placed on it meanwhile only by hives that do not know the job waits), it is unloaded, and
   * the caller loads the model again with the context wanted.
   */
  async function reloadForContext(
    entry: Entry,
    wanted: number,
    say: (text: string) => void,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    const { id, contextSize } = entry.handle.info;
    const why = `worker ${id} has ${contextSize} tokens of context and the job asks for ${wanted}`;
    if (entry.activeJobs > 0 && !entry.stopping) {
      say(`${why}: it is reloaded once its ${entry.activeJobs} running job(s) are done`);
      await raceSignal(new Promise<void>((resolve) => entry.onIdle.push(resolve)), signal);
      return;
    }
    await raceSignal(
      stopEntry(entry, `reloading ${entry.model.id} with ${wanted} tokens of context (${why})`),
      signal,
    );
  }

  // Heartbeats: silent for the timeout → unhealthy (and said once); for twice that → killed,
  // which the exit handler then treats as a crash (restart policy applies).
  const health = setInterval(() => {
    const now = Date.now();
    for (const entry of entries.values()) {
      if (entry.stopping) continue;
      const silentMs = now - entry.lastHeartbeatAt;
      if (silentMs > 2 * heartbeatTimeoutMs) {
        narrate(
          `worker ${entry.handle.info.id} sent no heartbeat for ${Math.round(silentMs / 1000)} s; killing it`,
        );
        try {
          process.kill(entry.handle.info.pid, 'SIGKILL');
        } catch {
          // already gone: its exit is on the way
        }
      } else if (silentMs > heartbeatTimeoutMs && !entry.unhealthy) {
        entry.unhealthy = true;
        event('unhealthy');
        narrate(`worker ${entry.handle.info.id} missed its heartbeats for ${Math.round(silentMs / 1000)} s`);
        changed();
      } else if (silentMs <= heartbeatTimeoutMs && entry.unhealthy) {
        entry.unhealthy = false;
        changed();
      }
    }
  }, HEALTH_CHECK_MS);
  health.unref();

  return {
    async acquire(model, options = {}) {
      if (closed) throw new RbeeError('NODE_SHUTTING_DOWN', 'the node is shutting down');
      const say = options.narrate ?? (() => undefined);
      const wanted = options.contextSize;
      let entry: Entry | undefined;
      let loadMs: number | undefined;
      // until a worker of the model with the context the job wants is loaded (or this job loads one)
      for (;;) {
        const found = findFor(model.id);
        if (found !== undefined && hasContext(model, found.handle.info.contextSize, wanted)) {
          const chosen = options.device;
          say(
            `worker ${found.handle.info.id} already has ${model.id} loaded on ${deviceName(found.device)}` +
              (chosen === undefined || sameDevice(chosen, found.device)
                ? ''
                : `; using it rather than ${deviceName(chosen)} (one worker per model)`),
          );
          entry = found;
          break;
        }
        if (found !== undefined) {
          await reloadForContext(found, wanted!, say, options.signal);
          continue;
        }
        const pending = spawning.get(model.id);
        if (pending !== undefined && !hasContext(model, pending.contextSize, wanted)) {
          say(
            `waiting for the worker loading ${model.id}, then reloading it with ${wanted} tokens of context`,
          );
          await raceSignal(
            pending.entry.catch(() => undefined),
            options.signal,
          );
          continue;
        }
        refuseIfOpen(model);
        const device = options.device ?? init.pickDevice?.(model) ?? CPU_DEVICE;
        // A cancelled job stops waiting; the load goes on for whoever asks next.
        const loadStarted = performance.now();
        entry = await raceSignal(startSpawn(model, say, device, contextFor(model, wanted)), options.signal);
        loadMs = performance.now() - loadStarted;
        if (!hasContext(model, entry.handle.info.contextSize, wanted)) {
          say(
            `the worker got ${entry.handle.info.contextSize} tokens of context, not the ${wanted} asked for`,
          );
        }
        break;
      }
      const leased = entry;
      leased.activeJobs += 1;
      clearTimeout(leased.idleTimer);
      changed();
      let released = false;
      return {
        worker: snapshot(leased),
        ...(loadMs === undefined ? {} : { loadMs }),
        generate: (request, opts) => leased.handle.generate(request, opts),
        embed: (texts, opts) => leased.handle.embed(texts, opts),
        rank: (query, documents, opts) => leased.handle.rank(query, documents, opts),
        countTokens: (request) => leased.handle.countTokens(request),
        release(opts = {}) {
          if (released) return;
          released = true;
          if (opts.keepAliveS !== undefined) leased.keepAliveS = opts.keepAliveS;
          leased.activeJobs -= 1;
          leased.lastUsedAt = Date.now();
          if (entries.get(leased.handle.info.id) === leased || leased.stopping) scheduleIdle(leased);
          changed();
        },
      };
    },
    list: () => [...entries.values()].map(snapshot),
    heldOn: (device) => (device.backend === 'cpu' ? 0 : heldOn(device)),
    breakers: () => policy.openBreakers(),
    usersOf: (modelId) => [...entries.values()].filter((e) => e.model.id === modelId).map(snapshot),
    async stop(id, reason) {
      const entry = entries.get(id);
      if (entry === undefined) throw new RbeeError('NOT_FOUND', `no worker ${id}`);
      return stopEntry(entry, reason);
    },
    async stopAll() {
      closed = true;
      clearInterval(health);
      for (const timer of restartTimers) clearTimeout(timer);
      restartTimers.clear();
      await Promise.allSettled([...spawning.values()].map((s) => s.entry));
      await Promise.all([...entries.values()].map((e) => stopEntry(e, 'the node is shutting down')));
    },
  };
}
