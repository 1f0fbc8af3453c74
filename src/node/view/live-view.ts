/**
 * The node's live view for dashboards: this hive's own sections, joined with what the other members
 * of the cluster publish, recomputed when marked dirty, coalesced so a burst of changes (heartbeats,
 * download progress) costs one update per interval, and sent whole to every subscriber of
 * `GET /v1/events`.
 */
import type { Health, NarrationEvent } from '../../shared/wire.js';
import type { ClusterView, HiveState, HiveView, NodeEvent } from '../../shared/view.js';
import type { Hive } from '../hive/index.js';
import type { JobManager } from '../jobs/index.js';

/** What the live view needs of the cluster: who this node is, the queen, and the others' states. */
export interface ClusterSource {
  selfId(): string;
  queen(): { id: string; term: number } | null;
  /** Live members other than this node whose published state parsed. */
  remotes(): { id: string; lastSeen: number; state: HiveState }[];
}

export type Section = 'hives' | 'workers' | 'models' | 'downloads' | 'jobs';

export interface LiveViewInit {
  health: () => Health;
  /** This node's hive: its own sections of the view. */
  local: Hive;
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
  const selfId = (): string => init.local.id;

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
        { id: self, local: true, ...flags(self), ...init.local.state().hive, lastSeen: Date.now() },
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
      ...init.local.state().workers,
      ...remotes().flatMap((r) => r.state.workers.map((w) => ({ ...w, hive: r.id }))),
    ],
    models: () => [
      ...init.local.state().models,
      ...remotes().flatMap((r) => r.state.models.map((m) => ({ ...m, hive: r.id }))),
    ],
    downloads: () => [
      ...init.local.state().downloads,
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
