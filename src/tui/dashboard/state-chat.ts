/**
 * The chat panel's part of the reducer: the input line, the model picker focus, the hive the chat
 * is pinned to, and the turns, whose answers grow token batch by token batch. Sending and
 * cancelling are queued as commands.
 */
import type { RbeeErrorJson } from '../../shared/errors.js';
import type { ChatMessage, DoneEvent } from '../../shared/wire.js';
import { chatModel, sortedHives } from './selectors.js';
import type { DashboardState, TextEdit } from './state.js';
import { editText, enqueue } from './state-ops.js';

/** Finished turns kept on screen; older ones are dropped. */
export const CHAT_TURN_LIMIT = 100;
/** Earlier turns sent back to the model as context with each new message. */
export const CHAT_HISTORY_TURNS = 8;

export interface ChatTurn {
  id: number;
  model: string;
  /** The hive it was pinned to, if any. */
  hive?: string;
  prompt: string;
  answer: string;
  state: 'sending' | 'streaming' | 'done' | 'failed' | 'cancelled';
  jobId?: string;
  /** The latest narration for this turn's job (loading, downloading…) while no token has come. */
  status?: string;
  cancelling?: boolean;
  done?: Pick<DoneEvent, 'finishReason' | 'usage' | 'timings'>;
  error?: string;
}

export interface ChatState {
  /** A ref typed by the user; when unset, the picker's selection is the model. */
  model: string | undefined;
  /**
   * The hive (its name) every message runs on: the job request's `hive`, which pins it there.
   * Undefined: the queen places each one.
   */
  hive: string | undefined;
  focus: 'input' | 'models';
  input: string;
  turns: ChatTurn[];
  nextTurnId: number;
}

export type ChatAction =
  | { type: 'chat-edit'; edit: TextEdit }
  | { type: 'chat-send' }
  | { type: 'chat-escape' }
  | { type: 'chat-focus-input' }
  | { type: 'chat-pick-model' }
  /** Pins the next hive the dashboard knows (this node's first), then none again. */
  | { type: 'chat-cycle-hive' }
  | { type: 'chat-accepted'; turnId: number; jobId: string }
  | { type: 'chat-tokens'; turnId: number; text: string }
  | { type: 'chat-status'; jobId: string; text: string }
  | { type: 'chat-done'; turnId: number; event: DoneEvent }
  | { type: 'chat-failed'; turnId: number; error: RbeeErrorJson };

export function activeTurn(chat: ChatState): ChatTurn | undefined {
  const last = chat.turns.at(-1);
  return last !== undefined && (last.state === 'sending' || last.state === 'streaming') ? last : undefined;
}

function history(turns: ChatTurn[]): ChatMessage[] {
  return turns
    .filter((t) => t.state === 'done' && t.answer !== '')
    .slice(-CHAT_HISTORY_TURNS)
    .flatMap((t): ChatMessage[] => [
      { role: 'user', content: t.prompt },
      { role: 'assistant', content: t.answer },
    ]);
}

function updateTurn(
  state: DashboardState,
  match: (turn: ChatTurn) => boolean,
  update: (turn: ChatTurn) => ChatTurn,
): DashboardState {
  let changed = false;
  const turns = state.chat.turns.map((t) => {
    if (!match(t)) return t;
    changed = true;
    return update(t);
  });
  return changed ? { ...state, chat: { ...state.chat, turns } } : state;
}

/** The hive names the dashboard knows: this node's first, then the queen, then by name. */
function hiveNames(state: DashboardState): string[] {
  return sortedHives(state.cluster).map((h) => h.name);
}

function pin(state: DashboardState, hive: string | undefined): DashboardState {
  return {
    ...state,
    chat: { ...state.chat, hive },
    notice: {
      level: 'info',
      text:
        hive === undefined ? 'chat unpinned: the queen places each message' : `chat pinned to hive ${hive}`,
    },
  };
}

/** `/hive NAME` pins the chat to a hive the dashboard knows; `/hive` alone (or `auto`) unpins it. */
function hiveCommand(state: DashboardState, arg: string): DashboardState {
  const name = arg.trim();
  const typed = { ...state, chat: { ...state.chat, input: '' } };
  if (name === '' || name === 'auto') return pin(typed, undefined);
  const known = sortedHives(state.cluster);
  const hive = known.find((h) => h.name === name || h.id === name);
  if (hive !== undefined) return pin(typed, hive.name);
  return {
    ...state,
    notice: {
      level: 'error',
      text: `no hive ${name} in the cluster; known: ${known.map((h) => h.name).join(', ') || 'none yet'}`,
    },
  };
}

function cycleHive(state: DashboardState): DashboardState {
  const names = hiveNames(state);
  const order = [undefined, ...names];
  const at = state.chat.hive === undefined ? 0 : order.indexOf(state.chat.hive);
  // a pinned hive that left the cluster is not in the order (-1): the next press unpins
  return pin(state, order[(at + 1) % order.length]);
}

function send(state: DashboardState): DashboardState {
  const prompt = state.chat.input.trim();
  if (prompt === '') return state;
  const command = /^\/hive(?:\s+(.*))?$/.exec(prompt);
  if (command !== null) return hiveCommand(state, command[1] ?? '');
  if (activeTurn(state.chat) !== undefined) {
    return {
      ...state,
      notice: { level: 'info', text: 'an answer is still streaming: wait, or Esc to cancel it' },
    };
  }
  const model = chatModel(state);
  if (model === undefined) {
    return {
      ...state,
      notice: {
        level: 'info',
        text: 'no model yet: Esc, then j/k and Enter to pick one, or m to type a ref (demo: a generated test model)',
      },
    };
  }
  const hive = state.chat.hive;
  const turn: ChatTurn = {
    id: state.chat.nextTurnId,
    model,
    ...(hive === undefined ? {} : { hive }),
    prompt,
    answer: '',
    state: 'sending',
  };
  const messages: ChatMessage[] = [...history(state.chat.turns), { role: 'user', content: prompt }];
  const next: DashboardState = {
    ...state,
    notice: undefined,
    chat: {
      ...state.chat,
      input: '',
      turns: [...state.chat.turns, turn].slice(-CHAT_TURN_LIMIT),
      nextTurnId: turn.id + 1,
    },
  };
  return enqueue(next, {
    kind: 'chat',
    turnId: turn.id,
    request: { model, messages, ...(hive === undefined ? {} : { hive }) },
  });
}

export function reduceChat(state: DashboardState, action: ChatAction): DashboardState {
  const chat = state.chat;
  switch (action.type) {
    case 'chat-edit':
      return { ...state, chat: { ...chat, input: editText(chat.input, action.edit) } };
    case 'chat-send':
      return send(state);
    case 'chat-escape': {
      // Esc first stops a streaming answer; only with nothing streaming does it leave the input.
      const turn = activeTurn(chat);
      if (turn === undefined) return { ...state, chat: { ...chat, focus: 'models' } };
      if (turn.cancelling === true) return state;
      const next = updateTurn(
        state,
        (t) => t.id === turn.id,
        (t) => ({ ...t, cancelling: true }),
      );
      return enqueue(next, { kind: 'cancel-chat', turnId: turn.id });
    }
    case 'chat-cycle-hive':
      return cycleHive(state);
    case 'chat-focus-input':
      return { ...state, chat: { ...chat, focus: 'input' } };
    case 'chat-pick-model': {
      // Picking from the catalog drops a typed ref, so the picker's selection is the model again.
      return { ...state, chat: { ...chat, model: undefined, focus: 'input' } };
    }
    case 'chat-accepted':
      return updateTurn(
        state,
        (t) => t.id === action.turnId,
        (t) => ({ ...t, jobId: action.jobId, state: t.state === 'sending' ? 'streaming' : t.state }),
      );
    case 'chat-tokens':
      return updateTurn(
        state,
        (t) => t.id === action.turnId && (t.state === 'sending' || t.state === 'streaming'),
        (t) => ({ ...t, answer: t.answer + action.text, state: 'streaming', status: undefined }),
      );
    case 'chat-status':
      return updateTurn(
        state,
        (t) =>
          t.jobId === action.jobId && t.answer === '' && (t.state === 'sending' || t.state === 'streaming'),
        (t) => ({ ...t, status: action.text }),
      );
    case 'chat-done': {
      const { finishReason, usage, timings } = action.event;
      return updateTurn(
        state,
        (t) => t.id === action.turnId,
        (t) => ({
          ...t,
          state: finishReason === 'cancelled' ? 'cancelled' : 'done',
          status: undefined,
          cancelling: false,
          done: { finishReason, usage, timings },
        }),
      );
    }
    case 'chat-failed':
      return updateTurn(
        state,
        (t) => t.id === action.turnId,
        (t) => ({
          ...t,
          state: action.error.code === 'JOB_CANCELLED' ? 'cancelled' : 'failed',
          status: undefined,
          cancelling: false,
          error:
            action.error.code === 'JOB_CANCELLED'
              ? undefined
              : `${action.error.code}: ${action.error.message}`,
        }),
      );
  }
}
