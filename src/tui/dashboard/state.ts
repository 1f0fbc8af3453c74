/**
 * The dashboard's whole state and its pure reducer. Node events, key presses (already turned into
 * actions by the keymap) and results of side effects all come through `reduce`; side effects the
 * UI asks for (pull, spawn, stop, cancel, chat) are queued in `outbox` for the app to run, so that
 * this file stays free of I/O and every decision in it is unit-testable.
 */
import type { ErrorCode } from '../../shared/errors.js';
import type {
  ClusterJobRecord,
  ClusterView,
  NodeEvent,
  PlacePreview,
  QueueDepthView,
  UnansweredNode,
} from '../../shared/view.js';
import type { JobRequest, NarrationSource } from '../../shared/wire.js';
import { reduceChat, type ChatAction, type ChatState } from './state-chat.js';
import { editText, enqueue } from './state-ops.js';
import { hiveName, isUnfinished, rowsFor, selectedIndex, selectedRow } from './selectors.js';

export const VIEWS = ['cluster', 'workers', 'models', 'jobs', 'chat', 'log'] as const;
export type ViewId = (typeof VIEWS)[number];

export const VIEW_TITLES: Readonly<Record<ViewId, string>> = {
  cluster: 'Cluster',
  workers: 'Workers',
  models: 'Models',
  jobs: 'Jobs',
  chat: 'Chat',
  log: 'Log',
};

/** Narration kept in memory; older lines are dropped. */
export const LOG_LIMIT = 500;
export const LOG_SOURCES: readonly NarrationSource[] = ['keeper', 'queen', 'hive', 'worker'];

export type ConnectionState =
  | { status: 'waking' }
  | { status: 'wake-failed'; code: ErrorCode; error: string }
  | { status: 'connecting' }
  | { status: 'live' }
  | { status: 'reconnecting'; attempt: number; retryInMs: number; error: string };

export interface LogEntry {
  seq: number;
  ts: number;
  source: NarrationSource;
  node: string;
  text: string;
  jobId: string;
  /** Set on progress narration, which replaces its predecessor instead of adding a line. */
  progress: boolean;
}

export type Command =
  | { kind: 'pull'; ref: string }
  | { kind: 'spawn'; model: string; hive: string }
  | { kind: 'stop-worker'; id: string; hive: string }
  | { kind: 'cancel-job'; id: string }
  | { kind: 'place'; model: string }
  | { kind: 'chat'; turnId: number; request: JobRequest }
  | { kind: 'cancel-chat'; turnId: number };

export interface Outgoing {
  id: number;
  command: Command;
}

export type Dialog =
  | { kind: 'confirm'; question: string; command: Command }
  | { kind: 'prompt'; purpose: 'pull' | 'chat-model'; label: string; value: string };

export interface Notice {
  level: 'info' | 'ok' | 'error';
  text: string;
}

/**
 * The cluster's jobs as the node last listed them (`GET /v1/cluster/jobs`): polled often while Jobs
 * is shown, now and then otherwise (the header counts them).
 */
export interface ClusterJobsState {
  jobs: ClusterJobRecord[];
  /** Members that did not answer: their jobs are missing. */
  unanswered: UnansweredNode[];
  /** The queen's queue, per model (empty while nothing waits). */
  queue: QueueDepthView[];
  /** `now` when the list arrived. */
  at: number;
  /** Why the last poll failed, while it does (the live view still shows this node's jobs). */
  error?: string | undefined;
}

/** The placement preview of the model selected in Models (`GET /v1/place`, what `rbee place` prints). */
export interface PlaceState {
  /** The model's catalog id, as asked. */
  model: string;
  /** Its name, for the title while the table is on its way. */
  name: string;
  /** Asked, and the answer is on its way (the last table, if any, stays shown meanwhile). */
  pending: boolean;
  preview?: PlacePreview | undefined;
  /** Why the node could not compute it. */
  error?: string | undefined;
}

export interface DashboardState {
  now: number;
  connection: ConnectionState;
  /** Bumped to ask the app to try waking the node again. */
  wakeAttempt: number;
  cluster: ClusterView | undefined;
  clusterJobs: ClusterJobsState | undefined;
  /** `now` when the snapshot (and its health, with the node's uptime) arrived. */
  snapshotAt: number;
  view: ViewId;
  selection: Partial<Record<ViewId, { key: string; index: number }>>;
  details: boolean;
  help: boolean;
  /** The placement preview, while it is open. */
  place: PlaceState | undefined;
  dialog: Dialog | undefined;
  log: { entries: LogEntry[]; filter: NarrationSource | undefined; scroll: number; nextSeq: number };
  chat: ChatState;
  notice: Notice | undefined;
  outbox: Outgoing[];
  nextCommandId: number;
  quit: boolean;
}

export type TextEdit = { insert: string } | { backspace: true };

export type DashboardAction =
  /** Many actions applied as one state change: one render for a frame's worth of events. */
  | { type: 'batch'; actions: DashboardAction[] }
  | { type: 'node-events'; events: NodeEvent[] }
  | {
      type: 'cluster-jobs';
      at: number;
      jobs?: ClusterJobRecord[];
      unanswered?: UnansweredNode[];
      queue?: QueueDepthView[];
      /** The poll failed: the list stays as it was, with this error. */
      error?: string;
    }
  | { type: 'connection'; connection: ConnectionState }
  | { type: 'narrate'; text: string; ts: number; source?: NarrationSource }
  | { type: 'tick'; now: number }
  | { type: 'switch-view'; view: ViewId }
  | { type: 'cycle-view'; delta: 1 | -1 }
  | { type: 'move'; delta: number }
  | { type: 'open-details' }
  | { type: 'close' }
  | { type: 'toggle-help' }
  | { type: 'ask-pull' }
  | { type: 'ask-spawn' }
  | { type: 'ask-stop-worker' }
  | { type: 'ask-cancel-job' }
  | { type: 'ask-place' }
  | {
      type: 'place-result';
      model: string;
      preview?: PlacePreview;
      /** The node could not compute it: why. */
      error?: string;
    }
  | { type: 'ask-chat-model' }
  | { type: 'dialog-answer'; yes: boolean }
  | { type: 'prompt-edit'; edit: TextEdit }
  | { type: 'prompt-submit' }
  | { type: 'cycle-log-filter' }
  | { type: 'outbox-taken'; ids: number[] }
  | { type: 'command-result'; ok: boolean; text: string; ts: number }
  | { type: 'retry-wake' }
  | { type: 'quit' }
  | ChatAction;

export function createInitialState(init: { now: number }): DashboardState {
  return {
    now: init.now,
    connection: { status: 'waking' },
    wakeAttempt: 0,
    cluster: undefined,
    clusterJobs: undefined,
    snapshotAt: init.now,
    view: 'cluster',
    selection: {},
    details: false,
    help: false,
    place: undefined,
    dialog: undefined,
    log: { entries: [], filter: undefined, scroll: 0, nextSeq: 0 },
    chat: { model: undefined, hive: undefined, focus: 'input', input: '', turns: [], nextTurnId: 1 },
    notice: undefined,
    outbox: [],
    nextCommandId: 1,
    quit: false,
  };
}

function appendLog(state: DashboardState, entry: Omit<LogEntry, 'seq'>): DashboardState {
  const log = state.log;
  const last = log.entries.at(-1);
  // Download progress narrates several times a second: keep one live line per job and source.
  const replace =
    entry.progress && last?.progress === true && last.jobId === entry.jobId && last.source === entry.source;
  const kept = replace ? log.entries.slice(0, -1) : log.entries;
  const entries = [...kept, { ...entry, seq: log.nextSeq }].slice(-LOG_LIMIT);
  const visible = !replace && (log.filter === undefined || log.filter === entry.source);
  // A person reading older lines keeps their place while new ones arrive.
  const scroll = log.scroll > 0 && visible ? Math.min(log.scroll + 1, entries.length - 1) : log.scroll;
  return { ...state, log: { ...log, entries, scroll, nextSeq: log.nextSeq + 1 } };
}

function applyNodeEvent(state: DashboardState, event: NodeEvent): DashboardState {
  if (event.type === 'snapshot') return { ...state, cluster: event.view, snapshotAt: state.now };
  if (event.type === 'narration') {
    const next = appendLog(state, {
      ts: event.ts,
      source: event.source,
      node: event.node,
      text: event.text,
      jobId: event.jobId,
      progress: event.progress !== undefined,
    });
    return reduceChat(next, { type: 'chat-status', jobId: event.jobId, text: event.text });
  }
  // A section update before the first snapshot has nothing to update; the snapshot will carry it.
  if (state.cluster === undefined) return state;
  const { type: _type, ...section } = event;
  return { ...state, cluster: { ...state.cluster, ...section } };
}

function moveSelection(state: DashboardState, delta: number): DashboardState {
  if (state.view === 'log') {
    const visible = state.log.entries.filter(
      (e) => state.log.filter === undefined || e.source === state.log.filter,
    );
    const scroll = Math.max(0, Math.min(state.log.scroll - delta, Math.max(0, visible.length - 1)));
    return { ...state, log: { ...state.log, scroll } };
  }
  const rows = rowsFor(state, state.view);
  if (rows.length === 0) return state;
  const current = selectedIndex(state, state.view);
  const index = Math.max(0, Math.min(rows.length - 1, current + delta));
  const row = rows[index];
  if (row === undefined) return state;
  return { ...state, selection: { ...state.selection, [state.view]: { key: row.key, index } } };
}

function confirm(state: DashboardState, question: string, command: Command): DashboardState {
  return { ...state, dialog: { kind: 'confirm', question, command }, notice: undefined };
}

function notice(state: DashboardState, level: Notice['level'], text: string): DashboardState {
  return { ...state, notice: { level, text } };
}

function askFor(state: DashboardState, action: DashboardAction['type']): DashboardState {
  const { cluster } = state;
  switch (action) {
    case 'ask-spawn': {
      const row = selectedRow(state, 'models');
      if (state.view !== 'models' || row?.view !== 'models') {
        return notice(state, 'info', 's spawns a worker for the model selected in Models (3)');
      }
      const { model } = row;
      const local = cluster?.hives.find((h) => h.local);
      const elsewhere =
        local !== undefined && model.hive !== local.id
          ? ` on this node (${local.name}); it fetches the model by its ref, since workers start where they are asked for`
          : '';
      return confirm(state, `Spawn a worker for ${model.name} (${model.ref})${elsewhere}?`, {
        kind: 'spawn',
        model: model.ref,
        hive: model.hive,
      });
    }
    case 'ask-stop-worker': {
      const row = selectedRow(state, 'workers');
      if (state.view !== 'workers' || row?.view !== 'workers') {
        return notice(state, 'info', 'x stops the worker selected in Workers (2)');
      }
      const { worker } = row;
      if (worker.state === 'exited') return notice(state, 'info', `worker ${worker.id} has already exited`);
      return confirm(
        state,
        `Stop worker ${worker.id} (${worker.model} on ${hiveName(cluster, worker.hive)})?`,
        {
          kind: 'stop-worker',
          id: worker.id,
          hive: worker.hive,
        },
      );
    }
    case 'ask-cancel-job': {
      const row = selectedRow(state, 'jobs');
      if (state.view !== 'jobs' || row?.view !== 'jobs') {
        return notice(state, 'info', 'c cancels the job selected in Jobs (4)');
      }
      if (!isUnfinished(row.job.state)) return notice(state, 'info', `job ${row.job.id} has ended`);
      const where = row.job.hive === undefined ? '' : ` on ${row.job.hive}`;
      return confirm(state, `Cancel job ${row.job.id} (${row.job.model}${where})?`, {
        kind: 'cancel-job',
        id: row.job.id,
      });
    }
    default:
      return state;
  }
}

/** Opens (or asks again for) the placement preview of the model selected in Models. */
function askPlace(state: DashboardState): DashboardState {
  const row = selectedRow(state, 'models');
  if (state.view !== 'models' || row?.view !== 'models') {
    return notice(state, 'info', 'w shows where a job for the model selected in Models (3) would run');
  }
  const { model } = row;
  const again = state.place?.model === model.id ? state.place : undefined;
  return enqueue(
    {
      ...state,
      details: false,
      place: { model: model.id, name: model.name, pending: true, preview: again?.preview },
    },
    { kind: 'place', model: model.id },
  );
}

function submitPrompt(state: DashboardState): DashboardState {
  const dialog = state.dialog;
  if (dialog?.kind !== 'prompt') return state;
  const value = dialog.value.trim();
  if (value === '') return { ...state, dialog: undefined };
  if (dialog.purpose === 'chat-model') {
    return { ...state, dialog: undefined, chat: { ...state.chat, model: value, focus: 'input' } };
  }
  return confirm({ ...state, dialog: undefined }, `Pull ${value}?`, { kind: 'pull', ref: value });
}

function describe(command: Command): string {
  switch (command.kind) {
    case 'pull':
      return `pulling ${command.ref}…`;
    case 'spawn':
      return `spawning a worker for ${command.model}…`;
    case 'stop-worker':
      return `stopping worker ${command.id}…`;
    case 'cancel-job':
      return `cancelling job ${command.id}…`;
    default:
      return '';
  }
}

export function reduce(state: DashboardState, action: DashboardAction): DashboardState {
  switch (action.type) {
    case 'batch':
      return action.actions.reduce(reduce, state);
    case 'node-events':
      return action.events.reduce(applyNodeEvent, state);
    case 'cluster-jobs':
      if (action.jobs === undefined) {
        return state.clusterJobs === undefined && action.error === undefined
          ? state
          : {
              ...state,
              clusterJobs: {
                ...(state.clusterJobs ?? { jobs: [], unanswered: [], queue: [], at: action.at }),
                error: action.error,
              },
            };
      }
      return {
        ...state,
        clusterJobs: {
          jobs: action.jobs,
          unanswered: action.unanswered ?? [],
          queue: action.queue ?? [],
          at: action.at,
        },
      };
    case 'connection':
      return { ...state, connection: action.connection };
    case 'narrate':
      return appendLog(state, {
        ts: action.ts,
        source: action.source ?? 'keeper',
        node: 'local',
        text: action.text,
        jobId: '-',
        progress: false,
      });
    case 'tick':
      return { ...state, now: action.now };
    case 'switch-view':
      return { ...state, view: action.view, details: false, chat: enterChat(state, action.view) };
    case 'cycle-view': {
      const index = (VIEWS.indexOf(state.view) + action.delta + VIEWS.length) % VIEWS.length;
      const view = VIEWS[index] ?? 'cluster';
      return { ...state, view, details: false, chat: enterChat(state, view) };
    }
    case 'move':
      return moveSelection(state, action.delta);
    case 'open-details':
      return rowsFor(state, state.view).length === 0 ? state : { ...state, details: true };
    case 'close':
      if (state.help) return { ...state, help: false };
      if (state.dialog !== undefined) return { ...state, dialog: undefined };
      if (state.place !== undefined) return { ...state, place: undefined };
      return { ...state, details: false, notice: undefined };
    case 'toggle-help':
      return { ...state, help: !state.help };
    case 'ask-pull':
      return {
        ...state,
        dialog: {
          kind: 'prompt',
          purpose: 'pull',
          label: 'Pull model (hf:org/repo[:quant], https://…/x.gguf, path)',
          value: '',
        },
      };
    case 'ask-chat-model':
      return {
        ...state,
        dialog: { kind: 'prompt', purpose: 'chat-model', label: 'Chat with model (any ref)', value: '' },
      };
    case 'ask-spawn':
    case 'ask-stop-worker':
    case 'ask-cancel-job':
      return askFor(state, action.type);
    case 'ask-place':
      return askPlace(state);
    case 'place-result':
      // a preview closed (or of another model) meanwhile is not reopened
      if (state.place?.model !== action.model) return state;
      return {
        ...state,
        place: {
          ...state.place,
          pending: false,
          preview: action.preview ?? state.place.preview,
          error: action.error,
        },
      };
    case 'dialog-answer': {
      const dialog = state.dialog;
      if (dialog?.kind !== 'confirm') return state;
      const closed = { ...state, dialog: undefined };
      return action.yes ? notice(enqueue(closed, dialog.command), 'info', describe(dialog.command)) : closed;
    }
    case 'prompt-edit':
      return state.dialog?.kind === 'prompt'
        ? { ...state, dialog: { ...state.dialog, value: editText(state.dialog.value, action.edit) } }
        : state;
    case 'prompt-submit':
      return submitPrompt(state);
    case 'cycle-log-filter': {
      const order = [undefined, ...LOG_SOURCES];
      const filter = order[(order.indexOf(state.log.filter) + 1) % order.length];
      return { ...state, log: { ...state.log, filter, scroll: 0 } };
    }
    case 'outbox-taken':
      return { ...state, outbox: state.outbox.filter((o) => !action.ids.includes(o.id)) };
    case 'command-result':
      return notice(
        appendLog(state, {
          ts: action.ts,
          source: 'keeper',
          node: 'local',
          text: action.text,
          jobId: '-',
          progress: false,
        }),
        action.ok ? 'ok' : 'error',
        action.text,
      );
    case 'retry-wake':
      return state.connection.status === 'wake-failed'
        ? { ...state, connection: { status: 'waking' }, wakeAttempt: state.wakeAttempt + 1 }
        : state;
    case 'quit':
      return { ...state, quit: true };
    default:
      return reduceChat(state, action);
  }
}

/** Arriving in Chat puts the cursor in the input, ready to type. */
function enterChat(state: DashboardState, view: ViewId): ChatState {
  return view === 'chat' && state.view !== 'chat' ? { ...state.chat, focus: 'input' } : state.chat;
}

export type { ChatAction, ChatState, ChatTurn } from './state-chat.js';
export { editText } from './state-ops.js';

/** The node's uptime now: its health at the snapshot plus the time since (the health is not re-sent). */
export function uptimeMs(state: DashboardState): number {
  const base = (state.cluster?.health.uptimeS ?? 0) * 1000;
  return base + Math.max(0, state.now - state.snapshotAt);
}
