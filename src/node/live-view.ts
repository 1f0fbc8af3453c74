/**
 * The node's live view for dashboards: this hive's own sections, joined with what the other members
 * of the cluster publish, recomputed when marked dirty, coalesced so a burst of changes (heartbeats,
 * download progress) costs one update per interval, and sent whole to every subscriber of
 * `GET /v1/events`.
 */
import { freemem, loadavg, totalmem } from 'node:os';
import type { DeviceInfo } from '../engine/types.js';
import type { Health, NarrationEvent } from '../shared/wire.js';
import type { ClusterView, HiveState, HiveView, NodeEvent } from '../shared/view.js';
import type { Provisioner } from './hive/provisioner.js';
import type { WorkerPool } from './hive/worker-pool.js';
import type { JobManager } from './jobs/job-manager.js';
import type { ModelCatalog } from './store/model-catalog.js';

/** What the live view needs of the cluster: who this node is, the queen, and the others' states. */
export interface ClusterSource {
  selfId(): string;
  queen(): { id: string; term: number } | null;
  /** Live members other than this node whose published state parsed. */
  remotes(): { id: string; lastSeen: number; state: HiveState }[];
}

export type Section = 'hives' | 'workers' | 'models' | 'downloads' | 'jobs';

export interface LiveViewInit {
  nodeName: string;
  health: () => Health;
  devices: () => DeviceInfo | undefined;
  workers: WorkerPool;
  catalog: ModelCatalog;
  provisioner: Provisioner;
  jobs: JobManager;
  /** The cluster, once joined; without one the view is this hive alone, its own queen. */
  cluster: () => ClusterSource | undefined;
  /** Called whenever a section of this hive changes (the cluster link publishes it). */
  onLocalChange?: () => void;
  /** Shortest time between two updates of one section. Defaults to 100 ms. */
  coalesceMs?: number;
}

export interface LiveView {
  snapshot(): ClusterView;
  /** Every hive of the cluster as dashboards see it (what `GET /v1/cluster` lists). */
  hives(): HiveView[];
  /** This hive's own state, as published to the cluster. */
  localState(): HiveState;
  /** `origin: 'cluster'` when the change came from another member (it is not published again). */
  markDirty(section: Section, origin?: 'local' | 'cluster'): void;
  narration(event: NarrationEvent): void;
  subscribe(listener: (event: NodeEvent) => void): () => void;
  close(): void;
}

export function createLiveView(init: LiveViewInit): LiveView {
  const listeners = new Set<(event: NodeEvent) => void>();
  const dirty = new Set<Section>();
  const coalesceMs = init.coalesceMs ?? 100;
  let timer: NodeJS.Timeout | undefined;
  const selfId = (): string => init.cluster()?.selfId() ?? init.nodeName;

  const local = {
    hive: (): HiveState['hive'] => {
      const devices = init.devices();
      return {
        name: init.nodeName,
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
      };
    },
    workers: (hive: string): HiveState['workers'] =>
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
    models: (hive: string): HiveState['models'] =>
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
    downloads: (hive: string): HiveState['downloads'] =>
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
  };

  const remotes = (): { id: string; lastSeen: number; state: HiveState }[] => init.cluster()?.remotes() ?? [];

  const sections = {
    hives: (): HiveView[] => {
      const self = selfId();
      const queen = init.cluster()?.queen() ?? (init.cluster() === undefined ? { id: self, term: 0 } : null);
      const flags = (id: string): { queen: boolean; term: number } => ({
        queen: queen?.id === id,
        term: queen?.id === id ? queen.term : 0,
      });
      return [
        { id: self, local: true, ...flags(self), ...local.hive(), lastSeen: Date.now() },
        ...remotes().map(({ id, lastSeen, state }) => ({
          ...state.hive,
          id,
          local: false,
          ...flags(id),
          lastSeen,
        })),
      ];
    },
    // a member's items always carry its peer id, whatever it published
    workers: () => [
      ...local.workers(selfId()),
      ...remotes().flatMap((r) => r.state.workers.map((w) => ({ ...w, hive: r.id }))),
    ],
    models: () => [
      ...local.models(selfId()),
      ...remotes().flatMap((r) => r.state.models.map((m) => ({ ...m, hive: r.id }))),
    ],
    downloads: () => [
      ...local.downloads(selfId()),
      ...remotes().flatMap((r) => r.state.downloads.map((d) => ({ ...d, hive: r.id }))),
    ],
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

  function markDirty(section: Section, origin: 'local' | 'cluster' = 'local'): void {
    // only this hive's own changes are published; echoing the others' would ping-pong forever
    if (origin === 'local' && section !== 'jobs') init.onLocalChange?.();
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
    hives: () => sections.hives(),
    localState: () => {
      const self = selfId();
      return {
        hive: local.hive(),
        workers: local.workers(self),
        models: local.models(self),
        downloads: local.downloads(self),
      };
    },
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
