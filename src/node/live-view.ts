/**
 * The node's live view for dashboards: sections are recomputed from their sources when marked
 * dirty, coalesced so a burst of changes (heartbeats, download progress) costs one update per
 * interval, and sent whole to every subscriber of `GET /v1/events`.
 */
import { freemem, totalmem } from 'node:os';
import type { DeviceInfo } from '../engine/types.js';
import type { Health, NarrationEvent } from '../shared/wire.js';
import type { ClusterView, HiveView, NodeEvent } from '../shared/view.js';
import type { Provisioner } from './hive/provisioner.js';
import type { WorkerPool } from './hive/worker-pool.js';
import type { JobManager } from './jobs/job-manager.js';
import type { ModelCatalog } from './store/model-catalog.js';

export type Section = 'hives' | 'workers' | 'models' | 'downloads' | 'jobs';

export interface LiveViewInit {
  nodeName: string;
  health: () => Health;
  devices: () => DeviceInfo | undefined;
  workers: WorkerPool;
  catalog: ModelCatalog;
  provisioner: Provisioner;
  jobs: JobManager;
  /** Shortest time between two updates of one section. Defaults to 100 ms. */
  coalesceMs?: number;
}

export interface LiveView {
  snapshot(): ClusterView;
  markDirty(section: Section): void;
  narration(event: NarrationEvent): void;
  subscribe(listener: (event: NodeEvent) => void): () => void;
  close(): void;
}

export function createLiveView(init: LiveViewInit): LiveView {
  const listeners = new Set<(event: NodeEvent) => void>();
  const dirty = new Set<Section>();
  const coalesceMs = init.coalesceMs ?? 100;
  let timer: NodeJS.Timeout | undefined;
  const hive = init.nodeName;

  const sections = {
    hives: (): HiveView[] => {
      const devices = init.devices();
      return [
        {
          id: hive,
          name: hive,
          local: true,
          queen: true,
          term: 0,
          health: init.health().state === 'ready' ? 'ready' : 'degraded',
          cpu: devices?.cpu ?? { model: 'unknown', physicalCores: 0, logicalCores: 0 },
          ramTotalBytes: totalmem(),
          ramFreeBytes: freemem(),
          gpus: (devices?.gpus ?? []).map((g) => ({
            index: g.index,
            name: g.name,
            backend: g.backend,
            vramTotalBytes: g.vramTotalBytes ?? 0,
            vramFreeBytes: g.vramFreeBytes ?? 0,
          })),
          backends: devices?.backends ?? ['cpu'],
          lastSeen: Date.now(),
        },
      ];
    },
    workers: () =>
      init.workers.list().map((w) => ({
        id: w.id,
        hive,
        pid: w.pid,
        model: w.model,
        backend: w.backend,
        device: w.device,
        state: w.state,
        slots: w.slots,
        slotsBusy: w.slotsBusy,
        tokensPerSecond: w.tokensPerSecond,
        memoryBytes: w.memoryBytes,
        startedAt: w.startedAt,
        lastUsedAt: w.lastUsedAt,
      })),
    models: () =>
      init.catalog.list().map((m) => ({
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
    downloads: () =>
      init.provisioner.inProgress().map(({ ref, progress }) => ({
        ref,
        hive,
        phase: progress?.phase ?? 'resolving',
        bytes: progress?.bytes ?? 0,
        ...(progress?.file === undefined ? {} : { file: progress.file }),
        ...(progress?.totalBytes === undefined ? {} : { totalBytes: progress.totalBytes }),
        ...(progress?.bytesPerSecond === undefined ? {} : { bytesPerSecond: progress.bytesPerSecond }),
        ...(progress?.etaSeconds === undefined ? {} : { etaSeconds: progress.etaSeconds }),
      })),
    jobs: () =>
      init.jobs.list().map((j) => ({
        id: j.id,
        model: j.model,
        state: j.state,
        acceptedAt: j.acceptedAt,
        ...(j.finishedAt === undefined ? {} : { finishedAt: j.finishedAt }),
        ...(j.timeToFirstTokenMs === undefined ? {} : { timeToFirstTokenMs: j.timeToFirstTokenMs }),
        ...(j.tokensPerSecond === undefined ? {} : { tokensPerSecond: j.tokensPerSecond }),
        ...(j.completionTokens === undefined ? {} : { completionTokens: j.completionTokens }),
        ...(j.error === undefined ? {} : { error: j.error }),
      })),
  } satisfies Record<Section, () => unknown[]>;

  const send = (event: NodeEvent): void => {
    for (const listener of listeners) listener(event);
  };

  function flush(): void {
    timer = undefined;
    const pending = [...dirty];
    dirty.clear();
    for (const section of pending) {
      send({ type: section, [section]: sections[section]() } as NodeEvent);
    }
  }

  // Free memory changes without any event: refresh the hive section every few seconds while watched.
  const refresh = setInterval(() => {
    if (listeners.size > 0) markDirty('hives');
  }, 2_000);
  refresh.unref();

  function markDirty(section: Section): void {
    if (listeners.size === 0) return;
    dirty.add(section);
    timer ??= setTimeout(flush, coalesceMs);
  }

  return {
    snapshot: () => ({
      health: init.health(),
      hives: sections.hives(),
      workers: sections.workers(),
      models: sections.models(),
      downloads: sections.downloads(),
      jobs: sections.jobs(),
    }),
    markDirty,
    narration: (event) => send(event),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    close() {
      clearInterval(refresh);
      clearTimeout(timer);
      listeners.clear();
    },
  };
}
