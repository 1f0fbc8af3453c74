/**
 * What each view lists, in display order, with a stable key per row. Keys combine id and hive, so
 * rows from other machines slot in as the cluster view grows and a selection follows its row, not
 * its position.
 */
import type {
  ClusterView,
  DownloadView,
  HiveView,
  JobView,
  ModelView,
  WorkerView,
} from '../../shared/view.js';
import type { DashboardState, ViewId } from './state.js';

export type Row =
  | { view: 'cluster'; key: string; hive: HiveView }
  | { view: 'workers'; key: string; worker: WorkerView }
  | { view: 'models'; key: string; model: ModelView }
  | { view: 'jobs'; key: string; job: JobView }
  | { view: 'chat'; key: string; model: ModelView; hives: string[] };

const byText = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export function hiveNames(cluster: ClusterView | undefined): Map<string, string> {
  return new Map((cluster?.hives ?? []).map((h) => [h.id, h.name]));
}

export function hiveName(cluster: ClusterView | undefined, id: string): string {
  return hiveNames(cluster).get(id) ?? id;
}

export function sortedHives(cluster: ClusterView | undefined): HiveView[] {
  // This machine first, then the queen, then by name: the order a person looks for them in.
  const rank = (h: HiveView): number => (h.local ? 0 : h.queen ? 1 : 2);
  return [...(cluster?.hives ?? [])].sort((a, b) => rank(a) - rank(b) || byText(a.name, b.name));
}

export function sortedWorkers(cluster: ClusterView | undefined): WorkerView[] {
  const names = hiveNames(cluster);
  return [...(cluster?.workers ?? [])].sort(
    (a, b) =>
      byText(names.get(a.hive) ?? a.hive, names.get(b.hive) ?? b.hive) ||
      byText(a.model, b.model) ||
      byText(a.id, b.id),
  );
}

export function sortedModels(cluster: ClusterView | undefined): ModelView[] {
  const names = hiveNames(cluster);
  return [...(cluster?.models ?? [])].sort(
    (a, b) => byText(names.get(a.hive) ?? a.hive, names.get(b.hive) ?? b.hive) || byText(a.name, b.name),
  );
}

/** Running jobs first (newest first), then finished ones, newest first. */
export function sortedJobs(cluster: ClusterView | undefined): JobView[] {
  const running = (j: JobView): number => (j.state === 'running' ? 0 : 1);
  const when = (j: JobView): number => j.finishedAt ?? j.acceptedAt;
  return [...(cluster?.jobs ?? [])].sort((a, b) => running(a) - running(b) || when(b) - when(a));
}

export function sortedDownloads(cluster: ClusterView | undefined): DownloadView[] {
  return [...(cluster?.downloads ?? [])].sort((a, b) => byText(a.hive, b.hive) || byText(a.ref, b.ref));
}

/** The chat picker lists each model once, however many hives hold it. */
export function chatModels(cluster: ClusterView | undefined): { model: ModelView; hives: string[] }[] {
  const names = hiveNames(cluster);
  const byRef = new Map<string, { model: ModelView; hives: string[] }>();
  for (const model of sortedModels(cluster)) {
    const entry = byRef.get(model.ref);
    const hive = names.get(model.hive) ?? model.hive;
    if (entry === undefined) byRef.set(model.ref, { model, hives: [hive] });
    else entry.hives.push(hive);
  }
  return [...byRef.values()].sort((a, b) => byText(a.model.name, b.model.name));
}

export function rowsFor(state: Pick<DashboardState, 'cluster'>, view: ViewId): Row[] {
  const { cluster } = state;
  switch (view) {
    case 'cluster':
      return sortedHives(cluster).map((hive) => ({ view, key: hive.id, hive }));
    case 'workers':
      return sortedWorkers(cluster).map((worker) => ({ view, key: `${worker.hive}/${worker.id}`, worker }));
    case 'models':
      return sortedModels(cluster).map((model) => ({ view, key: `${model.hive}/${model.id}`, model }));
    case 'jobs':
      return sortedJobs(cluster).map((job) => ({ view, key: job.id, job }));
    case 'chat':
      return chatModels(cluster).map(({ model, hives }) => ({ view, key: model.ref, model, hives }));
    case 'log':
      return [];
  }
}

/** The index of the selected row: the row with the remembered key, else the remembered position. */
export function selectedIndex(state: Pick<DashboardState, 'cluster' | 'selection'>, view: ViewId): number {
  const rows = rowsFor(state, view);
  if (rows.length === 0) return -1;
  const selection = state.selection[view];
  if (selection === undefined) return 0;
  const byKey = rows.findIndex((r) => r.key === selection.key);
  return byKey !== -1 ? byKey : Math.min(selection.index, rows.length - 1);
}

export function selectedRow(
  state: Pick<DashboardState, 'cluster' | 'selection'>,
  view: ViewId,
): Row | undefined {
  const index = selectedIndex(state, view);
  return index === -1 ? undefined : rowsFor(state, view)[index];
}

/** The model a chat message goes to: a typed ref wins, else the picker's selection. */
export function chatModel(state: Pick<DashboardState, 'cluster' | 'selection' | 'chat'>): string | undefined {
  if (state.chat.model !== undefined) return state.chat.model;
  const row = selectedRow(state, 'chat');
  return row?.view === 'chat' ? row.model.ref : undefined;
}

export function queenOf(cluster: ClusterView | undefined): HiveView | undefined {
  return cluster?.hives.find((h) => h.queen);
}

/** What to call a model in a narrow column: its catalog name, else the last part of its ref. */
export function modelLabel(cluster: ClusterView | undefined, model: string): string {
  const known = cluster?.models.find((m) => m.ref === model || m.id === model || m.name === model);
  if (known !== undefined) return known.name;
  const last = model.replace(/^hf:/, '').split(/[/\\]/).at(-1) ?? model;
  return last.replace(/\.gguf$/i, '').replace(/-GGUF$/i, '') || model;
}
