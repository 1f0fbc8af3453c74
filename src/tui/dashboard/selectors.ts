/**
 * What each view lists, in display order, with a stable key per row. Keys combine id and hive, so
 * rows from other machines slot in as the cluster view grows and a selection follows its row, not
 * its position.
 */
import {
  jobRecordTimings,
  type ClusterJobRecord,
  type ClusterView,
  type DownloadView,
  type HiveView,
  type JobRecord,
  type JobView,
  type ModelView,
  type PlaceOption,
  type PlacePreview,
  type QueuePositionView,
  type WorkerView,
} from '../../shared/view.js';
import { formatBytes, formatDuration, formatMs } from './format.js';
import type { ClusterJobsState, DashboardState, ViewId } from './state.js';

/**
 * A job as the Jobs view shows it: the cluster's jobs table row (where it entered, where it runs),
 * brought up to date by this node's live view for the jobs that entered here.
 */
export interface JobLine {
  id: string;
  model: string;
  state: JobRecord['state'];
  /** The name of the node it entered through. */
  entry: string;
  /** The name of the hive it runs (or ran) on, once placed. */
  hive: string | undefined;
  worker: string | undefined;
  reason: string | undefined;
  acceptedAt: number;
  finishedAt: number | undefined;
  timeToFirstTokenMs: number | undefined;
  tokensPerSecond: number | undefined;
  completionTokens: number | undefined;
  error: string | undefined;
  /** A queued job's place in the queen's queue, when its entry node knows it. */
  queuePosition: QueuePositionView | undefined;
}

type JobsSource = Pick<DashboardState, 'cluster' | 'clusterJobs'>;
type SelectionSource = Pick<DashboardState, 'cluster' | 'clusterJobs' | 'selection'>;

export type Row =
  | { view: 'cluster'; key: string; hive: HiveView }
  | { view: 'workers'; key: string; worker: WorkerView }
  | { view: 'models'; key: string; model: ModelView }
  | { view: 'jobs'; key: string; job: JobLine }
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

/** Queued, placing and running: a job that can still be cancelled. */
export function isUnfinished(state: JobLine['state']): boolean {
  return state === 'queued' || state === 'placing' || state === 'running';
}

function fromRecord(row: ClusterJobRecord): JobLine {
  const { timeToFirstTokenMs, tokensPerSecond } = jobRecordTimings(row);
  return {
    id: row.id,
    model: row.model,
    state: row.state,
    entry: row.entry.name,
    hive: row.hiveName ?? row.hive,
    worker: row.worker,
    reason: row.reason,
    acceptedAt: row.acceptedAt,
    finishedAt: row.finishedAt,
    timeToFirstTokenMs,
    tokensPerSecond,
    completionTokens: row.completionTokens,
    error: row.errorCode === undefined ? undefined : `${row.errorCode}: ${row.errorMessage ?? ''}`,
    queuePosition: row.state === 'queued' ? row.queuePosition : undefined,
  };
}

/** A job of this node's live view over its table row: the live view is pushed, the list polled. */
function withLive(line: JobLine | undefined, live: JobView, here: string): JobLine {
  // the live view says 'running' from acceptance on; the table tells queued and placing apart
  const state =
    live.state === 'running' && line !== undefined && isUnfinished(line.state) ? line.state : live.state;
  return {
    id: live.id,
    model: live.model,
    state,
    entry: line?.entry ?? here,
    hive: line?.hive,
    worker: line?.worker,
    reason: line?.reason,
    acceptedAt: live.acceptedAt,
    finishedAt: live.finishedAt ?? line?.finishedAt,
    timeToFirstTokenMs: live.timeToFirstTokenMs ?? line?.timeToFirstTokenMs,
    tokensPerSecond: live.tokensPerSecond ?? line?.tokensPerSecond,
    completionTokens: live.completionTokens ?? line?.completionTokens,
    error: live.error ?? line?.error,
    queuePosition: state === 'queued' ? line?.queuePosition : undefined,
  };
}

/** Every job the dashboard knows of: the cluster's list merged with this node's live jobs. */
export function jobLines(state: JobsSource): JobLine[] {
  const lines = new Map<string, JobLine>(
    (state.clusterJobs?.jobs ?? []).map((row) => [row.id, fromRecord(row)]),
  );
  const here = state.cluster?.hives.find((h) => h.local)?.name ?? 'this node';
  for (const live of state.cluster?.jobs ?? []) lines.set(live.id, withLive(lines.get(live.id), live, here));
  return [...lines.values()];
}

/** Unfinished jobs first (newest first), then finished ones, newest first. */
export function sortedJobs(state: JobsSource): JobLine[] {
  const open = (j: JobLine): number => (isUnfinished(j.state) ? 0 : 1);
  const when = (j: JobLine): number => j.finishedAt ?? j.acceptedAt;
  return jobLines(state).sort((a, b) => open(a) - open(b) || when(b) - when(a) || (a.id < b.id ? -1 : 1));
}

/** A job's state as the Jobs view shows it: a queued job with its place, `queued 2/5`. */
export function jobStateLabel(job: Pick<JobLine, 'state' | 'queuePosition'>): string {
  const at = job.queuePosition;
  return job.state === 'queued' && at !== undefined ? `queued ${at.position}/${at.queued}` : job.state;
}

/**
 * The header's job counts, over the whole cluster: running (placed, generating) and queued. The
 * queued count is the queen's queue (every waiting job, whoever's) once known, else the queued rows.
 */
export function jobCounts(state: JobsSource): { running: number; queued: number } {
  const lines = jobLines(state);
  const running = lines.filter((j) => j.state === 'running' || j.state === 'placing').length;
  const rows = lines.filter((j) => j.state === 'queued').length;
  const queue = state.clusterJobs?.queue;
  const queued =
    queue === undefined
      ? rows
      : Math.max(
          rows,
          queue.reduce((n, q) => n + q.queued, 0),
        );
  return { running, queued };
}

/** One line of the Jobs view's queue section: a model's waiting jobs and the estimated wait. */
export interface QueueLine {
  model: string;
  queued: number;
  /** "1 interactive, 2 batch", or '' from a queen that does not tell them apart. */
  split: string;
  /** "about 12s", or "unknown" before any job of the model ended. */
  wait: string;
}

export function queueLines(state: Pick<DashboardState, 'cluster' | 'clusterJobs'>): QueueLine[] {
  return (state.clusterJobs?.queue ?? []).map((q) => ({
    model: modelLabel(state.cluster, q.model),
    queued: q.queued,
    split:
      q.interactive === undefined || q.batch === undefined
        ? ''
        : [q.interactive > 0 ? `${q.interactive} interactive` : '', q.batch > 0 ? `${q.batch} batch` : '']
            .filter((t) => t !== '')
            .join(', '),
    wait: q.estimatedWaitS === undefined ? 'unknown' : `about ${formatDuration(q.estimatedWaitS * 1000)}`,
  }));
}

/** A hive's line of the placement preview: what `rbee place` prints for it, in cells. */
export interface PlaceRow {
  hive: string;
  /** The hive the scheduler picks. */
  chosen: boolean;
  kind: PlaceOption['kind'];
  /** "1.2 GB (observed)", "? (not fetched yet)". */
  needs: string;
  free: string;
  ttft: string;
  speed: string;
  why: string;
  devices: { name: string; free: string; verdict: string; chosen: boolean }[];
}

function expected(
  figure: { value: number; basis: 'worker' | 'jobs'; jobs?: number | undefined } | undefined,
  text: (value: number) => string,
): string {
  if (figure === undefined) return 'no data';
  const jobs = figure.jobs ?? 0;
  return `${text(figure.value)} (${figure.basis === 'worker' ? 'warm worker' : `median of ${jobs} job${jobs === 1 ? '' : 's'}`})`;
}

/** The scheduler's table for a model, a row per hive with its devices (`rbee place`, `GET /v1/place`). */
export function placeRows(preview: PlacePreview): PlaceRow[] {
  return preview.options.map((o) => ({
    hive: o.name,
    chosen: preview.placement?.hive === o.hive,
    kind: o.kind,
    needs: o.needed === undefined ? '? (not fetched)' : `${formatBytes(o.needed.bytes)} (${o.needed.basis})`,
    free: o.freeBytes === undefined ? '–' : formatBytes(o.freeBytes),
    ttft: expected(o.expected.timeToFirstTokenMs, (v) => formatMs(v)),
    speed: expected(o.expected.tokensPerSecond, (v) => `${v.toFixed(1)} tok/s`),
    why: o.why,
    devices: o.devices.map((d) => ({
      name: d.name,
      free: formatBytes(d.freeBytes),
      verdict: d.allowed ? (d.fits ? 'fits' : 'no room') : 'not used (backend setting)',
      chosen: d.chosen,
    })),
  }));
}

/** Members whose jobs are missing from the list, and why the list itself may be stale. */
export function jobsGaps(jobs: ClusterJobsState | undefined): string | undefined {
  if (jobs === undefined) return undefined;
  if (jobs.error !== undefined) return `other nodes' jobs unavailable: ${jobs.error}`;
  if (jobs.unanswered.length === 0) return undefined;
  const names = jobs.unanswered.map((n) => n.name ?? n.id).join(', ');
  return `${names} did not answer: ${jobs.unanswered.length === 1 ? 'its' : 'their'} jobs are missing`;
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

export function rowsFor(state: JobsSource, view: ViewId): Row[] {
  const { cluster } = state;
  switch (view) {
    case 'cluster':
      return sortedHives(cluster).map((hive) => ({ view, key: hive.id, hive }));
    case 'workers':
      return sortedWorkers(cluster).map((worker) => ({ view, key: `${worker.hive}/${worker.id}`, worker }));
    case 'models':
      return sortedModels(cluster).map((model) => ({ view, key: `${model.hive}/${model.id}`, model }));
    case 'jobs':
      return sortedJobs(state).map((job) => ({ view, key: job.id, job }));
    case 'chat':
      return chatModels(cluster).map(({ model, hives }) => ({ view, key: model.ref, model, hives }));
    case 'log':
      return [];
  }
}

/** The index of the selected row: the row with the remembered key, else the remembered position. */
export function selectedIndex(state: SelectionSource, view: ViewId): number {
  const rows = rowsFor(state, view);
  if (rows.length === 0) return -1;
  const selection = state.selection[view];
  if (selection === undefined) return 0;
  const byKey = rows.findIndex((r) => r.key === selection.key);
  return byKey !== -1 ? byKey : Math.min(selection.index, rows.length - 1);
}

export function selectedRow(state: SelectionSource, view: ViewId): Row | undefined {
  const index = selectedIndex(state, view);
  return index === -1 ? undefined : rowsFor(state, view)[index];
}

/** The model a chat message goes to: a typed ref wins, else the picker's selection. */
export function chatModel(
  state: Pick<DashboardState, 'cluster' | 'clusterJobs' | 'selection' | 'chat'>,
): string | undefined {
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
