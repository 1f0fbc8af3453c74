/**
 * `rbee` with no arguments: the full-screen dashboard. Ink 6 has no alternate screen, so this
 * enters it itself and leaves it on every way out: quit, an error thrown while rendering, SIGINT or
 * SIGTERM, a crash (uncaughtExceptionMonitor runs before Node prints the error, so the error lands
 * on the normal screen), and process exit.
 *
 * A node the dashboard woke keeps running when it quits, as a desktop app's engine does: the node is
 * the cluster's hive, and other machines may be using it. Back on the normal screen, the dashboard
 * says so, and how to stop it.
 */
import { createElement } from 'react';
import { render } from 'ink';
import { RbeeError, toRbeeError } from '../../shared/errors.js';
import type { NodeClient } from '../../node/client/index.js';
import { DashboardApp, type WakeNode } from './app.js';
import { installInkLineCache } from './ink-line-cache.js';
import { ThemeContext, themeFromEnv } from './theme.js';

export type { WakeNode } from './app.js';

export interface DashboardInit {
  client: NodeClient;
  /** Wakes the local node (e.g. ensureNodeAwake), narrating through `narrate`. */
  wake: WakeNode;
  /** Defaults to process.stdout; must be a TTY. */
  stdout?: NodeJS.WriteStream;
  /** Defaults to process.stdin. */
  stdin?: NodeJS.ReadStream;
  /** Read for NO_COLOR. Defaults to process.env. */
  env?: NodeJS.ProcessEnv;
}

export const ENTER_ALT_SCREEN = '\x1b[?1049h\x1b[H';
export const LEAVE_ALT_SCREEN = '\x1b[?25h\x1b[?1049l';

/** What the terminal shows after quitting a dashboard that woke the node. */
export const NODE_KEEPS_RUNNING = 'rbee: the node keeps running (rbee node stop to stop it)';

/** Whether a wake's answer says this call started the node (ensureNodeAwake's `woke`). */
function woke(result: unknown): boolean {
  return typeof result === 'object' && result !== null && (result as { woke?: unknown }).woke === true;
}

/** How long quitting waits for the node to acknowledge cancelled chat jobs. */
const DRAIN_MS = 1_500;

const SIGNAL_EXIT: Readonly<Record<'SIGINT' | 'SIGTERM', number>> = { SIGINT: 130, SIGTERM: 143 };

/** Runs the dashboard until the user quits; resolves with the process exit code. */
export async function runDashboard(init: DashboardInit): Promise<number> {
  const stdout = init.stdout ?? process.stdout;
  const stdin = init.stdin ?? process.stdin;
  if (stdout.isTTY !== true) {
    throw new RbeeError(
      'BAD_REQUEST',
      'the dashboard needs a terminal; use a subcommand (see `rbee --help`) or --json',
    );
  }

  let restored = false;
  let wokeNode = false;
  const restore = (): void => {
    if (restored) return;
    restored = true;
    stdout.write(LEAVE_ALT_SCREEN);
    if (wokeNode) stdout.write(`${NODE_KEEPS_RUNNING}\n`);
  };
  const wake: WakeNode = async (options) => {
    const result = await init.wake(options);
    wokeNode ||= woke(result);
    return result;
  };
  const pending = new Set<Promise<unknown>>();
  const track = (work: Promise<unknown>): void => {
    const settled: Promise<void> = work.then(
      () => undefined,
      () => undefined,
    );
    pending.add(settled);
    void settled.then(() => pending.delete(settled));
  };

  await installInkLineCache();
  stdout.write(ENTER_ALT_SCREEN);
  let signalCode: number | undefined;
  let app: ReturnType<typeof render> | undefined;
  const onSignal = (signal: 'SIGINT' | 'SIGTERM'): void => {
    signalCode = SIGNAL_EXIT[signal];
    app?.unmount();
  };
  const onSigint = (): void => onSignal('SIGINT');
  const onSigterm = (): void => onSignal('SIGTERM');
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigterm);
  process.on('uncaughtExceptionMonitor', restore);
  process.on('exit', restore);

  try {
    app = render(
      createElement(
        ThemeContext.Provider,
        { value: themeFromEnv(init.env) },
        createElement(DashboardApp, { client: init.client, wake, track }),
      ),
      // Raw mode turns Ctrl-C into a key; the keymap quits on it, so Ink must not exit on its own.
      // Console patching is off: this process loads no library that prints (tui/ imports only
      // node/client), and Ink's patch would print above a frame that already fills the screen.
      // Incremental rendering stays off: in tmux (80×24, Ink 6.8) it left the previous frame's
      // first lines on screen, one row above the new frame.
      { stdout, stdin, exitOnCtrlC: false, patchConsole: false, maxFps: 30 },
    );
    const result: unknown = await app.waitUntilExit();
    return signalCode ?? (typeof result === 'number' ? result : 0);
  } catch (error) {
    throw toRbeeError(error);
  } finally {
    app?.unmount();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigterm);
    await Promise.race([
      Promise.allSettled([...pending]),
      new Promise((resolve) => setTimeout(resolve, DRAIN_MS).unref()),
    ]);
    restore();
    process.off('uncaughtExceptionMonitor', restore);
    process.off('exit', restore);
  }
}
