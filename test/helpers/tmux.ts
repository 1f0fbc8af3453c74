/**
 * A real terminal for end-to-end tests: a detached tmux session running one command, read with
 * capture-pane and typed into with send-keys.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import type { Sandbox } from './cli.js';

export const hasTmux = spawnSync('tmux', ['-V']).status === 0;

export interface Terminal {
  /** What the terminal shows now. */
  screen(): string;
  /** One key or one piece of text at a time, as a person types (a chunk with Enter reads as a paste). */
  press(...keys: string[]): void;
  type(text: string): void;
  kill(): void;
}

/**
 * Runs `command` (a shell line) in a new session of `columns`×`rows`, with the sandbox's node
 * settings; after it, the shell prints `EXIT=<code>` and waits, so the screen can still be read.
 */
export function openTerminal(box: Sandbox, command: string, columns = 100, rows = 30): Terminal {
  const session = `rbee-test-${process.pid}-${Date.now()}`;
  const tmux = (...args: string[]): string => execFileSync('tmux', args, { encoding: 'utf8' });
  // a tmux server started elsewhere keeps its own environment: pass the node's settings explicitly
  const vars = {
    RBEE_HOME: box.home,
    RBEE_PORT: String(box.port),
    RBEE_MDNS: box.env.RBEE_MDNS ?? '0',
    RBEE_MDNS_REQUIRE_NETNS: '1',
    RBEE_CLUSTER_LISTEN: box.env.RBEE_CLUSTER_LISTEN ?? '',
    RBEE_ENGINE_BUILD: 'off',
  };
  tmux(
    'new-session',
    '-d',
    '-s',
    session,
    '-x',
    String(columns),
    '-y',
    String(rows),
    ...Object.entries(vars).flatMap(([k, v]) => ['-e', `${k}=${v}`]),
    // Ink draws only the last frame when CI is set at all (even empty); a person's terminal has none.
    `env -u CI ${command}; echo "EXIT=$?"; sleep 60`,
  );
  return {
    screen: () => tmux('capture-pane', '-t', session, '-p'),
    press: (...keys) => {
      for (const key of keys) tmux('send-keys', '-t', session, key);
    },
    type: (text) => void tmux('send-keys', '-t', session, '-l', text),
    kill: () => void spawnSync('tmux', ['kill-session', '-t', session]),
  };
}
