import type { Key } from 'ink';
import { describe, expect, it } from 'vitest';
import {
  KEYMAP,
  TEXT,
  applyKey,
  helpSections,
  hintsFor,
  keyMode,
  keyPress,
  keyPresses,
  type KeyPress,
  resolveKey,
  type KeyMode,
} from '../../src/tui/dashboard/keymap.js';
import { createInitialState, reduce, type DashboardState } from '../../src/tui/dashboard/state.js';
import { NOW, threeHives } from '../fixtures/cluster-views.js';

const NO_KEY: Key = {
  upArrow: false,
  downArrow: false,
  leftArrow: false,
  rightArrow: false,
  pageDown: false,
  pageUp: false,
  home: false,
  end: false,
  return: false,
  escape: false,
  ctrl: false,
  shift: false,
  tab: false,
  backspace: false,
  delete: false,
  meta: false,
  super: false,
  hyper: false,
  capsLock: false,
  numLock: false,
};
const key = (k: Partial<Key>): Key => ({ ...NO_KEY, ...k });

const live = (): DashboardState =>
  reduce(createInitialState({ now: NOW }), {
    type: 'node-events',
    events: [{ type: 'snapshot', view: threeHives }],
  });
/** A single character is typed text; a longer name is a named key. */
const p = (name: string): KeyPress => ([...name].length === 1 ? { name, text: name } : { name, text: '' });
const keys = (state: DashboardState, ...names: string[]): DashboardState =>
  names.reduce((s, n) => applyKey(s, p(n)), state);

/** A state in each key mode, to check every binding against. */
function stateIn(mode: KeyMode): DashboardState {
  switch (mode) {
    case 'normal':
      return live();
    case 'details':
      return keys(live(), 'enter');
    case 'help':
      return keys(live(), '?');
    case 'chat-input':
      return keys(live(), '5');
    case 'prompt':
      return keys(live(), 'p');
    case 'confirm':
      return keys(live(), '2', 'x');
    case 'preview':
      return keys(live(), '3', 'w');
  }
}

describe('keyPress', () => {
  it('names the keys Ink reports and keeps typed text apart', () => {
    expect(keyPress('', key({ tab: true }))).toEqual({ name: 'tab', text: '' });
    expect(keyPress('', key({ tab: true, shift: true }))).toEqual({ name: 'shift+tab', text: '' });
    expect(keyPress('c', key({ ctrl: true }))).toEqual({ name: 'ctrl+c', text: '' });
    expect(keyPress('', key({ downArrow: true })).name).toBe('down');
    expect(keyPress('', key({ return: true })).name).toBe('enter');
    expect(keyPress('', key({ escape: true, meta: true })).name).toBe('escape');
    expect(keyPress('', key({ delete: true })).name).toBe('backspace');
    expect(keyPress('j', NO_KEY)).toEqual({ name: 'j', text: 'j' });
    expect(keyPress('G', key({ shift: true }))).toEqual({ name: 'G', text: 'G' });
    expect(keyPress('tab', NO_KEY)).toEqual({ name: '', text: 'tab' });
  });

  it('splits a pasted line into its text and Enter, as if typed', () => {
    expect(keyPresses('hf:org/repo\r', NO_KEY)).toEqual([
      { name: '', text: 'hf:org/repo' },
      { name: 'enter', text: '' },
    ]);
    expect(keyPresses('a\r\nb', NO_KEY)).toEqual([
      { name: 'a', text: 'a' },
      { name: 'enter', text: '' },
      { name: 'b', text: 'b' },
    ]);
    expect(keyPresses('x\x07y', NO_KEY)).toEqual([{ name: '', text: 'xy' }]);
    expect(keyPresses('', key({ return: true }))).toEqual([{ name: 'enter', text: '' }]);
  });

  it('submits a pasted model ref in the pull dialog', () => {
    let state = keys(live(), 'tab', 'tab');
    expect(state.view).toBe('models');
    state = keys(state, 'p');
    expect(state.dialog?.kind).toBe('prompt');
    for (const press of keyPresses('hf:org/repo\r', NO_KEY)) state = applyKey(state, press);
    // Enter submitted the ref: the pull now asks for confirmation
    expect(state.dialog).toMatchObject({ kind: 'confirm', command: { kind: 'pull', ref: 'hf:org/repo' } });
  });
});

describe('resolveKey', () => {
  it('switches views with 1–6, Tab and Shift-Tab', () => {
    expect(resolveKey(live(), p('2'))).toEqual({ type: 'switch-view', view: 'workers' });
    expect(resolveKey(live(), p('6'))).toEqual({ type: 'switch-view', view: 'log' });
    expect(keys(live(), 'tab', 'tab').view).toBe('models');
    expect(keys(live(), 'shift+tab').view).toBe('log');
  });

  it('sends letters to the chat input instead of acting on them', () => {
    const chat = stateIn('chat-input');
    expect(keyMode(chat)).toBe('chat-input');
    expect(resolveKey(chat, p('q'))).toEqual({ type: 'chat-edit', edit: { insert: 'q' } });
    expect(resolveKey(chat, p('j'))).toEqual({ type: 'chat-edit', edit: { insert: 'j' } });
    expect(resolveKey(chat, p('2'))).toEqual({ type: 'chat-edit', edit: { insert: '2' } });
    expect(resolveKey(chat, p('escape'))).toEqual({ type: 'chat-escape' });
    expect(resolveKey(chat, p('tab'))).toEqual({ type: 'cycle-view', delta: 1 });
    expect(resolveKey(chat, { name: '', text: 'tab' })).toEqual({
      type: 'chat-edit',
      edit: { insert: 'tab' },
    });
    expect(keys(chat, 'h', 'i', 'backspace', 'o').chat.input).toBe('ho');
  });

  it('quits with q while browsing and Ctrl-C anywhere', () => {
    expect(resolveKey(live(), p('q'))).toEqual({ type: 'quit' });
    for (const mode of ['normal', 'details', 'help', 'chat-input', 'prompt', 'confirm', 'preview'] as const) {
      expect(resolveKey(stateIn(mode), p('ctrl+c')), mode).toEqual({ type: 'quit' });
    }
  });

  it('answers a confirmation only with y, n or Esc', () => {
    const confirm = stateIn('confirm');
    expect(keyMode(confirm)).toBe('confirm');
    expect(resolveKey(confirm, p('q'))).toBeUndefined();
    expect(resolveKey(confirm, p('j'))).toBeUndefined();
    expect(keys(confirm, 'y').outbox.map((o) => o.command.kind)).toEqual(['stop-worker']);
    expect(keys(confirm, 'escape').dialog).toBeUndefined();
  });

  it('moves with arrows and j/k, opens and closes details with Enter and Esc', () => {
    const state = keys(live(), 'down', 'j', 'k');
    expect(state.selection.cluster?.index).toBe(1);
    expect(keys(state, 'enter').details).toBe(true);
    expect(keys(state, 'enter', 'escape').details).toBe(false);
  });

  it('uses Enter in the chat picker to pick, i to go back to typing', () => {
    const picking = keys(live(), '5', 'escape');
    expect(keyMode(picking)).toBe('normal');
    expect(keys(picking, 'j', 'enter').chat.focus).toBe('input');
    expect(keys(picking, 'i').chat.focus).toBe('input');
  });

  it('ignores keys that mean nothing', () => {
    expect(resolveKey(live(), p('z'))).toBeUndefined();
    expect(resolveKey(live(), p('ctrl+x'))).toBeUndefined();
  });
});

describe('the keymap as data', () => {
  it('has bindings that all reduce without throwing in their modes', () => {
    for (const binding of KEYMAP) {
      for (const mode of binding.modes) {
        const base = stateIn(mode);
        const state = binding.views === undefined ? base : { ...base, view: binding.views[0]! };
        for (const name of binding.keys) {
          const action =
            typeof binding.action === 'function'
              ? binding.action(name === TEXT ? 'a' : name)
              : binding.action;
          expect(() => reduce(state, action)).not.toThrow();
        }
      }
    }
  });

  it('drives the footer hints and the help overlay', () => {
    const hints = hintsFor(keys(live(), '2')).map((h) => h.help);
    expect(hints).toContain('stop');
    expect(hints).not.toContain('cancel');
    const help = helpSections().flatMap((s) => s.rows.map((r) => `${r.keys} ${r.help}`));
    expect(help).toEqual(expect.arrayContaining(['q quit', 'p pull a model', '1–6 switch view', 'y yes']));
  });
});
