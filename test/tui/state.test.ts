import { describe, expect, it } from 'vitest';
import type { NodeEvent } from '../../src/shared/view.js';
import type { DoneEvent } from '../../src/shared/wire.js';
import { selectedRow } from '../../src/tui/dashboard/selectors.js';
import {
  LOG_LIMIT,
  createInitialState,
  reduce,
  type DashboardAction,
  type DashboardState,
  uptimeMs,
} from '../../src/tui/dashboard/state.js';
import { NOW, hive, oneHive, threeHives, worker } from '../fixtures/cluster-views.js';

const run = (state: DashboardState, ...actions: DashboardAction[]): DashboardState =>
  actions.reduce(reduce, state);
const narration = (
  text: string,
  extra: Partial<Extract<NodeEvent, { type: 'narration' }>> = {},
): NodeEvent => ({
  type: 'narration',
  ts: NOW,
  jobId: '-',
  source: 'hive',
  node: 'mars',
  text,
  ...extra,
});
const withView = (view = threeHives): DashboardState =>
  run(createInitialState({ now: NOW }), { type: 'node-events', events: [{ type: 'snapshot', view }] });

describe('node events', () => {
  it('applies a snapshot, then whole-section updates', () => {
    let state = withView(oneHive);
    expect(state.cluster?.hives.map((h) => h.name)).toEqual(['laptop']);
    state = reduce(state, { type: 'node-events', events: [{ type: 'workers', workers: [] }] });
    expect(state.cluster?.workers).toEqual([]);
    expect(state.cluster?.models).toEqual(oneHive.models);
  });

  it('advances the node’s uptime with the clock, though health comes only with the snapshot', () => {
    const state = withView(oneHive);
    const atSnapshot = uptimeMs(state);
    expect(atSnapshot).toBe(oneHive.health.uptimeS * 1000);
    expect(uptimeMs(reduce(state, { type: 'tick', now: NOW + 65_000 }))).toBe(atSnapshot + 65_000);
  });

  it('ignores a section update that arrives before any snapshot', () => {
    const state = reduce(createInitialState({ now: NOW }), {
      type: 'node-events',
      events: [{ type: 'workers', workers: [] }],
    });
    expect(state.cluster).toBeUndefined();
  });

  it('keeps the last LOG_LIMIT narration lines', () => {
    const events = Array.from({ length: LOG_LIMIT + 20 }, (_, i) => narration(`line ${i}`));
    const state = reduce(createInitialState({ now: NOW }), { type: 'node-events', events });
    expect(state.log.entries).toHaveLength(LOG_LIMIT);
    expect(state.log.entries[0]?.text).toBe('line 20');
    expect(state.log.entries.at(-1)?.text).toBe(`line ${LOG_LIMIT + 19}`);
  });

  it('keeps one live line for a download narrating progress', () => {
    const progress = (bytes: number): NodeEvent =>
      narration(`${bytes} bytes`, { jobId: 'j1', progress: { bytes } });
    const state = reduce(createInitialState({ now: NOW }), {
      type: 'node-events',
      events: [narration('starting', { jobId: 'j1' }), progress(1), progress(2), progress(3)],
    });
    expect(state.log.entries.map((e) => e.text)).toEqual(['starting', '3 bytes']);
  });
});

describe('selection', () => {
  it('stays on the same worker when workers from another machine appear before it', () => {
    let state = run(withView(), { type: 'switch-view', view: 'workers' }, { type: 'move', delta: 1 });
    const before = selectedRow(state, 'workers');
    expect(before?.view === 'workers' && before.worker.id).toBe('w-m0');
    const newcomer = hive({ id: 'h-aaa', name: 'aaa' });
    state = reduce(state, {
      type: 'node-events',
      events: [
        { type: 'hives', hives: [...threeHives.hives, newcomer] },
        {
          type: 'workers',
          workers: [worker({ id: 'w-a', hive: 'h-aaa', model: 'x' }), ...threeHives.workers],
        },
      ],
    });
    const after = selectedRow(state, 'workers');
    expect(after?.view === 'workers' && after.worker.id).toBe('w-m0');
  });

  it('falls back to the same position when the selected row goes away', () => {
    // Workers sort by hive name: jupiter (w-j0), mars (w-m0), venus (w-v0).
    let state = run(withView(), { type: 'switch-view', view: 'workers' }, { type: 'move', delta: 2 });
    expect(selectedRow(state, 'workers')?.key).toBe('h-venus/w-v0');
    const remaining = threeHives.workers.filter((w) => w.id !== 'w-v0');
    state = reduce(state, { type: 'node-events', events: [{ type: 'workers', workers: remaining }] });
    expect(selectedRow(state, 'workers')?.key).toBe('h-mars/w-m0');
  });

  it('clamps movement to the list', () => {
    const state = run(withView(), { type: 'switch-view', view: 'cluster' }, { type: 'move', delta: -5 });
    expect(selectedRow(state, 'cluster')?.key).toBe('h-mars');
    const last = reduce(state, { type: 'move', delta: 99 });
    expect(selectedRow(last, 'cluster')?.key).toBe('h-venus');
  });
});

describe('views, details and help', () => {
  it('cycles views both ways and wraps', () => {
    const state = withView();
    expect(reduce(state, { type: 'cycle-view', delta: -1 }).view).toBe('log');
    expect(run(state, { type: 'cycle-view', delta: 1 }, { type: 'cycle-view', delta: 1 }).view).toBe(
      'models',
    );
  });

  it('puts the cursor in the chat input when arriving in Chat', () => {
    const state = run(withView(), { type: 'switch-view', view: 'chat' }, { type: 'chat-escape' });
    expect(state.chat.focus).toBe('models');
    expect(
      run(state, { type: 'switch-view', view: 'log' }, { type: 'switch-view', view: 'chat' }).chat.focus,
    ).toBe('input');
  });

  it('opens details only when there is a row, and Esc closes help before details', () => {
    const empty = run(createInitialState({ now: NOW }), { type: 'open-details' });
    expect(empty.details).toBe(false);
    const state = run(withView(), { type: 'open-details' }, { type: 'toggle-help' }, { type: 'close' });
    expect(state.help).toBe(false);
    expect(state.details).toBe(true);
    expect(reduce(state, { type: 'close' }).details).toBe(false);
  });
});

describe('actions ask for confirmation and queue a command', () => {
  it('stops the selected worker only after yes', () => {
    const asked = run(withView(), { type: 'switch-view', view: 'workers' }, { type: 'ask-stop-worker' });
    expect(asked.dialog).toMatchObject({
      kind: 'confirm',
      question: expect.stringContaining('Stop worker w-j0') as string,
    });
    expect(asked.outbox).toEqual([]);
    expect(reduce(asked, { type: 'dialog-answer', yes: false }).outbox).toEqual([]);
    const yes = reduce(asked, { type: 'dialog-answer', yes: true });
    expect(yes.dialog).toBeUndefined();
    expect(yes.outbox.map((o) => o.command)).toEqual([
      { kind: 'stop-worker', id: 'w-j0', hive: 'h-jupiter' },
    ]);
  });

  it('explains instead of acting when the key does not fit the view', () => {
    const state = run(withView(), { type: 'ask-stop-worker' });
    expect(state.dialog).toBeUndefined();
    expect(state.notice?.text).toMatch(/Workers \(2\)/);
  });

  it('refuses to cancel a job that has ended', () => {
    const state = run(withView(oneHive), { type: 'switch-view', view: 'jobs' }, { type: 'ask-cancel-job' });
    expect(state.dialog).toBeUndefined();
    expect(state.notice?.text).toMatch(/has ended/);
    const running = run(
      withView(),
      { type: 'switch-view', view: 'jobs' },
      { type: 'ask-cancel-job' },
      { type: 'dialog-answer', yes: true },
    );
    expect(running.outbox.map((o) => o.command)).toEqual([{ kind: 'cancel-job', id: 'job-run' }]);
  });

  it('spawns a worker for the selected model', () => {
    const state = run(
      withView(),
      { type: 'switch-view', view: 'models' },
      { type: 'move', delta: 1 },
      { type: 'ask-spawn' },
      { type: 'dialog-answer', yes: true },
    );
    // Models sort by hive name: jupiter, mars, venus.
    expect(state.outbox.map((o) => o.command)).toEqual([
      { kind: 'spawn', model: 'hf:bartowski/Llama-3.2-1B-Instruct-GGUF', hive: 'h-mars' },
    ]);
  });

  it('says that a worker for another hive’s model starts on this node', () => {
    // jupiter's model, asked for on mars (this node): the question says where the worker starts
    const state = run(withView(), { type: 'switch-view', view: 'models' }, { type: 'ask-spawn' });
    expect(state.dialog).toMatchObject({ kind: 'confirm' });
    expect(state.dialog?.kind === 'confirm' ? state.dialog.question : '').toMatch(/on this node \(mars\)/);
    const local = run(
      withView(),
      { type: 'switch-view', view: 'models' },
      { type: 'move', delta: 1 },
      { type: 'ask-spawn' },
    );
    expect(local.dialog?.kind === 'confirm' ? local.dialog.question : '').not.toMatch(/on this node/);
  });

  it('pulls a typed ref: prompt, then confirm', () => {
    let state = run(withView(), { type: 'ask-pull' });
    expect(state.dialog?.kind).toBe('prompt');
    for (const ch of 'hf:org/repX') state = reduce(state, { type: 'prompt-edit', edit: { insert: ch } });
    state = run(
      state,
      { type: 'prompt-edit', edit: { backspace: true } },
      { type: 'prompt-edit', edit: { insert: 'o' } },
    );
    state = reduce(state, { type: 'prompt-submit' });
    expect(state.dialog).toMatchObject({ kind: 'confirm', question: 'Pull hf:org/repo?' });
    state = reduce(state, { type: 'dialog-answer', yes: true });
    expect(state.outbox.map((o) => o.command)).toEqual([{ kind: 'pull', ref: 'hf:org/repo' }]);
    expect(reduce(state, { type: 'outbox-taken', ids: [state.outbox[0]!.id] }).outbox).toEqual([]);
  });
});

describe('chat', () => {
  const done = (turnId: number): DashboardAction => ({
    type: 'chat-done',
    turnId,
    event: {
      type: 'done',
      ts: NOW,
      jobId: 'job-1',
      finishReason: 'stop',
      usage: { promptTokens: 3, completionTokens: 2 },
      timings: { timeToFirstTokenMs: 100, tokensPerSecond: 20, totalMs: 200 },
      model: 'm',
    } satisfies DoneEvent,
  });
  const type = (state: DashboardState, text: string): DashboardState =>
    reduce(state, { type: 'chat-edit', edit: { insert: text } });

  it('asks for a model when the catalog is empty and none was typed', () => {
    const state = run(createInitialState({ now: NOW }), { type: 'switch-view', view: 'chat' });
    const sent = reduce(type(state, 'hi'), { type: 'chat-send' });
    expect(sent.outbox).toEqual([]);
    expect(sent.notice?.text).toMatch(/no model/);
  });

  it('sends to the picked model, streams tokens, and carries history into the next turn', () => {
    let state = run(withView(oneHive), { type: 'switch-view', view: 'chat' });
    state = reduce(type(state, 'hello'), { type: 'chat-send' });
    expect(state.chat.input).toBe('');
    const first = state.outbox[0]?.command;
    expect(first).toEqual({
      kind: 'chat',
      turnId: 1,
      request: {
        model: 'hf:bartowski/Llama-3.2-1B-Instruct-GGUF',
        messages: [{ role: 'user', content: 'hello' }],
      },
    });
    state = run(
      state,
      { type: 'chat-accepted', turnId: 1, jobId: 'job-1' },
      { type: 'chat-tokens', turnId: 1, text: 'Hi ' },
      { type: 'chat-tokens', turnId: 1, text: 'there' },
      done(1),
    );
    expect(state.chat.turns[0]).toMatchObject({ answer: 'Hi there', state: 'done', jobId: 'job-1' });
    state = reduce(type(state, 'again'), { type: 'chat-send' });
    const second = state.outbox[1]?.command;
    expect(second?.kind === 'chat' && second.request.messages).toEqual([
      { role: 'user', content: 'hello' },
      { role: 'assistant', content: 'Hi there' },
      { role: 'user', content: 'again' },
    ]);
  });

  it('uses a typed ref over the picker, and Esc cancels a streaming answer before leaving the input', () => {
    let state = run(withView(oneHive), { type: 'switch-view', view: 'chat' }, { type: 'ask-chat-model' });
    state = reduce(state, { type: 'prompt-edit', edit: { insert: 'hf:other/model' } });
    state = reduce(state, { type: 'prompt-submit' });
    expect(state.chat.model).toBe('hf:other/model');
    state = run(
      type(state, 'q'),
      { type: 'chat-send' },
      { type: 'chat-accepted', turnId: 1, jobId: 'job-9' },
    );
    state = reduce(state, { type: 'chat-escape' });
    expect(state.chat.focus).toBe('input');
    expect(state.chat.turns[0]?.cancelling).toBe(true);
    expect(state.outbox.map((o) => o.command.kind)).toEqual(['chat', 'cancel-chat']);
    state = reduce(state, {
      type: 'chat-failed',
      turnId: 1,
      error: { code: 'JOB_CANCELLED', message: 'cancelled' },
    });
    expect(state.chat.turns[0]?.state).toBe('cancelled');
    expect(reduce(state, { type: 'chat-escape' }).chat.focus).toBe('models');
  });

  it('shows the job narration as the turn status until the first token', () => {
    let state = run(withView(oneHive), { type: 'switch-view', view: 'chat' });
    state = run(
      type(state, 'x'),
      { type: 'chat-send' },
      { type: 'chat-accepted', turnId: 1, jobId: 'job-5' },
    );
    state = reduce(state, { type: 'node-events', events: [narration('loading model', { jobId: 'job-5' })] });
    expect(state.chat.turns[0]?.status).toBe('loading model');
    state = reduce(state, { type: 'chat-tokens', turnId: 1, text: 'a' });
    expect(state.chat.turns[0]?.status).toBeUndefined();
  });
});

describe('log', () => {
  it('filters by source in a cycle and keeps a scrolled-back reader in place', () => {
    let state = reduce(createInitialState({ now: NOW }), {
      type: 'node-events',
      events: [narration('a'), narration('b', { source: 'queen' }), narration('c')],
    });
    state = run(state, { type: 'switch-view', view: 'log' }, { type: 'cycle-log-filter' });
    expect(state.log.filter).toBe('keeper');
    state = run(state, { type: 'cycle-log-filter' }, { type: 'cycle-log-filter' });
    expect(state.log.filter).toBe('hive');
    state = reduce(state, { type: 'move', delta: -1 });
    expect(state.log.scroll).toBe(1);
    state = reduce(state, { type: 'node-events', events: [narration('d')] });
    expect(state.log.scroll).toBe(2);
    state = reduce(state, { type: 'node-events', events: [narration('e', { source: 'queen' })] });
    expect(state.log.scroll).toBe(2);
  });
});

describe('waking', () => {
  it('retries only after a failed wake, and quitting sets the flag', () => {
    const state = createInitialState({ now: NOW });
    expect(reduce(state, { type: 'retry-wake' }).wakeAttempt).toBe(0);
    const failed = reduce(state, {
      type: 'connection',
      connection: { status: 'wake-failed', code: 'NODE_START_FAILED', error: 'x' },
    });
    const retried = reduce(failed, { type: 'retry-wake' });
    expect(retried.wakeAttempt).toBe(1);
    expect(retried.connection.status).toBe('waking');
    expect(reduce(state, { type: 'quit' }).quit).toBe(true);
  });
});
