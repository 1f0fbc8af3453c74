/** Small state operations shared by the main reducer and the chat reducer. */
import type { Command, DashboardState, TextEdit } from './state.js';

export function editText(value: string, edit: TextEdit): string {
  return 'insert' in edit ? value + edit.insert : [...value].slice(0, -1).join('');
}

/** Queues a side effect for the app to run; the reducer itself never does I/O. */
export function enqueue(state: DashboardState, command: Command): DashboardState {
  return {
    ...state,
    outbox: [...state.outbox, { id: state.nextCommandId, command }],
    nextCommandId: state.nextCommandId + 1,
  };
}
