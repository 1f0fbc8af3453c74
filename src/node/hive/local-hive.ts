/**
 * This machine as a Hive: its published state (devices, memory, workers, models, downloads) and
 * the happy flow of one job on it: the model made sure of on disk (downloaded or generated, with
 * progress narrated), a worker acquired (spawned if needed) on the device the queen chose or, without
 * one, the device this hive picks by the scheduler's own rule, tokens streamed from it. The hive
 * publishes the backends it allows (its `backend` setting), so the queen never chooses another.
 */
import { promptOf } from '../../shared/prefix.js';
import { freemem, loadavg, totalmem } from 'node:os';
import { describeCpu } from '../../engine/index.js';
import type { Backend, DeviceInfo, GenerateRequest } from '../../engine/types.js';
import { parseKeepAlive } from '../../shared/duration.js';
import { RbeeError } from '../../shared/errors.js';
import { mib } from '../../shared/format.js';
import type { EngineBuildView, HiveState } from '../../shared/view.js';
import type { DoneEvent, Health, JobRequest, NarrationSource, Progress } from '../../shared/wire.js';
import type { ModelRef, Provisioner } from '../models/index.js';
import { neededBytes, strongestDeviceWithRoom } from '../queen/index.js';
import type { ModelCatalog } from '../store/index.js';
import type { Hive, HiveJob } from './hive.js';
import { CPU_DEVICE, deviceName, type DeviceChoice, type WorkerPool } from './worker-pool.js';

export interface LocalHiveInit {
  /** The hive's id in the cluster; changes once the node has joined (its peer id). */
  id: () => string;
  name: string;
  health: () => Health;
  devices: () => DeviceInfo | undefined;
  /** Which backends workers may use: `auto` (every one found, GPUs first) or only this one (and the CPU). */
  backend: 'auto' | Backend;
  parseModelRef: (input: string) => ModelRef;
  provisioner: Provisioner;
  catalog: ModelCatalog;
  workers: WorkerPool;
  /** RAM this hive keeps free for everything else (published for the queen's arithmetic). */
  reserveBytes: number;
  /** Slots each worker starts with. */
  slotsPerWorker: number;
  /** The native llama.cpp build here, while one is due, runs, or last ended (idle-build.ts). */
  engineBuild?: () => EngineBuildView | undefined;
}

/** Prefix keys published per worker: three per slot (see shared/prefix.ts) for up to 16 slots. */
const MAX_PUBLISHED_PREFIXES = 48;

/** How long a read of the load average stands (a file read each time; the kernel updates it every 5 s). */
const LOAD_AVERAGE_MS = 1000;

export function createLocalHive(init: LocalHiveInit): Hive {
  let load = { value: 0, at: -Infinity };
  const loadAverage = (): number => {
    const at = performance.now();
    if (at - load.at >= LOAD_AVERAGE_MS) load = { value: Math.round(loadavg()[0]! * 100) / 100, at };
    return load.value;
  };
  const engineBuild = (): { engineBuild?: EngineBuildView } => {
    const view = init.engineBuild?.();
    return view === undefined ? {} : { engineBuild: view };
  };
  // until the GPU probe has answered, the CPU as the OS describes it (not a placeholder of zeros)
  let cpu: HiveState['hive']['cpu'] | undefined;
  const hiveInfo = (): HiveState['hive'] => {
    const devices = init.devices();
    return {
      name: init.name,
      health: init.health().state === 'ready' ? 'ready' : 'degraded',
      cpu: devices?.cpu ?? (cpu ??= describeCpu()),
      ramTotalBytes: totalmem(),
      ramFreeBytes: freemem(),
      loadAverage: loadAverage(),
      gpus: (devices?.gpus ?? []).map((g) => ({
        index: g.index,
        name: g.name,
        backend: g.backend,
        vramTotalBytes: g.vramTotalBytes ?? 0,
        // probed once; what this hive's workers loaded there since is no longer free
        vramFreeBytes: Math.max(
          0,
          (g.vramFreeBytes ?? 0) - init.workers.heldOn({ backend: g.backend, index: g.index }),
        ),
      })),
      backends: allowedBackends(devices?.backends ?? ['cpu'], init.backend),
      reserveBytes: init.reserveBytes,
      slotsPerWorker: init.slotsPerWorker,
      ...engineBuild(),
    };
  };

  const state = (): HiveState => {
    const hive = init.id();
    return {
      hive: hiveInfo(),
      workers: init.workers.list().map((w) => ({
        id: w.id,
        hive,
        pid: w.pid,
        model: w.model,
        backend: w.backend,
        device: w.device,
        state: w.state,
        slots: w.slots,
        // the jobs leased on it, known at once (the worker's heartbeat says the same a beat later)
        slotsBusy: Math.min(w.slots, w.activeJobs),
        // what its slots keep cached, for the queen's prefix affinity (bounded: a few per slot)
        prefixes: w.slotCache.flatMap((slot) => slot.prefixes).slice(0, MAX_PUBLISHED_PREFIXES),
        tokensPerSecond: w.tokensPerSecond,
        memoryBytes: w.memoryBytes,
        startedAt: w.startedAt,
        lastUsedAt: w.lastUsedAt,
        keepAliveS: w.keepAliveS,
        contextSize: w.contextSize,
        ...(w.binary === undefined ? {} : { binary: w.binary }),
        ...(w.flashAttention === undefined ? {} : { flashAttention: w.flashAttention }),
      })),
      models: init.catalog.list().map((m) => ({
        id: m.id,
        hive,
        name: m.name,
        ref: m.ref,
        bytes: m.bytes,
        quantization: m.quantization,
        architecture: m.architecture,
        contextLength: m.contextLength,
        source: m.source,
        lastUsedAt: m.lastUsedAt,
        addedAt: m.addedAt,
        sha256: m.sha256,
      })),
      downloads: init.provisioner.inProgress().map(({ ref, progress }) => ({
        ref,
        hive,
        phase: progress?.phase ?? 'resolving',
        bytes: progress?.bytes ?? 0,
        ...(progress?.file === undefined ? {} : { file: progress.file }),
        ...(progress?.totalBytes === undefined ? {} : { totalBytes: progress.totalBytes }),
        ...(progress?.bytesPerSecond === undefined ? {} : { bytesPerSecond: progress.bytesPerSecond }),
        ...(progress?.etaSeconds === undefined ? {} : { etaSeconds: progress.etaSeconds }),
        ...(progress?.from === undefined ? {} : { from: progress.from }),
      })),
    };
  };

  /** The queen's device, when this hive may use it; undefined leaves the choice to the hive. */
  const deviceFor = (job: HiveJob, say: (text: string) => void): DeviceChoice | undefined => {
    const chosen = job.device;
    if (chosen === undefined) return undefined;
    if (chosen.backend === 'cpu' || chosen.index < 0) return CPU_DEVICE;
    const allowed = hiveInfo().backends;
    const backend = GPU_BACKENDS.find((b) => b === chosen.backend);
    if (backend !== undefined && allowed.includes(backend)) return { backend, index: chosen.index };
    say(
      `${deviceName(chosen)} is not for this hive (backends: ${allowed.join(', ')}); it picks its own device`,
    );
    return undefined;
  };

  return {
    get id() {
      return init.id();
    },
    name: init.name,
    state,
    async run(job, { signal, emit }) {
      const narrate = (source: NarrationSource, text: string, progress?: Progress): void =>
        void emit({
          type: 'narration',
          source,
          node: init.name,
          text,
          ...(progress === undefined ? {} : { progress }),
        });
      const { request } = job;
      const ref = init.parseModelRef(request.model);
      const keepAliveS = request.keepAlive === undefined ? undefined : parseKeepAlive(request.keepAlive);

      let lastLine: string | undefined;
      const { model, cached } = await init.provisioner.ensure(ref, {
        signal,
        onProgress: (p) => {
          if (p.phase === 'downloading') {
            const total = p.totalBytes === undefined ? '' : ` of ${mib(p.totalBytes)}`;
            const from = p.from === undefined ? '' : ` from ${p.from}`;
            narrate('hive', `downloading ${p.file ?? request.model}${from}: ${mib(p.bytes)}${total}`, {
              bytes: p.bytes,
              ...(p.totalBytes === undefined ? {} : { totalBytes: p.totalBytes }),
              ...(p.bytesPerSecond === undefined ? {} : { bytesPerSecond: p.bytesPerSecond }),
              ...(p.etaSeconds === undefined ? {} : { etaSeconds: p.etaSeconds }),
            });
            return;
          }
          // The line after provisioning says the model is ready, so 'done' needs no line of its own.
          if (p.phase === 'done') return;
          const line = p.message ?? `${p.phase} ${p.file ?? request.model}`;
          if (line !== lastLine) narrate('hive', line);
          lastLine = line;
        },
      });
      narrate(
        'hive',
        cached
          ? `model ${model.id} is on disk (${mib(model.bytes)}, ${model.quantization})`
          : `model ${model.id} ready (${mib(model.bytes)}, ${model.quantization})`,
      );

      const device = deviceFor(job, (text) => narrate('hive', text));
      const lease = await init.workers.acquire(model, {
        signal,
        narrate: (text) => narrate('hive', text),
        ...(device === undefined ? {} : { device }),
        ...(request.contextSize === undefined ? {} : { contextSize: request.contextSize }),
      });
      // how long this job waited for the model to load, when it did (Ollama's load_duration)
      const loaded = lease.loadMs === undefined ? {} : { loadMs: Math.round(lease.loadMs) };
      try {
        /** The one event of a job answered whole (embeddings, scores): no tokens, its time in all. */
        const answered = (promptTokens: number, answer: Pick<DoneEvent, 'embeddings' | 'scores'>) => {
          const end = Date.now();
          return emit({
            type: 'done',
            model: model.id,
            finishReason: 'stop',
            usage: { promptTokens, completionTokens: 0 },
            timings: {
              timeToFirstTokenMs: end - job.acceptedAt,
              tokensPerSecond: 0,
              totalMs: end - job.acceptedAt,
              ...loaded,
            },
            ...answer,
          });
        };
        if (request.embed !== undefined) {
          narrate('worker', `embedding ${request.embed.length} text(s) on worker ${lease.worker.id}`);
          const result = await lease.embed(request.embed, { signal });
          await answered(result.promptTokens, { embeddings: result.embeddings });
          return;
        }
        if (request.rank !== undefined) {
          const { query, documents } = request.rank;
          narrate('worker', `ranking ${documents.length} document(s) on worker ${lease.worker.id}`);
          const result = await lease.rank(query, documents, { signal });
          await answered(result.promptTokens, { scores: result.scores });
          return;
        }
        narrate('worker', `generating on worker ${lease.worker.id}`);
        let firstTokenAt: number | undefined;
        for await (const chunk of lease.generate(generateRequest(request), { signal })) {
          if (chunk.type === 'token') {
            firstTokenAt ??= Date.now();
            // awaited: a remote entry node's slow reader holds the worker back (back-pressure)
            await emit(
              chunk.logprobs === undefined && chunk.promptTokens === undefined
                ? { type: 'token', text: chunk.text, tokens: chunk.tokens }
                : chunk,
            );
            continue;
          }
          const end = Date.now();
          await emit({
            type: 'done',
            model: model.id,
            finishReason: chunk.finishReason,
            ...(chunk.stopSequence === undefined ? {} : { stopSequence: chunk.stopSequence }),
            usage: chunk.usage,
            timings: {
              timeToFirstTokenMs: (firstTokenAt ?? end) - job.acceptedAt,
              tokensPerSecond: chunk.tokensPerSecond,
              totalMs: end - job.acceptedAt,
              ...loaded,
            },
          });
          return;
        }
        throw new RbeeError('WORKER_CRASHED', 'the worker ended the stream without a result');
      } finally {
        lease.release(keepAliveS === undefined ? {} : { keepAliveS });
      }
    },
  };
}

/** The engine's request: the job's sampling as is, and its prompt as chat messages unless raw. */
function generateRequest(request: JobRequest): GenerateRequest {
  const {
    model: _model,
    prompt: _prompt,
    messages: _messages,
    system: _system,
    raw: _raw,
    keepAlive: _keep,
    hive: _hive,
    priority: _priority,
    ...sampling
  } = request;
  return { ...sampling, ...promptOf(request) };
}

const GPU_BACKENDS: readonly Exclude<Backend, 'cpu'>[] = ['cuda', 'vulkan', 'metal'];

/** The backends a hive set to `setting` may use among those it found: the CPU always stays. */
export function allowedBackends(found: readonly string[], setting: 'auto' | Backend): string[] {
  if (setting === 'auto') return [...found];
  return found.filter((b) => b === 'cpu' || b === setting);
}

/**
 * The device this hive picks for a model when the queen chose none: the scheduler's own rule over
 * this hive's published state (GPUs of allowed backends before the CPU), the CPU when none has room
 * (its memory check then says why).
 */
export function bestDevice(state: HiveState, model: { id: string; bytes: number }): DeviceChoice {
  const device = strongestDeviceWithRoom(state, neededBytes(model.bytes), model.id)?.device;
  const backend = GPU_BACKENDS.find((b) => b === device?.backend);
  return device === undefined || backend === undefined ? CPU_DEVICE : { backend, index: device.index };
}
