/**
 * Every key the dashboard understands, as data: the help overlay and the footer hints are generated
 * from this table, and `resolveKey` is the only place that turns a key press into an action.
 */
import type { Key } from 'ink';
import { reduce, VIEWS, type DashboardAction, type DashboardState, type ViewId } from './state.js';

/** Where the keyboard is: decides which bindings apply. */
export type KeyMode = 'confirm' | 'prompt' | 'help' | 'chat-input' | 'preview' | 'details' | 'normal';

/** Matches any printable text (a typed character or a paste) in text-entry modes. */
export const TEXT = '<text>';

export interface Binding {
  /** Normalised key names (see `keyName`), or TEXT. */
  keys: readonly string[];
  modes: readonly KeyMode[];
  /** Limits the binding to these views (in any of its modes). */
  views?: readonly ViewId[];
  action: DashboardAction | ((text: string) => DashboardAction);
  help: string;
  /** A short label for the footer; bindings without one are listed only in the help overlay. */
  hint?: string;
}

const ANY: readonly KeyMode[] = ['confirm', 'prompt', 'help', 'chat-input', 'preview', 'details', 'normal'];
const BROWSE: readonly KeyMode[] = ['normal', 'details'];
const LISTS: readonly ViewId[] = ['cluster', 'workers', 'models', 'jobs'];

export const KEYMAP: readonly Binding[] = [
  { keys: ['ctrl+c'], modes: ANY, action: { type: 'quit' }, help: 'quit' },
  // dialogs
  { keys: ['y'], modes: ['confirm'], action: { type: 'dialog-answer', yes: true }, help: 'yes', hint: 'yes' },
  {
    keys: ['n', 'escape'],
    modes: ['confirm'],
    action: { type: 'dialog-answer', yes: false },
    help: 'no',
    hint: 'no',
  },
  { keys: ['enter'], modes: ['prompt'], action: { type: 'prompt-submit' }, help: 'ok', hint: 'ok' },
  { keys: ['escape'], modes: ['prompt'], action: { type: 'close' }, help: 'cancel', hint: 'cancel' },
  {
    keys: ['backspace'],
    modes: ['prompt'],
    action: { type: 'prompt-edit', edit: { backspace: true } },
    help: 'delete',
  },
  {
    keys: [TEXT],
    modes: ['prompt'],
    action: (text) => ({ type: 'prompt-edit', edit: { insert: text } }),
    help: 'type',
  },
  // help overlay
  {
    keys: ['?', 'escape'],
    modes: ['help'],
    action: { type: 'toggle-help' },
    help: 'close help',
    hint: 'close',
  },
  // chat input: typing goes to the input, so letters never act here
  { keys: ['enter'], modes: ['chat-input'], action: { type: 'chat-send' }, help: 'send', hint: 'send' },
  {
    keys: ['escape'],
    modes: ['chat-input'],
    action: { type: 'chat-escape' },
    help: 'cancel the answer / leave the input',
    hint: 'stop/leave',
  },
  {
    keys: ['backspace'],
    modes: ['chat-input'],
    action: { type: 'chat-edit', edit: { backspace: true } },
    help: 'delete',
  },
  {
    keys: [TEXT],
    modes: ['chat-input'],
    action: (text) => ({ type: 'chat-edit', edit: { insert: text } }),
    help: 'type',
  },
  // moving around
  {
    keys: ['tab'],
    modes: [...BROWSE, 'chat-input'],
    action: { type: 'cycle-view', delta: 1 },
    help: 'next view',
    hint: 'view',
  },
  {
    keys: ['shift+tab'],
    modes: [...BROWSE, 'chat-input'],
    action: { type: 'cycle-view', delta: -1 },
    help: 'previous view',
  },
  {
    keys: VIEWS.map((_, i) => String(i + 1)),
    modes: BROWSE,
    action: (key) => ({ type: 'switch-view', view: VIEWS[Number(key) - 1] ?? 'cluster' }),
    help: 'switch view',
  },
  { keys: ['up', 'k'], modes: BROWSE, action: { type: 'move', delta: -1 }, help: 'move up', hint: 'move' },
  { keys: ['down', 'j'], modes: BROWSE, action: { type: 'move', delta: 1 }, help: 'move down' },
  { keys: ['pageup'], modes: BROWSE, action: { type: 'move', delta: -10 }, help: 'page up' },
  { keys: ['pagedown'], modes: BROWSE, action: { type: 'move', delta: 10 }, help: 'page down' },
  { keys: ['home', 'g'], modes: BROWSE, action: { type: 'move', delta: -1e9 }, help: 'first' },
  { keys: ['end', 'G'], modes: BROWSE, action: { type: 'move', delta: 1e9 }, help: 'last' },
  // chat picker (Esc left the input)
  {
    keys: ['enter'],
    modes: ['normal'],
    views: ['chat'],
    action: { type: 'chat-pick-model' },
    help: 'chat with the selected model',
    hint: 'pick',
  },
  {
    keys: ['i'],
    modes: ['normal'],
    views: ['chat'],
    action: { type: 'chat-focus-input' },
    help: 'back to the input',
    hint: 'type',
  },
  {
    keys: ['m'],
    modes: ['normal'],
    views: ['chat'],
    action: { type: 'ask-chat-model' },
    help: 'type a model ref',
    hint: 'ref',
  },
  {
    keys: ['h'],
    modes: ['normal'],
    views: ['chat'],
    action: { type: 'chat-cycle-hive' },
    help: 'pin the chat to the next hive, then none (or type /hive NAME)',
    hint: 'hive',
  },
  // details
  {
    keys: ['enter'],
    modes: ['normal'],
    views: LISTS,
    action: { type: 'open-details' },
    help: 'details',
    hint: 'details',
  },
  {
    keys: ['enter', 'escape'],
    modes: ['details'],
    action: { type: 'close' },
    help: 'close details',
    hint: 'close',
  },
  { keys: ['escape'], modes: ['normal'], action: { type: 'close' }, help: 'clear the message' },
  // the placement preview (Models): the scheduler's table for the selected model
  {
    keys: ['w'],
    modes: BROWSE,
    views: ['models'],
    action: { type: 'ask-place' },
    help: 'where a job for the model would run: every hive and device',
    hint: 'where',
  },
  { keys: ['w'], modes: BROWSE, action: { type: 'ask-place' }, help: 'placement preview (Models)' },
  {
    keys: ['escape', 'w'],
    modes: ['preview'],
    action: { type: 'close' },
    help: 'close the preview',
    hint: 'close',
  },
  { keys: ['r'], modes: ['preview'], action: { type: 'ask-place' }, help: 'ask again', hint: 'refresh' },
  // actions: each one asks for confirmation
  { keys: ['p'], modes: BROWSE, action: { type: 'ask-pull' }, help: 'pull a model', hint: 'pull' },
  {
    keys: ['s'],
    modes: BROWSE,
    views: ['models'],
    action: { type: 'ask-spawn' },
    help: 'spawn a worker for the model',
    hint: 'spawn',
  },
  { keys: ['s'], modes: BROWSE, action: { type: 'ask-spawn' }, help: 'spawn a worker (Models)' },
  {
    keys: ['x'],
    modes: BROWSE,
    views: ['workers'],
    action: { type: 'ask-stop-worker' },
    help: 'stop the worker',
    hint: 'stop',
  },
  { keys: ['x'], modes: BROWSE, action: { type: 'ask-stop-worker' }, help: 'stop a worker (Workers)' },
  {
    keys: ['c'],
    modes: BROWSE,
    views: ['jobs'],
    action: { type: 'ask-cancel-job' },
    help: 'cancel the job',
    hint: 'cancel',
  },
  { keys: ['c'], modes: BROWSE, action: { type: 'ask-cancel-job' }, help: 'cancel a job (Jobs)' },
  {
    keys: ['f'],
    modes: BROWSE,
    views: ['log'],
    action: { type: 'cycle-log-filter' },
    help: 'filter by source',
    hint: 'filter',
  },
  { keys: ['r'], modes: BROWSE, action: { type: 'retry-wake' }, help: 'retry waking the node' },
  { keys: ['?'], modes: BROWSE, action: { type: 'toggle-help' }, help: 'help', hint: 'help' },
  {
    keys: ['q'],
    modes: [...BROWSE, 'help', 'preview'],
    action: { type: 'quit' },
    help: 'quit',
    hint: 'quit',
  },
];

export function keyMode(state: DashboardState): KeyMode {
  if (state.dialog?.kind === 'confirm') return 'confirm';
  if (state.dialog?.kind === 'prompt') return 'prompt';
  if (state.help) return 'help';
  if (state.view === 'chat' && state.chat.focus === 'input') return 'chat-input';
  if (state.place !== undefined) return 'preview';
  if (state.details) return 'details';
  return 'normal';
}

/**
 * A key press: `name` for bindings ('tab', 'shift+tab', 'up', 'enter', 'ctrl+c', or a single
 * character), `text` for text entry (the character or a paste; empty for named keys). Keeping them
 * apart means a pasted word such as "tab" is typed, never taken for the Tab key.
 */
export interface KeyPress {
  name: string;
  text: string;
}

function namedKey(input: string, key: Key): string | undefined {
  if (key.ctrl && input.length === 1) return `ctrl+${input.toLowerCase()}`;
  if (key.tab) return key.shift ? 'shift+tab' : 'tab';
  if (key.upArrow) return 'up';
  if (key.downArrow) return 'down';
  if (key.leftArrow) return 'left';
  if (key.rightArrow) return 'right';
  if (key.pageUp) return 'pageup';
  if (key.pageDown) return 'pagedown';
  if (key.home) return 'home';
  if (key.end) return 'end';
  if (key.return) return 'enter';
  if (key.escape) return 'escape';
  if (key.backspace || key.delete) return 'backspace';
  return undefined;
}

const printable = (text: string): boolean =>
  text !== '' && [...text].every((ch) => ch >= ' ' && ch !== '\x7f');

/**
 * Turns Ink's (input, key) into key presses. A paste arrives as one chunk: "hf:org/repo\r" is the
 * text and then Enter, as if typed; other control characters in it are dropped.
 */
export function keyPresses(input: string, key: Key): KeyPress[] {
  if (input.length <= 1 || namedKey(input, key) !== undefined) return [keyPress(input, key)];
  const presses: KeyPress[] = [];
  for (const part of input.split(/(\r\n|\r|\n)/)) {
    if (/^(\r\n|\r|\n)$/.test(part)) presses.push({ name: 'enter', text: '' });
    else {
      const text = [...part].filter((ch) => ch >= ' ' && ch !== '\x7f').join('');
      if (text !== '') presses.push({ name: [...text].length === 1 ? text : '', text });
    }
  }
  return presses;
}

/** Turns Ink's (input, key) into a KeyPress. */
export function keyPress(input: string, key: Key): KeyPress {
  const named = namedKey(input, key);
  if (named !== undefined) return { name: named, text: '' };
  if (!printable(input)) return { name: '', text: '' };
  return { name: [...input].length === 1 ? input : '', text: input };
}

function applies(binding: Binding, mode: KeyMode, view: ViewId): boolean {
  return binding.modes.includes(mode) && (binding.views === undefined || binding.views.includes(view));
}

/** The action for a key press in the current state, or undefined when the key means nothing here. */
export function resolveKey(state: DashboardState, press: KeyPress): DashboardAction | undefined {
  const mode = keyMode(state);
  for (const binding of KEYMAP) {
    if (!applies(binding, mode, state.view)) continue;
    if (binding.keys.includes(TEXT) && press.text !== '') {
      return typeof binding.action === 'function' ? binding.action(press.text) : binding.action;
    }
    if (press.name === '' || !binding.keys.includes(press.name)) continue;
    return typeof binding.action === 'function' ? binding.action(press.name) : binding.action;
  }
  return undefined;
}

const LABELS: Readonly<Record<string, string>> = {
  'shift+tab': 'S-Tab',
  tab: 'Tab',
  up: '↑',
  down: '↓',
  enter: 'Enter',
  escape: 'Esc',
  'ctrl+c': 'C-c',
  pageup: 'PgUp',
  pagedown: 'PgDn',
  home: 'Home',
  end: 'End',
  backspace: 'Bksp',
};

export function keyLabel(name: string): string {
  return LABELS[name] ?? name;
}

/** The footer's hints for the current state, first binding per key. */
export function hintsFor(state: DashboardState): { keys: string; help: string }[] {
  const mode = keyMode(state);
  const seen = new Set<string>();
  const hints: { keys: string; help: string }[] = [];
  for (const binding of KEYMAP) {
    if (!applies(binding, mode, state.view)) continue;
    const fresh = binding.keys.filter((k) => !seen.has(k));
    binding.keys.forEach((k) => seen.add(k));
    if (binding.hint !== undefined && fresh.length > 0)
      hints.push({ keys: fresh.map(keyLabel).join('/'), help: binding.hint });
  }
  return hints;
}

/**
 * Help overlay rows per mode, generated from KEYMAP. A key already listed (a general fallback
 * behind a view-specific binding, or a key shown in an earlier section) is not listed again.
 */
export function helpSections(): { title: string; rows: { keys: string; help: string }[] }[] {
  const shown = new Set<string>();
  const section = (
    title: string,
    mode: KeyMode,
  ): { title: string; rows: { keys: string; help: string }[] } => {
    const rows: { keys: string; help: string }[] = [];
    const keysInSection = new Set<string>();
    for (const b of KEYMAP) {
      if (!b.modes.includes(mode) || b.keys.includes(TEXT)) continue;
      const fresh = b.views !== undefined || b.keys.some((k) => !keysInSection.has(k));
      b.keys.forEach((k) => keysInSection.add(k));
      const keys =
        b.keys.length > 3
          ? `${keyLabel(b.keys[0] ?? '')}–${keyLabel(b.keys.at(-1) ?? '')}`
          : b.keys.map(keyLabel).join('/');
      const id = `${keys}:${b.help}`;
      if (!fresh || shown.has(id)) continue;
      shown.add(id);
      rows.push({ keys, help: b.views === undefined ? b.help : `${b.help} (${b.views.join(', ')})` });
    }
    return { title, rows };
  };
  return [
    section('Browsing', 'normal'),
    section('Placement preview (w in Models)', 'preview'),
    section('Chat input', 'chat-input'),
    section('Dialogs', 'confirm'),
  ];
}

/** Applies a key press to the state: resolving inside the reducer always sees the latest state. */
export function applyKey(state: DashboardState, press: KeyPress): DashboardState {
  const action = resolveKey(state, press);
  return action === undefined ? state : reduce(state, action);
}
