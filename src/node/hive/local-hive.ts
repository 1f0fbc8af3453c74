/**
 * This machine as a Hive: its published state (devices, memory, workers, models, downloads) and
 * the happy flow of one job on it: the model made sure of on disk (downloaded or generated, with
 * progress narrated), a worker acquired (spawned if needed), tokens streamed from it.
 */
import { freemem, loadavg, totalmem } from 'node:os';
import type { DeviceInfo, GenerateRequest } from '../../engine/types.js';
import { parseKeepAlive } from '../../shared/duration.js';
import { RbeeError } from '../../shared/errors.js';
import { mib } from '../../shared/format.js';
import type { HiveState } from '../../shared/view.js';
import type { Health, JobRequest, NarrationSource, Progress } from '../../shared/wire.js';
import type { ModelRef, Provisioner } from '../models/index.js';
import type { ModelCatalog } from '../store/index.js';
import type { Hive } from './hive.js';
import type { WorkerPool } from './worker-pool.js';

export interface LocalHiveInit {
  /** The hive's id in the cluster; changes once the node has joined (its peer id). */
  id: () => string;
  name: string;
  health: () => Health;
  devices: () => DeviceInfo | undefined;
  parseModelRef: (input: string) => ModelRef;
  provisioner: Provisioner;
  catalog: ModelCatalog;
  workers: WorkerPool;
  /** RAM this hive keeps free for everything else (published for the queen's arithmetic). */
  reserveBytes: number;
  /** Slots each worker starts with. */
  slotsPerWorker: number;
}

export function createLocalHive(init: LocalHiveInit): Hive {
  const hiveInfo = (): HiveState['hive'] => {
    const devices = init.devices();
    return {
      name: init.name,
      health: init.health().state === 'ready' ? 'ready' : 'degraded',
      cpu: devices?.cpu ?? { model: 'unknown', physicalCores: 0, logicalCores: 0 },
      ramTotalBytes: totalmem(),
      ramFreeBytes: freemem(),
      loadAverage: Math.round(loadavg()[0]! * 100) / 100,
      gpus: (devices?.gpus ?? []).map((g) => ({
        index: g.index,
        name: g.name,
        backend: g.backend,
        vramTotalBytes: g.vramTotalBytes ?? 0,
        vramFreeBytes: g.vramFreeBytes ?? 0,
      })),
      backends: devices?.backends ?? ['cpu'],
      reserveBytes: init.reserveBytes,
      slotsPerWorker: init.slotsPerWorker,
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
        tokensPerSecond: w.tokensPerSecond,
        memoryBytes: w.memoryBytes,
        startedAt: w.startedAt,
        lastUsedAt: w.lastUsedAt,
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
      })),
    };
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
            narrate('hive', `downloading ${p.file ?? request.model}: ${mib(p.bytes)}${total}`, {
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

      const lease = await init.workers.acquire(model, { signal, narrate: (text) => narrate('hive', text) });
      try {
        narrate('worker', `generating on worker ${lease.worker.id}`);
        let firstTokenAt: number | undefined;
        for await (const chunk of lease.generate(generateRequest(request), { signal })) {
          if (chunk.type === 'token') {
            firstTokenAt ??= Date.now();
            // awaited: a remote entry node's slow reader holds the worker back (back-pressure)
            await emit({ type: 'token', text: chunk.text, tokens: chunk.tokens });
            continue;
          }
          const end = Date.now();
          await emit({
            type: 'done',
            model: model.id,
            finishReason: chunk.finishReason,
            usage: chunk.usage,
            timings: {
              timeToFirstTokenMs: (firstTokenAt ?? end) - job.acceptedAt,
              tokensPerSecond: chunk.tokensPerSecond,
              totalMs: end - job.acceptedAt,
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
  const generate: GenerateRequest = { ...sampling };
  if (request.raw === true && request.prompt !== undefined) {
    generate.prompt = request.prompt;
    return generate;
  }
  const messages = request.messages ?? [{ role: 'user' as const, content: request.prompt ?? '' }];
  generate.messages =
    request.system === undefined ? messages : [{ role: 'system', content: request.system }, ...messages];
  return generate;
}
