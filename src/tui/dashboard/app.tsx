/**
 * The dashboard component: wires the pure state to the world. It wakes the node (narrating),
 * follows its events, turns key presses into actions through the keymap, runs queued commands,
 * ticks the clock for "ago" columns, and exits with a code when the user quits.
 */
import { useApp, useInput, useStdout, type Key } from 'ink';
import { useCallback, useEffect, useReducer, useRef, useState } from 'react';
import { ERROR_CODES, toRbeeError } from '../../shared/errors.js';
import type { NodeClient } from '../../node/client/index.js';
import { createBatcher } from './batcher.js';
import { createCommandRunner, type CommandRunner } from './commands.js';
import { Screen } from './components/screen.js';
import { applyKey, keyPresses, type KeyPress } from './keymap.js';
import { createInitialState, reduce, type DashboardAction, type DashboardState } from './state.js';
import { useClusterJobs } from './use-cluster-jobs.js';
import { useNodeEvents } from './use-node-events.js';

/** Wakes the local node, narrating what it does; resolves once the node answers. */
export type WakeNode = (options: {
  narrate: (text: string) => void;
  signal: AbortSignal;
}) => Promise<unknown>;

export interface DashboardAppProps {
  client: NodeClient;
  wake: WakeNode;
  /** Defaults to a fresh state at Date.now(). */
  initialState?: DashboardState;
  /** Receives work that should finish before the process exits (cancelling chat jobs). */
  track?: (work: Promise<unknown>) => void;
  /** Clock tick for ages and uptimes. Defaults to 1000 ms. */
  tickMs?: number;
  /** Reconnect backoff for the event stream (see followNodeEvents). */
  backoff?: { initialMs?: number; maxMs?: number };
  /** How often the Jobs view asks for the cluster's jobs. Defaults to 2000 ms. */
  jobsPollMs?: number;
  /** How often the other views ask (for the header's counts). Defaults to 10 000 ms. */
  jobsIdlePollMs?: number;
}

/**
 * At most 10 frames a second. A 120×40 streaming frame costs Ink ~12 ms of CPU here (with the line
 * cache); at 10 frames a second the dashboard takes ~0.19 of a core while the tiny model streams
 * ~950 tok/s (bench:tui), and text streaming at 10 updates a second reads as smooth.
 */
const FRAME_MS = 100;

type AppAction = DashboardAction | { type: 'key'; press: KeyPress };

function appReducer(state: DashboardState, action: AppAction): DashboardState {
  return action.type === 'key' ? applyKey(state, action.press) : reduce(state, action);
}

/** The exit code a quit leaves with: the wake failure's, else 0. */
export function exitCodeOf(state: DashboardState): number {
  return state.connection.status === 'wake-failed' ? ERROR_CODES[state.connection.code].exit : 0;
}

function useTerminalSize(): { columns: number; rows: number } {
  const { stdout } = useStdout();
  const read = useCallback(() => ({ columns: stdout.columns || 80, rows: stdout.rows || 24 }), [stdout]);
  const [size, setSize] = useState(read);
  useEffect(() => {
    const onResize = (): void => setSize(read());
    stdout.on('resize', onResize);
    return () => {
      stdout.off('resize', onResize);
    };
  }, [stdout, read]);
  return size;
}

export function DashboardApp(props: DashboardAppProps): React.JSX.Element {
  const { client, wake, track } = props;
  const [state, dispatch] = useReducer(
    appReducer,
    props.initialState,
    (initial) => initial ?? createInitialState({ now: Date.now() }),
  );
  const { exit } = useApp();
  const size = useTerminalSize();
  const runner = useRef<CommandRunner | undefined>(undefined);
  // Everything that can arrive fast (node events, tokens, results) goes through one batcher, in
  // order, so React re-renders at most ~30 times a second however fast the node talks. Keys are
  // dispatched at once.
  const [frame] = useState(() =>
    createBatcher<DashboardAction>({
      deliver: (actions) => dispatch({ type: 'batch', actions }),
      intervalMs: FRAME_MS,
    }),
  );
  useEffect(() => () => frame.dispose({ discard: true }), [frame]);
  const batched = useCallback((action: DashboardAction) => frame.push(action), [frame]);

  // Wake first; the event stream opens only once the node answers.
  const { wakeAttempt } = state;
  useEffect(() => {
    const controller = new AbortController();
    const narrate = (text: string): void => {
      if (!controller.signal.aborted) dispatch({ type: 'narrate', text, ts: Date.now() });
    };
    wake({ narrate, signal: controller.signal }).then(
      () => {
        if (!controller.signal.aborted)
          dispatch({ type: 'connection', connection: { status: 'connecting' } });
      },
      (error: unknown) => {
        if (controller.signal.aborted) return;
        const e = toRbeeError(error, 'NODE_START_FAILED');
        dispatch({
          type: 'connection',
          connection: { status: 'wake-failed', code: e.code, error: e.message },
        });
      },
    );
    return () => controller.abort();
  }, [wake, wakeAttempt]);

  const awake = state.connection.status !== 'waking' && state.connection.status !== 'wake-failed';
  useNodeEvents({
    client,
    enabled: awake,
    dispatch: batched,
    ...(props.backoff === undefined ? {} : { backoff: props.backoff }),
  });

  useClusterJobs({
    client,
    enabled: state.connection.status === 'live',
    shown: state.view === 'jobs',
    dispatch: batched,
    ...(props.jobsPollMs === undefined ? {} : { intervalMs: props.jobsPollMs }),
    ...(props.jobsIdlePollMs === undefined ? {} : { idleIntervalMs: props.jobsIdlePollMs }),
  });

  useEffect(() => {
    const created = createCommandRunner({ client, dispatch: batched });
    runner.current = created;
    return () => {
      runner.current = undefined;
      const disposed = created.dispose();
      if (track !== undefined) track(disposed);
      else void disposed;
    };
  }, [client, track, batched]);

  useEffect(() => {
    if (state.outbox.length === 0 || runner.current === undefined) return;
    const taken = state.outbox;
    dispatch({ type: 'outbox-taken', ids: taken.map((o) => o.id) });
    for (const outgoing of taken) runner.current.run(outgoing);
  }, [state.outbox]);

  const tickMs = props.tickMs ?? 1000;
  useEffect(() => {
    const timer = setInterval(() => dispatch({ type: 'tick', now: Date.now() }), tickMs);
    return () => clearInterval(timer);
  }, [tickMs]);

  useEffect(() => {
    if (state.quit) exit(exitCodeOf(state));
  }, [state, exit]);

  const onInput = useCallback((input: string, key: Key) => {
    for (const press of keyPresses(input, key)) dispatch({ type: 'key', press });
  }, []);
  useInput(onInput);

  return <Screen state={state} width={size.columns} height={size.rows} />;
}
